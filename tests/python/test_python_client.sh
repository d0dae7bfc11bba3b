#!/usr/bin/env bash
# Interoperability test of the wire protocol: a client written in Python from
# docs/protocol.md and src/proto/fedc.proto alone (tests/python/fedc_client.py)
# joins a federation with fedc's own C clients.
#
#   0. own model: handshake and framing rules (refusals come as Error), then
#                 two Python clients and a server without a model: one client
#                 is asked for the initial parameters (get_parameters).
#   1. honest:    Python client + 2 C clients, --min-clients 3, 3 rounds: every
#                 round aggregates all three updates and accuracy improves.
#   2. bad shape: the Python client sends a wrongly shaped tensor; the server
#                 logs both shapes, rejects the update and the rounds go on.
#   3. NaN:       the Python client sends NaN values; same.
#
# Every connection is mutual TLS 1.3 (a test PKI from fedc certs): the Python
# client speaks it with Python's ssl module.
#
# Needs: $FEDC_BIN (the fedc program), protoc, Debian's python3-protobuf and
# python3-numpy (run with /usr/bin/python3), and the Fashion-MNIST IDX files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src_dir="${FEDC_SOURCE_DIR:-$here/../..}"
proto="$src_dir/src/proto/fedc.proto"
dataset="${FEDC_DATASET:-/usr/share/datasets/fashion-mnist}"
PY="${FEDC_PYTHON:-/usr/bin/python3}"
: "${FEDC_BIN:?FEDC_BIN must name the fedc program}"

fail() { echo "FAIL: $*" >&2; exit 1; }

[ -x "$FEDC_BIN" ] || fail "FEDC_BIN=$FEDC_BIN is not executable"
[ -f "$proto" ] || fail "no $proto"
[ -f "$dataset/train-images-idx3-ubyte.gz" ] || fail "no dataset in $dataset"
"$PY" -c 'import google.protobuf, numpy' ||
    fail "$PY lacks google.protobuf or numpy (Debian: python3-protobuf python3-numpy)"

work="$(mktemp -d "${TMPDIR:-/tmp}/fedc-pytest.XXXXXX")"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- a test PKI: the server's certificate names 127.0.0.1; client-000 and
# client-001 are the C clients', client-002 and client-003 the Python ones'.
"$FEDC_BIN" certs --out "$work/pki" --clients 4 >"$work/certs.log" 2>&1 ||
    { cat "$work/certs.log" >&2; fail "'$FEDC_BIN certs' could not make the test certificates"; }
server_tls=(--cert "$work/pki/server.pem" --key "$work/pki/server.key" --ca "$work/pki/ca.pem")
# client_tls I: the TLS flags of client certificate I (0 .. 3)
client_tls() {
    echo --ca "$work/pki/ca.pem" --cert "$work/pki/client-00$1.pem" --key "$work/pki/client-00$1.key"
}

# --- message classes: generated at test time, never committed
if ! "$PY" -c 'import fedc_pb2' 2>/dev/null; then
    command -v protoc >/dev/null ||
        fail "protoc not found (Debian: apt-get install protobuf-compiler)"
    mkdir -p "$work/pb"
    protoc -I "$(dirname "$proto")" --python_out "$work/pb" "$proto"
    export PYTHONPATH="$work/pb${PYTHONPATH:+:$PYTHONPATH}"
fi

# --- three small client data directories (disjoint Fashion-MNIST subsets):
# 1,200 train and 300 test examples each, IDX + gzip.
"$PY" - "$dataset" "$work/data" 3 1200 300 <<'EOF'
import gzip, os, struct, sys
import numpy as np

src, out, nclients, ntrain, ntest = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])

def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = {0x803: 3, 0x801: 1}[magic]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)

def write_idx(path, a):
    magic = {3: 0x803, 1: 0x801}[a.ndim]
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(struct.pack(">I" + "I" * a.ndim, magic, *a.shape) + a.tobytes())

tr_x = read_idx(f"{src}/train-images-idx3-ubyte.gz")
tr_y = read_idx(f"{src}/train-labels-idx1-ubyte.gz")
te_x = read_idx(f"{src}/t10k-images-idx3-ubyte.gz")
te_y = read_idx(f"{src}/t10k-labels-idx1-ubyte.gz")
rng = np.random.default_rng(1)
p_tr, p_te = rng.permutation(len(tr_y)), rng.permutation(len(te_y))
for c in range(nclients):
    d = os.path.join(out, f"client-{c}")
    os.makedirs(d)
    i = np.sort(p_tr[c * ntrain:(c + 1) * ntrain])
    j = np.sort(p_te[c * ntest:(c + 1) * ntest])
    write_idx(f"{d}/train-images-idx3-ubyte.gz", tr_x[i])
    write_idx(f"{d}/train-labels-idx1-ubyte.gz", tr_y[i])
    write_idx(f"{d}/t10k-images-idx3-ubyte.gz", te_x[j])
    write_idx(f"{d}/t10k-labels-idx1-ubyte.gz", te_y[j])
EOF

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_line FILE PATTERN PID: until FILE matches PATTERN (30 s at most,
# and not after PID has exited).
wait_for_line() {
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { grep -q -- "$2" "$1" 2>/dev/null && return 0; return 1; }
        sleep 0.1
    done
    return 1
}

# run_federation NAME MIN_CLIENTS [PYTHON CLIENT FLAGS...]
# Starts the server, the Python client (node py1, first, so that it takes part
# in every round), then the two C clients; waits for all; fails unless every
# process exits 0.
run_federation() {
    local name="$1" min="$2"
    shift 2
    local dir="$work/$name" port
    mkdir -p "$dir"
    port="$(free_port)"
    echo "== $name: port $port, python client flags: ${*:-none}"

    timeout 120 "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp \
        --min-clients "$min" --rounds 3 --out "$dir/out" --lr 0.05 --batch-size 32 "${server_tls[@]}" \
        >"$dir/server.out" 2>"$dir/server.err" &
    local spid=$!
    pids+=("$spid")

    # shellcheck disable=SC2046
    timeout 120 "$PY" "$here/fedc_client.py" --server "127.0.0.1:$port" --node-id py1 \
        --data "$work/data/client-2" $(client_tls 2) "$@" >"$dir/py1.out" 2>"$dir/py1.err" &
    local ppid=$!
    pids+=("$ppid")
    if ! wait_for_line "$dir/py1.err" "connected to" "$ppid"; then
        cat "$dir/py1.err" "$dir/server.err" >&2
        fail "$name: the Python client did not complete the handshake"
    fi

    local c cpids=()
    for c in 0 1; do
        # shellcheck disable=SC2046
        timeout 120 "$FEDC_BIN" client --server "127.0.0.1:$port" \
            --data "$work/data/client-$c" --node-id "c$((c + 1))" $(client_tls "$c") \
            >"$dir/c$((c + 1)).out" 2>"$dir/c$((c + 1)).err" &
        cpids+=($!)
        pids+=($!)
    done

    local rc bad=0 who p
    for who in server:$spid py1:$ppid c1:${cpids[0]} c2:${cpids[1]}; do
        p="${who#*:}"
        rc=0
        wait "$p" || rc=$?
        if [ "$rc" -ne 0 ]; then
            echo "$name: ${who%%:*} exited $rc" >&2
            bad=1
        fi
    done
    if [ "$bad" -ne 0 ]; then
        tail -n 30 "$dir"/*.err "$dir"/*.out >&2 || true
        fail "$name: a process failed"
    fi
    cat "$dir/server.out"
}

# check_metrics NAME MODE: MODE honest | rejected
check_metrics() {
    "$PY" - "$work/$1/out/metrics.jsonl" "$2" <<'EOF'
import json, sys
path, mode = sys.argv[1], sys.argv[2]
rounds = [json.loads(line) for line in open(path) if line.strip()]
def die(msg):
    print(f"FAIL: {path}: {msg}", file=sys.stderr)
    for r in rounds:
        print("  ", json.dumps(r), file=sys.stderr)
    sys.exit(1)
if [r["round"] for r in rounds] != [1, 2, 3]:
    die("expected rounds 1, 2, 3")
if mode == "honest":
    for r in rounds:
        if r["failed"] is not False or r["clients_ok"] != 3 or r["clients_failed"] != 0:
            die(f"round {r['round']}: expected 3 valid updates and no failure")
    a1, a3 = rounds[0]["fed_eval_accuracy"], rounds[2]["fed_eval_accuracy"]
    if not (isinstance(a1, float) and isinstance(a3, float) and a3 > a1):
        die(f"federated accuracy did not improve from round 1 ({a1}) to round 3 ({a3})")
    print(f"accuracy round 1 {a1:.4f} -> round 3 {a3:.4f}")
else:
    # The Python client joins first, so it is sampled in every round and its
    # update is rejected every time. Round 1 may start with only it and one C
    # client (the server starts at --min-clients connected clients); that
    # round cannot reach 2 valid updates, so only rounds that sampled all
    # three clients must complete, and the last one must be among them.
    for r in rounds:
        if r["clients_failed"] < 1:
            die(f"round {r['round']}: the rejected update was not counted as failed")
        if r["clients_sampled"] >= 3 and (r["failed"] is not False or r["clients_ok"] != 2):
            die(f"round {r['round']}: 3 sampled, the 2 valid updates should complete it")
    if rounds[-1]["clients_sampled"] < 3 or rounds[-1]["failed"] is not False:
        die("the last round should have sampled all three clients and completed")
EOF
}

# python client took part in rounds 1..3 (its own log) and ended with shutdown
check_py_rounds() {
    local r
    for r in 1 2 3; do
        grep -q "round $r: trained" "$work/$1/py1.err" ||
            fail "$1: the Python client was not asked to train in round $r"
    done
    grep -q "shutdown:" "$work/$1/py1.err" || fail "$1: the Python client got no Shutdown"
}

# 0. handshake and framing rules, then a federation of Python clients only,
# started without a model: the server must ask one of them for its
# parameters (get_parameters) and train from those.
scenario_own_model() {
    local dir="$work/own_model" port spid p1 p2 rc bad=0 p
    mkdir -p "$dir"
    port="$(free_port)"
    echo "== own_model: port $port, handshake probes, then two Python clients"
    timeout 120 "$FEDC_BIN" server --listen "127.0.0.1:$port" --min-clients 2 --rounds 2 \
        --out "$dir/out" --lr 0.05 --batch-size 32 "${server_tls[@]}" >"$dir/server.out" 2>"$dir/server.err" &
    spid=$!
    pids+=("$spid")

    rc=0
    timeout 60 "$PY" - "$here" "$port" "$work/pki" <<'EOF' || rc=$?
import struct, sys
sys.path.insert(0, sys.argv[1])
import fedc_client as fc
pb, port, pki = fc.pb, int(sys.argv[2]), sys.argv[3]
tls = fc.tls_context(f"{pki}/ca.pem", f"{pki}/client-002.pem", f"{pki}/client-002.key")

def connect():
    return fc.Conn(fc.connect("127.0.0.1", port, 30, tls))

def hello(c, node, version=1, max_frame=0):
    m = pb.Message()
    m.hello.protocol_version = version
    m.hello.node_id = node
    m.hello.software = "probe"
    m.hello.max_frame_bytes = max_frame
    c.send_message(m)

def answer(c):
    try:
        m = c.read_message()
    except EOFError:
        return "closed", ""
    body = m.WhichOneof("body")
    return body, m.error.reason if body == "error" else ""

failures = []
def expect(desc, got, body, word=None):
    ok = got[0] == body and (word is None or word in got[1].lower())
    print(f"  {desc}: {got[0]} {got[1]!r}" + ("" if ok else f"  <-- expected {body}"
                                              + (f" naming {word!r}" if word else "")))
    if not ok:
        failures.append(desc)

def refused_hello(desc, word, **kw):
    c = connect()
    hello(c, **kw)
    expect(desc, answer(c), "error", word)
    c.sock.close()

refused_hello("protocol_version 2", "version", node="v", version=2)
refused_hello("node_id with a space", "node", node="bad id")
refused_hello("node_id of 129 characters", "node", node="x" * 129)
refused_hello("max_frame_bytes 1000", "max_frame_bytes", node="m", max_frame=1000)
keep = connect()
hello(keep, node="probe-1", max_frame=1 << 24)
expect("valid hello", answer(keep), "welcome")
# A node id already connected: the newest connection wins, the old one is
# told why and closed.
again = connect()
hello(again, node="probe-1")
expect("node_id already connected: the new connection", answer(again), "welcome")
expect("node_id already connected: the old connection", answer(keep), "error", "replaced")
keep.sock.close()
keep = again
for desc, raw in [("unknown frame type", struct.pack(">IB", 3, 9) + b"abc"),
                  ("empty MESSAGE frame", struct.pack(">IB", 0, 1)),
                  ("message with no body", struct.pack(">IB", 2, 1) + b"\x78\x01"),
                  ("DATA frame before hello", struct.pack(">IB", 1, 2) + b"x"),
                  ("frame above the limit", struct.pack(">IB", 32 << 20, 1))]:
    c = connect()
    c.sock.sendall(raw)
    expect(desc, answer(c), "error")
    c.sock.close()
keep.sock.close()
sys.exit(1 if failures else 0)
EOF
    [ "$rc" -eq 0 ] || fail "own_model: the server broke a handshake or framing rule"

    # shellcheck disable=SC2046
    timeout 120 "$PY" "$here/fedc_client.py" --server "127.0.0.1:$port" --node-id py1 \
        --data "$work/data/client-0" $(client_tls 2) >"$dir/py1.out" 2>"$dir/py1.err" &
    p1=$!
    pids+=("$p1")
    # shellcheck disable=SC2046
    timeout 120 "$PY" "$here/fedc_client.py" --server "127.0.0.1:$port" --node-id py2 \
        --data "$work/data/client-1" $(client_tls 3) >"$dir/py2.out" 2>"$dir/py2.err" &
    p2=$!
    pids+=("$p2")
    for p in "$spid" "$p1" "$p2"; do
        rc=0
        wait "$p" || rc=$?
        [ "$rc" -eq 0 ] || { echo "own_model: process $p exited $rc" >&2; bad=1; }
    done
    if [ "$bad" -ne 0 ]; then
        tail -n 30 "$dir"/*.err "$dir"/*.out >&2 || true
        fail "own_model: a process failed"
    fi
    cat "$dir/server.out"
    grep -q "sending initial parameters" "$dir/py1.err" "$dir/py2.err" ||
        fail "own_model: no Python client was asked for its initial parameters"
    "$PY" - "$dir/out/metrics.jsonl" <<'EOF'
import json, sys
rounds = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r["round"] for r in rounds] == [1, 2] and all(
    r["failed"] is False and r["clients_ok"] == 2 for r in rounds)
if not ok:
    sys.exit(f"FAIL: own_model: expected 2 completed rounds of 2 clients: {rounds}")
EOF
}

scenario_own_model

# 1. honest Python client next to two C clients
run_federation honest 3
check_metrics honest honest
check_py_rounds honest

# 2. wrongly shaped update: fc1.weight [201, 784] instead of [200, 784]
run_federation bad_shape 2 --bad-shape
check_metrics bad_shape rejected
check_py_rounds bad_shape
err="$work/bad_shape/server.err"
grep -E 'expected' "$err" | grep -E '200[^0-9]+784' | grep -qE '201[^0-9]+784' || {
    cat "$err" >&2
    fail "bad_shape: the server did not log the expected shape [200, 784] and the received [201, 784]"
}

# 3. NaN values in an update
run_federation nan 2 --nan
check_metrics nan rejected
check_py_rounds nan
grep -i 'py1' "$work/nan/server.err" | grep -qi 'nan' || {
    cat "$work/nan/server.err" >&2
    fail "nan: the server did not log the rejection of py1's NaN values"
}

echo "PASS: test_python_client"
