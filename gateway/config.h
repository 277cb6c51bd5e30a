// ferry.conf: the reader, the key registry and the settings it produces.
//
// The file is INI-style: `key = value` lines, whole-line comments starting
// with `#` or `;`, sections `[name]` and repeatable named sections
// `[listener NAME]`, `[peer NAME]`, `[modem NAME]`.  Sections may come in
// any order: [schedule] defaults apply to every peer wherever they stand,
// and the cross-checks (routes, lines, identities, addresses) run once the
// whole file is read.  Every key the program
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

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/schedule.h"
#include "modem/profile.h"

namespace ferry::gw {

// The `line` a peer dials through when ferry.conf does not name one: any
// free [modem NAME] with dial = yes.
inline constexpr std::string_view kAnyLine = "any";

// The schedule of a peer that ferry.conf says nothing about: schedule.h's
// defaults, except that `line` is "any" instead of one fixed modem.
inline PeerSchedule default_peer_schedule() {
  PeerSchedule s;
  s.line = std::string(kAnyLine);
  return s;
}

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
  std::vector<std::string> listen;         // "127.0.0.1:110", "[::1]:110"
  bool trusted_local = false;              // USER/PASS without TLS
  std::chrono::seconds idle_timeout{600};  // RFC 1939 autologout
  unsigned max_sessions = 50;              // per listener
};

// [link]: this ferryd's own identity on calls between ferry peers
// (gateway/peer_tls.h, gateway/link_session.h), and an optional TCP
// listener for link sessions (a peer reached by tcp:HOST:PORT dials it).
struct LinkConfig {
  std::string certificate;            // PEM path of our Ed25519 certificate
  std::string key;                    // PEM path of its private key
  std::vector<std::string> listen;    // "127.0.0.1:7625": answer links here
  uint64_t chunk_size = 16 << 10;     // BDAT chunk of stored bytes
  unsigned window_chunks = 4;         // unacknowledged chunks on the line
  std::chrono::seconds timeout{300};  // longest silence on a link
};

// [peer NAME]: a sister office, a field laptop, or the provider.
//
// How a peer is reached is its schedule's `routes` (PeerSchedule::routes),
// in order of preference: a phone number (digits and Hayes dial modifiers)
// dialled on a modem, "tcp:HOST:PORT" (HOST an IP literal), or "direct":
// the [modem NAME] named by its `line`, a direct serial line (direct =
// yes).  A peer with dial = no is "hold for pickup": its mail waits until
// it calls us.
struct PeerConfig {
  std::string name;
  std::vector<std::string> domains;  // domains behind this peer, lower-case
  bool smarthost = false;            // also the route for every unrouted domain
  enum class Protocol { ferry, smtp } protocol = Protocol::ferry;
  bool dial = true;  // false: never called (hold for pickup)
  // Among the peers listing the same domain, lower is tried first (as MX
  // preferences); equal preferences keep configuration order.
  unsigned preference = 10;
  // Consecutive failed calls after which this peer's mail for domains
  // that another peer also serves moves to that peer until the backoff
  // ends (calls.h: failover).
  unsigned failover_after = 1;
  // The route "exec": a command run by /bin/sh whose standard input and
  // output are the link (ssh to the far office and a relay to its link
  // listener, say).
  std::string command;

  // ferry peers: how it proves who it is (one of the two, or both).
  std::string fingerprint;  // sha256:HEX of its link certificate
  std::string psk_file;     // file holding a TLS 1.3 pre-shared key

  // smtp peers (the provider's MTA).
  enum class Tls { no, yes, required } smtp_starttls = Tls::yes;
  std::string smtp_auth_user;           // empty: no AUTH
  std::string smtp_auth_password_file;  // the password, one line
  bool atrn = false;  // ask for our domains with ATRN after sending

  // POP3 multidrop collection from the provider (fetchmail style); no
  // server: no collection.
  std::string pop3_server;  // HOST:PORT, HOST an IP literal
  std::string pop3_user;
  std::string pop3_password_file;
  Tls pop3_stls = Tls::yes;
  // Headers that name the envelope recipient, tried in order.
  std::vector<std::string> pop3_envelope_headers{
      "delivered-to", "x-original-to", "envelope-to"};

  // Tariff for `ferryctl calls`: what a connected call costs, in the
  // postmaster's currency; both 0: no tariff (cost unknown).
  double cost_per_call = 0;    // on connecting
  double cost_per_minute = 0;  // per started minute

  // Windows, zone, routes, line, triggers, limits, retries, lifetimes:
  // [schedule] values first, then this section's (set_schedule_key).
  PeerSchedule schedule = default_peer_schedule();
  // The schedule keys as given in this section, in file order.
  std::vector<std::pair<std::string, std::string>> schedule_keys;
};

// [modem NAME]: one modem on a serial port.
struct ModemConfig {
  std::string name;
  std::string device;  // /dev/ttyS0, /dev/ttyUSB0, or an emulator path
  bool answer = true;  // answer incoming calls on this modem
  bool dial = true;    // place calls on it (shared with answering)
  // A direct serial line (null-modem cable, leased line): no AT commands,
  // the line is up as soon as the port is open.  Peers reach it with the
  // route "direct" and line = NAME.
  bool direct = false;
  modem::ModemProfile profile;  // profile.name = name
};

// [schedule]: defaults for every peer's schedule keys, and what senders
// and the postmaster are told (RFC 3464 notifications).
struct NotifyConfig {
  std::string postmaster_copy;  // address copied on every failure DSN
  uint64_t return_content_limit = 64 << 10;  // whole message up to this,
                                             // else headers only
};

struct Config {
  std::string source;    // file it was read from
  std::string hostname;  // [ferryd] hostname; empty: the system's name
  std::string spool_dir = "/var/spool/ferry";          // [ferryd] spool
  std::string control_socket = "/run/ferry/ctl.sock";  // [ferryd]
  std::string lock_dir = "/var/lock";                  // [ferryd]
  std::string user;            // [ferryd] user: run as it after start-up
  std::string control_group;   // [ferryd]; empty: ferryd's own group
  mode_t control_mode = 0660;  // [ferryd]
  std::vector<ListenerConfig> listeners;
  SmtpConfig smtp;
  TlsConfig tls;
  LocalConfig local;
  RulesConfig rules;
  Pop3Config pop3;
  LinkConfig link;
  std::vector<PeerConfig> peers;    // in file order
  std::vector<ModemConfig> modems;  // in file order
  // [schedule] schedule keys: the base of every peer's schedule.
  PeerSchedule schedule_defaults = default_peer_schedule();
  std::vector<std::pair<std::string, std::string>> schedule_default_keys;
  NotifyConfig notify;  // [schedule] notification keys
  // Where each setting was given: "[section] key" (and "[section]") ->
  // line, for messages about a value found wrong after parsing.
  std::map<std::string, int> key_lines, section_lines;
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

// The checks of `ferryd --check-config` that look at the file system
// (parse_config only looks at the text): [tls] and [link] certificate and
// key, every peer's psk_file and password files are readable regular
// files; the parent directories of [ferryd] spool and [local] mail_root
// exist; every [modem NAME] device exists.  Returns false with `error`
// naming the section, the key, the path and the cause on the first
// failure.  Reads files; call it before dropping privileges.
bool check_files(const Config&, std::string& error);

// "ferry.conf:12: [link] certificate: " for a message about that setting
// (the section's line when the key was left to its default).
std::string config_where(const Config& cfg, const std::string& label,
                         std::string_view key);

// --- The key registry -------------------------------------------------

enum class KeyType {
  string,      // free text
  path,        // file or directory name
  size,        // 35M
  duration,    // 5m
  boolean,     // yes/no
  count,       // unsigned integer
  address,     // listen address host:port, host an IP literal
  mode,        // relay | submission
  list,        // comma/blank separated words
  cidr_list,   // list of CIDR networks
  user_sizes,  // list of user:size
  number,      // decimal number such as 0.1
  file_mode,   // octal permission bits such as 0660
  choice,      // one word of a fixed set
  windows,     // call windows (gateway/schedule.h)
  zone,        // time zone (gateway/schedule.h)
  times        // times of day, HH:MM
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
