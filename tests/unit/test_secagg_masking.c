/*
 * Masking for secure aggregation (src/secagg/masking.c):
 *
 *   - check_params accepts the largest sums that cannot wrap (31 bits for
 *     2 clients, 16 bits for 65,537) and refuses the next ones, bits 0 and
 *     32, count 0, and a range that is not finite and > 0, naming each;
 *   - quantisation: -R, 0 and R map to 0, 2^(B-1) and 2^B - 1 (NaN as 0,
 *     infinities clipped), q is monotonic, and the round trip through
 *     dequantize_sum is within R / (2^B - 1) of the clipped value (plus the
 *     float rounding of the output) for B from 1 to 31; clipped values come
 *     back at +/-R exactly; the mean of several vectors likewise, up to
 *     65,537 16-bit values at R summing to 2^32 - 1 without wrapping;
 *   - agree: the X25519 key of RFC 7748 section 6.1 hashed as documented
 *     (vector computed independently with Python's cryptography and
 *     hashlib), the same key on both sides, different keys for different
 *     pairs, refusals of a low-order point and of one's own key;
 *   - aes_ctr: NIST SP 800-38A's F.5.1 (CTR-AES128.Encrypt) vectors;
 *   - expand: the words of `openssl enc -aes-128-ctr` with the documented
 *     key (Python's hashlib.blake2b) and counter block,
 *     determinism, prefixes, differences across
 *     rounds (also in the round's high bits) and seeds, uniform top and low
 *     bytes (chi-square); apply_mask equals expand + add/sub at lengths
 *     around its chunk boundaries and undoes itself;
 *   - five clients with self masks and pairwise masks for every pair: the
 *     masked sum minus the self masks equals the plain sum bit for bit, and
 *     its mean is the inputs' mean within the quantisation error; without
 *     removing the self masks, or with a client missing, it does not; a
 *     masked vector has uniform bytes (chi-square) even for a constant
 *     input and no correlation with its input.
 *
 * The chi-square bounds are the Wilson-Hilferty quantile at z = 5 and the
 * correlation bound 5 / sqrt(n) (about 3e-7 false failures each).
 * FEDC_SECAGG_TEST_SCALE (a divisor, default 1) shrinks the samples for
 * slow runs (valgrind); the bounds follow the sizes.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/masking.h"
#include "test_util.h"

static size_t scale_div = 1;

static size_t scaled(size_t n, size_t floor_n)
{
    size_t m = n / scale_div;
    return m < floor_n ? floor_n : m;
}

/* Deterministic test data from the project's seeded generator; the
 * generators under test are not involved. */
static uint64_t test_rand(void)
{
    static fedc_rng rng;
    static int seeded;
    if (!seeded) {
        fedc_rng_seed(&rng, 0x9E3779B97F4A7C15ull);
        seeded = 1;
    }
    return fedc_rng_u64(&rng);
}

static double test_uniform(void) /* in [-1, 1) */
{
    return (double)(test_rand() >> 11) * 0x1p-52 - 1.0;
}

static double chi2_bound(double df, double z)
{
    double c = 2.0 / (9.0 * df);
    double r = 1.0 - c + z * sqrt(c);
    return df * r * r * r;
}

/* Chi-square of byte `shift / 8` of the words against the uniform distribution on 256 cells. */
static double chi2_byte(const uint32_t *w, size_t n, unsigned shift)
{
    size_t c[256] = {0};
    for (size_t i = 0; i < n; i++) c[(w[i] >> shift) & 0xff]++;
    double e = (double)n / 256.0, s = 0;
    for (int i = 0; i < 256; i++) s += ((double)c[i] - e) * ((double)c[i] - e) / e;
    return s;
}

static void hex_decode(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* ---- parameters ---- */

static void test_check_params(void)
{
    char err[FEDC_ERRMSG_MAX];
    struct {
        double range;
        unsigned bits, count;
    } ok[] = {{1.0, 16, 5},       {1.0, 31, 2},     {1.0, 16, 65537},
              {0.5, 1, UINT_MAX}, {FLT_MAX, 8, 10}, {1e-30, 24, 255}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        err[0] = 0;
        int rc = fedc__secagg_check_params(ok[i].range, ok[i].bits, ok[i].count, err, sizeof err);
        CHECK(rc == FEDC_OK, "check_params(%g, %u, %u) refused: %s", ok[i].range, ok[i].bits, ok[i].count,
              err);
    }
    struct {
        double range;
        unsigned bits, count;
        const char *needle;
    } bad[] = {
        {0.0, 16, 5, "range must be finite and > 0"},
        {-1.0, 16, 5, "got -1"},
        {NAN, 16, 5, "range must be finite"},
        {INFINITY, 16, 5, "got inf"},
        {1e39, 16, 5, "range must be finite and > 0"},
        {1.0, 0, 5, "bits must be 1..31, got 0"},
        {1.0, 32, 1, "bits must be 1..31, got 32"},
        {1.0, 16, 0, "client count must be >= 1"},
        {1.0, 31, 3, "use at most 30 bits for 3 clients"},
        {1.0, 16, 65538, "use at most 15 bits for 65538 clients"},
        {1.0, 2, UINT_MAX, "use at most 1 bits"},
        {1.0, 24, 257, "can reach 4311744255, which wraps mod 2^32"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_STATUS(fedc__secagg_check_params(bad[i].range, bad[i].bits, bad[i].count, err, sizeof err),
                     FEDC_ERR_INVALID, "check_params refusal");
        CHECK_CONTAINS(err, bad[i].needle, "check_params message");
    }
    CHECK_STATUS(fedc__secagg_check_params(1.0, 0, 1, NULL, 0), FEDC_ERR_INVALID, "NULL err buffer");
}

/* ---- quantisation ---- */

static double clampd(double v, double r)
{
    return v > r ? r : v < -r ? -r : v;
}

static void test_quantize(void)
{
    const unsigned bitss[] = {1, 2, 8, 12, 16, 24, 31};
    const double ranges[] = {1.0, 0.01, 100.0, 3.5e3};
    enum { N = 4000, SPECIAL = 9 };
    static float x[N + SPECIAL], back[N + SPECIAL];
    static uint32_t q[N + SPECIAL];
    for (size_t bi = 0; bi < sizeof bitss / sizeof bitss[0]; bi++)
        for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
            unsigned bits = bitss[bi];
            double r = ranges[ri], levels = (double)((1ull << bits) - 1);
            const float rf = (float)r;
            x[0] = -rf, x[1] = rf, x[2] = 0.0f, x[3] = INFINITY, x[4] = -INFINITY, x[5] = NAN;
            x[6] = FLT_MAX, x[7] = -FLT_MAX, x[8] = 1e-30f;
            for (size_t i = SPECIAL; i < N + SPECIAL; i++) x[i] = (float)(1.5 * r * test_uniform());
            fedc__secagg_quantize(x, N + SPECIAL, r, bits, q);
            fedc__secagg_dequantize_sum(q, N + SPECIAL, 1, r, bits, back);
            uint32_t mid = 1u << (bits - 1), top = (uint32_t)levels;
            /* (float)r may sit just inside or outside r: x[0], x[1] are the clip points only if exact. */
            if ((double)rf == r) {
                CHECK(q[0] == 0 && q[1] == top, "B = %u, R = %g: q(-R) = %u, q(R) = %u, want 0, %u", bits, r,
                      q[0], q[1], top);
            }
            CHECK(q[2] == mid && q[5] == mid, "B = %u, R = %g: q(0) = %u, q(NaN) = %u, want %u", bits, r,
                  q[2], q[5], mid);
            CHECK(q[3] == top && q[6] == top && q[4] == 0 && q[7] == 0,
                  "B = %u, R = %g: infinities not clipped", bits, r);
            CHECK(back[3] == rf && back[4] == -rf && back[6] == rf && back[7] == -rf,
                  "B = %u, R = %g: clipped values came back as %.9g, %.9g, not +/-R", bits, r, back[3],
                  back[4]);
            int over = 0, worst_i = -1, clip_bad = 0;
            double worst = 0;
            for (size_t i = 0; i < N + SPECIAL; i++) {
                if (i == 5) continue; /* NaN */
                if (q[i] > top) over++;
                double c = clampd((double)x[i], r);
                /* Half a step, and the rounding of the result to float. */
                double tol =
                    r / levels * (1 + 1e-9) + fmax(fabs(c), fabs((double)back[i])) * 0x1p-24 + r * 0x1p-50;
                double e = fabs((double)back[i] - c);
                if (e > tol && e - tol > worst) worst = e - tol, worst_i = (int)i;
                if (fabs((double)x[i]) > r && fabs(back[i]) != rf) clip_bad++;
            }
            CHECK(over == 0, "B = %u, R = %g: %d values above 2^B - 1", bits, r, over);
            CHECK(worst_i < 0, "B = %u, R = %g: x = %.9g came back as %.9g, error above R / (2^B - 1) = %g",
                  bits, r, worst_i >= 0 ? x[worst_i] : 0, worst_i >= 0 ? back[worst_i] : 0, r / levels);
            CHECK(clip_bad == 0, "B = %u, R = %g: %d clipped values did not come back at +/-R", bits, r,
                  clip_bad);
        }

    /* Monotonic in x. */
    static float sorted[N];
    static uint32_t qs[N];
    for (size_t i = 0; i < N; i++) sorted[i] = (float)(-1.2 + 2.4 * (double)i / (N - 1));
    fedc__secagg_quantize(sorted, N, 1.0, 10, qs);
    int mono = 1;
    for (size_t i = 1; i < N; i++) mono &= qs[i] >= qs[i - 1];
    CHECK(mono, "quantisation is not monotonic");

    /* The mean of several vectors. */
    enum { C = 7, M = 1000 };
    static float xv[C][M], mean[M];
    static uint32_t qv[M], sum[M];
    memset(sum, 0, sizeof sum);
    for (int c = 0; c < C; c++) {
        for (int i = 0; i < M; i++) xv[c][i] = (float)(1.1 * test_uniform());
        fedc__secagg_quantize(xv[c], M, 1.0, 16, qv);
        for (int i = 0; i < M; i++) sum[i] += qv[i];
    }
    fedc__secagg_dequantize_sum(sum, M, C, 1.0, 16, mean);
    double worst = 0;
    for (int i = 0; i < M; i++) {
        double m = 0;
        for (int c = 0; c < C; c++) m += clampd(xv[c][i], 1.0);
        m /= C;
        double e = fabs(mean[i] - m);
        if (e > worst) worst = e;
    }
    CHECK(worst <= 1.0 / 65535 + 0x1p-23, "mean of %d vectors off by %g > R / (2^16 - 1)", C, worst);

    /* The largest sum that cannot wrap: 65,537 values at R with 16 bits. */
    float at_r = 1.0f, at_mr = -1.0f, out;
    uint32_t one, total = 0, total_lo = 0;
    fedc__secagg_quantize(&at_r, 1, 1.0, 16, &one);
    for (unsigned c = 0; c < 65537; c++) total += one;
    CHECK(total == UINT32_MAX, "65537 * 65535 = %u, want 2^32 - 1", total);
    fedc__secagg_dequantize_sum(&total, 1, 65537, 1.0, 16, &out);
    CHECK(out == 1.0f, "the mean of 65537 values at R is %.9g, want 1", out);
    fedc__secagg_quantize(&at_mr, 1, 1.0, 16, &one);
    for (unsigned c = 0; c < 65537; c++) total_lo += one;
    fedc__secagg_dequantize_sum(&total_lo, 1, 65537, 1.0, 16, &out);
    CHECK(out == -1.0f, "the mean of 65537 values at -R is %.9g, want -1", out);
}

/* ---- key agreement ---- */

static void test_agree(void)
{
    char err[FEDC_ERRMSG_MAX];
    /* RFC 7748 section 6.1's keys; the expected key is BLAKE2b-256 keyed with
     * the context over the shared secret and Alice's then Bob's public key
     * (Alice's sorts first), computed with Python. */
    uint8_t a_sk[32], a_pk[32], b_sk[32], b_pk[32], want[32], k1[32], k2[32], pk[32];
    hex_decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a_sk, 32);
    hex_decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", a_pk, 32);
    hex_decode("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", b_sk, 32);
    hex_decode("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", b_pk, 32);
    hex_decode("8b834152faa4b213bc22181f7262b13bdd56c9f7b3732d813bd10c3b10564682", want, 32);
    crypto_scalarmult_base(pk, a_sk);
    CHECK(memcmp(pk, a_pk, 32) == 0, "RFC 7748: Alice's public key");
    CHECK_STATUS(fedc__secagg_agree(a_sk, b_pk, a_pk, k1, err, sizeof err), FEDC_OK, "agree (Alice)");
    CHECK_STATUS(fedc__secagg_agree(b_sk, a_pk, b_pk, k2, err, sizeof err), FEDC_OK, "agree (Bob)");
    CHECK(memcmp(k1, want, 32) == 0, "Alice's key differs from the independently computed vector");
    CHECK(memcmp(k2, want, 32) == 0, "Bob's key differs from the independently computed vector");
    uint8_t shared[32];
    CHECK(crypto_scalarmult(shared, a_sk, b_pk) == 0 && memcmp(shared, k1, 32) != 0,
          "the key is the raw X25519 output, not a hash of it");

    /* Random parties: symmetric, and different for different pairs. */
    enum { P = 6 };
    uint8_t pks[P][32], sks[P][32], keys[P][P][32];
    for (int i = 0; i < P; i++) fedc__secagg_keypair(pks[i], sks[i]);
    int asym = 0, fail = 0;
    for (int i = 0; i < P; i++)
        for (int j = 0; j < P; j++)
            if (i != j) fail |= fedc__secagg_agree(sks[i], pks[j], pks[i], keys[i][j], err, sizeof err);
    CHECK(fail == 0, "agree failed for random keys: %s", err);
    for (int i = 0; i < P; i++)
        for (int j = i + 1; j < P; j++) asym += memcmp(keys[i][j], keys[j][i], 32) != 0;
    CHECK(asym == 0, "%d of %d pairs got different keys on the two sides", asym, P * (P - 1) / 2);
    int same = 0;
    for (int i = 0; i < P; i++)
        for (int j = i + 1; j < P; j++)
            for (int a = 0; a < P; a++)
                for (int b = a + 1; b < P; b++)
                    if ((a != i || b != j) && memcmp(keys[i][j], keys[a][b], 32) == 0) same++;
    CHECK(same == 0, "%d pairs of different client pairs share a key", same);

    /* Refusals: a low-order point (X25519 gives 0) and one's own key. */
    uint8_t low[2][32] = {{0}, {1}};
    for (int l = 0; l < 2; l++) {
        memset(k1, 0x77, sizeof k1);
        err[0] = 0;
        CHECK_STATUS(fedc__secagg_agree(sks[0], low[l], pks[0], k1, err, sizeof err), FEDC_ERR_INVALID,
                     "agree with a low-order point");
        CHECK_CONTAINS(err, "low-order point", "agree low-order");
        int zero = 1;
        for (int b = 0; b < 32; b++) zero &= k1[b] == 0;
        CHECK(zero, "the key is not zeroed after a refusal");
    }
    CHECK_STATUS(fedc__secagg_agree(sks[0], pks[0], pks[0], k1, err, sizeof err), FEDC_ERR_INVALID,
                 "agree with oneself");
    CHECK_CONTAINS(err, "public key is our own", "agree with oneself");
}

/* ---- expansion ---- */

static void test_expand(void)
{
    uint8_t seed[32], seed2[32];
    for (int i = 0; i < 32; i++) seed[i] = (uint8_t)i;
    const uint64_t round = 0x0102030405060708ull;
    /* NIST SP 800-38A F.5.1: the keystream is ciphertext XOR plaintext. */
    static const uint8_t nist_key[16] = {0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
                                         0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c};
    static const uint8_t nist_iv[16] = {0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
                                        0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};
    static const char *const nist_pt = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
                                       "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710";
    static const char *const nist_ct = "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
                                       "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee";
    uint8_t ks[64];
    CHECK(fedc__secagg_aes_ctr(nist_key, nist_iv, ks, sizeof ks) == FEDC_OK, "aes_ctr failed");
    int nist_ok = 1;
    for (int i = 0; i < 64; i++) {
        unsigned pt, ct;
        sscanf(nist_pt + 2 * i, "%2x", &pt);
        sscanf(nist_ct + 2 * i, "%2x", &ct);
        nist_ok &= (ks[i] ^ pt) == ct;
    }
    CHECK(nist_ok, "AES-128-CTR differs from NIST SP 800-38A F.5.1");
    /* Seed 00..1f: key hashlib.blake2b(b"fedc secagg mask", key=seed,
     * digest_size=16) = 409035830f17c4cdd2ea977a4e3e540e, counter block
     * round (LE) || 0^8: `openssl enc -aes-128-ctr -K 4090...540e -iv
     * 08070605040302010000000000000000` of zeros, as little-endian words. */
    const uint32_t want0[8] = {0xc6983e9fu, 0xf52d7754u, 0x72ac98b6u, 0x563296eeu,
                               0xf5c71f6au, 0x6ec3d56cu, 0xa1d566cdu, 0xf1aeddc4u};
    const uint32_t want5000[4] = {0x21154fe4u, 0xc63ba731u, 0xc388a59eu, 0x00fcf21fu};
    enum { NK = 5004 };
    static uint32_t a[NK], b[NK];
    fedc__secagg_expand(seed, round, a, NK);
    CHECK(memcmp(a, want0, sizeof want0) == 0, "expand's first words %08x %08x ... differ from the vector",
          a[0], a[1]);
    CHECK(memcmp(a + 5000, want5000, sizeof want5000) == 0,
          "expand's words 5000.. (%08x) differ from the vector", a[5000]);
    fedc__secagg_expand(seed, round, b, NK);
    CHECK(memcmp(a, b, sizeof a) == 0, "expand is not deterministic");
    memset(b, 0, sizeof b);
    fedc__secagg_expand(seed, round, b, 10);
    CHECK(memcmp(a, b, 10 * sizeof a[0]) == 0 && b[10] == 0,
          "a short expansion is not a prefix, or wrote past n");
    fedc__secagg_expand(seed, round, b, 0); /* nothing */

    /* Different rounds (low and high bits) and seeds give unrelated masks. */
    struct {
        uint64_t round;
        int other_seed;
    } var[] = {{round + 1, 0}, {round ^ (1ull << 63), 0}, {round ^ (1ull << 32), 0}, {0, 0}, {round, 1}};
    memcpy(seed2, seed, 32);
    seed2[31] ^= 1;
    for (size_t v = 0; v < sizeof var / sizeof var[0]; v++) {
        fedc__secagg_expand(var[v].other_seed ? seed2 : seed, var[v].round, b, NK);
        int eq = 0;
        for (size_t i = 0; i < NK; i++) eq += a[i] == b[i];
        CHECK(eq <= 2, "variant %zu: %d of %d words equal the original's", v, eq, NK);
    }

    /* Uniform bytes. */
    size_t n = scaled(1u << 20, 1u << 14);
    uint32_t *w = malloc(n * sizeof *w);
    CHECK(w != NULL, "malloc");
    if (!w) return;
    fedc__secagg_expand(seed2, 7, w, n);
    double bound = chi2_bound(255, 5), top = chi2_byte(w, n, 24), low = chi2_byte(w, n, 0);
    CHECK(top < bound, "expand's top byte: chi-square %.1f >= %.1f over %zu words", top, bound, n);
    CHECK(low < bound, "expand's low byte: chi-square %.1f >= %.1f over %zu words", low, bound, n);
    double mean = 0;
    for (size_t i = 0; i < n; i++) mean += (double)w[i];
    mean /= (double)n;
    double sd = 4294967296.0 / sqrt(12.0 * (double)n);
    CHECK(fabs(mean - 2147483647.5) < 5 * sd, "expand's mean %.0f is off by more than 5 standard errors",
          mean);
    TEST_NOTE("expand: %zu words, top-byte chi-square %.1f, low-byte %.1f (bound %.1f)", n, top, low, bound);
    free(w);

    /* apply_mask = expand + add / sub, around its 4096-word chunks and
     * AES's 4-word blocks. */
    const size_t lens[] = {1, 3, 4, 5, 15, 16, 17, 1023, 4095, 4096, 4097, 8193, 9000};
    static uint32_t x[9000], y[9000], m[9000];
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li];
        for (size_t i = 0; i < len; i++) x[i] = (uint32_t)test_rand();
        memcpy(y, x, len * sizeof x[0]);
        fedc__secagg_expand(seed, round, m, len);
        fedc__secagg_apply_mask(y, len, seed, round, +1);
        fedc__secagg_mask_sub(y, m, len);
        int add_ok = memcmp(x, y, len * sizeof x[0]) == 0;
        fedc__secagg_apply_mask(y, len, seed, round, -1);
        fedc__secagg_mask_add(y, m, len);
        int sub_ok = memcmp(x, y, len * sizeof x[0]) == 0;
        fedc__secagg_apply_mask(y, len, seed, round, +1);
        fedc__secagg_apply_mask(y, len, seed, round, -1);
        fedc__secagg_apply_mask(y, len, seed, round, 0);
        int undo_ok = memcmp(x, y, len * sizeof x[0]) == 0;
        CHECK(add_ok && sub_ok && undo_ok,
              "n = %zu: apply_mask differs from expand (add %d, sub %d, undo %d)", len, add_ok, sub_ok,
              undo_ok);
    }
    CHECK(fedc__secagg_pair_sign(1, 4) == 1 && fedc__secagg_pair_sign(4, 1) == -1 &&
              fedc__secagg_pair_sign(3, 3) == 0,
          "pair_sign");
}

/* ---- five clients ---- */

static double correlation(const uint32_t *a, const uint32_t *b, size_t n)
{
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= (double)n, mb /= (double)n;
    for (size_t i = 0; i < n; i++) {
        double da = a[i] - ma, db = b[i] - mb;
        sab += da * db, saa += da * da, sbb += db * db;
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

static void test_five_clients(void)
{
    enum { K = 5 };
    const unsigned bits = 16;
    const double range = 1.0, levels = 65535.0;
    const uint64_t round = 42;
    size_t n = scaled(50021, 12007);
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc__secagg_check_params(range, bits, K, err, sizeof err), FEDC_OK, "check_params");

    float *x[K], *mean = malloc(n * sizeof *mean);
    uint32_t *q[K], *y[K], *plain = calloc(n, sizeof *plain), *sum = calloc(n, sizeof *sum),
                           *m = malloc(n * sizeof *m);
    uint8_t pk[K][32], sk[K][32], self_seed[K][32];
    int alloc_ok = mean && plain && sum && m;
    for (int c = 0; c < K; c++) {
        x[c] = malloc(n * sizeof *x[c]);
        q[c] = malloc(n * sizeof *q[c]);
        y[c] = malloc(n * sizeof *y[c]);
        alloc_ok &= x[c] && q[c] && y[c];
    }
    CHECK(alloc_ok, "malloc");
    if (!alloc_ok) return; /* the test ends here anyway */

    /* Client 0 sends a constant vector, the others random ones (some clipped). */
    for (int c = 0; c < K; c++) {
        for (size_t i = 0; i < n; i++) x[c][i] = c == 0 ? 0.25f : (float)(1.2 * test_uniform());
        fedc__secagg_quantize(x[c], n, range, bits, q[c]);
        for (size_t i = 0; i < n; i++) plain[i] += q[c][i];
        fedc__secagg_keypair(pk[c], sk[c]);
        randombytes_buf(self_seed[c], 32);
    }
    /* Each client masks on its own: the self mask, then every pair's key
     * from its side (added towards higher indices, subtracted towards lower). */
    int agree_fail = 0;
    for (int c = 0; c < K; c++) {
        memcpy(y[c], q[c], n * sizeof *q[c]);
        fedc__secagg_expand(self_seed[c], round, m, n);
        fedc__secagg_mask_add(y[c], m, n);
        for (int o = 0; o < K; o++) {
            if (o == c) continue;
            uint8_t key[32];
            agree_fail |= fedc__secagg_agree(sk[c], pk[o], pk[c], key, err, sizeof err);
            fedc__secagg_apply_mask(y[c], n, key, round, fedc__secagg_pair_sign((uint32_t)c, (uint32_t)o));
            sodium_memzero(key, sizeof key);
        }
    }
    CHECK(agree_fail == 0, "agree failed: %s", err);

    /* The server: the masked sum, less the self masks. */
    for (int c = 0; c < K; c++) fedc__secagg_mask_add(sum, y[c], n);
    CHECK(memcmp(sum, plain, n * sizeof *sum) != 0,
          "the masked sum equals the plain sum before the self masks go");
    for (int c = 0; c < K; c++) fedc__secagg_apply_mask(sum, n, self_seed[c], round, -1);
    CHECK(memcmp(sum, plain, n * sizeof *sum) == 0,
          "the masked sum minus the self masks is not the plain sum of the quantised vectors");
    fedc__secagg_dequantize_sum(sum, n, K, range, bits, mean);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (int c = 0; c < K; c++) want += clampd(x[c][i], range);
        want /= K;
        double e = fabs(mean[i] - want);
        if (e > worst) worst = e;
    }
    CHECK(worst <= range / levels + 0x1p-23, "the unmasked mean is off by %g > R / (2^16 - 1)", worst);

    /* A client missing (a dropout nobody recovered): its pairwise masks stay in. */
    memset(sum, 0, n * sizeof *sum);
    memset(plain, 0, n * sizeof *plain);
    for (int c = 0; c < K - 1; c++) {
        fedc__secagg_mask_add(sum, y[c], n);
        fedc__secagg_apply_mask(sum, n, self_seed[c], round, -1);
        fedc__secagg_mask_add(plain, q[c], n);
    }
    size_t eq = 0;
    for (size_t i = 0; i < n; i++) eq += sum[i] == plain[i];
    CHECK(eq <= 2, "without client 4, %zu of %zu sums came out right: the masks are not pairwise", eq, n);

    /* What the server sees of one client: uniform, and unrelated to the input. */
    double bound = chi2_bound(255, 5), rbound = 5.0 / sqrt((double)n);
    for (int c = 0; c < 2; c++) {
        double top = chi2_byte(y[c], n, 24), mid = chi2_byte(y[c], n, 8);
        CHECK(top < bound && mid < bound, "client %d's masked vector: chi-square %.1f, %.1f (bound %.1f)", c,
              top, mid, bound);
        TEST_NOTE("client %d: masked top-byte chi-square %.1f, byte 1 %.1f (bound %.1f)", c, top, mid, bound);
    }
    double r = correlation(q[1], y[1], n);
    CHECK(fabs(r) < rbound, "client 1's masked vector correlates with its input: r = %.4f (bound %.4f)", r,
          rbound);
    double r_in = correlation(q[1], q[1], n);
    CHECK(r_in > 0.999, "the correlation itself is broken: %.4f", r_in);

    for (int c = 0; c < K; c++) free(x[c]), free(q[c]), free(y[c]);
    free(mean), free(plain), free(sum), free(m);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(self_seed, sizeof self_seed);
}

int main(void)
{
    if (sodium_init() < 0) {
        printf("sodium_init failed\n");
        return EXIT_FAILURE;
    }
    const char *s = getenv("FEDC_SECAGG_TEST_SCALE");
    if (s && atoi(s) > 1) scale_div = (size_t)atoi(s);
    test_check_params();
    test_quantize();
    test_agree();
    test_expand();
    test_five_clients();
    return test_summary();
}
