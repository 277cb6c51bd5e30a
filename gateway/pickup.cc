#include "gateway/pickup.h"

#include <algorithm>
#include <string>
#include <utility>

#include "gateway/address.h"
#include "gateway/log.h"
#include "gateway/maildir.h"
#include "gateway/smtp_parser.h"

namespace ferry::gw {

namespace {

using queue::Action;
using queue::RecipientState;
using queue::spool_errc;

// ferry-sendmail runs as a local user on this machine: it may relay, like
// an authenticated client, but has no login name of its own.
ClientFacts trusted_local() {
  ClientFacts f;
  f.ip = "127.0.0.1";
  f.mode = ListenerConfig::Mode::submission;
  f.authenticated = true;
  return f;
}

std::string reply_line(const Reply& r) {
  return std::to_string(r.code) + " " + r.enhanced + " " + r.text;
}

bool due(const queue::RecipientInfo& r, queue::Clock::time_point now) {
  if (r.state == RecipientState::queued) return true;
  return r.state == RecipientState::deferred && r.next_attempt <= now;
}

}  // namespace

std::error_code plan_pickup(queue::Spool& spool, const Policy& policy,
                            const PickupOptions& opts, const queue::QueueId& id,
                            PickupPlan& plan) {
  plan = PickupPlan{};
  plan.id = id;
  queue::MessageInfo info;
  if (auto ec = spool.get(id, info)) return ec;
  const auto now =
      opts.now == queue::Clock::time_point{} ? queue::Clock::now() : opts.now;

  // Which recipients are ours to decide now.
  std::vector<const queue::RecipientInfo*> mine;
  for (const auto& r : info.recipients) {
    if (r.route == kPickupRoute && due(r, now)) mine.push_back(&r);
  }
  if (mine.empty()) return {};
  if (auto ec = spool.read_body(id, plan.body)) return ec;

  // The policy, as for a trusted local submitter.
  const ClientFacts facts = trusted_local();
  const PathParse from =
      parse_path(info.sender.empty() ? "<>" : "<" + info.sender + ">");
  plan.remote.sender = info.sender;
  plan.remote.envid = info.envid;
  plan.remote.ret = info.ret;
  plan.remote.priority = info.priority;
  for (const queue::RecipientInfo* r : mine) {
    queue::Transition t;
    t.id = id;
    t.recipient = r->index;
    RcptDecision d = policy.check_rcpt(facts, from, parse_path(r->address));
    if (!d.accepted) {
      t.action = Action::failed;
      t.reply = reply_line(d.reply);
      plan.any_failed = true;
      plan.finals.push_back(std::move(t));
      continue;
    }
    if (!d.local_users.empty()) {
      plan.locals.push_back({r->index, d.local_users});
    }
    for (const std::string& a : d.remote) {
      queue::NewRecipient nr;
      nr.address = a;
      // An alias expanded to a remote address: the DSN should name the
      // address the sender used.
      nr.orcpt = r->orcpt;
      if (nr.orcpt.empty() && a != r->address) {
        nr.orcpt = "rfc822;" + smtp::xtext_encode(r->address);
      }
      nr.notify = r->notify;
      nr.route = d.route;
      plan.remote.recipients.push_back(std::move(nr));
    }
    t.action = Action::delivered;
    t.reply = "250 2.0.0 picked up";
    plan.finals.push_back(std::move(t));
  }
  if (!plan.remote.recipients.empty()) {
    plan.remote.body = plan.body;
    plan.remote.received_transfer_id = "pickup:" + id;
    plan.remote.received_from_peer = std::string(kPickupPeer);
  }
  return {};
}

std::error_code pickup_deliver(queue::Spool& spool, const PickupOptions& opts,
                               PickupPlan& plan, PickupResult& result) {
  // Maildirs first: the names derive from the pickup message's queue id,
  // so a repeat after a crash finds the file and writes nothing.
  for (const PickupPlan::Local& l : plan.locals) {
    std::string err;
    for (const std::string& u : l.users) {
      if (maildir_deliver(opts.mail_root + "/" + u,
                          maildir_unique_name(plan.id, u), plan.body, err)) {
        break;
      }
      err.clear();
      ++result.local;
    }
    auto t = std::find_if(
        plan.finals.begin(), plan.finals.end(),
        [&](const queue::Transition& x) { return x.recipient == l.recipient; });
    if (t == plan.finals.end()) continue;  // cannot happen: planned together
    if (err.empty()) {
      t->reply = "250 2.0.0 delivered to maildir";
    } else {
      t->action = Action::deferred;
      t->reply = "451 4.3.0 " + err;
      t->when = (opts.now == queue::Clock::time_point{} ? queue::Clock::now()
                                                        : opts.now) +
                opts.retry;
    }
  }

  // Remote addresses: one new message, exactly once.
  if (plan.remote.recipients.empty()) return {};
  queue::NewMessage m = plan.remote;  // the plan may be applied again
  const size_t n = m.recipients.size();
  queue::QueueId qid;
  std::error_code ec = spool.submit(std::move(m), qid);
  if (ec == spool_errc::bad_state && !qid.empty()) {
    ++result.already;
    log::line(plan.id, "pickup resubmit=" + qid + " result=already");
    return {};
  }
  if (ec) {
    log::line(plan.id,
              "pickup result=deferred reason=" + log::quote(ec.message()));
    return ec;
  }
  ++result.resubmitted;
  log::line(plan.id, "pickup resubmit=" + qid + " nrcpt=" + std::to_string(n) +
                         " result=queued");
  return {};
}

std::error_code pickup_finish(queue::Spool& spool, const PickupOptions& opts,
                              const PickupPlan& plan, PickupResult& result) {
  if (plan.finals.empty()) return {};
  std::vector<queue::TransitionResult> out;
  if (auto ec = opts.apply ? opts.apply(plan.finals, out)
                           : spool.apply(plan.finals, out)) {
    log::line(plan.id, "pickup cannot record delivery error=" +
                           log::quote(ec.message()));
    return ec;
  }
  bool removed = false;
  bool failed = false;
  for (size_t i = 0; i < plan.finals.size() && i < out.size(); ++i) {
    const queue::Transition& t = plan.finals[i];
    if (out[i].ec) {
      // Someone else (the postmaster) changed the recipient meanwhile.
      log::line(plan.id, "pickup rcpt=" + std::to_string(t.recipient) +
                             " warning=" + log::quote(out[i].ec.message()));
      continue;
    }
    removed = removed || out[i].message_removed;
    if (t.action == Action::failed) {
      failed = true;
      ++result.failed;
    } else if (t.action == Action::deferred) {
      ++result.deferred;
    }
    log::line(plan.id, "pickup rcpt=" + std::to_string(t.recipient) +
                           " result=" + std::string(to_string(t.action)) +
                           " reply=" + log::quote(t.reply));
  }
  if (removed) ++result.messages;
  if (failed && !opts.apply && opts.on_failed) opts.on_failed(plan.id);
  return {};
}

std::error_code process_pickup(queue::Spool& spool, const Policy& policy,
                               const PickupOptions& opts,
                               PickupResult& result) {
  std::vector<queue::QueueId> ids;
  if (auto ec = spool.route_messages(std::string(kPickupRoute), ids)) {
    return ec;
  }
  for (const queue::QueueId& id : ids) {
    PickupPlan plan;
    std::error_code ec = plan_pickup(spool, policy, opts, id, plan);
    if (ec == spool_errc::not_found) continue;  // left meanwhile
    if (ec) return ec;
    if (plan.finals.empty()) continue;
    if ((ec = pickup_deliver(spool, opts, plan, result))) return ec;
    if ((ec = pickup_finish(spool, opts, plan, result))) return ec;
  }
  return {};
}

}  // namespace ferry::gw
