// The plain ESMTP client against a real Exim 4 (`exim -bs`, SMTP on its
// standard input and output) over a socketpair: what Exim delivers to its
// Maildir must be the spooled message byte for byte, apart from the trace
// fields Exim puts in front (Envelope-to:, Received:).  Exim is the
// unpacked Debian package (tools/install-deps.sh); the tests skip without
// it or without root (Exim runs its deliveries as Debian-exim).
//
// Exim accepts the message with -odq (queue only); a foreground queue run
// (-qff) then delivers it, so the Maildir is complete when the test looks.
// `-oMa 127.0.0.1` makes the session a remote one, so Exim adds none of the
// header fix-ups it makes for local submissions.
#include "gateway/smtp_client.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using boost::asio::local::stream_protocol;

const char* kExim = "/usr/local/lib/ferry/exim4/usr/sbin/exim4";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// CRLF lines ending in CRLF, without Return-Path: (Exim removes it on
// delivery, as a final delivery should replace it).
std::string as_sent(std::string raw) {
  std::string lf;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r' && i + 1 < raw.size() && raw[i + 1] == '\n') continue;
    lf += raw[i];
  }
  std::string crlf;
  for (char c : lf) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  if (crlf.size() < 2 || crlf.compare(crlf.size() - 2, 2, "\r\n") != 0) {
    crlf += "\r\n";
  }
  std::string out;
  size_t pos = 0;
  bool in_head = true, dropping = false;
  while (pos < crlf.size()) {
    size_t e = crlf.find("\r\n", pos);
    std::string line = crlf.substr(pos, e + 2 - pos);
    pos = e + 2;
    if (in_head) {
      if (line == "\r\n") {
        in_head = false;
      } else if (line[0] == ' ' || line[0] == '\t') {
        if (dropping) continue;
      } else {
        std::string low = line.substr(0, 12);
        std::transform(low.begin(), low.end(), low.begin(), ::tolower);
        dropping = low == "return-path:";
        if (dropping) continue;
      }
    }
    out += line;
  }
  return out;
}

// Drops the leading header fields named in `names` (lower case, with ':'),
// with their continuation lines.
std::string strip_leading(const std::string& msg,
                          std::vector<std::string> names) {
  size_t pos = 0;
  for (;;) {
    size_t e = msg.find("\r\n", pos);
    if (e == std::string::npos) break;
    std::string head = msg.substr(pos, e - pos);
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    bool trace = std::any_of(names.begin(), names.end(), [&](auto& n) {
      return head.rfind(n, 0) == 0;
    });
    if (!trace) break;
    pos = e + 2;
    while (pos < msg.size() && (msg[pos] == ' ' || msg[pos] == '\t')) {
      pos = msg.find("\r\n", pos) + 2;
    }
  }
  return msg.substr(pos);
}

// Runs a program with no input or output and waits for it; returns its
// exit status.
int run(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Closes the line right after the final dot of DATA has been written: the
// carrier drop between the end of data and the reply.  (A fault on our
// side of a real Exim; nothing else can place a drop at that instant.)
class CutAfterDot final : public LinkTransport {
 public:
  explicit CutAfterDot(std::unique_ptr<LinkTransport> in)
      : in_(std::move(in)) {}
  asio::awaitable<size_t> read_some(asio::mutable_buffer b,
                                    std::error_code& ec) override {
    if (cut_) {
      ec = std::make_error_code(std::errc::connection_reset);
      co_return 0;
    }
    co_return co_await in_->read_some(b, ec);
  }
  asio::awaitable<void> write(asio::const_buffer b,
                              std::error_code& ec) override {
    if (cut_) {
      ec = std::make_error_code(std::errc::broken_pipe);
      co_return;
    }
    co_await in_->write(b, ec);
    std::string_view s(static_cast<const char*>(b.data()), b.size());
    if (s.size() >= 5 && s.substr(s.size() - 5) == "\r\n.\r\n") {
      cut_ = true;
      in_->close();
    }
  }
  asio::awaitable<void> start_tls(asio::ssl::context& ctx, bool server,
                                  std::error_code& ec) override {
    co_await in_->start_tls(ctx, server, ec);
  }
  const SSL* ssl() const override { return in_->ssl(); }
  void close() override { in_->close(); }
  asio::any_io_executor executor() override { return in_->executor(); }
  bool cut() const { return cut_; }

 private:
  std::unique_ptr<LinkTransport> in_;
  bool cut_ = false;
};

struct EximOptions {
  bool chunking = true;
  // STARTTLS with a throw-away certificate, and AUTH PLAIN (office /
  // secret) offered only after it.
  bool tls = false;
};

class SmtpClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (Exim's deliveries)";
    if (!fs::exists(kExim)) GTEST_SKIP() << "exim4 not unpacked";
    struct passwd* pw = ::getpwnam("Debian-exim");
    if (pw == nullptr) GTEST_SKIP() << "no Debian-exim user";
    std::string tmpl =
        (fs::temp_directory_path() / "ferry-smtpc-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    fs::permissions(dir_, fs::perms(0755));
    for (const char* sub : {"spool", "exim", "elog", "mail"}) {
      fs::create_directories(dir_ + "/" + sub);
    }
    for (const char* sub : {"exim", "elog", "mail"}) {
      ASSERT_EQ(::chown((dir_ + "/" + sub).c_str(), pw->pw_uid, pw->pw_gid),
                0);
    }
    std::error_code ec;
    queue::Options o;
    o.log = false;
    spool_ = queue::Spool::open(dir_ + "/spool", o, ec);
    ASSERT_TRUE(spool_) << ec.message();
    ctx_.spool = spool_.get();
    ctx_.on_failed = [this](const queue::QueueId& q) { failed_.push_back(q); };
  }

  void TearDown() override {
    spool_.reset();
    if (!dir_.empty() && !std::getenv("FERRY_KEEP_TMP")) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  void write_conf(const EximOptions& eo) {
    std::string tls = "tls_advertise_hosts =\n";
    if (eo.tls) {
      std::string key = dir_ + "/key.pem", cert = dir_ + "/cert.pem";
      EXPECT_EQ(run({"/usr/bin/openssl", "req", "-x509", "-newkey",
                     "rsa:2048", "-nodes", "-subj", "/CN=mx.provider.example",
                     "-days", "2", "-keyout", key, "-out", cert}),
                0);
      fs::permissions(key, fs::perms(0644));
      tls = "tls_advertise_hosts = *\ntls_certificate = " + cert +
            "\ntls_privatekey = " + key + "\n";
    }
    std::ofstream f(dir_ + "/exim.conf");
    f << "exim_path = " << kExim << "\n"
      << "primary_hostname = mx.provider.example\n"
      << "qualify_domain = provider.example\n"
      << "spool_directory = " << dir_ << "/exim\n"
      << "log_file_path = " << dir_ << "/elog/%slog\n"
      << "exim_user = Debian-exim\nexim_group = Debian-exim\n"
      << "never_users = root\nkeep_environment =\nhost_lookup =\n"
      << "rfc1413_hosts =\nrfc1413_query_timeout = 0s\n"
      << tls << "smtputf8_advertise_hosts = *\n"
      << "accept_8bitmime = true\ndsn_advertise_hosts = *\n"
      << "chunking_advertise_hosts = " << (eo.chunking ? "*" : "") << "\n"
      << "message_size_limit = 20M\n"
      << "acl_smtp_rcpt = acl_rcpt\n"
      << "begin acl\nacl_rcpt:\n"
      << "  defer local_parts = ^later\n"
      << "    message = 4.2.0 try again later\n"
      << "  deny local_parts = ^nobody\n"
      << "    message = 5.1.1 no such user here\n"
      << "  accept\n"
      << "begin routers\nall:\n  driver = accept\n"
      << "  transport = to_maildir\n"
      << "begin transports\nto_maildir:\n  driver = appendfile\n"
      << "  directory = " << dir_ << "/mail\n"
      << "  maildir_format\n  use_crlf\n"
      << "  user = Debian-exim\n  group = Debian-exim\n  mode = 0644\n"
      << "  envelope_to_add\n"
      << "begin authenticators\nplain:\n  driver = plaintext\n"
      << "  public_name = PLAIN\n"
      << "  server_condition = ${if and{{eq{$auth2}{office}}"
         "{eq{$auth3}{secret}}}}\n"
      << "  server_advertise_condition = ${if def:tls_in_cipher}\n"
      << "  server_set_id = $auth2\n";
  }

  queue::QueueId submit(const std::string& body,
                        std::vector<std::string> rcpts,
                        const std::string& sender = "clerk@office.example") {
    queue::NewMessage m;
    m.sender = sender;
    m.body = body;
    m.envid = "env-1";
    m.ret = queue::Ret::hdrs;
    for (auto& r : rcpts) {
      m.recipients.push_back({r, "rfc822;" + r,
                              queue::notify_failure | queue::notify_delay,
                              "provider"});
    }
    queue::QueueId id;
    EXPECT_FALSE(spool_->submit(std::move(m), id));
    return id;
  }

  // One call: exim -bs on the far end of a socketpair.
  CallResult call(const EximOptions& eo, SmtpClientOptions opts = {},
                  bool cut_after_dot = false) {
    write_conf(eo);
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::string conf = dir_ + "/exim.conf";
    pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(sv[1], 0);
      ::dup2(sv[1], 1);
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 2);
      ::execl(kExim, kExim, "-C", conf.c_str(), "-bs", "-odq", "-oMa",
              "127.0.0.1", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(sv[1]);

    asio::io_context io;
    stream_protocol::socket sock(io);
    sock.assign(stream_protocol(), sv[0]);
    std::unique_ptr<LinkTransport> t = make_link_transport(sock);
    if (cut_after_dot) t = std::make_unique<CutAfterDot>(std::move(t));
    if (opts.hostname == "ferry") opts.hostname = "office.example";
    opts.timeout = std::chrono::seconds(20);
    CallResult res;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          res = co_await run_smtp_client(ctx_, std::move(t), "provider",
                                         opts);
        },
        asio::detached);
    io.run();
    boost::system::error_code ignored;
    sock.close(ignored);
    int st = 0;
    ::waitpid(pid, &st, 0);
    // Deliver what Exim accepted, in the foreground.
    EXPECT_EQ(run({kExim, "-C", conf, "-qff"}), 0);
    return res;
  }

  // Delivered messages: recipient (Envelope-to) -> message without the
  // trace fields Exim added.
  std::multimap<std::string, std::string> delivered() {
    std::multimap<std::string, std::string> out;
    std::error_code ec;
    for (auto& e : fs::directory_iterator(dir_ + "/mail/new", ec)) {
      std::string m = slurp(e.path());
      std::string to;
      if (m.rfind("Envelope-to: ", 0) == 0) {
        to = m.substr(13, m.find("\r\n") - 13);
      }
      out.emplace(to, strip_leading(m, {"envelope-to:", "received:"}));
    }
    return out;
  }

  queue::RecipientInfo recipient(const queue::QueueId& id, uint32_t k) {
    queue::MessageInfo mi;
    EXPECT_FALSE(spool_->get(id, mi));
    return k < mi.recipients.size() ? mi.recipients[k]
                                    : queue::RecipientInfo{};
  }

  uint64_t spooled() {
    queue::SpoolStats s;
    EXPECT_FALSE(spool_->stats(s));
    return s.messages;
  }

  std::vector<std::string> corpus(size_t limit) {
    std::vector<std::string> names;
    fs::path d = fs::path(FERRY_SHARED_DIR) / "corpus" / "messages";
    std::error_code ec;
    for (auto& e : fs::directory_iterator(d, ec)) {
      if (e.path().extension() == ".eml") names.push_back(e.path());
    }
    std::sort(names.begin(), names.end());
    // The first few, and those with lines over 998 octets or 8-bit text.
    std::vector<std::string> pick;
    for (auto& n : names) {
      bool special = n.find("/0835.eml") != n.npos ||
                     n.find("/0997.eml") != n.npos ||
                     n.find("/0047.eml") != n.npos;
      if (pick.size() < limit || special) pick.push_back(n);
    }
    return pick;
  }

  void deliver_corpus(const EximOptions& eo) {
    auto files = corpus(8);
    if (files.empty()) GTEST_SKIP() << "no corpus in " << FERRY_SHARED_DIR;
    std::map<std::string, std::string> want;  // recipient -> message
    for (size_t i = 0; i < files.size(); ++i) {
      std::string rcpt = "box" + std::to_string(i) + "@provider.example";
      want[rcpt] = as_sent(slurp(files[i]));
      submit(want[rcpt], {rcpt});
    }
    CallResult r = call(eo);
    EXPECT_FALSE(r.ec) << r.ec.message();
    EXPECT_EQ(r.result, "ok");
    EXPECT_EQ(r.messages_out, files.size());
    EXPECT_EQ(spooled(), 0u);  // every recipient delivered: all gone
    auto got = delivered();
    ASSERT_EQ(got.size(), files.size());
    for (auto& [rcpt, msg] : want) {
      auto it = got.find(rcpt);
      ASSERT_NE(it, got.end()) << rcpt;
      EXPECT_TRUE(it->second == msg)
          << rcpt << ": " << it->second.size() << " bytes, sent "
          << msg.size();
    }
  }

  std::string dir_;
  std::unique_ptr<queue::Spool> spool_;
  LinkContext ctx_;
  std::vector<queue::QueueId> failed_;
};

TEST_F(SmtpClientTest, CorpusArrivesByteIdenticalByBdat) {
  deliver_corpus(EximOptions{.chunking = true});
}

TEST_F(SmtpClientTest, CorpusArrivesByteIdenticalByDataWithDotStuffing) {
  deliver_corpus(EximOptions{.chunking = false});
}

TEST_F(SmtpClientTest, DotLinesSurviveData) {
  std::string body =
      "From: a@office.example\r\nTo: b@provider.example\r\n"
      "Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmid.dle\r\n.\r\n";
  submit(body, {"dots@provider.example"});
  CallResult r = call(EximOptions{.chunking = false});
  EXPECT_EQ(r.result, "ok");
  auto got = delivered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.begin()->second, body);
}

TEST_F(SmtpClientTest, EachRecipientSettledByItsOwnReply) {
  std::string body = "From: a@office.example\r\nSubject: mixed\r\n\r\nhi\r\n";
  queue::QueueId id = submit(body, {"ok@provider.example",
                                    "nobody@provider.example",
                                    "later@provider.example"});
  CallResult r = call(EximOptions{});
  EXPECT_EQ(r.result, "ok");
  EXPECT_EQ(delivered().count("ok@provider.example"), 1u);
  EXPECT_EQ(delivered().size(), 1u);

  // delivered, failed with the far side's reply (and the bounce hook),
  // deferred with its reply.
  EXPECT_EQ(recipient(id, 0).state, queue::RecipientState::delivered);
  auto bad = recipient(id, 1);
  EXPECT_EQ(bad.state, queue::RecipientState::failed);
  EXPECT_NE(bad.last_reply.find("550 5.1.1 no such user here"),
            std::string::npos)
      << bad.last_reply;
  auto later = recipient(id, 2);
  EXPECT_EQ(later.state, queue::RecipientState::deferred);
  EXPECT_NE(later.last_reply.find("451 4.2.0 try again later"),
            std::string::npos)
      << later.last_reply;
  EXPECT_EQ(failed_, std::vector<queue::QueueId>{id});
}

TEST_F(SmtpClientTest, DropAfterFinalDotKeepsMessageAndWarnsOfDuplicate) {
  std::string body = "From: a@office.example\r\nSubject: cut\r\n\r\nhi\r\n";
  queue::QueueId id = submit(body, {"cut@provider.example"});
  queue::QueueId id2 = submit(body, {"next@provider.example"});
  testing::internal::CaptureStderr();
  CallResult r = call(EximOptions{.chunking = false}, {}, true);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(r.ec);
  EXPECT_EQ(r.result, "dropped");
  EXPECT_EQ(spooled(), 2u);
  EXPECT_EQ(recipient(id, 0).state, queue::RecipientState::deferred);
  EXPECT_EQ(recipient(id2, 0).state, queue::RecipientState::deferred);
  EXPECT_NE(err.find(id + ": peer=provider bytes=" +
                     std::to_string(body.size()) +
                     " rcpts=1 result=deferred reason=\"connection lost "
                     "after end of data; may be duplicated\""),
            std::string::npos)
      << err;
  EXPECT_TRUE(failed_.empty());
}

TEST_F(SmtpClientTest, RequiredTlsNotOfferedSendsNothing) {
  queue::QueueId id = submit("Subject: x\r\n\r\nx\r\n", {"u@provider.example"});
  SmtpClientOptions o;
  o.starttls = PeerConfig::Tls::required;
  CallResult r = call(EximOptions{}, o);
  EXPECT_EQ(r.result, "tls failed");
  EXPECT_TRUE(delivered().empty());
  EXPECT_EQ(recipient(id, 0).state, queue::RecipientState::queued);
}

TEST_F(SmtpClientTest, PasswordNeverSentInTheClear) {
  queue::QueueId id = submit("Subject: x\r\n\r\nx\r\n", {"u@provider.example"});
  SmtpClientOptions o;
  o.auth_user = "office";
  o.auth_password = "secret";
  CallResult r = call(EximOptions{}, o);
  EXPECT_EQ(r.result, "auth failed");
  EXPECT_TRUE(delivered().empty());
  EXPECT_EQ(recipient(id, 0).state, queue::RecipientState::queued);
}

TEST_F(SmtpClientTest, StartTlsThenAuthPlainDelivers) {
  std::string body = "From: a@office.example\r\nSubject: tls\r\n\r\nhi\r\n";
  queue::QueueId id = submit(body, {"u@provider.example"});
  SmtpClientOptions o;
  o.starttls = PeerConfig::Tls::required;
  o.auth_user = "office";
  o.auth_password = "secret";
  CallResult r = call(EximOptions{.tls = true}, o);
  EXPECT_EQ(r.result, "ok");
  auto got = delivered();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.begin()->second, body);
  // Exim's own log: the message came over TLS from the authenticated user.
  std::string log = slurp(dir_ + "/elog/mainlog");
  EXPECT_NE(log.find(" X=TLS"), std::string::npos) << log;
  EXPECT_NE(log.find(" P=esmtpsa "), std::string::npos) << log;
  EXPECT_NE(log.find(" A=plain:office"), std::string::npos) << log;
  EXPECT_EQ(spooled(), 0u);
  (void)id;
}

TEST_F(SmtpClientTest, WrongPasswordLeavesMailQueued) {
  queue::QueueId id = submit("Subject: x\r\n\r\nx\r\n", {"u@provider.example"});
  SmtpClientOptions o;
  o.auth_user = "office";
  o.auth_password = "wrong";
  CallResult r = call(EximOptions{.tls = true}, o);
  EXPECT_EQ(r.result, "auth failed");
  EXPECT_TRUE(delivered().empty());
  EXPECT_EQ(recipient(id, 0).state, queue::RecipientState::queued);
}

}  // namespace
}  // namespace ferry::gw
