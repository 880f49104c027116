#!/usr/bin/env bash
# Set up, build, run every test (ctest, including the slow end-to-end label), then build the core
# with AddressSanitizer + UndefinedBehaviorSanitizer and run the core and op tests under it.
# SW_SKIP_SANITIZE=1 skips the sanitizer pass (quick local runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" test
bash "$root/scripts/fetch_brown.sh" || echo "note: Brown corpus unavailable; tests that need it use synthetic text"
bash "$root/scripts/build.sh" "$root/build"
(cd "$root/build" && ctest --output-on-failure)
if [ "${SW_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== sanitizer build (ASan + UBSan): core and op tests =="
  cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSW_SANITIZE=ON >/dev/null
  cmake --build "$root/build-asan" -j "$(nproc)" --target tensor_test gemm_test autograd_test op_table_test ops_test \
    2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
  # oneDNN's JIT allocator and OpenMP's runtime keep memory until exit; leaks are not what we check here.
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -L 'core|ops')
fi
# ---- reliability (issue 15): the robustness suite under ASan + UBSan, then each fuzz target briefly ----
if [ "${SW_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== robustness suite (crafted inputs through the CLI) under ASan + UBSan =="
  # Every test in tests/robustness/ must be built here: ctest -L robustness runs them all.
  robustness_targets=$(cd "$root/tests/robustness" && ls *_test.cpp | sed 's/\.cpp$//')
  cmake --build "$root/build-asan" -j "$(nproc)" --target speedwins_cli $robustness_targets \
    2>&1 | grep -vE '^\[ *[0-9]+%\]' || true
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -L robustness)
  echo "== fuzzing: each libFuzzer target for ${SW_FUZZ_SECONDS:-15}s =="
  bash "$root/scripts/fuzz.sh" "${SW_FUZZ_SECONDS:-15}"
fi
# ---- end reliability ----
