/*
 * The Distributed Discrete Gaussian mechanism (DDG) of Kairouz, Liu and
 * Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
 * Learning with Secure Aggregation" (ICML 2021, arXiv:2102.06387), as a
 * library layer for the secure-aggregation client and the server. It follows
 * the reference implementation, google-research/federated distributed_dp
 * (accounting_utils.py, ddpquery_utils.py) and TensorFlow Federated's
 * DistributedDpSumFactory with tensorflow_privacy's
 * DistributedDiscreteGaussianSumQuery.
 *
 * A client with a vector x of d floats, for a round whose public 32-byte
 * rotation seed all clients and the server share:
 *
 *   1. clips x to L2 norm c and pads it with zeros to P, the next power of
 *      two >= d;
 *   2. rotates it: y = H D x / sqrt(P), D the diagonal of +-1 signs expanded
 *      from the seed and round (fedc__ddg_signs), H the P x P Walsh-Hadamard
 *      matrix (entries +-1), so H D / sqrt(P) is orthogonal;
 *   3. scales by 1/gamma (gamma is the step of the integer grid) and rounds
 *      each coordinate randomly to one of its two neighbouring integers,
 *      unbiasedly, retrying the whole vector until its L2 norm is at most
 *      fedc__ddg_rounded_l2_bound(c / gamma, beta, P) (conditional randomized
 *      rounding, Kairouz et al. Theorem 1 / Algorithm 1);
 *   4. adds discrete Gaussian noise N_Z(0, (sigma / gamma)^2) to each
 *      coordinate, sigma being the client's share of the noise in the
 *      unscaled domain (n clients: central stddev sqrt(n) sigma), sampled
 *      exactly as in Canonne, Kamath and Steinke 2020 (fedc__ddg_sample);
 *   5. reduces mod 2^B: out[i] = z[i] mod 2^B as a uint32.
 *
 * Reducing mod 2^B commutes with the secure aggregation's sum mod 2^32 when
 * B <= 32, so the server may get the sum mod 2^32 of the clients' outputs
 * (plus masks that cancel) and fedc__ddg_decode() reduces it mod 2^B, reads
 * it as a signed value in [-2^(B-1), 2^(B-1)), multiplies by gamma, undoes
 * the rotation and drops the padding. The result is the sum of the clipped
 * inputs plus the rounding error (below gamma sqrt(P) in L2 per client,
 * about gamma sqrt(P / 6) typically; zero in expectation for the plain
 * rounding, nearly so for the conditional one) plus the summed noise
 * (variance n (sigma^2 at most) per coordinate), as long as each
 * coordinate of the true integer sum stays inside [-2^(B-1), 2^(B-1));
 * fedc__ddg_gamma() picks gamma so that it does with k standard deviations
 * of headroom.
 *
 * Randomness: the rounding and the noise take their bits from libsodium's
 * randombytes_buf (buffered, wiped after use); the signs of the rotation
 * are public and come from the XChaCha20 keystream of the seed.
 *
 * Errors follow the project's convention: FEDC_ERR_INVALID with a message
 * that names the parameter, FEDC_ERR_NOMEM, FEDC_ERR_NONFINITE for a NaN or
 * infinite input, FEDC_ERR_RANGE for values the integers cannot hold.
 * Nothing keeps state; every function may be called from any thread.
 */
#ifndef FEDC_PRIVACY_DDG_H
#define FEDC_PRIVACY_DDG_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_DDG_SEED_BYTES 32
/* The 16 bytes that open the XChaCha20 nonce of the sign expansion (the
 * round, 8 bytes little-endian, closes it). */
#define FEDC_DDG_SIGN_CTX "fedc ddg signs 1"
/* The largest padded dimension (2^40). */
#define FEDC_DDG_MAX_DIM ((size_t)1 << 40)
/* The largest noise stddev the sampler takes, in grid units. */
#define FEDC_DDG_MAX_SIGMA 1e9
/* How often the conditional rounding redraws before it gives up
 * (FEDC_ERR_RANGE). Each draw fails with probability at most beta. */
#define FEDC_DDG_MAX_ROUNDING_TRIES 1000

/* ---- 1. Padding and the randomized Hadamard rotation ---- */

/* P, the smallest power of two >= d (1 for d <= 1); 0 when it would exceed
 * FEDC_DDG_MAX_DIM. */
size_t fedc__ddg_padded_dim(size_t d);

/* The unnormalised fast Walsh-Hadamard transform, in place: v <- H v for a
 * power of two p (H_1 = [1], H_2p = [[H_p, H_p], [H_p, -H_p]]), O(p log p).
 * H H = p I. Does nothing unless p is a power of two. */
void fedc__ddg_fwht(double *v, size_t p);

/* v[i] *= s_i for i < p, s_i = +1 when bit i of the XChaCha20 keystream
 * (key seed, nonce FEDC_DDG_SIGN_CTX || round little-endian; bit i is bit
 * i % 8 of byte i / 8) is 0, -1 when it is 1: the diagonal D. The same on
 * every platform. */
void fedc__ddg_signs(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p);

/* v <- H D v / sqrt(p) and its inverse v <- D H v / sqrt(p), for a power of
 * two p. Both are orthogonal: they preserve the L2 norm. FEDC_ERR_INVALID
 * when p is not a power of two (or v, seed is NULL). */
int fedc__ddg_rotate(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p, char *err,
                     size_t errlen);
int fedc__ddg_unrotate(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p,
                       char *err, size_t errlen);

/* ---- 2. Sampling and rounding ---- */

/* n samples of the discrete Gaussian N_Z(0, sigma^2), P(x) proportional to
 * exp(-x^2 / (2 sigma^2)) on the integers, with Canonne, Kamath and
 * Steinke's Algorithm 3 (arXiv:2004.00010): discrete Laplace proposals
 * (Algorithm 2) accepted by Bernoulli(exp(-g)) trials (Algorithm 1). The
 * trials of the discrete Laplace stage use exact integer arithmetic; the
 * final acceptance's exponent g = (|Y| - sigma^2/t)^2 / (2 sigma^2) is a
 * double (sigma is one), and its Bernoulli(g / K) trials compare 53 random
 * bits with g / K: an accepted approximation of the reference's rational
 * arithmetic, off by at most about 2^-53 per trial. sigma == 0 gives
 * zeros. FEDC_ERR_INVALID for sigma NaN, < 0 or above FEDC_DDG_MAX_SIGMA. */
int fedc__ddg_sample(double sigma, int64_t *out, size_t n, char *err, size_t errlen);

/* The conditional rounding bound of Kairouz et al. Theorem 1, as
 * distributed_dp's accounting_utils.rounded_l2_norm_bound: for a vector of
 * L2 norm at most l2 (already in grid units, c / gamma) in dimension dim,
 *   beta == 0:  l2 + sqrt(dim)
 *   else:       min(l2 + sqrt(dim),
 *                   sqrt(l2^2 + dim / 4 + sqrt(2 log(1 / beta)) (l2 + sqrt(dim) / 2))).
 * NaN for l2 < 0, dim == 0 or beta outside [0, 1). */
double fedc__ddg_rounded_l2_bound(double l2, double beta, size_t dim);

/* Rounds each z[i] to floor(z[i]) + 1 with probability z[i] - floor(z[i])
 * and to floor(z[i]) otherwise, into out[i], redrawing the whole vector
 * until its L2 norm is <= bound (bound = +inf: one draw). *tries (may be
 * NULL) gets the number of draws. FEDC_ERR_INVALID for a NaN or negative
 * bound, FEDC_ERR_NONFINITE for a non-finite z, FEDC_ERR_RANGE for |z| above
 * 2^52 or after FEDC_DDG_MAX_ROUNDING_TRIES draws over the bound. */
int fedc__ddg_round(const double *z, size_t n, double bound, int64_t *out, unsigned *tries, char *err,
                    size_t errlen);

/* ---- 3. Client encode and server decode ---- */

typedef struct fedc__ddg_params {
    double clip;         /* c: the L2 norm x is clipped to, > 0 */
    double gamma;        /* the grid step: z = x / gamma, > 0 */
    double beta;         /* conditional rounding in [0, 1) (TFF's default: exp(-0.5)); 0: the plain bound */
    double local_stddev; /* sigma: this client's noise stddev in x's units, >= 0 (0: none) */
    unsigned bits;       /* B: outputs are mod 2^B, 1 .. 32 */
} fedc__ddg_params;

/* Checks the parameters: FEDC_ERR_INVALID naming the first bad one; also
 * when (sigma / gamma) exceeds FEDC_DDG_MAX_SIGMA, or when the rounded
 * norm bound c / gamma + sqrt(P) is not below 2^52 (d is the unpadded
 * dimension, >= 1). */
int fedc__ddg_check(const fedc__ddg_params *p, size_t d, char *err, size_t errlen);

/* A client's encoding of x[0 .. d-1] into out[0 .. P-1], P =
 * fedc__ddg_padded_dim(d), steps 1 to 5 above. *rounded_norm (may be NULL)
 * gets the L2 norm of the rounded vector in grid units (before the noise).
 * Errors: those of fedc__ddg_check, FEDC_ERR_NONFINITE for NaN or infinite
 * x, FEDC_ERR_NOMEM, FEDC_ERR_RANGE when the rounding never meets the
 * bound. */
int fedc__ddg_encode(const fedc__ddg_params *p, const float *x, size_t d,
                     const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, uint32_t *out,
                     double *rounded_norm, char *err, size_t errlen);

/* The server's decoding: sum[0 .. P-1] holds the sum of the clients'
 * outputs mod 2^32 (or mod 2^B); each entry is reduced mod 2^B, read as a
 * signed value in [-2^(B-1), 2^(B-1)), multiplied by gamma, and the vector
 * is rotated back; out[0 .. d-1] gets the first d coordinates as floats.
 * Uses p->gamma and p->bits only. */
int fedc__ddg_decode(const fedc__ddg_params *p, const uint32_t *sum, size_t d,
                     const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, float *out, char *err,
                     size_t errlen);

/* The signed value of v mod 2^bits in [-2^(bits-1), 2^(bits-1)). */
int64_t fedc__ddg_signed(uint32_t v, unsigned bits);

/* ---- 4. Accounting ---- */

typedef struct fedc__ddg_accounting {
    double gamma;        /* grid step, > 0 */
    double local_stddev; /* sigma: each client's noise stddev (x's units), > 0 */
    uint64_t clients;    /* n: the clients whose noise reaches the sum (the survivors), >= 1 */
    double l2_sens;      /* Delta_2 in x's units: the clip c (rounding on) or the sensitivity itself */
    double l1_sens;      /* Delta_1 in x's units; 0: l2_sens * sqrt(dim), as the reference */
    double beta;         /* the conditional rounding's beta, [0, 1) */
    size_t dim;          /* the (padded) dimension P, >= 1 */
    int rounding;        /* nonzero: inflate l2_sens by the rounding bound (the reference's default) */
} fedc__ddg_accounting;

/* tau of Kairouz et al. Theorem 1, as in ddgauss_epsilon:
 *   10 * sum_{k=1}^{n-1} exp(-2 pi^2 (sigma / gamma)^2 k / (k + 1)).
 * 0 for n == 1. */
double fedc__ddg_tau(double local_stddev, double gamma, uint64_t clients);

/* The RDP of one round of the distributed discrete Gaussian (no sampling
 * amplification, q = 1) at each of the n orders (> 1), times `steps`
 * (composition over rounds), into rdp[0 .. n-1]: distributed_dp's
 * accounting_utils.ddgauss_epsilon and compute_rdp_dgaussian (Kairouz et
 * al. Proposition 14, Eq. 17, with tau of Theorem 1). With
 *   L2 = l2_sens, L1 = l1_sens (or L2 sqrt(dim)); when rounding:
 *   L2 = fedc__ddg_rounded_l2_bound(L2 / gamma, beta, dim) gamma and
 *   L1 = L2 min(sqrt(dim), L2 / gamma)   (accounting_utils.rounded_l1_norm_bound)
 *   s2 = L2 / (sqrt(n) sigma), s1 = L1 / (sqrt(n) sigma):
 *   rdp(a) = min(a/2 s2^2 + tau dim,
 *                a/2 (s2^2 + 2 s1 tau + tau^2 dim),
 *                a/2 (s2 + sqrt(dim) tau)^2).
 * The reference truncates each order to an integer (its subsampled bound
 * needs integer orders); with q = 1 the bound holds at every real order
 * >= 1, so the orders are used as given. */
int fedc__ddg_rdp(const fedc__ddg_accounting *a, uint64_t steps, const double *orders, size_t n, double *rdp,
                  char *err, size_t errlen);

/* epsilon at delta after `steps` rounds: fedc__ddg_rdp then
 * fedc_rdp_epsilon, through fedc__rdp_mechanism_epsilon (privacy/rdp.h) as
 * fedc_privacy_epsilon (orders NULL: fedc_rdp_default_orders). *order (may
 * be NULL) gets the order that gave it. */
int fedc__ddg_epsilon(const fedc__ddg_accounting *a, uint64_t steps, double delta, const double *orders,
                      size_t n, double *epsilon, double *order, char *err, size_t errlen);

/* ---- 5. Parameters ---- */

/* The grid step for B bits, n clients, clip c, padded dimension P, each
 * client's noise stddev sigma and k standard deviations of headroom (the
 * reference uses 4 for DDG; rho the rotation's flatness, 1 for the
 * Hadamard rotation), as accounting_utils.heuristic_scale_factor (Kairouz
 * et al. Sections 4.2 and 4.4): the sum is taken as subgaussian with
 * per-coordinate variance rho / P (c n)^2 + n (gamma^2 / 4 + sigma^2), and
 * 2^B = 2 k sqrt(that) / gamma solved for gamma:
 *   gamma = 2 k sqrt(rho / P c^2 n^2 + n sigma^2) / sqrt(2^(2B) - n k^2).
 * For a noise multiplier z (central stddev z c): sigma = z c / sqrt(n).
 * FEDC_ERR_INVALID naming the bad parameter, including 2^(2B) <= n k^2
 * (the bit width is too small for n and k). */
int fedc__ddg_gamma(unsigned bits, uint64_t clients, double clip, size_t dim, double local_stddev, double k,
                    double rho, double *gamma, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
