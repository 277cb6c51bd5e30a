// Encoders and decoders for the layouts documented in queue/records.h.
#include "queue/records.h"

#include <cstring>

namespace ferry::queue::records {

void Writer::u32(uint32_t v) {
  for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

void Writer::u64(uint64_t v) {
  for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

void Writer::be32(uint32_t v) {
  for (int i = 3; i >= 0; --i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

void Writer::be64(uint64_t v) {
  for (int i = 7; i >= 0; --i) u8(static_cast<uint8_t>(v >> (8 * i)));
}

std::string_view Reader::raw(size_t n) {
  if (!ok_ || in_.size() < n) {
    ok_ = false;
    return {};
  }
  std::string_view r = in_.substr(0, n);
  in_.remove_prefix(n);
  return r;
}

uint8_t Reader::u8() {
  std::string_view b = raw(1);
  return b.empty() ? 0 : static_cast<uint8_t>(b[0]);
}

uint32_t Reader::u32() {
  std::string_view b = raw(4);
  uint32_t v = 0;
  for (size_t i = 0; i < b.size(); ++i)
    v |= uint32_t{static_cast<uint8_t>(b[i])} << (8 * i);
  return v;
}

uint64_t Reader::u64() {
  std::string_view b = raw(8);
  uint64_t v = 0;
  for (size_t i = 0; i < b.size(); ++i)
    v |= uint64_t{static_cast<uint8_t>(b[i])} << (8 * i);
  return v;
}

uint32_t Reader::be32() {
  std::string_view b = raw(4);
  uint32_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

uint64_t Reader::be64() {
  std::string_view b = raw(8);
  uint64_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

std::string Reader::str() {
  uint32_t n = u32();
  return std::string(raw(n));
}

int64_t to_us(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             t.time_since_epoch())
      .count();
}

Clock::time_point from_us(int64_t us) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::microseconds(us)));
}

namespace {

// Checks the leading version byte and the reader's state at the end.
std::error_code check_version(Reader& r) {
  uint8_t v = r.u8();
  if (!r.ok()) return make_error_code(spool_errc::corrupt);
  if (v != 1) return make_error_code(spool_errc::version);
  return {};
}

std::error_code finish(const Reader& r) {
  return r.at_end() ? std::error_code{} : make_error_code(spool_errc::corrupt);
}

}  // namespace

std::string encode(const MessageRecord& r) {
  Writer w;
  w.u8(1);
  w.u8(static_cast<uint8_t>(r.ret));
  w.u32(static_cast<uint32_t>(r.priority));
  w.i64(r.arrival_us);
  w.u64(r.size);
  w.u64(r.stored_size);
  w.raw(std::string_view(reinterpret_cast<const char*>(r.sha256.data()),
                         r.sha256.size()));
  w.u32(r.recipients);
  w.str(r.sender);
  w.str(r.envid);
  return std::move(w.bytes());
}

std::error_code decode(std::string_view in, MessageRecord& r) {
  Reader rd(in);
  if (auto ec = check_version(rd)) return ec;
  uint8_t ret = rd.u8();
  if (ret > 2) return make_error_code(spool_errc::corrupt);
  r.ret = static_cast<Ret>(ret);
  r.priority = static_cast<int32_t>(rd.u32());
  r.arrival_us = rd.i64();
  r.size = rd.u64();
  r.stored_size = rd.u64();
  std::string_view sha = rd.raw(32);
  if (sha.size() == 32) std::memcpy(r.sha256.data(), sha.data(), 32);
  r.recipients = rd.u32();
  r.sender = rd.str();
  r.envid = rd.str();
  return finish(rd);
}

std::string encode(const RecipientRecord& r) {
  Writer w;
  w.u8(1);
  w.u8(static_cast<uint8_t>(r.state));
  w.u8(r.notify);
  w.u32(r.attempts);
  w.i64(r.next_attempt_us);
  w.str(r.address);
  w.str(r.orcpt);
  w.str(r.route);
  w.str(r.last_reply);
  return std::move(w.bytes());
}

std::error_code decode(std::string_view in, RecipientRecord& r) {
  Reader rd(in);
  if (auto ec = check_version(rd)) return ec;
  uint8_t state = rd.u8();
  if (state > 5) return make_error_code(spool_errc::corrupt);
  r.state = static_cast<RecipientState>(state);
  r.notify = rd.u8();
  r.attempts = rd.u32();
  r.next_attempt_us = rd.i64();
  r.address = rd.str();
  r.orcpt = rd.str();
  r.route = rd.str();
  r.last_reply = rd.str();
  return finish(rd);
}

std::string encode(const ReceivedRecord& r) {
  Writer w;
  w.u8(1);
  w.i64(r.received_us);
  w.str(r.queue_id);
  return std::move(w.bytes());
}

std::error_code decode(std::string_view in, ReceivedRecord& r) {
  Reader rd(in);
  if (auto ec = check_version(rd)) return ec;
  r.received_us = rd.i64();
  r.queue_id = rd.str();
  return finish(rd);
}

std::string encode(const EventRecord& r) {
  Writer w;
  w.u8(1);
  w.i64(r.time_us);
  w.str(r.text);
  return std::move(w.bytes());
}

std::error_code decode(std::string_view in, EventRecord& r) {
  Reader rd(in);
  if (auto ec = check_version(rd)) return ec;
  r.time_us = rd.i64();
  r.text = rd.str();
  return finish(rd);
}

std::string encode(const CallRecord& r) {
  Writer w;
  w.u8(1);
  w.i64(to_us(r.start));
  w.i64(to_us(r.end));
  w.u64(r.bytes_out);
  w.u64(r.bytes_in);
  w.u32(r.messages_out);
  w.u32(r.messages_in);
  w.str(r.peer);
  w.str(r.result);
  w.u64(r.line_bps);
  w.u64(r.payload_out);
  w.u64(r.payload_in);
  w.str(r.route);
  return std::move(w.bytes());
}

std::error_code decode(std::string_view in, CallRecord& r) {
  Reader rd(in);
  if (auto ec = check_version(rd)) return ec;
  r.start = from_us(rd.i64());
  r.end = from_us(rd.i64());
  r.bytes_out = rd.u64();
  r.bytes_in = rd.u64();
  r.messages_out = rd.u32();
  r.messages_in = rd.u32();
  r.peer = rd.str();
  r.result = rd.str();
  if (!rd.at_end()) {  // fields added later; older records stop here
    r.line_bps = rd.u64();
    r.payload_out = rd.u64();
    r.payload_in = rd.u64();
    r.route = rd.str();
  }
  return finish(rd);
}

namespace {
constexpr char kDigits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

void base36(uint64_t v, int width, std::string& out) {
  std::string d(width, '0');
  for (int i = width - 1; i >= 0; --i) {
    d[i] = kDigits[v % 36];
    v /= 36;
  }
  out += d;
}
}  // namespace

std::string format_queue_id(uint64_t us, uint32_t counter) {
  std::string id;
  id.reserve(kQueueIdLength);
  base36(us, 10, id);
  base36(counter, 6, id);
  return id;
}

bool valid_queue_id(std::string_view id) {
  if (id.size() != kQueueIdLength) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))) return false;
  return true;
}

std::string hex(const uint8_t* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s += kHex[p[i] >> 4];
    s += kHex[p[i] & 15];
  }
  return s;
}

}  // namespace ferry::queue::records
