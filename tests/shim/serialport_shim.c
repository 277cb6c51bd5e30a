/*
 * Test-only LD_PRELOAD shim: lets stock libserialport 0.1.1 open a PTY of
 * ferry-modemsim and see its modem-control lines (HAYES.md §16.1, §17
 * Layer 2).  Never installed, never linked into ferry.
 *
 * libserialport refuses a PTY for two reasons: the port must have an entry
 * under /sys/class/tty/ (a PTY slave has none), and sp_open() reads and
 * sets the control lines with TIOCMGET/TIOCMBIS/TIOCMBIC, which the pty
 * driver rejects with ENOTTY.  This shim
 *   - answers readlink() and lstat() of /sys/class/tty/pts/N as if it were
 *     a link to a virtual tty device;
 *   - answers TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC on PTY slave fds (major
 *     136-143): the inputs (DCD, DSR, CTS, RI) from the emulator's PORT.ctl
 *     socket, the outputs (DTR, RTS) kept here and sent to that socket as
 *     "DTR 0|1" / "RTS 0|1".
 * The control socket of a PTY is found through the environment variable
 * FERRY_SHIM_DIR, the emulator's --dir, read when a port is first used (a
 * test may set it after start-up): the entry NAME there that resolves to
 * the PTY gives NAME.ctl.  Without it the inputs read as all off.  Every
 * other call passes through untouched.
 *
 * Limits: at most 16 ports per process; TIOCMIWAIT is not emulated;
 * setuid and static programs ignore LD_PRELOAD.  Not thread-safe beyond
 * what the tests need (one thread drives the port).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

static const char kSysTty[] = "/sys/class/tty/pts/";
static const char kFakeLink[] = "../../devices/virtual/tty/ferry-shim-pty";

/* One entry per emulator port seen, keyed by the PTY's device number. */
struct port {
  int used;
  dev_t rdev;
  int ctl_fd;
  int out_bits; /* what the DTE drives: DTR, RTS */
  int in_bits;  /* what the modem drives: DCD, DSR, CTS, RI */
  char pending[1024];
  size_t pending_len;
};
static struct port ports[16];

/* dlsym() returns an object pointer; ISO C cannot cast it to a function
 * pointer, so the bytes are copied (POSIX guarantees they fit). */
#define LOAD_NEXT(fn, name)               \
  do {                                    \
    void* sym_ = dlsym(RTLD_NEXT, name);  \
    memcpy(&(fn), &sym_, sizeof(fn));     \
  } while (0)

static int is_shimmed_sys_path(const char* path) {
  return path != NULL && strncmp(path, kSysTty, sizeof kSysTty - 1) == 0;
}

static int pty_slave_rdev(int fd, dev_t* rdev) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) return 0;
  unsigned maj = major(st.st_rdev);
  *rdev = st.st_rdev;
  return maj >= 136 && maj <= 143;
}

/* Parses complete "LINES ..." lines received so far. */
static void parse_pending(struct port* p) {
  char* nl;
  while ((nl = memchr(p->pending, '\n', p->pending_len)) != NULL) {
    size_t len = (size_t)(nl - p->pending);
    char line[256];
    size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, p->pending, n);
    line[n] = '\0';
    memmove(p->pending, nl + 1, p->pending_len - len - 1);
    p->pending_len -= len + 1;
    if (strncmp(line, "LINES", 5) != 0) continue;
    int bits = 0;
    if (strstr(line, "DCD=1")) bits |= TIOCM_CAR;
    if (strstr(line, "DSR=1")) bits |= TIOCM_DSR;
    if (strstr(line, "CTS=1")) bits |= TIOCM_CTS;
    if (strstr(line, "RI=1")) bits |= TIOCM_RNG;
    p->in_bits = bits;
  }
  if (p->pending_len == sizeof p->pending) p->pending_len = 0;
}

/* Reads what the emulator sent; waits up to `wait_ms` for the first bytes. */
static void drain(struct port* p, int wait_ms) {
  struct pollfd pfd = {p->ctl_fd, POLLIN, 0};
  while (p->ctl_fd >= 0 && poll(&pfd, 1, wait_ms) > 0) {
    ssize_t n = recv(p->ctl_fd, p->pending + p->pending_len,
                     sizeof p->pending - p->pending_len, MSG_DONTWAIT);
    if (n <= 0) break;
    p->pending_len += (size_t)n;
    parse_pending(p);
    wait_ms = 0;
  }
}

/* Finds NAME in $FERRY_SHIM_DIR whose symlink points at this PTY and
 * connects to NAME.ctl. */
static void connect_ctl(struct port* p) {
  const char* dir = getenv("FERRY_SHIM_DIR");
  if (dir == NULL || *dir == '\0') return;
  DIR* d = opendir(dir);
  if (d == NULL) return;
  char ctl[sizeof(((struct sockaddr_un*)0)->sun_path)] = "";
  struct dirent* e;
  while ((e = readdir(d)) != NULL) {
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == p->rdev &&
        strlen(path) + 5 < sizeof ctl) {
      size_t len = strlen(path);
      memcpy(ctl, path, len);
      memcpy(ctl + len, ".ctl", 5);
      break;
    }
  }
  closedir(d);
  if (ctl[0] == '\0') return;
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, ctl);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (connect(fd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    close(fd);
    return;
  }
  p->ctl_fd = fd;
  drain(p, 1000); /* the emulator sends LINES on connect */
}

/* True when the emulator closed its end (it exited, or the PTY number was
 * reused by a later emulator). */
static int ctl_dead(const struct port* p) {
  if (p->ctl_fd < 0) return 1;
  struct pollfd pfd = {p->ctl_fd, POLLIN, 0};
  if (poll(&pfd, 1, 0) <= 0) return 0;
  if (pfd.revents & (POLLHUP | POLLERR)) return 1;
  char c;
  return recv(p->ctl_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static struct port* port_for(dev_t rdev) {
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; ++i) {
    struct port* p = &ports[i];
    if (!p->used || p->rdev != rdev) continue;
    if (ctl_dead(p)) {
      /* A new session on a recycled PTY number: start afresh. */
      if (p->ctl_fd >= 0) close(p->ctl_fd);
      p->ctl_fd = -1;
      p->in_bits = 0;
      p->out_bits = TIOCM_DTR | TIOCM_RTS;
      p->pending_len = 0;
      connect_ctl(p);
    }
    return p;
  }
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; ++i) {
    if (ports[i].used) continue;
    struct port* p = &ports[i];
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->rdev = rdev;
    p->ctl_fd = -1;
    p->out_bits = TIOCM_DTR | TIOCM_RTS;
    connect_ctl(p);
    return p;
  }
  return NULL;
}

static void send_line(struct port* p, const char* what, int on) {
  char line[16];
  int n = snprintf(line, sizeof line, "%s %d\n", what, on ? 1 : 0);
  if (p->ctl_fd >= 0) (void)!send(p->ctl_fd, line, (size_t)n, MSG_NOSIGNAL);
}

static void set_out_bits(struct port* p, int bits) {
  bits &= TIOCM_DTR | TIOCM_RTS;
  if ((bits ^ p->out_bits) & TIOCM_DTR) send_line(p, "DTR", bits & TIOCM_DTR);
  if ((bits ^ p->out_bits) & TIOCM_RTS) send_line(p, "RTS", bits & TIOCM_RTS);
  p->out_bits = bits;
}

int ioctl(int fd, unsigned long request, ...) {
  static int (*real_ioctl)(int, unsigned long, ...) = NULL;
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (real_ioctl == NULL)
    LOAD_NEXT(real_ioctl, "ioctl");

  dev_t rdev;
  struct port* p;
  if ((request == TIOCMGET || request == TIOCMSET || request == TIOCMBIS ||
       request == TIOCMBIC) &&
      arg != NULL && pty_slave_rdev(fd, &rdev) && (p = port_for(rdev))) {
    int* bits = (int*)arg;
    switch (request) {
      case TIOCMGET:
        drain(p, 0);
        *bits = p->out_bits | p->in_bits;
        return 0;
      case TIOCMSET: set_out_bits(p, *bits); return 0;
      case TIOCMBIS: set_out_bits(p, p->out_bits | *bits); return 0;
      case TIOCMBIC: set_out_bits(p, p->out_bits & ~*bits); return 0;
    }
  }
  return real_ioctl(fd, request, arg);
}

ssize_t readlink(const char* path, char* buf, size_t size) {
  static ssize_t (*real_readlink)(const char*, char*, size_t) = NULL;
  if (real_readlink == NULL)
    LOAD_NEXT(real_readlink, "readlink");
  if (is_shimmed_sys_path(path)) {
    size_t n = strlen(kFakeLink);
    if (n > size) n = size;
    memcpy(buf, kFakeLink, n);
    return (ssize_t)n;
  }
  return real_readlink(path, buf, size);
}

static void fake_link_stat(struct stat* st) {
  memset(st, 0, sizeof *st);
  st->st_mode = S_IFLNK | 0777;
  st->st_size = (off_t)strlen(kFakeLink);
}

/* libserialport 0.1.1 imports __lxstat (glibc before 2.33); newer builds
 * call lstat/lstat64.  Cover all three. */
int __lxstat(int ver, const char* path, struct stat* st) {
  static int (*real)(int, const char*, struct stat*) = NULL;
  if (is_shimmed_sys_path(path)) {
    fake_link_stat(st);
    return 0;
  }
  if (real == NULL)
    LOAD_NEXT(real, "__lxstat");
  if (real == NULL) {
    errno = ENOSYS;
    return -1;
  }
  return real(ver, path, st);
}

int lstat(const char* path, struct stat* st) {
  static int (*real)(const char*, struct stat*) = NULL;
  if (is_shimmed_sys_path(path)) {
    fake_link_stat(st);
    return 0;
  }
  if (real == NULL)
    LOAD_NEXT(real, "lstat");
  return real(path, st);
}
