// The spool on LMDB: one environment per directory, one committer thread
// per process that batches every write (group commit), short read-only
// transactions for readers.  Layouts: queue/records.h.
//
// Durability.  The environment is opened with LMDB's default durable
// flags, so mdb_txn_commit() flushes the data pages, syncs them and then
// writes and syncs the meta page; a batch is durable exactly when its
// commit returns 0, and only then are its callbacks told so.  A failed
// commit leaves the previous meta page in force, so nothing of the batch is
// visible after a crash or a failure.  We chose this over MDB_NOSYNC plus
// mdb_env_sync() because the latter widens the window in which a reader in
// another process can see data that is not yet synced.
//
// Batching.  Each queued operation runs in its own nested transaction
// inside the batch's transaction, so one operation's logical failure
// (not_found, bad_state) is rolled back alone while the others commit.
// MDB_MAP_FULL aborts the whole batch; the map is doubled (up to
// Options::max_map_size) and the batch is written again from the start.
//
// Map size and readers.  mdb_env_set_mapsize() needs no transaction open in
// this process; `resize_mu_` is held shared by every transaction and
// exclusively while the map is resized (ours, or adopting a size grown by
// another process, MDB_MAP_RESIZED).
//
// Known limitations (spool engineer, issue 2):
// - A write LMDB's pwrite cut short is reported by LMDB as EIO; we call it
//   disk_full only when the file system has < 4 MiB free at that moment,
//   otherwise sync_failed.  Both are temporary to the SMTP layer.
// - stats(), route_stats(), requeue_in_flight() and the event part of
//   expire() scan whole databases: fine for thousands of messages, not for
//   millions.  Counters kept in "meta" would fix that.
// - The data file never shrinks after a burst (LMDB reuses the pages);
//   `mdb_copy -c` compacts it offline.
// - Options come from the first open in a process; a later open of the
//   same directory shares that environment and its options.
#include "queue/spool.h"

#include <lmdb.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "queue/records.h"

namespace ferry::queue {

// ---- Error categories and names. ----

namespace {

class SpoolCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "ferry.spool"; }
  std::string message(int ev) const override {
    switch (static_cast<spool_errc>(ev)) {
      case spool_errc::ok:
        return "success";
      case spool_errc::disk_full:
        return "spool full (disk or map)";
      case spool_errc::sync_failed:
        return "spool sync failed";
      case spool_errc::not_found:
        return "not found in spool";
      case spool_errc::corrupt:
        return "spool record corrupt";
      case spool_errc::bad_state:
        return "transition not allowed";
      case spool_errc::shutting_down:
        return "spool shutting down";
      case spool_errc::io_error:
        return "spool I/O error";
      case spool_errc::version:
        return "spool written by another version";
    }
    return "unknown spool error";
  }
};

// Raw LMDB return codes, used only inside this file; they are mapped to
// spool_errc before a caller sees them.
class LmdbCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "lmdb"; }
  std::string message(int ev) const override { return mdb_strerror(ev); }
};

const std::error_category& lmdb_category() {
  static LmdbCategory c;
  return c;
}

std::error_code lm(int rc) {
  return rc == 0 ? std::error_code{} : std::error_code(rc, lmdb_category());
}

bool is_map_full(const std::error_code& ec) {
  return ec.category() == lmdb_category() && ec.value() == MDB_MAP_FULL;
}

std::error_code E(spool_errc e) { return make_error_code(e); }

// What a caller sees for an LMDB or errno failure.
std::error_code to_spool(std::error_code ec) {
  if (!ec || ec.category() != lmdb_category()) return ec;
  switch (ec.value()) {
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return E(spool_errc::disk_full);
    case MDB_NOTFOUND:
      return E(spool_errc::not_found);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_BAD_VALSIZE:
      return E(spool_errc::corrupt);
    case MDB_VERSION_MISMATCH:
      return E(spool_errc::version);
    case ENOENT:
      return E(spool_errc::not_found);
    default:
      return E(spool_errc::io_error);
  }
}

}  // namespace

const std::error_category& spool_category() {
  static SpoolCategory c;
  return c;
}

std::error_code make_error_code(spool_errc e) {
  return {static_cast<int>(e), spool_category()};
}

bool is_final(RecipientState s) {
  return s == RecipientState::delivered || s == RecipientState::failed;
}

std::string_view to_string(RecipientState s) {
  switch (s) {
    case RecipientState::queued:
      return "queued";
    case RecipientState::in_flight:
      return "in_flight";
    case RecipientState::delivered:
      return "delivered";
    case RecipientState::deferred:
      return "deferred";
    case RecipientState::failed:
      return "failed";
    case RecipientState::held:
      return "held";
  }
  return "unknown";
}

std::string_view to_string(Action a) {
  switch (a) {
    case Action::in_flight:
      return "in_flight";
    case Action::delivered:
      return "delivered";
    case Action::deferred:
      return "deferred";
    case Action::failed:
      return "failed";
    case Action::hold:
      return "hold";
    case Action::release:
      return "release";
    case Action::retry_now:
      return "retry_now";
    case Action::reroute:
      return "reroute";
  }
  return "unknown";
}

std::error_code Spool::transition(const Transition& t, bool* removed) {
  std::vector<TransitionResult> r;
  std::error_code ec = apply({t}, r);
  if (ec) return ec;
  if (removed) *removed = r.at(0).message_removed;
  return r.at(0).ec;
}

namespace {

using records::from_us;
using records::Reader;
using records::to_us;
using records::Writer;

// ---- Small LMDB helpers. ----

MDB_val V(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

std::string_view S(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

// Aborts the cursor on every path.
class Cursor {
 public:
  Cursor(MDB_txn* t, MDB_dbi d) { rc_ = mdb_cursor_open(t, d, &c_); }
  ~Cursor() {
    if (c_) mdb_cursor_close(c_);
  }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  int open_rc() const { return rc_; }
  // Positions at the first key >= `k`; false at the end.
  int seek(std::string_view k) {
    key_ = V(k);
    return mdb_cursor_get(c_, &key_, &val_, MDB_SET_RANGE);
  }
  int op(MDB_cursor_op o) { return mdb_cursor_get(c_, &key_, &val_, o); }
  int del() { return mdb_cursor_del(c_, 0); }
  std::string_view key() const { return S(key_); }
  std::string_view val() const { return S(val_); }

 private:
  MDB_cursor* c_ = nullptr;
  int rc_ = 0;
  MDB_val key_{}, val_{};
};

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

std::string be32(uint32_t v) {
  Writer w;
  w.be32(v);
  return std::move(w.bytes());
}

std::string be64(uint64_t v) {
  Writer w;
  w.be64(v);
  return std::move(w.bytes());
}

uint64_t due_key_time(int64_t us) { return us < 0 ? 0 : uint64_t(us); }

std::string rcpt_key(std::string_view qid, uint32_t i) {
  return std::string(qid) + be32(i);
}

std::string due_key(int64_t us, std::string_view qid, uint32_t i) {
  return be64(due_key_time(us)) + std::string(qid) + be32(i);
}

std::string route_key(std::string_view route, std::string_view qid,
                      uint32_t i) {
  std::string k(route);
  k += '\0';
  k += qid;
  k += be32(i);
  return k;
}

std::string peer_key(std::string_view peer, std::string_view tid) {
  std::string k(peer);
  k += '\0';
  k += tid;
  return k;
}

// Names used in keys: non-empty, no NUL (our separator), short enough for
// LMDB's 511-byte key limit with the rest of the key.
bool valid_name(std::string_view s) {
  return !s.empty() && s.size() <= 200 &&
         s.find('\0') == std::string_view::npos;
}

bool waiting(RecipientState s) {
  return s == RecipientState::queued || s == RecipientState::deferred;
}

// A message prepared on the submitter's thread: compressed and hashed, so
// the committer only writes.
struct Prepared {
  records::MessageRecord rec;
  std::vector<records::RecipientRecord> rcpts;
  std::string stored;  // zstd frame
  std::string xfer_peer, xfer_id;
  QueueId id;          // set by the committer
  QueueId preset_id;   // NewMessage::queue_id, if given
  QueueId earlier_id;  // set when the transfer id was already received
};

std::error_code compress(const std::string& in, int level, std::string& out) {
  struct Free {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };
  thread_local std::unique_ptr<ZSTD_CCtx, Free> ctx(ZSTD_createCCtx());
  if (!ctx) return E(spool_errc::io_error);
  out.resize(ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compressCCtx(ctx.get(), out.data(), out.size(), in.data(),
                               in.size(), level);
  if (ZSTD_isError(n)) return E(spool_errc::io_error);
  out.resize(n);
  return {};
}

std::error_code decompress(std::string_view in, uint64_t size,
                           std::string& out) {
  unsigned long long n = ZSTD_getFrameContentSize(in.data(), in.size());
  if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN || n != size)
    return E(spool_errc::corrupt);
  out.resize(n);
  size_t got = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(got) || got != n) return E(spool_errc::corrupt);
  return {};
}

void sha256(std::string_view in, std::array<uint8_t, 32>& out) {
  unsigned int len = 0;
  EVP_Digest(in.data(), in.size(), out.data(), &len, EVP_sha256(), nullptr);
}

// ---- The per-process core: environment, handles, committer. ----

// Below this much free space a failed write is taken for a full disk.
constexpr uint64_t kNearlyFullBytes = 4u << 20;

struct Op {
  std::function<std::error_code(MDB_txn*)> fn;
  std::function<void(std::error_code)> done;
  size_t bytes = 0;  // roughly what it writes, to bound a batch
  // False for operations that refuse (not_found, bad_state) only before
  // their first write: they run straight in the batch's transaction and
  // skip the cost of a nested one.  Any LMDB error inside them then fails
  // the whole batch, which tells no one "durable" wrongly.
  bool nested = true;
};

// A batch stops growing at this many bytes, well below LMDB's limit on the
// dirty pages of one transaction (MDB_TXN_FULL at about 512 MiB).
constexpr size_t kMaxBatchBytes = 64u << 20;

class Core {
 public:
  Core(std::string dir, Options opts)
      : dir_(std::move(dir)), opts_(std::move(opts)) {}
  ~Core();

  // REQUIRES: the registry mutex (one environment per process per file).
  std::error_code open();

  const Options& opts() const { return opts_; }
  const std::string& dir() const { return dir_; }
  void log(const std::string& line) const {
    if (!opts_.log) return;
    if (opts_.log_sink) {
      opts_.log_sink(line);
    } else {
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  }

  // Queues a write; `done` runs on the committer thread after the sync.
  void enqueue(Op op);
  std::error_code write_sync(std::function<std::error_code(MDB_txn*)> fn,
                             size_t bytes = 0);

  // A short read-only transaction; the shared lock keeps the map still.
  class Read {
   public:
    explicit Read(Core& c) : c_(c) {}
    ~Read() {
      if (txn_) mdb_txn_abort(txn_);
    }
    std::error_code begin();
    MDB_txn* txn() const { return txn_; }

   private:
    Core& c_;
    std::shared_lock<std::shared_mutex> lock_;
    MDB_txn* txn_ = nullptr;
  };

  struct Dbis {
    MDB_dbi meta, msg, rcpt, body, due, route, xout, xin, xin_time, partial,
        event, call;
  } db{};

  MDB_env* env() const { return env_; }
  size_t map_size() const { return map_size_; }

  uint64_t batches() const { return batches_; }
  uint64_t batched_ops() const { return batched_ops_; }
  uint64_t largest_batch() const { return largest_batch_; }

  // Transaction bodies shared by several calls.
  std::error_code next_seq(MDB_txn* t, uint64_t& seq);
  std::error_code add_event(MDB_txn* t, std::string_view qid, std::string text);
  std::error_code remove_message(MDB_txn* t, const std::string& qid,
                                 std::string_view reason);

 private:
  std::error_code open_env();
  void close_env();
  void adopt_map_size();
  bool grow();
  bool fs_nearly_full() const;
  void run();
  std::error_code write_batch(std::vector<Op>& batch,
                              std::vector<std::error_code>& results);

  std::string dir_;
  Options opts_;
  MDB_env* env_ = nullptr;
  size_t map_size_ = 0;
  std::shared_mutex resize_mu_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> queue_;   // GUARDED_BY(mu_)
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread committer_;

  // Written by the committer thread only.
  std::atomic<uint64_t> batches_{0}, batched_ops_{0}, largest_batch_{0};
};

// Recursive: a Core that fails to open is destroyed inside open(), which
// holds this lock, and its destructor takes it again.
std::recursive_mutex& registry_mu() {
  static std::recursive_mutex m;
  return m;
}

std::map<std::string, std::weak_ptr<Core>>& registry() {
  static std::map<std::string, std::weak_ptr<Core>> r;
  return r;
}

std::error_code Core::open_env() {
  int rc = mdb_env_create(&env_);
  if (rc) return lm(rc);
  mdb_env_set_maxdbs(env_, 16);
  // Reader slots are shared by every process on the spool, and with
  // MDB_NOTLS each concurrent read transaction takes one.
  mdb_env_set_maxreaders(env_, 512);
  mdb_env_set_mapsize(env_, opts_.initial_map_size);
  unsigned flags = MDB_NOTLS | (opts_.read_only ? MDB_RDONLY : 0);
  rc = mdb_env_open(env_, dir_.c_str(), flags, 0640);
  if (rc) {
    mdb_env_close(env_);
    env_ = nullptr;
    return lm(rc);
  }
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  map_size_ = info.me_mapsize;
  int dead = 0;
  mdb_reader_check(env_, &dead);  // slots of killed readers

  // Open (or create) every database and check the format, in one txn.
  for (;;) {
    MDB_txn* t = nullptr;
    rc = mdb_txn_begin(env_, nullptr, opts_.read_only ? MDB_RDONLY : 0, &t);
    if (rc == MDB_MAP_RESIZED) {
      mdb_env_set_mapsize(env_, 0);
      continue;
    }
    if (rc) return lm(rc);
    unsigned cf = opts_.read_only ? 0 : MDB_CREATE;
    struct {
      const char* name;
      MDB_dbi* dbi;
    } const dbs[] = {
        {"meta", &db.meta},         {"msg", &db.msg},
        {"rcpt", &db.rcpt},         {"body", &db.body},
        {"due", &db.due},           {"route", &db.route},
        {"xout", &db.xout},         {"xin", &db.xin},
        {"xin_time", &db.xin_time}, {"partial", &db.partial},
        {"event", &db.event},       {"call", &db.call},
    };
    for (const auto& d : dbs) {
      rc = mdb_dbi_open(t, d.name, cf, d.dbi);
      if (rc) break;
    }
    std::error_code ec = lm(rc);
    if (!ec) {
      MDB_val k = V("format"), v;
      rc = mdb_get(t, db.meta, &k, &v);
      if (rc == MDB_NOTFOUND && !opts_.read_only) {
        Writer w;
        w.u32(records::kFormatVersion);
        MDB_val nv = V(w.bytes());
        ec = lm(mdb_put(t, db.meta, &k, &nv, 0));
      } else if (rc) {
        ec = lm(rc);
      } else {
        Reader r(S(v));
        uint32_t f = r.u32();
        if (!r.at_end())
          ec = E(spool_errc::corrupt);
        else if (f > records::kFormatVersion)
          ec = E(spool_errc::version);
      }
    }
    if (ec) {
      mdb_txn_abort(t);
      return ec;
    }
    return lm(mdb_txn_commit(t));
  }
}

void Core::close_env() {
  if (env_) mdb_env_close(env_);
  env_ = nullptr;
}

std::error_code Core::open() {
  std::error_code ec = open_env();
  if (ec) {
    close_env();
    log("spool: dir=" + dir_ + " status=open-failed error=\"" + ec.message() +
        "\"");
    return to_spool(ec);
  }
  if (!opts_.read_only) committer_ = std::thread([this] { run(); });
  return {};
}

Core::~Core() {
  {
    std::lock_guard l(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (committer_.joinable()) committer_.join();
  std::lock_guard l(registry_mu());
  close_env();
  auto it = registry().find(dir_);
  if (it != registry().end() && it->second.expired()) registry().erase(it);
}

std::error_code Core::Read::begin() {
  for (;;) {
    lock_ = std::shared_lock(c_.resize_mu_);
    int rc = mdb_txn_begin(c_.env_, nullptr, MDB_RDONLY, &txn_);
    if (rc == MDB_MAP_RESIZED) {
      lock_.unlock();
      c_.adopt_map_size();
      continue;
    }
    if (rc) txn_ = nullptr;
    return to_spool(lm(rc));
  }
}

// Another process grew the map: take its size.
void Core::adopt_map_size() {
  std::unique_lock l(resize_mu_);
  mdb_env_set_mapsize(env_, 0);
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  map_size_ = info.me_mapsize;
}

// LMDB reports a write that the file system cut short as EIO, not ENOSPC,
// so a failed commit is called disk_full when the file system holding the
// spool has almost no room left at that moment.
bool Core::fs_nearly_full() const {
  struct statvfs st;
  if (::statvfs(dir_.c_str(), &st) != 0) return false;
  return uint64_t{st.f_bavail} * st.f_frsize < kNearlyFullBytes;
}

bool Core::grow() {
  std::unique_lock l(resize_mu_);
  MDB_envinfo info;
  mdb_env_info(env_, &info);
  size_t cur = std::max(map_size_, info.me_mapsize);
  if (cur >= opts_.max_map_size) return false;
  size_t next = std::min(cur * 2, opts_.max_map_size);
  if (mdb_env_set_mapsize(env_, next) != 0) return false;
  mdb_env_info(env_, &info);
  map_size_ = info.me_mapsize;
  log("spool: dir=" + dir_ +
      " status=map-grown map_size=" + std::to_string(map_size_));
  return true;
}

void Core::enqueue(Op op) {
  if (opts_.read_only) {
    op.done(E(spool_errc::bad_state));
    return;
  }
  {
    std::lock_guard l(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(op));
      cv_.notify_one();
      return;
    }
  }
  op.done(E(spool_errc::shutting_down));
}

std::error_code Core::write_sync(std::function<std::error_code(MDB_txn*)> fn,
                                 size_t bytes) {
  std::promise<std::error_code> p;
  std::future<std::error_code> f = p.get_future();
  enqueue(
      Op{std::move(fn), [&p](std::error_code ec) { p.set_value(ec); }, bytes});
  return f.get();
}

void Core::run() {
  for (;;) {
    std::vector<Op> batch;
    {
      std::unique_lock l(mu_);
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything written
      size_t bytes = 0;
      size_t max_ops = std::max<size_t>(1, opts_.max_batch);
      while (
          !queue_.empty() && batch.size() < max_ops &&
          (batch.empty() || bytes + queue_.front().bytes <= kMaxBatchBytes)) {
        bytes += queue_.front().bytes;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<std::error_code> results(batch.size());
    std::error_code ec = write_batch(batch, results);
    batches_++;
    batched_ops_ += batch.size();
    if (batch.size() > largest_batch_) largest_batch_ = batch.size();
    for (size_t i = 0; i < batch.size(); ++i)
      batch[i].done(to_spool(ec ? ec : results[i]));
  }
}

std::error_code Core::write_batch(std::vector<Op>& batch,
                                  std::vector<std::error_code>& results) {
  bool reopened = false;
  for (;;) {
    std::shared_lock lk(resize_mu_);
    MDB_txn* txn = nullptr;
    int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
    if (rc == MDB_MAP_RESIZED) {
      lk.unlock();
      adopt_map_size();
      continue;
    }
    if (rc == MDB_PANIC && !reopened) {
      // A failed meta write left the environment unusable; the file still
      // holds the last good commit, so open it again.
      lk.unlock();
      std::unique_lock ex(resize_mu_);
      log("spool: dir=" + dir_ + " status=reopen reason=lmdb-panic");
      close_env();
      std::error_code ec = open_env();
      reopened = true;
      if (ec) return ec;
      continue;
    }
    if (rc) {
      log("spool: dir=" + dir_ + " status=write-failed error=\"" +
          mdb_strerror(rc) + "\"");
      return lm(rc);
    }

    // Write every operation, each in its own nested transaction unless
    // it needs none.
    bool map_full = false;
    std::error_code broken;  // an unnested operation failed mid-write
    for (size_t i = 0; i < batch.size() && !map_full && !broken; ++i) {
      std::error_code ec;
      if (batch[i].nested) {
        MDB_txn* child = nullptr;
        ec = lm(mdb_txn_begin(env_, txn, 0, &child));
        if (!ec) {
          ec = batch[i].fn(child);
          if (ec) {
            mdb_txn_abort(child);
          } else {
            ec = lm(mdb_txn_commit(child));
          }
        }
      } else {
        ec = batch[i].fn(txn);
        if (ec && ec.category() == lmdb_category() && !is_map_full(ec))
          broken = ec;
      }
      if (is_map_full(ec)) map_full = true;
      results[i] = ec;
    }
    if (broken) {
      mdb_txn_abort(txn);
      log("spool: dir=" + dir_ + " batch=" + std::to_string(batch.size()) +
          " status=write-failed error=\"" + broken.message() + "\"");
      return broken;
    }

    // Commit with sync; only now may anyone be told "durable".
    std::error_code ec;
    if (!map_full) {
      if (opts_.before_commit_hook) {
        if (std::error_code h = opts_.before_commit_hook()) {
          mdb_txn_abort(txn);
          log("spool: dir=" + dir_ + " batch=" + std::to_string(batch.size()) +
              " status=sync-failed error=\"injected: " + h.message() + "\"");
          return E(spool_errc::sync_failed);
        }
      }
      ec = lm(mdb_txn_commit(txn));
      if (!ec) return {};
      if (!is_map_full(ec)) {
        std::error_code out = to_spool(ec);
        if (out != E(spool_errc::disk_full))
          out = fs_nearly_full() ? E(spool_errc::disk_full)
                                 : E(spool_errc::sync_failed);
        log("spool: dir=" + dir_ + " batch=" + std::to_string(batch.size()) +
            " status=" +
            (out == E(spool_errc::disk_full) ? "disk-full" : "sync-failed") +
            " error=\"" + ec.message() + "\"");
        return out;
      }
    } else {
      mdb_txn_abort(txn);
    }

    // The map is full: grow it and write the batch again.
    lk.unlock();
    if (!grow()) {
      log("spool: dir=" + dir_ + " batch=" + std::to_string(batch.size()) +
          " status=disk-full error=\"map full at max_map_size\"");
      return E(spool_errc::disk_full);
    }
    for (auto& r : results) r.clear();
  }
}

std::error_code Core::next_seq(MDB_txn* t, uint64_t& seq) {
  MDB_val k = V("seq"), v;
  int rc = mdb_get(t, db.meta, &k, &v);
  if (rc && rc != MDB_NOTFOUND) return lm(rc);
  seq = 0;
  if (rc == 0) {
    Reader r(S(v));
    seq = r.u64();
  }
  ++seq;
  Writer w;
  w.u64(seq);
  MDB_val nv = V(w.bytes());
  return lm(mdb_put(t, db.meta, &k, &nv, 0));
}

std::error_code Core::add_event(MDB_txn* t, std::string_view qid,
                                std::string text) {
  uint64_t seq;
  if (auto ec = next_seq(t, seq)) return ec;
  std::string key = std::string(qid) + be64(seq);
  std::string val =
      records::encode(records::EventRecord{to_us(Clock::now()), text});
  MDB_val k = V(key), v = V(val);
  return lm(mdb_put(t, db.event, &k, &v, 0));
}

std::error_code Core::remove_message(MDB_txn* t, const std::string& qid,
                                     std::string_view reason) {
  MDB_val k = V(qid), v;
  int rc = mdb_get(t, db.msg, &k, &v);
  if (rc) return lm(rc);

  // Recipients and their index entries.
  {
    Cursor c(t, db.rcpt);
    if (c.open_rc()) return lm(c.open_rc());
    for (rc = c.seek(qid); rc == 0 && starts_with(c.key(), qid);
         rc = c.op(MDB_NEXT)) {
      records::RecipientRecord r;
      if (auto ec = records::decode(c.val(), r)) return ec;
      Reader kr(c.key().substr(qid.size()));
      uint32_t idx = kr.be32();
      if (waiting(r.state)) {
        std::string dk = due_key(r.next_attempt_us, qid, idx);
        std::string rk = route_key(r.route, qid, idx);
        MDB_val a = V(dk), b = V(rk);
        mdb_del(t, db.due, &a, nullptr);
        mdb_del(t, db.route, &b, nullptr);
      }
      if ((rc = c.del())) return lm(rc);
    }
    if (rc && rc != MDB_NOTFOUND) return lm(rc);
  }

  // Outgoing transfer ids.
  {
    Cursor c(t, db.xout);
    if (c.open_rc()) return lm(c.open_rc());
    for (rc = c.seek(qid); rc == 0 && starts_with(c.key(), qid);
         rc = c.op(MDB_NEXT))
      if ((rc = c.del())) return lm(rc);
    if (rc && rc != MDB_NOTFOUND) return lm(rc);
  }

  // Record and body.
  if ((rc = mdb_del(t, db.msg, &k, nullptr))) return lm(rc);
  rc = mdb_del(t, db.body, &k, nullptr);
  if (rc && rc != MDB_NOTFOUND) return lm(rc);
  return add_event(t, qid, "status=removed reason=" + std::string(reason));
}

// ---- Read helpers. ----

std::error_code read_message(Core& c, MDB_txn* t, const QueueId& id,
                             MessageInfo& out) {
  MDB_val k = V(id), v;
  int rc = mdb_get(t, c.db.msg, &k, &v);
  if (rc) return to_spool(lm(rc));
  records::MessageRecord m;
  if (auto ec = records::decode(S(v), m)) return ec;
  out = MessageInfo{};
  out.id = id;
  out.sender = m.sender;
  out.envid = m.envid;
  out.ret = m.ret;
  out.priority = m.priority;
  out.arrival = from_us(m.arrival_us);
  out.size = m.size;
  out.stored_size = m.stored_size;
  out.sha256_hex = records::hex(m.sha256.data(), m.sha256.size());

  Cursor cur(t, c.db.rcpt);
  if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
  for (rc = cur.seek(id); rc == 0 && starts_with(cur.key(), id);
       rc = cur.op(MDB_NEXT)) {
    records::RecipientRecord r;
    if (auto ec = records::decode(cur.val(), r)) return ec;
    RecipientInfo ri;
    Reader kr(cur.key().substr(id.size()));
    ri.index = kr.be32();
    ri.address = std::move(r.address);
    ri.orcpt = std::move(r.orcpt);
    ri.notify = r.notify;
    ri.route = std::move(r.route);
    ri.state = r.state;
    ri.attempts = r.attempts;
    ri.last_reply = std::move(r.last_reply);
    ri.next_attempt = from_us(r.next_attempt_us);
    out.recipients.push_back(std::move(ri));
  }
  if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
  if (out.recipients.size() != m.recipients) return E(spool_errc::corrupt);
  return {};
}

// The bytes held for one partial transfer: the last chunk's offset + size.
std::error_code partial_held(Core& c, MDB_txn* t, const std::string& prefix,
                             uint64_t& size) {
  size = 0;
  Cursor cur(t, c.db.partial);
  if (cur.open_rc()) return lm(cur.open_rc());
  std::string past = prefix + be64(UINT64_MAX);
  int rc = cur.seek(past);
  if (rc == 0) {
    rc = cur.op(MDB_PREV);
  } else if (rc == MDB_NOTFOUND) {
    rc = cur.op(MDB_LAST);
  }
  if (rc == MDB_NOTFOUND) return {};
  if (rc) return lm(rc);
  if (!starts_with(cur.key(), prefix)) return {};
  Reader r(cur.key().substr(prefix.size()));
  size = r.be64() + cur.val().size();
  return {};
}

std::string partial_prefix(const std::string& peer, const std::string& tid) {
  return peer_key(peer, tid) + '\0';
}

std::error_code drop_partial(Core& c, MDB_txn* t, const std::string& prefix,
                             bool& found) {
  found = false;
  Cursor cur(t, c.db.partial);
  if (cur.open_rc()) return lm(cur.open_rc());
  int rc;
  for (rc = cur.seek(prefix); rc == 0 && starts_with(cur.key(), prefix);
       rc = cur.op(MDB_NEXT)) {
    found = true;
    if ((rc = cur.del())) return lm(rc);
  }
  return rc == MDB_NOTFOUND ? std::error_code{} : lm(rc);
}

// ---- The write bodies. ----

std::error_code next_queue_id(Core& c, MDB_txn* t, QueueId& id) {
  MDB_val k = V("last_id"), v;
  int rc = mdb_get(t, c.db.meta, &k, &v);
  if (rc && rc != MDB_NOTFOUND) return lm(rc);
  uint64_t us = 0;
  uint32_t ctr = 0;
  if (rc == 0) {
    Reader r(S(v));
    us = r.u64();
    ctr = r.u32();
  }
  uint64_t now = due_key_time(to_us(Clock::now()));
  if (now > us) {
    us = now;
    ctr = 0;
  } else if (++ctr >= 2176782336u) {  // 36^6: the counter's 6 digits
    ++us;
    ctr = 0;
  }
  Writer w;
  w.u64(us);
  w.u32(ctr);
  MDB_val nv = V(w.bytes());
  if ((rc = mdb_put(t, c.db.meta, &k, &nv, 0))) return lm(rc);
  id = records::format_queue_id(us, ctr);
  return {};
}

std::error_code put(MDB_txn* t, MDB_dbi d, std::string_view k,
                    std::string_view v, unsigned flags = 0) {
  MDB_val kk = V(k), vv = V(v);
  return lm(mdb_put(t, d, &kk, &vv, flags));
}

std::error_code write_message(Core& c, MDB_txn* t, Prepared& p) {
  // Exactly-once: a transfer id is accepted once.
  std::string xk;
  if (!p.xfer_id.empty()) {
    xk = peer_key(p.xfer_peer, p.xfer_id);
    MDB_val k = V(xk), v;
    int rc = mdb_get(t, c.db.xin, &k, &v);
    if (rc == 0) {
      records::ReceivedRecord r;
      if (auto ec = records::decode(S(v), r)) return ec;
      p.earlier_id = r.queue_id;
      return E(spool_errc::bad_state);
    }
    if (rc != MDB_NOTFOUND) return lm(rc);
  }

  // Record, body, recipients and their index entries.  A preset id that is
  // somehow taken falls back to one of ours rather than failing the submit.
  p.rec.arrival_us = to_us(Clock::now());
  bool placed = false;
  if (!p.preset_id.empty()) {
    MDB_val k = V(p.preset_id), v;
    int rc = mdb_get(t, c.db.msg, &k, &v);
    if (rc == MDB_NOTFOUND) {
      p.id = p.preset_id;
      placed = true;
    } else if (rc != 0) {
      return lm(rc);
    } else {
      c.log(p.preset_id + ": warning: preset queue id in use, assigning another");
    }
  }
  if (!placed) {
    if (auto ec = next_queue_id(c, t, p.id)) return ec;
  }
  if (auto ec = put(t, c.db.msg, p.id, records::encode(p.rec), MDB_NOOVERWRITE))
    return ec;
  if (auto ec = put(t, c.db.body, p.id, p.stored)) return ec;
  for (uint32_t i = 0; i < p.rcpts.size(); ++i) {
    auto& r = p.rcpts[i];
    r.next_attempt_us = p.rec.arrival_us;
    if (auto ec = put(t, c.db.rcpt, rcpt_key(p.id, i), records::encode(r)))
      return ec;
    if (auto ec = put(t, c.db.due, due_key(r.next_attempt_us, p.id, i), ""))
      return ec;
    if (auto ec = put(t, c.db.route, route_key(r.route, p.id, i), ""))
      return ec;
  }

  // The transfer id it came with, and the partial it completes.
  if (!p.xfer_id.empty()) {
    records::ReceivedRecord r{p.rec.arrival_us, p.id};
    if (auto ec = put(t, c.db.xin, xk, records::encode(r))) return ec;
    if (auto ec = put(t, c.db.xin_time,
                      be64(due_key_time(p.rec.arrival_us)) + xk, ""))
      return ec;
    bool found;
    if (auto ec = drop_partial(c, t, xk + '\0', found)) return ec;
  }
  std::string ev = "status=queued from=<" + p.rec.sender +
                   "> size=" + std::to_string(p.rec.size) +
                   " nrcpt=" + std::to_string(p.rcpts.size());
  if (!p.xfer_id.empty())
    ev += " peer=" + p.xfer_peer + " transfer_id=" + p.xfer_id;
  return c.add_event(t, p.id, ev);
}

bool allowed(RecipientState s, Action a) {
  using S = RecipientState;
  switch (a) {
    case Action::in_flight:
      return s == S::queued || s == S::deferred;
    case Action::delivered:
    case Action::deferred:
      return s == S::queued || s == S::deferred || s == S::in_flight;
    case Action::failed:
      return !is_final(s);
    case Action::hold:
      return s == S::queued || s == S::deferred;
    case Action::release:
      return s == S::held;
    case Action::retry_now:
    case Action::reroute:
      return s == S::queued || s == S::deferred;
  }
  return false;
}

std::error_code apply_one(Core& c, MDB_txn* t, const Transition& tr,
                          bool& removed) {
  removed = false;
  if (!records::valid_queue_id(tr.id)) return E(spool_errc::not_found);
  std::string rk = rcpt_key(tr.id, tr.recipient);
  MDB_val k = V(rk), v;
  int rc = mdb_get(t, c.db.rcpt, &k, &v);
  if (rc) return lm(rc);
  records::RecipientRecord r;
  if (auto ec = records::decode(S(v), r)) return ec;
  if (!allowed(r.state, tr.action)) return E(spool_errc::bad_state);
  if (tr.action == Action::reroute && !valid_name(tr.route))
    return E(spool_errc::bad_state);
  std::string old_route;

  // Out of the indexes in its old state.
  if (waiting(r.state)) {
    std::string dk = due_key(r.next_attempt_us, tr.id, tr.recipient);
    std::string ro = route_key(r.route, tr.id, tr.recipient);
    MDB_val a = V(dk), b = V(ro);
    if ((rc = mdb_del(t, c.db.due, &a, nullptr))) return lm(rc);
    if ((rc = mdb_del(t, c.db.route, &b, nullptr))) return lm(rc);
  }

  // The new state.
  int64_t when =
      tr.when == Clock::time_point{} ? to_us(Clock::now()) : to_us(tr.when);
  switch (tr.action) {
    case Action::in_flight:
      r.state = RecipientState::in_flight;
      break;
    case Action::delivered:
      r.state = RecipientState::delivered;
      break;
    case Action::deferred:
      r.state = RecipientState::deferred;
      r.next_attempt_us = when;
      break;
    case Action::failed:
      r.state = RecipientState::failed;
      break;
    case Action::hold:
      r.state = RecipientState::held;
      break;
    case Action::release:
    case Action::retry_now:
      r.state = RecipientState::queued;
      r.next_attempt_us = when;
      break;
    case Action::reroute:
      r.state = RecipientState::queued;
      r.next_attempt_us = when;
      old_route = std::move(r.route);
      r.route = tr.route;
      break;
  }
  bool outcome = tr.action == Action::delivered ||
                 tr.action == Action::deferred || tr.action == Action::failed;
  if (outcome) {
    r.attempts++;
    r.last_reply = tr.reply;
  }
  if (auto ec = put(t, c.db.rcpt, rk, records::encode(r))) return ec;
  if (waiting(r.state)) {
    if (auto ec = put(t, c.db.due,
                      due_key(r.next_attempt_us, tr.id, tr.recipient), ""))
      return ec;
    if (auto ec =
            put(t, c.db.route, route_key(r.route, tr.id, tr.recipient), ""))
      return ec;
  }
  std::string ev = "to=<" + r.address +
                   "> rcpt=" + std::to_string(tr.recipient) +
                   " status=" + std::string(to_string(r.state));
  if (outcome && !tr.reply.empty()) ev += " reply=" + tr.reply;
  if (tr.action == Action::reroute)
    ev += " route=" + r.route + " from_route=" + old_route;
  if (auto ec = c.add_event(t, tr.id, ev)) return ec;

  // Leaves the spool when every recipient is final.
  if (!is_final(r.state)) return {};
  Cursor cur(t, c.db.rcpt);
  if (cur.open_rc()) return lm(cur.open_rc());
  for (rc = cur.seek(tr.id); rc == 0 && starts_with(cur.key(), tr.id);
       rc = cur.op(MDB_NEXT)) {
    records::RecipientRecord o;
    if (auto ec = records::decode(cur.val(), o)) return ec;
    if (!is_final(o.state)) return {};
  }
  if (rc && rc != MDB_NOTFOUND) return lm(rc);
  if (auto ec = c.remove_message(t, tr.id, "all-recipients-final")) return ec;
  removed = true;
  return {};
}

// ---- The Spool the callers hold. ----

class LmdbSpool final : public Spool {
 public:
  LmdbSpool(std::shared_ptr<Core> core, bool read_only)
      : c_(std::move(core)), read_only_(read_only) {}

  std::error_code submit(NewMessage msg, QueueId& id) override {
    std::promise<std::pair<std::error_code, QueueId>> p;
    auto f = p.get_future();
    submit_async(std::move(msg), [&p](std::error_code ec, QueueId qid) {
      p.set_value({ec, std::move(qid)});
    });
    auto [ec, qid] = f.get();
    id = std::move(qid);
    return ec;
  }

  void submit_async(NewMessage msg, SubmitDone done) override {
    if (read_only_) {
      done(E(spool_errc::bad_state), {});
      return;
    }
    // Checks, compression and digest here, on the submitter's thread.
    auto p = std::make_shared<Prepared>();
    std::error_code ec = prepare(msg, *p);
    if (ec) {
      done(ec, {});
      return;
    }
    Core* c = c_.get();
    auto write = [c, p](MDB_txn* t) { return write_message(*c, t, *p); };
    auto durable = [c, p, done = std::move(done)](std::error_code e) {
      if (e) {
        // The one failure that names a queue id: the transfer id was
        // already accepted as `earlier_id`.
        bool dup = e == E(spool_errc::bad_state);
        done(e, dup ? p->earlier_id : QueueId{});
        return;
      }
      c->log(p->id + ": from=<" + p->rec.sender +
             "> size=" + std::to_string(p->rec.size) +
             " nrcpt=" + std::to_string(p->rcpts.size()) + " status=queued");
      done(e, p->id);
    };
    // write_message() refuses a duplicate before it writes anything.
    c_->enqueue(Op{std::move(write), std::move(durable),
                   p->stored.size() + 1024, false});
  }

  std::error_code get(const QueueId& id, MessageInfo& out) override {
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    return read_message(*c_, r.txn(), id, out);
  }

  std::error_code read_body(const QueueId& id, std::string& out) override {
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    records::MessageRecord m;
    std::string stored;
    {
      Core::Read r(*c_);
      if (auto ec = r.begin()) return ec;
      MDB_val k = V(id), v;
      int rc = mdb_get(r.txn(), c_->db.msg, &k, &v);
      if (rc) return to_spool(lm(rc));
      if (auto ec = records::decode(S(v), m)) return ec;
      rc = mdb_get(r.txn(), c_->db.body, &k, &v);
      if (rc == MDB_NOTFOUND) return E(spool_errc::corrupt);
      if (rc) return to_spool(lm(rc));
      stored.assign(S(v));
    }
    // Decompress and verify outside the transaction.
    if (auto ec = decompress(stored, m.size, out)) return ec;
    std::array<uint8_t, 32> d;
    sha256(out, d);
    if (d != m.sha256) return E(spool_errc::corrupt);
    return {};
  }

  std::error_code read_stored_body(const QueueId& id,
                                   std::string& out) override {
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    MDB_val k = V(id), v;
    int rc = mdb_get(r.txn(), c_->db.body, &k, &v);
    if (rc) return to_spool(lm(rc));
    out.assign(S(v));
    return {};
  }

  std::error_code list(std::vector<MessageInfo>& out) override {
    out.clear();
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.msg);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    int rc;
    for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
      MessageInfo mi;
      if (auto ec = read_message(*c_, r.txn(), std::string(cur.key()), mi))
        return ec;
      out.push_back(std::move(mi));
    }
    return rc == MDB_NOTFOUND ? std::error_code{} : to_spool(lm(rc));
  }

  std::error_code apply(const std::vector<Transition>& ts,
                        std::vector<TransitionResult>& results) override {
    results.assign(ts.size(), {});
    Core* c = c_.get();
    std::error_code ec = write([&](MDB_txn* t) {
      // Each transition in its own nested transaction, so one refusal
      // leaves the others in.
      for (size_t i = 0; i < ts.size(); ++i) {
        MDB_txn* child = nullptr;
        std::error_code e = lm(mdb_txn_begin(c->env(), t, 0, &child));
        if (e) return e;
        bool removed = false;
        e = apply_one(*c, child, ts[i], removed);
        if (e) {
          mdb_txn_abort(child);
          if (is_map_full(e)) return e;
        } else {
          e = lm(mdb_txn_commit(child));
          if (e) return e;
        }
        results[i] = TransitionResult{to_spool(e), !e && removed};
      }
      return std::error_code{};
    });
    if (ec) {
      for (auto& r : results) r = TransitionResult{ec, false};
      return ec;
    }
    for (size_t i = 0; i < ts.size(); ++i)
      if (results[i].message_removed)
        c_->log(ts[i].id + ": status=removed reason=all-recipients-final");
    return {};
  }

  std::error_code remove(const QueueId& id, std::string_view reason) override {
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    std::string why = "postmaster";
    if (!reason.empty()) why += ":" + std::string(reason);
    Core* c = c_.get();
    std::error_code ec =
        write([&](MDB_txn* t) { return c->remove_message(t, id, why); });
    if (!ec) c_->log(id + ": status=removed reason=" + why);
    return ec;
  }

  std::error_code requeue_in_flight(Clock::time_point now,
                                    size_t& count) override {
    count = 0;
    Core* c = c_.get();
    return write([&](MDB_txn* t) -> std::error_code {
      count = 0;
      std::vector<std::pair<std::string, records::RecipientRecord>> found;
      {
        Cursor cur(t, c->db.rcpt);
        if (cur.open_rc()) return lm(cur.open_rc());
        int rc;
        for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
          records::RecipientRecord r;
          if (auto ec = records::decode(cur.val(), r)) return ec;
          if (r.state == RecipientState::in_flight)
            found.emplace_back(std::string(cur.key()), std::move(r));
        }
        if (rc != MDB_NOTFOUND) return lm(rc);
      }
      for (auto& [key, r] : found) {
        std::string qid = key.substr(0, records::kQueueIdLength);
        Reader kr(std::string_view(key).substr(records::kQueueIdLength));
        uint32_t idx = kr.be32();
        r.state = RecipientState::queued;
        r.next_attempt_us = to_us(now);
        if (auto ec = put(t, c->db.rcpt, key, records::encode(r))) return ec;
        if (auto ec =
                put(t, c->db.due, due_key(r.next_attempt_us, qid, idx), ""))
          return ec;
        if (auto ec = put(t, c->db.route, route_key(r.route, qid, idx), ""))
          return ec;
        if (auto ec = c->add_event(t, qid,
                                   "to=<" + r.address +
                                       "> rcpt=" + std::to_string(idx) +
                                       " status=queued reason=requeued"))
          return ec;
      }
      count = found.size();
      return std::error_code{};
    });
  }

  std::error_code due(Clock::time_point t, size_t limit,
                      std::vector<DueEntry>& out) override {
    out.clear();
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.due);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    uint64_t until = due_key_time(to_us(t));
    int rc;
    for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
      if (limit && out.size() >= limit) break;
      Reader kr(cur.key());
      uint64_t us = kr.be64();
      if (us > until) break;
      DueEntry e;
      e.due = from_us(static_cast<int64_t>(us));
      e.id = std::string(kr.raw(records::kQueueIdLength));
      e.recipient = kr.be32();
      if (!kr.at_end()) return E(spool_errc::corrupt);
      std::string rk = rcpt_key(e.id, e.recipient);
      MDB_val k = V(rk), v;
      if (mdb_get(r.txn(), c_->db.rcpt, &k, &v)) return E(spool_errc::corrupt);
      records::RecipientRecord rr;
      if (auto ec = records::decode(S(v), rr)) return ec;
      e.route = std::move(rr.route);
      out.push_back(std::move(e));
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    return {};
  }

  std::error_code earliest_due(std::optional<Clock::time_point>& out) override {
    out.reset();
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.due);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    int rc = cur.op(MDB_FIRST);
    if (rc == MDB_NOTFOUND) return {};
    if (rc) return to_spool(lm(rc));
    Reader kr(cur.key());
    out = from_us(static_cast<int64_t>(kr.be64()));
    return {};
  }

  std::error_code route_messages(const std::string& route,
                                 std::vector<QueueId>& out) override {
    out.clear();
    if (!valid_name(route)) return {};
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.route);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    std::string prefix = route + '\0';
    int rc;
    for (rc = cur.seek(prefix); rc == 0 && starts_with(cur.key(), prefix);
         rc = cur.op(MDB_NEXT)) {
      std::string qid(cur.key().substr(prefix.size(), records::kQueueIdLength));
      if (out.empty() || out.back() != qid) out.push_back(std::move(qid));
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    return {};
  }

  std::error_code route_stats(std::vector<RouteStats>& out) override {
    out.clear();
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.route);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    std::string last_qid;
    int rc;
    for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
      std::string_view key = cur.key();
      size_t z = key.find('\0');
      if (z == std::string_view::npos) return E(spool_errc::corrupt);
      std::string_view route = key.substr(0, z);
      std::string qid(key.substr(z + 1, records::kQueueIdLength));
      if (out.empty() || out.back().route != route) {
        out.push_back(RouteStats{});
        out.back().route = std::string(route);
        last_qid.clear();
      }
      RouteStats& s = out.back();
      s.recipients++;
      if (qid == last_qid) continue;
      last_qid = qid;
      MDB_val k = V(qid), v;
      if (mdb_get(r.txn(), c_->db.msg, &k, &v)) return E(spool_errc::corrupt);
      records::MessageRecord m;
      if (auto ec = records::decode(S(v), m)) return ec;
      Clock::time_point arrival = from_us(m.arrival_us);
      if (s.messages == 0 || arrival < s.oldest) s.oldest = arrival;
      if (s.messages == 0 || m.priority > s.max_priority)
        s.max_priority = m.priority;
      s.messages++;
      s.bytes += m.size;
      s.stored_bytes += m.stored_size;
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    return {};
  }

  std::error_code transfer_id_for(const QueueId& id, const std::string& peer,
                                  std::string& tid) override {
    tid.clear();
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    if (!valid_name(peer)) return E(spool_errc::bad_state);
    std::string key = id + peer;

    // Usually it exists already: a read transaction is enough.
    {
      Core::Read r(*c_);
      if (auto ec = r.begin()) return ec;
      MDB_val k = V(key), v;
      int rc = mdb_get(r.txn(), c_->db.xout, &k, &v);
      if (rc == 0) {
        tid.assign(S(v));
        return {};
      }
      if (rc != MDB_NOTFOUND) return to_spool(lm(rc));
    }

    // First offer: create it (again checking, another writer may have).
    Core* c = c_.get();
    std::string made;
    std::error_code ec = write([&](MDB_txn* t) -> std::error_code {
      MDB_val k = V(key), v;
      int rc = mdb_get(t, c->db.xout, &k, &v);
      if (rc == 0) {
        made.assign(S(v));
        return {};
      }
      if (rc != MDB_NOTFOUND) return lm(rc);
      MDB_val mk = V(id);
      if ((rc = mdb_get(t, c->db.msg, &mk, &v))) return lm(rc);
      uint8_t rnd[16];
      if (RAND_bytes(rnd, sizeof rnd) != 1) return E(spool_errc::io_error);
      made = records::hex(rnd, sizeof rnd);
      if (auto e = put(t, c->db.xout, key, made)) return e;
      return c->add_event(t, id, "peer=" + peer + " transfer_id=" + made);
    });
    if (!ec) tid = made;
    return ec;
  }

  std::error_code lookup_received(const std::string& peer,
                                  const std::string& tid,
                                  QueueId& id) override {
    id.clear();
    if (!valid_name(peer) || !valid_name(tid)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    std::string key = peer_key(peer, tid);
    MDB_val k = V(key), v;
    int rc = mdb_get(r.txn(), c_->db.xin, &k, &v);
    if (rc) return to_spool(lm(rc));
    records::ReceivedRecord rec;
    if (auto ec = records::decode(S(v), rec)) return ec;
    id = rec.queue_id;
    return {};
  }

  std::error_code expire(Clock::time_point now, size_t& removed) override {
    removed = 0;
    Core* c = c_.get();
    int64_t xin_cut = to_us(now - c_->opts().transfer_id_lifetime);
    int64_t ev_cut = to_us(now - c_->opts().event_lifetime);
    return write([&](MDB_txn* t) -> std::error_code {
      removed = 0;
      int rc;

      // Received transfer ids, oldest first by the time index.
      {
        Cursor cur(t, c->db.xin_time);
        if (cur.open_rc()) return lm(cur.open_rc());
        for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
          Reader kr(cur.key());
          if (static_cast<int64_t>(kr.be64()) >= xin_cut) break;
          std::string xk(cur.key().substr(8));
          MDB_val k = V(xk);
          int d = mdb_del(t, c->db.xin, &k, nullptr);
          if (d && d != MDB_NOTFOUND) return lm(d);
          if ((d = cur.del())) return lm(d);
          removed++;
        }
        if (rc && rc != MDB_NOTFOUND) return lm(rc);
      }

      // Events of messages that have left the spool.
      {
        Cursor cur(t, c->db.event);
        if (cur.open_rc()) return lm(cur.open_rc());
        for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
          records::EventRecord e;
          if (auto ec = records::decode(cur.val(), e)) return ec;
          if (e.time_us >= ev_cut) continue;
          std::string qid(cur.key().substr(0, records::kQueueIdLength));
          MDB_val k = V(qid), v;
          if (mdb_get(t, c->db.msg, &k, &v) == 0) continue;
          int d = cur.del();
          if (d) return lm(d);
          removed++;
        }
        if (rc && rc != MDB_NOTFOUND) return lm(rc);
      }

      // Calls, oldest first.
      {
        Cursor cur(t, c->db.call);
        if (cur.open_rc()) return lm(cur.open_rc());
        for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
          CallRecord cr;
          if (auto ec = records::decode(cur.val(), cr)) return ec;
          if (to_us(cr.end) >= ev_cut) break;
          int d = cur.del();
          if (d) return lm(d);
          removed++;
        }
        if (rc && rc != MDB_NOTFOUND) return lm(rc);
      }
      return std::error_code{};
    });
  }

  std::error_code partial_append(const std::string& peer,
                                 const std::string& tid, uint64_t offset,
                                 std::string_view bytes) override {
    if (!valid_name(peer) || !valid_name(tid)) return E(spool_errc::bad_state);
    Core* c = c_.get();
    std::string prefix = partial_prefix(peer, tid);
    return write(
        [&](MDB_txn* t) -> std::error_code {
          uint64_t held;
          if (auto ec = partial_held(*c, t, prefix, held)) return ec;
          if (held != offset) return E(spool_errc::bad_state);
          if (bytes.empty()) return {};
          return put(t, c->db.partial, prefix + be64(offset), bytes);
        },
        bytes.size());
  }

  std::error_code partial_size(const std::string& peer, const std::string& tid,
                               uint64_t& size) override {
    size = 0;
    if (!valid_name(peer) || !valid_name(tid)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    if (auto ec = partial_held(*c_, r.txn(), partial_prefix(peer, tid), size))
      return to_spool(ec);
    return size ? std::error_code{} : E(spool_errc::not_found);
  }

  std::error_code partial_get(const std::string& peer, const std::string& tid,
                              std::string& bytes) override {
    bytes.clear();
    if (!valid_name(peer) || !valid_name(tid)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.partial);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    std::string prefix = partial_prefix(peer, tid);
    bool any = false;
    int rc;
    for (rc = cur.seek(prefix); rc == 0 && starts_with(cur.key(), prefix);
         rc = cur.op(MDB_NEXT)) {
      Reader kr(cur.key().substr(prefix.size()));
      if (kr.be64() != bytes.size()) return E(spool_errc::corrupt);
      bytes.append(cur.val());
      any = true;
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    return any ? std::error_code{} : E(spool_errc::not_found);
  }

  std::error_code partial_drop(const std::string& peer,
                               const std::string& tid) override {
    if (!valid_name(peer) || !valid_name(tid)) return E(spool_errc::not_found);
    Core* c = c_.get();
    std::string prefix = partial_prefix(peer, tid);
    return write([&](MDB_txn* t) -> std::error_code {
      bool found;
      if (auto ec = drop_partial(*c, t, prefix, found)) return ec;
      return found ? std::error_code{} : E(spool_errc::not_found);
    });
  }

  std::error_code log_event(const QueueId& id, std::string text) override {
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    Core* c = c_.get();
    return write([&](MDB_txn* t) { return c->add_event(t, id, text); });
  }

  std::error_code events(const QueueId& id, std::vector<Event>& out) override {
    out.clear();
    if (!records::valid_queue_id(id)) return E(spool_errc::not_found);
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.event);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    int rc;
    for (rc = cur.seek(id); rc == 0 && starts_with(cur.key(), id);
         rc = cur.op(MDB_NEXT)) {
      records::EventRecord e;
      if (auto ec = records::decode(cur.val(), e)) return ec;
      out.push_back(Event{from_us(e.time_us), id, std::move(e.text)});
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    return {};
  }

  std::error_code log_call(CallRecord& rec) override {
    Core* c = c_.get();
    uint64_t seq = 0;
    std::error_code ec = write([&](MDB_txn* t) -> std::error_code {
      if (auto e = c->next_seq(t, seq)) return e;
      return put(t, c->db.call, be64(seq), records::encode(rec));
    });
    if (!ec) rec.seq = seq;
    return ec;
  }

  std::error_code calls(size_t limit, std::vector<CallRecord>& out) override {
    out.clear();
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    Cursor cur(r.txn(), c_->db.call);
    if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
    int rc;
    for (rc = cur.op(MDB_LAST); rc == 0; rc = cur.op(MDB_PREV)) {
      if (limit && out.size() >= limit) break;
      CallRecord cr;
      if (auto ec = records::decode(cur.val(), cr)) return ec;
      Reader kr(cur.key());
      cr.seq = kr.be64();
      out.push_back(std::move(cr));
    }
    if (rc && rc != MDB_NOTFOUND) return to_spool(lm(rc));
    std::reverse(out.begin(), out.end());
    return {};
  }

  std::error_code stats(SpoolStats& out) override {
    out = SpoolStats{};
    Core::Read r(*c_);
    if (auto ec = r.begin()) return ec;
    MDB_stat st;
    auto count = [&](MDB_dbi d) -> uint64_t {
      return mdb_stat(r.txn(), d, &st) == 0 ? st.ms_entries : 0;
    };
    out.messages = count(c_->db.msg);
    out.received_transfer_ids = count(c_->db.xin);
    out.events = count(c_->db.event);
    out.calls = count(c_->db.call);
    {
      Cursor cur(r.txn(), c_->db.rcpt);
      if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
      int rc;
      for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
        records::RecipientRecord rr;
        if (auto ec = records::decode(cur.val(), rr)) return ec;
        out.recipients_by_state[static_cast<int>(rr.state)]++;
      }
    }
    {
      Cursor cur(r.txn(), c_->db.partial);
      if (cur.open_rc()) return to_spool(lm(cur.open_rc()));
      std::string last;
      int rc;
      for (rc = cur.op(MDB_FIRST); rc == 0; rc = cur.op(MDB_NEXT)) {
        std::string_view k = cur.key();
        std::string_view pre = k.substr(0, k.size() - 8);
        if (pre != last) {
          out.partials++;
          last = std::string(pre);
        }
      }
    }
    MDB_envinfo info;
    mdb_env_info(c_->env(), &info);
    mdb_env_stat(c_->env(), &st);
    out.map_size = info.me_mapsize;
    out.map_used = (info.me_last_pgno + 1) * size_t{st.ms_psize};
    out.batches = c_->batches();
    out.batched_ops = c_->batched_ops();
    out.largest_batch = c_->largest_batch();
    return {};
  }

 private:
  std::error_code prepare(NewMessage& msg, Prepared& p) {
    if (msg.recipients.empty()) return E(spool_errc::bad_state);
    for (const auto& r : msg.recipients)
      if (!valid_name(r.route)) return E(spool_errc::bad_state);
    if (!msg.received_transfer_id.empty() &&
        (!valid_name(msg.received_transfer_id) ||
         !valid_name(msg.received_from_peer)))
      return E(spool_errc::bad_state);
    if (!msg.queue_id.empty()) {
      if (!records::valid_queue_id(msg.queue_id))
        return E(spool_errc::bad_state);
      p.preset_id = msg.queue_id;
    }
    p.rec.ret = msg.ret;
    p.rec.priority = msg.priority;
    p.rec.size = msg.body.size();
    p.rec.recipients = static_cast<uint32_t>(msg.recipients.size());
    p.rec.sender = std::move(msg.sender);
    p.rec.envid = std::move(msg.envid);
    sha256(msg.body, p.rec.sha256);
    if (auto ec = compress(msg.body, c_->opts().zstd_level, p.stored))
      return ec;
    p.rec.stored_size = p.stored.size();
    for (auto& r : msg.recipients) {
      records::RecipientRecord rr;
      rr.notify = r.notify;
      rr.address = std::move(r.address);
      rr.orcpt = std::move(r.orcpt);
      rr.route = std::move(r.route);
      p.rcpts.push_back(std::move(rr));
    }
    p.xfer_id = std::move(msg.received_transfer_id);
    p.xfer_peer = std::move(msg.received_from_peer);
    return {};
  }

  // Every write of this handle; a read-only handle may share a writable
  // environment in this process, and still refuses.
  std::error_code write(std::function<std::error_code(MDB_txn*)> fn,
                        size_t bytes = 0) {
    if (read_only_) return E(spool_errc::bad_state);
    return c_->write_sync(std::move(fn), bytes);
  }

  std::shared_ptr<Core> c_;
  bool read_only_;
};

}  // namespace

std::unique_ptr<Spool> Spool::open(const std::string& dir, const Options& opts,
                                   std::error_code& ec) {
  ec.clear();
  char* real = ::realpath(dir.c_str(), nullptr);
  if (!real) {
    ec = E(spool_errc::not_found);
    if (opts.log)
      std::fprintf(stderr, "spool: dir=%s status=open-failed error=\"%s\"\n",
                   dir.c_str(), std::strerror(errno));
    return nullptr;
  }
  std::string key(real);
  ::free(real);

  // One LMDB environment per process per file: a second open shares it.
  std::lock_guard l(registry_mu());
  std::shared_ptr<Core> core = registry()[key].lock();
  if (core) {
    if (core->opts().read_only && !opts.read_only) {
      ec = E(spool_errc::bad_state);
      return nullptr;
    }
    return std::make_unique<LmdbSpool>(std::move(core), opts.read_only);
  }
  core = std::make_shared<Core>(key, opts);
  if ((ec = core->open())) {
    registry().erase(key);
    return nullptr;
  }
  registry()[key] = core;
  return std::make_unique<LmdbSpool>(std::move(core), opts.read_only);
}

QueueId new_queue_id() {
  // Counter layout (it must stay below 36^6): bit 30 set marks a preset id,
  // bits 9..29 carry the pid, bits 0..8 count within one microsecond.
  static std::mutex mu;
  static uint64_t last_us = 0;
  static uint32_t n = 0;
  std::lock_guard<std::mutex> lock(mu);
  uint64_t us = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(
          Clock::now().time_since_epoch())
          .count());
  if (us > last_us) {
    last_us = us;
    n = 0;
  } else if (++n >= 512) {
    ++last_us;
    n = 0;
  }
  uint32_t pid = static_cast<uint32_t>(::getpid()) & 0x1FFFFF;
  uint32_t ctr = (1u << 30) | (pid << 9) | n;
  return records::format_queue_id(last_us, ctr);
}

}  // namespace ferry::queue
