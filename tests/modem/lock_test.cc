// UUCP lock files: name rule, format, live locks refused, stale locks
// taken over (HAYES.md §14).
#include "modem/lock.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "modem/error.h"

namespace ferry::modem {
namespace {

class LockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-lock-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string read(const std::string& name) {
    std::ifstream in(dir_ + "/" + name, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void write(const std::string& name, const std::string& content) {
    std::ofstream out(dir_ + "/" + name, std::ios::binary);
    out << content;
  }
  // A PID that surely belongs to no process: a reaped child's.
  static pid_t dead_pid() {
    pid_t pid = ::fork();
    if (pid == 0) ::_exit(0);
    ::waitpid(pid, nullptr, 0);
    return pid;
  }

  std::string dir_;
};

TEST(LockName, FollowsPppdRule) {
  EXPECT_EQ(uucp_lock_name("/dev/ttyS0"), "LCK..ttyS0");
  EXPECT_EQ(uucp_lock_name("/dev/pts/3"), "LCK..pts_3");
  EXPECT_EQ(uucp_lock_name("/dev/modem"), "LCK..modem");
  EXPECT_EQ(uucp_lock_name("/tmp/emu/ttyEMU0"), "LCK..ttyEMU0");
  EXPECT_EQ(uucp_lock_name("ttyUSB0"), "LCK..ttyUSB0");
}

TEST_F(LockTest, LockFileHoldsPidAsTenCharactersAndNewline) {
  UucpLock lock;
  ASSERT_FALSE(lock.acquire(dir_, "/dev/ttyS0"));
  char want[16];
  std::snprintf(want, sizeof want, "%10d\n", static_cast<int>(::getpid()));
  EXPECT_EQ(read("LCK..ttyS0"), want);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/LCK..ttyS0").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  lock.release();
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/LCK..ttyS0"));
}

TEST_F(LockTest, NoTemporaryFilesLeftBehind) {
  {
    UucpLock lock;
    ASSERT_FALSE(lock.acquire(dir_, "/dev/ttyS1"));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

TEST_F(LockTest, LiveLockOfAnotherProcessIsRefusedWithItsPid) {
  pid_t child = ::fork();
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n", static_cast<int>(child));
  write("LCK..ttyS0", content);

  UucpLock lock;
  pid_t holder = 0;
  EXPECT_EQ(lock.acquire(dir_, "/dev/ttyS0", &holder),
            make_error_code(ModemErrc::port_locked));
  EXPECT_EQ(holder, child);
  EXPECT_FALSE(lock.held());
  EXPECT_EQ(read("LCK..ttyS0"), content);  // untouched

  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
}

TEST_F(LockTest, StaleLockOfDeadProcessIsTakenOver) {
  pid_t dead = dead_pid();
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n", static_cast<int>(dead));
  write("LCK..ttyUSB0", content);

  UucpLock lock;
  pid_t stale = 0;
  ASSERT_FALSE(lock.acquire(dir_, "/dev/ttyUSB0", nullptr, &stale));
  EXPECT_EQ(stale, dead);
  EXPECT_EQ(std::atoi(read("LCK..ttyUSB0").c_str()), ::getpid());
}

TEST_F(LockTest, StaleBinaryPidFromOldProgramsIsUnderstood) {
  int dead = dead_pid();
  write("LCK..ttyS2", std::string(reinterpret_cast<char*>(&dead), 4));
  UucpLock lock;
  pid_t stale = 0;
  ASSERT_FALSE(lock.acquire(dir_, "/dev/ttyS2", nullptr, &stale));
  EXPECT_EQ(stale, dead);
}

TEST_F(LockTest, GarbageLockIsTakenOver) {
  write("LCK..ttyS3", "hello\n");
  UucpLock lock;
  EXPECT_FALSE(lock.acquire(dir_, "/dev/ttyS3"));
}

TEST_F(LockTest, SecondLockInSameProcessIsRefused) {
  UucpLock first, second;
  ASSERT_FALSE(first.acquire(dir_, "/dev/ttyS0"));
  pid_t holder = 0;
  EXPECT_EQ(second.acquire(dir_, "/dev/ttyS0", &holder),
            make_error_code(ModemErrc::port_locked));
  EXPECT_EQ(holder, ::getpid());
  first.release();
  EXPECT_FALSE(second.acquire(dir_, "/dev/ttyS0"));
}

TEST_F(LockTest, LeftoverWithOurOwnPidFromEarlierProcessIsTakenOver) {
  char content[16];
  std::snprintf(content, sizeof content, "%10d\n",
                static_cast<int>(::getpid()));
  write("LCK..ttyS4", content);
  UucpLock lock;
  EXPECT_FALSE(lock.acquire(dir_, "/dev/ttyS4"));
}

TEST_F(LockTest, ReleaseLeavesALockRetakenBySomeoneElse) {
  UucpLock lock;
  ASSERT_FALSE(lock.acquire(dir_, "/dev/ttyS5"));
  write("LCK..ttyS5", "         1\n");  // broken and retaken by init (pid 1)
  lock.release();
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/LCK..ttyS5"));
}

TEST_F(LockTest, MissingLockDirectoryIsASystemError) {
  UucpLock lock;
  std::error_code ec = lock.acquire(dir_ + "/nonexistent", "/dev/ttyS0");
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
}

}  // namespace
}  // namespace ferry::modem
