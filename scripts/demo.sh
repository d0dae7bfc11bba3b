#!/usr/bin/env bash
# The main job: a real federation on this machine. Fashion-MNIST is split
# over 10 clients (Dirichlet, alpha 0.5); a server and 10 client processes
# train the built-in CNN together over TCP on 127.0.0.1 until the global
# model reaches 80% accuracy on the held-out test set (or 40 rounds pass).
# Each client reads only its own directory. The connections are mutual TLS:
# a test PKI (fedc certs) in the output directory gives the server and each
# client its own certificate.
#   FEDC_PORT       port for the server (default 7000)
#   FEDC_OUT        output directory (default out/demo)
#   FEDC_BUILD_DIR  build directory (default build/, as scripts/build.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
port="${FEDC_PORT:-7000}"
out="${FEDC_OUT:-$root/out/demo}"
data=/usr/share/datasets/fashion-mnist
clients=10

scripts/setup-deps.sh
scripts/build.sh -DFEDC_BUILD_TESTS=OFF -DFEDC_BUILD_BENCH=OFF
fedc="${FEDC_BUILD_DIR:-$root/build}/tools/fedc"

mkdir -p "$out/logs"
"$fedc" partition --data "$data" --clients "$clients" --scheme dirichlet --alpha 0.5 --seed 42 \
  --out "$out/clients"

# A test CA, the server's certificate (localhost, 127.0.0.1, ::1) and one
# certificate per client: $out/pki/client-000.pem ... (docs/security.md).
"$fedc" certs --out "$out/pki" --clients "$clients" --force > /dev/null
pki="$out/pki"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "starting the server and $clients clients (client logs in $out/logs/)"
"$fedc" server --listen "127.0.0.1:$port" --model cnn --min-clients "$clients" --rounds 40 \
  --target-accuracy 0.80 --lr 0.05 --momentum 0.9 --batch-size 32 --local-epochs 1 \
  --test-data "$data" --seed 42 --out "$out" \
  --cert "$pki/server.pem" --key "$pki/server.key" --ca "$pki/ca.pem" 2> "$out/logs/server.log" &
server=$!
for ((i = 0; i < clients; i++)); do
  id=$(printf "client-%03d" "$i")
  "$fedc" client --server "127.0.0.1:$port" --data "$out/clients/$id" --node-id "$id" \
    --ca "$pki/ca.pem" --cert "$pki/$id.pem" --key "$pki/$id.key" > "$out/logs/$id.log" 2>&1 &
  pids+=($!)
done
set +e
wait "$server"
rc=$?
set -e
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
if [[ $rc -ne 0 ]]; then
  echo "the server exited with status $rc; its log:" >&2
  tail -n 20 "$out/logs/server.log" >&2
  exit "$rc"
fi
echo "model:   $out/model.safetensors (safetensors: numpy/torch can load it)"
echo "metrics: $out/metrics.jsonl (one JSON object per round)"
