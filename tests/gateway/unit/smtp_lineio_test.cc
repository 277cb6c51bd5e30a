// SmtpLineIo (gateway/smtp_lineio.h) over a real local socket pair: the
// far end is the other socket, written and read directly by the test.
#include "gateway/smtp_lineio.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <functional>

#include "gateway/log.h"

namespace ferry::gw {
namespace {

using Socket = boost::asio::local::stream_protocol::socket;
using namespace std::chrono_literals;

struct Line {
  boost::asio::io_context io_ctx;
  Socket ours{io_ctx}, far{io_ctx};
  std::unique_ptr<LinkTransport> t;
  std::error_code ec;
  std::string why;
  std::unique_ptr<SmtpLineIo> io;

  explicit Line(std::chrono::milliseconds timeout = 10s) {
    boost::asio::local::connect_pair(ours, far);
    t = make_link_transport(ours);
    io = std::make_unique<SmtpLineIo>(*t, timeout, ec, why, "too long");
  }
  // What the far end says, before we read it.
  void say(std::string_view bytes) {
    boost::asio::write(far, boost::asio::buffer(bytes));
  }
  // Everything we have written so far, as the far end receives it.
  std::string heard() {
    far.non_blocking(true);
    std::string out;
    char buf[4096];
    boost::system::error_code e;
    for (;;) {
      size_t n = far.read_some(boost::asio::buffer(buf), e);
      if (e) break;
      out.append(buf, n);
    }
    return out;
  }
  // Runs `step` as a coroutine on our executor until it ends.
  void run(std::function<asio::awaitable<void>()> step) {
    boost::asio::co_spawn(io_ctx, std::move(step), boost::asio::detached);
    io_ctx.run();
    io_ctx.restart();
  }
};

TEST(SmtpLineIo, MultiLineReplyIsReadWholeWithCodeStatusAndTexts) {
  Line l;
  l.say("250-relay.example\r\n250-SIZE 1000\r\n250 2.1.0 ok\r\n");
  SmtpReply r;
  bool ok = false;
  l.run([&]() -> asio::awaitable<void> { ok = co_await l.io->read_reply(r); });
  ASSERT_TRUE(ok) << l.why;
  EXPECT_EQ(r.code, 250);
  EXPECT_EQ(r.first, "250-relay.example");
  ASSERT_EQ(r.texts.size(), 3u);
  EXPECT_EQ(r.texts[1], "SIZE 1000");
  EXPECT_EQ(r.whole(), "250 relay.example SIZE 1000 2.1.0 ok");
  EXPECT_EQ(r.status(), "");  // the first line carries none

  SmtpReply s;
  l.say("550 5.1.1 no such user\r\n");
  l.run([&]() -> asio::awaitable<void> { ok = co_await l.io->read_reply(s); });
  ASSERT_TRUE(ok);
  EXPECT_EQ(s.status(), "5.1.1");
  EXPECT_EQ(s.whole(), "550 5.1.1 no such user");
  EXPECT_EQ(l.t->bytes_in(), 72u);  // every byte read, CRLFs included
}

TEST(SmtpLineIo, PipelinedCommandsGoOutWhenWeWaitForTheReply) {
  Line l;
  l.io->send("MAIL FROM:<a@x>\r\n");
  l.io->send("RCPT TO:<b@y>\r\n");
  EXPECT_EQ(l.io->unsent(), 32u);
  EXPECT_EQ(l.heard(), "");  // nothing written before we wait
  l.say("250 ok\r\n250 ok\r\n");
  SmtpReply a, b;
  bool ok = false;
  l.run([&]() -> asio::awaitable<void> {
    ok = co_await l.io->read_reply(a) && co_await l.io->read_reply(b);
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(l.heard(), "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n");
  EXPECT_EQ(l.io->unsent(), 0u);
  EXPECT_EQ(l.t->bytes_out(), 32u);
}

TEST(SmtpLineIo, LinesEndAtLfAndRawBytesAfterThemStayBuffered) {
  Line l;
  l.say("BDAT 5 LAST\nhello");
  std::string line;
  bool ok = false;
  l.run(
      [&]() -> asio::awaitable<void> { ok = co_await l.io->read_line(line); });
  ASSERT_TRUE(ok);
  EXPECT_EQ(line, "BDAT 5 LAST");
  EXPECT_EQ(l.io->buffered(), 5u);
  EXPECT_EQ(l.io->take(5), "hello");
  EXPECT_EQ(l.io->buffered(), 0u);
}

TEST(SmtpLineIo, LineOfTheLongestLengthIsAcceptedOneMoreIsRefused) {
  Line l;
  std::string longest(SmtpLineIo::kMaxLine, 'x');
  l.say(longest + "\r\n");
  std::string line;
  bool ok = false;
  l.run(
      [&]() -> asio::awaitable<void> { ok = co_await l.io->read_line(line); });
  ASSERT_TRUE(ok) << l.why;
  EXPECT_EQ(line, longest);

  l.say(longest + "yz");  // no line end in sight
  l.run(
      [&]() -> asio::awaitable<void> { ok = co_await l.io->read_line(line); });
  EXPECT_FALSE(ok);
  EXPECT_EQ(l.ec, std::errc::protocol_error);
  EXPECT_EQ(l.why, "too long");
}

TEST(SmtpLineIo, ReplyWithoutSpaceOrDashAfterTheCodeIsBad) {
  for (std::string bad : {"25x ok", "250xok", "ok"}) {
    Line l;
    l.say(bad + "\r\n");
    SmtpReply r;
    bool ok = true;
    l.run(
        [&]() -> asio::awaitable<void> { ok = co_await l.io->read_reply(r); });
    EXPECT_FALSE(ok) << bad;
    EXPECT_EQ(l.ec, std::errc::protocol_error) << bad;
    EXPECT_EQ(l.why, "bad reply: " + ferry::log::quote(bad));
  }
}

TEST(SmtpLineIo, SilentPeerTimesOutAndTheLineIsClosed) {
  Line l(100ms);
  std::string line;
  bool ok = true;
  auto start = std::chrono::steady_clock::now();
  l.run(
      [&]() -> asio::awaitable<void> { ok = co_await l.io->read_line(line); });
  EXPECT_FALSE(ok);
  EXPECT_EQ(l.ec, std::errc::timed_out);
  EXPECT_EQ(l.why, "read: timed out");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  EXPECT_FALSE(l.ours.is_open());  // hung up
}

TEST(SmtpLineIo, EndOfStreamFailsTheReadAndLaterWritesAreNotMade) {
  Line l;
  l.say("220 half a li");
  l.far.shutdown(Socket::shutdown_send);
  SmtpReply r;
  bool ok = true, flushed = true;
  l.run([&]() -> asio::awaitable<void> {
    ok = co_await l.io->read_reply(r);
    l.io->send("QUIT\r\n");
    flushed = co_await l.io->flush();
  });
  EXPECT_FALSE(ok);
  EXPECT_TRUE(l.ec);
  EXPECT_EQ(l.why.rfind("read: ", 0), 0u) << l.why;
  EXPECT_FALSE(flushed);  // the first failure ends the conversation
  EXPECT_EQ(l.heard(), "");
  EXPECT_EQ(l.t->bytes_out(), 0u);
}

}  // namespace
}  // namespace ferry::gw
