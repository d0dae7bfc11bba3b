/* The server's round driver and public API: waiting for clients, sampling,
 * the stages of a round (fit, evaluate), metrics, and shutting down. The
 * end of the fit stage (the strategy's hooks, the mean, DP) is in
 * aggregate.c; connections and the frame reader are in connection.c. */
#include <sys/resource.h>

#include "net/tls.h"
#include "server/checkpoint.h"
#include "server/server_impl.h"

static void start_round(fedc_server *s);

/* Drops what the fit results hold: the whole updates kept for an
 * all-updates strategy, and the metrics. */
void fedc__srv_free_updates(fedc_server *s)
{
    for (size_t i = 0; i < s->nfits; i++) {
        fedc_params_destroy(s->fits[i].update);
        s->fits[i].update = NULL;
        fedc_config_destroy(s->fits[i].metrics);
        s->fits[i].metrics = NULL;
    }
}

/* ---- the round driver ------------------------------------------------- */

int fedc__srv_cmp_node_id(const void *a, const void *b)
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
    qsort(v, n, sizeof *v, fedc__srv_cmp_node_id);
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
    qsort(v, k < n ? k : n, sizeof *v, fedc__srv_cmp_node_id);
}

void fedc__srv_set_model(fedc_server *s, fedc_params *p)
{
    char err[FEDC_ERRMSG_MAX];
    if (!s->agg_ready) {
        int rc = fedc__fedavg_init_on(&s->agg, p, 1, s->opt.device, err, sizeof err);
        if (rc) {
            fedc_params_destroy(p);
            if (rc != FEDC_ERR_DEVICE && rc != FEDC_ERR_NOMEM) rc = FEDC_ERR_UNSUPPORTED;
            fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "cannot aggregate this model: %s", err);
            fedc__srv_begin_shutdown(s, rc);
            return;
        }
        s->agg_ready = 1;
    }
    model_blob *b = fedc__srv_blob_new(p, err, sizeof err);
    if (!b) {
        fedc_params_destroy(p);
        fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_NOMEM, "%s", err);
        fedc__srv_begin_shutdown(s, FEDC_ERR_NOMEM);
        return;
    }
    fedc__srv_blob_unref(s->model);
    s->model = b;
}

static void send_request(fedc_server *s, node *n, req_kind kind)
{
    fedc_config *cfg = fedc_config_create();
    fedc__kvbuf kv = {0};
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    Fedc__V1__FitIns fi = FEDC__V1__FIT_INS__INIT;
    Fedc__V1__EvaluateIns ei = FEDC__V1__EVALUATE_INS__INIT;
    Fedc__V1__GetParametersIns gi = FEDC__V1__GET_PARAMETERS_INS__INIT;
    Fedc__V1__SecAggSetup su = FEDC__V1__SEC_AGG_SETUP__INIT;
    int rc = cfg ? fedc_config_merge(cfg, s->fit_config) : FEDC_ERR_NOMEM;
    if (!rc && kind != REQ_GETPARAMS)
        rc = fedc_config_set_i64(
            cfg, "seed", (int64_t)(fedc_seed_derive(s->opt.seed, s->round, fedc_hash_string(n->id)) >> 1));
    if (!rc && kind == REQ_FIT && s->opt.strategy && s->opt.strategy->configure_fit)
        rc = s->opt.strategy->configure_fit(s->opt.strategy->state, s->round, cfg);
    if (!rc && kind == REQ_FIT && s->opt.dp.mode != FEDC_DP_OFF) {
        /* The clients' part of the DP mode. */
        rc = fedc_config_set_str(cfg, "dp", fedc_dp_mode_name(s->opt.dp.mode));
        if (!rc && s->opt.dp.mode != FEDC_DP_CENTRAL) rc = fedc_config_set_f64(cfg, "dp_clip", s->dp_clip);
        if (!rc && s->opt.dp.mode == FEDC_DP_LOCAL)
            rc = fedc_config_set_f64(cfg, "dp_noise_multiplier", s->opt.dp.noise_multiplier);
    }
    if (!rc && kind == REQ_EVAL && s->opt.strategy && s->opt.strategy->configure_evaluate)
        rc = s->opt.strategy->configure_evaluate(s->opt.strategy->state, s->round, cfg);
    if (!rc) rc = fedc__kvbuf_init(&kv, cfg);
    if (rc) {
        fedc_config_destroy(cfg);
        fedc__srv_node_close(n, "out of memory");
        return;
    }
    model_blob *blob = NULL;
    if (kind == REQ_FIT) {
        fi.round = s->round;
        fi.config = kv.ptrs;
        fi.n_config = kv.n;
        fi.num_tensors = (uint32_t)fedc_params_count(s->fit->params);
        if (s->sa && n->sa_index >= 0) {
            const fedc__sa_config *sc = fedc__sa_server_config(s->sa);
            su.index = (uint32_t)n->sa_index;
            su.num_clients = s->sa_n;
            su.neighbours = sc->k;
            su.threshold = sc->t;
            su.graph_seed.data = s->sa_graph_seed;
            su.graph_seed.len = sizeof s->sa_graph_seed;
            su.clip_range = s->opt.secagg.range;
            su.bits = s->sa_bits;
            su.max_weight = s->opt.secagg.max_weight;
            su.dim = sc->dim;
            if (s->sa_ddg) {
                su.ddg_clip = s->opt.dp.clip;
                su.ddg_gamma = s->sa_ddg_gamma;
                su.ddg_local_stddev = s->sa_ddg_stddev;
                su.ddg_beta = 0.6065306597126334; /* exp(-0.5), as secure.c */
                su.ddg_rotation_seed.data = s->sa_ddg_seed;
                su.ddg_rotation_seed.len = sizeof s->sa_ddg_seed;
            }
            fi.secagg = &su;
        }
        m.body_case = FEDC__V1__MESSAGE__BODY_FIT_INS;
        m.fit_ins = &fi;
        blob = s->fit;
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
    fedc__srv_set_state(n, NODE_BUSY);
    s->stage_pending++;
    rc = fedc__srv_node_send(n, &m, blob, 0);
    fedc__kvbuf_free(&kv);
    fedc_config_destroy(cfg);
    if (rc) fedc__srv_node_close(n, "cannot send request");
}

static void start_stage_timer(fedc_server *s)
{
    uv_timer_start(&s->stage_timer, fedc__srv_on_stage_timeout, (uint64_t)(s->opt.round_timeout * 1000), 0);
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
    fedc__srv_begin_shutdown(s, FEDC_ERR_TIMEOUT);
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
        fedc__srv_begin_shutdown(s, FEDC_ERR_NOMEM);
        return;
    }
    if (n < s->opt.min_clients) {
        free(v);
        enter_wait(s, n);
        return;
    }
    uv_timer_stop(&s->wait_timer);
    /* Under --secagg with --dp client-clip the check needs the round's
     * sample: fedc__srv_secagg_prepare() makes it. */
    if (s->opt.dp.mode != FEDC_DP_OFF && s->opt.dp.target_epsilon > 0 &&
        !(s->opt.secagg.enabled && s->opt.dp.mode == FEDC_DP_CLIENT_CLIP)) {
        double next = fedc__srv_dp_epsilon(s, s->dp_steps + 1);
        if (!(next <= s->opt.dp.target_epsilon)) {
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT,
                     "privacy budget: stopping before round %llu, which would bring epsilon to %.6f, above "
                     "--target-epsilon %g (spent so far: %.6f at delta %g)",
                     (unsigned long long)s->round + 1, next, s->opt.dp.target_epsilon,
                     fedc__srv_dp_epsilon(s, s->dp_steps), s->opt.dp.delta);
            free(v);
            fedc__srv_begin_shutdown(s, FEDC_OK);
            return;
        }
    }
    if (fedc__srv_prepare_fit(s)) {
        free(v);
        return;
    }
    s->round++;
    s->dp_clipped = 0;
    /* Local DP: the sampled clients release their noised updates whatever
     * becomes of the round. */
    if (s->opt.dp.mode == FEDC_DP_LOCAL) s->dp_steps++;
    s->round_start = fedc_now();
    s->round_sent0 = s->bytes_sent;
    s->round_received0 = s->bytes_received;
    s->ok = s->failed = 0;
    fedc__srv_free_updates(s);
    s->nfits = s->nevals = 0;
    s->fail_reason[0] = '\0';
    fedc_rng rng;
    fedc_rng_seed(&rng, fedc_seed_derive(s->opt.seed, s->round, 0x666974 /* "fit" */));
    const fedc_strategy *st = s->opt.strategy;
    node **all = NULL;
    if (st && st->select_fit) {
        /* The sampling below reorders v: the strategy chooses among all. */
        all = malloc(n * sizeof *all);
        if (!all) {
            free(v);
            fedc__srv_begin_shutdown(s, FEDC_ERR_NOMEM);
            return;
        }
        memcpy(all, v, n * sizeof *all);
    }
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
    int changed = 0; /* the strategy made the final choice */
    if (all) {
        int src = fedc__srv_strategy_select(s, all, n, v, &k);
        free(all);
        if (src) {
            free(v);
            return;
        }
        changed = 1; /* what remains is the strategy's choice */
    }
    s->population = (uint32_t)n;
    s->sampled = (uint32_t)k;
    s->ph = PHASE_FIT;
    s->stage_pending = 0;
    fedc__fedavg_reset(&s->agg, k ? k : 1);
    char err[FEDC_ERRMSG_MAX];
    int arc = fedc__fedavg_status(&s->agg, err, sizeof err);
    if (arc) {
        /* Only a device accumulator can fail here (the GPU was lost). */
        free(v);
        fedc_set_error(s->errmsg, sizeof s->errmsg, arc, "aggregation failed: %s", err);
        fedc__srv_begin_shutdown(s, arc);
        return;
    }
    if (k < s->opt.min_clients) {
        snprintf(s->fail_reason, sizeof s->fail_reason, "%s %zu clients; a round needs %u",
                 changed ? "the strategy chose" : "poisson sampling drew", k, s->opt.min_clients);
        free(v);
        fedc__srv_maybe_finish_stage(s);
        return;
    }
    if (s->opt.secagg.enabled && fedc__srv_secagg_prepare(s, v, k)) {
        /* The round fails with the reason in s->fail_reason. */
        free(v);
        fedc__srv_maybe_finish_stage(s);
        return;
    }
    for (size_t i = 0; i < k; i++) send_request(s, v[i], REQ_FIT);
    free(v);
    start_stage_timer(s);
    if (s->opt.on_progress && s->opt.progress_interval > 0) {
        uint64_t ms = (uint64_t)(s->opt.progress_interval * 1000);
        uv_timer_start(&s->progress_timer, on_progress_timer, ms, ms);
    }
    fedc__srv_maybe_finish_stage(s);
}

static int cmp_eval(const void *a, const void *b)
{
    return strcmp(((const eval_result *)a)->id, ((const eval_result *)b)->id);
}

static void central_work_cb(uv_work_t *w)
{
    fedc_server *s = w->data;
    const fedc_strategy *st = s->opt.strategy;
    s->central_err[0] = '\0';
    s->central_loss = s->central_acc = NAN;
    if (st && st->evaluate)
        s->central_rc = st->evaluate(st->state, s->round, s->model->params, &s->central_loss, &s->central_acc,
                                     s->central_err, sizeof s->central_err);
    else
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
    if (!s->stopping) fedc__srv_maybe_finish_stage(s);
}

void fedc__srv_start_eval(fedc_server *s)
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
    if (s->opt.central_eval || (s->opt.strategy && s->opt.strategy->evaluate)) {
        s->central_running = 1;
        s->central_work.data = s;
        if (uv_queue_work(&s->loop, &s->central_work, central_work_cb, central_after_cb))
            s->central_running = 0;
    }
    if (k > 0) start_stage_timer(s);
    fedc__srv_maybe_finish_stage(s);
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
    if (s->opt.dp.mode != FEDC_DP_OFF) {
        if (isfinite(r->epsilon))
            cJSON_AddNumberToObject(o, "epsilon", r->epsilon);
        else
            cJSON_AddNullToObject(o, "epsilon");
        cJSON_AddNumberToObject(o, "delta", r->delta);
        cJSON_AddNumberToObject(o, "dp_clipped", r->dp_clipped);
        cJSON_AddNumberToObject(o, "dp_clip", r->dp_clip);
    }
    if (isfinite(r->epsilon_record)) cJSON_AddNumberToObject(o, "epsilon_record", r->epsilon_record);
    char *line = cJSON_PrintUnformatted(o);
    if (line) {
        fprintf(s->metrics, "%s\n", line);
        fflush(s->metrics);
        free(line);
    }
    cJSON_Delete(o);
}

/* After round s->round: ends the federation when the target accuracy was
 * reached or the cap on rounds is met (1), else 0. */
static int end_if_over(fedc_server *s)
{
    if (s->target_reached) {
        fedc__srv_begin_shutdown(s, FEDC_OK);
        return 1;
    }
    if (s->round < s->opt.rounds) return 0;
    if (s->opt.target_accuracy > 0) {
        fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_NOTREACHED,
                       "target accuracy %.4f not reached in %llu rounds", s->opt.target_accuracy,
                       (unsigned long long)s->opt.rounds);
        fedc__srv_begin_shutdown(s, FEDC_ERR_NOTREACHED);
    } else {
        fedc__srv_begin_shutdown(s, FEDC_OK);
    }
    return 1;
}

void fedc__srv_finish_round(fedc_server *s)
{
    uv_timer_stop(&s->stage_timer);
    fedc_round_record *r = &s->rec;
    const fedc_strategy *st = s->opt.strategy;
    if (!r->failed && s->nevals && st && st->aggregate_evaluate) {
        qsort(s->evals, s->nevals, sizeof *s->evals, cmp_eval);
        char err[FEDC_ERRMSG_MAX] = "";
        fedc_eval_info *e = malloc(s->nevals * sizeof *e);
        int rc = e ? FEDC_OK : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
        for (size_t i = 0; e && i < s->nevals; i++)
            e[i] = (fedc_eval_info){s->evals[i].id, s->evals[i].n, s->evals[i].loss, s->evals[i].acc};
        if (!rc)
            rc = st->aggregate_evaluate(st->state, s->round, e, s->nevals, &r->fed_eval_loss,
                                        &r->fed_eval_accuracy, err, sizeof err);
        free(e);
        if (rc) {
            fedc_set_error(s->errmsg, sizeof s->errmsg, rc, "strategy %s: %s", st->name, err);
            fedc__srv_begin_shutdown(s, rc);
            return;
        }
    } else if (!r->failed) {
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
    }
    /* The metrics line first: a crash between the two leaves a line that a
     * resume drops, never a round without its line. */
    fedc__srv_write_checkpoint(s);
    if (end_if_over(s)) return;
    start_round(s);
}

void fedc__srv_on_stage_timeout(uv_timer_t *t)
{
    fedc_server *s = t->data;
    char why[128];
    if (s->sa && fedc__sa_server_stage(s->sa) > FEDC__SA_STAGE_ADVERTISE)
        snprintf(why, sizeof why, "no answer within the secure-aggregation stage timeout (%g s)",
                 s->opt.secagg.stage_timeout);
    else
        snprintf(why, sizeof why, "no result within the round timeout (%g s)", s->opt.round_timeout);
    /* Count the missing results as failures but keep the clients: a late
     * answer is read and dropped, and the client is sampled again after. */
    for (node *n = s->nodes; n; n = n->next) {
        if (n->req == REQ_NONE || n->result_recorded || n->req_round != s->round) continue;
        /* An update half received is taken back out, its buffer freed for
         * others, and the rest of it will be read and dropped. */
        fedc__srv_abandon_update(n);
        n->stale = 1;
        n->result_recorded = 1;
        if (n->req == REQ_FIT) s->failed++;
        if (s->stage_pending) s->stage_pending--;
        fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT,
                 "round %llu: node %s (%s) failed: %s", (unsigned long long)s->round, n->id, n->peer, why);
    }
    s->stage_pending = 0;
    fedc__srv_maybe_finish_stage(s);
}

void fedc__srv_maybe_finish_stage(fedc_server *s)
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
        if (s->stage_pending) break;
        if (s->sa)
            fedc__srv_secagg_stage_done(s);
        else
            fedc__srv_finish_fit(s);
        break;
    case PHASE_EVAL:
        if (s->stage_pending == 0 && !s->central_running) fedc__srv_finish_round(s);
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
        fedc__srv_node_close(n, "still connected 10 s after the federation ended");
    }
}

void fedc__srv_begin_shutdown(fedc_server *s, int rc)
{
    if (s->stopping) return;
    s->stopping = 1;
    s->rc = rc;
    s->ph = PHASE_DONE;
    fedc__srv_secagg_end(s);
    if (s->model && s->out_dir && !s->suspending) {
        char path[4096], err[FEDC_ERRMSG_MAX], hex[65], rounds[32];
        snprintf(path, sizeof path, "%s/model.safetensors", s->out_dir);
        snprintf(rounds, sizeof rounds, "%llu", (unsigned long long)s->round);
        const char *keys[] = {"format", "rounds"};
        const char *vals[] = {"pt", rounds};
        if (fedc_params_save(s->model->params, path, keys, vals, 2, err, sizeof err))
            fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "cannot save the model: %s", err);
        fedc__srv_model_digest(s->model->params, hex);
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "final model: %s (blake2b-256 %s)", path, hex);
    }
    Fedc__V1__Shutdown sd = FEDC__V1__SHUTDOWN__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    sd.reason = s->suspending   ? "server suspended"
                : rc == FEDC_OK ? "federation complete"
                                : (char *)fedc_strerror(rc);
    m.body_case = FEDC__V1__MESSAGE__BODY_SHUTDOWN;
    m.shutdown = &sd;
    node *next;
    for (node *n = s->nodes; n; n = next) {
        next = n->next;
        if (n->state == NODE_HANDSHAKE)
            fedc__srv_node_close(n, NULL);
        else if (fedc__srv_node_send(n, &m, NULL, 1))
            fedc__srv_node_close(n, NULL);
    }
    uv_timer_stop(&s->stage_timer);
    uv_timer_stop(&s->wait_timer);
    close_server_handles(s);
    /* Unreferenced: it fires only if connections keep the loop alive. */
    uv_timer_start(&s->grace_timer, on_grace_over, 10000, 0);
    uv_unref((uv_handle_t *)&s->grace_timer);
}

/* fedc_server_suspend(): the checkpoint of the last complete round on
 * disk, then the end. */
static void suspend(fedc_server *s)
{
    char err[FEDC_ERRMSG_MAX];
    s->suspending = 1;
    if (fedc__srv_flush_checkpoint(s, err, sizeof err)) {
        fedc_set_error(
            s->errmsg, sizeof s->errmsg, FEDC_ERR_IO,
            "suspended, but the checkpoint of round %llu is not on disk (%s): a resume would start "
            "after round %llu",
            (unsigned long long)s->ckpt_unsaved_round, err, (unsigned long long)s->ckpt_round);
        fedc__srv_begin_shutdown(s, FEDC_ERR_IO);
        return;
    }
    int mid = s->ph == PHASE_FIT || s->ph == PHASE_EVAL;
    if (!s->out_dir || s->ckpt_off)
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "suspending: no checkpoints are written, nothing can resume");
    else if (s->ckpt_round == 0)
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "suspending before any round completed: nothing to resume");
    else
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "suspending%s: the checkpoint of round %llu is in %s/%s",
                 mid ? " (the round in progress is abandoned)" : "", (unsigned long long)s->ckpt_round,
                 s->out_dir, FEDC__CHECKPOINT_FILE);
    fedc__srv_begin_shutdown(s, FEDC_OK);
}

/* Reads the allow-list again; revokes the clients whose key left it. */
static void reload_keys(fedc_server *s)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__nodekey_entry *list = NULL;
    size_t n = 0;
    if (fedc__nodekey_load_list(s->keys_path, &list, &n, err, sizeof err)) {
        fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT,
                 "cannot reload the authorized keys (keeping the %zu in use): %s", s->nkeys, err);
        return;
    }
    free(s->keys);
    s->keys = list;
    s->nkeys = n;
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "reloaded %zu authorized keys from %s", n, s->keys_path);
    fedc__srv_revoke_unlisted(s);
}

static void on_stop_async(uv_async_t *a)
{
    fedc_server *s = a->data;
    if (s->reload_requested) {
        s->reload_requested = 0;
        if (s->keys_path && !s->stopping) reload_keys(s);
        if (!s->stop_requested && !s->suspend_requested) return;
    }
    if (s->stopping) return;
    if (s->suspend_requested) {
        suspend(s);
        return;
    }
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "stopping on request");
    fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_CANCELLED, "stopped on request");
    fedc__srv_begin_shutdown(s, FEDC_ERR_CANCELLED);
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
    o->heartbeat = 30;
    o->dp.delta = 1e-5;
    o->dp.target_quantile = 0.5;
    o->dp.clip_lr = 0.2;
    o->secagg.range = 8;
    o->secagg.max_weight = 1000;
    o->secagg.stage_timeout = 60;
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
    if (!(opt->heartbeat >= 0) || !isfinite(opt->heartbeat))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "heartbeat must be 0 (off) or positive seconds"),
               NULL;
    if (opt->max_inflight_updates == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "max in-flight updates must be at least 1"),
               NULL;
    if (opt->target_accuracy > 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "target-accuracy must be at most 1"), NULL;
    if (opt->strategy && (opt->strategy->flags & ~FEDC_STRATEGY_KNOWN_FLAGS))
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                              "strategy %s needs a mode this server does not support (flags 0x%x)",
                              opt->strategy->name ? opt->strategy->name : "(unnamed)", opt->strategy->flags),
               NULL;
    if (opt->strategy && (!opt->strategy->name || ((opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES)
                                                       ? !opt->strategy->aggregate_all
                                                       : !opt->strategy->aggregate_fit)))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "the strategy has no name, or no aggregate_fit (aggregate_all with "
                              "FEDC_STRATEGY_ALL_UPDATES)"),
               NULL;
    if (opt->dp.mode != FEDC_DP_OFF) {
        const fedc_dp_options *dp = &opt->dp;
        const char *bad = NULL;
        if ((unsigned)dp->mode > FEDC_DP_LOCAL)
            bad = "unknown DP mode";
        else if (!(dp->clip > 0) || !isfinite(dp->clip))
            bad = "--dp-clip must be a positive number";
        else if (!(dp->noise_multiplier > 0) || !isfinite(dp->noise_multiplier))
            bad = "--dp-noise-multiplier must be a positive number";
        else if (!(dp->delta > 0 && dp->delta < 1))
            bad = "--dp-delta must be in (0, 1)";
        else if (!(dp->target_epsilon >= 0) || !isfinite(dp->target_epsilon))
            bad = "--target-epsilon must be a positive number (or 0: none)";
        else if (dp->adaptive && dp->mode != FEDC_DP_CENTRAL)
            bad = "--dp-adaptive needs --dp central (the server must see each update's norm)";
        else if (dp->adaptive && !(dp->target_quantile > 0 && dp->target_quantile < 1))
            bad = "--dp-target-quantile must be in (0, 1)";
        else if (dp->adaptive && (!(dp->clip_lr > 0) || !isfinite(dp->clip_lr)))
            bad = "--dp-clip-lr must be a positive number";
        else if (dp->adaptive && (!(dp->clipped_count_stddev >= 0) || !isfinite(dp->clipped_count_stddev)))
            bad = "--dp-clipped-count-stddev must be a positive number (or 0: the default)";
        else if (dp->adaptive && dp->clipped_count_stddev > 0 &&
                 !(2 * dp->clipped_count_stddev > dp->noise_multiplier))
            bad =
                "--dp-clipped-count-stddev must be above half of --dp-noise-multiplier (Andrew et al. 2021)";
        if (bad) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s", bad), NULL;
        if (opt->strategy && ((opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES) ||
                              opt->strategy->fit_weight || opt->strategy->fit_tensors))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "--dp %s does not go with strategy %s: it %s, so one client's data could "
                                  "weigh more than the clip bound allows",
                                  fedc_dp_mode_name(dp->mode), opt->strategy->name,
                                  (opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES)
                                      ? "looks at each update, not at their noised sum"
                                  : opt->strategy->fit_weight
                                      ? "weighs updates by what clients report"
                                      : "exchanges more than the model with the clients"),
                   NULL;
    }
    if (opt->secagg.enabled && fedc__srv_secagg_check(opt, err, errlen)) return NULL;
    if (opt->strategy && opt->strategy->evaluate && opt->central_eval)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "strategy %s evaluates centrally, and so does central_eval: set one of them",
                              opt->strategy->name),
               NULL;
    if (opt->strategy && (opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES) &&
        (opt->strategy->fit_tensors || opt->strategy->fit_weight))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "strategy %s: fit_tensors and fit_weight do not go with "
                              "FEDC_STRATEGY_ALL_UPDATES",
                              opt->strategy->name),
               NULL;
    if (opt->strategy && (opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES) &&
        opt->strategy->min_updates > opt->min_clients)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "strategy %s needs at least %u updates a round with its parameters; raise "
                              "min-clients (now %u) to %u",
                              opt->strategy->name, opt->strategy->min_updates, opt->min_clients,
                              opt->strategy->min_updates),
               NULL;

    fedc_server *s = calloc(1, sizeof *s);
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory"), NULL;
    fedc_params *resumed_model = NULL;
    s->opt = *opt;
    /* Amplification by sampling only for Poisson sampling, whose rate is
     * each client's chance to take part, and only against those who see
     * the model: in local DP the server, who knows whom it sampled, is the
     * adversary. Otherwise every client is charged every round. */
    s->dp_q =
        opt->sampling == FEDC_SAMPLING_POISSON && opt->dp.mode != FEDC_DP_LOCAL ? opt->fraction_fit : 1.0;
    /* Local DP protects each client's whole data against the server: the
     * update may move anywhere in the clip ball, a sensitivity of 2C. */
    s->dp_z = opt->dp.mode == FEDC_DP_LOCAL ? opt->dp.noise_multiplier / 2 : opt->dp.noise_multiplier;
    s->dp_clip = opt->dp.clip;
    s->epsilon_record = NAN;
    s->listen_addr = strdup(opt->listen);
    s->fit_config = fedc_config_create();
    s->slots = calloc(opt->max_inflight_updates, sizeof *s->slots);
    s->slot_busy = calloc(opt->max_inflight_updates, sizeof *s->slot_busy);
    if (opt->secagg.enabled && opt->dp.mode == FEDC_DP_CLIENT_CLIP) {
        size_t norders;
        fedc_rdp_default_orders(&norders);
        s->ddg_rdp = calloc(norders, sizeof *s->ddg_rdp);
    }
    if (!s->listen_addr || !s->fit_config || !s->slots || !s->slot_busy ||
        (opt->secagg.enabled && opt->dp.mode == FEDC_DP_CLIENT_CLIP && !s->ddg_rdp) ||
        (opt->fit_config && fedc_config_merge(s->fit_config, opt->fit_config))) {
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto fail_nouv;
    }
    s->opt.listen = s->listen_addr;
    s->opt.fit_config = NULL;
    if (opt->tls_cert || opt->tls_key || opt->tls_ca) {
        if (fedc__tls_server_ctx(opt->tls_cert, opt->tls_key, opt->tls_ca, &s->tls, err, errlen))
            goto fail_nouv;
    } else if (!opt->insecure) {
        fedc_set_error(
            err, errlen, FEDC_ERR_INVALID,
            "no TLS certificate: give the server's certificate and key (fedc certs makes a set for a "
            "test federation), or allow plaintext explicitly (--insecure)");
        goto fail_nouv;
    }
    /* Pointers into the caller's strings are not kept. */
    s->opt.tls_cert = s->opt.tls_key = s->opt.tls_ca = NULL;
    if (opt->authorized_keys) {
        s->keys_path = strdup(opt->authorized_keys);
        if (!s->keys_path) {
            fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            goto fail_nouv;
        }
        if (fedc__nodekey_load_list(s->keys_path, &s->keys, &s->nkeys, err, errlen)) goto fail_nouv;
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "node authentication: %zu authorized keys from %s", s->nkeys,
                 s->keys_path);
    }
    s->opt.authorized_keys = NULL;
    s->opt.initial_model = NULL;
    s->opt.resume_dir = NULL;
    const char *out_dir = opt->out_dir ? opt->out_dir : opt->resume_dir;
    if (opt->resume_dir && opt->out_dir) {
        char a[PATH_MAX], b[PATH_MAX];
        if (!realpath(opt->resume_dir, a)) snprintf(a, sizeof a, "%s", opt->resume_dir);
        if (!realpath(opt->out_dir, b)) snprintf(b, sizeof b, "%s", opt->out_dir);
        if (strcmp(a, b)) {
            fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                           "resume from '%s' into the same directory, not '%s': a federation's metrics and "
                           "checkpoints stay together",
                           opt->resume_dir, opt->out_dir);
            goto fail_nouv;
        }
    }
    if (opt->resume_dir && fedc__srv_load_checkpoint(s, opt, &resumed_model, err, errlen)) goto fail_nouv;
    if (out_dir) {
        s->out_dir = strdup(out_dir);
        if (!s->out_dir || mkdir_p(out_dir, err, errlen)) goto fail_nouv;
        char path[4096];
        snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
        if (s->resumed && fedc__srv_trim_metrics(path, s->round, err, errlen)) goto fail_nouv;
        s->metrics = fopen(path, s->resumed ? "a" : "w");
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
    if (!r) r = uv_listen((uv_stream_t *)&s->listener, 511, fedc__srv_on_connection);
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
    if (resumed_model || opt->initial_model) {
        fedc_params *p = resumed_model ? resumed_model : fedc_params_clone(opt->initial_model);
        resumed_model = NULL;
        char why[FEDC_ERRMSG_MAX];
        if (!p) {
            fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            goto fail;
        }
        int rc = fedc__fedavg_init_on(&s->agg, p, 1, opt->device, why, sizeof why);
        if (rc) {
            fedc_params_destroy(p);
            if (rc != FEDC_ERR_DEVICE && rc != FEDC_ERR_NOMEM) rc = FEDC_ERR_UNSUPPORTED;
            fedc_set_error(err, errlen, rc, "cannot aggregate the initial model: %s", why);
            goto fail;
        }
        s->agg_ready = 1;
        s->model = fedc__srv_blob_new(p, why, sizeof why);
        if (!s->model) {
            fedc_params_destroy(p);
            fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "%s", why);
            goto fail;
        }
    }
    return s;
fail:
fail_nouv:
    fedc_params_destroy(resumed_model);
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
    if (s && !s->finished) {
        s->stop_requested = 1;
        uv_async_send(&s->stop_async);
    }
}

void fedc_server_reload_keys(fedc_server *s)
{
    if (s && !s->finished) {
        s->reload_requested = 1;
        uv_async_send(&s->stop_async);
    }
}

void fedc_server_suspend(fedc_server *s)
{
    if (s && !s->finished) {
        s->suspend_requested = 1;
        uv_async_send(&s->stop_async);
    }
}

/* Every connection is a file descriptor, and at the open-file limit the
 * event loop drops new connections unseen (libuv closes them at once), so
 * that clients beyond it never join. Many systems start processes with a
 * soft limit of 1024: raise it, within the hard limit, to what
 * max_connections needs, and warn when even that cannot hold min_clients. */
static void ensure_file_limit(const fedc_server *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    const rlim_t spare = 64; /* the listener, the loop's own, the output files */
    rlim_t want = (rlim_t)s->opt.max_connections + spare;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t to = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
        struct rlimit nrl = {to, rl.rlim_max};
        if (to > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &nrl) == 0) {
            fedc_log(FEDC_LOG_DEBUG, LOG_COMPONENT, "open-file limit raised from %llu to %llu",
                     (unsigned long long)rl.rlim_cur, (unsigned long long)to);
            rl.rlim_cur = to;
        }
    }
    rlim_t need = (rlim_t)s->opt.min_clients + spare;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT,
                 "the open-file limit is %llu (hard limit %llu), too low for %u clients: connections beyond "
                 "about %llu are dropped; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max, s->opt.min_clients,
                 (unsigned long long)(rl.rlim_cur > spare ? rl.rlim_cur - spare : 0));
}

int fedc_server_run(fedc_server *s)
{
    if (s->finished)
        return fedc_set_error(s->errmsg, sizeof s->errmsg, FEDC_ERR_INVALID, "server already ran");
    ensure_file_limit(s);
    fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "listening on %s (port %d); waiting for %u clients", s->opt.listen,
             s->port, s->opt.min_clients);
    s->ph = PHASE_WAIT;
    s->running = 1;
    if (s->opt.wait_timeout > 0)
        uv_timer_start(&s->wait_timer, on_wait_timeout, (uint64_t)(s->opt.wait_timeout * 1000), 0);
    if (s->resumed && end_if_over(s))
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "the checkpoint's federation had ended (round %llu%s): done",
                 (unsigned long long)s->round, s->target_reached ? ", target accuracy reached" : "");
    fedc__srv_maybe_finish_stage(s); /* clients may have joined already (simulation) */
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
                fedc__srv_node_close(n, NULL);
            }
            close_server_handles(s);
        }
        close_grace_timer(s);
        uv_run(&s->loop, UV_RUN_DEFAULT);
        uv_loop_close(&s->loop);
    }
    fedc__srv_bury(s);
    fedc__srv_secagg_end(s);
    fedc__srv_blob_unref(s->fit);
    fedc__srv_blob_unref(s->model);
    if (s->agg_ready) fedc__fedavg_free(&s->agg);
    for (uint32_t i = 0; s->slots && i < s->opt.max_inflight_updates; i++) fedc_params_destroy(s->slots[i]);
    free(s->slots);
    free(s->ddg_rdp);
    SSL_CTX_free(s->tls);
    fedc__srv_tls_pool_free(s);
    free(s->keys);
    free(s->keys_path);
    free(s->ckpt_unsaved);
    free(s->slot_busy);
    free(s->vnodes);
    fedc__srv_free_updates(s);
    free(s->fits);
    free(s->evals);
    if (s->metrics) fclose(s->metrics);
    fedc_config_destroy(s->fit_config);
    free(s->listen_addr);
    free(s->out_dir);
    free(s);
}
