// Pickup: delivery of the mail that ferry-sendmail left in the spool.
//
// ferry-sendmail never talks to ferryd; it writes each message straight
// into the spool with every recipient on the route "pickup" (kPickupRoute)
// and exits once that is durable.  process_pickup() is ferryd's half: for
// each such recipient it applies the postmaster's rules as for a trusted
// local submitter (an authenticated client with no login name, so relaying
// is allowed and internal-only senders are still held to their domains)
// and then
//   - delivers to local users' Maildirs (maildir_unique_name(old qid,
//     user), so a repeat finds the earlier file);
//   - hands remote addresses to their routes in ONE new spool message,
//     submitted with received_transfer_id "pickup:" + old qid from the
//     peer "pickup", so a repeat after a crash is refused with bad_state
//     and the earlier queue id instead of creating a second copy;
//   - marks refused addresses failed with the policy's reply (550 5.1.1
//     for an unknown user) and calls the bounce hook;
//   - finally marks the pickup recipients delivered, and the message
//     leaves the spool.
// A crash between any two steps repeats the earlier steps harmlessly, so
// every recipient gets exactly one copy.
//
// How ferryd wires it in (the ferryd engineer's part):
//   1. At start-up, after Spool::requeue_in_flight() and before the first
//      call is made, run process_pickup() once.
//   2. Run it again on a timer (a minute is plenty) and whenever the
//      control socket receives the line "pickup" (ferry-sendmail sends it,
//      best effort, after each message it stores).
//   3. The calls block on disk I/O (Maildir fsyncs, spool commits): run
//      them on the disk thread pool, never on the io_context, and never
//      two at once (a strand or a flag); two runs would still not
//      duplicate mail, but they would race to log the same events.
//   4. Set PickupOptions::on_failed to the bounce generator (the same hook
//      as LinkContext::on_failed), and poke the scheduler when
//      PickupResult::resubmitted > 0.
//
// Errors: process_pickup() returns the first spool error that stopped it
// (read errors, or disk_full/sync_failed from a write); the messages it
// did not finish stay in the spool and the next run picks them up.
// Maildir failures are not errors of the run: the recipient is deferred
// for PickupOptions::retry and the run goes on.
//
// Concurrency: free functions; the Spool and Policy are shared as their
// own headers allow.  Each function blocks the calling thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "gateway/policy.h"
#include "queue/spool.h"

namespace ferry::gw {

inline constexpr std::string_view kPickupRoute = "pickup";
// received_from_peer of the resubmitted messages.
inline constexpr std::string_view kPickupPeer = "pickup";

struct PickupOptions {
  std::string mail_root;  // [local] mail_root: Maildirs are mail_root/USER
  // Called once per message after some of its recipients were marked
  // failed (the bounce generator; may be empty).  Runs on the caller's
  // thread.
  std::function<void(const queue::QueueId&)> on_failed;
  // Records the final results; empty: Spool::apply() then on_failed.  The
  // bounce generator sets it (Notifier::apply), which reads the message
  // before the spool removes it.  Runs on the caller's thread.
  std::function<std::error_code(const std::vector<queue::Transition>&,
                                std::vector<queue::TransitionResult>&)>
      apply;
  // How long a recipient whose Maildir could not be written waits.
  std::chrono::seconds retry{300};
  // The "now" that decides which deferred recipients are due (tests).
  queue::Clock::time_point now{};  // epoch value: the system clock
};

struct PickupResult {
  size_t messages = 0;     // pickup messages finished (left the spool)
  size_t local = 0;        // Maildir deliveries made (or found made)
  size_t resubmitted = 0;  // new spool messages for remote routes
  size_t already = 0;      // resubmits refused as repeats (after crash)
  size_t failed = 0;       // recipients marked failed
  size_t deferred = 0;     // recipients deferred (Maildir trouble)
};

// Everything one message's pickup will do, worked out before doing any of
// it.  plan_pickup() reads; pickup_deliver() writes Maildirs and submits
// `remote`; pickup_finish() applies `finals`.  process_pickup() runs the
// three for every message; tests call them one by one to stop "between"
// two steps as a crash would.
struct PickupPlan {
  queue::QueueId id;
  std::string body;
  struct Local {
    uint32_t recipient = 0;          // RecipientInfo::index
    std::vector<std::string> users;  // Maildirs to write
  };
  std::vector<Local> locals;
  queue::NewMessage remote;  // no recipients: nothing to resubmit
  // Transitions for the pickup recipients: delivered for local and remote
  // ones (local ones may become deferred in pickup_deliver), failed for
  // refused ones.
  std::vector<queue::Transition> finals;
  bool any_failed = false;
};

// Builds the plan for message `id`.  Recipients not on the pickup route,
// already final, held, in flight, or deferred until after opts.now are
// left alone.  An empty `finals` means there is nothing to do.
// not_found if the message left the spool meanwhile.
std::error_code plan_pickup(queue::Spool& spool, const Policy& policy,
                            const PickupOptions& opts, const queue::QueueId& id,
                            PickupPlan& plan);

// Writes the Maildir copies (a failure turns that recipient's transition
// into deferred) and submits plan.remote.  A repeat (bad_state with an
// earlier id) counts as success.  On a spool error nothing is marked and
// the error is returned.
std::error_code pickup_deliver(queue::Spool& spool, const PickupOptions& opts,
                               PickupPlan& plan, PickupResult& result);

// Applies plan.finals; calls opts.on_failed when a recipient failed.
std::error_code pickup_finish(queue::Spool& spool, const PickupOptions& opts,
                              const PickupPlan& plan, PickupResult& result);

// All of the above for every message with a recipient on the pickup
// route, oldest first.
std::error_code process_pickup(queue::Spool& spool, const Policy& policy,
                               const PickupOptions& opts, PickupResult& result);

}  // namespace ferry::gw
