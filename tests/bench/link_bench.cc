// ferry-link-bench: one end of a ferry link session over a serial device,
// for the line-efficiency benchmark (tests/bench/line_efficiency.sh runs two
// of them over linesim.py's PTY pair).  Not a test; built only with
// FERRY_BENCHMARKS.
//
//   ferry-link-bench keygen NAME DIR
//       writes DIR/NAME.key and DIR/NAME.crt (Ed25519, self-signed).
//   ferry-link-bench fill --spool DIR --list FILE --rcpt ADDR --route PEER
//       submits every file named in FILE (one path a line) as one message
//       to ADDR, queued for route PEER.  Untimed: the queue is filled
//       before the call, as the peers' scripts queue work before dialling.
//   ferry-link-bench call|answer --device PATH --spool DIR --name N
//       --domain D --peer P --peer-domain PD --id-dir DIR --stats FILE
//       [--user U --mail-root DIR --list FILE]   (answerer: verify)
//       [--chunk-size N] [--window N] [--timeout SECONDS]
//       opens PATH (termios raw, 8N1), runs one LinkSession in that role
//       with both certificates pinned, hangs up, and writes JSON stats.
//       With --list, the answerer checks that every listed file arrived in
//       the Maildir of U exactly once, byte-identical; exit status 3 if not.
//
// Stats (JSON, one object): the call's wall time inside this process
// (open of the device to hang-up), raw line bytes each way, stored (zstd)
// body bytes, and, on the sending side, the transfer phase: from the first
// message byte written to the line to the last acknowledgement read before
// ATRN/QUIT, with the raw bytes each way before that first message byte.
// The transfer phase is found by watching the session's plaintext through
// a transport wrapper (TimedTransport), so link_session stays untouched.
//
// Exit status: 0 call ok (and verified), 1 usage or setup, 2 the call
// failed, 3 verification failed.
#include <fcntl.h>
#include <openssl/sha.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/link_session.h"
#include "gateway/peer_tls.h"
#include "gateway/router.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using ferry::gw::LinkTransport;
using SteadyClock = std::chrono::steady_clock;

double wall_now() {
  return std::chrono::duration<double>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

bool write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  return static_cast<bool>(out);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

// Paths listed in `list`, one a line; blank lines and '#' comments skipped.
bool read_list(const std::string& list, std::vector<std::string>& out) {
  std::string text;
  if (!read_file(list, text)) return false;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    out.push_back(line);
  }
  return true;
}

// ---- the transport wrapper that finds the transfer phase --------------

// Forwards to the real transport and watches the plaintext the session
// writes: the first write after the one carrying the first "BDAT" command
// is the first message byte (the session flushes right after that
// command); the last read completed before the session writes "ATRN" or
// "QUIT" carried the last acknowledgement of our batch.  Byte counts are
// the inner transport's raw counts (TLS records included).
// Concurrency: used only on the session's executor, like the session.
class TimedTransport final : public LinkTransport {
 public:
  struct Marks {
    double first_byte = 0;  // wall time the first message byte was written
    double last_ack = 0;    // wall time the last acknowledgement arrived
    uint64_t pre_out = 0;   // raw bytes out before the first message byte
    uint64_t pre_in = 0;    // raw bytes in by then
    double last_read = 0;   // wall time of the latest completed read
  };

  explicit TimedTransport(std::unique_ptr<LinkTransport> inner)
      : inner_(std::move(inner)) {}

  asio::awaitable<size_t> read_some(asio::mutable_buffer b,
                                    std::error_code& ec) override {
    size_t n = co_await inner_->read_some(b, ec);
    sync_counts();
    if (n > 0) marks_.last_read = wall_now();
    co_return n;
  }

  asio::awaitable<void> write(asio::const_buffer b,
                              std::error_code& ec) override {
    std::string_view text(static_cast<const char*>(b.data()), b.size());
    if (bdat_seen_ && marks_.first_byte == 0) {
      marks_.first_byte = wall_now();
      marks_.pre_out = inner_->bytes_out();
      marks_.pre_in = inner_->bytes_in();
    }
    if (!bdat_seen_ && (text.starts_with("BDAT ") ||
                        text.find("\r\nBDAT ") != std::string_view::npos)) {
      bdat_seen_ = true;
    }
    if (marks_.first_byte != 0 && marks_.last_ack == 0 &&
        (text.starts_with("ATRN") || text.starts_with("QUIT"))) {
      marks_.last_ack = marks_.last_read;
    }
    co_await inner_->write(b, ec);
    sync_counts();
  }

  asio::awaitable<void> start_tls(asio::ssl::context& ctx, bool server,
                                  std::error_code& ec) override {
    co_await inner_->start_tls(ctx, server, ec);
    sync_counts();
  }
  const SSL* ssl() const override { return inner_->ssl(); }
  void close() override { inner_->close(); }
  asio::any_io_executor executor() override { return inner_->executor(); }

  // Shared with the caller of run(): the session owns (and destroys) the
  // transport, the marks outlive it.
  std::shared_ptr<Marks> marks_ptr() { return shared_; }

 private:
  void sync_counts() {
    counts_.in = inner_->bytes_in();
    counts_.out = inner_->bytes_out();
  }

  std::unique_ptr<LinkTransport> inner_;
  std::shared_ptr<Marks> shared_ = std::make_shared<Marks>();
  Marks& marks_ = *shared_;
  bool bdat_seen_ = false;
};

// ---- command line ------------------------------------------------------

struct Args {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  bool has(const std::string& k) const { return kv.count(k) != 0; }
};

bool parse_args(int argc, char** argv, int first, Args& out) {
  for (int i = first; i < argc; ++i) {
    std::string k = argv[i];
    if (!k.starts_with("--") || i + 1 >= argc) {
      std::cerr << "ferry-link-bench: bad argument " << k << "\n";
      return false;
    }
    out.kv[k.substr(2)] = argv[++i];
  }
  return true;
}

int usage() {
  std::cerr
      << "usage: ferry-link-bench keygen NAME DIR\n"
         "       ferry-link-bench fill --spool DIR --list FILE --rcpt ADDR"
         " --route PEER\n"
         "       ferry-link-bench call|answer --device PATH --spool DIR"
         " --name N --domain D\n"
         "           --peer P --peer-domain PD --id-dir DIR --stats FILE\n"
         "           [--user U --mail-root DIR --list FILE]"
         " [--chunk-size N] [--window N]\n"
         "           [--timeout SECONDS]\n";
  return 1;
}

std::unique_ptr<ferry::queue::Spool> open_spool(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  ferry::queue::Options o;
  o.log = false;
  auto spool = ferry::queue::Spool::open(dir, o, ec);
  if (!spool) {
    std::cerr << "ferry-link-bench: spool " << dir << ": " << ec.message()
              << "\n";
  }
  return spool;
}

// ---- keygen --------------------------------------------------------------

int cmd_keygen(const std::string& name, const std::string& dir) {
  ferry::gw::PeerIdentity id;
  std::string error;
  if (!ferry::gw::generate_identity(name, id, error)) {
    std::cerr << "ferry-link-bench: keygen: " << error << "\n";
    return 1;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!write_file(dir + "/" + name + ".key", id.key_pem) ||
      !write_file(dir + "/" + name + ".crt", id.cert_pem)) {
    std::cerr << "ferry-link-bench: keygen: cannot write in " << dir << "\n";
    return 1;
  }
  return 0;
}

// ---- fill ----------------------------------------------------------------

int cmd_fill(const Args& a) {
  std::vector<std::string> files;
  if (!read_list(a.get("list"), files)) {
    std::cerr << "ferry-link-bench: cannot read list " << a.get("list") << "\n";
    return 1;
  }
  auto spool = open_spool(a.get("spool"));
  if (!spool) return 1;

  // Submit everything at once; group commit makes it a few syncs.
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = 0, failed = 0;
  uint64_t bytes = 0;
  for (const std::string& f : files) {
    ferry::queue::NewMessage m;
    if (!read_file(f, m.body)) {
      std::cerr << "ferry-link-bench: cannot read " << f << "\n";
      return 1;
    }
    bytes += m.body.size();
    m.sender = "bench@" + a.get("domain", "a.example");
    m.recipients.push_back({a.get("rcpt"), "", 0, a.get("route")});
    {
      std::lock_guard lk(mu);
      ++pending;
    }
    spool->submit_async(std::move(m),
                        [&](std::error_code ec, ferry::queue::QueueId) {
                          std::lock_guard lk(mu);
                          if (ec) ++failed;
                          if (--pending == 0) cv.notify_all();
                        });
  }
  std::unique_lock lk(mu);
  cv.wait(lk, [&] { return pending == 0; });
  std::cerr << "fill: messages=" << files.size() << " bytes=" << bytes
            << " failed=" << failed << "\n";
  return failed ? 1 : 0;
}

// ---- call / answer -------------------------------------------------------

int open_device(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    std::cerr << "ferry-link-bench: " << path << ": " << std::strerror(errno)
              << "\n";
    return -1;
  }
  termios t{};
  if (::tcgetattr(fd, &t) == 0) {
    ::cfmakeraw(&t);
    t.c_cflag |= CLOCAL | CREAD | CS8;
    t.c_cflag &= ~(PARENB | CSTOPB);
    // TCSANOW, not TCSAFLUSH: the answerer's greeting may already wait.
    ::tcsetattr(fd, TCSANOW, &t);
  }
  return fd;
}

// Verification: every listed file in the Maildir exactly once, same bytes.
struct Verify {
  size_t expected = 0, received_unique = 0, duplicates = 0, missing = 0;
  size_t unexpected = 0;
  uint64_t payload_bytes = 0;
};

Verify verify_maildir(const std::vector<std::string>& files,
                      const std::string& maildir) {
  Verify v;
  std::map<std::string, int> want;  // digest -> copies expected
  for (const std::string& f : files) {
    std::string body;
    read_file(f, body);
    ++want[sha256_hex(body)];
    ++v.expected;
  }
  std::map<std::string, int> got;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(fs::path(maildir) / "new", ec)) {
    std::string body;
    if (!read_file(e.path().string(), body)) continue;
    ++got[sha256_hex(body)];
    v.payload_bytes += body.size();
  }
  for (auto& [d, n] : want) {
    int g = got.count(d) ? got[d] : 0;
    v.received_unique += std::min(g, n);
    if (g < n) v.missing += n - g;
    if (g > n) v.duplicates += g - n;
  }
  for (auto& [d, g] : got) {
    if (!want.count(d)) v.unexpected += g;
  }
  return v;
}

int cmd_session(const Args& a, bool caller) {
  const std::string name = a.get("name"), peer = a.get("peer");
  const std::string domain = a.get("domain"),
                    peer_domain = a.get("peer-domain");
  if (name.empty() || peer.empty() || !a.has("device") || !a.has("spool")) {
    return usage();
  }

  // Identities: ours, and the peer's certificate to pin.
  ferry::gw::PeerIdentity me;
  std::string peer_cert, error;
  const std::string ids = a.get("id-dir");
  if (!read_file(ids + "/" + name + ".key", me.key_pem) ||
      !read_file(ids + "/" + name + ".crt", me.cert_pem) ||
      !read_file(ids + "/" + peer + ".crt", peer_cert)) {
    std::cerr << "ferry-link-bench: identities missing in " << ids << "\n";
    return 1;
  }
  std::vector<ferry::gw::PinnedPeer> pins{
      {peer, ferry::gw::cert_fingerprint(peer_cert)}};
  auto client = ferry::gw::PeerTls::make(me, pins, false, error);
  auto server = ferry::gw::PeerTls::make(me, pins, true, error);
  if (!client || !server) {
    std::cerr << "ferry-link-bench: tls: " << error << "\n";
    return 1;
  }

  // The office: spool, routes, one local user.
  auto spool = open_spool(a.get("spool"));
  if (!spool) return 1;
  ferry::gw::RouterConfig rc;
  rc.local_domains = {domain};
  rc.peers.push_back({peer, {peer_domain}});
  ferry::gw::ConfigRouter router(rc);
  const std::string user = a.get("user", "bench");
  auto users =
      ferry::gw::Users::parse(user + ":!\n", "users", "", "aliases", error);
  if (!users) {
    std::cerr << "ferry-link-bench: users: " << error << "\n";
    return 1;
  }
  const std::string mail_root = a.get("mail-root", a.get("spool") + "/mail");
  std::error_code fec;
  fs::create_directories(mail_root, fec);

  ferry::gw::LinkContext ctx;
  ctx.spool = spool.get();
  ctx.router = &router;
  ctx.users = users.get();
  ctx.mail_root = mail_root;
  ctx.tls_client = client.get();
  ctx.tls_server = server.get();
  ctx.options.hostname = name + ".bench.invalid";
  ctx.options.atrn_domains = {domain};
  if (a.has("chunk-size")) {
    ctx.options.chunk_size = std::stoul(a.get("chunk-size"));
  }
  if (a.has("window")) ctx.options.window_chunks = std::stoul(a.get("window"));
  ctx.options.timeout =
      std::chrono::seconds(std::stoul(a.get("timeout", "120")));

  // What we hold for the peer before the call (stored = on the line).
  uint64_t queued_bytes = 0, queued_stored = 0;
  size_t queued_msgs = 0;
  {
    std::vector<ferry::queue::QueueId> qids;
    spool->route_messages(peer, qids);
    for (auto& q : qids) {
      ferry::queue::MessageInfo mi;
      if (spool->get(q, mi)) continue;
      ++queued_msgs;
      queued_bytes += mi.size;
      queued_stored += mi.stored_size;
    }
  }

  // Dial: open the device; the clock runs from here to the hang-up.
  asio::io_context io;
  const double t_open = wall_now();
  const auto s0 = SteadyClock::now();
  int fd = open_device(a.get("device"));
  if (fd < 0) return 1;
  asio::posix::stream_descriptor line(io, fd);
  auto timed =
      std::make_unique<TimedTransport>(ferry::gw::make_link_transport(line));
  auto marks = timed->marks_ptr();
  ferry::gw::CallResult res;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        ferry::gw::LinkSession s(ctx, std::move(timed),
                                 caller
                                     ? ferry::gw::LinkSession::Role::caller
                                     : ferry::gw::LinkSession::Role::answerer,
                                 caller ? peer : "");
        res = co_await s.run();
      },
      asio::detached);
  io.run();
  boost::system::error_code ignored;
  line.close(ignored);
  const double call_s =
      std::chrono::duration<double>(SteadyClock::now() - s0).count();

  // Verify (answerer) and what is left queued (caller).
  Verify v;
  bool verified = true;
  if (a.has("list")) {
    std::vector<std::string> files;
    read_list(a.get("list"), files);
    v = verify_maildir(files, mail_root + "/" + user);
    verified = v.missing == 0 && v.duplicates == 0 && v.unexpected == 0;
  }
  ferry::queue::SpoolStats st;
  spool->stats(st);

  const TimedTransport::Marks& m = *marks;
  double transfer_s = (m.first_byte > 0 && m.last_ack > m.first_byte)
                          ? m.last_ack - m.first_byte
                          : 0.0;
  std::ostringstream js;
  js.precision(6);
  js << std::fixed;
  js << "{\"role\": \"" << (caller ? "caller" : "answerer") << "\""
     << ", \"result\": \"" << res.result << "\""
     << ", \"error\": \"" << (res.ec ? res.ec.message() : "") << "\""
     << ", \"peer\": \"" << res.peer << "\""
     << ", \"t_open\": " << t_open << ", \"call_s\": " << call_s
     << ", \"bytes_out\": " << res.bytes_out
     << ", \"bytes_in\": " << res.bytes_in
     << ", \"messages_out\": " << res.messages_out
     << ", \"messages_in\": " << res.messages_in
     << ", \"body_bytes_out\": " << res.body_bytes_out
     << ", \"body_bytes_in\": " << res.body_bytes_in
     << ", \"overhead_out\": " << res.overhead_out
     << ", \"queued_messages\": " << queued_msgs
     << ", \"queued_bytes\": " << queued_bytes
     << ", \"queued_stored_bytes\": " << queued_stored
     << ", \"left_in_spool\": " << st.messages
     << ", \"first_byte\": " << m.first_byte << ", \"last_ack\": " << m.last_ack
     << ", \"transfer_s\": " << transfer_s
     << ", \"pre_first_out\": " << m.pre_out
     << ", \"pre_first_in\": " << m.pre_in
     << ", \"chunk_size\": " << ctx.options.chunk_size
     << ", \"window_chunks\": " << ctx.options.window_chunks;
  if (a.has("list")) {
    js << ", \"verify\": {\"expected\": " << v.expected
       << ", \"received_unique\": " << v.received_unique
       << ", \"duplicates\": " << v.duplicates << ", \"missing\": " << v.missing
       << ", \"unexpected\": " << v.unexpected
       << ", \"delivered_bytes\": " << v.payload_bytes << "}";
  }
  js << "}\n";
  if (a.has("stats")) {
    write_file(a.get("stats"), js.str());
  }
  std::cerr << name << ": bench role=" << (caller ? "caller" : "answerer")
            << " result=" << res.result << " call_s=" << call_s
            << " transfer_s=" << transfer_s << " bytes_out=" << res.bytes_out
            << " bytes_in=" << res.bytes_in
            << " verified=" << (verified ? "yes" : "no") << "\n";
  if (res.ec) return 2;
  return verified ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  if (cmd == "keygen") {
    if (argc != 4) return usage();
    return cmd_keygen(argv[2], argv[3]);
  }
  Args a;
  if (!parse_args(argc, argv, 2, a)) return usage();
  if (cmd == "fill") return cmd_fill(a);
  if (cmd == "call") return cmd_session(a, true);
  if (cmd == "answer") return cmd_session(a, false);
  return usage();
}
