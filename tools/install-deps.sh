#!/usr/bin/env bash
# Installs every Debian package ferry needs to build, test and run its demo.
# Idempotent; run as root (or through sudo).  Packages already present are
# left alone, so a second run is quick and needs no network.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ pkg-config
  libboost1.81-dev libboost-program-options1.81-dev
  liblmdb-dev libserialport-dev libzstd-dev libssl-dev
  libgtest-dev libgmock-dev googletest
  # run-time helpers and tools the tests drive
  lmdb-utils openssl socat ppp python3 python3-serial swaks tmux
  groff-base iproute2 util-linux procps
  curl  # a POP3 client for tests/gateway/pop3_e2e.py
  # ferry-modemsim's interactive fidelity test
  picocom
  # fuzz targets (libFuzzer needs clang)
  clang libclang-rt-14-dev
  # real MTAs for tests/gateway/e2e/mta_interop_test.py and the benchmarks:
  # Postfix (installed without a system instance, see below) and the
  # libraries of Exim, which is only unpacked (see below)
  postfix libidn12
  # a real POP3 server (the provider's mailbox) for
  # tests/gateway/e2e/pop3_fetch_test.cc; no system instance is started
  dovecot-core dovecot-pop3d
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

# Exim 4 is the one Debian MTA whose SMTP client sends BDAT (Postfix's
# does not), but its package conflicts with postfix (both provide
# mail-transport-agent).  So exim4-daemon-light is only unpacked here, the
# tests run the binary with their own config (exim_path) as the
# Debian-exim user, and nothing of it is started or registered.
exim_root=/usr/local/lib/ferry/exim4
exim_ok() {
  [[ -x $exim_root/usr/sbin/exim4 ]] && getent passwd Debian-exim >/dev/null
}

if ((${#missing[@]} == 0)) && exim_ok; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (sudo $0) to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
updated=""
if ((${#missing[@]} > 0)); then
  echo "install-deps: installing ${missing[*]}"
  # Postfix must come without a system instance and without a port-25
  # listener: "No configuration" in debconf, and a policy-rc.d that
  # forbids starting daemons during the install (any existing policy is
  # put back afterwards).  Tests run private loopback-only instances.
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [[ -e $policy ]]; then
    saved=$(mktemp)
    cp -p "$policy" "$saved"
  fi
  restore_policy() {
    if [[ -n $saved ]]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  echo "postfix postfix/main_mailer_type select No configuration" |
    debconf-set-selections
  apt-get update -q
  updated=yes
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  restore_policy
  trap - EXIT
fi

if ! exim_ok; then
  echo "install-deps: unpacking exim4-daemon-light into $exim_root"
  getent passwd Debian-exim >/dev/null ||
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --user-group Debian-exim
  [[ -n $updated ]] || apt-get update -q
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt-get download runs as _apt
  (cd "$tmp" && apt-get download exim4-daemon-light)
  rm -rf "$exim_root"
  mkdir -p "$exim_root"
  dpkg-deb -x "$tmp"/exim4-daemon-light_*.deb "$exim_root"
  rm -rf "$tmp"
fi
