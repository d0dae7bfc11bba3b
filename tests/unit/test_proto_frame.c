/*
 * Framing (docs/protocol.md, "Frames"): the 5-byte header, its checks, and
 * MESSAGE payloads packed and unpacked for every body of fedc.v1.Message,
 * plus the TensorHeader functions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/tensor.h"
#include "proto/frame.h"
#include "test_util.h"

static void test_header(void)
{
    char err[FEDC_ERRMSG_MAX];
    uint8_t h[FEDC_FRAME_HEADER_BYTES];
    fedc__frame_header_encode(h, FEDC_FRAME_MESSAGE, 0x01020304u);
    CHECK(h[0] == 1 && h[1] == 2 && h[2] == 3 && h[3] == 4 && h[4] == 1,
          "length is big-endian, type last: %02x %02x %02x %02x %02x", h[0], h[1], h[2], h[3], h[4]);

    uint8_t type = 0;
    uint32_t len = 0;
    const uint32_t lens[] = {1, 5, 255, 256, 65535, 1u << 20, FEDC_DEFAULT_MAX_FRAME};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (uint8_t t = FEDC_FRAME_MESSAGE; t <= FEDC_FRAME_DATA; t++) {
            fedc__frame_header_encode(h, t, lens[i]);
            type = 0;
            len = 0;
            int rc = fedc__frame_header_decode(h, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, sizeof err);
            CHECK(rc == FEDC_OK && type == t && len == lens[i],
                  "decode(type %u, len %u): rc %d type %u len %u", t, lens[i], rc, type, len);
        }
    }

    /* The limit: equal is fine, one more is too large. */
    fedc__frame_header_encode(h, FEDC_FRAME_DATA, 1000);
    CHECK_STATUS(fedc__frame_header_decode(h, 1000, &type, &len, err, sizeof err), FEDC_OK,
                 "length equal to max_frame");
    fedc__frame_header_encode(h, FEDC_FRAME_DATA, 1001);
    err[0] = '\0';
    CHECK_STATUS(fedc__frame_header_decode(h, 1000, &type, &len, err, sizeof err), FEDC_ERR_TOO_LARGE,
                 "length one above max_frame");
    CHECK_CONTAINS(err, "1001", "too-large message gives the length");
    CHECK_CONTAINS(err, "1000", "too-large message gives the limit");
    fedc__frame_header_encode(h, FEDC_FRAME_MESSAGE, UINT32_MAX);
    CHECK_STATUS(fedc__frame_header_decode(h, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, sizeof err),
                 FEDC_ERR_TOO_LARGE, "length 2^32-1");

    /* Unknown types, whatever the length. */
    const uint8_t bad_types[] = {0, 3, 4, 0x7f, 0x81, 0xff};
    for (size_t i = 0; i < sizeof bad_types; i++) {
        fedc__frame_header_encode(h, bad_types[i], 10);
        type = 0x55;
        len = 0x5555;
        err[0] = '\0';
        CHECK_STATUS(fedc__frame_header_decode(h, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, sizeof err),
                     FEDC_ERR_PROTOCOL, "unknown frame type");
        CHECK(err[0] != '\0' && type == 0x55 && len == 0x5555, "type %u: a message, outputs untouched ('%s')",
              bad_types[i], err);
    }
    fedc__frame_header_encode(h, 9, UINT32_MAX);
    CHECK_STATUS(fedc__frame_header_decode(h, 100, &type, &len, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "unknown type with an over-long length");

    /* An empty MESSAGE is refused. */
    fedc__frame_header_encode(h, FEDC_FRAME_MESSAGE, 0);
    err[0] = '\0';
    CHECK_STATUS(fedc__frame_header_decode(h, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, sizeof err),
                 FEDC_ERR_PROTOCOL, "empty MESSAGE frame");
    CHECK_CONTAINS(err, "empty", "empty MESSAGE message");
    CHECK_STATUS(fedc__frame_header_decode(h, FEDC_DEFAULT_MAX_FRAME, &type, &len, NULL, 0),
                 FEDC_ERR_PROTOCOL, "empty MESSAGE frame, no error buffer");
}

/* Packs m into a frame, checks the header, unpacks the payload. */
static fedc__msg *round_trip(const fedc__msg *m, const char *what)
{
    char err[FEDC_ERRMSG_MAX];
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = fedc__frame_pack_message(m, &buf, &n, err, sizeof err);
    CHECK(rc == FEDC_OK && buf && n > FEDC_FRAME_HEADER_BYTES, "%s: pack (rc %d)", what, rc);
    if (rc) return NULL;
    uint8_t type = 0;
    uint32_t len = 0;
    rc = fedc__frame_header_decode(buf, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, sizeof err);
    CHECK(rc == FEDC_OK && type == FEDC_FRAME_MESSAGE && len == n - FEDC_FRAME_HEADER_BYTES,
          "%s: frame header type %u length %u of %zu bytes", what, type, len, n);
    CHECK(len == fedc__v1__message__get_packed_size(m), "%s: length is the packed size", what);
    fedc__msg *out = NULL;
    rc = fedc__msg_unpack(buf + FEDC_FRAME_HEADER_BYTES, n - FEDC_FRAME_HEADER_BYTES, &out, err, sizeof err);
    CHECK(rc == FEDC_OK && out, "%s: unpack (rc %d: %s)", what, rc, rc ? err : "");
    CHECK(out && out->body_case == m->body_case, "%s: body case %d, want %d", what,
          out ? (int)out->body_case : -1, (int)m->body_case);
    free(buf);
    if (out && out->body_case != m->body_case) {
        fedc__msg_free(out);
        return NULL;
    }
    return out;
}

/* A config list with every scalar kind (and a key-only entry). */
static Fedc__V1__Scalar g_sc[5];
static Fedc__V1__KeyValue g_kv[5];
static Fedc__V1__KeyValue *g_kvp[5];

static void make_kv(void)
{
    static const char *keys[5] = {"lr", "local_epochs", "model", "shuffle", "unset"};
    for (int i = 0; i < 5; i++) {
        fedc__v1__scalar__init(&g_sc[i]);
        fedc__v1__key_value__init(&g_kv[i]);
        g_kv[i].key = (char *)keys[i];
        g_kv[i].value = &g_sc[i];
        g_kvp[i] = &g_kv[i];
    }
    g_sc[0].kind_case = FEDC__V1__SCALAR__KIND_F;
    g_sc[0].f = 0.05;
    g_sc[1].kind_case = FEDC__V1__SCALAR__KIND_I;
    g_sc[1].i = INT64_MIN;
    g_sc[2].kind_case = FEDC__V1__SCALAR__KIND_S;
    g_sc[2].s = "cnn \xc3\xa9";
    g_sc[3].kind_case = FEDC__V1__SCALAR__KIND_B;
    g_sc[3].b = 1;
    g_kv[4].value = NULL;
}

static int kv_equal(size_t n, Fedc__V1__KeyValue **got)
{
    if (n != 5) return 0;
    for (int i = 0; i < 5; i++) {
        if (strcmp(got[i]->key, g_kv[i].key)) return 0;
        if (i == 4) {
            if (got[i]->value) return 0;
            continue;
        }
        const Fedc__V1__Scalar *a = &g_sc[i], *b = got[i]->value;
        if (!b || a->kind_case != b->kind_case) return 0;
        switch (a->kind_case) {
        case FEDC__V1__SCALAR__KIND_F:
            if (a->f != b->f) return 0;
            break;
        case FEDC__V1__SCALAR__KIND_I:
            if (a->i != b->i) return 0;
            break;
        case FEDC__V1__SCALAR__KIND_S:
            if (strcmp(a->s, b->s)) return 0;
            break;
        case FEDC__V1__SCALAR__KIND_B:
            if (a->b != b->b) return 0;
            break;
        default: return 0;
        }
    }
    return 1;
}

static void test_bodies(void)
{
    make_kv();
    fedc__msg m = FEDC__V1__MESSAGE__INIT, *o;

    Fedc__V1__Hello hello = FEDC__V1__HELLO__INIT;
    hello.protocol_version = FEDC_PROTOCOL_VERSION;
    hello.node_id = "node-7";
    hello.software = "fedc 0.1.0";
    hello.max_frame_bytes = 16u << 20;
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &hello;
    if ((o = round_trip(&m, "hello"))) {
        CHECK(o->hello->protocol_version == 1 && !strcmp(o->hello->node_id, "node-7") &&
                  !strcmp(o->hello->software, "fedc 0.1.0") && o->hello->max_frame_bytes == 16u << 20,
              "hello fields");
        CHECK(!strcmp(fedc__msg_name(o), "hello"), "name hello");
        fedc__msg_free(o);
    }

    Fedc__V1__Welcome welcome = FEDC__V1__WELCOME__INIT;
    welcome.protocol_version = 1;
    welcome.server_id = "srv";
    welcome.max_frame_bytes = UINT64_MAX;
    m.body_case = FEDC__V1__MESSAGE__BODY_WELCOME;
    m.welcome = &welcome;
    if ((o = round_trip(&m, "welcome"))) {
        CHECK(o->welcome->protocol_version == 1 && !strcmp(o->welcome->server_id, "srv") &&
                  o->welcome->max_frame_bytes == UINT64_MAX,
              "welcome fields");
        CHECK(!strcmp(fedc__msg_name(o), "welcome"), "name welcome");
        fedc__msg_free(o);
    }

    Fedc__V1__TensorHeader th = FEDC__V1__TENSOR_HEADER__INIT;
    uint64_t shape[3] = {2, 3, 4};
    th.name = "fc1.weight";
    th.dtype = FEDC__V1__DTYPE__BF16;
    th.n_shape = 3;
    th.shape = shape;
    th.nbytes = 48;
    m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
    m.tensor = &th;
    if ((o = round_trip(&m, "tensor"))) {
        CHECK(!strcmp(o->tensor->name, "fc1.weight") && o->tensor->dtype == FEDC__V1__DTYPE__BF16 &&
                  o->tensor->n_shape == 3 && o->tensor->shape[0] == 2 && o->tensor->shape[2] == 4 &&
                  o->tensor->nbytes == 48,
              "tensor fields");
        CHECK(!strcmp(fedc__msg_name(o), "tensor"), "name tensor");
        fedc__msg_free(o);
    }
    /* A scalar header: no shape at all. */
    th.n_shape = 0;
    th.shape = NULL;
    th.dtype = FEDC__V1__DTYPE__F64;
    th.nbytes = 8;
    if ((o = round_trip(&m, "scalar tensor"))) {
        CHECK(o->tensor->n_shape == 0 && o->tensor->nbytes == 8, "scalar tensor fields");
        fedc__msg_free(o);
    }

    Fedc__V1__GetParametersIns gpi = FEDC__V1__GET_PARAMETERS_INS__INIT;
    gpi.n_config = 5;
    gpi.config = g_kvp;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS;
    m.get_parameters_ins = &gpi;
    if ((o = round_trip(&m, "get_parameters_ins"))) {
        CHECK(kv_equal(o->get_parameters_ins->n_config, o->get_parameters_ins->config),
              "get_parameters_ins config");
        CHECK(!strcmp(fedc__msg_name(o), "get_parameters_ins"), "name get_parameters_ins");
        fedc__msg_free(o);
    }

    Fedc__V1__GetParametersRes gpr = FEDC__V1__GET_PARAMETERS_RES__INIT;
    gpr.num_tensors = 12;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES;
    m.get_parameters_res = &gpr;
    if ((o = round_trip(&m, "get_parameters_res"))) {
        CHECK(o->get_parameters_res->num_tensors == 12, "get_parameters_res fields");
        CHECK(!strcmp(fedc__msg_name(o), "get_parameters_res"), "name get_parameters_res");
        fedc__msg_free(o);
    }
    /* All-default bodies encode as an empty submessage and still decode. */
    gpr.num_tensors = 0;
    if ((o = round_trip(&m, "empty get_parameters_res"))) {
        CHECK(o->get_parameters_res->num_tensors == 0, "default get_parameters_res");
        fedc__msg_free(o);
    }

    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    fi.round = (1ull << 40) + 3;
    fi.n_config = 5;
    fi.config = g_kvp;
    fi.num_tensors = UINT32_MAX;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    if ((o = round_trip(&m, "fit_ins"))) {
        CHECK(o->fit_ins->round == (1ull << 40) + 3 && o->fit_ins->num_tensors == UINT32_MAX &&
                  kv_equal(o->fit_ins->n_config, o->fit_ins->config),
              "fit_ins fields");
        CHECK(!strcmp(fedc__msg_name(o), "fit_ins"), "name fit_ins");
        fedc__msg_free(o);
    }

    Fedc__V1__FitRes fr = FEDC__V1__FIT_RES__INIT;
    fr.round = 9;
    fr.num_examples = 600;
    fr.n_metrics = 5;
    fr.metrics = g_kvp;
    fr.num_tensors = 2;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &fr;
    if ((o = round_trip(&m, "fit_res"))) {
        CHECK(o->fit_res->round == 9 && o->fit_res->num_examples == 600 && o->fit_res->num_tensors == 2 &&
                  kv_equal(o->fit_res->n_metrics, o->fit_res->metrics),
              "fit_res fields");
        CHECK(!strcmp(fedc__msg_name(o), "fit_res"), "name fit_res");
        fedc__msg_free(o);
    }

    Fedc__V1__EvaluateIns ei = FEDC__V1__EVALUATE_INS__INIT;
    ei.round = 4;
    ei.n_config = 5;
    ei.config = g_kvp;
    ei.num_tensors = 6;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_INS;
    m.evaluate_ins = &ei;
    if ((o = round_trip(&m, "evaluate_ins"))) {
        CHECK(o->evaluate_ins->round == 4 && o->evaluate_ins->num_tensors == 6 &&
                  kv_equal(o->evaluate_ins->n_config, o->evaluate_ins->config),
              "evaluate_ins fields");
        CHECK(!strcmp(fedc__msg_name(o), "evaluate_ins"), "name evaluate_ins");
        fedc__msg_free(o);
    }

    Fedc__V1__EvaluateRes er = FEDC__V1__EVALUATE_RES__INIT;
    er.round = 4;
    er.loss = -0.0625;
    er.num_examples = 1000;
    er.n_metrics = 5;
    er.metrics = g_kvp;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_RES;
    m.evaluate_res = &er;
    if ((o = round_trip(&m, "evaluate_res"))) {
        CHECK(o->evaluate_res->round == 4 && o->evaluate_res->loss == -0.0625 &&
                  o->evaluate_res->num_examples == 1000 &&
                  kv_equal(o->evaluate_res->n_metrics, o->evaluate_res->metrics),
              "evaluate_res fields");
        CHECK(!strcmp(fedc__msg_name(o), "evaluate_res"), "name evaluate_res");
        fedc__msg_free(o);
    }

    Fedc__V1__Failure fa = FEDC__V1__FAILURE__INIT;
    fa.round = 3;
    fa.reason = "out of memory";
    m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
    m.failure = &fa;
    if ((o = round_trip(&m, "failure"))) {
        CHECK(o->failure->round == 3 && !strcmp(o->failure->reason, "out of memory"), "failure fields");
        CHECK(!strcmp(fedc__msg_name(o), "failure"), "name failure");
        fedc__msg_free(o);
    }

    Fedc__V1__Error er2 = FEDC__V1__ERROR__INIT;
    er2.reason = "bad hello";
    m.body_case = FEDC__V1__MESSAGE__BODY_ERROR;
    m.error = &er2;
    if ((o = round_trip(&m, "error"))) {
        CHECK(!strcmp(o->error->reason, "bad hello"), "error fields");
        CHECK(!strcmp(fedc__msg_name(o), "error"), "name error");
        fedc__msg_free(o);
    }

    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    sd.reason = "federation complete";
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    if ((o = round_trip(&m, "shutdown"))) {
        CHECK(!strcmp(o->shutdown->reason, "federation complete"), "shutdown fields");
        CHECK(!strcmp(fedc__msg_name(o), "shutdown"), "name shutdown");
        fedc__msg_free(o);
    }

    /* A long reason packs to more than 127 bytes (multi-byte lengths). */
    char longr[3000];
    memset(longr, 'r', sizeof longr - 1);
    longr[sizeof longr - 1] = '\0';
    sd.reason = longr;
    if ((o = round_trip(&m, "long shutdown"))) {
        CHECK(!strcmp(o->shutdown->reason, longr), "long reason");
        fedc__msg_free(o);
    }

    fedc__msg none = FEDC__V1__MESSAGE__INIT;
    CHECK(!strcmp(fedc__msg_name(&none), "unknown") && !strcmp(fedc__msg_name(NULL), "unknown"),
          "name of no body");
    fedc__msg_free(NULL);
}

static void test_unpack_errors(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__msg *o = (fedc__msg *)&err;
    const uint8_t empty[1] = {0};
    err[0] = '\0';
    CHECK_STATUS(fedc__msg_unpack(empty, 0, &o, err, sizeof err), FEDC_ERR_PROTOCOL, "0 bytes");
    CHECK_CONTAINS(err, "no body", "0 bytes message");
    /* Field 99 (unknown to v1) only: decodes, but sets no body. */
    const uint8_t unknown_only[] = {0x98, 0x06, 0x01}; /* field 99, a varint */
    CHECK_STATUS(fedc__msg_unpack(unknown_only, sizeof unknown_only, &o, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "unknown field only");
    /* hello submessage whose length runs past the buffer. */
    const uint8_t cut[] = {0x0a, 0x10, 0x08, 0x01};
    err[0] = '\0';
    CHECK_STATUS(fedc__msg_unpack(cut, sizeof cut, &o, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "truncated submessage");
    CHECK_CONTAINS(err, "4 bytes", "malformed message gives the length");
    /* A varint that never ends. */
    const uint8_t varint[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CHECK_STATUS(fedc__msg_unpack(varint, sizeof varint, &o, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "over-long varint");
    /* Wire type 7 does not exist. */
    const uint8_t wt7[] = {0x0f, 0x00};
    CHECK_STATUS(fedc__msg_unpack(wt7, sizeof wt7, &o, err, sizeof err), FEDC_ERR_PROTOCOL, "wire type 7");
    /* Unknown field before a valid body: ignored, the body decodes. */
    const uint8_t extra[] = {0x98, 0x06, 0x05, 0x62, 0x00}; /* field 99 = 5, then shutdown{} */
    o = NULL;
    CHECK_STATUS(fedc__msg_unpack(extra, sizeof extra, &o, err, sizeof err), FEDC_OK,
                 "unknown field then shutdown{}");
    CHECK(o && o->body_case == FEDC__V1__MESSAGE__BODY_SHUTDOWN, "shutdown body after an unknown field");
    fedc__msg_free(o);
    /* Two bodies: the last one wins (protobuf oneof rule), no leak. */
    const uint8_t two[] = {0x5a, 0x03, 0x0a, 0x01, 'x', 0x62, 0x03, 0x0a, 0x01, 'y'};
    o = NULL;
    CHECK_STATUS(fedc__msg_unpack(two, sizeof two, &o, err, sizeof err), FEDC_OK, "error then shutdown");
    CHECK(o && o->body_case == FEDC__V1__MESSAGE__BODY_SHUTDOWN && !strcmp(o->shutdown->reason, "y"),
          "the last oneof member wins");
    fedc__msg_free(o);
}

static void test_tensor_header(void)
{
    char err[FEDC_ERRMSG_MAX];
    for (int d = -1; d <= 10; d++) CHECK(fedc__dtype_valid(d) == (d >= 1 && d <= 8), "dtype_valid(%d)", d);

    fedc_params *p = fedc_params_create();
    const int64_t s[3] = {5, 0, 7}, s2[2] = {3, 4};
    fedc_tensor *t = NULL, *z = NULL, *sc = NULL;
    fedc_params_add(p, "conv.w", FEDC_I32, 2, s2, NULL, &t, NULL, 0);
    fedc_params_add(p, "empty", FEDC_F16, 3, s, NULL, &z, NULL, 0);
    fedc_params_add(p, "scalar", FEDC_F64, 0, NULL, NULL, &sc, NULL, 0);
    CHECK(t && z && sc, "layout for the header tests");
    if (!t || !z || !sc) {
        fedc_params_destroy(p);
        return;
    }
    Fedc__V1__TensorHeader h;
    uint64_t shape[FEDC_MAX_DIMS];
    fedc__tensor_header_init(&h, t, shape);
    CHECK(h.name == t->name && h.dtype == FEDC__V1__DTYPE__I32 && h.n_shape == 2 && h.shape == shape &&
              shape[0] == 3 && shape[1] == 4 && h.nbytes == 48,
          "header_init copies the layout of 'conv.w'");
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "check of conv.w");
    fedc__tensor_header_init(&h, z, shape);
    CHECK(h.n_shape == 3 && h.nbytes == 0, "zero-size header");
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "check of a zero-size tensor");
    fedc__tensor_header_init(&h, sc, shape);
    CHECK(h.n_shape == 0 && h.nbytes == 8, "scalar header");
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "check of a scalar");

    /* Bad headers, each refused with a message. */
    fedc__tensor_header_init(&h, t, shape);
    h.nbytes = 47;
    err[0] = '\0';
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "nbytes 47 for I32 [3, 4]");
    CHECK_CONTAINS(err, "conv.w", "nbytes mismatch names the tensor");
    CHECK_CONTAINS(err, "48", "nbytes mismatch gives the expected size");
    h.nbytes = 48 + (1ull << 32);
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "nbytes off by 2^32");
    h.nbytes = 48;
    const int bad_dtypes[] = {0, 9, 100, -1};
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof bad_dtypes[0]; i++) {
        h.dtype = (Fedc__V1__DType)bad_dtypes[i];
        CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "unknown dtype");
    }
    h.dtype = FEDC__V1__DTYPE__I32;
    char name[FEDC_MAX_NAME + 1];
    memset(name, 'a', FEDC_MAX_NAME);
    name[FEDC_MAX_NAME] = '\0';
    h.name = name;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "256-byte name");
    name[FEDC_MAX_NAME - 1] = '\0';
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "255-byte name");
    h.name = "";
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "empty name");
    h.name = NULL;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "NULL name");
    h.name = "x";

    uint64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    h.dtype = FEDC__V1__DTYPE__U8;
    h.shape = nine;
    h.n_shape = 9;
    h.nbytes = 1;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "9 dimensions");
    h.n_shape = 8;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "8 dimensions");

    /* Shapes whose byte size overflows, whatever nbytes claims. */
    uint64_t big[3] = {1ull << 32, 1ull << 32, 0};
    h.shape = big;
    h.n_shape = 2;
    h.nbytes = 0;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "2^32 x 2^32 bytes");
    h.n_shape = 3;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL,
                 "2^32 x 2^32 x 0 (the overflow comes before the zero)");
    uint64_t neg[1] = {UINT64_MAX};
    h.shape = neg;
    h.n_shape = 1;
    h.nbytes = UINT64_MAX;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_ERR_PROTOCOL, "dimension 2^64-1");
    uint64_t zfirst[3] = {0, 1ull << 62, 1ull << 62};
    h.shape = zfirst;
    h.n_shape = 3;
    h.nbytes = 0;
    CHECK_STATUS(fedc__tensor_header_check(&h, err, sizeof err), FEDC_OK, "0 x 2^62 x 2^62 is empty");
    fedc_params_destroy(p);
}

int main(void)
{
    test_header();
    test_bodies();
    test_unpack_errors();
    test_tensor_header();
    return test_summary();
}
