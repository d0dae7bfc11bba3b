#!/usr/bin/env bash
# Every built-in strategy (--strategy) runs a 3-round simulated federation
# end to end and writes its model and metrics (the robust aggregators with 7
# clients, enough for bulyan with --byzantine 1); FedAvgM with momentum 0
# and server-lr 1, and FedProx with mu 0, give the very bytes FedAvg gives;
# bad strategy flags are refused with a message that names them. See
# docs/strategies.md.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
common=(--clients 3 --data "$WORK/data/full" --scheme iid --partition-seed 1 --model mlp --min-clients 3
        --rounds 3 --lr 0.02 --momentum 0.9 --seed 5 --quiet)

run() { # run NAME FLAGS...: fedc sim into $WORK/NAME
  local name="$1"; shift
  "$FEDC_BIN" sim "${common[@]}" "$@" --out "$WORK/$name" 2> "$WORK/$name.err" \
    || { cat "$WORK/$name.err"; fail "fedc sim $* failed"; }
  [[ -s "$WORK/$name/model.safetensors" ]] || fail "$name: no model.safetensors"
  "$PY" - "$WORK/$name/metrics.jsonl" <<'PYEOF' || fail "$name: bad metrics.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 3 and all(not r["failed"] for r in rows), rows
PYEOF
}

run default
run fedavg --strategy fedavg
run fedavgm0 --strategy fedavgm --server-momentum 0 --server-lr 1
run fedavgm --strategy fedavgm --server-momentum 0.9 --server-lr 1
run fedadagrad --strategy fedadagrad
run fedadam --strategy fedadam --server-lr 0.01
run fedyogi --strategy fedyogi
run fedprox --strategy fedprox --proximal-mu 0.01
run fedprox0 --strategy fedprox --proximal-mu 0
run scaffold --strategy scaffold
run fednova --strategy fednova
robust=(--clients 7 --min-clients 7)
run median "${robust[@]}" --strategy median
run trimmed "${robust[@]}" --strategy trimmed-mean --trim-beta 0.2
run krum "${robust[@]}" --strategy krum --byzantine 1
run multikrum "${robust[@]}" --strategy multikrum --byzantine 1 --krum-m 3
run bulyan "${robust[@]}" --strategy bulyan --byzantine 1
pass "each strategy ran 3 rounds and wrote its model and metrics.jsonl"

# SCAFFOLD's simulated clients keep their control variates in files, one
# each, and a new run starts from zero again.
for i in 0 1 2; do
  [[ -s "$WORK/scaffold/client-state/scaffold-$i.safetensors" ]] || fail "no control variate for client $i"
done
cp -r "$WORK/scaffold" "$WORK/scaffold-first"
run scaffold --strategy scaffold
grep -q "removed 3 clients' state files of an earlier run" "$WORK/scaffold.err" \
  || { cat "$WORK/scaffold.err"; fail "a second run did not clear the clients' state"; }
cmp "$WORK/scaffold/model.safetensors" "$WORK/scaffold-first/model.safetensors" \
  || fail "a second SCAFFOLD run from the same seed gave another model"
! cmp -s "$WORK/scaffold/model.safetensors" "$WORK/fedavg/model.safetensors" \
  || fail "scaffold gave fedavg's model"
pass "scaffold keeps one control variate per client; a rerun starts from zero and repeats the model"

# The robust aggregators see the updates in node-id order: one client at a
# time gives the bytes that seven at once give.
run bulyan1 "${robust[@]}" --strategy bulyan --byzantine 1 --concurrency 1
cmp "$WORK/bulyan/model.safetensors" "$WORK/bulyan1/model.safetensors" \
  || fail "bulyan depends on the order the updates arrive in"
! cmp -s "$WORK/median/model.safetensors" "$WORK/krum/model.safetensors" \
  || fail "median and krum gave the same model"
pass "bulyan does not depend on arrival order; median and krum differ"

# With --mpi the other ranks fold nothing for a robust aggregator: every
# answer goes whole to rank 0, and the model is the one-process model.
if command -v mpirun > /dev/null && "$FEDC_BIN" sim --help | grep -q -- "--mpi"; then
  root=()
  if [[ $(id -u) == 0 ]]; then root=(--allow-run-as-root); fi
  # Open MPI's own allocations outlive MPI_Finalize: not ours to report.
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 100 mpirun "${root[@]}" --oversubscribe -np 2 "$FEDC_BIN" sim --mpi "${common[@]}" "${robust[@]}" \
    --strategy bulyan --byzantine 1 --out "$WORK/bulyan_mpi" > "$WORK/bulyan_mpi.out" 2> "$WORK/bulyan_mpi.err" \
    || { cat "$WORK/bulyan_mpi.err"; fail "mpirun -np 2 fedc sim --mpi --strategy bulyan failed"; }
  grep -q "MPI: 0 updates folded" "$WORK/bulyan_mpi.err" || { cat "$WORK/bulyan_mpi.err"; fail "a rank folded updates"; }
  cmp "$WORK/bulyan/model.safetensors" "$WORK/bulyan_mpi/model.safetensors" \
    || fail "bulyan over MPI differs from one process"
  pass "bulyan over MPI (answers sent whole) gives the one-process model"
fi

cmp "$WORK/default/model.safetensors" "$WORK/fedavg/model.safetensors" \
  || fail "--strategy fedavg differs from no --strategy"
cmp "$WORK/fedavg/model.safetensors" "$WORK/fedavgm0/model.safetensors" \
  || fail "fedavgm with momentum 0 and server-lr 1 differs from fedavg"
pass "fedavgm --server-momentum 0 --server-lr 1 is byte-identical to fedavg"
cmp "$WORK/fedavg/model.safetensors" "$WORK/fedprox0/model.safetensors" \
  || fail "fedprox with mu 0 differs from fedavg"
! cmp -s "$WORK/fedavg/model.safetensors" "$WORK/fedprox/model.safetensors" \
  || fail "fedprox with mu 0.01 gave fedavg's model"
pass "fedprox --proximal-mu 0 is byte-identical to fedavg; mu 0.01 is not"
! cmp -s "$WORK/fedavg/model.safetensors" "$WORK/fedadam/model.safetensors" \
  || fail "fedadam gave fedavg's model"
pass "fedadam moves the model differently from fedavg"

expect_usage() { # expect_usage MESSAGE FLAGS...: fedc sim exits 2 naming MESSAGE
  local want="$1"; shift
  set +e
  "$FEDC_BIN" sim "${common[@]}" "$@" --out "$WORK/bad" > "$WORK/bad.out" 2> "$WORK/bad.err"
  local rc=$?
  set -e
  [[ $rc == 2 ]] || { cat "$WORK/bad.err"; fail "$* exited $rc, want 2"; }
  grep -qF -- "$want" "$WORK/bad.err" || { cat "$WORK/bad.err"; fail "$*: message lacks '$want'"; }
}
expect_usage "known: fedavg, fedavgm" --strategy fedsgd
expect_usage "--server-momentum must be in [0, 1)" --strategy fedavgm --server-momentum 1
expect_usage "--proximal-mu is required" --strategy fedprox
expect_usage "--server-lr does not apply to strategy 'fedavg'" --server-lr 0.5
expect_usage "--tau must be positive" --strategy fedyogi --tau 0
expect_usage "--trim-beta must be in [0, 0.5)" --strategy trimmed-mean --trim-beta 0.5
expect_usage "--byzantine must be a whole number" --strategy krum --byzantine 0.5
expect_usage "raise --min-clients (now 3) to 7" --strategy bulyan --byzantine 1
pass "bad strategy flags are refused, naming the flag"
