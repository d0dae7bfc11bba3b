/* Shamir secret sharing over GF(2^8), byte by byte, for secure aggregation.
 *
 * Every byte of a secret is the constant term of its own random polynomial
 * of degree t - 1 over GF(2^8) (the AES field, reduction polynomial
 * x^8 + x^4 + x^3 + x + 1 = 0x11b); share i (i = 0 .. k-1) holds every
 * polynomial's value at x = i + 1. Any t shares give the secret back by
 * Lagrange interpolation at 0; fewer than t reveal nothing about it (any
 * t - 1 shares are uniformly distributed whatever the secret).
 *
 * The field arithmetic is constant time: no branch and no memory address
 * depends on a secret byte (multiplication is shift-and-xor under masks,
 * the inverse is x^254 by a fixed chain of multiplications). Only the
 * x-coordinates, which are public, decide anything.
 *
 * The threshold is the caller's to enforce: with fewer than t shares,
 * combine returns an unrelated (uniformly random) value, not an error. */
#ifndef FEDC_SECAGG_SHAMIR_H
#define FEDC_SECAGG_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most shares a secret can be split into: the non-zero field elements. */
#define FEDC_SHAMIR_MAX_SHARES 255

/* a * b in GF(2^8) mod 0x11b, in constant time. */
uint8_t fedc__gf256_mul(uint8_t a, uint8_t b);
/* The multiplicative inverse a^254 in constant time (0 for a = 0). */
uint8_t fedc__gf256_inv(uint8_t a);

/* Splits the len-byte secret into k shares of len bytes each with
 * threshold t (1 <= t <= k <= FEDC_SHAMIR_MAX_SHARES): share i is written
 * at shares + i * len and has x-coordinate i + 1. The polynomials'
 * coefficients come from randombytes_buf and are wiped before returning.
 * len = 0 is allowed and writes nothing (the pointers may then be NULL).
 * t = 1 makes every share a copy of the secret. FEDC_ERR_INVALID names a
 * bad t or k, or a NULL pointer; FEDC_ERR_TOO_LARGE when k * len does not
 * fit in a size_t. Nothing is written on failure. */
int fedc__shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned k, uint8_t *shares, char *err,
                       size_t errlen);

/* Recovers the secret from n shares (1 <= n <= FEDC_SHAMIR_MAX_SHARES):
 * share j is at shares + j * len and has x-coordinate xs[j] (as split
 * numbers them, share i has x = i + 1). The x-coordinates must be non-zero
 * and distinct: FEDC_ERR_INVALID names a zero or repeated one (and a bad n
 * or a NULL pointer) and nothing is written. With n >= t shares of one
 * split the result is the secret; any extra shares beyond t are consistent
 * and change nothing. len = 0 is allowed. */
int fedc__shamir_combine(const uint8_t *shares, const uint8_t *xs, unsigned n, size_t len, uint8_t *secret,
                         char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
