#!/usr/bin/env bash
# mpirun -np 2 fedc sim --mpi spreads the virtual clients over two ranks
# (rank 0 also runs the server). Rank 1 folds its clients' updates into sums
# of its own, which MPI_Reduce adds into the server's; answers with faults
# go to rank 0 whole. The result must be bit-identical to one process: the
# model and every round's metrics, with dropouts and stragglers too.
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
# The collective path was taken: rank 1 folded updates, the server kept
# them all, their sums were reduced once per round, and the dropouts' cut
# answers went whole.
"$PY" - "$WORK/two.err" <<'PYEOF' || { cat "$WORK/two.err"; fail "the updates did not take the MPI_Reduce path"; }
import re, sys
m = re.search(r"MPI: (\d+) updates folded on the ranks where they were trained \((\d+) kept by the server\), "
              r"their sums added with MPI_Reduce in (\d+) rounds; (\d+) other answers", open(sys.argv[1]).read())
assert m, "no MPI summary line"
folded, kept, reduces, whole = map(int, m.groups())
assert folded >= 6 and kept == folded, (folded, kept)
assert reduces == 3, reduces
assert whole > 0, whole
PYEOF
pass "2 ranks: rank 1 folded its updates, MPI_Reduce summed them in each of the 3 rounds"
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

# Stragglers later than the round timeout: their answers go to rank 0 whole,
# held back there, and arrive after the round; the rest are folded where
# they ran. The model is the same as in one process.
strag=(--clients 16 --data "$WORK/data" --min-samples 5 --model mlp --min-clients 2 --rounds 2 --seed 3
       --straggler-rate 0.3 --straggler-delay 2.5 --round-timeout 2 --fraction-evaluate 0 --quiet)
"$FEDC_BIN" sim "${strag[@]}" --out "$WORK/s1" 2> "$WORK/s1.err" || { cat "$WORK/s1.err"; fail "stragglers: one process failed"; }
timeout 120 mpirun "${root[@]}" --oversubscribe -np 2 "$FEDC_BIN" sim --mpi "${strag[@]}" --out "$WORK/s2" \
  > /dev/null 2> "$WORK/s2.err" || { cat "$WORK/s2.err"; fail "stragglers: mpirun -np 2 failed"; }
cmp "$WORK/s1/model.safetensors" "$WORK/s2/model.safetensors" || fail "stragglers: 2 ranks and 1 process differ"
"$PY" - "$WORK/s1/metrics.jsonl" "$WORK/s2/metrics.jsonl" <<'PYEOF'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
two = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(two) == 2
assert sum(r["clients_failed"] for r in one) >= 1, one
for a, b in zip(one, two):
    for k in ("failed", "clients_sampled", "clients_ok", "clients_failed", "train_loss"):
        assert a[k] == b[k], f"round {a['round']}: {k}: {a[k]} vs {b[k]}"
PYEOF
pass "stragglers: 2 ranks give the model and counts of one process"

# A round timeout so short that some of rank 1's folded updates arrive too
# late: the server refuses them, rank 1 takes them back out, and each
# round's sums still hold exactly the updates the server kept (rank 0
# checks the count and weight of every reduction and fails the run if not).
timeout 120 mpirun "${root[@]}" --oversubscribe -np 2 "$FEDC_BIN" sim --mpi --clients 24 --data "$WORK/data" \
  --min-samples 5 --model mlp --min-clients 1 --rounds 4 --seed 6 --round-timeout 0.1 --local-epochs 3 \
  --fraction-evaluate 0 --quiet --out "$WORK/late" > /dev/null 2> "$WORK/late.err" \
  || { cat "$WORK/late.err"; fail "short round timeout over MPI failed"; }
grep -q "updates folded on the ranks" "$WORK/late.err" || { cat "$WORK/late.err"; fail "short timeout: no MPI summary"; }
grep "updates folded on the ranks" "$WORK/late.err" | sed 's/^.*MPI: /  /'
pass "late updates over MPI: every round's sums matched what the server kept"
pass "test_sim_mpi"
