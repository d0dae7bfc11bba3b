#!/usr/bin/env bash
# A client that stops answering (SIGSTOP) is dropped from the round when
# --round-timeout passes; the round completes with the others. When it
# resumes, its late answer is read and dropped, and it takes part again.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 6 --local-epochs 3 \
  --round-timeout 2 --lr 0.02 --out "$WORK/out" --seed 4 > /dev/null 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
wait_for_lines "$WORK/out/metrics.jsonl" 1 120
kill -STOP "${CLIENTS[2]}"
pass "c2 stopped during round 2"
wait_for_lines "$WORK/out/metrics.jsonl" 2 120
kill -CONT "${CLIENTS[2]}"
pass "c2 resumed after round 2"
wait_pid "$server" 240
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $WAIT_RC"; }
wait_clients 30
grep -q "c2 .*no result within the round timeout" "$WORK/server.err" || { cat "$WORK/server.err"; fail "timeout not logged"; }
"$PY" - "$WORK/out/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 6 and all(not r["failed"] for r in rows), rows
assert rows[1]["clients_failed"] == 1 and rows[1]["clients_ok"] == 2, rows[1]
assert rows[1]["seconds"] >= 2, f"round 2 should have waited for the timeout: {rows[1]}"
assert any(r["clients_ok"] == 3 for r in rows[3:]), f"c2 never took part again: {rows}"
PYEOF
pass "test_round_timeout"
