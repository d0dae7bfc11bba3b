#!/usr/bin/env bash
# Two runs with the same seed give bit-identical models, however the clients
# are scheduled (they start in a different order with different delays); a
# different seed gives a different model.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3

run() { # run NAME SEED ORDER...
  local name="$1" seed="$2"; shift 2
  local port; port=$(free_port)
  "$FEDC_BIN" server --listen "127.0.0.1:$port" --model cnn --min-clients 3 --rounds 2 --lr 0.05 \
    --out "$WORK/$name" --seed "$seed" --fraction-evaluate 0 "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/$name.err" &
  local server=$!; PIDS+=($server)
  local pids=() i
  for i in "$@"; do
    client_tls "$i"
    "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
      "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
    pids+=($!); PIDS+=($!)
    sleep "0.$((RANDOM % 4))"
  done
  wait_pid "$server" 240; local rc=$WAIT_RC
  [[ "$rc" == 0 ]] || { cat "$WORK/$name.err"; fail "run $name: server exited $rc"; }
  for i in "${pids[@]}"; do wait_pid "$i" 30; done
}
run a 11 0 1 2
run b 11 2 0 1
run c 12 1 2 0
cmp "$WORK/a/model.safetensors" "$WORK/b/model.safetensors" || fail "same seed, different models"
pass "same seed: bit-identical models"
if cmp -s "$WORK/a/model.safetensors" "$WORK/c/model.safetensors"; then fail "different seeds, same model"; fi
pass "different seed: different model"
pass "test_determinism"
