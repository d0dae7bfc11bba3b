/*
 * Differential privacy's mechanics (src/privacy/dp.c, include/fedc/privacy.h):
 *
 *   - the DP modes' names round-trip, anything else is refused;
 *   - fedc_dp_normal draws standard normals: mean, variance, fourth moment,
 *     the two-sided 5% tail, lag-1 correlation (of the values and of their
 *     squares, lag 2 too) and the Kolmogorov-Smirnov
 *     distance to the normal CDF; values are finite, bounded by what
 *     Box-Muller over 53-bit uniforms can give, never repeat between calls,
 *     and odd counts neither fail nor write past the end;
 *   - fedc_dp_clip_update clips to the L2 ball around the global model
 *     (norm, direction, the pre-clip norm it reports), leaves updates inside
 *     the ball bit-identical, adds N(0, sigma^2) noise per element that is
 *     fresh on every call, and refuses bad arguments without touching the
 *     update.
 *
 * The statistical bounds are set at 5 standard errors or more (the KS bound
 * at 2.8 / sqrt(n), whose asymptotic tail 2 exp(-2 * 2.8^2) is about
 * 3e-7): each fails with probability < 1e-6 for a correct generator, so the
 * test is not flaky, while a biased or badly scaled generator fails it.
 *
 * FEDC_DP_TEST_SCALE (a divisor, default 1) shrinks the sample sizes for
 * slow runs (valgrind); the bounds scale with the sizes, so they keep their
 * false-failure probability.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "fedc/tensor.h"
#include "test_util.h"

static size_t scale_div = 1;

static size_t scaled(size_t n)
{
    size_t m = n / scale_div;
    return m < 1000 ? 1000 : m;
}

/* Deterministic test data (xorshift64*); the generator under test is not involved. */
static uint64_t xs_state = 0x9E3779B97F4A7C15ull;

static double test_uniform(void) /* in [-1, 1) */
{
    xs_state ^= xs_state >> 12;
    xs_state ^= xs_state << 25;
    xs_state ^= xs_state >> 27;
    uint64_t r = xs_state * 0x2545F4914F6CDD1Dull;
    return (double)(r >> 11) * 0x1p-52 - 1.0;
}

static double normal_cdf(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- modes ---- */

static void test_mode_names(void)
{
    const fedc_dp_mode modes[] = {FEDC_DP_OFF, FEDC_DP_CENTRAL, FEDC_DP_CLIENT_CLIP, FEDC_DP_LOCAL};
    const char *names[] = {"off", "central", "client-clip", "local"};
    for (size_t i = 0; i < 4; i++) {
        CHECK(strcmp(fedc_dp_mode_name(modes[i]), names[i]) == 0, "mode %d named '%s', want '%s'",
              (int)modes[i], fedc_dp_mode_name(modes[i]), names[i]);
        fedc_dp_mode m = (fedc_dp_mode)99;
        CHECK(fedc_dp_mode_parse(names[i], &m) == 0 && m == modes[i], "parse '%s' -> %d", names[i], (int)m);
        CHECK(fedc_dp_mode_parse(fedc_dp_mode_name(modes[i]), &m) == 0 && m == modes[i], "round trip %d",
              (int)modes[i]);
    }
    const char *bad[] = {"",           "Off",    "OFF",  "centr", "central ", " local", "client_clip",
                         "clientclip", "local2", "none", "?"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fedc_dp_mode m = FEDC_DP_LOCAL;
        CHECK(fedc_dp_mode_parse(bad[i], &m) == -1, "'%s' should be refused", bad[i]);
        CHECK(m == FEDC_DP_LOCAL, "refused '%s' changed the mode to %d", bad[i], (int)m);
    }
    fedc_dp_mode m = FEDC_DP_CENTRAL;
    CHECK(fedc_dp_mode_parse(NULL, &m) == -1, "NULL should be refused");
    CHECK(m == FEDC_DP_CENTRAL, "refused NULL changed the mode");
    const char *unknown = fedc_dp_mode_name((fedc_dp_mode)42);
    CHECK(unknown != NULL, "name of an unknown mode is not NULL");
    if (unknown) CHECK(fedc_dp_mode_parse(unknown, &m) == -1, "the unknown mode's name '%s' parses", unknown);
}

/* ---- fedc_dp_normal ---- */

static void test_normal_moments(void)
{
    size_t n = scaled(2000000);
    double *x = malloc(n * sizeof *x);
    CHECK(x != NULL, "malloc");
    if (!x) return;
    fedc_dp_normal(x, n);

    /* Box-Muller over uniforms in [2^-53, 1] never exceeds sqrt(-2 log 2^-53) = 8.57. */
    double bound = sqrt(-2.0 * log(0x1p-53)) + 1e-9;
    size_t bad = 0, out_of_range = 0, tail = 0;
    double s1 = 0, s2 = 0, s4 = 0, lag = 0, sq1 = 0, sq2 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        if (!isfinite(v)) {
            bad++;
            continue;
        }
        if (fabs(v) > bound) out_of_range++;
        if (fabs(v) > 1.96) tail++;
        s1 += v;
        s2 += v * v;
        s4 += v * v * v * v;
        if (i + 1 < n) lag += v * x[i + 1];
        if (i + 1 < n) sq1 += (v * v - 1) * (x[i + 1] * x[i + 1] - 1);
        if (i + 2 < n) sq2 += (v * v - 1) * (x[i + 2] * x[i + 2] - 1);
    }
    CHECK(bad == 0, "%zu of %zu normals are NaN or infinite", bad, n);
    CHECK(out_of_range == 0, "%zu normals beyond the Box-Muller bound %g", out_of_range, bound);
    double dn = (double)n;
    double mean = s1 / dn, var = s2 / dn - mean * mean, m4 = s4 / dn, corr = lag / (dn - 1);
    /* Each within 5 standard errors (two-sided P < 6e-7). */
    CHECK(fabs(mean) < 5.0 / sqrt(dn), "mean %g, want |mean| < %g", mean, 5.0 / sqrt(dn));
    CHECK(fabs(var - 1.0) < 5.0 * sqrt(2.0 / dn), "variance %.6f, want 1 +- %g", var, 5.0 * sqrt(2.0 / dn));
    /* E x^4 = 3, Var x^4 = 105 - 9 = 96: SE sqrt(96 / n) = 0.0069 at n = 2e6; 0.05 is over 7 SE. */
    double m4_tol = 0.05 * sqrt(2e6 / dn);
    CHECK(fabs(m4 - 3.0) < m4_tol, "fourth moment %.5f, want 3 +- %g", m4, m4_tol);
    double p = erfc(1.96 / sqrt(2.0)); /* 0.049996 */
    double frac = (double)tail / dn, se = sqrt(p * (1 - p) / dn);
    CHECK(fabs(frac - p) < 5 * se, "fraction beyond 1.96: %.6f, want %.6f +- %g", frac, p, 5 * se);
    /* E[x_i x_{i+1}] = 0 with variance 1; the overlapping products are uncorrelated. */
    CHECK(fabs(corr) < 5.0 / sqrt(dn - 1), "lag-1 correlation %g, want |c| < %g", corr, 5.0 / sqrt(dn - 1));
    /* The squares too (x^2 - 1 has variance 2, the products variance 4): Box-Muller's pairs are
     * independent, and a uniform shared between pairs would show here. */
    double c1 = sq1 / (dn - 1), c2 = sq2 / (dn - 2);
    CHECK(fabs(c1) < 10.0 / sqrt(dn - 1), "lag-1 covariance of squares %g, want |c| < %g", c1,
          10.0 / sqrt(dn - 1));
    CHECK(fabs(c2) < 10.0 / sqrt(dn - 2), "lag-2 covariance of squares %g, want |c| < %g", c2,
          10.0 / sqrt(dn - 2));
    free(x);
}

static void test_normal_ks(void)
{
    size_t n = scaled(200000);
    double *x = malloc(n * sizeof *x);
    CHECK(x != NULL, "malloc");
    if (!x) return;
    fedc_dp_normal(x, n);
    qsort(x, n, sizeof *x, cmp_double);
    double d = 0, dn = (double)n;
    for (size_t i = 0; i < n; i++) {
        double f = normal_cdf(x[i]);
        double lo = f - (double)i / dn, hi = (double)(i + 1) / dn - f;
        if (lo > d) d = lo;
        if (hi > d) d = hi;
    }
    /* 1.63 / sqrt(n) is the 1% critical value; 2.8 / sqrt(n) fails with P ~ 2 exp(-15.7) = 3e-7. */
    double limit = 2.8 / sqrt(dn);
    CHECK(d < limit, "KS distance %g over %zu normals, want < %g", d, n, limit);
    free(x);
}

static void test_normal_fresh_and_odd(void)
{
    double a[16], b[16];
    fedc_dp_normal(a, 16);
    fedc_dp_normal(b, 16);
    CHECK(memcmp(a, b, sizeof a) != 0, "two calls gave the same 16 values");
    int distinct = 1;
    for (size_t i = 0; i < 16; i++)
        for (size_t j = 0; j < 16; j++)
            if (a[i] == b[j] || (j > i && a[i] == a[j])) distinct = 0;
    CHECK(distinct, "values repeat within or across two calls of 16");

    /* Odd counts: every value written, nothing past the end. */
    const size_t counts[] = {1, 3, 511, 513, 1025};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        size_t n = counts[c];
        double buf[1026 + 1];
        for (size_t i = 0; i <= n; i++) buf[i] = NAN;
        buf[n] = -12345.0;
        fedc_dp_normal(buf, n);
        size_t finite = 0;
        for (size_t i = 0; i < n; i++) finite += isfinite(buf[i]) && fabs(buf[i]) < 9.0;
        CHECK(finite == n, "n = %zu: %zu values written and finite", n, finite);
        CHECK(buf[n] == -12345.0, "n = %zu: wrote past the end", n);
    }
    double one = 7.0;
    fedc_dp_normal(&one, 0);
    CHECK(one == 7.0, "n = 0 wrote a value");
    fedc_dp_normal(NULL, 0); /* must not crash */
    CHECK(1, "n = 0 with NULL");
}

/* ---- fedc_dp_clip_update ---- */

static const int64_t shape_a[2] = {10, 100};
static const int64_t shape_b[1] = {37};

/* F32 tensors "w" of shape sa and (sb non-NULL) "b" of shape sb, filled from values in order
 * (NULL: zeros). */
static fedc_params *make_params(const int64_t *sa, const int64_t *sb, const float *values)
{
    fedc_params *p = fedc_params_create();
    if (!p) return NULL;
    char err[FEDC_ERRMSG_MAX];
    int64_t na = sa[0] * sa[1];
    int rc;
    rc = fedc_params_add(p, "w", FEDC_F32, 2, sa, values, NULL, err, sizeof err);
    if (!rc && sb)
        rc = fedc_params_add(p, "b", FEDC_F32, 1, sb, values ? values + na : NULL, NULL, err, sizeof err);
    if (rc) {
        printf("make_params: %s\n", err);
        fedc_params_destroy(p);
        return NULL;
    }
    return p;
}

static int params_identical(const fedc_params *a, const fedc_params *b)
{
    if (fedc_params_count(a) != fedc_params_count(b)) return 0;
    for (size_t t = 0; t < fedc_params_count(a); t++) {
        const fedc_tensor *x = fedc_params_at(a, t), *y = fedc_params_at(b, t);
        if (x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes) != 0) return 0;
    }
    return 1;
}

/* All elements of all tensors, as double, into out (sized by the caller). */
static size_t flatten(const fedc_params *p, double *out)
{
    size_t k = 0;
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        const fedc_tensor *x = fedc_params_at(p, t);
        const float *v = x->data;
        for (int64_t j = 0; j < fedc_tensor_numel(x); j++) out[k++] = v[j];
    }
    return k;
}

enum { NA = 1000, NB = 37, NTOT = NA + NB };

/* global: random in [-1, 1]; update = global + d, d a random direction of L2 norm `target`. */
static void make_pair(double target, fedc_params **global, fedc_params **update)
{
    float g[NTOT], u[NTOT];
    double d[NTOT], sq = 0;
    for (size_t i = 0; i < NTOT; i++) {
        g[i] = (float)test_uniform();
        d[i] = test_uniform();
        sq += d[i] * d[i];
    }
    for (size_t i = 0; i < NTOT; i++) u[i] = (float)((double)g[i] + d[i] * target / sqrt(sq));
    *global = make_params(shape_a, shape_b, g);
    *update = make_params(shape_a, shape_b, u);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void test_clip_outside(void)
{
    const double clip = 1.0;
    fedc_params *g = NULL, *u = NULL;
    make_pair(3.0 * clip, &g, &u);
    CHECK(g && u, "make_pair");
    if (!g || !u) goto done;
    static double gv[NTOT], uv[NTOT], d0[NTOT], d1[NTOT];
    flatten(g, gv);
    flatten(u, uv);
    for (size_t i = 0; i < NTOT; i++) d0[i] = uv[i] - gv[i];
    double n0 = sqrt(dot(d0, d0, NTOT));
    CHECK(fabs(n0 - 3.0 * clip) < 1e-5, "test setup: difference norm %g, want 3", n0);

    double norm = -1;
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc_dp_clip_update(u, g, clip, 0.0, &norm, err, sizeof err), FEDC_OK, "clip 3x");
    CHECK(fabs(norm - n0) <= 1e-9 * n0, "reported norm %.12g, want the pre-clip %.12g", norm, n0);
    flatten(u, uv);
    for (size_t i = 0; i < NTOT; i++) d1[i] = uv[i] - gv[i];
    double n1 = sqrt(dot(d1, d1, NTOT));
    CHECK(fabs(n1 - clip) <= 1e-5 * clip, "clipped norm %.9g, want %g", n1, clip);
    double cosine = dot(d0, d1, NTOT) / (n0 * n1);
    CHECK(cosine > 1 - 1e-6, "direction changed: cosine %.12f", cosine);
    /* Each element scaled by clip / n0 (within float rounding of the sum). */
    size_t off = 0;
    for (size_t i = 0; i < NTOT; i++)
        if (fabs(d1[i] - d0[i] * clip / n0) > 1e-6 * (1 + fabs(gv[i]))) off++;
    CHECK(off == 0, "%zu elements not scaled by clip / norm", off);

    /* Clipping again (now on the boundary, up to rounding) still succeeds, *norm may be NULL. */
    CHECK_STATUS(fedc_dp_clip_update(u, g, clip, 0.0, NULL, err, sizeof err), FEDC_OK, "clip, NULL norm");
done:
    fedc_params_destroy(g);
    fedc_params_destroy(u);
}

static void test_clip_inside_and_equal(void)
{
    const double clip = 2.5;
    fedc_params *g = NULL, *u = NULL, *copy = NULL;
    make_pair(0.5 * clip, &g, &u);
    copy = u ? fedc_params_clone(u) : NULL;
    CHECK(g && u && copy, "make_pair");
    if (!g || !u || !copy) goto done;
    double norm = -1;
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc_dp_clip_update(u, g, clip, 0.0, &norm, err, sizeof err), FEDC_OK, "inside the ball");
    CHECK(params_identical(u, copy), "an update inside the ball was changed");
    CHECK(fabs(norm - 0.5 * clip) < 1e-5, "inside: reported norm %g, want %g", norm, 0.5 * clip);

    /* An update equal to the global model: a zero difference, nothing to scale. */
    fedc_params_destroy(copy);
    copy = fedc_params_clone(g);
    CHECK(copy != NULL, "clone");
    if (!copy) goto done;
    norm = -1;
    CHECK_STATUS(fedc_dp_clip_update(copy, g, clip, 0.0, &norm, err, sizeof err), FEDC_OK, "equal to global");
    CHECK(params_identical(copy, g), "an update equal to the global model was changed");
    CHECK(norm == 0.0, "equal to global: reported norm %g, want 0", norm);
done:
    fedc_params_destroy(g);
    fedc_params_destroy(u);
    fedc_params_destroy(copy);
}

/* Calls with the given arguments and wants the status `want` (FEDC_OK: any error), a message
 * (containing `needle` when non-NULL) and the update untouched. */
static void expect_refused(fedc_params *u, const fedc_params *g, double clip, double sigma, int want,
                           const char *needle, const char *what)
{
    fedc_params *copy = fedc_params_clone(u);
    CHECK(copy != NULL, "clone");
    if (!copy) return;
    double norm = -7;
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_dp_clip_update(u, g, clip, sigma, &norm, err, sizeof err);
    if (want == FEDC_OK)
        CHECK(rc != FEDC_OK, "%s: accepted, want an error", what);
    else
        CHECK_STATUS(rc, want, what);
    CHECK(err[0] != '\0', "%s: no error message", what);
    if (needle) CHECK_CONTAINS(err, needle, what);
    CHECK(params_identical(u, copy), "%s: the update was changed", what);
    fedc_params_destroy(copy);
}

static void test_clip_errors(void)
{
    fedc_params *g = NULL, *u = NULL;
    make_pair(3.0, &g, &u);
    CHECK(g && u, "make_pair");
    if (!g || !u) goto done;

    expect_refused(u, g, 0.0, 0.0, FEDC_ERR_INVALID, "clip", "clip 0");
    expect_refused(u, g, -1.0, 0.0, FEDC_ERR_INVALID, "clip", "clip -1");
    expect_refused(u, g, NAN, 0.0, FEDC_ERR_INVALID, "clip", "clip NaN");
    expect_refused(u, g, 1.0, -1.0, FEDC_ERR_INVALID, "noise", "sigma -1");
    expect_refused(u, g, 1.0, NAN, FEDC_ERR_INVALID, "noise", "sigma NaN");

    /* NaN or infinity in the update; also with noise, which must not be added either. */
    float *w = fedc_params_at(u, 0)->data;
    float saved = w[500];
    w[500] = NAN;
    expect_refused(u, g, 1.0, 0.0, FEDC_ERR_NONFINITE, "NaN", "NaN in the update");
    expect_refused(u, g, 1.0, 0.5, FEDC_ERR_NONFINITE, "NaN", "NaN in the update, sigma 0.5");
    w[500] = INFINITY;
    expect_refused(u, g, 1.0, 0.0, FEDC_ERR_NONFINITE, "infinite", "inf in the update");
    w[500] = saved;
    float *bv = fedc_params_at(u, 1)->data;
    bv[36] = -INFINITY; /* the last element of the second tensor */
    expect_refused(u, g, 1.0, 0.0, FEDC_ERR_NONFINITE, "infinite", "-inf at the end of the update");
    bv[36] = 0.0f;

    /* Layout mismatches: tensor count and shape, both ways. */
    const int64_t shape_b2[1] = {38};
    fedc_params *one = make_params(shape_a, NULL, NULL);
    fedc_params *other = make_params(shape_a, shape_b2, NULL);
    CHECK(one && other, "make_params");
    if (one && other) {
        expect_refused(one, g, 1.0, 0.0, FEDC_OK, NULL, "update with fewer tensors");
        expect_refused(u, one, 1.0, 0.0, FEDC_OK, NULL, "update with more tensors");
        expect_refused(other, g, 1.0, 0.0, FEDC_OK, NULL, "update with another shape");
        expect_refused(u, other, 1.0, 0.5, FEDC_OK, NULL, "global with another shape, sigma 0.5");
    }
    fedc_params_destroy(one);
    fedc_params_destroy(other);

    /* Not F32: refused as unsupported (a tensor after an F32 one, so nothing may be written early). */
    fedc_params *g64 = fedc_params_create(), *u64 = fedc_params_create();
    CHECK(g64 && u64, "create");
    if (g64 && u64) {
        char err[FEDC_ERRMSG_MAX];
        const int64_t s4[1] = {4};
        const float f[4] = {1, 2, 3, 4};
        const double dd[4] = {5, 6, 7, 8};
        int rc = fedc_params_add(g64, "a", FEDC_F32, 1, s4, NULL, NULL, err, sizeof err);
        rc |= fedc_params_add(g64, "b", FEDC_F64, 1, s4, NULL, NULL, err, sizeof err);
        rc |= fedc_params_add(u64, "a", FEDC_F32, 1, s4, f, NULL, err, sizeof err);
        rc |= fedc_params_add(u64, "b", FEDC_F64, 1, s4, dd, NULL, err, sizeof err);
        CHECK(rc == FEDC_OK, "fedc_params_add F64");
        if (rc == FEDC_OK)
            expect_refused(u64, g64, 1.0, 0.0, FEDC_ERR_UNSUPPORTED, "F32", "an F64 tensor after an F32 one");
    }
    fedc_params_destroy(g64);
    fedc_params_destroy(u64);

    /* After all that, the untouched update still clips fine. */
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc_dp_clip_update(u, g, 1.0, 0.0, NULL, err, sizeof err), FEDC_OK,
                 "valid call after errors");
done:
    fedc_params_destroy(g);
    fedc_params_destroy(u);
}

static void test_clip_noise(void)
{
    /* No clipping (clip 1e9), global 0, update 0: the result is the noise alone. Two tensors so that
     * the noise crosses a tensor boundary and several 4096-element chunks. */
    size_t total = scaled(500000), nb = 1009, na = total - nb;
    const int64_t sa[2] = {(int64_t)na, 1}, sb[1] = {(int64_t)nb};
    const double sigma = 0.5;
    fedc_params *g = make_params(sa, sb, NULL), *u1 = make_params(sa, sb, NULL),
                *u2 = make_params(sa, sb, NULL);
    double *r = malloc(total * sizeof *r);
    CHECK(g && u1 && u2 && r, "allocation");
    if (!g || !u1 || !u2 || !r) goto done;
    char err[FEDC_ERRMSG_MAX] = "";
    double norm = -1;
    CHECK_STATUS(fedc_dp_clip_update(u1, g, 1e9, sigma, &norm, err, sizeof err), FEDC_OK, "noise, first");
    CHECK(norm == 0.0, "noise: reported norm %g, want 0 (the norm before the noise)", norm);
    CHECK_STATUS(fedc_dp_clip_update(u2, g, 1e9, sigma, NULL, err, sizeof err), FEDC_OK, "noise, second");
    CHECK(!params_identical(u1, u2), "the same inputs twice gave the same noise");

    size_t n = flatten(u1, r), bad = 0;
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(r[i])) bad++;
        s1 += r[i];
        s2 += r[i] * r[i];
    }
    CHECK(bad == 0, "%zu noisy values not finite", bad);
    double dn = (double)n, mean = s1 / dn, var = s2 / dn - mean * mean, want = sigma * sigma;
    CHECK(fabs(mean) < 5 * sigma / sqrt(dn), "noise mean %g, want |mean| < %g", mean, 5 * sigma / sqrt(dn));
    double tol = 5 * want * sqrt(2.0 / dn);
    CHECK(fabs(var - want) < tol, "noise variance %.6f, want %g +- %g", var, want, tol);
    /* Each chunk and each tensor gets its own noise. */
    CHECK(memcmp(r, r + 4096, 4096 * sizeof *r) != 0, "two 4096-element chunks got the same noise");
    CHECK(memcmp(r, r + na, nb * sizeof *r) != 0, "the second tensor repeats the first's noise");
    int same = 0;
    for (size_t i = 0; i + 1 < n; i++) same += r[i] == r[i + 1];
    CHECK(same < 4, "%d neighbouring noisy values are equal", same);

    /* Noise on top of clipping: the result is within a few sigma*sqrt(n) of the clipped update. */
    fedc_params *gc = NULL, *uc = NULL;
    make_pair(3.0, &gc, &uc);
    if (gc && uc) {
        static double gv[NTOT], uv[NTOT], d0[NTOT];
        flatten(gc, gv);
        flatten(uc, uv);
        for (size_t i = 0; i < NTOT; i++) d0[i] = uv[i] - gv[i];
        double n0 = sqrt(dot(d0, d0, NTOT)), s = 0.01;
        CHECK_STATUS(fedc_dp_clip_update(uc, gc, 1.0, s, &norm, err, sizeof err), FEDC_OK, "clip + noise");
        CHECK(fabs(norm - n0) <= 1e-9 * n0, "clip + noise: reported norm %g, want %g", norm, n0);
        flatten(uc, uv);
        double e2 = 0;
        for (size_t i = 0; i < NTOT; i++) {
            double e = uv[i] - gv[i] - d0[i] / n0;
            e2 += e * e;
        }
        /* sum of NTOT squared N(0, s^2): mean NTOT s^2, SE s^2 sqrt(2 NTOT). */
        double want2 = NTOT * s * s, tol2 = 5 * s * s * sqrt(2.0 * NTOT);
        CHECK(fabs(e2 - want2) < tol2, "clip + noise: residual energy %g, want %g +- %g", e2, want2, tol2);
    } else {
        CHECK(0, "make_pair");
    }
    fedc_params_destroy(gc);
    fedc_params_destroy(uc);
done:
    free(r);
    fedc_params_destroy(g);
    fedc_params_destroy(u1);
    fedc_params_destroy(u2);
}

int main(void)
{
    const char *s = getenv("FEDC_DP_TEST_SCALE");
    if (s && atoi(s) > 1) {
        scale_div = (size_t)atoi(s);
        TEST_NOTE("sample sizes divided by %zu (FEDC_DP_TEST_SCALE)", scale_div);
    }
    test_mode_names();
    test_normal_moments();
    test_normal_ks();
    test_normal_fresh_and_odd();
    test_clip_outside();
    test_clip_inside_and_equal();
    test_clip_errors();
    test_clip_noise();
    return test_summary();
}
