#!/usr/bin/env bash
# No weak random numbers: no C/CUDA source or header of the library, the
# tools or the examples calls the C library's generators (rand, srand,
# random, srandom, drand48, erand48, lrand48, mrand48, rand_r). Privacy noise,
# secure-aggregation masks and sampling use libsodium (fedc_random_bytes) or
# the seeded fedc_rng_*; a libc generator is predictable and, for DP noise,
# breaks the guarantee. The pattern is checked on known lines first, so a
# broken pattern cannot pass silently. Needs only FEDC_SOURCE_DIR (default:
# the checkout this script lies in).
set -euo pipefail

SRC="${FEDC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# A call: the name after a non-identifier character (or at the line start),
# then optional spaces and "(". fedc_rand(, randombytes_buf( and rand_state
# do not match; rand_r( is listed on its own.
PATTERN='(^|[^[:alnum:]_])(rand|srand|random|srandom|drand48|erand48|lrand48|mrand48|rand_r)[[:space:]]*\('

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fedc-rng.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- The pattern itself. ---
printf '%s\n' 'x = rand();' 'y = drand48 ();' > "$WORK/bad.c"
printf '%s\n' 'randombytes_buf(b, n); fedc_rng_u64(&r);' > "$WORK/good.c"
[[ "$(grep -cE "$PATTERN" "$WORK/bad.c" || true)" == 2 ]] \
  || fail "the pattern does not match both of: $(tr '\n' ' ' < "$WORK/bad.c")"
pass "the pattern matches 'x = rand();' and 'y = drand48 ();'"
if grep -nE "$PATTERN" "$WORK/good.c"; then fail "the pattern matches a harmless line"; fi
pass "the pattern does not match 'randombytes_buf(b, n); fedc_rng_u64(&r);'"
# Each name on its own, and names it must leave alone.
for name in rand srand random srandom drand48 erand48 lrand48 mrand48 rand_r; do
  for line in "$name(" "v=$name (s);" "	return ${name}(x);" "p->$name(q);" "(void)$name	(1);"; do
    printf '%s\n' "$line" | grep -qE "$PATTERN" || fail "the pattern misses '$line'"
  done
done
for line in 'fedc_rand(x);' 'my_random(x);' 'randomize(x);' 'rand_state = 1;' 'int random;' \
            'fedc_rng_uniform(&r);' 'randombytes_uniform(10);' 'grand(1);' 'srand48_like(1);' 'operand(2);'; do
  if printf '%s\n' "$line" | grep -qE "$PATTERN"; then fail "the pattern matches harmless '$line'"; fi
done
pass "each of the nine names is caught as a call; lookalike names are not"

# --- The sources. ---
dirs=()
for d in src include tools examples; do
  if [[ -d "$SRC/$d" ]]; then dirs+=("$SRC/$d"); fi
done
[[ ${#dirs[@]} -gt 0 ]] || fail "no src/include/tools/examples under FEDC_SOURCE_DIR='$SRC'"
[[ -d "$SRC/src" && -d "$SRC/include" ]] || fail "FEDC_SOURCE_DIR='$SRC' has no src/ or include/"
mapfile -d '' files < <(find "${dirs[@]}" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \
                          -o -name '*.cc' -o -name '*.cpp' -o -name '*.hpp' \) -print0)
[[ ${#files[@]} -ge 10 ]] || fail "only ${#files[@]} C/CUDA files found under $SRC: wrong directory?"

hits="$(grep -nHE "$PATTERN" "${files[@]}" || true)"
if [[ -n "$hits" ]]; then
  echo "FAIL: calls to a weak libc random generator (use fedc_random_bytes or fedc_rng_*):" >&2
  printf '%s\n' "$hits" >&2
  exit 1
fi
pass "no rand/srand/random/srandom/*rand48/rand_r call in ${#files[@]} C/CUDA files under ${dirs[*]#"$SRC"/}"
