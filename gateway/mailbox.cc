#include "gateway/mailbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "gateway/pop3_parser.h"

namespace ferry::gw {

namespace {

constexpr const char* kLockName = "/.ferry-pop3.lock";

std::error_code errno_code(int e) {
  return std::error_code(e, std::generic_category());
}

std::string describe(const std::string& path, int e) {
  return path + ": " + std::strerror(e);
}

bool make_dir(const std::string& path, std::error_code& ec,
              std::string& error) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) return true;
  int e = errno;
  ec = errno_code(e);
  error = describe(path, e);
  return false;
}

// The wire size of one file, read in chunks (see pop3::wire_size).
bool file_wire_size(const std::string& path, uint64_t& out, int& err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return false;
  }
  pop3::WireSizeCounter counter;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      ::close(fd);
      return false;
    }
    if (n == 0) break;
    counter.feed(std::string_view(buf, static_cast<size_t>(n)));
  }
  ::close(fd);
  out = counter.total();
  return true;
}

struct Found {
  MaildropMessage msg;
  int64_t mtime_ns = 0;
  std::string name;
};

// Lists one of new/ and cur/.  A file that disappears between readdir and
// stat (another client or a cleanup job) is skipped, not an error.
bool scan(const std::string& sub, bool in_new, std::vector<Found>& out,
          std::error_code& ec, std::string& error) {
  DIR* d = ::opendir(sub.c_str());
  if (d == nullptr) {
    int e = errno;
    ec = errno_code(e);
    error = describe(sub, e);
    return false;
  }
  while (struct dirent* de = ::readdir(d)) {
    std::string name = de->d_name;
    if (name.empty() || name[0] == '.') continue;
    std::string path = sub + "/" + name;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    Found f;
    f.msg.path = path;
    f.msg.uid = maildir_uid(name);
    f.msg.in_new = in_new;
    f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                 st.st_mtim.tv_nsec;
    f.name = name;
    int e = 0;
    if (!file_wire_size(path, f.msg.size, e)) {
      if (e == ENOENT) continue;
      ::closedir(d);
      ec = errno_code(e);
      error = describe(path, e);
      return false;
    }
    out.push_back(std::move(f));
  }
  ::closedir(d);
  return true;
}

}  // namespace

std::string maildir_uid(std::string_view file_name) {
  std::string_view unique = file_name.substr(0, file_name.find(':'));
  bool printable = !unique.empty() && unique.size() <= 70;
  for (char c : unique) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e) printable = false;
  }
  if (printable) return std::string(unique);

  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(unique.data()), unique.size(),
         md);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : md) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

std::unique_ptr<Maildrop> Maildrop::open(const std::string& dir,
                                         std::error_code& ec,
                                         std::string& error) {
  ec.clear();
  error.clear();

  // The Maildir itself, so that a user without mail has an empty box.
  for (const std::string& d : {dir, dir + "/tmp", dir + "/new", dir + "/cur"}) {
    if (!make_dir(d, ec, error)) return nullptr;
  }

  // The lock.
  std::unique_ptr<Maildrop> box(new Maildrop);
  box->dir_ = dir;
  std::string lock_path = dir + kLockName;
  box->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (box->lock_fd_ < 0) {
    int e = errno;
    ec = errno_code(e);
    error = describe(lock_path, e);
    return nullptr;
  }
  if (::flock(box->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ec = e == EWOULDBLOCK
             ? std::make_error_code(std::errc::resource_unavailable_try_again)
             : errno_code(e);
    error = lock_path + ": " +
            (e == EWOULDBLOCK ? std::string("held by another session")
                              : std::string(std::strerror(e)));
    return nullptr;
  }

  // The snapshot.
  std::vector<Found> found;
  if (!scan(dir + "/new", true, found, ec, error) ||
      !scan(dir + "/cur", false, found, ec, error)) {
    return nullptr;
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    if (a.mtime_ns != b.mtime_ns) return a.mtime_ns < b.mtime_ns;
    return a.name < b.name;
  });
  box->msgs_.reserve(found.size());
  for (auto& f : found) box->msgs_.push_back(std::move(f.msg));
  return box;
}

Maildrop::~Maildrop() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // closing releases the flock
}

const MaildropMessage* Maildrop::find(uint64_t n) const {
  if (n == 0 || n > msgs_.size() || msgs_[n - 1].deleted) return nullptr;
  return &msgs_[n - 1];
}

bool Maildrop::mark_deleted(uint64_t n) {
  if (find(n) == nullptr) return false;
  msgs_[n - 1].deleted = true;
  return true;
}

void Maildrop::mark_retrieved(uint64_t n) {
  if (n >= 1 && n <= msgs_.size()) msgs_[n - 1].retrieved = true;
}

void Maildrop::unmark_all() {
  for (auto& m : msgs_) m.deleted = false;
}

uint64_t Maildrop::live_count() const {
  uint64_t n = 0;
  for (const auto& m : msgs_) n += m.deleted ? 0 : 1;
  return n;
}

uint64_t Maildrop::live_size() const {
  uint64_t n = 0;
  for (const auto& m : msgs_) n += m.deleted ? 0 : m.size;
  return n;
}

std::error_code Maildrop::commit(size_t& removed, std::string& error) {
  std::error_code first;
  removed = 0;
  auto fail = [&](const std::string& path, int e) {
    if (first) return;
    first = errno_code(e);
    error = describe(path, e);
  };

  for (const auto& m : msgs_) {
    // Deletions.
    if (m.deleted) {
      if (::unlink(m.path.c_str()) == 0) {
        ++removed;
      } else if (errno != ENOENT) {
        fail(m.path, errno);
      }
      continue;
    }

    // Seen mail leaves new/.  The unique part (and so the UID) is kept.
    if (!m.in_new) continue;
    std::string name = m.path.substr(m.path.rfind('/') + 1);
    if (name.find(':') == std::string::npos) {
      name += m.retrieved ? ":2,S" : ":2,";
    }
    std::string to = dir_ + "/cur/" + name;
    if (::rename(m.path.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      fail(m.path, errno);
    }
  }

  // Make the removals and renames durable before the client hears +OK.
  for (const char* sub : {"/new", "/cur"}) {
    std::string path = dir_ + sub;
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) fail(path, errno);
    if (fd >= 0) ::close(fd);
  }
  return first;
}

}  // namespace ferry::gw
