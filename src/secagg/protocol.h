/* The protocol core of secure aggregation for one round: SecAgg (Bonawitz
 * et al., CCS 2017) on the complete graph and SecAgg+ (Bell et al., CCS
 * 2020) on a sparse K-regular graph. A library layer without networking:
 * a client object and a server object per round exchange opaque byte
 * messages that the caller carries (later inside protobuf `bytes`).
 *
 * Stages (n clients with indices 0 .. n-1, threshold t, neighbours N(i)):
 *   1. advertise: client i sends two X25519 public keys, c_pk (share
 *      encryption) and s_pk (masks). The server keeps U1 = the advertisers
 *      and sends each i in U1 its neighbours' keys (KEYS).
 *   2. share keys: i draws b_i (32 random bytes), Shamir-splits b_i and
 *      s_sk_i (threshold t), and encrypts neighbour j's two shares with
 *      XChaCha20-Poly1305 (SHARES). U2 = the clients that sent shares; the
 *      server forwards each j in U2 the U2 list and the ciphertexts
 *      addressed to it (SHARES_FWD).
 *   3. masked input: i checks that it got a ciphertext from every neighbour
 *      in U2 and that each decrypts, then sends
 *          y_i = q_i + PRG(b_i) + sum_{j in N(i) and U2} sign(i, j) PRG(s_ij)
 *      mod 2^32 (MASKED; sign = +1 when i < j, -1 when i > j). U3 = the
 *      clients whose y arrived.
 *   4. unmask: the server sends U3 and D = U2 \ U3 (UNMASK_REQ); each
 *      client answers, for each neighbour j in U2, its share of b_j when j
 *      is in U3 and of s_sk_j when j is in D, never both (UNMASK_RESP).
 *      With t shares per secret the server removes the self masks of U3
 *      and the pairwise masks between D and U3: the result is exactly the
 *      sum over U3 of q_i mod 2^32.
 *
 * Shares: every secret is split into n shares over GF(2^8) (shamir.h),
 * share x = j + 1 going to client j (n <= 255); the shares of non-neighbours
 * are wiped unsent. So a share's x-coordinate is its holder's index + 1.
 *
 * Share encryption key of i and j: BLAKE2b-256 keyed with
 * FEDC__SA_SHARE_CTX of fedc__secagg_agree(c_sk_i, c_pk_j, c_pk_i), a
 * different domain (and different keys) from the mask seeds
 * s_ij = fedc__secagg_agree(s_sk_i, s_pk_j, s_pk_i). Each ciphertext is
 * nonce (24 random bytes) || XChaCha20-Poly1305(share of b_i || share of
 * s_sk_i, 64 bytes) || tag (16), FEDC__SA_CT_BYTES in all, with associated
 * data round (u64 LE) || FEDC__SA_MSG_SHARES (u8) || sender (u32 LE) ||
 * recipient (u32 LE), so a ciphertext from another round, sender or
 * recipient does not decrypt.
 *
 * Graph: with K = n - 1 every client is a neighbour of every other. With K
 * even, 2 <= K < n - 1, the neighbours form a Harary graph H(K, n) on a
 * random permutation of the clients: the permutation comes from the public
 * graph_seed (chosen by the server per round) through fedc__secagg_expand
 * (AES-128-CTR, this round) giving one uint32 w_i per client and the
 * Fisher-Yates shuffle for i = n-1 .. 1 swapping position i with
 * floor(w_i * (i + 1) / 2^32) (bias below n / 2^32); pos(c) is client c's
 * place in the shuffled order and c, e are neighbours when their cyclic
 * distance min(|pos(c) - pos(e)|, n - |pos(c) - pos(e)|) is 1 .. K/2. The
 * threshold must satisfy K/2 < t <= K.
 *
 * Messages: a 24-byte header, then the body; all integers little-endian.
 *   header: magic "FSA1" (4 bytes), type (u8, fedc__sa_msg_type), 3 zero
 *           bytes, round (u64), from (u32), to (u32); a client's index or
 *           FEDC__SA_SERVER.
 *   ADVERTISE    (i -> server): c_pk (32), s_pk (32).
 *   KEYS         (server -> i): count (u32), count x [index (u32), c_pk
 *                (32), s_pk (32)]: the neighbours of i in U1, ascending.
 *   SHARES       (i -> server): count (u32), count x [recipient (u32),
 *                length (u32) = FEDC__SA_CT_BYTES, ciphertext]: one per
 *                neighbour in i's KEYS, ascending.
 *   SHARES_FWD   (server -> j): n2 (u32), n2 x index (u32): U2 ascending;
 *                count (u32), count x [sender (u32), length (u32),
 *                ciphertext]: the ciphertexts addressed to j, ascending.
 *   MASKED       (i -> server): dim (u64), dim x y (u32).
 *   UNMASK_REQ   (server -> i): n3 (u32), n3 x index: U3 ascending; nd
 *                (u32), nd x index: D ascending.
 *   UNMASK_RESP  (i -> server): count (u32), count x [owner (u32), kind
 *                (u8: FEDC__SA_SHARE_B or FEDC__SA_SHARE_S), share (32)].
 *
 * Every function returns FEDC_OK or a status with a message in err:
 * FEDC_ERR_INVALID for bad arguments, a call in the wrong stage, a request
 * for both secrets of a client and a round that cannot complete (too few
 * clients or shares); FEDC_ERR_PROTOCOL for a malformed or inconsistent
 * message (sizes, indices, round, stage, ciphertexts that do not decrypt);
 * FEDC_ERR_NOMEM. A refused message changes nothing: the object stays
 * usable. Output messages are malloc'd: the caller free()s them. Secrets
 * are wiped as soon as they are not needed, and at destroy. */
#ifndef FEDC_SECAGG_PROTOCOL_H
#define FEDC_SECAGG_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"
#include "secagg/masking.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC__SA_MAX_CLIENTS  255
#define FEDC__SA_MAX_DIM      (1u << 28)
#define FEDC__SA_SERVER       0xFFFFFFFFu
#define FEDC__SA_HEADER_BYTES 24
#define FEDC__SA_CT_BYTES     (24 + 64 + 16)
#define FEDC__SA_SHARE_CTX    "fedc secagg v1 share encryption key"
#define FEDC__SA_SHARE_B      1 /* a share of a self-mask seed b_j */
#define FEDC__SA_SHARE_S      2 /* a share of a mask secret key s_sk_j */

typedef enum fedc__sa_msg_type {
    FEDC__SA_MSG_ADVERTISE = 1,
    FEDC__SA_MSG_KEYS = 2,
    FEDC__SA_MSG_SHARES = 3,
    FEDC__SA_MSG_SHARES_FWD = 4,
    FEDC__SA_MSG_MASKED = 5,
    FEDC__SA_MSG_UNMASK_REQ = 6,
    FEDC__SA_MSG_UNMASK_RESP = 7
} fedc__sa_msg_type;

/* The server's stages: which client message it accepts now. */
typedef enum fedc__sa_stage {
    FEDC__SA_STAGE_ADVERTISE = 1, /* accepts ADVERTISE */
    FEDC__SA_STAGE_SHARE = 2,     /* sends KEYS, accepts SHARES */
    FEDC__SA_STAGE_MASKED = 3,    /* sends SHARES_FWD, accepts MASKED */
    FEDC__SA_STAGE_UNMASK = 4,    /* sends UNMASK_REQ, accepts UNMASK_RESP */
    FEDC__SA_STAGE_DONE = 5       /* finished or aborted */
} fedc__sa_stage;

/* One round's public parameters, the same for the server and every client. */
typedef struct fedc__sa_config {
    uint64_t round; /* round number, bound into every message and ciphertext */
    uint32_t n;     /* sampled clients, 2 .. FEDC__SA_MAX_CLIENTS */
    uint32_t k;     /* neighbours per client: n - 1 (complete) or even, 2 .. n - 2 */
    uint32_t t;     /* threshold: k/2 < t <= k */
    uint64_t dim;   /* length of the quantised vectors, 1 .. FEDC__SA_MAX_DIM */
    uint8_t graph_seed[FEDC_SECAGG_KEY_BYTES]; /* public; only used when k < n - 1 */
} fedc__sa_config;

/* Checks a configuration; FEDC_ERR_INVALID names the bad field (for the
 * threshold: "t must be more than half the neighbours"). */
int fedc__sa_check_config(const fedc__sa_config *cfg, char *err, size_t errlen);

/* The neighbour graph of a (valid) configuration: adj[i * n + j] = 1 when
 * i and j are neighbours, else 0 (adj holds n * n bytes; adj[i * n + i] =
 * 0). Checks the configuration first. */
int fedc__sa_neighbours(const fedc__sa_config *cfg, uint8_t *adj, char *err, size_t errlen);

/* ---- client ---- */
typedef struct fedc__sa_client fedc__sa_client;

/* A client with index me (< cfg->n) for one round; draws its two key pairs. */
int fedc__sa_client_create(const fedc__sa_config *cfg, uint32_t me, fedc__sa_client **out, char *err,
                           size_t errlen);
/* Wipes the secrets and frees; NULL is a no-op. */
void fedc__sa_client_destroy(fedc__sa_client *c);
/* Stage 1: the ADVERTISE message. */
int fedc__sa_client_advertise(fedc__sa_client *c, uint8_t **out, size_t *outlen, char *err, size_t errlen);
/* Stage 2: takes the server's KEYS (at least t neighbours), returns SHARES. */
int fedc__sa_client_share_keys(fedc__sa_client *c, const uint8_t *in, size_t inlen, uint8_t **out,
                               size_t *outlen, char *err, size_t errlen);
/* Stage 3: takes SHARES_FWD (i in U2, a valid ciphertext from each
 * neighbour in U2 and none other, at least t neighbours in U2) and the
 * quantised input q[0 .. dim-1] (dim = cfg->dim), returns MASKED. Wipes
 * s_sk, c_sk and b_i. */
int fedc__sa_client_masked_input(fedc__sa_client *c, const uint8_t *in, size_t inlen, const uint32_t *q,
                                 size_t dim, uint8_t **out, size_t *outlen, char *err, size_t errlen);
/* Stage 4: takes UNMASK_REQ (U3 and D disjoint, their union U2, i in U3,
 * |U3| >= t; FEDC_ERR_INVALID when a client is in both), returns
 * UNMASK_RESP and wipes the shares it held. */
int fedc__sa_client_unmask(fedc__sa_client *c, const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                           char *err, size_t errlen);

/* ---- server ---- */
typedef struct fedc__sa_server fedc__sa_server;

int fedc__sa_server_create(const fedc__sa_config *cfg, fedc__sa_server **out, char *err, size_t errlen);
/* Wipes the shares and frees; NULL is a no-op. */
void fedc__sa_server_destroy(fedc__sa_server *s);
/* The current stage (fedc__sa_stage). */
int fedc__sa_server_stage(const fedc__sa_server *s);
/* The round's configuration, a copy of the one given to create: owned by
 * the server and valid until it is destroyed. NULL for a NULL server. */
const fedc__sa_config *fedc__sa_server_config(const fedc__sa_server *s);
/* Takes one client message of the current stage (ADVERTISE, SHARES, MASKED
 * or UNMASK_RESP); a second message from the same client is refused. */
int fedc__sa_server_recv(fedc__sa_server *s, const uint8_t *msg, size_t len, char *err, size_t errlen);
/* Closes the current stage (the clients not heard from have dropped) and
 * opens the next. Refuses (FEDC_ERR_INVALID, the round aborted, stage
 * DONE) when fewer than t + 1 clients advertised or shared, or fewer than
 * t sent masked inputs. Not for the unmask stage: see finish. */
int fedc__sa_server_advance(fedc__sa_server *s, char *err, size_t errlen);
/* The message of the current stage for client j: KEYS (j in U1),
 * SHARES_FWD (j in U2) or UNMASK_REQ (j in U3). */
int fedc__sa_server_message_for(fedc__sa_server *s, uint32_t j, uint8_t **out, size_t *outlen, char *err,
                                size_t errlen);
/* Ends the unmask stage: needs t shares of b_j for every j in U3 and of
 * s_sk_j for every j in D (else FEDC_ERR_INVALID names the client and the
 * counts and the round is aborted); writes sum[0 .. dim-1] = the sum over
 * U3 of the quantised inputs mod 2^32 and *survivors = |U3|. The server
 * is DONE afterwards either way (once the arguments passed their checks). */
int fedc__sa_server_finish(fedc__sa_server *s, uint32_t *sum, size_t dim, uint32_t *survivors, char *err,
                           size_t errlen);
/* How many shares of b_j and of s_sk_j the server has received so far
 * (it accepts only one kind per client, so one of them is always 0). */
void fedc__sa_server_share_counts(const fedc__sa_server *s, uint32_t j, uint32_t *n_b, uint32_t *n_s);

/* ---- defaults (fedc server --secagg) ---- */

/* P[Binomial(k, 2/3) <= floor(k/2)]: the chance that a client keeps fewer
 * than T = floor(k/2) + 1 of its k neighbours when each drops out
 * independently with probability 1/3. */
double fedc__sa_too_few_neighbours(uint32_t k);
/* The default K for n clients: the smallest even k with
 * fedc__sa_too_few_neighbours(k) <= 1e-6 (198), or n - 1 (every other
 * client) when that is no more. */
uint32_t fedc__sa_default_neighbours(uint32_t n);
/* The most bits, up to 24, for which the sum of n quantised values cannot
 * reach 2^32. */
unsigned fedc__sa_default_bits(uint32_t n);

#ifdef __cplusplus
}
#endif
#endif
