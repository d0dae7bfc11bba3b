/*
 * Privacy accounting: a Renyi-DP (RDP) accountant for the sampled Gaussian
 * mechanism, the mechanism of DP-SGD and of DP federated averaging (each
 * record, or each client, takes part in a step with probability q and the
 * clipped sum gets Gaussian noise of standard deviation z times the clip).
 *
 *   double eps, order;
 *   char err[FEDC_ERRMSG_MAX];
 *   if (fedc_privacy_epsilon(0.01, 1.1, 10000, 1e-5, NULL, 0, &eps, &order, err, sizeof err)) ...
 *
 * The RDP of one step is that of Mironov, Talwar and Zhang (2019), "Renyi
 * Differential Privacy of the Sampled Gaussian Mechanism" (arXiv:1908.10530),
 * computed the way TensorFlow Privacy's rdp_accountant and Google's
 * dp_accounting (rdp/rdp_privacy_accountant.py) compute it: for an integer
 * order the binomial sum of Section 3.3 in log space; for a fractional order
 * the expansion into two series (the integrals below and above
 * z0 = z^2 log(1/q - 1) + 1/2), summed in log space until a term of both
 * falls below exp(-30). RDP composes additively, so T steps have T times the
 * RDP of one (Mironov 2017, "Renyi Differential Privacy", Proposition 1).
 *
 * The conversion to (epsilon, delta)-DP is the improved one of Canonne,
 * Kamath and Steinke (2020), "The Discrete Gaussian for Differential Privacy"
 * (arXiv:2004.00010, Proposition 12; also Asoodeh et al. 2020, arXiv:2001.05990
 * Equation 20), with dp_accounting's rules: per order a,
 *   epsilon(a) = 0                                  if delta^2 + expm1(-rdp) > 0
 *                                                   (the KL bound already gives delta),
 *              = rdp + log1p(-1/a) - log(delta a) / (a - 1)   else if a > 1.01,
 *              = +inf                               otherwise;
 * the result is the smallest over the orders (the first order among equals),
 * clamped at 0. For order +inf with a finite RDP the formula's limit, rdp,
 * is used (pure DP).
 *
 * Arguments are checked: q outside [0, 1] or NaN, z <= 0, +inf or NaN, delta
 * outside (0, 1), an order <= 1 or NaN, a finite order above
 * FEDC_RDP_MAX_ORDER, an RDP value that is negative or NaN, n == 0 or a NULL
 * array give FEDC_ERR_INVALID with a message naming the argument. A series
 * that fails numerically (it never has in the tests) gives FEDC_ERR_RANGE.
 * The functions keep no state and may be called from any thread (lgamma's
 * global signgam aside, which they never read).
 */
#ifndef FEDC_PRIVACY_H
#define FEDC_PRIVACY_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest finite order accepted (the integer series has order + 1 terms). */
#define FEDC_RDP_MAX_ORDER 1e6

/* The default orders, those of dp_accounting's DEFAULT_RDP_ORDERS: 1 + x/10
 * for x = 1..99 (1.1 to 10.9 in steps of 0.1), 11 to 63, and 128, 256, 512,
 * 1024 (156 orders). Sets *n to their number; the array is static. */
const double *fedc_rdp_default_orders(size_t *n);

/* RDP at each of the n orders of `steps` compositions of the sampled
 * Gaussian mechanism with sampling rate q in [0, 1] and noise multiplier
 * z > 0 (Mironov, Talwar, Zhang 2019), for integer and fractional orders
 * > 1, written to rdp[0..n-1]. q == 0 gives 0 at every order (+inf
 * included); q == 1 gives steps * order / (2 z^2), the Gaussian mechanism;
 * order +inf gives +inf unless q == 0. steps == 0 gives 0. */
int fedc_rdp_sampled_gaussian(double q, double z, uint64_t steps, const double *orders, size_t n, double *rdp,
                              char *err, size_t errlen);

/* The smallest epsilon over the n (order, RDP) pairs for the given delta in
 * (0, 1), with the conversion of Canonne, Kamath and Steinke 2020 as in
 * dp_accounting's _compute_epsilon (rules above), and the order that gave
 * it. Either output may be NULL. */
int fedc_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *epsilon,
                     double *order, char *err, size_t errlen);

/* Both in one call: the epsilon of `steps` steps of the sampled Gaussian
 * mechanism at the given delta, over `orders` (NULL: the default orders,
 * n is then ignored). */
int fedc_privacy_epsilon(double q, double z, uint64_t steps, double delta, const double *orders, size_t n,
                         double *epsilon, double *order, char *err, size_t errlen);

/*
 * Differential privacy of the training (docs/privacy.md). The modes:
 *
 *   FEDC_DP_CENTRAL      user-level DP-FedAvg (McMahan et al. 2018): the
 *                        server clips each client's update (its model minus
 *                        the global model) to L2 norm `clip`, adds Gaussian
 *                        noise of standard deviation noise_multiplier * clip
 *                        to the sum of the clipped updates and divides by
 *                        the expected number of clients of the round. The
 *                        mean is unweighted: weighting by num_examples
 *                        would break the sensitivity bound.
 *   FEDC_DP_CLIENT_CLIP  the same, with the clients clipping (they are sent
 *                        "dp_clip"), so that it can run where the server
 *                        cannot see single updates; the server adds the
 *                        noise (and clips again where it can).
 *   FEDC_DP_LOCAL        each client clips and adds the noise itself (it is
 *                        sent "dp_clip" and "dp_noise_multiplier") before the
 *                        update leaves it; the server averages.
 */
typedef enum fedc_dp_mode {
    FEDC_DP_OFF = 0,
    FEDC_DP_CENTRAL,
    FEDC_DP_CLIENT_CLIP,
    FEDC_DP_LOCAL
} fedc_dp_mode;

typedef struct fedc_dp_options {
    fedc_dp_mode mode;       /* FEDC_DP_OFF: no DP (the default) */
    double clip;             /* C: the L2 norm bound of one client's update, > 0 (adaptive: the first) */
    double noise_multiplier; /* Z: noise standard deviation / C, > 0 */
    double delta;            /* the delta epsilon is reported for, in (0, 1) (default 1e-5) */
    double target_epsilon;   /* stop before a round that would spend more; 0: no limit */
    /* Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021), central
     * mode only: C follows the target quantile of the clients' update
     * norms, from a noised count of the updates it did not clip. */
    int adaptive;
    double target_quantile;      /* gamma, in (0, 1) (default 0.5) */
    double clip_lr;              /* eta_C, > 0 (default 0.2) */
    double clipped_count_stddev; /* sigma_b, noise of the count; 0: max(m / 20, Z) each round */
} fedc_dp_options;

/* "off", "central", "client-clip", "local". */
const char *fedc_dp_mode_name(fedc_dp_mode mode);
/* Parses those names; 0, or -1 for anything else. */
int fedc_dp_mode_parse(const char *name, fedc_dp_mode *mode);

/* Adaptive clipping's geometric update: the next clip norm, C exp(-clip_lr
 * (unclipped_fraction - target_quantile)), from the (noised) fraction of
 * the round's updates whose norm was at most C. */
double fedc_dp_adaptive_clip(double clip, double unclipped_fraction, double target_quantile, double clip_lr);

/* The noise multiplier for the updates when the count gets noise of
 * standard deviation count_stddev, such that the round as a whole is a
 * Gaussian mechanism of multiplier z (Andrew et al. 2021, Theorem 1):
 * (z^-2 - (2 count_stddev)^-2)^(-1/2). NaN unless 2 count_stddev > z > 0. */
double fedc_dp_adaptive_noise_multiplier(double z, double count_stddev);

/* n standard normal values from the operating system's cryptographic
 * generator (libsodium's randombytes), by the Box-Muller transform over
 * uniforms of 53 random bits, in double precision. Never seeded, never
 * reproducible: privacy noise must not be. */
void fedc_dp_normal(double *out, size_t n);

/*
 * A client's side of client-clip and local DP: with d = update - global
 * (F32 tensors of the same layout), sets update = global + d * min(1,
 * clip / ||d||) + noise, the noise N(0, sigma^2) per element (sigma 0:
 * none), computed in double and rounded to float once. *norm (may be
 * NULL) gets ||d|| before clipping. FEDC_ERR_INVALID for a clip that is
 * not a positive finite number or a sigma that is not finite and >= 0;
 * FEDC_ERR_SHAPE for another layout; FEDC_ERR_UNSUPPORTED for a tensor
 * that is not F32; FEDC_ERR_NONFINITE for a NaN or infinite difference.
 * On any error the update is left as it was.
 */
int fedc_dp_clip_update(fedc_params *update, const fedc_params *global, double clip, double sigma,
                        double *norm, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
