#!/usr/bin/env bash
# Runs every fedc benchmark and prints a table, or with --json one JSON
# object. docs/benchmarks.md says what each number measures.
#
#   bench/run.sh [--json] [--no-setup]
#
#   --json      print only one JSON object on stdout (progress goes to stderr)
#   --no-setup  do not run scripts/setup-deps.sh --bench (packages already there)
#
# Steps: installs the Debian packages (scripts/setup-deps.sh --bench, which
# adds python3-torch), builds in Release into build-bench/, then runs
# bench_agg, bench_trainer, bench/pytorch_cnn.py, bench_round with 10 and
# 50 clients, bench_load (1,000 mutual-TLS clients in one process, then 20
# clients with a 100 MiB model: about 2.7 GB of memory), bench_strategy,
# then bench_secagg. Everything runs on this
# machine (loopback only) and each step has a time limit. A benchmark
# that fails is reported as null and makes the script exit 1 after the
# others have run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
json=0
setup=1
for a in "$@"; do
  case "$a" in
    --json) json=1 ;;
    --no-setup) setup=0 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done

cd "$root"
# Progress and build output go to stderr so that --json leaves stdout clean.
if [[ $setup -eq 1 ]]; then
  scripts/setup-deps.sh --bench >&2
fi
FEDC_BUILD_DIR=build-bench scripts/build.sh -DFEDC_BUILD_BENCH=ON >&2

bin="$root/build-bench/bench"
results="$(mktemp -d "${TMPDIR:-/tmp}/fedc-bench-XXXXXX")"
trap 'rm -rf "$results"' EXIT
failed=0

# run NAME SECONDS COMMAND...: runs one benchmark under a time limit and
# keeps the last JSON line it prints in $results/NAME.json.
run() {
  local name="$1" limit="$2"
  shift 2
  echo "run.sh: $name ..." >&2
  if timeout --kill-after=10 "$limit" "$@" >"$results/$name.out"; then
    grep '^{' "$results/$name.out" | tail -n 1 >"$results/$name.json" || true
  else
    echo "run.sh: $name failed or took longer than $limit s" >&2
    failed=1
  fi
  if [[ ! -s "$results/$name.json" ]]; then
    echo '{}' >"$results/$name.json"
    failed=1
  fi
}

run agg 300 "$bin/bench_agg" --json
run trainer 300 "$bin/bench_trainer" --json
run pytorch 600 /usr/bin/python3 bench/pytorch_cnn.py --json
run round10 180 "$bin/bench_round" --clients 10 --timeout 120 --json
run round50 300 "$bin/bench_round" --clients 50 --timeout 240 --json
run load 300 "$bin/bench_load" --clients 1000 --rounds 3 --timeout 240 --json
run load100 300 "$bin/bench_load" --clients 20 --rounds 2 --model-mb 100 --timeout 240 --json
run strategy 300 "$bin/bench_strategy" --json
run secagg 600 "$bin/bench_secagg" --json

cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)"
FEDC_BENCH_RESULTS="$results" FEDC_BENCH_JSON="$json" FEDC_BENCH_CPU="${cpu:-unknown}" \
  FEDC_BENCH_CORES="$(nproc)" /usr/bin/python3 - <<'EOF'
import json, os

d = os.environ["FEDC_BENCH_RESULTS"]
def load(name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.load(f)

agg, tr, pt = load("agg"), load("trainer"), load("pytorch")
r10, r50 = load("round10"), load("round50")
ld, ld100 = load("load"), load("load100")
strat = load("strategy")
sa = load("secagg")
strategy_names = ["fedavg", "fedavgm", "fedprox", "fedadagrad", "fedadam", "fedyogi",
                  "scaffold", "fednova", "median", "trimmed-mean", "krum", "multikrum", "bulyan"]

def ratio(a, b):
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

out = {
    "agg_gbps": agg.get("agg_gbps"),
    "memcpy_gbps": agg.get("memcpy_gbps"),
    "agg_over_memcpy": ratio(agg.get("agg_gbps"), agg.get("memcpy_gbps")),
    "trainer_samples_per_s": tr.get("trainer_samples_per_s"),
    "pytorch_samples_per_s": pt.get("pytorch_samples_per_s"),
    "trainer_over_pytorch": ratio(tr.get("trainer_samples_per_s"), pt.get("pytorch_samples_per_s")),
    "round_seconds": r10.get("round_seconds"),
    "server_rss_mib": r10.get("server_rss_mib"),
    "server_rss_models": r10.get("server_rss_models"),
    "round_seconds_50": r50.get("round_seconds"),
    "server_rss_mib_50": r50.get("server_rss_mib"),
    "server_rss_models_50": r50.get("server_rss_models"),
    # 1,000 mutual-TLS clients in one process, 3 rounds of a 16 KiB model:
    # mean round time, the server's peak RSS and open descriptors, and the
    # time from starting the clients to the first fit (all connected).
    "load_round_seconds": ld.get("round_seconds_mean"),
    "load_server_rss_mib": ld.get("server_peak_rss_mib"),
    "load_server_fds": ld.get("server_peak_fds"),
    "load_connect_seconds": ld.get("connect_seconds"),
    # 20 clients, a 100 MiB model, 2 rounds.
    "load100_round_seconds": ld100.get("round_seconds_mean"),
    "load100_server_rss_mib": ld100.get("server_peak_rss_mib"),
    "load100_loadgen_rss_mib": ld100.get("loadgen_peak_rss_mib"),
    # Per strategy: seconds of one server round over 100 updates of a 4 MiB
    # model, and the bytes it holds (computed, and measured peak RSS growth).
    "strategies": {n: strat.get(n) for n in strategy_names},
    # Secure aggregation: mask expansion (AES-128-CTR) against OpenSSL's raw
    # AES-128-CTR, and one SecAgg round of 100 clients (complete graph, no
    # dropouts) against a plain FedAvg round, in CPU seconds.
    "secagg_expand_gbps": sa.get("expand_gbps"),
    "secagg_aes128ctr_gbps": sa.get("aes128ctr_gbps"),
    "secagg_expand_over_aes": sa.get("expand_over_aes"),
    "secagg_prg_target_met": sa.get("prg_target_met"),
    "secagg_over_plain_100": sa.get("secagg_over_plain_100"),
    "secagg_round_target_met": sa.get("round_target_met"),
    "cpu": os.environ["FEDC_BENCH_CPU"],
    "cores": int(os.environ["FEDC_BENCH_CORES"]),
}
if isinstance(out["pytorch_samples_per_s"], float):
    out["pytorch_samples_per_s"] = round(out["pytorch_samples_per_s"], 1)
out["agg_target_met"] = None if out["agg_over_memcpy"] is None else out["agg_over_memcpy"] >= 0.7
# bench_load exits 1 unless all 1,000 clients finished every round.
out["load_target_met"] = None if out["load_server_rss_mib"] is None else out["load_server_rss_mib"] < 512
out["trainer_target_met"] = None if out["trainer_over_pytorch"] is None else out["trainer_over_pytorch"] >= 2.0

if os.environ["FEDC_BENCH_JSON"] == "1":
    print(json.dumps(out))
else:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)
    def met(v):
        return "n/a" if v is None else ("met" if v else "MISSED")
    rows = [
        ("aggregation (decode+check+fold)", f(out["agg_gbps"], ".2f") + " GB/s", ""),
        ("memcpy of the same bytes", f(out["memcpy_gbps"], ".2f") + " GB/s", ""),
        ("  agg / memcpy", f(out["agg_over_memcpy"], ".3f"), ">= 0.7: " + met(out["agg_target_met"])),
        ("built-in trainer, cnn", f(out["trainer_samples_per_s"], ".0f") + " samples/s", ""),
        ("PyTorch, same cnn", f(out["pytorch_samples_per_s"], ".0f") + " samples/s", ""),
        ("  trainer / PyTorch", f(out["trainer_over_pytorch"], ".2f"), ">= 2: " + met(out["trainer_target_met"])),
        ("round, 10 clients, 4 MiB model", f(out["round_seconds"], ".3f") + " s", ""),
        ("  server peak RSS", f(out["server_rss_mib"], ".1f") + " MiB",
         f(out["server_rss_models"], ".1f") + " x model"),
        ("round, 50 clients, 4 MiB model", f(out["round_seconds_50"], ".3f") + " s", ""),
        ("  server peak RSS", f(out["server_rss_mib_50"], ".1f") + " MiB",
         f(out["server_rss_models_50"], ".1f") + " x model"),
        ("round, 1,000 TLS clients, 16 KiB", f(out["load_round_seconds"], ".3f") + " s",
         "connect " + f(out["load_connect_seconds"], ".1f") + " s"),
        ("  server peak RSS", f(out["load_server_rss_mib"], ".1f") + " MiB",
         f(out["load_server_fds"], "d") + " fds; < 512 MiB: " + met(out["load_target_met"])),
        ("round, 20 clients, 100 MiB model", f(out["load100_round_seconds"], ".3f") + " s", ""),
        ("  server peak RSS", f(out["load100_server_rss_mib"], ".1f") + " MiB",
         "clients' process " + f(out["load100_loadgen_rss_mib"], ".0f") + " MiB"),
    ]
    for n in strategy_names:
        r = out["strategies"][n] or {}
        held = r.get("held_models")
        rss = r.get("rss_growth_models")
        rows.append((f"strategy {n}, 100 x 4 MiB", f(r.get("seconds"), ".3f") + " s",
                     "holds " + f(held, ".1f") + " x model, RSS +" + f(rss, ".1f") + " x model"))
    rows += [
        ("secagg mask expansion", f(out["secagg_expand_gbps"], ".2f") + " GB/s", ""),
        ("OpenSSL AES-128-CTR", f(out["secagg_aes128ctr_gbps"], ".2f") + " GB/s", ""),
        ("  expansion / AES-128-CTR", f(out["secagg_expand_over_aes"], ".3f"),
         ">= 0.7: " + met(out["secagg_prg_target_met"])),
        ("secagg / plain round, 100 clients", f(out["secagg_over_plain_100"], ".1f"),
         "<= 2: " + met(out["secagg_round_target_met"])),
    ]
    print(f"fedc benchmarks on {out['cpu']}, {out['cores']} cores")
    for name, value, note in rows:
        print(f"  {name:<34} {value:>18}  {note}")
EOF
exit "$failed"
