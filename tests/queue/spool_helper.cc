// A second process for the spool tests (LMDB allows one environment per
// process per file, so cross-process behaviour needs a real process).
//
//   spool_helper torture DIR LOGPREFIX THREADS
//       Submits and removes messages until killed.  Each thread appends to
//       LOGPREFIX.<n>, with fdatasync, only AFTER the spool said durable:
//         D <queue id> <sha256 hex> <size> <transfer id or ->
//                                            message durable; every other
//                                            one arrives "from a peer" with
//                                            a transfer id and a partial
//         r <queue id>                       about to remove it
//         R <queue id>                       message removed, durably
//   spool_helper submit DIR COUNT SIZE
//       Submits COUNT messages of SIZE incompressible bytes, prints each id.
//   spool_helper list DIR
//       Prints "<id> <sha256> <size>" for every message (read-only open).
// Exit status 0 on success, 1 on any spool error (printed on stderr).
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "queue/spool.h"

namespace q = ferry::queue;

namespace {

std::string sha_hex(const std::string& s) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string h;
  for (unsigned i = 0; i < n; ++i) {
    h += kHex[md[i] >> 4];
    h += kHex[md[i] & 15];
  }
  return h;
}

// Half random bytes, half text: compressible, but not trivially.
std::string make_body(std::mt19937_64& rng, size_t size) {
  std::string b;
  b.reserve(size);
  b += "Subject: torture\r\n\r\n";
  while (b.size() < size) {
    if (rng() % 2) {
      for (int i = 0; i < 64 && b.size() < size; ++i)
        b += static_cast<char>(rng());
    } else {
      b += "All work and no play makes a durable spool.\r\n";
    }
  }
  b.resize(size);
  return b;
}

void append_line(int fd, const std::string& line) {
  // One write per line: a kill leaves at most a truncated last line.
  if (::write(fd, line.data(), line.size()) !=
      static_cast<ssize_t>(line.size()))
    std::abort();
  ::fdatasync(fd);
}

int torture(const std::string& dir, const std::string& logp, int threads) {
  q::Options o;
  o.log = false;
  o.initial_map_size = 1u << 20;  // small: the map grows under the kills
  std::error_code ec;
  auto spool = q::Spool::open(dir, o, ec);
  if (!spool) {
    std::fprintf(stderr, "torture: open: %s\n", ec.message().c_str());
    return 1;
  }
  std::vector<std::thread> ts;
  for (int n = 0; n < threads; ++n) {
    ts.emplace_back([&, n] {
      std::string path = logp + "." + std::to_string(n);
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd < 0) std::abort();
      std::mt19937_64 rng(::getpid() * 1000003ull + n);
      std::vector<q::QueueId> mine;
      uint64_t count = 0;
      for (;;) {
        q::NewMessage m;
        m.sender = "torture@example.test";
        m.body = make_body(rng, 100 + rng() % 40000);
        m.recipients = {{"a@example.test", "", 0, "peer-a"},
                        {"b@example.test", "", 0, "peer-b"}};
        std::string sha = sha_hex(m.body);
        size_t size = m.body.size();
        std::string tid = "-";
        if (rng() % 2) {
          // As a link session would: half the body held as a partial, then
          // the whole message with its transfer id.
          tid = "t" + std::to_string(::getpid()) + "-" + std::to_string(n) +
                "-" + std::to_string(count++);
          if (spool->partial_append("torture-peer", tid, 0,
                                    m.body.substr(0, size / 2)))
            continue;
          m.received_from_peer = "torture-peer";
          m.received_transfer_id = tid;
        }
        q::QueueId id;
        if (spool->submit(std::move(m), id)) continue;
        append_line(fd, "D " + id + " " + sha + " " + std::to_string(size) +
                            " " + tid + "\n");
        mine.push_back(id);

        // Now and then deliver an earlier message; it leaves the spool.
        if (mine.size() > 3 && rng() % 3 == 0) {
          q::QueueId victim = mine.front();
          mine.erase(mine.begin());
          // Intent first: a kill between the commit and the "R" line must
          // not look like a lost message.
          append_line(fd, "r " + victim + "\n");
          std::vector<q::Transition> tr = {
              {victim, 0, q::Action::delivered, "250 ok"},
              {victim, 1, q::Action::delivered, "250 ok"}};
          std::vector<q::TransitionResult> res;
          if (!spool->apply(tr, res) && res[1].message_removed)
            append_line(fd, "R " + victim + "\n");
        }
      }
    });
  }
  for (auto& t : ts) t.join();  // never: the parent kills us
  return 0;
}

int submit(const std::string& dir, int count, size_t size) {
  q::Options o;
  o.log = false;
  std::error_code ec;
  auto spool = q::Spool::open(dir, o, ec);
  if (!spool) {
    std::fprintf(stderr, "submit: open: %s\n", ec.message().c_str());
    return 1;
  }
  std::mt19937_64 rng(::getpid());
  for (int i = 0; i < count; ++i) {
    q::NewMessage m;
    m.sender = "helper@example.test";
    m.body.resize(size);
    for (auto& c : m.body) c = static_cast<char>(rng());
    m.recipients = {{"x@example.test", "", 0, "helper-route"}};
    q::QueueId id;
    if ((ec = spool->submit(std::move(m), id))) {
      std::fprintf(stderr, "submit: %s\n", ec.message().c_str());
      return 1;
    }
    std::printf("%s\n", id.c_str());
  }
  return 0;
}

int list(const std::string& dir) {
  q::Options o;
  o.log = false;
  o.read_only = true;
  std::error_code ec;
  auto spool = q::Spool::open(dir, o, ec);
  if (!spool) {
    std::fprintf(stderr, "list: open: %s\n", ec.message().c_str());
    return 1;
  }
  std::vector<q::MessageInfo> all;
  if ((ec = spool->list(all))) {
    std::fprintf(stderr, "list: %s\n", ec.message().c_str());
    return 1;
  }
  for (const auto& m : all) {
    std::string body;
    if ((ec = spool->read_body(m.id, body))) {
      std::fprintf(stderr, "list: %s: %s\n", m.id.c_str(),
                   ec.message().c_str());
      return 1;
    }
    std::printf("%s %s %zu\n", m.id.c_str(), sha_hex(body).c_str(),
                body.size());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 4 && a[0] == "torture")
    return torture(a[1], a[2], std::atoi(a[3].c_str()));
  if (a.size() == 4 && a[0] == "submit")
    return submit(a[1], std::atoi(a[2].c_str()),
                  std::strtoul(a[3].c_str(), nullptr, 10));
  if (a.size() == 2 && a[0] == "list") return list(a[1]);
  std::fprintf(stderr,
               "usage: spool_helper torture DIR LOGPREFIX THREADS\n"
               "       spool_helper submit DIR COUNT SIZE\n"
               "       spool_helper list DIR\n");
  return 2;
}
