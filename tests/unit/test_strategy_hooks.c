/*
 * The strategy hooks the server calls besides aggregate_fit, through a
 * simulated federation (4 virtual clients, min_clients 2, concurrency 2)
 * and a strategy of the test's own over a one-tensor model:
 *
 *   select_fit          sees the idle clients in id order with the
 *                       server's sample; un-choosing one drops it from the
 *                       round, leaving fewer than min_clients fails the
 *                       round, an error ends the federation;
 *   configure_evaluate  its keys reach the clients' evaluate callback;
 *   aggregate_evaluate  makes fed_eval_loss / fed_eval_accuracy (without
 *                       it: the num_examples-weighted means);
 *   evaluate            makes central_eval_*; an error leaves them NaN and
 *                       the round goes on; refused with central_eval;
 *   fit_weight          weighs each update (rounded to 2^-16); an error
 *                       rejects that update only; aggregate_fit's info
 *                       carries the weights and the mean uses them;
 *   fit_tensors         extra tensors reach the clients after the model,
 *                       come back aggregated in `mean`, not in `next`;
 *   and the refusal of fit_weight / fit_tensors with
 *   FEDC_STRATEGY_ALL_UPDATES.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/server.h"
#include "fedc/sim.h"
#include "fedc/strategy.h"
#include "test_util.h"

#define NC   4  /* virtual clients */
#define NE   10 /* model elements */
#define MAXR 4  /* rounds recorded */

/* ---- what the run records (reset by run()) ----------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Client side (worker threads, under mu). */
static int fit_calls[MAXR + 1][NC]; /* [round][client] */
static int fit_bad_round;           /* fit without a valid "round" key */
static int fit_layout_bad;          /* fit saw the wrong tensors */
static int eval_layout_bad;         /* evaluate saw more than the model */
static float extra_expect[NE];      /* what fit_tensors last handed out */
static int want_extra;              /* clients should see the extra tensor */
static int omit_steps;              /* client 0 sends no "local_steps" */

/* Server side (the server's thread, except evaluate: under mu). */
static fedc_round_record rec[MAXR + 1];
static char reason[MAXR + 1][FEDC_ERRMSG_MAX];
static int nrec;

static int sel_calls, sel_bad;
static char sel_why[256];

typedef struct agg_rec {
    int called;
    uint64_t round;
    uint32_t population, sampled;
    size_t nfits;
    char ids[NC][32];
    uint64_t num_examples[NC];
    double weight[NC];
    int has_steps[NC];
    size_t nglobal, nmean, nnext;
    float global0, mean_model[NE], mean_extra[NE];
} agg_rec;
static agg_rec agg[MAXR + 1];

static int aeval_n[MAXR + 1];
static char aeval_ids[MAXR + 1][NC][32];
static double aeval_loss[MAXR + 1], aeval_acc[MAXR + 1];

static int fw_calls, fw_errors;
static int ft_calls, ft_global_bad;
static int central_calls;
static float central_model0[MAXR + 1];

/* ---- the strategy --------------------------------------------------------- */

typedef struct hooks {
    fedc_strategy iface;
    uint64_t drop_round;   /* select_fit un-chooses the first chosen client */
    uint64_t single_round; /* select_fit leaves one client */
    uint64_t sel_fail_round;
    uint64_t eval_fail_round; /* evaluate fails */
    int weight_mode;          /* 1: steps * 64 / n, 2: n / 3 */
    float extra[NE];          /* fit_tensors' tensor, the mean's after each round */
    fedc_params *extra_p;
} hooks;

static int h_select(void *state, uint64_t round, const char *const *ids, size_t n, unsigned char *chosen,
                    char *err, size_t errlen)
{
    hooks *h = state;
    sel_calls++;
    int ones = 0;
    for (size_t i = 0; i < n; i++) ones += chosen[i] == 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(ids[i - 1], ids[i]) >= 0) {
            sel_bad++;
            snprintf(sel_why, sizeof sel_why, "round %llu: ids[%zu] '%s' >= ids[%zu] '%s'",
                     (unsigned long long)round, i - 1, ids[i - 1], i, ids[i]);
        }
    if (n != NC || ones != NC) {
        sel_bad++;
        snprintf(sel_why, sizeof sel_why, "round %llu: n %zu, %d chosen on entry", (unsigned long long)round,
                 n, ones);
    }
    if (round == h->sel_fail_round) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no clients today");
    if (round == h->drop_round) {
        for (size_t i = 0; i < n; i++)
            if (chosen[i]) {
                chosen[i] = 0;
                break;
            }
    }
    if (round == h->single_round) {
        memset(chosen, 0, n);
        if (n) chosen[n - 1] = 1;
    }
    return FEDC_OK;
}

static int h_configure_evaluate(void *state, uint64_t round, fedc_config *cfg)
{
    (void)state;
    return fedc_config_set_i64(cfg, "eval_tag", (int64_t)(100 + round));
}

static int h_aggregate_evaluate(void *state, uint64_t round, const fedc_eval_info *evals, size_t n,
                                double *loss, double *accuracy, char *err, size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    double s = 0, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        s += evals[i].accuracy;
        if (evals[i].loss > mx) mx = evals[i].loss;
    }
    *accuracy = s / (double)n;
    *loss = mx;
    if (round <= MAXR) {
        aeval_n[round] = (int)n;
        for (size_t i = 0; i < n && i < NC; i++)
            snprintf(aeval_ids[round][i], sizeof aeval_ids[0][0], "%s", evals[i].node_id);
        aeval_loss[round] = *loss;
        aeval_acc[round] = *accuracy;
    }
    return FEDC_OK;
}

static int h_evaluate(void *state, uint64_t round, const fedc_params *model, double *loss, double *accuracy,
                      char *err, size_t errlen)
{
    hooks *h = state;
    pthread_mutex_lock(&mu);
    central_calls++;
    if (round <= MAXR) central_model0[round] = ((const float *)fedc_params_at(model, 0)->data)[0];
    pthread_mutex_unlock(&mu);
    if (round == h->eval_fail_round)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no central data in round %llu",
                              (unsigned long long)round);
    *loss = (double)round;
    *accuracy = 0.5 + (double)round / 100.0;
    return FEDC_OK;
}

static double expected_weight(int mode, uint64_t n, int64_t steps)
{
    return mode == 1 ? (double)steps * 64.0 / (double)n : (double)n / 3.0;
}

static int h_fit_weight(void *state, uint64_t round, uint64_t num_examples, const fedc_config *metrics,
                        double *weight, char *err, size_t errlen)
{
    hooks *h = state;
    (void)round;
    fw_calls++;
    int64_t steps = 0;
    if (fedc_config_get_i64(metrics, "local_steps", &steps)) {
        fw_errors++;
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no metric 'local_steps'");
    }
    *weight = expected_weight(h->weight_mode, num_examples, steps);
    return FEDC_OK;
}

static int h_fit_tensors(void *state, const fedc_params *global, const fedc_params **out, char *err,
                         size_t errlen)
{
    hooks *h = state;
    ft_calls++;
    if (fedc_params_count(global) != 1) ft_global_bad++;
    fedc_params_destroy(h->extra_p);
    h->extra_p = fedc_params_create();
    const int64_t shape[1] = {NE};
    int rc = h->extra_p
                 ? fedc_params_add(h->extra_p, "extra/w", FEDC_F32, 1, shape, h->extra, NULL, err, errlen)
                 : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    if (rc) return rc;
    pthread_mutex_lock(&mu);
    memcpy(extra_expect, h->extra, sizeof extra_expect);
    pthread_mutex_unlock(&mu);
    *out = h->extra_p;
    return FEDC_OK;
}

/* FedAvg: next is the mean's model; with fit_tensors the strategy keeps
 * the mean of the extra tensor for the next round (as SCAFFOLD does). */
static int h_aggregate_fit(void *state, const fedc_round_info *info, const fedc_params *global,
                           const fedc_params *mean, fedc_params *next, char *err, size_t errlen)
{
    hooks *h = state;
    if (info->round <= MAXR) {
        agg_rec *a = &agg[info->round];
        a->called++;
        a->round = info->round;
        a->population = info->population;
        a->sampled = info->sampled;
        a->nfits = info->nfits;
        for (size_t i = 0; i < info->nfits && i < NC; i++) {
            snprintf(a->ids[i], sizeof a->ids[i], "%s", info->fits[i].node_id);
            a->num_examples[i] = info->fits[i].num_examples;
            a->weight[i] = info->fits[i].weight;
            int64_t st = 0;
            a->has_steps[i] =
                info->fits[i].metrics && !fedc_config_get_i64(info->fits[i].metrics, "local_steps", &st);
        }
        a->nglobal = fedc_params_count(global);
        a->nmean = fedc_params_count(mean);
        a->nnext = fedc_params_count(next);
        a->global0 = ((const float *)fedc_params_at(global, 0)->data)[0];
        memcpy(a->mean_model, fedc_params_at(mean, 0)->data, sizeof a->mean_model);
        if (a->nmean > 1) memcpy(a->mean_extra, fedc_params_at(mean, 1)->data, sizeof a->mean_extra);
    }
    if (h->iface.fit_tensors && fedc_params_count(mean) > 1)
        memcpy(h->extra, fedc_params_at(mean, 1)->data, sizeof h->extra);
    const fedc_tensor *m = fedc_params_at(mean, 0), *x = fedc_params_at(next, 0);
    if (fedc_params_count(next) != 1 || !m || m->nbytes != x->nbytes)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE, "next is not the model's layout");
    memcpy(x->data, m->data, m->nbytes);
    return FEDC_OK;
}

static void h_destroy(void *state)
{
    hooks *h = state;
    fedc_params_destroy(h->extra_p);
    h->extra_p = NULL;
}

/* A strategy with aggregate_fit only; the cases add hooks. */
static void hooks_init(hooks *h)
{
    memset(h, 0, sizeof *h);
    h->iface.name = "hooks";
    h->iface.state = h;
    h->iface.aggregate_fit = h_aggregate_fit;
    h->iface.destroy = h_destroy;
    for (int e = 0; e < NE; e++) h->extra[e] = 1.0f + 0.25f * (float)e;
}

/* ---- the clients ------------------------------------------------------------ */

static uint32_t client_of(void *user)
{
    return (uint32_t)((uintptr_t)user - 1);
}

static int c_open(void *user, uint32_t index, void **client_user, char *err, size_t errlen)
{
    (void)user;
    (void)err;
    (void)errlen;
    *client_user = (void *)(uintptr_t)(index + 1);
    return FEDC_OK;
}

/* Client i answers the constant model i + 1 and, with the extra tensor,
 * (i + 1) / 2 + e in element e; it trained on 8 << i examples and says
 * local_steps = 5 (client 0 not, with omit_steps). */
static int c_fit(void *user, fedc_params *params, const fedc_config *config, uint64_t *n,
                 fedc_config *metrics, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    uint32_t i = client_of(user);
    int64_t r = 0;
    size_t cnt = fedc_params_count(params);
    pthread_mutex_lock(&mu);
    if (!fedc_config_get_i64(config, "round", &r) && r >= 1 && r <= MAXR)
        fit_calls[r][i]++;
    else
        fit_bad_round++;
    if (want_extra) {
        const fedc_tensor *x = cnt == 2 ? fedc_params_at(params, 1) : NULL;
        int ok = x && !strcmp(x->name, "extra/w") && x->dtype == FEDC_F32 && fedc_tensor_numel(x) == NE &&
                 memcmp(x->data, extra_expect, sizeof extra_expect) == 0;
        if (!ok) fit_layout_bad++;
    } else if (cnt != 1) {
        fit_layout_bad++;
    }
    int omit = omit_steps && i == 0;
    pthread_mutex_unlock(&mu);
    float *w = fedc_params_at(params, 0)->data;
    for (int e = 0; e < NE; e++) w[e] = (float)(i + 1);
    if (cnt == 2) {
        float *x = fedc_params_at(params, 1)->data;
        for (int e = 0; e < NE; e++) x[e] = (float)(i + 1) * 0.5f + (float)e;
    }
    *n = (uint64_t)8 << i;
    if (!omit) fedc_config_set_i64(metrics, "local_steps", 5);
    return FEDC_OK;
}

/* Loss i, accuracy (eval_tag + i) / 1000 (tag 0 when absent), 10 (i + 1)
 * examples. */
static int c_eval(void *user, const fedc_params *params, const fedc_config *config, double *loss, uint64_t *n,
                  fedc_config *metrics, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    uint32_t i = client_of(user);
    int64_t tag = 0;
    fedc_config_get_i64(config, "eval_tag", &tag);
    if (fedc_params_count(params) != 1) {
        pthread_mutex_lock(&mu);
        eval_layout_bad++;
        pthread_mutex_unlock(&mu);
    }
    *loss = (double)i;
    *n = 10 * (uint64_t)(i + 1);
    return fedc_config_set_f64(metrics, "accuracy", (double)(tag + (int64_t)i) / 1000.0);
}

/* ---- running a federation ------------------------------------------------ */

static void on_round(void *user, const fedc_round_record *r)
{
    (void)user;
    nrec++;
    if (r->round == 0 || r->round > MAXR) return;
    rec[r->round] = *r;
    snprintf(reason[r->round], sizeof reason[0], "%s", r->failure_reason ? r->failure_reason : "");
}

static void reset(void)
{
    memset(fit_calls, 0, sizeof fit_calls);
    fit_bad_round = fit_layout_bad = eval_layout_bad = want_extra = omit_steps = 0;
    memset(rec, 0, sizeof rec);
    memset(reason, 0, sizeof reason);
    nrec = 0;
    sel_calls = sel_bad = 0;
    sel_why[0] = '\0';
    memset(agg, 0, sizeof agg);
    memset(aeval_n, 0, sizeof aeval_n);
    memset(aeval_ids, 0, sizeof aeval_ids);
    fw_calls = fw_errors = ft_calls = ft_global_bad = central_calls = 0;
    memset(central_model0, 0, sizeof central_model0);
}

static fedc_params *zero_model(void)
{
    float zero[NE] = {0};
    const int64_t shape[1] = {NE};
    fedc_params *p = fedc_params_create();
    if (p && fedc_params_add(p, "w", FEDC_F32, 1, shape, zero, NULL, NULL, 0)) {
        fedc_params_destroy(p);
        p = NULL;
    }
    return p;
}

/* Runs `rounds` rounds with strategy h; returns fedc_sim_run's status,
 * its message in err. */
static int run(hooks *h, uint64_t rounds, char *err, size_t errlen)
{
    fedc_params *init = zero_model();
    fedc_server_options so;
    fedc_server_options_init(&so);
    so.insecure = 1;
    so.rounds = rounds;
    so.min_clients = 2;
    so.fraction_evaluate = 1;
    so.initial_model = init;
    so.seed = 42;
    so.strategy = &h->iface;
    so.on_round = on_round;
    fedc_sim_options sim;
    fedc_sim_options_init(&sim);
    sim.clients = NC;
    sim.concurrency = 2;
    sim.open_client = c_open;
    sim.callbacks.fit = c_fit;
    sim.callbacks.evaluate = c_eval;
    err[0] = '\0';
    int rc = fedc_sim_run(&so, &sim, err, errlen);
    fedc_params_destroy(init);
    return rc;
}

static int id_is(const char *id, uint32_t i)
{
    char want[32];
    snprintf(want, sizeof want, "client-%03u", i);
    return strcmp(id, want) == 0;
}

/* ---- the cases ------------------------------------------------------------ */

static void test_select_fit(void)
{
    char err[FEDC_ERRMSG_MAX];
    hooks h;
    hooks_init(&h);
    h.iface.select_fit = h_select;
    h.drop_round = 2;
    reset();
    int rc = run(&h, 3, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "select_fit run");
    CHECK(rc == FEDC_OK || !*err, "select_fit run: %s", err);
    CHECK(sel_calls == 3, "select_fit is called once a round (%d)", sel_calls);
    CHECK(sel_bad == 0, "select_fit sees 4 ids in strcmp order, all chosen: %s", sel_why);
    CHECK(nrec == 3, "3 rounds recorded (%d)", nrec);
    for (int r = 1; r <= 3; r++) {
        uint32_t want = r == 2 ? 3 : 4;
        CHECK(!rec[r].failed && rec[r].clients_sampled == want && rec[r].clients_ok == want,
              "round %d: %u sampled, %u ok (want %u), failed %d", r, rec[r].clients_sampled,
              rec[r].clients_ok, want, rec[r].failed);
        CHECK(agg[r].called == 1 && agg[r].sampled == want && agg[r].population == NC && agg[r].nfits == want,
              "round %d: aggregate_fit info: sampled %u, population %u, nfits %zu", r, agg[r].sampled,
              agg[r].population, agg[r].nfits);
        for (uint32_t i = 0; i < NC; i++) {
            int want_calls = (r == 2 && i == 0) ? 0 : 1;
            CHECK(fit_calls[r][i] == want_calls, "round %d: client %u fit %d times (want %d)", r, i,
                  fit_calls[r][i], want_calls);
        }
    }
    CHECK(id_is(agg[2].ids[0], 1) && id_is(agg[2].ids[2], 3), "round 2's fits are clients 1..3 (%s .. %s)",
          agg[2].ids[0], agg[2].ids[2]);
    CHECK(fit_bad_round == 0 && fit_layout_bad == 0, "fit saw a round and the model only (%d, %d)",
          fit_bad_round, fit_layout_bad);

    /* One client chosen: the round fails, the next goes on. */
    hooks_init(&h);
    h.iface.select_fit = h_select;
    h.single_round = 2;
    reset();
    rc = run(&h, 3, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, "select_fit single run");
    CHECK(rec[2].failed == 1 && rec[2].clients_sampled == 1 && rec[2].clients_ok == 0,
          "round 2 with 1 chosen fails (failed %d, sampled %u, ok %u)", rec[2].failed, rec[2].clients_sampled,
          rec[2].clients_ok);
    CHECK_CONTAINS(reason[2], "the strategy chose 1 clients", "round 2's failure reason");
    CHECK(agg[2].called == 0, "a failed round does not call aggregate_fit");
    int calls2 = 0;
    for (uint32_t i = 0; i < NC; i++) calls2 += fit_calls[2][i];
    CHECK(calls2 == 0, "no client trains in the failed round (%d fits)", calls2);
    CHECK(!rec[1].failed && !rec[3].failed && rec[3].clients_ok == 4, "rounds 1 and 3 succeed");

    /* A failure of select_fit ends the federation with its message. */
    hooks_init(&h);
    h.iface.select_fit = h_select;
    h.sel_fail_round = 2;
    reset();
    rc = run(&h, 3, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_INVALID, "select_fit failure");
    CHECK_CONTAINS(err, "strategy hooks: no clients today", "select_fit failure message");
    CHECK(nrec == 1 && !rec[1].failed, "only round 1 ran (%d recorded)", nrec);
}

static void test_evaluate_hooks(void)
{
    char err[FEDC_ERRMSG_MAX];
    hooks h;
    hooks_init(&h);
    h.iface.configure_evaluate = h_configure_evaluate;
    h.iface.aggregate_evaluate = h_aggregate_evaluate;
    reset();
    int rc = run(&h, 3, err, sizeof err);
    CHECK(rc == FEDC_OK, "aggregate_evaluate run: %s", err);
    CHECK(eval_layout_bad == 0, "evaluation requests carry the model only");
    for (int r = 1; r <= 3; r++) {
        double s = 0;
        for (int i = 0; i < NC; i++) s += (double)(100 + r + i) / 1000.0;
        double want_acc = s / NC, want_loss = NC - 1;
        CHECK(aeval_n[r] == NC, "round %d: aggregate_evaluate saw %d answers", r, aeval_n[r]);
        int order = 1;
        for (uint32_t i = 0; i < NC; i++) order &= id_is(aeval_ids[r][i], i);
        CHECK(order, "round %d: evaluations in node-id order (%s %s %s %s)", r, aeval_ids[r][0],
              aeval_ids[r][1], aeval_ids[r][2], aeval_ids[r][3]);
        CHECK(aeval_acc[r] == want_acc,
              "round %d: the clients saw eval_tag %d (mean accuracy %.17g, want %.17g)", r, 100 + r,
              aeval_acc[r], want_acc);
        CHECK(rec[r].fed_eval_accuracy == want_acc && rec[r].fed_eval_loss == want_loss,
              "round %d: fed_eval accuracy %.17g loss %.17g, want %.17g %.17g", r, rec[r].fed_eval_accuracy,
              rec[r].fed_eval_loss, want_acc, want_loss);
        CHECK(isnan(rec[r].central_eval_accuracy) && isnan(rec[r].central_eval_loss),
              "round %d: no central evaluation", r);
    }

    /* Without aggregate_evaluate: the num_examples-weighted means. */
    hooks_init(&h);
    h.iface.configure_evaluate = h_configure_evaluate;
    reset();
    rc = run(&h, 2, err, sizeof err);
    CHECK(rc == FEDC_OK, "weighted-mean run: %s", err);
    CHECK(aeval_n[1] == 0, "no aggregate_evaluate, no call");
    for (int r = 1; r <= 2; r++) {
        double a = 0, l = 0, w = 0;
        for (int i = 0; i < NC; i++) {
            double n = 10.0 * (i + 1);
            a += (double)(100 + r + i) / 1000.0 * n;
            l += (double)i * n;
            w += n;
        }
        CHECK(fabs(rec[r].fed_eval_accuracy - a / w) <= 1e-15 && fabs(rec[r].fed_eval_loss - l / w) <= 1e-15,
              "round %d: weighted fed_eval accuracy %.17g loss %.17g, want %.17g %.17g", r,
              rec[r].fed_eval_accuracy, rec[r].fed_eval_loss, a / w, l / w);
    }
}

/* Never called: the server refuses the options first. */
static int stub_central(void *user, const fedc_params *model, uint64_t round, double *loss, double *accuracy,
                        char *err, size_t errlen)
{
    (void)user;
    (void)model;
    (void)round;
    (void)loss;
    (void)accuracy;
    return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "not expected");
}

static int stub_all(void *state, const fedc_round_info *info, const fedc_params *global,
                    const fedc_params *const *updates, const uint64_t *weights, size_t n, fedc_params *next,
                    char *err, size_t errlen)
{
    (void)state;
    (void)info;
    (void)global;
    (void)updates;
    (void)weights;
    (void)n;
    (void)next;
    return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "not expected");
}

static void test_central(void)
{
    char err[FEDC_ERRMSG_MAX];
    hooks h;
    hooks_init(&h);
    h.iface.evaluate = h_evaluate;
    reset();
    int rc = run(&h, 3, err, sizeof err);
    CHECK(rc == FEDC_OK, "evaluate run: %s", err);
    CHECK(central_calls == 3, "evaluate is called once a round (%d)", central_calls);
    for (int r = 1; r <= 3; r++) {
        CHECK(rec[r].central_eval_loss == (double)r && rec[r].central_eval_accuracy == 0.5 + r / 100.0,
              "round %d: central loss %g accuracy %g", r, rec[r].central_eval_loss,
              rec[r].central_eval_accuracy);
        CHECK(central_model0[r] == agg[r].mean_model[0],
              "round %d: evaluate sees the new model (%g, want %g)", r, (double)central_model0[r],
              (double)agg[r].mean_model[0]);
    }

    /* A failing evaluate: NaN for that round, the federation goes on. */
    hooks_init(&h);
    h.iface.evaluate = h_evaluate;
    h.eval_fail_round = 2;
    reset();
    rc = run(&h, 3, err, sizeof err);
    CHECK(rc == FEDC_OK, "failing evaluate run: %s", err);
    CHECK(nrec == 3 && !rec[2].failed, "round 2 succeeds and round 3 runs (%d recorded)", nrec);
    CHECK(isnan(rec[2].central_eval_loss) && isnan(rec[2].central_eval_accuracy),
          "round 2: central values NaN (%g %g)", rec[2].central_eval_loss, rec[2].central_eval_accuracy);
    CHECK(rec[3].central_eval_loss == 3.0 && rec[1].central_eval_loss == 1.0, "rounds 1 and 3 evaluated");

    /* Refused together with central_eval. */
    fedc_server_options so;
    fedc_server_options_init(&so);
    so.insecure = 1;
    so.listen = "127.0.0.1:0";
    so.strategy = &h.iface;
    so.central_eval = stub_central;
    err[0] = '\0';
    fedc_server *srv = fedc_server_create(&so, err, sizeof err);
    CHECK(srv == NULL, "evaluate with central_eval is refused");
    CHECK_CONTAINS(err, "central_eval", "evaluate with central_eval");
    fedc_server_destroy(srv);
    so.central_eval = NULL;
    srv = fedc_server_create(&so, err, sizeof err);
    CHECK(srv != NULL, "evaluate alone is accepted: %s", err);
    fedc_server_destroy(srv);
    h_destroy(&h);
}

static void test_fit_weight(void)
{
    char err[FEDC_ERRMSG_MAX];
    hooks h;
    hooks_init(&h);
    h.iface.fit_weight = h_fit_weight;
    h.weight_mode = 1;
    reset();
    omit_steps = 1;
    int rc = run(&h, 2, err, sizeof err);
    CHECK(rc == FEDC_OK, "fit_weight run: %s", err);
    CHECK(fw_calls == 8 && fw_errors == 2, "fit_weight: %d calls, %d errors", fw_calls, fw_errors);
    for (int r = 1; r <= 2; r++) {
        CHECK(!rec[r].failed && rec[r].clients_sampled == 4 && rec[r].clients_ok == 3 &&
                  rec[r].clients_failed == 1,
              "round %d: the update without local_steps is rejected (ok %u, failed %u)", r, rec[r].clients_ok,
              rec[r].clients_failed);
        CHECK(agg[r].nfits == 3, "round %d: aggregate_fit sees 3 fits (%zu)", r, agg[r].nfits);
        double sw = 0, sm = 0;
        for (uint32_t k = 0; k < 3 && k < agg[r].nfits; k++) {
            uint32_t i = k + 1;
            uint64_t n = (uint64_t)8 << i;
            double w = expected_weight(1, n, 5);
            CHECK(id_is(agg[r].ids[k], i) && agg[r].num_examples[k] == n && agg[r].has_steps[k],
                  "round %d fit %u: %s, %llu examples", r, k, agg[r].ids[k],
                  (unsigned long long)agg[r].num_examples[k]);
            CHECK(agg[r].weight[k] == w, "round %d fit %u: weight %.17g, fit_weight gave %.17g", r, k,
                  agg[r].weight[k], w);
            sw += w;
            sm += w * (double)(i + 1);
        }
        int same = 1;
        for (int e = 0; e < NE; e++) same &= fabs((double)agg[r].mean_model[e] - sm / sw) <= 1e-6;
        CHECK(same, "round %d: the mean is the fit_weight-weighted mean (%.9g, want %.9g)", r,
              (double)agg[r].mean_model[0], sm / sw);
    }
    CHECK(fabs((double)agg[2].global0 - 90.0 / 35.0) <= 1e-6, "round 2 is sent round 1's model (%.9g)",
          (double)agg[2].global0);

    /* A weight off the 2^-16 grid is rounded to it. */
    hooks_init(&h);
    h.iface.fit_weight = h_fit_weight;
    h.weight_mode = 2;
    reset();
    rc = run(&h, 1, err, sizeof err);
    CHECK(rc == FEDC_OK, "off-grid fit_weight run: %s", err);
    CHECK(agg[1].nfits == NC, "all 4 updates kept (%zu)", agg[1].nfits);
    for (uint32_t k = 0; k < NC && k < agg[1].nfits; k++) {
        double raw = expected_weight(2, (uint64_t)8 << k, 0), want = nearbyint(raw * 65536.0) / 65536.0;
        CHECK(agg[1].weight[k] == want && want != raw, "fit %u: weight %.17g, want %.17g (from %.17g)", k,
              agg[1].weight[k], want, raw);
    }
}

static void test_fit_tensors(void)
{
    char err[FEDC_ERRMSG_MAX];
    hooks h;
    hooks_init(&h);
    h.iface.fit_tensors = h_fit_tensors;
    reset();
    want_extra = 1;
    int rc = run(&h, 2, err, sizeof err);
    CHECK(rc == FEDC_OK, "fit_tensors run: %s", err);
    CHECK(ft_calls == 2 && ft_global_bad == 0, "fit_tensors: %d calls with the model only (%d bad)", ft_calls,
          ft_global_bad);
    CHECK(fit_layout_bad == 0, "every client saw the model and the strategy's extra tensor (%d did not)",
          fit_layout_bad);
    CHECK(eval_layout_bad == 0, "evaluation requests carry the model only (%d did not)", eval_layout_bad);
    double sw = 0, sm = 0, sx = 0;
    for (int i = 0; i < NC; i++) {
        double w = (double)(8 << i);
        sw += w;
        sm += w * (i + 1);
        sx += w * (i + 1) * 0.5;
    }
    for (int r = 1; r <= 2; r++) {
        CHECK(agg[r].called == 1 && agg[r].nglobal == 2 && agg[r].nmean == 2 && agg[r].nnext == 1,
              "round %d: aggregate_fit got global %zu, mean %zu, next %zu tensors", r, agg[r].nglobal,
              agg[r].nmean, agg[r].nnext);
        int same = 1;
        for (int e = 0; e < NE; e++)
            same &= fabs((double)agg[r].mean_model[e] - sm / sw) <= 1e-6 &&
                    fabs((double)agg[r].mean_extra[e] - (sx / sw + e)) <= 1e-6;
        CHECK(same, "round %d: mean model %.9g (want %.9g), mean extra[3] %.9g (want %.9g)", r,
              (double)agg[r].mean_model[0], sm / sw, (double)agg[r].mean_extra[3], sx / sw + 3);
        CHECK(rec[r].clients_ok == NC && !rec[r].failed, "round %d: 4 updates", r);
    }
    /* Round 2's clients were checked against the mean of round 1's extras. */
    CHECK(fabs((double)extra_expect[0] - sx / sw) <= 1e-6, "round 2 sent round 1's mean extra (%.9g)",
          (double)extra_expect[0]);
    h_destroy(&h);
}

static void test_refusals(void)
{
    hooks h;
    hooks_init(&h);
    h.iface.flags = FEDC_STRATEGY_ALL_UPDATES;
    h.iface.aggregate_all = NULL;
    fedc_server_options so;
    fedc_server_options_init(&so);
    so.insecure = 1;
    so.listen = "127.0.0.1:0";
    so.strategy = &h.iface;
    char err[FEDC_ERRMSG_MAX];
    for (int c = 0; c < 2; c++) {
        h.iface.aggregate_all = stub_all;
        h.iface.fit_weight = c == 0 ? h_fit_weight : NULL;
        h.iface.fit_tensors = c == 1 ? h_fit_tensors : NULL;
        err[0] = '\0';
        fedc_server *srv = fedc_server_create(&so, err, sizeof err);
        CHECK(srv == NULL, "%s with FEDC_STRATEGY_ALL_UPDATES is refused", c ? "fit_tensors" : "fit_weight");
        CHECK_CONTAINS(err, "fit_tensors and fit_weight do not go with FEDC_STRATEGY_ALL_UPDATES",
                       c ? "fit_tensors" : "fit_weight");
        fedc_server_destroy(srv);
    }
    /* The same strategy without either is accepted. */
    h.iface.fit_weight = NULL;
    h.iface.fit_tensors = NULL;
    fedc_server *srv = fedc_server_create(&so, err, sizeof err);
    CHECK(srv != NULL, "all-updates without fit_weight / fit_tensors is accepted: %s", err);
    fedc_server_destroy(srv);
}

int main(void)
{
    fedc_log_set_level(FEDC_LOG_OFF);
    test_select_fit();
    test_evaluate_hooks();
    test_central();
    test_fit_weight();
    test_fit_tensors();
    test_refusals();
    return test_summary();
}
