// Giving up root for good: ferryd is started as root only so that it can
// bind port 25 and open devices that root alone may open; once those are
// open it becomes its own unprivileged user ([ferryd] user, "ferry" in the
// shipped units) and must never be able to come back.
//
// Under the shipped systemd unit ferryd is already started as that user
// (with CAP_NET_BIND_SERVICE), so the call below is a no-op there; it does
// the work when a postmaster starts ferryd as root by hand or from another
// init system.
//
// Concurrency: changes the credentials of the whole process.  glibc
// applies set*id() to every thread, but call it from the main thread
// before any thread that relies on its own credentials is started (the
// spool's committer thread is harmless: it touches only files it already
// holds open).
#pragma once

#include <string>

namespace ferry::gw {

// Makes the process run as `user` with that user's primary group and the
// supplementary groups /etc/group lists for it (so membership of dialout
// still opens serial ports), real, effective and saved ids alike, and
// then proves it cannot be undone: setuid(0) and setgid(0) must fail and
// no capability may remain in the effective or permitted set.
//
// Returns true when the process now runs as `user`:
//   - running as root: the ids were changed and verified;
//   - not running as root and `user` is who we already are (real,
//     effective and saved uid): nothing to do.
// Returns false and sets `error` to one sentence naming the user and the
// cause when `user` is empty, unknown, is root or has group root, when we
// are some other unprivileged user, or when a system call fails or the
// verification finds a way back.  After a failure while running as root
// the credentials may be half changed: the caller must exit.
//
// Also sets the process dumpable again (the kernel clears it on a uid
// change), so that a panic still leaves a core file and /proc/self
// belongs to the new user.
bool drop_privileges(const std::string& user, std::string& error);

}  // namespace ferry::gw
