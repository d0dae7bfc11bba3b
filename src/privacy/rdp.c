/* The RDP accountant for the sampled Gaussian mechanism
 * (include/fedc/privacy.h). Everything is summed in log space: a value v is
 * held as log(v), 0 as -inf. The series and their stopping rules are those
 * of TensorFlow Privacy's rdp_accountant and dp_accounting's
 * rdp_privacy_accountant (Mironov, Talwar, Zhang 2019, Section 3.3); the
 * conversion to (epsilon, delta) is dp_accounting's _compute_epsilon
 * (Canonne, Kamath, Steinke 2020, Proposition 12). */
#include <math.h>
#include <stdlib.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "privacy/rdp.h"

/* A fractional-order series whose terms have not fallen below exp(-30) after
 * this many terms is reported as a failure rather than looped on. The terms
 * decay at least like i^-(order + 2), so the bound is never reached for
 * orders above 1.01 (about 1e5 terms at worst). */
#define FRAC_MAX_TERMS 50000000L

/* The default orders, as dp_accounting's DEFAULT_RDP_ORDERS: 1 + x/10 with
 * the same expression as the references (each is also the nearest double to
 * its decimal, and 2.0, 3.0, ... are integers), 11 to 63, 128 to 1024. */
#define O(x) (1.0 + (x) / 10.0)
static const double default_orders[] = {
    O(1),  O(2),  O(3),  O(4),  O(5),  O(6),  O(7),  O(8),  O(9),  O(10), O(11), O(12), O(13), O(14), O(15),
    O(16), O(17), O(18), O(19), O(20), O(21), O(22), O(23), O(24), O(25), O(26), O(27), O(28), O(29), O(30),
    O(31), O(32), O(33), O(34), O(35), O(36), O(37), O(38), O(39), O(40), O(41), O(42), O(43), O(44), O(45),
    O(46), O(47), O(48), O(49), O(50), O(51), O(52), O(53), O(54), O(55), O(56), O(57), O(58), O(59), O(60),
    O(61), O(62), O(63), O(64), O(65), O(66), O(67), O(68), O(69), O(70), O(71), O(72), O(73), O(74), O(75),
    O(76), O(77), O(78), O(79), O(80), O(81), O(82), O(83), O(84), O(85), O(86), O(87), O(88), O(89), O(90),
    O(91), O(92), O(93), O(94), O(95), O(96), O(97), O(98), O(99), 11,    12,    13,    14,    15,    16,
    17,    18,    19,    20,    21,    22,    23,    24,    25,    26,    27,    28,    29,    30,    31,
    32,    33,    34,    35,    36,    37,    38,    39,    40,    41,    42,    43,    44,    45,    46,
    47,    48,    49,    50,    51,    52,    53,    54,    55,    56,    57,    58,    59,    60,    61,
    62,    63,    128,   256,   512,   1024};
#undef O

const double *fedc_rdp_default_orders(size_t *n)
{
    if (n) *n = sizeof default_orders / sizeof default_orders[0];
    return default_orders;
}

/* log(exp(x) + exp(y)). */
static double log_add(double x, double y)
{
    double a = x < y ? x : y, b = x < y ? y : x;
    if (a == -INFINITY) return b;
    return log1p(exp(a - b)) + b;
}

/* log(exp(x) - exp(y)), x >= y; 0 on success, -1 when x < y. */
static int log_sub(double x, double y, double *out)
{
    if (x < y) return -1;
    if (y == -INFINITY) {
        *out = x;
        return 0;
    }
    if (x == y) {
        *out = -INFINITY;
        return 0;
    }
    double e = expm1(x - y);
    /* exp(x - y) overflows: exp(y) is negligible beside exp(x). */
    *out = isinf(e) ? x : log(e) + y;
    return 0;
}

/* log(erfc(x)), accurate where erfc(x) underflows: below x = 26 erfc is a
 * normal double with full relative precision; beyond it the asymptotic
 * (Laurent) series of log(erfc(x)) + x^2 + log(x sqrt(pi)) at infinity,
 * whose next term is below 1e-14 there. */
static double log_erfc(double x)
{
    if (x < 26.0) return log(erfc(x));
    double r = 1.0 / (x * x);
    return -0.5 * log(M_PI) - log(x) - x * x +
           r * (-0.5 + r * (0.625 + r * (-37.0 / 24.0 + r * (353.0 / 64.0))));
}

/* log(binomial(n, k)) for integers 0 <= k <= n. */
static double log_comb(double n, double k)
{
    return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0);
}

/* log(A_alpha) for an integer alpha >= 2 and 0 < q < 1: the sum over i of
 * binomial(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 z^2)). */
static double log_a_int(double q, double z, double alpha)
{
    double log_q = log(q), log_1mq = log1p(-q), log_a = -INFINITY;
    long n = (long)alpha;
    for (long i = 0; i <= n; i++) {
        double di = (double)i;
        double s = log_comb(alpha, di) + di * log_q + (alpha - di) * log_1mq + (di * di - di) / (2.0 * z * z);
        log_a = log_add(log_a, s);
    }
    return log_a;
}

/* log|binomial(alpha, i)| and its sign for a non-integer alpha > 1 and an
 * integer i >= 0: positive while alpha - i + 1 > 0, then alternating. */
static double log_abs_binom_frac(double alpha, long i, int *positive)
{
    double fl = floor(alpha);
    long turn = (long)fl + 1; /* the last i with a positive factor alpha - i + 1 */
    *positive = i <= turn ? 1 : ((i - turn) % 2 == 0);
    return lgamma(alpha + 1.0) - lgamma((double)i + 1.0) - lgamma(alpha - (double)i + 1.0);
}

/* log(A_alpha) for a fractional alpha > 1 and 0 < q < 1: the two series for
 * the integrals over (-inf, z0] and [z0, +inf), each term carrying a
 * Gaussian tail probability, summed until the larger of a step's two terms
 * is below exp(-30) (do ... until, as in the references). */
static int log_a_frac(double q, double z, double alpha, double *out)
{
    double log_q = log(q), log_1mq = log1p(-q);
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double z0 = z * z * (log_1mq - log_q) + 0.5; /* z^2 log(1/q - 1) + 1/2 */
    double sq2z = sqrt(2.0) * z, two_z2 = 2.0 * z * z;
    for (long i = 0;; i++) {
        if (i >= FRAC_MAX_TERMS) return -1;
        int positive;
        double di = (double)i, j = alpha - di;
        double log_coef = log_abs_binom_frac(alpha, i, &positive);
        double log_t0 = log_coef + di * log_q + j * log_1mq;
        double log_t1 = log_coef + j * log_q + di * log_1mq;
        double log_e0 = log(0.5) + log_erfc((di - z0) / sq2z);
        double log_e1 = log(0.5) + log_erfc((z0 - j) / sq2z);
        double log_s0 = log_t0 + (di * di - di) / two_z2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / two_z2 + log_e1;
        if (positive) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else if (log_sub(log_a0, log_s0, &log_a0) || log_sub(log_a1, log_s1, &log_a1)) {
            return -1;
        }
        if (fmax(log_s0, log_s1) < -30.0) break;
    }
    *out = log_add(log_a0, log_a1);
    return 0;
}

static int check_orders(const double *orders, size_t n, char *err, size_t errlen)
{
    if (!orders || n == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "orders: at least one RDP order is needed");
    for (size_t k = 0; k < n; k++) {
        double a = orders[k];
        if (isnan(a) || a <= 1.0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "orders: order %g (index %zu) must be > 1",
                                  a, k);
        if (isfinite(a) && a > FEDC_RDP_MAX_ORDER)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "orders: order %g (index %zu) exceeds %g (use +inf for the limit)", a, k,
                                  FEDC_RDP_MAX_ORDER);
    }
    return FEDC_OK;
}

int fedc_rdp_sampled_gaussian(double q, double z, uint64_t steps, const double *orders, size_t n, double *rdp,
                              char *err, size_t errlen)
{
    if (isnan(q) || q < 0.0 || q > 1.0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "q: sampling rate %g is not in [0, 1]", q);
    if (isnan(z) || z <= 0.0 || isinf(z))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "z: noise multiplier %g is not a positive finite number", z);
    int rc = check_orders(orders, n, err, errlen);
    if (rc) return rc;
    if (!rdp) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "rdp: the output array is NULL");
    for (size_t k = 0; k < n; k++) {
        double a = orders[k], r;
        if (q == 0.0 || steps == 0) {
            r = 0.0;
        } else if (q == 1.0) {
            r = a / (2.0 * z * z); /* +inf for order +inf */
        } else if (isinf(a)) {
            r = INFINITY;
        } else {
            double log_a;
            if (floor(a) == a) {
                log_a = log_a_int(q, z, a);
            } else if (log_a_frac(q, z, a, &log_a)) {
                return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                                      "orders: the series for order %g (q %g, z %g) did not converge", a, q,
                                      z);
            }
            r = log_a / (a - 1.0);
        }
        rdp[k] = steps == 0 ? 0.0 : r * (double)steps;
    }
    return FEDC_OK;
}

int fedc_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *epsilon,
                     double *order, char *err, size_t errlen)
{
    if (isnan(delta) || delta <= 0.0 || delta >= 1.0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "delta: %g is not in (0, 1)", delta);
    int rc = check_orders(orders, n, err, errlen);
    if (rc) return rc;
    if (!rdp) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "rdp: the RDP array is NULL");
    size_t best = 0;
    double best_eps = INFINITY;
    for (size_t k = 0; k < n; k++) {
        double a = orders[k], r = rdp[k], e;
        if (isnan(r) || r < 0.0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "rdp: value %g at order %g (index %zu) is not >= 0", r, a, k);
        if (delta * delta + expm1(-r) > 0.0)
            e = 0.0; /* the KL bound delta <= sqrt(1 - exp(-rdp)) already holds */
        else if (isinf(a))
            e = r; /* the limit of the formula below: pure DP */
        else if (a > 1.01)
            e = r + log1p(-1.0 / a) - log(delta * a) / (a - 1.0);
        else
            e = INFINITY; /* the bound is unstable as a -> 1 */
        if (k == 0 || e < best_eps) {
            best_eps = e;
            best = k;
        }
    }
    if (epsilon) *epsilon = best_eps > 0.0 ? best_eps : 0.0;
    if (order) *order = orders[best];
    return FEDC_OK;
}

int fedc__rdp_mechanism_epsilon(fedc__rdp_fn rdp_of, const void *mech, uint64_t steps, double delta,
                                const double *orders, size_t n, double *epsilon, double *order, char *err,
                                size_t errlen)
{
    if (!orders) orders = fedc_rdp_default_orders(&n);
    if (isnan(delta) || delta <= 0.0 || delta >= 1.0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "delta: %g is not in (0, 1)", delta);
    if (n == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "orders: at least one RDP order is needed");
    double *rdp = malloc(n * sizeof *rdp);
    if (!rdp) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for %zu RDP values", n);
    int rc = rdp_of(mech, steps, orders, n, rdp, err, errlen);
    if (rc == FEDC_OK) rc = fedc_rdp_epsilon(orders, rdp, n, delta, epsilon, order, err, errlen);
    free(rdp);
    return rc;
}

typedef struct sampled_gaussian {
    double q, z;
} sampled_gaussian;

static int sampled_gaussian_rdp(const void *mech, uint64_t steps, const double *orders, size_t n, double *rdp,
                                char *err, size_t errlen)
{
    const sampled_gaussian *g = mech;
    return fedc_rdp_sampled_gaussian(g->q, g->z, steps, orders, n, rdp, err, errlen);
}

int fedc_privacy_epsilon(double q, double z, uint64_t steps, double delta, const double *orders, size_t n,
                         double *epsilon, double *order, char *err, size_t errlen)
{
    sampled_gaussian g = {q, z};
    return fedc__rdp_mechanism_epsilon(sampled_gaussian_rdp, &g, steps, delta, orders, n, epsilon, order, err,
                                       errlen);
}
