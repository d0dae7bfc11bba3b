#!/usr/bin/env bash
# Node authentication (docs/security.md): the server admits only clients
# whose key is in --authorized-keys, proved by signing a fresh nonce bound
# to the TLS session; the node id defaults to the key's fingerprint; each
# refusal has a message on the client and a line in the server's log; and
# SIGHUP reloads the list, disconnecting a revoked key without a restart.
# (That a captured handshake cannot be replayed is checked in
# tests/unit/test_core_nodekey.c: the signature covers the nonce and the
# TLS exporter value.)
source "$(dirname "$0")/lib.sh"
make_data "$WORK/data" 3
for k in a b c; do
  "$FEDC_BIN" keygen --out "$WORK/keys" --name "$k" > "$WORK/keys-$k.out" || fail "fedc keygen $k failed"
done
fpr() { sed -n 's/^fingerprint: //p' "$WORK/keys-$1.out"; }
cat "$WORK/keys/a.pub" "$WORK/keys/b.pub" > "$WORK/authorized"
port=$(free_port)
# Many rounds: the federation outlives the checks; SIGINT ends it.
"$FEDC_BIN" server --listen "127.0.0.1:$port" --model mlp --min-clients 1 --rounds 1000 --local-epochs 1 \
  --out "$WORK/out" "${SERVER_TLS[@]}" --authorized-keys "$WORK/authorized" \
  > "$WORK/server.out" 2> "$WORK/server.err" &
server=$!; PIDS+=($server)

client() { # client PART LOG FLAGS...: a client in the background, pid in `cpid`
  local part="$1" log="$2"; shift 2
  client_tls "$part"
  "$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-00$part" "${CLIENT_TLS[@]}" \
    --connect-timeout 10 "$@" > "$WORK/$log.log" 2>&1 &
  cpid=$!; PIDS+=($cpid)
}
client 0 a --node-key "$WORK/keys/a.key"; a=$cpid
client 1 b --node-key "$WORK/keys/b.key"; b=$cpid
waited=0
until grep -q "client $(fpr a) joined" "$WORK/server.err" && grep -q "client $(fpr b) joined" "$WORK/server.err"; do
  sleep 0.1; waited=$((waited + 1)); ((waited < 300)) || { cat "$WORK/server.err"; fail "a and b did not join"; }
done
pass "authorized keys join, with their fingerprints as node ids"

# Refusals, each named on both sides.
client_tls 2
refused=("$FEDC_BIN" client --server "127.0.0.1:$port" --data "$WORK/data/parts/client-002" "${CLIENT_TLS[@]}"
         --connect-timeout 5)
expect 1 "node key $(fpr c) is not authorized" "${refused[@]}" --node-key "$WORK/keys/c.key"
grep -q "refused .*key $(fpr c)): not in the authorized keys" "$WORK/server.err" || fail "server did not log c"
expect 1 "admits only nodes with an authorized key" "${refused[@]}"
expect 1 "does not belong to key $(fpr a)" "${refused[@]}" --node-key "$WORK/keys/a.key" --node-id impostor
expect 1 "not an Ed25519 key\|not an unencrypted PEM" "${refused[@]}" --node-key "$PKI/client-002.key"
pass "unauthorized keys, a missing key and a foreign node id are refused"

# Revocation without a restart: b leaves the list, SIGHUP.
cp "$WORK/keys/a.pub" "$WORK/authorized"
kill -HUP "$server"
wait_pid "$b" 30
[[ "$WAIT_RC" != 0 ]] || fail "the revoked client exited 0"
grep -q "revoked" "$WORK/b.log" || { cat "$WORK/b.log"; fail "the revoked client was not told"; }
grep -q "reloaded 1 authorized keys" "$WORK/server.err" || fail "the server did not log the reload"
grep -q "revoked $(fpr b)" "$WORK/server.err" || fail "the server did not log the revocation"
kill -0 "$a" 2>/dev/null || { cat "$WORK/a.log"; fail "the authorized client was disconnected too"; }
# A file that does not parse keeps the list in use.
echo "ed25519 not-base64 broken" >> "$WORK/authorized"
kill -HUP "$server"
waited=0
until grep -q "cannot reload the authorized keys (keeping the 1 in use)" "$WORK/server.err"; do
  sleep 0.1; waited=$((waited + 1)); ((waited < 100)) || fail "a bad file was not reported"
done
kill -0 "$a" 2>/dev/null || fail "a bad reload disconnected the authorized client"
pass "SIGHUP revokes a key without a restart; a bad file keeps the old list"

kill -INT "$server"
wait_pid "$server" 30
wait_pid "$a" 30
[[ "$WAIT_RC" == 0 ]] || { cat "$WORK/a.log"; fail "client a exited $WAIT_RC"; }
# The simulator's virtual clients have no keys: refused, not a hang.
expect 1 "virtual clients have no node keys" "$FEDC_BIN" sim --data "$WORK/data/full" --clients 3 --rounds 1 \
  --model mlp --out "$WORK/sim" --authorized-keys "$WORK/authorized"
pass "test_node_auth"
