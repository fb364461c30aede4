#!/usr/bin/env bash
# Installs the Debian packages loracpp needs (when missing) and builds it.
#   scripts/setup.sh              the `lora` binary alone (build/lora), Release
#   scripts/setup.sh --test       also the tests and benchmarks, with their packages (GoogleTest,
#                                 Google Benchmark, python3-torch and numpy for the references,
#                                 Chromium and the npm clients for `lora serve`'s tests)
#   scripts/setup.sh --sanitize   the tests under ASan+UBSan in build-sanitize/ (implies --test)
#   scripts/setup.sh --python     also python3 and numpy (scripts/make_random_model.py)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config
  libopenblas-dev libopenblas0-openmp nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
  libpcre2-dev libicu-dev libdnnl-dev)
# Data-parallel training across processes and machines (mpirun, and MPI for the build).
packages+=(openmpi-bin libopenmpi-dev)
packages+=(libcpp-httplib-dev) # `lora serve`'s HTTP server
# Only the tests, benchmarks and reference scripts need these: GoogleTest, Google Benchmark, torch
# and numpy for the references, TCMalloc for the PyTorch baseline (scripts/bench_train.py), and
# the real clients `lora serve` is tested with (the openai npm package, headless Chromium). A node
# that already brings its own npm (NodeSource's) is kept: Debian's npm conflicts with it.
test_packages=(libgtest-dev libgmock-dev libbenchmark-dev clang-format python3 python3-torch python3-numpy
  libgoogle-perftools4 chromium)
command -v node >/dev/null || test_packages+=(nodejs)
command -v npm >/dev/null || test_packages+=(npm)

build_dir=build
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DLORA_BENCH=OFF)
tests=false
for arg in "$@"; do
  case "$arg" in
    --test)
      tests=true
      cmake_args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DLORA_BENCH=ON)
      ;;
    --sanitize)
      tests=true
      build_dir=build-sanitize
      cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLORA_SANITIZE=ON -DBUILD_TESTING=ON
        -DLORA_BENCH=OFF)
      ;;
    --python) packages+=(python3 python3-numpy) ;;
    *)
      echo "setup: unknown option $arg (see the top of $0)" >&2
      exit 2
      ;;
  esac
done
$tests && packages+=("${test_packages[@]}")

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

cmake -S . -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"

# Test-only: the npm clients of tests/clients (pinned by its package-lock.json).
if $tests && { [ ! -d tests/clients/node_modules ] ||
  [ tests/clients/package-lock.json -nt tests/clients/node_modules ]; }; then
  (cd tests/clients && npm ci --no-audit --no-fund)
fi
# Test-only: llama.cpp's prebuilt CPU binaries, pinned by scripts/llama_cpp/package-lock.json.
if [ ! -d scripts/llama_cpp/node_modules/node-llama-cpp ]; then
  (cd scripts/llama_cpp && npm ci --ignore-scripts --no-audit --no-fund >/dev/null) ||
    echo "setup: npm ci in scripts/llama_cpp failed; the llama.cpp comparisons will skip"
fi
