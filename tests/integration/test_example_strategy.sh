#!/usr/bin/env bash
# examples/custom_strategy.c, a strategy written against the public API,
# runs a real federation: aggregate_fit runs once per round and bounds the
# server's step, and the state is saved (and restored) after every round.
source "$(dirname "$0")/lib.sh"
: "${FEDC_EXAMPLE_STRATEGY:?FEDC_EXAMPLE_STRATEGY must point to custom_strategy}"
make_data "$WORK/data" 2
port=$(free_port)
mkdir -p "$WORK/out"
"$FEDC_EXAMPLE_STRATEGY" "127.0.0.1:$port" 3 "$WORK/out" > "$WORK/server.log" 2>&1 &
server=$!; PIDS+=($server)
for i in 0 1; do
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" > /dev/null 2>&1 &
  PIDS+=($!)
done
wait_pid "$server" 90
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.log"; fail "custom_strategy exited $WAIT_RC"; }
cat "$WORK/server.log"
[[ $(grep -c "^strategy: round" "$WORK/server.log") == 3 ]] || fail "aggregate_fit did not run once per round"
grep -q "round 3: .*state saved (16 bytes, 3 rounds aggregated)" "$WORK/server.log" || fail "state not saved"
[[ $(stat -c %s "$WORK/out/strategy.state") == 16 ]] || fail "no 16-byte strategy.state"
"$PY" - "$WORK/server.log" <<'PYEOF'
import re, sys
steps = [(float(m.group(1)), float(m.group(2)))
         for m in re.finditer(r"step norm ([0-9.]+), scaled by ([0-9.]+)", open(sys.argv[1]).read())]
assert len(steps) == 3 and all(0 < s <= 1 and n * s <= 0.7501 for n, s in steps), steps
assert any(s < 1 for n, s in steps), f"no step needed bounding: {steps}"
print("ok: (step norm, scale) by round:", steps)
PYEOF
[[ $(wc -l < "$WORK/out/metrics.jsonl") == 3 ]] || fail "metrics.jsonl does not have 3 rounds"
pass "test_example_strategy"
