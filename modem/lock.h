// UUCP lock files (HAYES.md §14): one file per port in a lock directory, so
// ferry, a dial-in getty, minicom and pppd never use a port at once.
//
// The file is `LCK..<name>` where name follows pppd's rule (drop everything
// up to and including "dev/", turn the remaining '/' into '_'; otherwise
// the base name).  It holds the owner's PID as ten ASCII characters and a
// newline.  Creation is atomic: a private temporary file is written and
// link(2)ed to the lock name.  A lock whose process no longer exists
// (kill(pid, 0) fails with ESRCH) is stale and taken over.
//
// Concurrency: a UucpLock is owned by one thread; acquiring locks from
// several threads of one process is safe (the process keeps a registry of
// the locks it holds, guarded by a mutex, so a lock file carrying our own
// PID is recognised as ours, or as a leftover of an earlier process that
// happened to have the same PID).
#ifndef FERRY_MODEM_LOCK_H_
#define FERRY_MODEM_LOCK_H_

#include <sys/types.h>

#include <string>
#include <string_view>
#include <system_error>

namespace ferry::modem {

// "LCK..ttyS0" for "/dev/ttyS0", "LCK..pts_3" for "/dev/pts/3",
// "LCK..modem" for "/tmp/x/modem".
std::string uucp_lock_name(std::string_view device);

class UucpLock {
 public:
  UucpLock() = default;
  UucpLock(UucpLock&& other) noexcept;
  UucpLock& operator=(UucpLock&& other) noexcept;
  UucpLock(const UucpLock&) = delete;
  UucpLock& operator=(const UucpLock&) = delete;
  ~UucpLock() { release(); }

  // Tries once to lock `device` in `lock_dir`.  On success returns {} and
  // *this holds the lock.  A live lock gives ModemErrc::port_locked with
  // the holder's PID in *holder; other failures (missing directory, no
  // permission) give the system error.  Stale locks are removed and their
  // PID reported through *stale_pid (0 when there was none).
  std::error_code acquire(const std::string& lock_dir, std::string_view device,
                          pid_t* holder = nullptr, pid_t* stale_pid = nullptr);

  // Removes the lock file if we hold it.  Idempotent.
  void release();

  bool held() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ferry::modem

#endif  // FERRY_MODEM_LOCK_H_
