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
  std::string received_transfer_id;
  std::string received_from_peer;
};

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
};

}  // namespace ferry::queue

namespace std {
template <>
struct is_error_code_enum<ferry::queue::spool_errc> : true_type {};
}  // namespace std
