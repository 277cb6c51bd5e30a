#include "gateway/smtp_parser.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::gw::smtp {
namespace {

// Runs a whole DATA stream through a reader, optionally split into
// pieces of `step` bytes, and returns the content plus what was left over.
struct DataRun {
  std::string body;
  std::string rest;
  bool done = false;
  BodyFaults faults;
};

DataRun run_data(std::string_view wire, size_t step = 0,
                 uint64_t max_size = 1 << 20, size_t max_line = 998) {
  DataRun r;
  BodyReader reader(BodyReader::Mode::data, max_size, max_line, &r.body);
  if (step == 0) step = wire.size() ? wire.size() : 1;
  size_t off = 0;
  while (off < wire.size() && !reader.done()) {
    std::string_view piece = wire.substr(off, step);
    off += reader.feed(piece);
  }
  r.rest = std::string(wire.substr(off));
  r.done = reader.done();
  r.faults = reader.faults();
  return r;
}

TEST(SmtpLine, CompleteNeedMoreTooLongBareLf) {
  auto r = next_line("EHLO a\r\nMAIL", 100);
  EXPECT_EQ(r.status, LineStatus::complete);
  EXPECT_EQ(r.line, "EHLO a");
  EXPECT_EQ(r.consumed, 8u);

  EXPECT_EQ(next_line("EHLO a\r", 100).status, LineStatus::need_more);
  EXPECT_EQ(next_line(std::string(101, 'x'), 100).status, LineStatus::too_long);
  auto lf = next_line("EHLO a\nQUIT\r\n", 100);
  EXPECT_EQ(lf.status, LineStatus::bare_lf);
  EXPECT_EQ(lf.consumed, 7u);
}

TEST(SmtpCommand, LowerCaseVerbsAndSpaceAfterColon) {
  auto c = parse_command("mail from: <a@b.example> SIZE=100");
  EXPECT_EQ(c.cmd.verb, Verb::mail);
  EXPECT_TRUE(c.from_to_ok);
  EXPECT_EQ(c.cmd.arg, " <a@b.example> SIZE=100");

  auto r = parse_command("Rcpt To:user@example.org  ");
  EXPECT_EQ(r.cmd.verb, Verb::rcpt);
  EXPECT_EQ(r.cmd.arg, "user@example.org");

  EXPECT_FALSE(parse_command("MAIL <a@b>").from_to_ok);
  EXPECT_EQ(parse_command("ehlo client.example").cmd.verb, Verb::ehlo);
  EXPECT_EQ(parse_command("STARTTLS").cmd.verb, Verb::starttls);
  EXPECT_EQ(parse_command("XYZZY 1").cmd.verb, Verb::unknown);
  EXPECT_EQ(parse_command("XYZZY 1").cmd.name, "XYZZY");
}

TEST(SmtpParams, KeysUpperCasedValuesKept) {
  Params p;
  std::string err;
  ASSERT_TRUE(
      parse_params(" size=4096 BODY=8BITMIME  SMTPUTF8 ENVID=a+2Bb", p, err));
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].first, "SIZE");
  EXPECT_EQ(p[0].second, "4096");
  EXPECT_EQ(p[2].first, "SMTPUTF8");
  EXPECT_EQ(p[2].second, "");
  EXPECT_EQ(p[3].second, "a+2Bb");
  EXPECT_FALSE(parse_params("=x", p, err));
  EXPECT_FALSE(parse_params("A=b=c", p, err));
}

// What ferry sends on (ORCPT, ENVID, NOTIFY) reads back as it was.
TEST(SmtpParams, XtextAndNotifyRoundTrip) {
  const std::string raw = "rfc822;a+b=c d\x01\xc3\xa9@example.org";
  std::string enc = xtext_encode(raw);
  EXPECT_TRUE(xtext_valid(enc)) << enc;
  EXPECT_EQ(enc.find_first_of("= "), std::string::npos);
  EXPECT_EQ(xtext_decode(enc), raw);
  for (uint8_t bits : {1, 2, 4, 8, 6, 14}) {
    EXPECT_EQ(parse_notify(format_notify(bits)), bits) << format_notify(bits);
  }
  EXPECT_EQ(format_notify(6), "SUCCESS,FAILURE");
}

TEST(SmtpParams, XtextAndNotify) {
  EXPECT_TRUE(xtext_valid("rfc822;a+2Bb@example.org"));
  EXPECT_FALSE(xtext_valid("bad+2"));
  EXPECT_FALSE(xtext_valid("bad+zz"));
  EXPECT_EQ(xtext_decode("a+2Bb+3D"), "a+b=");
  EXPECT_EQ(parse_notify("SUCCESS,failure"), 2 | 4);
  EXPECT_EQ(parse_notify("NEVER"), 1);
  EXPECT_FALSE(parse_notify("NEVER,DELAY"));
  EXPECT_FALSE(parse_notify(""));
  EXPECT_FALSE(parse_notify("SOMETIMES"));
}

TEST(SmtpBase64, RoundTripAndRejects) {
  EXPECT_EQ(base64_decode("dXNlcg=="), "user");
  EXPECT_EQ(base64_decode("AHVzZXIAcGFzcw=="), std::string("\0user\0pass", 10));
  EXPECT_EQ(base64_encode("Username:"), "VXNlcm5hbWU6");
  for (std::string s : {"", "a", "ab", "abc", "abcd"}) {
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  }
  EXPECT_FALSE(base64_decode("dXNlcg="));
  EXPECT_FALSE(base64_decode("dX=lcg=="));
  EXPECT_FALSE(base64_decode("dXNl cg=="));
}

TEST(SmtpBdat, Args) {
  auto a = parse_bdat("1024 LAST");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->size, 1024u);
  EXPECT_TRUE(a->last);
  EXPECT_FALSE(parse_bdat("12 FIRST"));
  EXPECT_FALSE(parse_bdat("-1"));
  EXPECT_FALSE(parse_bdat(""));
  EXPECT_EQ(parse_bdat("0 last")->size, 0u);
}

TEST(SmtpReply, SingleAndMultiLine) {
  EXPECT_EQ(format_reply(250, "2.0.0", "Ok"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(format_reply(250, "", "host\nPIPELINING\nSIZE 10"),
            "250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
  EXPECT_EQ(format_reply(354, "", "End data"), "354 End data\r\n");
}

TEST(SmtpData, DotUnstuffingAndEnd) {
  auto r = run_data("Subject: x\r\n\r\n..hidden\r\n.\r\n\r\nQUIT\r\n");
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.body, "Subject: x\r\n\r\n.hidden\r\n");
  EXPECT_EQ(r.rest, "\r\nQUIT\r\n");
  EXPECT_FALSE(r.faults.any());
}

TEST(SmtpData, SingleDotLineIsContentWhenStuffed) {
  auto r = run_data("a\r\n..\r\nb\r\n.\r\n");
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.body, "a\r\n.\r\nb\r\n");
}

TEST(SmtpData, EmptyMessageEndsAtFirstLine) {
  auto r = run_data(".\r\nNOOP\r\n");
  EXPECT_TRUE(r.done);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(r.rest, "NOOP\r\n");
}

TEST(SmtpData, SplitAtEveryByteGivesSameResult) {
  std::string wire = "a\r\n..b\r\n.c\r\n\r\n.\r\nRSET\r\n";
  auto whole = run_data(wire);
  for (size_t step = 1; step < 6; ++step) {
    auto part = run_data(wire, step);
    EXPECT_EQ(part.body, whole.body) << step;
    EXPECT_EQ(part.rest, whole.rest) << step;
    EXPECT_TRUE(part.done);
  }
  EXPECT_EQ(whole.body, "a\r\n.b\r\nc\r\n\r\n");
}

// SMTP smuggling: none of these ends the data, and each is refused.
TEST(SmtpData, SmugglingShapesAreNeverAnEnd) {
  for (std::string fake : {"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r.\r\n"}) {
    std::string wire = "a" + fake + "MAIL FROM:<x@y>\r\n.\r\n";
    auto r = run_data(wire);
    EXPECT_TRUE(r.done) << fake;
    EXPECT_EQ(r.rest, "") << "ended early at a fake end";
    EXPECT_TRUE(r.faults.bare_lf || r.faults.bare_cr) << fake;
  }
}

TEST(SmtpData, BareLfAndBareCrAndNul) {
  EXPECT_TRUE(run_data("a\nb\r\n.\r\n").faults.bare_lf);
  EXPECT_TRUE(run_data("a\rb\r\n.\r\n").faults.bare_cr);
  auto nul = run_data(std::string("a\0b\r\n.\r\n", 8));
  EXPECT_TRUE(nul.faults.nul);
  EXPECT_FALSE(nul.faults.bare_lf);
}

TEST(SmtpData, LongLinesUpToLimitAreKeptWhole) {
  std::string line(5000, 'x');
  auto ok = run_data(line + "\r\n.\r\n", 0, 1 << 20, 5000);
  EXPECT_FALSE(ok.faults.any());
  EXPECT_EQ(ok.body, line + "\r\n");
  auto bad = run_data(line + "x\r\n.\r\n", 7, 1 << 20, 5000);
  EXPECT_TRUE(bad.done);
  EXPECT_TRUE(bad.faults.line_too_long);
}

TEST(SmtpData, OversizeIsCountedNotStored) {
  std::string line(100, 'y');
  std::string wire;
  for (int i = 0; i < 20; ++i) wire += line + "\r\n";
  auto r = run_data(wire + ".\r\n", 13, 1000);
  EXPECT_TRUE(r.done);
  EXPECT_TRUE(r.faults.too_big);
  EXPECT_LE(r.body.size(), 1000u);
}

TEST(SmtpBdat, RawChunksKeepDotsAndFindBareCrAtEnd) {
  std::string body;
  BodyReader reader(BodyReader::Mode::bdat, 1 << 20, 998, &body);
  EXPECT_EQ(reader.feed(".\r\n..x\r"), 7u);
  EXPECT_EQ(reader.feed("\n"), 1u);
  reader.finish();
  EXPECT_EQ(body, ".\r\n..x\r\n");
  EXPECT_FALSE(reader.faults().any());

  std::string b2;
  BodyReader r2(BodyReader::Mode::bdat, 1 << 20, 998, &b2);
  r2.feed("abc\r");
  r2.finish();
  EXPECT_TRUE(r2.faults().bare_cr);
}

}  // namespace
}  // namespace ferry::gw::smtp
