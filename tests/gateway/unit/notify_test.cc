// The Notifier on a real spool in a fresh temporary directory: failure,
// delay and success notifications are queued on the pickup route from the
// null sender, parsed back with parse_dsn() field by field, never sent for
// the null sender or NOTIFY=NEVER, sent once even when the call repeats
// after a crash, and delivered to the sender's Maildir by process_pickup().
#include "gateway/notify.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "gateway/maildir.h"
#include "gateway/users.h"

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using queue::RecipientState;
using std::chrono::hours;

class NotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ferry-notify-XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "spool");
    fs::create_directories(root_ / "mail");
    std::string error;
    ASSERT_TRUE(parse_config("[local]\ndomains = office.example\n", "test.conf",
                             cfg_, error))
        << error;
    users_ = Users::parse("alice:!\nbob:!\n", "users", "", "aliases", error);
    ASSERT_TRUE(users_) << error;
    policy_ = std::make_unique<Policy>(cfg_, *users_);
    open_spool();
    nopts_.reporting_mta = "gw.office.example";
    nopts_.clock = &clock_;
    nopts_.log = false;
    nopts_.want_pickup = [this] { ++pickups_; };
    notifier_ = std::make_unique<Notifier>(*spool_, nopts_);
  }
  void TearDown() override {
    notifier_.reset();
    spool_.reset();
    fs::remove_all(root_);
  }

  void open_spool() {
    queue::Options so;
    so.log = false;
    so.before_commit_hook = [this]() -> std::error_code {
      if (fail_commit_ > 0 && --fail_commit_ == 0)
        return queue::spool_errc::sync_failed;
      return {};
    };
    std::error_code ec;
    spool_ = queue::Spool::open((root_ / "spool").string(), so, ec);
    ASSERT_TRUE(spool_) << ec.message();
  }

  struct Rcpt {
    std::string address;
    uint8_t notify = 0;
    std::string route = "smarthost";
    std::string orcpt;
  };
  queue::QueueId submit(const std::vector<Rcpt>& rcpts,
                        const std::string& sender = "alice@office.example",
                        queue::Ret ret = queue::Ret::unspecified) {
    queue::NewMessage m;
    m.sender = sender;
    m.envid = "ENV+2B7";
    m.ret = ret;
    m.body = body_;
    for (const Rcpt& r : rcpts)
      m.recipients.push_back({r.address, r.orcpt, r.notify, r.route});
    queue::QueueId id;
    EXPECT_FALSE(spool_->submit(std::move(m), id));
    queue::MessageInfo info;
    EXPECT_FALSE(spool_->get(id, info));
    arrival_ = info.arrival;
    return id;
  }
  void fail(const queue::QueueId& id, uint32_t rcpt, const std::string& reply) {
    queue::Transition t;
    t.id = id;
    t.recipient = rcpt;
    t.action = queue::Action::failed;
    t.reply = reply;
    ASSERT_FALSE(spool_->transition(t));
  }

  // The notifications now in the spool: null sender, pickup route.
  std::vector<queue::MessageInfo> dsns() {
    std::vector<queue::MessageInfo> all, out;
    EXPECT_FALSE(spool_->list(all));
    for (auto& m : all)
      if (m.sender.empty() && !m.recipients.empty() &&
          m.recipients[0].route == kPickupRoute)
        out.push_back(m);
    return out;
  }
  ParsedDsn parsed(const queue::MessageInfo& m) {
    std::string body, error;
    EXPECT_FALSE(spool_->read_body(m.id, body));
    auto d = parse_dsn(body, error);
    EXPECT_TRUE(d) << error;
    return d ? *d : ParsedDsn{};
  }
  bool exists(const queue::QueueId& id) {
    queue::MessageInfo m;
    return !spool_->get(id, m);
  }

  LifetimeLookup lookup() {
    LifetimeLookup l;
    l.lifetime = [this](const std::string& route,
                        SysTime) -> std::optional<RouteLifetime> {
      if (route != "smarthost") return std::nullopt;
      return RouteLifetime{lifetime_, missed_};
    };
    l.next_call = [this](const std::string&) { return next_call_; };
    return l;
  }

  fs::path root_;
  Config cfg_;
  std::unique_ptr<Users> users_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<queue::Spool> spool_;
  int fail_commit_ = 0;  // fail the Nth commit from now (0: none)
  ManualClock clock_{SysTime{} + hours(24 * 20000)};
  NotifierOptions nopts_;
  std::unique_ptr<Notifier> notifier_;
  int pickups_ = 0;
  SysTime arrival_{};
  Lifetime lifetime_{hours(48), 2, hours(4)};
  uint32_t missed_ = 0;
  std::optional<SysTime> next_call_;
  std::string body_ =
      "From: alice@office.example\r\nSubject: lunch\r\n\r\n"
      "Noon at the usual place.\r\n";
};

TEST_F(NotifyTest, FailureDsnCarriesEveryFieldAndTheMessage) {
  auto id =
      submit({{"x@remote.example", 0, "smarthost", "rfc822;X@remote.example"},
              {"y@remote.example"}});
  fail(id, 0, "550 5.1.1 <x@remote.example>: no such user");
  ASSERT_FALSE(notifier_->on_failed(id));

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 1u);
  ASSERT_EQ(ds[0].recipients.size(), 1u);
  EXPECT_EQ(ds[0].recipients[0].address, "alice@office.example");
  EXPECT_EQ(pickups_, 1);
  ParsedDsn d = parsed(ds[0]);
  EXPECT_EQ(d.report_type, "delivery-status");
  EXPECT_EQ(d.headers.get("To"), "<alice@office.example>");
  EXPECT_EQ(d.per_message.get("Reporting-MTA"), "dns; gw.office.example");
  EXPECT_EQ(d.per_message.get("Original-Envelope-Id"), "ENV+7");
  ASSERT_EQ(d.per_recipient.size(), 1u);
  const DsnFields& r = d.per_recipient[0];
  EXPECT_EQ(r.get("Final-Recipient"), "rfc822; x@remote.example");
  EXPECT_EQ(r.get("Original-Recipient"), "rfc822;X@remote.example");
  EXPECT_EQ(r.get("Action"), "failed");
  EXPECT_EQ(r.get("Status"), "5.1.1");
  EXPECT_EQ(r.get("Diagnostic-Code"),
            "smtp; 550 5.1.1 <x@remote.example>: no such user");
  EXPECT_EQ(d.returned_type, "message/rfc822");
  EXPECT_EQ(d.returned, body_);

  // The other recipient is still queued; the original stays.
  EXPECT_TRUE(exists(id));
}

TEST_F(NotifyTest, LogsOneLinePerNotification) {
  nopts_.log = true;
  Notifier n(*spool_, nopts_);
  auto id = submit({{"x@remote.example"}, {"y@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user");
  ::testing::internal::CaptureStderr();
  ASSERT_FALSE(n.on_failed(id));
  std::string err = ::testing::internal::GetCapturedStderr();
  auto ds = dsns();
  ASSERT_EQ(ds.size(), 1u);
  EXPECT_NE(err.find(id + ": dsn=" + ds[0].id +
                     " action=failed rcpts=1 to=<alice@office.example>"),
            std::string::npos)
      << err;
}

TEST_F(NotifyTest, RetHdrsAndLargeMessagesReturnOnlyTheHeader) {
  auto hdrs = submit({{"x@remote.example"}, {"y@remote.example"}},
                     "alice@office.example", queue::Ret::hdrs);
  fail(hdrs, 0, "550 5.1.1 no such user");
  ASSERT_FALSE(notifier_->on_failed(hdrs));

  nopts_.notify.return_content_limit = 10;
  Notifier small(*spool_, nopts_);
  auto full = submit({{"x@remote.example"}, {"y@remote.example"}},
                     "alice@office.example", queue::Ret::full);
  fail(full, 0, "550 5.1.1 no such user");
  ASSERT_FALSE(small.on_failed(full));

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 2u);
  for (const auto& m : ds) {
    ParsedDsn d = parsed(m);
    EXPECT_EQ(d.returned_type, "text/rfc822-headers");
    EXPECT_NE(d.returned.find("Subject: lunch"), std::string::npos);
    EXPECT_EQ(d.returned.find("Noon"), std::string::npos);
  }
}

TEST_F(NotifyTest, NoDsnForNullSender) {
  auto id = submit({{"x@remote.example"}, {"y@remote.example"}}, "");
  fail(id, 0, "550 5.1.1 no such user");
  ASSERT_FALSE(notifier_->on_failed(id));
  EXPECT_TRUE(dsns().empty());
  EXPECT_EQ(pickups_, 0);
  EXPECT_EQ(notifier_->stats().suppressed, 1u);
}

TEST_F(NotifyTest, NotifyNeverGetsNoDsn) {
  auto id =
      submit({{"x@remote.example", queue::notify_never}, {"y@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user");
  ASSERT_FALSE(notifier_->on_failed(id));
  EXPECT_TRUE(dsns().empty());
}

TEST_F(NotifyTest, EachFailedRecipientIsReportedOnce) {
  auto id = submit(
      {{"x@remote.example"}, {"y@remote.example"}, {"z@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user x");
  ASSERT_FALSE(notifier_->on_failed(id));
  ASSERT_FALSE(notifier_->on_failed(id));  // nothing new
  fail(id, 1, "550 5.1.1 no such user y");
  ASSERT_FALSE(notifier_->on_failed(id));

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 2u);
  ParsedDsn second = parsed(ds[1]);
  ASSERT_EQ(second.per_recipient.size(), 1u);
  EXPECT_EQ(second.per_recipient[0].get("Final-Recipient"),
            "rfc822; y@remote.example");
}

TEST_F(NotifyTest, CrashBetweenSubmitAndMarkDoesNotSendTwo) {
  auto id = submit({{"x@remote.example"}, {"y@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user");

  // Commit 1 is the DSN, commit 2 the mark: the "crash" loses the mark.
  fail_commit_ = 2;
  EXPECT_TRUE(notifier_->on_failed(id));
  ASSERT_EQ(dsns().size(), 1u);

  // The restarted ferryd is told again.
  Notifier again(*spool_, nopts_);
  ASSERT_FALSE(again.on_failed(id));
  EXPECT_EQ(dsns().size(), 1u);
  EXPECT_EQ(again.stats().repeats, 1u);
  EXPECT_EQ(again.stats().dsns, 0u);
  // And the mark now holds: a third call does nothing at all.
  ASSERT_FALSE(again.on_failed(id));
  EXPECT_EQ(again.stats().repeats, 1u);
}

TEST_F(NotifyTest, OnFailedCannotReportAMessageThatLeftButApplyCan) {
  // The last recipient failed: the spool removed the message with it.
  auto gone = submit({{"x@remote.example"}});
  fail(gone, 0, "550 5.1.1 no such user");
  EXPECT_EQ(notifier_->on_failed(gone), queue::spool_errc::not_found);

  auto id = submit({{"x@remote.example"}});
  queue::Transition t;
  t.id = id;
  t.recipient = 0;
  t.action = queue::Action::failed;
  t.reply = "550 5.7.1 relaying denied";
  std::vector<queue::TransitionResult> out;
  ASSERT_FALSE(notifier_->apply({t}, out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].message_removed);

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 1u);
  ParsedDsn d = parsed(ds[0]);
  ASSERT_EQ(d.per_recipient.size(), 1u);
  EXPECT_EQ(d.per_recipient[0].get("Status"), "5.7.1");
  EXPECT_EQ(d.per_recipient[0].get("Diagnostic-Code"),
            "smtp; 550 5.7.1 relaying denied");
  EXPECT_EQ(d.returned, body_);
}

TEST_F(NotifyTest, SuccessDsnOnlyWhereNotifyAsks) {
  auto id = submit(
      {{"x@remote.example", queue::notify_success | queue::notify_failure},
       {"y@remote.example"}});
  std::vector<queue::Transition> ts(2);
  for (uint32_t i = 0; i < 2; ++i) {
    ts[i].id = id;
    ts[i].recipient = i;
    ts[i].action = queue::Action::delivered;
    ts[i].reply = "250 2.0.0 ok";
  }
  std::vector<queue::TransitionResult> out;
  ASSERT_FALSE(notifier_->apply(ts, out));
  EXPECT_FALSE(exists(id));

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 1u);
  ParsedDsn d = parsed(ds[0]);
  ASSERT_EQ(d.per_recipient.size(), 1u);
  EXPECT_EQ(d.per_recipient[0].get("Final-Recipient"),
            "rfc822; x@remote.example");
  EXPECT_EQ(d.per_recipient[0].get("Action"), "delivered");
  EXPECT_EQ(d.per_recipient[0].get("Status"), "2.0.0");
}

TEST_F(NotifyTest, OneWarningThenGiveUpAfterBothLimits) {
  auto id =
      submit({{"x@remote.example"}, {"local@office.example", 0, "local"}});
  next_call_ = arrival_ + hours(6);

  // Young: nothing.
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(1), lookup()));
  EXPECT_TRUE(dsns().empty());

  // After warn_after: one warning, with the planned attempt.
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(5), lookup()));
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(7), lookup()));
  auto ds = dsns();
  ASSERT_EQ(ds.size(), 1u);
  ParsedDsn w = parsed(ds[0]);
  ASSERT_EQ(w.per_recipient.size(), 1u);
  EXPECT_EQ(w.per_recipient[0].get("Final-Recipient"),
            "rfc822; x@remote.example");
  EXPECT_EQ(w.per_recipient[0].get("Action"), "delayed");
  EXPECT_EQ(w.per_recipient[0].get("Will-Retry-Until"),
            rfc5322_date(arrival_ + hours(48)));
  EXPECT_NE(
      w.text.find("next attempt is planned for " + rfc5322_date(*next_call_)),
      std::string::npos)
      << w.text;
  EXPECT_EQ(w.returned_type, "text/rfc822-headers");

  // Old enough, but the peer was offline by schedule: kept.
  missed_ = 1;
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(24 * 4), lookup()));
  // Enough missed opportunities, but young: kept.
  missed_ = 5;
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(24), lookup()));
  EXPECT_EQ(dsns().size(), 1u);
  EXPECT_TRUE(exists(id));

  // Both: given up and bounced.
  missed_ = 2;
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(49), lookup()));
  ds = dsns();
  ASSERT_EQ(ds.size(), 2u);
  ParsedDsn b = parsed(ds[1]);
  ASSERT_EQ(b.per_recipient.size(), 1u);
  EXPECT_EQ(b.per_recipient[0].get("Action"), "failed");
  EXPECT_EQ(b.per_recipient[0].get("Status"), "5.4.7");
  EXPECT_EQ(b.returned, body_);
  queue::MessageInfo m;
  ASSERT_FALSE(spool_->get(id, m));
  EXPECT_EQ(m.recipients[0].state, RecipientState::failed);
  EXPECT_NE(m.recipients[0].last_reply.find("5.4.7 delivery time expired"),
            std::string::npos);
  EXPECT_EQ(m.recipients[1].state, RecipientState::queued);

  // A later sweep sends nothing more.
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(60), lookup()));
  EXPECT_EQ(dsns().size(), 2u);
}

TEST_F(NotifyTest, CrashBeforeGiveUpIsMarkedDoesNotBounceTwice) {
  auto id = submit({{"x@remote.example"}, {"y@remote.example"}});
  missed_ = 2;

  // Commit 1 queues the bounce, 2 marks it, 3 fails the recipients: lost.
  fail_commit_ = 3;
  EXPECT_TRUE(notifier_->sweep(arrival_ + hours(49), lookup()));
  ASSERT_EQ(dsns().size(), 1u);
  ASSERT_TRUE(exists(id));

  Notifier again(*spool_, nopts_);
  ASSERT_FALSE(again.sweep(arrival_ + hours(50), lookup()));
  EXPECT_EQ(dsns().size(), 1u);
  EXPECT_EQ(again.stats().given_up, 2u);
  EXPECT_FALSE(exists(id));  // both recipients failed: it left
}

TEST_F(NotifyTest, GiveUpOfNullSenderMessageSendsNothing) {
  auto id = submit({{"x@remote.example"}}, "");
  missed_ = 3;
  ASSERT_FALSE(notifier_->sweep(arrival_ + hours(24 * 3), lookup()));
  EXPECT_TRUE(dsns().empty());
  EXPECT_FALSE(exists(id));  // given up: the only recipient failed
}

TEST_F(NotifyTest, PostmasterCopyCarriesHeaderAndEveryRecipient) {
  nopts_.notify.postmaster_copy = "postmaster@office.example";
  Notifier n(*spool_, nopts_);
  auto id = submit({{"x@remote.example", queue::notify_never},
                    {"y@remote.example"},
                    {"z@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user");
  fail(id, 1, "550 5.1.1 no such user");
  ASSERT_FALSE(n.on_failed(id));

  auto ds = dsns();
  ASSERT_EQ(ds.size(), 2u);
  ParsedDsn to_sender = parsed(ds[0]);
  EXPECT_EQ(to_sender.per_recipient.size(), 1u);  // x said NEVER
  EXPECT_EQ(ds[1].recipients.at(0).address, "postmaster@office.example");
  ParsedDsn copy = parsed(ds[1]);
  EXPECT_EQ(copy.per_recipient.size(), 2u);
  EXPECT_EQ(copy.returned_type, "text/rfc822-headers");
}

TEST_F(NotifyTest, PickupDeliversTheDsnToTheSendersMaildir) {
  auto id = submit({{"x@remote.example"}, {"y@remote.example"}});
  fail(id, 0, "550 5.1.1 no such user");
  ASSERT_FALSE(notifier_->on_failed(id));
  ASSERT_EQ(dsns().size(), 1u);

  PickupOptions po;
  po.mail_root = (root_ / "mail").string();
  PickupResult res;
  ASSERT_FALSE(process_pickup(*spool_, *policy_, po, res));
  EXPECT_TRUE(dsns().empty());
  EXPECT_EQ(res.local, 1u);

  fs::path dir = root_ / "mail/alice/new";
  ASSERT_TRUE(fs::exists(dir));
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  std::ifstream in(files[0], std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string error;
  auto d = parse_dsn(ss.str(), error);
  ASSERT_TRUE(d) << error;
  ASSERT_EQ(d->per_recipient.size(), 1u);
  EXPECT_EQ(d->per_recipient[0].get("Final-Recipient"),
            "rfc822; x@remote.example");
  EXPECT_EQ(d->per_recipient[0].get("Action"), "failed");
}

}  // namespace
}  // namespace ferry::gw
