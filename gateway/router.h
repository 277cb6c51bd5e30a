// Routes: where mail for a domain goes.  Local domains are delivered here
// ("local"); a domain served by a peer goes to that peer (route name = the
// peer's name, whether we call it or it calls us and collects -- hold for
// pickup is simply a peer we never dial); anything else goes to the
// smarthost when one is configured, else it has no route.
//
// A domain may be listed by several peers, as a domain has several MX
// records: routes_for() gives them by preference (lower first, equal
// preferences in configuration order).  The first is where new mail
// goes; the call manager moves mail on to the next while a peer keeps
// failing (calls.h, failover).  The smarthost is an alternate of a
// peer's domain only when its own section lists the domain: private
// office domains must not leak to the provider because a line was busy.
//
// Domain entries are lower-case names; an entry starting with '.' matches
// every subdomain (".example.org" matches "a.example.org", not
// "example.org").
//
// Concurrency: immutable after construction; any thread may call it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "gateway/policy.h"

namespace ferry::gw {

inline constexpr std::string_view kLocalRoute = "local";
inline constexpr std::string_view kSmarthostRoute = "smarthost";

struct RoutePeer {
  std::string name;                  // [peer NAME]
  std::vector<std::string> domains;  // domains this peer serves
  unsigned preference = 10;          // lower is tried first
};

struct RouterConfig {
  std::vector<std::string> local_domains;
  std::vector<RoutePeer> peers;  // in configuration order
  bool smarthost = false;        // a smarthost route exists
  // Its route name: the [peer NAME] marked smarthost, else "smarthost"
  // (mail waits there until a smarthost is configured).
  std::string smarthost_route = std::string(kSmarthostRoute);
};


class ConfigRouter : public Router {
 public:
  explicit ConfigRouter(RouterConfig cfg);

  // "local", a peer name, "smarthost", or empty (no route).
  std::string route_for(std::string_view domain) const override;
  // Every route for the domain, preferred first; empty if none.  Several
  // only when several peers list the domain.
  std::vector<std::string> routes_for(std::string_view domain) const;
  bool is_local(std::string_view domain) const;
  // Does `peer` serve `domain`?  (ATRN: a peer may collect only its own.)
  bool peer_serves(std::string_view peer, std::string_view domain) const;
  const RoutePeer* peer(std::string_view name) const;

 private:
  static bool matches(std::string_view entry, std::string_view domain);
  RouterConfig cfg_;
};

}  // namespace ferry::gw
