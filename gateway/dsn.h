// Delivery status notifications (RFC 3464) and their parser.
//
// make_dsn() turns "these recipients of this message failed / are late /
// were delivered" into the notification mails to send: a multipart/report
// (report-type=delivery-status) from the null sender with a human-readable
// first part, the machine-readable message/delivery-status part, and the
// original message (message/rfc822 for RET=FULL) or its headers
// (text/rfc822-headers for RET=HDRS).  It honours RFC 3461 NOTIFY per
// recipient and never answers a message from the null sender, so two
// gateways can never bounce notifications at each other.
//
// parse_dsn() reads such a message back field by field; tests use it, and
// ferryd may use it to recognise reports that arrive over a link.
//
// Pure functions over bytes: nothing here reads the clock (times are
// given), a socket or the spool.  Output lines end in CRLF.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/clock.h"
#include "queue/spool.h"

namespace ferry::gw {

enum class DsnKind { failure, delay, success };
std::string_view to_string(DsnKind k);

struct DsnRecipient {
  std::string address;  // the final recipient (RCPT TO)
  std::string orcpt;    // RFC 3461 ORCPT as given ("rfc822;a+2Bb@x"), or ""
  uint8_t notify = 0;   // queue::Notify bits; 0 = not given
  // RFC 3463 status ("5.1.1", "4.4.1"); empty: a default for the kind.
  std::string status;
  // The last reply from the far side ("550 5.1.1 no such user"); it
  // becomes "Diagnostic-Code: smtp; ..." (or "x-ferry; ..." when it is not
  // an SMTP reply, e.g. a modem's BUSY).  Empty: no Diagnostic-Code.
  std::string diagnostic;
  std::string remote_mta;  // the far side's host name, or ""
  std::optional<SysTime> last_attempt;
  // In words, for the first part ("the peer's line was busy 12 times").
  std::string reason;
};

// Who gets a copy for the postmaster.
enum class PostmasterCopy { none, failures, all };
// "none" | "failures" | "all" (the ferry.conf value); nullopt otherwise.
std::optional<PostmasterCopy> parse_postmaster_copy(std::string_view s);

struct DsnRequest {
  DsnKind kind = DsnKind::failure;
  std::string reporting_mta;  // our host name: "Reporting-MTA: dns; ..."
  std::string postmaster;     // "postmaster@example.org" (From and copies)
  PostmasterCopy postmaster_copy = PostmasterCopy::none;

  // The original message.
  std::string sender;  // envelope sender; "" = null sender (no DSN)
  std::string envid;   // ENVID, or ""
  queue::Ret ret = queue::Ret::unspecified;
  SysTime arrival{};
  std::string original;  // the message bytes (CRLF), as stored
  std::string queue_id;  // for the text and the Message-ID
  std::vector<DsnRecipient> recipients;

  SysTime now{};  // Date:
  // Delay warnings: when the next attempt is planned and until when we
  // keep trying (Will-Retry-Until).
  std::optional<SysTime> next_attempt;
  std::optional<SysTime> retry_until;
  // With RET unspecified, a failure returns the whole message up to this
  // size and only its headers beyond it.
  size_t return_limit = 1u << 20;
};

// One notification to send: the envelope and the bytes.
struct DsnMail {
  std::string sender;  // always "" (the null sender)
  std::vector<std::string> recipients;
  std::string bytes;
};

// A request filled from a spool record: sender, ENVID, RET, arrival, queue
// id, the body, and one DsnRecipient per index in `which` (address, ORCPT,
// NOTIFY, the last reply as Diagnostic-Code and its enhanced status code
// when it has one).  Indexes that do not exist are skipped.  The caller
// adds reporting_mta, postmaster, now and, for warnings, the times.
DsnRequest dsn_request_from(const queue::MessageInfo& m, std::string body,
                            const std::vector<uint32_t>& which, DsnKind kind);

// The RFC 3463 enhanced status code in an SMTP reply ("550 5.1.1 no such
// user" -> "5.1.1"), or "" when it has none.
std::string enhanced_status(std::string_view reply);

// Which recipients of `req` a notification of its kind covers under their
// NOTIFY (NEVER: none; SUCCESS: success only; FAILURE/DELAY; not given:
// failures and delays).
std::vector<const DsnRecipient*> notified_recipients(const DsnRequest& req);

// The notifications for `req`: for the sender when any recipient asked for
// one, plus the postmaster's copy when configured.  Empty for a message
// from the null sender, and when nobody is to be told.
std::vector<DsnMail> make_dsn(const DsnRequest& req);

// RFC 5322 date: "Fri, 04 Dec 2026 17:04:06 +0000".
std::string rfc5322_date(SysTime t);

// ---- Parsing ----

// Field names compare without regard to case; values are unfolded and
// trimmed.
struct DsnFields {
  std::vector<std::pair<std::string, std::string>> fields;
  // The value of the first field named `name`, or "".
  std::string get(std::string_view name) const;
  bool has(std::string_view name) const;
};

struct ParsedDsn {
  DsnFields headers;        // of the whole message
  std::string report_type;  // Content-Type parameter
  std::string text;         // the first (human-readable) part's body
  DsnFields per_message;    // Reporting-MTA, Arrival-Date, ...
  std::vector<DsnFields> per_recipient;
  std::string returned_type;  // "message/rfc822", "text/rfc822-headers"
  std::string returned;       // the third part's body
};

// Parses a multipart/report delivery-status message.  Returns nullopt and
// sets `error` when it is not one (no boundary, missing status part, ...).
std::optional<ParsedDsn> parse_dsn(std::string_view bytes, std::string& error);

}  // namespace ferry::gw
