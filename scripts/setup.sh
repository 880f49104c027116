#!/usr/bin/env bash
# Installs, idempotently, every Debian package speedwins needs to build, test and run.
# Safe to run repeatedly: when everything is present it does nothing (no apt-get update).
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache pkg-config
  libdnnl-dev           # GEMM (oneDNN matmul primitive)
  nlohmann-json3-dev    # configs, safetensors headers, results JSON
  libcli11-dev          # the CLI
  libgtest-dev          # tests
  libbenchmark-dev      # micro-benchmarks
)

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
