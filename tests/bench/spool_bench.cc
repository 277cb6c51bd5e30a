// ferry-spool-bench: durable submits per second for 4 KiB messages from 1,
// 10 and 50 concurrent submitters, with group commit and with one sync per
// message (Options::max_batch = 1), measured in the same run on the same
// disk.  Not a test: run it by hand.
//
//   ferry-spool-bench [--seconds S] [--dir DIR]
//
// Each configuration gets a fresh spool under DIR (default $TMPDIR or
// /tmp), runs for S seconds (default 3) and is removed afterwards.
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "queue/spool.h"

namespace q = ferry::queue;
namespace fs = std::filesystem;

namespace {

struct Result {
  double per_second = 0;
  uint64_t batches = 0;
  uint64_t largest = 0;
};

// A 4 KiB body: headers and text lines, some random bytes so zstd has
// work like it would on real mail.
std::string make_body(std::mt19937_64& rng) {
  std::string b = "From: bench@example.test\r\nSubject: bench\r\n\r\n";
  while (b.size() < 4096) {
    b += "line ";
    for (int i = 0; i < 24; ++i) b += static_cast<char>('a' + rng() % 26);
    b += "\r\n";
  }
  b.resize(4096);
  return b;
}

Result run(const std::string& base, int submitters, size_t max_batch,
           double seconds) {
  std::string dir = base + "/ferry-spool-bench-XXXXXX";
  if (!::mkdtemp(dir.data())) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  q::Options o;
  o.log = false;
  o.max_batch = max_batch;
  std::error_code ec;
  auto spool = q::Spool::open(dir, o, ec);
  if (!spool) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), ec.message().c_str());
    std::exit(1);
  }

  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  auto start = std::chrono::steady_clock::now();
  auto stop = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> ts;
  for (int t = 0; t < submitters; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      while (std::chrono::steady_clock::now() < stop) {
        q::NewMessage m;
        m.sender = "bench@example.test";
        m.body = make_body(rng);
        m.recipients = {{"rcpt@example.test", "", 0, "peer"}};
        q::QueueId id;
        if (spool->submit(std::move(m), id)) {
          failed = true;
          return;
        }
        done++;
      }
    });
  for (auto& t : ts) t.join();
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  q::SpoolStats st;
  spool->stats(st);
  spool.reset();
  fs::remove_all(dir);
  if (failed) {
    std::fprintf(stderr, "a submit failed\n");
    std::exit(1);
  }
  return Result{done / secs, st.batches, st.largest_batch};
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp ? tmp : "/tmp";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--dir") && i + 1 < argc) {
      base = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--dir DIR]\n", argv[0]);
      return 2;
    }
  }
  std::printf(
      "ferry-spool-bench: 4096-byte messages, %.1f s per run, "
      "spools under %s\n",
      seconds, base.c_str());
  std::printf("%-11s %14s %14s %8s %16s\n", "submitters", "group/s",
              "one-sync/s", "ratio", "largest batch");
  for (int n : {1, 10, 50}) {
    Result g = run(base, n, 1024, seconds);
    Result s = run(base, n, 1, seconds);
    std::printf("%-11d %14.0f %14.0f %7.1fx %16llu\n", n, g.per_second,
                s.per_second, g.per_second / s.per_second,
                static_cast<unsigned long long>(g.largest));
    std::fflush(stdout);
  }
  return 0;
}
