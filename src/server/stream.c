/* The server's reading of an update's tensors, the stream that follows a
 * FitRes or a GetParametersRes: each chunk is checked and folded into the
 * aggregate as it arrives, a bad update is rejected with no trace left in
 * the sums, DP clipping is done on arrival, and the end of an update
 * commits it or counts it as failed. The frame reader that feeds it is in
 * connection.c. */
#include "server/server_impl.h"

/* ---- the stream of tensors after FitRes / GetParametersRes ------------ */

/* Takes the chunks of n's update folded so far back out of the aggregate.
 * Tensors before stream_index are complete; the current one is folded up to
 * cur_checked elements. The staging buffer still holds every folded value. */
void fedc__srv_unfold_partial(node *n)
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
    fedc__srv_unfold_partial(n);
    if (n->sk == S_FIT) {
        if (n->waiting_slot) {
            /* It was paused for a buffer it no longer needs: read on. */
            fedc__srv_unlink_waiter(n);
            if (!n->is_virtual) fedc__srv_read_resume(n);
        }
        fedc__srv_release_slot(n);
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
void fedc__srv_on_tensor_header(node *n, const Fedc__V1__TensorHeader *h)
{
    fedc_server *s = n->srv;
    char why[FEDC_ERRMSG_MAX];
    if (fedc__tensor_header_check(h, why, sizeof why)) {
        fedc__srv_protocol_error(n, "%s", why);
        return;
    }
    n->expect_header = 0;
    n->cur_t = NULL;
    n->cur_nbytes = h->nbytes;
    n->cur_got = 0;
    n->cur_checked = 0;
    if (n->sk == S_GETPARAMS) {
        if (h->nbytes > s->opt.max_model_bytes - n->stream_bytes) {
            fedc__srv_protocol_error(n, "initial parameters exceed the limit of %llu bytes",
                                     (unsigned long long)s->opt.max_model_bytes);
            return;
        }
        int64_t shape[FEDC_MAX_DIMS];
        for (size_t d = 0; d < h->n_shape; d++) shape[d] = (int64_t)h->shape[d];
        if (fedc_params_add(n->stream_params, h->name, (fedc_dtype)h->dtype, (int)h->n_shape, shape, NULL,
                            &n->cur_t, why, sizeof why)) {
            fedc__srv_protocol_error(n, "%s", why);
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
            fedc__srv_stream_finished(n);
        else
            n->expect_header = 1;
    }
}

/* A DATA payload has fully arrived at cur_t->data + cur_got - len. */
void fedc__srv_on_data_done(node *n, uint32_t len)
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
            fedc__srv_stream_finished(n);
        else
            n->expect_header = 1;
    }
}

double fedc__srv_metric_or_nan(const fedc_config *c, const char *k1, const char *k2)
{
    double v;
    if (fedc_config_get_f64(c, k1, &v) == FEDC_OK && isfinite(v)) return v;
    if (k2 && fedc_config_get_f64(c, k2, &v) == FEDC_OK && isfinite(v)) return v;
    return NAN;
}

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

void fedc__srv_stream_finished(node *n)
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
            f->loss = fedc__srv_metric_or_nan(n->metrics, "train_loss", "loss");
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
    fedc__srv_release_slot(n);
    if (current && n->rejected) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: rejected update from %s (%s): %s",
                 (unsigned long long)s->round, n->id, n->peer, n->reject_reason);
        n->req = REQ_FIT; /* fedc__srv_request_failed() needs it */
        fedc__srv_request_failed(n, NULL);
        return;
    }
    n->req = REQ_NONE;
    fedc__srv_set_state(n, NODE_IDLE);
    /* A late answer makes its client idle again: a server waiting for
     * clients may now have enough. */
    if (current || s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
}

/* Pauses reading from n until a staging buffer is free. */
int fedc__srv_acquire_slot(node *n)
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

void fedc__srv_on_fit_res(node *n, const Fedc__V1__FitRes *r)
{
    fedc_server *s = n->srv;
    if (n->req != REQ_FIT || r->round != n->req_round) {
        fedc__srv_protocol_error(n, "unexpected fit_res for round %llu", (unsigned long long)r->round);
        return;
    }
    if (n->sa_index >= 0) {
        /* Its update in the clear would defeat the round's secure aggregation. */
        fedc__srv_protocol_error(n, "fit_res in a round with secure aggregation: the client must answer with "
                                    "secagg messages (docs/secagg.md)");
        return;
    }
    if (r->num_tensors > FEDC_MAX_MODEL_TENSORS) {
        fedc__srv_protocol_error(n, "fit_res announces %u tensors (at most %u)", r->num_tensors,
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
        fedc__srv_stream_finished(n);
        return;
    }
    if (n->remote_folded) {
        /* The tensors were checked and folded where the client ran: only
         * the outcome is decided here. */
        n->folding = !n->stale && !n->rejected;
        fedc__srv_stream_finished(n);
        return;
    }
    n->expect_header = 1;
    if (!n->stale && !n->rejected) {
        n->folding = 1;
        int got = fedc__srv_acquire_slot(n);
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
