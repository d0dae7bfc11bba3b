#!/usr/bin/env bash
# fedc certs and fedc keygen, checked with the openssl command-line tool:
# the chain verifies, the server certificate names localhost, 127.0.0.1, ::1
# and each --host, the extended key usages, private keys of mode 600, no
# file replaced without --force, and a TLS 1.3 handshake with mutual
# authentication between openssl s_server and s_client on the files. For
# keygen: the .pub line and the fingerprint, recomputed from the key file.
source "$(dirname "$0")/lib.sh"
command -v openssl >/dev/null || fail "the openssl command is missing (Debian package openssl)"

mode() { stat -c %a "$1"; }

# --- fedc certs -------------------------------------------------------------
P="$WORK/certs-test"
"$FEDC_BIN" certs --out "$P" --host fedc.example.org --host 10.1.2.3 --host 2001:db8::7 > "$WORK/certs.out"
for f in ca server client-000 client-001 client-002; do
  [[ -f "$P/$f.pem" && -f "$P/$f.key" ]] || fail "missing $f.pem or $f.key"
  grep -q "$P/$f.pem" "$WORK/certs.out" || fail "the output does not list $f.pem"
  [[ "$(mode "$P/$f.key")" == 600 ]] || fail "$f.key has mode $(mode "$P/$f.key"), want 600"
done
[[ ! -e "$P/client-003.pem" ]] || fail "--clients defaults to 3, found client-003.pem"
pass "3 clients by default, keys of mode 600"

openssl verify -CAfile "$P/ca.pem" "$P/server.pem" "$P/client-000.pem" "$P/client-002.pem" > "$WORK/verify.txt" 2>&1 ||
  { cat "$WORK/verify.txt"; fail "openssl verify"; }
pass "openssl verify: $(tr '\n' ' ' < "$WORK/verify.txt")"

ext="$(openssl x509 -in "$P/server.pem" -noout -ext subjectAltName,extendedKeyUsage)"
for want in "DNS:localhost" "IP Address:127.0.0.1" "IP Address:0:0:0:0:0:0:0:1" "DNS:fedc.example.org" \
            "IP Address:10.1.2.3" "IP Address:2001:DB8:0:0:0:0:0:7" "TLS Web Server Authentication"; do
  grep -qF "$want" <<< "$ext" || { echo "$ext"; fail "server.pem lacks $want"; }
done
grep -q "Client Authentication" <<< "$ext" && fail "server.pem has clientAuth"
pass "server.pem: $(grep -F DNS: <<< "$ext" | tr -s ' ')"

ext="$(openssl x509 -in "$P/client-001.pem" -noout -subject -ext extendedKeyUsage,basicConstraints)"
grep -q "CN = client-001" <<< "$ext" || { echo "$ext"; fail "client-001.pem: subject"; }
grep -q "TLS Web Client Authentication" <<< "$ext" || { echo "$ext"; fail "client-001.pem: no clientAuth"; }
grep -q "CA:FALSE" <<< "$ext" || { echo "$ext"; fail "client-001.pem: not CA:FALSE"; }
ca="$(openssl x509 -in "$P/ca.pem" -noout -ext basicConstraints,keyUsage)"
grep -q "critical" <<< "$ca" && grep -q "CA:TRUE" <<< "$ca" && grep -q "Certificate Sign" <<< "$ca" ||
  { echo "$ca"; fail "ca.pem: basicConstraints / keyUsage"; }
openssl pkey -in "$P/client-001.key" -noout -text | grep -q "NIST CURVE: P-256" || fail "client-001.key is not P-256"
s1="$(openssl x509 -in "$P/client-000.pem" -noout -serial)"
s2="$(openssl x509 -in "$P/client-001.pem" -noout -serial)"
[[ "$s1" != "$s2" ]] || fail "two certificates share the serial $s1"
pass "client-001.pem: CN, clientAuth, CA:FALSE; ca.pem: CA:TRUE; P-256; distinct serials"

# Nothing is replaced without --force, and the refusal comes before any write.
before="$(sha256sum "$P/ca.pem")"
expect 1 "ca.pem already exists" "$FEDC_BIN" certs --out "$P"
[[ "$(sha256sum "$P/ca.pem")" == "$before" ]] || fail "ca.pem changed without --force"
"$FEDC_BIN" certs --out "$P" --clients 1 --force > /dev/null
[[ "$(sha256sum "$P/ca.pem")" != "$before" ]] || fail "--force did not replace ca.pem"
[[ "$(mode "$P/ca.key")" == 600 ]] || fail "ca.key replaced with mode $(mode "$P/ca.key")"
openssl verify -CAfile "$P/ca.pem" "$P/server.pem" "$P/client-000.pem" > /dev/null || fail "verify after --force"
pass "--force replaces the files"

# A handshake: TLS 1.3, each side verifying the other's certificate.
# handshake SERVER_CA CLIENT_DIR LOG: s_server on P's server files trusting
# SERVER_CA, s_client with CLIENT_DIR's client-000 trusting P's CA; the
# client's output goes to LOG.out, the server's to LOG.srv.
handshake() {
  local ca="$1" cdir="$2" log="$3" port pid t=0
  port="$(free_port)"
  openssl s_server -accept "127.0.0.1:$port" -cert "$P/server.pem" -key "$P/server.key" -CAfile "$ca" \
    -Verify 1 -verify_return_error -tls1_3 -naccept 1 -www > "$log.srv" 2>&1 &
  pid=$!; PIDS+=($pid)
  until grep -q ACCEPT "$log.srv"; do
    ((t++ < 100)) || { cat "$log.srv"; fail "s_server did not start listening on $port"; }
    kill -0 "$pid" 2>/dev/null || { cat "$log.srv"; fail "s_server exited"; }
    sleep 0.1
  done
  printf 'GET / HTTP/1.0\r\n\r\n' | timeout 20 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
    -verify_hostname localhost -cert "$cdir/client-000.pem" -key "$cdir/client-000.key" -CAfile "$P/ca.pem" \
    -verify_return_error -tls1_3 -ign_eof > "$log.out" 2>&1 || true
  kill "$pid" 2>/dev/null || true
  wait_pid "$pid" 10
}

handshake "$P/ca.pem" "$P" "$WORK/tls"
grep -q "New, TLSv1.3, Cipher is TLS_" "$WORK/tls.out" || { cat "$WORK/tls.out" "$WORK/tls.srv"; fail "no TLS 1.3 session"; }
grep -q "Verify return code: 0 (ok)" "$WORK/tls.out" || { cat "$WORK/tls.out"; fail "s_client: server certificate not verified"; }
grep -q "^depth=0 .*CN = client-000" "$WORK/tls.srv" || { cat "$WORK/tls.srv"; fail "s_server saw no client certificate"; }
grep -q "verify error" "$WORK/tls.srv" && { cat "$WORK/tls.srv"; fail "s_server: client certificate not verified"; }
grep -q "^Client certificate" "$WORK/tls.out" || { cat "$WORK/tls.out"; fail "the session has no client certificate"; }
pass "TLS 1.3 handshake, both certificates verified ($(grep -o 'Cipher is [A-Z0-9_]*' "$WORK/tls.out" | head -1))"

# A client certificate of another federation's CA is refused.
"$FEDC_BIN" certs --out "$WORK/other" --clients 1 > /dev/null
handshake "$P/ca.pem" "$WORK/other" "$WORK/tls2"
grep -q "^Client certificate" "$WORK/tls2.out" && { cat "$WORK/tls2.out"; fail "a foreign client certificate was accepted"; }
grep -q "verify error" "$WORK/tls2.srv" || { cat "$WORK/tls2.srv"; fail "s_server did not reject the foreign client"; }
pass "a client certificate from another CA is refused"

"$FEDC_BIN" certs --help | grep -q -- "--host" || fail "certs --help lacks --host"
C=("$FEDC_BIN" certs)
expect 2 "--out is required" "${C[@]}"
expect 2 "--host 'a b' is neither an IP address nor a DNS name" "${C[@]}" --out "$WORK/x" --host "a b"
expect 2 "--host 'a..b'" "${C[@]}" --out "$WORK/x" --host "a..b"
expect 2 "--clients must be between 0 and 1000" "${C[@]}" --out "$WORK/x" --clients 1001
expect 2 "--days must be between 1 and 36500" "${C[@]}" --out "$WORK/x" --days 0
expect 2 "--days expects a whole number" "${C[@]}" --out "$WORK/x" --days x
expect 2 "'--bogus'" "${C[@]}" --bogus
[[ ! -e "$WORK/x" ]] || fail "a usage error created the output directory"
"$FEDC_BIN" certs --out "$WORK/d" --clients 0 --days 2 > /dev/null
[[ ! -e "$WORK/d/client-000.pem" ]] || fail "--clients 0 wrote a client certificate"
end="$(openssl x509 -in "$WORK/d/server.pem" -noout -enddate | cut -d= -f2)"
days_left=$(( ($(date -d "$end" +%s) - $(date +%s)) / 3600 ))
(( days_left >= 47 && days_left <= 48 )) || fail "--days 2: notAfter $end is $days_left hours away"
pass "--clients 0, --days 2 (notAfter $end)"

# --- fedc keygen ------------------------------------------------------------
K="$WORK/keys"
"$FEDC_BIN" keygen --out "$K" > "$WORK/keygen.out"
[[ -f "$K/node.key" && -f "$K/node.pub" ]] || fail "keygen: no node.key / node.pub"
[[ "$(mode "$K/node.key")" == 600 ]] || fail "node.key has mode $(mode "$K/node.key"), want 600"
line="$(cat "$K/node.pub")"
[[ "$(wc -l < "$K/node.pub")" == 1 ]] || fail "node.pub is not one line"
[[ "$line" =~ ^ed25519\ [A-Za-z0-9+/]{43}=\ node$ ]] || fail "node.pub: '$line'"
openssl pkey -in "$K/node.key" -noout -text | grep -q "ED25519 Private-Key" || fail "node.key is not Ed25519"
pub_b64="$(openssl pkey -in "$K/node.key" -pubout -outform DER | tail -c 32 | base64)"
[[ "$line" == "ed25519 $pub_b64 node" ]] || fail "node.pub '$line' is not the key's ($pub_b64)"
fpr="$(sed -n 's/^fingerprint: //p' "$WORK/keygen.out")"
want="$(openssl pkey -in "$K/node.key" -pubout -outform DER | tail -c 32 | sha256sum | cut -c1-32)"
[[ "$fpr" =~ ^[0-9a-f]{32}$ && "$fpr" == "$want" ]] || fail "fingerprint '$fpr', want '$want'"
pass "node.pub: $line, fingerprint $fpr"

expect 1 "node.key already exists" "$FEDC_BIN" keygen --out "$K"
"$FEDC_BIN" keygen --out "$K" --force > /dev/null
[[ "$(cat "$K/node.pub")" != "$line" ]] || fail "keygen --force did not make a new key"
[[ "$(mode "$K/node.key")" == 600 ]] || fail "replaced node.key has mode $(mode "$K/node.key")"
"$FEDC_BIN" keygen --out "$K" --name server-1 > /dev/null
grep -q " server-1$" "$K/server-1.pub" || fail "--name: $(cat "$K/server-1.pub")"
"$FEDC_BIN" keygen --help | grep -q "node id" || fail "keygen --help does not mention the node id"
expect 2 "--out is required" "$FEDC_BIN" keygen
expect 2 "invalid --name '../x'" "$FEDC_BIN" keygen --out "$K" --name ../x
pass "keygen: --force, --name, usage errors"
echo "all certs and keygen checks passed"
