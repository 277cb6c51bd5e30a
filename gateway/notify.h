// The Notifier: turns "these recipients failed / are late / were
// delivered" into RFC 3464 notifications (gateway/dsn.h) and puts them into
// the spool on the pickup route, so that process_pickup() (gateway/pickup.h)
// delivers them to a local Maildir or hands them to the sender's route.
// One Notifier per ferryd.
//
// Where the calls come from (the lead wires them in):
//   - on_failed(qid): LinkContext::on_failed and PickupOptions::on_failed,
//     after recipients were marked failed.  on_delivered(qid): the same for
//     NOTIFY=SUCCESS recipients.
//   - apply(ts, results): a drop-in for Spool::apply() that reads the
//     affected messages BEFORE the transitions, so that it can still report
//     when the last recipient became final and the message left the spool
//     (on_failed() cannot: see "Known limitations").
//   - sweep(now, lookup): on a timer.  For every message still queued,
//     checks the lifetime of each waiting recipient's route
//     (check_lifetime() in gateway/schedule.h): sends one delay warning per
//     message, or gives the recipients up (failed, "5.4.7") and bounces
//     them.  It also re-drives reports that a crash interrupted.
//
// Rules: nothing is ever sent for a message from the null sender (no DSN
// answers a DSN; make_dsn() enforces it too), NOTIFY is honoured per
// recipient, RET=HDRS returns only the header, and a message larger than
// NotifyConfig::return_content_limit is returned as its header only, even
// with RET=FULL.  A postmaster copy (header only, every recipient) goes to
// NotifyConfig::postmaster_copy for failures when that is set.
//
// Durable marks (no spool change needed): after a notification is queued
// the Notifier logs a spool event on the ORIGINAL message,
//   "dsn=<new qid|none> action=<failed|delayed|delivered> rcpts=N
//    to=<sender> index=I,J,..."
// Events outlive the message (Options::event_lifetime), so a recipient is
// reported at most once and a message is warned at most once, even after
// it left the spool.  Each notification is submitted with the received
// transfer id "dsn:<kind>:<qid>:<indexes>[:<n>]" from the peer "dsn", so a
// repeat after a crash between the submit and the mark is refused by the
// spool (bad_state with the earlier id) and counts as done.
//
// Logging: one line per notification,
//   <qid>: dsn=<new qid> action=failed rcpts=N to=<sender>
// and "dsn=none ... reason=..." when a report is due but nobody is told
// (null sender, NOTIFY=NEVER).
//
// Errors: every call returns the first spool error that stopped it; what
// was not finished is picked up by the next call or sweep.
// spool_errc::not_found from on_failed()/on_delivered() means the message
// had already left the spool and could not be reported.
//
// Concurrency: the calls block on spool I/O; run them on the disk thread,
// never on the io_context.  A Notifier may be called from several threads:
// a mutex serialises its calls, so two reports of one message never race.
// `want_pickup` runs on the calling thread with that mutex held: it must
// only post work (e.g. schedule a process_pickup() run).
//
// Known limitations (issue 7):
// - on_failed()/on_delivered() need the message in the spool; when the
//   recipient that just became final was the last one, the spool has
//   removed the message (record and body) in the same transaction and
//   the report is lost (logged as "dsn=none ... reason=message-gone").
//   Callers that mark recipients failed should use Notifier::apply()
//   instead of Spool::apply(); link_session.cc and pickup.cc do not yet.
// - sweep() gives up only recipients that are queued or deferred, read
//   again just before; a call that takes one in flight between that read
//   and the failed mark still delivers it, and the sender then holds a
//   bounce for mail that arrived.  Run sweep() between calls to a route
//   to avoid it.
// - apply(): a crash after the transitions and before the notification
//   is queued loses the notification when the message left the spool.
//   sweep()'s own give-up queues the bounce before it marks anything.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/dsn.h"
#include "gateway/pickup.h"
#include "gateway/schedule.h"
#include "queue/spool.h"

namespace ferry::gw {

// received_from_peer of the notifications the Notifier queues.
inline constexpr std::string_view kDsnPeer = "dsn";

struct NotifierOptions {
  std::string reporting_mta;  // our host name (Config::hostname)
  // From: of the notifications; empty: MAILER-DAEMON@reporting_mta.  When
  // notify.postmaster_copy is set, that address is used for both.
  std::string postmaster;
  NotifyConfig notify;
  // "now" for Date: and Arrival of the reports; must outlive the Notifier.
  const Clock* clock = &SystemClock::instance();
  // Called after a notification was queued on the pickup route: a
  // process_pickup() run is wanted.  May be empty.
  std::function<void()> want_pickup;
  bool log = true;
};

// What the scheduler knows about a route's lifetime for one message.
struct RouteLifetime {
  Lifetime lifetime;
  uint32_t missed = 0;  // missed_since(peer state, arrival)
};

// The lead's bridge to the scheduler.
struct LifetimeLookup {
  // route, message arrival -> its lifetime and missed opportunities;
  // nullopt for routes without one ("local", "pickup").
  std::function<std::optional<RouteLifetime>(const std::string& route,
                                             SysTime arrival)>
      lifetime;
  // route -> the next planned call (for the delay warning's text); may be
  // empty or return nullopt when none is planned.
  std::function<std::optional<SysTime>(const std::string& route)> next_call;
};

struct NotifyStats {
  size_t dsns = 0;        // notification mails queued (copies included)
  size_t repeats = 0;     // submits refused as repeats (crash recovery)
  size_t warned = 0;      // messages warned
  size_t given_up = 0;    // recipients given up by sweep()
  size_t suppressed = 0;  // reports due with nobody to tell
};

class Notifier {
 public:
  // `spool` must outlive the Notifier.
  Notifier(queue::Spool& spool, NotifierOptions opts);
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Reports the failed recipients of `qid` not reported before.
  std::error_code on_failed(const queue::QueueId& qid);
  // Reports the delivered NOTIFY=SUCCESS recipients not reported before.
  std::error_code on_delivered(const queue::QueueId& qid);

  // Spool::apply(), then the reports for recipients that the transitions
  // made failed or (NOTIFY=SUCCESS) delivered, from the messages as read
  // before.  Results and the call's error are those of Spool::apply(); a
  // failure to queue a report is logged, not returned.
  std::error_code apply(const std::vector<queue::Transition>& ts,
                        std::vector<queue::TransitionResult>& results);

  // Lifetimes and re-drives over every queued message (see above).
  std::error_code sweep(SysTime now, const LifetimeLookup& lookup);

  // Counters since construction.
  NotifyStats stats() const;

 private:
  struct Report;
  std::error_code report_locked(const queue::MessageInfo& m,
                                const std::string* body, Report& r);
  std::error_code report_final_locked(const queue::QueueId& qid, DsnKind kind);
  std::error_code sweep_one_locked(const queue::MessageInfo& m, SysTime now,
                                   const LifetimeLookup& lookup);
  std::error_code marks_locked(const queue::QueueId& qid, DsnKind kind,
                               std::vector<uint32_t>& indexes, bool& any);

  queue::Spool& spool_;
  NotifierOptions opts_;
  mutable std::mutex mu_;
  NotifyStats stats_;  // REQUIRES: mu_
};

}  // namespace ferry::gw
