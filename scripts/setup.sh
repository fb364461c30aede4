#!/usr/bin/env bash
# Installs the Debian packages loracpp needs (when missing) and builds it.
#   scripts/setup.sh              Release build in build/ (the `lora` binary is build/lora)
#   scripts/setup.sh --sanitize   ASan+UBSan build in build-sanitize/
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config
  libopenblas-dev libopenblas0-openmp nlohmann-json3-dev libcli11-dev libspdlog-dev
  libgtest-dev libgmock-dev libbenchmark-dev libpcre2-dev libicu-dev libdnnl-dev
  python3 python3-torch python3-numpy)
# Data-parallel training across processes and machines (mpirun, and MPI for the build).
packages+=(openmpi-bin libopenmpi-dev)
packages+=(libcpp-httplib-dev)  # `lora serve`'s HTTP server
# Test-only: the real clients `lora serve` is tested with (the openai npm package, headless Chromium).
# A node that already brings its own npm (NodeSource's) is kept: Debian's npm conflicts with it.
test_packages=(chromium)
command -v node >/dev/null || test_packages+=(nodejs)
command -v npm >/dev/null || test_packages+=(npm)
packages+=("${test_packages[@]}")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  build_dir=build-sanitize
  cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORA_SANITIZE=ON -DLORA_BENCH=OFF)
fi
cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"

# Test-only: the npm clients of tests/clients (pinned by its package-lock.json).
if [ ! -d tests/clients/node_modules ] || [ tests/clients/package-lock.json -nt tests/clients/node_modules ]; then
  (cd tests/clients && npm ci --no-audit --no-fund)
fi
# Test-only: llama.cpp's prebuilt CPU binaries, pinned by scripts/llama_cpp/package-lock.json.
if [ ! -d scripts/llama_cpp/node_modules/node-llama-cpp ]; then
  (cd scripts/llama_cpp && npm ci --ignore-scripts --no-audit --no-fund >/dev/null) ||
    echo "setup: npm ci in scripts/llama_cpp failed; the llama.cpp comparisons will skip"
fi
