#include "gateway/pop3_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::gw::pop3 {
namespace {

std::string encode(std::string_view stored) {
  MessageEncoder enc;
  std::string out;
  enc.feed(stored, out);
  enc.finish(out);
  return out;
}

std::string encode_top(std::string_view stored, uint64_t lines) {
  MessageEncoder enc(lines);
  std::string out;
  enc.feed(stored, out);
  enc.finish(out);
  return out;
}

// Feeds one byte at a time: chunk boundaries must not matter.
std::string encode_bytewise(std::string_view stored) {
  MessageEncoder enc;
  std::string out;
  for (char c : stored) enc.feed(std::string_view(&c, 1), out);
  enc.finish(out);
  return out;
}

TEST(Pop3LineTest, FindsCrlfAndBareLfLines) {
  auto r = next_line("STAT\r\nLIST\r\n", 255);
  ASSERT_EQ(r.status, LineStatus::complete);
  EXPECT_EQ(r.line, "STAT");
  EXPECT_EQ(r.consumed, 6u);
  r = next_line("NOOP\nX", 255);
  ASSERT_EQ(r.status, LineStatus::complete);
  EXPECT_EQ(r.line, "NOOP");
  EXPECT_EQ(r.consumed, 5u);
}

TEST(Pop3LineTest, NeedMoreAndTooLong) {
  EXPECT_EQ(next_line("STA", 255).status, LineStatus::need_more);
  EXPECT_EQ(next_line(std::string(300, 'a'), 255).status, LineStatus::too_long);
  EXPECT_EQ(next_line(std::string(300, 'a') + "\r\n", 255).status,
            LineStatus::too_long);
}

TEST(Pop3CommandTest, KeywordsAreCaseInsensitive) {
  Command c = parse_command("retr 12");
  EXPECT_EQ(c.verb, Verb::retr);
  EXPECT_EQ(c.keyword, "RETR");
  ASSERT_EQ(c.args.size(), 1u);
  EXPECT_EQ(c.args[0], "12");
  EXPECT_EQ(parse_command("Top 1 10").args.size(), 2u);
  EXPECT_EQ(parse_command("CAPA").verb, Verb::capa);
  EXPECT_EQ(parse_command("STLS").verb, Verb::stls);
}

TEST(Pop3CommandTest, PasswordKeepsSpaces) {
  Command c = parse_command("PASS b0b pass  x");
  EXPECT_EQ(c.verb, Verb::pass);
  ASSERT_EQ(c.args.size(), 1u);
  EXPECT_EQ(c.args[0], "b0b pass  x");
}

TEST(Pop3CommandTest, UnknownAndEmpty) {
  EXPECT_EQ(parse_command("").verb, Verb::unknown);
  EXPECT_EQ(parse_command("XTND XMIT").verb, Verb::unknown);
  EXPECT_EQ(parse_command("RETRX 1").verb, Verb::unknown);
}

TEST(Pop3CommandTest, Numbers) {
  EXPECT_EQ(parse_number("0"), 0u);
  EXPECT_EQ(parse_number("42"), 42u);
  EXPECT_FALSE(parse_number(""));
  EXPECT_FALSE(parse_number("-1"));
  EXPECT_FALSE(parse_number("+1"));
  EXPECT_FALSE(parse_number("1a"));
  EXPECT_FALSE(parse_number("1234567890"));
}

TEST(Pop3ReplyTest, StatusLinesWithResponseCodes) {
  EXPECT_EQ(ok("2 320"), "+OK 2 320\r\n");
  EXPECT_EQ(ok(""), "+OK\r\n");
  EXPECT_EQ(err("no such message"), "-ERR no such message\r\n");
  EXPECT_EQ(err("IN-USE", "locked"), "-ERR [IN-USE] locked\r\n");
  EXPECT_EQ(sanitize("a\r\nb"), "a??b");
}

TEST(Pop3EncoderTest, CrlfMessageIsSentAsIs) {
  EXPECT_EQ(encode("A: b\r\n\r\nbody\r\n"), "A: b\r\n\r\nbody\r\n.\r\n");
}

TEST(Pop3EncoderTest, LfOnlyBecomesCrlf) {
  EXPECT_EQ(encode("A: b\n\nbody\n"), "A: b\r\n\r\nbody\r\n.\r\n");
  EXPECT_EQ(encode_bytewise("A: b\n\nx\r\ny\n"), "A: b\r\n\r\nx\r\ny\r\n.\r\n");
}

TEST(Pop3EncoderTest, DotLinesAreStuffed) {
  EXPECT_EQ(encode("A: b\r\n\r\n.\r\n..x\r\n.y\n"),
            "A: b\r\n\r\n..\r\n...x\r\n..y\r\n.\r\n");
  EXPECT_EQ(encode_bytewise(".first\n"), "..first\r\n.\r\n");
  EXPECT_EQ(encode("a.b\r\n"), "a.b\r\n.\r\n");  // only at line start
}

TEST(Pop3EncoderTest, UnterminatedLastLineIsCompleted) {
  EXPECT_EQ(encode("A: b\n\nlast"), "A: b\r\n\r\nlast\r\n.\r\n");
  EXPECT_EQ(encode("x\r"), "x\r\n.\r\n");
  EXPECT_EQ(encode(""), ".\r\n");
}

TEST(Pop3EncoderTest, LoneCrInsideALineIsContent) {
  EXPECT_EQ(encode("a\rb\r\n"), "a\rb\r\n.\r\n");
}

TEST(Pop3EncoderTest, TopSendsHeaderBlankLineAndNLines) {
  std::string msg = "A: 1\r\nB: 2\r\n\r\none\r\n.two\r\nthree\r\n";
  EXPECT_EQ(encode_top(msg, 0), "A: 1\r\nB: 2\r\n\r\n.\r\n");
  EXPECT_EQ(encode_top(msg, 2), "A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n");
  EXPECT_EQ(encode_top(msg, 99),
            "A: 1\r\nB: 2\r\n\r\none\r\n..two\r\nthree\r\n.\r\n");
  EXPECT_EQ(encode_top("A: 1\nB: 2\n\nx\ny\n", 1),
            "A: 1\r\nB: 2\r\n\r\nx\r\n.\r\n");
}

TEST(Pop3EncoderTest, TopOfAMessageWithoutBody) {
  EXPECT_EQ(encode_top("A: 1\r\nB: 2", 5), "A: 1\r\nB: 2\r\n.\r\n");
}

TEST(Pop3SizeTest, WireSizeCountsCrlfLineEnds) {
  EXPECT_EQ(wire_size("ab\r\n"), 4u);
  EXPECT_EQ(wire_size("ab\n"), 4u);
  EXPECT_EQ(wire_size("ab"), 4u);
  EXPECT_EQ(wire_size("ab\r"), 4u);
  EXPECT_EQ(wire_size(""), 0u);
  for (std::string_view m : {"A: b\n\n.x\nlast", "a\r\n\nb\r\r\n"}) {
    std::string enc = encode(m);
    // The encoded form less stuffing and terminator.
    size_t dots = 0;
    for (size_t i = 0; i < enc.size(); ++i) {
      if (enc[i] == '.' && (i == 0 || enc[i - 1] == '\n') &&
          i + 3 != enc.size()) {
        ++dots;
      }
    }
    EXPECT_EQ(wire_size(m), enc.size() - 3 - dots) << m;
  }
}

}  // namespace
}  // namespace ferry::gw::pop3
