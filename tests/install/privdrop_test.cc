// gateway/privdrop.h: giving up root for good.  The drop itself cannot be
// undone, so each case that drops runs in a forked child, which reports
// what it saw through a pipe; the cases that drop need root and are
// skipped otherwise.  The target is the system's `nobody`.
#include "gateway/privdrop.h"

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ferry::gw {
namespace {

namespace fs = std::filesystem;

// Runs `body` in a child; returns what it wrote ("" means every check
// passed), or a note that it died.
std::string in_child(const std::function<std::string()>& body) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid < 0) return "fork failed";
  if (pid == 0) {
    ::close(p[0]);
    std::string report = body();
    (void)!::write(p[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(p[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, n);
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    out += " (child did not exit cleanly)";
  return out;
}

struct Nobody {
  uid_t uid;
  gid_t gid;
};

bool find_nobody(Nobody& n) {
  passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr) return false;
  n = {pw->pw_uid, pw->pw_gid};
  return true;
}

TEST(PrivDrop, RefusesAnEmptyUserName) {
  std::string error;
  EXPECT_FALSE(drop_privileges("", error));
  EXPECT_NE(error.find("empty"), std::string::npos) << error;
}

TEST(PrivDrop, RefusesAnUnknownUserAndNamesIt) {
  std::string error;
  EXPECT_FALSE(drop_privileges("ferry-no-such-user", error));
  EXPECT_NE(error.find("'ferry-no-such-user': no such user"), std::string::npos)
      << error;
}

TEST(PrivDrop, RefusesRootAsTheTarget) {
  std::string error;
  EXPECT_FALSE(drop_privileges("root", error));
  EXPECT_NE(error.find("refusing to run as root"), std::string::npos) << error;
  EXPECT_EQ(::geteuid(), ::getuid());  // nothing changed
}

TEST(PrivDrop, RootBecomesNobodyWithItsGroupsAndCannotComeBack) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  Nobody nb;
  if (!find_nobody(nb)) GTEST_SKIP() << "no user 'nobody'";

  // A file only root may read, to show the drop from the outside.
  fs::path dir = fs::temp_directory_path() /
                 ("ferry-privdrop-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::path secret = dir / "secret";
  int fd = ::open(secret.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ::chmod(dir.c_str(), 0755);

  std::string report = in_child([&]() -> std::string {
    std::string error;
    if (!drop_privileges("nobody", error)) return "drop failed: " + error;
    std::string bad;
    uid_t r, e, s;
    gid_t rg, eg, sg;
    ::getresuid(&r, &e, &s);
    ::getresgid(&rg, &eg, &sg);
    if (r != nb.uid || e != nb.uid || s != nb.uid) bad += "uids; ";
    if (rg != nb.gid || eg != nb.gid || sg != nb.gid) bad += "gids; ";
    // Root's supplementary groups are gone; nobody's own are there.
    std::vector<gid_t> groups(::getgroups(0, nullptr));
    groups.resize(::getgroups(groups.size(), groups.data()));
    for (gid_t g : groups)
      if (g == 0) bad += "still in group root; ";
    if (::setuid(0) == 0) bad += "setuid(0) worked; ";
    if (::seteuid(0) == 0) bad += "seteuid(0) worked; ";
    if (::setgid(0) == 0) bad += "setgid(0) worked; ";
    gid_t zero = 0;
    if (::setgroups(1, &zero) == 0) bad += "setgroups worked; ";
    if (::open(secret.c_str(), O_RDONLY) >= 0 || errno != EACCES)
      bad += "root's 0600 file still opens; ";
    // Called again as nobody: a no-op; asking for anyone else fails.
    if (!drop_privileges("nobody", error))
      bad += "second call failed: " + error + "; ";
    if (drop_privileges("daemon", error) ||
        error.find("not root") == std::string::npos)
      bad += "became daemon or wrong error '" + error + "'; ";
    return bad;
  });
  fs::remove_all(dir);
  EXPECT_EQ(report, "");
}

TEST(PrivDrop, UnprivilegedCallerIsRefusedAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become nobody first";
  Nobody nb;
  if (!find_nobody(nb)) GTEST_SKIP() << "no user 'nobody'";
  // A process already running as nobody (as under the systemd unit, where
  // ferryd starts as its user) may not switch to a different user.
  std::string report = in_child([&]() -> std::string {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nb.gid, nb.gid, nb.gid) ||
        ::setresuid(nb.uid, nb.uid, nb.uid))
      return "setup failed";
    std::string error;
    if (drop_privileges("root", error)) return "became root";
    if (drop_privileges("daemon", error)) return "became daemon";
    if (error.find("cannot become user 'daemon'") == std::string::npos)
      return "wrong error: " + error;
    return "";
  });
  EXPECT_EQ(report, "");
}

}  // namespace
}  // namespace ferry::gw
