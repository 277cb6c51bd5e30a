#include "gateway/router.h"

#include <algorithm>

#include "gateway/address.h"

namespace ferry::gw {

ConfigRouter::ConfigRouter(RouterConfig cfg) : cfg_(std::move(cfg)) {
  for (auto& d : cfg_.local_domains) d = lower_ascii(d);
  for (auto& p : cfg_.peers) {
    for (auto& d : p.domains) d = lower_ascii(d);
  }
}

bool ConfigRouter::matches(std::string_view entry, std::string_view domain) {
  if (!entry.empty() && entry.front() == '.') {
    return domain.size() > entry.size() &&
           domain.substr(domain.size() - entry.size()) == entry;
  }
  return entry == domain;
}

bool ConfigRouter::is_local(std::string_view domain) const {
  std::string d = lower_ascii(domain);
  for (const auto& l : cfg_.local_domains) {
    if (matches(l, d)) return true;
  }
  return false;
}

std::vector<std::string> ConfigRouter::routes_for(
    std::string_view domain) const {
  std::string d = lower_ascii(domain);
  if (is_local(d)) return {std::string(kLocalRoute)};
  std::vector<const RoutePeer*> found;
  for (const auto& p : cfg_.peers) {
    for (const auto& e : p.domains) {
      if (matches(e, d)) {
        found.push_back(&p);
        break;
      }
    }
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const RoutePeer* a, const RoutePeer* b) {
                     return a->preference < b->preference;
                   });
  std::vector<std::string> out;
  for (const RoutePeer* p : found) out.push_back(p->name);
  if (out.empty() && cfg_.smarthost) out.push_back(cfg_.smarthost_route);
  return out;
}

std::string ConfigRouter::route_for(std::string_view domain) const {
  std::vector<std::string> r = routes_for(domain);
  return r.empty() ? std::string() : r.front();
}

bool ConfigRouter::peer_serves(std::string_view peer,
                               std::string_view domain) const {
  const RoutePeer* p = this->peer(peer);
  if (p == nullptr) return false;
  std::string d = lower_ascii(domain);
  for (const auto& e : p->domains) {
    if (matches(e, d)) return true;
  }
  return false;
}

const RoutePeer* ConfigRouter::peer(std::string_view name) const {
  for (const auto& p : cfg_.peers) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace ferry::gw
