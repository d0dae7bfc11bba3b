#!/usr/bin/env bash
# A rejected update leaves no trace in the aggregate. A poisoning client
# whose NaN (or out-of-range value) sits in the very last chunk of its update
# takes part in rounds 2 and 3; every chunk before it has already been folded
# when the server finds it. The final model must be bit-identical to that of
# the same federation without the poisoning client.
source "$(dirname "$0")/lib.sh"
: "${FEDC_POISON_CLIENT:?FEDC_POISON_CLIENT must point to poison_client}"
make_data "$WORK/data" 2

# Plaintext (--insecure): poison_client writes raw protocol frames without
# TLS, and this test is about the aggregate, not the transport (test_tls
# covers that); every run, the clean one included, uses the same transport.
run() { # run NAME POISON_MODE|none
  local name="$1" mode="$2" port; port=$(free_port)
  "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 3 --local-epochs 4 \
    --lr 0.02 --fraction-evaluate 0 --seed 9 --out "$WORK/$name" --insecure > /dev/null 2> "$WORK/$name.err" &
  local server=$!; PIDS+=($server)
  local pids=() i
  for i in 0 1; do
    "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
      --insecure > /dev/null 2>&1 &
    pids+=($!); PIDS+=($!)
  done
  if [[ "$mode" != none ]]; then
    # Join once round 1 (c0 and c1 only) is under way, so the poisoning
    # client is sampled from round 2 on.
    for _ in $(seq 200); do grep -q "client c1 joined" "$WORK/$name.err" && grep -q "client c0 joined" "$WORK/$name.err" && break; sleep 0.05; done
    "$FEDC_POISON_CLIENT" "127.0.0.1:$port" zz-poison "$mode" > "$WORK/$name.poison.log" 2>&1 &
    pids+=($!); PIDS+=($!)
  fi
  wait_pid "$server" 120
  [[ "$WAIT_RC" == 0 ]] || { cat "$WORK/$name.err"; fail "run $name: server exited $WAIT_RC"; }
  for i in "${pids[@]}"; do wait_pid "$i" 30; done
}

run clean none
for mode in nan huge; do
  run "$mode" "$mode"
  grep -q "rejected update from zz-poison" "$WORK/$mode.err" || { cat "$WORK/$mode.err"; fail "$mode: no rejection logged"; }
  "$PY" - "$WORK/$mode/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(not r["failed"] for r in rows), rows
assert rows[1]["clients_failed"] == 1 and rows[2]["clients_failed"] == 1, \
    f"the poisoning client must take part in rounds 2 and 3: {rows}"
PYEOF
  cmp "$WORK/clean/model.safetensors" "$WORK/$mode/model.safetensors" \
    || fail "$mode: the rejected update changed the model"
  pass "$mode in the last chunk: rejected, and the model is bit-identical to the clean run"
done
pass "test_reject_no_trace"
