/* Masking for secure aggregation (SecAgg, Bonawitz et al. 2017; SecAgg+,
 * Bell et al. 2020): fixed-point quantisation of updates into Z_{2^32},
 * pairwise keys from X25519, and masks expanded from 32-byte seeds.
 *
 * Quantisation with range R and B bits (M = 2^B - 1):
 *
 *     q = round((clip(x, -R, R) + R) / (2R) * M)        in 0 .. M
 *
 * (round half up; NaN is taken as 0). The server adds `count` such vectors
 * mod 2^32; as long as count * M < 2^32 (fedc__secagg_check_params) the
 * true sum S never wraps, so the masked sum gives S exactly and
 *
 *     mean = S / count / M * 2R - R
 *
 * is the mean of the quantised values, within R / M of the mean of the
 * clipped inputs (each value is off by at most half a step, R / M).
 *
 * Masks: client i adds to its quantised vector a self mask PRG(b_i) and,
 * for every other client j, the pairwise mask PRG(s_ij), added when i < j
 * and subtracted when i > j, all mod 2^32. The pairwise masks cancel in the
 * sum of all clients; the server removes the self masks from the sum once
 * it has reconstructed the b_i (Shamir, shamir.h). s_ij is
 * fedc__secagg_agree() of i's and j's X25519 keys, the same on both sides.
 * PRG(seed) for a round is fedc__secagg_expand(): the AES-128-CTR
 * keystream under the seed, read as little-endian uint32, so every
 * platform expands a seed to the same mask. AES rather than ChaCha20
 * because the CPUs fedc runs on have AES instructions: 3.2 times the
 * throughput of libsodium's XChaCha20 on the CI machine, 80% of raw
 * AES-128-CTR (docs/benchmarks.md). */
#ifndef FEDC_SECAGG_MASKING_H
#define FEDC_SECAGG_MASKING_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_SECAGG_KEY_BYTES  32 /* X25519 public and secret keys, seeds, pairwise keys */
#define FEDC_SECAGG_MAX_BITS   31
#define FEDC_SECAGG_AGREE_CTX  "fedc secagg v1 pairwise mask key" /* 32 bytes: the hash's key */
#define FEDC_SECAGG_EXPAND_CTX "fedc secagg mask"                 /* hashed with the seed into the mask key */

/* Checks a quantisation for `count` clients: 0 < range <= FLT_MAX (finite),
 * 1 <= bits <= 31, count >= 1 and count * (2^bits - 1) < 2^32 so that the
 * sum cannot wrap. FEDC_ERR_INVALID with a message naming the parameter
 * (and, for a sum that could wrap, the largest bits that would do). */
int fedc__secagg_check_params(double range, unsigned bits, unsigned count, char *err, size_t errlen);

/* q[i] = round((clip(x[i]) + range) / (2 range) * (2^bits - 1)), as above;
 * the parameters must have passed fedc__secagg_check_params (for any
 * count). Infinities clip to the ends, NaN counts as 0. */
void fedc__secagg_quantize(const float *x, size_t n, double range, unsigned bits, uint32_t *out);

/* The mean of `count` quantised vectors from their sum mod 2^32:
 * out[i] = sum[i] / count / (2^bits - 1) * 2 range - range, computed in
 * double and rounded to float. The parameters must have passed
 * fedc__secagg_check_params for this count. */
void fedc__secagg_dequantize_sum(const uint32_t *sum, size_t n, unsigned count, double range, unsigned bits,
                                 float *out);

/* A fresh X25519 key pair from libsodium's generator. */
void fedc__secagg_keypair(uint8_t pk[FEDC_SECAGG_KEY_BYTES], uint8_t sk[FEDC_SECAGG_KEY_BYTES]);

/* The pairwise seed of two clients:
 *     key = BLAKE2b-256(key = FEDC_SECAGG_AGREE_CTX,
 *                       X25519(my_sk, their_pk) || min(pk_a, pk_b) || max(pk_a, pk_b))
 * where the two public keys are ordered bytewise (memcmp), so both clients
 * get the same key. The X25519 output is wiped. FEDC_ERR_INVALID when
 * their_pk is my_pk, or when X25519 fails (their_pk is a low-order point,
 * which would make the secret predictable); key is zeroed then. */
int fedc__secagg_agree(const uint8_t my_sk[FEDC_SECAGG_KEY_BYTES],
                       const uint8_t their_pk[FEDC_SECAGG_KEY_BYTES],
                       const uint8_t my_pk[FEDC_SECAGG_KEY_BYTES], uint8_t key[FEDC_SECAGG_KEY_BYTES],
                       char *err, size_t errlen);

/* The keystream of AES-128 in counter mode (NIST SP 800-38A) with key and
 * initial counter block iv, the block incremented as a 128-bit big-endian
 * integer: out[0 .. len-1] (OpenSSL's libcrypto). FEDC_ERR_NOMEM when
 * OpenSSL cannot allocate its context. */
int fedc__secagg_aes_ctr(const uint8_t key[16], const uint8_t iv[16], uint8_t *out, size_t len);

/* mask[0 .. n-1] = the first 4n bytes of AES-128-CTR's keystream with key
 * BLAKE2b-128(key = seed, FEDC_SECAGG_EXPAND_CTX) and initial counter block
 * round (8 bytes little-endian) || 8 zero bytes, read as little-endian
 * uint32.
 * Deterministic for a seed and round; the block counter's 64 low bits
 * leave no practical limit on n. FEDC_ERR_NOMEM as fedc__secagg_aes_ctr. */
int fedc__secagg_expand(const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round, uint32_t *mask, size_t n);

/* x[i] += mask[i] and x[i] -= mask[i], mod 2^32. */
void fedc__secagg_mask_add(uint32_t *x, const uint32_t *mask, size_t n);
void fedc__secagg_mask_sub(uint32_t *x, const uint32_t *mask, size_t n);

/* Adds (sign > 0) or subtracts (sign < 0) the expansion of seed for this
 * round to x[0 .. n-1] without a whole-length mask buffer: the same as
 * fedc__secagg_expand then mask_add / mask_sub, a chunk at a time. The
 * keystream chunk is wiped. sign = 0 does nothing. FEDC_ERR_NOMEM as
 * fedc__secagg_aes_ctr (x is then partly masked). */
int fedc__secagg_apply_mask(uint32_t *x, size_t n, const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round,
                            int sign);

/* The sign with which client `me` applies its pairwise mask with client
 * `other`: +1 when me < other, -1 when me > other (0 when equal). */
static inline int fedc__secagg_pair_sign(uint32_t me, uint32_t other)
{
    return (me < other) - (me > other);
}

#ifdef __cplusplus
}
#endif
#endif
