/* The Distributed Discrete Gaussian mechanism (src/privacy/ddg.h): Kairouz,
 * Liu, Steinke 2021 (arXiv:2102.06387), after the reference implementation
 * in google-research/federated distributed_dp (accounting_utils.py) and
 * TensorFlow Federated / tensorflow_privacy (DistributedDpSumFactory,
 * DistributedDiscreteGaussianSumQuery); the discrete Gaussian sampler of
 * Canonne, Kamath, Steinke 2020 (arXiv:2004.00010, Algorithms 1 to 3). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "fedc/privacy.h"
#include "privacy/ddg.h"
#include "privacy/rdp.h"

/* ---- Random bits: libsodium's randombytes_buf, a block at a time ---- */

/* The refills start at 16 words and double up to 512 (4 KiB), so that a
 * small job (a short rounding) does not draw kilobytes it never uses. */
enum { RNG_WORDS = 512, RNG_FIRST = 16 };

typedef struct rng {
    uint64_t buf[RNG_WORDS];
    size_t pos, len;
} rng;

static void rng_init(rng *r)
{
    r->pos = r->len = 0;
}

/* The bits were secret until used (they decide the noise): wipe them. */
static void rng_wipe(rng *r)
{
    sodium_memzero(r, sizeof *r);
}

static uint64_t rng_u64(rng *r)
{
    if (r->pos == r->len) {
        r->len = r->len == 0 ? RNG_FIRST : r->len < RNG_WORDS ? 2 * r->len : RNG_WORDS;
        randombytes_buf(r->buf, r->len * sizeof r->buf[0]);
        r->pos = 0;
    }
    return r->buf[r->pos++];
}

/* Uniform on {0, ..., n - 1}, n >= 1, without bias: words below 2^64 mod n
 * are rejected (as randombytes_uniform does for 32 bits). */
static uint64_t rng_below(rng *r, uint64_t n)
{
    uint64_t min = (0 - n) % n;
    for (;;) {
        uint64_t x = rng_u64(r);
        if (x >= min) return x % n;
    }
}

/* Uniform on [0, 1) with 53 random bits. */
static double rng_unit(rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1p-53;
}

/* ---- Bernoulli(exp(-g)), Canonne, Kamath, Steinke 2020, Algorithm 1 ---- */

/* Bernoulli(exp(-num / den)) for 0 <= num <= den, den >= 1, exactly: K = 1;
 * while Bernoulli(num / (den K)) succeeds, K++; the result is K odd. A
 * Bernoulli(num / m) is "a uniform integer below m is below num". K reaches
 * k with probability at most 1 / (k - 1)!, so den K (den <= 1e9 + 1 here)
 * never overflows in practice; if it would, the loop stops as if the trial
 * had failed. */
static int bern_exp_le1(rng *r, uint64_t num, uint64_t den)
{
    if (num == 0) return 1;
    uint64_t k = 1;
    for (;;) {
        if (den > UINT64_MAX / k) break;
        uint64_t m = den * k;
        if (num < m && rng_below(r, m) >= num) break; /* num >= m: probability 1, no bits needed */
        k++;
    }
    return (int)(k & 1);
}

/* Bernoulli(exp(-num / den)) for any num, den >= 1: floor(num / den) trials
 * of Bernoulli(exp(-1)) that must all succeed, then one of the remainder. */
static int bern_exp_rat(rng *r, uint64_t num, uint64_t den)
{
    for (uint64_t i = num / den; i > 0; i--)
        if (!bern_exp_le1(r, 1, 1)) return 0;
    return bern_exp_le1(r, num % den, den);
}

/* Bernoulli(exp(-g)) for a finite g >= 0 held as a double: the same
 * algorithm, the fractional part's trials Bernoulli(f / K) taken as
 * "53 random bits, read as a number in [0, 1), are below f / K" (the
 * approximation documented in ddg.h). */
static int bern_exp_dbl(rng *r, double g)
{
    double whole = floor(g), f = g - whole;
    for (double i = 0; i < whole; i++)
        if (!bern_exp_le1(r, 1, 1)) return 0;
    uint64_t k = 1;
    while (rng_unit(r) < f / (double)k) k++;
    return (int)(k & 1);
}

/* ---- The discrete Laplace and Gaussian samplers (Algorithms 2 and 3) ---- */

/* The discrete Laplace of scale t (P(x) proportional to exp(-|x| / t)),
 * Algorithm 2 with s = 1: U uniform below t, kept with probability
 * exp(-U / t); V geometric (the count of Bernoulli(exp(-1)) successes);
 * X = U + t V; a random sign, rejecting the negative zero. */
static int64_t dlaplace(rng *r, uint64_t t)
{
    for (;;) {
        uint64_t u = rng_below(r, t);
        if (!bern_exp_rat(r, u, t)) continue;
        uint64_t v = 0;
        while (bern_exp_le1(r, 1, 1)) v++;
        if (v > (UINT64_MAX >> 2) / t) continue; /* beyond 2^62: probability exp(-2^62 / t) */
        uint64_t x = u + t * v;
        int negative = (int)(rng_u64(r) >> 63);
        if (negative && x == 0) continue;
        return negative ? -(int64_t)x : (int64_t)x;
    }
}

/* The discrete Gaussian N_Z(0, sigma^2), sigma > 0, Algorithm 3: with
 * t = floor(sigma) + 1, a discrete Laplace Y of scale t is accepted with
 * probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)). */
static int64_t dgauss(rng *r, double sigma)
{
    uint64_t t = (uint64_t)floor(sigma) + 1;
    double s2 = sigma * sigma, shift = s2 / (double)t;
    if (!(s2 >= DBL_MIN)) return 0; /* P(x != 0) < exp(-1 / (2 sigma^2)) = 0 in double */
    for (;;) {
        int64_t y = dlaplace(r, t);
        double a = fabs((double)y) - shift;
        if (bern_exp_dbl(r, a * a / (2.0 * s2))) return y;
    }
}

int fedc__ddg_sample(double sigma, int64_t *out, size_t n, char *err, size_t errlen)
{
    if (isnan(sigma) || sigma < 0.0 || sigma > FEDC_DDG_MAX_SIGMA)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "sigma: %g is not in [0, %g]", sigma,
                              FEDC_DDG_MAX_SIGMA);
    if (!out && n) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "out: the output array is NULL");
    if (sigma == 0.0) {
        for (size_t i = 0; i < n; i++) out[i] = 0;
        return FEDC_OK;
    }
    rng r;
    rng_init(&r);
    for (size_t i = 0; i < n; i++) out[i] = dgauss(&r, sigma);
    rng_wipe(&r);
    return FEDC_OK;
}

/* ---- Padding and the randomized Hadamard rotation ---- */

static int is_pow2(size_t p)
{
    return p && !(p & (p - 1));
}

size_t fedc__ddg_padded_dim(size_t d)
{
    size_t p = 1;
    while (p < d) {
        if (p >= FEDC_DDG_MAX_DIM) return 0;
        p <<= 1;
    }
    return p <= FEDC_DDG_MAX_DIM ? p : 0;
}

void fedc__ddg_fwht(double *v, size_t p)
{
    if (!v || !is_pow2(p)) return;
    for (size_t h = 1; h < p; h <<= 1)
        for (size_t i = 0; i < p; i += 2 * h)
            for (size_t j = i; j < i + h; j++) {
                double a = v[j], b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
}

void fedc__ddg_signs(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p)
{
    /* 512 keystream bytes (8 XChaCha20 blocks) give the signs of 4096 coordinates. */
    enum { CHUNK = 512, BLOCK = 64 };
    uint8_t nonce[crypto_stream_xchacha20_NONCEBYTES];
    memcpy(nonce, FEDC_DDG_SIGN_CTX, 16);
    for (int b = 0; b < 8; b++) nonce[16 + b] = (uint8_t)(round >> (8 * b));
    static const uint8_t zeros[CHUNK];
    uint8_t ks[CHUNK];
    uint64_t ic = 0;
    for (size_t at = 0; at < p; at += (size_t)CHUNK * 8, ic += CHUNK / BLOCK) {
        crypto_stream_xchacha20_xor_ic(ks, zeros, CHUNK, nonce, ic, seed);
        size_t n = p - at < (size_t)CHUNK * 8 ? p - at : (size_t)CHUNK * 8;
        for (size_t i = 0; i < n; i++)
            if ((ks[i >> 3] >> (i & 7)) & 1) v[at + i] = -v[at + i];
    }
}

static int check_rotation(const uint8_t *seed, const double *v, size_t p, char *err, size_t errlen)
{
    if (!is_pow2(p) || p > FEDC_DDG_MAX_DIM)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "p: %zu is not a power of two up to 2^40", p);
    if (!seed) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "seed: the rotation seed is NULL");
    if (!v) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "v: the vector is NULL");
    return FEDC_OK;
}

static void scale_by(double *v, size_t p, double s)
{
    for (size_t i = 0; i < p; i++) v[i] *= s;
}

int fedc__ddg_rotate(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p, char *err,
                     size_t errlen)
{
    int rc = check_rotation(seed, v, p, err, errlen);
    if (rc) return rc;
    fedc__ddg_signs(seed, round, v, p);
    fedc__ddg_fwht(v, p);
    scale_by(v, p, 1.0 / sqrt((double)p));
    return FEDC_OK;
}

int fedc__ddg_unrotate(const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, double *v, size_t p,
                       char *err, size_t errlen)
{
    /* (H D / sqrt p)^-1 = D H / sqrt p: H is symmetric with H H = p I, D D = I. */
    int rc = check_rotation(seed, v, p, err, errlen);
    if (rc) return rc;
    fedc__ddg_fwht(v, p);
    scale_by(v, p, 1.0 / sqrt((double)p));
    fedc__ddg_signs(seed, round, v, p);
    return FEDC_OK;
}

/* ---- Conditional randomized rounding ---- */

double fedc__ddg_rounded_l2_bound(double l2, double beta, size_t dim)
{
    /* Kairouz et al. 2021, Theorem 1; distributed_dp accounting_utils.rounded_l2_norm_bound. */
    if (isnan(l2) || l2 < 0.0 || dim == 0 || isnan(beta) || beta < 0.0 || beta >= 1.0) return NAN;
    double sd = sqrt((double)dim), bound1 = l2 + sd;
    if (beta == 0.0) return bound1;
    double sq2 = l2 * l2 + 0.25 * (double)dim + sqrt(2.0 * log(1.0 / beta)) * (l2 + 0.5 * sd);
    double bound2 = sqrt(sq2);
    return bound1 < bound2 ? bound1 : bound2;
}

#define MAX_GRID 0x1p52 /* |values| on the grid stay below 2^52: exact in double and int64 */

int fedc__ddg_round(const double *z, size_t n, double bound, int64_t *out, unsigned *tries, char *err,
                    size_t errlen)
{
    if (isnan(bound) || bound < 0.0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bound: %g is not >= 0", bound);
    if (n && (!z || !out))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "z, out: the arrays must not be NULL");
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(z[i]))
            return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "z: value %zu is not finite", i);
        if (fabs(z[i]) >= MAX_GRID)
            return fedc_set_error(err, errlen, FEDC_ERR_RANGE, "z: value %zu (%g) is beyond 2^52", i, z[i]);
    }
    double bound2 = bound * bound;
    rng r;
    rng_init(&r);
    unsigned t;
    int ok = 0;
    for (t = 1; t <= FEDC_DDG_MAX_ROUNDING_TRIES && !ok; t++) {
        double sq = 0.0;
        for (size_t i = 0; i < n; i++) {
            double f = floor(z[i]);
            int64_t v = (int64_t)f + (rng_unit(&r) < z[i] - f);
            out[i] = v;
            sq += (double)v * (double)v;
        }
        ok = isinf(bound) || sq <= bound2;
    }
    rng_wipe(&r);
    if (tries) *tries = t - 1;
    if (!ok)
        return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                              "bound: %d roundings all exceeded the norm bound %g (is beta too small?)",
                              FEDC_DDG_MAX_ROUNDING_TRIES, bound);
    return FEDC_OK;
}

/* ---- Encode and decode ---- */

int fedc__ddg_check(const fedc__ddg_params *p, size_t d, char *err, size_t errlen)
{
    if (!p) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "params: NULL");
    if (!(p->clip > 0.0) || !isfinite(p->clip))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "clip: %g is not a positive finite number",
                              p->clip);
    if (!(p->gamma > 0.0) || !isfinite(p->gamma))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "gamma: %g is not a positive finite number",
                              p->gamma);
    if (!(p->beta >= 0.0 && p->beta < 1.0))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "beta: %g is not in [0, 1)", p->beta);
    if (!(p->local_stddev >= 0.0) || !isfinite(p->local_stddev))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "local_stddev: %g is not a finite number >= 0",
                              p->local_stddev);
    if (p->local_stddev / p->gamma > FEDC_DDG_MAX_SIGMA)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "local_stddev: %g / gamma %g exceeds %g grid steps", p->local_stddev, p->gamma,
                              FEDC_DDG_MAX_SIGMA);
    if (p->bits < 1 || p->bits > 32)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bits: %u is not in 1 .. 32", p->bits);
    if (d == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "d: the dimension must be >= 1");
    size_t pd = fedc__ddg_padded_dim(d);
    if (!pd) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "d: %zu pads beyond 2^40 coordinates", d);
    if (p->clip / p->gamma + sqrt((double)pd) >= MAX_GRID)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "gamma: %g is too small for clip %g (the grid would exceed 2^52 steps)",
                              p->gamma, p->clip);
    return FEDC_OK;
}

static uint32_t mask_of(unsigned bits)
{
    return bits >= 32 ? UINT32_MAX : (((uint32_t)1 << bits) - 1);
}

int64_t fedc__ddg_signed(uint32_t v, unsigned bits)
{
    if (bits < 1 || bits > 32) bits = 32;
    int64_t u = (int64_t)(v & mask_of(bits)), half = (int64_t)1 << (bits - 1);
    return u >= half ? u - 2 * half : u;
}

int fedc__ddg_encode(const fedc__ddg_params *p, const float *x, size_t d,
                     const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, uint32_t *out,
                     double *rounded_norm, char *err, size_t errlen)
{
    int rc = fedc__ddg_check(p, d, err, errlen);
    if (rc) return rc;
    if (!x || !out || !seed)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "x, seed, out: the arrays must not be NULL");
    size_t pd = fedc__ddg_padded_dim(d);
    double sq = 0.0;
    for (size_t i = 0; i < d; i++) sq += (double)x[i] * (double)x[i];
    if (!isfinite(sq))
        return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "x: the vector holds NaN or infinite values");
    double *v = calloc(pd, sizeof *v);
    int64_t *z = malloc(pd * sizeof *z);
    if (!v || !z) {
        free(v);
        free(z);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for %zu coordinates", pd);
    }
    /* 1. Clip to L2 norm c, pad with zeros. */
    double norm = sqrt(sq), scale = norm > p->clip ? p->clip / norm : 1.0;
    for (size_t i = 0; i < d; i++) v[i] = (double)x[i] * scale;
    /* 2. Rotate, 3. scale to the grid and round conditionally. */
    rc = fedc__ddg_rotate(seed, round, v, pd, err, errlen);
    if (rc == FEDC_OK) {
        scale_by(v, pd, 1.0 / p->gamma);
        double bound = fedc__ddg_rounded_l2_bound(p->clip / p->gamma, p->beta, pd);
        rc = fedc__ddg_round(v, pd, bound, z, NULL, err, errlen);
    }
    if (rc == FEDC_OK && rounded_norm) {
        double s = 0.0;
        for (size_t i = 0; i < pd; i++) s += (double)z[i] * (double)z[i];
        *rounded_norm = sqrt(s);
    }
    /* 4. Discrete Gaussian noise in grid units, 5. reduce mod 2^B. */
    if (rc == FEDC_OK && p->local_stddev > 0.0) {
        double sigma = p->local_stddev / p->gamma;
        rng r;
        rng_init(&r);
        for (size_t i = 0; i < pd; i++) z[i] += dgauss(&r, sigma);
        rng_wipe(&r);
    }
    if (rc == FEDC_OK) {
        uint32_t m = mask_of(p->bits);
        for (size_t i = 0; i < pd; i++) out[i] = (uint32_t)((uint64_t)z[i] & m);
    }
    /* The clipped and rounded values, unnoised, are the client's secret. */
    sodium_memzero(v, pd * sizeof *v);
    sodium_memzero(z, pd * sizeof *z);
    free(v);
    free(z);
    return rc;
}

int fedc__ddg_decode(const fedc__ddg_params *p, const uint32_t *sum, size_t d,
                     const uint8_t seed[FEDC_DDG_SEED_BYTES], uint64_t round, float *out, char *err,
                     size_t errlen)
{
    if (!p) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "params: NULL");
    if (!(p->gamma > 0.0) || !isfinite(p->gamma))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "gamma: %g is not a positive finite number",
                              p->gamma);
    if (p->bits < 1 || p->bits > 32)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bits: %u is not in 1 .. 32", p->bits);
    if (d == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "d: the dimension must be >= 1");
    size_t pd = fedc__ddg_padded_dim(d);
    if (!pd) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "d: %zu pads beyond 2^40 coordinates", d);
    if (!sum || !out || !seed)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "sum, seed, out: the arrays must not be NULL");
    double *v = malloc(pd * sizeof *v);
    if (!v) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for %zu coordinates", pd);
    for (size_t i = 0; i < pd; i++) v[i] = (double)fedc__ddg_signed(sum[i], p->bits) * p->gamma;
    int rc = fedc__ddg_unrotate(seed, round, v, pd, err, errlen);
    if (rc == FEDC_OK)
        for (size_t i = 0; i < d; i++) out[i] = (float)v[i];
    free(v);
    return rc;
}

/* ---- Accounting ---- */

double fedc__ddg_tau(double local_stddev, double gamma, uint64_t clients)
{
    /* Kairouz et al. Theorem 1; distributed_dp accounting_utils.ddgauss_epsilon. */
    double s = local_stddev / gamma, c = -2.0 * M_PI * M_PI * s * s, tau = 0.0;
    if (exp(c) == 0.0) return 0.0; /* every term, at most exp(c), underflows */
    for (uint64_t k = 1; k < clients; k++) tau += exp(c * ((double)k / (double)(k + 1)));
    return 10.0 * tau;
}

static int check_accounting(const fedc__ddg_accounting *a, char *err, size_t errlen)
{
    if (!a) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "accounting: NULL");
    if (!(a->gamma > 0.0) || !isfinite(a->gamma))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "gamma: %g is not a positive finite number",
                              a->gamma);
    if (!(a->local_stddev > 0.0) || !isfinite(a->local_stddev))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "local_stddev: %g is not a positive finite number", a->local_stddev);
    if (a->clients == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "clients: at least one client's noise is needed");
    if (!(a->l2_sens > 0.0) || !isfinite(a->l2_sens))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "l2_sens: %g is not a positive finite number",
                              a->l2_sens);
    if (!(a->l1_sens >= 0.0) || !isfinite(a->l1_sens))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "l1_sens: %g is not a finite number >= 0",
                              a->l1_sens);
    if (!(a->beta >= 0.0 && a->beta < 1.0))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "beta: %g is not in [0, 1)", a->beta);
    if (a->dim == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "dim: the dimension must be >= 1");
    return FEDC_OK;
}

int fedc__ddg_rdp(const fedc__ddg_accounting *a, uint64_t steps, const double *orders, size_t n, double *rdp,
                  char *err, size_t errlen)
{
    int rc = check_accounting(a, err, errlen);
    if (rc) return rc;
    if (!orders || n == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "orders: at least one RDP order is needed");
    for (size_t k = 0; k < n; k++)
        if (isnan(orders[k]) || orders[k] <= 1.0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "orders: order %g (index %zu) must be > 1",
                                  orders[k], k);
    if (!rdp) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "rdp: the output array is NULL");

    /* ddgauss_epsilon: the sensitivities, inflated by the rounding. */
    double dim = (double)a->dim, sd = sqrt(dim);
    double l2 = a->l2_sens, l1 = a->l1_sens > 0.0 ? a->l1_sens : a->l2_sens * sd;
    if (a->rounding) {
        double l2g = fedc__ddg_rounded_l2_bound(l2 / a->gamma, a->beta, a->dim);
        l2 = l2g * a->gamma;
        l1 = l2 * (sd < l2g ? sd : l2g); /* rounded_l1_norm_bound(l2g, dim) * gamma */
    }
    double tau = fedc__ddg_tau(a->local_stddev, a->gamma, a->clients);
    double central = sqrt((double)a->clients) * a->local_stddev;
    double s1 = l1 / central, s2 = l2 / central;
    /* compute_rdp_dgaussian: Kairouz et al. Proposition 14 / Eq. 17. */
    for (size_t k = 0; k < n; k++) {
        double o = orders[k], r;
        if (isinf(o)) {
            r = INFINITY;
        } else {
            double t1 = o / 2.0 * s2 * s2 + tau * dim;
            double t2 = o / 2.0 * (s2 * s2 + 2.0 * s1 * tau + tau * tau * dim);
            double t3 = o / 2.0 * (s2 + sd * tau) * (s2 + sd * tau);
            r = fmin(t1, fmin(t2, t3));
        }
        rdp[k] = steps == 0 ? 0.0 : r * (double)steps;
    }
    return FEDC_OK;
}

static int ddg_rdp(const void *mech, uint64_t steps, const double *orders, size_t n, double *rdp, char *err,
                   size_t errlen)
{
    return fedc__ddg_rdp(mech, steps, orders, n, rdp, err, errlen);
}

int fedc__ddg_epsilon(const fedc__ddg_accounting *a, uint64_t steps, double delta, const double *orders,
                      size_t n, double *epsilon, double *order, char *err, size_t errlen)
{
    return fedc__rdp_mechanism_epsilon(ddg_rdp, a, steps, delta, orders, n, epsilon, order, err, errlen);
}

/* ---- Parameters ---- */

int fedc__ddg_gamma(unsigned bits, uint64_t clients, double clip, size_t dim, double local_stddev, double k,
                    double rho, double *gamma, char *err, size_t errlen)
{
    if (bits < 1 || bits > 32)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bits: %u is not in 1 .. 32", bits);
    if (clients == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "clients: must be >= 1");
    if (!(clip > 0.0) || !isfinite(clip))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "clip: %g is not a positive finite number",
                              clip);
    if (dim == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "dim: the dimension must be >= 1");
    if (!(local_stddev >= 0.0) || !isfinite(local_stddev))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "local_stddev: %g is not a finite number >= 0",
                              local_stddev);
    if (!(k > 0.0) || !isfinite(k))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "k: %g is not a positive finite number", k);
    if (!(rho > 0.0) || !isfinite(rho))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "rho: %g is not a positive finite number", rho);
    if (!gamma) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "gamma: the output is NULL");
    /* accounting_utils.heuristic_scale_factor, gamma = 1 / scale_factor. */
    double n = (double)clients, room = ldexp(1.0, 2 * (int)bits) - n * k * k;
    if (!(room > 0.0))
        return fedc_set_error(
            err, errlen, FEDC_ERR_INVALID,
            "bits: %u bits cannot hold %llu clients' sum with k = %g stddevs (2^2B <= n k^2)", bits,
            (unsigned long long)clients, k);
    double var = rho / (double)dim * clip * clip * n * n + n * local_stddev * local_stddev;
    *gamma = 2.0 * k * sqrt(var) / sqrt(room);
    return FEDC_OK;
}
