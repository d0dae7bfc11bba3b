#!/usr/bin/env bash
# examples/custom_strategy.c, a strategy written against the public API,
# runs a real federation with three clients (it starts with two, the third
# joins): select_fit rests one client in even rounds once all three are in, aggregate_fit runs once per round and bounds the server's step,
# aggregate_evaluate reports the worst client's accuracy, evaluate scores
# the model on the server's test data, and the state is saved (and
# restored) after every round.
source "$(dirname "$0")/lib.sh"
: "${FEDC_EXAMPLE_STRATEGY:?FEDC_EXAMPLE_STRATEGY must point to custom_strategy}"
make_data "$WORK/data" 3
port=$(free_port)
mkdir -p "$WORK/out"
# The example reads its TLS files from the environment (mutual TLS).
FEDC_TLS_CERT="${SERVER_TLS[1]}" FEDC_TLS_KEY="${SERVER_TLS[3]}" FEDC_TLS_CA="${SERVER_TLS[5]}" \
  "$FEDC_EXAMPLE_STRATEGY" "127.0.0.1:$port" 6 "$WORK/out" "$WORK/data/full" > "$WORK/server.log" 2>&1 &
server=$!; PIDS+=($server)
for i in 0 1 2; do
  client_tls "$i"
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
    "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
  PIDS+=($!)
done
wait_pid "$server" 90
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.log"; fail "custom_strategy exited $WAIT_RC"; }
cat "$WORK/server.log"
[[ $(grep -c "^strategy: round .*step norm" "$WORK/server.log") == 6 ]] || fail "aggregate_fit did not run once per round"
grep -q "round 6: .*state saved (16 bytes, 6 rounds aggregated)" "$WORK/server.log" || fail "state not saved"
[[ $(stat -c %s "$WORK/out/strategy.state") == 16 ]] || fail "no 16-byte strategy.state"
[[ $(wc -l < "$WORK/out/metrics.jsonl") == 6 ]] || fail "metrics.jsonl does not have 6 rounds"
"$PY" - "$WORK/out/metrics.jsonl" "$WORK/server.log" <<'PYEOF'
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
log = open(sys.argv[2]).read()
steps = [(float(m.group(1)), float(m.group(2))) for m in re.finditer(r"step norm ([0-9.]+), scaled by ([0-9.]+)", log)]
assert len(steps) == 6 and all(0 < s <= 1 and n * s <= 0.4001 for n, s in steps), steps
assert any(s < 1 for n, s in steps), f"no step needed bounding: {steps}"
# The server starts with the first two clients; the third joins while the
# first rounds run (when depends on the machine's load). An even round
# with three idle clients rests the first of them.
rests = {int(m.group(1)): int(m.group(2))
         for m in re.finditer(r"^strategy: round (\d+): c0 rests, (\d+) of 3 train", log, re.M)}
sampled = [r["clients_sampled"] for r in rows]
assert rests and set(rests) <= {2, 4, 6}, f"select_fit rested no client in an even round: {rests}"
assert all(sampled[r - 1] == k == 2 for r, k in rests.items()), (rests, sampled)
assert all(s <= 2 for r, s in enumerate(sampled, 1) if r % 2 == 0 and r not in rests), sampled
worst = [float(m.group(1)) for m in re.finditer(r"worst of [23] clients' accuracy ([0-9.]+)", log)]
assert len(worst) == 6 and all(abs(r["fed_eval_accuracy"] - w) < 1e-4 for r, w in zip(rows, worst)), (rows, worst)
assert all(r["central_eval_accuracy"] is not None and 0 <= r["central_eval_accuracy"] <= 1 for r in rows), rows
print("ok: step norms and scales", steps, "; sampled", sampled, "; rests in", sorted(rests),
      "; fed accuracy = the worst client's", worst, "; central", [r["central_eval_accuracy"] for r in rows])
PYEOF
pass "test_example_strategy"
