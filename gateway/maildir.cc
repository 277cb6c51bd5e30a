// Maildir delivery: tmp, fsync, rename into new, fsync new.

#include "gateway/maildir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "gateway/log.h"

namespace ferry::gw {
namespace {

std::error_code from_errno(int e) {
  return std::error_code(e, std::generic_category());
}

// Closes a descriptor when it leaves scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports close's own error (NFS reports late errors
  // there).
  int close() {
    int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

bool make_dir(const std::string& path, std::error_code& ec) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) return true;
  ec = from_errno(errno);
  return false;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// True if cur/ holds NAME or NAME:info (a client has seen the message).
bool in_cur(const std::string& cur, const std::string& name) {
  DIR* d = ::opendir(cur.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == name || (n.size() > name.size() && n.starts_with(name) &&
                      n[name.size()] == ':')) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

bool fsync_dir(const std::string& path, std::error_code& ec) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) {
    ec = from_errno(errno);
    return false;
  }
  return true;
}

std::error_code fail(std::string& error, const std::string& path,
                     std::error_code ec, std::string_view name) {
  error = path + ": " + ec.message();
  log::line("maildir", "name=" + log::quote(name) +
                           " path=" + log::quote(path) +
                           " error=" + log::quote(ec.message()));
  return ec;
}

}  // namespace

std::error_code maildir_deliver(const std::string& dir, const std::string& name,
                                std::string_view bytes) {
  std::string error;
  return maildir_deliver(dir, name, bytes, error);
}

std::error_code maildir_deliver(const std::string& dir, const std::string& name,
                                std::string_view bytes, std::string& error) {
  std::error_code ec;
  if (name.empty() || name.find('/') != name.npos || name[0] == '.') {
    ec = std::make_error_code(std::errc::invalid_argument);
    return fail(error, dir + "/new/" + name, ec, name);
  }

  // The folder and its three subfolders.
  const std::string tmp = dir + "/tmp", nw = dir + "/new", cur = dir + "/cur";
  for (const std::string* p : {&dir, &tmp, &nw, &cur}) {
    if (!make_dir(*p, ec)) return fail(error, *p, ec, name);
  }

  // Already delivered (a repeat after a crash)?
  const std::string final_path = nw + "/" + name;
  if (exists(final_path) || in_cur(cur, name)) return {};

  // Write and sync the file in tmp/.  O_TRUNC: a tmp/ file left by a
  // crash before the rename is incomplete and is rewritten.
  const std::string tmp_path = tmp + "/" + name;
  {
    Fd fd(::open(tmp_path.c_str(),
                 O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) return fail(error, tmp_path, from_errno(errno), name);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        ec = from_errno(errno);
        ::unlink(tmp_path.c_str());
        return fail(error, tmp_path, ec, name);
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0 || fd.close() != 0) {
      ec = from_errno(errno);
      ::unlink(tmp_path.c_str());
      return fail(error, tmp_path, ec, name);
    }
  }

  // Publish it in new/ and make the rename itself durable.
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    ec = from_errno(errno);
    ::unlink(tmp_path.c_str());
    return fail(error, final_path, ec, name);
  }
  if (!fsync_dir(nw, ec)) return fail(error, nw, ec, name);
  return {};
}

std::string maildir_unique_name(std::string_view queue_id,
                                std::string_view user) {
  std::string out;
  auto put = [&out](std::string_view s) {
    for (unsigned char c : s) {
      if (c == '/' || c == ':' || c == '%' || c < 0x21 || c == 0x7f) {
        char buf[4];
        std::snprintf(buf, sizeof buf, "%%%02X", c);
        out += buf;
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
  };
  put(queue_id);
  out.push_back('.');
  put(user);
  out += ".ferry";
  return out;
}

}  // namespace ferry::gw
