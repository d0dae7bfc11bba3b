#!/usr/bin/env bash
# fedc privacy: one line "epsilon=E order=A" on stdout, a value equal to one
# the unit tests check against a published reference (Opacus
# accountants_test.py test_rdp_accountant: 7.32911117143; see
# tests/unit/test_privacy_rdp.c), and usage errors that name the flag with
# exit code 2.
source "$(dirname "$0")/lib.sh"

# Opacus's RDPAccountant.DEFAULT_ALPHAS: 1.1 .. 10.9 by 0.1, then 12 .. 63.
alphas="$(for x in $(seq 1 99); do printf '%d.%d,' $(( (10 + x) / 10 )) $(( (10 + x) % 10 )); done)$(seq -s, 12 63)"

out="$("$FEDC_BIN" privacy --q 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5 --orders "$alphas")"
[[ "$(printf '%s\n' "$out" | wc -l)" == 1 ]] || fail "expected one line, got: $out"
[[ "$out" =~ ^epsilon=[0-9]+\.[0-9]{6}\ order=[0-9.e+]+$ ]] || fail "malformed line: '$out'"
[[ "$out" == "epsilon=7.329111 order=3.9" ]] || fail "Opacus test_rdp_accountant: got '$out', want epsilon=7.329111 order=3.9"
pass "$out (Opacus test_rdp_accountant, its orders)"

# The default orders include Opacus's optimum here, so the same line.
out="$("$FEDC_BIN" privacy --q 0.04 --noise-multiplier 1.5 --steps 2250 --delta 1e-5)"
[[ "$out" == "epsilon=7.329111 order=3.9" ]] || fail "default orders: got '$out'"
pass "$out (default orders)"

# q = 0 spends nothing; more steps spend more.
out="$("$FEDC_BIN" privacy --q 0 --noise-multiplier 1 --steps 1000 --delta 1e-5)"
[[ "$out" == epsilon=0.000000\ order=* ]] || fail "q 0: got '$out'"
pass "$out (q 0)"
e1="$("$FEDC_BIN" privacy --q 0.01 --noise-multiplier 1.1 --steps 100 --delta 1e-5 | sed 's/epsilon=\([^ ]*\).*/\1/')"
e2="$("$FEDC_BIN" privacy --q 0.01 --noise-multiplier 1.1 --steps 1000 --delta 1e-5 | sed 's/epsilon=\([^ ]*\).*/\1/')"
awk -v a="$e1" -v b="$e2" 'BEGIN { exit !(b > a) }' || fail "epsilon of 1000 steps ($e2) not above 100 steps' ($e1)"
pass "100 steps: $e1, 1000 steps: $e2"

"$FEDC_BIN" privacy --help | grep -q -- "--noise-multiplier" || fail "--help lacks the flags"
pass "--help"

P=("$FEDC_BIN" privacy)
expect 2 "--q is required" "${P[@]}" --noise-multiplier 1 --steps 10 --delta 1e-5
expect 2 "--noise-multiplier is required" "${P[@]}" --q 0.1 --steps 10 --delta 1e-5
expect 2 "--steps is required" "${P[@]}" --q 0.1 --noise-multiplier 1 --delta 1e-5
expect 2 "--delta is required" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10
expect 2 "--q must be between 0 and 1" "${P[@]}" --q 1.5 --noise-multiplier 1 --steps 10 --delta 1e-5
expect 2 "--q expects a number" "${P[@]}" --q abc --noise-multiplier 1 --steps 10 --delta 1e-5
expect 2 "--noise-multiplier must be > 0" "${P[@]}" --q 0.1 --noise-multiplier 0 --steps 10 --delta 1e-5
expect 2 "--noise-multiplier" "${P[@]}" --q 0.1 --noise-multiplier -2 --steps 10 --delta 1e-5
expect 2 "--steps expects a whole number" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps -3 --delta 1e-5
expect 2 "--delta must be in (0, 1)" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 1
expect 2 "--delta" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 0
expect 2 "--orders: '1' is not an order" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --orders 2,1
expect 2 "--orders: 'x'" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --orders 2,x,3
expect 2 "--orders: ''" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 --orders 2,,3
expect 2 "'--bogus'" "${P[@]}" --bogus
expect 2 "--q needs a value" "${P[@]}" --q
expect 2 "unexpected argument 'extra'" "${P[@]}" --q 0.1 --noise-multiplier 1 --steps 10 --delta 1e-5 extra
echo "all privacy CLI checks passed"
