#!/usr/bin/env bash
# Runs a command inside a fresh network namespace that has only loopback, so
# that nothing a daemon under test tries (name look-ups, connects) can leave
# the machine.  Usage: tests/netns-run.sh COMMAND [ARGS...]
# Needs root or unprivileged user namespaces; fails loudly otherwise.
set -euo pipefail
if [[ "${FERRY_IN_NETNS:-}" == 1 ]]; then
  exec "$@"
fi
export FERRY_IN_NETNS=1
if [[ $(id -u) -eq 0 ]]; then
  exec unshare --net -- bash -c 'ip link set lo up && exec "$@"' netns-run "$@"
fi
exec unshare --map-root-user --net -- \
  bash -c 'ip link set lo up && exec "$@"' netns-run "$@"
