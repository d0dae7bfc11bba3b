/* The server's connection layer: accepting clients, the incremental frame
 * reader, tensor streams folded into the aggregate as they arrive, writes,
 * polite closes, and simulated clients fed through the same reader.
 *
 * Reading is zero-copy for tensor data: the allocation callback hands libuv
 * the exact place the next bytes belong (a frame header, a message buffer,
 * or the receiving tensor itself), so a DATA payload lands directly in the
 * staging buffer of the update it belongs to. */
#include "server/server_impl.h"

static void node_resume(node *n);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void unfold_partial(node *n);

/* ---- models ---------------------------------------------------------- */

model_blob *fedc__srv_blob_new(fedc_params *p, char *err, size_t errlen)
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

void fedc__srv_blob_unref(model_blob *b)
{
    if (!b || --b->refs > 0) return;
    fedc_params_destroy(b->params);
    free(b->bufs);
    free(b->hdrmem);
    free(b);
}

/* BLAKE2b-256 of the model's bytes, as hex: logged so runs can be compared. */
void fedc__srv_model_digest(const fedc_params *p, char hex[65])
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

void fedc__srv_set_state(node *n, node_state st)
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
            fedc__srv_node_close(w->n, NULL);
    }
    free(w->frame);
    free(w->bufs);
    fedc__srv_blob_unref(w->blob);
    free(w);
    (void)status; /* a failed write shows up as a read error and closes the node */
}

/* Sends message m, followed by the model in `blob` if non-NULL. */
int fedc__srv_node_send(node *n, const fedc__msg *m, model_blob *blob, int close_after)
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
        if (close_after) fedc__srv_node_close(n, NULL);
        return FEDC_OK;
    }
    int r = uv_write(&w->req, (uv_stream_t *)&n->tcp, w->bufs, nb, on_write);
    if (r) {
        free(w->frame);
        free(w->bufs);
        fedc__srv_blob_unref(w->blob);
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
    if (fedc__srv_node_send(n, &m, NULL, 1)) fedc__srv_node_close(n, NULL);
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
void fedc__srv_request_failed(node *n, const char *why)
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
    if (!n->closing && !n->retired) fedc__srv_set_state(n, NODE_IDLE);
    if (current) fedc__srv_maybe_finish_stage(s);
}

/* Takes n out of the federation at once: its partial update out of the
 * aggregate, its staging buffer back, its request counted as failed, and
 * never sampled again. fedc__srv_node_close() finishes the job when the connection
 * ends. */
static void retire(node *n, const char *why)
{
    if (n->closing) return;
    n->retired = 1;
    /* Not idle from now on, so that the stage fedc__srv_request_failed() may finish
     * cannot sample it again. */
    fedc__srv_set_state(n, NODE_BUSY);
    if (n->waiting_slot) unlink_waiter(n);
    unfold_partial(n);
    release_slot(n);
    fedc__srv_request_failed(n, why);
}

void fedc__srv_node_close(node *n, const char *why)
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
    fedc__srv_request_failed(n, why ? why : "disconnected");
    for (node **pp = &s->nodes; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    s->nconnections--;
    if (!n->is_virtual) s->nsockets--;
    if (n->state == NODE_IDLE && s->nidle) s->nidle--;
    n->closing = 2;
    if (n->is_virtual) {
        /* Code up the stack may still hold n (a close can come from inside
         * the reader): it is freed when control is back at the top. */
        if (s->vnodes && n->vindex < s->nvirtual) s->vnodes[n->vindex] = NULL;
        n->next = s->graveyard;
        s->graveyard = n;
        if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
        return;
    }
    if (n->timer_open) {
        uv_timer_stop(&n->handshake_timer);
        uv_close((uv_handle_t *)&n->handshake_timer, on_timer_closed);
    }
    uv_close((uv_handle_t *)&n->tcp, on_node_closed);
    if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
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
void fedc__srv_abandon_update(node *n)
{
    unfold_partial(n);
    if (n->sk == S_FIT) {
        if (n->waiting_slot) {
            /* It was paused for a buffer it no longer needs: read on. */
            unlink_waiter(n);
            if (!n->is_virtual) uv_read_start((uv_stream_t *)&n->tcp, fedc__srv_on_alloc, on_read);
        }
        release_slot(n);
        n->cur_t = NULL;
        if (n->rs == R_DATA) n->data_dst = NULL;
    }
}

static void reject_update(node *n, const char *why)
{
    fedc__srv_abandon_update(n);
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

void fedc__srv_set_model(fedc_server *s, fedc_params *p);

/* Makes room for one more fit result if it can; s->nfits < s->capfits
 * says whether there is. */
static void reserve_fit(fedc_server *s)
{
    if (s->nfits < s->capfits) return;
    size_t nc = s->capfits ? 2 * s->capfits : 16;
    fit_result *nf = realloc(s->fits, nc * sizeof *nf);
    if (nf) {
        s->fits = nf;
        s->capfits = nc;
    }
}

/* Central and client-clip DP: an update whose difference from the global
 * model is longer than the clip norm was folded as it arrived; it is taken
 * back out (exactly) and folded again, clipped. The clipped values lie
 * between the global model's and the update's, so they pass the checks
 * those passed; should one not, the update is rejected with no trace. */
static void dp_clip(node *n)
{
    fedc_server *s = n->srv;
    const fedc_params *g = s->model->params;
    fedc_params *u = n->stream_params;
    size_t nt = fedc_params_count(g);
    double sq = 0;
    for (size_t t = 0; t < nt; t++) {
        const float *gv = fedc_params_at(g, t)->data, *uv = fedc_params_at(u, t)->data;
        for (size_t j = 0; j < s->agg.numel[t]; j++) {
            double d = (double)uv[j] - (double)gv[j];
            sq += d * d;
        }
    }
    double norm = sqrt(sq), clip = s->dp_clip;
    if (norm <= clip) return;
    double scale = clip / norm;
    for (size_t t = 0; t < nt; t++) {
        float *uv = fedc_params_at(u, t)->data;
        const float *gv = fedc_params_at(g, t)->data;
        fedc__fedavg_unfold(&s->agg, t, 0, uv, s->agg.numel[t], n->weight);
        for (size_t j = 0; j < s->agg.numel[t]; j++)
            uv[j] = (float)((double)gv[j] + scale * ((double)uv[j] - (double)gv[j]));
    }
    char why[FEDC_ERRMSG_MAX];
    for (size_t t = 0; t < nt; t++) {
        if (!fedc__fedavg_check_fold(&s->agg, t, 0, fedc_params_at(u, t)->data, s->agg.numel[t], n->weight,
                                     why, sizeof why))
            continue;
        while (t-- > 0)
            fedc__fedavg_unfold(&s->agg, t, 0, fedc_params_at(u, t)->data, s->agg.numel[t], n->weight);
        n->folding = 0; /* nothing of it is left in the sums */
        reject_update(n, why);
        return;
    }
    s->dp_clipped++;
}

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
        if (!n->retired) fedc__srv_set_state(n, NODE_IDLE);
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
            fedc__srv_maybe_finish_stage(s);
            return;
        }
        char hex[65];
        fedc__srv_model_digest(p, hex);
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT,
                 "initial parameters from %s: %zu tensors, %zu bytes, blake2b-256 %s", n->id,
                 fedc_params_count(p), fedc_params_nbytes(p), hex);
        fedc__srv_set_model(s, p);
        n->result_recorded = 1;
        if (s->stage_pending) s->stage_pending--;
        fedc__srv_maybe_finish_stage(s);
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
    const fedc_strategy *st = s->opt.strategy;
    int keep_all = st && (st->flags & FEDC_STRATEGY_ALL_UPDATES);
    fedc_params *whole = NULL;
    if (current && !n->rejected && keep_all) {
        /* The strategy needs the update itself, which was checked as it
         * was folded: keep a copy (the staging buffer goes back), or refuse
         * the update, taking it back out of the sums. */
        reserve_fit(s);
        if (n->remote_folded) {
            /* Folded on another MPI rank: there is no update here to keep,
             * and the rank takes it back out when told it was not kept. */
            n->folding = 0;
            reject_update(n, "the strategy needs the whole update, which was folded elsewhere");
        } else {
            whole = s->nfits < s->capfits && n->stream_params ? fedc_params_clone(n->stream_params) : NULL;
            if (!whole) reject_update(n, "out of memory to keep the update");
        }
    }
    if (current && !n->rejected && fedc__srv_dp_clips(s) && !n->remote_folded) dp_clip(n);
    n->folding = 0;
    if (current && !n->rejected) {
        fedc__fedavg_commit(&s->agg, n->weight);
        reserve_fit(s);
        if (s->nfits < s->capfits) {
            fit_result *f = &s->fits[s->nfits++];
            snprintf(f->id, sizeof f->id, "%s", n->id);
            f->n = n->num_examples;
            f->weight = n->weight;
            f->loss = metric_or_nan(n->metrics, "train_loss", "loss");
            f->metrics = fedc_config_create();
            if (f->metrics && fedc_config_merge(f->metrics, n->metrics)) {
                fedc_config_destroy(f->metrics);
                f->metrics = NULL;
            }
            f->update = whole;
        }
        s->ok++;
        n->result_recorded = 1;
        if (s->stage_pending) s->stage_pending--;
    }
    release_slot(n);
    if (current && n->rejected) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: rejected update from %s (%s): %s",
                 (unsigned long long)s->round, n->id, n->peer, n->reject_reason);
        n->req = REQ_FIT; /* fedc__srv_request_failed() needs it */
        fedc__srv_request_failed(n, NULL);
        return;
    }
    n->req = REQ_NONE;
    fedc__srv_set_state(n, NODE_IDLE);
    if (current) fedc__srv_maybe_finish_stage(s);
}

/* ---- messages ---------------------------------------------------------- */

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
    if (!h->node_id || !fedc__node_id_valid(h->node_id)) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: invalid node id", n->peer);
        send_error_and_close(n, "invalid node id: 1 to 128 characters of [A-Za-z0-9._:-]");
        return;
    }
    if (h->max_frame_bytes != 0 && h->max_frame_bytes < FEDC_CHUNK_BYTES) {
        send_error_and_close(n, "max_frame_bytes must be at least 1048576");
        return;
    }
    /* A simulated client's id differs from every other simulated client's
     * (the simulator numbers them), so only clients on sockets can clash
     * with it: with none, its hello skips a scan that would make joining N
     * simulated clients cost O(N^2). */
    for (node *o = n->is_virtual && s->nsockets == 0 ? NULL : s->nodes; o; o = o->next)
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
    if (fedc__srv_node_send(n, &m, NULL, 0)) {
        fedc__srv_node_close(n, "cannot send welcome");
        return;
    }
    fedc__srv_set_state(n, NODE_IDLE);
    /* A simulation's thousands of virtual clients join silently. */
    fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_INFO, LOG_COMPONENT, "client %s joined from %s (%s)",
             n->id, n->peer, h->software ? h->software : "");
    if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
}

/* Pauses reading from n until a staging buffer is free. */
static int acquire_slot(node *n)
{
    fedc_server *s = n->srv;
    for (uint32_t i = 0; i < s->opt.max_inflight_updates; i++) {
        if (s->slot_busy[i]) continue;
        if (!s->slots[i]) {
            s->slots[i] = fedc_params_clone(s->fit->params);
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
    n->num_examples = r->num_examples;
    n->weight = (double)r->num_examples;
    n->stale = !(n->req_round == s->round && s->ph == PHASE_FIT && !n->result_recorded);
    fedc_config_clear(n->metrics);
    fedc__config_from_kv(n->metrics, r->metrics, r->n_metrics);
    char why[FEDC_ERRMSG_MAX];
    if (!n->stale) {
        const fedc_strategy *st = s->opt.strategy;
        size_t want = fedc_params_count(s->fit->params);
        if (r->num_tensors != want) {
            if (want == fedc_params_count(s->model->params))
                snprintf(why, sizeof why, "it sent %u tensors, the model has %zu", r->num_tensors, want);
            else
                snprintf(why, sizeof why, "it sent %u tensors; strategy %s needs the model's %zu and its %zu",
                         r->num_tensors, st->name, fedc_params_count(s->model->params),
                         want - fedc_params_count(s->model->params));
            reject_update(n, why);
        } else if (fedc__fedavg_check_weight(&s->agg, n->weight, why, sizeof why)) {
            reject_update(n, why);
        } else if (s->opt.dp.mode != FEDC_DP_OFF) {
            /* DP's mean is unweighted: a client's weight must not depend
             * on its data, or one client could outweigh the bound. */
            n->weight = 1.0;
        } else if (st && st->fit_weight) {
            /* The strategy weighs the update by what its FitRes says. */
            double w = 0;
            char serr[FEDC_ERRMSG_MAX] = "";
            if (st->fit_weight(st->state, s->round, r->num_examples, n->metrics, &w, serr, sizeof serr)) {
                snprintf(why, sizeof why, "strategy %s: %s", st->name, serr);
                reject_update(n, why);
            } else {
                n->weight = fedc__fedavg_round_weight(w);
                if (fedc__fedavg_check_weight(&s->agg, n->weight, serr, sizeof serr)) {
                    snprintf(why, sizeof why, "strategy %s gave it a bad weight: %s", st->name, serr);
                    reject_update(n, why);
                }
            }
        }
    }
    if (n->stream_total == 0) {
        stream_finished(n);
        return;
    }
    if (n->remote_folded) {
        /* The tensors were checked and folded where the client ran: only
         * the outcome is decided here. */
        n->folding = !n->stale && !n->rejected;
        stream_finished(n);
        return;
    }
    n->expect_header = 1;
    if (!n->stale && !n->rejected) {
        n->folding = 1;
        int got = acquire_slot(n);
        if (got < 0) {
            fedc__srv_node_close(n, "out of memory for an update buffer");
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
            fedc__srv_node_close(n, "out of memory");
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
                fedc__srv_request_failed(n, "evaluation result with a non-finite loss or no examples");
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
        fedc__srv_set_state(n, NODE_IDLE);
        if (current) fedc__srv_maybe_finish_stage(s);
        break;
    }
    case FEDC__V1__MESSAGE__BODY_FAILURE:
        if (n->req == REQ_NONE) {
            protocol_error(n, "failure message with no request pending");
            return;
        }
        fedc__srv_request_failed(n, m->failure->reason && m->failure->reason[0] ? m->failure->reason
                                                                                : "client failure");
        break;
    case FEDC__V1__MESSAGE__BODY_ERROR:
        fedc__srv_node_close(n, m->error->reason && m->error->reason[0] ? m->error->reason
                                                                        : "client reported an error");
        break;
    default: protocol_error(n, "unexpected %s message", fedc__msg_name(m)); break;
    }
}

/* ---- reading --------------------------------------------------------- */

void fedc__srv_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
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
                fedc__srv_node_close(n, "out of memory");
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
        if (nread < 0) fedc__srv_node_close(n, NULL);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF)
            fedc__srv_node_close(n, (n->req != REQ_NONE || n->sk != S_NONE) ? "connection closed mid-request"
                                                                            : NULL);
        else {
            char why[128];
            snprintf(why, sizeof why, "read error: %s", uv_strerror((int)nread));
            fedc__srv_node_close(n, why);
        }
        return;
    }
    fedc__srv_consume(n, (size_t)nread);
}

/* Advances the frame reader by nread bytes that have just been placed where
 * fedc__srv_on_alloc() said. */
void fedc__srv_consume(node *n, size_t nread)
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
    fedc__srv_node_close(t->data, NULL);
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
        fedc__srv_node_close(n, NULL);
        return;
    }
    n->draining = 1;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&n->tcp, on_shutdown_done)) {
        free(req);
        fedc__srv_node_close(n, NULL);
        return;
    }
    uv_timer_stop(&n->handshake_timer);
    uv_timer_start(&n->handshake_timer, on_drain_timeout, 5000, 0);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    node *n = t->data;
    if (n->state == NODE_HANDSHAKE) fedc__srv_node_close(n, "no hello within the handshake timeout");
}

void fedc__srv_on_connection(uv_stream_t *server, int status)
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
    s->nsockets++;
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
    uv_read_start((uv_stream_t *)&n->tcp, fedc__srv_on_alloc, on_read);
}

static void node_resume(node *n)
{
    if (acquire_slot(n) != 1) {
        fedc__srv_node_close(n, "out of memory for an update buffer");
        return;
    }
    if (n->is_virtual)
        fedc__srv_feed_pending(n);
    else
        uv_read_start((uv_stream_t *)&n->tcp, fedc__srv_on_alloc, on_read);
}
