/* Masking for secure aggregation (masking.h): quantisation into Z_{2^32},
 * pairwise keys (X25519 + BLAKE2b) and XChaCha20-expanded masks, all from
 * libsodium. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/masking.h"

int fedc__secagg_check_params(double range, unsigned bits, unsigned count, char *err, size_t errlen)
{
    if (!(range > 0) || !(range <= FLT_MAX))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the quantisation range must be finite and > 0 (at most %g), got %g",
                              (double)FLT_MAX, range);
    if (bits < 1 || bits > FEDC_SECAGG_MAX_BITS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the quantisation bits must be 1..%d, got %u", FEDC_SECAGG_MAX_BITS,
                              bits);
    if (count < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: the client count must be >= 1, got 0");
    uint64_t levels = (1ull << bits) - 1;
    if ((uint64_t)count * levels >= (1ull << 32)) {
        unsigned ok = 0; /* the most bits for which count vectors cannot wrap */
        while (ok < FEDC_SECAGG_MAX_BITS && (uint64_t)count * ((1ull << (ok + 1)) - 1) < (1ull << 32)) ok++;
        if (ok == 0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: the sum of %u clients' values would wrap mod 2^32 even with 1 bit",
                                  count);
        return fedc_set_error(
            err, errlen, FEDC_ERR_INVALID,
            "secagg: the sum of %u clients' %u-bit values can reach %llu, which wraps mod 2^32; "
            "use at most %u bits for %u clients",
            count, bits, (unsigned long long)((uint64_t)count * levels), ok, count);
    }
    return FEDC_OK;
}

void fedc__secagg_quantize(const float *x, size_t n, double range, unsigned bits, uint32_t *out)
{
    const double levels = (double)((1ull << bits) - 1), width = 2.0 * range;
    for (size_t i = 0; i < n; i++) {
        double v = (double)x[i];
        if (v != v) v = 0; /* NaN */
        if (v > range) v = range;
        if (v < -range) v = -range;
        /* In the documented order: x = 0 gives exactly 0.5 * levels, a tie
         * that rounds up to 2^(bits-1) whatever the range. */
        double q = floor((v + range) / width * levels + 0.5);
        if (q < 0) q = 0;
        if (q > levels) q = levels;
        out[i] = (uint32_t)q;
    }
}

void fedc__secagg_dequantize_sum(const uint32_t *sum, size_t n, unsigned count, double range, unsigned bits,
                                 float *out)
{
    const double levels = (double)((1ull << bits) - 1);
    const double denom = (double)count * levels; /* exact: < 2^32 */
    for (size_t i = 0; i < n; i++) out[i] = (float)((double)sum[i] / denom * (2.0 * range) - range);
}

void fedc__secagg_keypair(uint8_t pk[FEDC_SECAGG_KEY_BYTES], uint8_t sk[FEDC_SECAGG_KEY_BYTES])
{
    randombytes_buf(sk, FEDC_SECAGG_KEY_BYTES);
    crypto_scalarmult_base(pk, sk);
}

int fedc__secagg_agree(const uint8_t my_sk[FEDC_SECAGG_KEY_BYTES],
                       const uint8_t their_pk[FEDC_SECAGG_KEY_BYTES],
                       const uint8_t my_pk[FEDC_SECAGG_KEY_BYTES], uint8_t key[FEDC_SECAGG_KEY_BYTES],
                       char *err, size_t errlen)
{
    _Static_assert(sizeof FEDC_SECAGG_AGREE_CTX - 1 >= crypto_generichash_KEYBYTES_MIN &&
                       sizeof FEDC_SECAGG_AGREE_CTX - 1 <= crypto_generichash_KEYBYTES_MAX,
                   "the agreement context is BLAKE2b's key");
    _Static_assert(crypto_scalarmult_BYTES == FEDC_SECAGG_KEY_BYTES &&
                       crypto_scalarmult_SCALARBYTES == FEDC_SECAGG_KEY_BYTES,
                   "X25519 sizes");
    if (memcmp(their_pk, my_pk, FEDC_SECAGG_KEY_BYTES) == 0) {
        sodium_memzero(key, FEDC_SECAGG_KEY_BYTES);
        return fedc_set_error(
            err, errlen, FEDC_ERR_INVALID,
            "secagg: the peer's public key is our own; a client has no pairwise key with itself");
    }
    uint8_t shared[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(shared, my_sk, their_pk) != 0) {
        sodium_memzero(shared, sizeof shared);
        sodium_memzero(key, FEDC_SECAGG_KEY_BYTES);
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the peer's public key is a low-order point (X25519 gives 0)");
    }
    const uint8_t *lo = my_pk, *hi = their_pk;
    if (memcmp(my_pk, their_pk, FEDC_SECAGG_KEY_BYTES) > 0) lo = their_pk, hi = my_pk;
    crypto_generichash_state st;
    crypto_generichash_init(&st, (const unsigned char *)FEDC_SECAGG_AGREE_CTX,
                            sizeof FEDC_SECAGG_AGREE_CTX - 1, FEDC_SECAGG_KEY_BYTES);
    crypto_generichash_update(&st, shared, sizeof shared);
    crypto_generichash_update(&st, lo, FEDC_SECAGG_KEY_BYTES);
    crypto_generichash_update(&st, hi, FEDC_SECAGG_KEY_BYTES);
    crypto_generichash_final(&st, key, FEDC_SECAGG_KEY_BYTES);
    sodium_memzero(shared, sizeof shared);
    sodium_memzero(&st, sizeof st);
    return FEDC_OK;
}

static void expand_nonce(uint64_t round, uint8_t nonce[crypto_stream_xchacha20_NONCEBYTES])
{
    _Static_assert(crypto_stream_xchacha20_NONCEBYTES == sizeof FEDC_SECAGG_EXPAND_CTX - 1 + 8,
                   "the nonce is the context and the round");
    memcpy(nonce, FEDC_SECAGG_EXPAND_CTX, sizeof FEDC_SECAGG_EXPAND_CTX - 1);
    for (int b = 0; b < 8; b++) nonce[sizeof FEDC_SECAGG_EXPAND_CTX - 1 + b] = (uint8_t)(round >> (8 * b));
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void fedc__secagg_expand(const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round, uint32_t *mask, size_t n)
{
    if (n == 0) return;
    uint8_t nonce[crypto_stream_xchacha20_NONCEBYTES];
    expand_nonce(round, nonce);
    /* The keystream goes straight into the output, then each word is read
     * as little-endian in place (a no-op on little-endian hosts). */
    uint8_t *bytes = (uint8_t *)mask;
    crypto_stream_xchacha20(bytes, n * sizeof(uint32_t), nonce, seed);
    for (size_t i = 0; i < n; i++) {
        uint32_t w = load_le32(bytes + 4 * i);
        memcpy(bytes + 4 * i, &w, sizeof w);
    }
}

void fedc__secagg_mask_add(uint32_t *x, const uint32_t *mask, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] += mask[i];
}

void fedc__secagg_mask_sub(uint32_t *x, const uint32_t *mask, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] -= mask[i];
}

void fedc__secagg_apply_mask(uint32_t *x, size_t n, const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round,
                             int sign)
{
    enum { WORDS = 1024, BLOCK = 64 }; /* a chunk is 4096 bytes: 64 ChaCha blocks */
    if (sign == 0 || n == 0) return;
    uint8_t nonce[crypto_stream_xchacha20_NONCEBYTES], zero[WORDS * 4], ks[WORDS * 4];
    expand_nonce(round, nonce);
    memset(zero, 0, sizeof zero);
    for (size_t at = 0; at < n; at += WORDS) {
        size_t m = n - at < WORDS ? n - at : WORDS;
        crypto_stream_xchacha20_xor_ic(ks, zero, m * 4, nonce, (uint64_t)(at * 4 / BLOCK), seed);
        if (sign > 0)
            for (size_t j = 0; j < m; j++) x[at + j] += load_le32(ks + 4 * j);
        else
            for (size_t j = 0; j < m; j++) x[at + j] -= load_le32(ks + 4 * j);
    }
    sodium_memzero(ks, sizeof ks);
}
