// POP3 multidrop collection, the parts that need no POP3 server: reading
// envelope recipients and the sender from headers, byte-unstuffing, and
// the errors a run reports before (or instead of) a session.  The session
// itself runs against a real Dovecot in tests/gateway/e2e/pop3_fetch_test.cc.
#include "gateway/pop3_fetch.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <filesystem>
#include <fstream>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using Strings = std::vector<std::string>;

const Strings kDefault{"delivered-to", "x-original-to", "envelope-to"};

TEST(Pop3EnvelopeRecipients, EveryOccurrenceOfTheFirstPresentHeader) {
  std::string m =
      "Return-Path: <s@far.example>\r\n"
      "X-Original-To: ignored@office.example\r\n"
      "Delivered-To: alice@office.example\r\n"
      "Subject: x\r\n"
      "delivered-to: <Bob@Office.Example>\r\n"
      "\r\n"
      "Delivered-To: body@office.example\r\n";
  EXPECT_EQ(envelope_recipients(m, kDefault),
            (Strings{"alice@office.example", "Bob@office.example"}));
}

TEST(Pop3EnvelopeRecipients, FallsBackInOrderAndSplitsLists) {
  std::string m =
      "Envelope-To: a@office.example,\n"
      "  \"Carol\" <c@branch.example> (the branch), a@OFFICE.example\n"
      "X-Original-To: x@office.example\n"
      "\n"
      "body\n";
  EXPECT_EQ(envelope_recipients(m, kDefault), (Strings{"x@office.example"}));
  EXPECT_EQ(envelope_recipients(m, {"envelope-to"}),
            (Strings{"a@office.example", "c@branch.example"}));
}

TEST(Pop3EnvelopeRecipients, DropsWhatIsNotAnAddress) {
  std::string m =
      "Delivered-To: not an address\r\n"
      "Delivered-To: <>\r\n"
      "Delivered-To: nodomain\r\n"
      "\r\n";
  EXPECT_TRUE(envelope_recipients(m, kDefault).empty());
  EXPECT_TRUE(envelope_recipients("Subject: x\r\n\r\n", kDefault).empty());
}

TEST(Pop3ReturnPath, FirstHeaderNullAndAbsent) {
  EXPECT_EQ(return_path("Return-Path: <a@b.example>\r\n"
                        "Return-Path: <c@d.example>\r\n\r\n"),
            "a@b.example");
  EXPECT_EQ(return_path("Return-Path: <>\r\n\r\n"), "");
  EXPECT_EQ(return_path("From: a@b.example\r\n\r\n"), "");
}

TEST(Pop3Unstuff, OnlyALeadingDoubleDotLosesOneDot) {
  EXPECT_EQ(pop3_unstuff(".."), ".");
  EXPECT_EQ(pop3_unstuff("..x"), ".x");
  EXPECT_EQ(pop3_unstuff("...x"), "..x");
  EXPECT_EQ(pop3_unstuff(".x"), ".x");
  EXPECT_EQ(pop3_unstuff("a..b"), "a..b");
}

// Runs fetch_pop3 to completion on a fresh io_context.
Pop3FetchResult run(const PeerConfig& peer, FetchContext& ctx) {
  asio::io_context io;
  Pop3FetchResult out;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        out = co_await fetch_pop3(io.get_executor(), peer, ctx);
      },
      asio::detached);
  io.run();
  return out;
}

class Pop3FetchErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ferry-pop3f-XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "spool");
    queue::Options so;
    so.log = false;
    std::error_code ec;
    spool_ = queue::Spool::open((root_ / "spool").string(), so, ec);
    ASSERT_TRUE(spool_) << ec.message();
    std::ofstream(root_ / "pw") << "secret\n";
    peer_.name = "provider";
    peer_.pop3_user = "ferry";
    peer_.pop3_password_file = (root_ / "pw").string();
    ctx_.spool = spool_.get();
    ctx_.run_pickup = false;
    ctx_.log = [this](std::string_view id, std::string_view text) {
      lines_.push_back(std::string(id) + ": " + std::string(text));
    };
  }
  void TearDown() override {
    spool_.reset();
    fs::remove_all(root_);
  }
  fs::path root_;
  std::unique_ptr<queue::Spool> spool_;
  PeerConfig peer_;
  FetchContext ctx_;
  Strings lines_;
};

TEST_F(Pop3FetchErrors, ServerMustBeAnIpLiteralWithPort) {
  for (std::string bad : {"", "pop.example:110", "127.0.0.1", "127.0.0.1:0",
                          "[::1]110", "127.0.0.1:99999"}) {
    peer_.pop3_server = bad;
    auto r = run(peer_, ctx_);
    EXPECT_EQ(r.ec, pop3_fetch_errc::bad_config) << bad;
    EXPECT_NE(r.error.find("pop3_server must be"), std::string::npos)
        << r.error;
  }
}

TEST_F(Pop3FetchErrors, UnreadablePasswordFileIsNamed) {
  peer_.pop3_server = "127.0.0.1:110";
  peer_.pop3_password_file = (root_ / "missing").string();
  auto r = run(peer_, ctx_);
  EXPECT_EQ(r.ec, pop3_fetch_errc::bad_config);
  EXPECT_NE(r.error.find("missing"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("peer provider"), std::string::npos) << r.error;
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_NE(lines_[0].find("provider: pop3 "), std::string::npos);
  EXPECT_NE(lines_[0].find("result=failed"), std::string::npos);
}

TEST_F(Pop3FetchErrors, RefusedConnectionIsConnectFailed) {
  // A loopback port that was just free: nothing listens there.
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  unsigned short port = a.local_endpoint().port();
  a.close();
  peer_.pop3_server = "127.0.0.1:" + std::to_string(port);
  auto r = run(peer_, ctx_);
  EXPECT_EQ(r.ec, pop3_fetch_errc::connect_failed) << r.error;
  EXPECT_NE(r.error.find("connect"), std::string::npos) << r.error;
}

TEST_F(Pop3FetchErrors, SilentServerTimesOut) {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  peer_.pop3_server = "127.0.0.1:" + std::to_string(a.local_endpoint().port());
  ctx_.timeout = std::chrono::milliseconds(300);
  // The kernel completes the handshake from the backlog; nobody speaks.
  auto r = run(peer_, ctx_);
  EXPECT_EQ(r.ec, pop3_fetch_errc::timeout) << r.error;
  EXPECT_NE(r.error.find("greeting"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace ferry::gw
