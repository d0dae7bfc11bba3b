/* Secure aggregation on the server (docs/secagg.md): the round driver of
 * the SecAgg+ protocol of src/secagg/protocol.h over the server's
 * connections.
 *
 * A round with secure aggregation has four stages, each a request to the
 * clients still in the round and their answers:
 *   1. FitIns with a SecAggSetup: the client trains, quantises its weighted
 *      update and answers with ADVERTISE (its two public keys);
 *   2. KEYS -> SHARES;  3. SHARES_FWD -> MASKED;  4. UNMASK_REQ -> UNMASK_RESP.
 * A client that fails, disconnects or misses the stage's deadline is out
 * of the round; the protocol server decides whether enough remain. After
 * stage 4 the sum of the survivors' masked inputs is unmasked, and the
 * weighted mean of their updates becomes s->sa_mean, which
 * fedc__srv_finish_fit() hands to the strategy like FedAvg's mean.
 *
 * What the server sees of one client: its public keys, ciphertexts it
 * cannot open, its masked input (uniformly random on its own) and shares
 * of either its self-mask seed or its mask key, never both. */
#include "privacy/ddg.h"
#include "secagg/masking.h"
#include "server/server_impl.h"

/* The distributed discrete Gaussian's fixed choices (docs/secagg.md): the
 * clients' values are taken mod 2^32, the modulus of the masked sum; the
 * grid step leaves 4 standard deviations of headroom (the reference's k);
 * the conditional rounding's beta is TensorFlow Federated's exp(-0.5). */
#define DDG_BITS 32
#define DDG_K    4.0
#define DDG_BETA 0.6065306597126334 /* exp(-0.5) */

int fedc__srv_secagg_check(const fedc_server_options *opt, char *err, size_t errlen)
{
    const fedc_secagg_options *o = &opt->secagg;
    const fedc_strategy *st = opt->strategy;
    if (st && (st->flags & FEDC_STRATEGY_ALL_UPDATES))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg does not go with strategy %s: it needs each client's update, and "
                              "secure aggregation gives the server only their sum",
                              st->name);
    if (st && (st->fit_weight || st->fit_tensors))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg does not go with strategy %s: it %s, and secure aggregation sums "
                              "only the model weighted by num_examples",
                              st->name,
                              st->fit_weight ? "weighs each update by what its client reports"
                                             : "exchanges more than the model with the clients");
    if (opt->dp.mode == FEDC_DP_CENTRAL)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--dp central does not go with --secagg: the server cannot clip updates it "
                              "never sees (use --dp client-clip, where the clients clip and noise)");
    if (opt->min_clients < 3)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg needs --min-clients of at least 3 (with 2, the sum gives each "
                              "client the other's update)");
    if (o->neighbours && o->neighbours < 2)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "--secagg-neighbours must be at least 2");
    if (o->neighbours > FEDC__SA_MAX_CLIENTS - 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "--secagg-neighbours must be at most %u",
                              FEDC__SA_MAX_CLIENTS - 1);
    if (o->threshold && o->neighbours && !(2 * o->threshold > o->neighbours))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg-threshold %u is unsafe for %u neighbours: it must be more than "
                              "half of them (at least %u), or the server could collect both secrets of "
                              "a client and unmask its update",
                              o->threshold, o->neighbours, o->neighbours / 2 + 1);
    if (o->threshold && o->neighbours && o->threshold > o->neighbours)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg-threshold %u is more than the %u neighbours that hold shares",
                              o->threshold, o->neighbours);
    if (o->threshold == 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg-threshold must be at least 2 (and more than half the neighbours)");
    if (!(o->range > 0) || !isfinite(o->range) || o->range > 1e30)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "--secagg-range must be a positive number");
    if (o->bits > 24 && o->bits != 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--secagg-bits must be 1 .. 24 (the sum of the clients' values must fit in 32 "
                              "bits)");
    if (!(o->max_weight >= 1) || !isfinite(o->max_weight))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "--secagg-max-weight must be at least 1");
    if (!(o->stage_timeout > 0) || !isfinite(o->stage_timeout))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "--secagg-timeout must be positive");
    return FEDC_OK;
}

/* One round's RDP at the default orders, for `survivors` clients' noise. */
static int ddg_round_rdp(const fedc_server *s, double gamma, double stddev, uint32_t survivors, size_t dim,
                         double *rdp, size_t n)
{
    const double *orders = fedc_rdp_default_orders(&n);
    fedc__ddg_accounting a = {gamma, stddev, survivors, s->opt.dp.clip, 0, DDG_BETA, dim, 1};
    char err[FEDC_ERRMSG_MAX];
    int rc = fedc__ddg_rdp(&a, 1, orders, n, rdp, err, sizeof err);
    if (rc) fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "privacy accounting failed: %s", err);
    return rc;
}

static double epsilon_of(const fedc_server *s, const double *rdp)
{
    size_t n;
    const double *orders = fedc_rdp_default_orders(&n);
    double eps = NAN;
    char err[FEDC_ERRMSG_MAX];
    if (fedc_rdp_epsilon(orders, rdp, n, s->opt.dp.delta, &eps, NULL, err, sizeof err))
        fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "privacy accounting failed: %s", err);
    return eps;
}

double fedc__srv_ddg_epsilon(const fedc_server *s)
{
    if (s->dp_steps == 0 || !s->ddg_rdp) return 0;
    return epsilon_of(s, s->ddg_rdp);
}

/* The epsilon after one more round with these parameters. */
static double ddg_epsilon_after(const fedc_server *s, double gamma, double stddev, uint32_t survivors,
                                size_t dim)
{
    size_t n;
    fedc_rdp_default_orders(&n);
    double *r = calloc(n, sizeof *r);
    double eps = NAN;
    if (r && !ddg_round_rdp(s, gamma, stddev, survivors, dim, r, n)) {
        for (size_t i = 0; s->ddg_rdp && i < n; i++) r[i] += s->ddg_rdp[i];
        eps = epsilon_of(s, r);
    }
    free(r);
    return eps;
}

static int cmp_node_ptr_id(const void *a, const void *b)
{
    return strcmp((*(node *const *)a)->id, (*(node *const *)b)->id);
}

void fedc__srv_secagg_end(fedc_server *s)
{
    for (uint32_t i = 0; s->sa_nodes && i < s->sa_n; i++)
        if (s->sa_nodes[i]) s->sa_nodes[i]->sa_index = -1;
    free(s->sa_nodes);
    s->sa_nodes = NULL;
    s->sa_n = 0;
    fedc__sa_server_destroy(s->sa);
    s->sa = NULL;
    fedc_params_destroy(s->sa_mean);
    s->sa_mean = NULL;
}

void fedc__srv_secagg_forget(node *n)
{
    fedc_server *s = n->srv;
    if (n->sa_index >= 0 && s->sa_nodes && (uint32_t)n->sa_index < s->sa_n) s->sa_nodes[n->sa_index] = NULL;
    n->sa_index = -1;
}

/* Fails the round before any request went out. */
static int refuse_round(fedc_server *s, int rc, const char *err)
{
    fedc_set_error(s->fail_reason, sizeof s->fail_reason, rc, "secure aggregation: %s", err);
    fedc__srv_secagg_end(s);
    return rc;
}

int fedc__srv_secagg_prepare(fedc_server *s, node **v, size_t k)
{
    const fedc_secagg_options *o = &s->opt.secagg;
    char err[FEDC_ERRMSG_MAX];
    fedc__srv_secagg_end(s);
    if (k < 3) return refuse_round(s, FEDC_ERR_INVALID, "a round needs at least 3 clients");
    if (k > FEDC__SA_MAX_CLIENTS) {
        snprintf(err, sizeof err,
                 "%zu clients sampled, at most %u can take part in one round (lower "
                 "--fraction-fit)",
                 k, FEDC__SA_MAX_CLIENTS);
        return refuse_round(s, FEDC_ERR_INVALID, err);
    }
    const fedc_params *model = s->fit->params;
    uint64_t dim = 1;
    for (size_t i = 0; i < fedc_params_count(model); i++) {
        const fedc_tensor *t = fedc_params_at(model, i);
        if (t->dtype != FEDC_F32) {
            snprintf(err, sizeof err, "tensor '%s' is not float32; only float32 models are supported",
                     t->name);
            return refuse_round(s, FEDC_ERR_UNSUPPORTED, err);
        }
        dim += (uint64_t)fedc_tensor_numel(t);
    }
    if (dim > FEDC__SA_MAX_DIM) {
        snprintf(err, sizeof err, "the model has %llu parameters, more than the %u supported",
                 (unsigned long long)dim - 1, FEDC__SA_MAX_DIM - 1);
        return refuse_round(s, FEDC_ERR_UNSUPPORTED, err);
    }
    uint32_t n = (uint32_t)k;
    int ddg = s->opt.dp.mode == FEDC_DP_CLIENT_CLIP;
    double gamma = 0, stddev = 0;
    if (ddg) {
        /* The update is padded to a power of two for the rotation; each
         * client adds 1/n of the noise variance, so that the sum of n
         * carries N(0, (Z C)^2) (less when some drop: accounted for). */
        dim = fedc__ddg_padded_dim((size_t)dim - 1);
        stddev = s->opt.dp.noise_multiplier * s->opt.dp.clip / sqrt((double)n);
        int grc = fedc__ddg_gamma(DDG_BITS, n, s->opt.dp.clip, (size_t)dim, stddev, DDG_K, 1.0, &gamma, err,
                                  sizeof err);
        fedc__ddg_params dp = {s->opt.dp.clip, gamma, DDG_BETA, stddev, DDG_BITS};
        if (!grc) grc = fedc__ddg_check(&dp, (size_t)dim, err, sizeof err);
        if (grc) return refuse_round(s, grc, err);
    }
    uint32_t kk = o->neighbours ? o->neighbours : fedc__sa_default_neighbours(n);
    if (kk >= n - 1) kk = n - 1;
    uint32_t t = o->threshold ? o->threshold : kk / 2 + 1;
    if (t > kk || !(2 * t > kk)) {
        snprintf(err, sizeof err,
                 "--secagg-threshold %u does not fit a round of %u clients, where each has %u neighbours "
                 "(it must be more than half of them and at most all)",
                 t, n, kk);
        return refuse_round(s, FEDC_ERR_INVALID, err);
    }
    unsigned bits = ddg ? DDG_BITS : o->bits ? o->bits : fedc__sa_default_bits(n);
    int rc = ddg ? FEDC_OK : fedc__secagg_check_params(o->range, bits, n, err, sizeof err);
    if (rc) return refuse_round(s, rc, err);
    if (ddg && s->opt.dp.target_epsilon > 0) {
        /* The round may complete with as few as t clients, whose noise
         * alone then reaches the sum. */
        double next = ddg_epsilon_after(s, gamma, stddev, t, (size_t)dim);
        if (!(next <= s->opt.dp.target_epsilon)) {
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT,
                     "privacy budget: stopping before round %llu, which could bring epsilon to %.6f (if only "
                     "%u of its %u clients stayed), above --target-epsilon %g (spent so far: %.6f at delta "
                     "%g)",
                     (unsigned long long)s->round, next, t, n, s->opt.dp.target_epsilon,
                     fedc__srv_ddg_epsilon(s), s->opt.dp.delta);
            s->round--;
            fedc__srv_begin_shutdown(s, FEDC_OK);
            return FEDC_ERR_INVALID;
        }
    }

    fedc__sa_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.round = s->round;
    cfg.n = n;
    cfg.k = kk;
    cfg.t = t;
    cfg.dim = dim;
    randombytes_buf(cfg.graph_seed, sizeof cfg.graph_seed);
    rc = fedc__sa_server_create(&cfg, &s->sa, err, sizeof err);
    if (rc) return refuse_round(s, rc, err);
    s->sa_nodes = calloc(n, sizeof *s->sa_nodes);
    if (!s->sa_nodes) return refuse_round(s, FEDC_ERR_NOMEM, "out of memory");
    /* Indices in node-id order: the same clients get the same indices
     * whatever order the sampler returned them in. */
    qsort(v, k, sizeof *v, cmp_node_ptr_id);
    for (uint32_t i = 0; i < n; i++) {
        s->sa_nodes[i] = v[i];
        v[i]->sa_index = (int32_t)i;
        v[i]->sa_answered = 0;
    }
    s->sa_n = n;
    s->sa_bits = bits;
    memcpy(s->sa_graph_seed, cfg.graph_seed, sizeof s->sa_graph_seed);
    s->sa_ddg = ddg;
    s->sa_ddg_gamma = gamma;
    s->sa_ddg_stddev = stddev;
    if (ddg) randombytes_buf(s->sa_ddg_seed, sizeof s->sa_ddg_seed);
    /* A masked input is one message of 4 bytes per coordinate. */
    uint64_t need = 4 * dim + FEDC__SA_HEADER_BYTES + 64;
    if (need > s->opt.max_frame_bytes)
        s->opt.max_frame_bytes = need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
    if (ddg)
        fedc_log(
            FEDC_LOG_INFO, LOG_COMPONENT,
            "round %llu: secure aggregation over %u clients, %u neighbours each, threshold %u, distributed "
            "discrete Gaussian: %llu coordinates, step %.3g, noise stddev %.3g per client",
            (unsigned long long)s->round, n, kk, t, (unsigned long long)dim, gamma, stddev);
    else
        fedc_log(
            FEDC_LOG_INFO, LOG_COMPONENT,
            "round %llu: secure aggregation over %u clients, %u neighbours each, threshold %u, %u bits in "
            "[-%g, %g]",
            (unsigned long long)s->round, n, kk, t, bits, s->opt.secagg.range, s->opt.secagg.range);
    return FEDC_OK;
}

/* Sends payload to node n as the request of the current stage. */
static int send_stage(fedc_server *s, node *n, uint8_t *payload, size_t len)
{
    Fedc__V1__SecAgg sa = FEDC__V1__SEC_AGG__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    sa.round = s->round;
    sa.payload.data = payload;
    sa.payload.len = len;
    m.body_case = FEDC__V1__MESSAGE__BODY_SECAGG;
    m.secagg = &sa;
    n->req = REQ_FIT;
    n->req_round = s->round;
    n->result_recorded = 0;
    n->sa_answered = 0;
    fedc__srv_set_state(n, NODE_BUSY);
    s->stage_pending++;
    return fedc__srv_node_send(n, &m, NULL, 0);
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void fedc__srv_on_secagg(node *n, const Fedc__V1__SecAgg *m)
{
    fedc_server *s = n->srv;
    if (n->req != REQ_FIT || m->round != n->req_round) {
        fedc__srv_protocol_error(n, "unexpected secagg message for round %llu", (unsigned long long)m->round);
        return;
    }
    if (n->result_recorded || n->req_round != s->round || s->ph != PHASE_FIT || !s->sa || n->sa_index < 0) {
        /* Too late: the stage ended without this client. */
        n->req = REQ_NONE;
        fedc__srv_set_state(n, NODE_IDLE);
        if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
        return;
    }
    const uint8_t *p = m->payload.data;
    size_t len = m->payload.len;
    /* The protocol checks everything but who sent it: that is the
     * connection's business. */
    if (len >= FEDC__SA_HEADER_BYTES && get_u32le(p + 16) != (uint32_t)n->sa_index) {
        fedc__srv_protocol_error(n, "secagg message signed as client %u, but this client is %d",
                                 get_u32le(p + 16), n->sa_index);
        return;
    }
    char err[FEDC_ERRMSG_MAX];
    if (fedc__sa_server_recv(s->sa, p, len, err, sizeof err)) {
        fedc__srv_protocol_error(n, "%s", err);
        return;
    }
    n->sa_answered = 1;
    n->result_recorded = 1;
    n->req = REQ_NONE;
    fedc__srv_set_state(n, NODE_IDLE);
    if (s->stage_pending) s->stage_pending--;
    fedc__srv_maybe_finish_stage(s);
}

/* The survivors' weighted mean from the unmasked sum: the main coordinates
 * sum f_i * delta_i, the last one sum f_i, both quantised. */
/* The distributed discrete Gaussian's round: the decoded sum of the
 * survivors' clipped, noised updates over the expected number of clients
 * (as --dp client-clip without secure aggregation), and the round's RDP,
 * for the noise of the survivors alone, added to the accountant. */
static int make_ddg_mean(fedc_server *s, const uint32_t *sum, uint32_t survivors, char *err, size_t errlen)
{
    const fedc_params *x = s->model->params;
    size_t d = 0;
    for (size_t i = 0; i < fedc_params_count(x); i++) d += (size_t)fedc_tensor_numel(fedc_params_at(x, i));
    double m = s->opt.sampling == FEDC_SAMPLING_POISSON ? s->opt.fraction_fit * (double)s->population
                                                        : (double)s->sampled;
    size_t norders;
    fedc_rdp_default_orders(&norders);
    float *delta = malloc((d ? d : 1) * sizeof *delta);
    double *rdp = calloc(norders, sizeof *rdp);
    fedc_params *next = fedc_params_clone(x);
    fedc__ddg_params p = {s->opt.dp.clip, s->sa_ddg_gamma, DDG_BETA, s->sa_ddg_stddev, DDG_BITS};
    size_t sa_dim = (size_t)fedc__sa_server_config(s->sa)->dim; /* d padded for the rotation */
    int rc = delta && rdp && next ? FEDC_OK : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    if (!rc) rc = fedc__ddg_decode(&p, sum, d, s->sa_ddg_seed, s->round, delta, err, errlen);
    if (!rc && ddg_round_rdp(s, s->sa_ddg_gamma, s->sa_ddg_stddev, survivors, sa_dim, rdp, norders))
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID, "privacy accounting failed");
    if (!rc && !(m > 0))
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no client was expected this round");
    if (rc) {
        free(delta);
        free(rdp);
        fedc_params_destroy(next);
        return rc;
    }
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(next); i++) {
        fedc_tensor *t = fedc_params_at(next, i);
        float *w = t->data;
        size_t numel = (size_t)fedc_tensor_numel(t);
        for (size_t j = 0; j < numel; j++) w[j] = (float)((double)w[j] + (double)delta[at + j] / m);
        at += numel;
    }
    /* The sum was released: the round is charged. */
    for (size_t i = 0; i < norders; i++) s->ddg_rdp[i] += rdp[i];
    s->dp_steps++;
    free(delta);
    free(rdp);
    s->sa_mean = next;
    return FEDC_OK;
}

static int make_mean(fedc_server *s, const uint32_t *sum, uint32_t survivors, char *err, size_t errlen)
{
    if (s->sa_ddg) return make_ddg_mean(s, sum, survivors, err, errlen);
    const fedc_params *x = s->model->params;
    double m = (double)((1ull << s->sa_bits) - 1), range = s->opt.secagg.range;
    double wsum = (double)sum[fedc__sa_server_config(s->sa)->dim - 1] / m;
    if (!(wsum > 0)) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "the survivors' weights sum to 0");
    fedc_params *next = fedc_params_clone(x);
    if (!next) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(next); i++) {
        fedc_tensor *t = fedc_params_at(next, i);
        float *w = t->data;
        size_t numel = (size_t)fedc_tensor_numel(t);
        for (size_t j = 0; j < numel; j++) {
            /* q = (f delta + R) / 2R * M summed over the survivors. */
            double fdelta = (double)sum[at + j] / m * 2 * range - (double)survivors * range;
            w[j] = (float)((double)w[j] + fdelta / wsum);
        }
        at += numel;
    }
    s->sa_mean = next;
    return FEDC_OK;
}

/* The unmasking stage is over: the sum, the mean, then the strategy. */
static void finish(fedc_server *s)
{
    char err[FEDC_ERRMSG_MAX];
    size_t dim = (size_t)fedc__sa_server_config(s->sa)->dim;
    uint32_t *sum = malloc(dim * sizeof *sum), survivors = 0;
    int rc = sum ? fedc__sa_server_finish(s->sa, sum, dim, &survivors, err, sizeof err)
                 : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
    if (!rc) rc = make_mean(s, sum, survivors, err, sizeof err);
    free(sum);
    if (rc) {
        fedc_set_error(s->fail_reason, sizeof s->fail_reason, rc, "%s", err);
        s->ok = 0;
    } else {
        s->ok = survivors;
    }
    s->failed = s->sampled - s->ok;
    fedc_params *mean = s->sa_mean;
    s->sa_mean = NULL;
    fedc__srv_secagg_end(s);
    s->sa_mean = mean;
    fedc__srv_finish_fit(s);
}

void fedc__srv_secagg_stage_done(fedc_server *s)
{
    uv_timer_stop(&s->stage_timer);
    char err[FEDC_ERRMSG_MAX];
    /* Whoever did not answer this stage is out of the round. */
    for (uint32_t i = 0; i < s->sa_n; i++) {
        node *n = s->sa_nodes[i];
        if (n && !n->sa_answered) {
            n->sa_index = -1;
            s->sa_nodes[i] = NULL;
        }
    }
    int stage = fedc__sa_server_stage(s->sa);
    if (stage == FEDC__SA_STAGE_UNMASK) {
        finish(s);
        return;
    }
    int rc = fedc__sa_server_advance(s->sa, err, sizeof err);
    if (rc) {
        fedc_set_error(s->fail_reason, sizeof s->fail_reason, rc, "%s", err);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "round %llu: %s", (unsigned long long)s->round,
                 s->fail_reason);
        s->ok = 0;
        s->failed = s->sampled;
        fedc__srv_secagg_end(s);
        fedc__srv_finish_fit(s);
        return;
    }
    static const char *const names[] = {"", "advertise keys", "share keys", "masked input", "unmask"};
    stage = fedc__sa_server_stage(s->sa);
    uint32_t live = 0;
    for (uint32_t i = 0; i < s->sa_n; i++) live += s->sa_nodes[i] != NULL;
    fedc_log(FEDC_LOG_DEBUG, LOG_COMPONENT, "round %llu: secure aggregation stage %d (%s), %u clients",
             (unsigned long long)s->round, stage, stage >= 1 && stage <= 4 ? names[stage] : "?", live);
    /* A client that cannot be sent its request is closed, which must not
     * end the stage while the others are still being sent theirs. */
    int defer = s->defer_stage;
    s->defer_stage = 1;
    for (uint32_t i = 0; i < s->sa_n; i++) {
        node *n = s->sa_nodes[i];
        if (!n) continue;
        uint8_t *msg = NULL;
        size_t len = 0;
        rc = fedc__sa_server_message_for(s->sa, i, &msg, &len, err, sizeof err);
        if (!rc) rc = send_stage(s, n, msg, len);
        free(msg);
        if (rc) fedc__srv_node_close(n, "cannot send the secure-aggregation request");
    }
    s->defer_stage = defer;
    uv_timer_start(&s->stage_timer, fedc__srv_on_stage_timeout,
                   (uint64_t)(s->opt.secagg.stage_timeout * 1000), 0);
    fedc__srv_maybe_finish_stage(s);
}
