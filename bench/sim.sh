#!/usr/bin/env bash
# fedc sim at scale: clients trained per second and peak memory, for 1,000
# and 10,000 clients per round out of a population of 10,000 (Fashion-MNIST
# in 2-label shards, the mlp, one local epoch), in one process and over 2
# MPI ranks, and how memory changes with the population.
#   bench/sim.sh [--json] [--no-setup]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
json=0; setup=1
for a in "$@"; do
  case "$a" in
    --json) json=1 ;;
    --no-setup) setup=0 ;;
    *) echo "usage: bench/sim.sh [--json] [--no-setup]" >&2; exit 2 ;;
  esac
done
cd "$root"
if [[ $setup == 1 ]]; then scripts/setup-deps.sh >&2; fi
FEDC_BUILD_DIR="$root/build-bench" scripts/build.sh -DFEDC_BUILD_TESTS=OFF >&2
fedc="$root/build-bench/tools/fedc"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

root=()
if [[ $(id -u) == 0 ]]; then root=(--allow-run-as-root); fi

# run POPULATION PER_ROUND SCHEME [RANKS] -> "clients_per_s peak_rss_mib"
# With RANKS, peak RSS is that of the largest rank (mpirun reports the
# children's maximum).
run() {
  local pop="$1" per="$2" scheme="$3" ranks="${4:-0}" rounds=3
  local frac; frac=$(awk "BEGIN { print $per / $pop }")
  local launch=("$fedc" sim)
  if [[ $ranks -gt 0 ]]; then
    launch=(mpirun "${root[@]}" --oversubscribe -np "$ranks" "$fedc" sim --mpi --concurrency 1)
  fi
  /usr/bin/time -f "%M" -o "$work/rss" "${launch[@]}" --clients "$pop" --scheme "$scheme" --labels-per-client 2 \
    --min-samples 1 --model mlp --fraction-fit "$frac" --min-clients 1 --fraction-evaluate 0 \
    --rounds "$rounds" --seed 1 --quiet --out "$work/out" 2> "$work/err" || { cat "$work/err" >&2; exit 1; }
  # Training rate from the rounds' own times (set-up excluded).
  awk -v per="$per" -v rss="$(tail -n 1 "$work/rss")" '
    { match($0, /"seconds":[0-9.e-]+/); s += substr($0, RSTART + 10, RLENGTH - 10); n++ }
    END { printf "%.0f %.1f\n", per * n / s, rss / 1024 }' "$work/out/metrics.jsonl"
}

read -r cps1k rss1k < <(run 10000 1000 shards)
read -r cps10k rss10k < <(run 10000 10000 shards)
read -r _ rss_pop1k < <(run 1000 1000 shards)
read -r _ rss_pop50k < <(run 50000 1000 iid)
read -r cps1k_2 rss1k_2 < <(run 10000 1000 shards 2)
read -r cps10k_2 rss10k_2 < <(run 10000 10000 shards 2)
if [[ $json == 1 ]]; then
  printf '{"sim_clients_per_s_1000": %s, "sim_peak_rss_mib_1000": %s, "sim_clients_per_s_10000": %s, "sim_peak_rss_mib_10000": %s, "sim_peak_rss_mib_population_1000": %s, "sim_peak_rss_mib_population_50000": %s, "mpi2_clients_per_s_1000": %s, "mpi2_peak_rss_mib_1000": %s, "mpi2_clients_per_s_10000": %s, "mpi2_peak_rss_mib_10000": %s}\n' \
    "$cps1k" "$rss1k" "$cps10k" "$rss10k" "$rss_pop1k" "$rss_pop50k" "$cps1k_2" "$rss1k_2" "$cps10k_2" "$rss10k_2"
else
  printf '%-44s %12s %14s\n' "fedc sim, mlp, 1 process" "clients/s" "peak RSS MiB"
  printf '%-44s %12s %14s\n' "1,000 per round of 10,000" "$cps1k" "$rss1k"
  printf '%-44s %12s %14s\n' "10,000 per round of 10,000" "$cps10k" "$rss10k"
  printf '%-44s %12s %14s\n' "1,000 per round of 1,000" "-" "$rss_pop1k"
  printf '%-44s %12s %14s\n' "1,000 per round of 50,000 (iid)" "-" "$rss_pop50k"
  printf '%-44s %12s %14s\n' "2 MPI ranks: 1,000 per round of 10,000" "$cps1k_2" "$rss1k_2"
  printf '%-44s %12s %14s\n' "2 MPI ranks: 10,000 per round of 10,000" "$cps10k_2" "$rss10k_2"
fi
