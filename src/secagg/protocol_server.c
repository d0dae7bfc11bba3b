/* The server side of secure aggregation (protocol.h): the server's state
 * for a round, the client messages it takes in each stage, the messages it
 * sends each client, and the unmasking of the survivors' sum. */
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

#define KB FEDC_SECAGG_KEY_BYTES

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

const fedc__sa_config *fedc__sa_server_config(const fedc__sa_server *s)
{
    return s ? &s->cfg : NULL;
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

static int recv_advertise(fedc__sa_server *s, fedc__sa_reader *r, uint32_t i, char *err, size_t errlen)
{
    int rc = fedc__sa_rd_need(r, 2 * KB, "keys", err, errlen);
    if (rc) return rc;
    const uint8_t *cpk = fedc__sa_rd_bytes(r, KB), *spk = fedc__sa_rd_bytes(r, KB);
    if ((rc = fedc__sa_rd_end(r, err, errlen))) return rc;
    if (sodium_memcmp(cpk, spk, KB) == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: ADVERTISE message: client %" PRIu32 " sent the same key twice", i);
    memcpy(s->pk_c + (size_t)i * KB, cpk, KB);
    memcpy(s->pk_s + (size_t)i * KB, spk, KB);
    s->u1[i] = 1;
    return FEDC_OK;
}

static int recv_shares(fedc__sa_server *s, fedc__sa_reader *r, uint32_t i, char *err, size_t errlen)
{
    uint32_t n = s->cfg.n;
    if (!s->u1[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: SHARES message from client %" PRIu32 ", which did not advertise keys",
                              i);
    int rc = fedc__sa_rd_need(r, 4, "count", err, errlen);
    if (rc) return rc;
    uint32_t count = fedc__sa_rd_u32(r), want = 0;
    for (uint32_t j = 0; j < n; j++) want += s->u1[j] && s->adj[(size_t)i * n + j];
    if (count != want)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: SHARES message from client %" PRIu32 " has %" PRIu32
                              " ciphertexts, expected %" PRIu32 " (its neighbours that advertised)",
                              i, count, want);
    if ((rc = fedc__sa_rd_need(r, (size_t)count * (8 + FEDC__SA_CT_BYTES), "ciphertexts", err, errlen)))
        return rc;
    size_t start = r->off;
    int64_t prev = -1;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(r), len = fedc__sa_rd_u32(r);
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
    if ((rc = fedc__sa_rd_end(r, err, errlen))) return rc;
    r->off = start;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(r);
        r->off += 4;
        memcpy(s->ct + ((size_t)i * n + j) * FEDC__SA_CT_BYTES, fedc__sa_rd_bytes(r, FEDC__SA_CT_BYTES),
               FEDC__SA_CT_BYTES);
        s->has_ct[(size_t)i * n + j] = 1;
    }
    s->u2[i] = 1;
    return FEDC_OK;
}

static int recv_masked(fedc__sa_server *s, fedc__sa_reader *r, uint32_t i, char *err, size_t errlen)
{
    if (!s->u2[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: MASKED message from client %" PRIu32 ", which did not share keys", i);
    int rc = fedc__sa_rd_need(r, 8, "dim", err, errlen);
    if (rc) return rc;
    uint64_t dim = fedc__sa_get_u64(fedc__sa_rd_bytes(r, 8));
    if (dim != s->cfg.dim)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: MASKED message from client %" PRIu32 " has dimension %" PRIu64
                              ", expected %" PRIu64,
                              i, dim, s->cfg.dim);
    if ((rc = fedc__sa_rd_need(r, (size_t)dim * 4, "values", err, errlen))) return rc;
    const uint8_t *v = fedc__sa_rd_bytes(r, (size_t)dim * 4);
    if ((rc = fedc__sa_rd_end(r, err, errlen))) return rc;
    for (size_t k = 0; k < dim; k++) s->sum[k] += fedc__sa_get_u32(v + 4 * k);
    s->u3[i] = 1;
    return FEDC_OK;
}

static int recv_unmask(fedc__sa_server *s, fedc__sa_reader *r, uint32_t i, char *err, size_t errlen)
{
    uint32_t n = s->cfg.n;
    if (!s->u3[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: UNMASK_RESP message from client %" PRIu32 ", which is not a survivor",
                              i);
    int rc = fedc__sa_rd_need(r, 4, "count", err, errlen);
    if (rc) return rc;
    uint32_t count = fedc__sa_rd_u32(r);
    if (count > n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: UNMASK_RESP: too many shares");
    if ((rc = fedc__sa_rd_need(r, (size_t)count * FEDC__SA_RESP_ENTRY, "shares", err, errlen))) return rc;
    size_t start = r->off;
    int64_t prev = -1;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(r);
        uint8_t kind = *fedc__sa_rd_bytes(r, 1);
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
    if ((rc = fedc__sa_rd_end(r, err, errlen))) return rc;
    r->off = start;
    for (uint32_t e = 0; e < count; e++) {
        uint32_t j = fedc__sa_rd_u32(r);
        r->off += 1;
        memcpy(s->sh + ((size_t)j * n + i) * KB, fedc__sa_rd_bytes(r, KB), KB);
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
    fedc__sa_reader r;
    uint32_t i = 0;
    int rc = fedc__sa_rd_header(&r, msg, len, &s->cfg, type, FEDC__SA_SERVER, &i, err, errlen);
    if (rc) return rc;
    uint8_t *seen = s->stage == FEDC__SA_STAGE_ADVERTISE ? s->u1
                    : s->stage == FEDC__SA_STAGE_SHARE   ? s->u2
                    : s->stage == FEDC__SA_STAGE_MASKED  ? s->u3
                                                         : s->u4;
    if (seen[i])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: a second %s message from client %" PRIu32, fedc__sa_type_name(type),
                              i);
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
    fedc__sa_writer w;
    int rc;
    switch (s->stage) {
    case FEDC__SA_STAGE_SHARE: {
        if (!s->u1[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " did not advertise", j);
        uint32_t count = 0;
        for (uint32_t i = 0; i < n; i++) count += row[i] && s->u1[i];
        if ((rc = fedc__sa_wr_start(&w, 4 + (size_t)count * (4 + 2 * KB), FEDC__SA_MSG_KEYS, s->cfg.round,
                                    FEDC__SA_SERVER, j, err, errlen)))
            return rc;
        fedc__sa_wr_u32(&w, count);
        for (uint32_t i = 0; i < n; i++)
            if (row[i] && s->u1[i]) {
                fedc__sa_wr_u32(&w, i);
                fedc__sa_wr_bytes(&w, s->pk_c + (size_t)i * KB, KB);
                fedc__sa_wr_bytes(&w, s->pk_s + (size_t)i * KB, KB);
            }
        break;
    }
    case FEDC__SA_STAGE_MASKED: {
        if (!s->u2[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " did not share keys", j);
        uint32_t n2 = count_set(s->u2, n), count = 0;
        for (uint32_t i = 0; i < n; i++) count += s->u2[i] && s->has_ct[(size_t)i * n + j];
        if ((rc = fedc__sa_wr_start(&w, 8 + (size_t)n2 * 4 + (size_t)count * (8 + FEDC__SA_CT_BYTES),
                                    FEDC__SA_MSG_SHARES_FWD, s->cfg.round, FEDC__SA_SERVER, j, err, errlen)))
            return rc;
        fedc__sa_wr_u32(&w, n2);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i]) fedc__sa_wr_u32(&w, i);
        fedc__sa_wr_u32(&w, count);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i] && s->has_ct[(size_t)i * n + j]) {
                fedc__sa_wr_u32(&w, i);
                fedc__sa_wr_u32(&w, FEDC__SA_CT_BYTES);
                fedc__sa_wr_bytes(&w, s->ct + ((size_t)i * n + j) * FEDC__SA_CT_BYTES, FEDC__SA_CT_BYTES);
            }
        break;
    }
    case FEDC__SA_STAGE_UNMASK: {
        if (!s->u3[j])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "secagg: client %" PRIu32 " is not a survivor", j);
        uint32_t n2 = count_set(s->u2, n), n3 = count_set(s->u3, n);
        if ((rc = fedc__sa_wr_start(&w, 8 + (size_t)n2 * 4, FEDC__SA_MSG_UNMASK_REQ, s->cfg.round,
                                    FEDC__SA_SERVER, j, err, errlen)))
            return rc;
        fedc__sa_wr_u32(&w, n3);
        for (uint32_t i = 0; i < n; i++)
            if (s->u3[i]) fedc__sa_wr_u32(&w, i);
        fedc__sa_wr_u32(&w, n2 - n3);
        for (uint32_t i = 0; i < n; i++)
            if (s->u2[i] && !s->u3[i]) fedc__sa_wr_u32(&w, i);
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
