// Pickup of ferry-sendmail's messages on a real spool and real Maildirs in
// a fresh temporary directory: local users get byte-identical copies,
// remote addresses move to their route, unknown users fail with 550 5.1.1,
// and a crash between the steps never duplicates anything.
#include "gateway/pickup.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "gateway/maildir.h"

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;
using queue::RecipientState;

class PickupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ferry-pickup-XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "spool");
    fs::create_directories(root_ / "mail");
    std::string error;
    ASSERT_TRUE(
        parse_config("[local]\ndomains = office.example\n"
                     "[rules]\ninternal_only_users = carol\n",
                     "test.conf", cfg_, error))
        << error;
    users_ = Users::parse("alice:!\nbob:!\ncarol:!\n", "users",
                          "team: alice, bob\nfriend: pal@remote.example\n",
                          "aliases", error);
    ASSERT_TRUE(users_) << error;
    policy_ = std::make_unique<Policy>(cfg_, *users_);
    opts_.mail_root = (root_ / "mail").string();
    opts_.on_failed = [this](const queue::QueueId& id) {
      bounced_.push_back(id);
    };
    queue::Options so;
    so.log = false;
    std::error_code ec;
    spool_ = queue::Spool::open((root_ / "spool").string(), so, ec);
    ASSERT_TRUE(spool_) << ec.message();
  }
  void TearDown() override {
    spool_.reset();
    fs::remove_all(root_);
  }

  // What ferry-sendmail stores: every recipient on the pickup route.
  queue::QueueId submit(const std::vector<std::string>& rcpts,
                        const std::string& sender = "alice@office.example") {
    queue::NewMessage m;
    m.sender = sender;
    m.body = body_;
    for (const auto& r : rcpts) {
      m.recipients.push_back({r, "", 0, std::string(kPickupRoute)});
    }
    queue::QueueId id;
    EXPECT_FALSE(spool_->submit(std::move(m), id));
    return id;
  }

  std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  size_t files_in(const fs::path& dir) {
    if (!fs::exists(dir)) return 0;
    return std::distance(fs::directory_iterator(dir), {});
  }
  std::vector<queue::MessageInfo> queued() {
    std::vector<queue::MessageInfo> all;
    EXPECT_FALSE(spool_->list(all));
    return all;
  }

  fs::path root_;
  Config cfg_;
  std::unique_ptr<Users> users_;
  std::unique_ptr<Policy> policy_;
  std::unique_ptr<queue::Spool> spool_;
  PickupOptions opts_;
  PickupResult res_;
  std::vector<queue::QueueId> bounced_;
  std::string body_ =
      "From: alice@office.example\r\nSubject: lunch\r\n\r\n"
      "Noon at the usual place.\r\n.dot line\r\n";
};

TEST_F(PickupTest, LocalDeliveryLandsByteIdenticalAndMessageLeaves) {
  auto id = submit({"bob@office.example", "team@office.example"});
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));

  fs::path bob = root_ / "mail/bob/new" / maildir_unique_name(id, "bob");
  fs::path alice = root_ / "mail/alice/new" / maildir_unique_name(id, "alice");
  EXPECT_EQ(slurp(bob), body_);
  EXPECT_EQ(slurp(alice), body_);
  // bob is named twice (directly and through "team"): one copy.
  EXPECT_EQ(files_in(root_ / "mail/bob/new"), 1u);
  EXPECT_TRUE(queued().empty());
  EXPECT_EQ(res_.messages, 1u);
  EXPECT_EQ(res_.resubmitted, 0u);
}

TEST_F(PickupTest, RemoteGoesToSmarthostRouteOnce) {
  auto id = submit({"x@remote.example", "friend@office.example"});
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));

  auto all = queued();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_NE(all[0].id, id);
  EXPECT_EQ(all[0].sender, "alice@office.example");
  ASSERT_EQ(all[0].recipients.size(), 2u);
  EXPECT_EQ(all[0].recipients[0].address, "x@remote.example");
  EXPECT_EQ(all[0].recipients[1].address, "pal@remote.example");
  for (const auto& r : all[0].recipients) {
    EXPECT_EQ(r.route, "smarthost");
    EXPECT_EQ(r.state, RecipientState::queued);
  }
  std::string body;
  ASSERT_FALSE(spool_->read_body(all[0].id, body));
  EXPECT_EQ(body, body_);
  queue::QueueId earlier;
  EXPECT_FALSE(spool_->lookup_received("pickup", "pickup:" + id, earlier));
  EXPECT_EQ(earlier, all[0].id);

  // A second run finds nothing left to do.
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));
  EXPECT_EQ(queued().size(), 1u);
  EXPECT_EQ(res_.resubmitted, 1u);
}

TEST_F(PickupTest, CrashBetweenResubmitAndMarkingDoesNotDuplicate) {
  auto id = submit({"x@remote.example", "bob@office.example"});

  // The first run stops after delivering, before marking (the crash).
  PickupPlan plan;
  ASSERT_FALSE(plan_pickup(*spool_, *policy_, opts_, id, plan));
  ASSERT_FALSE(pickup_deliver(*spool_, opts_, plan, res_));
  EXPECT_EQ(queued().size(), 2u);  // the pickup message is still there

  // The restart runs the whole pickup again.
  PickupResult again;
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, again));
  EXPECT_EQ(again.already, 1u);
  EXPECT_EQ(again.resubmitted, 0u);
  auto all = queued();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_NE(all[0].id, id);
  EXPECT_EQ(all[0].recipients.at(0).route, "smarthost");
  EXPECT_EQ(files_in(root_ / "mail/bob/new"), 1u);
}

TEST_F(PickupTest, UnknownLocalUserFailsWith550AndCallsBounceHook) {
  auto id = submit({"nobody@office.example", "bob@office.example"});
  std::vector<queue::MessageInfo> before = queued();
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));
  EXPECT_TRUE(queued().empty());
  EXPECT_EQ(res_.failed, 1u);
  ASSERT_EQ(bounced_.size(), 1u);
  EXPECT_EQ(bounced_[0], id);
  std::vector<queue::Event> ev;
  ASSERT_FALSE(spool_->events(id, ev));
  bool saw = false;
  for (const auto& e : ev) {
    saw = saw || e.text.find("550 5.1.1") != std::string::npos;
  }
  EXPECT_TRUE(saw) << "no 550 5.1.1 event";
  EXPECT_EQ(files_in(root_ / "mail/bob/new"), 1u);
}

TEST_F(PickupTest, InternalOnlySenderStillHeldToTheOrganisation) {
  submit({"x@remote.example"}, "carol@office.example");
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));
  EXPECT_EQ(res_.failed, 1u);
  EXPECT_TRUE(queued().empty());
}

TEST_F(PickupTest, MaildirFailureDefersAndLaterRunDelivers) {
  // mail_root missing: a configuration error, reported as a deferral.
  PickupOptions broken = opts_;
  broken.mail_root = (root_ / "no-such-root").string();
  auto id = submit({"bob@office.example"});
  ASSERT_FALSE(process_pickup(*spool_, *policy_, broken, res_));
  EXPECT_EQ(res_.deferred, 1u);
  auto all = queued();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].recipients[0].state, RecipientState::deferred);

  // Not yet due: left alone.
  PickupResult early;
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, early));
  EXPECT_EQ(early.local, 0u);

  // Due: delivered.
  PickupOptions later = opts_;
  later.now = queue::Clock::now() + std::chrono::hours(1);
  ASSERT_FALSE(process_pickup(*spool_, *policy_, later, res_));
  EXPECT_TRUE(queued().empty());
  EXPECT_EQ(slurp(root_ / "mail/bob/new" / maildir_unique_name(id, "bob")),
            body_);
}

TEST_F(PickupTest, MessagesOnOtherRoutesAreNotTouched) {
  queue::NewMessage m;
  m.sender = "a@b.example";
  m.body = body_;
  m.recipients.push_back({"x@remote.example", "", 0, "smarthost"});
  queue::QueueId id;
  ASSERT_FALSE(spool_->submit(std::move(m), id));
  ASSERT_FALSE(process_pickup(*spool_, *policy_, opts_, res_));
  auto all = queued();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].id, id);
  EXPECT_EQ(all[0].recipients[0].state, RecipientState::queued);
}

}  // namespace
}  // namespace ferry::gw
