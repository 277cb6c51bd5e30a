#!/usr/bin/env bash
# The test command: installs what is missing, builds the normal tree and the
# sanitizer tree, and runs the test suite in both.  The sanitizer run leaves
# out the tests labelled "slow" (the longest end-to-end runs).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [[ $(id -u) -eq 0 ]]; then
  tools/install-deps.sh
else
  tools/install-deps.sh || { echo "test: run as root to install packages" >&2; exit 1; }
fi

jobs=$(nproc)
tools/build.sh release
tools/build.sh asan

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

status=0
echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j "$jobs" || status=1
echo "== tests (ASan + UBSan build, without slow tests)"
ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE slow || status=1
exit $status
