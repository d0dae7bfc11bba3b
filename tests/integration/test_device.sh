#!/usr/bin/env bash
# --device: malformed values are usage errors; a GPU that cannot be used is
# a clear error before anything else happens (never a silent CPU run); and
# where a GPU is usable, a federation runs with the server aggregating and a
# client training on it next to a CPU client.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 2

part="$WORK/data/parts/client-000"
client_tls 0
client=("$FEDC_BIN" client --server 127.0.0.1:1 --data "$part" "${CLIENT_TLS[@]}")
expect 2 "unknown device 'tpu'" "${client[@]}" --device tpu
expect 2 "after 'cuda:' must be a number" "${client[@]}" --device cuda:x
expect 2 "unknown device 'gpu'" "$FEDC_BIN" server --device gpu --out "$WORK/o" "${SERVER_TLS[@]}"
expect 2 "unknown device 'cuda0'" "$FEDC_BIN" sim --data "$WORK/data/full" --clients 2 --device cuda0 --out "$WORK/o"

version="$("$FEDC_BIN" version)"
echo "$version"
if grep -q "cuda: not built" <<< "$version"; then
  why="this build of fedc has no CUDA backend"
elif grep -q "cuda:0 is" <<< "$version"; then
  why=""
else
  why="no usable GPU"
fi
# A GPU index that no machine has is refused on every build.
expect 1 "cuda:1023" "${client[@]}" --device cuda:1023

if [[ -n "$why" ]]; then
  expect 1 "cuda:0: $why" "${client[@]}" --device cuda
  expect 1 "cuda:0: $why" "$FEDC_BIN" server --device cuda:0 --out "$WORK/o" "${SERVER_TLS[@]}"
  expect 1 "cuda:0: $why" "$FEDC_BIN" sim --data "$WORK/data/full" --clients 2 --device cuda --out "$WORK/o"
  echo "SKIP: the GPU federation ($why)"
  exit 0
fi

# A GPU is usable: the server sums on it, one client trains on it, one on the CPU.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 3 --device cuda \
  --test-data "$WORK/data/full" --out "$WORK/out" "${SERVER_TLS[@]}" > "$WORK/server.log" 2>&1 &
server=$!; PIDS+=($server)
client_tls 0
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-000" --device cuda \
  "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
PIDS+=($!)
client_tls 1
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-001" "${CLIENT_TLS[@]}" \
  > /dev/null 2>&1 &
PIDS+=($!)
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.log"; fail "the GPU federation exited $WAIT_RC"; }
pass "a federation with the server and a client on the GPU"
