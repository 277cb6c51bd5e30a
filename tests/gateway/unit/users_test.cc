#include "gateway/users.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ferry::gw {
namespace {

// Low iteration counts keep the tests quick; the format and code path are
// the same as for the default.
constexpr unsigned kFast = 1000;

std::unique_ptr<Users> parse(std::string_view users, std::string_view aliases,
                             std::string& error) {
  return Users::parse(users, "users", aliases, "aliases", error);
}

TEST(HashPassword, FormatAndDefaultCost) {
  std::string h = hash_password("secret");
  ASSERT_EQ(h.rfind("pbkdf2-sha256$100000$", 0), 0u) << h;
  EXPECT_TRUE(verify_password("secret", h));
  EXPECT_FALSE(verify_password("Secret", h));
}

TEST(HashPassword, SaltedSoSamePasswordHashesDiffer) {
  std::string a = hash_password("pw", kFast), b = hash_password("pw", kFast);
  EXPECT_NE(a, b);
  EXPECT_TRUE(verify_password("pw", a));
  EXPECT_TRUE(verify_password("pw", b));
}

TEST(HashPassword, MalformedHashesNeverVerify) {
  std::string good = hash_password("pw", kFast);
  for (std::string bad :
       {std::string(""), std::string("!"), std::string("pw"),
        "sha1$1000$" + good.substr(good.find('$', 14) + 1),
        std::string("pbkdf2-sha256$0$AAAA$AAAA"),
        std::string("pbkdf2-sha256$x$AAAA$AAAA"),
        std::string("pbkdf2-sha256$1000$$"),
        std::string("pbkdf2-sha256$1000$AAAA$AAAA"),  // key too short
        std::string("pbkdf2-sha256$99999999999$AAAA$AAAA"),
        good.substr(0, good.size() - 4)}) {
    EXPECT_FALSE(verify_password("pw", bad)) << bad;
  }
}

// Pins interoperability: a hash computed independently (Python's
// hashlib.pbkdf2_hmac('sha256', b'password', b'saltsaltsaltsalt', 1000))
// must verify.
TEST(HashPassword, VerifiesIndependentlyComputedHash) {
  EXPECT_TRUE(verify_password("password",
                              "pbkdf2-sha256$1000$c2FsdHNhbHRzYWx0c2FsdA==$"
                              "8nX7hwFEzIB8aPajJTYK8weHQc5Ngz0pFVAKvSu4jQA="));
}

TEST(Users, AuthenticateAndExists) {
  std::string error;
  auto u =
      parse("# staff\nalice:" + hash_password("wonder", kFast) +
                "\n\nBob:" + hash_password("builder", kFast) + "\nnologin:!\n",
            "", error);
  ASSERT_TRUE(u) << error;
  EXPECT_TRUE(u->exists("alice"));
  EXPECT_TRUE(u->exists("BOB"));
  EXPECT_TRUE(u->exists("nologin"));
  EXPECT_FALSE(u->exists("mallory"));
  EXPECT_TRUE(u->authenticate("alice", "wonder"));
  EXPECT_TRUE(u->authenticate("ALICE", "wonder"));
  EXPECT_TRUE(u->authenticate("bob", "builder"));
  EXPECT_FALSE(u->authenticate("alice", "builder"));
  EXPECT_FALSE(u->authenticate("alice", ""));
  EXPECT_FALSE(u->authenticate("mallory", "wonder"));
  EXPECT_FALSE(u->authenticate("nologin", ""));
  EXPECT_FALSE(u->authenticate("nologin", "!"));
}

TEST(Users, AliasesExpandToSeveralUsersAndRemote) {
  std::string error;
  auto u = parse("alice:!\nbob:!\ncarol:!\n",
                 "sales: alice, bob\n"
                 "all: sales carol,alice\n"  // duplicates collapse
                 "Outside: friend@remote.example\n",
                 error);
  ASSERT_TRUE(u) << error;
  EXPECT_EQ(u->expand("sales"), (std::vector<std::string>{"alice", "bob"}));
  EXPECT_EQ(u->expand("ALL"),
            (std::vector<std::string>{"alice", "bob", "carol"}));
  EXPECT_EQ(u->expand("outside"),
            std::vector<std::string>{"friend@remote.example"});
  EXPECT_EQ(u->expand("Carol"), std::vector<std::string>{"carol"});
  EXPECT_TRUE(u->expand("nobody").empty());
}

TEST(Users, LoadErrorsNameFileAndLine) {
  struct Case {
    const char* users;
    const char* aliases;
    const char* want;
  };
  const Case cases[] = {
      {"alice\n", "", "users:1: expected name:hash"},
      {"alice:!\nal%ice:!\n", "", "users:2: bad user name"},
      {"alice:!\nalice:!\n", "", "users:2: user alice listed twice"},
      {"alice:md5$x\n", "", "users:1: user alice: expected a hash"},
      {"alice:!\n", "\n\nteam alice\n", "aliases:3: expected alias:"},
      {"alice:!\n", "team: alice, ghost\n",
       "aliases:1: alias team: unknown user 'ghost'"},
      {"alice:!\n", "a: b\nb: a\n", "expands to itself"},
      {"alice:!\n", "alice: alice\n", "aliases:1: alias alice is also a"},
      {"alice:!\n", "team:\n", "aliases:1: alias team has no targets"},
      {"alice:!\n", "team: x@bad..example\n",
       "aliases:1: alias team: bad address"},
  };
  for (const Case& c : cases) {
    std::string error;
    EXPECT_FALSE(parse(c.users, c.aliases, error)) << c.users << c.aliases;
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "got: " << error << "\nwant: " << c.want;
  }
}

TEST(Users, ValidNamesCarryNoRoutingCharacters) {
  for (const char* ok : {"alice", "a.b", "first-last", "x_y", "a+b"}) {
    EXPECT_TRUE(Users::valid_name(ok)) << ok;
  }
  for (const char* bad :
       {"", ".hidden", "a/b", "a%b", "a!b", "a@b", "a b", "a:b", ".."}) {
    EXPECT_FALSE(Users::valid_name(bad)) << bad;
  }
}

TEST(Users, LoadReadsFiles) {
  char tmpl[] = "/tmp/ferry-users-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::filesystem::path dir = tmpl;
  std::ofstream(dir / "users")
      << "alice:" << hash_password("pw", kFast) << "\n";
  std::ofstream(dir / "aliases") << "boss: alice\n";
  std::string error;
  auto u = Users::load(dir / "users", dir / "aliases", error);
  ASSERT_TRUE(u) << error;
  EXPECT_TRUE(u->authenticate("alice", "pw"));
  EXPECT_EQ(u->expand("boss"), std::vector<std::string>{"alice"});

  auto none = Users::load(dir / "users", "", error);
  ASSERT_TRUE(none) << error;

  EXPECT_FALSE(Users::load(dir / "missing", "", error));
  EXPECT_NE(error.find((dir / "missing").string()), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Users, SampleFilesLoad) {
  std::string error;
  auto u = Users::load(FERRY_SOURCE_DIR "/etc/users.sample",
                       FERRY_SOURCE_DIR "/etc/aliases.sample", error);
  ASSERT_TRUE(u) << error;
  EXPECT_TRUE(u->authenticate("alice", "alice-example-password"));
  EXPECT_FALSE(u->expand("postmaster").empty());
}

}  // namespace
}  // namespace ferry::gw
