#include "gateway/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <istream>

#include "gateway/log.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59  // Linux 4.13; older headers lack the name
#endif

namespace ferry::gw {

namespace asio = boost::asio;
using asio::local::stream_protocol;
using json::Array;
using json::Value;

namespace {

constexpr size_t kMaxRequest = 64 * 1024;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr const char* kDialUnavailable =
    "not available yet: the dial scheduler is not running in this ferryd";

int64_t epoch_seconds(queue::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch())
      .count();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// "bob@x.example" matches itself; "@x.example" every address there.
bool address_matches(const std::string& pattern, const std::string& addr) {
  std::string p = lower(pattern), a = lower(addr);
  if (!p.empty() && p.front() == '@') {
    return a.size() >= p.size() &&
           a.compare(a.size() - p.size(), p.size(), p) == 0;
  }
  return p == a;
}

std::string errno_text(int e) { return std::strerror(e); }

}  // namespace

// ---- One client connection -------------------------------------------

// Reads request lines one at a time; the next is read only after the
// current request's final reply, so replies never interleave.  Writes are
// queued and sent in order.  Lives as long as its run() coroutine or a
// ControlReply holds it.
class ControlConnection
    : public std::enable_shared_from_this<ControlConnection> {
 public:
  ControlConnection(ControlServer& srv, stream_protocol::socket socket,
                    std::string id)
      : srv_(srv),
        socket_(std::move(socket)),
        idle_(socket_.get_executor()),
        id_(std::move(id)) {}

  const std::string& id() const { return id_; }
  bool open() const { return socket_.is_open() && !peer_gone_; }
  uid_t uid() const { return uid_; }

  asio::awaitable<void> run() {
    auto self = shared_from_this();

    // Who is asking.
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred,
                     &len) != 0) {
      log::line(id_, "refused reason=" +
                         log::quote("SO_PEERCRED: " + errno_text(errno)));
      close();
      co_return;
    }
    uid_ = cred.uid;
    std::vector<gid_t> groups(64);
    len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERGROUPS,
                     groups.data(), &len) != 0 &&
        errno == ERANGE) {
      groups.resize(len / sizeof(gid_t) + 1);
      len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
      if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERGROUPS,
                       groups.data(), &len) != 0) {
        len = 0;
      }
    }
    groups.resize(len / sizeof(gid_t));
    if (!srv_.peer_allowed(cred.uid, cred.gid, groups)) {
      log::line(id_, "refused uid=" + std::to_string(cred.uid) + " gid=" +
                         std::to_string(cred.gid) + " reason=not-in-group");
      Value err;
      err["ok"] = false;
      err["error"]["code"] = "permission";
      err["error"]["message"] =
          "permission denied: uid " + std::to_string(cred.uid) +
          " is neither root, ferryd's user, nor in the control group";
      std::string line = json::write(err) + "\n";
      co_await asio::async_write(socket_, asio::buffer(line), kTuple);
      close();
      srv_.forget(this);
      co_return;
    }

    // Requests.
    asio::streambuf buf(kMaxRequest);
    for (;;) {
      auto [ec, n] =
          co_await asio::async_read_until(socket_, buf, '\n', kTuple);
      if (ec) {
        if (ec == asio::error::not_found) {
          Value err;
          err["ok"] = false;
          err["error"]["code"] = "bad_request";
          err["error"]["message"] = "request line longer than 64 KiB";
          send(json::write(err));
        }
        break;
      }
      std::string line(n, '\0');
      std::istream(&buf).read(line.data(), static_cast<std::streamsize>(n));
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
        line.pop_back();
      }
      if (line.empty()) continue;

      busy_ = true;
      srv_.dispatch(line, self);
      // Wait for the final reply before reading the next request.
      while (busy_ && socket_.is_open()) {
        idle_.expires_at(asio::steady_timer::time_point::max());
        co_await idle_.async_wait(kTuple);
      }
      if (!socket_.is_open()) break;
    }
    peer_gone_ = true;
    reading_done_ = true;
    if (!writing_) close();
    srv_.forget(this);
  }

  void send(std::string line) {
    if (!socket_.is_open()) return;
    line += '\n';
    out_.push_back(std::move(line));
    if (!writing_) start_write();
  }

  void request_done() {
    busy_ = false;
    idle_.cancel();
  }

  void close() {
    boost::system::error_code ec;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ec);
    socket_.close(ec);
    idle_.cancel();
  }

 private:
  void start_write() {
    writing_ = true;
    asio::async_write(
        socket_, asio::buffer(out_.front()),
        [self = shared_from_this()](boost::system::error_code ec, size_t) {
          self->out_.pop_front();
          if (ec) {
            self->peer_gone_ = true;
            self->out_.clear();
            self->writing_ = false;
            self->close();
            return;
          }
          if (!self->out_.empty()) {
            self->start_write();
            return;
          }
          self->writing_ = false;
          if (self->reading_done_) self->close();
        });
  }

  ControlServer& srv_;
  stream_protocol::socket socket_;
  asio::steady_timer idle_;
  std::string id_;
  std::deque<std::string> out_;
  uid_t uid_ = static_cast<uid_t>(-1);
  bool busy_ = false;
  bool writing_ = false;
  bool reading_done_ = false;
  bool peer_gone_ = false;
};

// ---- ControlReply ----------------------------------------------------

ControlReply::ControlReply(std::shared_ptr<ControlConnection> conn,
                           std::string cmd)
    : conn_(std::move(conn)), cmd_(std::move(cmd)) {}

ControlReply::~ControlReply() {
  if (!finished_) fail("failed", "the command ended without an answer");
}

void ControlReply::progress(Value event) {
  if (finished_) return;
  Value line;
  line["progress"] = std::move(event);
  conn_->send(json::write(line));
}

void ControlReply::done(Value result) {
  if (finished_) return;
  finished_ = true;
  Value line;
  line["ok"] = true;
  line["result"] = std::move(result);
  conn_->send(json::write(line));
  log::line(conn_->id(), "cmd=" + log::quote(cmd_) + " uid=" +
                             std::to_string(conn_->uid()) + " result=ok");
  conn_->request_done();
}

void ControlReply::fail(std::string_view code, std::string_view message) {
  if (finished_) return;
  finished_ = true;
  Value line;
  line["ok"] = false;
  line["error"]["code"] = code;
  line["error"]["message"] = message;
  conn_->send(json::write(line));
  log::line(conn_->id(), "cmd=" + log::quote(cmd_) +
                             " uid=" + std::to_string(conn_->uid()) +
                             " result=" + std::string(code) +
                             " error=" + log::quote(message));
  conn_->request_done();
}

bool ControlReply::client_connected() const { return conn_->open(); }

// ---- Filters and views -----------------------------------------------

QueueFilter QueueFilter::from_json(const Value& args) {
  QueueFilter f;
  f.route = args["route"].as_string();
  f.sender = args["sender"].as_string();
  f.recipient = args["recipient"].as_string();
  f.older_than = args["older_than"].as_int(0);
  return f;
}

bool QueueFilter::empty() const {
  return route.empty() && sender.empty() && recipient.empty() &&
         older_than <= 0;
}

bool QueueFilter::matches(const queue::MessageInfo& m,
                          queue::Clock::time_point now) const {
  if (!sender.empty() && !address_matches(sender, m.sender)) return false;
  if (older_than > 0 && now - m.arrival < std::chrono::seconds(older_than)) {
    return false;
  }
  if (!route.empty()) {
    bool any = std::any_of(m.recipients.begin(), m.recipients.end(),
                           [&](const queue::RecipientInfo& r) {
                             return r.route == route && !is_final(r.state);
                           });
    if (!any) return false;
  }
  if (!recipient.empty()) {
    bool any = std::any_of(m.recipients.begin(), m.recipients.end(),
                           [&](const queue::RecipientInfo& r) {
                             return address_matches(recipient, r.address);
                           });
    if (!any) return false;
  }
  return true;
}

Value message_json(const queue::MessageInfo& m, queue::Clock::time_point now) {
  Value v;
  v["id"] = m.id;
  v["sender"] = m.sender;
  v["envid"] = m.envid;
  v["priority"] = m.priority;
  v["arrival"] = epoch_seconds(m.arrival);
  v["age"] =
      std::chrono::duration_cast<std::chrono::seconds>(now - m.arrival).count();
  v["size"] = m.size;
  v["stored_size"] = m.stored_size;
  v["sha256"] = m.sha256_hex;
  Array& rs = v["recipients"].array();
  for (const auto& r : m.recipients) {
    Value rv;
    rv["index"] = r.index;
    rv["address"] = r.address;
    rv["orcpt"] = r.orcpt;
    rv["route"] = r.route;
    rv["state"] = std::string(queue::to_string(r.state));
    rv["attempts"] = r.attempts;
    rv["last_reply"] = r.last_reply;
    if (r.next_attempt.time_since_epoch().count() != 0) {
      rv["next_attempt"] = epoch_seconds(r.next_attempt);
    }
    rs.push_back(std::move(rv));
  }
  return v;
}

std::optional<double> line_efficiency(uint64_t payload_bytes, uint64_t line_bps,
                                      double seconds) {
  // Asynchronous framing costs ten bits per byte (start, 8 data, stop).
  if (line_bps == 0 || seconds <= 0) return std::nullopt;
  return static_cast<double>(payload_bytes) /
         (static_cast<double>(line_bps) / 10.0 * seconds);
}

// ---- ControlServer ---------------------------------------------------

ControlServer::ControlServer(asio::io_context& io, queue::Spool& spool,
                             ControlOptions opts)
    : io_(io),
      spool_(spool),
      opts_(std::move(opts)),
      acceptor_(io),
      started_(std::chrono::steady_clock::now()) {
  group_ = opts_.group ? *opts_.group : ::getegid();
  add_builtin_commands();
}

ControlServer::~ControlServer() {
  // Only the file: the io_context may already be gone with its sockets.
  if (running_ && inode_ != 0) {
    struct stat st {};
    if (inode_ != 0 && ::lstat(opts_.path.c_str(), &st) == 0 &&
      st.st_ino == inode_) {
      ::unlink(opts_.path.c_str());
    }
  }
}

void ControlServer::add_command(std::string name, Handler handler,
                                std::string help) {
  commands_[std::move(name)] = Command{std::move(handler), std::move(help)};
}

void ControlServer::add_status_provider(std::string name,
                                        StatusProvider provider) {
  status_[std::move(name)] = std::move(provider);
}

bool ControlServer::start(std::string& error) {
  const std::string& path = opts_.path;
  sockaddr_un probe{};
  if (path.empty() || path.size() >= sizeof probe.sun_path) {
    error = "control socket '" + path + "': name empty or too long";
    return false;
  }

  // Handed over by systemd: owner, group and mode are the unit's.
  if (opts_.inherited_fd >= 0) {
    boost::system::error_code ec;
    acceptor_.assign(stream_protocol(), opts_.inherited_fd, ec);
    if (ec) {
      error = "control socket " + path + " (from systemd): " + ec.message();
      return false;
    }
    struct stat sst {};
    if (!opts_.group && ::stat(path.c_str(), &sst) == 0) group_ = sst.st_gid;
    inode_ = 0;  // not ours to remove
    running_ = true;
    log::line("ferryd", "control socket=" + log::quote(path) +
                            " from=systemd group=" + std::to_string(group_));
    asio::co_spawn(io_, accept_loop(), asio::detached);
    return true;
  }

  // The directory: nobody else may be able to swap the socket.
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  if (dir.empty()) dir = ".";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    error = "control socket directory " + dir + ": " + errno_text(errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    error = "control socket directory " + dir + ": not a directory";
    return false;
  }
  if (st.st_mode & S_IWOTH) {
    error = "control socket directory " + dir +
            " is world-writable: refusing (use a directory such as "
            "/run/ferry, mode 0755)";
    return false;
  }

  // Whatever is at the path now.
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = "control socket " + path + " exists and is not a socket";
      return false;
    }
    if (st.st_uid != ::geteuid()) {
      error = "control socket " + path + " belongs to uid " +
              std::to_string(st.st_uid) + ", not ferryd's uid " +
              std::to_string(::geteuid()) + ": refusing";
      return false;
    }
    stream_protocol::socket s(io_);
    boost::system::error_code ec;
    s.connect(stream_protocol::endpoint(path), ec);
    if (!ec) {
      error = "control socket " + path +
              ": another ferryd answers on it; stop it first";
      return false;
    }
    ::unlink(path.c_str());  // stale, from a ferryd that died
  } else if (errno != ENOENT) {
    error = "control socket " + path + ": " + errno_text(errno);
    return false;
  }

  // Bind with no permissions for others from the first instant; the
  // umask is process-wide, but nothing else creates files yet.
  boost::system::error_code ec;
  acceptor_.open(stream_protocol(), ec);
  if (!ec) {
    mode_t old = ::umask(0177);
    acceptor_.bind(stream_protocol::endpoint(path), ec);
    ::umask(old);
  }
  if (ec) {
    error = "control socket " + path + ": " + ec.message();
    acceptor_.close(ec);
    return false;
  }
  auto undo = [&](const std::string& what) {
    error = "control socket " + path + ": " + what + ": " + errno_text(errno);
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    ::unlink(path.c_str());
    return false;
  };
  if (group_ != ::getegid() &&
      ::chown(path.c_str(), static_cast<uid_t>(-1), group_) != 0) {
    return undo("chown to group " + std::to_string(group_));
  }
  if (::chmod(path.c_str(), opts_.mode) != 0) return undo("chmod");
  if (::lstat(path.c_str(), &st) != 0) return undo("lstat");
  inode_ = st.st_ino;
  acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    errno = ec.value();
    return undo("listen");
  }

  running_ = true;
  log::line(
      "ferryd", "control socket=" + log::quote(path) + " mode=0" +
                    [&] {
                      char b[8];
                      std::snprintf(b, sizeof b, "%o", opts_.mode);
                      return std::string(b);
                    }() +
                    " group=" + std::to_string(group_));
  asio::co_spawn(io_, accept_loop(), asio::detached);
  return true;
}

void ControlServer::stop() {
  if (!running_) return;
  running_ = false;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& [ptr, weak] : conns_) {
    if (auto c = weak.lock()) c->close();
  }
  conns_.clear();
  struct stat st {};
  if (inode_ != 0 && ::lstat(opts_.path.c_str(), &st) == 0 &&
      st.st_ino == inode_) {
    ::unlink(opts_.path.c_str());
  }
  inode_ = 0;
}

void ControlServer::forget(ControlConnection* c) { conns_.erase(c); }

bool ControlServer::peer_allowed(uid_t uid, gid_t gid,
                                 const std::vector<gid_t>& groups) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  if (gid == group_) return true;
  return std::find(groups.begin(), groups.end(), group_) != groups.end();
}

asio::awaitable<void> ControlServer::accept_loop() {
  while (running_) {
    auto [ec, socket] = co_await acceptor_.async_accept(kTuple);
    if (ec == asio::error::operation_aborted || !running_) break;
    if (ec) {
      log::line("ferryd", "control accept error=" + log::quote(ec.message()));
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(kTuple);
      continue;
    }
    auto conn = std::make_shared<ControlConnection>(
        *this, std::move(socket), "ctl" + std::to_string(++next_conn_));
    conns_[conn.get()] = conn;
    asio::co_spawn(
        io_, [conn] { return conn->run(); },
        [id = conn->id()](std::exception_ptr e) {
          if (!e) return;
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& x) {
            log::line(id,
                      std::string("panic exception=") + log::quote(x.what()));
          }
        });
  }
}

void ControlServer::dispatch(const std::string& line,
                             std::shared_ptr<ControlConnection> conn) {
  // Parse: JSON, or a bare word as a command without arguments
  // (ferry-sendmail -q sends "flush").
  Value req;
  std::string error;
  bool bare =
      line.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") ==
      std::string::npos;
  if (bare) {
    req["cmd"] = line;
  } else if (!json::parse(line, req, error) || !req.is_object() ||
             !req["cmd"].is_string()) {
    auto reply = std::make_shared<ControlReply>(conn, "?");
    reply->fail("bad_request", error.empty()
                                   ? "expected {\"cmd\":NAME,\"args\":{...}}"
                                   : "not JSON: " + error);
    return;
  }

  // Run the handler.
  const std::string& name = req["cmd"].as_string();
  auto reply = std::make_shared<ControlReply>(conn, name);
  auto it = commands_.find(name);
  if (it == commands_.end()) {
    reply->fail("unknown_command",
                "unknown command '" + name + "' (try 'help')");
    return;
  }
  try {
    it->second.handler(req["args"], reply);
  } catch (const std::exception& x) {
    // A handler's bug must not take ferryd down: answer and log it.
    log::line(conn->id(), "panic cmd=" + log::quote(name) +
                              " exception=" + log::quote(x.what()));
    reply->fail("failed", std::string("internal error: ") + x.what());
  }
}

// ---- Built-in commands -----------------------------------------------

Value ControlServer::status() {
  Value v;
  auto now = queue::Clock::now();

  // ferryd itself.
  v["ferryd"]["pid"] = static_cast<int64_t>(::getpid());
  v["ferryd"]["uptime"] = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now() - started_)
                              .count();

  // Spool totals.
  queue::SpoolStats st;
  if (auto ec = spool_.stats(st)) {
    v["spool"]["error"] = ec.message();
  } else {
    v["spool"]["messages"] = st.messages;
    for (int i = 0; i < 6; ++i) {
      auto s = static_cast<queue::RecipientState>(i);
      v["spool"]["recipients"][std::string(queue::to_string(s))] =
          st.recipients_by_state[i];
    }
    v["spool"]["calls"] = st.calls;
    v["spool"]["partials"] = st.partials;
    v["spool"]["map_size"] = st.map_size;
    v["spool"]["map_used"] = st.map_used;
  }

  // Modems: the call manager registers "modems" when it exists.
  v["modems"] = Array{};
  v["modems_note"] = "no modems configured";

  // Peers: what waits per route, and the last call to each.
  std::vector<queue::RouteStats> routes;
  std::vector<queue::CallRecord> calls;
  spool_.route_stats(routes);
  spool_.calls(0, calls);
  Array& peers = v["peers"].array();
  for (const auto& r : routes) {
    Value p;
    p["name"] = r.route;
    p["messages"] = r.messages;
    p["recipients"] = r.recipients;
    p["bytes"] = r.bytes;
    p["stored_bytes"] = r.stored_bytes;
    p["oldest"] = epoch_seconds(r.oldest);
    p["oldest_age"] =
        std::chrono::duration_cast<std::chrono::seconds>(now - r.oldest)
            .count();
    p["next_call"] = nullptr;
    p["next_call_reason"] = "the dial scheduler is not running";
    for (auto c = calls.rbegin(); c != calls.rend(); ++c) {
      if (c->peer != r.route) continue;
      p["last_call"]["start"] = epoch_seconds(c->start);
      p["last_call"]["result"] = c->result;
      break;
    }
    peers.push_back(std::move(p));
  }

  // Registered sections replace the built-in ones.
  for (const auto& [name, provider] : status_) {
    v[name] = provider();
    if (name == "modems") v.object().erase("modems_note");
  }
  return v;
}

void ControlServer::add_builtin_commands() {
  add_command(
      "help",
      [this](const Value&, std::shared_ptr<ControlReply> r) {
        Value v;
        for (const auto& [name, c] : commands_) v[name] = c.help;
        r->done(std::move(v));
      },
      "list the commands this ferryd understands");

  add_command(
      "ping",
      [](const Value&, std::shared_ptr<ControlReply> r) {
        Value v;
        v["pid"] = static_cast<int64_t>(::getpid());
        r->done(std::move(v));
      },
      "check that ferryd answers");

  add_command(
      "status",
      [this](const Value&, std::shared_ptr<ControlReply> r) {
        r->done(status());
      },
      "modems, peers and spool totals");

  add_command(
      "queue.list",
      [this](const Value& args, std::shared_ptr<ControlReply> r) {
        std::vector<queue::MessageInfo> all;
        if (auto ec = spool_.list(all)) {
          r->fail("failed", "spool: " + ec.message());
          return;
        }
        auto f = QueueFilter::from_json(args);
        auto now = queue::Clock::now();
        Value v;
        Array& out = v["messages"].array();
        for (const auto& m : all) {
          if (f.matches(m, now)) out.push_back(message_json(m, now));
        }
        v["count"] = out.size();
        r->done(std::move(v));
      },
      "messages in the spool (args: route, sender, recipient, older_than)");

  add_command(
      "queue.show",
      [this](const Value& args, std::shared_ptr<ControlReply> r) {
        const std::string& id = args["id"].as_string();
        if (id.empty()) {
          r->fail("bad_request", "queue.show needs args.id");
          return;
        }
        auto now = queue::Clock::now();
        queue::MessageInfo m;
        std::vector<queue::Event> events;
        auto ec = spool_.get(id, m);
        spool_.events(id, events);
        Value v;
        if (ec == queue::spool_errc::not_found) {
          if (events.empty()) {
            r->fail("not_found", "no message " + id + " in the spool");
            return;
          }
          v["id"] = id;
          v["gone"] = true;  // left the spool; its history remains
        } else if (ec) {
          r->fail("failed", id + ": " + ec.message());
          return;
        } else {
          v = message_json(m, now);
        }
        Array& ev = v["events"].array();
        for (const auto& e : events) {
          Value x;
          x["time"] = epoch_seconds(e.time);
          x["text"] = e.text;
          ev.push_back(std::move(x));
        }
        r->done(std::move(v));
      },
      "one message: envelope, recipients, replies, events (args: id)");

  // hold / release / retry / delete share the selection logic.
  auto action = [this](std::string verb) {
    return [this, verb](const Value& args, std::shared_ptr<ControlReply> r) {
      auto now = queue::Clock::now();

      // Select the messages: explicit ids, or every match of a filter.
      std::vector<queue::MessageInfo> chosen;
      if (args["all"].as_bool()) {
        std::vector<queue::MessageInfo> all;
        if (auto ec = spool_.list(all)) {
          r->fail("failed", "spool: " + ec.message());
          return;
        }
        auto f = QueueFilter::from_json(args);
        for (auto& m : all) {
          if (f.matches(m, now)) chosen.push_back(std::move(m));
        }
      } else {
        if (args["ids"].as_array().empty()) {
          r->fail("bad_request",
                  "give queue ids, or all=true with optional filters");
          return;
        }
        for (const auto& idv : args["ids"].as_array()) {
          queue::MessageInfo m;
          auto ec = spool_.get(idv.as_string(), m);
          if (ec == queue::spool_errc::not_found) {
            r->fail("not_found",
                    "no message " + idv.as_string() + " in the spool");
            return;
          }
          if (ec) {
            r->fail("failed", idv.as_string() + ": " + ec.message());
            return;
          }
          chosen.push_back(std::move(m));
        }
      }

      // Apply.
      Value v;
      uint64_t recipients = 0, skipped = 0;
      Array& ids = v["ids"].array();
      if (verb == "delete") {
        for (const auto& m : chosen) {
          auto ec = spool_.remove(m.id, "deleted by the postmaster");
          if (ec) {
            ++skipped;
            continue;
          }
          log::line(m.id, "removed by=ferryctl");
          ids.push_back(m.id);
          recipients += m.recipients.size();
        }
      } else {
        std::vector<queue::Transition> ts;
        for (const auto& m : chosen) {
          bool any = false;
          for (const auto& rc : m.recipients) {
            queue::Transition t;
            t.id = m.id;
            t.recipient = rc.index;
            bool waiting = rc.state == queue::RecipientState::queued ||
                           rc.state == queue::RecipientState::deferred;
            if (verb == "hold" && waiting) {
              t.action = queue::Action::hold;
            } else if (verb == "release" &&
                       rc.state == queue::RecipientState::held) {
              t.action = queue::Action::release;
            } else if (verb == "retry" && waiting) {
              t.action = queue::Action::retry_now;
            } else {
              if (!is_final(rc.state)) ++skipped;
              continue;
            }
            ts.push_back(std::move(t));
            any = true;
          }
          if (any) ids.push_back(m.id);
        }
        std::vector<queue::TransitionResult> results;
        if (!ts.empty()) {
          if (auto ec = spool_.apply(ts, results)) {
            r->fail("failed", "spool: " + ec.message());
            return;
          }
        }
        for (size_t i = 0; i < results.size(); ++i) {
          if (results[i].ec) {
            ++skipped;
          } else {
            ++recipients;
          }
        }
        for (const auto& idv : ids) {
          log::line(idv.as_string(), "action=" + verb + " by=ferryctl");
        }
      }
      v["action"] = verb;
      v["messages"] = ids.size();
      v["recipients"] = recipients;
      v["skipped"] = skipped;
      r->done(std::move(v));
    };
  };
  add_command("queue.hold", action("hold"),
              "keep messages from being sent (args: ids | all + filters)");
  add_command("queue.release", action("release"),
              "release held messages (args: ids | all + filters)");
  add_command("queue.retry", action("retry"),
              "make messages due now (args: ids | all + filters)");
  add_command("queue.delete", action("delete"),
              "remove messages without a bounce (args: ids | all + filters)");

  add_command(
      "calls",
      [this](const Value& args, std::shared_ptr<ControlReply> r) {
        std::vector<queue::CallRecord> calls;
        auto limit =
            static_cast<size_t>(std::max<int64_t>(0, args["limit"].as_int(20)));
        if (auto ec = spool_.calls(limit, calls)) {
          r->fail("failed", "spool: " + ec.message());
          return;
        }
        Value v;
        Array& out = v["calls"].array();
        for (const auto& c : calls) {
          Value x;
          double secs = std::chrono::duration<double>(c.end - c.start).count();
          x["seq"] = c.seq;
          x["peer"] = c.peer;
          x["start"] = epoch_seconds(c.start);
          x["end"] = epoch_seconds(c.end);
          x["duration"] = secs;
          x["bytes_out"] = c.bytes_out;
          x["bytes_in"] = c.bytes_in;
          x["messages_out"] = c.messages_out;
          x["messages_in"] = c.messages_in;
          x["result"] = c.result;
          x["route"] = c.route;
          x["line_bps"] = c.line_bps > 0 ? Value(c.line_bps) : Value();
          x["payload_out"] = c.payload_out;
          x["payload_in"] = c.payload_in;
          // Message bytes moved over what the line could carry in the
          // call's time; unknown (null) without the CONNECT rate.  The
          // cost comes from the peer's tariff (null without one).
          auto eff = line_efficiency(c.payload_out + c.payload_in,
                                     c.line_bps, secs);
          x["efficiency"] = eff ? Value(*eff) : Value();
          std::optional<double> cost;
          if (cost_) cost = cost_(c);
          x["cost"] = cost ? Value(*cost) : Value();
          out.push_back(std::move(x));
        }
        r->done(std::move(v));
      },
      "call history, oldest first (args: limit, default 20; 0 = all)");

  // Until the scheduler and the call manager register the real ones.
  auto unavailable = [](const Value&, std::shared_ptr<ControlReply> r) {
    r->fail("not_available", kDialUnavailable);
  };
  add_command("dial", unavailable,
              "call a peer now (args: peer, wait); streams progress");
  add_command("why", unavailable,
              "why a peer was or was not called, and the next call "
              "(args: peer)");
}

}  // namespace ferry::gw
