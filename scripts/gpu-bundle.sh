#!/usr/bin/env bash
# Builds the CUDA backend here (a machine with the CUDA toolkit, GPU or not)
# and packs what a GPU machine needs to test and benchmark it into one
# folder: the test and benchmark programs, the fedc program, the shared
# libraries they need that a GPU machine with only CUDA, CMake and PyTorch
# lacks (protobuf-c, OpenBLAS, libsodium, ...), the PyTorch reference and
# scripts/gpu-check.sh. On the GPU machine: `bash DIR/gpu-check.sh OUTDIR`.
#
#   scripts/gpu-bundle.sh [DIR]     (default build-gpu-bundle)
#
# The CUDA runtime is linked statically; cuBLAS and the driver are taken
# from the GPU machine (its CUDA toolkit, or PyTorch's nvidia-cublas wheel).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/build-gpu-bundle}"
build="${FEDC_BUILD_DIR:-$root/build-cuda-bundle}"
nvcc="$(command -v nvcc || true)"
[[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
[[ -n "$nvcc" ]] || { echo "gpu-bundle: no CUDA toolkit (nvcc) found" >&2; exit 1; }

# MPI stays out: the bundle runs no MPI program and its libraries are large.
FEDC_BUILD_DIR="$build" "$root/scripts/build.sh" -DFEDC_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" -DFEDC_MPI=OFF \
  -DFEDC_WERROR=ON -DFEDC_BUILD_TESTS=ON -DFEDC_BUILD_BENCH=ON -DFEDC_BUILD_EXAMPLES=OFF

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
progs=(tools/fedc tests/test_nn_cuda tests/test_fedavg_cuda tests/make_synthetic
       bench/bench_trainer bench/bench_agg_cuda)
for p in "${progs[@]}"; do
  [[ -x "$build/$p" ]] || { echo "gpu-bundle: $build/$p was not built" >&2; exit 1; }
  cp "$build/$p" "$out/bin/"
done
cp -L "$build"/libfedc.so.0 "$out/lib/"
# Every shared library the programs load, except the C runtime and what the
# GPU machine brings itself (driver, cuBLAS).
for p in "$out"/bin/* "$out"/lib/libfedc.so.0; do ldd "$p"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libgcc_s|libstdc\+\+|libcuda|libcublas|libcublasLt)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp "$root/bench/pytorch_cnn.py" "$root/scripts/gpu-check.sh" "$out/"
du -sh "$out"
echo "bundle in $out: run 'bash $out/gpu-check.sh RESULTS_DIR' on a GPU machine"
