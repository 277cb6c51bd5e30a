// Sockets handed over by systemd (socket activation, sd_listen_fds(3)).
//
// etc/systemd/ferryd-control.socket makes systemd create the control
// socket /run/ferry/ctl.sock with its owner, group and mode, and pass the
// listening descriptor to ferryd.  The socket then outlives ferryd's
// restarts: ferryctl requests made while ferryd restarts wait in the
// backlog instead of failing, and ferryd never needs the right to create
// files in /run/ferry.
//
// The protocol: systemd sets LISTEN_PID to the pid it started and
// LISTEN_FDS to N; descriptors 3 .. 3+N-1 are the sockets, in the order of
// the socket unit's Listen lines (LISTEN_FDNAMES names them, but by the
// unit's choice of names, so we recognise a socket by its address instead).
// Written from the protocol rather than linked from libsystemd so that
// ferryd runs the same with and without systemd.
//
// Concurrency: reads the environment and inspects descriptors; call it
// from the main thread at start-up, before other threads call setenv().
#pragma once

#include <string>

namespace ferry::gw {

// Returns the listening AF_UNIX stream socket that systemd passed to this
// process for `path` (compared with the name the socket is bound to), with
// FD_CLOEXEC set, or -1.
//
// -1 with `error` empty: nothing was passed to us (no LISTEN_PID, or it
// names another process): bind the socket yourself.
// -1 with `error` set: sockets were passed but none is a listening stream
// socket bound to `path` (the unit and [ferryd] control_socket disagree),
// or LISTEN_FDS is malformed; the message names the path and what was
// passed.  The caller decides; ferryd should stop, since binding the path
// itself would leave systemd's socket unanswered.
//
// The environment is left as it is, so the call may be repeated for other
// paths; the descriptor belongs to the caller.
int inherited_unix_listener(const std::string& path, std::string& error);

}  // namespace ferry::gw
