#!/usr/bin/env bash
# Checkpoints and --resume: a server killed with SIGKILL in the middle of
# round 3 and restarted with --resume ends with the same model, byte for
# byte, as a federation that ran without interruption, and metrics.jsonl
# has every round once; SIGTERM suspends (exit 0, checkpoint on disk) and
# --resume continues; resuming refuses an empty OUT and other options.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
# Every round takes all three clients; enough local epochs that a round
# lasts long enough to be interrupted.
flags=(--model mlp --min-clients 3 --rounds 5 --sampling fixed --lr 0.01 --local-epochs 6 --seed 5
       --round-timeout 60 --quiet "${SERVER_TLS[@]}")

start_server() { # start_server PORT ARGS...: the server in the background, pid in `server`
  local port="$1"; shift
  "$FEDC_BIN" server --listen "127.0.0.1:$port" "${flags[@]}" "$@" >> "$WORK/server.out" 2>> "$WORK/server.err" &
  server=$!; PIDS+=($server)
}

check_rounds() { # check_rounds METRICS: rounds 1..5, each once
  "$PY" - "$1" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["round"] for r in rows] == [1, 2, 3, 4, 5], [r["round"] for r in rows]
assert all(not r["failed"] and r["clients_ok"] == 3 for r in rows), rows
PYEOF
}

# The reference: five rounds without interruption.
port=$(free_port)
start_server "$port" --out "$WORK/a"
start_clients "$port" 3
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "reference server exited $WAIT_RC"; }
wait_clients 30
[[ -f "$WORK/a/checkpoint.fedc" ]] || fail "no checkpoint after the reference run"
check_rounds "$WORK/a/metrics.jsonl"
pass "reference federation: 5 rounds"

# SIGKILL in the middle of round 3, then --resume on the same port; the
# clients reconnect by themselves (--connect-timeout).
port=$(free_port)
start_server "$port" --out "$WORK/b"
start_clients "$port" 3
wait_for_lines "$WORK/b/metrics.jsonl" 2 60
kill -9 "$server"
wait "$server" 2>/dev/null || true
rounds_before=$(wc -l < "$WORK/b/metrics.jsonl")
pass "server killed with SIGKILL after $rounds_before rounds"
start_server "$port" --resume "$WORK/b"
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "resumed server exited $WAIT_RC"; }
wait_clients 30
grep -q "resuming from .* after round" "$WORK/server.err" || fail "the resumed server did not say where it resumed"
check_rounds "$WORK/b/metrics.jsonl"
cmp "$WORK/a/model.safetensors" "$WORK/b/model.safetensors" || fail "the resumed model differs from the reference"
pass "resumed after SIGKILL: the same model byte for byte, rounds 1..5 once"

# SIGTERM: exit 0 with the checkpoint on disk; --resume continues.
port=$(free_port)
start_server "$port" --out "$WORK/c"
start_clients "$port" 3
wait_for_lines "$WORK/c/metrics.jsonl" 2 60
kill -TERM "$server"
wait_pid "$server" 30
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server exited $WAIT_RC after SIGTERM, want 0"; }
[[ -f "$WORK/c/checkpoint.fedc" ]] || fail "no checkpoint after SIGTERM"
grep -q "suspending" "$WORK/server.err" || fail "the server did not log its suspension"
wait_clients 30
pass "SIGTERM: exit 0 after $(wc -l < "$WORK/c/metrics.jsonl") rounds, checkpoint on disk, clients shut down"
# A line of a round after the checkpoint's and a torn line, as a crash
# between a round's metrics and its checkpoint would leave: both dropped.
echo '{"round":3,"failed":false}' >> "$WORK/c/metrics.jsonl"
printf '{"round":4,"fai' >> "$WORK/c/metrics.jsonl"
start_server "$port" --resume "$WORK/c"
start_clients "$port" 3
wait_pid "$server" 120
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/server.err"; fail "server resumed after SIGTERM exited $WAIT_RC"; }
wait_clients 30
check_rounds "$WORK/c/metrics.jsonl"
cmp "$WORK/a/model.safetensors" "$WORK/c/model.safetensors" || fail "the model resumed after SIGTERM differs"
pass "resumed after SIGTERM: the same model byte for byte"

# Refusals: nothing to resume, other options, a damaged checkpoint.
mkdir -p "$WORK/empty"
expect 1 "nothing to resume in" "$FEDC_BIN" server --listen "127.0.0.1:$(free_port)" "${flags[@]}" \
  --resume "$WORK/empty"
expect 1 "written with the strategy none (FedAvg), and this server has fedadam" \
  "$FEDC_BIN" server --listen "127.0.0.1:$(free_port)" "${flags[@]}" --strategy fedadam --resume "$WORK/b"
expect 1 "written with the seed 5, and this server has 6" \
  "$FEDC_BIN" server --listen "127.0.0.1:$(free_port)" "${flags[@]}" --seed 6 --resume "$WORK/b"
expect 1 "differential privacy" "$FEDC_BIN" server --listen "127.0.0.1:$(free_port)" "${flags[@]}" \
  --dp central --dp-clip 1 --dp-noise-multiplier 1 --resume "$WORK/b"
cp "$WORK/b/checkpoint.fedc" "$WORK/empty/checkpoint.fedc"
"$PY" -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(40); b=f.read(1); f.seek(40); f.write(bytes([b[0]^1]))' \
  "$WORK/empty/checkpoint.fedc"
expect 1 "digest does not match" "$FEDC_BIN" server --listen "127.0.0.1:$(free_port)" "${flags[@]}" \
  --resume "$WORK/empty"
pass "test_resume"
