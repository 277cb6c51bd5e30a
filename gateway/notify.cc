#include "gateway/notify.h"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <utility>

#include "gateway/log.h"

namespace ferry::gw {

namespace {

using queue::Action;
using queue::RecipientState;
using queue::spool_errc;

// The word a mark and a log line use for each kind (RFC 3464 Action).
std::string_view action_word(DsnKind k) {
  switch (k) {
    case DsnKind::failure:
      return "failed";
    case DsnKind::delay:
      return "delayed";
    case DsnKind::success:
      return "delivered";
  }
  return "failed";
}

std::string join(const std::vector<uint32_t>& v) {
  std::string s;
  for (uint32_t i : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(i);
  }
  return s;
}

// A stable short name for a long index list (LMDB keys are at most 511
// bytes, peer and transfer id together): FNV-1a, 64 bits, in hex.
std::string short_name(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  static const char* hex = "0123456789abcdef";
  std::string out = "h";
  for (int i = 60; i >= 0; i -= 4) out += hex[(h >> i) & 15];
  return out;
}

// The indexes a mark event names, when `text` is a mark of `kind`.
bool parse_mark(std::string_view text, DsnKind kind,
                std::vector<uint32_t>& out) {
  if (text.substr(0, 4) != "dsn=") return false;
  std::string act = " action=" + std::string(action_word(kind)) + " ";
  if (text.find(act) == std::string_view::npos) return false;
  size_t p = text.find(" index=");
  if (p == std::string_view::npos) return false;
  std::string_view list = text.substr(p + 7);
  uint32_t n = 0;
  bool digits = false;
  for (char c : list) {
    if (c >= '0' && c <= '9') {
      n = n * 10 + static_cast<uint32_t>(c - '0');
      digits = true;
    } else {
      if (digits) out.push_back(n);
      n = 0;
      digits = false;
      if (c != ',') break;
    }
  }
  if (digits) out.push_back(n);
  return true;
}

bool waiting(RecipientState s) {
  return s == RecipientState::queued || s == RecipientState::deferred;
}

}  // namespace

// One notification to make: which recipients of a message, of what kind,
// with what the scheduler adds.
struct Notifier::Report {
  DsnKind kind = DsnKind::failure;
  std::vector<uint32_t> which;  // RecipientInfo::index, ascending
  std::string status;           // overrides every recipient's status
  std::string reason;           // in words, for every recipient
  std::optional<SysTime> next_attempt;
  std::optional<SysTime> retry_until;
};

Notifier::Notifier(queue::Spool& spool, NotifierOptions opts)
    : spool_(spool), opts_(std::move(opts)) {
  if (!opts_.clock) opts_.clock = &SystemClock::instance();
}

NotifyStats Notifier::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::error_code Notifier::marks_locked(const queue::QueueId& qid, DsnKind kind,
                                       std::vector<uint32_t>& indexes,
                                       bool& any) {
  indexes.clear();
  any = false;
  std::vector<queue::Event> evs;
  std::error_code ec = spool_.events(qid, evs);
  if (ec == spool_errc::not_found) return {};
  if (ec) return ec;
  for (const queue::Event& e : evs)
    any = parse_mark(e.text, kind, indexes) || any;
  std::sort(indexes.begin(), indexes.end());
  return {};
}

std::error_code Notifier::report_locked(const queue::MessageInfo& m,
                                        const std::string* body, Report& r) {
  if (r.which.empty()) return {};
  std::sort(r.which.begin(), r.which.end());
  r.which.erase(std::unique(r.which.begin(), r.which.end()), r.which.end());
  const std::string act(action_word(r.kind));
  const std::string idx = join(r.which);

  // The body only when someone will be told (never for the null sender).
  std::string own;
  if (!m.sender.empty() && !body) {
    if (auto ec = spool_.read_body(m.id, own)) return ec;
    body = &own;
  }

  // The request.
  DsnRequest req =
      dsn_request_from(m, body ? *body : std::string(), r.which, r.kind);
  req.reporting_mta = opts_.reporting_mta;
  req.postmaster = opts_.postmaster;
  if (!opts_.notify.postmaster_copy.empty()) {
    req.postmaster = opts_.notify.postmaster_copy;
    req.postmaster_copy = PostmasterCopy::failures;
  }
  req.now = opts_.clock->now();
  req.return_limit = opts_.notify.return_content_limit;
  // RET=FULL is a wish, not a licence to mail back a huge message.
  if (req.ret == queue::Ret::full && req.original.size() > req.return_limit)
    req.ret = queue::Ret::hdrs;
  if (r.next_attempt) req.next_attempt = r.next_attempt;
  if (r.retry_until) req.retry_until = r.retry_until;
  for (DsnRecipient& d : req.recipients) {
    if (!r.status.empty()) d.status = r.status;
    if (!r.reason.empty()) d.reason = r.reason;
  }
  const size_t told = notified_recipients(req).size();
  std::vector<DsnMail> mails = make_dsn(req);

  // Queue each mail exactly once.
  std::string tid = "dsn:" + act + ":" + m.id + ":" +
                    (idx.size() <= 200 ? idx : short_name(idx));
  std::string first;
  for (size_t i = 0; i < mails.size(); ++i) {
    queue::NewMessage nm;
    nm.sender = "";
    nm.body = std::move(mails[i].bytes);
    for (const std::string& a : mails[i].recipients)
      nm.recipients.push_back({a, "", 0, std::string(kPickupRoute)});
    nm.received_transfer_id = i == 0 ? tid : tid + ":" + std::to_string(i);
    nm.received_from_peer = std::string(kDsnPeer);
    queue::QueueId nid;
    std::error_code ec = spool_.submit(std::move(nm), nid);
    if (ec == spool_errc::bad_state && !nid.empty()) {
      ++stats_.repeats;
    } else if (ec) {
      if (opts_.log)
        log::line(m.id, "dsn=none action=" + act + " result=deferred error=" +
                            log::quote(ec.message()));
      return ec;
    } else {
      ++stats_.dsns;
    }
    if (first.empty()) first = nid;
    bool to_sender = i == 0 && told > 0;
    size_t n = to_sender ? told : req.recipients.size();
    const std::string& to = mails[i].recipients.empty()
                                ? std::string()
                                : mails[i].recipients.front();
    if (opts_.log)
      log::line(m.id, "dsn=" + nid + " action=" + act +
                          " rcpts=" + std::to_string(n) + " to=<" + to + ">" +
                          (to_sender ? "" : " copy=postmaster"));
  }

  // Nobody to tell: say so once, and mark it all the same.
  if (mails.empty()) {
    ++stats_.suppressed;
    std::string why = m.sender.empty() ? "null-sender" : "notify";
    if (opts_.log)
      log::line(m.id, "dsn=none action=" + act +
                          " rcpts=" + std::to_string(r.which.size()) + " to=<" +
                          m.sender + "> reason=" + why);
  }

  // The durable mark.
  std::string mark = "dsn=" + (first.empty() ? "none" : first) +
                     " action=" + act +
                     " rcpts=" + std::to_string(r.which.size()) + " to=<" +
                     m.sender + "> index=" + idx;
  if (auto ec = spool_.log_event(m.id, mark)) return ec;
  if (!mails.empty() && opts_.want_pickup) opts_.want_pickup();
  return {};
}

std::error_code Notifier::report_final_locked(const queue::QueueId& qid,
                                              DsnKind kind) {
  queue::MessageInfo m;
  std::error_code ec = spool_.get(qid, m);
  if (ec == spool_errc::not_found) {
    if (opts_.log)
      log::line(qid, "dsn=none action=" + std::string(action_word(kind)) +
                         " reason=message-gone");
    return ec;
  }
  if (ec) return ec;

  std::vector<uint32_t> done;
  bool any = false;
  if ((ec = marks_locked(qid, kind, done, any))) return ec;
  Report r;
  r.kind = kind;
  for (const queue::RecipientInfo& ri : m.recipients) {
    bool due = kind == DsnKind::failure
                   ? ri.state == RecipientState::failed
                   : ri.state == RecipientState::delivered &&
                         (ri.notify & queue::notify_success);
    if (due && !std::binary_search(done.begin(), done.end(), ri.index))
      r.which.push_back(ri.index);
  }
  return report_locked(m, nullptr, r);
}

std::error_code Notifier::on_failed(const queue::QueueId& qid) {
  std::lock_guard lock(mu_);
  return report_final_locked(qid, DsnKind::failure);
}

std::error_code Notifier::on_delivered(const queue::QueueId& qid) {
  std::lock_guard lock(mu_);
  return report_final_locked(qid, DsnKind::success);
}

std::error_code Notifier::apply(const std::vector<queue::Transition>& ts,
                                std::vector<queue::TransitionResult>& results) {
  std::lock_guard lock(mu_);

  // Before: the messages that may owe a report, with their bodies while
  // they still exist.
  struct Before {
    queue::MessageInfo info;
    std::string body;
    bool have_body = false;
  };
  std::map<queue::QueueId, Before> before;
  for (const queue::Transition& t : ts) {
    if (t.action != Action::failed && t.action != Action::delivered) continue;
    if (before.count(t.id)) continue;
    Before b;
    if (spool_.get(t.id, b.info)) continue;  // apply() will say why
    before.emplace(t.id, std::move(b));
  }
  for (auto& [id, b] : before) {
    if (b.info.sender.empty()) continue;
    bool wanted = false;
    for (const queue::Transition& t : ts) {
      if (t.id != id) continue;
      if (t.action == Action::failed) wanted = true;
      for (const queue::RecipientInfo& ri : b.info.recipients)
        if (t.action == Action::delivered && ri.index == t.recipient &&
            (ri.notify & queue::notify_success))
          wanted = true;
    }
    if (wanted && !spool_.read_body(id, b.body)) b.have_body = true;
  }

  // The transitions.
  if (auto ec = spool_.apply(ts, results)) return ec;

  // After: what each transition that took effect owes.
  for (auto& [id, b] : before) {
    Report fail, ok;
    fail.kind = DsnKind::failure;
    ok.kind = DsnKind::success;
    for (size_t i = 0; i < ts.size() && i < results.size(); ++i) {
      const queue::Transition& t = ts[i];
      if (t.id != id || results[i].ec) continue;
      for (queue::RecipientInfo& ri : b.info.recipients) {
        if (ri.index != t.recipient) continue;
        ri.last_reply = t.reply;
        if (t.action == Action::failed) {
          ri.state = RecipientState::failed;
          fail.which.push_back(ri.index);
        } else if (t.action == Action::delivered) {
          ri.state = RecipientState::delivered;
          if (ri.notify & queue::notify_success) ok.which.push_back(ri.index);
        }
      }
    }
    for (Report* r : {&fail, &ok}) {
      if (r->which.empty()) continue;
      std::vector<uint32_t> done;
      bool any = false;
      std::error_code ec = marks_locked(id, r->kind, done, any);
      if (!ec) {
        std::erase_if(r->which, [&](uint32_t i) {
          return std::binary_search(done.begin(), done.end(), i);
        });
        const std::string* body = b.have_body ? &b.body : nullptr;
        if (!b.info.sender.empty() && !body) {
          // The body could not be read before: only a report from the
          // spool as it is now can work.
          ec = spool_.read_body(id, b.body);
          body = &b.body;
        }
        if (!ec) ec = report_locked(b.info, body, *r);
      }
      if (ec && opts_.log)
        log::line(id, "dsn=none action=" + std::string(action_word(r->kind)) +
                          " result=lost error=" + log::quote(ec.message()));
    }
  }
  return {};
}

std::error_code Notifier::sweep_one_locked(const queue::MessageInfo& m,
                                           SysTime now,
                                           const LifetimeLookup& lookup) {
  std::error_code ec;

  // Re-drive: final recipients whose report a crash (or a message-gone
  // race in the caller) left undone.
  for (DsnKind kind : {DsnKind::failure, DsnKind::success}) {
    Report r;
    r.kind = kind;
    for (const queue::RecipientInfo& ri : m.recipients) {
      bool due = kind == DsnKind::failure
                     ? ri.state == RecipientState::failed
                     : ri.state == RecipientState::delivered &&
                           (ri.notify & queue::notify_success);
      if (due) r.which.push_back(ri.index);
    }
    if (r.which.empty()) continue;
    std::vector<uint32_t> done;
    bool any = false;
    if ((ec = marks_locked(m.id, kind, done, any))) return ec;
    std::erase_if(r.which, [&](uint32_t i) {
      return std::binary_search(done.begin(), done.end(), i);
    });
    if ((ec = report_locked(m, nullptr, r))) return ec;
  }

  // Lifetimes of the waiting recipients, one lookup per route.
  std::map<std::string, std::optional<RouteLifetime>> lives;
  Report give_up, warn;
  give_up.kind = DsnKind::failure;
  give_up.status = "5.4.7";
  warn.kind = DsnKind::delay;
  std::string warn_route;
  for (const queue::RecipientInfo& ri : m.recipients) {
    if (!waiting(ri.state) || !lookup.lifetime) continue;
    auto it = lives.find(ri.route);
    if (it == lives.end())
      it = lives.emplace(ri.route, lookup.lifetime(ri.route, m.arrival)).first;
    if (!it->second) continue;
    LifetimeCheck c = check_lifetime(it->second->lifetime, m.arrival,
                                     it->second->missed, false, now);
    if (c.verdict == Verdict::give_up) {
      give_up.which.push_back(ri.index);
      if (give_up.reason.empty()) give_up.reason = c.reason;
    } else if (c.verdict == Verdict::warn) {
      warn.which.push_back(ri.index);
      if (warn.reason.empty()) warn.reason = c.reason;
      if (c.retry_until &&
          (!warn.retry_until || *c.retry_until < *warn.retry_until))
        warn.retry_until = c.retry_until;
      if (warn_route.empty()) warn_route = ri.route;
    }
  }

  // Give up: the bounce is queued and marked before the recipients are
  // marked failed, so a crash in between repeats nothing but the marking.
  if (!give_up.which.empty()) {
    // Only recipients still waiting now: a call may have taken one since
    // the list was read (a small window remains until apply(); see BUGS).
    queue::MessageInfo fresh;
    if ((ec = spool_.get(m.id, fresh))) return ec;
    std::erase_if(give_up.which, [&](uint32_t i) {
      for (const queue::RecipientInfo& ri : fresh.recipients)
        if (ri.index == i) return !waiting(ri.state);
      return true;
    });
  }
  if (!give_up.which.empty()) {
    std::vector<uint32_t> done;
    bool any = false;
    if ((ec = marks_locked(m.id, DsnKind::failure, done, any))) return ec;
    std::vector<uint32_t> all = give_up.which;
    std::erase_if(give_up.which, [&](uint32_t i) {
      return std::binary_search(done.begin(), done.end(), i);
    });
    if ((ec = report_locked(m, nullptr, give_up))) return ec;
    std::vector<queue::Transition> ts;
    for (uint32_t i : all) {
      queue::Transition t;
      t.id = m.id;
      t.recipient = i;
      t.action = Action::failed;
      t.reply = "554 5.4.7 delivery time expired: " +
                (give_up.reason.empty() ? std::string("lifetime reached")
                                        : give_up.reason);
      ts.push_back(std::move(t));
    }
    std::vector<queue::TransitionResult> out;
    if ((ec = spool_.apply(ts, out))) return ec;
    stats_.given_up += all.size();
  }

  // Warn once per message.
  if (!warn.which.empty()) {
    std::vector<uint32_t> done;
    bool warned = false;
    if ((ec = marks_locked(m.id, DsnKind::delay, done, warned))) return ec;
    if (!warned) {
      if (lookup.next_call && !warn_route.empty())
        warn.next_attempt = lookup.next_call(warn_route);
      if ((ec = report_locked(m, nullptr, warn))) return ec;
      ++stats_.warned;
    }
  }
  return {};
}

std::error_code Notifier::sweep(SysTime now, const LifetimeLookup& lookup) {
  std::lock_guard lock(mu_);
  std::vector<queue::MessageInfo> all;
  if (auto ec = spool_.list(all)) return ec;
  std::error_code first;
  for (const queue::MessageInfo& m : all) {
    std::error_code ec = sweep_one_locked(m, now, lookup);
    if (ec == spool_errc::not_found) continue;  // left meanwhile
    if (ec && opts_.log)
      log::line(m.id,
                "dsn=none result=deferred error=" + log::quote(ec.message()));
    if (ec && !first) first = ec;
  }
  return first;
}

}  // namespace ferry::gw
