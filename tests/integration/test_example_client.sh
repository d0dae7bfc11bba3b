#!/usr/bin/env bash
# examples/custom_client.c, a client with its own model and training code,
# defines the model (the server starts without one) and trains it with two
# others in a real federation.
source "$(dirname "$0")/lib.sh"
: "${FEDC_EXAMPLE_CLIENT:?FEDC_EXAMPLE_CLIENT must point to custom_client}"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --min-clients 3 --rounds 3 --lr 0.01 --out "$WORK/out" \
  "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
# The example reads its TLS files from the environment.
for i in 0 1 2; do
  client_tls "$i"
  FEDC_TLS_CA="${CLIENT_TLS[1]}" FEDC_TLS_CERT="${CLIENT_TLS[3]}" FEDC_TLS_KEY="${CLIENT_TLS[5]}" \
    "$FEDC_EXAMPLE_CLIENT" "127.0.0.1:$port" "$WORK/data/parts/client-00$i" "ex$i" > "$WORK/ex$i.log" 2>&1 &
  pids[$i]=$!; PIDS+=(${pids[$i]})
done
wait_pid "$server" 120; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $rc"; }
for i in 0 1 2; do
  wait_pid "${pids[$i]}" 30
  [[ "$WAIT_RC" == 0 ]] || { cat "$WORK/ex$i.log"; fail "example client $i exited $WAIT_RC"; }
done
grep -q "initial parameters from ex0: 2 tensors" "$WORK/server.err" || fail "the model did not come from the client"
"$PY" - "$WORK/out/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 3 and all(not r["failed"] and r["clients_ok"] == 3 for r in rows), rows
acc = [r["fed_eval_accuracy"] for r in rows]
print("federated accuracy by round:", acc)
assert acc[-1] >= 0.8, acc
PYEOF
pass "test_example_client"
