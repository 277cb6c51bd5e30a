// ferry.conf: the reader, the key registry and the settings it produces.
//
// The file is INI-style: `key = value` lines, whole-line comments starting
// with `#` or `;`, sections `[name]` and repeatable named sections
// `[listener NAME]`, `[peer NAME]`, `[modem NAME]`.  Every key the program
// understands is listed once in a registry (section, key, type, default,
// one-line doc); the reader, `ferryd --check-config` (describe_effective)
// and the man page test (man/ferry.conf.5) all work from that registry, so
// they cannot drift apart.
//
// Errors name the file, the line, the key and what was expected:
//   ferry.conf:12: [smtp] max_message_size: expected a size such as 10M,
//   got 'big'
// Unknown sections, unknown keys, a scalar key given twice and a bad value
// are all errors; the first one stops the parse.
//
// Value syntax:
//   size      512, 512K, 35M, 1G (binary multiples: K = 1024)
//   duration  30s, 5m, 2h, 1d, 500ms; a bare number means seconds
//   boolean   yes/no/true/false/on/off
//   list      items separated by commas and/or blanks; giving a list key
//             again appends to it
// Inline comments are not recognised (`#` may appear in a value).
//
// Why not Boost.Program_options alone: it reports neither line numbers nor
// repeated named sections, so a reader of our own does the whole job; the
// program_options library still parses ferryd's command line.
//
// Concurrency: plain values; a Config is built once and then only read,
// so any number of threads may read it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::gw {

struct ListenerConfig {
  std::string name;
  std::string address;  // "127.0.0.1:25", "[::1]:587"
  enum class Mode { relay, submission } mode = Mode::relay;
  bool trusted_local = false;  // AUTH allowed without TLS
  bool starttls = true;        // offer STARTTLS if [tls] configured
  bool require_auth = false;   // submission: MAIL needs AUTH first
};

struct SmtpConfig {
  uint64_t max_message_size = 35ull << 20;
  size_t max_line_length = 65536;  // longest accepted line (bytes)
  unsigned max_recipients = 100;
  std::chrono::seconds command_timeout{300}, data_block_timeout{180},
      data_done_timeout{600};
  std::chrono::milliseconds greeting_pause{500};  // talk-before-greeting
  bool vrfy = false;
  unsigned max_sessions = 200;
};

struct TlsConfig {
  std::string certificate, key;  // PEM paths
};

struct LocalConfig {
  std::vector<std::string> domains;           // lower-case
  std::string mail_root = "/var/mail/ferry";  // Maildirs: mail_root/USER/
  std::string users_file = "/etc/ferry/users";
  std::string aliases_file = "/etc/ferry/aliases";
};

struct RulesConfig {
  std::vector<std::string> office_networks;          // CIDR, v4 and v6
  std::vector<std::string> barred_senders;           // addr or @domain
  std::vector<std::string> barred_recipients;        // addr or @domain
  std::vector<std::string> internal_domains;         // "the organisation"
  std::vector<std::string> internal_only_users;      // may send only inside
  std::map<std::string, uint64_t> user_size_limits;  // user -> bytes
};

// [pop3]: POP3 for office clients (gateway/pop3_server.h).  No listen
// address: no POP3.
struct Pop3Config {
  std::vector<std::string> listen;  // "127.0.0.1:110", "[::1]:110"
  bool trusted_local = false;       // USER/PASS without TLS
  std::chrono::seconds idle_timeout{600};  // RFC 1939 autologout
  unsigned max_sessions = 50;              // per listener
};

struct Config {
  std::string source;    // file it was read from
  std::string hostname;  // [ferryd] hostname; empty: the system's name
  std::string spool_dir = "/var/spool/ferry";          // [ferryd] spool
  std::string control_socket = "/run/ferry/ctl.sock";  // [ferryd]
  std::string lock_dir = "/var/lock";                  // [ferryd]
  std::vector<ListenerConfig> listeners;
  SmtpConfig smtp;
  TlsConfig tls;
  LocalConfig local;
  RulesConfig rules;
  Pop3Config pop3;
};

// Parses the file at `path`.  On success returns true and replaces `out`
// (defaults for every key not given; out.source = path).  On failure
// returns false, sets `error` to one message naming file and line, and
// leaves `out` unspecified.
bool load_config(const std::string& path, Config& out, std::string& error);

// Same, from text in memory; `name` stands in for the file name in errors.
bool parse_config(std::string_view text, std::string_view name, Config& out,
                  std::string& error);

// Every setting with its effective value, defaults included, one
// `key = value` line each under its `[section]` header, in registry order.
// The output is itself a valid ferry.conf that loads to the same Config.
std::string describe_effective(const Config&);

// --- The key registry -------------------------------------------------

enum class KeyType {
  string,     // free text
  path,       // file or directory name
  size,       // 35M
  duration,   // 5m
  boolean,    // yes/no
  count,      // unsigned integer
  address,    // listen address host:port, host an IP literal
  mode,       // relay | submission
  list,       // comma/blank separated words
  cidr_list,  // list of CIDR networks
  user_sizes  // list of user:size
};

// The name used in messages and the man page ("size", "duration", ...).
std::string_view key_type_name(KeyType);

struct ConfigKey {
  std::string_view section;  // "smtp", or "listener" for [listener NAME]
  std::string_view key;
  KeyType type;
  std::string_view default_value;  // as written in the file; "" if none
  std::string_view doc;            // one line
};

// Every key known to the program, grouped by section, in a fixed order.
// Lives for the whole program.
std::span<const ConfigKey> config_keys();

// Sections that take a name: [listener NAME], [peer NAME], [modem NAME].
bool is_named_section(std::string_view section);

}  // namespace ferry::gw
