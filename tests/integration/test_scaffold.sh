#!/usr/bin/env bash
# SCAFFOLD with real processes: the server sends its control variate with
# the model, each client keeps its own control variate across rounds. A
# client with --state-dir keeps it in a file, so after a SIGKILL and a
# restart it carries on from the saved one; a client without keeps it in
# memory and says so. The federation still completes.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 2
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 5 --lr 0.02 \
  --local-epochs 3 --strategy scaffold --out "$WORK/out" --seed 5 --round-timeout 60 "${SERVER_TLS[@]}" \
  > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
client() { # client I [FLAGS...]: starts client cI, appending to $WORK/cI.log
  local i="$1"; shift
  client_tls "$i"
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
    "${CLIENT_TLS[@]}" "$@" >> "$WORK/c$i.log" 2>&1 &
  CLIENTS[$i]=$!; PIDS+=($!)
}
CLIENTS=()
client 0
client 1 --state-dir "$WORK/state1"
state="$WORK/state1/scaffold.safetensors"

wait_for_lines "$WORK/out/metrics.jsonl" 1 120
[[ -s "$state" ]] || fail "c1 wrote no control variate after round 1"
cp "$state" "$WORK/state-round1"
wait_for_lines "$WORK/out/metrics.jsonl" 2 120
kill -9 "${CLIENTS[1]}"
wait "${CLIENTS[1]}" 2>/dev/null || true
pass "killed c1 with SIGKILL after round 2"
grep -q "new, starting from zero" "$WORK/c1.log" || { cat "$WORK/c1.log"; fail "c1 did not start from zero"; }
client 1 --state-dir "$WORK/state1"

wait_pid "$server" 240; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $rc"; }
wait_clients 30
grep -q "continuing from the saved one" "$WORK/c1.log" \
  || { cat "$WORK/c1.log"; fail "the restarted c1 did not load its control variate"; }
pass "the restarted client carried on from its saved control variate"
! cmp -s "$state" "$WORK/state-round1" || fail "c1's control variate did not change after round 1"
grep -q "kept in memory only" "$WORK/c0.log" || { cat "$WORK/c0.log"; fail "c0 did not warn about memory-only state"; }
"$PY" - "$WORK/out/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 5, rows
ok = [r for r in rows if not r["failed"]]
assert rows[-1]["failed"] is False and rows[-1]["clients_ok"] == 2, rows[-1]
# The model learns: the synthetic data is separable enough for 0.7.
assert ok[-1]["fed_eval_accuracy"] > 0.7, ok[-1]
print("rounds completed:", len(ok), "final accuracy", ok[-1]["fed_eval_accuracy"])
PYEOF
pass "test_scaffold"
