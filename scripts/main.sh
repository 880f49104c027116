#!/usr/bin/env bash
# The main job on its embedded default: set up, build, then run `speedwins bench` (the machine's
# GEMM and bandwidth ceilings and the op table's throughput). Extra arguments go to the command.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
bash "$root/scripts/fetch_brown.sh" || echo "note: Brown corpus unavailable; the main job uses synthetic text"
bash "$root/scripts/build.sh" "$root/build"
mkdir -p "$root/out"
exec "$root/build/speedwins" bench --ops --out "$root/out/bench.json" "$@"
