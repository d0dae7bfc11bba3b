#!/usr/bin/env bash
# Four hosts on one network: the server and three clients, each in its own
# network namespace, joined by veth pairs to a bridge in the server's
# namespace. In the middle of a round one client's link goes down: the
# server drops it after --round-timeout, the round completes with the other
# two, and metrics.jsonl counts it as failed. When the link comes back up,
# the client's connection carries on (its late answer is read and dropped)
# and it takes part in a later round again. Then another client, with a
# 2 s heartbeat, loses its link for 8 s: its connection fails, it
# reconnects when the link is back, and the server replaces the old
# connection (the newest of a node id wins). Needs root and `ip netns`;
# skipped (exit 77) where namespaces cannot be made.
source "$(dirname "$0")/lib.sh"

skip() { echo "SKIP: $*"; exit 77; }
command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is missing"
[[ $(id -u) -eq 0 ]] || skip "network namespaces need root"

# Names carry this shell's pid, so parallel runs do not clash.
prefix="fedcnt-$$"
SRV="$prefix-srv"
NETNS=()
netns_cleanup() {
  local p ns
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  # Deleting a namespace deletes the veth ends and the bridge in it.
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  cleanup
}
trap netns_cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$SRV" 2>"$WORK/netns.err" || skip "ip netns add failed: $(head -n 1 "$WORK/netns.err")"
NETNS+=("$SRV")

# The network: 10.77.0.1 the server, on br0; client i is 10.77.0.1i on its
# eth0, whose peer s$i is a port of br0.
ip -n "$SRV" link set lo up
ip -n "$SRV" link add br0 type bridge
ip -n "$SRV" addr add 10.77.0.1/24 dev br0
ip -n "$SRV" link set br0 up
for i in 0 1 2; do
  ns="$prefix-c$i"
  ip netns add "$ns"; NETNS+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$SRV" link add "s$i" type veth peer name eth0 netns "$ns"
  ip -n "$SRV" link set "s$i" master br0
  ip -n "$SRV" link set "s$i" up
  ip -n "$ns" addr add "10.77.0.1$i/24" dev eth0
  ip -n "$ns" link set eth0 up
done
pass "namespaces $SRV and $prefix-c0..2 on 10.77.0.0/24"

make_data "$WORK/data" 3
# Certificates for the server's address on this network (mutual TLS).
"$FEDC_BIN" certs --out "$WORK/netpki" --clients 3 --host 10.77.0.1 > /dev/null || fail "fedc certs failed"
N="$WORK/netpki"
# 20 local epochs make a round last about a second; the cap on rounds is
# far more than the test needs: it stops the server once c2 is back.
ip netns exec "$SRV" "$FEDC_BIN" server --listen 10.77.0.1:7000 --model mlp --min-clients 2 --rounds 200 \
  --lr 0.01 --local-epochs 20 --round-timeout 5 --out "$WORK/out" --seed 5 \
  --cert "$N/server.pem" --key "$N/server.key" --ca "$N/ca.pem" > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
CLIENTS=()
for i in 0 1 2; do
  # c1 probes its connection every 2 s (the second cut, below).
  hb=(); [[ $i == 1 ]] && hb=(--heartbeat 2)
  ip netns exec "$prefix-c$i" "$FEDC_BIN" client --server 10.77.0.1:7000 \
    --data "$WORK/data/parts/client-00$i" --node-id "c$i" "${hb[@]}" \
    --ca "$N/ca.pem" --cert "$N/client-00$i.pem" --key "$N/client-00$i.key" > "$WORK/c$i.log" 2>&1 &
  CLIENTS[$i]=$!; PIDS+=($!)
done

show_logs() { tail -n 30 "$WORK/server.err" "$WORK/c2.log" >&2 || true; }
wait_for_sampled "$WORK/out/metrics.jsonl" 3 60
[[ -n "$full" ]] || { show_logs; fail "no round with all three clients within 60 s"; }
# The next round starts at once; c2 is training in it when its link goes down.
sleep 0.1
ip -n "$prefix-c2" link set eth0 down
pass "c2's link down during round $((full + 1))"

t=0
until grep -q "node c2 .*no result within the round timeout" "$WORK/server.err"; do
  ((t++ < 200)) || { show_logs; fail "the server did not time c2 out within 20 s"; }
  sleep 0.1
done
ip -n "$prefix-c2" link set eth0 up
pass "c2 timed out by the server; its link is up again"

# Until a round after the one c2 missed has all three clients ok.
back=""
t=0
until [[ -n "$back" ]]; do
  back=$("$PY" - "$WORK/out/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
lost = [r["round"] for r in rows if r["clients_failed"] > 0]
print(next((str(r["round"]) for r in rows if lost and r["round"] > lost[0] and r["clients_ok"] == 3), ""))
PYEOF
)
  [[ -n "$back" ]] && break
  kill -0 "$server" 2>/dev/null || { show_logs; fail "the server exited before c2 came back"; }
  ((t++ < 400)) || { show_logs; fail "c2 did not take part again within 40 s of its link coming back"; }
  sleep 0.1
done
pass "c2 took part again in round $back"

# A longer cut for c1, whose heartbeat is 2 s: its kernel gives up on the
# silent connection within about 5 s, the client reconnects once the link
# is back, and the server replaces the old connection it had not yet
# noticed was dead (the newest connection of a node id wins).
ip -n "$prefix-c1" link set eth0 down
sleep 8
ip -n "$prefix-c1" link set eth0 up
t=0
until grep -q "node id 'c1' connected again" "$WORK/server.err"; do
  ((t++ < 400)) || { tail -n 30 "$WORK/server.err" "$WORK/c1.log" >&2; fail "c1 did not reconnect within 40 s"; }
  sleep 0.1
done
rows_at=$(wc -l < "$WORK/out/metrics.jsonl")
t=0
until "$PY" -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][int(sys.argv[2]):]
sys.exit(0 if any(r["clients_ok"] == 3 for r in rows) else 1)' "$WORK/out/metrics.jsonl" "$rows_at"; do
  ((t++ < 400)) || { show_logs; fail "no round with all three clients after c1 reconnected"; }
  sleep 0.1
done
pass "c1's heartbeat noticed the dead link; it reconnected and replaced its old connection"

# Stopping the server on request tells the clients, which exit 0; c2 too,
# so its connection is alive and well.
kill -INT "$server"
wait_pid "$server" 30
[[ "$WAIT_RC" == 1 ]] || { show_logs; fail "server exited $WAIT_RC after SIGINT, want 1"; }
wait_clients 30

"$PY" - "$WORK/out/metrics.jsonl" "$full" "$back" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
full, back = int(sys.argv[2]), int(sys.argv[3])
assert [r["round"] for r in rows] == list(range(1, len(rows) + 1)), rows
assert all(not r["failed"] for r in rows), f"a round failed: {rows}"
rows = rows[:back]  # the first cut; c1's came after
lost = [r for r in rows if r["clients_failed"] > 0]
assert len(lost) == 1, f"want one round that lost c2: {lost}"
k = lost[0]
assert k["round"] > full, f"round {k['round']} lost a client before the link went down: {rows}"
assert k["clients_failed"] == 1 and k["clients_ok"] == 2, k
# The loop's clock, which the timeout counts on, may lag the round's start by a few ms.
assert k["seconds"] >= 4.9, f"round {k['round']} should have waited for the timeout: {k}"
assert all(r["clients_ok"] >= 2 for r in rows[k["round"]:]), rows
print(f"ok: round {k['round']} lost c2 after {k['seconds']:.1f} s; rounds {k['round'] + 1}..{back - 1} ran "
      f"with two clients; c2 was back in round {back}")
PYEOF
pass "test_netns"
