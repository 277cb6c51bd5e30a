// The postmaster's rules, applied at MAIL FROM and RCPT TO: who may send,
// to whom, how much, and who may relay.  Pure decisions: Policy looks at
// the parsed path, the client's facts and the configuration and returns
// the SMTP reply to send; it does no I/O and keeps no per-session state.
//
// Replies (code, enhanced code):
//   sender syntax error               501 5.1.7
//   recipient syntax error            501 5.1.3
//   submission listener, no AUTH      530 5.7.0
//   barred sender                     550 5.7.1
//   barred recipient                  550 5.7.1
//   unknown local user                550 5.1.1
//   relaying denied                   550 5.7.1
//   relay trick in a local address    550 5.7.1  (%, !, quoted @)
//   internal-only user to outside     550 5.7.1
//   declared SIZE over the limit      552 5.3.4
//   accepted recipient                250 2.1.5, sender 250 2.1.0
// Relaying denied is 550, not 554: RFC 5321 4.3.2 lists 550 among the
// RCPT replies and 554 only for the connection and DATA.
//
// Relay control: mail for a domain outside [local] domains is accepted
// only from an address inside [rules] office_networks (IPv4, IPv6 and
// v4-mapped IPv6 all match) or from an authenticated client.  Local
// addresses carrying routing characters (the percent hack, bang paths,
// a quoted local part containing @) are refused from everyone, so no
// later stage can be talked into treating them as routes.
//
// Concurrency: immutable after construction; any thread may call the
// const methods.  `cfg`, `users` and any router must outlive the Policy.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/address.h"
#include "gateway/config.h"
#include "gateway/users.h"

namespace ferry::gw {

struct Reply {
  int code = 250;
  std::string enhanced;  // "2.1.5"
  std::string text;      // without code and enhanced code
};

struct ClientFacts {
  std::string ip;  // "127.0.0.1" / "::1"
  ListenerConfig::Mode mode = ListenerConfig::Mode::relay;
  bool authenticated = false;
  std::string auth_user;
  bool require_auth = false;  // the listener's require_auth
};

struct RcptDecision {
  bool accepted = false;
  Reply reply;                           // 250 2.1.5 ... or the refusal
  std::vector<std::string> local_users;  // deliver to these Maildirs
  std::vector<std::string> remote;       // addresses that go to the spool
  std::string route;                     // route for `remote` ("smarthost")
};

// An IPv4 or IPv6 network.  IPv4 is held as v4-mapped IPv6, so
// "10.0.0.0/8" contains "::ffff:10.1.2.3" and "::ffff:10.0.0.0/104"
// contains "10.1.2.3".
class Cidr {
 public:
  // "10.0.0.0/8", "2001:db8::/32", or a bare address (/32 or /128).
  // Host bits set below the prefix are an error.
  static std::optional<Cidr> parse(std::string_view text);
  bool contains(std::string_view ip) const;  // false if ip is not an IP

 private:
  std::array<unsigned char, 16> net_{};
  unsigned prefix_ = 0;  // in IPv6 bits
};

// Picks the route for remote recipients.  Until the router issue lands
// every non-local domain goes to "smarthost"; a Router plugged in with
// Policy::set_router decides instead.
class Router {
 public:
  virtual ~Router() = default;
  // Route name for a (lower-case) domain; empty means "no route", which
  // Policy refuses with 550 5.1.2 (temporary routing trouble is the
  // router's own business, at delivery time).
  virtual std::string route_for(std::string_view domain) const = 0;
};

class Policy {
 public:
  Policy(const Config& cfg, const Users& users);

  // `router` must outlive the Policy; nullptr restores the default.
  void set_router(const Router* router) { router_ = router; }

  // MAIL FROM: barred senders, size limit from SIZE=, who may relay.
  Reply check_sender(const ClientFacts&, const PathParse& from,
                     uint64_t declared_size) const;

  // RCPT TO: local users (550 5.1.1 unknown), barred recipients, relay
  // control (550 5.7.1 relaying denied unless office network or
  // authenticated), internal-only users, classic relay tricks refused
  // (percent hack, bang paths, quoted local parts with @, trailing dots,
  // source routes to a non-local final domain, case tricks).
  RcptDecision check_rcpt(const ClientFacts&, const PathParse& from,
                          const PathParse& rcpt) const;

  // Effective size limit for this sender (per-user or global).  Per-user
  // limits apply to authenticated users only: an envelope sender is
  // forgeable, a login is not.
  uint64_t size_limit(const ClientFacts&) const;

  bool is_local_domain(std::string_view domain) const;
  bool is_internal_domain(std::string_view domain) const;  // local too
  bool from_office(const ClientFacts&) const;

 private:
  // Entries are "local@domain" or "@domain", lower-case, local parts
  // unquoted (built from the config lists by the constructor).
  static bool barred(const std::vector<std::string>& list, const Mailbox&);
  bool internal_only(const ClientFacts&, const PathParse& from) const;
  std::string route_for(std::string_view domain) const;
  // Local part (of a local domain) -> local users and remote addresses,
  // following aliases that point at other local addresses.
  void expand_local(std::string_view local, RcptDecision& d, int depth) const;

  const Config& cfg_;
  const Users& users_;
  const Router* router_ = nullptr;
  std::vector<Cidr> office_;
  std::vector<std::string> barred_senders_, barred_recipients_;
};

}  // namespace ferry::gw
