#!/usr/bin/env bash
# The main job: two offices exchanging real mail over an emulated phone line.
#
# Installs the Debian packages ferry needs (tools/install-deps.sh), builds
# the release tree in build/ (tools/build.sh release) and runs the demo
# (tools/demo/demo.py) inside a loopback-only network namespace.  Run it as
# root on Debian 12.  Arguments go to the demo, e.g.
#   tools/demo.sh --fast              the line 10x faster
#   tools/demo.sh --messages 100      more messages each way
#   tools/demo.sh --eml-dir DIR       your own .eml files
#   tools/demo.sh --work DIR          another working folder
# (tools/demo/demo.py --help lists them all).  Exit status: 0 when every
# check passed; 1 a check failed; 2 bad arguments; 3 set-up failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: run as root (it installs packages and makes a network" \
       "namespace): sudo $0 $*" >&2
  exit 2
fi

"$top/tools/install-deps.sh"
echo "demo: building ferry in $top/build (a few minutes the first time)"
"$top/tools/build.sh" release
exec "$top/tests/netns-run.sh" /usr/bin/python3 "$top/tools/demo/demo.py" \
  --bin "$top/build" "$@"
