// The SMTP server in process, against a real spool in a temporary
// directory: what a client sends in MAIL/RCPT parameters and DATA is what
// the spool record holds (sender, DSN ENVID/RET/NOTIFY/ORCPT, route, body
// with ferry's Received: field in front).
#include "gateway/smtp_session.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gateway/server.h"

namespace ferry::gw {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

class TempDir {
 public:
  TempDir() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "ferry-smtp-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A blocking line client: enough for a scripted conversation.
class Client {
 public:
  explicit Client(unsigned short port) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }
  // Reads one (possibly multi-line) reply; returns its code.
  int reply() {
    while (true) {
      size_t n = asio::read_until(socket_, asio::dynamic_buffer(buf_), "\r\n");
      std::string line = buf_.substr(0, n - 2);
      buf_.erase(0, n);
      if (line.size() < 4 || line[3] != '-') {
        last_ = line;
        return std::stoi(line.substr(0, 3));
      }
    }
  }
  int cmd(const std::string& line) {
    asio::write(socket_, asio::buffer(line + "\r\n"));
    return reply();
  }
  void send(const std::string& bytes) {
    asio::write(socket_, asio::buffer(bytes));
  }
  const std::string& last() const { return last_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  std::string buf_;
  std::string last_;
};

unsigned short free_port() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

class SmtpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = free_port();
    std::string text =
        "[ferryd]\nhostname = mx.test.example\nspool = " + dir_.path() +
        "/spool\ncontrol_socket = " + dir_.path() + "/ctl.sock\n"
        "[listener test]\naddress = 127.0.0.1:" +
        std::to_string(port_) +
        "\n[smtp]\ngreeting_pause = 0s\n"
        "[local]\ndomains = test.example\nmail_root = " +
        dir_.path() +
        "/mail\n"
        "[rules]\noffice_networks = 127.0.0.0/8\n";
    std::string error;
    ASSERT_TRUE(parse_config(text, "test.conf", cfg_, error)) << error;
    users_ = Users::parse("alice:!\n", "users", "", "aliases", error);
    ASSERT_TRUE(users_) << error;
    std::filesystem::create_directories(dir_.path() + "/spool");
    std::filesystem::create_directories(dir_.path() + "/mail");
    std::error_code ec;
    queue::Options opts;
    opts.before_commit_hook = [this]() -> std::error_code {
      if (fail_sync_) return std::make_error_code(std::errc::io_error);
      return {};
    };
    spool_ = queue::Spool::open(dir_.path() + "/spool", opts, ec);
    ASSERT_TRUE(spool_) << ec.message();
    policy_ = std::make_unique<Policy>(cfg_, *users_);
    server_ = std::make_unique<Server>(cfg_, *users_, *policy_, *spool_);
    ASSERT_TRUE(server_->start(error)) << error;
    thread_ = std::thread([this] { server_->run(); });
  }

  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
    server_.reset();
    spool_.reset();
  }

  TempDir dir_;
  unsigned short port_ = 0;
  Config cfg_;
  std::unique_ptr<Users> users_;
  std::unique_ptr<queue::Spool> spool_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  std::atomic<bool> fail_sync_{false};
};

// Sends one message to `rcpts`; returns the final reply code.
int send_message(Client& c, const std::vector<std::string>& rcpts) {
  if (c.cmd("MAIL FROM:<sender@remote.example>") != 250) return -1;
  for (const auto& r : rcpts) {
    if (c.cmd("RCPT TO:<" + r + ">") != 250) return -2;
  }
  if (c.cmd("DATA") != 354) return -3;
  c.send("Subject: t\r\n\r\nbody\r\n.\r\n");
  return c.reply();
}

TEST_F(SmtpServerTest, DsnParametersAndBodyReachTheSpoolRecord) {
  Client c(port_);
  ASSERT_EQ(c.reply(), 220);
  ASSERT_EQ(c.cmd("EHLO client.example"), 250);
  ASSERT_EQ(c.cmd("MAIL FROM:<sender@remote.example> RET=HDRS "
                  "ENVID=env+2B42 SIZE=100"),
            250)
      << c.last();
  ASSERT_EQ(c.cmd("RCPT TO:<far@remote.example> NOTIFY=SUCCESS,DELAY "
                  "ORCPT=rfc822;far+40remote.example"),
            250)
      << c.last();
  ASSERT_EQ(c.cmd("DATA"), 354);
  c.send("Subject: dsn\r\n\r\n..dot\r\n.\r\n");
  ASSERT_EQ(c.reply(), 250) << c.last();
  EXPECT_EQ(c.cmd("QUIT"), 221);

  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  ASSERT_EQ(all.size(), 1u);
  const auto& m = all[0];
  EXPECT_EQ(m.sender, "sender@remote.example");
  EXPECT_EQ(m.envid, "env+2B42");
  EXPECT_EQ(m.ret, queue::Ret::hdrs);
  ASSERT_EQ(m.recipients.size(), 1u);
  EXPECT_EQ(m.recipients[0].address, "far@remote.example");
  EXPECT_EQ(m.recipients[0].orcpt, "rfc822;far+40remote.example");
  EXPECT_EQ(m.recipients[0].notify,
            queue::notify_success | queue::notify_delay);
  EXPECT_EQ(m.recipients[0].route, "smarthost");

  std::string body;
  ASSERT_FALSE(spool_->read_body(m.id, body));
  EXPECT_EQ(body.rfind("Received: from client.example ([127.0.0.1])", 0), 0u);
  EXPECT_NE(body.find("\r\n\twith ESMTP id "), std::string::npos);
  EXPECT_NE(body.find("\r\n\tfor <far@remote.example>; "), std::string::npos);
  std::string tail = "Subject: dsn\r\n\r\n.dot\r\n";
  ASSERT_GE(body.size(), tail.size());
  EXPECT_EQ(body.substr(body.size() - tail.size()), tail);
}

TEST_F(SmtpServerTest, NullSenderIsStoredEmpty) {
  Client c(port_);
  ASSERT_EQ(c.reply(), 220);
  ASSERT_EQ(c.cmd("HELO client.example"), 250);
  ASSERT_EQ(c.cmd("MAIL FROM:<>"), 250) << c.last();
  ASSERT_EQ(c.cmd("RCPT TO:<far@remote.example>"), 250) << c.last();
  ASSERT_EQ(c.cmd("DATA"), 354);
  c.send("Subject: bounce\r\n\r\nx\r\n.\r\n");
  ASSERT_EQ(c.reply(), 250) << c.last();
  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].sender, "");
}

TEST_F(SmtpServerTest, SpoolSyncFailureIs451AndTheRetrySucceeds) {
  Client c(port_);
  ASSERT_EQ(c.reply(), 220);
  ASSERT_EQ(c.cmd("EHLO client.example"), 250);
  fail_sync_ = true;
  EXPECT_EQ(send_message(c, {"far@remote.example"}), 451);
  EXPECT_EQ(c.last().substr(0, 9), "451 4.3.1");
  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_TRUE(all.empty());

  fail_sync_ = false;
  EXPECT_EQ(send_message(c, {"far@remote.example"}), 250) << c.last();
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), 1u);
}

// A local delivery that fails refuses the whole message, and the remote
// copy is not spooled either: nothing is half-acknowledged.
TEST_F(SmtpServerTest, LocalDeliveryFailureIs451ForTheWholeMessage) {
  std::filesystem::remove_all(dir_.path() + "/mail");
  std::ofstream(dir_.path() + "/mail") << "not a directory\n";
  Client c(port_);
  ASSERT_EQ(c.reply(), 220);
  ASSERT_EQ(c.cmd("EHLO client.example"), 250);
  EXPECT_EQ(send_message(c, {"alice@test.example", "far@remote.example"}), 451);
  EXPECT_EQ(c.last().substr(0, 9), "451 4.3.0");
  std::vector<queue::MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_TRUE(all.empty());
}

}  // namespace
}  // namespace ferry::gw
