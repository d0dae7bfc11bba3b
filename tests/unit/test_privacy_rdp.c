/*
 * The RDP accountant (src/privacy/rdp.c, include/fedc/privacy.h) against the
 * values published in the reference implementations' own test suites, each
 * computed with that test's own orders and compared with that test's own
 * tolerance:
 *
 *   TF Privacy   tensorflow/privacy, tensorflow_privacy/privacy/analysis/rdp_accountant_test.py
 *   dp_acc       google/differential-privacy, python/dp_accounting/rdp/rdp_privacy_accountant_test.py
 *   Opacus       pytorch/opacus, opacus/tests/accountants_test.py and the doctest of
 *                opacus/accountants/analysis/rdp.py
 *
 * plus properties: RDP is nondecreasing in the order; epsilon grows with the
 * steps and the sampling rate and shrinks with the noise; the closed forms at
 * q = 1 and q = 0; the fractional-order series meets the integer-order sum
 * at integers; bad arguments are refused with messages naming them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "test_util.h"

/* Python's assertAlmostEqual(a, b, places=p): round(a - b, p) == 0. */
static int almost_equal(double a, double b, int places)
{
    return fabs(a - b) < 0.5 * pow(10.0, -places);
}

/* numpy allclose / tf assertAllClose: |a - b| <= atol + rtol |b|; inf only equals inf. */
static int all_close(double a, double b, double rtol, double atol)
{
    if (isinf(b)) return a == b;
    return fabs(a - b) <= atol + rtol * fabs(b);
}

static double rdp1(double q, double z, uint64_t steps, double order)
{
    double r = NAN;
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_rdp_sampled_gaussian(q, z, steps, &order, 1, &r, err, sizeof err);
    CHECK(rc == FEDC_OK, "rdp(q %g, z %g, steps %llu, order %g): %s", q, z, (unsigned long long)steps, order,
          err);
    return r;
}

static double eps_of(double q, double z, uint64_t steps, double delta, const double *orders, size_t n,
                     double *order)
{
    double e = NAN, a = NAN;
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_privacy_epsilon(q, z, steps, delta, orders, n, &e, &a, err, sizeof err);
    CHECK(rc == FEDC_OK, "epsilon(q %g, z %g, steps %llu, delta %g): %s", q, z, (unsigned long long)steps,
          delta, err);
    if (order) *order = a;
    return e;
}

static void test_default_orders(void)
{
    size_t n = 0;
    const double *o = fedc_rdp_default_orders(&n);
    CHECK(n == 156, "default orders: %zu, want 156", n);
    if (n != 156) return;
    CHECK(o[0] == 1.1 && o[9] == 2.0 && o[98] == 10.9, "default orders start 1.1 .. 2 .. 10.9: %g %g %g",
          o[0], o[9], o[98]);
    CHECK(o[99] == 11.0 && o[151] == 63.0, "default orders 11 .. 63: %g %g", o[99], o[151]);
    CHECK(o[152] == 128 && o[153] == 256 && o[154] == 512 && o[155] == 1024,
          "default orders end 128 .. 1024");
    int increasing = 1;
    for (size_t k = 1; k < n; k++) increasing &= o[k] > o[k - 1];
    CHECK(increasing, "default orders increase");
}

/* TF Privacy rdp_accountant_test.py: the RDP values. */
static void test_tf_privacy_rdp(void)
{
    /* test_compute_rdp_no_data: compute_rdp(0, 10, 1, 20) == 0. */
    CHECK(rdp1(0, 10, 1, 20) == 0.0, "TF no_data: %g, want 0", rdp1(0, 10, 1, 20));
    /* test_compute_rdp_no_sampling: compute_rdp(1, 10, 1, 20) == 0.1 (q = 1: alpha / (2 sigma^2)). */
    CHECK(rdp1(1, 10, 1, 20) == 0.1, "TF no_sampling: %.17g, want 0.1", rdp1(1, 10, 1, 20));
    /* test_compute_heterogeneous_rdp_different_sampling_probabilities: q 0 and q 1, sigma 10,
     * one step each, order 20, summed: 0.1 (assertEqual). */
    double het = rdp1(0, 10, 1, 20) + rdp1(1, 10, 1, 20);
    CHECK(het == 0.1, "TF heterogeneous: %.17g, want 0.1", het);
    /* test_compute_rdp_scalar: compute_rdp(0.1, 2, 10, 5) == 0.07737 to 5 places. */
    double s = rdp1(0.1, 2, 10, 5);
    CHECK(almost_equal(s, 0.07737, 5), "TF scalar: %.8g, want 0.07737 (5 places)", s);

    /* test_compute_rdp_sequence: compute_rdp(0.01, 2.5, 50, [1.5, 2.5, 5, 50, 100, inf]);
     * tensorflow/privacy 385fefc: assertAllClose(rtol=1e-4) (tf default atol 1e-6) with the values
     * below; the same values in dp_acc test_compute_rdp_poisson_sampled_gaussian with
     * np.allclose(rtol=1e-4) (atol 1e-8), the stricter of the two, used here. */
    const double orders[] = {1.5, 2.5, 5, 50, 100, INFINITY};
    const double want[] = {6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02, INFINITY};
    /* tensorflow/privacy 09270af (a later revision of the same test): assertSequenceAlmostEqual
     * with delta=1e-5 against these. */
    const double want_later[] = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307, INFINITY};
    double got[6];
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_rdp_sampled_gaussian(0.01, 2.5, 50, orders, 6, got, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "TF sequence");
    for (int k = 0; k < 6; k++) {
        CHECK(all_close(got[k], want[k], 1e-4, 1e-8), "TF/dp_acc sequence order %g: %.8g, want %.5g",
              orders[k], got[k], want[k]);
        CHECK(isinf(want_later[k]) ? got[k] == want_later[k] : fabs(got[k] - want_later[k]) <= 1e-5,
              "TF (later) sequence order %g: %.9g, want %.9g +- 1e-5", orders[k], got[k], want_later[k]);
    }

    /* test_compute_rdp_from_ledger: three ledger entries of one step each (q 0.1, clip 3.14159,
     * noise stddev 2.71828, orders 2..32) equal compute_rdp(q, z, 3, orders)
     * (assertSequenceAlmostEqual, 7 places). */
    double z = 2.71828 / 3.14159;
    for (int a = 2; a <= 32; a++) {
        double three = rdp1(0.1, z, 3, a), one = rdp1(0.1, z, 1, a);
        CHECK(almost_equal(three, one + one + one, 7), "TF ledger order %d: %.12g vs 3 x %.12g", a, three,
              one);
    }
}

/* The epsilon conversion: TF Privacy and dp_acc. */
static void test_epsilon_published(void)
{
    /* TF test_get_privacy_spent_check_target_delta and dp_acc test_compute_epsilon_delta_pure_dp:
     * orders 2..32, RDP 1.1 at each, delta 1e-5: epsilon 1.32783806176 (7 places), order 32. */
    double orders[31], rdp[31], eps = NAN, order = NAN;
    for (int k = 0; k < 31; k++) {
        orders[k] = k + 2;
        rdp[k] = 1.1;
    }
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_rdp_epsilon(orders, rdp, 31, 1e-5, &eps, &order, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "pure DP epsilon");
    CHECK(almost_equal(eps, 1.32783806176, 7), "pure DP: epsilon %.12g, want 1.32783806176", eps);
    CHECK(order == 32, "pure DP: order %g, want 32", order);

    /* Same tests, second part (dp_acc test_compute_epsilon_delta_gaussian): orders 0.001 i for
     * i in 1000..99999, RDP of the Gaussian mechanism (q 1) with z 4.530877117, one step,
     * delta 1e-6: epsilon 1 (7 places). Order 1.0 (i = 1000) is left out, as fedc refuses
     * orders <= 1; in the references its epsilon is +inf (neither the KL rule nor a > 1.01
     * applies), so it never is the minimum and the result is unchanged. */
    size_t n = 99999 - 1001 + 1;
    double *o = malloc(n * sizeof *o);
    CHECK(o != NULL, "malloc");
    if (!o) return;
    for (size_t k = 0; k < n; k++) o[k] = 0.001 * (double)(k + 1001);
    double e = eps_of(1, 4.530877117, 1, 1e-6, o, n, NULL);
    CHECK(almost_equal(e, 1.0, 7), "Gaussian (1, 1e-6)-DP: epsilon %.12g, want 1 (7 places)", e);
    free(o);

    /* TF test_check_composition: orders below; compute_rdp(1e-4, .4, 40000) +
     * compute_rdp(0.1, 2, 100), delta 1e-5. The published 8.509656 (places=5, order 2.5) is
     * that of the OLD conversion, epsilon = min(rdp - log(delta) / (a - 1)) (commented out in
     * the test, "These tests use the old RDP -> approx DP conversion"): checked here with that
     * conversion written out, which tests the RDP values; the improved epsilon must be <= it
     * (the assertion the test keeps). */
    const double co[] = {1.25, 1.5, 1.75, 2.,  2.5, 3.,  4.,  5.,  6.,  7.,  8.,
                         10.,  12., 14.,  16., 20., 24., 28., 32., 64., 256.};
    size_t cn = sizeof co / sizeof co[0];
    double r1[21], r2[21], sum[21];
    rc = fedc_rdp_sampled_gaussian(1e-4, 0.4, 40000, co, cn, r1, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "composition part 1");
    rc = fedc_rdp_sampled_gaussian(0.1, 2, 100, co, cn, r2, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "composition part 2");
    double old_eps = INFINITY, old_order = NAN;
    for (size_t k = 0; k < cn; k++) {
        sum[k] = r1[k] + r2[k];
        double oe = sum[k] - log(1e-5) / (co[k] - 1);
        if (oe < old_eps) {
            old_eps = oe;
            old_order = co[k];
        }
    }
    CHECK(almost_equal(old_eps, 8.509656, 5), "composition, old conversion: %.8g, want 8.509656 (5 places)",
          old_eps);
    CHECK(old_order == 2.5, "composition, old conversion: order %g, want 2.5", old_order);
    rc = fedc_rdp_epsilon(co, sum, cn, 1e-5, &eps, &order, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "composition epsilon");
    CHECK(eps <= 8.509656, "composition: improved epsilon %.8g, want <= 8.509656", eps);

    /* dp_acc test_zero_poisson_sample: q 0 (z 1), orders [3.14159]: get_epsilon(1e-10) == 0. */
    double pi_order = 3.14159;
    e = eps_of(0, 1, 1, 1e-10, &pi_order, 1, NULL);
    CHECK(e == 0.0, "zero Poisson sample: epsilon %g, want 0", e);
    /* dp_acc test_compute_rdp_gaussian: order 3.14159, sigma 2.71828, q 1:
     * alpha / (2 sigma^2) (assertAlmostEqual, 7 places). */
    double g = rdp1(1, 2.71828, 1, 3.14159);
    CHECK(almost_equal(g, 3.14159 / (2 * 2.71828 * 2.71828), 7), "Gaussian RDP: %.12g", g);
}

/* Opacus: epsilon with its own orders and conversion (Balle et al. 2020, Theorem 21:
 * rdp - (log delta + log a) / (a - 1) + log((a - 1) / a), the same formula as dp_acc's; its
 * KL and a > 1.01 rules do not bind here). */
static void test_opacus(void)
{
    /* opacus/tests/accountants_test.py test_rdp_accountant: noise 1.5, sample rate 0.04,
     * steps int(90 / 0.04) = 2250, delta 1e-5, RDPAccountant.DEFAULT_ALPHAS =
     * [1 + x / 10 for x in 1..99] + [12..63]: epsilon 7.32911117143 (assertAlmostEqual, 7 places). */
    double alphas[99 + 52];
    size_t n = 0;
    for (int x = 1; x <= 99; x++) alphas[n++] = 1.0 + x / 10.0;
    for (int a = 12; a <= 63; a++) alphas[n++] = a;
    double e = eps_of(0.04, 1.5, 2250, 1e-5, alphas, n, NULL);
    CHECK(almost_equal(e, 7.32911117143, 7), "Opacus test_rdp_accountant: epsilon %.12g, want 7.32911117143",
          e);

    /* opacus/accountants/analysis/rdp.py module doctest: parameters (1e-5, 1.0, 10) and
     * (1e-4, 3.0, 4) composed, orders 2..32, delta 1e-5: (0.336, 23) (doctest +NUMBER, so
     * epsilon to the 3 decimals shown). */
    double orders[31], r1[31], r2[31], sum[31], eps = NAN, order = NAN;
    char err[FEDC_ERRMSG_MAX] = "";
    for (int k = 0; k < 31; k++) orders[k] = k + 2;
    int rc = fedc_rdp_sampled_gaussian(1e-5, 1.0, 10, orders, 31, r1, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "Opacus doctest part 1");
    rc = fedc_rdp_sampled_gaussian(1e-4, 3.0, 4, orders, 31, r2, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "Opacus doctest part 2");
    for (int k = 0; k < 31; k++) sum[k] = r1[k] + r2[k];
    rc = fedc_rdp_epsilon(orders, sum, 31, 1e-5, &eps, &order, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "Opacus doctest epsilon");
    CHECK(fabs(eps - 0.336) < 0.0005, "Opacus doctest: epsilon %.6g, want 0.336", eps);
    CHECK(order == 23, "Opacus doctest: order %g, want 23", order);
}

/* RDP is nondecreasing in the order (Mironov 2017, Proposition 9); across an integer the
 * fractional series and the integer sum must agree. The (q, sigma, order) triples are those of
 * TF/dp_acc test_compute_log_a_equals_mp (whose reference values come from an mpmath integral
 * at test time and are not published). */
static void test_orders(void)
{
    static const struct {
        double q, z, order;
    } p[] = {{1e-7, .1, 1.01}, {1e-6, .1, 256}, {1e-5, .1, 256.1}, {1e-6, 1, 27},  {1e-4, 1., 1.5},
             {1e-3, 1., 2},    {.01, 10, 20},   {.1, 100, 20.5},   {.99, .1, 256}, {.999, 100, 256.1}};
    for (size_t k = 0; k < sizeof p / sizeof p[0]; k++) {
        double a = p[k].order, lo = a > 2 ? floor(a) - 0.5 : 1.005, hi = floor(a) + 1.5;
        double r = rdp1(p[k].q, p[k].z, 1, a), rl = rdp1(p[k].q, p[k].z, 1, lo),
               rh = rdp1(p[k].q, p[k].z, 1, hi);
        CHECK(isfinite(r) && r > 0, "q %g z %g order %g: rdp %g not finite and > 0", p[k].q, p[k].z, a, r);
        CHECK(rl <= r * (1 + 1e-9) && r <= rh * (1 + 1e-9),
              "q %g z %g: rdp(%g) %.10g, rdp(%g) %.10g, rdp(%g) %.10g", p[k].q, p[k].z, lo, rl, a, r, hi, rh);
    }
    /* Continuity at integers: the fractional series just beside an integer order meets the
     * integer binomial sum there. */
    const double qs[] = {0.01, 0.1, 0.5}, zs[] = {0.8, 2.5};
    const int ints[] = {2, 5, 32};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 3; k++) {
                double a = ints[k], r = rdp1(qs[i], zs[j], 1, a);
                double below = rdp1(qs[i], zs[j], 1, a - 1e-7), above = rdp1(qs[i], zs[j], 1, a + 1e-7);
                CHECK(fabs(below - r) <= 1e-5 * r && fabs(above - r) <= 1e-5 * r,
                      "q %g z %g: rdp(%g -+ 1e-7) %.12g %.12g vs rdp(%g) %.12g", qs[i], zs[j], a, below,
                      above, a, r);
            }
    /* Nondecreasing over the default orders, for a few mechanisms. */
    size_t n;
    const double *o = fedc_rdp_default_orders(&n);
    double *r = malloc(n * sizeof *r);
    CHECK(r != NULL, "malloc");
    if (!r) return;
    const double mq[] = {0.001, 0.04, 0.3}, mz[] = {0.7, 1.5, 4};
    for (int i = 0; i < 3; i++) {
        char err[FEDC_ERRMSG_MAX] = "";
        int rc = fedc_rdp_sampled_gaussian(mq[i], mz[i], 1, o, n, r, err, sizeof err);
        CHECK_STATUS(rc, FEDC_OK, "default orders");
        int ok = 1;
        size_t bad = 0;
        for (size_t k = 1; k < n; k++)
            if (!(r[k] >= r[k - 1] * (1 - 1e-12))) {
                ok = 0;
                bad = k;
                break;
            }
        CHECK(ok, "q %g z %g: rdp(%g) %.10g < rdp(%g) %.10g", mq[i], mz[i], o[bad], r[bad],
              o[bad ? bad - 1 : 0], r[bad ? bad - 1 : 0]);
    }
    free(r);
}

static void test_monotone(void)
{
    /* epsilon grows with the steps and with q, and shrinks as z grows (default orders). */
    double prev = -1;
    const uint64_t steps[] = {1, 10, 100, 1000, 10000, 100000};
    for (int k = 0; k < 6; k++) {
        double e = eps_of(0.01, 1.1, steps[k], 1e-5, NULL, 0, NULL);
        CHECK(e > prev, "steps %llu: epsilon %.8g not above %.8g", (unsigned long long)steps[k], e, prev);
        prev = e;
    }
    prev = -1;
    const double qs[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0};
    for (int k = 0; k < 7; k++) {
        double e = eps_of(qs[k], 1.1, 1000, 1e-5, NULL, 0, NULL);
        CHECK(e > prev, "q %g: epsilon %.8g not above %.8g", qs[k], e, prev);
        prev = e;
    }
    prev = INFINITY;
    const double zs[] = {0.5, 0.8, 1.0, 1.5, 2.0, 5.0, 10.0};
    for (int k = 0; k < 7; k++) {
        double e = eps_of(0.01, zs[k], 1000, 1e-5, NULL, 0, NULL);
        CHECK(e < prev, "z %g: epsilon %.8g not below %.8g", zs[k], e, prev);
        prev = e;
    }
    /* A smaller delta costs more epsilon. */
    double e5 = eps_of(0.01, 1.1, 1000, 1e-5, NULL, 0, NULL),
           e8 = eps_of(0.01, 1.1, 1000, 1e-8, NULL, 0, NULL);
    CHECK(e8 > e5, "delta 1e-8: epsilon %.8g not above delta 1e-5's %.8g", e8, e5);
}

static void test_closed_forms(void)
{
    /* q = 1: steps * order / (2 z^2), at integer, fractional and large orders. */
    const double orders[] = {1.5, 2, 3.7, 10, 63, 1024};
    for (int k = 0; k < 6; k++) {
        double r = rdp1(1, 1.3, 7, orders[k]), want = 7 * orders[k] / (2 * 1.3 * 1.3);
        CHECK(fabs(r - want) <= 1e-14 * want, "q 1 order %g: %.17g, want %.17g", orders[k], r, want);
    }
    CHECK(isinf(rdp1(1, 1.3, 7, INFINITY)), "q 1 order inf: not inf");
    /* q = 0: zero everywhere, order +inf included, and epsilon 0. */
    size_t n;
    const double *o = fedc_rdp_default_orders(&n);
    double *r = malloc((n + 1) * sizeof *r), *o2 = malloc((n + 1) * sizeof *o2);
    CHECK(r && o2, "malloc");
    if (r && o2) {
        memcpy(o2, o, n * sizeof *o);
        o2[n] = INFINITY;
        char err[FEDC_ERRMSG_MAX] = "";
        int rc = fedc_rdp_sampled_gaussian(0, 0.5, 1000, o2, n + 1, r, err, sizeof err);
        CHECK_STATUS(rc, FEDC_OK, "q 0");
        int zero = 1;
        for (size_t k = 0; k <= n; k++) zero &= r[k] == 0.0;
        CHECK(zero, "q 0: some RDP is not 0");
        double e = eps_of(0, 0.5, 1000, 1e-5, NULL, 0, NULL);
        CHECK(e == 0.0, "q 0: epsilon %g, want 0", e);
    }
    free(r);
    free(o2);
    /* Order +inf: +inf for 0 < q < 1; steps 0: 0. */
    CHECK(isinf(rdp1(0.01, 2, 1, INFINITY)), "order inf: not inf");
    CHECK(rdp1(0.01, 2, 0, 5) == 0.0, "steps 0: not 0");
    /* The epsilon of order +inf with a finite RDP (pure DP) is that RDP. */
    double oi[] = {2, INFINITY}, ri[] = {50, 0.7}, eps = NAN, order = NAN;
    int rc = fedc_rdp_epsilon(oi, ri, 2, 1e-5, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && eps == 0.7 && isinf(order), "order inf, rdp 0.7: epsilon %g order %g", eps, order);
    /* The KL rule: a tiny RDP gives epsilon 0 when delta^2 > 1 - exp(-rdp). */
    double ok[] = {1.5}, rk[] = {1e-12};
    rc = fedc_rdp_epsilon(ok, rk, 1, 1e-3, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && eps == 0.0, "KL rule: epsilon %g, want 0", eps);
    /* Orders at or below 1.01 give +inf (unless the KL rule applies). */
    double o101[] = {1.005}, r101[] = {0.5};
    rc = fedc_rdp_epsilon(o101, r101, 1, 1e-5, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && isinf(eps) && order == 1.005, "order 1.005: epsilon %g order %g", eps, order);
    /* ... strictly: 1.01 gives +inf, 1.02 the formula. */
    double o102[] = {1.01, 1.02}, r102[] = {0.5, 0.5};
    double want102 = 0.5 + log1p(-1 / 1.02) - log(1e-5 * 1.02) / (1.02 - 1);
    rc = fedc_rdp_epsilon(o102, r102, 2, 1e-5, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && fabs(eps - want102) <= 1e-12 * want102 && order == 1.02,
          "orders 1.01, 1.02: epsilon %.15g order %g, want %.15g at 1.02", eps, order, want102);
    rc = fedc_rdp_epsilon(o102, r102, 1, 1e-5, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && isinf(eps), "order 1.01 alone: epsilon %g, want inf", eps);
    /* A negative value of the formula is clamped at 0 (order 2, rdp 0.5, delta 0.5: the KL rule
     * does not apply, 0.25 < 1 - exp(-0.5), and the formula gives 0.5 + log(1/2) - log(1) < 0). */
    double oc[] = {2}, rc5[] = {0.5};
    rc = fedc_rdp_epsilon(oc, rc5, 1, 0.5, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && eps == 0.0, "clamp: epsilon %g, want 0", eps);
    /* Among equal epsilons the first order is taken (numpy argmin). */
    double oe[] = {2, 3}, re[] = {1e-12, 1e-12};
    rc = fedc_rdp_epsilon(oe, re, 2, 1e-3, &eps, &order, NULL, 0);
    CHECK(rc == FEDC_OK && eps == 0.0 && order == 2, "ties: epsilon %g order %g, want 0 at order 2", eps,
          order);
}

static void expect_invalid(int rc, const char *err, const char *needle, const char *what)
{
    CHECK_STATUS(rc, FEDC_ERR_INVALID, what);
    CHECK_CONTAINS(err, needle, what);
}

static void test_errors(void)
{
    char err[FEDC_ERRMSG_MAX];
    double o[] = {2, 3}, r[2], e, a;
#define SG(q, z, orders, n)                                                                                  \
    (err[0] = '\0', fedc_rdp_sampled_gaussian((q), (z), 10, (orders), (n), r, err, sizeof err))
    expect_invalid(SG(-0.1, 1, o, 2), err, "q", "q -0.1");
    expect_invalid(SG(1.1, 1, o, 2), err, "q", "q 1.1");
    expect_invalid(SG(NAN, 1, o, 2), err, "q", "q NaN");
    expect_invalid(SG(0.1, 0, o, 2), err, "z", "z 0");
    expect_invalid(SG(0.1, -1, o, 2), err, "z", "z -1");
    expect_invalid(SG(0.1, NAN, o, 2), err, "z", "z NaN");
    expect_invalid(SG(0.1, INFINITY, o, 2), err, "z", "z inf");
    expect_invalid(SG(0.1, 1, o, 0), err, "orders", "n 0");
    expect_invalid(SG(0.1, 1, NULL, 2), err, "orders", "orders NULL");
    double bad1[] = {2, 1.0}, bad2[] = {0.5}, bad3[] = {NAN}, bad4[] = {2e6};
    expect_invalid(SG(0.1, 1, bad1, 2), err, "orders", "order 1");
    expect_invalid(SG(0.1, 1, bad2, 1), err, "orders", "order 0.5");
    expect_invalid(SG(0.1, 1, bad3, 1), err, "orders", "order NaN");
    expect_invalid(SG(0.1, 1, bad4, 1), err, "orders", "order 2e6");
#undef SG
    double rr[] = {0.1, 0.2};
#define EP(orders, rdp, n, d)                                                                                \
    (err[0] = '\0', fedc_rdp_epsilon((orders), (rdp), (n), (d), &e, &a, err, sizeof err))
    expect_invalid(EP(o, rr, 2, 0.0), err, "delta", "delta 0");
    expect_invalid(EP(o, rr, 2, 1.0), err, "delta", "delta 1");
    expect_invalid(EP(o, rr, 2, -1e-5), err, "delta", "delta < 0");
    expect_invalid(EP(o, rr, 2, NAN), err, "delta", "delta NaN");
    expect_invalid(EP(o, rr, 0, 1e-5), err, "orders", "epsilon n 0");
    expect_invalid(EP(bad1, rr, 2, 1e-5), err, "orders", "epsilon order 1");
    double neg[] = {0.1, -0.2}, nan_r[] = {NAN, 0.1};
    expect_invalid(EP(o, neg, 2, 1e-5), err, "rdp", "rdp < 0");
    expect_invalid(EP(o, nan_r, 2, 1e-5), err, "rdp", "rdp NaN");
#undef EP
    err[0] = '\0';
    expect_invalid(fedc_privacy_epsilon(0.1, 1, 10, 2.0, NULL, 0, &e, &a, err, sizeof err), err, "delta",
                   "privacy_epsilon delta 2");
    err[0] = '\0';
    expect_invalid(fedc_privacy_epsilon(2.0, 1, 10, 1e-5, NULL, 0, &e, &a, err, sizeof err), err, "q",
                   "privacy_epsilon q 2");
    err[0] = '\0';
    expect_invalid(fedc_privacy_epsilon(0.1, 1, 10, 1e-5, o, 0, &e, &a, err, sizeof err), err, "orders",
                   "privacy_epsilon n 0");
    /* A NULL error buffer is allowed. */
    CHECK_STATUS(fedc_rdp_sampled_gaussian(-1, 1, 1, o, 2, r, NULL, 0), FEDC_ERR_INVALID, "NULL err");
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    test_default_orders();
    test_tf_privacy_rdp();
    test_epsilon_published();
    test_opacus();
    test_orders();
    test_monotone();
    test_closed_forms();
    test_errors();
    return test_summary();
}
