/*
 * Messages and tensor streams over a connection (docs/protocol.md,
 * "Tensors"): both ends of a socketpair wrapped with fedc__conn_from_fd, a
 * writer thread on one end and the receive calls on the other. Round trips
 * must be bit-exact (tensors above one 1 MiB chunk, zero-size tensors, the
 * `reuse` path); truncated, out-of-order, overrunning and oversized
 * streams must fail with the documented status and never hang.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fedc/config.h"
#include "fedc/tensor.h"
#include "net/conn.h"
#include "proto/frame.h"
#include "proto/wire.h"
#include "test_util.h"

/* Generous: a correct test finishes in milliseconds; a wrong one fails
 * with FEDC_ERR_TIMEOUT instead of hanging. */
#define IO_TIMEOUT 20.0
#define BIG_LIMIT  (1ull << 32)

/* ---- growable byte strings for hand-made streams ---- */

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) abort();
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put_msg(bytes *b, const fedc__msg *m)
{
    uint8_t *frame = NULL;
    size_t n = 0;
    if (fedc__frame_pack_message(m, &frame, &n, NULL, 0)) abort();
    put(b, frame, n);
    free(frame);
}

static void put_frame(bytes *b, uint8_t type, const void *payload, uint32_t len)
{
    uint8_t h[FEDC_FRAME_HEADER_BYTES];
    fedc__frame_header_encode(h, type, len);
    put(b, h, sizeof h);
    put(b, payload, len);
}

static void put_tensor_header(bytes *b, const char *name, int dtype, int ndim, const uint64_t *shape,
                              uint64_t nbytes)
{
    Fedc__V1__TensorHeader h = FEDC__V1__TENSOR_HEADER__INIT;
    h.name = (char *)name;
    h.dtype = (Fedc__V1__DType)dtype;
    h.n_shape = (size_t)ndim;
    h.shape = (uint64_t *)shape;
    h.nbytes = nbytes;
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
    m.tensor = &h;
    put_msg(b, &m);
}

/* The frames fedc__send_message_params writes for p, flattened. */
static void put_params(bytes *b, const fedc_params *p)
{
    struct iovec *iov = NULL;
    int n = 0;
    void *mem = NULL;
    if (fedc__params_encode_iov(p, &iov, &n, &mem, NULL, 0)) abort();
    for (int i = 0; i < n; i++) put(b, iov[i].iov_base, iov[i].iov_len);
    free(iov);
    free(mem);
}

/* ---- a writer thread on one end of a socketpair ---- */

typedef struct session {
    int wfd;
    /* Either a message (and parameters) sent with fedc__send_message_params,
     * or raw bytes (the first `cut` of them). */
    const fedc__msg *m;
    const fedc_params *p;
    const uint8_t *raw;
    size_t rawlen;
    int rc;
    char err[FEDC_ERRMSG_MAX];
    pthread_t th;
    fedc__conn rd; /* the reading end, used by the main thread */
} session;

static void *writer_main(void *arg)
{
    session *s = arg;
    if (s->m) {
        fedc__conn c;
        fedc__conn_from_fd(&c, s->wfd, "writer");
        c.io_timeout = IO_TIMEOUT;
        s->rc = fedc__send_message_params(&c, s->m, s->p, s->err, sizeof s->err);
    } else {
        size_t off = 0;
        s->rc = FEDC_OK;
        while (off < s->rawlen) {
            ssize_t w = send(s->wfd, s->raw + off, s->rawlen - off, MSG_NOSIGNAL);
            if (w <= 0) {
                s->rc = FEDC_ERR_CLOSED; /* the reader gave up first */
                break;
            }
            off += (size_t)w;
        }
    }
    close(s->wfd);
    return NULL;
}

static int session_start(session *s)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return -1;
    s->wfd = sv[1];
    fedc__conn_from_fd(&s->rd, sv[0], "peer-under-test");
    s->rd.io_timeout = IO_TIMEOUT;
    if (pthread_create(&s->th, NULL, writer_main, s)) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    return 0;
}

/* Closes the reading end (which unblocks a writer the reader left behind)
 * and waits for the writer. */
static void session_end(session *s)
{
    fedc__conn_close(&s->rd);
    pthread_join(s->th, NULL);
}

static int start_raw(session *s, const bytes *b, size_t cut)
{
    memset(s, 0, sizeof *s);
    s->raw = b->p;
    s->rawlen = cut;
    return session_start(s);
}

static int start_send(session *s, const fedc__msg *m, const fedc_params *p)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    s->p = p;
    return session_start(s);
}

/* ---- fixtures ---- */

static void fill(fedc_tensor *t, uint64_t seed)
{
    fedc_rng r;
    fedc_rng_seed(&r, seed);
    uint8_t *d = t->data;
    for (size_t i = 0; i < t->nbytes; i++) d[i] = (uint8_t)fedc_rng_u64(&r);
}

/* Every dtype, a scalar, zero-size tensors, a tensor of exactly one chunk,
 * one just above it and one above two chunks. */
static fedc_params *make_model(uint64_t seed)
{
    fedc_params *p = fedc_params_create();
    if (!p) return NULL;
    const int64_t s34[2] = {3, 4}, big[1] = {300000}, chunk[1] = {1 << 20}, two[1] = {(2 << 20) + 1},
                  z[3] = {4, 0, 2}, z1[1] = {0}, s8[8] = {1, 2, 1, 2, 1, 2, 1, 2}, s5[1] = {5}, s3[1] = {3};
    struct {
        const char *name;
        fedc_dtype dt;
        int ndim;
        const int64_t *shape;
    } spec[] = {
        {"fc1.weight", FEDC_F32, 2, s34}, {"big", FEDC_F32, 1, big},    {"empty", FEDC_F32, 3, z},
        {"step", FEDC_I64, 0, NULL},      {"chunk", FEDC_U8, 1, chunk}, {"two_chunks", FEDC_I8, 1, two},
        {"none", FEDC_F64, 1, z1},        {"eight", FEDC_I32, 8, s8},   {"half", FEDC_F16, 1, s5},
        {"bhalf", FEDC_BF16, 1, s3},      {"scale", FEDC_F64, 0, NULL},
    };
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
        fedc_tensor *t;
        if (fedc_params_add(p, spec[i].name, spec[i].dt, spec[i].ndim, spec[i].shape, NULL, &t, NULL, 0)) {
            fedc_params_destroy(p);
            return NULL;
        }
        fill(t, seed * 1000 + i);
    }
    /* NaN payloads and -0 must pass untouched. */
    uint32_t *w = fedc_params_find(p, "fc1.weight")->data;
    w[0] = 0x7fa00001u;
    w[1] = 0x80000000u;
    return p;
}

static int same_params(const fedc_params *a, const fedc_params *b, char *why, size_t whylen)
{
    if (!b) return snprintf(why, whylen, "no set"), 0;
    if (fedc_params_check_same_layout(a, b, why, whylen)) return 0;
    for (size_t i = 0; i < fedc_params_count(a); i++) {
        const fedc_tensor *x = fedc_params_at(a, i), *y = fedc_params_at(b, i);
        if (x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes)) {
            snprintf(why, whylen, "tensor '%s' bytes differ", x->name);
            return 0;
        }
    }
    return 1;
}

static fedc_config *make_metrics(void)
{
    fedc_config *c = fedc_config_create();
    fedc_config_set_f64(c, "train_loss", 0.4125);
    fedc_config_set_i64(c, "steps", -9007199254740993LL);
    fedc_config_set_str(c, "note", "caf\xc3\xa9");
    fedc_config_set_bool(c, "converged", 0);
    return c;
}

/* ---- tests ---- */

/* The frames of a parameter set: a TensorHeader per tensor, then DATA
 * frames of at most 1 MiB: full chunks, then the remainder; none for an
 * empty tensor. */
static void test_encode_layout(void)
{
    fedc_params *p = make_model(1);
    struct iovec *iov = NULL;
    int n = 0;
    void *mem = NULL;
    CHECK_STATUS(fedc__params_encode_iov(p, &iov, &n, &mem, NULL, 0), FEDC_OK, "encode_iov");
    bytes b = {0};
    for (int i = 0; i < n; i++) put(&b, iov[i].iov_base, iov[i].iov_len);
    size_t off = 0, ti = 0;
    int ok = 1;
    while (ok && off < b.n && ti < fedc_params_count(p)) {
        const fedc_tensor *t = fedc_params_at(p, ti);
        uint8_t type;
        uint32_t len;
        if (fedc__frame_header_decode(b.p + off, FEDC_DEFAULT_MAX_FRAME, &type, &len, NULL, 0) ||
            type != FEDC_FRAME_MESSAGE) {
            ok = 0;
            break;
        }
        fedc__msg *m = NULL;
        if (fedc__msg_unpack(b.p + off + 5, len, &m, NULL, 0) ||
            m->body_case != FEDC__V1__MESSAGE__BODY_TENSOR || strcmp(m->tensor->name, t->name) ||
            m->tensor->nbytes != t->nbytes)
            ok = 0;
        fedc__msg_free(m);
        off += 5 + len;
        size_t got = 0;
        while (ok && got < t->nbytes) {
            if (fedc__frame_header_decode(b.p + off, FEDC_DEFAULT_MAX_FRAME, &type, &len, NULL, 0) ||
                type != FEDC_FRAME_DATA)
                ok = 0;
            size_t want = t->nbytes - got < FEDC_CHUNK_BYTES ? t->nbytes - got : FEDC_CHUNK_BYTES;
            if (len != want || memcmp(b.p + off + 5, (uint8_t *)t->data + got, len)) ok = 0;
            got += len;
            off += 5 + len;
        }
        ti++;
    }
    CHECK(ok && off == b.n && ti == fedc_params_count(p),
          "the stream is header, full 1 MiB chunks, remainder, per tensor (%zu of %zu bytes, %zu "
          "tensors)",
          off, b.n, ti);
    free(b.p);
    free(iov);
    free(mem);

    fedc_params *e = fedc_params_create();
    CHECK_STATUS(fedc__params_encode_iov(e, &iov, &n, &mem, NULL, 0), FEDC_OK, "encode an empty set");
    CHECK(n == 0, "an empty set has no frames (%d)", n);
    free(iov);
    free(mem);
    fedc_params_destroy(e);
    fedc_params_destroy(p);
}

static void test_round_trip(void)
{
    char err[FEDC_ERRMSG_MAX], why[FEDC_ERRMSG_MAX];
    fedc_params *p = make_model(2);
    fedc_config *metrics = make_metrics();
    fedc__kvbuf kv;
    CHECK_STATUS(fedc__kvbuf_init(&kv, metrics), FEDC_OK, "kvbuf_init");
    Fedc__V1__FitRes fr = FEDC__V1__FIT_RES__INIT;
    fr.round = 17;
    fr.num_examples = 6000;
    fr.n_metrics = kv.n;
    fr.metrics = kv.ptrs;
    fr.num_tensors = (uint32_t)fedc_params_count(p);
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &fr;

    session s;
    if (start_send(&s, &m, p)) {
        CHECK(0, "socketpair/thread");
        return;
    }
    fedc__msg *in = NULL;
    int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
    CHECK(rc == FEDC_OK && in && in->body_case == FEDC__V1__MESSAGE__BODY_FIT_RES,
          "recv_message gets fit_res (rc %d: %s)", rc, rc ? err : "");
    fedc_params *out = NULL;
    if (rc == FEDC_OK) {
        CHECK(in->fit_res->round == 17 && in->fit_res->num_examples == 6000 &&
                  in->fit_res->num_tensors == fedc_params_count(p),
              "fit_res fields");
        fedc_config *got = fedc_config_create();
        CHECK_STATUS(fedc__config_from_kv(got, in->fit_res->metrics, in->fit_res->n_metrics), FEDC_OK,
                     "config_from_kv");
        const char *note = NULL;
        int64_t steps = 0;
        int conv = 1;
        CHECK(fedc_config_count(got) == 4 && fedc_config_f64_or(got, "train_loss", 0) == 0.4125 &&
                  fedc_config_get_i64(got, "steps", &steps) == FEDC_OK && steps == -9007199254740993LL &&
                  fedc_config_get_str(got, "note", &note) == FEDC_OK && !strcmp(note, "caf\xc3\xa9") &&
                  fedc_config_get_bool(got, "converged", &conv) == FEDC_OK && conv == 0,
              "metrics survive the wire");
        fedc_config_destroy(got);
        rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, in->fit_res->num_tensors, BIG_LIMIT, NULL, &out,
                               err, sizeof err);
        CHECK(rc == FEDC_OK, "recv_params (rc %d: %s)", rc, rc ? err : "");
        CHECK(rc == FEDC_OK && same_params(p, out, why, sizeof why), "round trip is bit-exact: %s",
              rc ? "" : why);
    }
    fedc__msg_free(in);
    uint64_t received = s.rd.bytes_received;
    session_end(&s);
    CHECK(s.rc == FEDC_OK, "writer: rc %d %s", s.rc, s.err);
    CHECK(received > fedc_params_nbytes(p), "bytes_received %llu covers the %zu data bytes",
          (unsigned long long)received, fedc_params_nbytes(p));

    /* The reuse path: a set with the announced layout is filled in place. */
    fedc_params *q = make_model(3);
    fedc_params *reuse = fedc_params_clone(out);
    memset(fedc_params_find(reuse, "big")->data, 0xab, fedc_params_find(reuse, "big")->nbytes);
    Fedc__V1__GetParametersRes gpr = FEDC__V1__GET_PARAMETERS_RES__INIT;
    gpr.num_tensors = (uint32_t)fedc_params_count(q);
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES;
    m.get_parameters_res = &gpr;
    if (start_send(&s, &m, q) == 0) {
        in = NULL;
        rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        fedc_params *got = NULL;
        if (rc == FEDC_OK)
            rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, in->get_parameters_res->num_tensors,
                                   BIG_LIMIT, reuse, &got, err, sizeof err);
        CHECK(rc == FEDC_OK && got == reuse, "same layout: the data goes into `reuse` (rc %d: %s)", rc,
              rc ? err : "");
        CHECK(rc == FEDC_OK && same_params(q, reuse, why, sizeof why), "reuse round trip is bit-exact: %s",
              rc ? "" : why);
        fedc__msg_free(in);
        session_end(&s);
    }
    fedc_params_destroy(reuse);
    fedc_params_destroy(q);
    fedc_params_destroy(out);
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(metrics);
    fedc_params_destroy(p);
}

/* Reuse sets that do not match: a different count gives a fresh set; a
 * layout that changes at tensor 2 gives a fresh set holding tensors 0 and 1
 * too; `reuse` stays the caller's either way. */
static void test_reuse_mismatch(void)
{
    char err[FEDC_ERRMSG_MAX], why[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    const int64_t a[1] = {1000}, b[2] = {20, 30}, c[1] = {7}, c2[1] = {8};
    fedc_tensor *t;
    fedc_params_add(p, "a", FEDC_F32, 1, a, NULL, &t, NULL, 0);
    fill(t, 1);
    fedc_params_add(p, "b", FEDC_F64, 2, b, NULL, &t, NULL, 0);
    fill(t, 2);
    fedc_params_add(p, "c", FEDC_I32, 1, c, NULL, &t, NULL, 0);
    fill(t, 3);
    fedc_params_add(p, "d", FEDC_U8, 0, NULL, NULL, &t, NULL, 0);
    fill(t, 4);

    fedc_params *other = fedc_params_create(); /* same names, c has 8 elements */
    fedc_params_add(other, "a", FEDC_F32, 1, a, NULL, NULL, NULL, 0);
    fedc_params_add(other, "b", FEDC_F64, 2, b, NULL, NULL, NULL, 0);
    fedc_params_add(other, "c", FEDC_I32, 1, c2, NULL, NULL, NULL, 0);
    fedc_params_add(other, "d", FEDC_U8, 0, NULL, NULL, NULL, NULL, 0);
    fedc_params *fewer = fedc_params_create();
    fedc_params_add(fewer, "a", FEDC_F32, 1, a, NULL, NULL, NULL, 0);

    fedc_params *reuses[2] = {other, fewer};
    const char *what[2] = {"layout changes at tensor 2", "different count"};
    for (int k = 0; k < 2; k++) {
        bytes st = {0};
        put_params(&st, p);
        session s;
        if (start_raw(&s, &st, st.n)) {
            free(st.p);
            continue;
        }
        fedc_params *got = NULL;
        int rc =
            fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, 4, BIG_LIMIT, reuses[k], &got, err, sizeof err);
        CHECK(rc == FEDC_OK && got && got != reuses[k], "%s: a new set (rc %d: %s)", what[k], rc,
              rc ? err : "");
        CHECK(rc == FEDC_OK && same_params(p, got, why, sizeof why), "%s: contents bit-exact: %s", what[k],
              rc ? "" : why);
        if (got != reuses[k]) fedc_params_destroy(got);
        session_end(&s);
        free(st.p);
    }
    CHECK(fedc_params_count(other) == 4 && fedc_params_find(other, "c")->nbytes == 32 &&
              fedc_params_count(fewer) == 1,
          "the reuse sets keep their layouts");

    /* No tensors: an empty set (or reuse when it is empty too). */
    bytes none = {0};
    session s;
    if (start_raw(&s, &none, 0) == 0) {
        fedc_params *got = NULL;
        int rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, 0, BIG_LIMIT, NULL, &got, err, sizeof err);
        CHECK(rc == FEDC_OK && got && fedc_params_count(got) == 0, "count 0 gives an empty set");
        fedc_params_destroy(got);
        fedc_params *empty = fedc_params_create();
        rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, 0, BIG_LIMIT, empty, &got, err, sizeof err);
        CHECK(rc == FEDC_OK && got == empty, "count 0 with an empty reuse gives reuse");
        fedc_params_destroy(empty);
        session_end(&s);
    }
    fedc_params_destroy(other);
    fedc_params_destroy(fewer);
    fedc_params_destroy(p);
}

/* Plain messages, with and without an (empty) parameter set. */
static void test_messages(void)
{
    char err[FEDC_ERRMSG_MAX];
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    sd.reason = "federation complete";
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    session s;
    if (start_send(&s, &m, NULL) == 0) {
        fedc__msg *in = NULL;
        int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        CHECK(rc == FEDC_OK && in->body_case == FEDC__V1__MESSAGE__BODY_SHUTDOWN &&
                  !strcmp(in->shutdown->reason, "federation complete"),
              "shutdown over the wire (rc %d)", rc);
        fedc__msg_free(in);
        /* Then the writer closes: the next read is CLOSED. */
        in = NULL;
        rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        CHECK(rc == FEDC_ERR_CLOSED && in == NULL, "after the last frame: CLOSED (rc %d)", rc);
        session_end(&s);
        CHECK(s.rc == FEDC_OK, "send_message_params with p = NULL");
    }
    /* max_frame applies to MESSAGE frames too. */
    if (start_send(&s, &m, NULL) == 0) {
        fedc__msg *in = NULL;
        err[0] = '\0';
        int rc = fedc__recv_message(&s.rd, 8, &in, err, sizeof err);
        CHECK(rc == FEDC_ERR_TOO_LARGE && in == NULL, "a message above max_frame: TOO_LARGE (rc %d)", rc);
        CHECK_CONTAINS(err, "peer-under-test", "the message names the peer");
        session_end(&s);
    }
}

/* The writer stops after `cut` bytes of a valid stream: every call that
 * runs out of bytes says CLOSED. */
static void test_truncation(void)
{
    char err[FEDC_ERRMSG_MAX], why[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    const int64_t a[1] = {10}, z[1] = {0}, big[1] = {300000};
    fedc_tensor *t;
    fedc_params_add(p, "a", FEDC_F32, 1, a, NULL, &t, NULL, 0);
    fill(t, 11);
    fedc_params_add(p, "z", FEDC_U8, 1, z, NULL, NULL, NULL, 0);
    fedc_params_add(p, "big", FEDC_F32, 1, big, NULL, &t, NULL, 0);
    fill(t, 12);
    fedc_params_add(p, "s", FEDC_I64, 0, NULL, NULL, &t, NULL, 0);
    fill(t, 13);

    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    fi.round = 5;
    fi.num_tensors = 4;
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    bytes st = {0};
    put_msg(&st, &m);
    size_t msg_end = st.n;
    put_params(&st, p);

    /* Cut points: every byte of the message and the small tensors' frames,
     * around each DATA frame header of the big tensor, inside its data, and
     * the last bytes. */
    size_t cuts[600];
    int nc = 0;
    size_t big_start = msg_end;
    for (size_t c = 0; c < st.n && c < msg_end + 140; c++) cuts[nc++] = c;
    /* Find where big's data starts: after a's header+data, z's header and
     * big's header. Walk the frames. */
    size_t off = msg_end;
    int frames = 0;
    while (off + 5 <= st.n && frames < 12) {
        uint32_t len = (uint32_t)st.p[off] << 24 | (uint32_t)st.p[off + 1] << 16 |
                       (uint32_t)st.p[off + 2] << 8 | st.p[off + 3];
        if (st.p[off + 4] == FEDC_FRAME_DATA && len > 1000) {
            big_start = off;
            for (size_t d = 0; d < 8; d++) {
                if (off >= d + 1) cuts[nc++] = off - d - 1;
                cuts[nc++] = off + d;
                cuts[nc++] = off + 5 + len - d - 1;
            }
            cuts[nc++] = off + 5 + len / 2;
        }
        off += 5 + len;
        frames++;
    }
    for (size_t d = 1; d <= 20; d++) cuts[nc++] = st.n - d;
    CHECK(big_start > msg_end, "found the big tensor's DATA frames");

    int all_closed = 1, tried = 0;
    for (int i = 0; i < nc; i++) {
        size_t cut = cuts[i];
        if (cut >= st.n) continue;
        session s;
        if (start_raw(&s, &st, cut)) continue;
        tried++;
        fedc__msg *in = NULL;
        fedc_params *got = NULL;
        err[0] = '\0';
        int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        if (rc == FEDC_OK) {
            rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, in->fit_ins->num_tensors, BIG_LIMIT, NULL,
                                   &got, err, sizeof err);
            fedc__msg_free(in);
        }
        if (rc != FEDC_ERR_CLOSED || got != NULL) {
            if (all_closed)
                printf("cut after %zu of %zu bytes: rc %d (%s), '%s'\n", cut, st.n, rc, fedc_strerror(rc),
                       err);
            all_closed = 0;
            if (rc == FEDC_OK) fedc_params_destroy(got);
        }
        session_end(&s);
    }
    TEST_NOTE("%d cut points in a %zu-byte stream", tried, st.n);
    CHECK(all_closed, "%d truncated streams (mid-header, mid-message, mid-tensor) give CLOSED", tried);

    /* The whole stream goes through. */
    session s;
    if (start_raw(&s, &st, st.n) == 0) {
        fedc__msg *in = NULL;
        fedc_params *got = NULL;
        int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        if (rc == FEDC_OK)
            rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, 4, BIG_LIMIT, NULL, &got, err, sizeof err);
        CHECK(rc == FEDC_OK && same_params(p, got, why, sizeof why), "the uncut stream round-trips (rc %d)",
              rc);
        fedc__msg_free(in);
        fedc_params_destroy(got);
        session_end(&s);
    }

    /* Truncation into a `reuse` set: CLOSED, reuse is not freed. */
    fedc_params *reuse = fedc_params_clone(p);
    if (start_raw(&s, &st, big_start + 5 + 1000) == 0) {
        fedc__msg *in = NULL;
        fedc_params *got = (fedc_params *)&s;
        int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        fedc__msg_free(in);
        if (rc == FEDC_OK)
            rc = fedc__recv_params(&s.rd, FEDC_DEFAULT_MAX_FRAME, 4, BIG_LIMIT, reuse, &got, err, sizeof err);
        CHECK(rc == FEDC_ERR_CLOSED && got == NULL, "truncated into reuse: CLOSED, *out NULL (rc %d)", rc);
        CHECK(fedc_params_count(reuse) == 4, "reuse is still the caller's");
        session_end(&s);
    }
    fedc_params_destroy(reuse);
    free(st.p);
    fedc_params_destroy(p);
}

/* Runs recv_message and then recv_params(count) over a hand-made stream
 * and returns the first failure. */
static int receive(const bytes *st, uint32_t max_frame, uint32_t count, uint64_t max_total, int skip_msg,
                   char *err, size_t errlen)
{
    session s;
    if (start_raw(&s, st, st->n)) return -1;
    int rc = FEDC_OK;
    err[0] = '\0';
    if (!skip_msg) {
        fedc__msg *in = NULL;
        rc = fedc__recv_message(&s.rd, max_frame, &in, err, errlen);
        fedc__msg_free(in);
    }
    if (rc == FEDC_OK) {
        fedc_params *got = (fedc_params *)&s;
        rc = fedc__recv_params(&s.rd, max_frame, count, max_total, NULL, &got, err, errlen);
        if (rc == FEDC_OK)
            fedc_params_destroy(got);
        else if (got != NULL) {
            printf("*out is not NULL after a failure\n");
            rc = -2;
        }
    }
    session_end(&s);
    return rc;
}

static void test_protocol_errors(void)
{
    char err[FEDC_ERRMSG_MAX];
    const uint64_t s2[1] = {2}, s3[2] = {3, 4};
    const float two[2] = {1, 2};
    const uint8_t junk[16] = {0};
    bytes st = {0};

    /* A DATA frame where a message is expected. */
    put_frame(&st, FEDC_FRAME_DATA, junk, 16);
    session s;
    if (start_raw(&s, &st, st.n) == 0) {
        fedc__msg *in = NULL;
        int rc = fedc__recv_message(&s.rd, FEDC_DEFAULT_MAX_FRAME, &in, err, sizeof err);
        CHECK(rc == FEDC_ERR_PROTOCOL && in == NULL, "DATA where a message is expected: rc %d", rc);
        CHECK_CONTAINS(err, "DATA", "the message says DATA");
        session_end(&s);
    }
    st.n = 0;
    put_frame(&st, FEDC_FRAME_DATA, junk, 0);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "an empty DATA frame where a tensor header is expected");

    /* Frame headers: unknown type, empty MESSAGE, garbage payload. */
    st.n = 0;
    put_frame(&st, 3, junk, 4);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 0, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "unknown frame type 3");
    st.n = 0;
    put_frame(&st, FEDC_FRAME_MESSAGE, junk, 0);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 0, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "empty MESSAGE frame");
    st.n = 0;
    const uint8_t garbage[4] = {0x0a, 0x7f, 0x01, 0x02};
    put_frame(&st, FEDC_FRAME_MESSAGE, garbage, 4);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 0, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "a payload that is not a Message");

    /* A message of another kind where a tensor header is expected. */
    st.n = 0;
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    put_msg(&st, &m);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "shutdown where a tensor header is expected");
    CHECK_CONTAINS(err, "shutdown", "the message names what came");

    /* A DATA frame that runs past the tensor. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    const float three[3] = {1, 2, 3};
    put_frame(&st, FEDC_FRAME_DATA, three, 12);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "a DATA frame overrunning the tensor");
    CHECK_CONTAINS(err, "'w'", "overrun message names the tensor");
    /* The same after a first, valid chunk. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 4);
    put_frame(&st, FEDC_FRAME_DATA, three, 8);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "a second DATA frame overrunning the tensor");
    /* Chunks need not be multiples of the element size. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 3);
    put_frame(&st, FEDC_FRAME_DATA, (const uint8_t *)two + 3, 5);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_OK,
                 "DATA frames of 3 and 5 bytes for an 8-byte tensor");
    /* An empty DATA frame inside a tensor. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 0);
    put_frame(&st, FEDC_FRAME_DATA, two, 8);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "an empty DATA frame inside a tensor");
    /* A MESSAGE frame before the tensor's data is complete. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 4);
    put_tensor_header(&st, "v", FEDC_F32, 1, s2, 8);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 2, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "a tensor header before the previous data is complete");
    CHECK_CONTAINS(err, "'w'", "cut-short message names the tensor");

    /* TensorHeaders whose nbytes does not match the shape, and other bad
     * headers. */
    const struct {
        const char *name;
        int dtype, ndim;
        const uint64_t *shape;
        uint64_t nbytes;
        const char *what;
    } bad[] = {
        {"w", FEDC_F32, 2, s3, 47, "nbytes 47 for F32 [3, 4]"},
        {"w", FEDC_F32, 2, s3, 96, "nbytes 96 for F32 [3, 4]"},
        {"w", FEDC_F64, 0, NULL, 4, "nbytes 4 for an F64 scalar"},
        {"w", FEDC_U8, 1, s2, 0, "nbytes 0 for U8 [2]"},
        {"w", 0, 1, s2, 8, "dtype 0"},
        {"w", 42, 1, s2, 8, "dtype 42"},
        {"", FEDC_F32, 1, s2, 8, "empty name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st.n = 0;
        put_tensor_header(&st, bad[i].name, bad[i].dtype, bad[i].ndim, bad[i].shape, bad[i].nbytes);
        put_frame(&st, FEDC_FRAME_DATA, two, 8);
        CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err),
                     FEDC_ERR_PROTOCOL, bad[i].what);
    }
    /* Two tensors with the same name. */
    st.n = 0;
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 8);
    put_tensor_header(&st, "w", FEDC_F32, 1, s2, 8);
    put_frame(&st, FEDC_FRAME_DATA, two, 8);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 2, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "a duplicate tensor name");

    /* max_total: the sum of nbytes, checked before any data is read. */
    st.n = 0;
    const uint64_t s25[1] = {25};
    float hundred[25] = {0};
    for (int i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "t%d", i);
        put_tensor_header(&st, name, FEDC_F32, 1, s25, 100);
        put_frame(&st, FEDC_FRAME_DATA, hundred, 100);
    }
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 3, 300, 1, err, sizeof err), FEDC_OK,
                 "300 bytes with max_total 300");
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 3, 299, 1, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "300 bytes with max_total 299");
    CHECK_CONTAINS(err, "299", "the message gives the limit");
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 3, 0, 1, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "300 bytes with max_total 0");
    /* A header announcing more than the limit, with no data behind it. */
    st.n = 0;
    const uint64_t huge[2] = {1ull << 20, 1ull << 20};
    put_tensor_header(&st, "huge", FEDC_F32, 2, huge, 4ull << 40);
    CHECK_STATUS(receive(&st, FEDC_DEFAULT_MAX_FRAME, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "a 4 TiB tensor header");

    /* A DATA frame above max_frame. */
    st.n = 0;
    const uint64_t s1m[1] = {1u << 20};
    uint8_t *mb = calloc(1, 1u << 20);
    put_tensor_header(&st, "mb", FEDC_U8, 1, s1m, 1u << 20);
    put_frame(&st, FEDC_FRAME_DATA, mb, 1u << 20);
    free(mb);
    CHECK_STATUS(receive(&st, 64u << 10, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "a 1 MiB DATA frame with max_frame 64 KiB");
    CHECK_STATUS(receive(&st, FEDC_CHUNK_BYTES, 1, BIG_LIMIT, 1, err, sizeof err), FEDC_OK,
                 "a 1 MiB DATA frame with max_frame 1 MiB");
    free(st.p);
}

static void test_kv(void)
{
    fedc_config *c = fedc_config_create();
    fedc_config_set_f64(c, "lr", -1.5e-300);
    fedc_config_set_i64(c, "min", INT64_MIN);
    fedc_config_set_i64(c, "max", INT64_MAX);
    fedc_config_set_str(c, "model", "");
    fedc_config_set_str(c, "text", "a\nb\xe2\x82\xac");
    fedc_config_set_bool(c, "yes", 1);
    fedc_config_set_bool(c, "no", 0);
    fedc__kvbuf kv;
    CHECK_STATUS(fedc__kvbuf_init(&kv, c), FEDC_OK, "kvbuf_init");
    CHECK(kv.n == 7, "7 entries (%zu)", kv.n);

    /* Through an encoded FitIns, as on the wire. */
    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    fi.n_config = kv.n;
    fi.config = kv.ptrs;
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    uint8_t *frame = NULL;
    size_t n = 0;
    fedc__msg *in = NULL;
    int rc = fedc__frame_pack_message(&m, &frame, &n, NULL, 0);
    if (rc == FEDC_OK) rc = fedc__msg_unpack(frame + 5, n - 5, &in, NULL, 0);
    free(frame);
    CHECK(rc == FEDC_OK, "pack and unpack a FitIns with config");
    fedc_config *d = fedc_config_create();
    if (rc == FEDC_OK)
        CHECK_STATUS(fedc__config_from_kv(d, in->fit_ins->config, in->fit_ins->n_config), FEDC_OK,
                     "config_from_kv");
    int same = fedc_config_count(d) == fedc_config_count(c);
    for (size_t i = 0; same && i < fedc_config_count(c); i++) {
        double f1 = 0, f2 = 0;
        int64_t i1 = 0, i2 = 0;
        const char *s1 = NULL, *s2 = NULL;
        int b1 = 0, b2 = 0;
        fedc_config_value_at(c, i, &f1, &i1, &s1, &b1);
        fedc_config_value_at(d, i, &f2, &i2, &s2, &b2);
        fedc_value_kind k = fedc_config_kind_at(c, i);
        if (strcmp(fedc_config_key_at(c, i), fedc_config_key_at(d, i)) || k != fedc_config_kind_at(d, i))
            same = 0;
        else if (k == FEDC_VALUE_F64)
            same = memcmp(&f1, &f2, sizeof f1) == 0;
        else if (k == FEDC_VALUE_I64)
            same = i1 == i2;
        else if (k == FEDC_VALUE_STR)
            same = !strcmp(s1, s2);
        else
            same = b1 == b2;
        if (!same) printf("entry %zu ('%s') differs\n", i, fedc_config_key_at(c, i));
    }
    CHECK(same, "config round trip keeps keys, order, kinds and values");
    fedc__msg_free(in);
    fedc__kvbuf_free(&kv);
    fedc__kvbuf_free(&kv); /* a freed kvbuf is zeroed: freeing again is harmless */

    /* An empty map gives no entries. */
    fedc_config *e = fedc_config_create();
    CHECK_STATUS(fedc__kvbuf_init(&kv, e), FEDC_OK, "kvbuf_init of an empty map");
    CHECK(kv.n == 0, "no entries");
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(e);

    /* Received lists: a repeated key keeps the last value; entries with an
     * empty key, no value or no kind are skipped. */
    Fedc__V1__Scalar sc[5];
    Fedc__V1__KeyValue kvs[5], *ptrs[5];
    for (int i = 0; i < 5; i++) {
        fedc__v1__scalar__init(&sc[i]);
        fedc__v1__key_value__init(&kvs[i]);
        kvs[i].value = &sc[i];
        ptrs[i] = &kvs[i];
    }
    kvs[0].key = "k";
    sc[0].kind_case = FEDC__V1__SCALAR__KIND_I;
    sc[0].i = 1;
    kvs[1].key = "";
    sc[1].kind_case = FEDC__V1__SCALAR__KIND_I;
    sc[1].i = 2;
    kvs[2].key = "nov";
    kvs[2].value = NULL;
    kvs[3].key = "unset";
    kvs[4].key = "k";
    sc[4].kind_case = FEDC__V1__SCALAR__KIND_S;
    sc[4].s = "last";
    fedc_config *r = fedc_config_create();
    CHECK_STATUS(fedc__config_from_kv(r, ptrs, 5), FEDC_OK, "config_from_kv with odd entries");
    const char *s = NULL;
    CHECK(fedc_config_count(r) == 1 && fedc_config_get_str(r, "k", &s) == FEDC_OK && !strcmp(s, "last"),
          "one entry, k = 'last' (count %zu)", fedc_config_count(r));
    fedc_config_destroy(r);
    fedc_config_destroy(d);
    fedc_config_destroy(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_encode_layout();
    test_round_trip();
    test_reuse_mismatch();
    test_messages();
    test_truncation();
    test_protocol_errors();
    test_kv();
    return test_summary();
}
