// ferry-sendmail: the sendmail(8) command line for ferry.
//
// Scripts, cron and MUAs that call /usr/sbin/sendmail hand their mail to
// this program.  It needs no running ferryd: it opens the spool directory
// named by the configuration itself and stores the message with every
// recipient on the route "pickup"; ferryd's pickup (gateway/pickup.h)
// later applies the postmaster's rules and delivers.  It exits 0 only
// after the spool has said the message is durable, and stores nothing when
// it exits non-zero, so a caller may always retry a failure.
//
// Modes: -bm (default: message on stdin), -bs (SMTP on stdin/stdout),
// -bp (list the queue), -q (ask ferryd to make its calls now).  Exit codes
// come from <sysexits.h>; man/ferry-sendmail.8 lists them.
//
// Why no Boost.Program_options here: sendmail's option syntax is older
// than getopt conventions (-oi, -bs, -fADDR, -q30m), and scripts depend on
// exactly those spellings, so a small hand-written scanner reads them.
//
// Single-threaded apart from the spool's own committer thread.
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/address.h"
#include "gateway/config.h"
#include "gateway/json.h"
#include "gateway/pickup.h"
#include "gateway/policy.h"
#include "gateway/smtp_parser.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace {

using ferry::gw::Config;
using ferry::gw::parse_path;
using ferry::gw::PathParse;
namespace queue = ferry::queue;
namespace smtp = ferry::gw::smtp;

constexpr const char* kProg = "ferry-sendmail";
constexpr const char* kDefaultConfig = "/etc/ferry/ferry.conf";

// Control socket requests (one line each; see BUGS in the man page).
constexpr std::string_view kPokeRequest = "pickup\n";
constexpr std::string_view kFlushRequest = "flush\n";

void say(const std::string& text) {
  std::string line = std::string(kProg) + ": " + text + "\n";
  (void)!::write(2, line.data(), line.size());
}

[[noreturn]] void usage(const std::string& why) {
  say(why);
  say("usage: ferry-sendmail [-t] [-i] [-f sender] [-F name] [-N dsn] "
      "[-R full|hdrs] [-V envid] [-C config] [recipient ...]");
  say("       ferry-sendmail -bs | -bp | -q [-C config]");
  ::exit(EX_USAGE);
}

// ---- command line ----------------------------------------------------

enum class Mode { deliver, smtp, print_queue, run_queue };

struct Args {
  Mode mode = Mode::deliver;
  bool from_headers = false;          // -t
  bool ignore_dots = false;           // -i / -oi
  bool verbose = false;               // -v
  std::optional<std::string> sender;  // -f / -r
  std::string full_name;              // -F
  uint8_t notify = 0;                 // -N
  queue::Ret ret = queue::Ret::unspecified;
  std::string envid;   // -V
  std::string config;  // -C
  std::vector<std::string> recipients;
};

Args parse_args(int argc, char** argv) {
  Args a;
  int i = 1;
  // The value of an option that takes one: the rest of this argument
  // ("-fme@x") or the next argument ("-f me@x").
  auto value = [&](const char* opt, std::string_view rest) -> std::string {
    if (!rest.empty()) return std::string(rest);
    if (i + 1 >= argc) usage(std::string("option -") + opt + " needs a value");
    return argv[++i];
  };
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;
    char c = arg[1];
    std::string_view rest = arg.substr(2);
    switch (c) {
      case 't':
        if (!rest.empty()) usage("unknown option " + std::string(arg));
        a.from_headers = true;
        break;
      case 'i':
        if (!rest.empty()) usage("unknown option " + std::string(arg));
        a.ignore_dots = true;
        break;
      case 'v':
        a.verbose = true;
        break;
      case 'f':
      case 'r':
        a.sender = value(c == 'f' ? "f" : "r", rest);
        break;
      case 'F':
        a.full_name = value("F", rest);
        break;
      case 'C':
        a.config = value("C", rest);
        break;
      case 'c':
        // ferryd's spelling of the configuration option.  Not taken as a
        // synonym: in sendmail -c is a flag with no value (obsolete,
        // ignored), so "-c FILE" would mean something else to a script
        // written for it.  Say which option is meant instead.
        usage("-c is not an option here; the configuration file is -C " +
              std::string(rest.empty() ? "FILE" : rest) +
              " (ferryd alone spells it -c)");
      case 'V': {
        a.envid = value("V", rest);
        bool ok = !a.envid.empty() && a.envid.size() <= 100;
        for (unsigned char ch : a.envid) ok = ok && ch > 32 && ch < 127;
        if (!ok) usage("-V: ENVID must be 1-100 printable ASCII characters");
        break;
      }
      case 'N': {
        std::string v = value("N", rest);
        std::string up;
        for (char ch : v) up.push_back(static_cast<char>(::toupper(ch)));
        auto bits = smtp::parse_notify(up);
        if (!bits) usage("-N: expected never or success,failure,delay");
        a.notify = *bits;
        break;
      }
      case 'R': {
        std::string v = value("R", rest);
        std::string low = ferry::gw::lower_ascii(v);
        if (low == "full") {
          a.ret = queue::Ret::full;
        } else if (low == "hdrs") {
          a.ret = queue::Ret::hdrs;
        } else {
          usage("-R: expected full or hdrs, got '" + v + "'");
        }
        break;
      }
      case 'b':
        if (rest == "m") {
          a.mode = Mode::deliver;
        } else if (rest == "s") {
          a.mode = Mode::smtp;
        } else if (rest == "p") {
          a.mode = Mode::print_queue;
        } else {
          usage("mode -b" + std::string(rest) + " is not supported");
        }
        break;
      case 'q':
        // -q30m would start a queue-runner daemon in sendmail; ferryd's
        // scheduler does that job, so any -q means "make the calls now".
        if (!rest.empty()) say("note: -q" + std::string(rest) + " taken as -q");
        a.mode = Mode::run_queue;
        break;
      case 'o':
        if (rest == "i") {
          a.ignore_dots = true;
        } else {
          say("note: option " + std::string(arg) + " ignored");
        }
        break;
      case 'O':
      case 'B':
      case 'h':
      case 'L':
        // Options that take a value and have no meaning here.
        say("note: option -" + std::string(1, c) + " " +
            value(std::string(1, c).c_str(), rest) + " ignored");
        break;
      case 'm':
      case 'n':
      case 'U':
      case 'e':
        say("note: option " + std::string(arg) + " ignored");
        break;
      default:
        usage("unknown option " + std::string(arg));
    }
  }
  for (; i < argc; ++i) a.recipients.push_back(argv[i]);
  return a;
}

// ---- who and where ---------------------------------------------------

struct Site {
  Config cfg;
  std::string config_path;  // where cfg came from, for messages
  std::string host;    // for Received: and Message-ID:
  std::string domain;  // qualifies bare user names
  std::string login;   // the calling user's name
  std::string gecos;   // their full name from passwd, if any
  uid_t uid = 0;
  // Present when the users file is readable: recipients are then checked
  // at once, the way ferryd's SMTP server would.
  std::unique_ptr<ferry::gw::Users> users;
  std::unique_ptr<ferry::gw::Policy> policy;
};

void load_site(const Args& a, Site& s) {
  std::string path = a.config;
  if (path.empty()) {
    const char* env = ::getenv("FERRY_CONFIG");
    path = env && *env ? env : kDefaultConfig;
  }
  std::string error;
  if (!ferry::gw::load_config(path, s.cfg, error)) {
    say("cannot read the configuration: " + error);
    ::exit(EX_CONFIG);
  }
  s.config_path = path;
  s.host = s.cfg.hostname;
  if (s.host.empty()) {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) == 0) s.host = buf;
    if (s.host.empty()) s.host = "localhost";
  }
  s.domain = s.cfg.local.domains.empty() ? s.host : s.cfg.local.domains[0];
  s.uid = ::getuid();
  if (const passwd* pw = ::getpwuid(s.uid)) {
    s.login = pw->pw_name;
    std::string g = pw->pw_gecos ? pw->pw_gecos : "";
    s.gecos = g.substr(0, g.find(','));
  } else {
    s.login = "uid" + std::to_string(s.uid);
  }
  // Users and aliases may be readable only by ferryd; then the pickup
  // decides (and bounces) instead of us.
  s.users = ferry::gw::Users::load(s.cfg.local.users_file,
                                   s.cfg.local.aliases_file, error);
  if (s.users) {
    s.policy = std::make_unique<ferry::gw::Policy>(s.cfg, *s.users);
  }
}

ferry::gw::ClientFacts local_facts() {
  ferry::gw::ClientFacts f;
  f.ip = "127.0.0.1";
  f.mode = ferry::gw::ListenerConfig::Mode::submission;
  f.authenticated = true;
  return f;
}

// "user" -> "user@domain"; strips one pair of angle brackets.  Returns
// nullopt (and `why`) for a syntax error.
std::optional<std::string> qualify(const Site& s, std::string_view text,
                                   std::string& why) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  if (text.size() >= 2 && text.front() == '<' && text.back() == '>') {
    text = text.substr(1, text.size() - 2);
  }
  std::string addr(text);
  if (addr.find('@') == std::string::npos && !addr.empty()) {
    addr += "@" + s.domain;
  }
  PathParse p = parse_path("<" + addr + ">");
  if (!p.ok || p.null_path) {
    why = "<" + std::string(text) + ">: bad address syntax" +
          (p.error.empty() ? "" : " (" + p.error + ")");
    return std::nullopt;
  }
  return p.box.str();
}

// ---- header fields ---------------------------------------------------

bool is_field_name_line(std::string_view line) {
  size_t i = 0;
  while (i < line.size() && line[i] > 32 && line[i] < 127 && line[i] != ':') {
    ++i;
  }
  if (i == 0) return false;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i < line.size() && line[i] == ':';
}

std::string field_name(std::string_view field) {
  size_t i = 0;
  while (i < field.size() && field[i] != ':' && field[i] != ' ' &&
         field[i] != '\t') {
    ++i;
  }
  return ferry::gw::lower_ascii(field.substr(0, i));
}

// Addresses in an address-list header value (RFC 5322 3.4): display
// names, comments, quoted strings and groups are understood well enough
// to find each addr-spec; the route and obsolete forms are not.
std::vector<std::string> header_addresses(std::string_view field) {
  std::string_view v = field.substr(field.find(':') + 1);
  std::vector<std::string> out;
  std::string cur, angle;
  bool in_quote = false, in_angle = false, had_angle = false;
  int comment = 0;
  auto flush = [&] {
    std::string a = had_angle ? angle : cur;
    size_t b = a.find_first_not_of(" \t");
    size_t e = a.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(a.substr(b, e - b + 1));
    cur.clear();
    angle.clear();
    had_angle = in_angle = false;
  };
  for (size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c == '\r' || c == '\n') continue;  // unfold
    std::string& dst = in_angle ? angle : cur;
    if (comment > 0) {
      if (c == '\\' && i + 1 < v.size()) {
        ++i;
      } else if (c == '(') {
        ++comment;
      } else if (c == ')') {
        --comment;
      }
      continue;
    }
    if (in_quote) {
      dst.push_back(c);
      if (c == '\\' && i + 1 < v.size()) {
        dst.push_back(v[++i]);
      } else if (c == '"') {
        in_quote = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_quote = true;
        dst.push_back(c);
        break;
      case '(':
        comment = 1;
        break;
      case '<':
        in_angle = had_angle = true;
        angle.clear();
        break;
      case '>':
        in_angle = false;
        break;
      case ':':
        if (in_angle) {
          angle.clear();  // obsolete route "@a,@b:": keep the mailbox
        } else {
          cur.clear();  // a group's display name
        }
        break;
      case ',':
        if (in_angle) {
          angle.push_back(c);
        } else {
          flush();
        }
        break;
      case ';':
        flush();
        break;
      default:
        dst.push_back(c);
    }
  }
  flush();
  return out;
}

std::string rfc5322_now() {
  time_t t = ::time(nullptr);
  struct tm tm;
  ::localtime_r(&t, &tm);
  char buf[64];
  ::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
  return buf;
}

std::string new_message_id(const Site& s) {
  time_t t = ::time(nullptr);
  struct tm tm;
  ::gmtime_r(&t, &tm);
  char stamp[32];
  ::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  std::random_device rd;
  char rnd[32];
  ::snprintf(rnd, sizeof rnd, "%08x%08x", rd(), rd());
  return "<" + std::string(stamp) + "." + std::to_string(::getpid()) + "." +
         rnd + "@" + s.host + ">";
}

// "Full Name" as an RFC 5322 display name: a quoted string unless it is
// plain atoms and spaces.
std::string display_name(std::string_view name) {
  bool plain = !name.empty();
  for (unsigned char c : name) {
    plain = plain && (::isalnum(c) || c == ' ' || c >= 0x80 ||
                      strchr("!#$%&'*+-/=?^_`{|}~", c));
  }
  if (plain) return std::string(name);
  std::string out = "\"";
  for (char c : name) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (c != '\r' && c != '\n') out.push_back(c);
  }
  return out + "\"";
}

// Adds Received: on top and From:/Date:/Message-ID: when missing; with
// `header_rcpts`, collects To/Cc/Bcc addresses there and drops Bcc.
// `body` has CRLF line endings.
std::string finish_message(const Site& s, const Args& a,
                           const std::string& sender, std::string_view body,
                           std::vector<std::string>* header_rcpts) {
  // Split the header block into fields (continuation lines included).
  std::vector<std::string_view> fields;
  size_t pos = 0, body_at = body.size();
  while (pos < body.size()) {
    size_t e = body.find("\r\n", pos);
    size_t next = e == std::string_view::npos ? body.size() : e + 2;
    std::string_view line =
        body.substr(pos, (e == std::string_view::npos ? body.size() : e) - pos);
    if (line.empty()) {
      body_at = next;  // the separator is ours to write again
      break;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !fields.empty()) {
      fields.back() =
          body.substr(fields.back().data() - body.data(),
                      line.data() + line.size() - fields.back().data());
    } else if (is_field_name_line(line)) {
      fields.push_back(line);
    } else {
      body_at = pos;  // no empty line: the body starts here
      break;
    }
    pos = next;
  }

  bool has_from = false, has_date = false, has_msgid = false;
  std::string out;
  out += "Received: by " + s.host + " (ferry-sendmail, from userid " +
         std::to_string(s.uid) + " user " + s.login + ");\r\n\t" +
         rfc5322_now() + "\r\n";
  for (std::string_view f : fields) {
    std::string name = field_name(f);
    has_from = has_from || name == "from";
    has_date = has_date || name == "date";
    has_msgid = has_msgid || name == "message-id";
    if (header_rcpts && (name == "to" || name == "cc" || name == "bcc")) {
      for (auto& addr : header_addresses(f)) header_rcpts->push_back(addr);
    }
    if (header_rcpts && name == "bcc") continue;
    out.append(f);
    out += "\r\n";
  }
  if (!has_from) {
    std::string who = sender.empty() ? s.login + "@" + s.domain : sender;
    std::string name = a.full_name.empty() ? s.gecos : a.full_name;
    out += name.empty() ? "From: " + who + "\r\n"
                        : "From: " + display_name(name) + " <" + who + ">\r\n";
  }
  if (!has_date) out += "Date: " + rfc5322_now() + "\r\n";
  if (!has_msgid) out += "Message-ID: " + new_message_id(s) + "\r\n";
  out += "\r\n";
  out.append(body.substr(body_at));
  return out;
}

// ---- the spool -------------------------------------------------------

int spool_exit(std::error_code ec) {
  using queue::spool_errc;
  if (ec == spool_errc::disk_full || ec == spool_errc::sync_failed ||
      ec == spool_errc::shutting_down) {
    return EX_TEMPFAIL;
  }
  return EX_OSERR;
}

std::unique_ptr<queue::Spool> open_spool(const Site& s, bool read_only,
                                         std::error_code& ec) {
  queue::Options o;
  o.read_only = read_only;
  o.log = false;  // our own diagnostics say what went wrong
  return queue::Spool::open(s.cfg.spool_dir, o, ec);
}

// Sends one request line to ferryd's control socket; with `wait`, reads
// one reply line (up to ten seconds).  Without it this is the best-effort
// poke after a message is stored.  False (and `error`) when nobody
// listens.
bool control_request(const Site& s, std::string_view request, bool wait,
                     std::string& reply, std::string& error) {
  const std::string& path = s.cfg.control_socket;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    error = path + ": name too long";
    return false;
  }
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  // The poke must never block a cron job: a ferryd whose backlog is full
  // just misses it (it also looks by itself).
  int fd = ::socket(AF_UNIX,
                    SOCK_STREAM | SOCK_CLOEXEC | (wait ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) {
    error = std::string("socket: ") + strerror(errno);
    return false;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = path + ": " + strerror(errno);
    ::close(fd);
    return false;
  }
  bool ok = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(request.size());
  if (!ok) error = path + ": " + strerror(errno);
  // Wait up to ten seconds for one reply line.
  while (ok && wait && reply.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) break;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok;
}

// ---- -bm: one message from stdin -------------------------------------

struct Envelope {
  std::string sender;
  std::vector<std::string> recipients;
};

// Checks recipients with the postmaster's rules when we can read them.
// Returns 0 or the exit status for the first refusal.
int check_recipients(const Site& s, const std::string& sender,
                     const std::vector<std::string>& rcpts) {
  if (!s.policy) return 0;
  PathParse from = parse_path(sender.empty() ? "<>" : "<" + sender + ">");
  for (const auto& r : rcpts) {
    auto d =
        s.policy->check_rcpt(local_facts(), from, parse_path("<" + r + ">"));
    if (d.accepted) continue;
    say("<" + r + ">: " + std::to_string(d.reply.code) + " " +
        d.reply.enhanced + " " + d.reply.text);
    if (d.reply.enhanced == "5.1.3") return EX_DATAERR;
    if (d.reply.enhanced.rfind("5.7.", 0) == 0) return EX_NOPERM;
    return EX_NOUSER;
  }
  return 0;
}

int store(const Site& s, const Args& a, const Envelope& env, std::string body,
          bool verbose, std::string* qid_out = nullptr) {
  queue::NewMessage m;
  m.sender = env.sender;
  m.envid = a.envid;
  m.ret = a.ret;
  m.body = std::move(body);
  for (const auto& r : env.recipients) {
    queue::NewRecipient nr;
    nr.address = r;
    nr.notify = a.notify;
    nr.route = std::string(ferry::gw::kPickupRoute);
    m.recipients.push_back(std::move(nr));
  }
  const size_t size = m.body.size();

  std::error_code ec;
  auto spool = open_spool(s, false, ec);
  if (!spool) {
    say("cannot open the spool " + s.cfg.spool_dir + ": " + ec.message());
    return ec == queue::spool_errc::disk_full ? EX_TEMPFAIL : EX_CANTCREAT;
  }
  queue::QueueId qid;
  ec = spool->submit(std::move(m), qid);
  spool.reset();
  if (ec) {
    say("cannot store the message in " + s.cfg.spool_dir + ": " + ec.message());
    return spool_exit(ec);
  }
  if (verbose) {
    say(qid + ": from=<" + env.sender + "> size=" + std::to_string(size) +
        " nrcpt=" + std::to_string(env.recipients.size()) + " queued");
  }
  if (qid_out) *qid_out = qid;
  std::string reply, error;
  control_request(s, kPokeRequest, false, reply, error);
  return 0;
}

std::string default_sender(const Site& s) { return s.login + "@" + s.domain; }

int run_deliver(const Site& s, const Args& a) {
  // The envelope sender.
  Envelope env;
  std::string why;
  if (a.sender) {
    std::string_view f = *a.sender;
    if (f.empty() || f == "<>") {
      env.sender.clear();
    } else if (auto q = qualify(s, f, why)) {
      env.sender = *q;
    } else {
      say("-f " + why);
      return EX_DATAERR;
    }
  } else {
    env.sender = default_sender(s);
  }

  // The message: LF or CRLF lines in, CRLF out.
  const uint64_t limit = s.cfg.smtp.max_message_size;
  std::string body;
  char* line = nullptr;
  size_t cap = 0;
  ssize_t n;
  bool first = true;
  while ((n = ::getline(&line, &cap, stdin)) > 0) {
    std::string_view l(line, static_cast<size_t>(n));
    if (l.back() == '\n') l.remove_suffix(1);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (!a.ignore_dots && l == ".") break;
    if (first && l.substr(0, 5) == "From ") {
      first = false;  // an mbox separator line, not a header
      continue;
    }
    first = false;
    // The SMTP server refuses these shapes (554 after the data); mail
    // handed over by a script is held to the same rules, so that nothing
    // stored here could not have arrived by SMTP.
    if (l.find('\0') != std::string_view::npos) {
      ::free(line);
      say("message refused: it contains a NUL byte");
      return EX_DATAERR;
    }
    if (l.find('\r') != std::string_view::npos) {
      ::free(line);
      say("message refused: it contains a bare carriage return");
      return EX_DATAERR;
    }
    if (l.size() > s.cfg.smtp.max_line_length) {
      ::free(line);
      say("message refused: a line is longer than " +
          std::to_string(s.cfg.smtp.max_line_length) +
          " bytes ([smtp] max_line_length)");
      return EX_DATAERR;
    }
    body.append(l);
    body += "\r\n";
    if (body.size() > limit) {
      ::free(line);
      say("message too large (limit " + std::to_string(limit) + " bytes)");
      return EX_DATAERR;
    }
  }
  bool read_error = ::ferror(stdin);
  ::free(line);
  if (read_error) {
    say(std::string("error reading the message: ") + strerror(errno));
    return EX_IOERR;
  }

  // Recipients: the command line, plus the headers with -t.
  std::vector<std::string> from_headers;
  body = finish_message(s, a, env.sender, body,
                        a.from_headers ? &from_headers : nullptr);
  std::vector<std::string> raw;
  for (const auto& arg : a.recipients) {
    for (auto& x : header_addresses(":" + arg)) raw.push_back(x);
  }
  raw.insert(raw.end(), from_headers.begin(), from_headers.end());
  for (const auto& r : raw) {
    auto q = qualify(s, r, why);
    if (!q) {
      say(why);
      return EX_DATAERR;
    }
    if (std::find(env.recipients.begin(), env.recipients.end(), *q) ==
        env.recipients.end()) {
      env.recipients.push_back(*q);
    }
  }
  if (env.recipients.empty()) {
    if (a.from_headers) {
      say("no recipient addresses found in the message header");
      return EX_DATAERR;
    }
    usage("no recipients given (name them, or use -t)");
  }
  if (int rc = check_recipients(s, env.sender, env.recipients)) return rc;
  return store(s, a, env, std::move(body), a.verbose);
}

// ---- -bs: SMTP on stdin/stdout ---------------------------------------

class StdioSmtp {
 public:
  StdioSmtp(const Site& s, const Args& a) : s_(s), a_(a) {}

  int run() {
    reply(220, "", s_.host + " ESMTP ferry-sendmail");
    std::string buf;
    bool skipping = false;  // discarding the rest of an over-long line
    for (;;) {
      if (in_data_) {
        size_t used = reader_->feed(buf);
        buf.erase(0, used);
        if (reader_->done()) {
          end_of_data();
          continue;
        }
      } else {
        if (skipping) {
          // The rest of an over-long line, already answered with 500.
          size_t lf = buf.find('\n');
          if (lf == std::string::npos) {
            buf.clear();
          } else {
            buf.erase(0, lf + 1);
            skipping = false;
            continue;
          }
        } else {
          auto r = smtp::next_line(buf, 2048);
          if (r.status == smtp::LineStatus::too_long) {
            buf.erase(0, r.consumed);
            skipping = r.consumed == 0;
            reply(500, "5.5.2", "Error: command line too long");
            continue;
          }
          if (r.status != smtp::LineStatus::need_more) {
            // A bare LF is fine here: a person may be typing at a
            // terminal.
            std::string cmd = buf.substr(0, r.consumed);
            while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == '\r')) {
              cmd.pop_back();
            }
            buf.erase(0, r.consumed);
            if (cmd.size() > 2048) {  // a bare-LF line is not length-checked
              reply(500, "5.5.2", "Error: command line too long");
              continue;
            }
            if (!command(cmd)) return 0;
            continue;
          }
        }
      }
      char chunk[16384];
      ssize_t n = ::read(0, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        say(std::string("error reading the SMTP input: ") + strerror(errno));
        return EX_IOERR;
      }
      if (n == 0) return end_of_input();
      buf.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  void reply(int code, std::string_view enhanced, std::string_view text) {
    std::string r = smtp::format_reply(code, enhanced, text);
    const char* p = r.data();
    size_t left = r.size();
    while (left > 0) {
      ssize_t n = ::write(1, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) ::exit(EX_IOERR);
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  // The input ended without QUIT.  Between transactions that is how a
  // script says goodbye.  In the middle of DATA the message never ended
  // with "." and nothing was stored: answer as an MTA does when the
  // connection is lost (the caller may still read stdout), say so on
  // stderr, and fail so that the caller knows to send it again.
  int end_of_input() {
    if (!in_data_) return 0;
    // Best effort: a caller that closed both directions reads nothing,
    // and the exit status must not depend on that.
    std::string r = smtp::format_reply(
        421, "4.4.2",
        s_.host + " Error: input ended in the middle of DATA; the "
                  "message was not queued");
    (void)!::write(1, r.data(), r.size());
    say("input ended in the middle of DATA (no \".\" line): the message "
        "from <" + env_.sender + "> to " +
        std::to_string(env_.recipients.size()) + " recipient" +
        (env_.recipients.size() == 1 ? "" : "s") +
        " was not queued");
    return EX_PROTOCOL;
  }

  void reset() {
    have_mail_ = false;
    env_ = Envelope{};
    notify_.clear();
    envid_.clear();
    ret_ = queue::Ret::unspecified;
  }

  // Returns false after QUIT.
  bool command(const std::string& line) {
    auto pc = smtp::parse_command(line);
    const auto& c = pc.cmd;
    using V = smtp::Verb;
    switch (c.verb) {
      case V::helo:
        reply(250, "", s_.host);
        reset();
        return true;
      case V::ehlo:
        reply(250, "",
              s_.host + "\nPIPELINING\nSIZE " +
                  std::to_string(s_.cfg.smtp.max_message_size) +
                  "\n8BITMIME\nSMTPUTF8\nDSN\nENHANCEDSTATUSCODES");
        reset();
        return true;
      case V::mail:
        mail(pc);
        return true;
      case V::rcpt:
        rcpt(pc);
        return true;
      case V::data:
        if (!have_mail_ || env_.recipients.empty()) {
          reply(503, "5.5.1", "Error: need MAIL and RCPT first");
          return true;
        }
        body_.clear();
        reader_ = std::make_unique<smtp::BodyReader>(
            smtp::BodyReader::Mode::data, s_.cfg.smtp.max_message_size,
            s_.cfg.smtp.max_line_length, &body_);
        in_data_ = true;
        reply(354, "", "End data with <CR><LF>.<CR><LF>");
        return true;
      case V::rset:
        reset();
        reply(250, "2.0.0", "Ok");
        return true;
      case V::noop:
        reply(250, "2.0.0", "Ok");
        return true;
      case V::vrfy:
        reply(252, "2.5.0", "Send some mail, I'll try my best");
        return true;
      case V::help:
        reply(214, "2.0.0",
              "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY QUIT");
        return true;
      case V::quit:
        reply(221, "2.0.0", "Bye");
        return false;
      case V::unknown:
        reply(500, "5.5.2", "Error: command not recognized");
        return true;
      default:
        reply(502, "5.5.1", "Error: " + c.name + " not implemented here");
        return true;
    }
  }

  void mail(const smtp::ParsedCommand& pc) {
    if (have_mail_) {
      reply(503, "5.5.1", "Error: nested MAIL command");
      return;
    }
    PathParse p = parse_path(pc.cmd.arg);
    if (!pc.from_to_ok || !p.ok) {
      reply(501, "5.1.7", "Bad sender address syntax");
      return;
    }
    smtp::Params params;
    std::string err;
    if (!smtp::parse_params(p.rest, params, err)) {
      reply(501, "5.5.4", "Bad parameters: " + err);
      return;
    }
    for (const auto& [k, v] : params) {
      if (k == "SIZE") {
        if (std::strtoull(v.c_str(), nullptr, 10) >
            s_.cfg.smtp.max_message_size) {
          reply(552, "5.3.4", "Message size exceeds fixed limit");
          return;
        }
      } else if (k == "RET") {
        std::string up = ferry::gw::lower_ascii(v);
        if (up != "full" && up != "hdrs") {
          reply(501, "5.5.4", "Bad RET value");
          return;
        }
        ret_ = up == "full" ? queue::Ret::full : queue::Ret::hdrs;
      } else if (k == "ENVID") {
        if (!smtp::xtext_valid(v)) {
          reply(501, "5.5.4", "Bad ENVID value");
          return;
        }
        envid_ = smtp::xtext_decode(v);
      } else if (k != "BODY" && k != "SMTPUTF8") {
        reply(555, "5.5.4", "Unsupported parameter " + k);
        return;
      }
    }
    if (p.null_path) {
      env_.sender.clear();
    } else {
      std::string why;
      auto q = qualify(s_, p.box.str(), why);
      if (!q) {
        reply(501, "5.1.7", why);
        return;
      }
      env_.sender = *q;
    }
    have_mail_ = true;
    reply(250, "2.1.0", "Ok");
  }

  void rcpt(const smtp::ParsedCommand& pc) {
    if (!have_mail_) {
      reply(503, "5.5.1", "Error: need MAIL command");
      return;
    }
    if (env_.recipients.size() >= s_.cfg.smtp.max_recipients) {
      reply(452, "4.5.3", "Error: too many recipients");
      return;
    }
    PathParse p = parse_path(pc.cmd.arg);
    std::string why;
    std::optional<std::string> q;
    if (pc.from_to_ok && p.ok && !p.null_path)
      q = qualify(s_, p.box.str(), why);
    if (!q) {
      reply(501, "5.1.3", "Bad recipient address syntax");
      return;
    }
    smtp::Params params;
    std::string err;
    if (!smtp::parse_params(p.rest, params, err)) {
      reply(501, "5.5.4", "Bad parameters: " + err);
      return;
    }
    uint8_t notify = a_.notify;
    for (const auto& [k, v] : params) {
      if (k == "NOTIFY") {
        auto bits = smtp::parse_notify(v);
        if (!bits) {
          reply(501, "5.5.4", "Bad NOTIFY value");
          return;
        }
        notify = *bits;
      } else if (k != "ORCPT") {
        reply(555, "5.5.4", "Unsupported parameter " + k);
        return;
      }
    }
    if (s_.policy) {
      PathParse from =
          parse_path(env_.sender.empty() ? "<>" : "<" + env_.sender + ">");
      auto d = s_.policy->check_rcpt(local_facts(), from,
                                     parse_path("<" + *q + ">"));
      if (!d.accepted) {
        reply(d.reply.code, d.reply.enhanced, d.reply.text);
        return;
      }
    }
    env_.recipients.push_back(*q);
    notify_.push_back(notify);
    reply(250, "2.1.5", "Ok");
  }

  void end_of_data() {
    in_data_ = false;
    const auto& f = reader_->faults();
    if (f.too_big) {
      reply(552, "5.3.4", "Message size exceeds fixed limit");
    } else if (f.nul || f.bare_lf || f.bare_cr) {
      reply(550, "5.6.0", "Message has NUL or bare CR/LF characters");
    } else if (f.line_too_long) {
      reply(550, "5.6.0", "Message has a line that is too long");
    } else {
      Args a = a_;
      a.envid = envid_;
      a.ret = ret_;
      std::string msg = finish_message(s_, a, env_.sender, body_, nullptr);
      int rc = store_with_notify(a, std::move(msg));
      if (rc == 0) {
        reply(250, "2.0.0", "Ok: queued as " + qid_);
      } else if (rc == EX_TEMPFAIL) {
        reply(451, "4.3.1", "Error: insufficient system storage, try later");
      } else {
        reply(451, "4.3.0", "Error: cannot store the message, try later");
      }
    }
    body_.clear();
    reader_.reset();
    reset();
  }

  // Like store(), with a NOTIFY value per recipient.
  int store_with_notify(const Args& a, std::string msg) {
    if (std::all_of(notify_.begin(), notify_.end(),
                    [&](uint8_t n) { return n == notify_.front(); })) {
      Args b = a;
      b.notify = notify_.empty() ? 0 : notify_.front();
      return store(s_, b, env_, std::move(msg), a.verbose, &qid_);
    }
    // Mixed NOTIFY values: the spool takes them per recipient.
    queue::NewMessage m;
    m.sender = env_.sender;
    m.envid = a.envid;
    m.ret = a.ret;
    m.body = std::move(msg);
    for (size_t i = 0; i < env_.recipients.size(); ++i) {
      m.recipients.push_back({env_.recipients[i], "", notify_[i],
                              std::string(ferry::gw::kPickupRoute)});
    }
    std::error_code ec;
    auto spool = open_spool(s_, false, ec);
    if (!spool) {
      say("cannot open the spool " + s_.cfg.spool_dir + ": " + ec.message());
      return ec == queue::spool_errc::disk_full ? EX_TEMPFAIL : EX_CANTCREAT;
    }
    ec = spool->submit(std::move(m), qid_);
    if (ec) {
      say("cannot store the message: " + ec.message());
      return spool_exit(ec);
    }
    std::string reply_text, error;
    control_request(s_, kPokeRequest, false, reply_text, error);
    return 0;
  }

  const Site& s_;
  const Args& a_;
  bool have_mail_ = false;
  bool in_data_ = false;
  Envelope env_;
  std::vector<uint8_t> notify_;
  std::string envid_;
  queue::Ret ret_ = queue::Ret::unspecified;
  std::string body_;
  std::unique_ptr<smtp::BodyReader> reader_;
  std::string qid_;
};

// ---- -bp: the queue listing ------------------------------------------

std::string arrival_text(queue::Clock::time_point t) {
  time_t tt = queue::Clock::to_time_t(t);
  struct tm tm;
  ::localtime_r(&tt, &tm);
  char buf[32];
  ::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S", &tm);
  return buf;
}

int run_print_queue(const Site& s) {
  // A spool directory that is not there is a wrong path or a missing
  // installation step, not an empty queue: mailq must not hide it.
  // (Other stat failures, such as EACCES, are left to open_spool.)
  struct stat st;
  bool there = ::stat(s.cfg.spool_dir.c_str(), &st) == 0;
  int e = errno;
  if ((!there && (e == ENOENT || e == ENOTDIR)) ||
      (there && !S_ISDIR(st.st_mode))) {
    say("the spool " + s.cfg.spool_dir + " is missing (" +
        (there ? "not a directory" : strerror(e)) +
        "): check spool in [ferryd] of " + s.config_path);
    return EX_NOINPUT;
  }
  std::error_code ec;
  auto spool = open_spool(s, true, ec);
  if (!spool && ec == queue::spool_errc::not_found) {
    // The directory is there but nothing was ever stored in it: the
    // spool's files are created on the first write.
    ::printf("Mail queue is empty\n");
    return 0;
  }
  if (!spool) {
    say("cannot open the spool " + s.cfg.spool_dir + ": " + ec.message());
    return EX_NOINPUT;
  }
  std::vector<queue::MessageInfo> all;
  if ((ec = spool->list(all))) {
    say("cannot list the spool " + s.cfg.spool_dir + ": " + ec.message());
    return EX_IOERR;
  }
  if (all.empty()) {
    ::printf("Mail queue is empty\n");
    return 0;
  }
  ::printf("%-16s %9s %-20s %s\n", "-Queue ID-", "--Size--",
           "----Arrival Time----", "-Sender/Recipient (state, route)-");
  uint64_t total = 0;
  for (const auto& m : all) {
    total += m.size;
    ::printf("%-16s %9llu %-20s %s\n", m.id.c_str(),
             static_cast<unsigned long long>(m.size),
             arrival_text(m.arrival).c_str(),
             m.sender.empty() ? "<>" : m.sender.c_str());
    for (const auto& r : m.recipients) {
      std::string extra(queue::to_string(r.state));
      extra += ", " + r.route;
      if (!r.last_reply.empty()) extra += ": " + r.last_reply;
      ::printf("%48s %s (%s)\n", "", r.address.c_str(), extra.c_str());
    }
    ::printf("\n");
  }
  ::printf("-- %llu Kbytes in %zu Request%s.\n",
           static_cast<unsigned long long>((total + 1023) / 1024), all.size(),
           all.size() == 1 ? "" : "s");
  return ::fflush(stdout) == 0 ? 0 : EX_IOERR;
}

// ---- -q: make the calls now ------------------------------------------

// The control socket answers one JSON line (gateway/control.h):
// {"ok":true,...} or {"ok":false,"error":{"code":..,"message":..}}.
int run_queue(const Site& s, bool verbose) {
  std::string reply, error;
  if (!control_request(s, kFlushRequest, true, reply, error)) {
    say("ferryd is not running (control socket " + error + ")");
    return EX_UNAVAILABLE;
  }
  std::string line = reply.substr(0, reply.find('\n'));
  if (line.empty()) {
    say("ferryd did not answer on " + s.cfg.control_socket);
    return EX_UNAVAILABLE;
  }
  ferry::json::Value v;
  std::string perr;
  if (!ferry::json::parse(line, v, perr)) {
    say("unexpected reply from ferryd: " + perr);
    return EX_PROTOCOL;
  }
  const ferry::json::Value& r = v;
  if (r["ok"].as_bool()) {
    if (verbose) say("ferryd: calls requested");
    return 0;
  }
  say("ferryd refused: " + r["error"]["message"].as_string() + " (" +
      r["error"]["code"].as_string() + ")");
  return EX_UNAVAILABLE;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  Args a = parse_args(argc, argv);
  if (a.mode != Mode::deliver && (a.from_headers || !a.recipients.empty())) {
    usage("-t and recipients go only with -bm (the default mode)");
  }
  Site s;
  load_site(a, s);
  switch (a.mode) {
    case Mode::deliver:
      return run_deliver(s, a);
    case Mode::smtp:
      return StdioSmtp(s, a).run();
    case Mode::print_queue:
      return run_print_queue(s);
    case Mode::run_queue:
      return run_queue(s, a.verbose);
  }
  return EX_SOFTWARE;
}
