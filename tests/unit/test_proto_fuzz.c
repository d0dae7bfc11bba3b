/*
 * fedc__msg_unpack on hostile input: thousands of seeded random buffers,
 * random streams of plausible protobuf fields, and mutations of valid
 * encodings of every body. Nothing may crash (AddressSanitizer and UBSan
 * check the rest); every answer is either a message with a body, which
 * re-encodes and decodes again, or FEDC_ERR_PROTOCOL with a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"
#include "fedc/tensor.h"
#include "proto/frame.h"
#include "proto/wire.h"
#include "test_util.h"

static int g_ok, g_refused, g_bad_answers;

/* Feeds one buffer to the decoder and exercises whatever comes out. */
static void feed(const uint8_t *buf, size_t len)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__msg *m = NULL;
    err[0] = '\0';
    int rc = fedc__msg_unpack(buf, len, &m, err, sizeof err);
    if (rc != FEDC_OK) {
        g_refused++;
        if (rc != FEDC_ERR_PROTOCOL || m != NULL || err[0] == '\0') {
            if (g_bad_answers++ < 5)
                printf("unexpected answer to %zu bytes: rc %d, out %p, '%s'\n", len, rc, (void *)m, err);
        }
        return;
    }
    g_ok++;
    if (!m || m->body_case == FEDC__V1__MESSAGE__BODY__NOT_SET) {
        g_bad_answers++;
        fedc__msg_free(m);
        return;
    }
    (void)fedc__msg_name(m);
    /* Use the decoded fields the way the receivers do. */
    fedc_config *c = fedc_config_create();
    switch (m->body_case) {
    case FEDC__V1__MESSAGE__BODY_TENSOR: (void)fedc__tensor_header_check(m->tensor, err, sizeof err); break;
    case FEDC__V1__MESSAGE__BODY_FIT_INS:
        (void)fedc__config_from_kv(c, m->fit_ins->config, m->fit_ins->n_config);
        break;
    case FEDC__V1__MESSAGE__BODY_FIT_RES:
        (void)fedc__config_from_kv(c, m->fit_res->metrics, m->fit_res->n_metrics);
        break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_INS:
        (void)fedc__config_from_kv(c, m->evaluate_ins->config, m->evaluate_ins->n_config);
        break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_RES:
        (void)fedc__config_from_kv(c, m->evaluate_res->metrics, m->evaluate_res->n_metrics);
        break;
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS:
        (void)fedc__config_from_kv(c, m->get_parameters_ins->config, m->get_parameters_ins->n_config);
        break;
    default: break;
    }
    fedc_config_destroy(c);
    /* What decoded must encode and decode again to the same body. */
    uint8_t *frame = NULL;
    size_t flen = 0;
    if (fedc__frame_pack_message(m, &frame, &flen, err, sizeof err) == FEDC_OK) {
        fedc__msg *again = NULL;
        if (fedc__msg_unpack(frame + FEDC_FRAME_HEADER_BYTES, flen - FEDC_FRAME_HEADER_BYTES, &again, err,
                             sizeof err) != FEDC_OK ||
            again->body_case != m->body_case)
            g_bad_answers++;
        fedc__msg_free(again);
        free(frame);
    } else {
        g_bad_answers++;
    }
    fedc__msg_free(m);
}

/* Valid encodings of every body, as seeds for mutation. */
enum { NSEEDS = 12 };
static uint8_t *g_seed[NSEEDS];
static size_t g_seed_len[NSEEDS];

static void add_seed(int i, const fedc__msg *m)
{
    uint8_t *frame = NULL;
    size_t flen = 0;
    g_seed[i] = NULL;
    g_seed_len[i] = 0;
    if (fedc__frame_pack_message(m, &frame, &flen, NULL, 0) != FEDC_OK) return;
    g_seed_len[i] = flen - FEDC_FRAME_HEADER_BYTES;
    g_seed[i] = malloc(g_seed_len[i]);
    if (g_seed[i]) memcpy(g_seed[i], frame + FEDC_FRAME_HEADER_BYTES, g_seed_len[i]);
    free(frame);
}

static void make_seeds(void)
{
    fedc_config *c = fedc_config_create();
    fedc_config_set_f64(c, "lr", 0.05);
    fedc_config_set_i64(c, "local_epochs", -2);
    fedc_config_set_str(c, "model", "mlp");
    fedc_config_set_bool(c, "shuffle", 1);
    fedc__kvbuf kv;
    fedc__kvbuf_init(&kv, c);

    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    Fedc__V1__Hello hello = FEDC__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.node_id = "node-1";
    hello.software = "fedc 0.1.0";
    hello.max_frame_bytes = 1u << 24;
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &hello;
    add_seed(0, &m);
    Fedc__V1__Welcome welcome = FEDC__V1__WELCOME__INIT;
    welcome.protocol_version = 1;
    welcome.server_id = "server";
    welcome.max_frame_bytes = 1u << 24;
    m.body_case = FEDC__V1__MESSAGE__BODY_WELCOME;
    m.welcome = &welcome;
    add_seed(1, &m);
    Fedc__V1__TensorHeader th = FEDC__V1__TENSOR_HEADER__INIT;
    uint64_t shape[3] = {3, 300, 7};
    th.name = "layer.weight";
    th.dtype = FEDC__V1__DTYPE__F32;
    th.n_shape = 3;
    th.shape = shape;
    th.nbytes = 3 * 300 * 7 * 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
    m.tensor = &th;
    add_seed(2, &m);
    Fedc__V1__GetParametersIns gpi = FEDC__V1__GET_PARAMETERS_INS__INIT;
    gpi.n_config = kv.n;
    gpi.config = kv.ptrs;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS;
    m.get_parameters_ins = &gpi;
    add_seed(3, &m);
    Fedc__V1__GetParametersRes gpr = FEDC__V1__GET_PARAMETERS_RES__INIT;
    gpr.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES;
    m.get_parameters_res = &gpr;
    add_seed(4, &m);
    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    fi.round = 12;
    fi.n_config = kv.n;
    fi.config = kv.ptrs;
    fi.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    add_seed(5, &m);
    Fedc__V1__FitRes fr = FEDC__V1__FIT_RES__INIT;
    fr.round = 12;
    fr.num_examples = 600;
    fr.n_metrics = kv.n;
    fr.metrics = kv.ptrs;
    fr.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &fr;
    add_seed(6, &m);
    Fedc__V1__EvaluateIns ei = FEDC__V1__EVALUATE_INS__INIT;
    ei.round = 3;
    ei.n_config = kv.n;
    ei.config = kv.ptrs;
    ei.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_INS;
    m.evaluate_ins = &ei;
    add_seed(7, &m);
    Fedc__V1__EvaluateRes er = FEDC__V1__EVALUATE_RES__INIT;
    er.round = 3;
    er.loss = 0.25;
    er.num_examples = 100;
    er.n_metrics = kv.n;
    er.metrics = kv.ptrs;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_RES;
    m.evaluate_res = &er;
    add_seed(8, &m);
    Fedc__V1__Failure fa = FEDC__V1__FAILURE__INIT;
    fa.round = 3;
    fa.reason = "local data missing";
    m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
    m.failure = &fa;
    add_seed(9, &m);
    Fedc__V1__Error e = FEDC__V1__ERROR__INIT;
    e.reason = "protocol violation";
    m.body_case = FEDC__V1__MESSAGE__BODY_ERROR;
    m.error = &e;
    add_seed(10, &m);
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    sd.reason = "done";
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    add_seed(11, &m);
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(c);
}

static void test_seeds_decode(void)
{
    int all = 1;
    for (int i = 0; i < NSEEDS; i++) {
        fedc__msg *m = NULL;
        if (!g_seed[i] || fedc__msg_unpack(g_seed[i], g_seed_len[i], &m, NULL, 0) != FEDC_OK ||
            (int)m->body_case != i + 1)
            all = 0;
        fedc__msg_free(m);
    }
    CHECK(all, "the %d seed encodings decode to their bodies", NSEEDS);
}

static void test_random_buffers(fedc_rng *r)
{
    uint8_t buf[512];
    int before = g_refused;
    for (int it = 0; it < 50000; it++) {
        size_t len = (size_t)fedc_rng_below(r, it < 2000 ? 8 : sizeof buf);
        for (size_t i = 0; i < len; i++) buf[i] = (uint8_t)fedc_rng_u64(r);
        feed(buf, len);
    }
    CHECK(g_refused - before > 40000, "most random buffers are refused (%d of 50000)", g_refused - before);
}

/* Streams of well-formed-looking fields (right tags, random wire types and
 * lengths, nested bodies), to get past the first byte. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) p[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

static size_t random_fields(fedc_rng *r, uint8_t *p, size_t cap, int depth)
{
    size_t n = 0;
    int fields = 1 + (int)fedc_rng_below(r, 5);
    for (int f = 0; f < fields && n + 24 < cap; f++) {
        uint64_t field = 1 + fedc_rng_below(r, depth == 0 ? 13 : 5);
        uint64_t wt = fedc_rng_below(r, 8) < 6 ? (fedc_rng_below(r, 2) ? 2 : 0) : fedc_rng_below(r, 8);
        n += put_varint(p + n, field << 3 | wt);
        switch (wt) {
        case 0: n += put_varint(p + n, fedc_rng_u64(r) >> fedc_rng_below(r, 64)); break;
        case 1:
            for (int i = 0; i < 8; i++) p[n++] = (uint8_t)fedc_rng_u64(r);
            break;
        case 5:
            for (int i = 0; i < 4; i++) p[n++] = (uint8_t)fedc_rng_u64(r);
            break;
        case 2: {
            uint8_t inner[256];
            size_t ilen;
            if (depth < 3 && fedc_rng_below(r, 2)) {
                ilen = random_fields(r, inner, sizeof inner, depth + 1);
            } else {
                ilen = (size_t)fedc_rng_below(r, 16);
                for (size_t i = 0; i < ilen; i++) inner[i] = (uint8_t)fedc_rng_u64(r);
            }
            uint64_t claimed = ilen;
            if (fedc_rng_below(r, 10) == 0) claimed += fedc_rng_below(r, 1000); /* lie */
            n += put_varint(p + n, claimed);
            if (n + ilen > cap) ilen = cap - n;
            memcpy(p + n, inner, ilen);
            n += ilen;
            break;
        }
        default: break;
        }
    }
    return n;
}

static void test_structured(fedc_rng *r)
{
    uint8_t buf[1024];
    int ok_before = g_ok;
    for (int it = 0; it < 50000; it++) {
        size_t len = random_fields(r, buf, sizeof buf, 0);
        feed(buf, len);
    }
    CHECK(g_ok - ok_before > 100, "some structured random buffers decode (%d of 50000)", g_ok - ok_before);
}

static void test_mutations(fedc_rng *r)
{
    uint8_t buf[2048];
    for (int it = 0; it < 100000; it++) {
        int s = (int)fedc_rng_below(r, NSEEDS);
        if (!g_seed[s]) continue;
        size_t len = g_seed_len[s];
        memcpy(buf, g_seed[s], len);
        int edits = 1 + (int)fedc_rng_below(r, 3);
        for (int e = 0; e < edits && len > 0; e++) {
            size_t pos = (size_t)fedc_rng_below(r, len);
            switch (fedc_rng_below(r, 6)) {
            case 0: buf[pos] ^= (uint8_t)(1u << fedc_rng_below(r, 8)); break;
            case 1: buf[pos] = (uint8_t)fedc_rng_u64(r); break;
            case 2: len = pos; break; /* truncate */
            case 3:                   /* insert a byte */
                if (len < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    buf[pos] = (uint8_t)fedc_rng_u64(r);
                    len++;
                }
                break;
            case 4: { /* duplicate a tail */
                size_t tail = len - pos;
                if (len + tail <= sizeof buf) {
                    memcpy(buf + len, buf + pos, tail);
                    len += tail;
                }
                break;
            }
            default: buf[pos] = (uint8_t)(buf[pos] | 0x80); break; /* stretch a varint */
            }
        }
        feed(buf, len);
    }
}

int main(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 0xfedc);
    make_seeds();
    test_seeds_decode();
    test_random_buffers(&r);
    test_structured(&r);
    test_mutations(&r);
    TEST_NOTE("%d inputs decoded, %d refused", g_ok, g_refused);
    CHECK(g_bad_answers == 0, "%d decoded, %d refused, %d answers broke the contract", g_ok, g_refused,
          g_bad_answers);
    for (int i = 0; i < NSEEDS; i++) free(g_seed[i]);
    return test_summary();
}
