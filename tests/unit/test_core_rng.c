/*
 * The seedable generator: known answers for xoshiro256** seeded through
 * splitmix64, determinism, the ranges of uniform() and below(), rough
 * moments of normal() and gamma(), shuffle as a permutation, and seed
 * derivation. Every draw comes from a fixed seed, so the statistical
 * tolerances (several standard errors wide) cannot make the test flaky.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "test_util.h"

/* First outputs of xoshiro256** whose state is four successive splitmix64
 * outputs of the seed, computed with an independent implementation. */
static void test_known_answers(void)
{
    static const uint64_t want0[4] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL, 0x1a5f849d4933e6e0ULL,
                                      0x6aa594f1262d2d2cULL};
    static const uint64_t want42[4] = {0x15780b2e0c2ec716ULL, 0x6104d9866d113a7eULL, 0xae17533239e499a1ULL,
                                       0xecb8ad4703b360a1ULL};
    fedc_rng r;
    fedc_rng_seed(&r, 0);
    /* splitmix64(0) is the published 0xe220a8397b1dcdaf. */
    CHECK(r.s[0] == 0xe220a8397b1dcdafULL, "seed 0: first state word %016llx", (unsigned long long)r.s[0]);
    for (int i = 0; i < 4; i++) {
        uint64_t v = fedc_rng_u64(&r);
        CHECK(v == want0[i], "seed 0 output %d: got %016llx want %016llx", i, (unsigned long long)v,
              (unsigned long long)want0[i]);
    }
    fedc_rng_seed(&r, 42);
    for (int i = 0; i < 4; i++) {
        uint64_t v = fedc_rng_u64(&r);
        CHECK(v == want42[i], "seed 42 output %d: got %016llx want %016llx", i, (unsigned long long)v,
              (unsigned long long)want42[i]);
    }
}

static void test_determinism(void)
{
    fedc_rng a, b, c;
    fedc_rng_seed(&a, 12345);
    fedc_rng_seed(&b, 12345);
    fedc_rng_seed(&c, 12346);
    int same = 1, differ = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t x = fedc_rng_u64(&a), y = fedc_rng_u64(&b), z = fedc_rng_u64(&c);
        if (x != y) same = 0;
        if (x != z) differ++;
    }
    CHECK(same, "two generators with the same seed give the same stream");
    CHECK(differ > 9990, "seeds 12345 and 12346 give different streams (%d of 10000 differ)", differ);

    /* Every kind of draw is reproducible, including the Box-Muller spare:
     * re-seeding must drop a spare left over from the old stream. */
    fedc_rng_seed(&a, 7);
    fedc_rng_seed(&b, 7);
    int mixed_same = 1;
    for (int i = 0; i < 2000; i++) {
        double ua = fedc_rng_uniform(&a), ub = fedc_rng_uniform(&b);
        double na = fedc_rng_normal(&a), nb = fedc_rng_normal(&b);
        double ga = fedc_rng_gamma(&a, 0.7), gb = fedc_rng_gamma(&b, 0.7);
        uint64_t ka = fedc_rng_below(&a, 1000), kb = fedc_rng_below(&b, 1000);
        if (memcmp(&ua, &ub, sizeof ua) || memcmp(&na, &nb, sizeof na) || memcmp(&ga, &gb, sizeof ga) ||
            ka != kb)
            mixed_same = 0;
    }
    CHECK(mixed_same, "uniform/normal/gamma/below draws are reproducible");

    fedc_rng_seed(&a, 99);
    (void)fedc_rng_normal(&a); /* leaves a spare */
    fedc_rng_seed(&a, 5);
    fedc_rng_seed(&b, 5);
    double n1 = fedc_rng_normal(&a), n2 = fedc_rng_normal(&b);
    CHECK(n1 == n2, "re-seeding discards the Box-Muller spare (%g vs %g)", n1, n2);
}

static void test_uniform(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 2024);
    const int n = 200000;
    double sum = 0, lo = 1, hi = 0;
    int in_range = 1;
    int bins[10] = {0};
    for (int i = 0; i < n; i++) {
        double u = fedc_rng_uniform(&r);
        if (!(u >= 0.0 && u < 1.0)) in_range = 0;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
        sum += u;
        bins[(int)(u * 10)]++;
    }
    CHECK(in_range, "every uniform draw lies in [0, 1)");
    CHECK(lo < 1e-4 && hi > 1 - 1e-4, "uniform draws cover the interval (min %g, max %g)", lo, hi);
    /* Standard error of the mean: sqrt(1/12/n) = 6.5e-4. */
    CHECK(fabs(sum / n - 0.5) < 0.004, "uniform mean %g is about 0.5", sum / n);
    for (int b = 0; b < 10; b++)
        CHECK(abs(bins[b] - n / 10) < 1000, "uniform decile %d holds %d of %d draws", b, bins[b], n);
}

static void test_below(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 77);
    const uint64_t ns[] = {1, 2, 3, 7, 10, 1000, 1ULL << 32, (1ULL << 63) + 1, UINT64_MAX};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int ok = 1;
        uint64_t maxv = 0;
        for (int i = 0; i < 20000; i++) {
            uint64_t v = fedc_rng_below(&r, ns[k]);
            if (v >= ns[k]) ok = 0;
            if (v > maxv) maxv = v;
        }
        CHECK(ok, "below(%llu) < %llu for 20000 draws", (unsigned long long)ns[k], (unsigned long long)ns[k]);
        if (ns[k] <= 10)
            CHECK(maxv == ns[k] - 1, "below(%llu) reaches %llu (max seen %llu)", (unsigned long long)ns[k],
                  (unsigned long long)(ns[k] - 1), (unsigned long long)maxv);
    }

    /* Counts of below(7): each value has expectation n/7 and standard
     * deviation sqrt(n * 1/7 * 6/7) = 121 for n = 70000. */
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[fedc_rng_below(&r, 7)]++;
    for (int v = 0; v < 7; v++)
        CHECK(abs(counts[v] - 10000) < 700, "below(7) gives %d %d times of 70000", v, counts[v]);
}

static void test_normal(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 31337);
    const int n = 200000;
    double sum = 0, sum2 = 0, sum3 = 0;
    int finite = 1, beyond2 = 0;
    for (int i = 0; i < n; i++) {
        double x = fedc_rng_normal(&r);
        if (!isfinite(x)) finite = 0;
        sum += x;
        sum2 += x * x;
        sum3 += x * x * x;
        if (fabs(x) > 2) beyond2++;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CHECK(finite, "normal draws are finite");
    /* Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032. */
    CHECK(fabs(mean) < 0.015, "normal mean %g is about 0", mean);
    CHECK(fabs(var - 1) < 0.02, "normal variance %g is about 1", var);
    CHECK(fabs(sum3 / n) < 0.05, "normal skewness %g is about 0", sum3 / n);
    /* P(|x| > 2) = 0.0455. */
    CHECK(fabs((double)beyond2 / n - 0.0455) < 0.003, "normal tail mass %g is about 0.0455",
          (double)beyond2 / n);
}

static void test_gamma(void)
{
    const double shapes[] = {0.1, 0.5, 1.0, 2.5, 10.0, 100.0};
    fedc_rng r;
    fedc_rng_seed(&r, 8);
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const double a = shapes[k];
        const int n = 100000;
        double sum = 0, sum2 = 0;
        int nonneg = 1;
        for (int i = 0; i < n; i++) {
            double g = fedc_rng_gamma(&r, a);
            if (!(g >= 0) || !isfinite(g)) nonneg = 0;
            sum += g;
            sum2 += g * g;
        }
        double mean = sum / n, var = sum2 / n - mean * mean;
        /* Gamma(a, 1) has mean a and variance a: the standard error of the
         * mean is sqrt(a / n); allow six of them. */
        double tol = 6 * sqrt(a / n);
        CHECK(nonneg, "gamma(%g) draws are finite and non-negative", a);
        CHECK(fabs(mean - a) < tol, "gamma(%g) mean %g is within %g of %g", a, mean, tol, a);
        CHECK(fabs(var - a) < 0.1 * a + 0.01, "gamma(%g) variance %g is about %g", a, var, a);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void test_shuffle(void)
{
    enum { N = 1000 };
    static uint32_t v[N], w[N];
    for (uint32_t i = 0; i < N; i++) v[i] = i * 3 + 1;
    fedc_rng r;
    fedc_rng_seed(&r, 4);
    fedc_rng_shuffle_u32(&r, v, N);
    int moved = 0;
    for (uint32_t i = 0; i < N; i++) moved += v[i] != i * 3 + 1;
    CHECK(moved > N / 2, "a shuffle of %d values moves most of them (%d moved)", N, moved);
    memcpy(w, v, sizeof v);
    qsort(w, N, sizeof w[0], cmp_u32);
    int perm = 1;
    for (uint32_t i = 0; i < N; i++)
        if (w[i] != i * 3 + 1) perm = 0;
    CHECK(perm, "the shuffled values are a permutation of the input");

    /* Same seed, same permutation. */
    static uint32_t u[N];
    for (uint32_t i = 0; i < N; i++) u[i] = i * 3 + 1;
    fedc_rng_seed(&r, 4);
    fedc_rng_shuffle_u32(&r, u, N);
    CHECK(!memcmp(u, v, sizeof u), "shuffle with the same seed gives the same permutation");

    /* Every position receives every value about equally often: shuffle
     * [0, 1, 2, 3] 24000 times and count where 0 lands. */
    int where[4] = {0};
    for (int t = 0; t < 24000; t++) {
        uint32_t s[4] = {0, 1, 2, 3};
        fedc_rng_shuffle_u32(&r, s, 4);
        for (int i = 0; i < 4; i++)
            if (s[i] == 0) where[i]++;
    }
    for (int i = 0; i < 4; i++)
        CHECK(abs(where[i] - 6000) < 450, "value 0 lands at %d %d times of 24000", i, where[i]);

    /* Degenerate sizes are no-ops. */
    uint32_t one = 42;
    fedc_rng_shuffle_u32(&r, &one, 1);
    fedc_rng_shuffle_u32(&r, NULL, 0);
    CHECK(one == 42, "shuffling one value leaves it in place");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int popcount64(uint64_t x)
{
    int n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}

static void test_seed_derive(void)
{
    const uint64_t base = 1234;
    CHECK(fedc_seed_derive(base, 1, 2) == fedc_seed_derive(base, 1, 2), "derive is deterministic");
    CHECK(fedc_seed_derive(base, 1, 2) != fedc_seed_derive(base, 2, 1), "tag order matters");
    CHECK(fedc_seed_derive(base, 0, 0) != fedc_seed_derive(base + 1, 0, 0), "seed matters");
    CHECK(fedc_seed_derive(base, 0, 0) != base, "derive(seed, 0, 0) is not the seed");

    /* A grid of (round, node) tags gives distinct, well-spread seeds:
     * neighbouring tags differ in about half of the 64 bits. */
    enum { R = 64, K = 64 };
    static uint64_t seen[R * K];
    long bits = 0;
    int pairs = 0, worst = 64;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < K; j++) {
            seen[i * K + j] = fedc_seed_derive(base, (uint64_t)i, (uint64_t)j);
            if (j > 0) {
                int d = popcount64(seen[i * K + j] ^ seen[i * K + j - 1]);
                bits += d;
                pairs++;
                if (d < worst) worst = d;
            }
        }
    qsort(seen, R * K, sizeof seen[0], cmp_u64);
    int distinct = 1;
    for (int i = 1; i < R * K; i++)
        if (seen[i] == seen[i - 1]) distinct = 0;
    CHECK(distinct, "%d (tag1, tag2) pairs give %d distinct seeds", R * K, R * K);
    double avg = (double)bits / pairs;
    CHECK(avg > 30 && avg < 34, "neighbouring tags differ in %.2f bits on average", avg);
    CHECK(worst >= 12, "neighbouring tags differ in at least 12 bits (worst %d)", worst);

    /* The tags also separate from each other: (t, 0) and (0, t) differ. */
    int sep = 1;
    for (uint64_t t = 1; t < 200; t++)
        if (fedc_seed_derive(base, t, 0) == fedc_seed_derive(base, 0, t)) sep = 0;
    CHECK(sep, "derive(seed, t, 0) != derive(seed, 0, t)");

    /* Streams seeded from derived seeds do not start alike. */
    fedc_rng a, b;
    fedc_rng_seed(&a, fedc_seed_derive(base, 3, 1));
    fedc_rng_seed(&b, fedc_seed_derive(base, 3, 2));
    CHECK(fedc_rng_u64(&a) != fedc_rng_u64(&b), "derived streams differ");

    /* String hashes: deterministic, distinct for near-identical ids. */
    CHECK(fedc_hash_string("node-1") == fedc_hash_string("node-1"), "hash is deterministic");
    CHECK(fedc_hash_string("node-1") != fedc_hash_string("node-2"), "hash separates ids");
    CHECK(fedc_hash_string("") != fedc_hash_string("a"), "hash separates '' and 'a'");
    CHECK(fedc_hash_string("ab") != fedc_hash_string("ba"), "hash depends on order");
}

int main(void)
{
    test_known_answers();
    test_determinism();
    test_uniform();
    test_below();
    test_normal();
    test_gamma();
    test_shuffle();
    test_seed_derive();
    return test_summary();
}
