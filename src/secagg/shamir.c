/* Shamir secret sharing over GF(2^8) (shamir.h): constant-time field
 * arithmetic, splitting with random polynomials from libsodium's
 * generator, and Lagrange interpolation at 0. */
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/shamir.h"

/* Eight rounds of shift-and-xor. Each bit of b selects a through a mask
 * (0x00 or 0xff) rather than a branch, and the reduction by 0x11b when a's
 * top bit is shifted out is masked the same way. */
uint8_t fedc__gf256_mul(uint8_t a, uint8_t b)
{
    unsigned r = 0, x = a, y = b;
    for (int i = 0; i < 8; i++) {
        r ^= (0u - (y & 1u)) & x;
        y >>= 1;
        x = (x << 1) ^ ((0u - (x >> 7)) & 0x11bu);
    }
    return (uint8_t)r;
}

/* a^254 = a^-1 (a^255 = 1 for a != 0), and 0 for 0. The exponent is
 * fixed, so the chain of squarings and multiplications is too:
 * 254 = 0b11111110. */
uint8_t fedc__gf256_inv(uint8_t a)
{
    uint8_t a2 = fedc__gf256_mul(a, a);  /* a^2 */
    uint8_t r = a2;                      /* a^2 */
    uint8_t p = fedc__gf256_mul(a2, a2); /* a^4 */
    for (int i = 0; i < 6; i++) {        /* r = a^(2+4+...+128) = a^254 */
        r = fedc__gf256_mul(r, p);
        p = fedc__gf256_mul(p, p);
    }
    return r;
}

/* Bytes of the secret handled at a time: the random coefficients for a
 * chunk, (t - 1) * CHUNK bytes, live on the stack. */
enum { CHUNK = 64 };

int fedc__shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned k, uint8_t *shares, char *err,
                       size_t errlen)
{
    if (k < 1 || k > FEDC_SHAMIR_MAX_SHARES)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "shamir: the number of shares k must be 1..%d, got %u", FEDC_SHAMIR_MAX_SHARES,
                              k);
    if (t < 1 || t > k)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "shamir: the threshold t must be 1..k (k = %u), got %u", k, t);
    if (len == 0) return FEDC_OK;
    if (!secret || !shares)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "shamir: split needs a secret and a shares buffer");
    if (len > SIZE_MAX / k)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                              "shamir: %u shares of %zu bytes do not fit in memory", k, len);

    uint8_t coef[(FEDC_SHAMIR_MAX_SHARES - 1) * CHUNK]; /* coef[d * CHUNK + j]: x^(d+1) of byte j */
    unsigned deg = t - 1;
    for (size_t at = 0; at < len; at += CHUNK) {
        size_t m = len - at < CHUNK ? len - at : CHUNK;
        if (deg) randombytes_buf(coef, (size_t)deg * CHUNK);
        for (unsigned i = 0; i < k; i++) {
            uint8_t x = (uint8_t)(i + 1);
            uint8_t *out = shares + (size_t)i * len + at;
            for (size_t j = 0; j < m; j++) {
                /* Horner from the highest coefficient down to the secret. */
                uint8_t y = 0;
                for (unsigned d = deg; d > 0; d--)
                    y = fedc__gf256_mul(y, x) ^ coef[(size_t)(d - 1) * CHUNK + j];
                out[j] = (uint8_t)(fedc__gf256_mul(y, x) ^ secret[at + j]);
            }
        }
    }
    sodium_memzero(coef, sizeof coef);
    return FEDC_OK;
}

int fedc__shamir_combine(const uint8_t *shares, const uint8_t *xs, unsigned n, size_t len, uint8_t *secret,
                         char *err, size_t errlen)
{
    if (n < 1 || n > FEDC_SHAMIR_MAX_SHARES)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "shamir: combine needs 1..%d shares, got %u",
                              FEDC_SHAMIR_MAX_SHARES, n);
    if (!xs) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "shamir: combine needs the x-coordinates");
    /* The x-coordinates are public: checking them may branch. */
    int seen[256];
    for (int v = 0; v < 256; v++) seen[v] = -1;
    for (unsigned j = 0; j < n; j++) {
        if (xs[j] == 0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "shamir: share %u has x-coordinate 0 (that is where the secret is)", j);
        if (seen[xs[j]] >= 0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "shamir: shares %d and %u have the same x-coordinate %u", seen[xs[j]], j,
                                  (unsigned)xs[j]);
        seen[xs[j]] = (int)j;
    }
    if (len == 0) return FEDC_OK;
    if (!shares || !secret)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "shamir: combine needs the shares and a secret buffer");
    if (len > SIZE_MAX / n)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                              "shamir: %u shares of %zu bytes do not fit in memory", n, len);

    /* Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j), where
     * subtraction is xor. */
    uint8_t lag[FEDC_SHAMIR_MAX_SHARES];
    for (unsigned j = 0; j < n; j++) {
        uint8_t num = 1, den = 1;
        for (unsigned m = 0; m < n; m++) {
            if (m == j) continue;
            num = fedc__gf256_mul(num, xs[m]);
            den = fedc__gf256_mul(den, (uint8_t)(xs[m] ^ xs[j]));
        }
        lag[j] = fedc__gf256_mul(num, fedc__gf256_inv(den));
    }
    for (size_t b = 0; b < len; b++) {
        uint8_t acc = 0;
        for (unsigned j = 0; j < n; j++) acc ^= fedc__gf256_mul(lag[j], shares[(size_t)j * len + b]);
        secret[b] = acc;
    }
    return FEDC_OK;
}
