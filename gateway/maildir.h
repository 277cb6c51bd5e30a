// Delivery into a Maildir (one file per message; tmp/, new/, cur/).
//
// The sequence makes a delivery durable and idempotent: write the file in
// tmp/, fsync it, rename it into new/, fsync new/.  A reader never sees a
// half-written file, and after the call returns success the message
// survives power loss.  The file name comes from the queue id and the
// user, so repeating a delivery after a crash finds the earlier file and
// does nothing.
//
// Errors are std::error_code values from errno (std::generic_category);
// maildir_deliver also logs one line naming the path and the cause.
// Concurrency: safe from any thread; two deliveries of the same name at
// the same instant may both write tmp/ but only one file reaches new/.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace ferry::gw {

// Writes `bytes` to dir/tmp/NAME, fsyncs it, renames to dir/new/NAME,
// fsyncs dir/new. Creates dir, tmp, new, cur (0700) if missing. If
// dir/new/NAME or dir/cur/NAME* exists already, does nothing (idempotent
// after a crash). Errors name the path and errno.
// The file is created with mode 0600.  The parent of `dir` (mail_root)
// must exist: a missing mail_root is a configuration error, reported, not
// papered over.
std::error_code maildir_deliver(const std::string& dir, const std::string& name,
                                std::string_view bytes);

// As maildir_deliver, and on failure sets `error` to "PATH: cause".
std::error_code maildir_deliver(const std::string& dir, const std::string& name,
                                std::string_view bytes, std::string& error);

// "QUEUEID.USER.ferry": stable for the same inputs, unique per (message,
// user).  Characters unsafe in a Maildir name ('/', ':', control bytes,
// and '%' itself) become %XX.
std::string maildir_unique_name(std::string_view queue_id,
                                std::string_view user);  // stable

}  // namespace ferry::gw
