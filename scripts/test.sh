#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs the dependencies,
# builds with warnings as errors, runs every test, then rebuilds the unit
# tests and one federation with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs them too.
#   FEDC_SKIP_SANITIZE=1  skip the sanitizer pass (quicker local runs)
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
echo "== all tests passed"
