/* The message codec of secure aggregation (protocol.h, "Messages"): the
 * header every message starts with, the writer and the checked reader that
 * protocol_client.c and protocol_server.c build and parse their messages
 * with (protocol_internal.h). */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "secagg/protocol_internal.h"

const char *fedc__sa_type_name(unsigned t)
{
    static const char *names[] = {"unknown",    "ADVERTISE", "KEYS",       "SHARES",
                                  "SHARES_FWD", "MASKED",    "UNMASK_REQ", "UNMASK_RESP"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

int fedc__sa_wr_start(fedc__sa_writer *w, size_t body, unsigned type, uint64_t round, uint32_t from,
                      uint32_t to, char *err, size_t errlen)
{
    w->len = FEDC__SA_HEADER_BYTES + body;
    w->p = malloc(w->len);
    if (!w->p) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory for a message");
    memcpy(w->p, "FSA1", 4);
    w->p[4] = (uint8_t)type;
    w->p[5] = w->p[6] = w->p[7] = 0;
    fedc__sa_put_u64(w->p + 8, round);
    fedc__sa_put_u32(w->p + 16, from);
    fedc__sa_put_u32(w->p + 20, to);
    w->off = FEDC__SA_HEADER_BYTES;
    return FEDC_OK;
}

int fedc__sa_rd_need(fedc__sa_reader *r, size_t n, const char *field, char *err, size_t errlen)
{
    if (r->len - r->off < n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message truncated: %s needs %zu bytes at offset %zu of %zu",
                              r->what, field, n, r->off, r->len);
    return FEDC_OK;
}

int fedc__sa_rd_end(const fedc__sa_reader *r, char *err, size_t errlen)
{
    if (r->off != r->len)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: %s message has %zu trailing bytes",
                              r->what, r->len - r->off);
    return FEDC_OK;
}

int fedc__sa_rd_header(fedc__sa_reader *r, const uint8_t *msg, size_t len, const fedc__sa_config *cfg,
                       unsigned type, uint32_t to, uint32_t *from, char *err, size_t errlen)
{
    r->p = msg;
    r->len = len;
    r->off = 0;
    r->what = fedc__sa_type_name(type);
    if (!msg && len) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL message");
    if (len < FEDC__SA_HEADER_BYTES)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: message of %zu bytes is shorter than the %d-byte header", len,
                              FEDC__SA_HEADER_BYTES);
    if (memcmp(msg, "FSA1", 4) != 0 || msg[5] || msg[6] || msg[7])
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg: not a secure aggregation v1 message");
    if (msg[4] != type)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: got a %s message (type %u), expected %s", fedc__sa_type_name(msg[4]),
                              msg[4], fedc__sa_type_name(type));
    uint64_t round = fedc__sa_get_u64(msg + 8);
    if (round != cfg->round)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message is for round %" PRIu64 ", this is round %" PRIu64, r->what,
                              round, cfg->round);
    uint32_t f = fedc__sa_get_u32(msg + 16), t = fedc__sa_get_u32(msg + 20);
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

int fedc__sa_rd_index_set(fedc__sa_reader *r, uint32_t n, uint8_t *flags, uint32_t *count, const char *field,
                          char *err, size_t errlen)
{
    int rc = fedc__sa_rd_need(r, 4, field, err, errlen);
    if (rc) return rc;
    uint32_t c = fedc__sa_rd_u32(r);
    if (c > n)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg: %s message lists %" PRIu32 " clients in %s, more than n = %" PRIu32,
                              r->what, c, field, n);
    if ((rc = fedc__sa_rd_need(r, (size_t)c * 4, field, err, errlen))) return rc;
    memset(flags, 0, n);
    int64_t prev = -1;
    for (uint32_t i = 0; i < c; i++) {
        uint32_t v = fedc__sa_rd_u32(r);
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
