// The spool: ferry's durable store of accepted mail, one LMDB environment
// per spool directory.
//
// A message enters with submit() and is durable (committed with sync) before
// the caller is told so; it leaves only when every recipient has reached a
// final state (delivered or failed).  Concurrent submitters are batched into
// one write transaction and one sync (group commit).  Other processes
// (ferryctl, ferry-sendmail) may open the same directory; LMDB serialises
// writers across processes and readers never block the writer.
//
// Errors: every call returns a std::error_code (or carries one in its
// result); none throws across this boundary.  spool_errc::disk_full and
// spool_errc::sync_failed are temporary (the SMTP layer answers 451 4.3.1);
// spool_errc::corrupt means a record failed its checks.
//
// Concurrency: a Spool object may be used from any thread.  Submissions are
// handed to one committer thread; read calls open their own short read-only
// transactions.  Record layouts are documented in queue/records.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace ferry::queue {

enum class spool_errc {
  ok = 0,
  disk_full = 1,     // the map or the file system is full: temporary
  sync_failed = 2,   // fsync/commit failed: temporary, nothing was stored
  not_found = 3,     // no such queue id / transfer id
  corrupt = 4,       // a record failed its checks
  bad_state = 5,     // the requested transition is not allowed
  shutting_down = 6, // the spool is closing; nothing was stored
  io_error = 7,      // any other LMDB or file-system failure
  version = 8,       // spool written by an incompatible ferry
};
const std::error_category& spool_category();
std::error_code make_error_code(spool_errc e);

// Short, unique, sortable by arrival, safe in file names and log lines:
// 16 characters of [0-9A-Z], microseconds since the epoch then a counter.
using QueueId = std::string;

enum class RecipientState : uint8_t {
  queued = 0,     // waiting for its route
  in_flight = 1,  // being handed over on a link right now
  delivered = 2,  // final
  deferred = 3,   // a temporary failure; next_attempt says when
  failed = 4,     // final; a bounce is due or sent
  held = 5,       // kept by the postmaster until released
};
bool is_final(RecipientState s);
std::string_view to_string(RecipientState s);

enum class Ret : uint8_t { unspecified = 0, full = 1, hdrs = 2 };

// RFC 3461 NOTIFY bits; 0 = not given (default behaviour).
enum Notify : uint8_t {
  notify_never = 1,
  notify_success = 2,
  notify_failure = 4,
  notify_delay = 8,
};

struct NewRecipient {
  std::string address;  // as given in RCPT TO, without angle brackets
  std::string orcpt;    // RFC 3461 ORCPT value, or empty
  uint8_t notify = 0;   // Notify bits
  std::string route;    // route name (peer, "local", "smarthost", ...)
};

struct NewMessage {
  std::string sender;   // envelope sender; empty for the null sender
  std::string envid;    // RFC 3461 ENVID, or empty
  Ret ret = Ret::unspecified;
  int priority = 0;     // larger = more urgent
  std::string body;     // the message as received (CRLF lines), uncompressed
  std::vector<NewRecipient> recipients;
  // Set when the message arrived over a link with a transfer id: the id is
  // recorded as received in the same transaction (exactly-once).
  // (Spool engineer:) if that id from that peer was already accepted, the
  // submit fails with spool_errc::bad_state, stores nothing, and reports
  // the earlier queue id (submit's `id`, submit_async's callback) -- the
  // one failure that carries an id.  Any partial transfer held for the
  // same peer and id is dropped in the same transaction.
  std::string received_transfer_id;
  std::string received_from_peer;
  // Optional: an id from new_queue_id(), so that a Received: header written
  // before the submit names the id the message will have.  Empty: the spool
  // assigns one.  If the given id is taken (it should never be), the spool
  // assigns another and logs it.
  QueueId queue_id;
};

// A fresh queue id for NewMessage::queue_id, made without a transaction:
// the arrival time in microseconds, then a counter that carries this
// process's id in its high bits, so that processes never collide with each
// other or with the ids the spool assigns itself (whose counters stay
// small).  Thread-safe.
QueueId new_queue_id();

using Clock = std::chrono::system_clock;

struct RecipientInfo {
  uint32_t index = 0;  // position within its message
  std::string address;
  std::string orcpt;
  uint8_t notify = 0;
  std::string route;
  RecipientState state = RecipientState::queued;
  uint32_t attempts = 0;
  std::string last_reply;
  Clock::time_point next_attempt{};
};

struct MessageInfo {
  QueueId id;
  std::string sender;
  std::string envid;
  Ret ret = Ret::unspecified;
  int priority = 0;
  Clock::time_point arrival{};
  uint64_t size = 0;              // uncompressed body bytes
  uint64_t stored_size = 0;       // compressed bytes on disk
  std::string sha256_hex;         // of the uncompressed body
  std::vector<RecipientInfo> recipients;
};

struct Options {
  size_t initial_map_size = 64u << 20;  // grows by doubling when full
  size_t max_map_size = 64ull << 30;
  int zstd_level = 3;
  // How long received transfer ids are remembered.
  std::chrono::seconds transfer_id_lifetime = std::chrono::hours(24 * 14);
  bool read_only = false;
  // Added by the spool engineer.  (With read_only, writes fail with
  // spool_errc::bad_state.)
  // How long per-message events and call records are kept (expire()).
  std::chrono::seconds event_lifetime = std::chrono::hours(24 * 30);
  // Most write operations committed in one transaction and one sync.  1
  // gives one sync per operation (the benchmark's baseline).
  size_t max_batch = 1024;
  // Fault injection for tests only: called on the committer thread after a
  // batch is written and before it is committed; a non-zero result aborts
  // the batch as a failed sync would (every operation in it fails with
  // spool_errc::sync_failed and nothing is stored).  We cannot make the
  // kernel fail an fsync on demand, hence this hook.
  std::function<std::error_code()> before_commit_hook;
  // One stderr line per queued or removed message and per spool problem.
  bool log = true;
  // Where those lines go instead of stderr (ferryd gives its own log, so
  // they carry its time stamp).  Called from any spool thread.
  std::function<void(std::string_view line)> log_sink;
};

// Per-recipient transitions (the rules are in queue/records.h).
enum class Action : uint8_t {
  in_flight = 0,  // queued|deferred -> in_flight: handed over on a call
  delivered = 1,  // queued|deferred|in_flight -> delivered (final)
  deferred = 2,   // queued|deferred|in_flight -> deferred until `when`
  failed = 3,     // any non-final state -> failed (final)
  hold = 4,       // queued|deferred -> held
  release = 5,    // held -> queued, due at `when`
  retry_now = 6,  // queued|deferred -> queued, due at `when`
  // queued|deferred -> queued on `route` instead, due at `when`: the call
  // manager's failover to a domain's next route (attempts are kept).
  reroute = 7,
};
std::string_view to_string(Action a);

struct Transition {
  QueueId id;
  uint32_t recipient = 0;  // RecipientInfo::index
  Action action = Action::delivered;
  std::string reply;  // delivered/deferred/failed: the reply that decided it
  // deferred: the next attempt; release/retry_now/reroute: when it becomes
  // due (the epoch value means "now").
  Clock::time_point when{};
  std::string route;  // reroute: the new route (a valid route name)
};

struct TransitionResult {
  std::error_code ec;            // not_found, bad_state, or a batch error
  bool message_removed = false;  // every recipient final: message is gone
};

// One entry of the due index: a recipient waiting for its route whose time
// has come (queued: since it was queued; deferred: its next attempt).
struct DueEntry {
  Clock::time_point due{};
  QueueId id;
  uint32_t recipient = 0;
  std::string route;
};

// What is waiting for one route: recipients queued or deferred for it.
struct RouteStats {
  std::string route;
  uint64_t messages = 0;
  uint64_t recipients = 0;
  uint64_t bytes = 0;          // uncompressed body bytes of those messages
  uint64_t stored_bytes = 0;   // compressed: what a ferry peer would receive
  Clock::time_point oldest{};  // earliest arrival among them
  int max_priority = 0;
};

// One event in a message's history (kept after the message leaves).
struct Event {
  Clock::time_point time{};
  QueueId id;
  std::string text;
};

// One call on a link, written by the link session when the call ends.
struct CallRecord {
  uint64_t seq = 0;  // assigned by log_call(), increasing
  std::string peer;
  Clock::time_point start{};
  Clock::time_point end{};
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
  uint32_t messages_out = 0;
  uint32_t messages_in = 0;
  std::string result;  // "ok", "busy", "no carrier", ...
  uint64_t line_bps = 0;     // the line's rate (CONNECT speed); 0 unknown
  uint64_t payload_out = 0;  // message bytes sent (as stored) this call
  uint64_t payload_in = 0;   // message bytes received (as stored)
  std::string route;         // the number or address used, if any
};

struct SpoolStats {
  uint64_t messages = 0;
  uint64_t recipients_by_state[6] = {};  // indexed by RecipientState
  uint64_t received_transfer_ids = 0;
  uint64_t partials = 0;
  uint64_t events = 0;
  uint64_t calls = 0;
  size_t map_size = 0;  // bytes mapped now
  size_t map_used = 0;  // bytes of pages in use
  // Group commit counters of this process since open.
  uint64_t batches = 0;
  uint64_t batched_ops = 0;
  uint64_t largest_batch = 0;
};

class Spool {
 public:
  // Opens (creating if needed) the spool in `dir`.  Returns null and sets
  // `ec` on failure (missing directory, version mismatch, permission).
  static std::unique_ptr<Spool> open(const std::string& dir,
                                     const Options& opts, std::error_code& ec);
  virtual ~Spool() = default;

  // Stores a message; returns its queue id once it is durable.  Blocks the
  // calling thread until the batch it joined has been synced.
  virtual std::error_code submit(NewMessage msg, QueueId& id) = 0;

  // Same, without blocking: `done` runs on the committer thread after the
  // batch's sync (ec set and id empty on failure).  The callback must be
  // quick: post to your own executor.
  using SubmitDone = std::function<void(std::error_code ec, QueueId id)>;
  virtual void submit_async(NewMessage msg, SubmitDone done) = 0;

  // Read side.
  virtual std::error_code get(const QueueId& id, MessageInfo& out) = 0;
  virtual std::error_code read_body(const QueueId& id, std::string& out) = 0;
  // The stored (compressed) body as it would travel between ferry peers.
  virtual std::error_code read_stored_body(const QueueId& id,
                                           std::string& out) = 0;
  virtual std::error_code list(std::vector<MessageInfo>& out) = 0;

  // ---- Added by the spool engineer. ----
  //
  // Every write below goes through the committer like submit(): it returns
  // once durable, or with an error and nothing stored.  Blocking calls must
  // not be made from a SubmitDone callback (that is the committer thread).

  // Applies `ts` in one transaction; results[i] belongs to ts[i].  A failed
  // transition (not_found, bad_state) does not stop the others.  The call's
  // own error is set only when the whole batch failed (disk_full,
  // sync_failed, ...); then every result carries it too.  A message whose
  // recipients are all final leaves the spool in the same transaction
  // (record, body, recipients, indexes, its transfer ids; its events stay).
  virtual std::error_code apply(const std::vector<Transition>& ts,
                                std::vector<TransitionResult>& results) = 0;
  // One transition; returns its result's error.
  std::error_code transition(const Transition& t, bool* removed = nullptr);
  // The postmaster's delete: removes the message whatever its recipients'
  // states, and logs `reason` as its last event.  not_found if absent.
  virtual std::error_code remove(const QueueId& id,
                                 std::string_view reason) = 0;
  // After a crash: every in_flight recipient becomes queued, due at `now`.
  // ferryd calls this once at start-up, before it makes calls.
  virtual std::error_code requeue_in_flight(Clock::time_point now,
                                            size_t& count) = 0;

  // Due index: up to `limit` recipients due at or before `t`, earliest
  // first (0 = no limit).  earliest_due() is empty when nothing waits.
  virtual std::error_code due(Clock::time_point t, size_t limit,
                              std::vector<DueEntry>& out) = 0;
  virtual std::error_code earliest_due(
      std::optional<Clock::time_point>& out) = 0;
  // Route index: messages with a recipient queued or deferred for `route`,
  // in arrival order; route_stats() summarises every route that has one.
  virtual std::error_code route_messages(const std::string& route,
                                         std::vector<QueueId>& out) = 0;
  virtual std::error_code route_stats(std::vector<RouteStats>& out) = 0;

  // Transfer ids.  transfer_id_for() returns the message's id for `peer`,
  // creating it durably on the first call (not_found if no such message).
  virtual std::error_code transfer_id_for(const QueueId& id,
                                          const std::string& peer,
                                          std::string& transfer_id) = 0;
  // Was `transfer_id` from `peer` already accepted?  Sets `id` to the local
  // queue id (which may have left the spool since); not_found otherwise.
  virtual std::error_code lookup_received(const std::string& peer,
                                          const std::string& transfer_id,
                                          QueueId& id) = 0;
  // Forgets received transfer ids older than transfer_id_lifetime and
  // events/calls older than event_lifetime, as of `now`.
  virtual std::error_code expire(Clock::time_point now, size_t& removed) = 0;

  // Partial incoming transfers, kept across restarts until dropped (a
  // submit() carrying the same peer and transfer id drops it too).
  // partial_append() needs `offset` == the bytes held so far (bad_state
  // otherwise, so a confused resume cannot corrupt the body).
  virtual std::error_code partial_append(const std::string& peer,
                                         const std::string& transfer_id,
                                         uint64_t offset,
                                         std::string_view bytes) = 0;
  // not_found when nothing is held; `size` is then 0.
  virtual std::error_code partial_size(const std::string& peer,
                                       const std::string& transfer_id,
                                       uint64_t& size) = 0;
  virtual std::error_code partial_get(const std::string& peer,
                                      const std::string& transfer_id,
                                      std::string& bytes) = 0;
  virtual std::error_code partial_drop(const std::string& peer,
                                       const std::string& transfer_id) = 0;

  // Event log.  Transitions, submits and removals log their own events.
  virtual std::error_code log_event(const QueueId& id, std::string text) = 0;
  virtual std::error_code events(const QueueId& id,
                                 std::vector<Event>& out) = 0;
  virtual std::error_code log_call(CallRecord& rec) = 0;
  // The newest `limit` calls (0 = all), oldest first.
  virtual std::error_code calls(size_t limit, std::vector<CallRecord>& out) = 0;

  virtual std::error_code stats(SpoolStats& out) = 0;
};

}  // namespace ferry::queue

namespace std {
template <>
struct is_error_code_enum<ferry::queue::spool_errc> : true_type {};
}  // namespace std
