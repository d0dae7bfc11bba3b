/*
 * The distributed discrete Gaussian mechanism (src/privacy/ddg.c, Kairouz,
 * Liu, Steinke 2021):
 *
 *   - padding and the randomized Hadamard rotation: H H = P I, the rotation
 *     preserves the L2 norm and its inverse gives x back; the signs depend
 *     on the seed and round only;
 *   - the discrete Gaussian sampler (Canonne, Kamath, Steinke 2020) against
 *     the exact moments of N_Z(0, sigma^2) for sigma 0.5, 2 and 10: mean,
 *     variance, P(0) and symmetry within 5 standard errors;
 *   - conditional randomized rounding: neighbours only, the norm bound, no
 *     bias; the bound of Theorem 1 against its closed form;
 *   - encode then decode: one client without noise, several clients with
 *     noise and cancelling masks, values near +-2^(B-1) and wrapped sums;
 *   - accounting: epsilon shrinks with sigma, grows with the rounds, and
 *     with tau ~ 0 the RDP is the Gaussian's a Delta^2 / (2 n sigma^2);
 *   - the gamma helper's closed form; bad parameters are refused by name.
 *
 * The test inputs come from a fixed LCG (they are not privacy noise); all
 * noise and rounding come from the library (libsodium).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "privacy/ddg.h"
#include "test_util.h"

static uint64_t lcg_state = 0x9e3779b97f4a7c15ULL;

/* Uniform in [-1, 1) from a fixed LCG: reproducible test inputs. */
static double lcg_unit(void)
{
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg_state >> 11) * 0x1p-52 - 1.0;
}

static double norm2(const double *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

static const uint8_t seed_a[FEDC_DDG_SEED_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static const uint8_t seed_b[FEDC_DDG_SEED_BYTES] = {42};

static void test_padding(void)
{
    CHECK(fedc__ddg_padded_dim(0) == 1 && fedc__ddg_padded_dim(1) == 1, "padded 0, 1 -> 1");
    CHECK(fedc__ddg_padded_dim(2) == 2 && fedc__ddg_padded_dim(3) == 4, "padded 2 -> 2, 3 -> 4");
    CHECK(fedc__ddg_padded_dim(1000) == 1024 && fedc__ddg_padded_dim(1024) == 1024 &&
              fedc__ddg_padded_dim(1025) == 2048,
          "padded 1000, 1024 -> 1024, 1025 -> 2048");
    CHECK(fedc__ddg_padded_dim(FEDC_DDG_MAX_DIM) == FEDC_DDG_MAX_DIM, "padded 2^40 -> 2^40");
    CHECK(fedc__ddg_padded_dim(FEDC_DDG_MAX_DIM + 1) == 0, "padded beyond 2^40 -> 0");
}

static void test_rotation(void)
{
    /* H H = p I on a small vector, and H e_0 is all ones. */
    double h[8] = {1, 0, 0, 0, 0, 0, 0, 0}, w[8];
    fedc__ddg_fwht(h, 8);
    int ones = 1;
    for (int i = 0; i < 8; i++) ones &= h[i] == 1.0;
    CHECK(ones, "H e_0 is the all-ones vector");
    for (int i = 0; i < 8; i++) w[i] = h[i] = lcg_unit();
    fedc__ddg_fwht(h, 8);
    fedc__ddg_fwht(h, 8);
    double e = 0;
    for (int i = 0; i < 8; i++) e = fmax(e, fabs(h[i] - 8.0 * w[i]));
    CHECK(e < 1e-12, "H H = 8 I: error %g", e);

    enum { D = 1000, P = 1024 };
    static double x[P], v[P], u[P];
    for (size_t i = 0; i < P; i++) x[i] = i < D ? lcg_unit() : 0.0;
    memcpy(v, x, sizeof v);
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc__ddg_rotate(seed_a, 7, v, P, err, sizeof err), FEDC_OK, "rotate");
    double nx = norm2(x, P), nv = norm2(v, P);
    CHECK(fabs(nv - nx) <= 1e-5 * nx, "rotation keeps the norm: %g vs %g", nv, nx);
    /* The mass spreads out: the rotated padding is no longer zero. */
    double tail = norm2(v + D, P - D);
    CHECK(tail > 0.01 * nx, "the rotation mixes the padding in (%g)", tail);
    memcpy(u, v, sizeof u);
    CHECK_STATUS(fedc__ddg_unrotate(seed_a, 7, u, P, err, sizeof err), FEDC_OK, "unrotate");
    e = 0;
    for (size_t i = 0; i < P; i++) e = fmax(e, fabs(u[i] - x[i]));
    CHECK(e < 1e-9, "unrotate(rotate(x)) = x: max error %g", e);
    e = 0;
    for (size_t i = D; i < P; i++) e = fmax(e, fabs(u[i]));
    CHECK(e < 1e-9, "the padding comes back zero: %g", e);

    /* The signs depend on seed and round only: same inputs, same result. */
    memcpy(u, x, sizeof u);
    fedc__ddg_rotate(seed_a, 7, u, P, err, sizeof err);
    CHECK(memcmp(u, v, sizeof u) == 0, "the rotation is deterministic for a seed and round");
    memcpy(u, x, sizeof u);
    fedc__ddg_rotate(seed_a, 8, u, P, err, sizeof err);
    CHECK(memcmp(u, v, sizeof u) != 0, "another round rotates differently");
    memcpy(u, x, sizeof u);
    fedc__ddg_rotate(seed_b, 7, u, P, err, sizeof err);
    CHECK(memcmp(u, v, sizeof u) != 0, "another seed rotates differently");

    /* The sign bits: about half are -1, across more than one keystream chunk. */
    enum { N = 10000 };
    static double s[N];
    for (size_t i = 0; i < N; i++) s[i] = 1.0;
    fedc__ddg_signs(seed_b, 1, s, N);
    int neg = 0, bad = 0;
    for (size_t i = 0; i < N; i++) {
        neg += s[i] < 0;
        bad += fabs(s[i]) != 1.0;
    }
    CHECK(bad == 0 && fabs(neg - N / 2.0) < 5.0 * sqrt(N / 4.0), "signs are +-1, about half negative: %d",
          neg);
}

/* The exact moments of N_Z(0, sigma^2) by summing the mass function. */
static void dgauss_moments(double sigma, double *p0, double *var, double *m4)
{
    double z = 0, s2 = 0, s4 = 0;
    long m = (long)ceil(40.0 * sigma) + 10;
    for (long x = -m; x <= m; x++) {
        double w = exp(-(double)x * (double)x / (2.0 * sigma * sigma)), x2 = (double)x * (double)x;
        z += w;
        s2 += w * x2;
        s4 += w * x2 * x2;
    }
    *p0 = 1.0 / z;
    *var = s2 / z;
    *m4 = s4 / z;
}

static void test_sampler(void)
{
    enum { N = 100000 };
    static int64_t s[N];
    const double sigmas[] = {0.5, 2.0, 10.0};
    char err[FEDC_ERRMSG_MAX] = "";
    for (size_t k = 0; k < sizeof sigmas / sizeof sigmas[0]; k++) {
        double sigma = sigmas[k], p0, var, m4;
        dgauss_moments(sigma, &p0, &var, &m4);
        CHECK_STATUS(fedc__ddg_sample(sigma, s, N, err, sizeof err), FEDC_OK, "sample");
        double sum = 0, sq = 0;
        long zeros = 0, pos = 0, neg = 0;
        for (size_t i = 0; i < N; i++) {
            double x = (double)s[i];
            sum += x;
            sq += x * x;
            zeros += s[i] == 0;
            pos += s[i] > 0;
            neg += s[i] < 0;
        }
        double mean = sum / N, v = sq / N; /* the mean is 0: the second moment is the variance */
        double se_mean = sqrt(var / N), se_var = sqrt((m4 - var * var) / N);
        CHECK(fabs(mean) <= 5.0 * se_mean, "sigma %g: mean %g beyond 5 se (%g)", sigma, mean, se_mean);
        CHECK(fabs(v - var) <= 5.0 * se_var, "sigma %g: variance %g, want %g +- 5 * %g", sigma, v, var,
              se_var);
        double f0 = (double)zeros / N, se0 = sqrt(p0 * (1 - p0) / N);
        CHECK(fabs(f0 - p0) <= 5.0 * se0, "sigma %g: P(0) %g, want %g +- 5 * %g", sigma, f0, p0, se0);
        CHECK(fabs((double)(pos - neg)) <= 5.0 * sqrt((double)(pos + neg)),
              "sigma %g: %ld positive, %ld negative", sigma, pos, neg);
        if (sigma == 2.0) {
            /* The whole shape: chi-square over the values -6 .. 6 and the two tails |x| >= 7 (15 bins,
             * 14 degrees of freedom; 56 is beyond the 1e-6 quantile). */
            double obs[15] = {0}, mass[15] = {0}, z = 0, chi2 = 0;
            for (long x = -200; x <= 200; x++) {
                double w = exp(-(double)x * (double)x / 8.0);
                z += w;
                mass[x < -6 ? 0 : x > 6 ? 14 : x + 7] += w;
            }
            for (size_t i = 0; i < N; i++) obs[s[i] < -6 ? 0 : s[i] > 6 ? 14 : s[i] + 7] += 1;
            for (int b = 0; b < 15; b++) {
                double e = mass[b] / z * N;
                chi2 += (obs[b] - e) * (obs[b] - e) / e;
            }
            CHECK(chi2 < 56.0, "sigma 2: chi-square %g over 14 degrees of freedom", chi2);
        }
        if (sigma == 0.5)
            CHECK(var < 0.25 * 0.9, "sigma 0.5: the discrete variance %g is below sigma^2", var);
        if (sigma == 10.0) CHECK(fabs(var - 100.0) < 1e-9, "sigma 10: the variance %g is sigma^2", var);
    }
    /* sigma 0: no noise. */
    s[0] = s[1] = 5;
    CHECK_STATUS(fedc__ddg_sample(0.0, s, 2, err, sizeof err), FEDC_OK, "sample sigma 0");
    CHECK(s[0] == 0 && s[1] == 0, "sigma 0 gives zeros");
    /* A vanishing sigma: zeros (sigma^2 underflows). */
    for (size_t i = 0; i < 10; i++) s[i] = 7;
    CHECK_STATUS(fedc__ddg_sample(1e-200, s, 10, err, sizeof err), FEDC_OK, "sample sigma 1e-200");
    int all0 = 1;
    for (size_t i = 0; i < 10; i++) all0 &= s[i] == 0;
    CHECK(all0, "sigma 1e-200 gives zeros");
    /* A large sigma still works and has the right scale. */
    CHECK_STATUS(fedc__ddg_sample(1e6, s, 2000, err, sizeof err), FEDC_OK, "sample sigma 1e6");
    double sq = 0;
    for (size_t i = 0; i < 2000; i++) sq += (double)s[i] * (double)s[i];
    double sd = sqrt(sq / 2000);
    CHECK(sd > 0.9e6 && sd < 1.1e6, "sigma 1e6: sample stddev %g", sd);
}

static void test_rounding(void)
{
    char err[FEDC_ERRMSG_MAX] = "";
    /* The bound of Theorem 1 in closed form. */
    double b0 = fedc__ddg_rounded_l2_bound(10.0, 0.0, 100);
    CHECK(fabs(b0 - 20.0) < 1e-12, "beta 0: bound c + sqrt(d) = %g", b0);
    double beta = exp(-0.5), b = fedc__ddg_rounded_l2_bound(10.0, beta, 100);
    double want = sqrt(100.0 + 25.0 + sqrt(2.0 * 0.5) * (10.0 + 5.0));
    CHECK(fabs(b - want) < 1e-12, "beta e^-0.5: bound %g, want %g", b, want);
    CHECK(fabs(fedc__ddg_rounded_l2_bound(0.0, beta, 1) - sqrt(0.75)) < 1e-12,
          "c = 0, d = 1: min(1, sqrt(1/4 + 1/2)) = %g", fedc__ddg_rounded_l2_bound(0.0, beta, 1));
    CHECK(isnan(fedc__ddg_rounded_l2_bound(1.0, 1.0, 10)) && isnan(fedc__ddg_rounded_l2_bound(-1, 0.1, 10)) &&
              isnan(fedc__ddg_rounded_l2_bound(1.0, 0.1, 0)),
          "bad arguments give NaN");

    /* Neighbours only, within the bound, over many draws. */
    enum { N = 256 };
    static double z[N];
    static int64_t r[N];
    for (size_t i = 0; i < N; i++) z[i] = 3.0 * lcg_unit();
    double bound = fedc__ddg_rounded_l2_bound(norm2(z, N), beta, N);
    int neighbours = 1, within = 1;
    unsigned tries = 0, max_tries = 0;
    for (int rep = 0; rep < 200; rep++) {
        CHECK_STATUS(fedc__ddg_round(z, N, bound, r, &tries, err, sizeof err), FEDC_OK, "round");
        double sq = 0;
        for (size_t i = 0; i < N; i++) {
            neighbours &= r[i] == (int64_t)floor(z[i]) || r[i] == (int64_t)floor(z[i]) + 1;
            sq += (double)r[i] * (double)r[i];
        }
        within &= sqrt(sq) <= bound;
        if (tries > max_tries) max_tries = tries;
    }
    CHECK(neighbours, "rounding goes to floor or floor + 1 only");
    CHECK(within, "rounded norms stay within the bound %g", bound);
    CHECK(max_tries >= 1 && max_tries < 50, "at most %u draws per rounding", max_tries);

    /* A tight bound forces redraws; an impossible one fails after the limit. */
    static double half[64];
    for (size_t i = 0; i < 64; i++) half[i] = 0.5;
    CHECK_STATUS(fedc__ddg_round(half, 64, 0.0, r, &tries, err, sizeof err), FEDC_ERR_RANGE,
                 "round, bound 0");
    CHECK_CONTAINS(err, "bound", "round, bound 0");
    CHECK_STATUS(fedc__ddg_round(half, 4, 1.0, r, &tries, err, sizeof err), FEDC_OK, "round, bound 1");
    int64_t s1 = r[0] + r[1] + r[2] + r[3];
    CHECK(s1 <= 1, "bound 1 on four halves: at most one rounds up (%lld)", (long long)s1);

    /* Unbiased: the mean of many plain roundings is z, within 5 standard errors. */
    enum { M = 16, REPS = 20000 };
    double zz[M], mean[M] = {0};
    int64_t rr[M];
    for (size_t i = 0; i < M; i++) zz[i] = -2.0 + 0.29 * (double)i + 0.013;
    for (int rep = 0; rep < REPS; rep++) {
        fedc__ddg_round(zz, M, INFINITY, rr, NULL, err, sizeof err);
        for (size_t i = 0; i < M; i++) mean[i] += (double)rr[i] / REPS;
    }
    int unbiased = 1;
    for (size_t i = 0; i < M; i++) {
        double f = zz[i] - floor(zz[i]), se = sqrt(f * (1 - f) / REPS);
        if (fabs(mean[i] - zz[i]) > 5.0 * se + 1e-12) {
            unbiased = 0;
            printf("  coordinate %zu: mean %g, z %g, se %g\n", i, mean[i], zz[i], se);
        }
    }
    CHECK(unbiased, "randomized rounding is unbiased");
    /* The conditional rounding with the paper's bound (beta e^-0.5) is close to unbiased too: its
     * average over the vector's coordinates is within 5 standard errors of z's. */
    double bnd = fedc__ddg_rounded_l2_bound(norm2(zz, M), beta, M), tot = 0, ztot = 0, var = 0;
    for (size_t i = 0; i < M; i++) {
        double f = zz[i] - floor(zz[i]);
        ztot += zz[i];
        var += f * (1 - f);
    }
    for (int rep = 0; rep < REPS; rep++) {
        fedc__ddg_round(zz, M, bnd, rr, NULL, err, sizeof err);
        for (size_t i = 0; i < M; i++) tot += (double)rr[i] / REPS;
    }
    CHECK(fabs(tot - ztot) <= 5.0 * sqrt(var / REPS) + 0.01, "conditional rounding: sum mean %g, want %g",
          tot, ztot);
}

static double vec_dist(const float *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sqrt(s);
}

static void test_encode_decode_single(void)
{
    enum { D = 1000, P = 1024 };
    static float x[D], out[D];
    static double want[D];
    static uint32_t enc[P];
    char err[FEDC_ERRMSG_MAX] = "";
    double sq = 0;
    for (size_t i = 0; i < D; i++) {
        x[i] = (float)(0.05 * lcg_unit());
        sq += (double)x[i] * x[i];
    }
    fedc__ddg_params p = {.clip = 2.0, .gamma = 1e-3, .beta = exp(-0.5), .local_stddev = 0.0, .bits = 32};
    double rn = 0;
    CHECK_STATUS(fedc__ddg_encode(&p, x, D, seed_a, 3, enc, &rn, err, sizeof err), FEDC_OK, "encode");
    CHECK(rn <= fedc__ddg_rounded_l2_bound(p.clip / p.gamma, p.beta, P), "rounded norm %g within the bound",
          rn);
    CHECK(fabs(rn - sqrt(sq) / p.gamma) <= sqrt((double)P), "rounded norm %g near |x| / gamma %g", rn,
          sqrt(sq) / p.gamma);
    CHECK_STATUS(fedc__ddg_decode(&p, enc, D, seed_a, 3, out, err, sizeof err), FEDC_OK, "decode");
    for (size_t i = 0; i < D; i++) want[i] = x[i];
    double e = vec_dist(out, want, D), lim = p.gamma * sqrt((double)P);
    CHECK(e <= lim, "one client without noise: error %g <= gamma sqrt(P) = %g", e, lim);
    CHECK(e <= 0.75 * lim, "the rounding error %g is about gamma sqrt(P) / sqrt(6), not the worst %g", e,
          lim);

    /* A vector longer than the clip decodes to the clipped vector. */
    double n0 = sqrt(sq);
    p.clip = 0.25 * n0;
    CHECK_STATUS(fedc__ddg_encode(&p, x, D, seed_a, 3, enc, NULL, err, sizeof err), FEDC_OK,
                 "encode clipped");
    CHECK_STATUS(fedc__ddg_decode(&p, enc, D, seed_a, 3, out, err, sizeof err), FEDC_OK, "decode clipped");
    for (size_t i = 0; i < D; i++) want[i] = x[i] * 0.25;
    e = vec_dist(out, want, D);
    CHECK(e <= lim, "clipped client: error %g <= %g", e, lim);
    /* Decoding with the wrong round (other signs) does not give x back. */
    CHECK_STATUS(fedc__ddg_decode(&p, enc, D, seed_a, 4, out, err, sizeof err), FEDC_OK,
                 "decode other round");
    double wn = 0;
    for (size_t i = 0; i < D; i++) wn += want[i] * want[i];
    CHECK(vec_dist(out, want, D) > 0.5 * sqrt(wn), "the wrong round's signs scramble the result");
}

static void test_encode_decode_sum(void)
{
    enum { D = 300, P = 512, N = 10 };
    static float x[N][D], out[D];
    static double want[D];
    static uint32_t enc[N][P], sum[P], mask[P];
    char err[FEDC_ERRMSG_MAX] = "";
    double clip = 1.0, sigma = 0.002, gamma = 0;
    CHECK_STATUS(fedc__ddg_gamma(20, N, clip, P, sigma, 4.0, 1.0, &gamma, err, sizeof err), FEDC_OK, "gamma");
    fedc__ddg_params p = {.clip = clip, .gamma = gamma, .beta = exp(-0.5), .local_stddev = sigma, .bits = 20};
    memset(want, 0, sizeof want);
    for (int c = 0; c < N; c++) {
        double sq = 0;
        for (size_t i = 0; i < D; i++) {
            x[c][i] = (float)(0.1 * lcg_unit());
            sq += (double)x[c][i] * x[c][i];
        }
        double s = sqrt(sq) > clip ? clip / sqrt(sq) : 1.0;
        for (size_t i = 0; i < D; i++) want[i] += (double)x[c][i] * s;
        CHECK_STATUS(fedc__ddg_encode(&p, x[c], D, seed_b, 11, enc[c], NULL, err, sizeof err), FEDC_OK,
                     "encode client");
    }
    /* Secure aggregation's view: a pairwise mask added by one client and taken off by another
     * cancels in the sum mod 2^32. */
    for (size_t i = 0; i < P; i++) mask[i] = (uint32_t)((lcg_unit() + 1.0) * 2147483648.0);
    memset(sum, 0, sizeof sum);
    for (int c = 0; c < N; c++)
        for (size_t i = 0; i < P; i++)
            sum[i] += enc[c][i] + (c == 0 ? mask[i] : c == 1 ? (uint32_t)0 - mask[i] : 0);
    CHECK_STATUS(fedc__ddg_decode(&p, sum, D, seed_b, 11, out, err, sizeof err), FEDC_OK, "decode sum");
    /* The error's squared norm has mean at most P n (sigma^2 + gamma^2 / 4) over the padded
     * coordinates; allow twice its root. */
    double e = vec_dist(out, want, D), lim = 2.0 * sqrt((double)P * N * (sigma * sigma + gamma * gamma / 4));
    CHECK(e <= lim, "sum of %d clients: error %g <= %g (gamma %g)", N, e, lim, gamma);
    CHECK(e >= 0.1 * sqrt((double)D * N) * sigma, "the noise is there: error %g", e);
    double wn = 0;
    for (size_t i = 0; i < D; i++) wn += want[i] * want[i];
    CHECK(e < 0.2 * sqrt(wn), "the sum (norm %g) dominates the error %g", sqrt(wn), e);
}

static void test_wrap(void)
{
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK(fedc__ddg_signed(0x7fff, 16) == 32767 && fedc__ddg_signed(0x8000, 16) == -32768 &&
              fedc__ddg_signed(0xffff, 16) == -1 && fedc__ddg_signed(0x10005, 16) == 5,
          "signed mod 2^16");
    CHECK(fedc__ddg_signed(0x80000000u, 32) == -2147483648LL &&
              fedc__ddg_signed(0x7fffffffu, 32) == 2147483647LL && fedc__ddg_signed(0xffffffffu, 32) == -1,
          "signed mod 2^32");
    CHECK(fedc__ddg_signed(1, 1) == -1 && fedc__ddg_signed(0, 1) == 0, "signed mod 2");

    /* d = 1: the rotation is a sign, so values sit exactly on the grid. B = 12: [-2048, 2048). */
    const double g = 1.0 / 1024;
    fedc__ddg_params p = {.clip = 4.0, .gamma = g, .beta = 0.0, .local_stddev = 0.0, .bits = 12};
    const float vals[] = {(float)(2047 * g), (float)(-2047 * g), (float)(-2048 * g), (float)(1 * g), 0.0f};
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
        uint32_t enc;
        float out = NAN;
        CHECK_STATUS(fedc__ddg_encode(&p, &vals[k], 1, seed_a, 1, &enc, NULL, err, sizeof err), FEDC_OK,
                     "encode near the edge");
        CHECK(enc < 4096, "output %u is mod 2^12", enc);
        CHECK_STATUS(fedc__ddg_decode(&p, &enc, 1, seed_a, 1, &out, err, sizeof err), FEDC_OK, "decode edge");
        /* -2048 g may be rotated to +2048, which wraps to -2048: its decode is then -(-2048 g). */
        int ok = out == vals[k] || (vals[k] == (float)(-2048 * g) && out == -vals[k]);
        CHECK(ok, "value %g decodes to %g", vals[k], out);
    }
    /* Two clients whose outputs wrap mod 2^B (and carry into the upper bits of the uint32 sum)
     * but whose true sum is in range. */
    const float a[] = {(float)(-2000 * g), (float)(1500 * g), (float)(-1000 * g)};
    const float b[] = {(float)(2040 * g), (float)(500 * g), (float)(-1047 * g)};
    for (size_t k = 0; k < 3; k++) {
        uint32_t ea, eb, s;
        float out = NAN;
        fedc__ddg_encode(&p, &a[k], 1, seed_b, 2, &ea, NULL, err, sizeof err);
        fedc__ddg_encode(&p, &b[k], 1, seed_b, 2, &eb, NULL, err, sizeof err);
        s = ea + eb;
        CHECK_STATUS(fedc__ddg_decode(&p, &s, 1, seed_b, 2, &out, err, sizeof err), FEDC_OK,
                     "decode wrapped");
        CHECK(out == a[k] + b[k], "wrapped sum %g + %g decodes to %g", a[k], b[k], out);
    }
    /* B = 32 with negative values. */
    p.bits = 32;
    float neg = (float)(-5 * g), out = 0;
    uint32_t enc;
    fedc__ddg_encode(&p, &neg, 1, seed_a, 1, &enc, NULL, err, sizeof err);
    fedc__ddg_decode(&p, &enc, 1, seed_a, 1, &out, err, sizeof err);
    CHECK(out == neg && (enc == 5 || enc == 0xfffffffbu), "B = 32: %g encodes to %u, decodes to %g", neg, enc,
          out);
}

static double eps_of(double sigma, uint64_t steps)
{
    fedc__ddg_accounting a = {.gamma = 1e-3,
                              .local_stddev = sigma,
                              .clients = 10,
                              .l2_sens = 1.0,
                              .beta = exp(-0.5),
                              .dim = 1024,
                              .rounding = 1};
    double e = NAN;
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc__ddg_epsilon(&a, steps, 1e-5, NULL, 0, &e, NULL, err, sizeof err);
    CHECK(rc == FEDC_OK, "epsilon(sigma %g, steps %llu): %s", sigma, (unsigned long long)steps, err);
    return e;
}

static void test_accounting(void)
{
    char err[FEDC_ERRMSG_MAX] = "";
    /* tau: the formula of Theorem 1, and 0 for one client or a fine grid. */
    double s = 0.2, want = 10.0 * (exp(-2 * M_PI * M_PI * s * s / 2) + exp(-2 * M_PI * M_PI * s * s * 2 / 3));
    CHECK(fabs(fedc__ddg_tau(0.2, 1.0, 3) - want) < 1e-12 * want, "tau(0.2, n 3) = %g, want %g",
          fedc__ddg_tau(0.2, 1.0, 3), want);
    CHECK(fedc__ddg_tau(0.2, 1.0, 1) == 0.0, "tau for one client is 0");
    CHECK(fedc__ddg_tau(1.0, 1e-3, 1000) == 0.0, "tau for sigma / gamma = 1000 is 0");

    /* epsilon falls with sigma and grows with the rounds. */
    double e1 = eps_of(0.5, 100), e2 = eps_of(1.0, 100), e3 = eps_of(2.0, 100), e4 = eps_of(4.0, 100);
    CHECK(e1 > e2 && e2 > e3 && e3 > e4 && e4 > 0, "epsilon falls with sigma: %g %g %g %g", e1, e2, e3, e4);
    double r1 = eps_of(1.0, 1), r10 = eps_of(1.0, 10), r100 = eps_of(1.0, 100);
    CHECK(r1 < r10 && r10 < r100, "epsilon grows with the rounds: %g %g %g", r1, r10, r100);

    /* tau ~ 0 (sigma / gamma = 1000): the Gaussian's RDP a Delta^2 / (2 n sigma^2), with Delta
     * the rounded bound times gamma, or l2_sens itself without rounding. */
    size_t no;
    const double *orders = fedc_rdp_default_orders(&no);
    static double rdp[256];
    fedc__ddg_accounting a = {.gamma = 1e-3,
                              .local_stddev = 1.0,
                              .clients = 20,
                              .l2_sens = 1.0,
                              .beta = exp(-0.5),
                              .dim = 4096,
                              .rounding = 1};
    double delta2 = fedc__ddg_rounded_l2_bound(1.0 / 1e-3, a.beta, a.dim) * 1e-3;
    CHECK(delta2 > 1.0 && delta2 < 1.2, "rounded sensitivity %g", delta2);
    CHECK_STATUS(fedc__ddg_rdp(&a, 1, orders, no, rdp, err, sizeof err), FEDC_OK, "rdp");
    double worst = 0;
    for (size_t k = 0; k < no; k++) {
        double g = orders[k] * delta2 * delta2 / (2.0 * 20 * 1.0);
        worst = fmax(worst, fabs(rdp[k] - g) / g);
    }
    CHECK(worst < 1e-9, "tau ~ 0: the Gaussian's RDP, relative error %g", worst);
    a.rounding = 0;
    CHECK_STATUS(fedc__ddg_rdp(&a, 3, orders, no, rdp, err, sizeof err), FEDC_OK, "rdp, no rounding");
    worst = 0;
    for (size_t k = 0; k < no; k++) {
        double g = 3 * orders[k] / (2.0 * 20);
        worst = fmax(worst, fabs(rdp[k] - g) / g);
    }
    CHECK(worst < 1e-12, "no rounding, 3 steps: 3 a / (2 n sigma^2), relative error %g", worst);
    /* With tau ~ 0 and no rounding, the epsilon is the sampled Gaussian's at q = 1 with z = sqrt(n). */
    double ed = NAN, eg = NAN;
    CHECK_STATUS(fedc__ddg_epsilon(&a, 50, 1e-5, NULL, 0, &ed, NULL, err, sizeof err), FEDC_OK,
                 "ddg epsilon");
    CHECK_STATUS(fedc_privacy_epsilon(1.0, sqrt(20.0), 50, 1e-5, NULL, 0, &eg, NULL, err, sizeof err),
                 FEDC_OK, "gaussian epsilon");
    CHECK(fabs(ed - eg) < 1e-9 * eg, "epsilon %g equals the Gaussian's %g", ed, eg);

    /* A coarse grid (sigma / gamma = 0.3): tau > 0 costs privacy. */
    a.gamma = 1.0 / 0.3;
    a.local_stddev = 1.0;
    double tau = fedc__ddg_tau(1.0, a.gamma, a.clients);
    CHECK(tau > 1e-3, "coarse grid: tau %g", tau);
    CHECK_STATUS(fedc__ddg_rdp(&a, 1, orders, no, rdp, err, sizeof err), FEDC_OK, "rdp, coarse");
    int above = 1;
    for (size_t k = 0; k < no; k++) above &= rdp[k] > orders[k] / (2.0 * 20);
    CHECK(above, "tau > 0: RDP above the Gaussian's at every order");
    /* steps 0: nothing spent. */
    CHECK_STATUS(fedc__ddg_rdp(&a, 0, orders, no, rdp, err, sizeof err), FEDC_OK, "rdp, 0 steps");
    CHECK(rdp[0] == 0.0 && rdp[no - 1] == 0.0, "0 steps: RDP 0");
}

/* ddgauss_epsilon's values for two settings where tau matters, over its RDP_ORDERS (2 .. 128, 256)
 * at delta 1e-5, from a plain-Python transcription of distributed_dp's accounting_utils
 * (rounded_l2_norm_bound, rounded_l1_norm_bound, ddgauss_epsilon, compute_rdp_dgaussian at q = 1) and
 * of dp_accounting's RDP-to-epsilon conversion; not from running the reference itself. */
static void test_accounting_reference(void)
{
    static double orders[128];
    size_t n = 0;
    for (int o = 2; o <= 128; o++) orders[n++] = o;
    orders[n++] = 256;
    const struct {
        double gamma, sigma;
        uint64_t clients;
        double l2, beta;
        size_t dim;
        uint64_t steps;
        double tau, eps, order;
    } cases[] = {
        {0.6, 0.5, 100, 1.0, 0.60653065971263342, 16, 10, 0.013952, 6.8576146829898, 4},
        {0.5, 0.4, 30, 1.0, 0.01, 8, 5, 0.0236191, 12.1377222587869, 3},
    };
    char err[FEDC_ERRMSG_MAX] = "";
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fedc__ddg_accounting a = {.gamma = cases[k].gamma,
                                  .local_stddev = cases[k].sigma,
                                  .clients = cases[k].clients,
                                  .l2_sens = cases[k].l2,
                                  .beta = cases[k].beta,
                                  .dim = cases[k].dim,
                                  .rounding = 1};
        double tau = fedc__ddg_tau(a.local_stddev, a.gamma, a.clients), e = NAN, o = NAN;
        CHECK(fabs(tau - cases[k].tau) < 1e-5 * cases[k].tau, "case %zu: tau %g, want %g", k, tau,
              cases[k].tau);
        CHECK_STATUS(fedc__ddg_epsilon(&a, cases[k].steps, 1e-5, orders, n, &e, &o, err, sizeof err), FEDC_OK,
                     "reference epsilon");
        CHECK(fabs(e - cases[k].eps) < 1e-9 * cases[k].eps && o == cases[k].order,
              "case %zu: epsilon %.13g at order %g, want %.13g at %g", k, e, o, cases[k].eps, cases[k].order);
    }
}

static void test_gamma(void)
{
    char err[FEDC_ERRMSG_MAX] = "";
    double gamma = 0, c = 2.0, sigma = 0.05, k = 4.0;
    unsigned bits = 16;
    uint64_t n = 100;
    size_t dim = 1 << 16;
    CHECK_STATUS(fedc__ddg_gamma(bits, n, c, dim, sigma, k, 1.0, &gamma, err, sizeof err), FEDC_OK, "gamma");
    /* It solves 2^B = 2 k sqrt(c^2 n^2 / P + n (gamma^2 / 4 + sigma^2)) / gamma. */
    double lhs = 2 * k * sqrt(c * c * (double)n * n / dim + n * (gamma * gamma / 4 + sigma * sigma)) / gamma;
    CHECK(fabs(lhs - 65536.0) < 1e-9 * 65536.0, "gamma %g: 2k sd / gamma = %g, want 2^16", gamma, lhs);
    /* More bits: a finer grid. */
    double g32 = 0;
    fedc__ddg_gamma(32, n, c, dim, sigma, k, 1.0, &g32, err, sizeof err);
    CHECK(g32 < gamma / 1000, "32 bits: gamma %g much finer than 16 bits' %g", g32, gamma);
    CHECK_STATUS(fedc__ddg_gamma(2, 100, c, dim, sigma, 4.0, 1.0, &gamma, err, sizeof err), FEDC_ERR_INVALID,
                 "gamma, too few bits");
    CHECK_CONTAINS(err, "bits", "gamma, too few bits");
    CHECK_STATUS(fedc__ddg_gamma(16, 0, c, dim, sigma, 4.0, 1.0, &gamma, err, sizeof err), FEDC_ERR_INVALID,
                 "gamma, no clients");
    CHECK_CONTAINS(err, "clients", "gamma, no clients");
    CHECK_STATUS(fedc__ddg_gamma(16, 10, -1, dim, sigma, 4.0, 1.0, &gamma, err, sizeof err), FEDC_ERR_INVALID,
                 "gamma, clip");
    CHECK_CONTAINS(err, "clip", "gamma, clip");
    CHECK_STATUS(fedc__ddg_gamma(16, 10, c, dim, sigma, 0.0, 1.0, &gamma, err, sizeof err), FEDC_ERR_INVALID,
                 "gamma, k");
    CHECK_CONTAINS(err, "k:", "gamma, k");
}

static void test_errors(void)
{
    char err[FEDC_ERRMSG_MAX] = "";
    float x[4] = {1, 2, 3, 4};
    uint32_t out[4];
    float back[4];
    const fedc__ddg_params good = {.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 16};
    struct {
        fedc__ddg_params p;
        size_t d;
        const char *name;
    } bad[] = {
        {{.clip = 0.0, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 16}, 4, "clip"},
        {{.clip = NAN, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 16}, 4, "clip"},
        {{.clip = 1.0, .gamma = -1.0, .beta = 0.5, .local_stddev = 0.1, .bits = 16}, 4, "gamma"},
        {{.clip = 1.0, .gamma = 1e-300, .beta = 0.5, .local_stddev = 0.0, .bits = 16}, 4, "gamma"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 1.0, .local_stddev = 0.1, .bits = 16}, 4, "beta"},
        {{.clip = 1.0, .gamma = 0.01, .beta = -0.1, .local_stddev = 0.1, .bits = 16}, 4, "beta"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = -1.0, .bits = 16}, 4, "local_stddev"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = INFINITY, .bits = 16}, 4, "local_stddev"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 0}, 4, "bits"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 33}, 4, "bits"},
        {{.clip = 1.0, .gamma = 0.01, .beta = 0.5, .local_stddev = 0.1, .bits = 16}, 0, "d"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = 0;
        CHECK_STATUS(fedc__ddg_encode(&bad[k].p, x, bad[k].d, seed_a, 0, out, NULL, err, sizeof err),
                     FEDC_ERR_INVALID, bad[k].name);
        CHECK_CONTAINS(err, bad[k].name, bad[k].name);
    }
    float nanx[4] = {1, NAN, 0, 0};
    CHECK_STATUS(fedc__ddg_encode(&good, nanx, 4, seed_a, 0, out, NULL, err, sizeof err), FEDC_ERR_NONFINITE,
                 "encode NaN");
    CHECK_CONTAINS(err, "x", "encode NaN");
    CHECK_STATUS(fedc__ddg_encode(&good, x, 4, NULL, 0, out, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "encode NULL seed");
    CHECK_CONTAINS(err, "seed", "encode NULL seed");
    fedc__ddg_params badbits = good;
    badbits.bits = 40;
    CHECK_STATUS(fedc__ddg_decode(&badbits, out, 4, seed_a, 0, back, err, sizeof err), FEDC_ERR_INVALID,
                 "decode bits");
    CHECK_CONTAINS(err, "bits", "decode bits");
    double v[3] = {0};
    CHECK_STATUS(fedc__ddg_rotate(seed_a, 0, v, 3, err, sizeof err), FEDC_ERR_INVALID, "rotate p 3");
    CHECK_CONTAINS(err, "p:", "rotate p 3");
    int64_t s[2];
    CHECK_STATUS(fedc__ddg_sample(-1.0, s, 2, err, sizeof err), FEDC_ERR_INVALID, "sample sigma -1");
    CHECK_CONTAINS(err, "sigma", "sample sigma -1");
    CHECK_STATUS(fedc__ddg_sample(NAN, s, 2, err, sizeof err), FEDC_ERR_INVALID, "sample sigma NaN");
    double zinf[1] = {INFINITY};
    CHECK_STATUS(fedc__ddg_round(zinf, 1, 10.0, s, NULL, err, sizeof err), FEDC_ERR_NONFINITE, "round inf");
    CHECK_STATUS(fedc__ddg_round(v, 1, NAN, s, NULL, err, sizeof err), FEDC_ERR_INVALID, "round NaN bound");
    CHECK_CONTAINS(err, "bound", "round NaN bound");

    const fedc__ddg_accounting ga = {.gamma = 0.01, .local_stddev = 1, .clients = 5, .l2_sens = 1, .dim = 8};
    double orders[2] = {2.0, 8.0}, rdp[2], e;
    struct {
        fedc__ddg_accounting a;
        const char *name;
    } bada[] = {
        {{.gamma = 0, .local_stddev = 1, .clients = 5, .l2_sens = 1, .dim = 8}, "gamma"},
        {{.gamma = 0.01, .local_stddev = 0, .clients = 5, .l2_sens = 1, .dim = 8}, "local_stddev"},
        {{.gamma = 0.01, .local_stddev = 1, .clients = 0, .l2_sens = 1, .dim = 8}, "clients"},
        {{.gamma = 0.01, .local_stddev = 1, .clients = 5, .l2_sens = -1, .dim = 8}, "l2_sens"},
        {{.gamma = 0.01, .local_stddev = 1, .clients = 5, .l2_sens = 1, .l1_sens = NAN, .dim = 8}, "l1_sens"},
        {{.gamma = 0.01, .local_stddev = 1, .clients = 5, .l2_sens = 1, .beta = 1, .dim = 8}, "beta"},
        {{.gamma = 0.01, .local_stddev = 1, .clients = 5, .l2_sens = 1, .dim = 0}, "dim"},
    };
    for (size_t k = 0; k < sizeof bada / sizeof bada[0]; k++) {
        err[0] = 0;
        CHECK_STATUS(fedc__ddg_rdp(&bada[k].a, 1, orders, 2, rdp, err, sizeof err), FEDC_ERR_INVALID,
                     bada[k].name);
        CHECK_CONTAINS(err, bada[k].name, bada[k].name);
    }
    double bad_order = 1.0;
    CHECK_STATUS(fedc__ddg_rdp(&ga, 1, &bad_order, 1, rdp, err, sizeof err), FEDC_ERR_INVALID, "order 1");
    CHECK_CONTAINS(err, "orders", "order 1");
    CHECK_STATUS(fedc__ddg_epsilon(&ga, 1, 0.0, orders, 2, &e, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "delta 0");
    CHECK_CONTAINS(err, "delta", "delta 0");
    CHECK_STATUS(fedc__ddg_epsilon(&ga, 1, 1e-5, orders, 2, &e, NULL, err, sizeof err), FEDC_OK,
                 "good epsilon");
}

int main(void)
{
    test_padding();
    test_rotation();
    test_sampler();
    test_rounding();
    test_encode_decode_single();
    test_encode_decode_sum();
    test_wrap();
    test_accounting();
    test_accounting_reference();
    test_gamma();
    test_errors();
    return test_summary();
}
