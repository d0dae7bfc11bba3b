#!/usr/bin/env bash
# A client that stops answering (SIGSTOP) is dropped from the round when
# --round-timeout passes; the round completes with the others. When it
# resumes, its late answer is read and dropped, and it takes part again.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 8 --local-epochs 3 \
  --round-timeout 2 --lr 0.02 --out "$WORK/out" --seed 4 > /dev/null 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
# The server starts with the first two clients; wait for a round that all
# three took part in (the third may join a round or two late under load).
full="" t=0
while [[ -z "$full" ]] && ((t++ < 1200)); do
  full=$("$PY" -c 'import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except (OSError, ValueError):
    rows = []
print(next((str(r["round"]) for r in rows if r["clients_sampled"] == 3), ""))' "$WORK/out/metrics.jsonl")
  [[ -n "$full" ]] || sleep 0.1
done
[[ -n "$full" && "$full" -le 5 ]] || fail "no round with all three clients by round 5 (got '$full')"
kill -STOP "${CLIENTS[2]}"
pass "c2 stopped during round $((full + 1))"
wait_for_lines "$WORK/out/metrics.jsonl" $((full + 1)) 120
kill -CONT "${CLIENTS[2]}"
pass "c2 resumed after round $((full + 1))"
wait_pid "$server" 240
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $WAIT_RC"; }
wait_clients 30
grep -q "c2 .*no result within the round timeout" "$WORK/server.err" || { cat "$WORK/server.err"; fail "timeout not logged"; }
"$PY" - "$WORK/out/metrics.jsonl" "$full" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
k = int(sys.argv[2])  # the stopped round is k + 1, rows[k]
assert len(rows) == 8 and all(not r["failed"] for r in rows), rows
assert rows[k]["clients_failed"] == 1 and rows[k]["clients_ok"] == 2, rows[k]
assert rows[k]["seconds"] >= 2, f"round {k + 1} should have waited for the timeout: {rows[k]}"
assert any(r["clients_ok"] == 3 for r in rows[k + 1:]), f"c2 never took part again: {rows}"
PYEOF
pass "test_round_timeout"
