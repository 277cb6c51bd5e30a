// The spool's on-disk format: the LMDB databases, their keys and the byte
// layout of every record, with the functions that write and read them.
// A future ferry must be able to read a spool written today, so every
// layout below is versioned and changes only by adding a new version.
//
// Conventions.  Integers in keys are big-endian so that LMDB's byte order
// sorts them numerically; integers in values are little-endian.  Times are
// signed 64-bit microseconds since the Unix epoch ("us").  A "str" in a
// value is a u32 length followed by that many bytes.  Every value starts
// with a u8 layout version; readers reject versions they do not know with
// spool_errc::version and malformed bytes with spool_errc::corrupt.
//
// Environment: one directory, LMDB files data.mdb and lock.mdb, named
// databases below.  The environment format is the "format" key of "meta";
// a spool whose format is newer than kFormatVersion is refused.
//
//   meta      "format"  -> u32 kFormatVersion (1)
//             "last_id" -> u64 us, u32 counter (the last queue id issued)
//             "seq"     -> u64 (last event/call sequence number)
//   msg       qid (16 bytes) -> MessageRecord
//   rcpt      qid, be32 index -> RecipientRecord
//   body      qid -> the body as one zstd frame (content size set)
//   due       be64 due-us, qid, be32 index -> "" (queued and deferred
//             recipients; due-us is RecipientRecord.next_attempt)
//   route     route, 0x00, qid, be32 index -> "" (queued and deferred)
//   xout      qid, peer -> transfer id (32 lowercase hex characters)
//   xin       peer, 0x00, transfer id -> ReceivedRecord
//   xin_time  be64 received-us, peer, 0x00, transfer id -> ""
//   partial   peer, 0x00, transfer id, 0x00, be64 offset -> raw bytes
//   event     qid, be64 seq -> EventRecord
//   call      be64 seq -> CallRecordV
//
// Queue ids: 10 base-36 digits of the issuing microsecond, then 6 of a
// counter within it ([0-9A-Z], 16 characters).  They are issued inside the
// write transaction from meta/last_id, never below the last one, so they
// are unique across processes and sort by arrival even if the clock steps
// back.
//
// MessageRecord v1:  u8 1, u8 ret, i32 priority, i64 arrival-us,
//   u64 size, u64 stored_size, 32 bytes SHA-256 of the body,
//   u32 recipient count, str sender, str envid.
// RecipientRecord v1:  u8 1, u8 state, u8 notify, u32 attempts,
//   i64 next_attempt-us, str address, str orcpt, str route, str last_reply.
// ReceivedRecord v1:  u8 1, i64 received-us, str queue id.
// EventRecord v1:  u8 1, i64 time-us, str text.
// CallRecordV v1:  u8 1, i64 start-us, i64 end-us, u64 bytes_out,
//   u64 bytes_in, u32 messages_out, u32 messages_in, str peer, str result,
//   then (written since session 2, absent in older records) u64 line_bps,
//   u64 payload_out, u64 payload_in, str route.
//
// Recipient states and transitions (Action in spool.h):
//
//   queued --in_flight--> in_flight --delivered--> delivered (final)
//     ^  \                   |  \------failed----> failed (final)
//     |   \--hold--> held    |
//     |                      +--deferred--> deferred --in_flight--> ...
//     +--release (from held), retry_now (from queued|deferred),
//        reroute (from queued|deferred; also changes the route)
//
// delivered/deferred/failed are also accepted straight from queued or
// deferred (local delivery needs no call); failed also from held; every
// outcome (delivered, deferred, failed) counts one attempt.  A message
// whose recipients are all final is removed in the same transaction.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "queue/spool.h"

namespace ferry::queue::records {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kQueueIdLength = 16;

// Byte writer and reader for the layouts above.
class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v);
  void u64(uint64_t v);
  void i64(int64_t v) { u64(static_cast<uint64_t>(v)); }
  void be32(uint32_t v);
  void be64(uint64_t v);
  void raw(std::string_view s) { out_.append(s); }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    raw(s);
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// Reads fields in order; after any short read ok() is false and every
// later read returns zero/empty.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  uint8_t u8();
  uint32_t u32();
  uint64_t u64();
  int64_t i64() { return static_cast<int64_t>(u64()); }
  uint32_t be32();
  uint64_t be64();
  std::string_view raw(size_t n);
  std::string str();
  bool ok() const { return ok_; }
  bool at_end() const { return ok_ && in_.empty(); }

 private:
  std::string_view in_;
  bool ok_ = true;
};

int64_t to_us(Clock::time_point t);
Clock::time_point from_us(int64_t us);

// Message header as stored in "msg".
struct MessageRecord {
  Ret ret = Ret::unspecified;
  int32_t priority = 0;
  int64_t arrival_us = 0;
  uint64_t size = 0;
  uint64_t stored_size = 0;
  std::array<uint8_t, 32> sha256{};
  uint32_t recipients = 0;
  std::string sender;
  std::string envid;
};
std::string encode(const MessageRecord& r);
std::error_code decode(std::string_view in, MessageRecord& r);

struct RecipientRecord {
  RecipientState state = RecipientState::queued;
  uint8_t notify = 0;
  uint32_t attempts = 0;
  int64_t next_attempt_us = 0;
  std::string address;
  std::string orcpt;
  std::string route;
  std::string last_reply;
};
std::string encode(const RecipientRecord& r);
std::error_code decode(std::string_view in, RecipientRecord& r);

struct ReceivedRecord {
  int64_t received_us = 0;
  std::string queue_id;
};
std::string encode(const ReceivedRecord& r);
std::error_code decode(std::string_view in, ReceivedRecord& r);

struct EventRecord {
  int64_t time_us = 0;
  std::string text;
};
std::string encode(const EventRecord& r);
std::error_code decode(std::string_view in, EventRecord& r);

std::string encode(const CallRecord& r);
std::error_code decode(std::string_view in, CallRecord& r);

// Queue ids.
std::string format_queue_id(uint64_t us, uint32_t counter);
bool valid_queue_id(std::string_view id);

std::string hex(const uint8_t* p, size_t n);

}  // namespace ferry::queue::records
