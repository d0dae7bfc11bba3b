/* The client runtime: connection loop and dispatch to the user's callbacks. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "client/client_internal.h"
#include "core/nodekey.h"
#include "fedc/client.h"
#include "net/conn.h"
#include "net/tls.h"
#include "proto/wire.h"

#define LOG_COMPONENT "client"

struct fedc_client {
    fedc_client_options opt;
    char *server;
    char node_id[129];
    fedc_client_callbacks cb;
    void *user;
    char errmsg[FEDC_ERRMSG_MAX];
    volatile sig_atomic_t stop;
    volatile int fd;     /* the live socket, so stop() can interrupt a blocking read */
    fedc_params *params; /* the last received model, reused when the layout repeats */
    fedc__csa *sa;       /* the secure-aggregation round in progress, if any */
    EVP_PKEY *key;       /* the node key (opt.node_key), loaded by fedc_client_run() */
    uint8_t key_pub[32];
    int own_id; /* node_id was given, not derived */
};

void fedc_client_options_init(fedc_client_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->connect_timeout = 60.0;
    opt->heartbeat = 30;
    opt->max_frame_bytes = FEDC_DEFAULT_MAX_FRAME;
    opt->max_model_bytes = 16ull << 30;
}

fedc_client *fedc_client_create(const fedc_client_options *opt, const fedc_client_callbacks *cb, void *user)
{
    if (!opt || !opt->server || !cb || !cb->fit) return NULL;
    if (opt->node_id && !fedc__node_id_valid(opt->node_id)) return NULL;
    fedc_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->opt = *opt;
    c->server = strdup(opt->server);
    if (!c->server) {
        free(c);
        return NULL;
    }
    c->opt.server = c->server;
    if (c->opt.max_frame_bytes < FEDC_MIN_MAX_FRAME) c->opt.max_frame_bytes = FEDC_MIN_MAX_FRAME;
    if (c->opt.max_frame_bytes < FEDC_CHUNK_BYTES) c->opt.max_frame_bytes = FEDC_CHUNK_BYTES;
    c->own_id = opt->node_id != NULL;
    if (opt->node_id) {
        snprintf(c->node_id, sizeof c->node_id, "%s", opt->node_id);
    } else {
        unsigned char r[6];
        fedc_random_bytes(r, sizeof r);
        snprintf(c->node_id, sizeof c->node_id, "node-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4],
                 r[5]);
    }
    c->opt.node_id = c->node_id;
    c->cb = *cb;
    c->user = user;
    c->fd = -1;
    return c;
}

void fedc_client_destroy(fedc_client *c)
{
    if (!c) return;
    EVP_PKEY_free(c->key);
    fedc__csa_destroy(c->sa);
    fedc_params_destroy(c->params);
    free(c->server);
    free(c);
}

const char *fedc_client_node_id(const fedc_client *c)
{
    return c->node_id;
}
const char *fedc_client_errmsg(const fedc_client *c)
{
    return c->errmsg;
}

void fedc_client_stop(fedc_client *c)
{
    c->stop = 1;
    int fd = c->fd;
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

void fedc__client_swap_secagg(fedc_client *c, fedc__csa **state)
{
    fedc__csa *t = c->sa;
    c->sa = *state;
    *state = t;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int send_failure(fedc__conn *conn, uint64_t round, const char *reason, char *err, size_t errlen)
{
    Fedc__V1__Failure f = FEDC__V1__FAILURE__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    f.round = round;
    f.reason = (char *)reason;
    m.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
    m.failure = &f;
    return fedc__send_message(conn, &m, err, errlen);
}

static int send_error(fedc__conn *conn, const char *reason)
{
    Fedc__V1__Error e = FEDC__V1__ERROR__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    e.reason = (char *)reason;
    m.body_case = FEDC__V1__MESSAGE__BODY_ERROR;
    m.error = &e;
    return fedc__send_message(conn, &m, NULL, 0);
}

/* Receives the model that follows a request into c->params. */
static int recv_model(fedc_client *c, fedc__conn *conn, uint32_t count)
{
    fedc_params *got = NULL;
    int rc = fedc__recv_params(conn, c->opt.max_frame_bytes, count, c->opt.max_model_bytes, c->params, &got,
                               c->errmsg, sizeof c->errmsg);
    if (rc) return rc;
    if (got != c->params) {
        fedc_params_destroy(c->params);
        c->params = got;
    }
    return FEDC_OK;
}

static int handle_get_parameters(fedc_client *c, fedc__conn *conn, const Fedc__V1__GetParametersIns *ins)
{
    char why[FEDC_ERRMSG_MAX] = "";
    fedc_params *p = NULL;
    fedc_config *cfg = fedc_config_create();
    if (!cfg) return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_NOMEM, "out of memory");
    int rc = fedc__config_from_kv(cfg, ins->config, ins->n_config);
    if (!rc) {
        if (!c->cb.get_parameters) {
            rc = FEDC_ERR_UNSUPPORTED;
            snprintf(why, sizeof why, "this client does not define initial parameters");
        } else {
            rc = c->cb.get_parameters(c->user, cfg, &p, why, sizeof why);
            if (!rc && !p) {
                rc = FEDC_ERR_INVALID;
                snprintf(why, sizeof why, "get_parameters returned no parameters");
            }
        }
    }
    fedc_config_destroy(cfg);
    if (rc) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "get_parameters failed: %s", why);
        fedc_params_destroy(p);
        return send_failure(conn, 0, why[0] ? why : fedc_strerror(rc), c->errmsg, sizeof c->errmsg);
    }
    Fedc__V1__GetParametersRes res = FEDC__V1__GET_PARAMETERS_RES__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    res.num_tensors = (uint32_t)fedc_params_count(p);
    m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES;
    m.get_parameters_res = &res;
    rc = fedc__send_message_params(conn, &m, p, c->errmsg, sizeof c->errmsg);
    fedc_params_destroy(p);
    return rc;
}

static int send_secagg(fedc__conn *conn, uint64_t round, uint8_t *payload, size_t len, char *err,
                       size_t errlen)
{
    Fedc__V1__SecAgg sa = FEDC__V1__SEC_AGG__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    sa.round = round;
    sa.payload.data = payload;
    sa.payload.len = len;
    m.body_case = FEDC__V1__MESSAGE__BODY_SECAGG;
    m.secagg = &sa;
    return fedc__send_message(conn, &m, err, errlen);
}

/* One of the server's later stages of secure aggregation. */
static int handle_secagg(fedc_client *c, fedc__conn *conn, const Fedc__V1__SecAgg *in)
{
    char why[FEDC_ERRMSG_MAX];
    if (!c->sa || fedc__csa_round(c->sa) != in->round) {
        snprintf(why, sizeof why, "no secure aggregation in progress for round %llu",
                 (unsigned long long)in->round);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "%s", why);
        return send_failure(conn, in->round, why, c->errmsg, sizeof c->errmsg);
    }
    uint8_t *msg = NULL;
    size_t len = 0;
    int last = 0;
    int rc = fedc__csa_step(c->sa, in->payload.data, in->payload.len, &msg, &len, &last, why, sizeof why);
    if (rc || last) {
        fedc__csa_destroy(c->sa);
        c->sa = NULL;
    }
    if (rc) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: secure aggregation failed: %s",
                 (unsigned long long)in->round, why);
        return send_failure(conn, in->round, why, c->errmsg, sizeof c->errmsg);
    }
    rc = send_secagg(conn, in->round, msg, len, c->errmsg, sizeof c->errmsg);
    free(msg);
    return rc;
}

static int handle_fit(fedc_client *c, fedc__conn *conn, const Fedc__V1__FitIns *ins)
{
    int rc = recv_model(c, conn, ins->num_tensors);
    if (rc) return rc;
    char why[FEDC_ERRMSG_MAX] = "";
    fedc_config *cfg = fedc_config_create(), *metrics = fedc_config_create();
    uint64_t num_examples = 0;
    /* Secure aggregation sends the update, so it keeps the model sent. */
    fedc_params *global = ins->secagg ? fedc_params_clone(c->params) : NULL;
    if (!cfg || !metrics || (ins->secagg && !global)) {
        rc = FEDC_ERR_NOMEM;
        snprintf(why, sizeof why, "out of memory");
    } else {
        rc = fedc__config_from_kv(cfg, ins->config, ins->n_config);
        if (!rc) rc = fedc_config_set_i64(cfg, "round", (int64_t)ins->round);
        if (!rc) rc = c->cb.fit(c->user, c->params, cfg, &num_examples, metrics, why, sizeof why);
        if (!rc && num_examples == 0) {
            rc = FEDC_ERR_INVALID;
            snprintf(why, sizeof why, "fit reported 0 examples");
        }
        if (!rc && ins->secagg) {
            /* The update goes into the round's protocol (secagg.c), not a FitRes. */
            uint8_t *msg = NULL;
            size_t len = 0;
            fedc__csa_destroy(c->sa);
            c->sa = NULL;
            rc = fedc__csa_begin(ins->secagg, ins->round, global, c->params, num_examples, &c->sa, &msg, &len,
                                 why, sizeof why);
            if (!rc) {
                rc = send_secagg(conn, ins->round, msg, len, c->errmsg, sizeof c->errmsg);
                free(msg);
                fedc_params_destroy(global);
                fedc_config_destroy(cfg);
                fedc_config_destroy(metrics);
                return rc;
            }
        }
    }
    fedc_params_destroy(global);
    if (rc) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: fit failed: %s", (unsigned long long)ins->round,
                 why[0] ? why : fedc_strerror(rc));
        rc = send_failure(conn, ins->round, why[0] ? why : fedc_strerror(rc), c->errmsg, sizeof c->errmsg);
    } else {
        fedc__kvbuf kv;
        rc = fedc__kvbuf_init(&kv, metrics);
        if (!rc) {
            Fedc__V1__FitRes res = FEDC__V1__FIT_RES__INIT;
            Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
            res.round = ins->round;
            res.num_examples = num_examples;
            res.metrics = kv.ptrs;
            res.n_metrics = kv.n;
            res.num_tensors = (uint32_t)fedc_params_count(c->params);
            m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
            m.fit_res = &res;
            rc = fedc__send_message_params(conn, &m, c->params, c->errmsg, sizeof c->errmsg);
            fedc__kvbuf_free(&kv);
        }
    }
    fedc_config_destroy(cfg);
    fedc_config_destroy(metrics);
    return rc;
}

static int handle_evaluate(fedc_client *c, fedc__conn *conn, const Fedc__V1__EvaluateIns *ins)
{
    int rc = recv_model(c, conn, ins->num_tensors);
    if (rc) return rc;
    char why[FEDC_ERRMSG_MAX] = "";
    fedc_config *cfg = fedc_config_create(), *metrics = fedc_config_create();
    double loss = 0;
    uint64_t n = 0;
    if (!cfg || !metrics) {
        rc = FEDC_ERR_NOMEM;
        snprintf(why, sizeof why, "out of memory");
    } else if (!c->cb.evaluate) {
        rc = FEDC_ERR_UNSUPPORTED;
        snprintf(why, sizeof why, "this client does not evaluate");
    } else {
        rc = fedc__config_from_kv(cfg, ins->config, ins->n_config);
        if (!rc) rc = fedc_config_set_i64(cfg, "round", (int64_t)ins->round);
        if (!rc) rc = c->cb.evaluate(c->user, c->params, cfg, &loss, &n, metrics, why, sizeof why);
    }
    if (rc) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: evaluate failed: %s",
                 (unsigned long long)ins->round, why[0] ? why : fedc_strerror(rc));
        rc = send_failure(conn, ins->round, why[0] ? why : fedc_strerror(rc), c->errmsg, sizeof c->errmsg);
    } else {
        fedc__kvbuf kv;
        rc = fedc__kvbuf_init(&kv, metrics);
        if (!rc) {
            Fedc__V1__EvaluateRes res = FEDC__V1__EVALUATE_RES__INIT;
            Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
            res.round = ins->round;
            res.loss = loss;
            res.num_examples = n;
            res.metrics = kv.ptrs;
            res.n_metrics = kv.n;
            m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_RES;
            m.evaluate_res = &res;
            rc = fedc__send_message(conn, &m, c->errmsg, sizeof c->errmsg);
            fedc__kvbuf_free(&kv);
        }
    }
    fedc_config_destroy(cfg);
    fedc_config_destroy(metrics);
    return rc;
}

int fedc__client_send_hello(fedc_client *c, fedc__conn *conn, const char *node_id)
{
    Fedc__V1__Hello hello = FEDC__V1__HELLO__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    hello.protocol_version = FEDC_PROTOCOL_VERSION;
    hello.node_id = (char *)(node_id ? node_id : c->node_id);
    hello.software = "fedc " FEDC_VERSION_STRING;
    hello.max_frame_bytes = c->opt.max_frame_bytes;
    if (c->key) {
        hello.node_key.data = c->key_pub;
        hello.node_key.len = sizeof c->key_pub;
    }
    m.body_case = FEDC__V1__MESSAGE__BODY_HELLO;
    m.hello = &hello;
    return fedc__send_message(conn, &m, c->errmsg, sizeof c->errmsg);
}

/* Answers one request that has been received. Sets *done on Shutdown. */
static int dispatch(fedc_client *c, fedc__conn *conn, const fedc__msg *in, int *done)
{
    switch (in->body_case) {
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS:
        return handle_get_parameters(c, conn, in->get_parameters_ins);
    case FEDC__V1__MESSAGE__BODY_FIT_INS: return handle_fit(c, conn, in->fit_ins);
    case FEDC__V1__MESSAGE__BODY_SECAGG: return handle_secagg(c, conn, in->secagg);
    case FEDC__V1__MESSAGE__BODY_EVALUATE_INS: return handle_evaluate(c, conn, in->evaluate_ins);
    case FEDC__V1__MESSAGE__BODY_SHUTDOWN:
        fedc_log(FEDC_LOG_DEBUG, LOG_COMPONENT, "server ended the federation: %s",
                 in->shutdown->reason && in->shutdown->reason[0] ? in->shutdown->reason : "done");
        *done = 1;
        return FEDC_OK;
    case FEDC__V1__MESSAGE__BODY_ERROR:
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_PROTOCOL,
                              "server %s reported an error: %s", conn->peer, in->error->reason);
    default: {
        int rc = fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_PROTOCOL,
                                "server %s sent an unexpected %s message", conn->peer, fedc__msg_name(in));
        send_error(conn, c->errmsg);
        return rc;
    }
    }
}

/* Checks the server's answer to Hello. */
static int check_welcome(fedc_client *c, fedc__conn *conn, const fedc__msg *in)
{
    if (in->body_case == FEDC__V1__MESSAGE__BODY_ERROR)
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_REJECTED, "server %s refused us: %s",
                              conn->peer, in->error->reason);
    if (in->body_case != FEDC__V1__MESSAGE__BODY_WELCOME) {
        send_error(conn, "expected welcome");
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_PROTOCOL,
                              "server %s answered hello with a %s message", conn->peer, fedc__msg_name(in));
    }
    if (in->welcome->protocol_version != FEDC_PROTOCOL_VERSION)
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_VERSION,
                              "server %s speaks protocol version %u, we speak %u", conn->peer,
                              in->welcome->protocol_version, FEDC_PROTOCOL_VERSION);
    return FEDC_OK;
}

int fedc__client_serve(fedc_client *c, fedc__conn *conn, int *done)
{
    fedc__msg *in = NULL;
    *done = 0;
    int rc = fedc__recv_message(conn, c->opt.max_frame_bytes, &in, c->errmsg, sizeof c->errmsg);
    if (rc) return rc;
    if (in->body_case == FEDC__V1__MESSAGE__BODY_WELCOME)
        rc = check_welcome(c, conn, in);
    else
        rc = dispatch(c, conn, in, done);
    fedc__msg_free(in);
    return rc;
}

/* Node authentication: signs the server's nonce, bound to this TLS session. */
static int answer_challenge(fedc_client *c, fedc__conn *conn, const Fedc__V1__AuthChallenge *ch)
{
    if (!c->key)
        return fedc_set_error(
            c->errmsg, sizeof c->errmsg, FEDC_ERR_REJECTED,
            "server %s requires node authentication: give the node's key (--node-key, made by "
            "fedc keygen)",
            conn->peer);
    if (ch->nonce.len != FEDC_NODEAUTH_NONCE)
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_PROTOCOL,
                              "server %s sent a nonce of %zu bytes, not %d", conn->peer, ch->nonce.len,
                              FEDC_NODEAUTH_NONCE);
    uint8_t binding[32], sig[FEDC_NODEAUTH_SIG];
    size_t blen = 0;
    if (conn->ssl && SSL_export_keying_material(conn->ssl, binding, sizeof binding, FEDC_NODEAUTH_EXPORTER,
                                                sizeof FEDC_NODEAUTH_EXPORTER - 1, NULL, 0, 0) == 1)
        blen = sizeof binding;
    if (fedc__nodeauth_sign(c->key, ch->nonce.data, c->node_id, binding, blen, sig))
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_INVALID, "cannot sign with the node key");
    Fedc__V1__AuthResponse r = FEDC__V1__AUTH_RESPONSE__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    r.signature.data = sig;
    r.signature.len = sizeof sig;
    m.body_case = FEDC__V1__MESSAGE__BODY_AUTH_RESPONSE;
    m.auth_response = &r;
    return fedc__send_message(conn, &m, c->errmsg, sizeof c->errmsg);
}

/* One connected session: handshake, then requests until Shutdown. Returns
 * FEDC_OK on Shutdown. *welcomed tells the caller whether the handshake
 * succeeded (so a later break is worth reconnecting for). */
static int session(fedc_client *c, fedc__conn *conn, int *welcomed)
{
    int rc = fedc__client_send_hello(c, conn, NULL);
    if (rc) return rc;

    fedc__msg *in = NULL;
    rc = fedc__recv_message(conn, c->opt.max_frame_bytes, &in, c->errmsg, sizeof c->errmsg);
    if (rc) return rc;
    if (in->body_case == FEDC__V1__MESSAGE__BODY_AUTH_CHALLENGE) {
        rc = answer_challenge(c, conn, in->auth_challenge);
        fedc__msg_free(in);
        in = NULL;
        if (!rc) rc = fedc__recv_message(conn, c->opt.max_frame_bytes, &in, c->errmsg, sizeof c->errmsg);
        if (rc) return rc;
    }
    rc = check_welcome(c, conn, in);
    fedc__msg_free(in);
    if (rc) return rc;
    *welcomed = 1;
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "connected to %s as %s", conn->peer, c->node_id);

    for (;;) {
        if (c->stop) return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_CANCELLED, "stopped");
        int done = 0;
        rc = fedc__recv_message(conn, c->opt.max_frame_bytes, &in, c->errmsg, sizeof c->errmsg);
        if (rc) return rc;
        rc = dispatch(c, conn, in, &done);
        if (done)
            fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "server ended the federation: %s",
                     in->shutdown->reason && in->shutdown->reason[0] ? in->shutdown->reason : "done");
        fedc__msg_free(in);
        if (rc || done) return rc;
    }
}

static int run_sessions(fedc_client *c, SSL_CTX *tls);

/* The name the server's certificate must carry: tls_server_name, else the
 * host of the server's address. */
static const char *tls_name(const fedc_client *c, char *buf, size_t len)
{
    if (c->opt.tls_server_name) return c->opt.tls_server_name;
    char port[16];
    if (fedc__parse_hostport(c->server, buf, len, port, sizeof port, NULL, 0)) return NULL;
    return buf;
}

int fedc_client_run(fedc_client *c)
{
    SSL_CTX *tls = NULL;
    if (c->opt.node_key && !c->key) {
        int krc = fedc__nodekey_load(c->opt.node_key, &c->key, c->key_pub, c->errmsg, sizeof c->errmsg);
        if (krc) return krc;
        if (!c->own_id) fedc__nodekey_fingerprint(c->key_pub, c->node_id);
    }
    if (c->opt.tls_ca || c->opt.tls_cert || c->opt.tls_key) {
        int trc = fedc__tls_client_ctx(c->opt.tls_ca, c->opt.tls_cert, c->opt.tls_key, &tls, c->errmsg,
                                       sizeof c->errmsg);
        if (trc) return trc;
    } else if (!c->opt.insecure) {
        return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_INVALID,
                              "no TLS CA: give the CA that signed the server's certificate (--ca), or allow "
                              "plaintext explicitly (--insecure)");
    }
    int rc = run_sessions(c, tls);
    SSL_CTX_free(tls);
    return rc;
}

static int run_sessions(fedc_client *c, SSL_CTX *tls)
{
    fedc_rng jitter;
    uint64_t seed;
    fedc_random_bytes(&seed, sizeof seed);
    fedc_rng_seed(&jitter, seed);
    c->errmsg[0] = '\0';
    double deadline = fedc_now() + c->opt.connect_timeout;
    double backoff = 0.1;
    int attempts = 0;
    char last[FEDC_ERRMSG_MAX] = "";

    for (;;) {
        if (c->stop) return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_CANCELLED, "stopped");
        fedc__conn conn;
        double left = deadline - fedc_now();
        int rc =
            fedc__conn_connect(&conn, c->server, left < 5 ? (left > 0.1 ? left : 0.1) : 5, last, sizeof last);
        if (rc == FEDC_ERR_INVALID) return fedc_set_error(c->errmsg, sizeof c->errmsg, rc, "%s", last);
        if (rc) {
            if (fedc_now() >= deadline)
                return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_CONNECT,
                                      "server %s unreachable after %.0f s (%d attempts): %s", c->server,
                                      c->opt.connect_timeout, attempts + 1, last);
            if (attempts++ == 0)
                fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "waiting for server %s (%s)", c->server, last);
            double wait = backoff * (0.5 + fedc_rng_uniform(&jitter));
            if (wait > deadline - fedc_now()) wait = deadline - fedc_now();
            if (wait > 0) sleep_seconds(wait);
            backoff = backoff * 2 > 5 ? 5 : backoff * 2;
            continue;
        }
        conn.io_timeout = c->opt.io_timeout;
        fedc__socket_keepalive(conn.fd, c->opt.heartbeat);
        if (tls) {
            char host[256];
            left = deadline - fedc_now();
            rc = fedc__conn_tls_connect(&conn, tls, tls_name(c, host, sizeof host), left > 10 ? left : 10,
                                        last, sizeof last);
            if (rc == FEDC_ERR_CLOSED && fedc_now() < deadline) {
                /* Closed before the handshake was done (a server at its
                 * connection or file limit, or overloaded): try again, as
                 * for a refused connection. */
                fedc__conn_close(&conn);
                if (attempts++ == 0) fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "%s; retrying", last);
                double wait = backoff * (0.5 + fedc_rng_uniform(&jitter));
                if (wait > deadline - fedc_now()) wait = deadline - fedc_now();
                if (wait > 0) sleep_seconds(wait);
                backoff = backoff * 2 > 5 ? 5 : backoff * 2;
                continue;
            }
            if (rc) {
                /* A certificate that does not verify will not next time either. */
                fedc__conn_close(&conn);
                return fedc_set_error(c->errmsg, sizeof c->errmsg,
                                      rc == FEDC_ERR_CLOSED ? FEDC_ERR_CONNECT : rc, "%s", last);
            }
        }
        c->fd = conn.fd;
        int welcomed = 0;
        rc = session(c, &conn, &welcomed);
        c->fd = -1;
        fedc__conn_close(&conn);
        if (rc == FEDC_OK) return FEDC_OK;
        if (c->stop) return fedc_set_error(c->errmsg, sizeof c->errmsg, FEDC_ERR_CANCELLED, "stopped");
        if (welcomed && (rc == FEDC_ERR_CLOSED || rc == FEDC_ERR_IO || rc == FEDC_ERR_TIMEOUT)) {
            /* The connection broke mid-federation (server restart, network):
             * try again for another connect_timeout. */
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "connection lost (%s); reconnecting", c->errmsg);
            deadline = fedc_now() + c->opt.connect_timeout;
            backoff = 0.1;
            attempts = 0;
            continue;
        }
        return rc;
    }
}
