#!/usr/bin/env bash
# A client killed with SIGKILL in the middle of a round: that round records
# clients_failed >= 1, and every round still completes with the others.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
# Many local epochs make each round last long enough to kill a client inside it.
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 4 --lr 0.01 \
  --local-epochs 40 --fraction-evaluate 1 --out "$WORK/out" --seed 5 --round-timeout 60 "${SERVER_TLS[@]}" \
  > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
# Wait for a round that all three clients took part in (the server starts
# with two; the third may join a round late under load); the next round
# starts at once and its clients train.
wait_for_sampled "$WORK/out/metrics.jsonl" 3 120
[[ -n "$full" && "$full" -le 3 ]] || fail "no round with all three clients by round 3 (got '$full')"
sleep 0.3
kill -9 "${CLIENTS[2]}"
pass "killed client c2 during round $((full + 1))"
wait_pid "$server" 240; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $rc"; }
unset "CLIENTS[2]"
wait_clients 30
"$PY" - "$WORK/out/metrics.jsonl" "$full" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
k = int(sys.argv[2])  # the killed round is k + 1, rows[k]
assert [r["round"] for r in rows] == [1, 2, 3, 4], rows
for r in rows:
    assert r["failed"] is False, f"round {r['round']} failed: {r}"
assert rows[k]["clients_failed"] >= 1, f"round {k + 1} should count the killed client: {rows[k]}"
assert all(r["clients_ok"] == 2 for r in rows[k + 1:]), rows
print(f"round {k + 1}:", rows[k]["clients_ok"], "ok,", rows[k]["clients_failed"], "failed")
PYEOF
grep -q "c2" "$WORK/server.err" || fail "server did not log the dropped client"
pass "test_client_killed"
