// One POP3 session's view of a user's Maildir (mail_root/USER/), the
// "maildrop" of RFC 1939 (address.h already has a Mailbox): a
// snapshot of new/ and cur/ taken at login, with stable unique ids, sizes
// and deletion marks, and the exclusive lock that keeps a second session
// out while this one is open.
//
// The snapshot: every regular file in new/ and cur/ whose name does not
// start with '.', ordered by modification time and then name, numbered
// from 1.  Mail delivered after open() is not seen until the next session
// (RFC 1939 requires stable numbering within a session).
//
// UIDs (UIDL): the unique part of the Maildir file name, that is the name
// up to the first ':' (the info suffix changes when a file moves to cur/
// or gains flags, the unique part does not).  A unique part that a UIDL
// line cannot carry (bytes outside 0x21..0x7E, longer than 70) is replaced
// by the hex SHA-256 of it, which is just as stable.
//
// Locking: open() takes flock(LOCK_EX|LOCK_NB) on DIR/.ferry-pop3.lock
// (created 0600 and left in place; Maildir readers skip dot files).
// flock is per open file, so a second session in the same process is
// refused just like one in another process.  The lock goes with the
// Maildrop object.  Delivery (maildir.h) never takes it: Maildir delivery
// is lock-free, and new files simply wait for the next session.
//
// Commit (POP3 UPDATE state, at QUIT): files marked deleted are unlinked;
// files still in new/ move to cur/ with the info ":2," (":2,S" if the
// client retrieved them), as a Maildir reader expects of mail that has
// been seen by a client.  A file that vanished meanwhile (another program
// removed it) is not an error.
//
// Errors: std::error_code from errno (generic_category) plus a text
// naming the path.  Concurrency: one Maildrop belongs to one session; not
// thread-safe.  It may be created on one thread and used on another.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ferry::gw {

struct MaildropMessage {
  std::string path;   // full path of the file as found at open()
  std::string uid;    // UIDL value
  uint64_t size = 0;  // octets on the wire (CRLF line ends), see wire_size
  bool in_new = false;
  bool deleted = false;
  bool retrieved = false;
};

class Maildrop {
 public:
  // Opens `dir` (mail_root/USER).  Creates dir, tmp/, new/, cur/ (0700)
  // when missing, so a user who never received mail sees an empty
  // mailbox; the parent (mail_root) must exist.
  // Returns nullptr with:
  //   ec == std::errc::resource_unavailable_try_again: another session
  //     holds the lock (the caller answers -ERR [IN-USE]);
  //   any other ec: the directory or a file could not be read; `error`
  //     names the path and the cause.
  static std::unique_ptr<Maildrop> open(const std::string& dir,
                                        std::error_code& ec,
                                        std::string& error);
  ~Maildrop();  // releases the lock; marks are forgotten
  Maildrop(const Maildrop&) = delete;
  Maildrop& operator=(const Maildrop&) = delete;

  // All messages of the snapshot, deleted ones included; message number n
  // is messages()[n - 1].
  const std::vector<MaildropMessage>& messages() const { return msgs_; }

  // The message numbered `n` if it exists and is not marked deleted;
  // nullptr otherwise.
  const MaildropMessage* find(uint64_t n) const;

  // Marks message n deleted; false if it does not exist or is already
  // marked.
  bool mark_deleted(uint64_t n);
  // Notes that the client has read message n (RETR).
  void mark_retrieved(uint64_t n);
  // RSET: clears every deletion mark.
  void unmark_all();

  // Messages and wire octets not marked deleted (STAT).
  uint64_t live_count() const;
  uint64_t live_size() const;

  // The UPDATE state: applies the marks as described above.  Returns the
  // first error (the others are still attempted) and counts the files
  // removed.  Call at most once.
  std::error_code commit(size_t& removed, std::string& error);

 private:
  Maildrop() = default;

  std::string dir_;
  int lock_fd_ = -1;
  std::vector<MaildropMessage> msgs_;
};

// The UIDL value for a Maildir file name (see above).
std::string maildir_uid(std::string_view file_name);

}  // namespace ferry::gw
