#!/usr/bin/env bash
# mpirun -np 2 fedc sim --mpi spreads the virtual clients over two ranks
# (rank 0 also runs the server); the result must be bit-identical to one
# process: the model and every round's metrics, with dropouts too.
source "$(dirname "$0")/lib.sh"
command -v mpirun > /dev/null || fail "mpirun not found (Debian: openmpi-bin)"
"$FEDC_BIN" sim --help | grep -q -- "--mpi" || fail "fedc was built without MPI"
mkdir -p "$WORK/data"
"$FEDC_MAKE_SYNTHETIC" "$WORK/data" 3000 500 7 0.2
common=(--clients 24 --data "$WORK/data" --min-samples 5 --model mlp --min-clients 4 --fraction-fit 0.5
        --rounds 3 --seed 6 --dropout-rate 0.2 --test-data "$WORK/data" --quiet)
"$FEDC_BIN" sim "${common[@]}" --out "$WORK/one" 2> "$WORK/one.err" || { cat "$WORK/one.err"; fail "one process failed"; }
root=()
if [[ $(id -u) == 0 ]]; then root=(--allow-run-as-root); fi
timeout 240 mpirun "${root[@]}" --oversubscribe -np 2 "$FEDC_BIN" sim --mpi "${common[@]}" --out "$WORK/two" \
  > "$WORK/two.out" 2> "$WORK/two.err" || { cat "$WORK/two.err"; fail "mpirun -np 2 fedc sim --mpi failed"; }
grep -q "over MPI" "$WORK/two.err" || { cat "$WORK/two.err"; fail "the run did not use MPI"; }
pass "mpirun -np 2 fedc sim --mpi ran"
cmp "$WORK/one/model.safetensors" "$WORK/two/model.safetensors" || fail "2 ranks and 1 process give different models"
pass "2 ranks: bit-identical model to one process"
"$PY" - "$WORK/one/metrics.jsonl" "$WORK/two/metrics.jsonl" <<'PYEOF'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
two = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(two) == 3
for a, b in zip(one, two):
    for k in a:
        if k != "seconds":
            assert a[k] == b[k], f"round {a['round']}: {k}: {a[k]} vs {b[k]}"
PYEOF
pass "2 ranks: the same metrics in every round"
pass "test_sim_mpi"
