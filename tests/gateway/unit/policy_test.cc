#include "gateway/policy.h"

#include <gtest/gtest.h>

#include <memory>

namespace ferry::gw {
namespace {

// A fixture with one office: local.example (and the internal
// branch.example), office networks 192.168.10.0/24 and 2001:db8:10::/48,
// users alice, bob, carol; carol may mail only inside; alice has a
// personal size limit.
class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(parse_config(R"(
[smtp]
max_message_size = 10M
[local]
domains = local.example
[rules]
office_networks = 192.168.10.0/24, 2001:db8:10::/48
barred_senders = spammer@bad.example, @worse.example
barred_recipients = ceo@local.example, @blackhole.example
internal_domains = branch.example
internal_only_users = carol
user_size_limits = alice:50M
)",
                             "test.conf", cfg_, error))
        << error;
    users_ = Users::parse("alice:!\nbob:!\ncarol:!\n", "users",
                          "sales: alice, bob\n"
                          "team: sales, carol\n"
                          "friend: pal@remote.example\n"
                          "postmaster: alice\n",
                          "aliases", error);
    ASSERT_TRUE(users_) << error;
    policy_ = std::make_unique<Policy>(cfg_, *users_);
  }

  // A client outside every office network, not logged in.
  static ClientFacts outsider() { return {"203.0.113.7"}; }
  static ClientFacts office() { return {"192.168.10.20"}; }
  static ClientFacts logged_in(std::string user) {
    ClientFacts f{"203.0.113.7"};
    f.mode = ListenerConfig::Mode::submission;
    f.authenticated = true;
    f.auth_user = std::move(user);
    return f;
  }

  RcptDecision rcpt(const ClientFacts& f, std::string_view to,
                    std::string_view from = "<sender@example.net>") {
    return policy_->check_rcpt(f, parse_path(from), parse_path(to));
  }
  Reply sender(const ClientFacts& f, std::string_view from, uint64_t size = 0) {
    return policy_->check_sender(f, parse_path(from), size);
  }

  Config cfg_;
  std::unique_ptr<Users> users_;
  std::unique_ptr<Policy> policy_;
};

#define EXPECT_REPLY(r, CODE, ENH)            \
  do {                                        \
    EXPECT_EQ((r).code, CODE) << (r).text;    \
    EXPECT_EQ((r).enhanced, ENH) << (r).text; \
  } while (0)

TEST_F(PolicyTest, LocalUserAcceptedFromAnywhere) {
  RcptDecision d = rcpt(outsider(), "<alice@local.example>");
  EXPECT_TRUE(d.accepted);
  EXPECT_REPLY(d.reply, 250, "2.1.5");
  EXPECT_EQ(d.local_users, std::vector<std::string>{"alice"});
  EXPECT_TRUE(d.remote.empty());
}

TEST_F(PolicyTest, UnknownLocalUserIs550_511) {
  RcptDecision d = rcpt(outsider(), "<nobody@local.example>");
  EXPECT_FALSE(d.accepted);
  EXPECT_REPLY(d.reply, 550, "5.1.1");
  EXPECT_NE(d.reply.text.find("nobody@local.example"), std::string::npos);
}

TEST_F(PolicyTest, AliasExpandsToSeveralUsersOnce) {
  RcptDecision d = rcpt(outsider(), "<team@local.example>");
  EXPECT_TRUE(d.accepted);
  EXPECT_EQ(d.local_users, (std::vector<std::string>{"alice", "bob", "carol"}));
}

TEST_F(PolicyTest, AliasToRemoteAddressGoesToSpool) {
  RcptDecision d = rcpt(outsider(), "<friend@local.example>");
  EXPECT_TRUE(d.accepted);
  EXPECT_TRUE(d.local_users.empty());
  EXPECT_EQ(d.remote, std::vector<std::string>{"pal@remote.example"});
  EXPECT_EQ(d.route, "smarthost");
}

TEST_F(PolicyTest, PostmasterWithoutDomainIsLocal) {
  RcptDecision d = rcpt(outsider(), "<Postmaster>");
  EXPECT_TRUE(d.accepted) << d.reply.text;
  EXPECT_EQ(d.local_users, std::vector<std::string>{"alice"});
}

TEST_F(PolicyTest, LegitimateFormsAccepted) {
  // Case-insensitive domain and user, quoted plain local part, source
  // route to a local final mailbox, UTF-8-free bare form.
  for (const char* to :
       {"<alice@local.example>", "<ALICE@LOCAL.EXAMPLE>",
        "<Alice@Local.Example>", "<\"alice\"@local.example>",
        "alice@local.example", "<@other.example:alice@local.example>"}) {
    RcptDecision d = rcpt(outsider(), to);
    EXPECT_TRUE(d.accepted) << to << ": " << d.reply.text;
    EXPECT_EQ(d.local_users, std::vector<std::string>{"alice"}) << to;
  }
}

TEST_F(PolicyTest, RelayDeniedFromOutside) {
  RcptDecision d = rcpt(outsider(), "<user@other.example>");
  EXPECT_FALSE(d.accepted);
  EXPECT_REPLY(d.reply, 550, "5.7.1");
  EXPECT_TRUE(d.remote.empty());
}

// Every classic trick for getting an open relay out of a server, sent
// from a network outside the office.  None may be accepted.
TEST_F(PolicyTest, ClassicRelayTricksRefusedFromOutside) {
  struct Trick {
    const char* rcpt;
    int code;
    const char* enhanced;
  };
  const Trick tricks[] = {
      // percent hack
      {"<user%other.example@local.example>", 550, "5.7.1"},
      {"<user%other.example%local.example@local.example>", 550, "5.7.1"},
      // source routes through us to an outside final domain
      {"<@local.example:user@other.example>", 550, "5.7.1"},
      {"<@local.example,@x.example:user@other.example>", 550, "5.7.1"},
      // quoted local parts carrying an @
      {"<\"user@other.example\"@local.example>", 550, "5.7.1"},
      {"<\"user%other.example\"@local.example>", 550, "5.7.1"},
      // bang paths
      {"<other.example!user@local.example>", 550, "5.7.1"},
      {"<\"other.example!user\"@local.example>", 550, "5.7.1"},
      // trailing dots: not a valid domain, refused before any lookup
      {"<user@other.example.>", 501, "5.1.3"},
      {"<user@local.example.>", 501, "5.1.3"},
      // case tricks
      {"<user@LOCAL.EXAMPLE.>", 501, "5.1.3"},
      {"<user@OTHER.Example>", 550, "5.7.1"},
      {"<user%OTHER.EXAMPLE@Local.Example>", 550, "5.7.1"},
      // a local domain as a prefix or suffix of the real one
      {"<user@local.example.other.example>", 550, "5.7.1"},
      {"<user@xlocal.example>", 550, "5.7.1"},
      // address literals, our own or not
      {"<user@[127.0.0.1]>", 550, "5.7.1"},
      {"<user@[IPv6:::1]>", 550, "5.7.1"},
      // two @
      {"<user@other.example@local.example>", 501, "5.1.3"},
  };
  for (const Trick& t : tricks) {
    RcptDecision d = rcpt(outsider(), t.rcpt);
    EXPECT_FALSE(d.accepted) << t.rcpt;
    EXPECT_TRUE(d.remote.empty() && d.local_users.empty()) << t.rcpt;
    EXPECT_EQ(d.reply.code, t.code) << t.rcpt << ": " << d.reply.text;
    EXPECT_EQ(d.reply.enhanced, t.enhanced) << t.rcpt;
  }
}

TEST_F(PolicyTest, OfficeNetworksMayRelay) {
  for (const char* ip : {"192.168.10.20", "::ffff:192.168.10.99",
                         "2001:db8:10::25", "2001:db8:10:ffff::1"}) {
    ClientFacts f{ip};
    RcptDecision d = rcpt(f, "<user@other.example>");
    EXPECT_TRUE(d.accepted) << ip << ": " << d.reply.text;
    EXPECT_EQ(d.remote, std::vector<std::string>{"user@other.example"});
    EXPECT_EQ(d.route, "smarthost");
  }
  for (const char* ip : {"192.168.11.20", "::ffff:192.168.11.1",
                         "2001:db8:11::1", "::1", "garbage", ""}) {
    ClientFacts f{ip};
    EXPECT_FALSE(rcpt(f, "<user@other.example>").accepted) << ip;
  }
}

TEST_F(PolicyTest, SourceRouteFromOfficeGoesToFinalMailbox) {
  RcptDecision d = rcpt(office(), "<@local.example:user@other.example>");
  EXPECT_TRUE(d.accepted);
  EXPECT_EQ(d.remote, std::vector<std::string>{"user@other.example"});
}

TEST_F(PolicyTest, AuthenticatedUserMayRelay) {
  RcptDecision d =
      rcpt(logged_in("bob"), "<user@other.example>", "<bob@local.example>");
  EXPECT_TRUE(d.accepted) << d.reply.text;
  EXPECT_EQ(d.route, "smarthost");
}

TEST_F(PolicyTest, TricksRefusedEvenFromOffice) {
  // A routing character in a local address is never a user of ours.
  for (const char* to : {"<user%other.example@local.example>",
                         "<other.example!user@local.example>",
                         "<\"user@other.example\"@local.example>"}) {
    RcptDecision d = rcpt(office(), to);
    EXPECT_FALSE(d.accepted) << to;
    EXPECT_REPLY(d.reply, 550, "5.7.1");
  }
}

TEST_F(PolicyTest, BarredRecipientsAddressAndDomain) {
  EXPECT_REPLY(rcpt(office(), "<CEO@local.example>").reply, 550, "5.7.1");
  EXPECT_REPLY(rcpt(office(), "<x@blackhole.example>").reply, 550, "5.7.1");
  EXPECT_TRUE(rcpt(office(), "<x@other.example>").accepted);
}

TEST_F(PolicyTest, BarredSendersAddressAndDomain) {
  EXPECT_REPLY(sender(office(), "<spammer@bad.example>"), 550, "5.7.1");
  EXPECT_REPLY(sender(office(), "<SPAMMER@Bad.Example>"), 550, "5.7.1");
  EXPECT_REPLY(sender(office(), "<anyone@worse.example>"), 550, "5.7.1");
  EXPECT_REPLY(sender(office(), "<friend@bad.example>"), 250, "2.1.0");
  EXPECT_REPLY(sender(office(), "<>"), 250, "2.1.0");
}

TEST_F(PolicyTest, SenderSyntaxErrorIs501_517) {
  EXPECT_REPLY(sender(office(), "<bad@@x>"), 501, "5.1.7");
  EXPECT_REPLY(sender(office(), "<a@b.example.>"), 501, "5.1.7");
  EXPECT_REPLY(sender(office(), "<Postmaster>"), 501, "5.1.7");
}

TEST_F(PolicyTest, RecipientSyntaxErrorIs501_513) {
  EXPECT_REPLY(rcpt(office(), "<bad@@x>").reply, 501, "5.1.3");
  EXPECT_REPLY(rcpt(office(), "<>").reply, 501, "5.1.3");
}

TEST_F(PolicyTest, SubmissionWithoutAuthIs530) {
  ClientFacts f = office();
  f.mode = ListenerConfig::Mode::submission;
  f.require_auth = true;
  EXPECT_REPLY(sender(f, "<bob@local.example>"), 530, "5.7.0");
  f.authenticated = true;
  f.auth_user = "bob";
  EXPECT_REPLY(sender(f, "<bob@local.example>"), 250, "2.1.0");
}

TEST_F(PolicyTest, InternalOnlyUserStaysInside) {
  // Logged in as carol.
  ClientFacts carol = logged_in("carol");
  EXPECT_REPLY(rcpt(carol, "<x@other.example>", "<carol@local.example>").reply,
               550, "5.7.1");
  EXPECT_TRUE(
      rcpt(carol, "<x@branch.example>", "<carol@local.example>").accepted);
  EXPECT_TRUE(
      rcpt(carol, "<bob@local.example>", "<carol@local.example>").accepted);
  // From the office as carol's envelope sender, not logged in.
  EXPECT_REPLY(
      rcpt(office(), "<x@other.example>", "<Carol@Local.Example>").reply, 550,
      "5.7.1");
  // Bob is not restricted.
  EXPECT_TRUE(rcpt(logged_in("bob"), "<x@other.example>", "<bob@local.example>")
                  .accepted);
}

TEST_F(PolicyTest, SizeLimitsGlobalAndPerUser) {
  EXPECT_EQ(policy_->size_limit(office()), 10u << 20);
  EXPECT_EQ(policy_->size_limit(logged_in("alice")), 50u << 20);
  EXPECT_EQ(policy_->size_limit(logged_in("ALICE")), 50u << 20);
  EXPECT_EQ(policy_->size_limit(logged_in("bob")), 10u << 20);

  EXPECT_REPLY(sender(office(), "<x@local.example>", (10u << 20) + 1), 552,
               "5.3.4");
  EXPECT_REPLY(sender(office(), "<x@local.example>", 10u << 20), 250, "2.1.0");
  EXPECT_REPLY(sender(logged_in("alice"), "<alice@local.example>", 20u << 20),
               250, "2.1.0");
  // Alice's limit is hers only once she has logged in.
  EXPECT_REPLY(sender(office(), "<alice@local.example>", 20u << 20), 552,
               "5.3.4");
}

TEST_F(PolicyTest, RouterCanBePluggedIn) {
  struct Fixed : Router {
    std::string route_for(std::string_view domain) const override {
      return domain == "branch.example" ? "branch" : "";
    }
  } router;
  policy_->set_router(&router);
  EXPECT_EQ(rcpt(office(), "<x@Branch.Example>").route, "branch");
  EXPECT_REPLY(rcpt(office(), "<x@nowhere.example>").reply, 550, "5.1.2");
  policy_->set_router(nullptr);
  EXPECT_EQ(rcpt(office(), "<x@nowhere.example>").route, "smarthost");
}

TEST(Cidr, MatchesV4V6AndMapped) {
  auto v4 = Cidr::parse("10.0.0.0/8");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->contains("10.255.1.2"));
  EXPECT_TRUE(v4->contains("::ffff:10.1.2.3"));
  EXPECT_FALSE(v4->contains("11.0.0.1"));
  EXPECT_FALSE(v4->contains("::a01:203"));  // v4-compatible is not mapped

  auto mapped = Cidr::parse("::ffff:10.0.0.0/104");
  ASSERT_TRUE(mapped);
  EXPECT_TRUE(mapped->contains("10.1.2.3"));

  auto v6 = Cidr::parse("2001:db8::/32");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->contains("2001:db8:ffff::1"));
  EXPECT_FALSE(v6->contains("2001:db9::1"));
  EXPECT_FALSE(v6->contains("10.0.0.1"));

  auto host = Cidr::parse("127.0.0.1");
  ASSERT_TRUE(host);
  EXPECT_TRUE(host->contains("127.0.0.1"));
  EXPECT_FALSE(host->contains("127.0.0.2"));

  auto odd = Cidr::parse("192.168.1.128/25");
  ASSERT_TRUE(odd);
  EXPECT_TRUE(odd->contains("192.168.1.200"));
  EXPECT_FALSE(odd->contains("192.168.1.127"));

  EXPECT_TRUE(Cidr::parse("0.0.0.0/0")->contains("8.8.8.8"));
}

TEST(Cidr, RefusesBadNetworks) {
  for (const char* bad :
       {"10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/",
        "10.0.0.0/x", "example.org", "", "10.0.0/8", "2001:db8::1/32"}) {
    EXPECT_FALSE(Cidr::parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace ferry::gw
