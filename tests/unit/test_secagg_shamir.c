/*
 * Shamir secret sharing over GF(2^8) (src/secagg/shamir.c):
 *
 *   - the field: multiplication against a slow schoolbook reference for
 *     all 65,536 pairs, the FIPS-197 examples, a * a^-1 = 1 for all 255
 *     non-zero elements (and 0^-1 = 0);
 *   - split/combine: for k up to 8 and t in {1, 2, 3, 5, k}, every subset
 *     of the shares (in either order) gives the secret back when it has at
 *     least t shares and something else when it has fewer; for k = 255,
 *     random subsets of t shares and of more than t; secrets across the
 *     internal chunk boundary; t = 1 copies the secret; two splits of one
 *     secret differ;
 *   - below the threshold: with t = 3, the joint distribution of the bytes
 *     of any 2 shares (65,536 cells) and of each single share (256 cells)
 *     is uniform for two different secrets, and the same for both
 *     (chi-square and two-sample homogeneity), while with t = 2 the same
 *     statistic rejects the pair by a wide margin (the test has power);
 *   - errors: t = 0, t > k, k = 0, k > 255, zero or repeated
 *     x-coordinates, NULL buffers, sizes that overflow, each with a
 *     message that names it and nothing written; len = 0 is allowed;
 *   - constant time: when run under valgrind, the secret bytes are marked
 *     undefined (the "ctgrind" technique), so memcheck reports any branch
 *     or memory address that depends on them, in the field arithmetic,
 *     split or combine.
 *
 * The chi-square bounds are the Wilson-Hilferty quantile at z = 5 (a
 * false failure about 3e-7 each). FEDC_SECAGG_TEST_SCALE (a divisor,
 * default 1) shrinks the sample for slow runs (valgrind); the bounds follow
 * the degrees of freedom, so they keep their false-failure probability.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "secagg/shamir.h"
#include "test_util.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define HAVE_MEMCHECK 1
#endif
#endif
#ifndef HAVE_MEMCHECK
#define RUNNING_ON_VALGRIND               0
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#define VALGRIND_MAKE_MEM_DEFINED(p, n)   ((void)(p), (void)(n))
#endif

static size_t scale_div = 1;

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

static unsigned test_below(unsigned n) /* uniform enough in 0 .. n-1 for picking subsets */
{
    return (unsigned)(test_rand() % n);
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(test_rand() >> 56);
}

/* The upper z-quantile of chi-square with df degrees of freedom (Wilson-Hilferty). */
static double chi2_bound(double df, double z)
{
    double c = 2.0 / (9.0 * df);
    double r = 1.0 - c + z * sqrt(c);
    return df * r * r * r;
}

/* ---- the field ---- */

/* Schoolbook: carry-less product, then long division by 0x11b. */
static uint8_t slow_mul(uint8_t a, uint8_t b)
{
    unsigned p = 0;
    for (int i = 0; i < 8; i++)
        if (b & (1u << i)) p ^= (unsigned)a << i;
    for (int i = 14; i >= 8; i--)
        if (p & (1u << i)) p ^= 0x11bu << (i - 8);
    return (uint8_t)p;
}

static void test_gf256(void)
{
    int bad = 0;
    for (unsigned a = 0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++) {
            uint8_t got = fedc__gf256_mul((uint8_t)a, (uint8_t)b), want = slow_mul((uint8_t)a, (uint8_t)b);
            if (got != want && bad++ < 5) CHECK(0, "gf256 %02x * %02x = %02x, want %02x", a, b, got, want);
        }
    CHECK(bad == 0, "gf256_mul disagrees with the reference on %d of 65536 pairs", bad);
    /* FIPS-197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}. */
    CHECK(fedc__gf256_mul(0x57, 0x83) == 0xc1, "57 * 83 = %02x, want c1", fedc__gf256_mul(0x57, 0x83));
    CHECK(fedc__gf256_mul(0x57, 0x13) == 0xfe, "57 * 13 = %02x, want fe", fedc__gf256_mul(0x57, 0x13));
    /* The AES S-box's first step: {53}^-1 = {ca}. */
    CHECK(fedc__gf256_inv(0x53) == 0xca, "53^-1 = %02x, want ca", fedc__gf256_inv(0x53));
    CHECK(fedc__gf256_inv(0) == 0, "0^-1 = %02x, want 0", fedc__gf256_inv(0));
    int inv_bad = 0, seen[256] = {0};
    for (unsigned a = 1; a < 256; a++) {
        uint8_t ia = fedc__gf256_inv((uint8_t)a);
        if (slow_mul((uint8_t)a, ia) != 1 && inv_bad++ < 5) CHECK(0, "%02x * %02x^-1 (%02x) != 1", a, a, ia);
        seen[ia]++;
    }
    CHECK(inv_bad == 0, "the inverse is wrong for %d of 255 elements", inv_bad);
    int perm = seen[0] == 0;
    for (unsigned a = 1; a < 256; a++) perm &= seen[a] == 1;
    CHECK(perm, "the inverse is not a permutation of the 255 non-zero elements");
}

/* ---- split and combine ---- */

enum { MAXLEN = 200 };
static uint8_t shares_buf[FEDC_SHAMIR_MAX_SHARES * MAXLEN];

/* Combines the shares listed in idx[0 .. n-1] (0-based share numbers). */
static int combine_subset(const uint8_t *shares, size_t len, const unsigned *idx, unsigned n, uint8_t *out)
{
    static uint8_t pick[FEDC_SHAMIR_MAX_SHARES * MAXLEN];
    uint8_t xs[FEDC_SHAMIR_MAX_SHARES];
    for (unsigned j = 0; j < n; j++) {
        memcpy(pick + (size_t)j * len, shares + (size_t)idx[j] * len, len);
        xs[j] = (uint8_t)(idx[j] + 1);
    }
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc__shamir_combine(pick, xs, n, len, out, err, sizeof err);
    if (rc) CHECK(0, "combine of %u shares failed: %s", n, err);
    return rc;
}

static void test_small_all_subsets(void)
{
    const size_t lens[] = {1, 37, 64, 130};
    for (unsigned k = 1; k <= 8; k++) {
        const unsigned ts[] = {1, 2, 3, 5, k};
        for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
            unsigned t = ts[ti];
            if (t > k || (ti == 4 && (k == 1 || k == 2 || k == 3 || k == 5))) continue; /* no repeats */
            size_t len = lens[(k + ti) % 4];
            uint8_t secret[MAXLEN], out[MAXLEN];
            fill_random(secret, len);
            char err[FEDC_ERRMSG_MAX] = "";
            int rc = fedc__shamir_split(secret, len, t, k, shares_buf, err, sizeof err);
            CHECK_STATUS(rc, FEDC_OK, "split");
            if (rc) continue;
            int bad_ok = 0, bad_below = 0, tried = 0;
            for (unsigned mask = 1; mask < (1u << k); mask++) {
                unsigned idx[8], n = 0;
                for (unsigned i = 0; i < k; i++)
                    if (mask & (1u << i)) idx[n++] = i;
                if (mask & 1) /* odd masks list the shares backwards: the order must not matter */
                    for (unsigned a = 0, b = n - 1; a < b; a++, b--) {
                        unsigned tmp = idx[a];
                        idx[a] = idx[b];
                        idx[b] = tmp;
                    }
                if (combine_subset(shares_buf, len, idx, n, out)) continue;
                tried++;
                int same = memcmp(out, secret, len) == 0;
                if (n >= t)
                    bad_ok += !same;
                else if (same && len >= 8) /* below t the result is uniform: equal w.p. 2^-(8 len) */
                    bad_below++;
            }
            CHECK(bad_ok == 0 && tried == (int)(1u << k) - 1,
                  "k = %u, t = %u, len = %zu: %d of the subsets with >= t shares missed the secret", k, t,
                  len, bad_ok);
            CHECK(bad_below == 0, "k = %u, t = %u: %d subsets below the threshold gave the secret", k, t,
                  bad_below);
            if (t == 1) {
                int copies = 1;
                for (unsigned i = 0; i < k; i++) copies &= memcmp(shares_buf + i * len, secret, len) == 0;
                CHECK(copies, "k = %u, t = 1: the shares are not copies of the secret", k);
            }
        }
    }
}

static void test_k255(void)
{
    const unsigned k = 255, ts[] = {1, 2, 3, 5, 17, 128, 254, 255};
    const size_t len = 100; /* crosses split's 64-byte chunks */
    for (size_t ti = 0; ti < sizeof ts / sizeof ts[0]; ti++) {
        unsigned t = ts[ti];
        uint8_t secret[MAXLEN], out[MAXLEN];
        fill_random(secret, len);
        char err[FEDC_ERRMSG_MAX] = "";
        int rc = fedc__shamir_split(secret, len, t, k, shares_buf, err, sizeof err);
        CHECK_STATUS(rc, FEDC_OK, "split k = 255");
        if (rc) continue;
        int trials = t >= 128 ? 4 : 20, missed = 0, below = 0;
        for (int r = 0; r < trials + 6; r++) {
            /* A random subset in random order (partial Fisher-Yates). The
             * first `trials` have exactly t shares, then more than t, and
             * the last one t - 1. */
            unsigned perm[FEDC_SHAMIR_MAX_SHARES], n;
            for (unsigned i = 0; i < k; i++) perm[i] = i;
            if (r < trials)
                n = t;
            else if (r < trials + 5)
                n = t + (t < k ? 1 + test_below(k - t) : 0);
            else
                n = t - 1;
            if (n == 0) continue;
            for (unsigned i = 0; i < n; i++) {
                unsigned j = i + test_below(k - i), tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            if (combine_subset(shares_buf, len, perm, n, out)) continue;
            int same = memcmp(out, secret, len) == 0;
            if (n >= t && !same) missed++;
            if (n < t && same) below++;
        }
        CHECK(missed == 0, "k = 255, t = %u: %d random subsets of >= t shares missed the secret", t, missed);
        CHECK(below == 0, "k = 255, t = %u: t - 1 shares gave the secret", t);
    }
    /* All 255 shares with t = 255, in order. */
    uint8_t secret[32], out[32];
    fill_random(secret, sizeof secret);
    unsigned all[FEDC_SHAMIR_MAX_SHARES];
    for (unsigned i = 0; i < k; i++) all[i] = i;
    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 255, 255, shares_buf, NULL, 0), FEDC_OK,
                 "split 255/255");
    combine_subset(shares_buf, sizeof secret, all, 255, out);
    CHECK(memcmp(out, secret, sizeof secret) == 0, "all 255 shares of a 255-of-255 split missed the secret");
}

static void test_fresh_randomness(void)
{
    uint8_t secret[48] = {0}, a[5 * 48], b[5 * 48];
    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 3, 5, a, NULL, 0), FEDC_OK, "split a");
    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 3, 5, b, NULL, 0), FEDC_OK, "split b");
    CHECK(memcmp(a, b, sizeof a) != 0, "two splits of one secret gave the same shares");
    /* No share of a zero secret is zero everywhere (each byte is zero w.p. 1/256). */
    int zero_share = 0;
    for (int i = 0; i < 5; i++) {
        int z = 1;
        for (size_t j = 0; j < sizeof secret; j++) z &= a[i * sizeof secret + j] == 0;
        zero_share |= z;
    }
    CHECK(!zero_share, "a share of the zero secret is all zero: the coefficients are not random");
}

/* ---- below the threshold ---- */

/* Chi-square of counts against the uniform distribution. */
static double chi2_uniform(const uint32_t *c, size_t cells, double total)
{
    double e = total / (double)cells, s = 0;
    for (size_t i = 0; i < cells; i++) s += ((double)c[i] - e) * ((double)c[i] - e) / e;
    return s;
}

/* Two-sample chi-square (equal sample sizes): are the counts the same distribution? */
static double chi2_homogeneity(const uint32_t *a, const uint32_t *b, size_t cells, size_t *df)
{
    double s = 0;
    size_t used = 0;
    for (size_t i = 0; i < cells; i++) {
        double n = (double)a[i] + (double)b[i];
        if (n == 0) continue;
        used++;
        s += ((double)a[i] - (double)b[i]) * ((double)a[i] - (double)b[i]) / n;
    }
    *df = used ? used - 1 : 0;
    return s;
}

enum { UK = 4, UNPAIRS = UK * (UK - 1) / 2, ULEN = 64 };
static uint32_t pair_counts[2][UNPAIRS][65536];
static uint32_t single_counts[2][UK][256];

static void test_below_threshold(void)
{
    size_t splits = 20000 / scale_div;
    if (splits < 5120) splits = 5120; /* at least 5 per cell of the joint table */
    uint8_t secrets[2][ULEN], sh[UK * ULEN];
    memset(secrets[0], 0, ULEN);
    for (int j = 0; j < ULEN; j++) secrets[1][j] = (uint8_t)(0xa5 ^ (j * 37));
    memset(pair_counts, 0, sizeof pair_counts);
    memset(single_counts, 0, sizeof single_counts);
    for (int s = 0; s < 2; s++)
        for (size_t r = 0; r < splits; r++) {
            if (fedc__shamir_split(secrets[s], ULEN, 3, UK, sh, NULL, 0)) {
                CHECK(0, "split failed");
                return;
            }
            for (int j = 0; j < ULEN; j++) {
                int p = 0;
                for (int a = 0; a < UK; a++) {
                    single_counts[s][a][sh[a * ULEN + j]]++;
                    for (int b = a + 1; b < UK; b++, p++)
                        pair_counts[s][p][sh[a * ULEN + j] << 8 | sh[b * ULEN + j]]++;
                }
            }
        }
    double total = (double)splits * ULEN;
    double pair_bound = chi2_bound(65535, 5), single_bound = chi2_bound(255, 5);
    double worst_pair = 0, worst_single = 0, worst_hom = 0, worst_hom_bound = 0;
    for (int s = 0; s < 2; s++) {
        for (int p = 0; p < UNPAIRS; p++) {
            double c = chi2_uniform(pair_counts[s][p], 65536, total);
            CHECK(c < pair_bound, "t = 3, secret %d, share pair %d: chi-square %.0f >= %.0f (df 65535)", s, p,
                  c, pair_bound);
            if (c > worst_pair) worst_pair = c;
        }
        for (int a = 0; a < UK; a++) {
            double c = chi2_uniform(single_counts[s][a], 256, total);
            CHECK(c < single_bound, "t = 3, secret %d, share %d: chi-square %.1f >= %.1f (df 255)", s, a, c,
                  single_bound);
            if (c > worst_single) worst_single = c;
        }
    }
    for (int p = 0; p < UNPAIRS; p++) {
        size_t df;
        double c = chi2_homogeneity(pair_counts[0][p], pair_counts[1][p], 65536, &df);
        double bound = chi2_bound((double)df, 5);
        CHECK(c < bound,
              "t = 3, share pair %d: the two secrets' distributions differ, chi-square %.0f >= %.0f", p, c,
              bound);
        if (c / bound > worst_hom / (worst_hom_bound ? worst_hom_bound : 1))
            worst_hom = c, worst_hom_bound = bound;
    }
    TEST_NOTE(
        "t = 3, %zu splits x %d bytes: worst pair chi-square %.0f (bound %.0f), single %.1f (bound %.1f), "
        "homogeneity %.0f (bound %.0f)",
        splits, ULEN, worst_pair, pair_bound, worst_single, single_bound, worst_hom, worst_hom_bound);

    /* The control: with t = 2 two shares fix the secret, so the pair of a
     * fixed secret lives on 256 of the 65,536 cells. */
    memset(pair_counts[0][0], 0, sizeof pair_counts[0][0]);
    size_t csplits = splits / 4;
    for (size_t r = 0; r < csplits; r++) {
        if (fedc__shamir_split(secrets[0], ULEN, 2, 2, sh, NULL, 0)) break;
        for (int j = 0; j < ULEN; j++) pair_counts[0][0][sh[j] << 8 | sh[ULEN + j]]++;
    }
    double c = chi2_uniform(pair_counts[0][0], 65536, (double)csplits * ULEN);
    CHECK(c > 100 * pair_bound, "t = 2: two shares should reveal the secret, but chi-square is only %.0f", c);
}

/* ---- errors ---- */

static void test_errors(void)
{
    uint8_t secret[8] = {1, 2, 3, 4, 5, 6, 7, 8}, sh[3 * 8], out[8];
    char err[FEDC_ERRMSG_MAX];
    struct {
        unsigned t, k;
        const char *needle;
    } bad[] = {{0, 3, "threshold t must be 1..k"},
               {4, 3, "threshold t must be 1..k (k = 3), got 4"},
               {1, 0, "number of shares k must be 1..255, got 0"},
               {2, 256, "got 256"},
               {3, 1000, "got 1000"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(sh, 0xee, sizeof sh);
        err[0] = 0;
        CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, bad[i].t, bad[i].k, sh, err, sizeof err),
                     FEDC_ERR_INVALID, "split with a bad t or k");
        CHECK_CONTAINS(err, bad[i].needle, "split's message");
        int untouched = 1;
        for (size_t j = 0; j < sizeof sh; j++) untouched &= sh[j] == 0xee;
        CHECK(untouched, "split wrote shares on failure (t = %u, k = %u)", bad[i].t, bad[i].k);
    }
    CHECK_STATUS(fedc__shamir_split(NULL, 8, 2, 3, sh, err, sizeof err), FEDC_ERR_INVALID,
                 "split NULL secret");
    CHECK_CONTAINS(err, "needs a secret", "split NULL");
    CHECK_STATUS(fedc__shamir_split(secret, 8, 2, 3, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "split NULL shares");
    CHECK_STATUS(fedc__shamir_split(secret, SIZE_MAX / 2, 2, 3, sh, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "split too large");
    CHECK_CONTAINS(err, "do not fit", "split too large");
    /* len = 0: nothing to do, and the buffers may be NULL. */
    CHECK_STATUS(fedc__shamir_split(NULL, 0, 2, 3, NULL, err, sizeof err), FEDC_OK, "split len 0");
    CHECK_STATUS(fedc__shamir_split(NULL, 0, 0, 3, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "split len 0 still checks t");
    uint8_t xs0[2] = {1, 2};
    CHECK_STATUS(fedc__shamir_combine(NULL, xs0, 2, 0, NULL, err, sizeof err), FEDC_OK, "combine len 0");
    /* A NULL err buffer is fine. */
    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 0, 3, sh, NULL, 0), FEDC_ERR_INVALID, "NULL err");

    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 2, 3, sh, err, sizeof err), FEDC_OK, "split");
    uint8_t dup[3] = {1, 3, 1}, zero[3] = {1, 0, 2}, good[3] = {1, 2, 3};
    memset(out, 0xee, sizeof out);
    CHECK_STATUS(fedc__shamir_combine(sh, dup, 3, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "duplicate x");
    CHECK_CONTAINS(err, "shares 0 and 2 have the same x-coordinate 1", "duplicate x");
    CHECK_STATUS(fedc__shamir_combine(sh, zero, 3, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "zero x");
    CHECK_CONTAINS(err, "share 1 has x-coordinate 0", "zero x");
    int untouched = 1;
    for (size_t j = 0; j < sizeof out; j++) untouched &= out[j] == 0xee;
    CHECK(untouched, "combine wrote the secret on failure");
    CHECK_STATUS(fedc__shamir_combine(sh, good, 0, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "n = 0");
    CHECK_CONTAINS(err, "needs 1..255 shares, got 0", "n = 0");
    CHECK_STATUS(fedc__shamir_combine(sh, good, 256, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "n = 256");
    CHECK_STATUS(fedc__shamir_combine(sh, NULL, 3, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "NULL xs");
    CHECK_STATUS(fedc__shamir_combine(NULL, good, 3, sizeof secret, out, err, sizeof err), FEDC_ERR_INVALID,
                 "NULL shares");
    CHECK_STATUS(fedc__shamir_combine(sh, good, 3, sizeof secret, out, err, sizeof err), FEDC_OK, "combine");
    CHECK(memcmp(out, secret, sizeof secret) == 0, "combine after the errors missed the secret");
}

/* ---- constant time (meaningful under valgrind only) ---- */

static void test_constant_time(void)
{
    if (!RUNNING_ON_VALGRIND) {
        TEST_NOTE("not under valgrind: the constant-time check needs memcheck and is skipped");
        return;
    }
    /* Undefined bytes stand for secrets: memcheck complains about any
     * branch or address that depends on them (--error-exitcode fails the run). */
    uint8_t a[64], b[64], r[64];
    fill_random(a, sizeof a);
    fill_random(b, sizeof b);
    VALGRIND_MAKE_MEM_UNDEFINED(a, sizeof a);
    VALGRIND_MAKE_MEM_UNDEFINED(b, sizeof b);
    for (int i = 0; i < 64; i++) r[i] = (uint8_t)(fedc__gf256_mul(a[i], b[i]) ^ fedc__gf256_inv(a[i]));
    VALGRIND_MAKE_MEM_DEFINED(r, sizeof r);
    VALGRIND_MAKE_MEM_DEFINED(a, sizeof a);
    VALGRIND_MAKE_MEM_DEFINED(b, sizeof b);
    int ok = 1;
    for (int i = 0; i < 64; i++) ok &= r[i] == (uint8_t)(slow_mul(a[i], b[i]) ^ fedc__gf256_inv(a[i]));
    CHECK(ok, "gf256 on undefined inputs gave wrong values");

    uint8_t secret[100], copy[100], sh[7 * 100], out[100];
    fill_random(secret, sizeof secret);
    memcpy(copy, secret, sizeof secret);
    VALGRIND_MAKE_MEM_UNDEFINED(secret, sizeof secret);
    CHECK_STATUS(fedc__shamir_split(secret, sizeof secret, 4, 7, sh, NULL, 0), FEDC_OK, "split (ct)");
    uint8_t xs[4] = {2, 7, 3, 5}, pick[4 * 100];
    for (int j = 0; j < 4; j++) memcpy(pick + j * 100, sh + (xs[j] - 1) * 100, 100);
    CHECK_STATUS(fedc__shamir_combine(pick, xs, 4, sizeof out, out, NULL, 0), FEDC_OK, "combine (ct)");
    VALGRIND_MAKE_MEM_DEFINED(out, sizeof out);
    VALGRIND_MAKE_MEM_DEFINED(sh, sizeof sh);
    VALGRIND_MAKE_MEM_DEFINED(secret, sizeof secret);
    CHECK(memcmp(out, copy, sizeof out) == 0, "split/combine on undefined secrets missed the secret");
    TEST_NOTE("constant-time check ran under memcheck");
}

int main(void)
{
    const char *s = getenv("FEDC_SECAGG_TEST_SCALE");
    if (s && atoi(s) > 1) scale_div = (size_t)atoi(s);
    test_gf256();
    test_small_all_subsets();
    test_k255();
    test_fresh_randomness();
    test_below_threshold();
    test_errors();
    test_constant_time();
    return test_summary();
}
