/* Masking for secure aggregation (masking.h): quantisation into Z_{2^32},
 * pairwise keys (X25519 + BLAKE2b, libsodium) and masks expanded with
 * AES-128 in counter mode (OpenSSL's libcrypto, which uses the CPU's AES
 * instructions where it has them). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
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

int fedc__secagg_aes_ctr(const uint8_t key[16], const uint8_t iv[16], uint8_t *out, size_t len)
{
    if (len == 0) return FEDC_OK;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return FEDC_ERR_NOMEM;
    int ok = EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, iv);
    /* The keystream is the encryption of zeros, written in place. */
    memset(out, 0, len);
    for (size_t at = 0; ok && at < len;) {
        int step = len - at < (1u << 30) ? (int)(len - at) : (1 << 30), got = 0;
        ok = EVP_EncryptUpdate(ctx, out + at, &got, out + at, step) && got == step;
        at += (size_t)step;
    }
    EVP_CIPHER_CTX_free(ctx); /* wipes the key schedule */
    return ok ? FEDC_OK : FEDC_ERR_NOMEM;
}

/* AES-128-CTR's key and initial counter block for a seed and round. */
static void expand_key(const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round, uint8_t key[16],
                       uint8_t iv[16])
{
    /* All 32 bytes of the seed make the 128-bit key. */
    crypto_generichash(key, 16, (const unsigned char *)FEDC_SECAGG_EXPAND_CTX,
                       sizeof FEDC_SECAGG_EXPAND_CTX - 1, seed, FEDC_SECAGG_KEY_BYTES);
    for (int b = 0; b < 8; b++) iv[b] = (uint8_t)(round >> (8 * b));
    memset(iv + 8, 0, 8);
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int fedc__secagg_expand(const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round, uint32_t *mask, size_t n)
{
    if (n == 0) return FEDC_OK;
    uint8_t key[16], iv[16];
    expand_key(seed, round, key, iv);
    /* The keystream goes straight into the output, then each word is read
     * as little-endian in place (a no-op on little-endian hosts). */
    uint8_t *bytes = (uint8_t *)mask;
    int rc = fedc__secagg_aes_ctr(key, iv, bytes, n * sizeof(uint32_t));
    sodium_memzero(key, sizeof key);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        uint32_t w = load_le32(bytes + 4 * i);
        memcpy(bytes + 4 * i, &w, sizeof w);
    }
    return FEDC_OK;
}

void fedc__secagg_mask_add(uint32_t *x, const uint32_t *mask, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] += mask[i];
}

void fedc__secagg_mask_sub(uint32_t *x, const uint32_t *mask, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] -= mask[i];
}

int fedc__secagg_apply_mask(uint32_t *x, size_t n, const uint8_t seed[FEDC_SECAGG_KEY_BYTES], uint64_t round,
                            int sign)
{
    enum { WORDS = 4096 }; /* a chunk of keystream is 16 KiB, in the first-level cache */
    if (sign == 0 || n == 0) return FEDC_OK;
    uint8_t key[16], iv[16], ks[WORDS * 4];
    expand_key(seed, round, key, iv);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), NULL, key, iv);
    sodium_memzero(key, sizeof key);
    memset(ks, 0, sizeof ks);
    /* One cipher context for the whole length: the counter carries on from
     * chunk to chunk, so the words are those of fedc__secagg_expand. */
    for (size_t at = 0; ok && at < n; at += WORDS) {
        size_t m = n - at < WORDS ? n - at : WORDS;
        int got = 0;
        memset(ks, 0, m * 4);
        ok = EVP_EncryptUpdate(ctx, ks, &got, ks, (int)(m * 4)) && got == (int)(m * 4);
        if (!ok) break;
        if (sign > 0)
            for (size_t j = 0; j < m; j++) x[at + j] += load_le32(ks + 4 * j);
        else
            for (size_t j = 0; j < m; j++) x[at + j] -= load_le32(ks + 4 * j);
    }
    sodium_memzero(ks, sizeof ks);
    EVP_CIPHER_CTX_free(ctx);
    return ok ? FEDC_OK : FEDC_ERR_NOMEM;
}
