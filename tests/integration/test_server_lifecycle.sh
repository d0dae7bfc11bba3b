#!/usr/bin/env bash
# The server's life cycle outside a normal run: giving up when too few
# clients come (--wait-timeout), and stopping on SIGINT (clients told,
# model saved; SIGTERM suspends instead, test_resume.sh), and Poisson sampling drawing a different set each round.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3

# Too few clients within --wait-timeout: exit 1 with a message.
port=$(free_port)
rc=0
timeout 60 "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --wait-timeout 1 \
  --out "$WORK/w" "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/w.err" || rc=$?
[[ $rc == 1 ]] || { cat "$WORK/w.err"; fail "--wait-timeout: exit $rc, want 1"; }
grep -q "only 0 of the 2 clients needed connected within 1 s" "$WORK/w.err" || { cat "$WORK/w.err"; fail "no wait-timeout message"; }
pass "--wait-timeout: gives up with a message"

# SIGINT mid-federation: the clients are told and exit 0, the model as it
# stands is saved, the server exits 1 saying it was stopped.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 3 --rounds 1000 --local-epochs 2 \
  --out "$WORK/s" "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/s.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
wait_for_lines "$WORK/s/metrics.jsonl" 2 120
kill -INT "$server"
wait_pid "$server" 60
[[ "$WAIT_RC" == 1 ]] || { cat "$WORK/s.err"; fail "SIGINT: server exit $WAIT_RC, want 1"; }
grep -q "stopped on request" "$WORK/s.err" || { cat "$WORK/s.err"; fail "no stop message"; }
[[ -s "$WORK/s/model.safetensors" ]] || fail "SIGINT: model not saved"
wait_clients 30
pass "SIGINT: clients told and exit 0, model saved, server exits 1"

# Poisson sampling: each client independently with probability 0.5, so the
# number sampled varies from round to round.
"$FEDC_BIN" sim --clients 40 --data "$WORK/data/full" --scheme iid --min-samples 5 --model mlp --min-clients 1 \
  --sampling poisson --fraction-fit 0.5 --fraction-evaluate 0 --rounds 6 --seed 2 --quiet --out "$WORK/p" \
  2> "$WORK/p.err" || { cat "$WORK/p.err"; fail "poisson sampling run failed"; }
"$PY" - "$WORK/p/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = [r["clients_sampled"] for r in rows]
print("clients sampled per round:", n)
assert all(not r["failed"] for r in rows), rows
assert len(set(n)) > 1 and all(8 <= k <= 32 for k in n), n
PYEOF
pass "poisson sampling: about half the clients, a different number each round"
# The open-file limit: each connection is a descriptor, and many systems
# start processes with a soft limit of 1024. The server raises its soft
# limit within the hard one, and warns when the hard limit cannot hold
# --min-clients (connections beyond it would be dropped unseen).
hard=$(ulimit -Hn)
if [[ "$hard" == unlimited || "$hard" -ge 2048 ]]; then
  port=$(free_port)
  (ulimit -Sn 256; exec "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1000 \
    --wait-timeout 30 --out "$WORK/fd" --insecure > /dev/null 2> "$WORK/fd.err") &
  server=$!; PIDS+=($server)
  waited=0
  until grep -q "waiting for" "$WORK/fd.err" 2>/dev/null; do
    sleep 0.05; waited=$((waited + 1)); ((waited < 600)) || { cat "$WORK/fd.err"; fail "the server did not start"; }
  done
  soft=$(awk '/^Max open files/ {print $4}' "/proc/$server/limits")
  kill "$server" 2>/dev/null || true
  [[ "$soft" == unlimited || "$soft" -ge 2048 ]] || fail "the server kept an open-file limit of $soft"
  ! grep -q "open-file limit" "$WORK/fd.err" || { cat "$WORK/fd.err"; fail "a needless open-file warning"; }
fi
port=$(free_port)
(ulimit -n 256; exec "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1000 \
  --wait-timeout 1 --out "$WORK/fd2" --insecure > /dev/null 2> "$WORK/fd2.err") || true
grep -q "open-file limit is 256 (hard limit 256), too low for 1000 clients" "$WORK/fd2.err" ||
  { cat "$WORK/fd2.err"; fail "no warning of an open-file limit below --min-clients"; }
pass "the open-file limit is raised for max_connections, and a hard limit below --min-clients is reported"
pass "test_server_lifecycle"
