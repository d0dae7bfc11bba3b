/* The server: one libuv event loop that accepts clients, parses their
 * frames incrementally, and drives rounds (sample, fit, aggregate,
 * evaluate, record).
 *
 * Reading is zero-copy for tensor data: the allocation callback hands libuv
 * the exact place the next bytes belong (a frame header, a message buffer,
 * or the receiving tensor itself), so a DATA payload lands directly in the
 * staging buffer of the update it belongs to. */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <sodium.h>
#include <uv.h>

#include "fedc/server.h"
#include "net/conn.h"
#include "proto/wire.h"
#include "server/server_internal.h"
#include "strategy/fedavg.h"

#define LOG_COMPONENT "server"
/* Most tensors a model may have (docs/protocol.md). */
#define FEDC_MAX_MODEL_TENSORS 16384u
#define DISCARD_BYTES          (64u << 10)

typedef enum { NODE_HANDSHAKE, NODE_IDLE, NODE_BUSY } node_state;
typedef enum { REQ_NONE, REQ_GETPARAMS, REQ_FIT, REQ_EVAL } req_kind;
typedef enum { R_HDR, R_MSG, R_DATA } read_state;
typedef enum { S_NONE, S_GETPARAMS, S_FIT } stream_kind;
typedef enum { PHASE_WAIT, PHASE_INIT, PHASE_FIT, PHASE_EVAL, PHASE_DONE } phase;

/* A model shared by every pending write that sends it: the frames that
 * carry it point into its tensors, so it lives until the last write ends. */
typedef struct model_blob {
    int refs;
    uint64_t version; /* unique per model this server held */
    fedc_params *params;
    uv_buf_t *bufs;
    unsigned nbufs;
    void *hdrmem;
} model_blob;

typedef struct node node;
typedef struct fedc_server fedc_server;

struct node {
    uv_tcp_t tcp; /* first: the handle's address is the node's */
    fedc_server *srv;
    node *next;
    uint64_t serial;
    int is_virtual; /* a simulated client: no socket, see fedc__server_feed */
    int draining;   /* said its last word: reading and dropping until the peer closes */
    int retired;    /* out of the federation (see retire()): input is dropped */
    uint32_t vindex;
    uint8_t *pending; /* virtual: fed bytes held back while waiting for a slot */
    size_t pending_len, pending_off;
    char peer[INET6_ADDRSTRLEN + 16]; /* "[v6]:port" or "v4:port" */
    char id[129];
    node_state state;
    int closing;
    uv_timer_t handshake_timer;
    int timer_open;

    req_kind req;
    uint64_t req_round;
    int result_recorded; /* this request's result counted in the stage */
    int asked_params;    /* already asked for initial parameters */

    /* Frame reader. */
    read_state rs;
    uint8_t hdr[FEDC_FRAME_HEADER_BYTES];
    uint32_t hdr_got;
    uint8_t ftype;
    uint32_t flen, fgot;
    uint8_t *msgbuf;
    uint32_t msgcap;
    uint8_t *data_dst; /* NULL: discard */

    /* Tensor stream that follows FitRes / GetParametersRes. */
    stream_kind sk;
    uint32_t stream_total, stream_index;
    uint64_t stream_bytes; /* GetParametersRes: bytes announced so far */
    int expect_header;     /* next frame must be a TensorHeader */
    fedc_tensor *cur_t;
    size_t cur_nbytes, cur_got, cur_checked;
    fedc_params *stream_params; /* staging buffer or the new initial model */
    int slot;                   /* staging slot held, -1 if none */
    int waiting_slot;           /* paused until a slot frees */
    node *wait_next;
    int stale;   /* result of an old round: consume and drop */
    int folding; /* this update's chunks are being folded into the aggregate */
    int rejected;
    char reject_reason[FEDC_ERRMSG_MAX];
    uint64_t weight;
    fedc_config *metrics;
};

typedef struct fit_result {
    char id[129];
    uint64_t n;
    double loss; /* NaN if not reported */
} fit_result;

typedef struct eval_result {
    char id[129];
    uint64_t n;
    double loss, acc;
} eval_result;

struct fedc_server {
    fedc_server_options opt;
    char *listen_addr;
    char *out_dir;
    fedc_config *fit_config;
    char errmsg[FEDC_ERRMSG_MAX];
    int rc;
    int loop_inited, handles_open, grace_open;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t stage_timer;
    uv_timer_t wait_timer;
    uv_timer_t progress_timer;
    uv_timer_t grace_timer; /* ends connections still open 10 s after shutdown began */
    int defer_stage;        /* fedc__server_reconnect() is replacing a node */
    uv_async_t stop_async;
    uv_work_t central_work;
    int port;

    node *nodes;
    uint64_t next_serial;
    uint32_t nconnections;
    uint32_t nidle; /* nodes in NODE_IDLE, kept by set_state() */
    int running;
    fedc__virtual_transport virt;
    node **vnodes; /* simulated clients by index */
    uint32_t nvirtual;
    node *graveyard; /* closed simulated clients, freed by bury() */
    uint8_t discard[DISCARD_BYTES];

    model_blob *model;
    fedc__fedavg agg;
    int agg_ready;
    fedc_params **slots;
    int *slot_busy;
    node *wait_head, *wait_tail;

    phase ph;
    uint64_t round;
    int stopping;
    int finished;
    double round_start;
    uint64_t bytes_sent, bytes_received, round_sent0, round_received0;
    uint32_t stage_pending; /* requests whose result is still due */
    uint32_t sampled, ok, failed;
    fit_result *fits;
    size_t nfits, capfits;
    eval_result *evals;
    size_t nevals, capevals;
    int central_running;
    double central_loss, central_acc;
    char central_err[FEDC_ERRMSG_MAX];
    int central_rc;
    fedc_round_record rec;
    char fail_reason[FEDC_ERRMSG_MAX];
    FILE *metrics;
    double best_acc;
    int target_reached;
};

static void node_close(node *n, const char *why);
static void node_resume(node *n);
static void set_state(node *n, node_state st);
static void consume(node *n, size_t nread);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void feed_pending(node *n);
static void unfold_partial(node *n);
static void maybe_finish_stage(fedc_server *s);
static void start_round(fedc_server *s);
static void begin_shutdown(fedc_server *s, int rc);

/* ---- models ---------------------------------------------------------- */

static model_blob *blob_new(fedc_params *p, char *err, size_t errlen)
{
    model_blob *b = calloc(1, sizeof *b);
    if (!b) {
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    struct iovec *iov = NULL;
    int n = 0;
    if (fedc__params_encode_iov(p, &iov, &n, &b->hdrmem, err, errlen)) {
        free(b);
        return NULL;
    }
    b->bufs = malloc((size_t)(n ? n : 1) * sizeof *b->bufs);
    if (!b->bufs) {
        free(iov);
        free(b->hdrmem);
        free(b);
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) b->bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
    free(iov);
    b->nbufs = (unsigned)n;
    b->params = p;
    static uint64_t next_version = 1; /* models are made on the loop thread only */
    b->version = next_version++;
    b->refs = 1;
    return b;
}

static void blob_unref(model_blob *b)
{
    if (!b || --b->refs > 0) return;
    fedc_params_destroy(b->params);
    free(b->bufs);
    free(b->hdrmem);
    free(b);
}

/* BLAKE2b-256 of the model's bytes, as hex: logged so runs can be compared. */
static void model_digest(const fedc_params *p, char hex[65])
{
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        crypto_generichash_update(&st, t->data, t->nbytes);
    }
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

static void set_state(node *n, node_state st)
{
    fedc_server *s = n->srv;
    if (n->state == NODE_IDLE && s->nidle) s->nidle--;
    n->state = st;
    if (st == NODE_IDLE) s->nidle++;
}

/* ---- writing --------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    node *n;
    uint8_t *frame;
    model_blob *blob;
    uv_buf_t *bufs;
    int close_after;
} write_req;

static void begin_drain(node *n);

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    if (w->n && w->close_after) {
        if (status == 0)
            begin_drain(w->n);
        else
            node_close(w->n, NULL);
    }
    free(w->frame);
    free(w->bufs);
    blob_unref(w->blob);
    free(w);
    (void)status; /* a failed write shows up as a read error and closes the node */
}

/* Sends message m, followed by the model in `blob` if non-NULL. */
static int node_send(node *n, const fedc__msg *m, model_blob *blob, int close_after)
{
    fedc_server *s = n->srv;
    if (n->closing) return FEDC_ERR_CLOSED;
    write_req *w = calloc(1, sizeof *w);
    if (!w) return FEDC_ERR_NOMEM;
    size_t flen;
    char err[FEDC_ERRMSG_MAX];
    if (fedc__frame_pack_message(m, &w->frame, &flen, err, sizeof err)) {
        free(w);
        return FEDC_ERR_NOMEM;
    }
    unsigned nb = 1 + (blob ? blob->nbufs : 0);
    w->bufs = malloc(nb * sizeof *w->bufs);
    if (!w->bufs) {
        free(w->frame);
        free(w);
        return FEDC_ERR_NOMEM;
    }
    w->bufs[0] = uv_buf_init((char *)w->frame, (unsigned)flen);
    uint64_t total = flen;
    if (blob) {
        memcpy(w->bufs + 1, blob->bufs, blob->nbufs * sizeof *w->bufs);
        blob->refs++;
        w->blob = blob;
        for (unsigned i = 1; i < nb; i++) total += w->bufs[i].len;
    }
    w->n = n;
    w->close_after = close_after;
    if (n->is_virtual) {
        /* The simulator takes the frame and a reference to the model; it
         * hands the reference back through fedc__server_blob_release(). */
        s->bytes_sent += total;
        s->virt.deliver(s->virt.ctx, n->vindex, w->frame, flen, w->blob, blob ? blob->bufs : NULL,
                        blob ? blob->nbufs : 0);
        free(w->bufs);
        free(w);
        if (close_after) node_close(n, NULL);
        return FEDC_OK;
    }
    int r = uv_write(&w->req, (uv_stream_t *)&n->tcp, w->bufs, nb, on_write);
    if (r) {
        free(w->frame);
        free(w->bufs);
        blob_unref(w->blob);
        free(w);
        return FEDC_ERR_IO;
    }
    s->bytes_sent += total;
    return FEDC_OK;
}

static void retire(node *n, const char *why);

static void send_error_and_close(node *n, const char *reason)
{
    Fedc__V1__Error e = FEDC__V1__ERROR__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    e.reason = (char *)reason;
    m.body_case = FEDC__V1__MESSAGE__BODY_ERROR;
    m.error = &e;
    if (node_send(n, &m, NULL, 1)) node_close(n, NULL);
    /* The client is finished with now, though its connection lingers while
     * the error is delivered: nothing of it may stay in the round. The
     * error goes out first, so that it comes before anything the round's
     * end sends. */
    retire(n, reason);
}

/* ---- nodes ------------------------------------------------------------ */

static void on_node_closed(uv_handle_t *h)
{
    node *n = (node *)h;
    if (n->timer_open) return; /* the timer's close callback frees */
    free(n->msgbuf);
    fedc_config_destroy(n->metrics);
    if (n->sk == S_GETPARAMS) fedc_params_destroy(n->stream_params);
    free(n);
}

static void on_timer_closed(uv_handle_t *h)
{
    node *n = h->data;
    n->timer_open = 0;
    if (uv_is_closing((uv_handle_t *)&n->tcp) && n->closing == 2) on_node_closed((uv_handle_t *)&n->tcp);
}

static void release_slot(node *n)
{
    fedc_server *s = n->srv;
    if (n->slot < 0) return;
    s->slot_busy[n->slot] = 0;
    n->slot = -1;
    n->stream_params = NULL;
    /* Wake the first client waiting for a staging buffer. */
    while (s->wait_head) {
        node *w = s->wait_head;
        s->wait_head = w->wait_next;
        if (!s->wait_head) s->wait_tail = NULL;
        w->waiting_slot = 0;
        w->wait_next = NULL;
        if (w->closing) continue;
        node_resume(w);
        break;
    }
}

static void unlink_waiter(node *n)
{
    fedc_server *s = n->srv;
    node **pp = &s->wait_head, *prev = NULL;
    while (*pp) {
        if (*pp == n) {
            *pp = n->wait_next;
            if (s->wait_tail == n) s->wait_tail = prev;
            break;
        }
        prev = *pp;
        pp = &(*pp)->wait_next;
    }
    n->waiting_slot = 0;
}

/* Records that node n's current request ended without a usable result. */
static void request_failed(node *n, const char *why)
{
    fedc_server *s = n->srv;
    if (n->req == REQ_NONE) return;
    int current = !n->result_recorded && n->req_round == s->round &&
                  ((n->req == REQ_FIT && s->ph == PHASE_FIT) || (n->req == REQ_EVAL && s->ph == PHASE_EVAL) ||
                   (n->req == REQ_GETPARAMS && s->ph == PHASE_INIT));
    if (current) {
        n->result_recorded = 1;
        if (n->req == REQ_FIT) s->failed++;
        if (s->stage_pending) s->stage_pending--;
        if (why)
            fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT,
                     "round %llu: node %s (%s) failed: %s", (unsigned long long)s->round, n->id, n->peer,
                     why);
    }
    n->req = REQ_NONE;
    if (!n->closing && !n->retired) set_state(n, NODE_IDLE);
    if (current) maybe_finish_stage(s);
}

/* Takes n out of the federation at once: its partial update out of the
 * aggregate, its staging buffer back, its request counted as failed, and
 * never sampled again. node_close() finishes the job when the connection
 * ends. */
static void retire(node *n, const char *why)
{
    if (n->closing) return;
    n->retired = 1;
    /* Not idle from now on, so that the stage request_failed() may finish
     * cannot sample it again. */
    set_state(n, NODE_BUSY);
    if (n->waiting_slot) unlink_waiter(n);
    unfold_partial(n);
    release_slot(n);
    request_failed(n, why);
}

static void node_close(node *n, const char *why)
{
    fedc_server *s = n->srv;
    if (n->closing) return;
    /* A simulation's clients come and go by the thousand: their departures
     * are in the round's counts, and in the log at debug level. */
    if (why)
        fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT, "dropping %s (%s): %s",
                 n->id[0] ? n->id : "client", n->peer, why);
    n->closing = 1;
    if (n->waiting_slot) unlink_waiter(n);
    unfold_partial(n);
    release_slot(n);
    request_failed(n, why ? why : "disconnected");
    for (node **pp = &s->nodes; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    s->nconnections--;
    if (n->state == NODE_IDLE && s->nidle) s->nidle--;
    n->closing = 2;
    if (n->is_virtual) {
        /* Code up the stack may still hold n (a close can come from inside
         * the reader): it is freed when control is back at the top. */
        if (s->vnodes && n->vindex < s->nvirtual) s->vnodes[n->vindex] = NULL;
        n->next = s->graveyard;
        s->graveyard = n;
        if (s->ph == PHASE_WAIT) maybe_finish_stage(s);
        return;
    }
    if (n->timer_open) {
        uv_timer_stop(&n->handshake_timer);
        uv_close((uv_handle_t *)&n->handshake_timer, on_timer_closed);
    }
    uv_close((uv_handle_t *)&n->tcp, on_node_closed);
    if (s->ph == PHASE_WAIT) maybe_finish_stage(s);
}

static void protocol_error(node *n, const char *fmt, ...) FEDC_PRINTF(2, 3);
static void protocol_error(node *n, const char *fmt, ...)
{
    char why[FEDC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "protocol error from %s (%s): %s", n->id[0] ? n->id : "client",
             n->peer, why);
    send_error_and_close(n, why);
}

/* ---- the stream of tensors after FitRes / GetParametersRes ------------ */

static void stream_finished(node *n);

/* Takes the chunks of n's update folded so far back out of the aggregate.
 * Tensors before stream_index are complete; the current one is folded up to
 * cur_checked elements. The staging buffer still holds every folded value. */
static void unfold_partial(node *n)
{
    fedc_server *s = n->srv;
    if (!n->folding) return;
    n->folding = 0;
    for (uint32_t t = 0; t <= n->stream_index && t < s->agg.ntensors; t++) {
        size_t cnt = t < n->stream_index ? s->agg.numel[t] : n->cur_checked;
        if (cnt)
            fedc__fedavg_unfold(&s->agg, t, 0, fedc_params_at(n->stream_params, t)->data, cnt, n->weight);
    }
}

/* Gives up on n's update: what was folded comes back out, the staging
 * buffer goes back at once (another client may be waiting for it), and the
 * rest of the stream is read and dropped. */
static void abandon_update(node *n)
{
    unfold_partial(n);
    if (n->sk == S_FIT) {
        if (n->waiting_slot) {
            /* It was paused for a buffer it no longer needs: read on. */
            unlink_waiter(n);
            if (!n->is_virtual) uv_read_start((uv_stream_t *)&n->tcp, on_alloc, on_read);
        }
        release_slot(n);
        n->cur_t = NULL;
        if (n->rs == R_DATA) n->data_dst = NULL;
    }
}

static void reject_update(node *n, const char *why)
{
    abandon_update(n);
    if (!n->rejected) {
        n->rejected = 1;
        snprintf(n->reject_reason, sizeof n->reject_reason, "%s", why);
    }
}

/* Sets up reception of the next tensor after its header, or finishes. */
static void on_tensor_header(node *n, const Fedc__V1__TensorHeader *h)
{
    fedc_server *s = n->srv;
    char why[FEDC_ERRMSG_MAX];
    if (fedc__tensor_header_check(h, why, sizeof why)) {
        protocol_error(n, "%s", why);
        return;
    }
    n->expect_header = 0;
    n->cur_t = NULL;
    n->cur_nbytes = h->nbytes;
    n->cur_got = 0;
    n->cur_checked = 0;
    if (n->sk == S_GETPARAMS) {
        if (h->nbytes > s->opt.max_model_bytes - n->stream_bytes) {
            protocol_error(n, "initial parameters exceed the limit of %llu bytes",
                           (unsigned long long)s->opt.max_model_bytes);
            return;
        }
        int64_t shape[FEDC_MAX_DIMS];
        for (size_t d = 0; d < h->n_shape; d++) shape[d] = (int64_t)h->shape[d];
        if (fedc_params_add(n->stream_params, h->name, (fedc_dtype)h->dtype, (int)h->n_shape, shape, NULL,
                            &n->cur_t, why, sizeof why)) {
            protocol_error(n, "%s", why);
            return;
        }
        n->stream_bytes += h->nbytes;
    } else if (!n->stale && !n->rejected && n->stream_params) {
        const fedc_tensor *want = fedc_params_at(n->stream_params, n->stream_index);
        int same = want && !strcmp(want->name, h->name) && (int)want->dtype == (int)h->dtype &&
                   (size_t)want->ndim == h->n_shape;
        for (int d = 0; same && d < want->ndim; d++) same = (uint64_t)want->shape[d] == h->shape[d];
        if (!same) {
            char s1[160], s2[160];
            int64_t shape[FEDC_MAX_DIMS];
            for (size_t d = 0; d < h->n_shape; d++) shape[d] = (int64_t)h->shape[d];
            fedc_shape_str((int)h->n_shape, shape, s2, sizeof s2);
            if (want && !strcmp(want->name, h->name))
                snprintf(why, sizeof why, "tensor '%s': expected %s %s, got %s %s", h->name,
                         fedc_dtype_name(want->dtype), fedc_shape_str(want->ndim, want->shape, s1, sizeof s1),
                         fedc_dtype_name((fedc_dtype)h->dtype), s2);
            else
                snprintf(why, sizeof why, "tensor %u: expected '%s' %s %s, got '%s' %s %s", n->stream_index,
                         want ? want->name : "(none)", want ? fedc_dtype_name(want->dtype) : "",
                         want ? fedc_shape_str(want->ndim, want->shape, s1, sizeof s1) : "", h->name,
                         fedc_dtype_name((fedc_dtype)h->dtype), s2);
            reject_update(n, why);
        } else {
            n->cur_t = (fedc_tensor *)want;
        }
    }
    if (n->cur_nbytes == 0) {
        if (++n->stream_index == n->stream_total)
            stream_finished(n);
        else
            n->expect_header = 1;
    }
}

/* A DATA payload has fully arrived at cur_t->data + cur_got - len. */
static void on_data_done(node *n, uint32_t len)
{
    fedc_server *s = n->srv;
    n->cur_got += len;
    if (n->sk == S_FIT && n->cur_t && n->folding) {
        /* Check and fold the whole elements that are complete now, while
         * they are still in cache from the socket read. A bad value takes
         * the whole update back out. */
        size_t elems = n->cur_got / sizeof(float);
        char why[FEDC_ERRMSG_MAX];
        if (elems > n->cur_checked) {
            if (fedc__fedavg_check_fold(&s->agg, n->stream_index, n->cur_checked,
                                        (const float *)n->cur_t->data + n->cur_checked,
                                        elems - n->cur_checked, n->weight, why, sizeof why))
                reject_update(n, why);
            else
                n->cur_checked = elems;
        }
    }
    if (n->cur_got == n->cur_nbytes) {
        n->cur_checked = 0;
        if (++n->stream_index == n->stream_total)
            stream_finished(n);
        else
            n->expect_header = 1;
    }
}

static double metric_or_nan(const fedc_config *c, const char *k1, const char *k2)
{
    double v;
    if (fedc_config_get_f64(c, k1, &v) == FEDC_OK && isfinite(v)) return v;
    if (k2 && fedc_config_get_f64(c, k2, &v) == FEDC_OK && isfinite(v)) return v;
    return NAN;
}

static void set_model(fedc_server *s, fedc_params *p);

static void stream_finished(node *n)
{
    fedc_server *s = n->srv;
    stream_kind sk = n->sk;
    n->sk = S_NONE;
    n->expect_header = 0;
    n->cur_t = NULL;
    if (sk == S_GETPARAMS) {
        fedc_params *p = n->stream_params;
        n->stream_params = NULL;
        /* Only the answer the server is waiting for counts: a late one
         * (after the stage timed out and another client was asked) is
         * dropped. */
        int current = n->req == REQ_GETPARAMS && !n->result_recorded && s->ph == PHASE_INIT && !s->model;
        n->req = REQ_NONE;
        if (!n->retired) set_state(n, NODE_IDLE);
        if (!current) {
            fedc_params_destroy(p);
            return;
        }
        char why[FEDC_ERRMSG_MAX];
        fedc__fedavg probe;
        if (fedc_params_count(p) == 0) {
            snprintf(why, sizeof why, "it sent an empty parameter set");
        } else if (fedc__fedavg_init(&probe, p, 1, why, sizeof why) == FEDC_OK) {
            fedc__fedavg_free(&probe);
            why[0] = '\0';
            if (fedc_params_check_finite(p, why, sizeof why) == FEDC_OK) why[0] = '\0';
        }
        if (why[0]) {
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "initial parameters from %s refused: %s", n->id, why);
            fedc_params_destroy(p);
            n->result_recorded = 1;
            if (s->stage_pending) s->stage_pending--;
            maybe_finish_stage(s);
            return;
        }
        char hex[65];
        model_digest(p, hex);
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT,
                 "initial parameters from %s: %zu tensors, %zu bytes, blake2b-256 %s", n->id,
                 fedc_params_count(p), fedc_params_nbytes(p), hex);
        set_model(s, p);
        n->result_recorded = 1;
        if (s->stage_pending) s->stage_pending--;
        maybe_finish_stage(s);
        return;
    }
    /* A fit result. */
    int stale = n->stale;
    int current =
        !stale && n->req == REQ_FIT && n->req_round == s->round && s->ph == PHASE_FIT && !n->result_recorded;
    if (current && !n->rejected && !n->folding) {
        /* Nothing was folded (it arrived while stale): impossible for a
         * current result, but never commit what was not added. */
        reject_update(n, "update was not aggregated");
    }
    n->folding = 0;
    if (current && !n->rejected) {
        fedc__fedavg_commit(&s->agg, n->weight);
        if (s->nfits == s->capfits) {
            size_t nc = s->capfits ? 2 * s->capfits : 16;
            fit_result *nf = realloc(s->fits, nc * sizeof *nf);
            if (nf) {
                s->fits = nf;
                s->capfits = nc;
            }
        }
        if (s->nfits < s->capfits) {
            fit_result *f = &s->fits[s->nfits++];
            snprintf(f->id, sizeof f->id, "%s", n->id);
            f->n = n->weight;
            f->loss = metric_or_nan(n->metrics, "train_loss", "loss");
        }
        s->ok++;
        n->result_recorded = 1;
        if (s->stage_pending) s->stage_pending--;
    }
    release_slot(n);
    if (current && n->rejected) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: rejected update from %s (%s): %s",
                 (unsigned long long)s->round, n->id, n->peer, n->reject_reason);
        n->req = REQ_FIT; /* request_failed() needs it */
        request_failed(n, NULL);
        return;
    }
    n->req = REQ_NONE;
    set_state(n, NODE_IDLE);
    if (current) maybe_finish_stage(s);
}

/* ---- messages ---------------------------------------------------------- */

static int node_id_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 128) return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '_' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

static void on_hello(node *n, const Fedc__V1__Hello *h)
{
    fedc_server *s = n->srv;
    if (h->protocol_version != FEDC_PROTOCOL_VERSION) {
        char why[128];
        snprintf(why, sizeof why, "protocol version %u not supported (this server speaks %u)",
                 h->protocol_version, FEDC_PROTOCOL_VERSION);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: %s", n->peer, why);
        send_error_and_close(n, why);
        return;
    }
    if (!h->node_id || !node_id_valid(h->node_id)) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: invalid node id", n->peer);
        send_error_and_close(n, "invalid node id: 1 to 128 characters of [A-Za-z0-9._:-]");
        return;
    }
    if (h->max_frame_bytes != 0 && h->max_frame_bytes < FEDC_CHUNK_BYTES) {
        send_error_and_close(n, "max_frame_bytes must be at least 1048576");
        return;
    }
    for (node *o = s->nodes; o; o = o->next)
        if (o != n && o->state != NODE_HANDSHAKE && !strcmp(o->id, h->node_id)) {
            char why[256];
            snprintf(why, sizeof why, "node id '%s' is already connected", h->node_id);
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: %s", n->peer, why);
            send_error_and_close(n, why);
            return;
        }
    snprintf(n->id, sizeof n->id, "%s", h->node_id);
    if (n->timer_open) uv_timer_stop(&n->handshake_timer);
    Fedc__V1__Welcome w = FEDC__V1__WELCOME__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    w.protocol_version = FEDC_PROTOCOL_VERSION;
    w.server_id = "fedc " FEDC_VERSION_STRING;
    w.max_frame_bytes = s->opt.max_frame_bytes;
    m.body_case = FEDC__V1__MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    if (node_send(n, &m, NULL, 0)) {
        node_close(n, "cannot send welcome");
        return;
    }
    set_state(n, NODE_IDLE);
    /* A simulation's thousands of virtual clients join silently. */
    fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_INFO, LOG_COMPONENT, "client %s joined from %s (%s)",
             n->id, n->peer, h->software ? h->software : "");
    if (s->ph == PHASE_WAIT) maybe_finish_stage(s);
}

/* Pauses reading from n until a staging buffer is free. */
static int acquire_slot(node *n)
{
    fedc_server *s = n->srv;
    for (uint32_t i = 0; i < s->opt.max_inflight_updates; i++) {
        if (s->slot_busy[i]) continue;
        if (!s->slots[i]) {
            s->slots[i] = fedc_params_clone(s->model->params);
            if (!s->slots[i]) return -1;
        }
        s->slot_busy[i] = 1;
        n->slot = (int)i;
        n->stream_params = s->slots[i];
        return 1;
    }
    return 0;
}

static void on_fit_res(node *n, const Fedc__V1__FitRes *r)
{
    fedc_server *s = n->srv;
    if (n->req != REQ_FIT || r->round != n->req_round) {
        protocol_error(n, "unexpected fit_res for round %llu", (unsigned long long)r->round);
        return;
    }
    if (r->num_tensors > FEDC_MAX_MODEL_TENSORS) {
        protocol_error(n, "fit_res announces %u tensors (at most %u)", r->num_tensors,
                       FEDC_MAX_MODEL_TENSORS);
        return;
    }
    n->sk = S_FIT;
    n->stream_total = r->num_tensors;
    n->stream_index = 0;
    n->rejected = 0;
    n->reject_reason[0] = '\0';
    n->weight = r->num_examples;
    n->stale = !(n->req_round == s->round && s->ph == PHASE_FIT && !n->result_recorded);
    fedc_config_clear(n->metrics);
    fedc__config_from_kv(n->metrics, r->metrics, r->n_metrics);
    char why[FEDC_ERRMSG_MAX];
    if (!n->stale) {
        if (r->num_tensors != fedc_params_count(s->model->params)) {
            snprintf(why, sizeof why, "it sent %u tensors, the model has %zu", r->num_tensors,
                     fedc_params_count(s->model->params));
            reject_update(n, why);
        } else if (fedc__fedavg_check_weight(&s->agg, r->num_examples, why, sizeof why)) {
            reject_update(n, why);
        }
    }
    if (n->stream_total == 0) {
        stream_finished(n);
        return;
    }
    n->expect_header = 1;
    if (!n->stale && !n->rejected) {
        n->folding = 1;
        int got = acquire_slot(n);
        if (got < 0) {
            node_close(n, "out of memory for an update buffer");
            return;
        }
        if (got == 0) {
            /* Every staging buffer is in use: stop reading this client until
             * one frees (TCP backpressure holds its data meanwhile). */
            uv_read_stop((uv_stream_t *)&n->tcp);
            n->waiting_slot = 1;
            if (s->wait_tail)
                s->wait_tail->wait_next = n;
            else
                s->wait_head = n;
            s->wait_tail = n;
        }
    }
}

static void on_message(node *n, fedc__msg *m)
{
    fedc_server *s = n->srv;
    if (n->state == NODE_HANDSHAKE) {
        if (m->body_case != FEDC__V1__MESSAGE__BODY_HELLO) {
            protocol_error(n, "expected hello, got %s", fedc__msg_name(m));
            return;
        }
        on_hello(n, m->hello);
        return;
    }
    if (n->sk != S_NONE && !n->expect_header) {
        /* A tensor's data is still owed: nothing may interrupt it. */
        protocol_error(n, "%s message in the middle of tensor '%s' (%zu of %zu bytes received)",
                       fedc__msg_name(m), n->cur_t ? n->cur_t->name : "?", n->cur_got, n->cur_nbytes);
        return;
    }
    if (n->expect_header) {
        if (m->body_case != FEDC__V1__MESSAGE__BODY_TENSOR) {
            protocol_error(n, "expected tensor %u of %u, got %s", n->stream_index + 1, n->stream_total,
                           fedc__msg_name(m));
            return;
        }
        on_tensor_header(n, m->tensor);
        return;
    }
    switch (m->body_case) {
    case FEDC__V1__MESSAGE__BODY_FIT_RES: on_fit_res(n, m->fit_res); break;
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES:
        if (n->req != REQ_GETPARAMS) {
            protocol_error(n, "unexpected get_parameters_res");
            return;
        }
        if (m->get_parameters_res->num_tensors > FEDC_MAX_MODEL_TENSORS) {
            protocol_error(n, "get_parameters_res announces %u tensors (at most %u)",
                           m->get_parameters_res->num_tensors, FEDC_MAX_MODEL_TENSORS);
            return;
        }
        n->sk = S_GETPARAMS;
        n->stream_bytes = 0;
        n->stream_total = m->get_parameters_res->num_tensors;
        n->stream_index = 0;
        n->stream_params = fedc_params_create();
        if (!n->stream_params) {
            node_close(n, "out of memory");
            return;
        }
        if (n->stream_total == 0)
            stream_finished(n);
        else
            n->expect_header = 1;
        break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_RES: {
        const Fedc__V1__EvaluateRes *r = m->evaluate_res;
        if (n->req != REQ_EVAL || r->round != n->req_round) {
            protocol_error(n, "unexpected evaluate_res for round %llu", (unsigned long long)r->round);
            return;
        }
        int current = n->req_round == s->round && s->ph == PHASE_EVAL && !n->result_recorded;
        if (current) {
            fedc_config *mc = fedc_config_create();
            if (mc) fedc__config_from_kv(mc, r->metrics, r->n_metrics);
            double acc = metric_or_nan(mc, "accuracy", NULL);
            fedc_config_destroy(mc);
            if (!isfinite(r->loss) || r->num_examples == 0) {
                request_failed(n, "evaluation result with a non-finite loss or no examples");
                return;
            }
            if (s->nevals == s->capevals) {
                size_t nc = s->capevals ? 2 * s->capevals : 16;
                eval_result *ne = realloc(s->evals, nc * sizeof *ne);
                if (ne) {
                    s->evals = ne;
                    s->capevals = nc;
                }
            }
            if (s->nevals < s->capevals) {
                eval_result *e = &s->evals[s->nevals++];
                snprintf(e->id, sizeof e->id, "%s", n->id);
                e->n = r->num_examples;
                e->loss = r->loss;
                e->acc = acc;
            }
            n->result_recorded = 1;
            if (s->stage_pending) s->stage_pending--;
        }
        n->req = REQ_NONE;
        set_state(n, NODE_IDLE);
        if (current) maybe_finish_stage(s);
        break;
    }
    case FEDC__V1__MESSAGE__BODY_FAILURE:
        if (n->req == REQ_NONE) {
            protocol_error(n, "failure message with no request pending");
            return;
        }
        request_failed(n,
                       m->failure->reason && m->failure->reason[0] ? m->failure->reason : "client failure");
        break;
    case FEDC__V1__MESSAGE__BODY_ERROR:
        node_close(n,
                   m->error->reason && m->error->reason[0] ? m->error->reason : "client reported an error");
        break;
    default: protocol_error(n, "unexpected %s message", fedc__msg_name(m)); break;
    }
}

/* ---- reading --------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    node *n = (node *)h;
    fedc_server *s = n->srv;
    (void)suggested;
    if (n->draining || n->retired) {
        *buf = uv_buf_init((char *)s->discard, DISCARD_BYTES);
        return;
    }
    switch (n->rs) {
    case R_HDR: *buf = uv_buf_init((char *)n->hdr + n->hdr_got, FEDC_FRAME_HEADER_BYTES - n->hdr_got); break;
    case R_MSG: *buf = uv_buf_init((char *)n->msgbuf + n->fgot, n->flen - n->fgot); break;
    case R_DATA:
        if (n->data_dst) {
            *buf = uv_buf_init((char *)n->data_dst + n->fgot, n->flen - n->fgot);
        } else {
            uint32_t left = n->flen - n->fgot;
            *buf = uv_buf_init((char *)s->discard, left < DISCARD_BYTES ? left : DISCARD_BYTES);
        }
        break;
    }
}

static void on_header_complete(node *n)
{
    fedc_server *s = n->srv;
    char why[FEDC_ERRMSG_MAX];
    if (fedc__frame_header_decode(n->hdr, s->opt.max_frame_bytes, &n->ftype, &n->flen, why, sizeof why)) {
        protocol_error(n, "%s", why);
        return;
    }
    n->fgot = 0;
    if (n->ftype == FEDC_FRAME_MESSAGE) {
        if (n->flen > n->msgcap) {
            uint32_t cap = n->flen < 4096 ? 4096 : n->flen;
            uint8_t *nb = realloc(n->msgbuf, cap);
            if (!nb) {
                node_close(n, "out of memory");
                return;
            }
            n->msgbuf = nb;
            n->msgcap = cap;
        }
        n->rs = R_MSG;
        return;
    }
    /* DATA: it must continue the tensor being received. */
    if (n->sk == S_NONE || n->expect_header) {
        protocol_error(n, "DATA frame (%u bytes) where no tensor data is expected", n->flen);
        return;
    }
    if (n->flen == 0 || n->flen > n->cur_nbytes - n->cur_got) {
        protocol_error(n, "DATA frame of %u bytes overruns the tensor (%zu of %zu bytes received)", n->flen,
                       n->cur_got, n->cur_nbytes);
        return;
    }
    n->data_dst = n->cur_t ? (uint8_t *)n->cur_t->data + n->cur_got : NULL;
    n->rs = R_DATA;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    node *n = (node *)st;
    (void)buf;
    if (nread == 0 || n->closing) return;
    if (n->draining || n->retired) {
        if (nread < 0) node_close(n, NULL);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF)
            node_close(n, (n->req != REQ_NONE || n->sk != S_NONE) ? "connection closed mid-request" : NULL);
        else {
            char why[128];
            snprintf(why, sizeof why, "read error: %s", uv_strerror((int)nread));
            node_close(n, why);
        }
        return;
    }
    consume(n, (size_t)nread);
}

/* Advances the frame reader by nread bytes that have just been placed where
 * on_alloc() said. */
static void consume(node *n, size_t nread)
{
    fedc_server *s = n->srv;
    s->bytes_received += (uint64_t)nread;
    switch (n->rs) {
    case R_HDR:
        n->hdr_got += (uint32_t)nread;
        if (n->hdr_got == FEDC_FRAME_HEADER_BYTES) {
            n->hdr_got = 0;
            on_header_complete(n);
            if (!n->closing && n->rs == R_MSG && n->flen == 0) n->rs = R_HDR;
        }
        break;
    case R_MSG:
        n->fgot += (uint32_t)nread;
        if (n->fgot == n->flen) {
            n->rs = R_HDR;
            fedc__msg *m = NULL;
            char why[FEDC_ERRMSG_MAX];
            if (fedc__msg_unpack(n->msgbuf, n->flen, &m, why, sizeof why)) {
                protocol_error(n, "%s", why);
                return;
            }
            on_message(n, m);
            fedc__msg_free(m);
            if (n->is_virtual && !n->closing) {
                /* A simulated client's whole message is always at hand, so it
                 * needs no buffer between messages: with a large population
                 * this is most of the memory per client. */
                free(n->msgbuf);
                n->msgbuf = NULL;
                n->msgcap = 0;
            }
        }
        break;
    case R_DATA: {
        n->fgot += (uint32_t)nread;
        if (n->fgot == n->flen) {
            n->rs = R_HDR;
            on_data_done(n, n->flen);
        }
        break;
    }
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    node_close(t->data, NULL);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* After the last message to a client (Shutdown, or an Error), close
 * politely: send FIN, then read and drop whatever the client was still
 * sending until it closes too (at most 5 s). Closing at once would reset a
 * client that is in the middle of sending an update, and the reset would
 * destroy the message it has not read yet. */
static void begin_drain(node *n)
{
    if (n->closing || n->draining) return;
    if (n->is_virtual || !n->timer_open) {
        node_close(n, NULL);
        return;
    }
    n->draining = 1;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&n->tcp, on_shutdown_done)) {
        free(req);
        node_close(n, NULL);
        return;
    }
    uv_timer_stop(&n->handshake_timer);
    uv_timer_start(&n->handshake_timer, on_drain_timeout, 5000, 0);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    node *n = t->data;
    if (n->state == NODE_HANDSHAKE) node_close(n, "no hello within the handshake timeout");
}

static void on_connection(uv_stream_t *server, int status)
{
    fedc_server *s = server->data;
    if (status < 0) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "accept failed: %s", uv_strerror(status));
        return;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) return;
    n->srv = s;
    n->slot = -1;
    n->metrics = fedc_config_create();
    uv_tcp_init(&s->loop, &n->tcp);
    n->tcp.data = n;
    if (uv_accept(server, (uv_stream_t *)&n->tcp) || !n->metrics) {
        fedc_config_destroy(n->metrics);
        n->metrics = NULL;
        n->closing = 2;
        uv_close((uv_handle_t *)&n->tcp, on_node_closed);
        return;
    }
    uv_tcp_nodelay(&n->tcp, 1);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&n->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(n->peer, sizeof n->peer, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port & 0xffff);
    n->serial = s->next_serial++;
    n->next = s->nodes;
    s->nodes = n;
    s->nconnections++;
    if (s->nconnections > s->opt.max_connections || s->stopping) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refusing %s: %s", n->peer,
                 s->stopping ? "the federation is ending" : "connection limit reached");
        send_error_and_close(n, s->stopping ? "the federation is ending" : "server connection limit reached");
        return;
    }
    uv_timer_init(&s->loop, &n->handshake_timer);
    n->handshake_timer.data = n;
    n->timer_open = 1;
    uv_timer_start(&n->handshake_timer, on_handshake_timeout, (uint64_t)(s->opt.handshake_timeout * 1000), 0);
    uv_read_start((uv_stream_t *)&n->tcp, on_alloc, on_read);
}

static void feed_pending(node *n);

/* Frees the simulated clients closed since the last call. */
static void bury(fedc_server *s)
{
    while (s->graveyard) {
        node *n = s->graveyard;
        s->graveyard = n->next;
        free(n->pending);
        free(n->msgbuf);
        fedc_config_destroy(n->metrics);
        if (n->sk == S_GETPARAMS) fedc_params_destroy(n->stream_params);
        free(n);
    }
}

static void node_resume(node *n)
{
    if (acquire_slot(n) != 1) {
        node_close(n, "out of memory for an update buffer");
        return;
    }
    if (n->is_virtual)
        feed_pending(n);
    else
        uv_read_start((uv_stream_t *)&n->tcp, on_alloc, on_read);
}

/* Runs fed bytes through the same frame reader as socket reads, copying
 * each piece where on_alloc() says it belongs. Stops early, keeping the
 * rest, when the node must wait for a staging buffer. Returns the bytes
 * used. */
static size_t feed_bytes(node *n, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && !n->closing && !n->retired && !n->waiting_slot) {
        uv_buf_t buf;
        on_alloc((uv_handle_t *)&n->tcp, 65536, &buf);
        size_t k = len - off < buf.len ? len - off : buf.len;
        memcpy(buf.base, data + off, k);
        off += k;
        consume(n, k);
    }
    return off;
}

static void feed_pending(node *n)
{
    if (!n->pending) return;
    uint8_t *p = n->pending;
    size_t len = n->pending_len, off = n->pending_off;
    n->pending = NULL;
    off += feed_bytes(n, p + off, len - off);
    if (off < len && !n->closing) {
        n->pending = p;
        n->pending_len = len;
        n->pending_off = off;
    } else {
        free(p);
    }
}

void fedc__server_set_virtual(fedc_server *s, const fedc__virtual_transport *t)
{
    s->virt = *t;
}

int fedc__server_add_virtual(fedc_server *s, uint32_t index)
{
    if (index >= s->nvirtual) {
        uint32_t cap = s->nvirtual ? s->nvirtual : 64;
        while (cap <= index) cap *= 2;
        node **v = realloc(s->vnodes, cap * sizeof *v);
        if (!v) return FEDC_ERR_NOMEM;
        memset(v + s->nvirtual, 0, (cap - s->nvirtual) * sizeof *v);
        s->vnodes = v;
        s->nvirtual = cap;
    }
    node *n = calloc(1, sizeof *n);
    if (!n || !(n->metrics = fedc_config_create())) {
        free(n);
        return FEDC_ERR_NOMEM;
    }
    n->srv = s;
    n->slot = -1;
    n->is_virtual = 1;
    n->vindex = index;
    snprintf(n->peer, sizeof n->peer, "sim:%u", index);
    n->serial = s->next_serial++;
    n->next = s->nodes;
    s->nodes = n;
    s->nconnections++;
    s->vnodes[index] = n;
    return FEDC_OK;
}

void fedc__server_feed(fedc_server *s, uint32_t index, const uint8_t *data, size_t len)
{
    node *n = index < s->nvirtual ? s->vnodes[index] : NULL;
    if (!n || n->closing || n->retired) return;
    if (n->pending) {
        /* Keep the order: append behind what is already waiting. */
        uint8_t *p = realloc(n->pending, n->pending_len + len);
        if (!p) {
            node_close(n, "out of memory");
            return;
        }
        memcpy(p + n->pending_len, data, len);
        n->pending = p;
        n->pending_len += len;
        return;
    }
    size_t used = feed_bytes(n, data, len);
    if (used < len && !n->closing) {
        n->pending = malloc(len - used);
        if (!n->pending) {
            node_close(n, "out of memory");
        } else {
            memcpy(n->pending, data + used, len - used);
            n->pending_len = len - used;
            n->pending_off = 0;
        }
    }
    bury(s);
}

void fedc__server_disconnect(fedc_server *s, uint32_t index, const char *why)
{
    node *n = index < s->nvirtual ? s->vnodes[index] : NULL;
    if (n && !n->closing) node_close(n, why);
    bury(s);
}

void fedc__server_reconnect(fedc_server *s, uint32_t index, const uint8_t *hello, size_t len, const char *why)
{
    /* The stage must not finish between the old connection's end and the new
     * one's hello: whether it did would depend on which result came last. */
    s->defer_stage = 1;
    fedc__server_disconnect(s, index, why);
    if (!s->stopping && fedc__server_add_virtual(s, index) == FEDC_OK)
        fedc__server_feed(s, index, hello, len);
    s->defer_stage = 0;
    maybe_finish_stage(s);
    bury(s);
}

uint64_t fedc__server_round(const fedc_server *s)
{
    return s->round;
}

uint64_t fedc__server_blob_version(const void *blob)
{
    return ((const model_blob *)blob)->version;
}

void fedc__server_blob_release(void *blob)
{
    blob_unref(blob);
}

uv_loop_t *fedc__server_loop(fedc_server *s)
{
    return &s->loop;
}

/* ---- the round driver ------------------------------------------------- */

static int cmp_node_id(const void *a, const void *b)
{
    return strcmp((*(node *const *)a)->id, (*(node *const *)b)->id);
}

/* Idle clients sorted by node id, so that sampling depends only on the seed
 * and on who is connected, never on connection order. */
static node **idle_nodes(fedc_server *s, size_t *count)
{
    size_t n = 0;
    for (node *x = s->nodes; x; x = x->next)
        if (x->state == NODE_IDLE && !x->closing && !x->retired && !x->draining) n++;
    node **v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        *count = 0;
        return NULL;
    }
    n = 0;
    for (node *x = s->nodes; x; x = x->next)
        if (x->state == NODE_IDLE && !x->closing && !x->retired && !x->draining) v[n++] = x;
    qsort(v, n, sizeof *v, cmp_node_id);
    *count = n;
    return v;
}

/* Picks k of n by a partial Fisher-Yates shuffle; the chosen come first. */
static void choose(fedc_rng *rng, node **v, size_t n, size_t k)
{
    for (size_t i = 0; i < k && i < n; i++) {
        size_t j = i + (size_t)fedc_rng_below(rng, n - i);
        node *t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    /* Keep the chosen in id order so requests go out in a stable order. */
    qsort(v, k < n ? k : n, sizeof *v, cmp_node_id);
}

static void set_model(fedc_server *s, fedc_params *p)
{
    char err[FEDC_ERRMSG_MAX];
    if (!s->agg_ready) {
        if (fedc__fedavg_init(&s->agg, p, 1, err, sizeof err)) {
            fedc_params_destroy(p);
            fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_UNSUPPORTED,
                           "cannot aggregate this model: %s", err);
            begin_shutdown(s, FEDC_ERR_UNSUPPORTED);
            return;
        }
        s->agg_ready = 1;
    }
    model_blob *b = blob_new(p, err, sizeof err);
    if (!b) {
        fedc_params_destroy(p);
        fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_NOMEM, "%s", err);
        begin_shutdown(s, FEDC_ERR_NOMEM);
        return;
    }
    blob_unref(s->model);
    s->model = b;
}

static void on_stage_timeout(uv_timer_t *t);

static void send_request(fedc_server *s, node *n, req_kind kind)
{
    fedc_config *cfg = fedc_config_create();
    fedc__kvbuf kv = {0};
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    Fedc__V1__EvaluateIns ei = FEDC__V1__EVALUATE_INS__INIT;
    Fedc__V1__GetParametersIns gi = FEDC__V1__GET_PARAMETERS_INS__INIT;
    int rc = cfg ? fedc_config_merge(cfg, s->fit_config) : FEDC_ERR_NOMEM;
    if (!rc && kind != REQ_GETPARAMS)
        rc = fedc_config_set_i64(
            cfg, "seed", (int64_t)(fedc_seed_derive(s->opt.seed, s->round, fedc_hash_string(n->id)) >> 1));
    if (!rc) rc = fedc__kvbuf_init(&kv, cfg);
    if (rc) {
        fedc_config_destroy(cfg);
        node_close(n, "out of memory");
        return;
    }
    model_blob *blob = NULL;
    if (kind == REQ_FIT) {
        fi.round = s->round;
        fi.config = kv.ptrs;
        fi.n_config = kv.n;
        fi.num_tensors = (uint32_t)fedc_params_count(s->model->params);
        m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
        m.fit_ins = &fi;
        blob = s->model;
    } else if (kind == REQ_EVAL) {
        ei.round = s->round;
        ei.config = kv.ptrs;
        ei.n_config = kv.n;
        ei.num_tensors = (uint32_t)fedc_params_count(s->model->params);
        m.body_case = FEDC__V1__MESSAGE__BODY_EVALUATE_INS;
        m.evaluate_ins = &ei;
        blob = s->model;
    } else {
        gi.config = kv.ptrs;
        gi.n_config = kv.n;
        m.body_case = FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_INS;
        m.get_parameters_ins = &gi;
    }
    n->req = kind;
    n->req_round = s->round;
    n->result_recorded = 0;
    set_state(n, NODE_BUSY);
    s->stage_pending++;
    rc = node_send(n, &m, blob, 0);
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(cfg);
    if (rc) node_close(n, "cannot send request");
}

static void start_stage_timer(fedc_server *s)
{
    uv_timer_start(&s->stage_timer, on_stage_timeout, (uint64_t)(s->opt.round_timeout * 1000), 0);
}

static void on_progress_timer(uv_timer_t *t)
{
    fedc_server *s = t->data;
    if (s->ph == PHASE_FIT && s->opt.on_progress)
        s->opt.on_progress(s->opt.on_round_user, s->round, s->ok + s->failed, s->sampled);
}

static void on_wait_timeout(uv_timer_t *t)
{
    fedc_server *s = t->data;
    size_t n = 0;
    free(idle_nodes(s, &n));
    fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_TIMEOUT,
                   "only %zu of the %u clients needed connected within %.0f s", n, s->opt.min_clients,
                   s->opt.wait_timeout);
    begin_shutdown(s, FEDC_ERR_TIMEOUT);
}

static void enter_wait(fedc_server *s, size_t have)
{
    s->ph = PHASE_WAIT;
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "waiting for clients: %zu of %u connected", have,
             s->opt.min_clients);
    if (s->opt.wait_timeout > 0)
        uv_timer_start(&s->wait_timer, on_wait_timeout, (uint64_t)(s->opt.wait_timeout * 1000), 0);
}

static void ask_initial_parameters(fedc_server *s)
{
    size_t n = 0;
    node **v = idle_nodes(s, &n);
    s->ph = PHASE_INIT;
    s->stage_pending = 0;
    if (n == 0) {
        free(v);
        enter_wait(s, 0);
        return;
    }
    /* The first idle client in id order that has not been asked yet. */
    node *pick = NULL;
    for (size_t i = 0; i < n && !pick; i++)
        if (!v[i]->asked_params) pick = v[i];
    free(v);
    if (!pick) {
        enter_wait(s, 0);
        return;
    }
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "no initial model: asking %s for its parameters", pick->id);
    pick->asked_params = 1;
    send_request(s, pick, REQ_GETPARAMS);
    start_stage_timer(s);
}

static void start_round(fedc_server *s)
{
    if (s->stopping) return;
    size_t n = 0;
    node **v = idle_nodes(s, &n);
    if (!v) {
        begin_shutdown(s, FEDC_ERR_NOMEM);
        return;
    }
    if (n < s->opt.min_clients) {
        free(v);
        enter_wait(s, n);
        return;
    }
    uv_timer_stop(&s->wait_timer);
    s->round++;
    s->round_start = fedc_now();
    s->round_sent0 = s->bytes_sent;
    s->round_received0 = s->bytes_received;
    s->ok = s->failed = 0;
    s->nfits = s->nevals = 0;
    s->fail_reason[0] = '\0';
    fedc_rng rng;
    fedc_rng_seed(&rng, fedc_seed_derive(s->opt.seed, s->round, 0x666974 /* "fit" */));
    size_t k;
    if (s->opt.sampling == FEDC_SAMPLING_POISSON) {
        /* Each client independently with probability q, in id order. */
        k = 0;
        for (size_t i = 0; i < n; i++)
            if (fedc_rng_uniform(&rng) < s->opt.fraction_fit) v[k++] = v[i];
    } else {
        k = (size_t)ceil(s->opt.fraction_fit * (double)n - 1e-9);
        if (k < s->opt.min_clients) k = s->opt.min_clients;
        if (k > n) k = n;
        choose(&rng, v, n, k);
    }
    s->sampled = (uint32_t)k;
    s->ph = PHASE_FIT;
    s->stage_pending = 0;
    fedc__fedavg_reset(&s->agg, k ? k : 1);
    if (k < s->opt.min_clients) {
        snprintf(s->fail_reason, sizeof s->fail_reason, "poisson sampling drew %zu clients; a round needs %u",
                 k, s->opt.min_clients);
        free(v);
        maybe_finish_stage(s);
        return;
    }
    for (size_t i = 0; i < k; i++) send_request(s, v[i], REQ_FIT);
    free(v);
    start_stage_timer(s);
    if (s->opt.on_progress && s->opt.progress_interval > 0) {
        uint64_t ms = (uint64_t)(s->opt.progress_interval * 1000);
        uv_timer_start(&s->progress_timer, on_progress_timer, ms, ms);
    }
    maybe_finish_stage(s);
}

static int cmp_fit(const void *a, const void *b)
{
    return strcmp(((const fit_result *)a)->id, ((const fit_result *)b)->id);
}
static int cmp_eval(const void *a, const void *b)
{
    return strcmp(((const eval_result *)a)->id, ((const eval_result *)b)->id);
}

static void start_eval(fedc_server *s);
static void finish_round(fedc_server *s);

static void finish_fit(fedc_server *s)
{
    uv_timer_stop(&s->stage_timer);
    uv_timer_stop(&s->progress_timer);
    fedc_round_record *r = &s->rec;
    memset(r, 0, sizeof *r);
    r->round = s->round;
    r->train_loss = r->fed_eval_loss = r->fed_eval_accuracy = NAN;
    r->central_eval_loss = r->central_eval_accuracy = NAN;
    r->clients_sampled = s->sampled;
    r->clients_ok = s->ok;
    r->clients_failed = s->failed;
    /* Sums in node-id order: metrics do not depend on arrival order either. */
    if (s->nfits) qsort(s->fits, s->nfits, sizeof *s->fits, cmp_fit);
    double lw = 0, ls = 0;
    for (size_t i = 0; i < s->nfits; i++)
        if (isfinite(s->fits[i].loss)) {
            ls += s->fits[i].loss * (double)s->fits[i].n;
            lw += (double)s->fits[i].n;
        }
    if (lw > 0) r->train_loss = ls / lw;
    if (s->ok < s->opt.min_clients || s->ok == 0) {
        r->failed = 1;
        if (!s->fail_reason[0])
            snprintf(s->fail_reason, sizeof s->fail_reason,
                     "only %u of %u sampled clients returned a valid update; a round needs %u", s->ok,
                     s->sampled, s->opt.min_clients);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu failed: %s", (unsigned long long)s->round,
                 s->fail_reason);
        finish_round(s);
        return;
    }
    fedc_params *next = fedc_params_clone(s->model->params);
    char err[FEDC_ERRMSG_MAX];
    if (!next || fedc__fedavg_finalize(&s->agg, next, err, sizeof err)) {
        fedc_params_destroy(next);
        fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_NOMEM, "cannot finalise the aggregate");
        begin_shutdown(s, FEDC_ERR_NOMEM);
        return;
    }
    set_model(s, next);
    if (s->stopping) return;
    start_eval(s);
}

static void central_work_cb(uv_work_t *w)
{
    fedc_server *s = w->data;
    s->central_err[0] = '\0';
    s->central_rc =
        s->opt.central_eval(s->opt.central_eval_user, s->model->params, s->round, &s->central_loss,
                            &s->central_acc, s->central_err, sizeof s->central_err);
}

static void central_after_cb(uv_work_t *w, int status)
{
    fedc_server *s = w->data;
    s->central_running = 0;
    if (status == 0 && s->central_rc == FEDC_OK) {
        s->rec.central_eval_loss = s->central_loss;
        s->rec.central_eval_accuracy = s->central_acc;
    } else if (status == 0) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "central evaluation failed: %s", s->central_err);
    }
    if (!s->stopping) maybe_finish_stage(s);
}

static void start_eval(fedc_server *s)
{
    s->ph = PHASE_EVAL;
    s->stage_pending = 0;
    size_t n = 0;
    node **v = idle_nodes(s, &n);
    size_t k = 0;
    if (s->opt.fraction_evaluate > 0 && n > 0) {
        k = (size_t)ceil(s->opt.fraction_evaluate * (double)n - 1e-9);
        if (k > n) k = n;
        fedc_rng rng;
        fedc_rng_seed(&rng, fedc_seed_derive(s->opt.seed, s->round, 0x6576616c /* "eval" */));
        choose(&rng, v, n, k);
    }
    for (size_t i = 0; i < k; i++) send_request(s, v[i], REQ_EVAL);
    free(v);
    if (s->opt.central_eval) {
        s->central_running = 1;
        s->central_work.data = s;
        if (uv_queue_work(&s->loop, &s->central_work, central_work_cb, central_after_cb))
            s->central_running = 0;
    }
    if (k > 0) start_stage_timer(s);
    maybe_finish_stage(s);
}

static void write_metrics(fedc_server *s, const fedc_round_record *r)
{
    if (!s->metrics) return;
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddNumberToObject(o, "round", (double)r->round);
    cJSON_AddBoolToObject(o, "failed", r->failed);
    if (r->failed && r->failure_reason) cJSON_AddStringToObject(o, "failure_reason", r->failure_reason);
    cJSON_AddNumberToObject(o, "clients_sampled", r->clients_sampled);
    cJSON_AddNumberToObject(o, "clients_ok", r->clients_ok);
    cJSON_AddNumberToObject(o, "clients_failed", r->clients_failed);
    const char *keys[] = {"train_loss",        "fed_eval_loss",         "fed_eval_accuracy",
                          "central_eval_loss", "central_eval_accuracy", "seconds"};
    double vals[] = {r->train_loss,        r->fed_eval_loss,         r->fed_eval_accuracy,
                     r->central_eval_loss, r->central_eval_accuracy, r->seconds};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        if (isfinite(vals[i]))
            cJSON_AddNumberToObject(o, keys[i], vals[i]);
        else
            cJSON_AddNullToObject(o, keys[i]);
    }
    cJSON_AddNumberToObject(o, "bytes_sent", (double)r->bytes_sent);
    cJSON_AddNumberToObject(o, "bytes_received", (double)r->bytes_received);
    char *line = cJSON_PrintUnformatted(o);
    if (line) {
        fprintf(s->metrics, "%s\n", line);
        fflush(s->metrics);
        free(line);
    }
    cJSON_Delete(o);
}

static void finish_round(fedc_server *s)
{
    uv_timer_stop(&s->stage_timer);
    fedc_round_record *r = &s->rec;
    if (!r->failed) {
        if (s->nevals) qsort(s->evals, s->nevals, sizeof *s->evals, cmp_eval);
        double w = 0, l = 0, aw = 0, a = 0;
        for (size_t i = 0; i < s->nevals; i++) {
            l += s->evals[i].loss * (double)s->evals[i].n;
            w += (double)s->evals[i].n;
            if (isfinite(s->evals[i].acc)) {
                a += s->evals[i].acc * (double)s->evals[i].n;
                aw += (double)s->evals[i].n;
            }
        }
        if (w > 0) r->fed_eval_loss = l / w;
        if (aw > 0) r->fed_eval_accuracy = a / aw;
    }
    r->failure_reason = r->failed ? s->fail_reason : NULL;
    r->clients_failed = s->failed;
    r->clients_ok = s->ok;
    r->seconds = fedc_now() - s->round_start;
    r->bytes_sent = s->bytes_sent - s->round_sent0;
    r->bytes_received = s->bytes_received - s->round_received0;
    write_metrics(s, r);
    if (s->opt.on_round) s->opt.on_round(s->opt.on_round_user, r);
    double acc = isfinite(r->central_eval_accuracy) ? r->central_eval_accuracy : r->fed_eval_accuracy;
    if (s->opt.target_accuracy > 0 && isfinite(acc) && acc >= s->opt.target_accuracy) {
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "target accuracy %.4f reached in round %llu (%.4f)",
                 s->opt.target_accuracy, (unsigned long long)s->round, acc);
        s->target_reached = 1;
        begin_shutdown(s, FEDC_OK);
        return;
    }
    if (s->round >= s->opt.rounds) {
        if (s->opt.target_accuracy > 0) {
            fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_NOTREACHED,
                           "target accuracy %.4f not reached in %llu rounds", s->opt.target_accuracy,
                           (unsigned long long)s->opt.rounds);
            begin_shutdown(s, FEDC_ERR_NOTREACHED);
        } else {
            begin_shutdown(s, FEDC_OK);
        }
        return;
    }
    start_round(s);
}

static void on_stage_timeout(uv_timer_t *t)
{
    fedc_server *s = t->data;
    char why[128];
    snprintf(why, sizeof why, "no result within the round timeout (%g s)", s->opt.round_timeout);
    /* Count the missing results as failures but keep the clients: a late
     * answer is read and dropped, and the client is sampled again after. */
    for (node *n = s->nodes; n; n = n->next) {
        if (n->req == REQ_NONE || n->result_recorded || n->req_round != s->round) continue;
        /* An update half received is taken back out, its buffer freed for
         * others, and the rest of it will be read and dropped. */
        abandon_update(n);
        n->stale = 1;
        n->result_recorded = 1;
        if (n->req == REQ_FIT) s->failed++;
        if (s->stage_pending) s->stage_pending--;
        fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT,
                 "round %llu: node %s (%s) failed: %s", (unsigned long long)s->round, n->id, n->peer, why);
    }
    s->stage_pending = 0;
    maybe_finish_stage(s);
}

static void maybe_finish_stage(fedc_server *s)
{
    if (s->stopping || !s->running || s->defer_stage) return;
    switch (s->ph) {
    case PHASE_WAIT: {
        if (s->nidle >= s->opt.min_clients) {
            uv_timer_stop(&s->wait_timer);
            if (!s->model)
                ask_initial_parameters(s);
            else
                start_round(s);
        }
        break;
    }
    case PHASE_INIT:
        if (s->stage_pending) break;
        uv_timer_stop(&s->stage_timer);
        if (s->model)
            start_round(s);
        else
            ask_initial_parameters(s);
        break;
    case PHASE_FIT:
        if (s->stage_pending == 0) finish_fit(s);
        break;
    case PHASE_EVAL:
        if (s->stage_pending == 0 && !s->central_running) finish_round(s);
        break;
    case PHASE_DONE: break;
    }
}

static void close_grace_timer(fedc_server *s)
{
    if (!s->grace_open) return;
    s->grace_open = 0;
    uv_close((uv_handle_t *)&s->grace_timer, NULL);
}

static void close_server_handles(fedc_server *s)
{
    if (!s->handles_open) return;
    s->handles_open = 0;
    uv_close((uv_handle_t *)&s->stage_timer, NULL);
    uv_close((uv_handle_t *)&s->wait_timer, NULL);
    uv_close((uv_handle_t *)&s->progress_timer, NULL);
    uv_close((uv_handle_t *)&s->stop_async, NULL);
    uv_close((uv_handle_t *)&s->listener, NULL);
}

/* A client that stopped reading would keep its write, and so the loop,
 * alive forever: after the grace period every remaining connection ends. */
static void on_grace_over(uv_timer_t *t)
{
    fedc_server *s = t->data;
    for (node *n = s->nodes, *next; n; n = next) {
        next = n->next;
        node_close(n, "still connected 10 s after the federation ended");
    }
}

static void begin_shutdown(fedc_server *s, int rc)
{
    if (s->stopping) return;
    s->stopping = 1;
    s->rc = rc;
    s->ph = PHASE_DONE;
    if (s->model && s->out_dir) {
        char path[4096], err[FEDC_ERRMSG_MAX], hex[65], rounds[32];
        snprintf(path, sizeof path, "%s/model.safetensors", s->out_dir);
        snprintf(rounds, sizeof rounds, "%llu", (unsigned long long)s->round);
        const char *keys[] = {"format", "rounds"};
        const char *vals[] = {"pt", rounds};
        if (fedc_params_save(s->model->params, path, keys, vals, 2, err, sizeof err))
            fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "cannot save the model: %s", err);
        model_digest(s->model->params, hex);
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "final model: %s (blake2b-256 %s)", path, hex);
    }
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    sd.reason = rc == FEDC_OK ? "federation complete" : (char *)fedc_strerror(rc);
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    node *next;
    for (node *n = s->nodes; n; n = next) {
        next = n->next;
        if (n->state == NODE_HANDSHAKE)
            node_close(n, NULL);
        else if (node_send(n, &m, NULL, 1))
            node_close(n, NULL);
    }
    uv_timer_stop(&s->stage_timer);
    uv_timer_stop(&s->wait_timer);
    close_server_handles(s);
    /* Unreferenced: it fires only if connections keep the loop alive. */
    uv_timer_start(&s->grace_timer, on_grace_over, 10000, 0);
    uv_unref((uv_handle_t *)&s->grace_timer);
}

static void on_stop_async(uv_async_t *a)
{
    fedc_server *s = a->data;
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "stopping on request");
    fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_CANCELLED, "stopped on request");
    begin_shutdown(s, FEDC_ERR_CANCELLED);
}

/* ---- public API --------------------------------------------------------- */

void fedc_server_options_init(fedc_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:7000";
    o->rounds = 10;
    o->min_clients = 2;
    o->sampling = FEDC_SAMPLING_FIXED;
    o->fraction_fit = 1.0;
    o->fraction_evaluate = 1.0;
    o->round_timeout = 600;
    o->max_frame_bytes = FEDC_DEFAULT_MAX_FRAME;
    o->max_inflight_updates = 2;
    o->max_model_bytes = 16ull << 30;
    o->max_connections = 10000;
    o->handshake_timeout = 10;
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) && errno != EEXIST)
            return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create directory '%s': %s", buf,
                                  strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create directory '%s': %s", buf,
                              strerror(errno));
    return FEDC_OK;
}

fedc_server *fedc_server_create(const fedc_server_options *opt, char *err, size_t errlen)
{
    char host[256], port[16];
    if (!opt || fedc__parse_hostport(opt->listen, host, sizeof host, port, sizeof port, err, errlen))
        return NULL;
    if (opt->rounds == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "rounds must be at least 1"), NULL;
    if (opt->min_clients == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "min-clients must be at least 1"), NULL;
    if (!(opt->fraction_fit > 0 && opt->fraction_fit <= 1))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "fraction-fit must be in (0, 1]"), NULL;
    if (!(opt->fraction_evaluate >= 0 && opt->fraction_evaluate <= 1))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "fraction-evaluate must be in [0, 1]"), NULL;
    if (!(opt->round_timeout > 0))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "round-timeout must be positive"), NULL;
    if (opt->max_frame_bytes < FEDC_CHUNK_BYTES + 64)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "max frame size must be above 1 MiB"), NULL;
    if (opt->max_inflight_updates == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "max in-flight updates must be at least 1"),
               NULL;
    if (opt->target_accuracy > 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "target-accuracy must be at most 1"), NULL;

    fedc_server *s = calloc(1, sizeof *s);
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory"), NULL;
    s->opt = *opt;
    s->listen_addr = strdup(opt->listen);
    s->fit_config = fedc_config_create();
    s->slots = calloc(opt->max_inflight_updates, sizeof *s->slots);
    s->slot_busy = calloc(opt->max_inflight_updates, sizeof *s->slot_busy);
    if (!s->listen_addr || !s->fit_config || !s->slots || !s->slot_busy ||
        (opt->fit_config && fedc_config_merge(s->fit_config, opt->fit_config))) {
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto fail_nouv;
    }
    s->opt.listen = s->listen_addr;
    s->opt.fit_config = NULL;
    s->opt.initial_model = NULL;
    if (opt->out_dir) {
        s->out_dir = strdup(opt->out_dir);
        if (!s->out_dir || mkdir_p(opt->out_dir, err, errlen)) goto fail_nouv;
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.jsonl", opt->out_dir);
        s->metrics = fopen(path, "w");
        if (!s->metrics) {
            fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
            goto fail_nouv;
        }
    }
    s->opt.out_dir = s->out_dir;

    if (uv_loop_init(&s->loop)) {
        fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create the event loop");
        goto fail_nouv;
    }
    uv_tcp_init(&s->loop, &s->listener);
    s->listener.data = s;
    uv_timer_init(&s->loop, &s->stage_timer);
    s->stage_timer.data = s;
    uv_timer_init(&s->loop, &s->wait_timer);
    s->wait_timer.data = s;
    uv_timer_init(&s->loop, &s->progress_timer);
    s->progress_timer.data = s;
    uv_timer_init(&s->loop, &s->grace_timer);
    s->grace_timer.data = s;
    s->grace_open = 1;
    uv_async_init(&s->loop, &s->stop_async, on_stop_async);
    s->stop_async.data = s;
    s->loop_inited = 1;
    s->handles_open = 1;

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g) {
        fedc_set_error(err, errlen, FEDC_ERR_INVALID, "cannot resolve listen address '%s': %s", host,
                       gai_strerror(g));
        goto fail;
    }
    int r = uv_tcp_bind(&s->listener, res->ai_addr, 0);
    freeaddrinfo(res);
    if (!r) r = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (r) {
        fedc_set_error(err, errlen, r == UV_EADDRINUSE ? FEDC_ERR_ADDRINUSE : FEDC_ERR_IO,
                       "cannot listen on %s: %s", opt->listen, uv_strerror(r));
        goto fail;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (opt->initial_model) {
        fedc_params *p = fedc_params_clone(opt->initial_model);
        char why[FEDC_ERRMSG_MAX];
        if (!p) {
            fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (fedc__fedavg_init(&s->agg, p, 1, why, sizeof why)) {
            fedc_params_destroy(p);
            fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "cannot aggregate the initial model: %s", why);
            goto fail;
        }
        s->agg_ready = 1;
        s->model = blob_new(p, why, sizeof why);
        if (!s->model) {
            fedc_params_destroy(p);
            fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "%s", why);
            goto fail;
        }
    }
    return s;
fail:
fail_nouv:
    s->finished = 1;
    fedc_server_destroy(s);
    return NULL;
}

int fedc_server_port(const fedc_server *s)
{
    return s->port;
}
const fedc_params *fedc_server_model(const fedc_server *s)
{
    return s->model ? s->model->params : NULL;
}
const char *fedc_server_errmsg(const fedc_server *s)
{
    return s->errmsg;
}

void fedc_server_stop(fedc_server *s)
{
    if (s && !s->finished) uv_async_send(&s->stop_async);
}

int fedc_server_run(fedc_server *s)
{
    if (s->finished)
        return fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_INVALID, "server already ran");
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "listening on %s (port %d); waiting for %u clients", s->opt.listen,
             s->port, s->opt.min_clients);
    s->ph = PHASE_WAIT;
    s->running = 1;
    if (s->opt.wait_timeout > 0)
        uv_timer_start(&s->wait_timer, on_wait_timeout, (uint64_t)(s->opt.wait_timeout * 1000), 0);
    maybe_finish_stage(s); /* clients may have joined already (simulation) */
    uv_run(&s->loop, UV_RUN_DEFAULT);
    close_grace_timer(s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    s->finished = 1;
    if (s->rc == FEDC_OK) s->errmsg[0] = '\0';
    return s->rc;
}

void fedc_server_destroy(fedc_server *s)
{
    if (!s) return;
    if (s->loop_inited) {
        if (s->handles_open) {
            s->stopping = 1;
            for (node *n = s->nodes, *next; n; n = next) {
                next = n->next;
                node_close(n, NULL);
            }
            close_server_handles(s);
        }
        close_grace_timer(s);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    bury(s);
    blob_unref(s->model);
    if (s->agg_ready) fedc__fedavg_free(&s->agg);
    for (uint32_t i = 0; s->slots && i < s->opt.max_inflight_updates; i++) fedc_params_destroy(s->slots[i]);
    free(s->slots);
    free(s->slot_busy);
    free(s->vnodes);
    free(s->fits);
    free(s->evals);
    if (s->metrics) fclose(s->metrics);
    fedc_config_destroy(s->fit_config);
    free(s->listen_addr);
    free(s->out_dir);
    free(s);
}
