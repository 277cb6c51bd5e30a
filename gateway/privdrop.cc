// Privilege drop: look the user up, change groups then uids, then check
// that the change sticks.  The order matters: once the uid is no longer 0
// the groups can no longer be changed.
#include "gateway/privdrop.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace ferry::gw {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

struct UserEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// getpwnam_r with a buffer that grows; "not found" leaves `error` empty.
bool look_up(const std::string& user, UserEntry& out, std::string& error) {
  std::vector<char> buf(1024);
  for (;;) {
    passwd pw{};
    passwd* found = nullptr;
    int rc = ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    if (rc != 0) {
      error = "user '" + user + "': cannot look it up: " + errno_text(rc);
      return false;
    }
    if (found == nullptr) return false;
    out.name = pw.pw_name;
    out.uid = pw.pw_uid;
    out.gid = pw.pw_gid;
    return true;
  }
}

// True when some capability is still effective or permitted.  Read with
// capget(2) directly: libcap is not worth a dependency for one call.
bool holds_capabilities(std::string& error) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3]{};
  if (::syscall(SYS_capget, &header, data) != 0) {
    error = "capget: " + errno_text(errno);
    return true;
  }
  for (const auto& d : data) {
    if (d.effective != 0 || d.permitted != 0) {
      error = "capabilities remain after the uid change";
      return true;
    }
  }
  return false;
}

}  // namespace

bool drop_privileges(const std::string& user, std::string& error) {
  error.clear();
  if (user.empty()) {
    error = "no user to run as ([ferryd] user is empty)";
    return false;
  }

  // Who the user is; root (or group root) is never an acceptable target.
  UserEntry u;
  if (!look_up(user, u, error)) {
    if (error.empty()) error = "user '" + user + "': no such user";
    return false;
  }
  if (u.uid == 0) {
    error = "user '" + user + "' is root (uid 0): refusing to run as root";
    return false;
  }
  if (u.gid == 0) {
    error = "user '" + user +
            "' has group root (gid 0) as its primary group: refusing";
    return false;
  }

  // Not root: either we already are the user, or we cannot become it.
  uid_t ruid = 0, euid = 0, suid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0) {
    error = "getresuid: " + errno_text(errno);
    return false;
  }
  if (ruid != 0 && euid != 0 && suid != 0) {
    if (ruid == u.uid && euid == u.uid && suid == u.uid) return true;
    error = "cannot become user '" + user + "' (uid " + std::to_string(u.uid) +
            "): running as uid " + std::to_string(euid) + ", not root";
    return false;
  }
  if (euid != 0) {
    // Some uid is 0 but not the effective one (a setuid-root program
    // that lowered itself): the set*id calls below would not be allowed
    // to change everything, so refuse rather than half-drop.
    error = "cannot become user '" + user + "': effective uid is " +
            std::to_string(euid) + " while real or saved uid is 0";
    return false;
  }

  // Groups first (only root may change them), then the uids.
  if (::initgroups(u.name.c_str(), u.gid) != 0) {
    error = "user '" + user + "': initgroups: " + errno_text(errno);
    return false;
  }
  if (::setresgid(u.gid, u.gid, u.gid) != 0) {
    error = "user '" + user + "': setresgid(" + std::to_string(u.gid) +
            "): " + errno_text(errno);
    return false;
  }
  if (::setresuid(u.uid, u.uid, u.uid) != 0) {
    error = "user '" + user + "': setresuid(" + std::to_string(u.uid) +
            "): " + errno_text(errno);
    return false;
  }

  // Verify: every id is the user's, and the way back is shut.
  gid_t rgid = 0, egid = 0, sgid = 0;
  if (::getresuid(&ruid, &euid, &suid) != 0 ||
      ::getresgid(&rgid, &egid, &sgid) != 0) {
    error = "user '" + user + "': cannot read ids back: " + errno_text(errno);
    return false;
  }
  if (ruid != u.uid || euid != u.uid || suid != u.uid || rgid != u.gid ||
      egid != u.gid || sgid != u.gid) {
    error = "user '" + user + "': ids did not change as asked";
    return false;
  }
  if (::setuid(0) == 0 || ::seteuid(0) == 0) {
    error = "user '" + user + "': setuid(0) still succeeds after the drop";
    return false;
  }
  if (::setgid(0) == 0 || ::setegid(0) == 0) {
    error = "user '" + user + "': setgid(0) still succeeds after the drop";
    return false;
  }
  std::string cap_error;
  if (holds_capabilities(cap_error)) {
    error = "user '" + user + "': " + cap_error;
    return false;
  }

  // The kernel made us non-dumpable on the uid change; nothing of root's
  // is left in memory that the new user may not read anyway (its config
  // and keys are readable by its group), and a panic should leave a core.
  (void)::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  return true;
}

}  // namespace ferry::gw
