// Whole link sessions between two real spools whose peers authenticate
// with TLS 1.3 pre-shared keys only (no [link] certificate on either
// side), over a socketpair in one io_context.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gateway/link_session.h"

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using Socket = boost::asio::local::stream_protocol::socket;

// One office with a spool, one user, and a PSK for its one peer.
struct PskOffice {
  std::string name, domain, user, dir;
  std::unique_ptr<queue::Spool> spool;
  std::unique_ptr<Users> users;
  std::unique_ptr<ConfigRouter> router;
  std::unique_ptr<PeerTls> client, server;
  LinkContext ctx;

  PskOffice(std::string n, std::string d, std::string u)
      : name(std::move(n)), domain(std::move(d)), user(std::move(u)) {
    std::string t =
        (fs::temp_directory_path() / "ferry-psk-link-XXXXXX").string();
    dir = ::mkdtemp(t.data());
    fs::create_directories(dir + "/spool");
    fs::create_directories(dir + "/mail");
    std::error_code ec;
    queue::Options o;
    o.log = false;
    spool = queue::Spool::open(dir + "/spool", o, ec);
    EXPECT_TRUE(spool) << ec.message();
    std::string error;
    users = Users::parse(user + ":!\n", "users", "", "aliases", error);
    EXPECT_TRUE(users) << error;
  }
  ~PskOffice() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // Knows `other` by `key` alone; no certificate of its own.
  void know(const PskOffice& other, const std::string& key) {
    RouterConfig rc;
    rc.local_domains = {domain};
    rc.peers.push_back({other.name, {other.domain}});
    router = std::make_unique<ConfigRouter>(rc);
    std::string error;
    std::vector<PinnedPeer> pins{{other.name, "", key}};
    client = PeerTls::make(PeerIdentity{}, pins, false, error);
    ASSERT_TRUE(client) << error;
    server = PeerTls::make(PeerIdentity{}, pins, true, error);
    ASSERT_TRUE(server) << error;
    ctx.spool = spool.get();
    ctx.router = router.get();
    ctx.users = users.get();
    ctx.mail_root = dir + "/mail";
    ctx.tls_client = client.get();
    ctx.tls_server = server.get();
    ctx.options.hostname = name + ".example";
    ctx.options.timeout = std::chrono::seconds(10);
    ctx.options.atrn_domains = {domain};
  }

  void submit(const std::string& rcpt, const std::string& body) {
    queue::NewMessage m;
    m.sender = "sender@" + domain;
    m.body = body;
    std::string d = rcpt.substr(rcpt.find('@') + 1);
    m.recipients.push_back({rcpt, "", 0, router->route_for(d)});
    queue::QueueId id;
    EXPECT_FALSE(spool->submit(std::move(m), id));
  }

  std::vector<std::string> maildir() const {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto& e :
         fs::directory_iterator(fs::path(ctx.mail_root) / user / "new", ec)) {
      std::ifstream in(e.path(), std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      out.push_back(ss.str());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  uint64_t messages() const {
    queue::SpoolStats s;
    EXPECT_FALSE(spool->stats(s));
    return s.messages;
  }
};

struct Call {
  CallResult caller, answerer;
};

Call place_call(PskOffice& caller, PskOffice& answerer) {
  boost::asio::io_context io;
  Socket a(io), b(io);
  boost::asio::local::connect_pair(a, b);
  Call out;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        LinkSession s(answerer.ctx, make_link_transport(b),
                      LinkSession::Role::answerer, "");
        out.answerer = co_await s.run();
        boost::system::error_code ignored;
        b.close(ignored);  // hang up
      },
      boost::asio::detached);
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        LinkSession s(caller.ctx, make_link_transport(a),
                      LinkSession::Role::caller, answerer.name);
        out.caller = co_await s.run();
        boost::system::error_code ignored;
        a.close(ignored);
      },
      boost::asio::detached);
  io.run_for(std::chrono::seconds(60));
  return out;
}

std::string body(const std::string& tag) {
  std::string b = "Subject: " + tag + "\r\nFrom: x@y\r\n\r\n";
  for (int i = 0; i < 40; ++i) b += tag + " line " + std::to_string(i) + "\r\n";
  return b;
}

std::string new_psk() {
  std::string bytes, error;
  EXPECT_TRUE(parse_psk(generate_psk(), bytes, error)) << error;
  return bytes;
}

// Mail both ways in one call, authenticated by a PSK alone; the line
// overhead before the first message byte stays under 2 KiB each way.
TEST(LinkPsk, MailBothWaysWithPskAndNoCertificates) {
  PskOffice a("a", "a.example", "alice"), b("b", "b.example", "bob");
  std::string key = new_psk();
  a.know(b, key);
  b.know(a, key);
  a.submit("bob@b.example", body("to-b"));
  b.submit("alice@a.example", body("to-a"));

  Call c = place_call(a, b);
  ASSERT_FALSE(c.caller.ec) << c.caller.ec.message();
  ASSERT_FALSE(c.answerer.ec) << c.answerer.ec.message();
  EXPECT_EQ(c.caller.peer, "b");
  EXPECT_EQ(c.answerer.peer, "a");
  EXPECT_EQ(c.caller.result, "ok");
  ASSERT_EQ(b.maildir().size(), 1u);
  ASSERT_EQ(a.maildir().size(), 1u);
  EXPECT_NE(b.maildir()[0].find("to-b line 39"), std::string::npos);
  EXPECT_NE(a.maildir()[0].find("to-a line 39"), std::string::npos);
  EXPECT_EQ(a.messages(), 0u);
  EXPECT_EQ(b.messages(), 0u);

  EXPECT_GT(c.caller.overhead_out, 0u);
  EXPECT_GT(c.answerer.overhead_out, 0u);
  EXPECT_LT(c.caller.overhead_out, 2048u);
  EXPECT_LT(c.answerer.overhead_out, 2048u);
  std::cerr << "PSK overhead before the first message byte: caller "
            << c.caller.overhead_out << " B, answerer "
            << c.answerer.overhead_out << " B\n";
}

// A caller with the wrong key is refused at the handshake; the answerer
// logs it, sends it nothing, and keeps the mail for the real peer.
TEST(LinkPsk, StrangerWithWrongKeyIsRefusedAndLogged) {
  PskOffice a("a", "a.example", "alice"), s("b", "b.example", "mallory");
  std::string key = new_psk();
  a.know(s, key);        // a expects b's key ...
  s.know(a, new_psk());  // ... the stranger has another
  a.submit("bob@b.example", body("for-real-b"));
  s.submit("alice@a.example", body("intruder"));

  testing::internal::CaptureStderr();
  Call c = place_call(s, a);
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(c.caller.ec);
  EXPECT_EQ(c.answerer.result, "auth failed");
  EXPECT_EQ(c.answerer.peer, "");
  EXPECT_NE(log.find("auth=failed"), std::string::npos) << log;
  EXPECT_EQ(c.caller.messages_in, 0u);
  EXPECT_EQ(c.answerer.body_bytes_out, 0u);
  EXPECT_EQ(c.caller.body_bytes_out, 0u);
  EXPECT_TRUE(a.maildir().empty());
  EXPECT_EQ(a.messages(), 1u);  // still waiting for the real b
}

}  // namespace
}  // namespace ferry::gw
