# Helpers shared by the integration tests (sourced). Every wait is bounded
# and every process started is killed when the test exits.
set -euo pipefail

: "${FEDC_BIN:?FEDC_BIN must point to the fedc program}"
: "${FEDC_MAKE_SYNTHETIC:?FEDC_MAKE_SYNTHETIC must point to make_synthetic}"
PY=/usr/bin/python3
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedc-test.XXXXXX")"
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [[ "${FEDC_KEEP_TEST_DIR:-0}" == "1" ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# A test PKI (docs/security.md): a CA, a server certificate for localhost and
# 127.0.0.1, and client certificates client-000 .. client-009. Servers run
# with mutual TLS: "${SERVER_TLS[@]}"; client I with "${CLIENT_TLS[@]}" after
# client_tls I.
PKI="$WORK/pki"
PKI_CLIENTS=10
if ! "$FEDC_BIN" certs --out "$PKI" --clients "$PKI_CLIENTS" > "$WORK/certs.log" 2>&1; then
  cat "$WORK/certs.log" >&2
  fail "'$FEDC_BIN certs' could not make the test certificates"
fi
SERVER_TLS=(--cert "$PKI/server.pem" --key "$PKI/server.key" --ca "$PKI/ca.pem")

# client_tls I: sets CLIENT_TLS to the TLS flags of client I (its own
# certificate; I < PKI_CLIENTS).
client_tls() {
  local id
  (( $1 < PKI_CLIENTS )) || fail "client_tls $1: the test PKI has $PKI_CLIENTS client certificates"
  id=$(printf 'client-%03d' "$1")
  CLIENT_TLS=(--ca "$PKI/ca.pem" --cert "$PKI/$id.pem" --key "$PKI/$id.key")
}

# A TCP port that nothing listens on right now.
free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# make_data DIR CLIENTS [SIGNAL]: a synthetic dataset split iid over CLIENTS.
make_data() {
  local dir="$1" clients="$2" signal="${3:-0.2}"
  mkdir -p "$dir/full"
  "$FEDC_MAKE_SYNTHETIC" "$dir/full" 3000 1000 7 "$signal"
  "$FEDC_BIN" partition --data "$dir/full" --clients "$clients" --scheme iid --seed 1 --out "$dir/parts" >/dev/null
}

# wait_pid PID SECONDS: waits for PID (a child of this shell), fails the test
# after SECONDS; sets WAIT_RC to its exit code.
wait_pid() {
  local pid="$1" limit="$2" waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    waited=$((waited + 1))
    if (( waited > limit * 5 )); then fail "process $pid still running after ${limit}s"; fi
  done
  WAIT_RC=0
  wait "$pid" || WAIT_RC=$?
}

# wait_for_lines FILE N SECONDS: until FILE has at least N lines.
wait_for_lines() {
  local f="$1" n="$2" limit="$3" waited=0
  while [[ ! -f "$f" || $(wc -l < "$f") -lt $n ]]; do
    sleep 0.1
    waited=$((waited + 1))
    if (( waited > limit * 10 )); then fail "$f has fewer than $n lines after ${limit}s"; fi
  done
}

# wait_for_sampled FILE N SECONDS: sets `full` to the first round of FILE
# (a metrics.jsonl) that sampled N clients, waiting up to SECONDS for one;
# empty if none came.
wait_for_sampled() {
  local f="$1" n="$2" limit="$3" t=0
  full=""
  while [[ -z "$full" ]] && ((t++ < limit * 10)); do
    full=$("$PY" -c 'import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1])]
except (OSError, ValueError):
    rows = []
print(next((str(r["round"]) for r in rows if r["clients_sampled"] == int(sys.argv[2])), ""))' "$f" "$n")
    [[ -n "$full" ]] || sleep 0.1
  done
}

# jq-like: metric FILE ROUND KEY prints the value of KEY in the line for ROUND.
metric() {
  "$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    o=json.loads(l)
    if o["round"]==int(sys.argv[2]): print(o[sys.argv[3]])' "$1" "$2" "$3"
}

# start_clients PORT N: starts fedc clients c0..c(N-1) on the partitioned
# data, each with its own certificate (mutual TLS with "${SERVER_TLS[@]}"),
# logging to $WORK/cI.log; their pids are in CLIENTS.
start_clients() {
  local port="$1" n="$2" i
  CLIENTS=()
  for ((i = 0; i < n; i++)); do
    client_tls "$i"
    "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$i" --node-id "c$i" \
      "${CLIENT_TLS[@]}" > "$WORK/c$i.log" 2>&1 &
    CLIENTS[$i]=$!; PIDS+=($!)
  done
}

# wait_clients SECONDS: every client in CLIENTS must exit 0.
wait_clients() {
  local i
  for i in "${!CLIENTS[@]}"; do
    wait_pid "${CLIENTS[$i]}" "$1"
    [[ "$WAIT_RC" == 0 ]] || { cat "$WORK/c$i.log"; fail "client c$i exited $WAIT_RC"; }
  done
}

# expect CODE PATTERN CMD...: runs CMD (at most 60 s), checks its exit code
# and that its stderr matches PATTERN; passes with stderr's first line.
expect() {
  local code="$1" pattern="$2"; shift 2
  local rc=0
  timeout 60 "$@" > "$WORK/out.txt" 2> "$WORK/err.txt" || rc=$?
  [[ "$rc" == "$code" ]] || { cat "$WORK/err.txt"; fail "'$*' exited $rc, want $code"; }
  grep -q -- "$pattern" "$WORK/err.txt" || { cat "$WORK/err.txt"; fail "'$*': stderr lacks '$pattern'"; }
  pass "$(head -c 150 "$WORK/err.txt" | head -n 1)"
}
