#!/usr/bin/env bash
# The whole test suite from a fresh machine: installs the dependencies,
# builds with warnings as errors, runs every test, then rebuilds the unit
# tests and one federation with AddressSanitizer and UndefinedBehaviorSanitizer
# and runs them too. Where the CUDA toolkit is installed, it also builds the
# CUDA backend (so that a broken GPU build never lands) and runs the unit
# tests and the device tests of that build: without a GPU these check the
# "no usable GPU" errors and skip the GPU comparisons, saying so.
# With clang and libFuzzer installed, the fuzz targets (tests/fuzz) are built
# and each runs over its seed corpus for a fixed number of runs with a fixed
# seed (docs/fuzzing.md).
#   FEDC_SKIP_SANITIZE=1  skip the sanitizer pass (quicker local runs)
#   FEDC_SKIP_CUDA=1      skip the CUDA build
#   FEDC_SKIP_FUZZ=1      skip the fuzz stage
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
if [[ "${FEDC_SKIP_FUZZ:-0}" != "1" ]]; then
  # libFuzzer is there when clang can link a -fsanitize=fuzzer program.
  clang="$(command -v clang || true)"
  fuzz_probe="$(mktemp -d)"
  echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n); int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n ? 0 : 0; }' \
    > "$fuzz_probe/probe.c"
  if [[ -n "$clang" ]] && "$clang" -fsanitize=fuzzer,address,undefined "$fuzz_probe/probe.c" \
       -o "$fuzz_probe/probe" 2>/dev/null; then
    echo "== fuzz (libFuzzer, fixed seed): every target over its corpus"
    FEDC_BUILD_DIR="$root/build-fuzz" CC="$clang" scripts/build.sh -DFEDC_WERROR=ON -DFEDC_FUZZ=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDC_BUILD_TESTS=OFF -DFEDC_BUILD_BENCH=OFF -DFEDC_BUILD_EXAMPLES=OFF
    # target:runs (secagg plays a whole round per input, about 300 a second).
    for tr in frame:20000 message:20000 strategy_state:20000 safetensors:10000 checkpoint:20000 handshake:30000 \
      secagg:2000; do
      t="${tr%%:*}"
      # The corpus is copied, so that the new inputs found stay out of the repository.
      mkdir -p "$fuzz_probe/$t"
      cp "$root/tests/fuzz/corpus/$t/"* "$fuzz_probe/$t/"
      echo "-- fuzz_$t: ${tr##*:} runs"
      if ! (cd "$fuzz_probe" && "$root/build-fuzz/tests/fuzz/fuzz_$t" -runs="${tr##*:}" -seed=1 \
              -artifact_prefix="$fuzz_probe/fuzz_$t-" -print_final_stats=1 "$fuzz_probe/$t" \
              >"$fuzz_probe/fuzz_$t.log" 2>&1); then
        tail -n 60 "$fuzz_probe/fuzz_$t.log" >&2
        echo "fuzz_$t failed: the input is kept in $fuzz_probe (docs/fuzzing.md: what to do with a crash)" >&2
        exit 1
      fi
      grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units' "$fuzz_probe/fuzz_$t.log"
    done
    rm -rf "$fuzz_probe"
  else
    rm -rf "$fuzz_probe"
    echo "== fuzz stage skipped: clang with libFuzzer not found (Debian: clang libclang-rt-14-dev)"
  fi
fi
echo "== all tests passed"
