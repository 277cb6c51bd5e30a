#!/usr/bin/env bash
# Installs what the benchmarks need beyond tools/install-deps.sh: Postfix,
# for its smtp-source load generator and as the peer that
# tests/bench/smtp_ingest.sh measures ferryd against.  Only the benchmark
# needs it; tests never do.
#
# Postfix is installed with "No configuration" and with a policy-rc.d that
# forbids starting daemons, so no system MTA appears on port 25; the
# benchmark runs private loopback-only instances under /tmp/peers.
# Idempotent; run as root.
set -euo pipefail

if command -v smtp-source >/dev/null && command -v postfix >/dev/null; then
  echo "install-bench-deps: postfix present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-bench-deps: run as root (sudo $0)" >&2
  exit 1
fi

# Keep apt from starting the system instance, restoring any policy after.
policy=/usr/sbin/policy-rc.d
saved=""
if [[ -e $policy ]]; then
  saved=$(mktemp)
  cp -p "$policy" "$saved"
fi
restore() {
  if [[ -n $saved ]]; then
    mv -f "$saved" "$policy"
  else
    rm -f "$policy"
  fi
}
trap restore EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

echo "postfix postfix/main_mailer_type select No configuration" |
  debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends postfix
echo "install-bench-deps: $(postconf -d mail_version)"
