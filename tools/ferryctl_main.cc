// ferryctl - ask a running ferryd about its queue and calls, and tell it
// what to do.
//
// ferryctl talks to ferryd's control socket (gateway/control.h): one JSON
// request line out, JSON reply lines back.  It prints them for a person,
// or with --json as the JSON result itself for scripts.  It never opens
// the spool: everything goes through the daemon, so the daemon's checks
// (who may ask, which transitions are allowed) apply to every client.
// The one local command is `keygen`, which makes link keys and PSK files
// (gateway/peer_tls.h) and needs no ferryd.
//
// Exit status (man/ferryctl.1 has the full list): 0 done; 1 ferryd
// refused or failed the request; 2 bad command line or configuration;
// 3 ferryd not running; 4 permission denied; 5 not available in this
// ferryd; 10-14 a call's outcome (busy, no answer, line down,
// authentication failure, partial exchange).
//
// Why no Boost.Program_options: its model is one flat set of options,
// and ferryctl's grammar is command words with their own options; a small
// scanner over argv says clearer things about mistakes.
//
// Single-threaded; blocking I/O on one socket.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config.h"
#include "gateway/files.h"
#include "gateway/json.h"
#include "gateway/peer_tls.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "unknown"
#endif

namespace {

using ferry::json::Array;
using ferry::json::Value;

constexpr const char* kDefaultConfig = "/etc/ferry/ferry.conf";

// Exit codes.
enum Exit {
  kOk = 0,
  kFailed = 1,
  kUsage = 2,
  kNotRunning = 3,
  kPermission = 4,
  kNotAvailable = 5,
  kBusy = 10,
  kNoAnswer = 11,
  kLineDown = 12,
  kAuthFailed = 13,
  kPartial = 14,
};

int exit_for(const std::string& code) {
  static const std::map<std::string, int> kCodes = {
      {"permission", kPermission},
      {"not_available", kNotAvailable},
      {"busy", kBusy},
      {"no_answer", kNoAnswer},
      {"line_down", kLineDown},
      {"auth_failed", kAuthFailed},
      {"partial", kPartial},
  };
  auto it = kCodes.find(code);
  return it == kCodes.end() ? kFailed : it->second;
}

void err(const std::string& text) {
  std::fprintf(stderr, "ferryctl: %s\n", text.c_str());
}

// --json anywhere on the command line: set before anything can fail, so
// that every outcome, a mistake on the command line included, is one JSON
// object on stdout for the script that asked.
bool g_json = false;

// A failure found here rather than by ferryd: the line on stderr, and
// with --json the same object ferryd's errors print,
// {"code":CODE,"message":TEXT}.  Returns `status` (the exit status).
int fail(int status, const std::string& code, const std::string& message) {
  err(message);
  if (g_json) {
    Value e;
    e["code"] = code;
    e["message"] = message;
    std::printf("%s\n", ferry::json::write(e).c_str());
    std::fflush(stdout);
  }
  return status;
}

const char* kUsageText =
    "usage: ferryctl [-C|-c CONFIG | -S SOCKET] [--json] COMMAND [ARGS]\n"
    "commands:\n"
    "  status\n"
    "  queue [list] [FILTERS]\n"
    "  queue show QID\n"
    "  queue hold|release|retry|delete (QID... | --all [FILTERS])\n"
    "  calls [--limit N]\n"
    "  dial PEER [--wait]\n"
    "  why PEER\n"
    "  help\n"
    "  keygen --name NAME --out DIR [--force]   (local, no ferryd)\n"
    "  keygen --psk FILE [--force]\n"
    "  keygen --show FILE\n"
    "filters: --peer NAME --sender ADDR --recipient ADDR --older-than AGE\n"
    "         (ADDR may be @domain; AGE like 90s, 30m, 2h, 3d)\n";

[[noreturn]] void usage(const std::string& why) {
  std::string text = why.empty() ? "bad command line" : why;
  fail(kUsage, "usage", text);
  std::fputs(kUsageText, stderr);
  std::exit(kUsage);
}

// "2h", "30m", "90s", "3d", "1h30m"; a bare number is seconds.  -1 if bad.
int64_t parse_age(std::string_view s) {
  if (s.empty()) return -1;
  int64_t total = 0, n = 0;
  bool digits = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      n = n * 10 + (c - '0');
      digits = true;
      if (n > (int64_t{1} << 40)) return -1;
      continue;
    }
    if (!digits) return -1;
    switch (c) {
      case 's':
        total += n;
        break;
      case 'm':
        total += n * 60;
        break;
      case 'h':
        total += n * 3600;
        break;
      case 'd':
        total += n * 86400;
        break;
      case 'w':
        total += n * 7 * 86400;
        break;
      default:
        return -1;
    }
    n = 0;
    digits = false;
  }
  return total + (digits ? n : 0);
}

std::string fmt_age(int64_t s) {
  if (s < 0) s = 0;
  char b[32];
  if (s < 60) {
    std::snprintf(b, sizeof b, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(b, sizeof b, "%lldm", static_cast<long long>(s / 60));
  } else if (s < 86400) {
    std::snprintf(b, sizeof b, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(b, sizeof b, "%lldd%02lldh",
                  static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  }
  return b;
}

std::string fmt_bytes(double n) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  int u = 0;
  while (n >= 1024 && u < 4) {
    n /= 1024;
    ++u;
  }
  char b[32];
  if (u == 0) {
    std::snprintf(b, sizeof b, "%.0f%s", n, units[u]);
  } else {
    std::snprintf(b, sizeof b, "%.1f%s", n, units[u]);
  }
  return b;
}

std::string fmt_time(int64_t epoch) {
  if (epoch <= 0) return "-";
  time_t t = static_cast<time_t>(epoch);
  struct tm tm {};
  ::localtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", &tm);
  return b;
}

// ---- The connection --------------------------------------------------

struct Target {
  std::string socket;
  std::string config;  // where the name came from, for messages
};

class Client {
 public:
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Connects or prints the reason and returns its exit code.
  int connect(const Target& t) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (t.socket.size() >= sizeof sa.sun_path) {
      return fail(kUsage, "usage", "control socket name too long: " + t.socket);
    }
    std::memcpy(sa.sun_path, t.socket.c_str(), t.socket.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      return fail(kFailed, "failed",
                  std::string("socket: ") + std::strerror(errno));
    }
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
      return kOk;
    }
    int e = errno;
    // Something that is not a socket (a typing mistake after -S, a file
    // left in the way) is no sign of a stopped ferryd: say what it is.
    struct stat st {};
    if (::stat(t.socket.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return fail(kUsage, "usage",
                  "control socket " + t.socket + ": not a socket (" +
                      file_kind(st.st_mode) + "); " +
                      (t.config.empty()
                           ? std::string("check -S")
                           : "check control_socket in " + t.config));
    }
    if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR) {
      return fail(
          kNotRunning, "not_running",
          "ferryd is not running: start it with 'ferryd --config " +
              (t.config.empty() ? std::string(kDefaultConfig) : t.config) +
              "' or 'systemctl start ferryd' (control socket " + t.socket +
              ": " + std::strerror(e) + ")");
    }
    if (e == EACCES || e == EPERM) {
      return fail(kPermission, "permission",
                  "permission denied on the control socket " + t.socket +
                      ": " + group_hint(t.socket));
    }
    return fail(kFailed, "failed",
                "control socket " + t.socket + ": " + std::strerror(e));
  }

  bool send(const Value& req) {
    std::string line = ferry::json::write(req) + "\n";
    return ::send(fd_, line.data(), line.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(line.size());
  }

  // Next reply line; false on end of stream, error or timeout (ms, -1 =
  // wait for ever).
  bool read_line(std::string& line, int timeout_ms) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return true;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      char b[4096];
      ssize_t n = ::read(fd_, b, sizeof b);
      if (n <= 0) return false;
      buf_.append(b, static_cast<size_t>(n));
    }
  }

  static std::string file_kind(mode_t m) {
    if (S_ISREG(m)) return "a regular file";
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
    return "another kind of file";
  }

  // Who may use the socket, in words.
  static std::string group_hint(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      return std::string(std::strerror(errno)) +
             "; the directory holding it may be closed to you";
    }
    std::string group = std::to_string(st.st_gid);
    if (const struct group* g = ::getgrgid(st.st_gid)) group = g->gr_name;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return "it is group '" + group + "' mode " + mode +
           "; ask the administrator to add you to group '" + group +
           "' (then log in again), or run ferryctl as root";
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

// ---- Human output ----------------------------------------------------

void print_status(const Value& r) {
  const Value& d = r["ferryd"];
  std::printf("ferryd: pid %lld, up %s\n",
              static_cast<long long>(d["pid"].as_int()),
              fmt_age(d["uptime"].as_int()).c_str());

  // Modems.
  if (r["modems"].as_array().empty()) {
    std::printf("modems: %s\n", r.has("modems_note")
                                    ? r["modems_note"].as_string().c_str()
                                    : "none");
  } else {
    std::printf("modems:\n");
    for (const auto& m : r["modems"].as_array()) {
      std::string line =
          "  " + m["name"].as_string() + ": " + m["state"].as_string();
      if (m["speed"].as_int() > 0) {
        line += " at " + std::to_string(m["speed"].as_int()) + " bps";
      }
      if (!m["peer"].as_string().empty())
        line += " to " + m["peer"].as_string();
      std::printf("%s\n", line.c_str());
    }
  }

  // Peers.
  const Array& peers = r["peers"].as_array();
  if (peers.empty()) {
    std::printf("peers: nothing queued for any peer\n");
  } else {
    std::printf("peers:\n  %-14s %6s %6s %8s %8s  %-19s %s\n", "PEER", "MSGS",
                "RCPTS", "BYTES", "OLDEST", "NEXT CALL", "LAST CALL");
    for (const auto& p : peers) {
      std::string next = p["next_call"].is_null()
                             ? "- (" + p["next_call_reason"].as_string() + ")"
                             : fmt_time(p["next_call"].as_int());
      std::string last = p["last_call"].is_null()
                             ? "-"
                             : fmt_time(p["last_call"]["start"].as_int()) +
                                   " " + p["last_call"]["result"].as_string();
      std::printf("  %-14s %6lld %6lld %8s %8s  %-19s %s\n",
                  p["name"].as_string().c_str(),
                  static_cast<long long>(p["messages"].as_int()),
                  static_cast<long long>(p["recipients"].as_int()),
                  fmt_bytes(p["bytes"].as_double()).c_str(),
                  fmt_age(p["oldest_age"].as_int()).c_str(),
                  p["next_call"].is_null() ? "-" : next.c_str(), last.c_str());
      if (p["next_call"].is_null() && !p["next_call_reason"].is_null()) {
        std::printf("  %-14s no call planned: %s\n", "",
                    p["next_call_reason"].as_string().c_str());
      }
    }
  }

  // Spool.
  const Value& s = r["spool"];
  if (s.has("error")) {
    std::printf("spool: %s\n", s["error"].as_string().c_str());
    return;
  }
  const Value& rc = s["recipients"];
  std::printf(
      "spool: %lld message%s; recipients %lld queued, %lld deferred, "
      "%lld held, %lld in flight; %lld calls logged\n",
      static_cast<long long>(s["messages"].as_int()),
      s["messages"].as_int() == 1 ? "" : "s",
      static_cast<long long>(rc["queued"].as_int()),
      static_cast<long long>(rc["deferred"].as_int()),
      static_cast<long long>(rc["held"].as_int()),
      static_cast<long long>(rc["in_flight"].as_int()),
      static_cast<long long>(s["calls"].as_int()));
}

void print_queue(const Value& r) {
  const Array& ms = r["messages"].as_array();
  if (ms.empty()) {
    std::printf("queue is empty (or nothing matches)\n");
    return;
  }
  std::printf("%-18s %7s %8s  %s\n", "QUEUE ID", "AGE", "SIZE",
              "SENDER / RECIPIENTS");
  for (const auto& m : ms) {
    std::string sender = m["sender"].as_string();
    std::printf("%-18s %7s %8s  <%s>\n", m["id"].as_string().c_str(),
                fmt_age(m["age"].as_int()).c_str(),
                fmt_bytes(m["size"].as_double()).c_str(), sender.c_str());
    for (const auto& rc : m["recipients"].as_array()) {
      std::printf("%-18s %7s %8s    %s (%s, %s)\n", "", "", "",
                  rc["address"].as_string().c_str(),
                  rc["state"].as_string().c_str(),
                  rc["route"].as_string().c_str());
    }
  }
  std::printf("%zu message%s\n", ms.size(), ms.size() == 1 ? "" : "s");
}

void print_message(const Value& m) {
  std::printf("queue id: %s\n", m["id"].as_string().c_str());
  if (m["gone"].as_bool()) {
    std::printf("state:    no longer in the spool\n");
  } else {
    std::printf("from:     <%s>\n", m["sender"].as_string().c_str());
    if (!m["envid"].as_string().empty()) {
      std::printf("envid:    %s\n", m["envid"].as_string().c_str());
    }
    std::printf("arrived:  %s (%s ago)\n",
                fmt_time(m["arrival"].as_int()).c_str(),
                fmt_age(m["age"].as_int()).c_str());
    std::printf("size:     %lld bytes (%lld stored)\n",
                static_cast<long long>(m["size"].as_int()),
                static_cast<long long>(m["stored_size"].as_int()));
    std::printf("priority: %lld\n",
                static_cast<long long>(m["priority"].as_int()));
    std::printf("recipients:\n");
    for (const auto& rc : m["recipients"].as_array()) {
      std::printf("  %s\n    state %s, route %s, %lld attempt%s",
                  rc["address"].as_string().c_str(),
                  rc["state"].as_string().c_str(),
                  rc["route"].as_string().c_str(),
                  static_cast<long long>(rc["attempts"].as_int()),
                  rc["attempts"].as_int() == 1 ? "" : "s");
      if (rc.has("next_attempt")) {
        std::printf(", next %s", fmt_time(rc["next_attempt"].as_int()).c_str());
      }
      std::printf("\n");
      if (!rc["last_reply"].as_string().empty()) {
        std::printf("    last reply: %s\n",
                    rc["last_reply"].as_string().c_str());
      }
    }
  }
  std::printf("events:\n");
  for (const auto& e : m["events"].as_array()) {
    std::printf("  %s  %s\n", fmt_time(e["time"].as_int()).c_str(),
                e["text"].as_string().c_str());
  }
}

void print_action(const Value& r) {
  std::printf("%s: %lld message%s, %lld recipient%s",
              r["action"].as_string().c_str(),
              static_cast<long long>(r["messages"].as_int()),
              r["messages"].as_int() == 1 ? "" : "s",
              static_cast<long long>(r["recipients"].as_int()),
              r["recipients"].as_int() == 1 ? "" : "s");
  if (r["skipped"].as_int() > 0) {
    std::printf(" (%lld recipient%s skipped: not in a state for it)",
                static_cast<long long>(r["skipped"].as_int()),
                r["skipped"].as_int() == 1 ? "" : "s");
  }
  std::printf("\n");
  for (const auto& id : r["ids"].as_array()) {
    std::printf("  %s\n", id.as_string().c_str());
  }
}

void print_calls(const Value& r) {
  const Array& cs = r["calls"].as_array();
  if (cs.empty()) {
    std::printf("no calls recorded\n");
    return;
  }
  std::printf("%-19s %-12s %8s %8s %8s %7s %5s %5s  %s\n", "START", "PEER",
              "DURATION", "OUT", "IN", "MSGS", "EFF", "COST", "RESULT");
  for (const auto& c : cs) {
    std::string msgs = std::to_string(c["messages_out"].as_int()) + "/" +
                       std::to_string(c["messages_in"].as_int());
    std::string eff = "-";
    if (c["efficiency"].is_number()) {
      char b[16];
      std::snprintf(b, sizeof b, "%.0f%%", c["efficiency"].as_double() * 100);
      eff = b;
    }
    std::string cost = "-";
    if (c["cost"].is_number()) {
      char cb[32];
      std::snprintf(cb, sizeof cb, "%.2f", c["cost"].as_double());
      cost = cb;
    }
    std::printf("%-19s %-12s %8s %8s %8s %7s %5s %5s  %s\n",
                fmt_time(c["start"].as_int()).c_str(),
                c["peer"].as_string().c_str(),
                fmt_age(std::llround(c["duration"].as_double())).c_str(),
                fmt_bytes(c["bytes_out"].as_double()).c_str(),
                fmt_bytes(c["bytes_in"].as_double()).c_str(), msgs.c_str(),
                eff.c_str(), cost.c_str(), c["result"].as_string().c_str());
  }
}

// One progress event as a line of text (see gateway/control.h).
std::string render_progress(const Value& p) {
  std::string s = p["peer"].as_string();
  if (!s.empty()) s += ": ";
  s += p["phase"].as_string();
  if (p.has("bytes_out") || p.has("bytes_in")) {
    s += "  out " + fmt_bytes(p["bytes_out"].as_double()) + " in " +
         fmt_bytes(p["bytes_in"].as_double());
  }
  if (p.has("messages_total")) {
    s += "  msg " + std::to_string(p["messages_done"].as_int()) + "/" +
         std::to_string(p["messages_total"].as_int());
  }
  if (p["rate"].is_number()) {
    s += "  " + fmt_bytes(p["rate"].as_double()) + "/s";
  }
  if (p["eta"].is_number()) {
    s += "  eta " + fmt_age(p["eta"].as_int());
  }
  if (!p["text"].as_string().empty()) s += "  " + p["text"].as_string();
  return s;
}

// ---- keygen: local, no ferryd ----------------------------------------

// Writes `text` to `path` with `mode`: into a temporary file beside it,
// synced, then linked (no --force: an existing file is never replaced) or
// renamed (--force) into place, so nobody ever sees half a key.  On
// failure returns false and sets `error` to "PATH: REASON".
bool install_file(const std::string& path, const std::string& text,
                  mode_t mode, bool force, std::string& error) {
  // --force replaces an earlier key file, never anything else: a device
  // (/dev/null), a directory or a symbolic link stays as it is.
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    error = path + ": exists and is not a regular file; refusing to "
                   "replace it (even with --force)";
    return false;
  }
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string base =
      slash == std::string::npos ? path : path.substr(slash + 1);
  std::string tmp = dir + "/." + base + ".XXXXXX";
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);  // mode 0600 from the start
  if (fd < 0) {
    error = dir + ": " + std::strerror(errno);
    return false;
  }
  bool ok = ::fchmod(fd, mode) == 0;
  size_t done = 0;
  while (ok && done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  int e = errno;
  ok = ::close(fd) == 0 && ok;
  if (ok) {
    ok = force ? ::rename(tmp.c_str(), path.c_str()) == 0
               : ::link(tmp.c_str(), path.c_str()) == 0;
    e = errno;
  }
  ::unlink(tmp.c_str());  // after rename: already gone
  if (!ok) {
    error = path + ": " + std::strerror(e);
    if (e == EEXIST) {
      error = path + " exists; give --force to replace it";
    }
  }
  return ok;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// An absolute path for the lines printed to paste into ferry.conf.
std::string absolute(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  std::string p = path;
  while (p.rfind("./", 0) == 0) p.erase(0, 2);
  return std::string(cwd) + "/" + p;
}

// A peer name that is safe in a certificate and a [peer NAME] header.
bool good_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// `keygen --name NAME --out DIR`: our link key and certificate.
int keygen_identity(const std::string& name, const std::string& dir_in,
                    bool force, bool json) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!exists(dir) && ::mkdir(dir.c_str(), 0755) != 0) {
    return fail(kFailed, "failed", dir + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return fail(kFailed, "failed", dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return fail(kFailed, "failed", dir + ": not a directory");
  }
  const std::string key = dir + "/link.key", crt = dir + "/link.crt";
  if (!force) {
    for (const std::string& f : {key, crt}) {
      if (exists(f)) {
        return fail(kFailed, "failed",
                    f + " exists; give --force to replace it (the offices " +
                        "that pinned its certificate must then paste the " +
                        "new fingerprint)");
      }
    }
  }

  ferry::gw::PeerIdentity id;
  std::string error;
  if (!ferry::gw::generate_identity(name, id, error)) {
    return fail(kFailed, "failed", error);
  }
  // The key first: a certificate alone is useless, a key alone is
  // replaced by the next run.
  if (!install_file(key, id.key_pem, 0600, force, error)) {
    return fail(kFailed, "failed", error);
  }
  if (!install_file(crt, id.cert_pem, 0644, force, error)) {
    if (!force) ::unlink(key.c_str());  // ours, made a moment ago
    return fail(kFailed, "failed", error);
  }
  std::string fp = ferry::gw::cert_fingerprint(id.cert_pem);
  if (json) {
    Value r;
    r["name"] = name;
    r["key"] = absolute(key);
    r["certificate"] = absolute(crt);
    r["fingerprint"] = fp;
    std::printf("%s\n", ferry::json::write(r).c_str());
    return kOk;
  }
  std::printf(
      "wrote %s (private key, mode 0600) and %s\n"
      "\n"
      "In this office's ferry.conf:\n"
      "  [link]\n"
      "  certificate = %s\n"
      "  key = %s\n"
      "\n"
      "The other office pastes into its ferry.conf:\n"
      "  [peer %s]\n"
      "  fingerprint = %s\n",
      key.c_str(), crt.c_str(), absolute(crt).c_str(), absolute(key).c_str(),
      name.c_str(), fp.c_str());
  return kOk;
}

// `keygen --psk FILE`: a new pre-shared key.
int keygen_psk(const std::string& file, bool force, bool json) {
  if (!force && exists(file)) {
    return fail(kFailed, "failed",
                file + " exists; give --force to replace it (the other " +
                    "office then needs the new key too)");
  }
  std::string text = ferry::gw::generate_psk(), bytes, error;
  if (text.empty() || !ferry::gw::parse_psk(text, bytes, error)) {
    return fail(kFailed, "failed",
                "cannot make a key: no random bytes from OpenSSL");
  }
  if (!install_file(file, text, 0600, force, error)) {
    return fail(kFailed, "failed", error);
  }
  std::string ident = ferry::gw::psk_identity(bytes);
  if (json) {
    Value r;
    r["psk_file"] = absolute(file);
    r["identity"] = ident;
    std::printf("%s\n", ferry::json::write(r).c_str());
    return kOk;
  }
  std::printf(
      "wrote %s (pre-shared key, mode 0600), identity %s\n"
      "\n"
      "Give the other office a copy by a way you trust: by hand on a USB\n"
      "stick, or scp to its administrator; never by mail over the link it\n"
      "protects.  At each office the file stays mode 0600, owned by the\n"
      "user ferryd runs as, and the peer's section names it:\n"
      "  [peer NAME]\n"
      "  psk_file = %s\n"
      "Both copies show the same identity with: ferryctl keygen --show FILE\n",
      file.c_str(), ident.c_str(), absolute(file).c_str());
  return kOk;
}

// `keygen --show FILE`: a certificate's fingerprint, or a PSK's identity.
int keygen_show(const std::string& file, bool json) {
  std::string text, error;
  if (!ferry::gw::read_text_file(file, text, error)) {
    return fail(kFailed, "failed", error);
  }
  Value r;
  std::string fp = ferry::gw::cert_fingerprint(text);
  if (!fp.empty()) {
    r["fingerprint"] = fp;
    if (!json) std::printf("fingerprint = %s\n", fp.c_str());
  } else if (text.rfind("ferry-psk-v1:", 0) == 0) {
    std::string bytes;
    if (!ferry::gw::load_psk_file(file, bytes, error)) {
      return fail(kFailed, "failed", error);
    }
    r["identity"] = ferry::gw::psk_identity(bytes);
    if (!json) {
      std::printf("psk identity %s\n", r["identity"].as_string().c_str());
    }
  } else {
    return fail(kFailed, "failed",
                file + ": neither a PEM certificate nor a ferry PSK file");
  }
  if (json) std::printf("%s\n", ferry::json::write(r).c_str());
  return kOk;
}

int keygen(std::vector<std::string> w, bool json) {
  std::string name, out, psk, show;
  bool force = false;
  for (size_t i = 1; i < w.size(); ++i) {
    const std::string& a = w[i];
    auto value = [&](std::string& to) {
      if (i + 1 >= w.size() || w[i + 1].empty()) usage(a + " needs a value");
      if (!to.empty()) usage(a + " given twice");
      to = w[++i];
    };
    if (a == "--name") {
      value(name);
    } else if (a == "--out") {
      value(out);
    } else if (a == "--psk") {
      value(psk);
    } else if (a == "--show") {
      value(show);
    } else if (a == "--force") {
      force = true;
    } else {
      usage("keygen: unexpected '" + a + "'");
    }
  }
  int modes = (!name.empty() || !out.empty()) + !psk.empty() + !show.empty();
  if (modes != 1) {
    usage("keygen needs one of --name NAME --out DIR, --psk FILE, --show FILE");
  }
  if (!show.empty()) {
    if (force) usage("keygen --show writes nothing; --force makes no sense");
    return keygen_show(show, json);
  }
  if (!psk.empty()) return keygen_psk(psk, force, json);
  if (name.empty() || out.empty()) usage("keygen needs --name and --out");
  if (!good_name(name)) {
    usage("keygen --name: '" + name +
          "' is not a peer name (letters, digits, '-', '_', '.')");
  }
  return keygen_identity(name, out, force, json);
}

// ---- Command line ----------------------------------------------------

struct Options {
  Target target;
  bool json = false;
  std::vector<std::string> words;  // command and its arguments
};

// Consumes filter options from `args`, filling request arguments.
void take_filters(std::vector<std::string>& args, Value& out, bool& all) {
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) usage(a + " needs a value");
      return args[++i];
    };
    if (a == "--peer" || a == "--route") {
      out["route"] = value();
    } else if (a == "--sender" || a == "--from") {
      out["sender"] = value();
    } else if (a == "--recipient" || a == "--to") {
      out["recipient"] = value();
    } else if (a == "--older-than") {
      std::string v = value();
      int64_t secs = parse_age(v);
      if (secs < 0)
        usage("--older-than: expected an age such as 2h, got '" + v + "'");
      out["older_than"] = secs;
    } else if (a == "--all") {
      all = true;
    } else if (a.size() > 1 && a[0] == '-') {
      usage("unknown option " + a);
    } else {
      rest.push_back(a);
    }
  }
  args = rest;
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::string config;
  bool config_given = false;
  // Before anything can go wrong: see g_json.  The same rule as below
  // (--json is taken before or after the command word).
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--json") g_json = true;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    // Global options come before the command.
    if (!o.words.empty()) {
      o.words.push_back(a);
      continue;
    }
    // -c as well: ferryd's spelling, so that the habit of one works
    // with the other.
    if (a == "-C" || a == "-c" || a == "--config") {
      if (i + 1 >= argc) usage(a + " needs a file name");
      config = argv[++i];
      config_given = true;
    } else if (a == "-S" || a == "--socket") {
      if (i + 1 >= argc) usage(a + " needs a socket path");
      o.target.socket = argv[++i];
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "-h" || a == "--help") {
      if (g_json) {
        Value r;
        r["usage"] = kUsageText;
        std::printf("%s\n", ferry::json::write(r).c_str());
      } else {
        std::fputs(kUsageText, stdout);
      }
      std::exit(kOk);
    } else if (a == "--version") {
      if (g_json) {
        Value r;
        r["version"] = FERRY_VERSION;
        std::printf("%s\n", ferry::json::write(r).c_str());
      } else {
        std::printf("ferryctl %s\n", FERRY_VERSION);
      }
      std::exit(kOk);
    } else if (a.size() > 1 && a[0] == '-') {
      usage("unknown option " + a);
    } else {
      o.words.push_back(a);
    }
  }
  // --json may also follow the command.
  for (auto it = o.words.begin(); it != o.words.end();) {
    if (*it == "--json") {
      o.json = true;
      it = o.words.erase(it);
    } else {
      ++it;
    }
  }
  if (o.words.empty()) usage("no command given");
  if (o.words.front() == "keygen") return o;  // local: no socket, no config

  // Where the socket is: -S, else [ferryd] control_socket of the config.
  if (o.target.socket.empty()) {
    ferry::gw::Config cfg;
    std::string error;
    if (!config_given) config = kDefaultConfig;
    struct stat st {};
    if (config_given || ::stat(config.c_str(), &st) == 0) {
      if (!ferry::gw::load_config(config, cfg, error)) {
        std::exit(fail(kUsage, "config", error));
      }
      o.target.config = config;
    }
    o.target.socket = cfg.control_socket;
  }
  return o;
}

// Builds the request for the command words; usage() on mistakes.
Value build_request(std::vector<std::string> w, bool& wait) {
  Value req;
  Value args;
  std::string cmd = w.front();
  w.erase(w.begin());
  wait = false;

  if (cmd == "status" || cmd == "help" || cmd == "ping") {
    if (!w.empty()) usage(cmd + " takes no arguments");
    req["cmd"] = cmd;
  } else if (cmd == "queue") {
    std::string sub = "list";
    if (!w.empty() && w.front()[0] != '-') {
      sub = w.front();
      w.erase(w.begin());
    }
    bool all = false;
    take_filters(w, args, all);
    if (sub == "list") {
      if (!w.empty() || all) usage("queue list takes only filters");
      req["cmd"] = "queue.list";
    } else if (sub == "show") {
      if (w.size() != 1 || args.is_object()) usage("queue show takes one QID");
      args["id"] = w.front();
      req["cmd"] = "queue.show";
    } else if (sub == "hold" || sub == "release" || sub == "retry" ||
               sub == "delete") {
      if (all && !w.empty()) usage("give either QIDs or --all, not both");
      if (!all && w.empty()) usage("queue " + sub + " needs QIDs or --all");
      if (!all && args.is_object()) {
        usage("filters select messages only with --all");
      }
      if (all) args["all"] = true;
      if (!all) {
        Array ids(w.begin(), w.end());
        args["ids"] = Value(std::move(ids));
      }
      req["cmd"] = "queue." + sub;
    } else {
      usage("unknown queue command '" + sub + "'");
    }
  } else if (cmd == "calls") {
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] == "--limit" && i + 1 < w.size()) {
        char* end = nullptr;
        long n = std::strtol(w[i + 1].c_str(), &end, 10);
        if (*end != '\0' || n < 0) usage("--limit: expected a number");
        args["limit"] = n;
        ++i;
      } else {
        usage("calls: unexpected '" + w[i] + "'");
      }
    }
    req["cmd"] = "calls";
  } else if (cmd == "dial" || cmd == "why") {
    std::vector<std::string> peers;
    for (const auto& a : w) {
      if (cmd == "dial" && a == "--wait") {
        wait = true;
      } else if (a[0] == '-') {
        usage("unknown option " + a);
      } else {
        peers.push_back(a);
      }
    }
    if (peers.size() != 1) usage(cmd + " needs one PEER");
    args["peer"] = peers.front();
    if (cmd == "dial") args["wait"] = wait;
    req["cmd"] = cmd;
  } else {
    usage("unknown command '" + cmd + "'");
  }
  if (args.is_object()) req["args"] = std::move(args);
  return req;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse_args(argc, argv);
  if (o.words.front() == "keygen") return keygen(o.words, o.json);
  bool wait = false;
  Value req = build_request(o.words, wait);
  const std::string cmd = req["cmd"].as_string();

  Client c;
  if (int rc = c.connect(o.target)) return rc;
  // A refused client may find the connection closed before its request
  // went out; ferryd's one-line answer (permission) is still there.
  std::string send_error;
  if (!c.send(req)) send_error = std::strerror(errno);

  // Progress lines (dial --wait), then the one final reply.  A call may
  // take as long as it takes; anything else answers within a minute.
  bool tty = ::isatty(1) == 1;
  bool progress_open = false;  // a \r line waiting for its newline
  std::string line;
  for (;;) {
    if (!c.read_line(line, wait && send_error.empty() ? -1 : 60000)) {
      if (progress_open) std::printf("\n");
      if (!send_error.empty()) {
        return fail(kFailed, "connection",
                    "control socket " + o.target.socket + ": " + send_error);
      }
      return fail(kFailed, "connection",
                  "ferryd closed the control connection without an answer");
    }
    Value v;
    std::string perr;
    if (!ferry::json::parse(line, v, perr) || !v.is_object()) {
      return fail(kFailed, "connection",
                  "unreadable reply from ferryd (" + perr + ")");
    }
    if (v.has("progress")) {
      if (o.json) {
        std::printf("%s\n", ferry::json::write(v["progress"]).c_str());
      } else if (tty) {
        std::printf("\r\033[K%s", render_progress(v["progress"]).c_str());
        progress_open = true;
      } else {
        std::printf("%s\n", render_progress(v["progress"]).c_str());
      }
      std::fflush(stdout);
      continue;
    }
    if (progress_open) std::printf("\n");
    if (!v["ok"].as_bool()) {
      const std::string code = v["error"]["code"].as_string();
      std::string msg = v["error"]["message"].as_string();
      if (code == "permission") {
        msg += "; " + Client::group_hint(o.target.socket);
      }
      err(msg);
      if (o.json) std::printf("%s\n", ferry::json::write(v["error"]).c_str());
      return exit_for(code);
    }
    const Value& r = v["result"];
    if (o.json) {
      std::printf("%s\n", ferry::json::write(r).c_str());
      // A call's outcome is in the exit status with --json too.
      std::string outcome = cmd == "dial" ? r["outcome"].as_string() : "";
      if (!outcome.empty() && outcome != "ok") return exit_for(outcome);
    } else if (cmd == "status") {
      print_status(r);
    } else if (cmd == "queue.list") {
      print_queue(r);
    } else if (cmd == "queue.show") {
      print_message(r);
    } else if (cmd.rfind("queue.", 0) == 0) {
      print_action(r);
    } else if (cmd == "calls") {
      print_calls(r);
    } else if (cmd == "why") {
      std::printf("%s\n", r["text"].as_string().c_str());
    } else if (cmd == "help") {
      for (const auto& [name, text] : r.as_object()) {
        std::printf("  %-14s %s\n", name.c_str(), text.as_string().c_str());
      }
    } else if (cmd == "dial") {
      // The final reply of a call: an outcome other than "ok" is a
      // failure the script should see in the exit status.
      std::string outcome = r["outcome"].as_string();
      std::printf("%s\n", r["text"].as_string().empty()
                              ? ("call " + outcome).c_str()
                              : r["text"].as_string().c_str());
      if (!outcome.empty() && outcome != "ok") return exit_for(outcome);
    } else {
      std::printf("%s\n", ferry::json::write(r).c_str());
    }
    return kOk;
  }
}
