#!/usr/bin/env bash
# A client that stops answering (SIGSTOP) is dropped from the round when
# --round-timeout passes; the round completes with the others. When it
# resumes, its late answer is read and dropped, and it takes part again.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 10 --local-epochs 20 \
  --round-timeout 5 --lr 0.02 --out "$WORK/out" --seed 4 "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
# The server starts with the first two clients; wait for a round that all
# three took part in (the third may join a few rounds late under load).
wait_for_sampled "$WORK/out/metrics.jsonl" 3 120
[[ -n "$full" && "$full" -le 7 ]] || fail "no round with all three clients by round 7 (got '$full')"
# Stopped after that, c2 misses the next request it is sent: the training
# of the next round (20 local epochs make it last far longer than the
# evaluation and this script's reaction) waits for the timeout, and the
# server says so.
kill -STOP "${CLIENTS[2]}"
pass "c2 stopped after round $full"
t=0
until grep -q "c2 .*no result within the round timeout" "$WORK/server.err"; do
  ((t++ < 600)) || { cat "$WORK/server.err"; fail "timeout not logged"; }
  sleep 0.1
done
kill -CONT "${CLIENTS[2]}"
pass "c2 resumed after the server timed it out"
wait_pid "$server" 240
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $WAIT_RC"; }
wait_clients 30
"$PY" - "$WORK/out/metrics.jsonl" "$full" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
full = int(sys.argv[2])
assert len(rows) == 10 and all(not r["failed"] for r in rows), rows
# The first round after `full` that lost a client lost c2 (a loaded
# machine may make a healthy client miss a deadline too, before or after).
timed_out = [i for i, r in enumerate(rows) if i >= full and r["clients_failed"] >= 1]
assert timed_out, f"want a round that lost c2, after round {full}: {rows}"
k = timed_out[0]
assert rows[k]["clients_ok"] >= 1 and rows[k]["clients_ok"] + rows[k]["clients_failed"] == 3, rows[k]
# The loop's clock, which the timeout counts on, may lag the round's start by a few ms.
assert rows[k]["seconds"] >= 4.9, f"round {k + 1} should have waited for the timeout: {rows[k]}"
assert any(r["clients_ok"] == 3 for r in rows[k + 1:]), f"c2 never took part again: {rows}"
print(f"ok: round {k + 1} lost c2 after {rows[k]['seconds']:.1f} s; c2 took part again later")
PYEOF
pass "test_round_timeout"
