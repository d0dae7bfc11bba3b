#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs the dependencies,
# builds with warnings as errors, runs every test, then rebuilds the unit
# tests and one federation with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs them too. Where the CUDA toolkit is installed, it also builds the
# CUDA backend (so that a broken GPU build never lands) and runs the unit
# tests and the device tests of that build: without a GPU these check the
# "no usable GPU" errors and skip the GPU comparisons, saying so.
#   FEDC_SKIP_SANITIZE=1  skip the sanitizer pass (quicker local runs)
#   FEDC_SKIP_CUDA=1      skip the CUDA build
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

scripts/setup-deps.sh

echo "== build (warnings are errors)"
FEDC_BUILD_DIR="$root/build" scripts/build.sh -DFEDC_WERROR=ON -DFEDC_SANITIZE=OFF \
  -DFEDC_BUILD_TESTS=ON -DFEDC_BUILD_BENCH=ON -DFEDC_BUILD_EXAMPLES=ON
echo "== tests"
ctest --test-dir "$root/build" -j "$jobs" --output-on-failure --timeout 600

if [[ "${FEDC_SKIP_SANITIZE:-0}" != "1" ]]; then
  echo "== sanitizer build (ASan + UBSan): unit tests and one federation"
  FEDC_BUILD_DIR="$root/build-sanitize" scripts/build.sh -DFEDC_WERROR=ON -DFEDC_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDC_BUILD_TESTS=ON -DFEDC_BUILD_BENCH=OFF -DFEDC_BUILD_EXAMPLES=OFF
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$root/build-sanitize" -j "$jobs" --output-on-failure -L 'unit|sanitize' --timeout 900
fi
if [[ "${FEDC_SKIP_CUDA:-0}" != "1" ]]; then
  nvcc="$(command -v nvcc || true)"
  [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
  if [[ -n "$nvcc" ]]; then
    echo "== CUDA build (-DFEDC_CUDA=ON, $nvcc): unit and device tests"
    FEDC_BUILD_DIR="$root/build-cuda" scripts/build.sh -DFEDC_WERROR=ON -DFEDC_CUDA=ON \
      -DCMAKE_CUDA_COMPILER="$nvcc" -DFEDC_BUILD_TESTS=ON -DFEDC_BUILD_BENCH=ON -DFEDC_BUILD_EXAMPLES=OFF
    ctest --test-dir "$root/build-cuda" -j "$jobs" --output-on-failure -L 'unit|cuda' --timeout 600
  else
    echo "== CUDA build skipped: no CUDA toolkit (nvcc) on PATH or in /usr/local/cuda"
  fi
fi
echo "== all tests passed"
