// The link session between two real spools, over loopback TCP through an
// in-test relay that counts the bytes and can cut the line after N bytes
// (the carrier drop).  Both sides run in one io_context.
#include "gateway/link_session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using boost::asio::ip::tcp;

class LinkTempDir {
 public:
  LinkTempDir() {
    std::string tmpl =
        (fs::temp_directory_path() / "ferry-link-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~LinkTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One ferry office: its spool, users, routes and TLS identity.
struct Office {
  std::string name, domain, user;
  LinkTempDir dir;
  std::unique_ptr<queue::Spool> spool;
  std::unique_ptr<Users> users;
  std::unique_ptr<ConfigRouter> router;
  PeerIdentity id;
  std::unique_ptr<PeerTls> client, server;
  LinkContext ctx;
  std::vector<queue::QueueId> failed;  // on_failed calls

  Office(std::string n, std::string d, std::string u)
      : name(std::move(n)), domain(std::move(d)), user(std::move(u)) {
    std::error_code ec;
    fs::create_directories(dir.path() + "/spool");
    fs::create_directories(dir.path() + "/mail");
    queue::Options o;
    o.log = false;
    spool = queue::Spool::open(dir.path() + "/spool", o, ec);
    EXPECT_TRUE(spool) << ec.message();
    std::string error;
    users = Users::parse(user + ":!\n", "users", "", "aliases", error);
    EXPECT_TRUE(users) << error;
    EXPECT_TRUE(generate_identity(name, id, error)) << error;
  }

  // Knows `other` as a peer (its domains, its certificate).
  void pin(const Office& other, std::vector<std::string> extra_peers = {}) {
    RouterConfig rc;
    rc.local_domains = {domain};
    rc.peers.push_back({other.name, {other.domain}});
    for (auto& p : extra_peers) rc.peers.push_back({p, {p + ".example"}});
    router = std::make_unique<ConfigRouter>(rc);
    std::string error;
    std::vector<PinnedPeer> pins{
        {other.name, cert_fingerprint(other.id.cert_pem)}};
    client = PeerTls::make(id, pins, false, error);
    server = PeerTls::make(id, pins, true, error);
    ASSERT_TRUE(client && server) << error;
    ctx.spool = spool.get();
    ctx.router = router.get();
    ctx.users = users.get();
    ctx.mail_root = dir.path() + "/mail";
    ctx.tls_client = client.get();
    ctx.tls_server = server.get();
    ctx.options.hostname = name + ".example";
    ctx.options.timeout = std::chrono::seconds(10);
    ctx.options.atrn_domains = {domain};
    ctx.on_failed = [this](const queue::QueueId& q) { failed.push_back(q); };
  }

  queue::QueueId submit(const std::string& rcpt, const std::string& body) {
    queue::NewMessage m;
    m.sender = "sender@" + domain;
    m.body = body;
    std::string d = rcpt.substr(rcpt.find('@') + 1);
    m.recipients.push_back({rcpt, "", 0, router->route_for(d)});
    queue::QueueId id;
    EXPECT_FALSE(spool->submit(std::move(m), id));
    return id;
  }

  // Bodies in the user's Maildir (new/), sorted.
  std::vector<std::string> maildir(const std::string& u = "") const {
    std::vector<std::string> out;
    fs::path p = fs::path(ctx.mail_root) / (u.empty() ? user : u) / "new";
    std::error_code ec;
    for (auto& e : fs::directory_iterator(p, ec)) {
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

struct CallOutcome {
  CallResult caller, answerer;
  uint64_t up = 0, down = 0;  // relay: caller->answerer, answerer->caller
  bool cut = false;
};

// The relay: passes bytes both ways and hangs up after `limit` bytes in
// total (both directions), as a carrier drop would.
struct Relay {
  uint64_t limit;
  uint64_t passed = 0, up = 0, down = 0;
  bool cut = false;
  tcp::socket a, b;

  Relay(boost::asio::io_context& io, uint64_t l) : limit(l), a(io), b(io) {}

  void hang_up() {
    boost::system::error_code ignored;
    a.close(ignored);
    b.close(ignored);
  }

  boost::asio::awaitable<void> pump(tcp::socket& from, tcp::socket& to,
                                    uint64_t& count) {
    char buf[4096];
    auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
    for (;;) {
      auto [e, n] =
          co_await from.async_read_some(boost::asio::buffer(buf), tok);
      if (e) break;
      uint64_t allow = std::min<uint64_t>(n, limit - passed);
      if (allow > 0) {
        auto [we, wn] = co_await boost::asio::async_write(
            to, boost::asio::buffer(buf, allow), tok);
        if (we) break;
      }
      passed += allow;
      count += allow;
      if (allow < n || passed >= limit) {
        cut = true;
        break;
      }
    }
    hang_up();
  }
};

// Places one call from `caller` to `answerer`, cut after `limit` bytes.
CallOutcome place_call(Office& caller, Office& answerer,
                       uint64_t limit = UINT64_MAX) {
  boost::asio::io_context io;
  auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
  tcp::acceptor ans_acc(
      io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  tcp::acceptor relay_acc(
      io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  Relay relay(io, limit);
  CallOutcome out;
  tcp::socket ans_sock(io), call_sock(io);

  // The answering side.
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [e] = co_await ans_acc.async_accept(ans_sock, tok);
        if (e) co_return;
        LinkSession s(answerer.ctx, make_link_transport(ans_sock),
                      LinkSession::Role::answerer, "");
        out.answerer = co_await s.run();
      },
      boost::asio::detached);
  // The relay: the caller's connection in, the answerer's out.
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [e] = co_await relay_acc.async_accept(relay.a, tok);
        if (e) co_return;
        auto [ce] =
            co_await relay.b.async_connect(ans_acc.local_endpoint(), tok);
        if (ce) co_return;
        boost::asio::co_spawn(io, relay.pump(relay.b, relay.a, relay.down),
                              boost::asio::detached);
        co_await relay.pump(relay.a, relay.b, relay.up);
      },
      boost::asio::detached);
  // The caller.
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [e] =
            co_await call_sock.async_connect(relay_acc.local_endpoint(), tok);
        if (e) co_return;
        LinkSession s(caller.ctx, make_link_transport(call_sock),
                      LinkSession::Role::caller, answerer.name);
        out.caller = co_await s.run();
      },
      boost::asio::detached);
  io.run();
  out.up = relay.up;
  out.down = relay.down;
  out.cut = relay.cut;
  return out;
}

// A body of `lines` lines that compresses only a little.
std::string make_body(const std::string& tag, int lines) {
  std::string b = "Subject: " + tag + "\r\nFrom: x@y\r\n\r\n";
  uint32_t x = 2166136261u;
  for (char c : tag) x = (x ^ static_cast<unsigned char>(c)) * 16777619u;
  for (int i = 0; i < lines; ++i) {
    for (int j = 0; j < 60; ++j) {
      x = x * 1103515245u + 12345u;
      b += static_cast<char>('!' + (x >> 16) % 90);
    }
    b += "\r\n";
  }
  return b;
}

class LinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_.pin(b_);
    b_.pin(a_);
  }
  Office a_{"a", "a.example", "alice"};
  Office b_{"b", "b.example", "bob"};
};

std::vector<std::string> corpus_files() {
  std::vector<std::string> out;
  fs::path dir = fs::path(FERRY_SHARED_DIR) / "corpus" / "messages";
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".eml") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  if (out.size() > 30) out.resize(30);
  return out;
}

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Corpus mail both ways in one call; the Maildirs hold exactly what each
// sender's spool held, byte for byte.
void corpus_both_ways(Office& caller, Office& answerer) {
  std::vector<std::string> files = corpus_files();
  if (files.empty()) GTEST_SKIP() << "no corpus under " << FERRY_SHARED_DIR;
  std::vector<std::string> to_a, to_b;
  for (size_t i = 0; i < files.size(); ++i) {
    std::string body = read_file(files[i]);
    Office& from = i % 2 ? caller : answerer;
    Office& to = i % 2 ? answerer : caller;
    queue::QueueId q = from.submit(to.user + "@" + to.domain, body);
    std::string stored;
    ASSERT_FALSE(from.spool->read_body(q, stored));
    (i % 2 ? to_b : to_a).push_back(stored);
  }
  CallOutcome c = place_call(caller, answerer);
  EXPECT_FALSE(c.caller.ec) << c.caller.ec.message();
  EXPECT_FALSE(c.answerer.ec) << c.answerer.ec.message();
  std::sort(to_a.begin(), to_a.end());
  std::sort(to_b.begin(), to_b.end());
  EXPECT_EQ(caller.maildir(), to_a);
  EXPECT_EQ(answerer.maildir(), to_b);
  EXPECT_EQ(c.caller.messages_out, to_b.size());
  EXPECT_EQ(c.caller.messages_in, to_a.size());
  EXPECT_EQ(caller.messages(), 0u);  // all delivered: both spools empty
  EXPECT_EQ(answerer.messages(), 0u);
  std::vector<queue::CallRecord> calls;
  ASSERT_FALSE(caller.spool->calls(0, calls));
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].peer, answerer.name);
  EXPECT_EQ(calls[0].messages_out, to_b.size());
  EXPECT_EQ(calls[0].result, "ok");
}

TEST_F(LinkTest, CorpusBothWaysCallPlacedByA) { corpus_both_ways(a_, b_); }
TEST_F(LinkTest, CorpusBothWaysCallPlacedByB) { corpus_both_ways(b_, a_); }

TEST_F(LinkTest, NothingEitherWayEndsCleanly) {
  CallOutcome c = place_call(a_, b_);
  EXPECT_FALSE(c.caller.ec);
  EXPECT_FALSE(c.answerer.ec);
  EXPECT_EQ(c.caller.peer, "b");
  EXPECT_EQ(c.answerer.peer, "a");
}

// Line overhead from connect to the first message byte, each way, with
// TLS and mutual authentication: under 2 KiB.
TEST_F(LinkTest, LineOverheadUnderTwoKiBEachWay) {
  a_.submit("bob@b.example", make_body("to-b", 20));
  b_.submit("alice@a.example", make_body("to-a", 20));
  CallOutcome c = place_call(a_, b_);
  ASSERT_FALSE(c.caller.ec);
  ASSERT_EQ(a_.maildir().size(), 1u);
  ASSERT_EQ(b_.maildir().size(), 1u);
  EXPECT_GT(c.caller.overhead_out, 0u);
  EXPECT_GT(c.answerer.overhead_out, 0u);
  EXPECT_LT(c.caller.overhead_out, 2048u);
  EXPECT_LT(c.answerer.overhead_out, 2048u);
  // The session's own counts agree with the relay's.
  EXPECT_EQ(c.caller.bytes_out, c.up);
  EXPECT_EQ(c.caller.bytes_in, c.down);
}

// The same with a whole batch waiting each way (the peers' benchmark
// payload is 50 messages): fresh messages go without an offer, so the
// bytes before the first message byte do not grow with the batch.
TEST_F(LinkTest, LineOverheadStaysUnderTwoKiBForFiftyMessageBatches) {
  for (int i = 0; i < 50; ++i) {
    a_.submit("bob@b.example", make_body("to-b-" + std::to_string(i), 20));
    b_.submit("alice@a.example", make_body("to-a-" + std::to_string(i), 20));
  }
  CallOutcome c = place_call(a_, b_);
  ASSERT_FALSE(c.caller.ec);
  ASSERT_EQ(a_.maildir().size(), 50u);
  ASSERT_EQ(b_.maildir().size(), 50u);
  // Both directions, from connect to the call's first message byte.
  EXPECT_LT(c.caller.overhead_out, 2048u);
  EXPECT_LT(c.caller.overhead_in, 2048u);
}

// A drop in the middle of a message: the next call resumes from the bytes
// the receiver holds, resending at most the window the sender had out.
TEST_F(LinkTest, CutMessageResumesFromHeldBytes) {
  a_.ctx.options.chunk_size = 2048;
  a_.ctx.options.window_chunks = 1;
  std::string body = make_body("big", 1000);  // ~62 KB, ~50 KB stored
  queue::QueueId q = a_.submit("bob@b.example", body);
  std::string stored;
  ASSERT_FALSE(a_.spool->read_stored_body(q, stored));

  CallOutcome first = place_call(a_, b_, 4000 + stored.size() / 2);
  ASSERT_TRUE(first.cut);
  EXPECT_TRUE(b_.maildir().empty());
  EXPECT_GT(first.answerer.body_bytes_in, 0u);

  CallOutcome second = place_call(a_, b_);
  ASSERT_FALSE(second.caller.ec) << second.caller.ec.message();
  ASSERT_EQ(b_.maildir(), std::vector<std::string>{body});
  // Resumed, not resent: together at most one chunk more than the body.
  EXPECT_LT(second.caller.body_bytes_out, stored.size());
  EXPECT_LE(first.caller.body_bytes_out + second.caller.body_bytes_out,
            stored.size() + a_.ctx.options.chunk_size);
  EXPECT_LE(first.answerer.body_bytes_in + second.answerer.body_bytes_in,
            stored.size() + a_.ctx.options.chunk_size);
  EXPECT_EQ(a_.messages(), 0u);
  EXPECT_EQ(b_.messages(), 0u);
}

// Carrier drops at >= 100 offsets spread over a whole call (greeting, TLS,
// offers, bodies, replies, ATRN, the reverse direction, QUIT): after at
// most three calls every message is in its Maildir exactly once and both
// spools are empty.
TEST_F(LinkTest, DropsAnywhereDeliverExactlyOnce) {
  // Learn the length of a clean call with the same traffic.
  // One message each way, a few chunks each, so that many offsets fall
  // inside a body; kept small because every offset costs real syncs.
  auto load = [](Office& a, Office& b) {
    a.ctx.options.chunk_size = 512;
    b.ctx.options.chunk_size = 512;
    a.submit("bob@b.example", make_body("a0", 40));
    b.submit("alice@a.example", make_body("b0", 40));
  };
  uint64_t total;
  {
    Office a("a", "a.example", "alice"), b("b", "b.example", "bob");
    a.pin(b);
    b.pin(a);
    load(a, b);
    CallOutcome c = place_call(a, b);
    ASSERT_FALSE(c.caller.ec);
    total = c.up + c.down;
  }
  const int kOffsets = 100;
  int resumed = 0;
  for (int i = 0; i < kOffsets; ++i) {
    uint64_t cut = total * i / kOffsets + (i % 7);
    SCOPED_TRACE("cut after " + std::to_string(cut) + " of " +
                 std::to_string(total));
    Office a("a", "a.example", "alice"), b("b", "b.example", "bob");
    a.pin(b);
    b.pin(a);
    load(a, b);
    CallOutcome c = place_call(a, b, cut);
    EXPECT_TRUE(c.cut || cut >= total);
    int calls = 1;
    while ((a.messages() != 0 || b.messages() != 0) && calls < 3) {
      place_call(calls % 2 ? b : a, calls % 2 ? a : b);
      ++calls;
    }
    if (calls > 1) ++resumed;
    std::vector<std::string> want_a{make_body("b0", 40)};
    std::vector<std::string> want_b{make_body("a0", 40)};
    EXPECT_EQ(a.maildir(), want_a);
    EXPECT_EQ(b.maildir(), want_b);
    EXPECT_EQ(a.messages(), 0u);
    EXPECT_EQ(b.messages(), 0u);
    if (HasFailure()) break;
  }
  EXPECT_GT(resumed, kOffsets / 2);
}

// A drop early in a batch: the messages whose last chunk never went out
// are marked as cut (the peer holds at most a part, so failover may send
// them elsewhere), not as lost in transfer (which pins them to this peer).
TEST_F(LinkTest, DropBeforeAMessageEndsMarksItCutNotLost) {
  auto load = [](Office& a) {
    a.ctx.options.chunk_size = 512;
    a.ctx.options.window_chunks = 2;
    std::vector<queue::QueueId> ids;
    for (int i = 0; i < 3; ++i)
      ids.push_back(
          a.submit("bob@b.example", make_body("m" + std::to_string(i), 150)));
    return ids;
  };
  uint64_t total;
  {
    Office a("a", "a.example", "alice"), b("b", "b.example", "bob");
    a.pin(b);
    b.pin(a);
    load(a);
    CallOutcome c = place_call(a, b);
    ASSERT_FALSE(c.caller.ec);
    total = c.up + c.down;
  }
  Office a("a", "a.example", "alice"), b("b", "b.example", "bob");
  a.pin(b);
  b.pin(a);
  std::vector<queue::QueueId> ids = load(a);
  CallOutcome c = place_call(a, b, total / 5);
  ASSERT_TRUE(c.cut);
  for (const auto& id : ids) {
    queue::MessageInfo mi;
    ASSERT_FALSE(a.spool->get(id, mi));
    EXPECT_EQ(mi.recipients.at(0).last_reply, kLinkCutReply) << id;
  }
  EXPECT_TRUE(b.maildir().empty());
}

// A stranger with a certificate nobody pinned gets no further than the
// handshake: no offers, no extension list after TLS; the answerer logs it.
TEST_F(LinkTest, StrangerIsRefusedAndLogged) {
  Office s("b", "b.example", "mallory");  // pretends to be b
  s.pin(a_);
  s.submit("alice@a.example", make_body("intruder", 5));
  a_.submit("bob@b.example", make_body("for-b", 5));

  testing::internal::CaptureStderr();
  CallOutcome c = place_call(s, a_);
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(c.caller.ec);
  EXPECT_EQ(c.answerer.result, "auth failed");
  EXPECT_NE(log.find("auth=failed"), std::string::npos) << log;
  EXPECT_TRUE(a_.maildir().empty());
  EXPECT_TRUE(s.maildir().empty());
  EXPECT_EQ(c.caller.messages_in, 0u);
  EXPECT_EQ(a_.messages(), 1u);  // still waiting for the real b
  // Only the greeting and the short pre-TLS EHLO reply crossed in clear,
  // and the TLS handshake's server flight; no message byte.
  EXPECT_EQ(c.answerer.body_bytes_out, 0u);
  EXPECT_EQ(c.caller.body_bytes_out, 0u);
}

// Without TLS a client sees only the minimal list and 530 to everything.
TEST_F(LinkTest, PlainClientLearnsNothing) {
  a_.submit("bob@b.example", make_body("for-b", 5));
  boost::asio::io_context io;
  tcp::acceptor acc(
      io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket srv(io), cli(io);
  std::string seen;
  CallResult ar;
  auto tok = boost::asio::as_tuple(boost::asio::use_awaitable);
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [e] = co_await acc.async_accept(srv, tok);
        if (e) co_return;
        LinkSession s(a_.ctx, make_link_transport(srv),
                      LinkSession::Role::answerer, "");
        ar = co_await s.run();
      },
      boost::asio::detached);
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [e] = co_await cli.async_connect(acc.local_endpoint(), tok);
        if (e) co_return;
        std::string cmds =
            "EHLO stranger\r\nXOFFER T1 10 abc\r\nMAIL FROM:<x@y>\r\n"
            "RCPT TO:<alice@a.example>\r\nATRN b.example\r\nQUIT\r\n";
        co_await boost::asio::async_write(cli, boost::asio::buffer(cmds), tok);
        char buf[4096];
        for (;;) {
          auto [re, n] =
              co_await cli.async_read_some(boost::asio::buffer(buf), tok);
          if (re) break;
          seen.append(buf, n);
        }
      },
      boost::asio::detached);
  io.run();
  EXPECT_NE(seen.find("STARTTLS"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("XFERRY-OFFER"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("CHUNKING"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("done"), std::string::npos) << seen;
  EXPECT_EQ(seen.find("new"), std::string::npos) << seen;
  size_t refusals = 0;
  for (size_t p = seen.find("530 5.7.0"); p != std::string::npos;
       p = seen.find("530 5.7.0", p + 1)) {
    ++refusals;
  }
  EXPECT_EQ(refusals, 4u) << seen;
  EXPECT_NE(seen.find("221"), std::string::npos);
  EXPECT_EQ(a_.messages(), 1u);
}

// Received mail is routed again: a local user gets a Maildir file, an
// unknown local user is failed with 550 5.1.1 (and the bounce hook runs),
// mail for a third office is queued for that route.
TEST(LinkRouting, ReceivedMailIsRoutedAgain) {
  Office a("a", "a.example", "alice"), b("b", "b.example", "bob");
  a.pin(b);
  b.pin(a, {"c"});
  queue::NewMessage m;
  m.sender = "x@a.example";
  m.envid = "env 42";
  m.ret = queue::Ret::hdrs;
  m.body = make_body("three-ways", 3);
  for (std::string r :
       {"bob@b.example", "nobody@b.example", "carol@c.example"}) {
    m.recipients.push_back(
        {r, "rfc822;" + r, queue::notify_failure | queue::notify_delay, "b"});
  }
  queue::QueueId id;
  ASSERT_FALSE(a.spool->submit(std::move(m), id));

  CallOutcome c = place_call(a, b);
  ASSERT_FALSE(c.caller.ec) << c.caller.ec.message();
  EXPECT_EQ(b.maildir().size(), 1u);
  ASSERT_EQ(b.failed.size(), 1u);
  queue::MessageInfo info;
  ASSERT_FALSE(b.spool->get(b.failed[0], info));
  ASSERT_EQ(info.recipients.size(), 3u);
  EXPECT_EQ(info.recipients[0].state, queue::RecipientState::delivered);
  EXPECT_EQ(info.recipients[1].state, queue::RecipientState::failed);
  EXPECT_NE(info.recipients[1].last_reply.find("550 5.1.1"), std::string::npos);
  EXPECT_EQ(info.recipients[2].state, queue::RecipientState::queued);
  EXPECT_EQ(info.recipients[2].route, "c");
  // DSN parameters travel end to end.
  EXPECT_EQ(info.sender, "x@a.example");
  EXPECT_EQ(info.envid, "env 42");
  EXPECT_EQ(info.ret, queue::Ret::hdrs);
  EXPECT_EQ(info.recipients[2].orcpt, "rfc822;carol@c.example");
  EXPECT_EQ(info.recipients[2].notify,
            queue::notify_failure | queue::notify_delay);
  EXPECT_EQ(a.messages(), 0u);  // the sender handed all three over
}

}  // namespace
}  // namespace ferry::gw
