#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, from a bundle made by
# scripts/gpu-bundle.sh (run from inside the bundle):
#   1. the device tests: every trainer op, a training step and training,
#      and the FedAvg aggregation, against the CPU reference;
#   2. the same tests under compute-sanitizer (memcheck), where it works;
#   3. a federation on loopback: a server aggregating on the GPU and two
#      clients training there; and fedc sim on the GPU, whose model must not
#      depend on --concurrency, with several strategies, SCAFFOLD and DP-SGD;
#   4. the benchmarks: the trainer against PyTorch on the same GPU (cnn and
#      mlp-large, float32, TF32 off on both sides), and FedAvg aggregation of
#      device-resident updates against a device-to-device copy.
# Logs and JSON results go to RESULTS_DIR (default ./gpu-results).
#
#   bash gpu-check.sh [RESULTS_DIR]
#   FEDC_GPU_QUICK=1  smaller benchmarks (a first look)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
res="${1:-$PWD/gpu-results}"
mkdir -p "$res"
py="${PYTHON:-python3}"
# cuBLAS comes from the machine: its CUDA toolkit or PyTorch's wheel.
cublas_dirs="$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | tr '\n' ':')"
wheel_dir="$("$py" -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="$here/lib:${cublas_dirs}${wheel_dir:+$wheel_dir:}${LD_LIBRARY_PATH:-}"
bin="$here/bin"
status=0
step() { echo; echo "== $*"; }
record() { # record NAME RC
  if [[ "$2" == 0 ]]; then echo "PASS $1"; else echo "FAIL $1 (exit $2)"; status=1; fi
}

step "machine"
nvidia-smi -L || true
"$bin/fedc" version
ldd "$bin/test_nn_cuda" | grep -E "cublas|not found" || true

step "device tests"
for t in test_nn_cuda test_fedavg_cuda; do
  "$bin/$t" 2>&1 | tee "$res/$t.log"
  record "$t" "${PIPESTATUS[0]}"
done

step "device tests under compute-sanitizer (memcheck)"
sanitizer="$(command -v compute-sanitizer || true)"
[[ -z "$sanitizer" && -x /usr/local/cuda/bin/compute-sanitizer ]] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
if [[ -n "$sanitizer" ]]; then
  for t in test_nn_cuda test_fedavg_cuda; do
    FEDC_TEST_SMALL=1 "$sanitizer" --tool memcheck --error-exitcode 86 "$bin/$t" > "$res/$t.memcheck.log" 2>&1
    rc=$?
    tail -n 3 "$res/$t.memcheck.log"
    record "$t under memcheck" "$rc"
  done
else
  echo "compute-sanitizer not found: skipped"
fi

step "a federation on the GPU (server aggregates there, clients train there)"
work="$(mktemp -d)"
mkdir -p "$work/full"
"$bin/make_synthetic" "$work/full" 3000 1000 7 0.2 > /dev/null
"$bin/fedc" partition --data "$work/full" --clients 2 --scheme iid --seed 1 --out "$work/parts" > /dev/null
# Over mutual TLS, as a federation runs by default.
"$bin/fedc" certs --out "$work/pki" --clients 2 > /dev/null
pki="$work/pki"
port=$((20000 + RANDOM % 20000))
"$bin/fedc" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 3 --device cuda \
  --test-data "$work/full" --out "$work/out" --cert "$pki/server.pem" --key "$pki/server.key" \
  --ca "$pki/ca.pem" > "$res/federation.log" 2>&1 &
server=$!
# Fixed node ids: each client's training seed derives from its id, so the
# run is the same every time (and the CPU's, to the printed digits).
for i in 0 1; do
  "$bin/fedc" client --server "127.0.0.1:$port" --data "$work/parts/client-00$i" --device cuda --node-id "g$i" \
    --ca "$pki/ca.pem" --cert "$pki/client-00$i.pem" --key "$pki/client-00$i.key" >> "$res/clients.log" 2>&1 &
done
wait "$server"
rc=$?
wait
cat "$res/federation.log"
record "federation with --device cuda" "$rc"

step "fedc sim on the GPU: the same model at --concurrency 1 and 4"
for k in 1 4; do
  "$bin/fedc" sim --data "$work/full" --clients 12 --concurrency "$k" --model cnn --rounds 3 --device cuda \
    --seed 3 --out "$work/sim$k" > "$res/sim.log" 2>&1
  record "fedc sim --device cuda --concurrency $k" "$?"
done
tail -n 4 "$res/sim.log"
cmp "$work/sim1/model.safetensors" "$work/sim4/model.safetensors"
record "fedc sim on the GPU: bit-identical models at concurrency 1 and 4" "$?"
for s in "fedadam" "median" "fedprox --proximal-mu 0.1"; do
  # shellcheck disable=SC2086
  "$bin/fedc" sim --data "$work/full" --clients 7 --min-clients 7 --model mlp --rounds 2 --device cuda \
    --strategy $s --seed 3 --out "$work/strategy" > "$res/strategy.log" 2>&1
  record "fedc sim --device cuda --strategy $s" "$?"
done
# SCAFFOLD's gradient correction and DP-SGD (per-example clipping, noise)
# train with the backend's axpy: each must run, and print its last round.
for run in "scaffold:--strategy scaffold" "dp-sgd:--dp-sgd-clip 1 --dp-sgd-noise-multiplier 1"; do
  name="${run%%:*}"
  # shellcheck disable=SC2086
  "$bin/fedc" sim --data "$work/full" --clients 7 --min-clients 7 --model mlp --rounds 2 --device cuda \
    ${run#*:} --seed 3 --out "$work/$name" > "$res/sim-$name.log" 2>&1
  rc=$?
  last="$(grep '^round' "$res/sim-$name.log" | tail -n 1)"
  echo "$last"
  [[ "$rc" == 0 && "$last" != *accuracy* ]] && rc="no round line"
  record "fedc sim --device cuda ${run#*:}" "$rc"
done
rm -rf "$work"

step "benchmarks"
if [[ "${FEDC_GPU_QUICK:-0}" == 1 ]]; then samples=8192; epochs=2; updates=20; else samples=60000; epochs=3; updates=100; fi
for arch in cnn mlp-large; do
  "$bin/bench_trainer" --arch "$arch" --device cuda --samples "$samples" --epochs "$epochs" --batch 64 --json \
    | tee -a "$res/bench.jsonl"
  "$py" "$here/pytorch_cnn.py" --arch "$arch" --device cuda --samples "$samples" --epochs "$epochs" --batch 64 \
    --json | tee -a "$res/bench.jsonl"
done
"$bin/bench_agg_cuda" --updates "$updates" --numel 16777216 --json | tee -a "$res/bench.jsonl"
record "benchmarks" "$?"

echo
[[ "$status" == 0 ]] && echo "== all GPU checks passed" || echo "== some GPU checks FAILED"
exit "$status"
