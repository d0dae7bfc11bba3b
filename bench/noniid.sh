#!/usr/bin/env bash
# Non-IID quality: the test accuracy that fedavg, fedprox, scaffold and
# fednova reach with the cnn on Fashion-MNIST split over 10 clients, by
# Dirichlet(0.5) over the labels and by 2 labels per client (shards), for
# each of a few seeds (the seed of the partition, the initial model,
# sampling and local shuffling).
#
# Each run is one command, printed before it starts so it can be rerun
# alone:
#   fedc sim --clients 10 --scheme S ... --model cnn --rounds 20 --lr 0.01
#     --momentum 0.9 --batch-size 32 --local-epochs 1 --seed K
#     --test-data DATA --strategy NAME [--proximal-mu 0.01]
# Every client trains each round (fraction 1). "final" is the central test
# accuracy after the last round, "best" the highest of any round.
#
#   bench/noniid.sh [--no-setup] [--rounds R] [--seeds "1 2 3"] [--out DIR]
#                   [--only dirichlet|shards] [--strategies "fedavg scaffold"]
# Builds in Release into $FEDC_BUILD_DIR (default build-bench/). Writes
# DIR/<partition>-<strategy>-<seed>/metrics.jsonl (default DIR: out/noniid)
# and a Markdown table on stdout. About 1.5 minutes a run on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
setup=1 rounds=20 seeds="1 2 3" out="$root/out/noniid" only=all
strategies="fedavg fedprox scaffold fednova"
usage() {
  echo "usage: bench/noniid.sh [--no-setup] [--rounds R] [--seeds LIST] [--out DIR]" \
    "[--only dirichlet|shards] [--strategies LIST]" >&2
  exit 2
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-setup) setup=0 ;;
    --rounds) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || usage; rounds="$2"; shift ;;
    --seeds) [[ $# -ge 2 && "$2" =~ ^[0-9\ ]+$ ]] || usage; seeds="$2"; shift ;;
    --out) [[ $# -ge 2 ]] || usage; out="$2"; shift ;;
    --only) [[ $# -ge 2 && ( "$2" == dirichlet || "$2" == shards ) ]] || usage; only="$2"; shift ;;
    --strategies) [[ $# -ge 2 ]] || usage; strategies="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
cd "$root"
if [[ $setup == 1 ]]; then scripts/setup-deps.sh >&2; fi
build="${FEDC_BUILD_DIR:-$root/build-bench}"
FEDC_BUILD_DIR="$build" scripts/build.sh -DFEDC_BUILD_TESTS=OFF >&2
fedc="$build/tools/fedc"
data=/usr/share/datasets/fashion-mnist

declare -A part_flags=(
  [dirichlet]="--scheme dirichlet --alpha 0.5"
  [shards]="--scheme shards --labels-per-client 2"
)
declare -A strategy_flags=(
  [fedavg]="--strategy fedavg"
  [fedprox]="--strategy fedprox --proximal-mu 0.01"
  [scaffold]="--strategy scaffold"
  [fednova]="--strategy fednova"
)
parts="dirichlet shards"
[[ $only != all ]] && parts="$only"
for s in $strategies; do [[ -n "${strategy_flags[$s]:-}" ]] || { echo "unknown strategy $s" >&2; exit 2; }; done

# The central accuracy of every round of a metrics.jsonl, one per line.
accuracies() { grep -o '"central_eval_accuracy":[0-9.e-]*' "$1" | cut -d: -f2; }

echo "| partition | strategy | final accuracy, seeds $seeds | mean final | mean best |"
echo "|---|---|---|---|---|"
for p in $parts; do
  for s in $strategies; do
    finals=() bests=()
    for k in $seeds; do
      dir="$out/$p-$s-$k"
      rm -rf "$dir"
      # shellcheck disable=SC2086 # the flag strings are word lists
      cmd=("$fedc" sim --clients 10 ${part_flags[$p]} --model cnn --rounds "$rounds" --lr 0.01
        --momentum 0.9 --batch-size 32 --local-epochs 1 --seed "$k" --test-data "$data"
        ${strategy_flags[$s]} --out "$dir" --quiet)
      echo "+ ${cmd[*]}" >&2
      "${cmd[@]}" >&2
      finals+=("$(accuracies "$dir/metrics.jsonl" | tail -n 1)")
      bests+=("$(accuracies "$dir/metrics.jsonl" | sort -g | tail -n 1)")
    done
    mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.4f", s / NR }'; }
    echo "| $p | $s | $(printf '%.4f ' "${finals[@]}") | $(mean "${finals[@]}") | $(mean "${bests[@]}") |"
  done
done
