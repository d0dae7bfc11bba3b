#!/usr/bin/env bash
# fedc sim runs the real server with virtual clients over an in-memory
# transport. With the same data split, seeds and node ids it must give the
# bit-identical model a federation of real processes on loopback gives, and
# the same model whatever --concurrency.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3          # fedc partition --clients 3 --scheme iid --seed 1
common=(--model mlp --min-clients 3 --rounds 3 --lr 0.02 --momentum 0.9 --seed 5 --quiet)

port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" "${common[@]}" --out "$WORK/real" "${SERVER_TLS[@]}" 2> "$WORK/real.err" &
server=$!; PIDS+=($server)
pids=()
for i in 0 1 2; do
  client_tls "$i"
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" \
    --node-id "client-00$i" "${CLIENT_TLS[@]}" > "$WORK/r$i.log" 2>&1 &
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

# Faults. Clients that vanish (before answering, or halfway through sending
# an update, whose folded half must be taken back out) are counted as failed
# and connect again; the outcome still does not depend on --concurrency.
for k in 1 3; do
  "$FEDC_BIN" sim --clients 12 --concurrency "$k" --data "$WORK/data/full" --scheme iid --min-samples 5 \
    --model mlp --min-clients 2 --rounds 4 --seed 8 --dropout-rate 0.3 --quiet --out "$WORK/drop$k" \
    2> "$WORK/drop$k.err" || { cat "$WORK/drop$k.err"; fail "sim with dropouts failed"; }
done
cmp "$WORK/drop1/model.safetensors" "$WORK/drop3/model.safetensors" || fail "dropouts: the model depends on --concurrency"
"$PY" - "$WORK/drop1/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4 and all(not r["failed"] for r in rows), rows
failed = sum(r["clients_failed"] for r in rows)
assert 3 <= failed <= 30, f"with a 30% dropout rate, {failed} failures in 4 x 12 requests"
assert rows[-1]["clients_sampled"] == 12, f"clients that vanished must come back: {rows[-1]}"
PYEOF
pass "dropouts: counted as failures, clients come back, same model for --concurrency 1 and 3"

# Stragglers later than the round timeout are counted as failed; their late
# answers are dropped and the rounds complete.
"$FEDC_BIN" sim --clients 12 --data "$WORK/data/full" --scheme iid --min-samples 5 --model mlp --min-clients 2 \
  --rounds 3 --seed 8 --straggler-rate 0.4 --straggler-delay 1.5 --round-timeout 1 --quiet --out "$WORK/strag" \
  2> "$WORK/strag.err" || { cat "$WORK/strag.err"; fail "sim with stragglers failed"; }
"$PY" - "$WORK/strag/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 3 and all(not r["failed"] for r in rows), rows
assert sum(r["clients_failed"] for r in rows) >= 1, rows
assert rows[0]["seconds"] >= 1, f"round 1 should have waited for the timeout: {rows[0]}"
PYEOF
pass "stragglers: counted as failures after the round timeout"

# More clients than examples: with --scheme sample each of 60 clients draws
# 6 of a dataset of 40; the outcome still does not depend on --concurrency.
mkdir -p "$WORK/tiny"
"$FEDC_MAKE_SYNTHETIC" "$WORK/tiny" 40 20 3 0.3
for k in 1 3; do
  "$FEDC_BIN" sim --clients 60 --concurrency "$k" --data "$WORK/tiny" --scheme sample --examples-per-client 6 \
    --min-samples 6 --model mlp --min-clients 5 --fraction-fit 0.2 --rounds 2 --seed 4 --quiet \
    --out "$WORK/sample$k" 2> "$WORK/sample$k.err" || { cat "$WORK/sample$k.err"; fail "sim --scheme sample failed"; }
done
cmp "$WORK/sample1/model.safetensors" "$WORK/sample3/model.safetensors" || fail "sample: the model depends on --concurrency"
"$PY" - "$WORK/sample1/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2 and all(r["clients_sampled"] == 12 and r["clients_ok"] == 12 for r in rows), rows
PYEOF
pass "sample: 60 clients of a 40-example dataset, the same model for --concurrency 1 and 3"

# Bad flags get a message and exit 2.
rc=0; "$FEDC_BIN" sim --rounds 1 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--clients is required" "$WORK/e.txt" || fail "missing --clients: exit $rc"
rc=0; "$FEDC_BIN" sim --clients 3 --scheme odd 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--scheme must be" "$WORK/e.txt" || fail "bad --scheme: exit $rc"
rc=0; "$FEDC_BIN" sim --clients 3 --scheme sample 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--scheme sample needs --examples-per-client" "$WORK/e.txt" || fail "sample without S: exit $rc"
rc=0; "$FEDC_BIN" sim --clients 3 --examples-per-client 5 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "--examples-per-client applies only to --scheme sample" "$WORK/e.txt" \
  || fail "--examples-per-client with iid: exit $rc"
rc=0; "$FEDC_BIN" sim --clients 3 --data "$WORK/tiny" --scheme sample --examples-per-client 41 2> "$WORK/e.txt" || rc=$?
[[ $rc == 2 ]] && grep -q -- "cannot draw 41 distinct examples per client from a dataset of 40" "$WORK/e.txt" \
  || fail "--examples-per-client above the dataset: exit $rc"
pass "test_sim"
