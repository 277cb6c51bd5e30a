// gateway/control.h: the control socket server with a real spool, a real
// Unix socket and, for the credential check, a real second user (a forked
// child that drops to uid 65534; needs root, skipped otherwise).
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <thread>

#include "gateway/control.h"
#include "gateway/json.h"

namespace ferry::gw {
namespace {

namespace asio = boost::asio;
using json::Value;

// Connects, sends lines, reads reply lines.
class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    connected_ =
        ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  }
  ~Client() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send(const std::string& line) {
    std::string l = line + "\n";
    (void)!::send(fd_, l.data(), l.size(), MSG_NOSIGNAL);
  }
  // One reply line parsed; null on timeout or end of stream.
  Value read() {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        Value v;
        std::string error;
        EXPECT_TRUE(json::parse(buf_.substr(0, nl), v, error)) << error;
        buf_.erase(0, nl + 1);
        return v;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return Value();
      char b[4096];
      ssize_t n = ::read(fd_, b, sizeof b);
      if (n <= 0) return Value();
      buf_.append(b, static_cast<size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

// Emits n progress events 5 ms apart, then the final reply.
struct Stepper : std::enable_shared_from_this<Stepper> {
  Stepper(asio::io_context& io, std::shared_ptr<ControlReply> reply,
          int64_t count)
      : timer(io), r(std::move(reply)), n(count) {}
  void step(int64_t k) {
    if (k == n) {
      Value done;
      done["outcome"] = "ok";
      r->done(done);
      return;
    }
    Value p;
    p["phase"] = "sending";
    p["messages_done"] = k;
    p["messages_total"] = n;
    r->progress(p);
    timer.expires_after(std::chrono::milliseconds(5));
    timer.async_wait(
        [self = shared_from_this(), k](auto) { self->step(k + 1); });
  }
  asio::steady_timer timer;
  std::shared_ptr<ControlReply> r;
  int64_t n;
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-control-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ::chmod(dir_.c_str(), 0755);
    std::filesystem::create_directory(dir_ + "/spool");
    std::error_code ec;
    queue::Options o;
    o.log = false;
    spool_ = queue::Spool::open(dir_ + "/spool", o, ec);
    ASSERT_TRUE(spool_) << ec.message();
    opts_.path = dir_ + "/ctl.sock";
  }
  void TearDown() override {
    stop();
    server_.reset();
    spool_.reset();
    std::filesystem::remove_all(dir_);
  }
  // Creates the server; register() runs before start().
  bool start(std::string& error,
             std::function<void(ControlServer&)> setup = nullptr) {
    server_ = std::make_unique<ControlServer>(io_, *spool_, opts_);
    if (setup) setup(*server_);
    if (!server_->start(error)) return false;
    work_.emplace(asio::make_work_guard(io_));
    thread_ = std::thread([this] { io_.run(); });
    return true;
  }
  void stop() {
    if (!thread_.joinable()) return;
    std::promise<void> done;
    asio::post(io_, [&] {
      server_->stop();
      done.set_value();
    });
    done.get_future().wait();
    work_.reset();
    thread_.join();
  }
  queue::QueueId submit(const std::string& sender, const std::string& rcpt,
                        const std::string& route) {
    queue::NewMessage m;
    m.sender = sender;
    m.body = "Subject: t\r\n\r\nhello\r\n";
    m.recipients.push_back({rcpt, "", 0, route});
    queue::QueueId id;
    EXPECT_FALSE(spool_->submit(std::move(m), id));
    return id;
  }

  std::string dir_;
  std::unique_ptr<queue::Spool> spool_;
  ControlOptions opts_;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>>
      work_;
  std::unique_ptr<ControlServer> server_;
  std::thread thread_;
};

TEST_F(ControlServerTest, SocketHasModeAndAnswersStatus) {
  std::string error;
  ASSERT_TRUE(start(error)) << error;
  struct stat st {};
  ASSERT_EQ(::lstat(opts_.path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  submit("a@x.example", "b@branch.example", "branch");
  Client c(opts_.path);
  ASSERT_TRUE(c.connected());
  c.send(R"({"cmd":"status"})");
  Value r = c.read();
  ASSERT_TRUE(r["ok"].as_bool()) << json::write(r);
  EXPECT_EQ(r["result"]["modems_note"].as_string(), "no modems configured");
  ASSERT_EQ(r["result"]["peers"].as_array().size(), 1u);
  EXPECT_EQ(r["result"]["peers"].as_array()[0]["name"].as_string(), "branch");
  EXPECT_EQ(r["result"]["spool"]["messages"].as_int(), 1);
}

TEST_F(ControlServerTest, RegisteredCommandStreamsProgressThenReplies) {
  // The shape a call manager will use: keep the reply, emit progress
  // from timers, finish later.
  std::string error;
  ASSERT_TRUE(start(error, [this](ControlServer& s) {
    s.add_command(
        "demo",
        [this](const Value& args, std::shared_ptr<ControlReply> r) {
          auto job = std::make_shared<Stepper>(io_, r, args["n"].as_int());
          job->step(0);
        },
        "a test command");
    s.add_status_provider("modems", [] {
      Value m;
      m["name"] = "ttyS0";
      m["state"] = "idle";
      return Value(json::Array{m});
    });
  })) << error;

  Client c(opts_.path);
  c.send(R"({"cmd":"demo","args":{"n":3}})");
  for (int k = 0; k < 3; ++k) {
    Value p = c.read();
    ASSERT_TRUE(p.has("progress")) << json::write(p);
    EXPECT_EQ(p["progress"]["messages_done"].as_int(), k);
  }
  Value r = c.read();
  EXPECT_TRUE(r["ok"].as_bool());
  EXPECT_EQ(r["result"]["outcome"].as_string(), "ok");

  // The same connection takes the next request; the provider replaced
  // the built-in modems section.
  c.send("status");
  r = c.read();
  EXPECT_EQ(r["result"]["modems"].as_array().size(), 1u);
  EXPECT_FALSE(r["result"].has("modems_note"));
}

TEST_F(ControlServerTest, DroppedReplyStillAnswers) {
  std::string error;
  ASSERT_TRUE(start(error, [](ControlServer& s) {
    s.add_command(
        "forgetful", [](const Value&, std::shared_ptr<ControlReply>) {},
        "never answers");
  })) << error;
  Client c(opts_.path);
  c.send("forgetful");
  Value r = c.read();
  EXPECT_FALSE(r["ok"].as_bool(true));
  EXPECT_EQ(r["error"]["code"].as_string(), "failed");
}

TEST_F(ControlServerTest, DialIsNotAvailableYet) {
  std::string error;
  ASSERT_TRUE(start(error)) << error;
  Client c(opts_.path);
  c.send(R"({"cmd":"dial","args":{"peer":"branch","wait":true}})");
  Value r = c.read();
  EXPECT_EQ(r["error"]["code"].as_string(), "not_available");
  EXPECT_EQ(r["error"]["message"].as_string(),
            "not available yet: the dial scheduler is not running in this "
            "ferryd");
}

TEST_F(ControlServerTest, RefusesWorldWritableDirectory) {
  ::chmod(dir_.c_str(), 01777);
  std::string error;
  EXPECT_FALSE(start(error));
  EXPECT_NE(error.find("world-writable"), std::string::npos) << error;
  EXPECT_FALSE(std::filesystem::exists(opts_.path));
}

TEST_F(ControlServerTest, RefusesAPathThatIsNotASocket) {
  { std::ofstream(opts_.path) << "x"; }
  std::string error;
  EXPECT_FALSE(start(error));
  EXPECT_NE(error.find("not a socket"), std::string::npos) << error;
}

TEST_F(ControlServerTest, RefusesSocketOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, opts_.path.c_str(), sizeof sa.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ::close(fd);
  ASSERT_EQ(::chown(opts_.path.c_str(), 65534, 65534), 0);
  std::string error;
  EXPECT_FALSE(start(error));
  EXPECT_NE(error.find("belongs to uid 65534"), std::string::npos) << error;
}

TEST_F(ControlServerTest, PeerCredentialsRefuseOtherUsers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  opts_.mode = 0666;  // the file lets anyone in: SO_PEERCRED must not
  std::string error;
  ASSERT_TRUE(start(error)) << error;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Child: become nobody with no groups, ask, report by exit status.
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 ||
        ::setuid(65534) != 0) {
      ::_exit(10);
    }
    Client c(opts_.path);
    if (!c.connected()) ::_exit(11);
    c.send("status");
    Value r = c.read();
    ::_exit(r["error"]["code"].as_string() == "permission" ? 0 : 12);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ControlViews, QueueFilterMatches) {
  queue::MessageInfo m;
  m.sender = "Alice@Office.Example";
  auto now = queue::Clock::now();
  m.arrival = now - std::chrono::hours(3);
  queue::RecipientInfo r;
  r.address = "bob@branch.example";
  r.route = "branch";
  m.recipients.push_back(r);

  QueueFilter f;
  EXPECT_TRUE(f.matches(m, now));
  f.sender = "@office.example";
  EXPECT_TRUE(f.matches(m, now));
  f.older_than = 2 * 3600;
  EXPECT_TRUE(f.matches(m, now));
  f.older_than = 4 * 3600;
  EXPECT_FALSE(f.matches(m, now));
  f = QueueFilter{};
  f.route = "branch";
  EXPECT_TRUE(f.matches(m, now));
  m.recipients[0].state = queue::RecipientState::delivered;
  EXPECT_FALSE(f.matches(m, now));  // nothing waits for it any more
  f = QueueFilter{};
  f.recipient = "BOB@branch.example";
  EXPECT_TRUE(f.matches(m, now));
}

TEST(ControlViews, LineEfficiency) {
  // 2400 bps for 10 s carries at most 2400 bytes of 8N1.
  EXPECT_DOUBLE_EQ(*line_efficiency(1200, 2400, 10), 0.5);
  EXPECT_FALSE(line_efficiency(1200, 0, 10));
  EXPECT_FALSE(line_efficiency(1200, 2400, 0));
}

}  // namespace
}  // namespace ferry::gw
