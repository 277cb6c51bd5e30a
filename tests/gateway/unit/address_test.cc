#include "gateway/address.h"

#include <gtest/gtest.h>

#include <random>

namespace ferry::gw {
namespace {

struct Good {
  const char* input;
  const char* local;
  const char* domain;
  const char* rest;
};

// Table of paths clients really send, and what we must make of them.
TEST(ParsePath, AcceptsTheFormsClientsSend) {
  const Good cases[] = {
      {"<alice@example.org>", "alice", "example.org", ""},
      {" <alice@example.org>", "alice", "example.org", ""},
      {"alice@example.org", "alice", "example.org", ""},
      {"<alice@example.org> SIZE=1000 BODY=8BITMIME", "alice", "example.org",
       "SIZE=1000 BODY=8BITMIME"},
      {"alice@example.org SIZE=5", "alice", "example.org", "SIZE=5"},
      {"<first.last+tag@Sub.Example.ORG>", "first.last+tag", "Sub.Example.ORG",
       ""},
      {"<\"john doe\"@example.org>", "john doe", "example.org", ""},
      {"<\"a\\\"b\"@example.org>", "a\"b", "example.org", ""},
      {"<user@[192.0.2.1]>", "user", "[192.0.2.1]", ""},
      {"<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]", ""},
      {"<j\xc3\xb6rg@b\xc3\xbc"
       "cher.example>",
       "j\xc3\xb6rg",
       "b\xc3\xbc"
       "cher.example",
       ""},
      {"<Postmaster>", "Postmaster", "", ""},
  };
  for (const Good& c : cases) {
    PathParse p = parse_path(c.input);
    EXPECT_TRUE(p.ok) << c.input << ": " << p.error;
    EXPECT_FALSE(p.null_path) << c.input;
    EXPECT_EQ(p.box.local, c.local) << c.input;
    EXPECT_EQ(p.box.domain, c.domain) << c.input;
    EXPECT_EQ(p.rest, c.rest) << c.input;
  }
}

TEST(ParsePath, NullPath) {
  PathParse p = parse_path("<> SIZE=10");
  ASSERT_TRUE(p.ok);
  EXPECT_TRUE(p.null_path);
  EXPECT_EQ(p.rest, "SIZE=10");
}

TEST(ParsePath, SourceRouteIsAcceptedAndDropped) {
  PathParse p = parse_path("<@relay.example,@b.example:user@final.example>");
  ASSERT_TRUE(p.ok) << p.error;
  EXPECT_TRUE(p.source_route);
  EXPECT_EQ(p.box.str(), "user@final.example");
}

TEST(ParsePath, QuotedLocalPartKeepsItsAtSign) {
  PathParse p = parse_path("<\"user@other.example\"@local.example>");
  ASSERT_TRUE(p.ok) << p.error;
  EXPECT_TRUE(p.quoted_local);
  EXPECT_EQ(p.box.local, "user@other.example");
  EXPECT_EQ(p.box.domain, "local.example");
  EXPECT_EQ(p.box.str(), "\"user@other.example\"@local.example");
}

TEST(ParsePath, StrQuotesOnlyWhenNeeded) {
  EXPECT_EQ((Mailbox{"a.b", "x.org"}).str(), "a.b@x.org");
  EXPECT_EQ((Mailbox{"a b", "x.org"}).str(), "\"a b\"@x.org");
  EXPECT_EQ((Mailbox{"a..b", "x.org"}).str(), "\"a..b\"@x.org");
  EXPECT_EQ((Mailbox{"a\\b", "x.org"}).str(), "\"a\\\\b\"@x.org");
  EXPECT_EQ((Mailbox{"postmaster", ""}).str(), "postmaster");
}

TEST(ParsePath, RefusesBrokenPaths) {
  const char* bad[] = {
      "",
      "   ",
      "<>x",
      "<alice>",  // no domain (only postmaster may)
      "<alice@>",
      "<@example.org>",
      "<alice@example.org",  // unclosed
      "alice@example.org>",
      "<alice@example.org.>",  // trailing dot
      "<alice@.example.org>",
      "<alice@exa..mple.org>",
      "<alice@-example.org>",
      "<alice@example-.org>",
      "<.alice@example.org>",
      "<alice.@example.org>",
      "<al..ice@example.org>",
      "<alice@example.org@other.org>",
      "<alice @example.org>",
      "<\"unterminated@example.org>",
      "<alice@[300.1.1.1]>",
      "<alice@[IPv6:zz::1]>",
      "<@a.example:>",
      "<@a.example alice@b.example>",
      "<alice@example.org>junk",
      "<a\xff@example.org>",      // not UTF-8
      "<a\xc0\xaf@example.org>",  // overlong UTF-8
      "<a\x01@example.org>",
  };
  for (const char* b : bad) {
    PathParse p = parse_path(b);
    EXPECT_FALSE(p.ok) << "accepted: " << b;
    if (!p.ok) {
      EXPECT_FALSE(p.error.empty()) << b;
    }
  }
}

TEST(ParsePath, EnforcesRfc5321Lengths) {
  std::string local64(64, 'a'), local65(65, 'a');
  EXPECT_TRUE(parse_path("<" + local64 + "@x.org>").ok);
  EXPECT_FALSE(parse_path("<" + local65 + "@x.org>").ok);
  std::string label64(64, 'b');
  EXPECT_FALSE(parse_path("<a@" + label64 + ".org>").ok);
  std::string long_domain;
  for (int i = 0; i < 5; ++i) long_domain += std::string(60, 'c') + ".";
  long_domain += "org";
  EXPECT_FALSE(parse_path("<a@" + long_domain + ">").ok);
}

TEST(LowerAscii, LeavesUtf8Alone) {
  EXPECT_EQ(lower_ascii("LoCaL.Example"), "local.example");
  EXPECT_EQ(lower_ascii("\xc3\x96"), "\xc3\x96");
}

// Random mutations of valid paths (fixed seed, bounded count): the parser
// must never crash or read out of bounds (the sanitizer build checks),
// and whatever it accepts must survive a round trip through str().
TEST(ParsePath, SurvivesMutatedInput) {
  const std::string seeds[] = {
      "<alice@example.org> SIZE=100",        "<\"a b\"@[IPv6:2001:db8::1]>",
      "<@a.example,@b.example:u@c.example>", "<>",
      "<j\xc3\xb6rg@b\xc3\xbc.example>",     "<Postmaster>"};
  const char alphabet[] = "<>@.:,\"\\[] %!aZ9-\x80\xc3\xff\t";
  std::mt19937 rng(20261204);
  for (int i = 0; i < 20000; ++i) {
    std::string s = seeds[rng() % std::size(seeds)];
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
      char c = alphabet[rng() % (sizeof alphabet - 1)];
      switch (rng() % 3) {
        case 0:
          s.insert(s.begin() + static_cast<long>(at), c);
          break;
        case 1:
          if (at < s.size()) s.erase(at, 1);
          break;
        default:
          if (at < s.size()) s[at] = c;
          break;
      }
    }
    PathParse p = parse_path(s);
    if (p.ok && !p.null_path) {
      PathParse again = parse_path("<" + p.box.str() + ">");
      ASSERT_TRUE(again.ok) << s << " -> " << p.box.str();
      EXPECT_EQ(again.box.local, p.box.local) << s;
      EXPECT_EQ(again.box.domain, p.box.domain) << s;
    } else if (!p.ok) {
      EXPECT_FALSE(p.error.empty()) << s;
    }
  }
}

}  // namespace
}  // namespace ferry::gw
