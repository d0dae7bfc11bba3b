#!/usr/bin/env bash
# Secure aggregation end to end (docs/secagg.md):
#   1. fedc sim --secagg gives FedAvg's model to within the quantisation step;
#   2. with clients dropping at every stage (the simulator's faults), rounds
#      still complete while each survivor keeps T neighbours, and abort with
#      a message otherwise;
#   3. with --dp client-clip the clients add distributed discrete Gaussian
#      noise, and the accountant charges what reached the sum;
#   4. unsafe or unsupported settings are refused with a message;
#   5. fedc server --secagg with 8 client processes, 3 of them killed with
#      SIGKILL in the middle of a round: the round completes with the 5 others.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 8
common=(--data "$WORK/data/full" --scheme iid --partition-seed 1 --model mlp --min-clients 3 --lr 0.02 --seed 5
        --quiet)

# ---- 1. the same model as FedAvg, to within the quantisation step -------
"$FEDC_BIN" sim "${common[@]}" --clients 8 --rounds 1 --out "$WORK/plain" > /dev/null 2> "$WORK/plain.err" \
  || { cat "$WORK/plain.err"; fail "plain sim failed"; }
"$FEDC_BIN" sim "${common[@]}" --clients 8 --rounds 1 --secagg --out "$WORK/secure" > /dev/null \
  2> "$WORK/secure.err" || { cat "$WORK/secure.err"; fail "fedc sim --secagg failed"; }
grep -q "secure aggregation over 8 clients, 7 neighbours each, threshold 4, 24 bits" "$WORK/secure.err" \
  || { cat "$WORK/secure.err"; fail "the defaults for 8 clients are not K 7, T 4, B 24"; }
"$PY" - "$WORK/plain/model.safetensors" "$WORK/secure/model.safetensors" <<'PYEOF' \
  || fail "the secure model is not FedAvg's"
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            for k, v in h.items() if k != "__metadata__"}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys()
# Each client's weighted update f * delta (f = 375 / 1000) is quantised with
# step 2R / (2^24 - 1) = 9.5e-7, so the mean update is within half a step
# over f, 1.3e-6, plus float32 rounding.
diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
assert diff < 2e-6, diff
assert diff > 0, "identical: was the update quantised at all?"
print(f"ok: max |secure - fedavg| = {diff:.2e}")
PYEOF
pass "fedc sim --secagg matches FedAvg within the quantisation step"
# A strategy that turns the weighted mean into the model works on the sum.
"$FEDC_BIN" sim "${common[@]}" --clients 6 --rounds 2 --secagg --strategy fedadam --out "$WORK/fedadam" \
  > /dev/null 2> "$WORK/fedadam.err" || { cat "$WORK/fedadam.err"; fail "fedadam with --secagg"; }
[[ $(grep -c '"failed":false' "$WORK/fedadam/metrics.jsonl") == 2 ]] || fail "fedadam with --secagg: a round failed"
pass "fedc sim --secagg --strategy fedadam"

# ---- 2. dropouts at every stage -----------------------------------------
FEDC_LOG=debug "$FEDC_BIN" sim "${common[@]}" --clients 20 --rounds 8 --secagg --dropout-rate 0.1 \
  --out "$WORK/drop" > /dev/null 2> "$WORK/drop.err" || { tail -n 20 "$WORK/drop.err"; fail "sim with dropouts"; }
"$PY" - "$WORK/drop/metrics.jsonl" "$WORK/drop.err" <<'PYEOF' || fail "dropouts"
import json, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 8, rows
log = open(sys.argv[2]).read()
# The clients left at each stage of each round, from the server's log.
stages = {}
for r, st, n in re.findall(r"round (\d+): secure aggregation stage (\d) \(.*?\), (\d+) clients", log):
    stages.setdefault(int(r), {})[int(st)] = int(n)
survived = [r for r in rows if not r["failed"] and r["clients_failed"] > 0]
assert survived, "no round completed despite dropouts"
for r in survived:
    assert r["clients_ok"] + r["clients_failed"] == r["clients_sampled"] == 20, r
# Drops between training and each later stage, in rounds that completed.
dropped_at = set()
for r in survived:
    s = stages[r["round"]]
    counts = [20] + [s[k] for k in (2, 3, 4)] + [r["clients_ok"]]
    dropped_at |= {k for k in range(4) if counts[k + 1] < counts[k]}
print("completed rounds with dropouts:", [r["round"] for r in survived], "stages with drops:", sorted(dropped_at))
assert {0, 1, 2} <= dropped_at, dropped_at
for r in rows:
    if r["failed"]:
        assert "secagg" in r["failure_reason"], r
        print("aborted:", r["round"], r["failure_reason"])
PYEOF
pass "rounds complete with clients dropping at each stage"

# ---- 3. differential privacy: the distributed discrete Gaussian ----------
dp=(--dp client-clip --dp-clip 1 --dp-noise-multiplier 1)
"$FEDC_BIN" sim "${common[@]}" --clients 10 --rounds 3 --secagg "${dp[@]}" --out "$WORK/ddg" > /dev/null \
  2> "$WORK/ddg.err" || { cat "$WORK/ddg.err"; fail "fedc sim --secagg --dp client-clip failed"; }
grep -q "distributed discrete Gaussian: 262144 coordinates" "$WORK/ddg.err" \
  || { cat "$WORK/ddg.err"; fail "the update was not padded to a power of two"; }
FEDC_LOG=warn "$FEDC_BIN" sim "${common[@]}" --clients 10 --rounds 6 --secagg "${dp[@]}" --dropout-rate 0.05 \
  --out "$WORK/ddgdrop" > /dev/null 2> "$WORK/ddgdrop.err" || { cat "$WORK/ddgdrop.err"; fail "DDG with dropouts"; }
"$FEDC_BIN" sim "${common[@]}" --clients 10 --rounds 5 --secagg "${dp[@]}" --target-epsilon 10 \
  --out "$WORK/ddgtarget" > /dev/null 2> "$WORK/ddgtarget.err" || { cat "$WORK/ddgtarget.err"; fail "target"; }
grep -q "privacy budget: stopping before round" "$WORK/ddgtarget.err" \
  || { cat "$WORK/ddgtarget.err"; fail "--target-epsilon did not stop the DDG run"; }
"$PY" - "$WORK/ddg/metrics.jsonl" "$WORK/ddgdrop/metrics.jsonl" "$WORK/ddgtarget/metrics.jsonl" <<'PYEOF' \
  || fail "DDG accounting"
import json, os, subprocess, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# All 10 clients' noise reached every sum: with a grid step of ~1e-9 the
# rounding and tau terms vanish and the round is the Gaussian mechanism of
# multiplier Z = 1 at q = 1 (no amplification is claimed against the server).
for r in rows:
    assert not r["failed"] and r["clients_ok"] == 10, r
    out = subprocess.run([os.environ["FEDC_BIN"], "privacy", "--q", "1", "--noise-multiplier", "1",
                          "--steps", str(r["round"]), "--delta", "1e-5"], capture_output=True, text=True, check=True)
    want = float(out.stdout.split()[0].split("=")[1])
    assert abs(r["epsilon"] - want) < 1e-6 * want, (r["round"], r["epsilon"], want)
print("ok: epsilon per round =", [round(r["epsilon"], 6) for r in rows])
# With dropouts, only the survivors' noise reaches the sum: a round with s
# of the 10 clients is the Gaussian mechanism with z^2 = s / 10, so after
# rounds with s_1, s_2, ... the RDP is that of one round at
# z = 1 / sqrt(sum 10 / s_i). A failed round releases nothing.
drop = [json.loads(l) for l in open(sys.argv[2])]
inv, fewer = 0.0, 0
for r in drop:
    if not r["failed"]:
        inv += 10 / r["clients_ok"]
        fewer += r["clients_ok"] < 10
    if inv == 0:
        continue
    out = subprocess.run([os.environ["FEDC_BIN"], "privacy", "--q", "1", "--noise-multiplier", repr(inv ** -0.5),
                          "--steps", "1", "--delta", "1e-5"], capture_output=True, text=True, check=True)
    want = float(out.stdout.split()[0].split("=")[1])
    assert abs(r["epsilon"] - want) < 1e-6 * want, (r, want)
assert fewer > 0, "no round completed with dropouts"
print("ok: dropout run (round, survivors, epsilon):", [(r["round"], r["clients_ok"], round(r["epsilon"], 4)) for r in drop])
target = [json.loads(l) for l in open(sys.argv[3])]
# Round 3 could cost as much as 2 full rounds (if only its threshold of
# 5 clients stayed): 9.01 + ... > 10, so the run stops after round 2.
assert len(target) == 2 and target[-1]["epsilon"] <= 10, target
print("ok: --target-epsilon 10 stopped after", len(target), "rounds at", target[-1]["epsilon"])
PYEOF
pass "the distributed discrete Gaussian: noise from the clients, epsilon for the survivors"

# ---- 4. refusals ---------------------------------------------------------
sim=("$FEDC_BIN" sim "${common[@]}" --clients 4 --rounds 1 --out "$WORK/refused")
expect 1 "more than" "${sim[@]}" --secagg --secagg-neighbours 8 --secagg-threshold 4
expect 1 "needs the whole update\|each client's update" "${sim[@]}" --secagg --strategy median
expect 1 "each update by what" "${sim[@]}" --secagg --strategy fednova
expect 1 "never sees" "${sim[@]}" --secagg --dp central --dp-clip 1 --dp-noise-multiplier 1
expect 1 "at least 3" "${sim[@]}" --secagg --min-clients 2
expect 2 "need --secagg" "${sim[@]}" --secagg-bits 16
expect 2 "1 .. 24\|--secagg-bits" "${sim[@]}" --secagg --secagg-bits 30

# ---- 5. real processes: 8 clients, 3 killed in the middle of a round ----
port=$(free_port)
# Many local epochs make each round last long enough to kill clients inside it.
FEDC_LOG=debug "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 5 --rounds 4 --lr 0.01 \
  --local-epochs 60 --out "$WORK/out" --seed 5 --round-timeout 60 --secagg --secagg-timeout 20 "${SERVER_TLS[@]}" \
  > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)
start_clients "$port" 8
wait_for_sampled "$WORK/out/metrics.jsonl" 8 120
[[ -n "$full" && "$full" -le 3 ]] || { cat "$WORK/server.err"; fail "no round with all 8 clients by round 3"; }
next=$((full + 1))
waited=0
until grep -q "round $next: secure aggregation over 8 clients" "$WORK/server.err"; do
  sleep 0.05; waited=$((waited + 1)); ((waited < 1200)) || fail "round $next did not start"
done
for i in 5 6 7; do kill -9 "${CLIENTS[$i]}"; unset "CLIENTS[$i]"; done
pass "killed c5, c6, c7 during round $next"
wait_pid "$server" 240; rc=$WAIT_RC
[[ "$rc" == 0 ]] || { tail -n 30 "$WORK/server.err"; fail "server exited $rc"; }
wait_clients 30
"$PY" - "$WORK/out/metrics.jsonl" "$next" <<'PYEOF' || { tail -n 30 "$WORK/server.err"; fail "killed round"; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
k = int(sys.argv[2])
assert [r["round"] for r in rows] == [1, 2, 3, 4], rows
for r in rows:
    assert r["failed"] is False, f"round {r['round']} failed: {r}"
r = rows[k - 1]
assert r["clients_sampled"] == 8 and r["clients_ok"] == 5 and r["clients_failed"] == 3, r
assert all(x["clients_sampled"] == 5 and x["clients_ok"] == 5 for x in rows[k:]), rows
print(f"round {k}: 8 sampled, 5 ok, 3 failed; accuracy {rows[-1]['fed_eval_accuracy']:.4f}")
PYEOF
pass "test_secagg"
