/* The secure aggregation protocol core (protocol.h): client and server
 * state for one round, the message codec, share encryption. */
#include <inttypes.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"
#include "secagg/shamir.h"

#define KB          FEDC_SECAGG_KEY_BYTES
#define PT_BYTES    (2 * KB)
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define AD_BYTES    (8 + 1 + 4 + 4)
#define RESP_ENTRY  (4 + 1 + KB)

_Static_assert(FEDC__SA_CT_BYTES == NONCE_BYTES + PT_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES,
               "ciphertext size");
_Static_assert(sizeof FEDC__SA_SHARE_CTX - 1 >= crypto_generichash_KEYBYTES_MIN &&
                   sizeof FEDC__SA_SHARE_CTX - 1 <= crypto_generichash_KEYBYTES_MAX,
               "share context length");

static const char *type_name(unsigned t)
{
    static const char *names[] = {"unknown",    "ADVERTISE", "KEYS",       "SHARES",
                                  "SHARES_FWD", "MASKED",    "UNMASK_REQ", "UNMASK_RESP"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* ---------------------------------------------------------------- codec */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* A message under construction: a buffer of the exact size. */
typedef struct wr {
    uint8_t *p;
    size_t off, len;
} wr;

static int wr_start(wr *w, size_t body, unsigned type, uint64_t round, uint32_t from, uint32_t to, char *err,
                    size_t errlen)
{
    w->len = FEDC__SA_HEADER_BYTES + body;
    w->p = malloc(w->len);
    if (!w->p) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for a message");
    memcpy(w->p, "FSA1", 4);
    w->p[4] = (uint8_t)type;
    w->p[5] = w->p[6] = w->p[7] = 0;
    put_u64(w->p + 8, round);
    put_u32(w->p + 16, from);
    put_u32(w->p + 20, to);
    w->off = FEDC__SA_HEADER_BYTES;
    return FEDC_OK;
}
static void wr_u32(wr *w, uint32_t v)
{
    put_u32(w->p + w->off, v);
    w->off += 4;
}
static void wr_bytes(wr *w, const void *b, size_t n)
{
    memcpy(w->p + w->off, b, n);
    w->off += n;
}

/* A message being read: every read is checked against the length. */
typedef struct rd {
    const uint8_t *p;
    size_t off, len;
    const char *what; /* the message's type name, for errors */
} rd;

static int rd_need(rd *r, size_t n, const char *field, char *err, size_t errlen)
{
    if (r->len - r->off < n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message truncated: %s needs %zu bytes at offset %zu of %zu",
                              r->what, field, n, r->off, r->len);
    return FEDC_OK;
}
static uint32_t rd_u32(rd *r)
{
    uint32_t v = get_u32(r->p + r->off);
    r->off += 4;
    return v;
}
static const uint8_t *rd_bytes(rd *r, size_t n)
{
    const uint8_t *b = r->p + r->off;
    r->off += n;
    return b;
}
static int rd_end(const rd *r, char *err, size_t errlen)
{
    if (r->off != r->len)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: %s message has %zu trailing bytes",
                              r->what, r->len - r->off);
    return FEDC_OK;
}

/* Checks the header: magic, type, round, recipient, sender (a client
 * index < n when to is the server, else the server). */
static int rd_header(rd *r, const uint8_t *msg, size_t len, const fedc__sa_config *cfg, unsigned type,
                     uint32_t to, uint32_t *from, char *err, size_t errlen)
{
    r->p = msg;
    r->len = len;
    r->off = 0;
    r->what = type_name(type);
    if (!msg && len) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL message");
    if (len < FEDC__SA_HEADER_BYTES)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: message of %zu bytes is shorter than the %d-byte header", len,
                              FEDC__SA_HEADER_BYTES);
    if (memcmp(msg, "FSA1", 4) != 0 || msg[5] || msg[6] || msg[7])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: not a secure aggregation v1 message");
    if (msg[4] != type)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: got a %s message (type %u), expected %s", type_name(msg[4]), msg[4],
                              type_name(type));
    uint64_t round = get_u64(msg + 8);
    if (round != cfg->round)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message is for round %" PRIu64 ", this is round %" PRIu64, r->what,
                              round, cfg->round);
    uint32_t f = get_u32(msg + 16), t = get_u32(msg + 20);
    if (t != to)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message is addressed to %" PRIu32 ", not to %" PRIu32, r->what, t,
                              to);
    if (to == FEDC__SA_SERVER ? f >= cfg->n : f != FEDC__SA_SERVER)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message has sender %" PRIu32 " out of range (n = %" PRIu32 ")",
                              r->what, f, cfg->n);
    *from = f;
    r->off = FEDC__SA_HEADER_BYTES;
    return FEDC_OK;
}

/* Reads count (u32) then count strictly ascending indices < n into flags
 * (n bytes, zeroed first); *count gets the count. */
static int rd_index_set(rd *r, uint32_t n, uint8_t *flags, uint32_t *count, const char *field, char *err,
                        size_t errlen)
{
    int rc = rd_need(r, 4, field, err, errlen);
    if (rc) return rc;
    uint32_t c = rd_u32(r);
    if (c > n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message lists %" PRIu32 " clients in %s, more than n = %" PRIu32,
                              r->what, c, field, n);
    if ((rc = rd_need(r, (size_t)c * 4, field, err, errlen))) return rc;
    memset(flags, 0, n);
    int64_t prev = -1;
    for (uint32_t i = 0; i < c; i++) {
        uint32_t v = rd_u32(r);
        if (v >= n)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: %s message: index %" PRIu32 " in %s out of range (n = %" PRIu32
                                  ")",
                                  r->what, v, field, n);
        if ((int64_t)v <= prev)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: %s message: %s is not strictly ascending at index %" PRIu32,
                                  r->what, field, v);
        prev = v;
        flags[v] = 1;
    }
    *count = c;
    return FEDC_OK;
}

/* ---------------------------------------------------------------- config, graph */

int fedc__sa_check_config(const fedc__sa_config *cfg, char *err, size_t errlen)
{
    if (!cfg) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL configuration");
    if (cfg->n < 2 || cfg->n > FEDC__SA_MAX_CLIENTS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: n must be 2 .. %d, got %" PRIu32,
                              FEDC__SA_MAX_CLIENTS, cfg->n);
    if (cfg->k != cfg->n - 1 && (cfg->k < 2 || cfg->k % 2 || cfg->k > cfg->n - 2))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the neighbour count K must be n - 1 = %" PRIu32
                              " (complete graph) or even in 2 .. n - 2, got %" PRIu32,
                              cfg->n - 1, cfg->k);
    if (2ull * cfg->t <= cfg->k)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: t must be more than half the neighbours (t = %" PRIu32 ", K = %" PRIu32
                              ")",
                              cfg->t, cfg->k);
    if (cfg->t > cfg->k)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: t = %" PRIu32 " exceeds the neighbour count K = %" PRIu32, cfg->t,
                              cfg->k);
    if (cfg->dim < 1 || cfg->dim > FEDC__SA_MAX_DIM)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: dim must be 1 .. %u, got %" PRIu64,
                              FEDC__SA_MAX_DIM, cfg->dim);
    return FEDC_OK;
}

int fedc__sa_neighbours(const fedc__sa_config *cfg, uint8_t *adj, char *err, size_t errlen)
{
    int rc = fedc__sa_check_config(cfg, err, errlen);
    if (rc) return rc;
    if (!adj) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL adjacency buffer");
    uint32_t n = cfg->n;
    if (cfg->k == n - 1) {
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++) adj[i * n + j] = i != j;
        return FEDC_OK;
    }
    uint32_t w[FEDC__SA_MAX_CLIENTS], perm[FEDC__SA_MAX_CLIENTS], pos[FEDC__SA_MAX_CLIENTS];
    if (fedc__secagg_expand(cfg->graph_seed, cfg->round, w, n))
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = n - 1; i >= 1; i--) {
        uint32_t j = (uint32_t)(((uint64_t)w[i] * (i + 1)) >> 32);
        uint32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (uint32_t p = 0; p < n; p++) pos[perm[p]] = p;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++) {
            uint32_t d = pos[i] > pos[j] ? pos[i] - pos[j] : pos[j] - pos[i];
            if (n - d < d) d = n - d;
            adj[i * n + j] = d >= 1 && d <= cfg->k / 2;
        }
    return FEDC_OK;
}

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
    put_u64(ad, round);
    ad[8] = FEDC__SA_MSG_SHARES;
    put_u32(ad + 9, sender);
    put_u32(ad + 13, recipient);
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
    wr w;
    if ((rc =
             wr_start(&w, 2 * KB, FEDC__SA_MSG_ADVERTISE, c->cfg.round, c->me, FEDC__SA_SERVER, err, errlen)))
        return rc;
    wr_bytes(&w, c->c_pk, KB);
    wr_bytes(&w, c->s_pk, KB);
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
    rd r;
    if ((rc = rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_KEYS, c->me, &from, err, errlen))) return rc;
    if ((rc = rd_need(&r, 4, "count", err, errlen))) return rc;
    uint32_t count = rd_u32(&r);
    if (count > c->cfg.k)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: KEYS message lists %" PRIu32 " neighbours, more than K = %" PRIu32,
                              count, c->cfg.k);
    if ((rc = rd_need(&r, (size_t)count * (4 + 2 * KB), "key entries", err, errlen))) return rc;
    if ((rc = rd_end(&(rd){r.p, r.off + (size_t)count * (4 + 2 * KB), r.len, r.what}, err, errlen)))
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
        uint32_t j = rd_u32(&r);
        const uint8_t *cpk = rd_bytes(&r, KB), *spk = rd_bytes(&r, KB);
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
    wr w = {0};
    if (!sh) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for shares");
    rc = wr_start(&w, 4 + (size_t)count * (8 + FEDC__SA_CT_BYTES), FEDC__SA_MSG_SHARES, c->cfg.round, c->me,
                  FEDC__SA_SERVER, err, errlen);
    if (!rc) {
        randombytes_buf(c->b, KB);
        rc = fedc__shamir_split(c->b, KB, c->cfg.t, n, sh, err, errlen);
    }
    if (!rc) rc = fedc__shamir_split(c->s_sk, KB, c->cfg.t, n, sh + (size_t)n * KB, err, errlen);
    if (!rc) wr_u32(&w, count);
    r.off = start;
    for (uint32_t e = 0; !rc && e < count; e++) {
        uint32_t j = rd_u32(&r);
        const uint8_t *cpk = rd_bytes(&r, KB), *spk = rd_bytes(&r, KB);
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
        wr_u32(&w, j);
        wr_u32(&w, FEDC__SA_CT_BYTES);
        wr_bytes(&w, ct, FEDC__SA_CT_BYTES);
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
        c->u1[rd_u32(&r)] = 1;
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
    rd r;
    if ((rc = rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_SHARES_FWD, c->me, &from, err, errlen)))
        return rc;
    uint8_t *u2 = malloc(n), *got = calloc(n, 1), *held = calloc(n, PT_BYTES);
    uint8_t *outbuf = NULL;
    if (!u2 || !got || !held) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
        goto done;
    }
    if ((rc = rd_index_set(&r, n, u2, &n2, "U2", err, errlen))) goto done;
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
    if ((rc = rd_need(&r, 4, "count", err, errlen))) goto done;
    uint32_t count = rd_u32(&r);
    if (count != nb_u2) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                            "secagg: SHARES_FWD message has %" PRIu32 " ciphertexts for client %" PRIu32
                            ", expected one from each of its %" PRIu32 " neighbours in U2",
                            count, c->me, nb_u2);
        goto done;
    }
    for (uint32_t e = 0; e < count; e++) {
        if ((rc = rd_need(&r, 8, "ciphertext entry", err, errlen))) goto done;
        uint32_t j = rd_u32(&r), len = rd_u32(&r);
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
        if ((rc = rd_need(&r, len, "ciphertext", err, errlen))) goto done;
        const uint8_t *ct = rd_bytes(&r, len);
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
    if ((rc = rd_end(&r, err, errlen))) goto done;
    /* y = q + PRG(b) + sum sign PRG(s_ij) */
    wr w;
    if ((rc = wr_start(&w, 8 + (size_t)dim * 4, FEDC__SA_MSG_MASKED, c->cfg.round, c->me, FEDC__SA_SERVER,
                       err, errlen)))
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
        put_u64(w.p + w.off, dim);
        w.off += 8;
        for (size_t i = 0; i < dim; i++) put_u32(w.p + w.off + 4 * i, y[i]);
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
    rd r;
    if ((rc = rd_header(&r, in, inlen, &c->cfg, FEDC__SA_MSG_UNMASK_REQ, c->me, &from, err, errlen)))
        return rc;
    uint8_t *u3 = malloc(n), *dr = malloc(n);
    if (!u3 || !dr) {
        free(u3);
        free(dr);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
    }
    wr w = {0};
    if ((rc = rd_index_set(&r, n, u3, &n3, "U3", err, errlen))) goto done;
    if ((rc = rd_index_set(&r, n, dr, &nd, "D", err, errlen))) goto done;
    if ((rc = rd_end(&r, err, errlen))) goto done;
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
    if ((rc = wr_start(&w, 4 + (size_t)count * RESP_ENTRY, FEDC__SA_MSG_UNMASK_RESP, c->cfg.round, c->me,
                       FEDC__SA_SERVER, err, errlen)))
        goto done;
    wr_u32(&w, count);
    for (uint32_t j = 0; j < n; j++) {
        if (!c->has_held[j]) continue;
        int b = u3[j];
        wr_u32(&w, j);
        w.p[w.off++] = b ? FEDC__SA_SHARE_B : FEDC__SA_SHARE_S;
        wr_bytes(&w, c->held + (size_t)j * PT_BYTES + (b ? 0 : KB), KB);
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

/* ---------------------------------------------------------------- server */

struct fedc__sa_server {
    fedc__sa_config cfg;
    int stage;
    uint8_t *adj;               /* n * n */
    uint8_t *u1, *u2, *u3, *u4; /* n each */
    uint8_t *pk_c, *pk_s;       /* n * KB */
    uint8_t *ct, *has_ct;       /* [sender * n + recipient]: CT bytes, flag */
    uint32_t *sum;              /* dim */
    uint8_t *sh, *has_sh;       /* [owner * n + holder]: KB bytes, flag */
    uint32_t *cnt_b, *cnt_s;    /* n */
};

void fedc__sa_server_destroy(fedc__sa_server *s)
{
    if (!s) return;
    size_t n = s->cfg.n;
    if (s->sh) sodium_memzero(s->sh, n * n * KB);
    free(s->adj);
    free(s->u1);
    free(s->u2);
    free(s->u3);
    free(s->u4);
    free(s->pk_c);
    free(s->pk_s);
    free(s->ct);
    free(s->has_ct);
    free(s->sum);
    free(s->sh);
    free(s->has_sh);
    free(s->cnt_b);
    free(s->cnt_s);
    free(s);
}

int fedc__sa_server_create(const fedc__sa_config *cfg, fedc__sa_server **out, char *err, size_t errlen)
{
    if (!out) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL output pointer");
    *out = NULL;
    int rc = fedc__sa_check_config(cfg, err, errlen);
    if (rc) return rc;
    if (sodium_init() < 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: libsodium init failed");
    size_t n = cfg->n;
    fedc__sa_server *s = calloc(1, sizeof *s);
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for the server");
    s->cfg = *cfg;
    s->adj = malloc(n * n);
    s->u1 = calloc(n, 1);
    s->u2 = calloc(n, 1);
    s->u3 = calloc(n, 1);
    s->u4 = calloc(n, 1);
    s->pk_c = calloc(n, KB);
    s->pk_s = calloc(n, KB);
    s->ct = malloc(n * n * FEDC__SA_CT_BYTES);
    s->has_ct = calloc(n * n, 1);
    s->sum = calloc(cfg->dim, 4);
    s->sh = calloc(n * n, KB);
    s->has_sh = calloc(n * n, 1);
    s->cnt_b = calloc(n, 4);
    s->cnt_s = calloc(n, 4);
    if (!s->adj || !s->u1 || !s->u2 || !s->u3 || !s->u4 || !s->pk_c || !s->pk_s || !s->ct || !s->has_ct ||
        !s->sum || !s->sh || !s->has_sh || !s->cnt_b || !s->cnt_s) {
        fedc__sa_server_destroy(s);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for the server");
    }
    rc = fedc__sa_neighbours(cfg, s->adj, err, errlen);
    if (rc) {
        fedc__sa_server_destroy(s);
        return rc;
    }
    s->stage = FEDC__SA_STAGE_ADVERTISE;
    *out = s;
    return FEDC_OK;
}

int fedc__sa_server_stage(const fedc__sa_server *s)
{
    return s ? s->stage : 0;
}

void fedc__sa_server_share_counts(const fedc__sa_server *s, uint32_t j, uint32_t *n_b, uint32_t *n_s)
{
    int ok = s && j < s->cfg.n;
    if (n_b) *n_b = ok ? s->cnt_b[j] : 0;
    if (n_s) *n_s = ok ? s->cnt_s[j] : 0;
}

static uint32_t count_set(const uint8_t *f, uint32_t n)
{
    uint32_t c = 0;
    for (uint32_t i = 0; i < n; i++) c += f[i] != 0;
    return c;
}

static int recv_advertise(fedc__sa_server *s, rd *r, uint32_t i, char *err, size_t errlen)
{
    int rc = rd_need(r, 2 * KB, "keys", err, errlen);
    if (rc) return rc;
    const uint8_t *cpk = rd_bytes(r, KB), *spk = rd_bytes(r, KB);
    if ((rc = rd_end(r, err, errlen))) return rc;
    if (sodium_memcmp(cpk, spk, KB) == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: ADVERTISE message: client %" PRIu32 " sent the same key twice", i);
    memcpy(s->pk_c + (size_t)i * KB, cpk, KB);
    memcpy(s->pk_s + (size_t)i * KB, spk, KB);
    s->u1[i] = 1;
    return FEDC_OK;
}

static int recv_shares(fedc__sa_server *s, rd *r, uint32_t i, char *err, size_t errlen)
{
    uint32_t n = s->cfg.n;
    if (!s->u1[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: SHARES message from client %" PRIu32 ", which did not advertise keys",
                              i);
    int rc = rd_need(r, 4, "count", err, errlen);
    if (rc) return rc;
    uint32_t count = rd_u32(r), want = 0;
    for (uint32_t j = 0; j < n; j++) want += s->u1[j] && s->adj[(size_t)i * n + j];
    if (count != want)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: SHARES message from client %" PRIu32 " has %" PRIu32
                              " ciphertexts, expected %" PRIu32 " (its neighbours that advertised)",
                              i, count, want);
    if ((rc = rd_need(r, (size_t)count * (8 + FEDC__SA_CT_BYTES), "ciphertexts", err, errlen))) return rc;
    size_t start = r->off;
    int64_t prev = -1;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = rd_u32(r), len = rd_u32(r);
        if (j >= n || !s->adj[(size_t)i * n + j] || !s->u1[j])
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: SHARES message from client %" PRIu32 ": recipient %" PRIu32
                                  " is not a neighbour that advertised",
                                  i, j);
        if ((int64_t)j <= prev)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: SHARES message from client %" PRIu32
                                  ": recipients not strictly ascending at %" PRIu32,
                                  i, j);
        prev = j;
        if (len != FEDC__SA_CT_BYTES)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: SHARES message from client %" PRIu32 ": ciphertext for %" PRIu32
                                  " has %" PRIu32 " bytes, expected %d",
                                  i, j, len, FEDC__SA_CT_BYTES);
        r->off += FEDC__SA_CT_BYTES;
    }
    if ((rc = rd_end(r, err, errlen))) return rc;
    r->off = start;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = rd_u32(r);
        r->off += 4;
        memcpy(s->ct + ((size_t)i * n + j) * FEDC__SA_CT_BYTES, rd_bytes(r, FEDC__SA_CT_BYTES),
               FEDC__SA_CT_BYTES);
        s->has_ct[(size_t)i * n + j] = 1;
    }
    s->u2[i] = 1;
    return FEDC_OK;
}

static int recv_masked(fedc__sa_server *s, rd *r, uint32_t i, char *err, size_t errlen)
{
    if (!s->u2[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: MASKED message from client %" PRIu32 ", which did not share keys", i);
    int rc = rd_need(r, 8, "dim", err, errlen);
    if (rc) return rc;
    uint64_t dim = get_u64(rd_bytes(r, 8));
    if (dim != s->cfg.dim)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: MASKED message from client %" PRIu32 " has dimension %" PRIu64
                              ", expected %" PRIu64,
                              i, dim, s->cfg.dim);
    if ((rc = rd_need(r, (size_t)dim * 4, "values", err, errlen))) return rc;
    const uint8_t *v = rd_bytes(r, (size_t)dim * 4);
    if ((rc = rd_end(r, err, errlen))) return rc;
    for (size_t k = 0; k < dim; k++) s->sum[k] += get_u32(v + 4 * k);
    s->u3[i] = 1;
    return FEDC_OK;
}

static int recv_unmask(fedc__sa_server *s, rd *r, uint32_t i, char *err, size_t errlen)
{
    uint32_t n = s->cfg.n;
    if (!s->u3[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: UNMASK_RESP message from client %" PRIu32 ", which is not a survivor",
                              i);
    int rc = rd_need(r, 4, "count", err, errlen);
    if (rc) return rc;
    uint32_t count = rd_u32(r);
    if (count > n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: UNMASK_RESP: too many shares");
    if ((rc = rd_need(r, (size_t)count * RESP_ENTRY, "shares", err, errlen))) return rc;
    size_t start = r->off;
    int64_t prev = -1;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = rd_u32(r);
        uint8_t kind = *rd_bytes(r, 1);
        r->off += KB;
        if (j >= n || !s->adj[(size_t)i * n + j] || !s->u2[j])
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: UNMASK_RESP message from client %" PRIu32 ": owner %" PRIu32
                                  " is not a neighbour in U2",
                                  i, j);
        if ((int64_t)j <= prev)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: UNMASK_RESP message from client %" PRIu32
                                  ": owners not strictly ascending at %" PRIu32,
                                  i, j);
        prev = j;
        uint8_t want = s->u3[j] ? FEDC__SA_SHARE_B : FEDC__SA_SHARE_S;
        if (kind != want)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: UNMASK_RESP message from client %" PRIu32
                                  ": a share of kind %u for client %" PRIu32
                                  ", which is %s (only %s shares are accepted)",
                                  i, kind, j, s->u3[j] ? "a survivor" : "dropped", s->u3[j] ? "b" : "s_sk");
    }
    if ((rc = rd_end(r, err, errlen))) return rc;
    r->off = start;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = rd_u32(r);
        r->off += 1;
        memcpy(s->sh + ((size_t)j * n + i) * KB, rd_bytes(r, KB), KB);
        s->has_sh[(size_t)j * n + i] = 1;
        if (s->u3[j])
            s->cnt_b[j]++;
        else
            s->cnt_s[j]++;
    }
    s->u4[i] = 1;
    return FEDC_OK;
}

int fedc__sa_server_recv(fedc__sa_server *s, const uint8_t *msg, size_t len, char *err, size_t errlen)
{
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL server");
    static const unsigned want_type[] = {0, FEDC__SA_MSG_ADVERTISE, FEDC__SA_MSG_SHARES, FEDC__SA_MSG_MASKED,
                                         FEDC__SA_MSG_UNMASK_RESP};
    if (s->stage < FEDC__SA_STAGE_ADVERTISE || s->stage > FEDC__SA_STAGE_UNMASK)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: the round is over; no more messages");
    unsigned type = want_type[s->stage];
    rd r;
    uint32_t i = 0;
    int rc = rd_header(&r, msg, len, &s->cfg, type, FEDC__SA_SERVER, &i, err, errlen);
    if (rc) return rc;
    uint8_t *seen = s->stage == FEDC__SA_STAGE_ADVERTISE ? s->u1
                    : s->stage == FEDC__SA_STAGE_SHARE   ? s->u2
                    : s->stage == FEDC__SA_STAGE_MASKED  ? s->u3
                                                         : s->u4;
    if (seen[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: a second %s message from client %" PRIu32, type_name(type), i);
    switch (s->stage) {
    case FEDC__SA_STAGE_ADVERTISE: return recv_advertise(s, &r, i, err, errlen);
    case FEDC__SA_STAGE_SHARE: return recv_shares(s, &r, i, err, errlen);
    case FEDC__SA_STAGE_MASKED: return recv_masked(s, &r, i, err, errlen);
    default: return recv_unmask(s, &r, i, err, errlen);
    }
}

int fedc__sa_server_advance(fedc__sa_server *s, char *err, size_t errlen)
{
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL server");
    uint32_t n = s->cfg.n, t = s->cfg.t;
    const char *what;
    uint32_t have, need;
    switch (s->stage) {
    case FEDC__SA_STAGE_ADVERTISE: what = "advertised keys", have = count_set(s->u1, n), need = t + 1; break;
    case FEDC__SA_STAGE_SHARE: what = "shared keys", have = count_set(s->u2, n), need = t + 1; break;
    case FEDC__SA_STAGE_MASKED: what = "sent masked inputs", have = count_set(s->u3, n), need = t; break;
    default:
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: advance called in stage %d (the unmask stage ends with finish)",
                              s->stage);
    }
    if (have < need) {
        s->stage = FEDC__SA_STAGE_DONE;
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: round %" PRIu64 " aborted: only %" PRIu32 " clients %s, need %" PRIu32,
                              s->cfg.round, have, what, need);
    }
    s->stage++;
    return FEDC_OK;
}

int fedc__sa_server_message_for(fedc__sa_server *s, uint32_t j, uint8_t **out, size_t *outlen, char *err,
                                size_t errlen)
{
    if (!s || !out || !outlen) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL argument");
    uint32_t n = s->cfg.n;
    if (j >= n)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: client index %" PRIu32 " out of range (n = %" PRIu32 ")", j, n);
    const uint8_t *row = s->adj + (size_t)j * n;
    wr w;
    int rc;
    switch (s->stage) {
    case FEDC__SA_STAGE_SHARE: {
        if (!s->u1[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " did not advertise", j);
        uint32_t count = 0;
        for (uint32_t i = 0; i < n; i++) count += row[i] && s->u1[i];
        if ((rc = wr_start(&w, 4 + (size_t)count * (4 + 2 * KB), FEDC__SA_MSG_KEYS, s->cfg.round,
                           FEDC__SA_SERVER, j, err, errlen)))
            return rc;
        wr_u32(&w, count);
        for (uint32_t i = 0; i < n; i++)
            if (row[i] && s->u1[i]) {
                wr_u32(&w, i);
                wr_bytes(&w, s->pk_c + (size_t)i * KB, KB);
                wr_bytes(&w, s->pk_s + (size_t)i * KB, KB);
            }
        break;
    }
    case FEDC__SA_STAGE_MASKED: {
        if (!s->u2[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " did not share keys", j);
        uint32_t n2 = count_set(s->u2, n), count = 0;
        for (uint32_t i = 0; i < n; i++) count += s->u2[i] && s->has_ct[(size_t)i * n + j];
        if ((rc = wr_start(&w, 8 + (size_t)n2 * 4 + (size_t)count * (8 + FEDC__SA_CT_BYTES),
                           FEDC__SA_MSG_SHARES_FWD, s->cfg.round, FEDC__SA_SERVER, j, err, errlen)))
            return rc;
        wr_u32(&w, n2);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i]) wr_u32(&w, i);
        wr_u32(&w, count);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i] && s->has_ct[(size_t)i * n + j]) {
                wr_u32(&w, i);
                wr_u32(&w, FEDC__SA_CT_BYTES);
                wr_bytes(&w, s->ct + ((size_t)i * n + j) * FEDC__SA_CT_BYTES, FEDC__SA_CT_BYTES);
            }
        break;
    }
    case FEDC__SA_STAGE_UNMASK: {
        if (!s->u3[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " is not a survivor", j);
        uint32_t n2 = count_set(s->u2, n), n3 = count_set(s->u3, n);
        if ((rc = wr_start(&w, 8 + (size_t)n2 * 4, FEDC__SA_MSG_UNMASK_REQ, s->cfg.round, FEDC__SA_SERVER, j,
                           err, errlen)))
            return rc;
        wr_u32(&w, n3);
        for (uint32_t i = 0; i < n; i++)
            if (s->u3[i]) wr_u32(&w, i);
        wr_u32(&w, n2 - n3);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i] && !s->u3[i]) wr_u32(&w, i);
        break;
    }
    default:
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the server sends no message in stage %d", s->stage);
    }
    *out = w.p;
    *outlen = w.len;
    return FEDC_OK;
}

/* Combines the shares of owner j held by U4 members into secret. */
static int reconstruct(fedc__sa_server *s, uint32_t j, uint8_t secret[KB], char *err, size_t errlen)
{
    uint32_t n = s->cfg.n, m = 0;
    uint8_t xs[FEDC__SA_MAX_CLIENTS];
    uint8_t *buf = malloc((size_t)n * KB);
    if (!buf) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory");
    for (uint32_t h = 0; h < n; h++)
        if (s->has_sh[(size_t)j * n + h]) {
            memcpy(buf + (size_t)m * KB, s->sh + ((size_t)j * n + h) * KB, KB);
            xs[m++] = (uint8_t)(h + 1);
        }
    int rc = fedc__shamir_combine(buf, xs, m, KB, secret, err, errlen);
    sodium_memzero(buf, (size_t)n * KB);
    free(buf);
    return rc;
}

int fedc__sa_server_finish(fedc__sa_server *s, uint32_t *sum, size_t dim, uint32_t *survivors, char *err,
                           size_t errlen)
{
    if (!s || !sum) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL argument");
    if (s->stage != FEDC__SA_STAGE_UNMASK)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: finish called in stage %d, not unmask",
                              s->stage);
    if (dim != s->cfg.dim)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: output has dimension %zu, the round's is %" PRIu64, dim, s->cfg.dim);
    uint32_t n = s->cfg.n, t = s->cfg.t;
    int rc = FEDC_OK;
    s->stage = FEDC__SA_STAGE_DONE;
    for (uint32_t j = 0; j < n && !rc; j++) {
        if (s->u3[j] && s->cnt_b[j] < t)
            rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                "secagg: round %" PRIu64 " aborted: %" PRIu32 " shares of survivor %" PRIu32
                                "'s self-mask seed, the threshold is %" PRIu32,
                                s->cfg.round, s->cnt_b[j], j, t);
        else if (s->u2[j] && !s->u3[j] && s->cnt_s[j] < t)
            rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                "secagg: round %" PRIu64 " aborted: %" PRIu32
                                " shares of dropped client %" PRIu32 "'s mask key, the threshold is %" PRIu32,
                                s->cfg.round, s->cnt_s[j], j, t);
    }
    for (uint32_t j = 0; j < n && !rc; j++) {
        uint8_t secret[KB];
        if (s->u3[j]) {
            rc = reconstruct(s, j, secret, err, errlen);
            if (!rc && fedc__secagg_apply_mask(s->sum, dim, secret, s->cfg.round, -1))
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
        } else if (s->u2[j]) {
            uint8_t pk[KB];
            rc = reconstruct(s, j, secret, err, errlen);
            if (!rc) {
                crypto_scalarmult_base(pk, secret);
                if (sodium_memcmp(pk, s->pk_s + (size_t)j * KB, KB) != 0)
                    rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                        "secagg: round %" PRIu64
                                        " aborted: the shares of dropped client %" PRIu32
                                        "'s mask key do not match its public key",
                                        s->cfg.round, j);
            }
            for (uint32_t k = 0; k < n && !rc; k++) {
                if (!s->u3[k] || !s->adj[(size_t)j * n + k]) continue;
                uint8_t pair[KB];
                rc = fedc__secagg_agree(secret, s->pk_s + (size_t)k * KB, s->pk_s + (size_t)j * KB, pair, err,
                                        errlen);
                /* k applied sign(k, j) PRG(s_kj): remove it */
                if (!rc &&
                    fedc__secagg_apply_mask(s->sum, dim, pair, s->cfg.round, -fedc__secagg_pair_sign(k, j)))
                    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
                sodium_memzero(pair, sizeof pair);
            }
        }
        sodium_memzero(secret, sizeof secret);
    }
    sodium_memzero(s->sh, (size_t)n * n * KB);
    if (!rc) {
        memcpy(sum, s->sum, dim * 4);
        if (survivors) *survivors = count_set(s->u3, n);
    }
    memset(s->sum, 0, dim * 4);
    return rc;
}

/* ---- defaults ---- */

double fedc__sa_too_few_neighbours(uint32_t k)
{
    double p = 0;
    for (uint32_t i = 0; i <= k / 2; i++) {
        double lg = lgamma(k + 1.0) - lgamma(i + 1.0) - lgamma(k - i + 1.0);
        p += exp(lg + i * log(2.0 / 3) + (k - i) * log(1.0 / 3));
    }
    return p;
}

uint32_t fedc__sa_default_neighbours(uint32_t n)
{
    if (n < 2) return 0;
    uint32_t k = 2;
    while (k < n - 1 && fedc__sa_too_few_neighbours(k) > 1e-6) k += 2;
    return k < n - 1 ? k : n - 1;
}

unsigned fedc__sa_default_bits(uint32_t n)
{
    unsigned b = 24;
    while (b > 1 && (uint64_t)n * ((1ull << b) - 1) >= (1ull << 32)) b--;
    return b;
}
