#!/usr/bin/env bash
# Configures and builds fedc into build/ (or $FEDC_BUILD_DIR). Extra arguments
# go to cmake's configure step, e.g. -DFEDC_SANITIZE=ON.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FEDC_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
