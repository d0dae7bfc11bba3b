/* What a round's fit stage ends with: the strategy's hooks (fit_tensors,
 * select_fit, aggregate_fit, aggregate_all), the mean of the updates,
 * differential privacy's noise and accounting, and the next model. The
 * round driver that calls it is in server.c. */
#include "server/server_impl.h"

/* Makes s->fit, what this round's training requests carry: the model, then
 * the strategy's extra tensors (fit_tensors), with the accumulator laid out
 * for both. A failure ends the federation. */
int fedc__srv_prepare_fit(fedc_server *s)
{
    const fedc_strategy *st = s->opt.strategy;
    char err[FEDC_ERRMSG_MAX];
    fedc__srv_blob_unref(s->fit);
    s->fit = NULL;
    if (!st || !st->fit_tensors) {
        s->fit = s->model;
        s->model->refs++;
        return FEDC_OK;
    }
    const fedc_params *extra = NULL;
    fedc_params *p = NULL;
    int rc = st->fit_tensors(st->state, s->model->params, &extra, err, sizeof err);
    if (!rc && !extra) rc = fedc_set_error(err, sizeof err, FEDC_ERR_INVALID, "fit_tensors gave no tensors");
    if (!rc && !(p = fedc_params_clone(s->model->params)))
        rc = fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < fedc_params_count(extra); i++) {
        const fedc_tensor *t = fedc_params_at(extra, i);
        rc = fedc_params_add(p, t->name, t->dtype, t->ndim, t->shape, t->data, NULL, err, sizeof err);
    }
    if (!rc && s->fit_layout_set && s->agg.ntensors != fedc_params_count(p))
        rc = fedc_set_error(err, sizeof err, FEDC_ERR_SHAPE, "fit_tensors changed its layout");
    if (!rc && !s->fit_layout_set) {
        /* The first round: the sums take the extra tensors too. */
        fedc__fedavg_free(&s->agg);
        s->agg_ready = 0;
        rc = fedc__fedavg_init_on(&s->agg, p, 1, s->opt.device, err, sizeof err);
        s->agg_ready = rc == FEDC_OK;
        s->fit_layout_set = s->agg_ready;
    }
    if (!rc) {
        s->fit = fedc__srv_blob_new(p, err, sizeof err);
        if (!s->fit) rc = FEDC_ERR_NOMEM;
        p = NULL;
    }
    if (rc) {
        fedc_params_destroy(p);
        fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "strategy %s: %s", st->name, err);
        fedc__srv_begin_shutdown(s, rc);
    }
    return rc;
}

/* The epsilon of `steps` rounds at the accountant's q and z. */
double fedc__srv_dp_epsilon(const fedc_server *s, uint64_t steps)
{
    /* The distributed discrete Gaussian is accounted for round by round,
     * for the clients whose noise reached the sum (secure.c). */
    if (s->ddg_rdp) return fedc__srv_ddg_epsilon(s);
    double eps = NAN;
    char err[FEDC_ERRMSG_MAX];
    if (fedc_privacy_epsilon(s->dp_q, s->dp_z, steps, s->opt.dp.delta, NULL, 0, &eps, NULL, err, sizeof err))
        fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "privacy accounting failed: %s", err);
    return eps;
}

/* Lets the strategy's select_fit change the round's sample. all: the n
 * idle clients (any order); v: the *k sampled, in id order. On return v
 * holds the chosen ones in id order and *k their number. A failure ends
 * the federation. */
int fedc__srv_strategy_select(fedc_server *s, node **all, size_t n, node **v, size_t *k)
{
    const fedc_strategy *st = s->opt.strategy;
    char err[FEDC_ERRMSG_MAX] = "";
    const char **ids = malloc((n ? n : 1) * sizeof *ids);
    unsigned char *chosen = calloc(n ? n : 1, 1);
    int rc = ids && chosen ? FEDC_OK : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
    if (!rc) {
        qsort(all, n, sizeof *all, fedc__srv_cmp_node_id);
        for (size_t i = 0; i < *k; i++) {
            node **hit = bsearch(&v[i], all, n, sizeof *all, fedc__srv_cmp_node_id);
            if (hit) chosen[hit - all] = 1;
        }
        for (size_t i = 0; i < n; i++) ids[i] = all[i]->id;
        rc = st->select_fit(st->state, s->round, ids, n, chosen, err, sizeof err);
    }
    if (!rc) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (chosen[i]) v[m++] = all[i];
        *k = m;
    } else {
        fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "strategy %s: %s", st->name, err);
        fedc__srv_begin_shutdown(s, rc);
    }
    free(ids);
    free(chosen);
    return rc;
}

static int cmp_fit(const void *a, const void *b)
{
    return strcmp(((const fit_result *)a)->id, ((const fit_result *)b)->id);
}

/* The round as a strategy sees it; info->fits (NULL when out of memory)
 * is freed by the caller. */
static fedc_fit_info *round_info(const fedc_server *s, fedc_round_info *info)
{
    fedc_fit_info *f = calloc(s->nfits ? s->nfits : 1, sizeof *f);
    for (size_t i = 0; f && i < s->nfits; i++) {
        f[i].node_id = s->fits[i].id;
        f[i].num_examples = s->fits[i].n;
        f[i].weight = s->fits[i].weight;
        f[i].metrics = s->fits[i].metrics;
    }
    info->round = s->round;
    info->population = s->population;
    info->sampled = s->sampled;
    info->nfits = f ? s->nfits : 0;
    info->fits = f;
    return f;
}

/* Makes `next` (taken) the global model and starts the evaluation stage,
 * or, when the strategy failed with rc, ends the federation with its
 * message. */
static void use_next(fedc_server *s, fedc_params *next, int rc, const char *err)
{
    if (rc) {
        fedc_params_destroy(next);
        fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "strategy %s: %s", s->opt.strategy->name, err);
        fedc__srv_begin_shutdown(s, rc);
        return;
    }
    fedc__srv_set_model(s, next);
    if (s->stopping) return;
    fedc__srv_start_eval(s);
}

/* The end of a fit stage for a strategy that takes every update: the
 * updates kept by the reader go to aggregate_all in node-id order (s->fits
 * is sorted). A refusal of the strategy (FEDC_ERR_INVALID: too few updates
 * for its parameters) fails the round; any other failure ends the
 * federation. */
static void finish_fit_all(fedc_server *s)
{
    const fedc_strategy *st = s->opt.strategy;
    char err[FEDC_ERRMSG_MAX];
    size_t n = s->nfits;
    const fedc_params **updates = malloc((n ? n : 1) * sizeof *updates);
    uint64_t *weights = malloc((n ? n : 1) * sizeof *weights);
    fedc_params *next = fedc_params_clone(s->model->params);
    fedc_round_info info;
    fedc_fit_info *fi = round_info(s, &info);
    int rc = updates && weights && next && fi
                 ? FEDC_OK
                 : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        updates[i] = s->fits[i].update;
        weights[i] = s->fits[i].n;
        /* The reader keeps a copy of every update it accepts, or refuses it. */
        if (!updates[i])
            rc = fedc_set_error(err, sizeof err, FEDC_ERR_PROTOCOL,
                                "an accepted update was not kept (it was folded outside the server)");
    }
    if (!rc)
        rc = st->aggregate_all(st->state, &info, s->model->params, (const fedc_params *const *)updates,
                               weights, n, next, err, sizeof err);
    free(fi);
    free(updates);
    free(weights);
    fedc__srv_free_updates(s);
    if (rc == FEDC_ERR_INVALID) {
        fedc_params_destroy(next);
        s->rec.failed = 1;
        fedc_set_error(s->fail_reason, sizeof s->fail_reason, rc, "strategy %s: %s", st->name, err);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu failed: %s", (unsigned long long)s->round,
                 s->fail_reason);
        fedc__srv_finish_round(s);
        return;
    }
    use_next(s, next, rc, err);
}

/*
 * Central and client-clip DP: `mean` holds the unweighted mean of the n
 * accepted (clipped) models; it becomes x + (sum of the clipped updates +
 * N(0, (Z C)^2)) / m, with x the global model and m the expected number
 * of clients in a round (q N under Poisson sampling, the number sampled
 * otherwise), and the round is charged to the accountant. Local DP: the
 * clients noised their updates; the mean is used as it is.
 */
static int dp_release(fedc_server *s, fedc_params *mean, char *err, size_t errlen)
{
    const fedc_dp_options *dp = &s->opt.dp;
    if (s->opt.secagg.enabled) {
        /* The clients noised before masking (the distributed discrete
         * Gaussian, or local DP): the round was charged when it was
         * unmasked (secure.c) or started. */
        s->rec.epsilon = fedc__srv_dp_epsilon(s, s->dp_steps);
        return FEDC_OK;
    }
    if (dp->mode != FEDC_DP_LOCAL) {
        double m = s->opt.sampling == FEDC_SAMPLING_POISSON ? s->opt.fraction_fit * (double)s->population
                                                            : (double)s->sampled;
        double n = (double)s->ok, z = dp->noise_multiplier, count_sd = 0;
        if (!(m > 0))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no client was expected this round");
        if (dp->adaptive) {
            /* Part of the privacy goes to the count of unclipped updates:
             * the updates get the noise multiplier that leaves the round
             * a Gaussian mechanism of multiplier z as a whole. */
            count_sd = dp->clipped_count_stddev > 0 ? dp->clipped_count_stddev : fmax(m / 20, z);
            z = fedc_dp_adaptive_noise_multiplier(dp->noise_multiplier, count_sd);
            if (!isfinite(z))
                return fedc_set_error(
                    err, errlen, FEDC_ERR_INVALID,
                    "--dp-clipped-count-stddev %g is too small for --dp-noise-multiplier %g "
                    "(it must be above half of it)",
                    count_sd, dp->noise_multiplier);
        }
        double sigma = z * s->dp_clip;
        enum { CHUNK = 4096 };
        double *noise = malloc(CHUNK * sizeof *noise);
        if (!noise) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        for (size_t t = 0; t < fedc_params_count(mean); t++) {
            const float *x = fedc_params_at(s->model->params, t)->data;
            float *out = fedc_params_at(mean, t)->data;
            size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(mean, t));
            for (size_t at = 0; at < numel; at += CHUNK) {
                size_t k = numel - at < CHUNK ? numel - at : CHUNK;
                fedc_dp_normal(noise, k);
                for (size_t j = 0; j < k; j++) {
                    double sum = n * ((double)out[at + j] - (double)x[at + j]); /* of the clipped updates */
                    out[at + j] = (float)((double)x[at + j] + (sum + sigma * noise[j]) / m);
                }
            }
        }
        if (dp->adaptive) {
            /* The clip norm follows the target quantile of the norms, from
             * the count of unclipped updates, centred (b - 1/2: sensitivity
             * 1/2) and noised. */
            double unclipped = n - (double)s->dp_clipped;
            fedc_dp_normal(noise, 1);
            double frac = (unclipped - n / 2 + count_sd * noise[0]) / m + 0.5;
            s->dp_clip = fedc_dp_adaptive_clip(s->dp_clip, frac, dp->target_quantile, dp->clip_lr);
        }
        sodium_memzero(noise, CHUNK * sizeof *noise);
        free(noise);
        /* Local DP charged the round when the clients released. */
        s->dp_steps++;
        s->rec.epsilon = fedc__srv_dp_epsilon(s, s->dp_steps);
    }
    return FEDC_OK;
}

void fedc__srv_finish_fit(fedc_server *s)
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
    r->dp_clipped = s->dp_clipped;
    r->dp_clip = s->dp_clip;
    for (size_t i = 0; i < s->nfits; i++) {
        /* Record-level DP: each client reports what its records have spent. */
        double e;
        if (fedc_config_get_f64(s->fits[i].metrics, "epsilon_record", &e) == FEDC_OK && isfinite(e) &&
            !(e <= s->epsilon_record))
            s->epsilon_record = e;
    }
    r->epsilon_record = s->epsilon_record;
    r->epsilon = r->delta = NAN;
    if (s->opt.dp.mode != FEDC_DP_OFF) {
        /* What has been spent so far; a released round adds to it below. */
        r->delta = s->opt.dp.delta;
        r->epsilon = fedc__srv_dp_epsilon(s, s->dp_steps);
    }
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
        fedc_params_destroy(s->sa_mean);
        s->sa_mean = NULL;
        r->failed = 1;
        if (!s->fail_reason[0])
            snprintf(s->fail_reason, sizeof s->fail_reason,
                     "only %u of %u sampled clients returned a valid update; a round needs %u", s->ok,
                     s->sampled, s->opt.min_clients);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu failed: %s", (unsigned long long)s->round,
                 s->fail_reason);
        fedc__srv_finish_round(s);
        return;
    }
    char err[FEDC_ERRMSG_MAX];
    const fedc_strategy *st = s->opt.strategy;
    fedc_params *next = s->sa_mean; /* secure aggregation's weighted mean (secure.c) */
    s->sa_mean = NULL;
    int rc = FEDC_OK;
    if (!next) {
        rc = s->virt.collect ? s->virt.collect(s->virt.ctx, &s->agg, err, sizeof err) : FEDC_OK;
        if (rc) {
            fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "%s", err);
            fedc__srv_begin_shutdown(s, rc);
            return;
        }
        if (st && (st->flags & FEDC_STRATEGY_ALL_UPDATES)) {
            finish_fit_all(s);
            return;
        }
        /* The mean has the layout of what the clients were sent (with a
         * strategy's extra tensors after the model's). */
        next = fedc_params_clone(s->fit->params);
        rc = next ? fedc__fedavg_finalize(&s->agg, next, err, sizeof err) : FEDC_ERR_NOMEM;
        if (rc) {
            fedc_params_destroy(next);
            fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "cannot finalise the aggregate: %s",
                           next ? err : "out of memory");
            fedc__srv_begin_shutdown(s, rc);
            return;
        }
    }
    if (s->opt.dp.mode != FEDC_DP_OFF) {
        rc = dp_release(s, next, err, sizeof err);
        if (rc) {
            fedc_params_destroy(next);
            fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "differential privacy: %s", err);
            fedc__srv_begin_shutdown(s, rc);
            return;
        }
    }
    if (st) {
        /* The strategy turns the weighted mean into the next model. */
        fedc_params *mean = next;
        fedc_round_info info;
        fedc_fit_info *fi = round_info(s, &info);
        next = fedc_params_clone(s->model->params);
        rc = next && fi ? st->aggregate_fit(st->state, &info, s->fit->params, mean, next, err, sizeof err)
                        : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
        free(fi);
        fedc_params_destroy(mean);
    }
    use_next(s, next, rc, err);
}
