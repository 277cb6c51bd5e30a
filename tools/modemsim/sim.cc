#include "tools/modemsim/sim.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <sstream>

namespace ferry::modemsim {
namespace {

constexpr size_t kPendingLimit = 4096;  // line buffer before we stop reading
constexpr size_t kSinkLimit = 8192;     // far-end buffer before we pause
constexpr double kRingPeriod = 6.0;     // HAYES §8: 2 s on, 4 s off
constexpr double kBusyDetect = 1.5;     // two busy cadences
constexpr double kToneDetect = 0.5;     // dial tone heard, fast dial

void Log(const std::string& id, const std::string& what) {
  std::cerr << id << ": " << what << "\n";
}

std::string Errno(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

void SetNonBlock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

bool ParseLoopback(const std::string& hostport, sockaddr_storage* ss,
                   socklen_t* len) {
  // Literal loopback addresses only: the simulator never dials out of the
  // machine (see BUGS).  Forms: 127.x.y.z:PORT, [::1]:PORT.
  std::string host, port;
  if (!hostport.empty() && hostport[0] == '[') {
    auto close = hostport.find(']');
    if (close == std::string::npos || close + 1 >= hostport.size() ||
        hostport[close + 1] != ':') {
      return false;
    }
    host = hostport.substr(1, close - 1);
    port = hostport.substr(close + 2);
  } else {
    auto colon = hostport.rfind(':');
    if (colon == std::string::npos) return false;
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  char* end = nullptr;
  long pn = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || pn <= 0 || pn > 65535) return false;
  std::memset(ss, 0, sizeof *ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) return false;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(pn));
    *len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return false;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(pn));
    *len = sizeof *v6;
    return true;
  }
  return false;
}

}  // namespace

bool CheckRoute(const std::string& target, std::string* why) {
  if (target.rfind("tcp:", 0) == 0) {
    sockaddr_storage ss;
    socklen_t len;
    if (ParseLoopback(target.substr(4), &ss, &len)) return true;
    *why = "need tcp:LOOPBACK-ADDRESS:PORT";
    return false;
  }
  if (target.rfind("exec:", 0) == 0 && target.size() > 5) return true;
  *why = "need tcp: or exec:";
  return false;
}

namespace {

int ListenUnix(const std::string& path, std::string* err) {
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) {
    *err = path + ": socket path too long";
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *err = Errno("socket");
    return -1;
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    unlink(path.c_str());  // a leftover of a killed run
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0 ||
      listen(fd, 8) < 0) {
    *err = path + ": " + std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// Writes as much of buf as fd takes; returns false when fd is broken.
bool WriteSome(int fd, std::string& buf) {
  while (!buf.empty()) {
    ssize_t n = write(fd, buf.data(), buf.size());
    if (n > 0) {
      buf.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
  return true;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

// ---------------------------------------------------------------------------
// Ports and calls

struct Port {
  std::string name, number;
  int rate = 33600;
  bool ec = true;
  std::unique_ptr<Modem> modem;
  Faults faults;
  std::string init;
  std::string last_command;  // for the transcript of the call it starts

  int master = -1, slave = -1;
  std::string pts, link;
  int wd = -1;
  int opens = 0;           // opens by others, from inotify
  int stale_closes = 0;    // closes still due from before a hang-up
  bool inferred_dtr = false;
  bool b0 = false, clocal = true, hupcl = true;
  std::string out;         // for the DTE, not yet written

  std::string ctl_path;
  int ctl_listen = -1;
  std::vector<std::pair<int, std::string>> ctl_clients;
  bool ctl_dtr = true;
  std::string last_lines;
  bool prev_dcd = false;

  bool hangup_pending = false;
  TimePoint hangup_earliest{};  // the tty needs a moment to queue our text
  TimePoint hangup_limit{};

  Call* call = nullptr;

  // Failed calls per number, for DELAYED and BLACKLISTED.
  struct History {
    int failures = 0;
    TimePoint last_failure{};
  };
  std::map<std::string, History> history;
};

enum class Phase { kDialing, kRinging, kTraining, kOnline, kFailing, kDone };

struct Endpoint {
  Port* port = nullptr;  // another emulated modem, or
  int fd = -1;           // a TCP socket / the command's socketpair end
  pid_t pid = -1;
  std::string out;       // for fd, not yet written
  std::string kind;      // "modem", "tcp", "exec"
  std::string target;
};

struct Direction {
  std::string pending;   // accepted from the source, not yet on the line
  TimePoint next_tx{};
  std::deque<std::pair<TimePoint, std::string>> flight;
  uint64_t bytes = 0;
  uint64_t errors = 0;   // bits flipped
};

struct Call {
  int id = 0;
  Port* caller = nullptr;
  Endpoint far;
  DialRequest req;
  Faults f;              // caller's and callee's faults together
  Phase phase = Phase::kDialing;
  TimePoint started{}, dial_end{}, s7_deadline{}, next_ring{}, train_end{};
  TimePoint connected_at{}, fail_at{};
  Result fail_result = Result::kNoCarrier;
  bool fail_blind = false;   // no dial tone, dialled blind
  bool unknown = false;
  int rings = 0;
  int answer_ring = 1;
  bool answer_requested = false;
  int rate = 33600;
  bool ec = true;
  Duration byte_time{};
  Duration latency{};
  Direction dir[2];      // 0: caller -> far end, 1: far end -> caller
  std::ofstream transcript;
  int64_t bit_countdown = -1;
};

// ---------------------------------------------------------------------------
// Faults

bool ApplyFault(Faults& f, const std::string& kind, const std::string& arg,
                std::string* err) {
  auto number = [&](double* out) {
    char* end = nullptr;
    *out = std::strtod(arg.c_str(), &end);
    if (arg.empty() || *end || !(*out >= 0)) {
      *err = "fault " + kind + " needs a number";
      return false;
    }
    return true;
  };
  double v = 0;
  if (kind == "busy") {
    f.busy = true;
  } else if (kind == "no-answer") {
    f.no_answer = true;
  } else if (kind == "no-dialtone") {
    f.no_dialtone = true;
  } else if (kind == "no-carrier") {
    f.no_carrier = true;
  } else if (kind == "mute") {
    f.mute = true;
  } else if (kind == "delayed") {
    f.delayed = true;
  } else if (kind == "blacklisted") {
    f.blacklisted = true;
  } else if (kind == "slow-answer") {
    if (!number(&v) || v < 1 || v > 255) {
      *err = "fault slow-answer needs RINGS 1-255";
      return false;
    }
    f.slow_answer_rings = static_cast<int>(v);
  } else if (kind == "drop-after-bytes") {
    if (!number(&v)) return false;
    f.drop_after_bytes = static_cast<int64_t>(v);
  } else if (kind == "drop-after-ms") {
    if (!number(&v)) return false;
    f.drop_after_ms = static_cast<int64_t>(v);
  } else if (kind == "ber") {
    if (!number(&v) || v > 0.5) {
      *err = "fault ber needs a RATE between 0 and 0.5";
      return false;
    }
    f.ber = v;
  } else {
    *err = "unknown fault " + kind;
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Configuration file

bool LoadConfig(const std::string& path, Options& opts, std::string* err) {
  std::ifstream in(path);
  if (!in) {
    *err = path + ": " + std::strerror(errno);
    return false;
  }
  std::string line, section, arg;
  int lineno = 0;
  ModemSpec* modem = nullptr;
  std::string route;
  while (std::getline(in, line)) {
    ++lineno;
    auto where = [&](const std::string& what) {
      *err = path + ":" + std::to_string(lineno) + ": " + what;
      return false;
    };
    line = Trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      if (line.back() != ']') return where("bad section header");
      std::istringstream hs(line.substr(1, line.size() - 2));
      hs >> section >> arg;
      modem = nullptr;
      route.clear();
      if (section == "modem") {
        if (arg.empty()) return where("[modem NAME] needs a name");
        // A second section for a name would silently merge two modems'
        // settings; one section per modem.
        auto it = std::find_if(opts.modems.begin(), opts.modems.end(),
                               [&](auto& m) { return m.name == arg; });
        if (it != opts.modems.end()) {
          return where("[modem " + arg + "] given twice");
        }
        opts.modems.push_back(ModemSpec{});
        opts.modems.back().name = arg;
        modem = &opts.modems.back();
      } else if (section == "route") {
        if (arg.empty()) return where("[route NUMBER] needs a number");
        route = arg;
      } else if (section != "global") {
        return where("unknown section [" + section + "]");
      }
      continue;
    }
    auto eq = line.find('=');
    if (eq == std::string::npos) return where("expected key = value");
    std::string key = Trim(line.substr(0, eq));
    std::string val = Trim(line.substr(eq + 1));
    auto num = [&](double* out) {
      char* end = nullptr;
      *out = std::strtod(val.c_str(), &end);
      return !val.empty() && !*end && *out >= 0;
    };
    double v = 0;
    if (modem) {
      if (key == "number") {
        modem->number = val;
      } else if (key == "rate") {
        if (!num(&v) || v < 300) return where("bad rate: " + val);
        modem->rate = static_cast<int>(v);
      } else if (key == "profile") {
        if (val != "ec" && val != "raw") return where("profile: ec or raw");
        modem->profile_ec = val == "ec";
      } else if (key == "init") {
        modem->init = val;
      } else if (key == "fault") {
        std::istringstream fs(val);
        std::string kind, farg;
        fs >> kind >> farg;
        std::string ferr;
        if (!ApplyFault(modem->faults, kind, farg, &ferr)) return where(ferr);
      } else {
        return where("unknown key " + key + " in [modem]");
      }
    } else if (!route.empty()) {
      if (key != "target") return where("unknown key " + key + " in [route]");
      opts.routes[route] = val;
    } else {
      if (key == "rate") {
        if (!num(&v) || v < 300) return where("bad rate: " + val);
        opts.rate = static_cast<int>(v);
      } else if (key == "latency") {
        if (!num(&v)) return where("bad latency: " + val);
        opts.latency_ms = v;
      } else if (key == "time-scale") {
        if (!num(&v) || v <= 0) return where("bad time-scale: " + val);
        opts.time_scale = v;
      } else if (key == "profile") {
        if (val != "ec" && val != "raw") return where("profile: ec or raw");
        opts.ec = val == "ec";
      } else if (key == "train-ms") {
        if (!num(&v)) return where("bad train-ms: " + val);
        opts.train_ms = v;
      } else if (key == "line-limit") {
        if (!num(&v) || v < 4 || v > 255) return where("bad line-limit");
        opts.line_limit = static_cast<int>(v);
      } else if (key == "hangup") {
        if (val != "vhangup" && val != "recreate") {
          return where("hangup: vhangup or recreate");
        }
        opts.vhangup = val == "vhangup";
      } else if (key == "delay-after" || key == "blacklist-after") {
        if (!num(&v) || v > 1000) return where("bad " + key + ": " + val);
        (key == "delay-after" ? opts.delay_after : opts.blacklist_after) =
            static_cast<int>(v);
      } else if (key == "delay-s") {
        if (!num(&v)) return where("bad delay-s: " + val);
        opts.delay_s = v;
      } else if (key == "seed") {
        if (!num(&v)) return where("bad seed");
        opts.seed = static_cast<uint64_t>(v);
      } else if (key == "control") {
        opts.control = val;
      } else if (key == "transcripts") {
        opts.transcripts = val;
      } else {
        return where("unknown key " + key);
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// Sim: setup and teardown

Sim::Sim(Options opts) : opts_(std::move(opts)), rng_(opts_.seed) {}

Sim::~Sim() {
  for (auto& c : calls_) {
    if (c->far.fd >= 0) close(c->far.fd);
  }
  // Commands we started and that still run: stop them for good.
  for (pid_t pid : children_) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  for (auto& p : ports_) {
    if (!p->link.empty()) unlink(p->link.c_str());
    if (p->ctl_listen >= 0) {
      close(p->ctl_listen);
      unlink(p->ctl_path.c_str());
    }
    for (auto& [fd, buf] : p->ctl_clients) close(fd);
    ClosePty(*p);
  }
  if (admin_fd_ >= 0) {
    close(admin_fd_);
    unlink(opts_.control.c_str());
  }
  for (auto& [fd, buf] : admin_clients_) close(fd);
  if (inotify_fd_ >= 0) close(inotify_fd_);
  for (pid_t pid : children_) waitpid(pid, nullptr, 0);
}

Duration Sim::Scaled(double seconds) const {
  return std::chrono::duration_cast<Duration>(
      std::chrono::duration<double>(seconds / opts_.time_scale));
}

bool Sim::OpenPty(Port& p, std::string* err) {
  p.master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (p.master < 0 || grantpt(p.master) < 0 || unlockpt(p.master) < 0) {
    *err = Errno("posix_openpt");
    return false;
  }
  char name[128];
  if (ptsname_r(p.master, name, sizeof name) != 0) {
    *err = Errno("ptsname");
    return false;
  }
  p.pts = name;
  // Our own slave descriptor keeps the master from seeing POLLHUP while
  // no program has the port open (HAYES §16 P6).
  p.slave = open(name, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (p.slave < 0) {
    *err = Errno(name);
    return false;
  }
  // A serial port comes up raw, 8 bits, CLOCAL and HUPCL set, like an
  // 8250 UART's defaults; programs change what they need.
  termios t{};
  tcgetattr(p.slave, &t);
  cfmakeraw(&t);
  t.c_cflag |= CLOCAL | HUPCL | CREAD;
  cfsetspeed(&t, B115200);
  tcsetattr(p.slave, TCSANOW, &t);
  p.clocal = true;
  p.hupcl = true;
  p.b0 = false;
  WatchPty(p);
  return true;
}

void Sim::WatchPty(Port& p) {
  if (p.wd >= 0) inotify_rm_watch(inotify_fd_, p.wd);
  p.wd = inotify_add_watch(inotify_fd_, p.pts.c_str(),
                           IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
  p.opens = 0;
  p.stale_closes = 0;
}

void Sim::ClosePty(Port& p) {
  if (p.wd >= 0 && inotify_fd_ >= 0) inotify_rm_watch(inotify_fd_, p.wd);
  p.wd = -1;
  if (p.slave >= 0) close(p.slave);
  if (p.master >= 0) close(p.master);
  p.slave = p.master = -1;
}

bool Sim::Start(std::string* err) {
  struct stat st;
  if (opts_.dir.empty() || stat(opts_.dir.c_str(), &st) < 0 ||
      !S_ISDIR(st.st_mode)) {
    *err = "--dir " + opts_.dir + ": not a directory";
    return false;
  }
  if (opts_.modems.empty()) {
    *err = "no --modem given";
    return false;
  }
  for (auto& [number, target] : opts_.routes) {
    std::string why;
    if (!CheckRoute(target, &why)) {
      *err = "route " + number + ": " + target + ": " + why;
      return false;
    }
  }
  if (!opts_.transcripts.empty() &&
      (stat(opts_.transcripts.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))) {
    *err = "--transcripts " + opts_.transcripts + ": not a directory";
    return false;
  }
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    *err = Errno("inotify_init1");
    return false;
  }

  for (auto& spec : opts_.modems) {
    auto p = std::make_unique<Port>();
    p->name = spec.name;
    p->number = spec.number;
    p->rate = spec.rate ? spec.rate : opts_.rate;
    p->ec = spec.profile_ec < 0 ? opts_.ec : spec.profile_ec == 1;
    p->faults = spec.faults;
    p->init = spec.init;
    p->modem = std::make_unique<Modem>(spec.name, this, opts_.line_limit);
    p->modem->set_time_scale(opts_.time_scale);
    p->modem->set_mute(p->faults.mute);
    if (!OpenPty(*p, err)) return false;
    p->link = opts_.dir + "/" + spec.name;
    struct stat lst;
    if (lstat(p->link.c_str(), &lst) == 0) {
      if (!S_ISLNK(lst.st_mode)) {
        *err = p->link + ": exists and is not a symlink";
        return false;
      }
      unlink(p->link.c_str());
    }
    if (symlink(p->pts.c_str(), p->link.c_str()) < 0) {
      *err = Errno(p->link.c_str());
      return false;
    }
    p->ctl_path = p->link + ".ctl";
    p->ctl_listen = ListenUnix(p->ctl_path, err);
    if (p->ctl_listen < 0) return false;
    Log(p->name, "event=published link=" + p->link + " pty=" + p->pts +
                     " number=" + (p->number.empty() ? "-" : p->number));
    ports_.push_back(std::move(p));
  }
  for (auto& p : ports_) {
    if (p->init.empty()) continue;
    // Run the init commands with the port still closed (output dropped).
    p->modem->Input(p->init + "\r", Clock::now());
  }
  if (!opts_.control.empty()) {
    admin_fd_ = ListenUnix(opts_.control, err);
    if (admin_fd_ < 0) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Host interface for the modems

Port* Sim::PortOf(Modem& m) {
  for (auto& p : ports_) {
    if (p->modem.get() == &m) return p.get();
  }
  return nullptr;
}

Port* Sim::PortByName(const std::string& name) {
  for (auto& p : ports_) {
    if (p->name == name) return p.get();
  }
  return nullptr;
}

void Sim::ToDte(Modem& m, std::string_view bytes) {
  Port* p = PortOf(m);
  // HAYES §16 P7: what we write while nobody has the port open would reach
  // the next program that opens it.
  if (!p || p->opens <= 0) return;
  p->out.append(bytes);
  FlushPort(*p);
}

void Sim::FlushPort(Port& p) {
  if (p.master < 0 || p.out.empty()) return;
  WriteSome(p.master, p.out);
}

void Sim::Note(Modem& m, std::string_view what) {
  Port* p = PortOf(m);
  if (!p) return;
  Log(p->name, "event=" + std::string(what.substr(0, what.find(' '))) +
                   (what.find(' ') == std::string_view::npos
                        ? ""
                        : " detail=\"" +
                              std::string(what.substr(what.find(' ') + 1)) +
                              "\""));
  if (what.rfind("command ", 0) == 0) p->last_command = what;
  if (p->call) CallNote(*p->call, p->name, what);
}

void Sim::CallNote(Call& c, const std::string& who, std::string_view what) {
  if (!c.transcript.is_open()) return;
  const double t =
      std::chrono::duration<double>(now_ - c.started).count();
  char buf[32];
  std::snprintf(buf, sizeof buf, "%10.3f ", t);
  c.transcript << buf << who << " " << what << "\n";
  c.transcript.flush();
}

void Sim::LinesChanged(Modem& m) {
  Port* p = PortOf(m);
  if (!p) return;
  const bool dcd = m.dcd();
  if (p->prev_dcd && !dcd && p->opens > 0) {
    PollTermios(*p);
    if (!p->clocal) {
      // HAYES §17 Layer 0: a DCD drop with CLOCAL clear hangs the tty up,
      // once NO CARRIER has been read.
      p->hangup_pending = true;
      p->hangup_earliest = now_ + std::chrono::milliseconds(50);
      p->hangup_limit = now_ + std::chrono::milliseconds(500);
    }
  }
  p->prev_dcd = dcd;
  SendLines(*p, false);
}

void Sim::SendLines(Port& p, bool force) {
  Modem& m = *p.modem;
  std::string lines = "LINES DCD=" + std::to_string(m.dcd()) +
                      " DSR=" + std::to_string(m.dsr()) + " CTS=1 RI=" +
                      std::to_string(m.ri()) + "\n";
  if (!force && lines == p.last_lines) return;
  p.last_lines = lines;
  for (auto& [fd, buf] : p.ctl_clients) {
    std::string copy = lines;
    WriteSome(fd, copy);
  }
}

void Sim::Dial(Modem& m, const DialRequest& req) {
  Port* p = PortOf(m);
  auto c = std::make_unique<Call>();
  Call& call = *c;
  call.id = next_call_id_++;
  call.caller = p;
  call.req = req;
  call.started = now_;
  call.f = p->faults;
  p->call = &call;
  if (!opts_.transcripts.empty()) {
    char name[64];
    std::snprintf(name, sizeof name, "/call-%04d-", call.id);
    std::string path = opts_.transcripts + name + p->name + "-" +
                       (req.number.empty() ? "none" : req.number) + ".log";
    call.transcript.open(path);
    call.transcript << "# ferry-modemsim call " << call.id << " from "
                    << p->name << " to " << req.number
                    << " time-scale=" << opts_.time_scale << "\n";
  }
  std::string id = p->name;
  Log(id, "event=dial call=" + std::to_string(call.id) +
              " number=" + (req.number.empty() ? "-" : req.number));
  CallNote(call, p->name, p->last_command);
  CallNote(call, p->name, "dial " + req.number);

  // Where the number leads.
  Port* callee = nullptr;
  for (auto& q : ports_) {
    if (!req.number.empty() && q->number == req.number) callee = q.get();
  }
  if (callee) {
    call.far.kind = "modem";
    call.far.port = callee;
    call.far.target = callee->name;
    const Faults& g = callee->faults;
    call.f.busy |= g.busy;
    call.f.no_answer |= g.no_answer;
    call.f.no_carrier |= g.no_carrier;
    call.f.slow_answer_rings =
        std::max(call.f.slow_answer_rings, g.slow_answer_rings);
    if (g.drop_after_bytes >= 0 &&
        (call.f.drop_after_bytes < 0 ||
         g.drop_after_bytes < call.f.drop_after_bytes)) {
      call.f.drop_after_bytes = g.drop_after_bytes;
    }
    if (g.drop_after_ms >= 0 &&
        (call.f.drop_after_ms < 0 || g.drop_after_ms < call.f.drop_after_ms)) {
      call.f.drop_after_ms = g.drop_after_ms;
    }
    call.f.ber = std::max(call.f.ber, g.ber);
    call.rate = std::min(p->rate, callee->rate);
    call.ec = p->ec && callee->ec;
  } else if (auto it = opts_.routes.find(req.number);
             it != opts_.routes.end()) {
    call.far.kind = it->second.substr(0, it->second.find(':'));
    call.far.target = it->second.substr(it->second.find(':') + 1);
    call.rate = p->rate;
    call.ec = p->ec;
  } else {
    call.unknown = true;
    call.rate = p->rate;
    call.ec = p->ec;
  }
  // A slow answerer lets that many ring cycles pass before picking up.
  call.answer_ring =
      call.f.slow_answer_rings > 0 ? call.f.slow_answer_rings + 1 : 1;
  const double scaled_rate = call.rate * opts_.time_scale;
  call.byte_time = std::chrono::duration_cast<Duration>(
      std::chrono::duration<double>(10.0 / scaled_rate));
  call.latency = Scaled(opts_.latency_ms / 1000.0);

  const Modem::Profile& pr = m.active();
  const bool detect_tone = pr.x == 2 || pr.x == 4 || req.wait_tone;
  const bool detect_busy = pr.x >= 3;

  // Refusals before going off-hook (blacklisting rules, CTR 21 style):
  // from the fault, or from counting failed calls to this number.
  const Port::History& h = p->history[req.number];
  if (opts_.blacklist_after > 0 && h.failures >= opts_.blacklist_after) {
    call.f.blacklisted = true;
  } else if (opts_.delay_after > 0 && h.failures >= opts_.delay_after &&
             now_ < h.last_failure + Scaled(opts_.delay_s)) {
    call.f.delayed = true;
  }
  if (call.f.blacklisted || call.f.delayed) {
    FailCall(call, call.f.blacklisted ? Result::kBlacklisted
                                      : Result::kDelayed,
             now_);
    calls_.push_back(std::move(c));
    return;
  }
  // Dial tone, then the digits.
  double tone = detect_tone ? kToneDetect : pr.s[6];
  if (call.f.no_dialtone && detect_tone) {
    FailCall(call, Result::kNoDialtone, now_ + Scaled(pr.s[6]));
    calls_.push_back(std::move(c));
    return;
  }
  call.fail_blind = call.f.no_dialtone;
  const double digits = req.number.size() * 2 * pr.s[11] / 1000.0;
  call.dial_end = now_ + Scaled(tone + digits + req.pauses * pr.s[8]);
  call.s7_deadline = call.dial_end + Scaled(pr.s[7]);
  call.phase = Phase::kDialing;
  (void)detect_busy;
  calls_.push_back(std::move(c));
}

void Sim::FailCall(Call& c, Result r, TimePoint at) {
  c.phase = Phase::kFailing;
  c.fail_result = r;
  c.fail_at = at;
}

void Sim::Answer(Modem& m) {
  Port* p = PortOf(m);
  Call* c = p->call;
  if (!c || c->far.port != p || c->phase != Phase::kRinging) return;
  c->answer_requested = true;
  CallNote(*c, p->name, "answer requested");
  if (c->rings >= c->answer_ring) StartTraining(*c);
}

void Sim::StartTraining(Call& c) {
  c.phase = Phase::kTraining;
  c.train_end = now_ + Scaled(opts_.train_ms / 1000.0);
  CallNote(c, "line", "answered; training");
}

void Sim::Hangup(Modem& m) {
  Port* p = PortOf(m);
  Call* c = p->call;
  if (!c) return;
  const bool is_caller = c->caller == p;
  CallNote(*c, p->name, "on-hook");
  EndCall(*c, is_caller ? "caller hung up" : "callee hung up", !is_caller,
          is_caller);
}

void Sim::ToLine(Modem& m, std::string_view bytes) {
  Port* p = PortOf(m);
  Call* c = p->call;
  if (!c || c->phase != Phase::kOnline) return;
  c->dir[c->caller == p ? 0 : 1].pending.append(bytes);
}

// ---------------------------------------------------------------------------
// Calls

bool Sim::AnswerFarEnd(Call& c) {
  // A TCP service or a command answers: connect or start it.
  if (c.far.kind == "tcp") {
    sockaddr_storage ss;
    socklen_t len;
    if (!ParseLoopback(c.far.target, &ss, &len)) return false;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) < 0) {
      CallNote(c, "line", Errno("connect"));
      close(fd);
      return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SetNonBlock(fd);
    c.far.fd = fd;
    return true;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    return false;
  }
  pid_t pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return false;
  }
  if (pid == 0) {
    setpgid(0, 0);
    dup2(sv[1], 0);
    dup2(sv[1], 1);
    signal(SIGPIPE, SIG_DFL);
    execl("/bin/sh", "sh", "-c", c.far.target.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(sv[1]);
  SetNonBlock(sv[0]);
  c.far.fd = sv[0];
  c.far.pid = pid;
  children_.push_back(pid);
  Log(c.caller->name, "event=exec call=" + std::to_string(c.id) +
                          " pid=" + std::to_string(pid));
  return true;
}

void Sim::ConnectCall(Call& c) {
  c.phase = Phase::kOnline;
  c.connected_at = now_;
  c.caller->history.erase(c.req.number);
  c.dir[0].next_tx = c.dir[1].next_tx = now_;
  CallInfo info{c.rate, c.ec};
  Log(c.caller->name, "event=connect call=" + std::to_string(c.id) +
                          " rate=" + std::to_string(c.rate) +
                          " protocol=" + (c.ec ? "LAPM" : "NONE"));
  CallNote(c, "line", "connect rate=" + std::to_string(c.rate) +
                          (c.ec ? " protocol=LAP-M" : " protocol=NONE"));
  c.caller->modem->OnConnect(info, now_);
  if (c.far.port) c.far.port->modem->OnConnect(info, now_);
}

void Sim::EndCall(Call& c, const std::string& reason, bool notify_caller,
                  bool notify_callee) {
  if (c.phase == Phase::kDone) return;
  const Phase was = c.phase;
  c.phase = Phase::kDone;
  const double secs =
      std::chrono::duration<double>(now_ - c.started).count();
  std::string summary = "end reason=\"" + reason + "\" bytes_out=" +
                        std::to_string(c.dir[0].bytes) +
                        " bytes_in=" + std::to_string(c.dir[1].bytes) +
                        " bit_errors=" +
                        std::to_string(c.dir[0].errors + c.dir[1].errors) +
                        " seconds=" + std::to_string(secs);
  Log(c.caller->name, "event=hangup call=" + std::to_string(c.id) + " " +
                          summary.substr(4));
  CallNote(c, "line", summary);
  Port* callee = c.far.port;
  const bool attached = callee && callee->call == &c;
  if (c.caller->call == &c) c.caller->call = nullptr;
  if (attached) callee->call = nullptr;
  if (notify_caller) c.caller->modem->OnCarrierLost(now_);
  if (attached && notify_callee) {
    if (callee->modem->state() == State::kCommand) {
      callee->modem->OnRingingStopped();
    } else {
      callee->modem->OnCarrierLost(now_);
    }
  }
  (void)was;
  if (c.far.fd >= 0) {
    close(c.far.fd);
    c.far.fd = -1;
  }
  if (c.far.pid > 0) {
    kill(-c.far.pid, SIGHUP);  // the command's own process group
    kill(c.far.pid, SIGHUP);
    c.far.pid = -1;
  }
}

void Sim::CallTick(Call& c) {
  auto due = [this](TimePoint t) { return now_ >= t; };
  Modem& caller = *c.caller->modem;
  const Modem::Profile& pr = caller.active();

  switch (c.phase) {
    case Phase::kDialing: {
      if (!due(c.dial_end)) break;
      CallNote(c, "line", "dialled");
      Port* callee = c.far.port;
      const bool busy = c.f.busy ||
                        (callee && (callee == c.caller || !callee->modem->Idle()
                                    || callee->call != nullptr));
      if (c.fail_blind || c.unknown || c.req.number.empty()) {
        // Blind dial into a dead line, a number that leads nowhere (the
        // network's announcement is no carrier) or no number at all.
        FailCall(c, Result::kNoCarrier, c.s7_deadline);
      } else if (busy) {
        if (pr.x >= 3) FailCall(c, Result::kBusy, now_ + Scaled(kBusyDetect));
        else FailCall(c, Result::kNoCarrier, c.s7_deadline);
      } else {
        c.phase = Phase::kRinging;
        c.next_ring = now_;
        if (callee && !c.f.no_answer) callee->call = &c;
      }
      break;
    }
    case Phase::kRinging: {
      if (due(c.s7_deadline)) {
        const bool rockwell_no_answer = c.req.quiet_answer;
        CallNote(c, "line", "no answer within S7");
        FailCall(c, rockwell_no_answer ? Result::kNoAnswer
                                       : Result::kNoCarrier,
                 now_);
        break;
      }
      if (!due(c.next_ring)) break;
      ++c.rings;
      c.next_ring += Scaled(kRingPeriod);
      CallNote(c, "line", "ring " + std::to_string(c.rings));
      if (c.f.no_answer) break;
      if (c.far.port) {
        if (c.answer_requested && c.rings >= c.answer_ring) {
          StartTraining(c);  // a slow answerer picks up at last
          break;
        }
        c.far.port->modem->OnRing(now_);  // may answer at once (S0)
        if (c.phase == Phase::kRinging && c.answer_requested &&
            c.rings >= c.answer_ring) {
          StartTraining(c);
        }
      } else if (c.rings >= c.answer_ring) {
        if (!AnswerFarEnd(c)) {
          FailCall(c, Result::kNoCarrier, now_);
          break;
        }
        StartTraining(c);
      }
      break;
    }
    case Phase::kTraining:
      if (c.f.no_carrier) {
        if (due(c.s7_deadline)) {
          CallNote(c, "line", "no carrier from the far end");
          FailCall(c, Result::kNoCarrier, now_);
        }
        break;
      }
      if (due(c.s7_deadline) && c.train_end > c.s7_deadline) {
        FailCall(c, Result::kNoCarrier, now_);
        break;
      }
      if (due(c.train_end)) ConnectCall(c);
      break;
    case Phase::kOnline:
      if (c.f.drop_after_ms >= 0 &&
          due(c.connected_at + Scaled(c.f.drop_after_ms / 1000.0))) {
        EndCall(c, "fault drop-after-ms", true, true);
        break;
      }
      Pump(c);
      break;
    case Phase::kFailing:
      if (!due(c.fail_at)) break;
      {
        const Result r = c.fail_result;
        if (r != Result::kDelayed && r != Result::kBlacklisted) {
          Port::History& h = c.caller->history[c.req.number];
          ++h.failures;
          h.last_failure = now_;
        }
        CallNote(c, c.caller->name, std::string("result ") + ResultText(r));
        EndCall(c, std::string("failed: ") + ResultText(r), false, true);
        if (caller.state() == State::kDialing) caller.OnDialResult(r);
      }
      break;
    case Phase::kDone:
      break;
  }
}

void Sim::Pump(Call& c) {
  for (int d = 0; d < 2 && c.phase == Phase::kOnline; ++d) {
    Direction& D = c.dir[d];

    // Bytes whose latency has passed reach the far side.
    while (!D.flight.empty() && D.flight.front().first <= now_) {
      std::string chunk = std::move(D.flight.front().second);
      D.flight.pop_front();
      Deliver(c, d, std::move(chunk));
      if (c.phase != Phase::kOnline) return;
    }

    // Is the receiving side keeping up?
    if (D.pending.empty() || SinkBacklog(c, d) > kSinkLimit) {
      if (D.next_tx < now_) D.next_tx = now_;
      continue;
    }

    // One byte per 10 bit times; catch up after a late wake-up.
    size_t n = 0;
    while (n < D.pending.size() && D.next_tx <= now_) {
      ++n;
      D.next_tx += c.byte_time;
    }
    if (n == 0) continue;
    std::string chunk = D.pending.substr(0, n);
    D.pending.erase(0, n);

    // Bit errors on a line without error correction.
    if (!c.ec && c.f.ber > 0) {
      for (size_t bit = 0; bit < chunk.size() * 8;) {
        if (c.bit_countdown < 0) {
          std::geometric_distribution<int64_t> g(c.f.ber);
          c.bit_countdown = g(rng_);
        }
        const int64_t left = static_cast<int64_t>(chunk.size() * 8 - bit);
        if (c.bit_countdown >= left) {
          c.bit_countdown -= left;
          break;
        }
        bit += static_cast<size_t>(c.bit_countdown);
        chunk[bit / 8] = static_cast<char>(chunk[bit / 8] ^ (1 << (bit % 8)));
        ++D.errors;
        ++bit;
        c.bit_countdown = -1;
      }
    }
    if (c.latency.count() > 0) {
      D.flight.emplace_back(now_ + c.latency, std::move(chunk));
    } else {
      Deliver(c, d, std::move(chunk));
    }
  }
}

void Sim::Deliver(Call& c, int d, std::string chunk) {
  bool drop = false;
  if (c.f.drop_after_bytes >= 0) {
    const uint64_t limit = static_cast<uint64_t>(c.f.drop_after_bytes);
    const uint64_t total = c.dir[0].bytes + c.dir[1].bytes;
    if (total + chunk.size() >= limit) {
      chunk.resize(limit > total ? limit - total : 0);
      drop = true;
    }
  }
  c.dir[d].bytes += chunk.size();
  if (!chunk.empty()) {
    if (d == 1) {
      c.caller->modem->OnRemoteData(chunk);
    } else if (c.far.port) {
      c.far.port->modem->OnRemoteData(chunk);
    } else {
      c.far.out += chunk;
      FlushEndpoint(c);
    }
  }
  if (drop) EndCall(c, "fault drop-after-bytes", true, true);
}

size_t Sim::SinkBacklog(const Call& c, int d) const {
  if (d == 1) return c.caller->out.size();
  return c.far.port ? c.far.port->out.size() : c.far.out.size();
}

void Sim::FlushEndpoint(Call& c) {
  if (c.far.fd < 0 || c.far.out.empty()) return;
  if (!WriteSome(c.far.fd, c.far.out)) {
    c.far.out.clear();
    EndCall(c, c.far.kind + " far end closed", true, false);
  }
}

TimePoint Sim::CallDeadline(const Call& c) const {
  switch (c.phase) {
    case Phase::kDialing: return c.dial_end;
    case Phase::kRinging: return std::min(c.next_ring, c.s7_deadline);
    case Phase::kTraining: return std::min(c.train_end, c.s7_deadline);
    case Phase::kFailing: return c.fail_at;
    case Phase::kOnline: {
      TimePoint t = TimePoint::max();
      for (int d = 0; d < 2; ++d) {
        const Direction& D = c.dir[d];
        // A backed-up receiver wakes us through POLLOUT instead.
        if (!D.pending.empty() && SinkBacklog(c, d) <= kSinkLimit) {
          t = std::min(t, D.next_tx);
        }
        if (!D.flight.empty()) t = std::min(t, D.flight.front().first);
      }
      if (c.f.drop_after_ms >= 0) {
        t = std::min(t, c.connected_at + Scaled(c.f.drop_after_ms / 1000.0));
      }
      return t;
    }
    case Phase::kDone: return TimePoint::max();
  }
  return TimePoint::max();
}

// ---------------------------------------------------------------------------
// The PTY side: opens, closes, termios, hang-up

void Sim::ReadInotify() {
  alignas(inotify_event) char buf[4096];
  for (;;) {
    ssize_t n = read(inotify_fd_, buf, sizeof buf);
    if (n <= 0) return;
    for (char* q = buf; q < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(q);
      q += sizeof(inotify_event) + ev->len;
      for (auto& pp : ports_) {
        Port& p = *pp;
        if (p.wd != ev->wd) continue;
        if (ev->mask & IN_OPEN) {
          if (p.opens++ == 0) {
            // A new program: nothing stale for it (HAYES §16 P7).
            tcflush(p.slave, TCIFLUSH);
            p.out.clear();
            p.inferred_dtr = true;
            PollTermios(p);
            Log(p.name, "event=port-open");
          }
        }
        if (ev->mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)) {
          if (p.stale_closes > 0) {
            // A descriptor that was open before a hang-up goes away.
            --p.stale_closes;
          } else if (p.opens > 0 && --p.opens == 0) {
            // Real serial drivers drop DTR on the last close with HUPCL.
            if (p.hupcl) p.inferred_dtr = false;
            p.out.clear();
            Log(p.name, "event=port-close");
          }
        }
        UpdateDtr(p);
      }
    }
  }
}

void Sim::PollTermios(Port& p) {
  termios t{};
  if (p.master < 0 || tcgetattr(p.master, &t) < 0) return;
  p.clocal = t.c_cflag & CLOCAL;
  p.hupcl = t.c_cflag & HUPCL;
  p.b0 = cfgetospeed(&t) == B0;
  UpdateDtr(p);
}

void Sim::UpdateDtr(Port& p) {
  const bool dtr =
      p.ctl_clients.empty() ? (p.inferred_dtr && !p.b0) : p.ctl_dtr;
  if (dtr != p.modem->dtr()) p.modem->OnDtr(dtr, now_);
}

void Sim::HangupPty(Port& p) {
  p.hangup_pending = false;
  Log(p.name, "event=tty-hangup clocal=0");
  if (opts_.vhangup && ioctl(p.slave, TIOCVHANGUP) == 0) {
    // Every open of the slave is dead now, ours too: reopen it.
    close(p.slave);
    p.slave = open(p.pts.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    // The programs' dead descriptors close later; those closes must not
    // count against whoever opens the port next.
    const int stale = p.opens;
    WatchPty(p);
    p.stale_closes = stale;
  } else {
    // Unprivileged: a new PTY behind the same symlink (HAYES §16 P11).
    ClosePty(p);
    std::string err;
    if (!OpenPty(p, &err)) {
      Log(p.name, "event=error detail=\"" + err + "\"");
      return;
    }
    std::string tmp = p.link + ".new";
    unlink(tmp.c_str());
    if (symlink(p.pts.c_str(), tmp.c_str()) < 0 ||
        rename(tmp.c_str(), p.link.c_str()) < 0) {
      Log(p.name, "event=error detail=\"" + Errno("symlink") + "\"");
    }
  }
  p.out.clear();
  p.inferred_dtr = false;
  UpdateDtr(p);
}

// ---------------------------------------------------------------------------
// Control sockets

void Sim::ControlLine(Port& p, int fd, const std::string& line) {
  (void)fd;
  std::istringstream ls(line);
  std::string cmd, arg;
  ls >> cmd >> arg;
  if (cmd == "DTR" && (arg == "0" || arg == "1")) {
    p.ctl_dtr = arg == "1";
    UpdateDtr(p);
  } else if (cmd == "RTS" || cmd == "BREAK") {
    // RTS: flow control is not emulated; BREAK reaches nothing on a PTY.
  } else {
    Log(p.name, "event=control-error line=\"" + line + "\"");
  }
}

std::string Sim::Status() {
  std::string s = "ok calls=";
  int live = 0;
  for (auto& c : calls_) live += c->phase != Phase::kDone;
  s += std::to_string(live);
  for (auto& p : ports_) {
    s += " " + p->name + "=" + StateName(p->modem->state());
  }
  for (auto& c : calls_) {
    if (c->phase == Phase::kDone) continue;
    static const char* names[] = {"dialing", "ringing", "training",
                                  "online", "failing", "done"};
    s += " call" + std::to_string(c->id) + "=" + c->caller->name + ">" +
         (c->req.number.empty() ? "-" : c->req.number) + ":" +
         names[static_cast<int>(c->phase)] +
         ":out=" + std::to_string(c->dir[0].bytes) +
         ":in=" + std::to_string(c->dir[1].bytes);
  }
  return s;
}

std::string Sim::AdminCommand(const std::string& line) {
  std::istringstream ls(line);
  std::string cmd, name, kind, arg;
  ls >> cmd >> name >> kind >> arg;
  if (cmd == "status") return Status();
  if (cmd != "fault" && cmd != "clear") return "error unknown command";
  Port* p = PortByName(name);
  if (!p) return "error no modem " + name;
  if (cmd == "clear") {
    p->faults = Faults{};
    p->history.clear();
    p->modem->set_mute(false);
    Log(p->name, "event=fault-clear");
    return "ok cleared " + name;
  }
  std::string err;
  if (!ApplyFault(p->faults, kind, arg, &err)) return "error " + err;
  p->modem->set_mute(p->faults.mute);
  // Faults that act on a call in progress.
  if (p->call) {
    Call& c = *p->call;
    Faults& f = c.f;
    if (kind == "drop-after-bytes") {
      f.drop_after_bytes = static_cast<int64_t>(c.dir[0].bytes +
                                                c.dir[1].bytes) +
                           p->faults.drop_after_bytes;
    } else if (kind == "drop-after-ms") {
      f.drop_after_ms =
          p->faults.drop_after_ms +
          (c.phase == Phase::kOnline
               ? std::chrono::duration_cast<std::chrono::milliseconds>(
                     (now_ - c.connected_at) * opts_.time_scale)
                     .count()
               : 0);
    } else if (kind == "ber") {
      f.ber = p->faults.ber;
    }
  }
  Log(p->name, "event=fault kind=" + kind + (arg.empty() ? "" : " arg=" + arg));
  return "ok fault " + name + " " + kind + (arg.empty() ? "" : " " + arg);
}

// ---------------------------------------------------------------------------
// The loop

int Sim::Run(int signal_fd) {
  std::cout << "ready" << std::endl;
  std::vector<pollfd> fds;
  std::vector<std::function<void(short)>> handlers;
  auto add = [&](int fd, short events, std::function<void(short)> h) {
    fds.push_back(pollfd{fd, events, 0});
    handlers.push_back(std::move(h));
  };
  bool stop = false;
  now_ = Clock::now();

  while (!stop) {
    fds.clear();
    handlers.clear();
    add(signal_fd, POLLIN, [&](short) { stop = true; });
    add(inotify_fd_, POLLIN, [&](short) { ReadInotify(); });

    for (auto& pp : ports_) {
      Port* p = pp.get();
      // Read the DTE unless the line is backed up (flow control).
      bool want_read = true;
      if (p->call && p->modem->state() == State::kOnline) {
        Call& c = *p->call;
        want_read = c.dir[c.caller == p ? 0 : 1].pending.size() <
                    kPendingLimit;
      }
      short ev = (want_read ? POLLIN : 0) | (p->out.empty() ? 0 : POLLOUT);
      add(p->master, ev, [this, p](short re) {
        if (re & POLLOUT) FlushPort(*p);
        if (!(re & (POLLIN | POLLHUP | POLLERR))) return;
        char buf[4096];
        ssize_t n = read(p->master, buf, sizeof buf);
        if (n > 0) p->modem->Input(std::string_view(buf, n), now_);
      });
      add(p->ctl_listen, POLLIN, [this, p](short) {
        int fd = accept4(p->ctl_listen, nullptr, nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        if (p->ctl_clients.empty()) {
          p->ctl_dtr = p->inferred_dtr && !p->b0;
        }
        p->ctl_clients.emplace_back(fd, "");
        SendLines(*p, true);
      });
      for (auto& [cfd, cbuf] : p->ctl_clients) {
        int fd = cfd;
        add(fd, POLLIN, [this, p, fd](short) {
          char buf[512];
          ssize_t n = read(fd, buf, sizeof buf);
          auto it = std::find_if(p->ctl_clients.begin(),
                                 p->ctl_clients.end(),
                                 [fd](auto& e) { return e.first == fd; });
          if (it == p->ctl_clients.end()) return;
          if (n <= 0) {
            close(fd);
            p->ctl_clients.erase(it);
            UpdateDtr(*p);
            return;
          }
          it->second.append(buf, n);
          size_t nl;
          while ((nl = it->second.find('\n')) != std::string::npos) {
            std::string line = Trim(it->second.substr(0, nl));
            it->second.erase(0, nl + 1);
            if (!line.empty()) ControlLine(*p, fd, line);
          }
        });
      }
    }
    if (admin_fd_ >= 0) {
      add(admin_fd_, POLLIN, [this](short) {
        int fd = accept4(admin_fd_, nullptr, nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) admin_clients_.emplace_back(fd, "");
      });
      for (auto& [afd, abuf] : admin_clients_) {
        int fd = afd;
        add(fd, POLLIN, [this, fd](short) {
          char buf[512];
          ssize_t n = read(fd, buf, sizeof buf);
          auto it = std::find_if(admin_clients_.begin(),
                                 admin_clients_.end(),
                                 [fd](auto& e) { return e.first == fd; });
          if (it == admin_clients_.end()) return;
          if (n <= 0) {
            close(fd);
            admin_clients_.erase(it);
            return;
          }
          it->second.append(buf, n);
          size_t nl;
          while ((nl = it->second.find('\n')) != std::string::npos) {
            std::string line = Trim(it->second.substr(0, nl));
            it->second.erase(0, nl + 1);
            if (line.empty()) continue;
            std::string reply = AdminCommand(line) + "\n";
            WriteSome(fd, reply);
          }
        });
      }
    }
    for (auto& cc : calls_) {
      Call* c = cc.get();
      if (c->far.fd < 0 || c->phase == Phase::kDone) continue;
      short ev = (c->dir[1].pending.size() < kPendingLimit ? POLLIN : 0) |
                 (c->far.out.empty() ? 0 : POLLOUT);
      add(c->far.fd, ev, [this, c](short re) {
        if (re & POLLOUT) FlushEndpoint(*c);
        if (c->far.fd < 0 || !(re & (POLLIN | POLLHUP | POLLERR))) return;
        char buf[4096];
        ssize_t n = read(c->far.fd, buf, sizeof buf);
        if (n > 0) {
          // A TCP service or command starts talking as soon as it is
          // reached (an SMTP greeting); on a real line its host would
          // wait for the carrier, so its bytes wait here until online.
          if (c->phase != Phase::kFailing) {
            c->dir[1].pending.append(buf, n);
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          // The far end hung up: like carrier loss for our caller.
          EndCall(*c, c->far.kind + " far end closed", true, false);
        }
      });
    }

    // Sleep until the next deadline; poll termios at least every 20 ms.
    TimePoint next = now_ + std::chrono::milliseconds(20);
    for (auto& p : ports_) {
      next = std::min(next, p->modem->NextDeadline());
      if (p->hangup_pending) next = now_ + std::chrono::milliseconds(2);
    }
    for (auto& c : calls_) next = std::min(next, CallDeadline(*c));
    auto wait = next - Clock::now();
    if (wait < Duration::zero()) wait = Duration::zero();
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait);
    timespec ts{static_cast<time_t>(ns.count() / 1000000000),
                static_cast<long>(ns.count() % 1000000000)};
    int r = ppoll(fds.data(), fds.size(), &ts, nullptr);
    now_ = Clock::now();
    if (r < 0 && errno != EINTR) {
      Log("modemsim", Errno("event=fatal ppoll"));
      return 1;
    }
    // Opens first, so that data from a new program finds the port open.
    ReadInotify();
    if (r > 0) {
      // Handlers may add or remove descriptors: run over a snapshot.
      auto snapshot_fds = fds;
      auto snapshot_handlers = handlers;
      for (size_t i = 0; i < snapshot_fds.size(); ++i) {
        if (snapshot_fds[i].revents) {
          snapshot_handlers[i](snapshot_fds[i].revents);
        }
      }
    }

    // A test that died without stopping us usually removes its temporary
    // directory: nothing can reach our ports any more, so leave.
    if (now_ >= next_dir_check_) {
      next_dir_check_ = now_ + std::chrono::seconds(1);
      struct stat st;
      if (stat(opts_.dir.c_str(), &st) < 0 && errno == ENOENT) {
        Log("modemsim", "event=stop reason=\"--dir removed\"");
        return 0;
      }
    }

    // Timers.
    if (now_ >= next_termios_poll_) {
      next_termios_poll_ = now_ + std::chrono::milliseconds(20);
      for (auto& p : ports_) PollTermios(*p);
    }
    for (auto& p : ports_) p->modem->Tick(now_);
    for (size_t i = 0; i < calls_.size(); ++i) CallTick(*calls_[i]);
    for (auto& pp : ports_) {
      Port& p = *pp;
      FlushPort(p);
      if (!p.hangup_pending) continue;
      int unread = 0;
      ioctl(p.slave, FIONREAD, &unread);
      if ((now_ >= p.hangup_earliest && p.out.empty() && unread == 0) ||
          now_ >= p.hangup_limit) {
        HangupPty(p);
      }
    }
    calls_.erase(std::remove_if(calls_.begin(), calls_.end(),
                                [](auto& c) {
                                  return c->phase == Phase::kDone;
                                }),
                 calls_.end());
    for (auto it = children_.begin(); it != children_.end();) {
      if (waitpid(*it, nullptr, WNOHANG) == *it) {
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
  }
  Log("modemsim", "event=stop");
  return 0;
}

}  // namespace ferry::modemsim
