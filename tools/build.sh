#!/usr/bin/env bash
# Configures and builds one tree.  Usage: tools/build.sh [release|asan]
# release -> build/, asan -> build-asan/ (AddressSanitizer + UBSan).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:-release}
case "$kind" in
  release) dir="$top/build"; extra=() ;;
  asan) dir="$top/build-asan"; extra=(-DFERRY_SANITIZE=ON -DFERRY_BENCHMARKS=OFF
                                      -DCMAKE_BUILD_TYPE=Debug) ;;
  *) echo "usage: $0 [release|asan]" >&2; exit 2 ;;
esac
cmake -S "$top" -B "$dir" -G Ninja "${extra[@]}" >/dev/null
cmake --build "$dir" -j "$(nproc)"
