#include "gateway/pop3_session.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <fstream>
#include <istream>
#include <thread>

#include "gateway/pop3_server.h"

namespace ferry::gw {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;

// A real listener on 127.0.0.1:0 served by its own io_context thread, and
// blocking clients.  Mail for alice: two messages.
class Pop3SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-pop3s-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (const char* d : {"alice/new", "alice/cur", "alice/tmp"}) {
      fs::create_directories(root_ / d);
    }
    std::ofstream(root_ / "alice/new/1.a") << "Subject: one\n\nbody\n";
    std::ofstream(root_ / "alice/new/2.b") << "Subject: two\r\n\r\nx\r\n";
    std::string error;
    users_ = Users::parse("alice:" + hash_password("pw", 1000) + "\n", "users",
                          "", "aliases", error);
    ASSERT_TRUE(users_) << error;
  }

  void start(Pop3Options o) {
    o.address = "127.0.0.1:0";
    o.mail_root = root_;
    std::string error;
    listener_ = run_pop3_listener(io_, o, *users_, nullptr, nullptr, error);
    ASSERT_TRUE(listener_) << error;
    thread_ = std::thread([this] { io_.run(); });
  }

  void TearDown() override {
    if (listener_) {
      asio::post(io_, [this] { listener_->stop(); });
      thread_.join();
      listener_.reset();
    }
    fs::remove_all(root_);
  }

  // A blocking client: connect, and one reply line per command.
  struct Client {
    asio::io_context io;
    tcp::socket s{io};
    asio::streambuf buf;
    std::string line() {
      boost::system::error_code ec;
      asio::read_until(s, buf, "\r\n", ec);
      if (ec) return "<" + ec.message() + ">";
      std::istream in(&buf);
      std::string l;
      std::getline(in, l);
      if (!l.empty() && l.back() == '\r') l.pop_back();
      return l;
    }
    void send(std::string_view text) { asio::write(s, asio::buffer(text)); }
  };
  std::unique_ptr<Client> connect() {
    auto c = std::make_unique<Client>();
    c->s.connect(listener_->local_endpoint());
    return c;
  }

  fs::path root_;
  std::unique_ptr<Users> users_;
  asio::io_context io_;
  std::unique_ptr<Pop3Listener> listener_;
  std::thread thread_;
};

TEST_F(Pop3SessionTest, PipelinedCommandsAnsweredInOrder) {
  Pop3Options o;
  o.trusted_local = true;
  start(o);
  auto c = connect();
  EXPECT_EQ(c->line().substr(0, 3), "+OK");
  c->send("USER alice\r\nPASS pw\r\nSTAT\r\nLIST 2\r\nUIDL 1\r\nQUIT\r\n");
  EXPECT_EQ(c->line(), "+OK send PASS");
  EXPECT_EQ(c->line().substr(0, 3), "+OK");
  EXPECT_EQ(c->line(), "+OK 2 41");
  EXPECT_EQ(c->line(), "+OK 2 19");
  EXPECT_EQ(c->line(), "+OK 1 1.a");
  EXPECT_EQ(c->line().substr(0, 3), "+OK");
}

TEST_F(Pop3SessionTest, CommandsOutOfStateAndUnknownAreRefused) {
  Pop3Options o;
  o.trusted_local = true;
  start(o);
  auto c = connect();
  c->line();
  c->send("STAT\r\nPASS pw\r\nAPOP alice x\r\nXYZZY\r\nSTLS\r\n");
  EXPECT_EQ(c->line(), "-ERR not valid before login");
  EXPECT_EQ(c->line(), "-ERR send USER first");
  EXPECT_EQ(c->line(), "-ERR not supported; use USER and PASS");
  EXPECT_EQ(c->line(), "-ERR unknown command");
  EXPECT_EQ(c->line(), "-ERR TLS not available");
  c->send(
      "USER alice\r\nPASS pw\r\nUSER bob\r\nRETR 9\r\nDELE x\r\n"
      "DELE 1\r\nDELE 1\r\nTOP 2\r\n");
  c->line();
  c->line();
  EXPECT_EQ(c->line(), "-ERR not valid after login");
  EXPECT_EQ(c->line(), "-ERR no such message");
  EXPECT_EQ(c->line(), "-ERR expected a message number");
  EXPECT_EQ(c->line(), "+OK message 1 deleted");
  EXPECT_EQ(c->line(), "-ERR message 1 is deleted");
  EXPECT_EQ(c->line(), "-ERR usage: TOP message lines");
}

TEST_F(Pop3SessionTest, OverlongLineClosesTheSession) {
  start(Pop3Options{});
  auto c = connect();
  c->line();
  c->send(std::string(2000, 'A'));
  EXPECT_EQ(c->line(), "-ERR line too long");
  EXPECT_EQ(c->line().front(), '<');  // closed
}

TEST_F(Pop3SessionTest, TooManyFailedLoginsCloseTheSession) {
  Pop3Options o;
  o.trusted_local = true;
  o.max_failed_logins = 2;
  start(o);
  auto c = connect();
  c->line();
  c->send("USER alice\r\nPASS no\r\nUSER alice\r\nPASS no\r\n");
  c->line();
  EXPECT_EQ(c->line(), "-ERR [AUTH] invalid user name or password");
  c->line();
  EXPECT_EQ(c->line(), "-ERR [AUTH] invalid user name or password");
  EXPECT_EQ(c->line().front(), '<');
}

TEST_F(Pop3SessionTest, SessionLimitAnswersBusy) {
  Pop3Options o;
  o.max_sessions = 1;
  start(o);
  auto first = connect();
  EXPECT_EQ(first->line().substr(0, 3), "+OK");
  auto second = connect();
  EXPECT_EQ(second->line(),
            "-ERR [SYS/TEMP] too many sessions, try again later");
}

TEST_F(Pop3SessionTest, StopEndsSessionsWithoutUpdate) {
  Pop3Options o;
  o.trusted_local = true;
  start(o);
  auto c = connect();
  c->line();
  c->send("USER alice\r\nPASS pw\r\nDELE 1\r\n");
  c->line();
  c->line();
  EXPECT_EQ(c->line(), "+OK message 1 deleted");
  asio::post(io_, [this] { listener_->stop(); });
  EXPECT_EQ(c->line(), "-ERR [SYS/TEMP] server shutting down");
  thread_.join();  // run() returns: nothing is left running
  listener_.reset();
  EXPECT_TRUE(fs::exists(root_ / "alice/new/1.a"));
}

}  // namespace
}  // namespace ferry::gw
