// The ferry link session: one call between two ferry peers over any byte
// stream (a modem line after CONNECT, a TCP connection, a pipe).
//
// The protocol is ESMTP (the design is in the lead's session-design note):
//   answerer: 220 greeting; caller: EHLO, STARTTLS, TLS 1.3 with pinned
//   certificates or a pre-shared key (peer_tls.h), EHLO again; the caller offers its
//   whole batch for the peer in one pipelined round trip
//     XOFFER <tid> <stored-bytes> <sha256-b64url>
//       -> 250 2.0.0 new | 250 2.0.0 have <n> | 250 2.0.0 done <qid>
//   then sends, pipelined, MAIL (SIZE BODY RET ENVID XTID XBODY=ZSTD
//   XFROM) / RCPT (NOTIFY ORCPT) / BDAT chunks of the stored (zstd) body
//   from the offset the receiver already holds; then ATRN <domains> turns
//   the line round (RFC 2645): the answerer sends what it holds for the
//   caller in the same way, then QUIT.
//
// Exactly once: the receiver appends every non-LAST chunk to a durable
// partial (Spool::partial_append) before replying, and commits the message
// together with its transfer id (NewMessage::received_transfer_id) before
// replying to the LAST chunk.  The sender marks recipients in_flight when
// it starts, delivered on that final 250 (or on "done" in a later offer),
// deferred on 4xx or a drop, failed on 5xx.  Wherever the line drops, the
// next call's offers settle it, and a cut message resumes from the bytes
// the receiver holds (verified by the digest of the whole stored body).
//
// Received mail is routed again: local users get a Maildir file named
// maildir_unique_name(qid, user) (idempotent); other routes stay queued in
// the spool for their route; an unknown local user is marked failed with
// 550 5.1.1 and reported through LinkContext::on_failed (the bounce hook).
//
// Log lines (stderr, log.h): per message
//   <qid>: peer=NAME tid=TID bytes=N result=sent|already|received|...
// and per call
//   <peer>: call role=caller bytes_out=... bytes_in=... messages_out=...
//           messages_in=... duration=...ms result=ok
// plus a CallRecord in the spool (Spool::log_call).
//
// HOW TO USE (for the scheduler / ferryd wiring):
//   1. Build one LinkContext per ferryd (spool, router, users, mail root,
//      our host name, the peers with their pinned fingerprints, and two
//      PeerTls contexts: client for calls we place, server for calls we
//      answer).  It must outlive every session.
//   2. After the link is up (Modem::stream() after CONNECT, a connected
//      tcp::socket, a pipe stream), wrap it: make_link_transport(stream).
//      Any type with async_read_some/async_write_some and get_executor()
//      works; the stream must outlive the session.
//   3. co_spawn(executor, session.run(), ...) with
//        LinkSession session(ctx, std::move(transport),
//                            LinkSession::Role::caller, "peer-name");
//      or Role::answerer with an empty peer name (the certificate tells
//      who called).  run() never throws; it returns a CallResult (error,
//      bytes and messages each way, the authenticated peer).  Hang up
//      after it returns.
//   4. Run Spool::requeue_in_flight() once at start-up: a crash mid-call
//      leaves recipients in_flight.
//
// Concurrency: a LinkSession runs on one executor and is not
// thread-safe; LinkContext is shared read-only.  The session calls the
// spool synchronously, so each durable write blocks its executor for one
// sync: ferryd should run each call on its own thread (io_context) or
// accept the stall.
//
// KNOWN LIMITS:
//  - spool writes are synchronous on the session's executor (above);
//  - one partial_append (one sync) per received chunk, not one group
//    commit per batch of chunks;
//  - ferry peers only (XFERRY-OFFER); plain MTAs are gateway/smtp_client.h;
//  - received mail is routed by domain (ConfigRouter) and users/aliases
//    (Users); the [rules] policy is not applied to mail from a peer;
//  - a local Maildir failure defers the recipient, but nothing retries
//    local delivery of mail received from a peer yet.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "gateway/peer_tls.h"
#include "gateway/router.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace ferry::gw {

namespace asio = boost::asio;

// ---- the byte stream under a session ----------------------------------

// A type-erased link: plain bytes until start_tls(), TLS after.  Counts
// the raw bytes on the line each way (TLS records included).
class LinkTransport {
 public:
  virtual ~LinkTransport() = default;
  // Reads at least one byte; 0 with `ec` set at end of stream or error.
  virtual asio::awaitable<size_t> read_some(asio::mutable_buffer b,
                                            std::error_code& ec) = 0;
  // Writes all of `b`.
  virtual asio::awaitable<void> write(asio::const_buffer b,
                                      std::error_code& ec) = 0;
  // TLS handshake over the stream; afterwards reads and writes are TLS.
  virtual asio::awaitable<void> start_tls(asio::ssl::context& ctx, bool server,
                                          std::error_code& ec) = 0;
  virtual const SSL* ssl() const = 0;  // null before start_tls
  // Closes the stream (a hang-up); pending operations fail.
  virtual void close() = 0;
  virtual asio::any_io_executor executor() = 0;
  uint64_t bytes_in() const { return counts_.in; }
  uint64_t bytes_out() const { return counts_.out; }

 protected:
  struct Counts {
    uint64_t in = 0, out = 0;
  };
  Counts counts_;
};

namespace detail {

// Forwards to a stream held by reference and counts the bytes each way;
// it is the next layer of the TLS stream so TLS records are counted too.
template <class Stream>
class CountedStream {
 public:
  using executor_type = typename Stream::executor_type;
  using lowest_layer_type = CountedStream;
  CountedStream(Stream& s, uint64_t* in, uint64_t* out)
      : s_(&s), in_(in), out_(out) {}
  executor_type get_executor() { return s_->get_executor(); }
  lowest_layer_type& lowest_layer() { return *this; }

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& b, Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code, size_t)>(
        [this](auto handler, const Buffers& bufs) {
          s_->async_read_some(
              bufs, [n_in = in_, h = std::move(handler)](
                        boost::system::error_code ec, size_t n) mutable {
                *n_in += n;
                std::move(h)(ec, n);
              });
        },
        token, b);
  }
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& b, Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code, size_t)>(
        [this](auto handler, const Buffers& bufs) {
          s_->async_write_some(
              bufs, [n_out = out_, h = std::move(handler)](
                        boost::system::error_code ec, size_t n) mutable {
                *n_out += n;
                std::move(h)(ec, n);
              });
        },
        token, b);
  }
  Stream& next() { return *s_; }

 private:
  Stream* s_;
  uint64_t* in_;
  uint64_t* out_;
};

template <class Stream>
class StreamTransport final : public LinkTransport {
 public:
  explicit StreamTransport(Stream& s) : plain_(s, &counts_.in, &counts_.out) {}

  asio::awaitable<size_t> read_some(asio::mutable_buffer b,
                                    std::error_code& ec) override {
    // (No co_await inside ?: -- g++ 12 mishandles the temporaries.)
    auto tok = asio::as_tuple(asio::use_awaitable);
    std::tuple<boost::system::error_code, size_t> r;
    if (tls_) {
      r = co_await tls_->async_read_some(b, tok);
    } else {
      r = co_await plain_.async_read_some(b, tok);
    }
    ec = std::get<0>(r);
    co_return std::get<1>(r);
  }
  asio::awaitable<void> write(asio::const_buffer b,
                              std::error_code& ec) override {
    auto tok = asio::as_tuple(asio::use_awaitable);
    std::tuple<boost::system::error_code, size_t> r;
    if (tls_) {
      r = co_await asio::async_write(*tls_, b, tok);
    } else {
      r = co_await asio::async_write(plain_, b, tok);
    }
    ec = std::get<0>(r);
  }
  asio::awaitable<void> start_tls(asio::ssl::context& ctx, bool server,
                                  std::error_code& ec) override {
    tls_.emplace(plain_, ctx);
    auto [e] =
        co_await tls_->async_handshake(server ? asio::ssl::stream_base::server
                                              : asio::ssl::stream_base::client,
                                       asio::as_tuple(asio::use_awaitable));
    ec = e;
  }
  const SSL* ssl() const override {
    return tls_ ? const_cast<TlsStream&>(*tls_).native_handle() : nullptr;
  }
  void close() override {
    if constexpr (requires(Stream & s, boost::system::error_code & e) {
                    s.close(e);
                  }) {
      boost::system::error_code ignored;
      plain_.next().close(ignored);
    }
  }
  asio::any_io_executor executor() override { return plain_.get_executor(); }

 private:
  using TlsStream = asio::ssl::stream<CountedStream<Stream>>;
  CountedStream<Stream> plain_;
  std::optional<TlsStream> tls_;
};

}  // namespace detail

// Wraps a connected stream (tcp::socket, local socket, Modem stream, pipe).
// `s` must outlive the transport.
template <class Stream>
std::unique_ptr<LinkTransport> make_link_transport(Stream& s) {
  return std::make_unique<detail::StreamTransport<Stream>>(s);
}

// The reply recorded for a message whose transfer the line cut: the peer
// may hold it whole (a drop between its commit and its reply), so only the
// same peer may settle it (the call manager's failover leaves it there).
inline constexpr std::string_view kLinkLostReply =
    "451 4.4.2 connection lost during the transfer";
// The same for a message the line cut before its last chunk went out (or
// before it started): the peer holds at most a part, so it may go
// elsewhere.
inline constexpr std::string_view kLinkCutReply =
    "451 4.4.2 connection lost before the message was complete";

// ---- configuration and results -----------------------------------------

struct LinkOptions {
  std::string hostname = "ferry";  // in the greeting and EHLO
  size_t chunk_size = 16384;       // BDAT chunk of stored bytes
  // Unacknowledged chunks the sender may have on the line; bounds what a
  // drop can waste (at most this many chunks resent).
  size_t window_chunks = 4;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // per read
  uint64_t max_message_size = 35ull << 20;
  // The domains we ask the answerer for with ATRN (our local domains).
  std::vector<std::string> atrn_domains;
};

// Everything a session needs from its ferryd; must outlive the sessions.
// The router names the peers and their domains: a peer's route name is its
// name, and ATRN is granted only for domains the router says it serves.
struct LinkContext {
  queue::Spool* spool = nullptr;
  const ConfigRouter* router = nullptr;
  const Users* users = nullptr;   // null: no local users known
  std::string mail_root;          // Maildirs: mail_root/USER
  PeerTls* tls_client = nullptr;  // calls we place
  PeerTls* tls_server = nullptr;  // calls we answer
  LinkOptions options;
  // Called once per message that has a recipient newly marked failed
  // (the bounce generator's hook).  Runs on the session's executor.
  std::function<void(const queue::QueueId&)> on_failed;
  // Records the sender's per-recipient results.  Empty: Spool::apply()
  // and then on_failed.  The bounce generator sets it (Notifier::apply)
  // because it must read a message before its last recipient becomes
  // final and the spool removes it.
  std::function<std::error_code(const std::vector<queue::Transition>&,
                                std::vector<queue::TransitionResult>&)>
      apply;
};

struct CallResult {
  std::error_code ec;                    // empty: the call ran to QUIT
  std::string peer;                      // authenticated peer (empty if none)
  std::string result = "ok";             // "ok", "auth failed", "dropped", ...
  std::string error;  // what went wrong, as logged; empty when ok
  uint64_t bytes_out = 0, bytes_in = 0;  // raw line bytes
  uint32_t messages_out = 0, messages_in = 0;
  uint64_t body_bytes_out = 0;  // stored bytes we sent in BDAT chunks
  uint64_t body_bytes_in = 0;   // stored bytes we received in BDAT chunks
  // Message bytes (as the senders' SIZE: uncompressed) of the messages
  // delivered each way; the call record's payload.
  uint64_t message_bytes_out = 0, message_bytes_in = 0;
  // Raw bytes we had written when our first message byte went out
  // (handshakes, EHLO, offers, commands); 0 if we sent no message.
  uint64_t overhead_out = 0;
  // Raw bytes we had read by then (the other direction's overhead).
  uint64_t overhead_in = 0;
  std::chrono::milliseconds duration{0};
};

// Where a call stands, for `ferryctl dial --wait` (gateway/control.h's
// progress events).  Byte counts are raw line bytes so far; the payload
// counts are stored (compressed) message bytes of the batch being sent.
struct LinkProgress {
  std::string phase;  // "login", "sending", "receiving", "hangup"
  uint64_t bytes_out = 0, bytes_in = 0;
  uint32_t messages_done = 0, messages_total = 0;  // sending
  uint64_t payload_done = 0, payload_total = 0;    // sending
  uint32_t messages_in = 0;                        // receiving
  std::string peer;  // the peer, once known (answerer: after its login)
};

class LinkSession {
 public:
  enum class Role { caller, answerer };
  using ProgressFn = std::function<void(const LinkProgress&)>;

  // `peer` names the peer we called (caller); empty for the answerer.
  LinkSession(const LinkContext& ctx, std::unique_ptr<LinkTransport> t,
              Role role, std::string peer);
  ~LinkSession();
  LinkSession(const LinkSession&) = delete;
  LinkSession& operator=(const LinkSession&) = delete;

  // Called on the session's executor at each step (after every chunk
  // sent, message settled or received).  Set before run().
  void set_progress(ProgressFn fn);
  // The line's rate (the modem's CONNECT speed), recorded in the call
  // record so `ferryctl calls` can show line efficiency.  0: unknown.
  void set_line_bps(uint64_t bps);
  // The number or address dialled, recorded in the call record.
  void set_route(std::string route);

  // Runs the whole call and closes the transport.  Never throws.
  asio::awaitable<CallResult> run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::gw
