// ferry.conf reader.  One table (kEntries) lists every key with its
// metadata, a setter that validates and stores a value, and a getter that
// prints the effective value; the reader, describe_effective() and
// config_keys() are all driven by it.

#include "gateway/config.h"

#include <arpa/inet.h>

#include <array>
#include <charconv>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <type_traits>

#include "gateway/address.h"
#include "gateway/files.h"
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
// lambda (auto& config, auto* listener) -> auto& naming the field, generic
// so that the same lambda serves the setter (Config&) and the getter
// (const Config&).  `listener` is the current [listener NAME] section, or
// nullptr elsewhere.

// On failure a setter may set `detail` (" (bad item 'x')"); the reader
// adds "expected <Entry::expected>".
using Setter = bool (*)(Config&, ListenerConfig*, std::string_view,
                        std::string& detail);
using Getter = std::string (*)(const Config&, const ListenerConfig*);

struct Entry {
  ConfigKey meta;
  std::string_view expected;  // "a size such as 10M"
  Setter set;
  Getter get;
};

template <auto F>
Entry text_key(ConfigKey meta) {
  return {meta, "text",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            F(c, l) = std::string(v);
            return true;
          },
          [](const Config& c, const ListenerConfig* l) {
            return std::string(F(c, l));
          }};
}

template <auto F>
Entry size_key(ConfigKey meta) {
  return {meta, "a size such as 10M",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            using T = std::remove_reference_t<decltype(F(c, l))>;
            uint64_t n;
            if (!parse_size(v, n) || n > std::numeric_limits<T>::max()) {
              return false;
            }
            F(c, l) = static_cast<T>(n);
            return true;
          },
          [](const Config& c, const ListenerConfig* l) {
            return format_size(F(c, l));
          }};
}

template <auto F>
Entry count_key(ConfigKey meta) {
  return {meta, "a whole number from 1 to 1000000",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            uint64_t n;
            if (!parse_u64(v, n) || n == 0 || n > 1000000) return false;
            F(c, l) = static_cast<unsigned>(n);
            return true;
          },
          [](const Config& c, const ListenerConfig* l) {
            return std::to_string(F(c, l));
          }};
}

// A std::chrono::seconds field: whole seconds, more than zero.
template <auto F>
Entry seconds_key(ConfigKey meta) {
  return {meta, "a duration of whole seconds such as 30s, 5m, 2h or 1d",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            std::chrono::milliseconds d;
            if (!parse_duration_ms(v, d) || d.count() % 1000 != 0 ||
                d.count() == 0) {
              return false;
            }
            F(c, l) = std::chrono::duration_cast<std::chrono::seconds>(d);
            return true;
          },
          [](const Config& c, const ListenerConfig* l) {
            return format_duration(F(c, l));
          }};
}

// A std::chrono::milliseconds field; zero allowed.
template <auto F>
Entry millis_key(ConfigKey meta) {
  return {meta, "a duration such as 500ms or 2s",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            return parse_duration_ms(v, F(c, l));
          },
          [](const Config& c, const ListenerConfig* l) {
            return format_duration(F(c, l));
          }};
}

template <auto F>
Entry bool_key(ConfigKey meta) {
  return {meta, "yes or no",
          [](Config& c, ListenerConfig* l, std::string_view v, std::string&) {
            return parse_bool(v, F(c, l));
          },
          [](const Config& c, const ListenerConfig* l) {
            return std::string(F(c, l) ? "yes" : "no");
          }};
}

// A list of lower-cased words, each passing Check; a repeated key appends.
template <auto F, auto Check>
Entry list_key(ConfigKey meta, std::string_view expected) {
  return {
      meta, expected,
      [](Config& c, ListenerConfig* l, std::string_view v,
         std::string& detail) {
        for (std::string item : split_list(v)) {
          item = lower_ascii(item);
          if (!Check(item)) {
            detail = " (bad item '" + item + "')";
            return false;
          }
          F(c, l).push_back(item);
        }
        return true;
      },
      [](const Config& c, const ListenerConfig* l) { return join(F(c, l)); }};
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

bool set_listen_address(Config&, ListenerConfig* l, std::string_view v,
                        std::string&) {
  if (!valid_listen_address(v)) return false;
  l->address = std::string(v);
  return true;
}

std::string get_listen_address(const Config&, const ListenerConfig* l) {
  return l->address;
}

bool set_mode(Config&, ListenerConfig* l, std::string_view v, std::string&) {
  if (v == "relay") {
    l->mode = ListenerConfig::Mode::relay;
  } else if (v == "submission") {
    l->mode = ListenerConfig::Mode::submission;
  } else {
    return false;
  }
  return true;
}

std::string get_mode(const Config&, const ListenerConfig* l) {
  return l->mode == ListenerConfig::Mode::relay ? "relay" : "submission";
}

bool set_user_sizes(Config& c, ListenerConfig*, std::string_view v,
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

std::string get_user_sizes(const Config& c, const ListenerConfig*) {
  std::vector<std::string> items;
  for (const auto& [user, n] : c.rules.user_size_limits) {
    items.push_back(user + ":" + format_size(n));
  }
  return join(items);
}

constexpr std::string_view kAddressesExpected =
    "addresses such as user@example.org or @example.org";

// Field accessors for the table below.
constexpr auto kHostname = [](auto& c, auto*) -> auto& { return c.hostname; };
constexpr auto kSpoolDir = [](auto& c, auto*) -> auto& { return c.spool_dir; };
constexpr auto kControlSocket = [](auto& c, auto*) -> auto& {
  return c.control_socket;
};
constexpr auto kLockDir = [](auto& c, auto*) -> auto& { return c.lock_dir; };
constexpr auto kTrustedLocal = [](auto&, auto* l) -> auto& {
  return l->trusted_local;
};
constexpr auto kStarttls = [](auto&, auto* l) -> auto& { return l->starttls; };
constexpr auto kRequireAuth = [](auto&, auto* l) -> auto& {
  return l->require_auth;
};
constexpr auto kSmtpMaxMessageSize = [](auto& c, auto*) -> auto& {
  return c.smtp.max_message_size;
};
constexpr auto kSmtpMaxLineLength = [](auto& c, auto*) -> auto& {
  return c.smtp.max_line_length;
};
constexpr auto kSmtpMaxRecipients = [](auto& c, auto*) -> auto& {
  return c.smtp.max_recipients;
};
constexpr auto kSmtpCommandTimeout = [](auto& c, auto*) -> auto& {
  return c.smtp.command_timeout;
};
constexpr auto kSmtpDataBlockTimeout = [](auto& c, auto*) -> auto& {
  return c.smtp.data_block_timeout;
};
constexpr auto kSmtpDataDoneTimeout = [](auto& c, auto*) -> auto& {
  return c.smtp.data_done_timeout;
};
constexpr auto kSmtpGreetingPause = [](auto& c, auto*) -> auto& {
  return c.smtp.greeting_pause;
};
constexpr auto kSmtpVrfy = [](auto& c, auto*) -> auto& { return c.smtp.vrfy; };
constexpr auto kSmtpMaxSessions = [](auto& c, auto*) -> auto& {
  return c.smtp.max_sessions;
};
constexpr auto kTlsCertificate = [](auto& c, auto*) -> auto& {
  return c.tls.certificate;
};
constexpr auto kTlsKey = [](auto& c, auto*) -> auto& { return c.tls.key; };
constexpr auto kLocalDomains = [](auto& c, auto*) -> auto& {
  return c.local.domains;
};
constexpr auto kLocalMailRoot = [](auto& c, auto*) -> auto& {
  return c.local.mail_root;
};
constexpr auto kLocalUsersFile = [](auto& c, auto*) -> auto& {
  return c.local.users_file;
};
constexpr auto kLocalAliasesFile = [](auto& c, auto*) -> auto& {
  return c.local.aliases_file;
};
constexpr auto kRulesOfficeNetworks = [](auto& c, auto*) -> auto& {
  return c.rules.office_networks;
};
constexpr auto kRulesBarredSenders = [](auto& c, auto*) -> auto& {
  return c.rules.barred_senders;
};
constexpr auto kRulesBarredRecipients = [](auto& c, auto*) -> auto& {
  return c.rules.barred_recipients;
};
constexpr auto kRulesInternalDomains = [](auto& c, auto*) -> auto& {
  return c.rules.internal_domains;
};
constexpr auto kRulesInternalOnlyUsers = [](auto& c, auto*) -> auto& {
  return c.rules.internal_only_users;
};

constexpr auto kPop3Listen = [](auto& c, auto*) -> auto& {
  return c.pop3.listen;
};
constexpr auto kPop3TrustedLocal = [](auto& c, auto*) -> auto& {
  return c.pop3.trusted_local;
};
constexpr auto kPop3IdleTimeout = [](auto& c, auto*) -> auto& {
  return c.pop3.idle_timeout;
};
constexpr auto kPop3MaxSessions = [](auto& c, auto*) -> auto& {
  return c.pop3.max_sessions;
};
bool is_listen_address(const std::string& item) {
  return valid_listen_address(item);
}

const std::array kEntries{
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
                             "no", "allow AUTH without TLS on this listener"}),
    bool_key<kStarttls>({"listener", "starttls", KeyType::boolean, "yes",
                         "offer STARTTLS when [tls] is configured"}),
    bool_key<kRequireAuth>({"listener", "require_auth", KeyType::boolean, "no",
                            "MAIL FROM needs a successful AUTH first"}),

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
    count_key<kSmtpMaxSessions>({"smtp", "max_sessions", KeyType::count, "200",
                                 "simultaneous SMTP sessions"}),

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
          get_user_sizes},

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

const std::array<ConfigKey, kEntries.size()> kKeys = [] {
  std::array<ConfigKey, kEntries.size()> keys{};
  for (size_t i = 0; i < kEntries.size(); ++i) keys[i] = kEntries[i].meta;
  return keys;
}();

constexpr std::array<std::string_view, 6> kPlainSections{
    "ferryd", "smtp", "tls", "local", "rules", "pop3"};
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
  }
  return "value";
}

std::span<const ConfigKey> config_keys() { return kKeys; }

bool is_named_section(std::string_view section) {
  for (auto n : kNamedSections) {
    if (n == section) return true;
  }
  return false;
}

bool parse_config(std::string_view text, std::string_view name, Config& out,
                  std::string& error) {
  Config cfg;
  cfg.source = std::string(name);
  std::string section, section_label;  // "listener", "[listener mx]"
  ListenerConfig* listener = nullptr;
  std::map<std::string, int> listener_line;
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
      listener = nullptr;
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
          listener = &cfg.listeners.back();
          listener->name = std::string(sname);
          listener_line[listener->name] = lineno;
        }
      } else {
        error = at(lineno) + "unknown section [" + section + "]";
        return false;
      }
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
    for (const Entry& e : kEntries) {
      if (e.meta.section == section && e.meta.key == key) entry = &e;
    }
    if (entry == nullptr) {
      error = at(lineno) + section_label + " " + key + ": unknown key";
      return false;
    }
    bool is_list = entry->meta.type == KeyType::list ||
                   entry->meta.type == KeyType::cidr_list ||
                   entry->meta.type == KeyType::user_sizes;
    if (!is_list) {
      auto [it, fresh] = seen.emplace(section_label + " " + key, lineno);
      if (!fresh) {
        error = at(lineno) + section_label + " " + key +
                ": already set on line " + std::to_string(it->second);
        return false;
      }
    }
    std::string detail;
    if (!entry->set(cfg, listener, value, detail)) {
      error = at(lineno) + section_label + " " + key + ": expected " +
              std::string(entry->expected) + detail + ", got '" +
              std::string(value) + "'";
      return false;
    }
  }

  // Cross-checks that need the whole file.
  for (const ListenerConfig& l : cfg.listeners) {
    if (l.address.empty()) {
      error = at(listener_line[l.name]) + "[listener " + l.name +
              "] address: required";
      return false;
    }
  }
  if (cfg.tls.certificate.empty() != cfg.tls.key.empty()) {
    error = std::string(name) +
            ": [tls] certificate and key must be given together";
    return false;
  }
  out = std::move(cfg);
  return true;
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
  auto section = [&](std::string_view sec, const ListenerConfig* l) {
    out += "\n[" + std::string(sec);
    if (l != nullptr) out += " " + l->name;
    out += "]\n";
    for (const Entry& e : kEntries) {
      if (e.meta.section != sec) continue;
      std::string v = e.get(cfg, l);
      out += std::string(e.meta.key) + " =";
      if (!v.empty()) out += " " + v;
      out += "\n";
    }
  };
  section("ferryd", nullptr);
  for (const ListenerConfig& l : cfg.listeners) section("listener", &l);
  section("smtp", nullptr);
  section("tls", nullptr);
  section("local", nullptr);
  section("rules", nullptr);
  section("pop3", nullptr);
  return out;
}

}  // namespace ferry::gw
