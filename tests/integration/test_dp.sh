#!/usr/bin/env bash
# Differential privacy end to end (docs/privacy.md), with fedc sim: each DP
# mode runs, every round's metrics carry the epsilon that `fedc privacy`
# gives for the run's sampling rate, noise multiplier, rounds and delta,
# --target-epsilon stops before the round that would exceed it, and
# combinations that cannot be accounted for are refused.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 2
common=(--clients 8 --data "$WORK/data/full" --scheme iid --partition-seed 1 --model mlp --min-clients 2
        --rounds 4 --lr 0.02 --seed 5 --quiet)

run() { # run NAME FLAGS...: fedc sim into $WORK/NAME, must exit 0
  local name="$1"; shift
  "$FEDC_BIN" sim "${common[@]}" "$@" --out "$WORK/$name" > "$WORK/$name.out" 2> "$WORK/$name.err" \
    || { cat "$WORK/$name.err"; fail "fedc sim $* failed"; }
}

# check NAME Q Z PER_ROUND: every round's epsilon is `fedc privacy` of the
# rounds charged so far (PER_ROUND: "released" counts rounds that updated
# the model, "started" every round), at delta 1e-5.
check() {
  "$PY" - "$WORK/$1/metrics.jsonl" "$2" "$3" "$4" <<'PYEOF' || fail "$1: epsilon differs from fedc privacy"
import json, os, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
q, z, per = sys.argv[2], sys.argv[3], sys.argv[4]
steps = 0
assert rows, "no rounds"
for r in rows:
    if per == "started" or not r["failed"]:
        steps += 1
    assert r["delta"] == 1e-5, r
    if steps == 0:
        assert r["epsilon"] is None or r["epsilon"] == 0, r
        continue
    out = subprocess.run([os.environ["FEDC_BIN"], "privacy", "--q", q, "--noise-multiplier", z,
                          "--steps", str(steps), "--delta", "1e-5"], capture_output=True, text=True, check=True)
    want = float(out.stdout.split()[0].split("=")[1])
    assert f"{r['epsilon']:.6f}" == f"{want:.6f}", (r["round"], r["epsilon"], out.stdout)
print(f"ok: {len(rows)} rounds, {steps} charged, last epsilon {rows[-1]['epsilon']:.6f}")
PYEOF
}

# Central DP with Poisson sampling: amplification at q = 0.5; the clip is
# small enough that the server clips every update.
run central --dp central --dp-clip 0.01 --dp-noise-multiplier 1.1 --sampling poisson --fraction-fit 0.5
check central 0.5 1.1 released
"$PY" - "$WORK/central/metrics.jsonl" <<'PYEOF' || fail "central: the server did not clip every update"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["dp_clipped"] == r["clients_ok"] for r in rows if not r["failed"]), rows
PYEOF
pass "central DP: epsilon per round equals fedc privacy at q 0.5; every update clipped"

# Fixed sampling is charged as q = 1, whatever --fraction-fit.
run fixed --dp central --dp-clip 0.5 --dp-noise-multiplier 1.1 --fraction-fit 0.5
check fixed 1 1.1 released
pass "central DP with fixed sampling is charged at q = 1"

# Client-clip: the server adds the noise, the accounting is central's.
run clientclip --dp client-clip --dp-clip 0.5 --dp-noise-multiplier 1.1
check clientclip 1 1.1 released
pass "client-clip DP is charged as central DP"

# Local: each client's guarantee, noise multiplier Z/2 (sensitivity 2C), no
# amplification, every round charged.
run local --dp local --dp-clip 0.05 --dp-noise-multiplier 3 --sampling poisson --fraction-fit 0.5
check local 1 1.5 started
pass "local DP: each client's epsilon, at Z/2 and q = 1, every round"

# Adaptive clipping: from a clip far below every update's norm, C grows
# each round (every update clipped, so the count is far below the median);
# the accounting stays at the noise multiplier asked for.
run adaptive --dp central --dp-adaptive --dp-clip 0.0001 --dp-noise-multiplier 1.1 --dp-clip-lr 0.5
check adaptive 1 1.1 released
"$PY" - "$WORK/adaptive/metrics.jsonl" <<'PYEOF' || fail "adaptive: the clip norm did not grow"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
clips = [r["dp_clip"] for r in rows]
assert clips[0] == 0.0001 and all(b > a for a, b in zip(clips, clips[1:])), clips
print("ok: clip norm by round", clips)
PYEOF
pass "adaptive clipping moves the clip norm towards the median; epsilon as asked"

# --target-epsilon between the epsilon of 2 and of 3 rounds: 2 rounds run.
e2=$("$FEDC_BIN" privacy --q 1 --noise-multiplier 1.1 --steps 2 --delta 1e-5 | sed 's/epsilon=\([0-9.]*\).*/\1/')
e3=$("$FEDC_BIN" privacy --q 1 --noise-multiplier 1.1 --steps 3 --delta 1e-5 | sed 's/epsilon=\([0-9.]*\).*/\1/')
target=$("$PY" -c "print(($e2 + $e3) / 2)")
run target --dp central --dp-clip 0.5 --dp-noise-multiplier 1.1 --target-epsilon "$target"
[[ $(wc -l < "$WORK/target/metrics.jsonl") == 2 ]] || { cat "$WORK/target.err"; fail "--target-epsilon $target did not stop after 2 rounds"; }
grep -q "privacy budget: stopping before round 3, which would bring epsilon to $e3" "$WORK/target.err" \
  || { cat "$WORK/target.err"; fail "--target-epsilon did not say why it stopped"; }
pass "--target-epsilon $target (between rounds 2 and 3: $e2, $e3) stops before round 3 and says so"

# Over MPI the ranks fold nothing under DP (they could not clip, and would
# weigh by num_examples): every answer goes whole to rank 0, which clips.
if command -v mpirun > /dev/null && "$FEDC_BIN" sim --help | grep -q -- "--mpi"; then
  root=()
  if [[ $(id -u) == 0 ]]; then root=(--allow-run-as-root); fi
  timeout 100 mpirun "${root[@]}" --oversubscribe -np 2 "$FEDC_BIN" sim --mpi "${common[@]}" --dp central \
    --dp-clip 0.01 --dp-noise-multiplier 1.1 --out "$WORK/mpi" > "$WORK/mpi.out" 2> "$WORK/mpi.err" \
    || { cat "$WORK/mpi.err"; fail "mpirun -np 2 fedc sim --mpi --dp central failed"; }
  grep -q "MPI: 0 updates folded" "$WORK/mpi.err" || { cat "$WORK/mpi.err"; fail "a rank folded updates under DP"; }
  check mpi 1 1.1 released
  "$PY" - "$WORK/mpi/metrics.jsonl" <<'PYEOF' || fail "mpi: not every update was clipped"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(not r["failed"] and r["dp_clipped"] == r["clients_ok"] == 8 for r in rows), rows
PYEOF
  pass "central DP over 2 MPI ranks: answers go whole to rank 0, which clips all 8 each round"
fi

# Record-level DP (DP-SGD on the clients): every round's epsilon_record is
# the largest over the clients of fedc privacy at q = batch / n_train, with
# every round's steps (round(n_train / batch)) added up.
"$FEDC_BIN" partition --data "$WORK/data/full" --clients 8 --scheme iid --seed 1 --out "$WORK/parts8" > /dev/null
run dpsgd --dp-sgd-clip 1 --dp-sgd-noise-multiplier 1.3 --rounds 3
record_check() { # record_check METRICS PARTITION_JSON ROUNDS_BEFORE
  "$PY" - "$@" <<'PYEOF'
import json, os, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sizes = [c["train"] for c in json.load(open(sys.argv[2]))["clients"]]
before = int(sys.argv[3])
def eps(q, steps):
    out = subprocess.run([os.environ["FEDC_BIN"], "privacy", "--q", repr(q), "--noise-multiplier", "1.3",
                          "--steps", str(steps), "--delta", "1e-5"], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0].split("=")[1])
for k, r in enumerate(rows, start=1 + before):
    want = max(eps(min(1.0, 32 / n), k * max(1, round(n / 32))) for n in sizes)
    assert f"{r['epsilon_record']:.6f}" == f"{want:.6f}", (r["round"], r["epsilon_record"], want)
    assert r["train_loss"] is None, "the clients sent their training loss under DP-SGD"
print("ok: epsilon_record by round", [round(r["epsilon_record"], 6) for r in rows])
PYEOF
}
record_check "$WORK/dpsgd/metrics.jsonl" "$WORK/parts8/partition.json" 0 || fail "dpsgd: epsilon_record"
pass "DP-SGD: epsilon_record per round equals fedc privacy for the largest client; no training loss sent"

# A real client with --state-dir keeps what its records have spent across
# federations: a second federation goes on counting from the first.
port=$(free_port)
federation() { # federation OUT: a server and two clients for 2 rounds of DP-SGD
  "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --rounds 2 --lr 0.02 \
    --dp-sgd-clip 1 --dp-sgd-noise-multiplier 1.3 --out "$1" --seed 5 "${SERVER_TLS[@]}" > "$1.out" 2> "$1.err" &
  local server=$!; PIDS+=($server)
  start_clients "$port" 0
  local i
  for i in 0 1; do
    client_tls "$i"
    "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
      --state-dir "$WORK/state$i" "${CLIENT_TLS[@]}" > "$WORK/c$i.log" 2>&1 &
    CLIENTS[$i]=$!; PIDS+=($!)
  done
  wait_pid "$server" 120
  [[ "$WAIT_RC" == 0 ]] || { cat "$1.err"; fail "server exited $WAIT_RC"; }
  wait_clients 30
}
federation "$WORK/fed1"
federation "$WORK/fed2"
[[ -s "$WORK/state0/dp_sgd.safetensors" ]] || fail "no dp_sgd.safetensors in the client's state directory"
record_check "$WORK/fed1/metrics.jsonl" "$WORK/data/parts/partition.json" 0 || fail "fed1: epsilon_record"
record_check "$WORK/fed2/metrics.jsonl" "$WORK/data/parts/partition.json" 2 || fail "fed2 did not count fed1"
pass "a client's DP-SGD spending survives a restart: the second federation starts from the first's 2 rounds"

# Refusals, each naming the problem.
expect 2 "needs --dp MODE" "$FEDC_BIN" sim "${common[@]}" --dp-clip 1 --out "$WORK/bad"
expect 2 "needs --dp-noise-multiplier" "$FEDC_BIN" sim "${common[@]}" --dp central --dp-clip 1 --out "$WORK/bad"
expect 2 "needs --dp-clip" "$FEDC_BIN" sim "${common[@]}" --dp local --dp-noise-multiplier 1 --out "$WORK/bad"
expect 2 "--dp must be central, client-clip or local" "$FEDC_BIN" sim "${common[@]}" --dp everywhere \
  --out "$WORK/bad"
expect 2 "--dp-sgd-clip needs --dp-sgd-noise-multiplier" "$FEDC_BIN" sim "${common[@]}" --dp-sgd-clip 1 \
  --out "$WORK/bad"
expect 2 "--dp-adaptive needs --dp central" "$FEDC_BIN" sim "${common[@]}" --dp local --dp-adaptive \
  --dp-clip 1 --dp-noise-multiplier 1 --out "$WORK/bad"
expect 2 "need --dp-adaptive" "$FEDC_BIN" sim "${common[@]}" --dp central --dp-clip 1 \
  --dp-noise-multiplier 1 --dp-target-quantile 0.7 --out "$WORK/bad"
expect 2 "--dp-delta must be in (0, 1)" "$FEDC_BIN" sim "${common[@]}" --dp central --dp-clip 1 \
  --dp-noise-multiplier 1 --dp-delta 1 --out "$WORK/bad"
set +e
"$FEDC_BIN" sim "${common[@]}" --dp central --dp-clip 1 --dp-noise-multiplier 1 --strategy median \
  --out "$WORK/bad" > /dev/null 2> "$WORK/bad.err"
rc=$?
set -e
[[ $rc != 0 ]] && grep -q "does not go with strategy median" "$WORK/bad.err" \
  || { cat "$WORK/bad.err"; fail "--dp with --strategy median was not refused (exit $rc)"; }
pass "--dp with a strategy that sees single updates is refused: $(grep -o 'does not go.*' "$WORK/bad.err" | head -1)"
pass "test_dp"
