#!/usr/bin/env bash
# Clients that come and go (docs/security.md, "Connections"): a second
# connection with a node id already connected replaces the first (the
# newest wins: a client reconnecting after its old connection went silent
# must not wait for the server to notice), the replaced connection is told
# why, and the federation carries on with the new one. Plaintext: this is
# about node ids, not TLS (test_tls.sh). The server waits for 3 clients, so
# no round runs while the twins swap: the old connection is idle, as a
# silent one would be (a connection replaced in the middle of its own
# training may find the socket closed only when it answers, and reconnect).
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 3 --rounds 3 --local-epochs 20 \
  --out "$WORK/out" --insecure > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
client() { # client NODE_ID PART LOG: a client of data part PART, its output in LOG.log
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$2" --node-id "$1" --insecure \
    > "$WORK/$3.log" 2>&1 &
  PIDS+=($!)
}
client other 1 other; other=$!
client twin 0 old; old=$!
# The first twin is in the federation before the second one connects.
waited=0
until grep -q "client twin joined" "$WORK/server.err"; do
  sleep 0.05; waited=$((waited + 1)); ((waited < 600)) || fail "the first twin never joined"
done
client twin 0 new; new=$!
wait_pid "$old" 60
[[ "$WAIT_RC" != 0 ]] || fail "the replaced client exited 0"
grep -q "connection is replaced" "$WORK/old.log" || { cat "$WORK/old.log"; fail "the replaced client was not told why"; }
grep -q "node id 'twin' connected again" "$WORK/server.err" || fail "the server did not log the replacement"
client third 2 third; third=$!
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $WAIT_RC"; }
for p in "$new" "$other" "$third"; do
  wait_pid "$p" 30
  [[ "$WAIT_RC" == 0 ]] || { cat "$WORK/new.log"; fail "a client of the federation exited $WAIT_RC"; }
done
"$PY" - "$WORK/out/metrics.jsonl" <<'PYEOF' || fail "rounds"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["round"] for r in rows] == [1, 2, 3], rows
assert rows[-1]["clients_ok"] == 3 and not rows[-1]["failed"], rows[-1]
print("ok: the last round had", rows[-1]["clients_ok"], "clients")
PYEOF
pass "test_reconnect: the newest connection of a node id wins"
