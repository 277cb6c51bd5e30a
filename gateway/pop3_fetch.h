// POP3 multidrop collection: fetch the mail the provider holds for our
// domains from one POP3 mailbox (the way fetchmail's multidrop mode does)
// and store it here as if it had arrived from the provider.
//
// One run, fetch_pop3(), is one POP3 session (RFC 1939, STLS RFC 2595):
//   connect to peer.pop3_server (an IP literal, "127.0.0.1:110" or
//   "[::1]:110"); STLS as peer.pop3_stls says (required: no USER/PASS
//   without TLS; yes: TLS when the server offers it, else plain); USER and
//   PASS (the first line of peer.pop3_password_file); UIDL and LIST; then
//   for each message RETR, store, DELE; QUIT last.
//
// Envelope recipients: POP3 loses the envelope, so they are read from the
// message's own headers, peer.pop3_envelope_headers in order: the first
// header name present in the message is used, and every occurrence of it
// (and every comma-separated address in it) is a recipient.  Recipients
// that are not ours (their domain has no route here, or routes back to
// the smarthost or to this very peer) are skipped and logged.  A message
// with no usable recipient goes to FetchContext::postmaster.  The sender
// is the Return-Path header (the provider's MDA writes it), else the null
// sender.
//
// Storing: the message is submitted to the spool with every recipient on
// the pickup route (kPickupRoute, gateway/pickup.h) together with the
// received transfer id "pop3:PEER:UIDL" from peer PEER, in one durable
// commit; process_pickup() then delivers it exactly as ferry-sendmail's
// mail is delivered (local Maildirs, other routes queued, unknown users
// failed and bounced).
//
// Exactly once: DELE is sent only after that commit, and the server
// removes messages only at QUIT.  A run cut anywhere before QUIT leaves
// every message on the server; the next run finds each stored one's UIDL
// among the received transfer ids, does not store it again and only sends
// DELE.  The transfer ids expire after queue::Options::
// transfer_id_lifetime (14 days by default): a message left on the server
// longer than that (DELE failing every day for two weeks) would be stored
// again.
//
// TLS: the server's certificate is NOT verified against a CA or a pinned
// fingerprint (a provider's POP3 host is reached by IP literal and the
// configuration has no CA file or fingerprint key for it yet); TLS here
// protects the password and the mail from eavesdroppers on the line, not
// from an active man in the middle.  FetchContext::tls lets the caller
// supply a context that verifies.
//
// Log lines (FetchContext::log, default gateway/log.h), one per message:
//   <qid>: peer=P pop3_uidl=U recipients=N result=stored
//   <qid>: peer=P pop3_uidl=U result=already   (stored by an earlier run)
// and per skipped recipient or message (NOQUEUE: ... result=skipped), and
// one per session:
//   P: pop3 server=S tls=yes listed=N stored=N ... result=ok
//   P: pop3 server=S result=failed error="..." stored=N already=N
//
// Errors: the result's ec (pop3_fetch_errc, or a spool error) and a
// one-line `error` naming the peer, the server and the cause ("PASS
// refused: -ERR [AUTH] Authentication failed.").  Whatever was stored
// before an error stays stored; what was not stays on the server.
//
// Concurrency: one run per peer at a time (two would race on the same
// mailbox; the server's lock refuses the second).  The run uses `ex` for
// its socket; the spool submits go through Spool::submit_async and do not
// block it, but the final process_pickup() (run_pickup) blocks the thread
// for its Maildir fsyncs and spool commits: ferryd should run fetches on
// its disk pool's executor or set run_pickup = false and run its own
// pickup afterwards.  FetchContext must outlive the run.
//
// KNOWN LIMITS (issue 7):
//  - the envelope comes from headers anyone can write: every occurrence
//    of the envelope header counts, so a Delivered-To left by an earlier
//    hop (a mailing list, a forward) or forged by the sender adds that
//    recipient if it is ours.  fetchmail's multidrop mode has the same
//    weakness; a provider that writes one trusted header (or ATRN) avoids
//    it.  Mail without Return-Path gets the null sender, so a bounce of
//    it reaches nobody but the postmaster copy;
//  - USER/PASS only (no APOP, no SASL), one mailbox per peer;
//  - the timeout is per reply, not for the whole session;
//  - no CA or pinned-certificate check of the server (above).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gateway/config.h"
#include "gateway/pickup.h"
#include "gateway/policy.h"
#include "queue/spool.h"

namespace ferry::gw {

namespace asio = boost::asio;

enum class pop3_fetch_errc {
  ok = 0,
  bad_config = 1,      // no server, bad address, unreadable password file
  connect_failed = 2,  // TCP connect refused or unreachable
  timeout = 3,         // the server fell silent for FetchContext::timeout
  dropped = 4,         // the connection closed before QUIT completed
  protocol = 5,        // a reply we cannot read (no +OK/-ERR, too long)
  tls_refused = 6,     // STLS required but refused by the server
  tls_failed = 7,      // the TLS handshake failed
  auth_failed = 8,     // USER or PASS answered -ERR
  no_uidl = 9,         // the server has no UIDL: exactly-once impossible
  server_error = 10,   // another command answered -ERR
};
const std::error_category& pop3_fetch_category();
std::error_code make_error_code(pop3_fetch_errc e);

// What a run needs from its ferryd; filled by the caller, read-only here.
struct FetchContext {
  queue::Spool* spool = nullptr;   // required
  const Policy* policy = nullptr;  // required when run_pickup
  // Decides which envelope recipients are ours: a domain whose route is
  // "local" or another peer.  Null: only the policy's local domains.
  const Router* router = nullptr;
  std::string mail_root;  // [local] mail_root, for process_pickup
  // Where a message with no usable envelope recipient goes.
  std::string postmaster = "postmaster";
  uint64_t max_message_size = 35ull << 20;  // larger ones stay on the server
  std::chrono::milliseconds timeout{std::chrono::minutes(2)};  // per reply
  // Null: a built-in client context (TLS 1.2 or later, no verification).
  asio::ssl::context* tls = nullptr;
  // Run process_pickup() after the session so the fetched mail reaches
  // Maildirs and routes now; ferryd may instead run its own pickup.
  bool run_pickup = true;
  // The bounce hook for process_pickup (PickupOptions::on_failed).
  std::function<void(const queue::QueueId&)> on_failed;
  // One log line: id ("<qid>", "NOQUEUE" or the peer name) and the text.
  // Empty: log::line.
  std::function<void(std::string_view id, std::string_view text)> log;
};

struct Pop3FetchResult {
  std::error_code ec;             // empty: the session ended with +OK to QUIT
  std::string error;              // one line naming peer, server and cause
  size_t listed = 0;              // messages in the mailbox at login
  size_t stored = 0;              // newly stored here
  size_t already = 0;             // stored by an earlier run, only deleted now
  size_t deleted = 0;             // DELE answered +OK
  size_t skipped = 0;             // messages left on the server (too big)
  size_t skipped_recipients = 0;  // envelope addresses that are not ours
  size_t to_postmaster = 0;       // messages with no usable recipient
  bool tls = false;               // the session ran under TLS
  bool quit_ok = false;           // deletions committed by the server
  PickupResult pickup;            // the process_pickup() run, if any
  uint64_t bytes_in = 0, bytes_out = 0;  // on the wire
};

// Runs one collection session for `peer` (see the top of this file).
// Never throws.
asio::awaitable<Pop3FetchResult> fetch_pop3(asio::any_io_executor ex,
                                            const PeerConfig& peer,
                                            FetchContext& ctx);

// ---- pure helpers (exposed for tests) ---------------------------------

// The envelope recipients named in `message` (CRLF or LF lines) by the
// first of `header_names` (case-insensitive) that occurs in its header
// section: every occurrence, every comma-separated address, angle
// brackets and comments dropped, unfolded, duplicates (ignoring case)
// removed, in order.  Values that do not parse as addresses are dropped.
std::vector<std::string> envelope_recipients(
    std::string_view message, const std::vector<std::string>& header_names);

// The address in the first Return-Path header, "" if none or "<>".
std::string return_path(std::string_view message);

// Removes the POP3 byte-stuffing from one line of a multi-line reply
// (RFC 1939 3): a line starting with ".." loses its first dot.
std::string_view pop3_unstuff(std::string_view line);

}  // namespace ferry::gw

namespace std {
template <>
struct is_error_code_enum<ferry::gw::pop3_fetch_errc> : true_type {};
}  // namespace std
