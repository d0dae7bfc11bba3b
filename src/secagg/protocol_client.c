/* The client side of secure aggregation (protocol.h): one client's state
 * for a round, its four stages (advertise, share keys, masked input,
 * unmask), and the encryption of the shares it sends its neighbours. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"
#include "secagg/protocol_internal.h"
#include "secagg/shamir.h"

#define KB          FEDC_SECAGG_KEY_BYTES
#define PT_BYTES    (2 * KB)
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AD_BYTES    (8 + 1 + 4 + 4)

_Static_assert(FEDC__SA_CT_BYTES == NONCE_BYTES + PT_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "ciphertext size");
_Static_assert(sizeof FEDC__SA_SHARE_CTX - 1 >= crypto_generichash_KEYBYTES_MIN &&
                   sizeof FEDC__SA_SHARE_CTX - 1 <= crypto_generichash_KEYBYTES_MAX,
               "share context length");

/* ---------------------------------------------------------------- share encryption */

static int share_key(const uint8_t my_sk[KB], const uint8_t their_pk[KB], const uint8_t my_pk[KB],
                     uint8_t key[KB], char *err, size_t errlen)
{
    uint8_t raw[KB];
    int rc = fedc__secagg_agree(my_sk, their_pk, my_pk, raw, err, errlen);
    if (!rc)
        crypto_generichash(key, KB, raw, KB, (const uint8_t *)FEDC__SA_SHARE_CTX,
                           sizeof FEDC__SA_SHARE_CTX - 1);
    sodium_memzero(raw, sizeof raw);
    return rc;
}

static void share_ad(uint8_t ad[AD_BYTES], uint64_t round, uint32_t sender, uint32_t recipient)
{
    fedc__sa_put_u64(ad, round);
    ad[8] = FEDC__SA_MSG_SHARES;
    fedc__sa_put_u32(ad + 9, sender);
    fedc__sa_put_u32(ad + 13, recipient);
}

/* ---------------------------------------------------------------- client */

enum { CL_NEW, CL_ADVERTISED, CL_SHARED, CL_MASKED, CL_DONE };

struct fedc__sa_client {
    fedc__sa_config cfg;
    uint32_t me;
    int stage;
    uint8_t c_pk[KB], c_sk[KB], s_pk[KB], s_sk[KB], b[KB];
    uint8_t *nb;       /* n: my neighbours */
    uint8_t *u1;       /* n: neighbours whose keys the server sent */
    uint8_t *pk_c;     /* n * KB */
    uint8_t *pk_s;     /* n * KB */
    uint8_t *u2;       /* n: U2 as the server told it */
    uint8_t *held;     /* n * PT_BYTES: the shares j gave me (b_j's, s_sk_j's) */
    uint8_t *has_held; /* n */
};

static void client_wipe(fedc__sa_client *c)
{
    sodium_memzero(c->c_sk, KB);
    sodium_memzero(c->s_sk, KB);
    sodium_memzero(c->b, KB);
    if (c->held) sodium_memzero(c->held, (size_t)c->cfg.n * PT_BYTES);
}

void fedc__sa_client_destroy(fedc__sa_client *c)
{
    if (!c) return;
    client_wipe(c);
    free(c->nb);
    free(c->u1);
    free(c->pk_c);
    free(c->pk_s);
    free(c->u2);
    free(c->held);
    free(c->has_held);
    sodium_memzero(c, sizeof *c);
    free(c);
}

int fedc__sa_client_create(const fedc__sa_config *cfg, uint32_t me, fedc__sa_client **out, char *err,
                           size_t errlen)
{
    if (!out) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL output pointer");
    *out = NULL;
    int rc = fedc__sa_check_config(cfg, err, errlen);
    if (rc) return rc;
    if (me >= cfg->n)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: client index %" PRIu32 " out of range (n = %" PRIu32 ")", me, cfg->n);
    if (sodium_init() < 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: libsodium init failed");
    size_t n = cfg->n;
    fedc__sa_client *c = calloc(1, sizeof *c);
    uint8_t *adj = malloc(n * n);
    if (c) {
        c->nb = calloc(n, 1);
        c->u1 = calloc(n, 1);
        c->pk_c = calloc(n, KB);
        c->pk_s = calloc(n, KB);
        c->u2 = calloc(n, 1);
        c->held = calloc(n, PT_BYTES);
        c->has_held = calloc(n, 1);
    }
    if (!c || !adj || !c->nb || !c->u1 || !c->pk_c || !c->pk_s || !c->u2 || !c->held || !c->has_held) {
        free(adj);
        fedc__sa_client_destroy(c);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for a client");
    }
    c->cfg = *cfg;
    c->me = me;
    rc = fedc__sa_neighbours(cfg, adj, err, errlen);
    if (rc) {
        free(adj);
        fedc__sa_client_destroy(c);
        return rc;
    }
    memcpy(c->nb, adj + (size_t)me * n, n);
    free(adj);
    fedc__secagg_keypair(c->c_pk, c->c_sk);
    fedc__secagg_keypair(c->s_pk, c->s_sk);
    c->stage = CL_NEW;
    *out = c;
    return FEDC_OK;
}

static int client_stage(const fedc__sa_client *c, int want, const char *fn, char *err, size_t errlen)
{
    if (!c) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: %s: NULL client", fn);
    if (c->stage != want)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: client %" PRIu32 ": %s called in the wrong stage (%d, expected %d)",
                              c->me, fn, c->stage, want);
    return FEDC_OK;
}

int fedc__sa_client_advertise(fedc__sa_client *c, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int rc = client_stage(c, CL_NEW, "advertise", err, errlen);
    if (rc) return rc;
    if (!out || !outlen) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL output");
    fedc__sa_writer w;
    if ((rc = fedc__sa_wr_start(&w, 2 * KB, FEDC__SA_MSG_ADVERTISE, c->cfg.round, c->me, FEDC__SA_SERVER, err,
                                errlen)))
        return rc;
    fedc__sa_wr_bytes(&w, c->c_pk, KB);
    fedc__sa_wr_bytes(&w, c->s_pk, KB);
    *out = w.p;
    *outlen = w.len;
    c->stage = CL_ADVERTISED;
    return FEDC_OK;
}

int fedc__sa_client_share_keys(fedc__sa_client *c, const uint8_t *in, size_t inlen, uint8_t **out,
                               size_t *outlen, char *err, size_t errlen)
{
    int rc = client_stage(c, CL_ADVERTISED, "share_keys", err, errlen);
    if (rc) return rc;
    if (!out || !outlen) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL output");
    uint32_t n = c->cfg.n, from;
    fedc__sa_reader r;
    if ((rc = fedc__sa_rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_KEYS, c->me, &from, err, errlen)))
        return rc;
    if ((rc = fedc__sa_rd_need(&r, 4, "count", err, errlen))) return rc;
    uint32_t count = fedc__sa_rd_u32(&r);
    if (count > c->cfg.k)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: KEYS message lists %" PRIu32 " neighbours, more than K = %" PRIu32,
                              count, c->cfg.k);
    if ((rc = fedc__sa_rd_need(&r, (size_t)count * (4 + 2 * KB), "key entries", err, errlen))) return rc;
    if ((rc = fedc__sa_rd_end(&(fedc__sa_reader){r.p, r.off + (size_t)count * (4 + 2 * KB), r.len, r.what},
                              err, errlen)))
        return rc;
    if (count < c->cfg.t)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: client %" PRIu32 ": only %" PRIu32
                              " neighbours advertised keys, the threshold needs %" PRIu32,
                              c->me, count, c->cfg.t);
    /* validate everything before changing state */
    size_t start = r.off;
    int64_t prev = -1;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(&r);
        const uint8_t *cpk = fedc__sa_rd_bytes(&r, KB), *spk = fedc__sa_rd_bytes(&r, KB);
        if (j >= n || !c->nb[j])
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: KEYS message: %" PRIu32 " is not a neighbour of client %" PRIu32,
                                  j, c->me);
        if ((int64_t)j <= prev)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: KEYS message: indices not strictly ascending at %" PRIu32, j);
        prev = j;
        if (sodium_memcmp(cpk, spk, KB) == 0 || sodium_memcmp(cpk, c->c_pk, KB) == 0 ||
            sodium_memcmp(spk, c->s_pk, KB) == 0)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: KEYS message: client %" PRIu32 "'s keys repeat a key", j);
    }
    /* split b and s_sk into n shares each: share x = j + 1 for client j */
    uint8_t *sh = malloc((size_t)n * PT_BYTES);
    fedc__sa_writer w = {0};
    if (!sh) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for shares");
    rc = fedc__sa_wr_start(&w, 4 + (size_t)count * (8 + FEDC__SA_CT_BYTES), FEDC__SA_MSG_SHARES, c->cfg.round,
                           c->me, FEDC__SA_SERVER, err, errlen);
    if (!rc) {
        randombytes_buf(c->b, KB);
        rc = fedc__shamir_split(c->b, KB, c->cfg.t, n, sh, err, errlen);
    }
    if (!rc) rc = fedc__shamir_split(c->s_sk, KB, c->cfg.t, n, sh + (size_t)n * KB, err, errlen);
    if (!rc) fedc__sa_wr_u32(&w, count);
    r.off = start;
    for (uint32_t e = 0; !rc && e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(&r);
        const uint8_t *cpk = fedc__sa_rd_bytes(&r, KB), *spk = fedc__sa_rd_bytes(&r, KB);
        uint8_t key[KB], pt[PT_BYTES], ad[AD_BYTES], ct[FEDC__SA_CT_BYTES];
        rc = share_key(c->c_sk, cpk, c->c_pk, key, err, errlen);
        if (rc) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: KEYS message: client %" PRIu32 "'s encryption key is unusable", j);
            break;
        }
        memcpy(pt, sh + (size_t)j * KB, KB);
        memcpy(pt + KB, sh + (size_t)n * KB + (size_t)j * KB, KB);
        share_ad(ad, c->cfg.round, c->me, j);
        randombytes_buf(ct, NONCE_BYTES);
        unsigned long long clen = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(ct + NONCE_BYTES, &clen, pt, PT_BYTES, ad, AD_BYTES, NULL,
                                                   ct, key);
        sodium_memzero(key, sizeof key);
        sodium_memzero(pt, sizeof pt);
        fedc__sa_wr_u32(&w, j);
        fedc__sa_wr_u32(&w, FEDC__SA_CT_BYTES);
        fedc__sa_wr_bytes(&w, ct, FEDC__SA_CT_BYTES);
        memcpy(c->pk_c + (size_t)j * KB, cpk, KB);
        memcpy(c->pk_s + (size_t)j * KB, spk, KB);
        /* the s_pk must be usable for masks too */
        uint8_t tmp[KB];
        if (fedc__secagg_agree(c->s_sk, spk, c->s_pk, tmp, NULL, 0))
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: KEYS message: client %" PRIu32 "'s mask key is unusable", j);
        sodium_memzero(tmp, sizeof tmp);
    }
    sodium_memzero(sh, (size_t)n * PT_BYTES);
    free(sh);
    if (rc) {
        free(w.p);
        sodium_memzero(c->b, KB);
        memset(c->pk_c, 0, (size_t)n * KB);
        memset(c->pk_s, 0, (size_t)n * KB);
        return rc;
    }
    r.off = start;
    for (uint32_t e = 0; e < count; e++) {
        c->u1[fedc__sa_rd_u32(&r)] = 1;
        r.off += 2 * KB;
    }
    *out = w.p;
    *outlen = w.len;
    c->stage = CL_SHARED;
    return FEDC_OK;
}

int fedc__sa_client_masked_input(fedc__sa_client *c, const uint8_t *in, size_t inlen, const uint32_t *q,
                                 size_t dim, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int rc = client_stage(c, CL_SHARED, "masked_input", err, errlen);
    if (rc) return rc;
    if (!out || !outlen || !q) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL argument");
    if (dim != c->cfg.dim)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: input has dimension %zu, the round's is %" PRIu64, dim, c->cfg.dim);
    uint32_t n = c->cfg.n, from, n2;
    fedc__sa_reader r;
    if ((rc = fedc__sa_rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_SHARES_FWD, c->me, &from, err, errlen)))
        return rc;
    uint8_t *u2 = malloc(n), *got = calloc(n, 1), *held = calloc(n, PT_BYTES);
    uint8_t *outbuf = NULL;
    if (!u2 || !got || !held) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
        goto done;
    }
    if ((rc = fedc__sa_rd_index_set(&r, n, u2, &n2, "U2", err, errlen))) goto done;
    if (!u2[c->me]) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                            "secagg: SHARES_FWD message: client %" PRIu32 " is not in U2", c->me);
        goto done;
    }
    uint32_t nb_u2 = 0;
    for (uint32_t j = 0; j < n; j++) {
        if (!u2[j] || !c->nb[j]) continue;
        if (!c->u1[j]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: SHARES_FWD message: neighbour %" PRIu32
                                " is in U2 but never advertised keys to client %" PRIu32,
                                j, c->me);
            goto done;
        }
        nb_u2++;
    }
    if (nb_u2 < c->cfg.t) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                            "secagg: client %" PRIu32 ": only %" PRIu32
                            " neighbours in U2, the threshold needs %" PRIu32,
                            c->me, nb_u2, c->cfg.t);
        goto done;
    }
    if ((rc = fedc__sa_rd_need(&r, 4, "count", err, errlen))) goto done;
    uint32_t count = fedc__sa_rd_u32(&r);
    if (count != nb_u2) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                            "secagg: SHARES_FWD message has %" PRIu32 " ciphertexts for client %" PRIu32
                            ", expected one from each of its %" PRIu32 " neighbours in U2",
                            count, c->me, nb_u2);
        goto done;
    }
    for (uint32_t e = 0; e < count; e++) {
        if ((rc = fedc__sa_rd_need(&r, 8, "ciphertext entry", err, errlen))) goto done;
        uint32_t j = fedc__sa_rd_u32(&r), len = fedc__sa_rd_u32(&r);
        if (j >= n || !u2[j] || !c->nb[j]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: SHARES_FWD message: sender %" PRIu32
                                " is not a neighbour of client %" PRIu32 " in U2",
                                j, c->me);
            goto done;
        }
        if (got[j]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: SHARES_FWD message: two ciphertexts from client %" PRIu32, j);
            goto done;
        }
        if (len != FEDC__SA_CT_BYTES) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: SHARES_FWD message: the ciphertext from client %" PRIu32
                                " has %" PRIu32 " bytes, expected %d",
                                j, len, FEDC__SA_CT_BYTES);
            goto done;
        }
        if ((rc = fedc__sa_rd_need(&r, len, "ciphertext", err, errlen))) goto done;
        const uint8_t *ct = fedc__sa_rd_bytes(&r, len);
        uint8_t key[KB], ad[AD_BYTES];
        if (share_key(c->c_sk, c->pk_c + (size_t)j * KB, c->c_pk, key, NULL, 0)) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: client %" PRIu32 "'s key is unusable", j);
            goto done;
        }
        share_ad(ad, c->cfg.round, j, c->me);
        unsigned long long plen = 0;
        int bad = crypto_aead_xchacha20poly1305_ietf_decrypt(held + (size_t)j * PT_BYTES, &plen, NULL,
                                                             ct + NONCE_BYTES, len - NONCE_BYTES, ad,
                                                             AD_BYTES, ct, key);
        sodium_memzero(key, sizeof key);
        if (bad || plen != PT_BYTES) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: client %" PRIu32 ": the ciphertext from client %" PRIu32
                                " does not decrypt (forged, from another round, or for another recipient)",
                                c->me, j);
            goto done;
        }
        got[j] = 1;
    }
    if ((rc = fedc__sa_rd_end(&r, err, errlen))) goto done;
    /* y = q + PRG(b) + sum sign PRG(s_ij) */
    fedc__sa_writer w;
    if ((rc = fedc__sa_wr_start(&w, 8 + (size_t)dim * 4, FEDC__SA_MSG_MASKED, c->cfg.round, c->me,
                                FEDC__SA_SERVER, err, errlen)))
        goto done;
    outbuf = w.p;
    uint32_t *y = malloc((size_t)dim * 4);
    if (!y) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
        goto done;
    }
    memcpy(y, q, (size_t)dim * 4);
    if (fedc__secagg_apply_mask(y, dim, c->b, c->cfg.round, 1))
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
    for (uint32_t j = 0; j < n && !rc; j++) {
        if (!got[j]) continue;
        uint8_t s[KB];
        rc = fedc__secagg_agree(c->s_sk, c->pk_s + (size_t)j * KB, c->s_pk, s, err, errlen);
        if (!rc && fedc__secagg_apply_mask(y, dim, s, c->cfg.round, fedc__secagg_pair_sign(c->me, j)))
            rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
        sodium_memzero(s, sizeof s);
        if (rc) break;
    }
    if (!rc) {
        fedc__sa_put_u64(w.p + w.off, dim);
        w.off += 8;
        for (size_t i = 0; i < dim; i++) fedc__sa_put_u32(w.p + w.off + 4 * i, y[i]);
    }
    sodium_memzero(y, (size_t)dim * 4);
    free(y);
    if (rc) goto done;
    memcpy(c->held, held, (size_t)n * PT_BYTES);
    memcpy(c->has_held, got, n);
    memcpy(c->u2, u2, n);
    sodium_memzero(c->c_sk, KB);
    sodium_memzero(c->s_sk, KB);
    sodium_memzero(c->b, KB);
    c->stage = CL_MASKED;
    *out = outbuf;
    *outlen = w.len;
    outbuf = NULL;
done:
    free(outbuf);
    if (held) sodium_memzero(held, (size_t)n * PT_BYTES);
    free(held);
    free(got);
    free(u2);
    return rc;
}

int fedc__sa_client_unmask(fedc__sa_client *c, const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                           char *err, size_t errlen)
{
    int rc = client_stage(c, CL_MASKED, "unmask", err, errlen);
    if (rc) return rc;
    if (!out || !outlen) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL output");
    uint32_t n = c->cfg.n, from, n3, nd;
    fedc__sa_reader r;
    if ((rc = fedc__sa_rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_UNMASK_REQ, c->me, &from, err, errlen)))
        return rc;
    uint8_t *u3 = malloc(n), *dr = malloc(n);
    if (!u3 || !dr) {
        free(u3);
        free(dr);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
    }
    fedc__sa_writer w = {0};
    if ((rc = fedc__sa_rd_index_set(&r, n, u3, &n3, "U3", err, errlen))) goto done;
    if ((rc = fedc__sa_rd_index_set(&r, n, dr, &nd, "D", err, errlen))) goto done;
    if ((rc = fedc__sa_rd_end(&r, err, errlen))) goto done;
    uint32_t count = 0;
    for (uint32_t j = 0; j < n; j++) {
        if (u3[j] && dr[j]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                "secagg: client %" PRIu32 " refuses to unmask: client %" PRIu32
                                " is both a survivor and dropped (that would reveal both its secrets)",
                                c->me, j);
            goto done;
        }
        if ((u3[j] || dr[j]) != c->u2[j]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "secagg: UNMASK_REQ message: client %" PRIu32 " is %s U2 but %s U3 or D", j,
                                c->u2[j] ? "in" : "not in", c->u2[j] ? "in neither" : "in");
            goto done;
        }
        if (c->has_held[j]) count++;
    }
    if (!u3[c->me]) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                            "secagg: UNMASK_REQ message: client %" PRIu32 " is not among the survivors",
                            c->me);
        goto done;
    }
    /* Its own neighbourhood must keep t survivors (itself included), not
     * only the round: in SecAgg+ a neighbourhood can shrink below t while
     * the round stays above it, and then the few survivors' sum, which
     * this client's shares help to unmask, says too much about each. */
    uint32_t near = 1;
    for (uint32_t j = 0; j < n; j++) near += c->nb[j] && u3[j] && j != c->me;
    if (n3 < c->cfg.t || near < c->cfg.t) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                            "secagg: client %" PRIu32 " refuses to unmask: only %" PRIu32
                            " survivors%s, fewer "
                            "than t = %" PRIu32,
                            c->me, n3 < c->cfg.t ? n3 : near,
                            n3 < c->cfg.t ? "" : " among its neighbours and itself", c->cfg.t);
        goto done;
    }
    if ((rc = fedc__sa_wr_start(&w, 4 + (size_t)count * FEDC__SA_RESP_ENTRY, FEDC__SA_MSG_UNMASK_RESP,
                                c->cfg.round, c->me, FEDC__SA_SERVER, err, errlen)))
        goto done;
    fedc__sa_wr_u32(&w, count);
    for (uint32_t j = 0; j < n; j++) {
        if (!c->has_held[j]) continue;
        int b = u3[j];
        fedc__sa_wr_u32(&w, j);
        w.p[w.off++] = b ? FEDC__SA_SHARE_B : FEDC__SA_SHARE_S;
        fedc__sa_wr_bytes(&w, c->held + (size_t)j * PT_BYTES + (b ? 0 : KB), KB);
    }
    sodium_memzero(c->held, (size_t)n * PT_BYTES);
    c->stage = CL_DONE;
    *out = w.p;
    *outlen = w.len;
done:
    free(u3);
    free(dr);
    return rc;
}
