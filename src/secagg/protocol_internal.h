/* What the two sides of the secure aggregation protocol (protocol.h) share
 * inside src/secagg: the message codec of protocol_codec.c, a writer that
 * builds a message of the exact size and a reader that checks every read
 * against the length, over the little-endian integers of the wire format.
 * Private to protocol_client.c, protocol_server.c and protocol_codec.c. */
#ifndef FEDC_SECAGG_PROTOCOL_INTERNAL_H
#define FEDC_SECAGG_PROTOCOL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "secagg/masking.h"
#include "secagg/protocol.h"

/* One entry of UNMASK_RESP: owner (u32), kind (u8), share. */
#define FEDC__SA_RESP_ENTRY (4 + 1 + FEDC_SECAGG_KEY_BYTES)

/* The name of a message type (fedc__sa_msg_type), for errors. */
const char *fedc__sa_type_name(unsigned t);

/* The wire format's integers, little-endian. */
static inline void fedc__sa_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fedc__sa_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t fedc__sa_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fedc__sa_get_u64(const uint8_t *p)
{
    return (uint64_t)fedc__sa_get_u32(p) | (uint64_t)fedc__sa_get_u32(p + 4) << 32;
}

/* A message under construction: a buffer of the exact size. */
typedef struct fedc__sa_writer {
    uint8_t *p;
    size_t off, len;
} fedc__sa_writer;

/* Starts a message of type with the given body size: allocates the exact
 * buffer (the caller frees w->p) and writes the header. */
int fedc__sa_wr_start(fedc__sa_writer *w, size_t body, unsigned type, uint64_t round, uint32_t from,
                      uint32_t to, char *err, size_t errlen);
static inline void fedc__sa_wr_u32(fedc__sa_writer *w, uint32_t v)
{
    fedc__sa_put_u32(w->p + w->off, v);
    w->off += 4;
}
static inline void fedc__sa_wr_bytes(fedc__sa_writer *w, const void *b, size_t n)
{
    memcpy(w->p + w->off, b, n);
    w->off += n;
}

/* A message being read: every read is checked against the length. */
typedef struct fedc__sa_reader {
    const uint8_t *p;
    size_t off, len;
    const char *what; /* the message's type name, for errors */
} fedc__sa_reader;

/* FEDC_ERR_PROTOCOL unless n more bytes remain (field names them). */
int fedc__sa_rd_need(fedc__sa_reader *r, size_t n, const char *field, char *err, size_t errlen);
static inline uint32_t fedc__sa_rd_u32(fedc__sa_reader *r)
{
    uint32_t v = fedc__sa_get_u32(r->p + r->off);
    r->off += 4;
    return v;
}
static inline const uint8_t *fedc__sa_rd_bytes(fedc__sa_reader *r, size_t n)
{
    const uint8_t *b = r->p + r->off;
    r->off += n;
    return b;
}
/* FEDC_ERR_PROTOCOL when bytes remain after the last field. */
int fedc__sa_rd_end(const fedc__sa_reader *r, char *err, size_t errlen);

/* Checks the header: magic, type, round, recipient, sender (a client
 * index < n when to is the server, else the server). */
int fedc__sa_rd_header(fedc__sa_reader *r, const uint8_t *msg, size_t len, const fedc__sa_config *cfg,
                       unsigned type, uint32_t to, uint32_t *from, char *err, size_t errlen);

/* Reads count (u32) then count strictly ascending indices < n into flags
 * (n bytes, zeroed first); *count gets the count. */
int fedc__sa_rd_index_set(fedc__sa_reader *r, uint32_t n, uint8_t *flags, uint32_t *count, const char *field,
                          char *err, size_t errlen);

#endif /* FEDC_SECAGG_PROTOCOL_INTERNAL_H */
