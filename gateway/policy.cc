// Relay control and the postmaster's rules.

#include "gateway/policy.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>

namespace ferry::gw {
namespace {

constexpr int kMaxAliasDepth = 8;

// Text form "ip" -> 16 bytes, IPv4 as v4-mapped IPv6.
bool to_v6(std::string_view text, std::array<unsigned char, 16>& out,
           bool& was_v4) {
  std::string s(text);
  unsigned char v4[4];
  if (inet_pton(AF_INET, s.c_str(), v4) == 1) {
    out.fill(0);
    out[10] = out[11] = 0xff;
    std::copy(v4, v4 + 4, out.begin() + 12);
    was_v4 = true;
    return true;
  }
  was_v4 = false;
  return inet_pton(AF_INET6, s.c_str(), out.data()) == 1;
}

// "user@domain" for messages: the address as the client gave it.
std::string shown(const PathParse& p) { return "<" + p.box.str() + ">"; }

std::string normal_form(const Mailbox& m) {
  return lower_ascii(m.local) + "@" + lower_ascii(m.domain);
}

Reply reply(int code, std::string enhanced, std::string text) {
  return Reply{code, std::move(enhanced), std::move(text)};
}

// Builds the normalised list used by Policy::barred.
std::vector<std::string> normalise(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const std::string& item : in) {
    if (!item.empty() && item[0] == '@') {
      out.push_back(lower_ascii(item));
    } else if (PathParse p = parse_path(item); p.ok) {
      out.push_back(normal_form(p.box));
    }
  }
  return out;
}

}  // namespace

// --- Cidr --------------------------------------------------------------

std::optional<Cidr> Cidr::parse(std::string_view text) {
  size_t slash = text.find('/');
  bool v4;
  Cidr c;
  if (!to_v6(text.substr(0, slash), c.net_, v4)) return std::nullopt;
  unsigned bits = v4 ? 32 : 128;
  unsigned prefix = bits;
  if (slash != text.npos) {
    std::string_view p = text.substr(slash + 1);
    auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), prefix);
    if (p.empty() || ec != std::errc() || ptr != p.data() + p.size() ||
        prefix > bits) {
      return std::nullopt;
    }
  }
  c.prefix_ = v4 ? prefix + 96 : prefix;

  // Host bits must be zero: "10.0.0.1/8" is almost always a typo.
  for (unsigned i = c.prefix_; i < 128; ++i) {
    if (c.net_[i / 8] & (0x80 >> (i % 8))) return std::nullopt;
  }
  return c;
}

bool Cidr::contains(std::string_view ip) const {
  std::array<unsigned char, 16> a;
  bool v4;
  if (!to_v6(ip, a, v4)) return false;
  unsigned full = prefix_ / 8, rest = prefix_ % 8;
  if (!std::equal(a.begin(), a.begin() + full, net_.begin())) return false;
  if (rest == 0) return true;
  unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (a[full] & mask) == net_[full];
}

// --- Policy --------------------------------------------------------------

Policy::Policy(const Config& cfg, const Users& users)
    : cfg_(cfg),
      users_(users),
      barred_senders_(normalise(cfg.rules.barred_senders)),
      barred_recipients_(normalise(cfg.rules.barred_recipients)) {
  // The config reader has validated every network already.
  for (const std::string& n : cfg.rules.office_networks) {
    if (auto c = Cidr::parse(n)) office_.push_back(*c);
  }
}

bool Policy::is_local_domain(std::string_view domain) const {
  std::string d = lower_ascii(domain);
  const auto& v = cfg_.local.domains;
  return std::find(v.begin(), v.end(), d) != v.end();
}

bool Policy::is_internal_domain(std::string_view domain) const {
  if (is_local_domain(domain)) return true;
  std::string d = lower_ascii(domain);
  const auto& v = cfg_.rules.internal_domains;
  return std::find(v.begin(), v.end(), d) != v.end();
}

bool Policy::from_office(const ClientFacts& facts) const {
  return std::any_of(office_.begin(), office_.end(),
                     [&](const Cidr& c) { return c.contains(facts.ip); });
}

bool Policy::barred(const std::vector<std::string>& list, const Mailbox& m) {
  std::string addr = normal_form(m);
  std::string at_domain = "@" + lower_ascii(m.domain);
  return std::any_of(list.begin(), list.end(), [&](const std::string& e) {
    return e == addr || e == at_domain;
  });
}

bool Policy::internal_only(const ClientFacts& facts,
                           const PathParse& from) const {
  const auto& v = cfg_.rules.internal_only_users;
  auto listed = [&](const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  // The login, and also the envelope sender: the sender can be forged,
  // but only to the sender's own disadvantage here.
  if (facts.authenticated && listed(lower_ascii(facts.auth_user))) {
    return true;
  }
  if (from.ok && !from.null_path) {
    if (listed(normal_form(from.box))) return true;
    if (is_local_domain(from.box.domain) &&
        listed(lower_ascii(from.box.local))) {
      return true;
    }
  }
  return false;
}

uint64_t Policy::size_limit(const ClientFacts& facts) const {
  if (facts.authenticated) {
    const auto& m = cfg_.rules.user_size_limits;
    if (auto it = m.find(lower_ascii(facts.auth_user)); it != m.end()) {
      return it->second;
    }
  }
  return cfg_.smtp.max_message_size;
}

std::string Policy::route_for(std::string_view domain) const {
  if (router_ != nullptr) return router_->route_for(lower_ascii(domain));
  return "smarthost";
}

Reply Policy::check_sender(const ClientFacts& facts, const PathParse& from,
                           uint64_t declared_size) const {
  if (!from.ok) {
    return reply(501, "5.1.7", "Bad sender address syntax: " + from.error);
  }
  if (!from.null_path && from.box.domain.empty()) {
    // <postmaster> without a domain is a recipient form only.
    return reply(501, "5.1.7", "Bad sender address syntax: missing @domain");
  }
  if (facts.require_auth && !facts.authenticated) {
    return reply(530, "5.7.0", "Authentication required");
  }
  if (!from.null_path && barred(barred_senders_, from.box)) {
    return reply(550, "5.7.1",
                 shown(from) + ": Sender refused by local policy");
  }
  uint64_t limit = size_limit(facts);
  if (declared_size > limit) {
    return reply(552, "5.3.4",
                 "Message size exceeds fixed limit of " +
                     std::to_string(limit) + " bytes");
  }
  return reply(
      250, "2.1.0",
      (from.null_path ? std::string("<>") : shown(from)) + ": Sender ok");
}

void Policy::expand_local(std::string_view local, RcptDecision& d,
                          int depth) const {
  for (const std::string& t : users_.expand(local)) {
    if (t.find('@') == t.npos) {
      if (std::find(d.local_users.begin(), d.local_users.end(), t) ==
          d.local_users.end()) {
        d.local_users.push_back(t);
      }
      continue;
    }
    PathParse p = parse_path(t);
    if (!p.ok) continue;  // Users::parse validated every target
    if (is_local_domain(p.box.domain) && depth < kMaxAliasDepth) {
      expand_local(p.box.local, d, depth + 1);
    } else if (std::find(d.remote.begin(), d.remote.end(), t) ==
               d.remote.end()) {
      d.remote.push_back(t);
    }
  }
}

RcptDecision Policy::check_rcpt(const ClientFacts& facts, const PathParse& from,
                                const PathParse& rcpt) const {
  RcptDecision d;
  auto refuse = [&d](int code, const char* enhanced, std::string text) {
    d.accepted = false;
    d.local_users.clear();
    d.remote.clear();
    d.route.clear();
    d.reply = reply(code, enhanced, std::move(text));
    return d;
  };

  // Syntax.  Trailing dots, bad UTF-8, unbalanced brackets end here.
  if (!rcpt.ok) {
    return refuse(501, "5.1.3", "Bad recipient address syntax: " + rcpt.error);
  }
  if (rcpt.null_path) {
    return refuse(501, "5.1.3", "Bad recipient address syntax: <>");
  }
  const std::string who = shown(rcpt);
  if (barred(barred_recipients_, rcpt.box)) {
    return refuse(550, "5.7.1", who + ": Recipient refused by local policy");
  }

  // Local domains (and <postmaster>, which has none).
  const std::string& domain = rcpt.box.domain;
  if (domain.empty() || is_local_domain(domain)) {
    // Routing characters in a local part are a relay attempt: the percent
    // hack, a bang path, or a quoted "user@elsewhere".  None of our user
    // names can contain them (Users::valid_name), so refuse outright
    // rather than let any later stage interpret them.
    if (rcpt.box.local.find_first_of("%!@") != std::string::npos) {
      return refuse(550, "5.7.1",
                    who +
                        ": Relaying denied (routing characters in a "
                        "local address)");
    }
    expand_local(rcpt.box.local, d, 0);
    if (d.local_users.empty() && d.remote.empty() &&
        lower_ascii(rcpt.box.local) == "postmaster") {
      // RFC 5321 4.5.1: mail for postmaster must be accepted.  Without an
      // alias naming a user it goes to a Maildir of that name under
      // mail_root (ferryd warns about the missing alias at start-up).
      d.local_users.push_back("postmaster");
    }
    if (d.local_users.empty() && d.remote.empty()) {
      return refuse(550, "5.1.1",
                    who +
                        ": Recipient address rejected: no such user "
                        "here");
    }
    if (!d.remote.empty()) {
      // XXX(policy): RcptDecision has one route for all remote targets of
      // an alias; the first one's domain decides.  Exact while every
      // route is "smarthost"; the router issue should make it per address.
      d.route = route_for(parse_path(d.remote.front()).box.domain);
    }
    d.accepted = true;
    d.reply = reply(250, "2.1.5", who + ": Recipient ok");
    return d;
  }

  // Everything else is relaying: office networks and logged-in users only.
  if (!facts.authenticated && !from_office(facts)) {
    return refuse(550, "5.7.1", who + ": Relaying denied");
  }
  if (!is_internal_domain(domain) && internal_only(facts, from)) {
    return refuse(550, "5.7.1",
                  who + ": Sender may send only inside the organisation");
  }
  d.route = route_for(domain);
  if (d.route.empty()) {
    return refuse(550, "5.1.2", who + ": No route to the recipient's domain");
  }
  d.remote.push_back(rcpt.box.str());
  d.accepted = true;
  d.reply = reply(250, "2.1.5", who + ": Recipient ok");
  return d;
}

}  // namespace ferry::gw
