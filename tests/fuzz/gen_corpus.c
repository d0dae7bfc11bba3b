/*
 * Writes the seed corpus of the fuzz targets: valid inputs for each, from
 * the library itself. Run once (and again when a format changes):
 *   build-fuzz/tests/fuzz/fuzz_gen_corpus tests/fuzz/corpus
 * which (over)writes corpus/<target>/seed-*; the regression inputs kept
 * next to them (regress-*, crash-*) are left alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "fedc/strategy.h"
#include "fedc/tensor.h"
#include "handshake_sim.h"
#include "proto/frame.h"
#include "proto/wire.h"
#include "secagg_sim.h"
#include "server/checkpoint.h"

static const char *g_root;

static void put_file(const char *target, const char *name, const void *a, size_t alen, const void *b,
                     size_t blen)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s/seed-%s", g_root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (alen && fwrite(a, 1, alen, f) != alen) || (blen && fwrite(b, 1, blen, f) != blen) ||
        fclose(f)) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* One message: its payload for fuzz_message, a one-frame stream for fuzz_frame. */
static void put_message(const char *name, const fedc__msg *m)
{
    uint8_t *frame = NULL;
    size_t flen = 0;
    if (fedc__frame_pack_message(m, &frame, &flen, NULL, 0) != FEDC_OK) exit(1);
    put_file("message", name, frame + FEDC_FRAME_HEADER_BYTES, flen - FEDC_FRAME_HEADER_BYTES, NULL, 0);
    uint8_t limit = 0x80; /* the default max_frame */
    put_file("frame", name, &limit, 1, frame, flen);
    free(frame);
}

static void gen_messages(void)
{
    fedc_config *c = fedc_config_create();
    fedc_config_set_f64(c, "lr", 0.05);
    fedc_config_set_i64(c, "local_epochs", 2);
    fedc_config_set_str(c, "model", "mlp");
    fedc_config_set_bool(c, "shuffle", 1);
    fedc__kvbuf kv;
    if (fedc__kvbuf_init(&kv, c) != FEDC_OK) exit(1);
    fedc__msg m = FEDC__V1__MESSAGE__INIT;

    Fedc__V1__Hello hello = FEDC__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.node_id = "node-1";
    hello.software = "fedc 0.1.0";
    hello.max_frame_bytes = 1u << 24;
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &hello;
    put_message("hello", &m);
    Fedc__V1__Welcome welcome = FEDC__V1__WELCOME__INIT;
    welcome.protocol_version = 1;
    welcome.server_id = "server";
    welcome.max_frame_bytes = 1u << 24;
    m.body_case = FEDC__V1__MESSAGE__BODY_WELCOME;
    m.welcome = &welcome;
    put_message("welcome", &m);
    Fedc__V1__TensorHeader th = FEDC__V1__TENSOR_HEADER__INIT;
    uint64_t shape[3] = {3, 300, 7};
    th.name = "layer.weight";
    th.dtype = FEDC__V1__DTYPE__F32;
    th.n_shape = 3;
    th.shape = shape;
    th.nbytes = 3 * 300 * 7 * 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
    m.tensor = &th;
    put_message("tensor", &m);
    Fedc__V1__GetParametersIns gpi = FEDC__V1__GET_PARAMETERS_INS__INIT;
    gpi.n_config = kv.n;
    gpi.config = kv.ptrs;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS;
    m.get_parameters_ins = &gpi;
    put_message("get_parameters_ins", &m);
    Fedc__V1__GetParametersRes gpr = FEDC__V1__GET_PARAMETERS_RES__INIT;
    gpr.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES;
    m.get_parameters_res = &gpr;
    put_message("get_parameters_res", &m);
    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    fi.round = 12;
    fi.n_config = kv.n;
    fi.config = kv.ptrs;
    fi.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    put_message("fit_ins", &m);
    Fedc__V1__FitRes fr = FEDC__V1__FIT_RES__INIT;
    fr.round = 12;
    fr.num_examples = 600;
    fr.n_metrics = kv.n;
    fr.metrics = kv.ptrs;
    fr.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &fr;
    put_message("fit_res", &m);
    Fedc__V1__EvaluateIns ei = FEDC__V1__EVALUATE_INS__INIT;
    ei.round = 3;
    ei.n_config = kv.n;
    ei.config = kv.ptrs;
    ei.num_tensors = 4;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_INS;
    m.evaluate_ins = &ei;
    put_message("evaluate_ins", &m);
    Fedc__V1__EvaluateRes er = FEDC__V1__EVALUATE_RES__INIT;
    er.round = 3;
    er.loss = 0.25;
    er.num_examples = 100;
    er.n_metrics = kv.n;
    er.metrics = kv.ptrs;
    m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_RES;
    m.evaluate_res = &er;
    put_message("evaluate_res", &m);
    Fedc__V1__Failure fa = FEDC__V1__FAILURE__INIT;
    fa.round = 3;
    fa.reason = "local data missing";
    m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
    m.failure = &fa;
    put_message("failure", &m);
    /* A training request of a round with secure aggregation, and one of
     * its stage messages (a KEYS header with an empty body). */
    static uint8_t seed32[32] = {1, 2, 3};
    Fedc__V1__SecAggSetup su = FEDC__V1__SEC_AGG_SETUP__INIT;
    su.index = 2;
    su.num_clients = 8;
    su.neighbours = 7;
    su.threshold = 4;
    su.graph_seed.data = seed32;
    su.graph_seed.len = sizeof seed32;
    su.clip_range = 8;
    su.bits = 24;
    su.max_weight = 1000;
    su.dim = 101;
    fi.secagg = &su;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
    m.fit_ins = &fi;
    put_message("fit_ins_secagg", &m);
    fi.secagg = NULL;
    static uint8_t payload[28] = {'F', 'S', 'A',  '1',  2,    0,    0, 0, 12, 0, 0, 0, 0, 0,
                                  0,   0,   0xff, 0xff, 0xff, 0xff, 2, 0, 0,  0, 0, 0, 0, 0};
    Fedc__V1__SecAgg sa = FEDC__V1__SEC_AGG__INIT;
    sa.round = 12;
    sa.payload.data = payload;
    sa.payload.len = sizeof payload;
    m.body_case = FEDC__V1__MESSAGE__BODY_SECAGG;
    m.secagg = &sa;
    put_message("secagg", &m);
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    sd.reason = "done";
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    put_message("shutdown", &m);
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(c);
}

/* Saved states: each strategy's fresh state, and states with n = 3 and one
 * or two vectors where its restore takes them. */
static void gen_strategy_states(void)
{
    static const char *const names[] = {"fedavg",  "fedavgm",  "fedadagrad", "fedadam", "fedyogi",
                                        "fedprox", "scaffold", "fednova",    "median",  "krum"};
    char err[FEDC_ERRMSG_MAX];
    fedc_config *prox = fedc_config_create();
    fedc_config_set_f64(prox, "proximal_mu", 0.01);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        fedc_strategy *s = NULL;
        if (fedc_strategy_create(names[i], strcmp(names[i], "fedprox") ? NULL : prox, &s, err, sizeof err))
            exit(1);
        uint8_t *buf = NULL;
        size_t len = 0;
        if (s->save(s->state, &buf, &len)) exit(1);
        char fname[64];
        snprintf(fname, sizeof fname, "%s-fresh", names[i]);
        put_file("strategy_state", fname, buf, len, NULL, 0);
        /* head: magic, version, name length, name, rounds; then n, k,
         * k * n doubles and the tail (count, then fednova's a_ref). */
        size_t head = 16 + strlen(names[i]) + 8, tail = len - head - 12;
        for (uint32_t k = 1; k <= 2; k++) {
            uint8_t st[512];
            size_t n = 3, off = head;
            memcpy(st, buf, head);
            st[head - 8] = 5; /* rounds */
            memset(st + off, 0, 12);
            st[off] = (uint8_t)n;
            st[off + 8] = (uint8_t)k;
            off += 12;
            for (size_t j = 0; j < k * n; j++, off += 8) {
                double x = 0.125 * (double)(j + 1);
                memcpy(st + off, &x, 8); /* little-endian hosts only, like the format */
            }
            memcpy(st + off, buf + len - tail, tail);
            off += tail;
            if (s->restore(s->state, st, off, err, sizeof err) != FEDC_OK) continue;
            snprintf(fname, sizeof fname, "%s-k%u", names[i], k);
            put_file("strategy_state", fname, st, off, NULL, 0);
        }
        free(buf);
        fedc_strategy_destroy(s);
    }
    fedc_config_destroy(prox);
}

static void gen_secagg(void)
{
    static const char *const names[SIM_POINTS] = {"server-advertise",   "server-shares", "server-masked",
                                                  "server-unmask-resp", "client-keys",   "client-shares-fwd",
                                                  "client-unmask-req"};
    sim_setup();
    for (int p = 0; p < SIM_POINTS; p++) {
        uint8_t *rec = NULL;
        size_t reclen = 0;
        sim_io io = {.point = p, .rec = &rec, .reclen = &reclen};
        if (!sim_round(&io) || !rec) {
            fprintf(stderr, "secagg round %d failed\n", p);
            exit(1);
        }
        uint8_t sel = (uint8_t)p;
        put_file("secagg", names[p], &sel, 1, rec, reclen);
        free(rec);
    }
}

static void gen_safetensors(void)
{
    char err[FEDC_ERRMSG_MAX], path[512];
    fedc_params *p = fedc_params_create();
    int64_t s2[2] = {2, 3}, s1[1] = {4};
    float w[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    if (fedc_params_add(p, "fc.weight", FEDC_F32, 2, s2, w, NULL, err, sizeof err) ||
        fedc_params_add(p, "fc.bias", FEDC_F32, 1, s1, NULL, NULL, err, sizeof err) ||
        fedc_params_add(p, "step", FEDC_I64, 0, NULL, NULL, NULL, err, sizeof err))
        exit(1);
    snprintf(path, sizeof path, "%s/safetensors/seed-small", g_root);
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    if (fedc_params_save(p, path, mk, mv, 1, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    fedc_params_destroy(p);
}

/* Checkpoints: FedAvg without DP, and a strategy's state with the DP
 * accountant and an RDP vector. */
static void gen_checkpoints(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    int64_t s2[2] = {2, 3}, s1[1] = {3};
    float w[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    if (!p || fedc_params_add(p, "fc.weight", FEDC_F32, 2, s2, w, NULL, err, sizeof err) ||
        fedc_params_add(p, "fc.bias", FEDC_F32, 1, s1, NULL, NULL, err, sizeof err))
        exit(1);
    fedc__checkpoint c;
    memset(&c, 0, sizeof c);
    c.round = 3;
    c.seed = 5;
    c.fraction_fit = 1;
    c.dp_delta = 1e-5;
    c.epsilon_record = NAN;
    c.model = p;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fedc__checkpoint_encode(&c, &buf, &len, err, sizeof err)) exit(1);
    put_file("checkpoint", "fedavg", buf, len, NULL, 0);
    free(buf);
    fedc_strategy *st = NULL;
    double rdp[4] = {0.5, 0.25, 0.125, 1e-3};
    if (fedc_strategy_create("fedadam", NULL, &st, err, sizeof err) ||
        st->save(st->state, &c.strategy_state, &c.strategy_state_len))
        exit(1);
    snprintf(c.strategy, sizeof c.strategy, "%s", st->name);
    c.sampling = 1;
    c.fraction_fit = 0.5;
    c.secagg = 1;
    c.dp_mode = 3;
    c.dp_clip_option = c.dp_clip = 1;
    c.dp_noise_multiplier = 1.1;
    c.dp_steps = 3;
    c.epsilon_record = 2.5;
    c.ddg_rdp = rdp;
    c.ddg_orders = 4;
    if (fedc__checkpoint_encode(&c, &buf, &len, err, sizeof err)) exit(1);
    put_file("checkpoint", "fedadam-dp", buf, len, NULL, 0);
    free(buf);
    free(c.strategy_state);
    fedc_strategy_destroy(st);
    fedc_params_destroy(p);
}

/* A frame of message m appended to *buf (*len bytes so far). */
static void append_frame(uint8_t **buf, size_t *len, const fedc__msg *m)
{
    uint8_t *frame = NULL;
    size_t flen = 0;
    if (fedc__frame_pack_message(m, &frame, &flen, NULL, 0) != FEDC_OK) exit(1);
    uint8_t *nb = realloc(*buf, *len + flen);
    if (!nb) exit(1);
    memcpy(nb + *len, frame, flen);
    *buf = nb;
    *len += flen;
    free(frame);
}

/* A client's opening for fuzz_handshake (handshake_sim.h): a Hello with
 * node id `id` and key `key` (-1: none), then an AuthResponse with `sig`
 * (NULL: none), then a Failure if `more`. `cut` is byte 0: where the
 * stream is cut in two. */
static void put_handshake(const char *name, uint8_t cut, uint32_t version, const char *id, int key,
                          const uint8_t *sig, int more)
{
    fedc__msg m = FEDC__V1__MESSAGE__INIT;
    Fedc__V1__Hello h = FEDC__V1__HELLO__INIT;
    uint8_t pub[FEDC_NODEKEY_PUB_LEN];
    h.protocol_version = version;
    h.node_id = (char *)id;
    h.software = "fedc fuzz";
    if (key >= 0) {
        EVP_PKEY_free(hs_key(key, pub));
        h.node_key.data = pub;
        h.node_key.len = sizeof pub;
    }
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &h;
    uint8_t *buf = malloc(1);
    size_t len = 1;
    if (!buf) exit(1);
    buf[0] = cut;
    append_frame(&buf, &len, &m);
    if (sig) {
        Fedc__V1__AuthResponse r = FEDC__V1__AUTH_RESPONSE__INIT;
        r.signature.data = (uint8_t *)sig;
        r.signature.len = FEDC_NODEAUTH_SIG;
        m = (fedc__msg)FEDC__V1__MESSAGE__INIT;
        m.body_case = FEDC__V1__MESSAGE__BODY_AUTH_RESPONSE;
        m.auth_response = &r;
        append_frame(&buf, &len, &m);
    }
    if (more) {
        Fedc__V1__Failure fl = FEDC__V1__FAILURE__INIT;
        fl.reason = "fuzz";
        m = (fedc__msg)FEDC__V1__MESSAGE__INIT;
        m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
        m.failure = &fl;
        append_frame(&buf, &len, &m);
    }
    put_file("handshake", name, buf, len, NULL, 0);
    free(buf);
}

static void gen_handshake(void)
{
    uint8_t nonce[FEDC_NODEAUTH_NONCE], pub[FEDC_NODEKEY_PUB_LEN], zero[FEDC_NODEAUTH_SIG] = {0};
    uint8_t sig_fpr[FEDC_NODEAUTH_SIG], sig_name[FEDC_NODEAUTH_SIG];
    char fpr[FEDC_NODEKEY_FPR_LEN + 1];
    hs_expected_nonce(nonce);
    EVP_PKEY *key = hs_key(HS_KEY_NODE, pub);
    fedc__nodekey_fingerprint(pub, fpr);
    if (fedc__nodeauth_sign(key, nonce, fpr, NULL, 0, sig_fpr) != FEDC_OK ||
        fedc__nodeauth_sign(key, nonce, hs_key_names[HS_KEY_NODE], NULL, 0, sig_name) != FEDC_OK)
        exit(1);
    EVP_PKEY_free(key);
    const char *node = hs_key_names[HS_KEY_NODE];
    put_handshake("hello-no-key", 0, FEDC_PROTOCOL_VERSION, node, -1, NULL, 0);
    put_handshake("hello-bad-version", 0, 2, node, HS_KEY_NODE, NULL, 0);
    put_handshake("hello-unlisted-key", 0, FEDC_PROTOCOL_VERSION, hs_key_names[HS_KEY_STRANGER],
                  HS_KEY_STRANGER, NULL, 0);
    put_handshake("hello-listed-key", 0, FEDC_PROTOCOL_VERSION, node, HS_KEY_NODE, NULL, 0);
    put_handshake("hello-wrong-id", 0, FEDC_PROTOCOL_VERSION, hs_key_names[HS_KEY_PEER], HS_KEY_NODE, NULL,
                  0);
    put_handshake("auth-zero", 0, FEDC_PROTOCOL_VERSION, node, HS_KEY_NODE, zero, 0);
    put_handshake("auth-zero-split", 7, FEDC_PROTOCOL_VERSION, node, HS_KEY_NODE, zero, 0);
    put_handshake("auth-wrong-id", 0, FEDC_PROTOCOL_VERSION, fpr, HS_KEY_NODE, sig_name, 0);
    put_handshake("auth-valid-fpr", 0, FEDC_PROTOCOL_VERSION, fpr, HS_KEY_NODE, sig_fpr, 1);
    put_handshake("auth-valid-name", 90, FEDC_PROTOCOL_VERSION, node, HS_KEY_NODE, sig_name, 0);
    static const char garbage[] = "\x00GET / HTTP/1.1\r\nHost: fedc\r\n\r\n";
    put_file("handshake", "garbage", garbage, sizeof garbage - 1, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
        return 2;
    }
    g_root = argv[1];
    gen_messages();
    gen_strategy_states();
    gen_secagg();
    gen_safetensors();
    gen_checkpoints();
    gen_handshake();
    return 0;
}
