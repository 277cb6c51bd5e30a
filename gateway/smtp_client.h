// The plain ESMTP client: hands what ferry holds for one route (the
// provider's smarthost, a peer that is a standard MTA) to that MTA over an
// already connected byte stream (a modem line after CONNECT, a TCP
// connection, a pipe to `exim -bs`).
//
// The dialogue (RFC 5321 and its extensions):
//   220 greeting; EHLO (HELO when EHLO is refused); STARTTLS per
//   SmtpClientOptions::starttls and EHLO again; AUTH PLAIN when a user is
//   configured; then per message MAIL/RCPT (pipelined when PIPELINING is
//   offered, with DATA as the last command of the group) and the body by
//   BDAT when CHUNKING is offered, else by DATA with dot-stuffing; QUIT.
//   MAIL carries SIZE (when offered), BODY=8BITMIME (when offered),
//   SMTPUTF8 (when an address needs it and it is offered), RET and ENVID
//   (when DSN is offered); RCPT carries NOTIFY and ORCPT (when DSN is
//   offered).  Enhanced status codes (RFC 3463) are read from replies and
//   logged.  The stored body is zstd; it is decompressed piece by piece as
//   it goes out, so only the compressed copy is held whole.
//
// Outcomes, per recipient: a 2xx reply to the end of data delivers it; a
// 4xx (at RCPT, MAIL or end of data) defers it; a 5xx fails it and
// LinkContext::on_failed runs for the message (the far side's reply is
// the recipient's last_reply, which the bounce quotes).  All the route's
// recipients are marked in_flight after the greeting, EHLO, STARTTLS and
// AUTH succeeded and before the first MAIL, so a crash leaves them for
// Spool::requeue_in_flight(); a drop defers every one not yet settled
// (logged with reason="connection lost before the message was sent").
//
// A drop between the end of data (the final dot, or the LAST chunk) and its
// reply cannot be told apart from a drop just before the far side stored
// the message: the recipients are deferred and the message is sent again
// on the next call, and the log says it may arrive twice:
//   <qid>: peer=P result=deferred reason="connection lost after end of
//   data; may be duplicated"
// An earlier drop defers the message without that warning.
//
// Log lines (stderr, log.h): one per message,
//   <qid>: peer=P bytes=N rcpts=K result=sent|deferred|failed|mixed
//          reply="..." [status=X.Y.Z]
// and one per call, `smtp-P: call role=client ...`, plus a CallRecord in the
// spool as link_session.h writes.
//
// Concurrency: run_smtp_client() runs on the transport's executor and is
// not thread-safe; the LinkContext is only read (its spool is called
// synchronously, so each durable write blocks the executor for one sync,
// as in link_session.h).
//
// KNOWN LIMITS (issue 6/7, this step):
//  - ATRN (RFC 2645) is not implemented: SmtpClientOptions::atrn is
//    accepted and ignored (logged once per call).  Mail for us from the
//    provider arrives by POP3 multidrop or by the provider's own SMTP.
//  - STARTTLS verifies nothing (no CA, no name check, no pin): it stops a
//    passive listener on the line, not an active one.  The provider's
//    certificate is not pinned.
//  - An 8-bit body is sent to a server that does not offer 8BITMIME as it
//    is (RFC 6152 asks for a bounce or a downgrade); an address that needs
//    SMTPUTF8 when the server does not offer it fails with 553 5.6.7.
//  - A message larger than the server's SIZE fails with 552 5.3.4 without
//    being sent.
//  - Messages go in arrival order and all of a route's queued or deferred
//    recipients are sent, whatever their next_attempt (as link_session).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/link_session.h"

namespace ferry::gw {

struct SmtpClientOptions {
  std::string hostname = "ferry";  // our name in EHLO/HELO
  // no: never STARTTLS (AUTH is then allowed in the clear: the operator
  // said so); yes: STARTTLS when offered; required: hang up without
  // sending anything when STARTTLS is not offered or fails.
  PeerConfig::Tls starttls = PeerConfig::Tls::yes;
  // AUTH PLAIN with these when `auth_user` is not empty.  It is sent only
  // over TLS or when starttls is `no`; otherwise the call ends before any
  // mail is sent (result "auth failed").
  std::string auth_user;
  std::string auth_password;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // per read
  size_t chunk_size = 64 << 10;  // BDAT chunk / DATA write, body bytes
  // ATRN after sending (not implemented yet; see KNOWN LIMITS).
  bool atrn = false;
  std::vector<std::string> atrn_domains;
};

// Delivers every queued or deferred recipient for `route` in ctx.spool to
// the MTA at the other end of `t`, then QUITs and closes `t`.  Uses
// ctx.spool and ctx.on_failed only.  Never throws; the CallResult's ec is
// empty when the call ran to QUIT (whatever the replies to the mail were),
// and result is "ok", "dropped", "tls failed", "auth failed" or
// "refused" (the greeting or EHLO/HELO was refused).
asio::awaitable<CallResult> run_smtp_client(const LinkContext& ctx,
                                            std::unique_ptr<LinkTransport> t,
                                            std::string route,
                                            SmtpClientOptions opts);

}  // namespace ferry::gw
