#!/usr/bin/env bash
# fedc sim runs the real server with virtual clients over an in-memory
# transport. With the same data split, seeds and node ids it must give the
# bit-identical model a federation of real processes on loopback gives, and
# the same model whatever --concurrency.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3          # fedc partition --clients 3 --scheme iid --seed 1
common=(--model mlp --min-clients 3 --rounds 3 --lr 0.02 --momentum 0.9 --seed 5 --quiet)

port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" "${common[@]}" --out "$WORK/real" 2> "$WORK/real.err" &
server=$!; PIDS+=($server)
pids=()
for i in 0 1 2; do
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" \
    --node-id "client-00$i" > "$WORK/r$i.log" 2>&1 &
  pids+=($!); PIDS+=($!)
done
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/real.err"; fail "real federation: server exited $WAIT_RC"; }
for p in "${pids[@]}"; do wait_pid "$p" 30; done
pass "a real federation of 3 processes on loopback ran"

for k in 1 3; do
  "$FEDC_BIN" sim --clients 3 --concurrency "$k" --data "$WORK/data/full" --scheme iid --partition-seed 1 \
    "${common[@]}" --out "$WORK/sim$k" 2> "$WORK/sim$k.err" \
    || { cat "$WORK/sim$k.err"; fail "fedc sim --concurrency $k failed"; }
done
pass "fedc sim ran with --concurrency 1 and 3"

cmp "$WORK/sim1/model.safetensors" "$WORK/sim3/model.safetensors" || fail "sim: the model depends on --concurrency"
pass "sim: bit-identical models for --concurrency 1 and 3"
cmp "$WORK/real/model.safetensors" "$WORK/sim1/model.safetensors" || fail "sim and real processes differ"
pass "sim: bit-identical to the real federation on loopback"
"$PY" - "$WORK/real/metrics.jsonl" "$WORK/sim1/metrics.jsonl" <<'PYEOF'
import json, sys
real = [json.loads(l) for l in open(sys.argv[1])]
sim = [json.loads(l) for l in open(sys.argv[2])]
keys = ["round", "failed", "clients_ok", "train_loss", "fed_eval_loss", "fed_eval_accuracy", "bytes_sent",
        "bytes_received"]
for r, s in zip(real, sim):
    for k in keys:
        assert r[k] == s[k], f"round {r['round']}: {k} real {r[k]} sim {s[k]}"
assert len(real) == len(sim) == 3
PYEOF
pass "sim: the same metrics, bytes on the wire included"

# Bad flags get a message and exit 2.
rc=0; "$FEDC_BIN" sim --rounds 1 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--clients is required" "$WORK/e.txt" || fail "missing --clients: exit $rc"
rc=0; "$FEDC_BIN" sim --clients 3 --scheme odd 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--scheme must be" "$WORK/e.txt" || fail "bad --scheme: exit $rc"
pass "test_sim"
