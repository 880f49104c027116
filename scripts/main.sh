#!/usr/bin/env bash
# The main job on its embedded default: set up, build, then run the arena (every registered small
# preset trained on the Brown corpus with the same budget, then measured: quality, MQAR recall,
# throughput, memory), writing out/arena/{results.json,report.html}. Extra arguments go to the
# arena (e.g. --budget 0.3 for a quicker run, --presets a,b).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
bash "$root/scripts/fetch_brown.sh" || echo "note: Brown corpus unavailable; the main job uses synthetic text"
bash "$root/scripts/build.sh" "$root/build"
mkdir -p "$root/out"
exec "$root/build/speedwins" arena --out "$root/out/arena" "$@"
