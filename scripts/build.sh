#!/usr/bin/env bash
# Configures and builds speedwins. Usage: scripts/build.sh [build-dir] [extra cmake args...]
# Release, -O3, native ISA by default; ccache when present.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/build}"
shift || true
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
test "${PIPESTATUS[0]}" = 0
