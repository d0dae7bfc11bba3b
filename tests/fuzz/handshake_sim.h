/*
 * What fuzz_handshake.c and gen_corpus.c share: the fixed node keys of the
 * handshake target and the nonce its server draws for every connection.
 *
 * The target replaces libsodium's randombytes (randombytes_set_implementation,
 * before sodium_init) by a SplitMix64 generator reset to HS_RNG_SEED
 * before each input, so that the AuthChallenge nonce is the same for every
 * input: a crash replays from its file, and the seed corpus can hold an
 * AuthResponse that verifies (signed by gen_corpus.c with the key below).
 *
 * Keys (Ed25519, from fixed 32-byte seeds): HS_KEY_NODE and HS_KEY_PEER are
 * in the server's authorized keys, HS_KEY_STRANGER is not.
 */
#ifndef FEDC_FUZZ_HANDSHAKE_SIM_H
#define FEDC_FUZZ_HANDSHAKE_SIM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/nodekey.h"

#define HS_RNG_SEED     0x68616e647368616bull
#define HS_KEY_NODE     0
#define HS_KEY_PEER     1
#define HS_KEY_STRANGER 2
#define HS_NKEYS        3
#define HS_NLISTED      2 /* the first HS_NLISTED keys are authorized */

static const char *const hs_key_names[HS_NKEYS] = {"fuzz-node", "fuzz-peer", "fuzz-stranger"};

static inline uint32_t hs_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

/* The nonce of every connection: the first FEDC_NODEAUTH_NONCE bytes that
 * randombytes_buf gives after the reset (one generator word per byte). */
static inline void hs_expected_nonce(uint8_t out[FEDC_NODEAUTH_NONCE])
{
    uint64_t st = HS_RNG_SEED;
    for (size_t i = 0; i < FEDC_NODEAUTH_NONCE; i++) out[i] = (uint8_t)hs_rng_next(&st);
}

/* Key `which` (the caller frees it with EVP_PKEY_free) and its raw public key. */
static inline EVP_PKEY *hs_key(int which, uint8_t pub[FEDC_NODEKEY_PUB_LEN])
{
    uint8_t seed[32];
    memset(seed, 0xA0 + which, sizeof seed);
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    size_t len = FEDC_NODEKEY_PUB_LEN;
    if (!k || EVP_PKEY_get_raw_public_key(k, pub, &len) != 1 || len != FEDC_NODEKEY_PUB_LEN) abort();
    return k;
}

#endif
