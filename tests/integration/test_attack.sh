#!/usr/bin/env bash
# --attack, the testing tool for robust aggregation: bad values are usage
# errors; a poisoned update has exactly the documented form; and under plain
# fedavg, 2 of 7 clients sending scale:-10 updates wreck the model, while
# median, trimmed mean and multi-krum end within 5 points of the clean run.
source "$(dirname "$0")/lib.sh"
mkdir -p "$WORK/full"
"$FEDC_MAKE_SYNTHETIC" "$WORK/full" 3000 1000 7 0.2

for bad in scale:abc scale: scale:inf sign gaussian:2 ""; do
  expect 2 "--attack" "$FEDC_BIN" sim --clients 2 --attack "$bad"
  expect 2 "--attack" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/full" --attack "$bad"
done
expect 2 "--attack-fraction" "$FEDC_BIN" sim --clients 2 --attack-fraction 0.5
expect 2 "--attack-fraction" "$FEDC_BIN" sim --clients 2 --attack sign-flip --attack-fraction 0
expect 2 "--attack-fraction" "$FEDC_BIN" sim --clients 2 --attack sign-flip --attack-fraction 1.5
"$FEDC_BIN" client --help | grep -q -- "--attack MODE" || fail "fedc client --help lacks --attack"
"$FEDC_BIN" sim --help | grep -q -- "--attack-fraction F" || fail "fedc sim --help lacks --attack-fraction"
pass "malformed --attack and --attack-fraction values are usage errors; both --help texts list them"

# One client, one round from a saved model G: the honest run gives H, and
# scale:-1 (and sign-flip, the same update) must give G + (-1)*(H - G).
one=(--clients 1 --min-clients 1 --data "$WORK/full" --scheme iid --partition-seed 1 --rounds 1 --lr 0.05
     --seed 5 --quiet)
run() { "$FEDC_BIN" sim "$@" 2> "$WORK/sim.err" || { cat "$WORK/sim.err"; fail "fedc sim $* failed"; }; }
run "${one[@]}" --model mlp --out "$WORK/g"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --out "$WORK/honest"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --attack scale:-1 --out "$WORK/neg"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --attack sign-flip --out "$WORK/flip"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --attack scale:3 --out "$WORK/x3"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --attack gaussian --out "$WORK/gauss"
run "${one[@]}" --initial-model "$WORK/g/model.safetensors" --attack gaussian --out "$WORK/gauss2"
cmp "$WORK/neg/model.safetensors" "$WORK/flip/model.safetensors" || fail "sign-flip differs from scale:-1"
cmp "$WORK/gauss/model.safetensors" "$WORK/gauss2/model.safetensors" || fail "gaussian is not deterministic"
"$PY" - "$WORK" <<'PYEOF'
import array, json, math, struct, sys
w = sys.argv[1]
def load(name):
    b = open(f"{w}/{name}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v
        s, e = v["data_offsets"]
        a = array.array("f")
        a.frombytes(b[8 + n + s:8 + n + e])
        out[k] = a
    return out
f32 = lambda x: struct.unpack("<f", struct.pack("<f", x))[0]
g, h = load("g"), load("honest")
# The client computes g + k*(h - g) in float; the server's aggregation then
# rounds again, so the check is "within float rounding": relative 1e-6 of
# the values involved, or 1e-10 absolute. Most values come out bit-exact.
for name, k in (("neg", -1.0), ("x3", 3.0)):
    a = load(name)
    total = exact = moved = 0
    for t in g:
        for gi, hi, ai in zip(g[t], h[t], a[t]):
            want = f32(gi + f32(k) * f32(hi - gi))
            total += 1
            exact += want == ai
            moved += hi != gi
            assert abs(want - ai) <= 1e-6 * max(abs(gi), abs(hi), abs(ai)) + 1e-10, (name, t, gi, hi, ai, want)
    assert moved > total // 4, f"only {moved} of {total} values moved in honest training"
    print(f"ok: scale:{k:g}: all {total} values are G + {k:g}*(H - G) within float rounding ({exact} bit-exact)")
# gaussian: per tensor, the noise's standard deviation is the honest update's.
a = load("gauss")
for t in g:
    u = [hi - gi for gi, hi in zip(g[t], h[t])]
    d = [ai - gi for gi, ai in zip(g[t], a[t])]
    if len(u) < 1000:
        continue
    sd = lambda v: math.sqrt(sum(x * x for x in v) / len(v) - (sum(v) / len(v)) ** 2)
    su, sdd = sd(u), sd(d)
    assert abs(sdd - su) <= 0.1 * su, (t, su, sdd)
    assert abs(sum(x * y for x, y in zip(u, d))) < 0.2 * su * sdd * len(u), (t, "noise correlates with u")
print("ok: gaussian: per tensor, noise with the honest update's standard deviation, independent of it")
PYEOF
pass "the poisoned updates have exactly the documented form"

# 2 of 7 clients (attack fraction 2/7: clients 0 and 1) send scale:-10
# updates; plain fedavg follows them, the clean federation learns.
seven=(--clients 7 --min-clients 7 --data "$WORK/full" --scheme iid --partition-seed 1 --model mlp --rounds 4
       --lr 0.05 --seed 5 --quiet --test-data "$WORK/full")
run "${seven[@]}" --out "$WORK/clean"
run "${seven[@]}" --attack scale:-10 --attack-fraction 0.2857 --out "$WORK/attacked"
grep -q "clients 0 to 1 of 7" "$WORK/sim.err" || { cat "$WORK/sim.err"; fail "not 2 of 7 attackers"; }
# The best central accuracy over the rounds, so that one unlucky round of
# the clean run does not decide (the runs are seeded and deterministic).
best() { "$PY" -c 'import json,sys; print(max(json.loads(l)["central_eval_accuracy"] for l in open(sys.argv[1])))' "$1"; }
clean=$(best "$WORK/clean/metrics.jsonl")
attacked=$(best "$WORK/attacked/metrics.jsonl")
"$PY" -c "import sys; c, a = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (c >= 0.7 and a <= c - 0.3))" \
  "$clean" "$attacked" || fail "best central accuracy clean $clean, attacked $attacked: want clean >= 0.7, attacked <= clean - 0.3"
pass "fedavg, 2 of 7 clients attacking with scale:-10: best central accuracy $attacked (clean run: $clean)"

# The same attack against the robust aggregators: each must end within 5
# points of the clean fedavg run, where fedavg collapsed. These runs are
# longer (8 rounds), so that the final rounds are compared rather than the
# swings of the first few.
final() { "$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["central_eval_accuracy"])' "$1"; }
run "${seven[@]}" --rounds 8 --out "$WORK/clean8"
clean8=$(final "$WORK/clean8/metrics.jsonl")
for s in "median" "trimmed-mean --trim-beta 0.3" "multikrum --byzantine 2"; do
  name="${s%% *}"
  # shellcheck disable=SC2086
  run "${seven[@]}" --rounds 8 --attack scale:-10 --attack-fraction 0.2857 --strategy $s --out "$WORK/robust-$name"
  acc=$(final "$WORK/robust-$name/metrics.jsonl")
  "$PY" -c "import sys; c, a = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not a >= c - 0.05)" \
    "$clean8" "$acc" || fail "$s under attack: final central accuracy $acc, clean fedavg $clean8: want within 0.05"
  pass "$s, 2 of 7 clients attacking with scale:-10: final central accuracy $acc (clean fedavg: $clean8)"
done
