/* Blocking send and receive of messages and tensor streams. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "proto/wire.h"

int fedc__kvbuf_init(fedc__kvbuf *b, const fedc_config *c)
{
    size_t n = fedc_config_count(c);
    memset(b, 0, sizeof *b);
    if (n == 0) return FEDC_OK;
    b->kv = calloc(n, sizeof *b->kv);
    b->sc = calloc(n, sizeof *b->sc);
    b->ptrs = calloc(n, sizeof *b->ptrs);
    if (!b->kv || !b->sc || !b->ptrs) {
        fedc__kvbuf_free(b);
        return FEDC_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        Fedc__V1__KeyValue *kv = &b->kv[i];
        Fedc__V1__Scalar *sc = &b->sc[i];
        fedc__v1__key_value__init(kv);
        fedc__v1__scalar__init(sc);
        kv->key = (char *)fedc_config_key_at(c, i);
        kv->value = sc;
        double f = 0;
        int64_t v = 0;
        const char *s = NULL;
        int bo = 0;
        fedc_config_value_at(c, i, &f, &v, &s, &bo);
        switch (fedc_config_kind_at(c, i)) {
        case FEDC_VALUE_F64:
            sc->kind_case = FEDC__V1__SCALAR__KIND_F;
            sc->f = f;
            break;
        case FEDC_VALUE_I64:
            sc->kind_case = FEDC__V1__SCALAR__KIND_I;
            sc->i = v;
            break;
        case FEDC_VALUE_STR:
            sc->kind_case = FEDC__V1__SCALAR__KIND_S;
            sc->s = (char *)s;
            break;
        case FEDC_VALUE_BOOL:
            sc->kind_case = FEDC__V1__SCALAR__KIND_B;
            sc->b = bo;
            break;
        }
        b->ptrs[i] = kv;
    }
    b->n = n;
    return FEDC_OK;
}

void fedc__kvbuf_free(fedc__kvbuf *b)
{
    free(b->kv);
    free(b->sc);
    free(b->ptrs);
    memset(b, 0, sizeof *b);
}

int fedc__config_from_kv(fedc_config *c, Fedc__V1__KeyValue *const *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Fedc__V1__KeyValue *e = kv[i];
        if (!e->key || !e->key[0] || !e->value) continue;
        int rc = FEDC_OK;
        switch (e->value->kind_case) {
        case FEDC__V1__SCALAR__KIND_F: rc = fedc_config_set_f64(c, e->key, e->value->f); break;
        case FEDC__V1__SCALAR__KIND_I: rc = fedc_config_set_i64(c, e->key, e->value->i); break;
        case FEDC__V1__SCALAR__KIND_S: rc = fedc_config_set_str(c, e->key, e->value->s); break;
        case FEDC__V1__SCALAR__KIND_B: rc = fedc_config_set_bool(c, e->key, e->value->b); break;
        default: break;
        }
        if (rc) return rc;
    }
    return FEDC_OK;
}

int fedc__params_encode_iov(const fedc_params *p, struct iovec **iov_out, int *iovcnt, void **hdrmem,
                            char *err, size_t errlen)
{
    size_t count = fedc_params_count(p);
    size_t niov = 0, hdrbytes = 0;
    uint64_t shape[FEDC_MAX_DIMS];
    /* First pass: sizes. */
    for (size_t i = 0; i < count; i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        Fedc__V1__TensorHeader h;
        Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
        fedc__tensor_header_init(&h, t, shape);
        m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
        m.tensor = &h;
        size_t chunks = (t->nbytes + FEDC_CHUNK_BYTES - 1) / FEDC_CHUNK_BYTES;
        hdrbytes += FEDC_FRAME_HEADER_BYTES + fedc__v1__message__get_packed_size(&m) +
                    chunks * FEDC_FRAME_HEADER_BYTES;
        niov += 1 + 2 * chunks;
    }
    if (niov > INT32_MAX) return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "model too large to encode");
    struct iovec *iov = calloc(niov ? niov : 1, sizeof *iov);
    uint8_t *mem = malloc(hdrbytes ? hdrbytes : 1);
    if (!iov || !mem) {
        free(iov);
        free(mem);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    size_t k = 0;
    uint8_t *w = mem;
    for (size_t i = 0; i < count; i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        Fedc__V1__TensorHeader h;
        Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
        fedc__tensor_header_init(&h, t, shape);
        m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
        m.tensor = &h;
        size_t n = fedc__v1__message__get_packed_size(&m);
        fedc__frame_header_encode(w, FEDC_FRAME_MESSAGE, (uint32_t)n);
        fedc__v1__message__pack(&m, w + FEDC_FRAME_HEADER_BYTES);
        iov[k].iov_base = w;
        iov[k++].iov_len = FEDC_FRAME_HEADER_BYTES + n;
        w += FEDC_FRAME_HEADER_BYTES + n;
        for (size_t off = 0; off < t->nbytes; off += FEDC_CHUNK_BYTES) {
            size_t len = t->nbytes - off < FEDC_CHUNK_BYTES ? t->nbytes - off : FEDC_CHUNK_BYTES;
            fedc__frame_header_encode(w, FEDC_FRAME_DATA, (uint32_t)len);
            iov[k].iov_base = w;
            iov[k++].iov_len = FEDC_FRAME_HEADER_BYTES;
            w += FEDC_FRAME_HEADER_BYTES;
            iov[k].iov_base = (char *)t->data + off;
            iov[k++].iov_len = len;
        }
    }
    *iov_out = iov;
    *iovcnt = (int)k;
    *hdrmem = mem;
    return FEDC_OK;
}

int fedc__send_message(fedc__conn *c, const fedc__msg *m, char *err, size_t errlen)
{
    return fedc__send_message_params(c, m, NULL, err, errlen);
}

int fedc__send_message_params(fedc__conn *c, const fedc__msg *m, const fedc_params *p, char *err,
                              size_t errlen)
{
    uint8_t *frame = NULL;
    size_t flen = 0;
    int rc = fedc__frame_pack_message(m, &frame, &flen, err, errlen);
    if (rc) return rc;
    rc = fedc__conn_write(c, frame, flen, err, errlen);
    free(frame);
    if (rc || !p) return rc;
    struct iovec *iov = NULL;
    int n = 0;
    void *mem = NULL;
    rc = fedc__params_encode_iov(p, &iov, &n, &mem, err, errlen);
    if (rc) return rc;
    rc = fedc__conn_writev(c, iov, n, err, errlen);
    free(iov);
    free(mem);
    return rc;
}

static int recv_header(fedc__conn *c, uint32_t max_frame, uint8_t *type, uint32_t *len, char *err,
                       size_t errlen)
{
    uint8_t hdr[FEDC_FRAME_HEADER_BYTES];
    int rc = fedc__conn_read(c, hdr, sizeof hdr, err, errlen);
    if (rc) return rc;
    char why[FEDC_ERRMSG_MAX];
    rc = fedc__frame_header_decode(hdr, max_frame, type, len, why, sizeof why);
    if (rc) return fedc_set_error(err, errlen, rc, "%s: %s", c->peer, why);
    return FEDC_OK;
}

int fedc__recv_message(fedc__conn *c, uint32_t max_frame, fedc__msg **out, char *err, size_t errlen)
{
    uint8_t type;
    uint32_t len;
    int rc = recv_header(c, max_frame, &type, &len, err, errlen);
    if (rc) return rc;
    if (type != FEDC_FRAME_MESSAGE)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "%s: unexpected DATA frame (%u bytes)", c->peer,
                              len);
    uint8_t *buf = malloc(len);
    if (!buf) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    rc = fedc__conn_read(c, buf, len, err, errlen);
    if (!rc) {
        char why[FEDC_ERRMSG_MAX];
        rc = fedc__msg_unpack(buf, len, out, why, sizeof why);
        if (rc) fedc_set_error(err, errlen, rc, "%s: %s", c->peer, why);
    }
    free(buf);
    return rc;
}

/* Does `reuse` have exactly the layout of the headers received so far? */
static int header_matches(const fedc_tensor *t, const Fedc__V1__TensorHeader *h)
{
    if (!t || strcmp(t->name, h->name) || (int)t->dtype != (int)h->dtype || (size_t)t->ndim != h->n_shape)
        return 0;
    for (int d = 0; d < t->ndim; d++)
        if ((uint64_t)t->shape[d] != h->shape[d]) return 0;
    return 1;
}

int fedc__recv_params(fedc__conn *c, uint32_t max_frame, uint32_t count, uint64_t max_total,
                      fedc_params *reuse, fedc_params **out, char *err, size_t errlen)
{
    int rc = FEDC_OK;
    fedc_params *fresh = NULL;
    fedc_params *dst = (reuse && fedc_params_count(reuse) == count) ? reuse : NULL;
    uint64_t total = 0;
    char why[FEDC_ERRMSG_MAX];
    *out = NULL;

    for (uint32_t i = 0; i < count; i++) {
        fedc__msg *m = NULL;
        rc = fedc__recv_message(c, max_frame, &m, err, errlen);
        if (rc) goto fail;
        if (m->body_case != FEDC__V1__MESSAGE__BODY_TENSOR) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                "%s: expected tensor %u of %u, got a %s message", c->peer, i + 1, count,
                                fedc__msg_name(m));
            fedc__msg_free(m);
            goto fail;
        }
        const Fedc__V1__TensorHeader *h = m->tensor;
        rc = fedc__tensor_header_check(h, why, sizeof why);
        if (!rc && h->nbytes > max_total - total) {
            rc = FEDC_ERR_TOO_LARGE;
            snprintf(why, sizeof why, "parameters exceed the limit of %llu bytes",
                     (unsigned long long)max_total);
        }
        if (rc) {
            fedc_set_error(err, errlen, rc, "%s: %s", c->peer, why);
            fedc__msg_free(m);
            goto fail;
        }
        total += h->nbytes;
        fedc_tensor *t = NULL;
        if (dst == reuse && dst && header_matches(fedc_params_at(reuse, i), h)) {
            t = fedc_params_at(reuse, i);
        } else {
            if (dst == reuse && dst) {
                /* The layout changed: copy what was already read into a new set. */
                fresh = fedc_params_create();
                if (!fresh) {
                    fedc__msg_free(m);
                    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
                    goto fail;
                }
                for (uint32_t j = 0; j < i; j++) {
                    const fedc_tensor *o = fedc_params_at(reuse, j);
                    rc = fedc_params_add(fresh, o->name, o->dtype, o->ndim, o->shape, o->data, NULL, err,
                                         errlen);
                    if (rc) {
                        fedc__msg_free(m);
                        goto fail;
                    }
                }
                dst = fresh;
            } else if (!dst) {
                fresh = fedc_params_create();
                if (!fresh) {
                    fedc__msg_free(m);
                    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
                    goto fail;
                }
                dst = fresh;
            }
            int64_t shape[FEDC_MAX_DIMS];
            for (size_t d = 0; d < h->n_shape; d++) shape[d] = (int64_t)h->shape[d];
            rc = fedc_params_add(dst, h->name, (fedc_dtype)h->dtype, (int)h->n_shape, shape, NULL, &t, why,
                                 sizeof why);
            if (rc) {
                fedc_set_error(err, errlen, rc == FEDC_ERR_NOMEM ? rc : FEDC_ERR_PROTOCOL, "%s: %s", c->peer,
                               why);
                rc = rc == FEDC_ERR_NOMEM ? rc : FEDC_ERR_PROTOCOL;
                fedc__msg_free(m);
                goto fail;
            }
        }
        fedc__msg_free(m);
        /* The data: DATA frames until nbytes are in. */
        size_t got = 0;
        while (got < t->nbytes) {
            uint8_t type;
            uint32_t len;
            rc = recv_header(c, max_frame, &type, &len, err, errlen);
            if (rc) goto fail;
            if (type != FEDC_FRAME_DATA || len == 0 || len > t->nbytes - got) {
                rc = fedc_set_error(
                    err, errlen, FEDC_ERR_PROTOCOL,
                    type != FEDC_FRAME_DATA
                        ? "%s: tensor '%s' data cut short by a MESSAGE frame (%zu of %zu bytes)"
                        : "%s: tensor '%s': DATA frame overruns the tensor (%zu of %zu bytes)",
                    c->peer, t->name, got, t->nbytes);
                goto fail;
            }
            rc = fedc__conn_read(c, (char *)t->data + got, len, err, errlen);
            if (rc) goto fail;
            got += len;
        }
    }
    *out = dst ? dst : (fresh = fedc_params_create());
    if (!*out) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    return FEDC_OK;
fail:
    fedc_params_destroy(fresh);
    return rc;
}
