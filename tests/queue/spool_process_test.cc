// Spool tests that need more than one process or a real file system limit:
// the kill -9 torture, a second process writing and reading while we do,
// LMDB's own tools reading a live spool, and a real ENOSPC on a tiny tmpfs.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "queue/records.h"
#include "queue/spool.h"

namespace ferry::queue {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string sha_hex(const std::string& s) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return records::hex(md, n);
}

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/spool-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Starts the helper program with `args`; stdout to `out_path` if given.
pid_t spawn(const std::vector<std::string>& args,
            const std::string& out_path = "") {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (!out_path.empty()) {
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0) ::_exit(126);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

int wait_exit(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Spool> open_spool(const std::string& dir, Options o = {}) {
  o.log = false;
  std::error_code ec;
  auto s = Spool::open(dir, o, ec);
  EXPECT_TRUE(s) << dir << ": " << ec.message();
  return s;
}

// ---- Crash torture. ----

struct Durable {
  std::string sha;
  size_t size = 0;
  std::string transfer_id;  // "-" when it came without one
};

// Reads the child's logs; a line cut by the kill (no newline) is ignored,
// its message was never reported.
void read_logs(const std::string& prefix, int threads,
               std::map<QueueId, Durable>& durable, std::set<QueueId>& removing,
               std::set<QueueId>& removed) {
  for (int n = 0; n < threads; ++n) {
    std::istringstream in(slurp(prefix + "." + std::to_string(n)));
    std::string line;
    while (std::getline(in, line)) {
      if (in.eof()) break;  // no trailing newline: cut by the kill
      std::istringstream ls(line);
      std::string kind, id;
      ls >> kind >> id;
      if (kind == "D") {
        Durable d;
        ls >> d.sha >> d.size >> d.transfer_id;
        durable[id] = d;
      } else if (kind == "r") {
        removing.insert(id);
      } else if (kind == "R") {
        removed.insert(id);
      }
    }
  }
}

TEST(SpoolCrashTorture, KillNineLosesNothingReportedDurable) {
  int kills = 200;
  if (const char* k = std::getenv("FERRY_TORTURE_KILLS")) kills = std::atoi(k);
  unsigned seed = static_cast<unsigned>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  if (const char* s = std::getenv("FERRY_TORTURE_SEED")) seed = std::atoi(s);
  std::printf(
      "torture: kills=%d seed=%u (FERRY_TORTURE_KILLS, "
      "FERRY_TORTURE_SEED)\n",
      kills, seed);
  std::mt19937 rng(seed);
  constexpr int kThreads = 4;

  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  std::string dir = tmp.path() + "/spool";
  ASSERT_TRUE(fs::create_directory(dir));
  std::string logp = tmp.path() + "/durable";

  size_t total_durable = 0, total_removed = 0, max_seen = 0;
  auto started = std::chrono::steady_clock::now();
  for (int k = 0; k < kills; ++k) {
    // Run the child and kill it at a random instant (sometimes while it
    // is still opening the spool).
    pid_t pid = spawn(
        {FERRY_SPOOL_HELPER, "torture", dir, logp, std::to_string(kThreads)});
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::microseconds(
        rng() % 4 == 0 ? rng() % 5000 : 5000 + rng() % 120000));
    ::kill(pid, SIGKILL);
    int st = wait_exit(pid);
    ASSERT_EQ(st, 128 + SIGKILL) << "child died on its own, cycle " << k;

    // Reopen: every visible message complete, every durable one present.
    std::map<QueueId, Durable> durable;
    std::set<QueueId> removing, removed;
    read_logs(logp, kThreads, durable, removing, removed);
    auto spool = open_spool(dir);
    ASSERT_TRUE(spool) << "cycle " << k;
    std::vector<MessageInfo> all;
    ASSERT_FALSE(spool->list(all)) << "cycle " << k;
    std::map<QueueId, Durable> present;
    for (const auto& m : all) {
      std::string body;
      ASSERT_FALSE(spool->read_body(m.id, body))
          << "cycle " << k << " half-written message " << m.id;
      ASSERT_EQ(sha_hex(body), m.sha256_hex) << m.id;
      ASSERT_EQ(m.recipients.size(), 2u) << m.id;
      present[m.id] = Durable{m.sha256_hex, body.size(), ""};
    }
    for (const auto& [id, d] : durable) {
      // Exactly-once: its transfer id was recorded with it (and is kept
      // after the message leaves), and its partial went in the same commit.
      if (d.transfer_id != "-") {
        QueueId got;
        ASSERT_FALSE(spool->lookup_received("torture-peer", d.transfer_id, got))
            << "cycle " << k << ": transfer id lost for " << id;
        ASSERT_EQ(got, id);
        uint64_t held = 0;
        ASSERT_EQ(spool->partial_size("torture-peer", d.transfer_id, held),
                  spool_errc::not_found)
            << "cycle " << k << ": partial left behind for " << id;
      }
      if (removed.count(id)) {
        ASSERT_EQ(present.count(id), 0u)
            << "cycle " << k << ": removed message came back: " << id;
        continue;
      }
      // Killed while removing it: either outcome is right.
      if (removing.count(id) && !present.count(id)) continue;
      ASSERT_EQ(present.count(id), 1u)
          << "cycle " << k << ": durable message lost: " << id;
      // Its bytes were hashed above; they must be the ones submitted.
      ASSERT_EQ(present[id].sha, d.sha) << id;
      ASSERT_EQ(present[id].size, d.size) << id;
    }
    max_seen = std::max(max_seen, present.size());

    // The peer resends one of them after the "lost reply": refused, and
    // pointed at the copy we hold.
    for (const auto& [id, d] : durable) {
      if (d.transfer_id == "-") continue;
      NewMessage again;
      again.body = "resent";
      again.recipients = {{"a@example.test", "", 0, "peer-a"}};
      again.received_from_peer = "torture-peer";
      again.received_transfer_id = d.transfer_id;
      QueueId earlier;
      ASSERT_EQ(spool->submit(std::move(again), earlier),
                spool_errc::bad_state);
      ASSERT_EQ(earlier, id);
      break;
    }

    // Keep each check short: start from an empty spool (and forget the
    // logs with it) now and then.
    spool.reset();
    bool purge = present.size() > 400;
    if (purge || k + 1 == kills) {
      total_durable += durable.size();
      total_removed += removed.size();
    }
    if (purge) {
      fs::remove_all(dir);
      fs::create_directory(dir);
      for (int n = 0; n < kThreads; ++n)
        fs::remove(logp + "." + std::to_string(n));
    }
  }
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  std::printf(
      "torture: %d kills in %.1f s; %zu messages reported durable, "
      "%zu removed, at most %zu in the spool\n",
      kills, secs, total_durable, total_removed, max_seen);
  EXPECT_GT(total_durable, 0u);
}

// ---- Other processes on the same spool. ----

TEST(SpoolProcesses, SecondProcessWritesAndGrowsMapWhileWeRead) {
  TempDir tmp;
  Options o;
  o.initial_map_size = 1u << 20;
  auto spool = open_spool(tmp.path(), o);
  ASSERT_TRUE(spool);
  QueueId mine;
  NewMessage m;
  m.body = "mine";
  m.recipients = {{"a@example.test", "", 0, "local"}};
  ASSERT_FALSE(spool->submit(m, mine));

  // The other process writes 6 MiB (the map must grow) while we list.
  std::string out = tmp.path() + "/ids";
  pid_t pid =
      spawn({FERRY_SPOOL_HELPER, "submit", tmp.path(), "60", "100000"}, out);
  // Meanwhile we list and write too (LMDB takes turns between writers).
  std::atomic<bool> done{false};
  size_t lists = 0;
  std::vector<QueueId> ours;
  std::thread reader([&] {
    while (!done) {
      std::vector<MessageInfo> all;
      std::error_code ec = spool->list(all);
      EXPECT_FALSE(ec) << ec.message();
      lists++;
      QueueId id;
      ec = spool->submit(m, id);
      EXPECT_FALSE(ec) << ec.message();
      if (!ec) ours.push_back(id);
    }
  });
  EXPECT_EQ(wait_exit(pid), 0);
  done = true;
  reader.join();
  EXPECT_GT(lists, 0u);
  for (const auto& id : ours) {
    std::string body;
    ASSERT_FALSE(spool->read_body(id, body)) << id;
    EXPECT_EQ(body, "mine");
  }

  std::istringstream ids(slurp(out));
  std::string id;
  size_t n = 0;
  while (ids >> id) {
    std::string body;
    ASSERT_FALSE(spool->read_body(id, body)) << id;
    EXPECT_EQ(body.size(), 100000u);
    n++;
  }
  EXPECT_EQ(n, 60u);

  // And we still write, into the map the other process grew.
  QueueId after;
  ASSERT_FALSE(spool->submit(m, after));
  EXPECT_GT(after, mine);
  SpoolStats st;
  ASSERT_FALSE(spool->stats(st));
  EXPECT_GT(st.map_size, 1u << 20);
}

TEST(SpoolProcesses, OtherProcessesReadWhileWeWrite) {
  TempDir tmp;
  auto spool = open_spool(tmp.path());
  ASSERT_TRUE(spool);
  std::atomic<bool> done{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    int i = 0;
    while (!done) {
      NewMessage m;
      m.body = "message " + std::to_string(i++) + "\r\n";
      m.recipients = {{"a@example.test", "", 0, "peer"}};
      QueueId id;
      if (!spool->submit(std::move(m), id)) written++;
    }
  });
  while (written < 10) std::this_thread::sleep_for(1ms);

  // Our own reader program (read-only open; it checks every body).
  for (int i = 0; i < 5; ++i) {
    std::string out = tmp.path() + "/list" + std::to_string(i);
    EXPECT_EQ(wait_exit(spawn({FERRY_SPOOL_HELPER, "list", tmp.path()}, out)),
              0);
    EXPECT_FALSE(slurp(out).empty());
  }
  // LMDB's own tool, as a postmaster might run it.
  const char* mdb_stat = "/usr/bin/mdb_stat";
  if (::access(mdb_stat, X_OK) == 0) {
    std::string out = tmp.path() + "/stat";
    EXPECT_EQ(wait_exit(spawn({mdb_stat, "-s", "msg", tmp.path()}, out)), 0);
    EXPECT_NE(slurp(out).find("Entries:"), std::string::npos);
  }
  done = true;
  writer.join();
}

// ---- A real ENOSPC. ----

// Runs in a child with its own mount namespace and a 3 MiB tmpfs; returns
// 0 when the spool behaved, else a code naming the failed check.
int enospc_child(const std::string& dir) {
  if (::unshare(CLONE_NEWNS) != 0) return 77;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return 77;
  if (::mount("ferry-test", dir.c_str(), "tmpfs", 0, "size=3m") != 0) return 77;

  Options o;
  o.log = false;
  o.initial_map_size = 1u << 20;
  o.max_map_size = 1u << 30;  // the file system fills first
  std::error_code ec;
  auto spool = Spool::open(dir, o, ec);
  if (!spool) return 10;
  std::map<QueueId, std::string> sent;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 200 && !ec; ++i) {
    NewMessage m;
    m.body.resize(64 * 1024);
    for (auto& c : m.body) c = static_cast<char>(rng());
    m.recipients = {{"a@example.test", "", 0, "peer"}};
    std::string body = m.body;
    QueueId id;
    ec = spool->submit(std::move(m), id);
    if (!ec) sent[id] = body;
  }
  if (ec != spool_errc::disk_full) {
    std::fprintf(stderr, "enospc: got %s\n", ec.message().c_str());
    return 11;
  }
  if (sent.size() < 5) return 12;

  // Durable messages intact, before and after a reopen.
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& [id, body] : sent) {
      std::string got;
      if (spool->read_body(id, got) || got != body) return 13;
    }
    std::vector<MessageInfo> all;
    if (spool->list(all) || all.size() != sent.size()) return 14;
    spool.reset();
    spool = Spool::open(dir, o, ec);
    if (!spool) return 15;
  }

  // Free room; the spool takes mail again.
  size_t freed = 0;
  for (auto& [id, body] : sent)
    if (freed++ < sent.size() / 2 &&
        spool->transition(Transition{id, 0, Action::delivered, "250"}))
      return 16;
  NewMessage m;
  m.body = "small";
  m.recipients = {{"a@example.test", "", 0, "peer"}};
  QueueId id;
  if ((ec = spool->submit(std::move(m), id))) {
    std::fprintf(stderr, "enospc: after freeing: %s\n", ec.message().c_str());
    return 17;
  }
  return 0;
}

TEST(SpoolDiskFull, RealEnospcOnTinyTmpfsIsCleanTemporaryError) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for a mount namespace";
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(enospc_child(tmp.path()));
  int st = wait_exit(pid);
  if (st == 77) GTEST_SKIP() << "cannot unshare a mount namespace here";
  EXPECT_EQ(st, 0) << "failed check " << st << " (see enospc_child)";
}

}  // namespace
}  // namespace ferry::queue
