#!/usr/bin/env bash
# Bad input gets a clear message naming the problem and a non-zero exit,
# never a crash; a client with the wrong model is rejected while the
# federation goes on.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
client_tls 0

expect 2 "unknown command 'frobnicate'" "$FEDC_BIN" frobnicate
expect 2 "'--bogus'" "$FEDC_BIN" server --bogus
expect 2 "--rounds expects a whole number, got 'abc'" "$FEDC_BIN" server --rounds abc
expect 2 "--fraction-fit must be between" "$FEDC_BIN" server --fraction-fit 1.5
expect 2 "--sampling must be 'fixed' or 'poisson'" "$FEDC_BIN" server --sampling sometimes
expect 2 "unknown architecture\|unknown model\|mlp" "$FEDC_BIN" server --model resnet "${SERVER_TLS[@]}"
expect 1 "nonexistent.safetensors" "$FEDC_BIN" server --initial-model "$WORK/nonexistent.safetensors" "${SERVER_TLS[@]}"
expect 2 "--server is required" "$FEDC_BIN" client --data "$WORK/data/parts/client-000"
expect 1 "$WORK/nowhere" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/nowhere" "${CLIENT_TLS[@]}"
expect 2 "--connect-timeout expects a number" "$FEDC_BIN" client --server x:1 --data d --connect-timeout soon
expect 2 "invalid --node-id" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/data/parts/client-000" \
  --node-id 'bad id!' "${CLIENT_TLS[@]}"

# A corrupt data file: truncated gzip stream.
mkdir -p "$WORK/corrupt"
cp "$WORK/data/parts/client-000/"* "$WORK/corrupt/"
head -c 2000 "$WORK/data/parts/client-000/train-images-idx3-ubyte.gz" > "$WORK/corrupt/train-images-idx3-ubyte.gz"
expect 1 "train-images-idx3-ubyte.gz" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/corrupt" "${CLIENT_TLS[@]}"
# A file that is not IDX at all.
echo "hello" | gzip > "$WORK/corrupt/train-images-idx3-ubyte.gz"
expect 1 "train-images-idx3-ubyte.gz" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/corrupt" "${CLIENT_TLS[@]}"

# An unreachable server, after the retries.
port=$(free_port)
expect 1 "unreachable after" "$FEDC_BIN" client --server "127.0.0.1:$port" \
  --data "$WORK/data/parts/client-000" --connect-timeout 1 "${CLIENT_TLS[@]}"

# A port in use.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --out "$WORK/o1" "${SERVER_TLS[@]}" 2> /dev/null &
holder=$!; PIDS+=($holder)
sleep 0.5
expect 1 "address already in use" "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --out "$WORK/o2" \
  "${SERVER_TLS[@]}"
kill "$holder"; wait "$holder" 2>/dev/null || true

# The target accuracy not reached within --rounds: exit 3.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1 --rounds 1 --lr 0.0001 \
  --target-accuracy 0.99 --test-data "$WORK/data/full" --out "$WORK/o3" "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/t.err" &
server=$!; PIDS+=($server)
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-000" "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
PIDS+=($!)
wait_pid "$server" 60; rc=$WAIT_RC
[[ "$rc" == 3 ]] || { cat "$WORK/t.err"; fail "unreached target: exit $rc, want 3"; }
grep -q "target accuracy 0.9900 not reached in 1 rounds" "$WORK/t.err" || { cat "$WORK/t.err"; fail "no target message"; }
pass "target accuracy not reached: exit 3 with a message"

# A client whose model differs from the federation's: the server has no
# model and takes c0's (mlp); c2 trains a cnn, so its fit fails naming both
# layouts, and the rounds complete with the other two.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --min-clients 2 --rounds 4 --local-epochs 3 --out "$WORK/o4" \
  "${SERVER_TLS[@]}" > /dev/null 2> "$WORK/m.err" &
server=$!; PIDS+=($server)
client_tls 0
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-000" --node-id c0 --model mlp \
  "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
PIDS+=($!)
client_tls 1
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-001" --node-id c1 --model mlp \
  "${CLIENT_TLS[@]}" > /dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "initial parameters from" "$WORK/m.err" && break; sleep 0.1; done
client_tls 2
"$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-002" --node-id c2 --model cnn \
  "${CLIENT_TLS[@]}" > "$WORK/c2.log" 2>&1 &
PIDS+=($!)
wait_pid "$server" 120; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { cat "$WORK/m.err"; fail "server exited $rc"; }
grep -q "c2.*expected .*got" "$WORK/m.err" || { cat "$WORK/m.err"; fail "server did not log the layout mismatch with both layouts"; }
pass "layout mismatch logged: $(grep -o "c2.*expected .*" "$WORK/m.err" | head -n 1 | cut -c1-220)"
"$PY" - "$WORK/o4/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 4 and all(not r["failed"] for r in rows), rows
assert any(r["clients_failed"] >= 1 for r in rows), rows
PYEOF
pass "every round completed without the mismatched client"
pass "test_bad_input"
