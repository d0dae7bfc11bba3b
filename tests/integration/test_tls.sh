#!/usr/bin/env bash
# TLS 1.3 on the wire (docs/security.md):
#   1. a federation over mutual TLS gives the same model as over plaintext
#      (TLS changes the transport, not one byte of what is computed);
#   2. the traffic is encrypted: no frame of the protocol, nor the node id
#      the client sends, is visible on the wire (captured with a relay);
#   3. refusals, each with a message on the client and a line in the
#      server's log: no client certificate, a client trusting another CA,
#      a server name that does not match, a plaintext client;
#   4. the flags: TLS without --cert/--key or --ca, or mixed with --insecure,
#      is a usage error; --insecure warns.
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 2
# lib.sh made the test PKI in $PKI; another CA's set to be refused:
"$FEDC_BIN" certs --out "$WORK/other" --clients 1 > /dev/null || fail "fedc certs failed"
P="$PKI"
srv_tls=("${SERVER_TLS[@]}")
cli_tls() { echo --ca "$P/ca.pem" --cert "$P/client-00$1.pem" --key "$P/client-00$1.key"; }

# federation NAME PORT SERVER_FLAGS... -- CLIENT0_FLAGS... -- CLIENT1_FLAGS...
# A server on PORT with two clients, c0 and c1, on the two parts of the
# data, both pointed at PORT; each client's flags come after those, so they
# may name another --server or --node-id (a later flag wins). The server
# writes $WORK/NAME, the logs are $WORK/NAME.out, .err, .c0 and .c1. Fails
# unless the server exits 0 within 120 s.
federation() {
  local name="$1" port="$2"; shift 2
  local sflags=() c0=() c1=()
  while [[ "$1" != "--" ]]; do sflags+=("$1"); shift; done; shift
  while [[ "$1" != "--" ]]; do c0+=("$1"); shift; done; shift
  c1=("$@")
  "$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 2 --out "$WORK/$name" "${sflags[@]}" \
    > "$WORK/$name.out" 2> "$WORK/$name.err" &
  local server=$!; PIDS+=($server)
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-000" --node-id c0 "${c0[@]}" \
    > "$WORK/$name.c0" 2>&1 &
  PIDS+=($!)
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-001" --node-id c1 "${c1[@]}" \
    > "$WORK/$name.c1" 2>&1 &
  PIDS+=($!)
  wait_pid "$server" 120
  [[ "$WAIT_RC" == 0 ]] || { cat "$WORK/$name.err" "$WORK/$name.c0"; fail "$name: server exited $WAIT_RC"; }
}

# start_relay LISTEN_PORT SERVER_PORT DROP [CAPTURE]: in the background, a relay
# on LISTEN_PORT that closes the first DROP connections at once, then
# forwards the next one to SERVER_PORT both ways (waiting for the server to
# listen), writing what passes either way to the file CAPTURE if given.
start_relay() {
  "$PY" - "$@" <<'PYEOF' &
import socket, sys, threading, time
lport, dport, drop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
f = open(sys.argv[4], "wb") if len(sys.argv) > 4 else None
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", lport)); ls.listen(8)
for _ in range(drop):
    c, _ = ls.accept(); c.close()
c, _ = ls.accept()
for attempt in range(200):  # the server may still be starting
    try:
        s = socket.create_connection(("127.0.0.1", dport))
        break
    except ConnectionRefusedError:
        time.sleep(0.05)
lock = threading.Lock()
def pump(a, b):
    while True:
        d = a.recv(65536)
        if not d:
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        if f:
            with lock: f.write(d)
        b.sendall(d)
t = [threading.Thread(target=pump, args=(c, s)), threading.Thread(target=pump, args=(s, c))]
for x in t: x.start()
for x in t: x.join()
if f: f.close()
PYEOF
  PIDS+=($!)
}

# ---- 1. mutual TLS gives plaintext's model ------------------------------
same=(--rounds 2 --seed 3)
federation tls "$(free_port)" "${same[@]}" "${srv_tls[@]}" -- $(cli_tls 0) -- $(cli_tls 1)
federation plain "$(free_port)" "${same[@]}" --insecure -- --insecure -- --insecure
cmp "$WORK/tls/model.safetensors" "$WORK/plain/model.safetensors" || fail "TLS changed the model"
grep -q "insecure" "$WORK/plain.err" || fail "the plaintext server did not warn"
grep -q "insecure" "$WORK/plain.c0" || fail "the plaintext client did not warn"
pass "mutual TLS: the same model as plaintext, bit for bit"

# ---- 2. nothing readable on the wire ------------------------------------
# A relay between client c0 and the server records both directions.
port=$(free_port); relay=$(free_port)
start_relay "$relay" "$port" 0 "$WORK/wire"
sleep 0.3
federation relayed "$port" --rounds 1 "${srv_tls[@]}" -- \
  --server "127.0.0.1:$relay" --server-name localhost --node-id wire-visible-node-id $(cli_tls 0) -- $(cli_tls 1)
sleep 0.5
"$PY" - "$WORK/wire" <<'PYEOF' || fail "the wire is not encrypted"
import sys
b = open(sys.argv[1], "rb").read()
assert len(b) > 100000, f"only {len(b)} bytes relayed"
for s in [b"wire-visible-node-id", b"fedc 0.", b"accuracy", b"local_epochs"]:
    assert s not in b, f"{s!r} in the clear on the wire"
# TLS records: content type 0x17 (application data), version 0x0303.
assert b"\x17\x03\x03" in b, "no TLS application-data record"
print(f"ok: {len(b)} bytes on the wire, no plaintext found")
PYEOF
pass "the traffic is encrypted"

# ---- 3. refusals --------------------------------------------------------
port=$(free_port)
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1 --rounds 1 --out "$WORK/refuse" \
  --wait-timeout 60 "${srv_tls[@]}" > "$WORK/refuse.out" 2> "$WORK/refuse.err" &
server=$!; PIDS+=($server)
sleep 0.3
client=("$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-000" --connect-timeout 5)
expect 1 "certificate required" "${client[@]}" --ca "$P/ca.pem"
expect 1 "certificate verify failed" "${client[@]}" --ca "$WORK/other/ca.pem"
expect 1 "hostname mismatch" "${client[@]}" $(cli_tls 0) --server-name not-the-server.example
expect 1 "closed the connection" "${client[@]}" --insecure
grep -q "peer did not return a certificate" "$WORK/refuse.err" || fail "server did not log the missing certificate"
grep -q "unknown ca" "$WORK/refuse.err" || fail "server did not log the client that distrusts its CA"
grep -q "wrong version number" "$WORK/refuse.err" || fail "server did not log the plaintext client"
kill "$server" 2>/dev/null || true
pass "refused handshakes end with a message on both sides"

# ---- 3b. a handshake closed without an alert is tried again -------------
# A server at its file or connection limit closes new connections before
# the handshake is done. The client retries those (within
# --connect-timeout) instead of giving up: a relay closes the first two
# connections at once and forwards the third.
port=$(free_port); relay=$(free_port)
start_relay "$relay" "$port" 2
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1 --rounds 1 --out "$WORK/retry-out" \
  --wait-timeout 60 "${srv_tls[@]}" > "$WORK/retry.out" 2> "$WORK/retry.err" &
server=$!; PIDS+=($server)
sleep 0.3
"$FEDC_BIN" client --server "127.0.0.1:$relay" --server-name localhost --data "$WORK/data/parts/client-000" \
  --connect-timeout 30 $(cli_tls 0) > "$WORK/retry.c0" 2>&1 || { cat "$WORK/retry.c0"; fail "the client gave up on a closed handshake"; }
grep -q "retrying" "$WORK/retry.c0" || { cat "$WORK/retry.c0"; fail "the client did not say it retried"; }
wait_pid "$server" 60
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/retry.err"; fail "retry federation: server exited $WAIT_RC"; }
pass "a handshake closed without an alert is retried"

# ---- 4. flags --------------------------------------------------------------
expect 2 "--cert FILE and --key FILE are required" "$FEDC_BIN" server --model mlp --out "$WORK/x"
expect 2 "exclude each other" "$FEDC_BIN" server --model mlp --out "$WORK/x" --insecure "${srv_tls[@]}"
expect 2 "--cert needs --key" "$FEDC_BIN" server --model mlp --out "$WORK/x" --cert "$P/server.pem"
expect 2 "--ca FILE is required" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/data/parts/client-000"
expect 1 "CA file" "$FEDC_BIN" client --server 127.0.0.1:1 --data "$WORK/data/parts/client-000" \
  --ca "$WORK/missing.pem" --connect-timeout 1
pass "test_tls"
