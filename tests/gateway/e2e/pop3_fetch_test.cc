// POP3 multidrop collection against a real Dovecot (dovecot-pop3d from
// Debian) on loopback: corpus messages land byte-identical in the right
// Maildirs or on the right spool route, leave the provider's mailbox, are
// never stored twice (repeat run; connection cut before QUIT), and a
// wrong password or a server without STLS gives a clear error.
//
// Runs inside a loopback-only network namespace (tests/netns-run.sh,
// FERRY_NETNS_RUN in the cmake fragment).  Each test starts its own
// Dovecot from a fresh temporary directory (config, passwd-file, the
// provider's Maildir, TLS certificate made with the openssl program) and
// stops it by its pid.  Skips when dovecot or the corpus is absent.
#include "gateway/pop3_fetch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "gateway/router.h"
#include "gateway/users.h"

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using Strings = std::vector<std::string>;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What a POP3 server sends for a stored file: every LF as CRLF.
std::string crlf(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') out += '\r';
    out += c;
  }
  return out;
}

const char* kDovecot = "/usr/sbin/dovecot";

// A loopback port free right now (inside our own namespace nobody else
// can take it before Dovecot binds it).
unsigned short free_port() {
  asio::io_context io;
  tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

bool port_open(unsigned short port) {
  asio::io_context io;
  tcp::socket s(io);
  boost::system::error_code ec;
  s.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  return !ec;
}

// Forwards one client connection to `to`, and cuts both sides when the
// client sends a line starting with `cut_at` (that line is not
// forwarded): a connection lost mid-session, before QUIT.
asio::awaitable<void> cutting_proxy(tcp::acceptor& acc, tcp::endpoint to,
                                    std::string cut_at) {
  auto ex = co_await asio::this_coro::executor;
  auto tok = asio::as_tuple(asio::use_awaitable);
  auto [e1, client] = co_await acc.async_accept(tok);
  if (e1) co_return;
  auto server = std::make_shared<tcp::socket>(ex);
  auto [e2] = co_await server->async_connect(to, tok);
  if (e2) co_return;
  auto cl = std::make_shared<tcp::socket>(std::move(client));
  // Server to client: copy until either side closes.
  asio::co_spawn(
      ex,
      [cl, server]() -> asio::awaitable<void> {
        char buf[8192];
        auto t = asio::as_tuple(asio::use_awaitable);
        for (;;) {
          auto [e, n] = co_await server->async_read_some(asio::buffer(buf), t);
          if (e) break;
          auto [w, m] =
              co_await asio::async_write(*cl, asio::buffer(buf, n), t);
          if (w) break;
        }
        boost::system::error_code ig;
        cl->close(ig);
      },
      asio::detached);
  // Client to server, line by line.
  asio::streambuf sb;
  for (;;) {
    auto [e, n] = co_await asio::async_read_until(*cl, sb, "\n", tok);
    if (e) break;
    std::string line(asio::buffers_begin(sb.data()),
                     asio::buffers_begin(sb.data()) + n);
    sb.consume(n);
    if (line.rfind(cut_at, 0) == 0) break;
    auto [w, m] = co_await asio::async_write(*server, asio::buffer(line), tok);
    if (w) break;
  }
  boost::system::error_code ig;
  cl->close(ig);
  server->close(ig);
}

// The provider's mailbox for the tests below, and where each message must
// end up.
struct Mailbox6 {
  std::string to_alice, to_both, to_branch, to_stranger, orig_to_bob, dotted;
};

class Pop3FetchE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kDovecot, X_OK) != 0) {
      GTEST_SKIP() << "dovecot not installed (tools/install-deps.sh)";
    }
    corpus_ = fs::path(FERRY_SHARED_DIR) / "corpus" / "messages";
    if (!fs::is_directory(corpus_)) GTEST_SKIP() << "no corpus at " << corpus_;

    std::string tmpl = (fs::temp_directory_path() / "ferry-pop3e-XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    // Dovecot's mail processes run as nobody and must reach the
    // provider's Maildir below this directory.
    fs::permissions(root_, fs::perms::owner_all | fs::perms::group_read |
                               fs::perms::group_exec | fs::perms::others_read |
                               fs::perms::others_exec);
    for (auto d : {"spool", "mail", "provider/new", "provider/cur",
                   "provider/tmp", "run", "state"}) {
      fs::create_directories(root_ / d);
    }
    std::ofstream(root_ / "pw") << "secret\n";
    std::ofstream(root_ / "passwd") << "ferry:{PLAIN}secret\n";

    // Our side: office.example is local, branch.example a sister office,
    // everything else goes back to the provider.
    cfg_.local.domains = {"office.example"};
    cfg_.local.mail_root = (root_ / "mail").string();
    std::string error;
    users_ = Users::parse("alice:!\nbob:!\n", "users", "", "aliases", error);
    ASSERT_TRUE(users_) << error;
    router_ = std::make_unique<ConfigRouter>(
        RouterConfig{{"office.example"},
                     {{"branch", {"branch.example"}}, {"provider", {}}},
                     true});
    policy_ = std::make_unique<Policy>(cfg_, *users_);
    policy_->set_router(router_.get());
    queue::Options so;
    so.log = false;
    std::error_code ec;
    spool_ = queue::Spool::open((root_ / "spool").string(), so, ec);
    ASSERT_TRUE(spool_) << ec.message();

    peer_.name = "provider";
    peer_.smarthost = true;
    peer_.protocol = PeerConfig::Protocol::smtp;
    peer_.pop3_user = "ferry";
    peer_.pop3_password_file = (root_ / "pw").string();
    peer_.pop3_stls = PeerConfig::Tls::required;

    ctx_.spool = spool_.get();
    ctx_.policy = policy_.get();
    ctx_.router = router_.get();
    ctx_.mail_root = cfg_.local.mail_root;
    ctx_.postmaster = "postmaster@office.example";
    ctx_.timeout = std::chrono::seconds(30);
    ctx_.log = [this](std::string_view id, std::string_view text) {
      std::string l = std::string(id) + ": " + std::string(text);
      fprintf(stderr, "%s\n", l.c_str());
      log_.push_back(l);
    };
  }

  void TearDown() override {
    stop_dovecot();
    spool_.reset();
    if (!root_.empty()) fs::remove_all(root_);
  }

  // Writes and starts a Dovecot for POP3 on a free loopback port.
  void start_dovecot(bool ssl = true) {
    std::string r = root_.string();
    if (ssl) {
      std::string cmd =
          "openssl req -x509 -newkey ec -pkeyopt "
          "ec_paramgen_curve:P-256 -nodes -days 2 "
          "-subj /CN=pop.test -keyout " +
          r + "/key.pem -out " + r + "/cert.pem 2>/dev/null";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    port_ = free_port();
    std::ofstream conf(root_ / "dovecot.conf");
    conf << "base_dir = " << r << "/run\n"
         << "state_dir = " << r << "/state\n"
         << "instance_name = ferry-pop3-fetch-test\n"
         << "log_path = " << r << "/dovecot.log\n"
         << "protocols = pop3\n"
         << "listen = 127.0.0.1\n"
         << "auth_mechanisms = plain\n"
         << "auth_failure_delay = 0\n"
         << "first_valid_uid = 1\n"
         << "passdb {\n  driver = passwd-file\n  args = scheme=PLAIN " << r
         << "/passwd\n}\n"
         << "userdb {\n  driver = static\n"
         << "  args = uid=nobody gid=nogroup home=" << r << "/home\n}\n"
         << "mail_location = maildir:" << r << "/provider\n"
         << "service pop3-login {\n  inet_listener pop3 {\n"
         << "    address = 127.0.0.1\n    port = " << port_ << "\n  }\n"
         << "  inet_listener pop3s {\n    port = 0\n  }\n}\n";
    if (ssl) {
      conf << "ssl = yes\nssl_cert = <" << r << "/cert.pem\n"
           << "ssl_key = <" << r << "/key.pem\n";
    } else {
      conf << "ssl = no\n";
    }
    conf.close();
    std::string chown = "chown -R nobody:nogroup " + r + "/provider";
    ASSERT_EQ(std::system(chown.c_str()), 0);

    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      std::string c = (root_ / "dovecot.conf").string();
      ::execl(kDovecot, kDovecot, "-F", "-c", c.c_str(), (char*)nullptr);
      ::_exit(127);
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!port_open(port_)) {
      int st = 0;
      ASSERT_EQ(::waitpid(pid_, &st, WNOHANG), 0)
          << "dovecot exited: " << slurp(root_ / "dovecot.log");
      ASSERT_LT(std::chrono::steady_clock::now(), until)
          << "dovecot did not listen: " << slurp(root_ / "dovecot.log");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    peer_.pop3_server = "127.0.0.1:" + std::to_string(port_);
  }

  void stop_dovecot() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
  }

  // Puts one message into the provider's mailbox as its MDA would.
  void provide(const std::string& text) {
    std::string name = std::to_string(++provided_) + ".provider";
    std::ofstream(root_ / "provider/new" / name, std::ios::binary) << text;
  }

  size_t provider_count() {
    size_t n = 0;
    for (auto d : {"new", "cur"}) {
      n += std::distance(fs::directory_iterator(root_ / "provider" / d),
                         fs::directory_iterator{});
    }
    return n;
  }

  // The contents of every file in a user's Maildir, sorted.
  Strings maildir(const std::string& user) {
    Strings out;
    fs::path dir = root_ / "mail" / user / "new";
    if (!fs::exists(dir)) return out;
    for (auto& e : fs::directory_iterator(dir)) out.push_back(slurp(e.path()));
    std::sort(out.begin(), out.end());
    return out;
  }

  Pop3FetchResult fetch() {
    asio::io_context io;
    Pop3FetchResult out;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          out = co_await fetch_pop3(io.get_executor(), peer_, ctx_);
        },
        asio::detached);
    io.run();
    return out;
  }

  // Corpus messages a POP3 server returns unchanged apart from CRLF: no
  // CR or NUL of their own, a final newline, no envelope header.
  Strings corpus(size_t n) {
    Strings files;
    for (auto& e : fs::directory_iterator(corpus_)) {
      if (e.path().extension() == ".eml") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    Strings out;
    for (auto& f : files) {
      std::string m = slurp(f);
      if (m.empty() || m.back() != '\n' || m.size() > (256 << 10) ||
          m.find_first_of(std::string("\r\0", 2)) != std::string::npos) {
        continue;
      }
      if (!envelope_recipients(m, peer_.pop3_envelope_headers).empty()) {
        continue;
      }
      out.push_back(m);
      if (out.size() == n) break;
    }
    return out;
  }

  Mailbox6 fill(const Strings& c) {
    Mailbox6 m;
    m.to_alice = "Delivered-To: alice@office.example\n" + c[0];
    m.to_both =
        "Delivered-To: bob@office.example\n"
        "Delivered-To: Alice@Office.Example\n" +
        c[1];
    m.to_branch = "Delivered-To: carol@branch.example\n" + c[2];
    m.to_stranger = "Delivered-To: someone@elsewhere.example\n" + c[3];
    m.orig_to_bob = "X-Original-To: bob@office.example\n" + c[4];
    m.dotted =
        "Delivered-To: alice@office.example\nSubject: dots\n\n"
        ".\n..\n.leading dot\n..two dots\nend\n.\n";
    for (auto* s : {&m.to_alice, &m.to_both, &m.to_branch, &m.to_stranger,
                    &m.orig_to_bob, &m.dotted}) {
      provide(*s);
    }
    return m;
  }

  bool logged(std::string_view needle) {
    return std::any_of(log_.begin(), log_.end(), [&](const std::string& l) {
      return l.find(needle) != std::string::npos;
    });
  }

  fs::path root_, corpus_;
  Config cfg_;
  std::unique_ptr<Users> users_;
  std::unique_ptr<ConfigRouter> router_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<queue::Spool> spool_;
  PeerConfig peer_;
  FetchContext ctx_;
  Strings log_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
  int provided_ = 0;
};

Strings sorted(Strings v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST_F(Pop3FetchE2E, CorpusLandsByteIdenticalAndLeavesTheProvider) {
  Strings c = corpus(5);
  ASSERT_EQ(c.size(), 5u);
  Mailbox6 m = fill(c);
  start_dovecot();

  auto r = fetch();
  ASSERT_FALSE(r.ec) << r.error;
  EXPECT_TRUE(r.tls);
  EXPECT_TRUE(r.quit_ok);
  EXPECT_EQ(r.listed, 6u);
  EXPECT_EQ(r.stored, 6u);
  EXPECT_EQ(r.deleted, 6u);
  EXPECT_EQ(r.skipped_recipients, 1u);
  EXPECT_EQ(r.to_postmaster, 1u);

  // Maildirs: byte-identical to what the server sent.
  EXPECT_EQ(maildir("alice"),
            sorted({crlf(m.to_alice), crlf(m.to_both), crlf(m.dotted)}));
  EXPECT_EQ(maildir("bob"), sorted({crlf(m.to_both), crlf(m.orig_to_bob)}));
  EXPECT_EQ(maildir("postmaster"), Strings{crlf(m.to_stranger)});

  // The sister office's mail waits in the spool on its route.
  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  ASSERT_EQ(all.size(), 1u);
  ASSERT_EQ(all[0].recipients.size(), 1u);
  EXPECT_EQ(all[0].recipients[0].route, "branch");
  EXPECT_EQ(all[0].recipients[0].address, "carol@branch.example");
  std::string body;
  ASSERT_FALSE(spool_->read_body(all[0].id, body));
  EXPECT_EQ(body, crlf(m.to_branch));

  // Removed from the provider; one log line per message.
  EXPECT_EQ(provider_count(), 0u);
  EXPECT_EQ(std::count_if(log_.begin(), log_.end(),
                          [](const std::string& l) {
                            return l.find("result=stored") != std::string::npos;
                          }),
            6);
  EXPECT_TRUE(logged("to=<someone@elsewhere.example> result=skipped"));

  // A repeat run finds nothing and stores nothing.
  auto again = fetch();
  ASSERT_FALSE(again.ec) << again.error;
  EXPECT_EQ(again.listed, 0u);
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(maildir("alice").size(), 3u);
  EXPECT_EQ(maildir("bob").size(), 2u);
}

TEST_F(Pop3FetchE2E, CutBeforeQuitLeavesMailOnServerAndStoresNoneTwice) {
  Strings c = corpus(5);
  ASSERT_EQ(c.size(), 5u);
  Mailbox6 m = fill(c);
  start_dovecot(false);  // the proxy must read the commands
  peer_.pop3_stls = PeerConfig::Tls::no;

  // First run through a proxy that drops the line at the first DELE:
  // the first message is stored here, nothing is removed there.
  {
    asio::io_context io;
    tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::endpoint dovecot(asio::ip::make_address("127.0.0.1"), port_);
    asio::co_spawn(io, cutting_proxy(acc, dovecot, "DELE"), asio::detached);
    PeerConfig via = peer_;
    via.pop3_server =
        "127.0.0.1:" + std::to_string(acc.local_endpoint().port());
    Pop3FetchResult r;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          r = co_await fetch_pop3(io.get_executor(), via, ctx_);
        },
        asio::detached);
    io.run();
    EXPECT_EQ(r.ec, pop3_fetch_errc::dropped) << r.error;
    EXPECT_FALSE(r.quit_ok);
    EXPECT_EQ(r.stored, 1u);
    EXPECT_EQ(r.deleted, 0u);
  }
  // Dovecot notices the drop and keeps every message.
  EXPECT_EQ(provider_count(), 6u);
  EXPECT_EQ(maildir("alice"), Strings{crlf(m.to_alice)});

  // The next run stores the other five and only deletes the first.
  auto r2 = fetch();
  ASSERT_FALSE(r2.ec) << r2.error;
  EXPECT_EQ(r2.listed, 6u);
  EXPECT_EQ(r2.already, 1u);
  EXPECT_EQ(r2.stored, 5u);
  EXPECT_EQ(r2.deleted, 6u);
  EXPECT_TRUE(logged("result=already"));
  EXPECT_EQ(provider_count(), 0u);
  EXPECT_EQ(maildir("alice"),
            sorted({crlf(m.to_alice), crlf(m.to_both), crlf(m.dotted)}));
  EXPECT_EQ(maildir("bob"), sorted({crlf(m.to_both), crlf(m.orig_to_bob)}));
  EXPECT_EQ(maildir("postmaster").size(), 1u);
}

TEST_F(Pop3FetchE2E, CutAtQuitKeepsDeletedMailOnServerAndStoresNoneTwice) {
  Strings c = corpus(5);
  ASSERT_EQ(c.size(), 5u);
  Mailbox6 m = fill(c);
  start_dovecot(false);
  peer_.pop3_stls = PeerConfig::Tls::no;

  // Every message stored and DELE'd, then the line drops instead of QUIT:
  // the server must keep them all (RFC 1939: removal happens at QUIT).
  {
    asio::io_context io;
    tcp::acceptor acc(io, {asio::ip::make_address("127.0.0.1"), 0});
    tcp::endpoint dovecot(asio::ip::make_address("127.0.0.1"), port_);
    asio::co_spawn(io, cutting_proxy(acc, dovecot, "QUIT"), asio::detached);
    PeerConfig via = peer_;
    via.pop3_server =
        "127.0.0.1:" + std::to_string(acc.local_endpoint().port());
    Pop3FetchResult r;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          r = co_await fetch_pop3(io.get_executor(), via, ctx_);
        },
        asio::detached);
    io.run();
    EXPECT_EQ(r.ec, pop3_fetch_errc::dropped) << r.error;
    EXPECT_EQ(r.stored, 6u);
    EXPECT_EQ(r.deleted, 6u);
    EXPECT_FALSE(r.quit_ok);
  }
  EXPECT_EQ(provider_count(), 6u);

  // The next run recognises all six and stores none again.
  auto r2 = fetch();
  ASSERT_FALSE(r2.ec) << r2.error;
  EXPECT_EQ(r2.already, 6u);
  EXPECT_EQ(r2.stored, 0u);
  EXPECT_EQ(provider_count(), 0u);
  EXPECT_EQ(maildir("alice"),
            sorted({crlf(m.to_alice), crlf(m.to_both), crlf(m.dotted)}));
  EXPECT_EQ(maildir("bob"), sorted({crlf(m.to_both), crlf(m.orig_to_bob)}));
  EXPECT_EQ(maildir("postmaster").size(), 1u);
  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), 1u);  // the branch's copy, once
}

TEST_F(Pop3FetchE2E, WrongPasswordIsAClearErrorAndTouchesNothing) {
  provide("Delivered-To: alice@office.example\nSubject: x\n\nhello\n");
  start_dovecot();
  std::ofstream(root_ / "pw") << "wrong\n";

  auto r = fetch();
  EXPECT_EQ(r.ec, pop3_fetch_errc::auth_failed);
  EXPECT_NE(r.error.find("peer provider"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("PASS refused: -ERR"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find("wrong"), std::string::npos) << "password leaked";
  EXPECT_EQ(r.stored, 0u);
  EXPECT_EQ(provider_count(), 1u);
  EXPECT_TRUE(maildir("alice").empty());
  EXPECT_TRUE(logged("provider: pop3 "));
}

TEST_F(Pop3FetchE2E, StlsRequiredRefusesToLogInWithoutTls) {
  provide("Delivered-To: alice@office.example\nSubject: x\n\nhello\n");
  start_dovecot(false);

  auto r = fetch();
  EXPECT_EQ(r.ec, pop3_fetch_errc::tls_refused) << r.error;
  EXPECT_NE(r.error.find("not logging in without TLS"), std::string::npos)
      << r.error;
  EXPECT_EQ(provider_count(), 1u);
  // Dovecot saw no login attempt at all.
  EXPECT_EQ(slurp(root_ / "dovecot.log").find("user=<ferry>"),
            std::string::npos);
}

}  // namespace
}  // namespace ferry::gw
