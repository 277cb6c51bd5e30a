#include "gateway/dsn.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace ferry::gw {
namespace {

using std::chrono::hours;
using std::chrono::seconds;

const SysTime kArrival = SysTime(seconds(1796634000));  // Mon 09:00 UTC
const SysTime kNow = kArrival + hours(30);

const std::string kOriginal =
    "From: Alice <alice@office.example>\r\n"
    "To: bob@remote.example\r\n"
    "Subject: quarterly figures\r\n"
    "Message-ID: <q4@office.example>\r\n"
    "\r\n"
    "The figures are attached.\r\n";

DsnRequest request(DsnKind kind) {
  DsnRequest r;
  r.kind = kind;
  r.reporting_mta = "gw.office.example";
  r.postmaster = "postmaster@office.example";
  r.sender = "alice@office.example";
  r.envid = "Q4+2B1";
  r.arrival = kArrival;
  r.original = kOriginal;
  r.queue_id = "0MABCDEF12345678";
  r.now = kNow;
  DsnRecipient bob;
  bob.address = "bob@remote.example";
  bob.orcpt = "rfc822;Bob+2Btag@remote.example";
  bob.status = kind == DsnKind::failure ? "5.1.1" : "";
  bob.diagnostic = "550 5.1.1 <bob@remote.example>: no such user";
  bob.remote_mta = "mx.remote.example";
  bob.last_attempt = kNow - hours(1);
  bob.reason = "the peer's mail server refused the recipient";
  r.recipients.push_back(bob);
  return r;
}

ParsedDsn parse_one(const DsnMail& m) {
  std::string error;
  auto p = parse_dsn(m.bytes, error);
  EXPECT_TRUE(p) << error << "\n" << m.bytes;
  return p ? *p : ParsedDsn{};
}

bool all_lines_crlf(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
  return !s.empty() && s.back() == '\n';
}

TEST(DsnTest, FailureParsedBackFieldByField) {
  DsnRequest req = request(DsnKind::failure);
  req.ret = queue::Ret::full;
  std::vector<DsnMail> out = make_dsn(req);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sender, "");
  EXPECT_EQ(out[0].recipients,
            std::vector<std::string>{"alice@office.example"});
  EXPECT_TRUE(all_lines_crlf(out[0].bytes));

  ParsedDsn d = parse_one(out[0]);
  EXPECT_EQ(d.report_type, "delivery-status");
  EXPECT_EQ(d.headers.get("To"), "<alice@office.example>");
  EXPECT_EQ(d.headers.get("From"),
            "Mail Delivery System <postmaster@office.example>");
  EXPECT_EQ(d.headers.get("Auto-Submitted"), "auto-replied");
  EXPECT_EQ(d.headers.get("Date"), rfc5322_date(kNow));
  EXPECT_EQ(d.per_message.get("Reporting-MTA"), "dns; gw.office.example");
  EXPECT_EQ(d.per_message.get("Original-Envelope-Id"), "Q4+1");
  EXPECT_EQ(d.per_message.get("Arrival-Date"),
            "Mon, 07 Dec 2026 09:00:00 +0000");
  ASSERT_EQ(d.per_recipient.size(), 1u);
  const DsnFields& r = d.per_recipient[0];
  EXPECT_EQ(r.get("Final-Recipient"), "rfc822; bob@remote.example");
  EXPECT_EQ(r.get("Original-Recipient"), "rfc822;Bob+tag@remote.example");
  EXPECT_EQ(r.get("Action"), "failed");
  EXPECT_EQ(r.get("Status"), "5.1.1");
  EXPECT_EQ(r.get("Remote-MTA"), "dns; mx.remote.example");
  EXPECT_EQ(r.get("Diagnostic-Code"),
            "smtp; 550 5.1.1 <bob@remote.example>: no such user");
  EXPECT_EQ(r.get("Last-Attempt-Date"), rfc5322_date(kNow - hours(1)));
  EXPECT_FALSE(r.has("Will-Retry-Until"));

  // People read the first part; the original comes back whole.
  EXPECT_NE(d.text.find("could not be delivered"), std::string::npos);
  EXPECT_NE(d.text.find("<bob@remote.example>"), std::string::npos);
  EXPECT_NE(d.text.find("no such user"), std::string::npos);
  EXPECT_EQ(d.returned_type, "message/rfc822");
  EXPECT_EQ(d.returned, kOriginal);
}

TEST(DsnTest, RetHdrsReturnsOnlyTheHeader) {
  DsnRequest req = request(DsnKind::failure);
  req.ret = queue::Ret::hdrs;
  ParsedDsn d = parse_one(make_dsn(req).at(0));
  EXPECT_EQ(d.returned_type, "text/rfc822-headers");
  EXPECT_EQ(d.returned, kOriginal.substr(0, kOriginal.find("\r\n\r\n") + 2));
  EXPECT_EQ(d.returned.find("figures are attached"), std::string::npos);
}

TEST(DsnTest, UnspecifiedRetReturnsBigMessagesAsHeaders) {
  DsnRequest req = request(DsnKind::failure);
  EXPECT_EQ(parse_one(make_dsn(req).at(0)).returned_type, "message/rfc822");
  req.return_limit = 10;
  EXPECT_EQ(parse_one(make_dsn(req).at(0)).returned_type,
            "text/rfc822-headers");
}

TEST(DsnTest, DelayWarningSaysWhenNextAttemptIsPlanned) {
  DsnRequest req = request(DsnKind::delay);
  req.recipients[0].diagnostic = "BUSY";
  req.next_attempt = kNow + hours(2);
  req.retry_until = kArrival + hours(24 * 5);
  ParsedDsn d = parse_one(make_dsn(req).at(0));
  const DsnFields& r = d.per_recipient.at(0);
  EXPECT_EQ(r.get("Action"), "delayed");
  EXPECT_EQ(r.get("Status"), "4.0.0");
  EXPECT_EQ(r.get("Will-Retry-Until"), rfc5322_date(kArrival + hours(24 * 5)));
  EXPECT_EQ(r.get("Diagnostic-Code"), "x-ferry; BUSY");
  EXPECT_NE(d.text.find("The next attempt is planned for " +
                        rfc5322_date(kNow + hours(2))),
            std::string::npos)
      << d.text;
  EXPECT_NE(d.text.find("do not need to send it again"), std::string::npos);
  EXPECT_EQ(d.returned_type, "text/rfc822-headers");
}

TEST(DsnTest, SuccessOnlyWhenNotifySuccessAsked) {
  DsnRequest req = request(DsnKind::success);
  req.recipients[0].diagnostic = "250 2.0.0 queued as 4711";
  EXPECT_TRUE(make_dsn(req).empty());  // NOTIFY not given
  req.recipients[0].notify = queue::notify_success | queue::notify_failure;
  std::vector<DsnMail> out = make_dsn(req);
  ASSERT_EQ(out.size(), 1u);
  ParsedDsn d = parse_one(out[0]);
  EXPECT_EQ(d.per_recipient.at(0).get("Action"), "delivered");
  EXPECT_EQ(d.per_recipient.at(0).get("Status"), "2.0.0");
}

TEST(DsnTest, NotifyNeverAndPerRecipientChoicesAreHonoured) {
  DsnRequest req = request(DsnKind::failure);
  req.recipients[0].notify = queue::notify_never;
  EXPECT_TRUE(make_dsn(req).empty());

  DsnRecipient carol;
  carol.address = "carol@remote.example";
  carol.notify = queue::notify_failure;
  DsnRecipient dave;
  dave.address = "dave@remote.example";
  dave.notify = queue::notify_delay;
  req.recipients.push_back(carol);
  req.recipients.push_back(dave);
  ParsedDsn f = parse_one(make_dsn(req).at(0));
  ASSERT_EQ(f.per_recipient.size(), 1u);
  EXPECT_EQ(f.per_recipient[0].get("Final-Recipient"),
            "rfc822; carol@remote.example");

  req.kind = DsnKind::delay;
  ParsedDsn w = parse_one(make_dsn(req).at(0));
  ASSERT_EQ(w.per_recipient.size(), 1u);
  EXPECT_EQ(w.per_recipient[0].get("Final-Recipient"),
            "rfc822; dave@remote.example");
}

TEST(DsnTest, NeverNotifiesTheNullSender) {
  for (DsnKind k : {DsnKind::failure, DsnKind::delay, DsnKind::success}) {
    DsnRequest req = request(k);
    req.sender = "";
    req.recipients[0].notify =
        queue::notify_success | queue::notify_failure | queue::notify_delay;
    req.postmaster_copy = PostmasterCopy::all;
    EXPECT_TRUE(make_dsn(req).empty()) << to_string(k);
  }
}

TEST(DsnTest, PostmasterCopyListsEveryoneWithHeadersOnly) {
  DsnRequest req = request(DsnKind::failure);
  req.ret = queue::Ret::full;
  req.recipients[0].notify = queue::notify_never;
  req.postmaster_copy = PostmasterCopy::failures;
  std::vector<DsnMail> out = make_dsn(req);
  ASSERT_EQ(out.size(), 1u);  // the sender asked for nothing
  EXPECT_EQ(out[0].sender, "");
  EXPECT_EQ(out[0].recipients,
            std::vector<std::string>{"postmaster@office.example"});
  ParsedDsn d = parse_one(out[0]);
  EXPECT_EQ(d.per_recipient.size(), 1u);
  EXPECT_EQ(d.returned_type, "text/rfc822-headers");

  req.kind = DsnKind::delay;
  req.recipients[0].notify = 0;
  EXPECT_EQ(make_dsn(req).size(), 1u);  // failures only: no copy
  EXPECT_EQ(parse_postmaster_copy("all"), PostmasterCopy::all);
  EXPECT_FALSE(parse_postmaster_copy("some"));
  req.postmaster_copy = PostmasterCopy::all;
  EXPECT_EQ(make_dsn(req).size(), 2u);
}

TEST(DsnTest, FarSideReplyCannotInjectFields) {
  DsnRequest req = request(DsnKind::failure);
  req.recipients[0].diagnostic = "550 no\r\nAction: delivered\r\n\r\nX: y";
  ParsedDsn d = parse_one(make_dsn(req).at(0));
  ASSERT_EQ(d.per_recipient.size(), 1u);
  EXPECT_EQ(d.per_recipient[0].get("Action"), "failed");
  EXPECT_EQ(d.per_recipient[0].get("Diagnostic-Code"),
            "smtp; 550 no Action: delivered X: y");
}

TEST(DsnTest, BoundaryNeverOccursInTheOriginal) {
  DsnRequest req = request(DsnKind::failure);
  req.ret = queue::Ret::full;
  req.original = kOriginal + "--=_ferry_0MABCDEF12345678_failure_0\r\n";
  ParsedDsn d = parse_one(make_dsn(req).at(0));
  EXPECT_EQ(d.returned, req.original);
}

TEST(DsnTest, ParserRejectsWhatIsNotAReport) {
  std::string error;
  EXPECT_FALSE(parse_dsn(kOriginal, error));
  EXPECT_NE(error.find("multipart/report"), std::string::npos);
  EXPECT_FALSE(
      parse_dsn("Content-Type: multipart/report; "
                "report-type=delivery-status\r\n\r\nbody\r\n",
                error));
  EXPECT_FALSE(
      parse_dsn("Content-Type: multipart/report; boundary=b\r\n"
                "\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
                "--b--\r\n",
                error));
  EXPECT_NE(error.find("delivery-status"), std::string::npos);
}

TEST(DsnTest, RequestFromSpoolRecord) {
  queue::MessageInfo m;
  m.id = "0MABCDEF12345678";
  m.sender = "alice@office.example";
  m.envid = "E1";
  m.ret = queue::Ret::hdrs;
  m.arrival = kArrival;
  queue::RecipientInfo a;
  a.index = 0;
  a.address = "bob@remote.example";
  a.orcpt = "rfc822;bob@remote.example";
  a.notify = queue::notify_failure;
  a.last_reply = "550 5.1.1 no such user";
  queue::RecipientInfo b;
  b.index = 1;
  b.address = "carol@remote.example";
  b.last_reply = "BUSY";
  m.recipients = {a, b};
  DsnRequest req = dsn_request_from(m, kOriginal, {0, 1, 7}, DsnKind::failure);
  req.reporting_mta = "gw.office.example";
  req.now = kNow;
  ASSERT_EQ(req.recipients.size(), 2u);
  ParsedDsn d = parse_one(make_dsn(req).at(0));
  ASSERT_EQ(d.per_recipient.size(), 2u);
  EXPECT_EQ(d.per_recipient[0].get("Status"), "5.1.1");
  EXPECT_EQ(d.per_recipient[1].get("Status"), "5.0.0");
  EXPECT_EQ(d.per_recipient[1].get("Diagnostic-Code"), "x-ferry; BUSY");
  EXPECT_EQ(d.per_message.get("Original-Envelope-Id"), "E1");
  EXPECT_EQ(d.returned_type, "text/rfc822-headers");
  EXPECT_EQ(enhanced_status("451 4.4.1 no answer"), "4.4.1");
  EXPECT_EQ(enhanced_status("550 user unknown"), "");
  EXPECT_EQ(enhanced_status("550 4.1.1 mismatched"), "");
}

// Real messages from the corpus come back intact in a RET=FULL bounce.
TEST(DsnTest, CorpusMessagesComeBackIntact) {
  std::filesystem::path dir =
      std::filesystem::path(FERRY_SHARED_DIR) / "corpus" / "messages";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no corpus";
  int n = 0;
  for (const char* name : {"0001.eml", "0002.eml", "0003.eml"}) {
    std::ifstream in(dir / name, std::ios::binary);
    if (!in) continue;
    std::stringstream ss;
    ss << in.rdbuf();
    // As the spool stores it: CRLF lines.
    std::string crlf;
    for (char c : ss.str()) {
      if (c == '\n' && (crlf.empty() || crlf.back() != '\r')) crlf += '\r';
      crlf += c;
    }
    if (crlf.empty() || crlf.back() != '\n') crlf += "\r\n";
    DsnRequest req = request(DsnKind::failure);
    req.ret = queue::Ret::full;
    req.original = crlf;
    ParsedDsn d = parse_one(make_dsn(req).at(0));
    EXPECT_EQ(d.returned, crlf) << name;
    req.ret = queue::Ret::hdrs;
    ParsedDsn h = parse_one(make_dsn(req).at(0));
    EXPECT_EQ(h.returned, crlf.substr(0, h.returned.size())) << name;
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace ferry::gw
