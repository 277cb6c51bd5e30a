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
  # ferry-modemsim's interactive fidelity test
  picocom
  # fuzz targets (libFuzzer needs clang)
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (sudo $0) to install them" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
