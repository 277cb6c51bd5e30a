// ferry.conf reader.  One table (entries()) lists every key with its
// metadata, a setter that validates and stores a value, and a getter that
// prints the effective value; the reader, describe_effective() and
// config_keys() are all driven by it.  Checks that need the whole file
// (references between peers, modems and listeners) run in finish_config().

#include "gateway/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include "gateway/address.h"
#include "gateway/files.h"
#include "gateway/peer_tls.h"
#include "gateway/policy.h"

namespace ferry::gw {
namespace {

// --- Value parsers: text -> value, or false ----------------------------

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool parse_size(std::string_view s, uint64_t& out) {
  uint64_t mult = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k':
      case 'K':
        mult = 1ull << 10;
        break;
      case 'm':
      case 'M':
        mult = 1ull << 20;
        break;
      case 'g':
      case 'G':
        mult = 1ull << 30;
        break;
      case 't':
      case 'T':
        mult = 1ull << 40;
        break;
      default:
        break;
    }
    if (mult != 1) s.remove_suffix(1);
  }
  uint64_t n;
  if (!parse_u64(s, n)) return false;
  if (n > std::numeric_limits<uint64_t>::max() / mult) return false;
  out = n * mult;
  return true;
}

std::string format_size(uint64_t n) {
  static constexpr std::array<std::pair<char, int>, 4> units{
      {{'T', 40}, {'G', 30}, {'M', 20}, {'K', 10}}};
  for (auto [u, shift] : units) {
    uint64_t m = 1ull << shift;
    if (n != 0 && n % m == 0) return std::to_string(n / m) + u;
  }
  return std::to_string(n);
}

bool parse_duration_ms(std::string_view s, std::chrono::milliseconds& out) {
  uint64_t mult = 1000;
  if (s.size() > 2 && s.substr(s.size() - 2) == "ms") {
    mult = 1;
    s.remove_suffix(2);
  } else if (!s.empty()) {
    switch (s.back()) {
      case 's':
        mult = 1000;
        break;
      case 'm':
        mult = 60 * 1000;
        break;
      case 'h':
        mult = 3600 * 1000;
        break;
      case 'd':
        mult = 86400 * 1000;
        break;
      default:
        mult = 0;
        break;
    }
    if (mult != 0) {
      s.remove_suffix(1);
    } else {
      mult = 1000;  // a bare number: seconds
    }
  }
  uint64_t n;
  // Bound at ~100 years so that every later arithmetic stays in range.
  if (!parse_u64(s, n) || n > (100ull * 365 * 86400 * 1000) / mult) {
    return false;
  }
  out = std::chrono::milliseconds(n * mult);
  return true;
}

std::string format_duration(std::chrono::milliseconds d) {
  uint64_t ms = static_cast<uint64_t>(d.count());
  if (ms == 0) return "0s";
  if (ms % 1000 != 0) return std::to_string(ms) + "ms";
  uint64_t s = ms / 1000;
  if (s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

bool parse_bool(std::string_view s, bool& out) {
  std::string v = lower_ascii(s);
  if (v == "yes" || v == "true" || v == "on") {
    out = true;
    return true;
  }
  if (v == "no" || v == "false" || v == "off") {
    out = false;
    return true;
  }
  return false;
}

std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  std::string item;
  for (size_t i = 0; i <= s.size(); ++i) {
    char c = i < s.size() ? s[i] : ',';
    if (c == ',' || c == ' ' || c == '\t') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item.push_back(c);
    }
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

bool valid_domain(std::string_view d) {
  PathParse p = parse_path("x@" + std::string(d));
  return p.ok && p.rest.empty();
}

bool valid_address(std::string_view a) {
  PathParse p = parse_path(a);
  return p.ok && p.rest.empty() && !p.null_path && !p.source_route &&
         !p.box.domain.empty();
}

// "127.0.0.1:25" or "[::1]:587".
bool valid_listen_address(std::string_view s) {
  size_t colon = s.rfind(':');
  if (colon == s.npos) return false;
  std::string host(s.substr(0, colon));
  uint64_t port;
  if (!parse_u64(s.substr(colon + 1), port) || port > 65535) return false;
  unsigned char buf[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    return inet_pton(AF_INET6, host.c_str(), buf) == 1;
  }
  return inet_pton(AF_INET, host.c_str(), buf) == 1;
}

// --- The registry ------------------------------------------------------
//
// Each entry pairs a key's metadata with a setter (validate and store) and
// a getter (print the effective value).  The setters and getters are
// made by the *_key templates below from a field accessor: a generic
// lambda (auto& config, auto& section) -> auto& naming the field, generic
// so that the same lambda serves the setter (Config&, Section) and the
// getter (const Config&, ConstSection).  `section` points at the current
// named section ([listener NAME], [peer NAME] or [modem NAME]); the other
// pointers are null.

template <bool Const>
struct SectionRef {
  template <class T>
  using Ptr = std::conditional_t<Const, const T*, T*>;
  Ptr<ListenerConfig> listener = nullptr;
  Ptr<PeerConfig> peer = nullptr;
  Ptr<ModemConfig> modem = nullptr;
};
using Section = SectionRef<false>;
using ConstSection = SectionRef<true>;

// On failure a setter may set `detail` (" (bad item 'x')"); the reader
// adds "expected <Entry::expected>".
using Setter = bool (*)(Config&, const Section&, std::string_view,
                        std::string& detail);
using Getter = std::string (*)(const Config&, const ConstSection&);

// How a key may be repeated in one section.
enum class Repeat {
  no,      // a second setting is an error
  append,  // each setting adds its items to the list
  line,    // each setting adds one item, the whole value; describe
           // prints one line per item (the getter joins them with \n)
};

struct Entry {
  ConfigKey meta;
  std::string_view expected;  // "a size such as 10M"
  Setter set;
  Getter get;
  Repeat repeat = Repeat::no;
};

template <auto F>
Entry text_key(ConfigKey meta) {
  return {meta, "text",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            F(c, s) = std::string(v);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return std::string(F(c, s));
          }};
}

template <auto F>
Entry size_key(ConfigKey meta) {
  return {meta, "a size such as 10M",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            using T = std::remove_reference_t<decltype(F(c, s))>;
            uint64_t n;
            if (!parse_size(v, n) || n > std::numeric_limits<T>::max()) {
              return false;
            }
            F(c, s) = static_cast<T>(n);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_size(F(c, s));
          }};
}

template <auto F>
Entry count_key(ConfigKey meta) {
  return {meta, "a whole number from 1 to 1000000",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            uint64_t n;
            if (!parse_u64(v, n) || n == 0 || n > 1000000) return false;
            F(c, s) = static_cast<unsigned>(n);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return std::to_string(F(c, s));
          }};
}

// A std::chrono::seconds field: whole seconds, more than zero.
template <auto F>
Entry seconds_key(ConfigKey meta) {
  return {meta, "a duration of whole seconds such as 30s, 5m, 2h or 1d",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            std::chrono::milliseconds d;
            if (!parse_duration_ms(v, d) || d.count() % 1000 != 0 ||
                d.count() == 0) {
              return false;
            }
            F(c, s) = std::chrono::duration_cast<std::chrono::seconds>(d);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_duration(F(c, s));
          }};
}

// A std::chrono::milliseconds field; zero allowed.
template <auto F>
Entry millis_key(ConfigKey meta) {
  return {meta, "a duration such as 500ms or 2s",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            return parse_duration_ms(v, F(c, s));
          },
          [](const Config& c, const ConstSection& s) {
            return format_duration(F(c, s));
          }};
}

template <auto F>
Entry bool_key(ConfigKey meta) {
  return {meta, "yes or no",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            return parse_bool(v, F(c, s));
          },
          [](const Config& c, const ConstSection& s) {
            return std::string(F(c, s) ? "yes" : "no");
          }};
}

// A list of lower-cased words, each passing Check; a repeated key appends.
template <auto F, auto Check>
Entry list_key(ConfigKey meta, std::string_view expected) {
  return {
      meta, expected,
      [](Config& c, const Section& s, std::string_view v, std::string& detail) {
        for (std::string item : split_list(v)) {
          item = lower_ascii(item);
          if (!Check(item)) {
            detail = " (bad item '" + item + "')";
            return false;
          }
          F(c, s).push_back(item);
        }
        return true;
      },
      [](const Config& c, const ConstSection& s) { return join(F(c, s)); },
      Repeat::append};
}

bool address_or_domain(const std::string& item) {
  if (item.size() > 1 && item[0] == '@') return valid_domain(item.substr(1));
  return valid_address(item);
}

bool is_network(const std::string& item) {
  return Cidr::parse(item).has_value();
}

bool is_user_or_address(const std::string& item) {
  return Users::valid_name(item) || valid_address(item);
}

bool set_listen_address(Config&, const Section& s, std::string_view v,
                        std::string&) {
  if (!valid_listen_address(v)) return false;
  s.listener->address = std::string(v);
  return true;
}

std::string get_listen_address(const Config&, const ConstSection& s) {
  return s.listener->address;
}

bool set_mode(Config&, const Section& s, std::string_view v, std::string&) {
  if (v == "relay") {
    s.listener->mode = ListenerConfig::Mode::relay;
  } else if (v == "submission") {
    s.listener->mode = ListenerConfig::Mode::submission;
  } else {
    return false;
  }
  return true;
}

std::string get_mode(const Config&, const ConstSection& s) {
  return s.listener->mode == ListenerConfig::Mode::relay ? "relay"
                                                         : "submission";
}

bool set_user_sizes(Config& c, const Section&, std::string_view v,
                    std::string& detail) {
  for (const std::string& item : split_list(v)) {
    size_t colon = item.find(':');
    std::string user = lower_ascii(item.substr(0, colon));
    uint64_t n;
    if (colon == item.npos || !Users::valid_name(user) ||
        !parse_size(item.substr(colon + 1), n)) {
      detail = " (bad item '" + item + "')";
      return false;
    }
    c.rules.user_size_limits[user] = n;
  }
  return true;
}

std::string get_user_sizes(const Config& c, const ConstSection&) {
  std::vector<std::string> items;
  for (const auto& [user, n] : c.rules.user_size_limits) {
    items.push_back(user + ":" + format_size(n));
  }
  return join(items);
}

constexpr std::string_view kAddressesExpected =
    "addresses such as user@example.org or @example.org";

// Field accessors for the table below.
constexpr auto kHostname = [](auto& c, auto&) -> auto& { return c.hostname; };
constexpr auto kSpoolDir = [](auto& c, auto&) -> auto& { return c.spool_dir; };
constexpr auto kControlSocket = [](auto& c, auto&) -> auto& {
  return c.control_socket;
};
constexpr auto kLockDir = [](auto& c, auto&) -> auto& { return c.lock_dir; };
constexpr auto kTrustedLocal = [](auto&, auto& s) -> auto& {
  return s.listener->trusted_local;
};
constexpr auto kStarttls = [](auto&, auto& s) -> auto& {
  return s.listener->starttls;
};
constexpr auto kRequireAuth = [](auto&, auto& s) -> auto& {
  return s.listener->require_auth;
};
constexpr auto kSmtpMaxMessageSize = [](auto& c, auto&) -> auto& {
  return c.smtp.max_message_size;
};
constexpr auto kSmtpMaxLineLength = [](auto& c, auto&) -> auto& {
  return c.smtp.max_line_length;
};
constexpr auto kSmtpMaxRecipients = [](auto& c, auto&) -> auto& {
  return c.smtp.max_recipients;
};
constexpr auto kSmtpCommandTimeout = [](auto& c, auto&) -> auto& {
  return c.smtp.command_timeout;
};
constexpr auto kSmtpDataBlockTimeout = [](auto& c, auto&) -> auto& {
  return c.smtp.data_block_timeout;
};
constexpr auto kSmtpDataDoneTimeout = [](auto& c, auto&) -> auto& {
  return c.smtp.data_done_timeout;
};
constexpr auto kSmtpGreetingPause = [](auto& c, auto&) -> auto& {
  return c.smtp.greeting_pause;
};
constexpr auto kSmtpVrfy = [](auto& c, auto&) -> auto& { return c.smtp.vrfy; };
constexpr auto kSmtpMaxSessions = [](auto& c, auto&) -> auto& {
  return c.smtp.max_sessions;
};
constexpr auto kTlsCertificate = [](auto& c, auto&) -> auto& {
  return c.tls.certificate;
};
constexpr auto kTlsKey = [](auto& c, auto&) -> auto& { return c.tls.key; };
constexpr auto kLocalDomains = [](auto& c, auto&) -> auto& {
  return c.local.domains;
};
constexpr auto kLocalMailRoot = [](auto& c, auto&) -> auto& {
  return c.local.mail_root;
};
constexpr auto kLocalUsersFile = [](auto& c, auto&) -> auto& {
  return c.local.users_file;
};
constexpr auto kLocalAliasesFile = [](auto& c, auto&) -> auto& {
  return c.local.aliases_file;
};
constexpr auto kRulesOfficeNetworks = [](auto& c, auto&) -> auto& {
  return c.rules.office_networks;
};
constexpr auto kRulesBarredSenders = [](auto& c, auto&) -> auto& {
  return c.rules.barred_senders;
};
constexpr auto kRulesBarredRecipients = [](auto& c, auto&) -> auto& {
  return c.rules.barred_recipients;
};
constexpr auto kRulesInternalDomains = [](auto& c, auto&) -> auto& {
  return c.rules.internal_domains;
};
constexpr auto kRulesInternalOnlyUsers = [](auto& c, auto&) -> auto& {
  return c.rules.internal_only_users;
};

constexpr auto kPop3Listen = [](auto& c, auto&) -> auto& {
  return c.pop3.listen;
};
constexpr auto kPop3TrustedLocal = [](auto& c, auto&) -> auto& {
  return c.pop3.trusted_local;
};
constexpr auto kPop3IdleTimeout = [](auto& c, auto&) -> auto& {
  return c.pop3.idle_timeout;
};
constexpr auto kPop3MaxSessions = [](auto& c, auto&) -> auto& {
  return c.pop3.max_sessions;
};
bool is_listen_address(const std::string& item) {
  return valid_listen_address(item);
}

// --- Keys of [link], [schedule], [peer NAME] and [modem NAME] ----------

bool valid_section_name(std::string_view s);

bool parse_real(std::string_view s, double& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && std::isfinite(out);
}

// Shortest text that reads back as the same double ("0.1", "2").
std::string format_real(double d) {
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  return ec == std::errc() ? std::string(buf, p) : std::to_string(d);
}

// A system user or group name: what useradd accepts, roughly.
bool valid_account_name(std::string_view s) {
  if (s.empty() || s.size() > 32 || s.front() == '-') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

// A login name for a remote server: printable, no blanks.
bool valid_login(std::string_view s) {
  for (char c : s) {
    if (c <= 0x20 || c > 0x7e) return false;
  }
  return !s.empty();
}

// Hayes dial modifiers a route or a dial prefix may hold besides digits.
// ',' (pause) appears only in a prefix: routes are split at commas.
constexpr std::string_view kDialModifiers = "*#ABCDabcdPpTtWw@!";

bool valid_phone_number(std::string_view s) {
  bool digit = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      digit = true;
    } else if (kDialModifiers.find(c) == std::string_view::npos) {
      return false;
    }
  }
  return digit;
}

bool valid_dial_prefix(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= '0' && c <= '9') || c == ',' ||
              kDialModifiers.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

constexpr std::string_view kDirectRoute = "direct";

bool is_tcp_route(std::string_view r) { return r.substr(0, 4) == "tcp:"; }

constexpr std::string_view kExecRoute = "exec";

bool valid_route(std::string_view r) {
  if (r == kDirectRoute || r == kExecRoute) return true;
  if (is_tcp_route(r)) return valid_listen_address(r.substr(4));
  return valid_phone_number(r);
}

bool is_phone_route(std::string_view r) {
  return r != kDirectRoute && r != kExecRoute && !is_tcp_route(r);
}

// A modem command: printable ASCII starting with AT.
bool valid_at_command(std::string_view s) {
  if (s.size() < 2 || lower_ascii(s.substr(0, 2)) != "at") return false;
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// A header field name (RFC 5322 ftext), lower-cased by the caller.
bool valid_header_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < 33 || c > 126 || c == ':') return false;
  }
  return true;
}

// Free text checked by Check; empty means "not set" and is always allowed
// (describe_effective prints it as `key =`).
template <auto F, auto Check>
Entry checked_text_key(ConfigKey meta, std::string_view expected) {
  return {meta, expected,
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            if (!v.empty() && !Check(v)) return false;
            F(c, s) = std::string(v);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return std::string(F(c, s));
          }};
}

// An unsigned field from Lo to Hi.
template <auto F, uint64_t Lo, uint64_t Hi>
Entry range_key(ConfigKey meta, std::string_view expected) {
  return {meta, expected,
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            using T = std::remove_reference_t<decltype(F(c, s))>;
            uint64_t n;
            if (!parse_u64(v, n) || n < Lo || n > Hi) return false;
            F(c, s) = static_cast<T>(n);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return std::to_string(F(c, s));
          }};
}

// A size field from Lo to Hi bytes.
template <auto F, uint64_t Lo, uint64_t Hi>
Entry bounded_size_key(ConfigKey meta, std::string_view expected) {
  return {meta, expected,
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            using T = std::remove_reference_t<decltype(F(c, s))>;
            uint64_t n;
            if (!parse_size(v, n) || n < Lo || n > Hi) return false;
            F(c, s) = static_cast<T>(n);
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_size(F(c, s));
          }};
}

// A std::chrono::milliseconds field that must be above zero.
template <auto F>
Entry timeout_key(ConfigKey meta) {
  return {meta, "a duration above zero such as 500ms, 2s or 1m",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            std::chrono::milliseconds d;
            if (!parse_duration_ms(v, d) || d.count() == 0) return false;
            F(c, s) = d;
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_duration(F(c, s));
          }};
}

// A double above zero (time_scale).
template <auto F>
Entry positive_number_key(ConfigKey meta) {
  return {meta, "a number above 0 such as 1 or 0.01",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            double d;
            if (!parse_real(v, d) || d <= 0 || d > 1e6) return false;
            F(c, s) = d;
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_real(F(c, s));
          }};
}

// A number of 0 or more (money).
template <auto F>
Entry amount_key(ConfigKey meta) {
  return {meta, "a number of 0 or more such as 0.05",
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            double d;
            if (!parse_real(v, d) || d < 0 || d > 1e9) return false;
            F(c, s) = d;
            return true;
          },
          [](const Config& c, const ConstSection& s) {
            return format_real(F(c, s));
          }};
}

// One word of a fixed set, mapped onto an enum.
template <class E>
struct Choice {
  std::string_view word;
  E value;
};

template <auto F, auto& Choices>
Entry choice_key(ConfigKey meta, std::string_view expected) {
  return {meta, expected,
          [](Config& c, const Section& s, std::string_view v, std::string&) {
            std::string w = lower_ascii(v);
            for (const auto& ch : Choices) {
              if (ch.word == w) {
                F(c, s) = ch.value;
                return true;
              }
            }
            return false;
          },
          [](const Config& c, const ConstSection& s) {
            for (const auto& ch : Choices) {
              if (ch.value == F(c, s)) return std::string(ch.word);
            }
            return std::string();
          }};
}

constexpr std::array<Choice<PeerConfig::Protocol>, 2> kProtocols{
    {{"ferry", PeerConfig::Protocol::ferry},
     {"smtp", PeerConfig::Protocol::smtp}}};
constexpr std::array<Choice<PeerConfig::Tls>, 3> kTlsChoices{
    {{"no", PeerConfig::Tls::no},
     {"yes", PeerConfig::Tls::yes},
     {"required", PeerConfig::Tls::required}}};
constexpr std::array<Choice<modem::DialMode>, 2> kDialModes{
    {{"tone", modem::DialMode::tone}, {"pulse", modem::DialMode::pulse}}};
constexpr std::array<Choice<modem::HangupMethod>, 3> kHangups{
    {{"auto", modem::HangupMethod::automatic},
     {"dtr", modem::HangupMethod::dtr},
     {"escape", modem::HangupMethod::escape}}};
constexpr std::array<Choice<modem::AnswerMethod>, 2> kAnswerMethods{
    {{"host", modem::AnswerMethod::host},
     {"modem", modem::AnswerMethod::modem}}};

bool set_control_mode(Config& c, const Section&, std::string_view v,
                      std::string&) {
  if (v.empty() || v.size() > 4) return false;
  unsigned m = 0;
  for (char ch : v) {
    if (ch < '0' || ch > '7') return false;
    m = m * 8 + static_cast<unsigned>(ch - '0');
  }
  if (m > 0777) return false;
  c.control_mode = static_cast<mode_t>(m);
  return true;
}

std::string get_control_mode(const Config& c, const ConstSection&) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o",
                static_cast<unsigned>(c.control_mode & 07777));
  return buf;
}

bool set_fingerprint(Config&, const Section& s, std::string_view v,
                     std::string&) {
  if (v.empty()) {
    s.peer->fingerprint.clear();
    return true;
  }
  std::string f = normalize_fingerprint(v);
  if (f.empty()) return false;
  s.peer->fingerprint = f;
  return true;
}

std::string get_fingerprint(const Config&, const ConstSection& s) {
  return s.peer->fingerprint;
}

// Replaces the default list rather than adding to it.
bool set_envelope_headers(Config&, const Section& s, std::string_view v,
                          std::string& detail) {
  std::vector<std::string> headers;
  for (std::string item : split_list(v)) {
    item = lower_ascii(item);
    if (!valid_header_name(item)) {
      detail = " (bad item '" + item + "')";
      return false;
    }
    headers.push_back(item);
  }
  s.peer->pop3_envelope_headers = std::move(headers);
  return true;
}

std::string get_envelope_headers(const Config&, const ConstSection& s) {
  return join(s.peer->pop3_envelope_headers);
}

bool set_optional_init(Config&, const Section& s, std::string_view v,
                       std::string&) {
  if (v.empty()) return true;
  if (!valid_at_command(v)) return false;
  s.modem->profile.optional_init.emplace_back(v);
  return true;
}

std::string get_optional_init(const Config&, const ConstSection& s) {
  std::string out;
  for (const std::string& cmd : s.modem->profile.optional_init) {
    if (!out.empty()) out += '\n';
    out += cmd;
  }
  return out;
}

bool is_listen_address_view(std::string_view s) {
  return valid_listen_address(s);
}
bool is_address_view(std::string_view s) { return valid_address(s); }

// --- Schedule keys: [schedule] defaults and [peer NAME] ------------------
//
// set_schedule_key (gateway/schedule.h) validates and stores; the table
// adds what the registry needs (type, default, doc, what is expected).
// Defaults are written as describe_effective prints them.

struct ScheduleKey {
  std::string_view key;
  KeyType type;
  std::string_view default_value;
  std::string_view doc;
  std::string_view expected;
};

constexpr std::string_view kDurationExpected =
    "a duration such as 90s, 30m or 1h30m";
constexpr std::string_view kRetryDoc =
    "first wait after a failed call of "
    "this class (FAILURE CLASSES)";

constexpr ScheduleKey kScheduleKeys[] = {
    {"windows", KeyType::windows, "always",
     "when calls may be placed: always, never, or windows such as "
     "Mon-Fri 18:00-07:30",
     "call windows such as 'Mon-Fri 18:00-07:30, Sat 09:00-12:00', always "
     "or never"},
    {"zone", KeyType::zone, "UTC",
     "time zone of windows and poll times: UTC, +HH:MM, -HH:MM or a tz "
     "name",
     "UTC, +HH:MM, -HH:MM or a tz name such as Europe/Berlin"},
    {"routes", KeyType::list, "",
     "how the peer is reached, best first: phone numbers, tcp:IP:PORT, "
     "direct or exec",
     "phone numbers (digits and dial modifiers), tcp:IP:PORT, direct or "
     "exec"},
    {"line", KeyType::string, "any",
     "the [modem NAME] calls go out on; any: any free modem with dial = "
     "yes",
     "the name of a [modem NAME] section or any"},
    {"poll", KeyType::times, "",
     "local times of day to call even with nothing queued (to collect)",
     "times of day such as 08:00 12:30"},
    {"min_messages", KeyType::count, "1",
     "call when this many messages wait; 0: off", "a whole number"},
    {"min_bytes", KeyType::size, "0", "call when this many bytes wait; 0: off",
     "a size such as 64K"},
    {"max_age", KeyType::duration, "0s",
     "call when the oldest message is this old; 0s: off", kDurationExpected},
    {"urgent_priority", KeyType::count, "1",
     "call at once for a message of at least this priority; 0: off",
     "a whole number"},
    {"urgent_ignores_window", KeyType::boolean, "no",
     "urgent mail is sent outside the call windows too", "yes or no"},
    {"max_call", KeyType::duration, "30m", "hang up after this long",
     kDurationExpected},
    {"min_gap", KeyType::duration, "0s",
     "least time from the end of a call to the next dial", kDurationExpected},
    {"max_calls_per_day", KeyType::count, "0",
     "connected calls in any 24 hours; 0: no limit", "a whole number"},
    {"lifetime", KeyType::duration, "5d",
     "return a message once it is this old and lifetime_missed windows "
     "passed; 0s: off",
     kDurationExpected},
    {"lifetime_missed", KeyType::count, "3",
     "call windows a message must miss before it is returned; 0: off",
     "a whole number"},
    {"warn_after", KeyType::duration, "4h",
     "tell the sender a message is delayed after this long; 0s: never",
     kDurationExpected},
    {"retry_busy", KeyType::duration, "3m", kRetryDoc, kDurationExpected},
    {"retry_no_answer", KeyType::duration, "15m", kRetryDoc, kDurationExpected},
    {"retry_no_dialtone", KeyType::duration, "5m", kRetryDoc,
     kDurationExpected},
    {"retry_no_carrier", KeyType::duration, "5m", kRetryDoc, kDurationExpected},
    {"retry_modem_not_responding", KeyType::duration, "1m", kRetryDoc,
     kDurationExpected},
    {"retry_delayed", KeyType::duration, "10m", kRetryDoc, kDurationExpected},
    {"retry_blacklisted", KeyType::duration, "1h", kRetryDoc,
     kDurationExpected},
    {"retry_port_locked", KeyType::duration, "2m", kRetryDoc,
     kDurationExpected},
    {"retry_port_unavailable", KeyType::duration, "5m", kRetryDoc,
     kDurationExpected},
    {"retry_auth_failed", KeyType::duration, "0s", kRetryDoc,
     kDurationExpected},
    {"retry_config_error", KeyType::duration, "0s", kRetryDoc,
     kDurationExpected},
    {"retry_protocol_error", KeyType::duration, "15m", kRetryDoc,
     kDurationExpected},
    {"retry_dropped", KeyType::duration, "1m", kRetryDoc, kDurationExpected},
    {"retry_factor", KeyType::number, "2",
     "each further failure in a row multiplies the wait by this",
     "a number such as 2 or 1.5"},
    {"retry_cap", KeyType::duration, "4h", "longest wait between retries",
     kDurationExpected},
    {"retry_jitter", KeyType::number, "0.1",
     "random spread of each wait, as a fraction below 1",
     "a number from 0 to below 1 such as 0.1"},
    {"modem_reset_limit", KeyType::count, "3",
     "modem failures in a row before the modem is out of service",
     "a whole number"},
};
constexpr size_t kScheduleKeyCount = std::size(kScheduleKeys);

std::string hhmm(int minute) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d", minute / 60, minute % 60);
  return buf;
}

// set_schedule_key reads K, M and G only.
std::string format_schedule_size(uint64_t n) {
  static constexpr std::array<std::pair<char, int>, 3> units{
      {{'G', 30}, {'M', 20}, {'K', 10}}};
  for (auto [u, shift] : units) {
    uint64_t m = 1ull << shift;
    if (n != 0 && n % m == 0) return std::to_string(n / m) + u;
  }
  return std::to_string(n);
}

// The effective value of schedule key `k`, as set_schedule_key reads it.
std::string schedule_value(const PeerSchedule& p, std::string_view k) {
  auto secs = [](std::chrono::seconds d) {
    return format_duration(std::chrono::milliseconds(d));
  };
  if (k == "windows") return p.windows.spec();
  if (k == "zone") return p.zone.name();
  if (k == "routes") return join(p.routes);
  if (k == "line") return p.line;
  if (k == "poll") {
    std::string out;
    for (int m : p.triggers.poll_times) {
      if (!out.empty()) out += ' ';
      out += hhmm(m);
    }
    return out;
  }
  if (k == "min_messages") return std::to_string(p.triggers.min_messages);
  if (k == "min_bytes") return format_schedule_size(p.triggers.min_bytes);
  if (k == "max_age") return secs(p.triggers.max_age);
  if (k == "urgent_priority") return std::to_string(p.triggers.urgent_priority);
  if (k == "urgent_ignores_window") {
    return p.triggers.urgent_ignores_window ? "yes" : "no";
  }
  if (k == "max_call") return secs(p.limits.max_call);
  if (k == "min_gap") return secs(p.limits.min_gap);
  if (k == "max_calls_per_day") {
    return std::to_string(p.limits.max_calls_per_day);
  }
  if (k == "lifetime") return secs(p.lifetime.max_age);
  if (k == "lifetime_missed") return std::to_string(p.lifetime.max_missed);
  if (k == "warn_after") return secs(p.lifetime.warn_after);
  if (k == "retry_factor") return format_real(p.retry.factor);
  if (k == "retry_cap") return secs(p.retry.cap);
  if (k == "retry_jitter") return format_real(p.retry.jitter);
  if (k == "modem_reset_limit")
    return std::to_string(p.retry.modem_reset_limit);
  if (k.substr(0, 6) == "retry_") {
    if (auto c = parse_failure_class(k.substr(6))) {
      return secs(p.retry.base[static_cast<int>(*c)]);
    }
  }
  return {};
}

// set_schedule_key plus the checks only the config layer knows: route
// syntax (so a bad route is reported on its own line) and line names.
bool apply_schedule_key(PeerSchedule& p, std::string_view key,
                        std::string_view v, std::string& detail) {
  std::string error;
  if (!set_schedule_key(p, key, v, error)) {
    std::string prefix = std::string(key) + ": ";
    if (error.rfind(prefix, 0) == 0) error.erase(0, prefix.size());
    detail = " (" + error + ")";
    return false;
  }
  if (key == "routes") {
    for (const std::string& r : p.routes) {
      if (!valid_route(r)) {
        detail = " (bad route '" + r + "')";
        return false;
      }
    }
  }
  if (key == "line" && p.line != kAnyLine && !valid_section_name(p.line)) {
    return false;
  }
  return true;
}

template <size_t I>
Entry peer_schedule_entry() {
  constexpr ScheduleKey k = kScheduleKeys[I];
  return {
      {"peer", k.key, k.type, k.default_value, k.doc},
      k.expected,
      [](Config&, const Section& s, std::string_view v, std::string& detail) {
        constexpr std::string_view key = kScheduleKeys[I].key;
        if (!apply_schedule_key(s.peer->schedule, key, v, detail)) {
          return false;
        }
        s.peer->schedule_keys.emplace_back(key, v);
        return true;
      },
      [](const Config&, const ConstSection& s) {
        return schedule_value(s.peer->schedule, kScheduleKeys[I].key);
      }};
}

template <size_t I>
Entry default_schedule_entry() {
  constexpr ScheduleKey k = kScheduleKeys[I];
  return {
      {"schedule", k.key, k.type, k.default_value, k.doc},
      k.expected,
      [](Config& c, const Section&, std::string_view v, std::string& detail) {
        constexpr std::string_view key = kScheduleKeys[I].key;
        if (!apply_schedule_key(c.schedule_defaults, key, v, detail)) {
          return false;
        }
        c.schedule_default_keys.emplace_back(key, v);
        return true;
      },
      [](const Config& c, const ConstSection&) {
        return schedule_value(c.schedule_defaults, kScheduleKeys[I].key);
      }};
}

template <size_t... I>
void add_schedule_entries(std::vector<Entry>& out, bool peer,
                          std::index_sequence<I...>) {
  if (peer) {
    (out.push_back(peer_schedule_entry<I>()), ...);
  } else {
    (out.push_back(default_schedule_entry<I>()), ...);
  }
}

// Field accessors of the new sections.
constexpr auto kUser = [](auto& c, auto&) -> auto& { return c.user; };
constexpr auto kControlGroup = [](auto& c, auto&) -> auto& {
  return c.control_group;
};
constexpr auto kLinkCertificate = [](auto& c, auto&) -> auto& {
  return c.link.certificate;
};
constexpr auto kLinkKey = [](auto& c, auto&) -> auto& { return c.link.key; };
constexpr auto kLinkListen = [](auto& c, auto&) -> auto& {
  return c.link.listen;
};
constexpr auto kLinkChunkSize = [](auto& c, auto&) -> auto& {
  return c.link.chunk_size;
};
constexpr auto kLinkWindowChunks = [](auto& c, auto&) -> auto& {
  return c.link.window_chunks;
};
constexpr auto kLinkTimeout = [](auto& c, auto&) -> auto& {
  return c.link.timeout;
};
constexpr auto kPostmasterCopy = [](auto& c, auto&) -> auto& {
  return c.notify.postmaster_copy;
};
constexpr auto kReturnContentLimit = [](auto& c, auto&) -> auto& {
  return c.notify.return_content_limit;
};

constexpr auto kPeerDomains = [](auto&, auto& s) -> auto& {
  return s.peer->domains;
};
constexpr auto kPeerSmarthost = [](auto&, auto& s) -> auto& {
  return s.peer->smarthost;
};
constexpr auto kPeerProtocol = [](auto&, auto& s) -> auto& {
  return s.peer->protocol;
};
constexpr auto kPeerDial = [](auto&, auto& s) -> auto& { return s.peer->dial; };
constexpr auto kPeerPreference = [](auto&, auto& s) -> auto& {
  return s.peer->preference;
};
constexpr auto kPeerFailoverAfter = [](auto&, auto& s) -> auto& {
  return s.peer->failover_after;
};
constexpr auto kPeerCommand = [](auto&, auto& s) -> auto& {
  return s.peer->command;
};
constexpr auto kPeerPskFile = [](auto&, auto& s) -> auto& {
  return s.peer->psk_file;
};
constexpr auto kPeerSmtpStarttls = [](auto&, auto& s) -> auto& {
  return s.peer->smtp_starttls;
};
constexpr auto kPeerSmtpAuthUser = [](auto&, auto& s) -> auto& {
  return s.peer->smtp_auth_user;
};
constexpr auto kPeerSmtpAuthPasswordFile = [](auto&, auto& s) -> auto& {
  return s.peer->smtp_auth_password_file;
};
constexpr auto kPeerAtrn = [](auto&, auto& s) -> auto& { return s.peer->atrn; };
constexpr auto kPeerCostPerCall = [](auto&, auto& s) -> auto& {
  return s.peer->cost_per_call;
};
constexpr auto kPeerCostPerMinute = [](auto&, auto& s) -> auto& {
  return s.peer->cost_per_minute;
};
constexpr auto kPeerPop3Server = [](auto&, auto& s) -> auto& {
  return s.peer->pop3_server;
};
constexpr auto kPeerPop3User = [](auto&, auto& s) -> auto& {
  return s.peer->pop3_user;
};
constexpr auto kPeerPop3PasswordFile = [](auto&, auto& s) -> auto& {
  return s.peer->pop3_password_file;
};
constexpr auto kPeerPop3Stls = [](auto&, auto& s) -> auto& {
  return s.peer->pop3_stls;
};

constexpr auto kModemDevice = [](auto&, auto& s) -> auto& {
  return s.modem->device;
};
constexpr auto kModemAnswer = [](auto&, auto& s) -> auto& {
  return s.modem->answer;
};
constexpr auto kModemDial = [](auto&, auto& s) -> auto& {
  return s.modem->dial;
};
constexpr auto kModemDirect = [](auto&, auto& s) -> auto& {
  return s.modem->direct;
};
constexpr auto kModemBaud = [](auto&, auto& s) -> auto& {
  return s.modem->profile.baud;
};
constexpr auto kModemRtsCts = [](auto&, auto& s) -> auto& {
  return s.modem->profile.rts_cts;
};
constexpr auto kModemResetCommand = [](auto&, auto& s) -> auto& {
  return s.modem->profile.reset_command;
};
constexpr auto kModemInitString = [](auto&, auto& s) -> auto& {
  return s.modem->profile.init_string;
};
constexpr auto kModemDialMode = [](auto&, auto& s) -> auto& {
  return s.modem->profile.dial_mode;
};
constexpr auto kModemDialPrefix = [](auto&, auto& s) -> auto& {
  return s.modem->profile.dial_prefix;
};
constexpr auto kModemHangup = [](auto&, auto& s) -> auto& {
  return s.modem->profile.hangup;
};
constexpr auto kModemAnswerMethod = [](auto&, auto& s) -> auto& {
  return s.modem->profile.answer;
};
constexpr auto kModemAnswerRings = [](auto&, auto& s) -> auto& {
  return s.modem->profile.answer_rings;
};
constexpr auto kModemResetPause = [](auto&, auto& s) -> auto& {
  return s.modem->profile.reset_pause;
};
constexpr auto kModemCommandTimeout = [](auto&, auto& s) -> auto& {
  return s.modem->profile.command_timeout;
};
constexpr auto kModemResetTimeout = [](auto&, auto& s) -> auto& {
  return s.modem->profile.reset_timeout;
};
constexpr auto kModemDialTimeout = [](auto&, auto& s) -> auto& {
  return s.modem->profile.dial_timeout;
};
constexpr auto kModemAnswerTimeout = [](auto&, auto& s) -> auto& {
  return s.modem->profile.answer_timeout;
};
constexpr auto kModemHangupTimeout = [](auto&, auto& s) -> auto& {
  return s.modem->profile.hangup_timeout;
};
constexpr auto kModemGuardTime = [](auto&, auto& s) -> auto& {
  return s.modem->profile.guard_time;
};
constexpr auto kModemDtrDrop = [](auto&, auto& s) -> auto& {
  return s.modem->profile.dtr_drop;
};
constexpr auto kModemRingGap = [](auto&, auto& s) -> auto& {
  return s.modem->profile.ring_gap;
};
constexpr auto kModemLinePoll = [](auto&, auto& s) -> auto& {
  return s.modem->profile.line_poll;
};
constexpr auto kModemLockWait = [](auto&, auto& s) -> auto& {
  return s.modem->profile.lock_wait;
};
constexpr auto kModemTimeScale = [](auto&, auto& s) -> auto& {
  return s.modem->profile.time_scale;
};

constexpr std::string_view kTlsExpected = "no, yes or required";

void add_link_and_schedule_entries(std::vector<Entry>& e) {
  // [link]
  e.push_back(text_key<kLinkCertificate>(
      {"link", "certificate", KeyType::path, "",
       "PEM certificate presented to ferry peers; empty: no ferry "
       "peers"}));
  e.push_back(text_key<kLinkKey>({"link", "key", KeyType::path, "",
                                  "PEM private key of that "
                                  "certificate"}));
  e.push_back(list_key<kLinkListen, is_listen_address>(
      {"link", "listen", KeyType::list, "",
       "addresses to answer link sessions over TCP on; empty: none"},
      "addresses such as 127.0.0.1:7625 or [::1]:7625"));
  e.push_back(bounded_size_key<kLinkChunkSize, 256, (1u << 20)>(
      {"link", "chunk_size", KeyType::size, "16K",
       "stored bytes per BDAT chunk on a link"},
      "a size from 256 to 1M such as 16K"));
  e.push_back(range_key<kLinkWindowChunks, 1, 64>(
      {"link", "window_chunks", KeyType::count, "4",
       "chunks sent ahead of their replies (resent after a drop)"},
      "a whole number from 1 to 64"));
  e.push_back(seconds_key<kLinkTimeout>(
      {"link", "timeout", KeyType::duration, "5m",
       "longest silence on a link before it is given up"}));

  // [schedule]
  add_schedule_entries(e, false, std::make_index_sequence<kScheduleKeyCount>());
  e.push_back(checked_text_key<kPostmasterCopy, is_address_view>(
      {"schedule", "postmaster_copy", KeyType::string, "",
       "address sent a copy of every failure notice; empty: none"},
      "an address such as postmaster@example.org"));
  e.push_back(size_key<kReturnContentLimit>(
      {"schedule", "return_content_limit", KeyType::size, "64K",
       "a returned message is attached whole up to this size, else its "
       "header"}));
}

void add_peer_entries(std::vector<Entry>& e) {
  e.push_back(list_key<kPeerDomains, valid_domain>(
      {"peer", "domains", KeyType::list, "",
       "domains whose mail goes to this peer"},
      "domain names"));
  e.push_back(bool_key<kPeerSmarthost>(
      {"peer", "smarthost", KeyType::boolean, "no",
       "also the route for every domain no peer claims (one peer at most)"}));
  e.push_back(choice_key<kPeerProtocol, kProtocols>(
      {"peer", "protocol", KeyType::choice, "ferry",
       "ferry (a ferryd: link sessions) or smtp (an MTA such as the "
       "provider's)"},
      "ferry or smtp"));
  e.push_back(bool_key<kPeerDial>(
      {"peer", "dial", KeyType::boolean, "yes",
       "we call it; no: its mail is held until it calls us"}));
  e.push_back(range_key<kPeerPreference, 0, 65535>(
      {"peer", "preference", KeyType::count, "10",
       "among peers listing the same domain, lower is tried first (as MX "
       "preferences)"},
      "a whole number from 0 to 65535"));
  e.push_back(range_key<kPeerFailoverAfter, 1, 1000>(
      {"peer", "failover_after", KeyType::count, "1",
       "failed calls in a row after which mail for domains another peer "
       "also serves moves on to it"},
      "a whole number from 1 to 1000"));
  e.push_back(text_key<kPeerCommand>(
      {"peer", "command", KeyType::string, "",
       "the route exec: a shell command whose standard input and output "
       "reach the peer's link listener"}));
  e.push_back(Entry{{"peer", "fingerprint", KeyType::string, "",
                     "sha256 fingerprint of the peer's link certificate "
                     "(ferry peers)"},
                    "a fingerprint such as sha256: and 64 hex digits",
                    set_fingerprint,
                    get_fingerprint});
  e.push_back(text_key<kPeerPskFile>(
      {"peer", "psk_file", KeyType::path, "",
       "file holding a TLS 1.3 pre-shared key shared with the peer"}));
  e.push_back(choice_key<kPeerSmtpStarttls, kTlsChoices>(
      {"peer", "smtp_starttls", KeyType::choice, "yes",
       "smtp peers: use STARTTLS when offered; required: only with it"},
      kTlsExpected));
  e.push_back(checked_text_key<kPeerSmtpAuthUser, valid_login>(
      {"peer", "smtp_auth_user", KeyType::string, "",
       "smtp peers: AUTH as this user; empty: no AUTH"},
      "a user name without blanks"));
  e.push_back(text_key<kPeerSmtpAuthPasswordFile>(
      {"peer", "smtp_auth_password_file", KeyType::path, "",
       "file whose first line is the AUTH password"}));
  e.push_back(bool_key<kPeerAtrn>(
      {"peer", "atrn", KeyType::boolean, "no",
       "smtp peers: ask for our domains' mail with ATRN after sending"}));
  e.push_back(amount_key<kPeerCostPerCall>(
      {"peer", "cost_per_call", KeyType::number, "0",
       "tariff: what a connected call costs on connecting"}));
  e.push_back(amount_key<kPeerCostPerMinute>(
      {"peer", "cost_per_minute", KeyType::number, "0",
       "tariff: what each started minute of a connected call costs"}));
  e.push_back(checked_text_key<kPeerPop3Server, is_listen_address_view>(
      {"peer", "pop3_server", KeyType::address, "",
       "IP:PORT of a POP3 multidrop mailbox to collect; empty: none"},
      "an address such as 192.0.2.7:110 or [2001:db8::7]:995"));
  e.push_back(text_key<kPeerPop3User>({"peer", "pop3_user", KeyType::string, "",
                                       "user name of the POP3 mailbox"}));
  e.push_back(text_key<kPeerPop3PasswordFile>(
      {"peer", "pop3_password_file", KeyType::path, "",
       "file whose first line is the POP3 password"}));
  e.push_back(choice_key<kPeerPop3Stls, kTlsChoices>(
      {"peer", "pop3_stls", KeyType::choice, "yes",
       "use STLS when offered; required: only with it"},
      kTlsExpected));
  e.push_back(Entry{{"peer", "pop3_envelope_headers", KeyType::list,
                     "delivered-to, x-original-to, envelope-to",
                     "headers naming the envelope recipient, tried in order "
                     "(replaces the default)"},
                    "header names such as delivered-to",
                    set_envelope_headers,
                    get_envelope_headers});
  add_schedule_entries(e, true, std::make_index_sequence<kScheduleKeyCount>());
}

void add_modem_entries(std::vector<Entry>& e) {
  e.push_back(
      text_key<kModemDevice>({"modem", "device", KeyType::path, "",
                              "serial device such as /dev/ttyS0 (required)"}));
  e.push_back(bool_key<kModemAnswer>(
      {"modem", "answer", KeyType::boolean, "yes", "answer incoming calls"}));
  e.push_back(bool_key<kModemDial>({"modem", "dial", KeyType::boolean, "yes",
                                    "place calls (between answering)"}));
  e.push_back(bool_key<kModemDirect>(
      {"modem", "direct", KeyType::boolean, "no",
       "a direct serial line: no AT commands, up once the port is open"}));
  e.push_back(range_key<kModemBaud, 50, 4000000>(
      {"modem", "baud", KeyType::count, "115200",
       "port speed between computer and modem (8N1)"},
      "a port speed such as 115200"));
  e.push_back(bool_key<kModemRtsCts>({"modem", "rts_cts", KeyType::boolean,
                                      "yes", "RTS/CTS hardware flow control"}));
  e.push_back(checked_text_key<kModemResetCommand, valid_at_command>(
      {"modem", "reset_command", KeyType::string, "ATZ",
       "command that resets the modem"},
      "an AT command such as ATZ"));
  e.push_back(checked_text_key<kModemInitString, valid_at_command>(
      {"modem", "init_string", KeyType::string, "ATE0 Q0 V1 X4 &C1 &D2 S0=0",
       "command sent after the reset; must keep E0, V1 and &C1"},
      "an AT command such as ATE0 Q0 V1 X4 &C1 &D2 S0=0"));
  e.push_back(Entry{{"modem", "optional_init", KeyType::string, "",
                     "one more init command, skipped if it answers ERROR; "
                     "repeatable"},
                    "an AT command such as AT&K3",
                    set_optional_init,
                    get_optional_init,
                    Repeat::line});
  e.push_back(choice_key<kModemDialMode, kDialModes>(
      {"modem", "dial_mode", KeyType::choice, "tone",
       "tone (ATDT) or pulse (ATDP) dialling"},
      "tone or pulse"));
  e.push_back(checked_text_key<kModemDialPrefix, valid_dial_prefix>(
      {"modem", "dial_prefix", KeyType::string, "",
       "dialled before every number, such as 9W for an outside line"},
      "digits and dial modifiers such as 9W or 0,"));
  e.push_back(choice_key<kModemHangup, kHangups>(
      {"modem", "hangup", KeyType::choice, "auto",
       "auto (DTR where possible), dtr, or escape (+++ and ATH)"},
      "auto, dtr or escape"));
  e.push_back(choice_key<kModemAnswerMethod, kAnswerMethods>(
      {"modem", "answer_method", KeyType::choice, "host",
       "host (ferryd counts RINGs, sends ATA) or modem (S0 auto-answer)"},
      "host or modem"));
  e.push_back(range_key<kModemAnswerRings, 1, 255>(
      {"modem", "answer_rings", KeyType::count, "1", "rings before answering"},
      "a whole number from 1 to 255"));
  e.push_back(millis_key<kModemResetPause>(
      {"modem", "reset_pause", KeyType::duration, "600ms",
       "pause after the reset command's OK"}));
  e.push_back(timeout_key<kModemCommandTimeout>(
      {"modem", "command_timeout", KeyType::duration, "2s",
       "wait for the reply to a command"}));
  e.push_back(timeout_key<kModemResetTimeout>(
      {"modem", "reset_timeout", KeyType::duration, "5s",
       "wait for the reply to the reset command"}));
  e.push_back(timeout_key<kModemDialTimeout>(
      {"modem", "dial_timeout", KeyType::duration, "90s",
       "wait for CONNECT or a failure after dialling"}));
  e.push_back(timeout_key<kModemAnswerTimeout>(
      {"modem", "answer_timeout", KeyType::duration, "80s",
       "wait for CONNECT after answering"}));
  e.push_back(timeout_key<kModemHangupTimeout>(
      {"modem", "hangup_timeout", KeyType::duration, "20s",
       "wait for the modem to hang up"}));
  e.push_back(timeout_key<kModemGuardTime>(
      {"modem", "guard_time", KeyType::duration, "1100ms",
       "silence before and after +++ (S12 and a margin)"}));
  e.push_back(
      timeout_key<kModemDtrDrop>({"modem", "dtr_drop", KeyType::duration, "1s",
                                  "DTR held low to hang up"}));
  e.push_back(timeout_key<kModemRingGap>(
      {"modem", "ring_gap", KeyType::duration, "10s",
       "no RING for this long: the caller gave up"}));
  e.push_back(timeout_key<kModemLinePoll>(
      {"modem", "line_poll", KeyType::duration, "100ms",
       "how often carrier detect is looked at during a call"}));
  e.push_back(millis_key<kModemLockWait>(
      {"modem", "lock_wait", KeyType::duration, "0s",
       "wait this long for a port another program has locked; 0s: fail"}));
  e.push_back(positive_number_key<kModemTimeScale>(
      {"modem", "time_scale", KeyType::number, "1",
       "multiplies every modem timeout; 1/F for ferry-modemsim "
       "--time-scale F"}));
}

std::vector<Entry> make_entries() {
  std::vector<Entry> e{
      // [ferryd]
      text_key<kHostname>({"ferryd", "hostname", KeyType::string, "",
                           "name in the SMTP greeting and Received lines; "
                           "empty: the system's host name"}),
      text_key<kSpoolDir>({"ferryd", "spool", KeyType::path, "/var/spool/ferry",
                           "directory of the LMDB spool"}),
      text_key<kControlSocket>({"ferryd", "control_socket", KeyType::path,
                                "/run/ferry/ctl.sock",
                                "Unix socket ferryctl talks to"}),
      text_key<kLockDir>({"ferryd", "lock_dir", KeyType::path, "/var/lock",
                          "directory of UUCP-style serial port lock files"}),
      checked_text_key<kUser, valid_account_name>(
          {"ferryd", "user", KeyType::string, "",
           "run as this user once ports and sockets are open; empty: stay"},
          "a user name of letters, digits, '.', '-', '_'"),
      checked_text_key<kControlGroup, valid_account_name>(
          {"ferryd", "control_group", KeyType::string, "",
           "group of the control socket; empty: ferryd's own group"},
          "a group name of letters, digits, '.', '-', '_'"),
      Entry{{"ferryd", "control_mode", KeyType::file_mode, "0660",
             "permission bits of the control socket"},
            "an octal mode such as 0660",
            set_control_mode,
            get_control_mode},

      // [listener NAME]
      Entry{{"listener", "address", KeyType::address, "",
             "IP address and port to listen on, such as 127.0.0.1:25 or "
             "[::1]:587 (required)"},
            "an address such as 127.0.0.1:25 or [::1]:587",
            set_listen_address,
            get_listen_address},
      Entry{{"listener", "mode", KeyType::mode, "relay",
             "relay (port 25 rules) or submission (clients of our users)"},
            "relay or submission",
            set_mode,
            get_mode},
      bool_key<kTrustedLocal>({"listener", "trusted_local", KeyType::boolean,
                               "no",
                               "allow AUTH without TLS on this listener"}),
      bool_key<kStarttls>({"listener", "starttls", KeyType::boolean, "yes",
                           "offer STARTTLS when [tls] is configured"}),
      bool_key<kRequireAuth>({"listener", "require_auth", KeyType::boolean,
                              "no", "MAIL FROM needs a successful AUTH first"}),

      // [smtp]
      size_key<kSmtpMaxMessageSize>({"smtp", "max_message_size", KeyType::size,
                                     "35M", "largest message accepted (SIZE)"}),
      size_key<kSmtpMaxLineLength>({"smtp", "max_line_length", KeyType::size,
                                    "64K",
                                    "longest command or text line accepted"}),
      count_key<kSmtpMaxRecipients>({"smtp", "max_recipients", KeyType::count,
                                     "100", "recipients per message"}),
      seconds_key<kSmtpCommandTimeout>({"smtp", "command_timeout",
                                        KeyType::duration, "5m",
                                        "wait for the next command"}),
      seconds_key<kSmtpDataBlockTimeout>(
          {"smtp", "data_block_timeout", KeyType::duration, "3m",
           "wait for the next block of message data"}),
      seconds_key<kSmtpDataDoneTimeout>(
          {"smtp", "data_done_timeout", KeyType::duration, "10m",
           "time a client waits for our reply to the final dot"}),
      millis_key<kSmtpGreetingPause>(
          {"smtp", "greeting_pause", KeyType::duration, "500ms",
           "pause before the greeting; clients that talk first are refused"}),
      bool_key<kSmtpVrfy>({"smtp", "vrfy", KeyType::boolean, "no",
                           "answer VRFY truthfully (no: 252 for every "
                           "address)"}),
      count_key<kSmtpMaxSessions>({"smtp", "max_sessions", KeyType::count,
                                   "200", "simultaneous SMTP sessions"}),

      // [tls]
      text_key<kTlsCertificate>({"tls", "certificate", KeyType::path, "",
                                 "PEM certificate chain; empty: no TLS"}),
      text_key<kTlsKey>({"tls", "key", KeyType::path, "", "PEM private key"}),

      // [local]
      list_key<kLocalDomains, valid_domain>(
          {"local", "domains", KeyType::list, "",
           "domains whose mail is delivered here"},
          "domain names"),
      text_key<kLocalMailRoot>({"local", "mail_root", KeyType::path,
                                "/var/mail/ferry",
                                "Maildirs live in mail_root/USER/"}),
      text_key<kLocalUsersFile>({"local", "users_file", KeyType::path,
                                 "/etc/ferry/users",
                                 "users and password hashes, name:hash "
                                 "lines"}),
      text_key<kLocalAliasesFile>({"local", "aliases_file", KeyType::path,
                                   "/etc/ferry/aliases",
                                   "aliases, alias: target, ... lines; empty: "
                                   "none"}),

      // [rules]
      list_key<kRulesOfficeNetworks, is_network>(
          {"rules", "office_networks", KeyType::cidr_list, "",
           "networks allowed to relay without AUTH"},
          "networks such as 192.0.2.0/24 or 2001:db8::/32"),
      list_key<kRulesBarredSenders, address_or_domain>(
          {"rules", "barred_senders", KeyType::list, "",
           "envelope senders refused (address or @domain)"},
          kAddressesExpected),
      list_key<kRulesBarredRecipients, address_or_domain>(
          {"rules", "barred_recipients", KeyType::list, "",
           "recipients refused (address or @domain)"},
          kAddressesExpected),
      list_key<kRulesInternalDomains, valid_domain>(
          {"rules", "internal_domains", KeyType::list, "",
           "the organisation's other domains (local domains count too)"},
          "domain names"),
      list_key<kRulesInternalOnlyUsers, is_user_or_address>(
          {"rules", "internal_only_users", KeyType::list, "",
           "users who may send only to internal domains"},
          "user names or addresses"),
      Entry{{"rules", "user_size_limits", KeyType::user_sizes, "",
             "per-user message size limits, user:size"},
            "user:size items such as alice:50M",
            set_user_sizes,
            get_user_sizes,
            Repeat::append},

      // [pop3]
      list_key<kPop3Listen, is_listen_address>(
          {"pop3", "listen", KeyType::list, "",
           "addresses to serve POP3 on; empty: no POP3"},
          "addresses such as 127.0.0.1:110 or [::1]:110"),
      bool_key<kPop3TrustedLocal>({"pop3", "trusted_local", KeyType::boolean,
                                   "no", "USER/PASS allowed without TLS"}),
      seconds_key<kPop3IdleTimeout>({"pop3", "idle_timeout", KeyType::duration,
                                     "10m", "idle session autologout"}),
      count_key<kPop3MaxSessions>({"pop3", "max_sessions", KeyType::count, "50",
                                   "simultaneous POP3 sessions per listener"}),
  };
  add_link_and_schedule_entries(e);
  add_peer_entries(e);
  add_modem_entries(e);
  return e;
}

// Built on first use, then only read.
const std::vector<Entry>& entries() {
  static const std::vector<Entry> e = make_entries();
  return e;
}

const std::vector<ConfigKey>& keys() {
  static const std::vector<ConfigKey> k = [] {
    std::vector<ConfigKey> out;
    for (const Entry& e : entries()) out.push_back(e.meta);
    return out;
  }();
  return k;
}

constexpr std::array<std::string_view, 8> kPlainSections{
    "ferryd", "smtp", "tls", "local", "rules", "pop3", "link", "schedule"};
constexpr std::array<std::string_view, 3> kNamedSections{"listener", "peer",
                                                         "modem"};

bool is_plain_section(std::string_view s) {
  for (auto p : kPlainSections) {
    if (p == s) return true;
  }
  return false;
}

bool valid_section_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::string_view key_type_name(KeyType t) {
  switch (t) {
    case KeyType::string:
      return "string";
    case KeyType::path:
      return "path";
    case KeyType::size:
      return "size";
    case KeyType::duration:
      return "duration";
    case KeyType::boolean:
      return "boolean";
    case KeyType::count:
      return "count";
    case KeyType::address:
      return "address";
    case KeyType::mode:
      return "mode";
    case KeyType::list:
      return "list";
    case KeyType::cidr_list:
      return "network list";
    case KeyType::user_sizes:
      return "user:size list";
    case KeyType::number:
      return "number";
    case KeyType::file_mode:
      return "octal mode";
    case KeyType::choice:
      return "choice";
    case KeyType::windows:
      return "windows";
    case KeyType::zone:
      return "zone";
    case KeyType::times:
      return "times";
  }
  return "value";
}

std::span<const ConfigKey> config_keys() { return keys(); }

bool is_named_section(std::string_view section) {
  for (auto n : kNamedSections) {
    if (n == section) return true;
  }
  return false;
}

namespace {

// Where each section and key stood, for errors found after the whole file
// is read.  Labels are "[peer x]"; keys are remembered at their first line.
struct Lines {
  std::map<std::string, int> sections;
  std::map<std::string, int> keys;  // "[peer x] routes"

  int of(const std::string& label, std::string_view key = {}) const {
    auto k = keys.find(label + " " + std::string(key));
    if (k != keys.end()) return k->second;
    auto s = sections.find(label);
    return s == sections.end() ? 0 : s->second;
  }
};

bool has_key(const std::vector<std::pair<std::string, std::string>>& keys,
             std::string_view key) {
  for (const auto& kv : keys) {
    if (kv.first == key) return true;
  }
  return false;
}

// The checks that need the whole file: required keys, keys that go
// together, and the references between peers, modems and listeners.
// Also gives every peer its schedule: [schedule] values, then its own.
bool finish_config(Config& cfg, const Lines& lines, std::string& error) {
  auto fail = [&](int line, const std::string& label, std::string_view key,
                  const std::string& what) {
    error = cfg.source + ":";
    if (line > 0) error += std::to_string(line) + ":";
    error += " " + label + " " + std::string(key) + ": " + what;
    return false;
  };

  // Listeners, TLS, the link identity.
  for (const ListenerConfig& l : cfg.listeners) {
    if (l.address.empty()) {
      std::string label = "[listener " + l.name + "]";
      return fail(lines.of(label), label, "address", "required");
    }
  }
  if (cfg.tls.certificate.empty() != cfg.tls.key.empty()) {
    std::string key = cfg.tls.certificate.empty() ? "certificate" : "key";
    return fail(lines.of("[tls]"), "[tls]", key,
                "expected certificate and key given together");
  }
  if (cfg.link.certificate.empty() != cfg.link.key.empty()) {
    std::string key = cfg.link.certificate.empty() ? "certificate" : "key";
    return fail(lines.of("[link]"), "[link]", key,
                "expected certificate and key given together");
  }

  // No two listeners of any kind on one address.
  struct Use {
    std::string owner;
    int line;
  };
  std::map<std::string, Use> used;
  auto claim = [&](const std::string& address, const std::string& label,
                   std::string_view key) {
    int line = lines.of(label, key);
    std::string owner = label + " " + std::string(key);
    auto [it, fresh] = used.emplace(lower_ascii(address), Use{owner, line});
    if (fresh) return true;
    return fail(line, label, key,
                "expected an address no other listener uses, got '" + address +
                    "' (also " + it->second.owner + " on line " +
                    std::to_string(it->second.line) + ")");
  };
  for (const ListenerConfig& l : cfg.listeners) {
    if (!claim(l.address, "[listener " + l.name + "]", "address")) {
      return false;
    }
  }
  for (const std::string& a : cfg.pop3.listen) {
    if (!claim(a, "[pop3]", "listen")) return false;
  }
  for (const std::string& a : cfg.link.listen) {
    if (!claim(a, "[link]", "listen")) return false;
  }

  // Modems.
  bool have_dialler = false;
  for (const ModemConfig& m : cfg.modems) {
    std::string label = "[modem " + m.name + "]";
    if (m.device.empty()) {
      return fail(lines.of(label), label, "device",
                  "required, expected a serial device such as /dev/ttyS0");
    }
    if (m.dial && !m.direct) have_dialler = true;
  }
  auto find_modem = [&](std::string_view name) -> const ModemConfig* {
    for (const ModemConfig& m : cfg.modems) {
      if (m.name == name) return &m;
    }
    return nullptr;
  };

  // Peers.
  std::map<std::string, std::string> domain_owner;  // domain -> label
  for (const std::string& d : cfg.local.domains) {
    domain_owner.emplace(d, "[local]");
  }
  const PeerConfig* smarthost = nullptr;
  for (PeerConfig& p : cfg.peers) {
    std::string label = "[peer " + p.name + "]";

    // The schedule: defaults, then the peer's own keys (all already
    // validated when they were read).
    PeerSchedule ps = cfg.schedule_defaults;
    ps.name = p.name;
    for (const auto& [k, v] : p.schedule_keys) {
      std::string ignored;
      set_schedule_key(ps, k, v, ignored);
    }
    p.schedule = std::move(ps);
    // Where a schedule key came from: this section or [schedule].
    auto origin = [&](std::string_view key) -> std::string {
      if (has_key(p.schedule_keys, key)) return label;
      if (has_key(cfg.schedule_default_keys, key)) return "[schedule]";
      return label;
    };

    // Several peers may serve one domain (tried by preference); a local
    // domain is ours alone.
    for (const std::string& d : p.domains) {
      auto it = domain_owner.find(d);
      if (it != domain_owner.end()) {
        return fail(lines.of(label, "domains"), label, "domains",
                    "expected domains that are not local, got '" + d +
                        "', which is in " + it->second + " domains too");
      }
    }
    if (p.smarthost) {
      if (smarthost != nullptr) {
        return fail(lines.of(label, "smarthost"), label, "smarthost",
                    "expected one smarthost at most, but [peer " +
                        smarthost->name + "] is one already");
      }
      smarthost = &p;
    }
    if (p.protocol == PeerConfig::Protocol::ferry) {
      if (cfg.link.certificate.empty()) {
        return fail(lines.of(label, "protocol"), label, "protocol",
                    "a ferry peer needs our own identity: expected [link] "
                    "certificate and key, got none");
      }
      if (p.fingerprint.empty() && p.psk_file.empty()) {
        return fail(lines.of(label), label, "fingerprint",
                    "expected the peer's certificate fingerprint or a "
                    "psk_file for a ferry peer, got neither");
      }
    }
    if (!p.smtp_auth_user.empty() && p.smtp_auth_password_file.empty()) {
      return fail(lines.of(label, "smtp_auth_user"), label,
                  "smtp_auth_password_file",
                  "expected a password file for smtp_auth_user, got none");
    }
    if (!p.pop3_server.empty()) {
      if (p.pop3_user.empty()) {
        return fail(lines.of(label, "pop3_server"), label, "pop3_user",
                    "expected a user name for pop3_server, got none");
      }
      if (p.pop3_password_file.empty()) {
        return fail(lines.of(label, "pop3_server"), label, "pop3_password_file",
                    "expected a password file for pop3_server, got none");
      }
    }

    // The line and the routes it must serve.
    const std::string& line = p.schedule.line;
    const ModemConfig* modem = nullptr;
    std::string line_from = origin("line");
    int line_at = lines.of(line_from, "line");
    if (line != kAnyLine) {
      modem = find_modem(line);
      if (modem == nullptr) {
        return fail(line_at, line_from, "line",
                    "expected the name of a [modem NAME] section or any, "
                    "got '" +
                        line + "'");
      }
    }
    bool exec_route = false;
    for (const std::string& r : p.schedule.routes) {
      if (r == kExecRoute) exec_route = true;
    }
    if (exec_route && p.dial && p.command.empty()) {
      return fail(lines.of(origin("routes"), "routes"), origin("routes"),
                  "routes",
                  "the route exec needs command = a shell command, got no "
                  "command (for " + label + ")");
    }
    if (!exec_route && !p.command.empty()) {
      return fail(lines.of(label, "command"), label, "command",
                  "a command is used by the route exec only, but routes "
                  "has no exec");
    }
    if (!p.dial) continue;  // held for pickup: routes are not used
    std::string routes_from = origin("routes");
    int routes_at = lines.of(routes_from, "routes");
    for (const std::string& r : p.schedule.routes) {
      if (r == kDirectRoute) {
        if (modem == nullptr) {
          return fail(routes_at, routes_from, "routes",
                      "the route direct needs line to name a [modem NAME] "
                      "with direct = yes, got line = any (for " +
                          label + ")");
        }
        if (!modem->direct) {
          return fail(line_at, line_from, "line",
                      "the route direct needs line to name a [modem NAME] "
                      "with direct = yes, got '" +
                          line + "' (for " + label + ")");
        }
      } else if (is_phone_route(r)) {
        if (modem != nullptr && (modem->direct || !modem->dial)) {
          return fail(line_at, line_from, "line",
                      "dialling " + r +
                          " needs a [modem NAME] with dial = "
                          "yes and direct = no, got '" +
                          line + "' (for " + label + ")");
        }
        if (modem == nullptr && !have_dialler) {
          return fail(routes_at, routes_from, "routes",
                      "dialling " + r + " for " + label +
                          " needs a [modem NAME] with dial = yes and "
                          "direct = no, got none");
        }
      }
    }
  }
  return true;
}

// `path` names a readable regular file; else `why` says what is wrong.
bool readable_file(const std::string& path, std::string& why) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    why = std::strerror(errno);
    return false;
  }
  struct stat st {};
  bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ::close(fd);
  if (!regular) why = "not a regular file";
  return regular;
}

// The directory `path` will be created in ("/var/spool" for
// "/var/spool/ferry/").
std::string parent_of(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

bool parse_config(std::string_view text, std::string_view name, Config& out,
                  std::string& error) {
  Config cfg;
  cfg.source = std::string(name);
  std::string section, section_label;  // "listener", "[listener mx]"
  // The named section keys go to.  Only the newest element of each vector
  // is ever pointed at, so a later push_back cannot leave it dangling.
  Section current;
  Lines lines;
  std::map<std::string, int> seen;   // "[section] key" -> line, scalars only
  std::set<std::string> named_seen;  // "peer x"

  auto at = [&](int line) {
    return std::string(name) + ":" + std::to_string(line) + ": ";
  };

  int lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text.remove_prefix(nl == text.npos ? text.size() : nl + 1);
    ++lineno;
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;

    // [section] or [section NAME]
    if (line.front() == '[') {
      if (line.back() != ']') {
        error =
            at(lineno) + "expected [section], got '" + std::string(line) + "'";
        return false;
      }
      std::string_view inner = trim(line.substr(1, line.size() - 2));
      size_t sp = inner.find_first_of(" \t");
      std::string_view sec = inner.substr(0, sp);
      std::string_view sname =
          sp == inner.npos ? std::string_view() : trim(inner.substr(sp));
      section = std::string(sec);
      section_label = "[" + std::string(inner) + "]";
      current = Section{};
      if (is_plain_section(sec)) {
        if (!sname.empty()) {
          error = at(lineno) + "section [" + section + "] takes no name";
          return false;
        }
      } else if (is_named_section(sec)) {
        if (!valid_section_name(sname)) {
          error = at(lineno) + "section [" + section +
                  "] needs a name of letters, digits, '.', '-', '_', as "
                  "in [" +
                  section + " NAME]";
          return false;
        }
        section_label = "[" + section + " " + std::string(sname) + "]";
        if (!named_seen.insert(section + " " + std::string(sname)).second) {
          error = at(lineno) + section_label + " appears twice";
          return false;
        }
        if (sec == "listener") {
          cfg.listeners.push_back({});
          current.listener = &cfg.listeners.back();
          current.listener->name = std::string(sname);
        } else if (sec == "peer") {
          cfg.peers.push_back({});
          current.peer = &cfg.peers.back();
          current.peer->name = std::string(sname);
        } else if (sec == "modem") {
          if (sname == kAnyLine) {
            error = at(lineno) + section_label +
                    ": expected another name, 'any' stands for any modem "
                    "in a peer's line";
            return false;
          }
          cfg.modems.push_back({});
          current.modem = &cfg.modems.back();
          current.modem->name = std::string(sname);
          current.modem->profile.name = std::string(sname);
        }
      } else {
        error = at(lineno) + "unknown section [" + section + "]";
        return false;
      }
      lines.sections.emplace(section_label, lineno);
      continue;
    }

    // key = value
    size_t eq = line.find('=');
    if (eq == line.npos) {
      error =
          at(lineno) + "expected key = value, got '" + std::string(line) + "'";
      return false;
    }
    std::string key(trim(line.substr(0, eq)));
    std::string_view value = trim(line.substr(eq + 1));
    if (section.empty()) {
      error = at(lineno) + key + ": key outside any [section]";
      return false;
    }
    const Entry* entry = nullptr;
    for (const Entry& e : entries()) {
      if (e.meta.section == section && e.meta.key == key) entry = &e;
    }
    if (entry == nullptr) {
      error = at(lineno) + section_label + " " + key + ": unknown key";
      return false;
    }
    if (entry->repeat == Repeat::no) {
      auto [it, fresh] = seen.emplace(section_label + " " + key, lineno);
      if (!fresh) {
        error = at(lineno) + section_label + " " + key +
                ": already set on line " + std::to_string(it->second);
        return false;
      }
    }
    lines.keys.emplace(section_label + " " + key, lineno);
    std::string detail;
    if (!entry->set(cfg, current, value, detail)) {
      error = at(lineno) + section_label + " " + key + ": expected " +
              std::string(entry->expected) + detail + ", got '" +
              std::string(value) + "'";
      return false;
    }
  }

  if (!finish_config(cfg, lines, error)) return false;
  cfg.key_lines = lines.keys;
  cfg.section_lines = lines.sections;
  out = std::move(cfg);
  return true;
}

std::string config_where(const Config& cfg, const std::string& label,
                         std::string_view key) {
  int line = 0;
  auto k = cfg.key_lines.find(label + " " + std::string(key));
  if (k != cfg.key_lines.end()) {
    line = k->second;
  } else if (auto sec = cfg.section_lines.find(label);
             sec != cfg.section_lines.end()) {
    line = sec->second;
  }
  return cfg.source + (line > 0 ? ":" + std::to_string(line) : "") + ": " +
         label + " " + std::string(key) + ": ";
}

bool load_config(const std::string& path, Config& out, std::string& error) {
  std::string text;
  if (!read_text_file(path, text, error)) return false;
  return parse_config(text, path, out, error);
}

std::string describe_effective(const Config& cfg) {
  std::string out;
  if (!cfg.source.empty())
    out += "# effective settings from " + cfg.source;
  else
    out += "# effective settings";
  out += "\n";
  auto section = [&](std::string_view sec, const std::string& name,
                     const ConstSection& s) {
    out += "\n[" + std::string(sec);
    if (!name.empty()) out += " " + name;
    out += "]\n";
    for (const Entry& e : entries()) {
      if (e.meta.section != sec) continue;
      std::string v = e.get(cfg, s);
      std::string key(e.meta.key);
      if (e.repeat == Repeat::line && !v.empty()) {
        size_t start = 0;
        while (start <= v.size()) {
          size_t nl = v.find('\n', start);
          if (nl == std::string::npos) nl = v.size();
          out += key + " = " + v.substr(start, nl - start) + "\n";
          start = nl + 1;
        }
        continue;
      }
      out += key + " =";
      if (!v.empty()) out += " " + v;
      out += "\n";
    }
  };
  section("ferryd", "", {});
  for (const ListenerConfig& l : cfg.listeners) {
    section("listener", l.name, {.listener = &l});
  }
  section("smtp", "", {});
  section("tls", "", {});
  section("local", "", {});
  section("rules", "", {});
  section("pop3", "", {});
  section("link", "", {});
  section("schedule", "", {});
  for (const PeerConfig& p : cfg.peers) section("peer", p.name, {.peer = &p});
  for (const ModemConfig& m : cfg.modems) {
    section("modem", m.name, {.modem = &m});
  }
  return out;
}

bool check_files(const Config& cfg, std::string& error) {
  std::string why;
  auto fail = [&](const std::string& label, std::string_view key,
                  const std::string& path, const std::string& what) {
    error = config_where(cfg, label, key) + path + ": " + what;
    return false;
  };
  auto file = [&](const std::string& label, std::string_view key,
                  const std::string& path) {
    if (path.empty() || readable_file(path, why)) return true;
    return fail(label, key, path, "cannot read: " + why);
  };
  auto parent = [&](const std::string& label, std::string_view key,
                    const std::string& path) {
    std::string dir = parent_of(path);
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      return fail(
          label, key, path,
          "its directory " + dir + " is missing: " + std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
      return fail(label, key, path, dir + " is not a directory");
    }
    return true;
  };

  if (!file("[tls]", "certificate", cfg.tls.certificate) ||
      !file("[tls]", "key", cfg.tls.key) ||
      !file("[link]", "certificate", cfg.link.certificate) ||
      !file("[link]", "key", cfg.link.key)) {
    return false;
  }
  for (const PeerConfig& p : cfg.peers) {
    std::string label = "[peer " + p.name + "]";
    if (!file(label, "psk_file", p.psk_file) ||
        !file(label, "smtp_auth_password_file", p.smtp_auth_password_file) ||
        !file(label, "pop3_password_file", p.pop3_password_file)) {
      return false;
    }
  }
  if (!parent("[ferryd]", "spool", cfg.spool_dir) ||
      !parent("[local]", "mail_root", cfg.local.mail_root)) {
    return false;
  }
  for (const ModemConfig& m : cfg.modems) {
    struct stat st {};
    if (::stat(m.device.c_str(), &st) != 0) {
      return fail("[modem " + m.name + "]", "device", m.device,
                  std::strerror(errno));
    }
  }
  return true;
}

}  // namespace ferry::gw
