#include "gateway/maildir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;

class MaildirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-maildir-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(root_);
  }

  static std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static unsigned mode(const fs::path& p) {
    struct stat st;
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  }

  fs::path root_;
};

TEST_F(MaildirTest, DeliversIntoNewWithExactBytes) {
  std::string body = "From: a@b\r\nSubject: hi\r\n\r\nbody\r\n";
  body.push_back('\0');  // binary-safe
  std::string dir = root_ / "alice";
  ASSERT_FALSE(maildir_deliver(dir, "Q1.alice.ferry", body));
  EXPECT_EQ(slurp(root_ / "alice/new/Q1.alice.ferry"), body);
  EXPECT_TRUE(fs::is_empty(root_ / "alice/tmp"));
  EXPECT_TRUE(fs::is_directory(root_ / "alice/cur"));
}

TEST_F(MaildirTest, CreatesPrivateDirectoriesAndFile) {
  std::string dir = root_ / "bob";
  ASSERT_FALSE(maildir_deliver(dir, "Q2.bob.ferry", "x"));
  for (const char* d : {"bob", "bob/tmp", "bob/new", "bob/cur"}) {
    EXPECT_EQ(mode(root_ / d), 0700u) << d;
  }
  EXPECT_EQ(mode(root_ / "bob/new/Q2.bob.ferry"), 0600u);
}

TEST_F(MaildirTest, RepeatIsIdempotent) {
  std::string dir = root_ / "carol";
  ASSERT_FALSE(maildir_deliver(dir, "Q3.carol.ferry", "first"));
  ASSERT_FALSE(maildir_deliver(dir, "Q3.carol.ferry", "second"));
  EXPECT_EQ(slurp(root_ / "carol/new/Q3.carol.ferry"), "first");
  EXPECT_EQ(std::distance(fs::directory_iterator(root_ / "carol/new"),
                          fs::directory_iterator()),
            1);
}

TEST_F(MaildirTest, RepeatAfterClientMovedItToCurIsIdempotent) {
  std::string dir = root_ / "dave";
  ASSERT_FALSE(maildir_deliver(dir, "Q4.dave.ferry", "msg"));
  fs::rename(root_ / "dave/new/Q4.dave.ferry",
             root_ / "dave/cur/Q4.dave.ferry:2,S");
  ASSERT_FALSE(maildir_deliver(dir, "Q4.dave.ferry", "msg"));
  EXPECT_TRUE(fs::is_empty(root_ / "dave/new"));
  // A different message whose name merely starts the same is delivered.
  ASSERT_FALSE(maildir_deliver(dir, "Q4.dave.ferry2", "other"));
  EXPECT_TRUE(fs::exists(root_ / "dave/new/Q4.dave.ferry2"));
}

TEST_F(MaildirTest, LeftoverTmpFileFromCrashIsReplaced) {
  std::string dir = root_ / "erin";
  fs::create_directories(root_ / "erin/tmp");
  std::ofstream(root_ / "erin/tmp/Q5.erin.ferry") << "half a mess";
  ASSERT_FALSE(maildir_deliver(dir, "Q5.erin.ferry", "whole"));
  EXPECT_EQ(slurp(root_ / "erin/new/Q5.erin.ferry"), "whole");
}

TEST_F(MaildirTest, ErrorNamesThePath) {
  // A file where the Maildir should be: no user can write there, root
  // included.
  std::ofstream(root_ / "file") << "x";
  std::string dir = root_ / "file/frank";
  std::string error;
  std::error_code ec = maildir_deliver(dir, "Q6.frank.ferry", "m", error);
  ASSERT_TRUE(ec);
  EXPECT_EQ(ec, std::errc::not_a_directory);
  EXPECT_NE(error.find(dir), std::string::npos) << error;
}

// The classic case: a directory the delivering user may not write.  Root
// may write anywhere, so when we are root the delivery runs in a child
// that has dropped to nobody (65534).
TEST_F(MaildirTest, UnwritableDirectoryErrorNamesThePath) {
  fs::path locked = root_ / "locked";
  fs::create_directories(locked / "new");
  fs::create_directories(locked / "tmp");
  fs::create_directories(locked / "cur");
  fs::permissions(root_, fs::perms(0755));
  for (const char* d : {"", "/new", "/tmp", "/cur"}) {
    fs::permissions(locked.string() + d, fs::perms(0555));
  }

  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) {
      _exit(2);
    }
    std::string error;
    std::error_code ec =
        maildir_deliver(locked.string(), "Q7.x.ferry", "m", error);
    std::string out = std::to_string(ec.value()) + "\n" + error;
    if (write(fds[1], out.data(), out.size()) < 0) _exit(3);
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, n);
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  size_t nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos) << out;
  EXPECT_EQ(std::stoi(out.substr(0, nl)), EACCES);
  std::string error = out.substr(nl + 1);
  EXPECT_NE(error.find((locked / "tmp/Q7.x.ferry").string()), std::string::npos)
      << error;
  EXPECT_NE(error.find("ermission denied"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(locked / "new/Q7.x.ferry"));
}

TEST_F(MaildirTest, RefusesNamesThatEscapeTheDirectory) {
  std::string dir = root_ / "gina";
  EXPECT_TRUE(maildir_deliver(dir, "../evil", "m"));
  EXPECT_TRUE(maildir_deliver(dir, "", "m"));
  EXPECT_TRUE(maildir_deliver(dir, ".hidden", "m"));
  EXPECT_FALSE(fs::exists(root_ / "evil"));
}

// Real messages from the shared corpus arrive byte for byte.
TEST_F(MaildirTest, CorpusMessagesArriveByteForByte) {
  fs::path corpus = fs::path(FERRY_SHARED_DIR) / "corpus/messages";
  if (!fs::is_directory(corpus)) GTEST_SKIP() << corpus << " absent";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(corpus)) {
    if (e.path().extension() == ".eml") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.size() > 40) files.resize(40);  // each delivery fsyncs twice
  ASSERT_FALSE(files.empty());
  std::string dir = root_ / "corpus";
  for (const fs::path& f : files) {
    std::string body = slurp(f);
    std::string name = maildir_unique_name(f.stem().string(), "corpus");
    ASSERT_FALSE(maildir_deliver(dir, name, body)) << f;
    EXPECT_EQ(slurp(root_ / "corpus/new" / name), body) << f;
  }
}

TEST(MaildirUniqueName, StableAndSafe) {
  EXPECT_EQ(maildir_unique_name("0MABC123", "alice"),
            maildir_unique_name("0MABC123", "alice"));
  EXPECT_EQ(maildir_unique_name("0MABC123", "alice"), "0MABC123.alice.ferry");
  EXPECT_NE(maildir_unique_name("0MABC123", "alice"),
            maildir_unique_name("0MABC123", "bob"));
  EXPECT_NE(maildir_unique_name("0MABC123", "alice"),
            maildir_unique_name("0MABC124", "alice"));
  EXPECT_EQ(maildir_unique_name("Q/1", "a:b%c d"), "Q%2F1.a%3Ab%25c%20d.ferry");
}

}  // namespace
}  // namespace ferry::gw
