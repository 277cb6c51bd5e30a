#include "gateway/mailbox.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <utime.h>

#include <filesystem>
#include <fstream>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;

class MaildropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-maildrop-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    box_ = root_ / "alice";
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes a message file with a fixed modification time (its order).
  void put(const std::string& sub, const std::string& name,
           const std::string& body, time_t mtime) {
    fs::create_directories(box_ / "new");
    fs::create_directories(box_ / "cur");
    fs::create_directories(box_ / "tmp");
    std::ofstream(box_ / sub / name, std::ios::binary) << body;
    struct utimbuf t = {mtime, mtime};
    ASSERT_EQ(::utime((box_ / sub / name).c_str(), &t), 0);
  }

  std::unique_ptr<Maildrop> open() {
    std::error_code ec;
    std::string error;
    auto m = Maildrop::open(box_, ec, error);
    EXPECT_TRUE(m) << error;
    return m;
  }

  fs::path root_, box_;
};

TEST_F(MaildropTest, SnapshotOrderSizesAndUids) {
  put("new", "200.B.host", "b\n", 2000);
  put("cur", "100.A.host:2,S", "a: 1\r\n\r\nx\r\n", 1000);
  put("new", ".hidden", "ignored", 500);
  auto m = open();
  ASSERT_TRUE(m);
  ASSERT_EQ(m->messages().size(), 2u);
  EXPECT_EQ(m->messages()[0].uid, "100.A.host");
  EXPECT_EQ(m->messages()[0].size, 11u);
  EXPECT_FALSE(m->messages()[0].in_new);
  EXPECT_EQ(m->messages()[1].uid, "200.B.host");
  EXPECT_EQ(m->messages()[1].size, 3u);  // "b\r\n" on the wire
  EXPECT_EQ(m->live_count(), 2u);
  EXPECT_EQ(m->live_size(), 14u);
}

TEST_F(MaildropTest, EmptyMaildirIsCreatedForNewUser) {
  auto m = open();
  ASSERT_TRUE(m);
  EXPECT_TRUE(m->messages().empty());
  EXPECT_TRUE(fs::is_directory(box_ / "new"));
  EXPECT_TRUE(fs::is_directory(box_ / "cur"));
}

TEST_F(MaildropTest, SecondOpenIsRefusedWhileLocked) {
  auto first = open();
  ASSERT_TRUE(first);
  std::error_code ec;
  std::string error;
  EXPECT_FALSE(Maildrop::open(box_, ec, error));
  EXPECT_EQ(ec, std::errc::resource_unavailable_try_again);
  EXPECT_NE(error.find("another session"), std::string::npos) << error;
  first.reset();
  EXPECT_TRUE(open());
}

TEST_F(MaildropTest, DeleteMarksApplyOnlyAtCommit) {
  put("new", "1.a", "one\n", 1000);
  put("new", "2.b", "two\n", 2000);
  put("cur", "3.c:2,", "three\n", 3000);
  {
    auto m = open();
    ASSERT_TRUE(m->mark_deleted(1));
    EXPECT_FALSE(m->mark_deleted(1));  // already marked
    EXPECT_FALSE(m->mark_deleted(4));
    EXPECT_EQ(m->find(1), nullptr);
    EXPECT_EQ(m->live_count(), 2u);
    // Dropped without commit: nothing changes.
  }
  EXPECT_TRUE(fs::exists(box_ / "new/1.a"));

  auto m = open();
  m->mark_deleted(1);
  m->mark_deleted(3);
  m->mark_retrieved(2);
  size_t removed = 0;
  std::string error;
  EXPECT_FALSE(m->commit(removed, error)) << error;
  EXPECT_EQ(removed, 2u);
  EXPECT_FALSE(fs::exists(box_ / "new/1.a"));
  EXPECT_FALSE(fs::exists(box_ / "cur/3.c:2,"));
  EXPECT_TRUE(fs::exists(box_ / "cur/2.b:2,S"));  // seen, UID unchanged
}

TEST_F(MaildropTest, UnreadMailLeavesNewWithoutSeenFlag) {
  put("new", "1.a", "one\n", 1000);
  auto m = open();
  size_t removed = 0;
  std::string error;
  EXPECT_FALSE(m->commit(removed, error));
  EXPECT_TRUE(fs::exists(box_ / "cur/1.a:2,"));
  m.reset();
  EXPECT_EQ(open()->messages()[0].uid, "1.a");
}

TEST_F(MaildropTest, RsetClearsMarks) {
  put("new", "1.a", "one\n", 1000);
  auto m = open();
  m->mark_deleted(1);
  m->unmark_all();
  EXPECT_NE(m->find(1), nullptr);
}

TEST_F(MaildropTest, FileRemovedByAnotherProgramIsNotAnError) {
  put("new", "1.a", "one\n", 1000);
  auto m = open();
  m->mark_deleted(1);
  fs::remove(box_ / "new/1.a");
  size_t removed = 0;
  std::string error;
  EXPECT_FALSE(m->commit(removed, error)) << error;
  EXPECT_EQ(removed, 0u);
}

TEST(MaildirUidTest, UniquePartOrHash) {
  EXPECT_EQ(maildir_uid("123.M4P5.host:2,S"), "123.M4P5.host");
  EXPECT_EQ(maildir_uid("Q1.alice.ferry"), "Q1.alice.ferry");
  std::string odd = maildir_uid("Q1.j\xc3\xb6rg.ferry");  // UTF-8 user
  EXPECT_EQ(odd.size(), 64u);
  EXPECT_EQ(odd, maildir_uid("Q1.j\xc3\xb6rg.ferry:2,S"));
  EXPECT_EQ(maildir_uid(std::string(71, 'a')).size(), 64u);
  for (char c : odd) EXPECT_TRUE(isxdigit(static_cast<unsigned char>(c)));
}

}  // namespace
}  // namespace ferry::gw
