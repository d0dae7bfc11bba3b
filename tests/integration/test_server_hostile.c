/* Hostile clients against the real server, in one process: a client that
 * restarts its update in the middle of a tensor, one that sends a Failure
 * in the middle of a tensor, and one that stalls holding the staging
 * buffer. None may leave a trace in the model or stop the federation. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "fedc/client.h"
#include "fedc/server.h"
#include "net/conn.h"
#include "proto/wire.h"
#include "unit/test_util.h"

static char g_addr[64];

static fedc_params *make_model(float v)
{
    fedc_params *p = fedc_params_create();
    int64_t shape[1] = {4};
    fedc_tensor *t;
    fedc_params_add(p, "w", FEDC_F32, 1, shape, NULL, &t, NULL, 0);
    for (int i = 0; i < 4; i++) ((float *)t->data)[i] = v;
    return p;
}

/* The honest client sends the model back unchanged, weight 1. */
static int honest_fit(void *u, fedc_params *p, const fedc_config *c, uint64_t *n, fedc_config *m, char *e,
                      size_t el)
{
    (void)u, (void)p, (void)c, (void)m, (void)e, (void)el;
    *n = 1;
    return FEDC_OK;
}

static void *honest(void *id)
{
    fedc_client_options o;
    fedc_client_options_init(&o);
    o.insecure = 1;
    o.server = g_addr;
    o.node_id = id;
    o.connect_timeout = 5;
    fedc_client_callbacks cb = {NULL, honest_fit, NULL};
    fedc_client *c = fedc_client_create(&o, &cb, NULL);
    fedc_client_run(c);
    fedc_client_destroy(c);
    return NULL;
}

static void send_msg(fedc__conn *c, Fedc__V1__Message *m)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__send_message(c, m, err, sizeof err);
}

static void send_fit_res(fedc__conn *c, uint64_t round)
{
    Fedc__V1__FitRes r = FEDC__V1__FIT_RES__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    r.round = round;
    r.num_examples = 1;
    r.num_tensors = 1;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &r;
    send_msg(c, &m);
}

static void send_header(fedc__conn *c)
{
    Fedc__V1__TensorHeader h = FEDC__V1__TENSOR_HEADER__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    uint64_t shape[1] = {4};
    h.name = "w";
    h.dtype = FEDC__V1__DTYPE__F32;
    h.n_shape = 1;
    h.shape = shape;
    h.nbytes = 16;
    m.body_case = FEDC__V1__MESSAGE__BODY_TENSOR;
    m.tensor = &h;
    send_msg(c, &m);
}

static void send_data(fedc__conn *c, const float *v, size_t n)
{
    char err[FEDC_ERRMSG_MAX];
    uint8_t hdr[FEDC_FRAME_HEADER_BYTES];
    fedc__frame_header_encode(hdr, FEDC_FRAME_DATA, (uint32_t)(n * 4));
    fedc__conn_write(c, hdr, sizeof hdr, err, sizeof err);
    fedc__conn_write(c, v, n * 4, err, sizeof err);
}

/* Connects and says hello; reads the welcome. */
static int raw_join(fedc__conn *c, const char *id)
{
    char err[FEDC_ERRMSG_MAX];
    for (int i = 0; fedc__conn_connect(c, g_addr, 2, err, sizeof err); i++) {
        if (i == 50) return -1;
        usleep(100000);
    }
    Fedc__V1__Hello h = FEDC__V1__HELLO__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    h.protocol_version = FEDC_PROTOCOL_VERSION;
    h.node_id = (char *)id;
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &h;
    send_msg(c, &m);
    fedc__msg *w = NULL;
    if (fedc__recv_message(c, 1u << 24, &w, err, sizeof err)) return -1;
    fedc__msg_free(w);
    return 0;
}

/* Reads one request and the model after it; returns its round, 0 for
 * anything else (an Error, Shutdown, or a closed connection). */
static uint64_t read_fit(fedc__conn *c, int *error_seen)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__msg *m = NULL;
    if (fedc__recv_message(c, 1u << 24, &m, err, sizeof err)) return 0;
    uint64_t round = 0;
    if (m->body_case == FEDC__V1__MESSAGE__BODY_FIT_INS) {
        fedc_params *p = NULL;
        if (fedc__recv_params(c, 1u << 24, m->fit_ins->num_tensors, 1u << 20, NULL, &p, err, sizeof err) == 0)
            round = m->fit_ins->round;
        fedc_params_destroy(p);
    } else if (m->body_case == FEDC__V1__MESSAGE__BODY_ERROR && error_seen) {
        *error_seen = 1;
    }
    fedc__msg_free(m);
    return round;
}

typedef struct evil_args {
    const char *id;
    int mode; /* 0: restart mid-tensor, 1: Failure mid-tensor, 2: stall holding a buffer */
    int error_seen;
} evil_args;

static void *evil(void *arg)
{
    evil_args *a = arg;
    fedc__conn c;
    if (raw_join(&c, a->id)) return NULL;
    uint64_t round = read_fit(&c, NULL);
    if (round) {
        float big[2] = {1000, 1000}, ones[4] = {1, 1, 1, 1};
        send_fit_res(&c, round);
        send_header(&c);
        send_data(&c, big, 2); /* half the tensor: folded at once */
        if (a->mode == 0) {
            send_fit_res(&c, round); /* a new update in the middle of the tensor */
            send_header(&c);
            send_data(&c, ones, 4);
        } else if (a->mode == 1) {
            Fedc__V1__Failure f = FEDC__V1__FAILURE__INIT;
            Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
            f.round = round;
            f.reason = "changed my mind";
            m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
            m.failure = &f;
            send_msg(&c, &m);
        }
        /* mode 2 sends nothing more and keeps the connection */
        read_fit(&c, &a->error_seen);
    }
    if (a->mode == 2) sleep(4);
    fedc__conn_close(&c);
    return NULL;
}

static int g_last_failed;
static void on_round(void *u, const fedc_round_record *r)
{
    (void)u;
    g_last_failed = r->failed;
}

static int run(int mode, int evils, uint32_t min_clients, uint64_t rounds, fedc_round_record *last,
               int *error_seen)
{
    fedc_server_options o;
    fedc_server_options_init(&o);
    o.insecure = 1;
    o.listen = "127.0.0.1:0";
    o.rounds = rounds;
    o.min_clients = min_clients;
    o.fraction_evaluate = 0;
    o.round_timeout = 1.5;
    /* One staging buffer: a stalled upload that kept it would block every
     * later update. */
    o.max_inflight_updates = 1;
    o.wait_timeout = 5;
    fedc_params *init = make_model(1.0f);
    o.initial_model = init;
    o.on_round = on_round;
    char err[FEDC_ERRMSG_MAX];
    fedc_server *s = fedc_server_create(&o, err, sizeof err);
    snprintf(g_addr, sizeof g_addr, "127.0.0.1:%d", fedc_server_port(s));
    pthread_t th[4];
    evil_args ea[3] = {{"b-evil", mode, 0}, {"c-evil", mode, 0}, {"d-evil", mode, 0}};
    for (int i = 0; i < evils; i++) pthread_create(&th[i], NULL, evil, &ea[i]);
    usleep(300000); /* the hostile clients join first */
    pthread_create(&th[evils], NULL, honest, "a-honest");
    int rc = fedc_server_run(s);
    for (int i = 0; i <= evils; i++) pthread_join(th[i], NULL);
    const float *w = fedc_params_at(fedc_server_model(s), 0)->data;
    int untouched = w[0] == 1 && w[1] == 1 && w[2] == 1 && w[3] == 1;
    CHECK(untouched, "mode %d: the model is still all ones (got %g %g %g %g)", mode, w[0], w[1], w[2], w[3]);
    if (error_seen) *error_seen = ea[0].error_seen;
    (void)last;
    fedc_server_destroy(s);
    fedc_params_destroy(init);
    return rc;
}

int main(void)
{
    fedc_log_set_level(FEDC_LOG_ERROR);
    int error_seen = 0;
    /* A new update in the middle of a tensor: a protocol error; the half
     * already folded is taken back out. */
    run(0, 1, 1, 1, NULL, &error_seen);
    CHECK(error_seen, "restart mid-tensor: the client was told it broke the protocol");
    /* A Failure in the middle of a tensor: the same. */
    error_seen = 0;
    run(1, 1, 1, 1, NULL, &error_seen);
    CHECK(error_seen, "failure mid-tensor: the client was told it broke the protocol");
    /* A stalled upload holds the staging buffer; at the round timeout it is
     * given up and the buffer freed, so the honest client's update gets
     * through in round 2 and the federation ends normally. */
    int rc = run(2, 1, 1, 2, NULL, NULL);
    CHECK(rc == FEDC_OK, "stalled uploads: the federation still completes (rc %d: %s)", rc,
          fedc_strerror(rc));
    CHECK(!g_last_failed, "stalled uploads: round 2 aggregates the honest update");
    return test_summary();
}
