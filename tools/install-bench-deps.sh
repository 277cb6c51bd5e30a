#!/usr/bin/env bash
# Installs what the benchmarks need.  Postfix (its smtp-source load
# generator, and the peer tests/bench/smtp_ingest.sh measures ferryd
# against) is now in tools/install-deps.sh, which installs it with "No
# configuration" and a policy-rc.d that forbids starting daemons, so no
# system MTA appears on port 25; the benchmark runs private loopback-only
# instances under /tmp/peers.  This script runs install-deps.sh and checks
# that the benchmark's tools are there.  Idempotent; run as root.
set -euo pipefail

"$(dirname "$0")/install-deps.sh"
if ! command -v smtp-source >/dev/null || ! command -v postfix >/dev/null
then
  echo "install-bench-deps: postfix's smtp-source is missing" >&2
  exit 1
fi
echo "install-bench-deps: $(postconf -d mail_version)"
