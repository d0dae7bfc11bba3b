/*
 * Adaptive clipping (src/privacy/dp.c; Andrew, Thakkar, McMahan, Ramaswamy
 * 2021, "Differentially Private Learning with Adaptive Clipping"):
 *
 *   - the geometric update C exp(-lr (fraction - quantile)) and the noise
 *     multiplier that keeps a round a Gaussian mechanism of multiplier z,
 *     against hand-computed values;
 *   - run as the server runs it (centred count b - 1/2, noise of standard
 *     deviation m / 20 from the cryptographic generator, divided by the
 *     expected number of clients m), the clip norm converges to the target
 *     quantile of a synthetic norm distribution, from far below and far
 *     above, for the median and the 0.8 quantile.
 *
 * The norms are lognormal(0, 0.5) from a seeded generator; the count noise
 * is not seeded. The tolerance (10% of the quantile, on the mean of the last
 * 100 of 400 rounds) is far outside what the noise can move: the count's
 * noise moves C by about lr sigma_b / m = 0.2 * 0.05 = 1% a round, and the
 * rule's own fluctuation averages out over 100 rounds.
 */
#include <math.h>
#include <stdlib.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "test_util.h"

static void test_formulas(void)
{
    /* Exactly the target fraction: C stays. */
    CHECK(fedc_dp_adaptive_clip(2.0, 0.5, 0.5, 0.2) == 2.0, "fraction at the quantile keeps C");
    /* All unclipped: C shrinks by exp(-lr (1 - q)). */
    double c = fedc_dp_adaptive_clip(1.0, 1.0, 0.5, 0.2);
    CHECK(fabs(c - exp(-0.1)) < 1e-15, "all unclipped: C * exp(-0.1) (got %.17g)", c);
    c = fedc_dp_adaptive_clip(1.0, 0.0, 0.8, 0.5);
    CHECK(fabs(c - exp(0.4)) < 1e-15, "none unclipped, q 0.8, lr 0.5: C * exp(0.4) (got %.17g)", c);

    /* (z^-2 - (2 s)^-2)^(-1/2): z 1, s 5 -> 1 / sqrt(1 - 0.01). */
    double z = fedc_dp_adaptive_noise_multiplier(1.0, 5.0);
    CHECK(fabs(z - 1.0 / sqrt(0.99)) < 1e-15, "z 1, sigma_b 5: %.17g", z);
    z = fedc_dp_adaptive_noise_multiplier(2.0, 1.5);
    CHECK(fabs(z - 1.0 / sqrt(0.25 - 1.0 / 9.0)) < 1e-15, "z 2, sigma_b 1.5: %.17g", z);
    /* The update and count mechanisms compose back to z. */
    double zd = fedc_dp_adaptive_noise_multiplier(1.3, 0.9);
    CHECK(fabs(1.0 / (zd * zd) + 1.0 / (4 * 0.9 * 0.9) - 1.0 / (1.3 * 1.3)) < 1e-12,
          "1/z_update^2 + 1/(2 sigma_b)^2 = 1/z^2");
    CHECK(isnan(fedc_dp_adaptive_noise_multiplier(1.0, 0.5)), "2 sigma_b == z: NaN");
    CHECK(isnan(fedc_dp_adaptive_noise_multiplier(1.0, 0.3)), "2 sigma_b < z: NaN");
    CHECK(isnan(fedc_dp_adaptive_noise_multiplier(0.0, 5.0)), "z 0: NaN");
    CHECK(isnan(fedc_dp_adaptive_noise_multiplier(NAN, 5.0)), "z NaN: NaN");
}

/* The quantile q of lognormal(0, 0.5): exp(0.5 * Phi^-1(q)). */
static double lognormal_quantile(double q)
{
    /* Phi^-1 by bisection on erfc. */
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; i++) {
        double mid = (lo + hi) / 2;
        if (0.5 * erfc(-mid / sqrt(2.0)) < q)
            lo = mid;
        else
            hi = mid;
    }
    return exp(0.5 * (lo + hi) / 2);
}

/* Rounds of the server's rule with m clients a round; returns the mean C
 * over the last `tail` rounds. */
static double run_rule(double c0, double quantile, double lr, int m, int rounds, int tail, uint64_t seed)
{
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    double clip = c0, sum = 0, sigma_b = m / 20.0, noise;
    for (int r = 0; r < rounds; r++) {
        double unclipped = 0;
        for (int i = 0; i < m; i++) unclipped += exp(0.5 * fedc_rng_normal(&rng)) <= clip;
        fedc_dp_normal(&noise, 1);
        double frac = (unclipped - m / 2.0 + sigma_b * noise) / m + 0.5;
        clip = fedc_dp_adaptive_clip(clip, frac, quantile, lr);
        if (r >= rounds - tail) sum += clip;
    }
    return sum / tail;
}

static void test_convergence(void)
{
    const double quantiles[] = {0.5, 0.8};
    const double starts[] = {0.01, 100.0};
    for (size_t qi = 0; qi < 2; qi++) {
        double want = lognormal_quantile(quantiles[qi]);
        for (size_t si = 0; si < 2; si++) {
            double got = run_rule(starts[si], quantiles[qi], 0.2, 100, 400, 100, 17 + qi * 2 + si);
            CHECK(fabs(got - want) < 0.1 * want,
                  "quantile %.1f from C = %g: mean C of the last 100 rounds %.4f, the quantile is %.4f",
                  quantiles[qi], starts[si], got, want);
        }
    }
    /* Not a constant: another quantile ends elsewhere. */
    double a = run_rule(1.0, 0.3, 0.2, 100, 400, 100, 5), b = run_rule(1.0, 0.9, 0.2, 100, 400, 100, 5);
    CHECK(b > 1.5 * a, "the 0.9 quantile (%.4f) lies well above the 0.3 quantile (%.4f)", b, a);
}

int main(void)
{
    test_formulas();
    test_convergence();
    return test_summary();
}
