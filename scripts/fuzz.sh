#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, build-fuzz/) and runs each for SECONDS on its
# seed corpus (fuzz/corpus/<target>/; new inputs go to build-fuzz/corpus/<target>/, not the repo).
# Usage: scripts/fuzz.sh SECONDS [target...]   (default: every target; SW_FUZZ_JOBS=N parallel runs)
# Exit status: 0 when no target found anything; 1 otherwise (the crashing input is in build-fuzz/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:?usage: scripts/fuzz.sh SECONDS [target...]}"
shift
targets=("$@")
((${#targets[@]})) || targets=(fuzz_safetensors fuzz_checkpoint fuzz_model_config fuzz_tokenizer fuzz_cli)
dir="${SW_FUZZ_DIR:-$root/build-fuzz}"
cxx="$(command -v clang++ || command -v clang++-14)"
cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DSW_FUZZ=ON -DSW_BUILD_TESTS=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)" --target "${targets[@]}" 2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
test "${PIPESTATUS[0]}" = 0
status=0
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
  echo "== $t: ${seconds}s =="
  # detect_leaks=0: oneDNN and OpenMP keep allocations until exit (as in scripts/test.sh).
  if ! (cd "$dir/artifacts/$t" && ASAN_OPTIONS=detect_leaks=0 OMP_NUM_THREADS=1 \
        "$dir/$t" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
        "$dir/corpus/$t" "$root/fuzz/corpus/$t" 2>"$dir/$t.log"); then
    echo "$t: FOUND A FAILURE (input and log in $dir/artifacts/$t, $dir/$t.log)"; tail -30 "$dir/$t.log"; status=1
  fi
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|cov: ' "$dir/$t.log" | tail -3 || true
done
exit "$status"
