#!/usr/bin/env bash
# A real federation: the fedc server and three fedc client processes on
# loopback, each client reading only its own directory. The model must
# learn: final accuracy >= 0.8 and at least 0.2 above round 1's.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 3 --rounds 5 --lr 0.02 \
  --momentum 0.9 --test-data "$WORK/data/full" --out "$WORK/out" --seed 3 "${SERVER_TLS[@]}" \
  > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
wait_pid "$server" 240; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $rc"; }
wait_clients 30
pass "server and 3 clients exited 0"

m="$WORK/out/metrics.jsonl"
[[ $(wc -l < "$m") == 5 ]] || fail "metrics.jsonl has $(wc -l < "$m") lines, want 5"
"$PY" - "$m" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["round", "failed", "clients_ok", "clients_failed", "train_loss", "fed_eval_loss",
        "fed_eval_accuracy", "central_eval_loss", "central_eval_accuracy", "seconds",
        "bytes_sent", "bytes_received"]
for r in rows:
    missing = [k for k in keys if k not in r]
    assert not missing, f"round {r.get('round')}: missing {missing}"
    assert r["failed"] is False and r["clients_ok"] == 3 and r["clients_failed"] == 0, r
    assert r["bytes_sent"] > 0 and r["bytes_received"] > 0, r
first, last = rows[0]["central_eval_accuracy"], rows[-1]["central_eval_accuracy"]
print(f"accuracy round 1 {first:.4f}, final {last:.4f}")
assert last >= 0.8, f"final accuracy {last} < 0.8"
assert last >= first + 0.2, f"final accuracy {last} not 0.2 above round 1's {first}"
assert rows[-1]["fed_eval_accuracy"] >= 0.8, rows[-1]
PYEOF
pass "metrics complete; accuracy rose as required"

"$PY" - "$WORK/out/model.safetensors" <<'PYEOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
names = [k for k in h if k != "__metadata__"]
assert names[:2] == ["fc1.weight", "fc1.bias"], names
assert h["fc1.weight"]["shape"] == [200, 784] and h["fc1.weight"]["dtype"] == "F32"
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
assert 8 + n + end == len(b), "file size does not match the header"
PYEOF
pass "final model is a valid safetensors file"
grep -q "done: model in" "$WORK/server.out" || fail "server did not say where the model is"

# The saved model starts a new federation: --initial-model reads it back, the
# server recognises the built-in architecture for central evaluation, and the
# first round starts from the trained weights, not from scratch.
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --initial-model "$WORK/out/model.safetensors" --min-clients 3 \
  --rounds 1 --lr 0.02 --momentum 0.9 --test-data "$WORK/data/full" --out "$WORK/out2" "${SERVER_TLS[@]}" \
  > /dev/null 2> "$WORK/server2.err" &
server=$!; PIDS+=($server)
start_clients "$port" 3
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server2.err"; fail "second server exited $WAIT_RC"; }
wait_clients 30
acc=$(metric "$WORK/out2/metrics.jsonl" 1 central_eval_accuracy)
"$PY" -c "import sys; sys.exit(0 if float('$acc') >= 0.8 else 1)" || fail "resumed model's round-1 accuracy $acc < 0.8"
pass "--initial-model continues from the saved model (round-1 accuracy $acc)"
pass "test_federation"
