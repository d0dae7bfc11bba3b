#!/usr/bin/env bash
# fedc sim at scale, with the mlp and one local epoch (batch 32):
#  - throughput: clients trained per second and peak memory for 1,000 and
#    10,000 clients per round out of a population of 10,000 (Fashion-MNIST
#    in 2-label shards, 6 examples per client), in one process and over 2
#    MPI ranks, and how memory changes with the population;
#  - population: 10,000 clients per round out of populations of 10,000,
#    50,000 and 100,000, each client drawing 20 examples (--scheme sample:
#    clients overlap, since Fashion-MNIST has only 60,000).
#   bench/sim.sh [--json] [--no-setup] [--only throughput|population]
# Builds in Release into $FEDC_BUILD_DIR (default build-bench/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
json=0; setup=1; only=all
usage() { echo "usage: bench/sim.sh [--json] [--no-setup] [--only throughput|population]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --json) json=1 ;;
    --no-setup) setup=0 ;;
    --only) [[ $# -ge 2 && ( "$2" == throughput || "$2" == population ) ]] || usage; only="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
cd "$root"
if [[ $setup == 1 ]]; then scripts/setup-deps.sh >&2; fi
build="${FEDC_BUILD_DIR:-$root/build-bench}"
FEDC_BUILD_DIR="$build" scripts/build.sh -DFEDC_BUILD_TESTS=OFF >&2
fedc="$build/tools/fedc"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

asroot=()
if [[ $(id -u) == 0 ]]; then asroot=(--allow-run-as-root); fi
shards=(--scheme shards --labels-per-client 2 --min-samples 1)
iid=(--scheme iid --min-samples 1)
sample=(--scheme sample --examples-per-client 20 --min-samples 1)

# run POPULATION PER_ROUND RANKS PARTITION_FLAGS... -> "clients_per_s peak_rss_mib wall_s"
# RANKS 0 is one process. With RANKS, peak RSS is that of the largest rank
# (mpirun reports the children's maximum).
run() {
  local pop="$1" per="$2" ranks="$3" rounds=3
  shift 3
  local frac; frac=$(awk "BEGIN { print $per / $pop }")
  local launch=("$fedc" sim)
  if [[ $ranks -gt 0 ]]; then
    launch=(mpirun "${asroot[@]}" --oversubscribe -np "$ranks" "$fedc" sim --mpi --concurrency 1)
  fi
  /usr/bin/time -f "%M %e" -o "$work/rss" "${launch[@]}" --clients "$pop" "$@" --model mlp \
    --fraction-fit "$frac" --min-clients 1 --fraction-evaluate 0 --rounds "$rounds" --seed 1 --quiet \
    --out "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  # Training rate from the rounds' own times (set-up excluded).
  read -r rss wall < <(tail -n 1 "$work/rss")
  awk -v per="$per" -v rss="$rss" -v wall="$wall" '
    { match($0, /"seconds":[0-9.e-]+/); s += substr($0, RSTART + 10, RLENGTH - 10); n++ }
    END { printf "%.0f %.1f %.1f\n", per * n / s, rss / 1024, wall }' "$work/out/metrics.jsonl"
}

fields=()
rows=()
# add KEY VALUE: one JSON field
add() { fields+=("\"$1\": $2"); }
row() { rows+=("$(printf '%-52s %10s %14s %8s' "$1" "$2" "$3" "$4")"); }

if [[ $only != population ]]; then
  read -r cps1k rss1k wall1k < <(run 10000 1000 0 "${shards[@]}")
  read -r cps10k rss10k wall10k < <(run 10000 10000 0 "${shards[@]}")
  read -r _ rss_pop1k wall_pop1k < <(run 1000 1000 0 "${shards[@]}")
  read -r _ rss_pop50k wall_pop50k < <(run 50000 1000 0 "${iid[@]}")
  read -r cps1k_2 rss1k_2 wall1k_2 < <(run 10000 1000 2 "${shards[@]}")
  read -r cps10k_2 rss10k_2 wall10k_2 < <(run 10000 10000 2 "${shards[@]}")
  add sim_clients_per_s_1000 "$cps1k"; add sim_peak_rss_mib_1000 "$rss1k"
  add sim_clients_per_s_10000 "$cps10k"; add sim_peak_rss_mib_10000 "$rss10k"
  add sim_peak_rss_mib_population_1000 "$rss_pop1k"; add sim_peak_rss_mib_population_50000 "$rss_pop50k"
  add mpi2_clients_per_s_1000 "$cps1k_2"; add mpi2_peak_rss_mib_1000 "$rss1k_2"
  add mpi2_clients_per_s_10000 "$cps10k_2"; add mpi2_peak_rss_mib_10000 "$rss10k_2"
  row "1 process: 1,000 per round of 10,000" "$cps1k" "$rss1k" "$wall1k"
  row "1 process: 10,000 per round of 10,000" "$cps10k" "$rss10k" "$wall10k"
  row "1 process: 1,000 per round of 1,000" "-" "$rss_pop1k" "$wall_pop1k"
  row "1 process: 1,000 per round of 50,000 (iid)" "-" "$rss_pop50k" "$wall_pop50k"
  row "2 MPI ranks: 1,000 per round of 10,000" "$cps1k_2" "$rss1k_2" "$wall1k_2"
  row "2 MPI ranks: 10,000 per round of 10,000" "$cps10k_2" "$rss10k_2" "$wall10k_2"
fi
if [[ $only != throughput ]]; then
  for pop in 10000 50000 100000; do
    read -r cps rss wall < <(run "$pop" 10000 0 "${sample[@]}")
    add "sample_clients_per_s_population_$pop" "$cps"; add "sample_peak_rss_mib_population_$pop" "$rss"
    add "sample_wall_s_population_$pop" "$wall"
    row "1 process: 10,000 per round of ${pop%000},000 (sample, 20 each)" "$cps" "$rss" "$wall"
  done
fi
if [[ $json == 1 ]]; then
  (IFS=,; printf '{%s}\n' "${fields[*]}") | sed 's/,"/, "/g'
else
  printf '%-52s %10s %14s %8s\n' "fedc sim, mlp, 3 rounds" "clients/s" "peak RSS MiB" "wall s"
  printf '%s\n' "${rows[@]}"
fi
