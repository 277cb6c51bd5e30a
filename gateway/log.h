// One log line per event, the way mail servers log: a fixed prefix naming
// the object (queue id, SMTP session id, modem, peer) and then key=value
// pairs, so one grep follows a message from arrival to removal.
//
//   2026-12-04T16:40:01.123Z ferryd[1234]: 0MABCDEF12345678: from=<a@b> size=4096
//
// Lines go to standard error (systemd's journal collects them).  The writer
// takes a process-wide mutex so lines from different threads never mix.
#pragma once

#include <string>
#include <string_view>

namespace ferry::log {

// The program name shown in every line ("ferryd", "ferryctl", ...).
void set_program(std::string_view name);

// Writes "<time> <program>[<pid>]: <id>: <text>\n" to stderr.  `id` is the
// queue id, session id or component name; use "NOQUEUE" before a queue id
// exists.
void line(std::string_view id, std::string_view text);

// Quotes a value for key=value output when it holds spaces, quotes or
// control characters; control bytes become \xNN.
std::string quote(std::string_view value);

}  // namespace ferry::log
