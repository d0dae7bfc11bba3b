/*
 * SCAFFOLD and FedNova (src/strategy/strategy.c) through the hooks the
 * server calls: fit_tensors (SCAFFOLD's control variate, sent with the
 * model and aggregated with it) and fit_weight (FedNova's per-update
 * weight). Each round is simulated exactly as the server runs it: weights
 * rounded to the accumulator's grid, every tensor folded in fixed point,
 * the mean finalized, fits in node-id order. Checked: fedc_sgd_norm against
 * its defining sum; FedNova is FedAvg bit for bit when every client ran the
 * same steps, and agrees with a naive transcription of Wang et al. (2020)
 * otherwise; SCAFFOLD's c follows c += |S|/N * mean(delta c); both resume
 * bit for bit after save/restore and refuse bad bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/strategy.h"
#include "strategy/fedavg.h"
#include "test_strategy_util.h"
#include "test_util.h"

#define MAXU 8

/* Where make_model's tensors start in the flat array. */
static const size_t tensor_off[2] = {0, 6};

/* One client's answer to a training request. */
typedef struct upd {
    const char *node;
    uint64_t n;    /* num_examples */
    double steps;  /* metric "local_steps"; < 0: absent */
    double mom;    /* metric "local_momentum"; < 0: absent */
    float x[NEL];  /* the returned model */
    float dc[NEL]; /* SCAFFOLD: the returned delta c */
} upd;

/* What a simulated round gives, as flat arrays. */
typedef struct round_out {
    float next[NEL];
    float mean[NEL];    /* the accumulator's mean of the models */
    float mean_dc[NEL]; /* ... and of the extra tensors (fit_tensors only) */
    double w[MAXU];     /* each update's folded weight, in input order */
} round_out;

static fedc_config *metrics_of(const upd *u)
{
    fedc_config *m = fedc_config_create();
    if (m && u->steps >= 0) fedc_config_set_f64(m, "local_steps", u->steps);
    if (m && u->mom >= 0) fedc_config_set_f64(m, "local_momentum", u->mom);
    return m;
}

/* Copies the tensors of `extra` after those of `p`. */
static int append_tensors(fedc_params *p, const fedc_params *extra)
{
    for (size_t i = 0; i < fedc_params_count(extra); i++) {
        const fedc_tensor *t = fedc_params_at(extra, i);
        if (fedc_params_add(p, t->name, t->dtype, t->ndim, t->shape, t->data, NULL, NULL, 0)) return -1;
    }
    return 0;
}

/*
 * One server round of a streaming strategy from global model g and the k
 * updates u (in arrival order): the request is the model plus fit_tensors'
 * tensors; each update weighs fedc__fedavg_round_weight(fit_weight(...)),
 * or its num_examples without fit_weight; all its tensors are folded and
 * committed; the finalized mean goes to aggregate_fit with `global` = the
 * request and `next` = a copy of the model. Returns aggregate_fit's status
 * (the harness's own failures are CHECK failures).
 */
static int sim_round(fedc_strategy *s, uint64_t round, const float *g, const upd *u, size_t k,
                     uint32_t population, round_out *o)
{
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = FEDC_OK;
    memset(o, 0, sizeof *o);
    fedc_params *model = make_model(g), *req = fedc_params_clone(model), *mean = NULL, *next = NULL;
    fedc_config *met[MAXU] = {0};
    fedc_fit_info fits[MAXU];
    size_t order[MAXU];
    fedc__fedavg acc;
    int acc_ok = 0;
    CHECK(model && req && k >= 1 && k <= MAXU, "sim_round: setup");
    if (!model || !req || k < 1 || k > MAXU) {
        rc = FEDC_ERR_NOMEM;
        goto out;
    }
    if (s->fit_tensors) {
        const fedc_params *extra = NULL;
        rc = s->fit_tensors(s->state, model, &extra, err, sizeof err);
        CHECK_STATUS(rc, FEDC_OK, "fit_tensors");
        if (rc) goto out;
        CHECK(append_tensors(req, extra) == 0, "sim_round: copying fit_tensors' tensors");
    }
    rc = fedc__fedavg_init(&acc, req, k, err, sizeof err);
    CHECK(rc == FEDC_OK, "fedavg_init: %s", err);
    if (rc) goto out;
    acc_ok = 1;
    fedc__fedavg_reset(&acc, k);
    for (size_t i = 0; i < k; i++) {
        met[i] = metrics_of(&u[i]);
        double w = (double)u[i].n;
        if (s->fit_weight) {
            rc = s->fit_weight(s->state, round, u[i].n, met[i], &w, err, sizeof err);
            CHECK(rc == FEDC_OK, "fit_weight of %s: %s", u[i].node, err);
            if (rc) goto out;
            w = fedc__fedavg_round_weight(w);
        }
        o->w[i] = w;
        rc = fedc__fedavg_check_weight(&acc, w, err, sizeof err);
        CHECK(rc == FEDC_OK, "check_weight %g of %s: %s", w, u[i].node, err);
        if (rc) goto out;
        for (size_t ti = 0; ti < fedc_params_count(req); ti++) {
            const float *src = ti < 2 ? u[i].x + tensor_off[ti] : u[i].dc + tensor_off[ti - 2];
            size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(req, ti));
            rc = fedc__fedavg_check_fold(&acc, ti, 0, src, numel, w, err, sizeof err);
            CHECK(rc == FEDC_OK, "check_fold of %s tensor %zu: %s", u[i].node, ti, err);
            if (rc) goto out;
        }
        fedc__fedavg_commit(&acc, w);
    }
    mean = fedc_params_clone(req);
    next = fedc_params_clone(model);
    CHECK(mean && next, "sim_round: clones");
    if (!mean || !next) {
        rc = FEDC_ERR_NOMEM;
        goto out;
    }
    rc = fedc__fedavg_finalize(&acc, mean, err, sizeof err);
    CHECK(rc == FEDC_OK, "finalize: %s", err);
    if (rc) goto out;
    flat(mean, o->mean);
    if (fedc_params_count(mean) == 4) {
        memcpy(o->mean_dc, fedc_params_at(mean, 2)->data, 6 * sizeof(float));
        memcpy(o->mean_dc + 6, fedc_params_at(mean, 3)->data, 4 * sizeof(float));
    }
    /* The fits in node-id order, as the server hands them over. */
    for (size_t i = 0; i < k; i++) order[i] = i;
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && strcmp(u[order[j - 1]].node, u[order[j]].node) > 0; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t i = 0; i < k; i++) {
        size_t j = order[i];
        fits[i] = (fedc_fit_info){u[j].node, u[j].n, o->w[j], met[j]};
    }
    fedc_round_info info = {round, population, (uint32_t)k, k, fits};
    err[0] = '\0';
    rc = s->aggregate_fit(s->state, &info, req, mean, next, err, sizeof err);
    if (rc == FEDC_OK)
        flat(next, o->next);
    else
        TEST_NOTE("%s round %llu: aggregate_fit: %s", s->name, (unsigned long long)round, err);
out:
    if (acc_ok) fedc__fedavg_free(&acc);
    for (size_t i = 0; i < MAXU; i++) fedc_config_destroy(met[i]);
    fedc_params_destroy(model);
    fedc_params_destroy(req);
    fedc_params_destroy(mean);
    fedc_params_destroy(next);
    return rc;
}

/* k updates around g: client i moved by about steps_i * 0.02 * (a common
 * direction + noise), and its delta c is of order 0.1. */
static void make_updates(fedc_rng *r, const float *g, upd *u, size_t k, const uint64_t *n,
                         const double *steps, double mom)
{
    static const char *nodes[MAXU] = {"node-c", "node-a", "node-e", "node-b",
                                      "node-d", "node-g", "node-f", "node-h"};
    for (size_t i = 0; i < k; i++) {
        u[i].node = nodes[i];
        u[i].n = n[i];
        u[i].steps = steps[i];
        u[i].mom = mom;
        double scale = 0.02 * (steps[i] > 0 ? steps[i] : 1.0);
        for (int j = 0; j < NEL; j++) {
            u[i].x[j] = g[j] + (float)(scale * (0.5 + 0.3 * fedc_rng_normal(r)));
            u[i].dc[j] = (float)(0.1 * fedc_rng_normal(r));
        }
    }
}

static void random_model(fedc_rng *r, float *g)
{
    for (int j = 0; j < NEL; j++) g[j] = (float)fedc_rng_normal(r);
}

/* ---- fedc_sgd_norm ----------------------------------------------------- */

static void test_sgd_norm(void)
{
    static const double plain[] = {1, 2, 7, 1000, 1e9};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        CHECK(fedc_sgd_norm(plain[i], 0.0) == plain[i], "sgd_norm(%g, 0) = %.17g, want %g", plain[i],
              fedc_sgd_norm(plain[i], 0.0), plain[i]);
    double v = fedc_sgd_norm(3, 0.5);
    CHECK(fabs(v - 4.25) <= 1e-12, "sgd_norm(3, 0.5) = %.17g, want 4.25", v);

    static const struct {
        int steps;
        double mom;
    } cases[] = {{1, 0.9}, {10, 0.9}, {187, 0.9}, {50, 0.3}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double sum = 0, pk = 1;
        for (int k = 1; k <= cases[c].steps; k++) {
            pk *= cases[c].mom;
            sum += (1.0 - pk) / (1.0 - cases[c].mom);
        }
        double got = fedc_sgd_norm(cases[c].steps, cases[c].mom);
        CHECK(fabs(got - sum) <= 1e-12 * fabs(sum), "sgd_norm(%d, %g) = %.17g, the direct sum %.17g",
              cases[c].steps, cases[c].mom, got, sum);
    }
    CHECK(fedc_sgd_norm(1, 0.9) == 1.0, "sgd_norm(1, 0.9) = %.17g, want 1", fedc_sgd_norm(1, 0.9));

    static const struct {
        double steps, mom;
    } bad[] = {{0, 0}, {0, 0.5}, {0.5, 0}, {-3, 0}, {5, 1.0}, {5, -0.1}, {NAN, 0}, {5, NAN}, {5, 1.5}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++)
        CHECK(isnan(fedc_sgd_norm(bad[c].steps, bad[c].mom)), "sgd_norm(%g, %g) = %.17g, want NaN",
              bad[c].steps, bad[c].mom, fedc_sgd_norm(bad[c].steps, bad[c].mom));
}

/* ---- FedNova ----------------------------------------------------------- */

/* Equal local steps: the weights are FedAvg's (up to a_ref / a_i), and
 * once a_ref is that a_i they are exactly FedAvg's, as is the model. */
static void test_fednova_equal_steps(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 11);
    fedc_strategy *nova = make("fednova", NULL, 0, NULL, 0);
    fedc_strategy *avg = make("fedavg", NULL, 0, NULL, 0);
    /* In node-id order the sums run over 1, 4, 999 examples, for which the
     * sum of n_i a over the sum of n_i is not a in double: tau_eff must
     * be a exactly all the same. */
    const uint64_t n[3] = {4, 1, 999};
    const double steps[3] = {7, 7, 7};
    const double a = fedc_sgd_norm(7, 0.9);
    float g[NEL];
    upd u[3];
    round_out on, oa;
    random_model(&r, g);
    make_updates(&r, g, u, 3, n, steps, 0.9);

    CHECK_STATUS(sim_round(nova, 1, g, u, 3, 3, &on), FEDC_OK, "fednova round 1");
    CHECK_STATUS(sim_round(avg, 1, g, u, 3, 3, &oa), FEDC_OK, "fedavg round 1");
    for (int i = 0; i < 3; i++)
        CHECK(on.w[i] == fedc__fedavg_round_weight((double)n[i] / a), "round 1 weight %d: %.17g, want %.17g",
              i, on.w[i], fedc__fedavg_round_weight((double)n[i] / a));
    for (int j = 0; j < NEL; j++)
        CHECK(fabs((double)on.next[j] - (double)oa.next[j]) <= 1e-6,
              "round 1 (a_ref 1): fednova[%d] = %.9g, fedavg %.9g", j, on.next[j], oa.next[j]);

    /* Round 2: a_ref = a, so each weight is num_examples exactly, even
     * before the server rounds it. */
    {
        char err[FEDC_ERRMSG_MAX];
        fedc_config *m = metrics_of(&u[0]);
        for (int i = 0; i < 3; i++) {
            double w = -1;
            CHECK_STATUS(nova->fit_weight(nova->state, 2, n[i], m, &w, err, sizeof err), FEDC_OK,
                         "fit_weight round 2");
            CHECK(w == (double)n[i],
                  "round 2 fit_weight(%llu examples, same steps) = %.17g, want exactly %llu",
                  (unsigned long long)n[i], w, (unsigned long long)n[i]);
        }
        fedc_config_destroy(m);
    }
    float g2[NEL];
    memcpy(g2, oa.next, sizeof g2);
    make_updates(&r, g2, u, 3, n, steps, 0.9);
    CHECK_STATUS(sim_round(nova, 2, g2, u, 3, 3, &on), FEDC_OK, "fednova round 2");
    CHECK_STATUS(sim_round(avg, 2, g2, u, 3, 3, &oa), FEDC_OK, "fedavg round 2");
    for (int i = 0; i < 3; i++)
        CHECK(on.w[i] == (double)n[i], "round 2 weight %d: %.17g, want num_examples %llu", i, on.w[i],
              (unsigned long long)n[i]);
    CHECK(memcmp(on.next, oa.next, sizeof on.next) == 0,
          "round 2: fednova with equal steps = fedavg bit for bit");
    CHECK(memcmp(on.next, on.mean, sizeof on.next) == 0, "round 2: fednova's next is the accumulator's mean");
    fedc_strategy_destroy(nova);
    fedc_strategy_destroy(avg);
}

/* With a factor of exactly 1 (FedNova at equal steps, SCAFFOLD with
 * server_lr 1) next is the mean itself, even where x + (mean - x) would
 * round differently: a value that moves from 1 to 1e-20. */
static void test_exact_mean(void)
{
    float g[NEL], mean[NEL];
    fedc_rng r;
    fedc_rng_seed(&r, 61);
    random_model(&r, g);
    for (int j = 0; j < NEL; j++) mean[j] = g[j] + (float)(0.01 * fedc_rng_normal(&r));
    g[3] = 1.0f;
    mean[3] = 1e-20f;
    char err[FEDC_ERRMSG_MAX];

    fedc_strategy *nova = make("fednova", NULL, 0, NULL, 0);
    fedc_config *m = fedc_config_create();
    fedc_config_set_f64(m, "local_steps", 1); /* a_i = 1 = a_ref: weight = num_examples */
    fedc_fit_info fits[2] = {{"node-a", 30, 30.0, m}, {"node-b", 50, 50.0, m}};
    fedc_round_info info = {1, 2, 2, 2, fits};
    fedc_params *pg = make_model(g), *pm = make_model(mean), *pn = make_model(g);
    float out[NEL];
    CHECK_STATUS(nova->aggregate_fit(nova->state, &info, pg, pm, pn, err, sizeof err), FEDC_OK,
                 "fednova aggregate_fit, one step each");
    flat(pn, out);
    CHECK(memcmp(out, mean, sizeof out) == 0,
          "fednova with factor 1: next is the mean bit for bit (next[3] %g)", out[3]);
    fedc_params_destroy(pn);
    fedc_config_destroy(m);
    fedc_strategy_destroy(nova);

    /* SCAFFOLD: global and mean carry c (zero) and mean delta c (zero). */
    fedc_strategy *sc = make("scaffold", NULL, 0, NULL, 0);
    const fedc_params *ct = NULL;
    CHECK_STATUS(sc->fit_tensors(sc->state, pg, &ct, err, sizeof err), FEDC_OK, "scaffold fit_tensors");
    fedc_params *gq = fedc_params_clone(pg), *mq = fedc_params_clone(pm);
    pn = make_model(g);
    CHECK(ct && gq && mq && append_tensors(gq, ct) == 0 && append_tensors(mq, ct) == 0,
          "building the request");
    fedc_fit_info sf = {"node-a", 30, 30.0, NULL};
    fedc_round_info sinfo = {1, 1, 1, 1, &sf};
    CHECK_STATUS(sc->aggregate_fit(sc->state, &sinfo, gq, mq, pn, err, sizeof err), FEDC_OK,
                 "scaffold aggregate_fit");
    flat(pn, out);
    CHECK(memcmp(out, mean, sizeof out) == 0,
          "scaffold with server_lr 1: next is the mean bit for bit (next[3] %g)", out[3]);
    fedc_params_destroy(gq);
    fedc_params_destroy(mq);
    fedc_params_destroy(pg);
    fedc_params_destroy(pm);
    fedc_params_destroy(pn);
    fedc_strategy_destroy(sc);
}

/* x - tau_eff * sum_i p_i (x - y_i) / a_i, in double. */
static void naive_nova(const float *g, const upd *u, size_t k, double *out, double *tau_eff)
{
    double sum_n = 0, a[MAXU];
    for (size_t i = 0; i < k; i++) sum_n += (double)u[i].n;
    double te = 0;
    for (size_t i = 0; i < k; i++) {
        a[i] = fedc_sgd_norm(u[i].steps, u[i].mom >= 0 ? u[i].mom : 0.0);
        te += (double)u[i].n / sum_n * a[i];
    }
    for (int j = 0; j < NEL; j++) {
        double d = 0;
        for (size_t i = 0; i < k; i++)
            d += (double)u[i].n / sum_n * ((double)g[j] - (double)u[i].x[j]) / a[i];
        out[j] = (double)g[j] - te * d;
    }
    *tau_eff = te;
}

static void test_fednova_unequal_steps(void)
{
    const uint64_t n[4] = {100, 300, 50, 250};
    const double steps[4] = {5, 20, 2, 11};
    const double moms[2] = {-1, 0.9}; /* no momentum metric, then 0.9 */
    for (int mi = 0; mi < 2; mi++) {
        fedc_rng r;
        fedc_rng_seed(&r, 21 + (uint64_t)mi);
        fedc_strategy *nova = make("fednova", NULL, 0, NULL, 0);
        fedc_strategy *perm = make("fednova", NULL, 0, NULL, 0);
        float g[NEL];
        random_model(&r, g);
        double prev_tau = 1.0;
        for (uint64_t round = 1; round <= 2; round++) {
            upd u[4], up[4];
            round_out o, op;
            double want[NEL], tau_eff;
            make_updates(&r, g, u, 4, n, steps, moms[mi]);
            /* The same updates arriving in another order. */
            static const int p[4] = {2, 0, 3, 1};
            for (int i = 0; i < 4; i++) up[i] = u[p[i]];
            naive_nova(g, u, 4, want, &tau_eff);
            CHECK_STATUS(sim_round(nova, round, g, u, 4, 4, &o), FEDC_OK, "fednova unequal steps");
            CHECK_STATUS(sim_round(perm, round, g, up, 4, 4, &op), FEDC_OK, "fednova permuted");
            /* The weights use the previous round's tau_eff as a_ref. */
            for (int i = 0; i < 4; i++) {
                double a = fedc_sgd_norm(steps[i], moms[mi] >= 0 ? moms[mi] : 0);
                double w = fedc__fedavg_round_weight((double)n[i] * (prev_tau / a));
                CHECK(fabs(o.w[i] - w) <= 1e-9 * w, "momentum %g round %llu weight %d: %.17g, want %.17g",
                      moms[mi], (unsigned long long)round, i, o.w[i], w);
            }
            double worst = 0;
            int at = 0;
            for (int j = 0; j < NEL; j++) {
                double e = fabs((double)o.next[j] - want[j]);
                if (e > worst) worst = e, at = j;
            }
            CHECK(worst <= 1e-5, "momentum %g round %llu: next[%d] = %.9g, naive FedNova %.9g", moms[mi],
                  (unsigned long long)round, at, o.next[at], want[at]);
            /* The step must not be FedAvg's: the test would be vacuous. */
            double moved = 0;
            for (int j = 0; j < NEL; j++) moved = fmax(moved, fabs((double)o.mean[j] - want[j]));
            CHECK(moved > 1e-3, "momentum %g round %llu: FedNova differs from FedAvg here (%g)", moms[mi],
                  (unsigned long long)round, moved);
            CHECK(memcmp(o.next, op.next, sizeof o.next) == 0,
                  "momentum %g round %llu: the order of arrival does not change the model", moms[mi],
                  (unsigned long long)round);
            memcpy(g, o.next, sizeof g);
            prev_tau = tau_eff;
        }
        CHECK(prev_tau != 1.0, "tau_eff moved off 1 (%g)", prev_tau);
        fedc_strategy_destroy(nova);
        fedc_strategy_destroy(perm);
    }
}

static void test_fednova_errors(void)
{
    fedc_strategy *s = make("fednova", NULL, 0, NULL, 0);
    char err[FEDC_ERRMSG_MAX];
    double w = -1;
    fedc_config *m = fedc_config_create();
    strcpy(err, "");
    CHECK_STATUS(s->fit_weight(s->state, 1, 10, m, &w, err, sizeof err), FEDC_ERR_INVALID,
                 "fit_weight without local_steps");
    CHECK_CONTAINS(err, "local_steps", "no local_steps");
    static const struct {
        const char *key;
        double v;
    } bad[] = {{"local_steps", 0},
               {"local_steps", 2.5},
               {"local_steps", -3},
               {"local_momentum", 1.0},
               {"local_momentum", -0.1}};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        fedc_config_clear(m);
        fedc_config_set_f64(m, "local_steps", 4);
        fedc_config_set_f64(m, bad[c].key, bad[c].v);
        strcpy(err, "");
        CHECK_STATUS(s->fit_weight(s->state, 1, 10, m, &w, err, sizeof err), FEDC_ERR_INVALID, bad[c].key);
        CHECK_CONTAINS(err, bad[c].key, bad[c].key);
    }
    /* local_steps of another kind than a number. */
    fedc_config_clear(m);
    fedc_config_set_str(m, "local_steps", "many");
    strcpy(err, "");
    CHECK_STATUS(s->fit_weight(s->state, 1, 10, m, &w, err, sizeof err), FEDC_ERR_INVALID,
                 "local_steps as a string");
    CHECK_CONTAINS(err, "local_steps", "local_steps as a string");
    /* A valid one, for contrast: 10 * 1 / 4. */
    fedc_config_clear(m);
    fedc_config_set_f64(m, "local_steps", 4);
    CHECK_STATUS(s->fit_weight(s->state, 1, 10, m, &w, err, sizeof err), FEDC_OK, "fit_weight steps 4");
    CHECK(w == 2.5, "fit_weight(10 examples, 4 steps) = %.17g, want 2.5", w);

    /* aggregate_fit refuses a fit without the metric, naming the node. */
    float g[NEL] = {0};
    fedc_params *pg = make_model(g), *pm = make_model(g), *pn = make_model(g);
    fedc_config *empty = fedc_config_create();
    fedc_fit_info fit = {"node-x", 10, 10.0, empty};
    fedc_round_info info = {1, 1, 1, 1, &fit};
    strcpy(err, "");
    CHECK_STATUS(s->aggregate_fit(s->state, &info, pg, pm, pn, err, sizeof err), FEDC_ERR_INVALID,
                 "aggregate_fit with a fit lacking local_steps");
    CHECK_CONTAINS(err, "local_steps", "aggregate_fit without the metric");
    CHECK_CONTAINS(err, "node-x", "aggregate_fit without the metric");
    fedc_config_destroy(empty);
    fedc_params_destroy(pg);
    fedc_params_destroy(pm);
    fedc_params_destroy(pn);
    fedc_config_destroy(m);
    fedc_strategy_destroy(s);
}

/* Restores `len` bytes from a buffer of exactly that size (so that the
 * sanitizer sees any read past the end). */
static int restore_exact(fedc_strategy *s, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    uint8_t *b = malloc(len ? len : 1);
    if (len) memcpy(b, buf, len);
    int rc = s->restore(s->state, b, len, err, errlen);
    free(b);
    return rc;
}

static void test_fednova_save_restore(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 31);
    const uint64_t n[3] = {40, 90, 10};
    const double steps[3] = {3, 12, 30};
    fedc_strategy *a = make("fednova", NULL, 0, NULL, 0);
    float g[NEL];
    upd u[3];
    round_out oa, ob;
    random_model(&r, g);
    make_updates(&r, g, u, 3, n, steps, 0.5);
    CHECK_STATUS(sim_round(a, 1, g, u, 3, 3, &oa), FEDC_OK, "fednova round 1 before saving");

    uint8_t *buf = NULL, *other = NULL;
    size_t len = 0, olen = 0;
    char err[FEDC_ERRMSG_MAX];
    CHECK_STATUS(a->save(a->state, &buf, &len), FEDC_OK, "fednova save");
    fedc_strategy *b = make("fednova", NULL, 0, NULL, 0);
    CHECK_STATUS(restore_exact(b, buf, len, err, sizeof err), FEDC_OK, "fednova restore");

    /* Bad bytes are refused and leave b as restored. */
    for (size_t cut = 0; cut < len; cut++) {
        strcpy(err, "");
        int rc = restore_exact(b, buf, cut, err, sizeof err);
        CHECK(rc == FEDC_ERR_FORMAT, "restore of %zu of %zu bytes: got %d (%s), want FEDC_ERR_FORMAT", cut,
              len, rc, fedc_strerror(rc));
    }
    fedc_strategy *avg = make("fedavg", NULL, 0, NULL, 0);
    fedc_strategy *scaf = make("scaffold", NULL, 0, NULL, 0);
    CHECK_STATUS(avg->save(avg->state, &other, &olen), FEDC_OK, "fedavg save");
    CHECK_STATUS(restore_exact(b, other, olen, err, sizeof err), FEDC_ERR_FORMAT,
                 "fednova restores fedavg's bytes");
    free(other);
    other = NULL;
    CHECK_STATUS(scaf->save(scaf->state, &other, &olen), FEDC_OK, "scaffold save");
    CHECK_STATUS(restore_exact(b, other, olen, err, sizeof err), FEDC_ERR_FORMAT,
                 "fednova restores scaffold's bytes");
    free(other);
    /* a_ref <= 0 in otherwise well-formed bytes. */
    {
        uint8_t *bad = malloc(len);
        memcpy(bad, buf, len);
        memset(bad + len - 8, 0, 8);
        CHECK_STATUS(restore_exact(b, bad, len, err, sizeof err), FEDC_ERR_FORMAT,
                     "fednova restores a_ref 0");
        free(bad);
    }
    fedc_strategy_destroy(avg);
    fedc_strategy_destroy(scaf);

    /* Round 2, from the same global model and updates, on both. */
    float g2[NEL];
    memcpy(g2, oa.next, sizeof g2);
    make_updates(&r, g2, u, 3, n, steps, 0.5);
    fedc_config *m = metrics_of(&u[1]);
    double wa = 0, wb = 0;
    CHECK_STATUS(a->fit_weight(a->state, 2, u[1].n, m, &wa, err, sizeof err), FEDC_OK, "fit_weight a");
    CHECK_STATUS(b->fit_weight(b->state, 2, u[1].n, m, &wb, err, sizeof err), FEDC_OK, "fit_weight b");
    CHECK(wa == wb, "fit_weight after restore: %.17g, before %.17g", wb, wa);
    double a1 = fedc_sgd_norm(12, 0.5);
    CHECK(fabs(wa - (double)u[1].n / a1) > 1e-6 * wa, "a_ref after round 1 is not 1 (weight %.17g)", wa);
    fedc_config_destroy(m);
    CHECK_STATUS(sim_round(a, 2, g2, u, 3, 3, &oa), FEDC_OK, "fednova round 2 (uninterrupted)");
    CHECK_STATUS(sim_round(b, 2, g2, u, 3, 3, &ob), FEDC_OK, "fednova round 2 (restored)");
    CHECK(memcmp(oa.w, ob.w, sizeof oa.w) == 0, "round 2 weights equal after restore");
    CHECK(memcmp(oa.next, ob.next, sizeof oa.next) == 0, "round 2 model equal bit for bit after restore");

    /* And the state after round 2 saves to the same bytes. */
    uint8_t *ba = NULL, *bb = NULL;
    size_t la = 0, lb = 0;
    CHECK_STATUS(a->save(a->state, &ba, &la), FEDC_OK, "save a");
    CHECK_STATUS(b->save(b->state, &bb, &lb), FEDC_OK, "save b");
    CHECK(la == lb && ba && bb && memcmp(ba, bb, la) == 0, "the states after round 2 save to the same bytes");
    free(ba);
    free(bb);
    free(buf);
    fedc_strategy_destroy(a);
    fedc_strategy_destroy(b);
}

/* ---- SCAFFOLD ---------------------------------------------------------- */

/* c as fit_tensors sends it, flat. */
static int read_c(fedc_strategy *s, const float *g, float *c)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *model = make_model(g);
    const fedc_params *ctl = NULL;
    int rc = s->fit_tensors(s->state, model, &ctl, err, sizeof err);
    CHECK(rc == FEDC_OK, "fit_tensors: %s", rc ? err : "");
    if (!rc && fedc_params_count(ctl) == 2) {
        memcpy(c, fedc_params_at(ctl, 0)->data, 6 * sizeof(float));
        memcpy(c + 6, fedc_params_at(ctl, 1)->data, 4 * sizeof(float));
    }
    fedc_params_destroy(model);
    return rc;
}

static void naive_mean_dc(const upd *u, size_t k, double *out)
{
    double sum_n = 0;
    for (size_t i = 0; i < k; i++) sum_n += (double)u[i].n;
    for (int j = 0; j < NEL; j++) {
        out[j] = 0;
        for (size_t i = 0; i < k; i++) out[j] += (double)u[i].n * (double)u[i].dc[j];
        out[j] /= sum_n;
    }
}

static void test_scaffold(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 41);
    char err[FEDC_ERRMSG_MAX];
    fedc_strategy *s = make("scaffold", NULL, 0, NULL, 0);
    CHECK(s->fit_tensors != NULL, "scaffold has fit_tensors");
    CHECK(s->fit_weight == NULL, "scaffold has no fit_weight");
    if (!s->fit_tensors) {
        fedc_strategy_destroy(s);
        return;
    }
    float g[NEL];
    random_model(&r, g);

    fedc_params *model = make_model(g);
    const fedc_params *ctl = NULL;
    CHECK_STATUS(s->fit_tensors(s->state, model, &ctl, err, sizeof err), FEDC_OK, "scaffold fit_tensors");
    CHECK(ctl && fedc_params_count(ctl) == 2, "fit_tensors gives 2 tensors, got %zu",
          ctl ? fedc_params_count(ctl) : 0);
    if (ctl && fedc_params_count(ctl) == 2) {
        static const char *want[2] = {"scaffold/w", "scaffold/b"};
        for (size_t i = 0; i < 2; i++) {
            const fedc_tensor *t = fedc_params_at(ctl, i), *mt = fedc_params_at(model, i);
            CHECK(strcmp(t->name, want[i]) == 0, "control tensor %zu is named '%s', want '%s'", i, t->name,
                  want[i]);
            CHECK(t->dtype == FEDC_F32 && t->ndim == mt->ndim &&
                      memcmp(t->shape, mt->shape, (size_t)t->ndim * sizeof t->shape[0]) == 0,
                  "control tensor '%s' has the model's shape", t->name);
            int zero = 1;
            for (int64_t j = 0; j < fedc_tensor_numel(t); j++) zero &= ((const float *)t->data)[j] == 0.0f;
            CHECK(zero, "control tensor '%s' is zero at first", t->name);
        }
    }
    fedc_params_destroy(model);

    fedc_config *cfg = fedc_config_create();
    int on = 0;
    CHECK_STATUS(s->configure_fit ? s->configure_fit(s->state, 1, cfg) : -1, FEDC_OK,
                 "scaffold configure_fit");
    CHECK(fedc_config_get_bool(cfg, "scaffold", &on) == FEDC_OK && on == 1,
          "configure_fit sets scaffold=true");
    fedc_config_destroy(cfg);

    /* One round, population = the number of fits: c = mean(delta c). */
    const uint64_t n[3] = {10, 70, 20};
    const double steps[3] = {-1, -1, -1};
    upd u[3];
    round_out o;
    double want_dc[NEL];
    float c[NEL];
    make_updates(&r, g, u, 3, n, steps, -1);
    naive_mean_dc(u, 3, want_dc);
    CHECK_STATUS(sim_round(s, 1, g, u, 3, 3, &o), FEDC_OK, "scaffold round 1");
    CHECK(memcmp(o.next, o.mean, sizeof o.next) == 0,
          "scaffold with server_lr 1: next is the mean bit for bit");
    read_c(s, g, c);
    for (int j = 0; j < NEL; j++)
        CHECK(fabs((double)c[j] - want_dc[j]) <= 1e-6, "c[%d] = %.9g after round 1, want mean delta c %.9g",
              j, c[j], want_dc[j]);

    /* Population twice the fits: c moves half as far. */
    fedc_strategy *h = make("scaffold", NULL, 0, NULL, 0);
    float ch[NEL];
    CHECK_STATUS(sim_round(h, 1, g, u, 3, 6, &o), FEDC_OK, "scaffold round 1, population 6");
    read_c(h, g, ch);
    for (int j = 0; j < NEL; j++) {
        CHECK(fabs((double)ch[j] - 0.5 * want_dc[j]) <= 1e-6, "c[%d] = %.9g with population 6, want %.9g", j,
              ch[j], 0.5 * want_dc[j]);
        CHECK(ch[j] == 0.5f * c[j], "c[%d] with population 6 (%.9g) is half that with 3 (%.9g)", j, ch[j],
              c[j]);
    }
    fedc_strategy_destroy(h);

    /* A population smaller than the fits: the factor is capped at 1. */
    fedc_strategy *cap = make("scaffold", NULL, 0, NULL, 0);
    float cc[NEL];
    CHECK_STATUS(sim_round(cap, 1, g, u, 3, 1, &o), FEDC_OK, "scaffold round 1, population 1");
    read_c(cap, g, cc);
    CHECK(memcmp(cc, c, sizeof cc) == 0, "population below the fits: c moves by the mean, as with factor 1");
    fedc_strategy_destroy(cap);

    /* Round 2 adds to c. */
    float g2[NEL], c2[NEL];
    double want2[NEL];
    memcpy(g2, o.next, sizeof g2);
    make_updates(&r, g2, u, 3, n, steps, -1);
    naive_mean_dc(u, 3, want2);
    CHECK_STATUS(sim_round(s, 2, g2, u, 3, 4, &o), FEDC_OK, "scaffold round 2");
    read_c(s, g2, c2);
    for (int j = 0; j < NEL; j++)
        CHECK(fabs((double)c2[j] - ((double)c[j] + 0.75 * want2[j])) <= 2e-6,
              "c[%d] = %.9g after round 2, want %.9g + 3/4 * %.9g", j, c2[j], c[j], want2[j]);

    /* server_lr 0.5: half way from x to the mean. */
    fedc_strategy *half = make("scaffold", "server_lr", 0.5, NULL, 0);
    CHECK_STATUS(sim_round(half, 1, g2, u, 3, 3, &o), FEDC_OK, "scaffold server_lr 0.5");
    for (int j = 0; j < NEL; j++) {
        double want = (double)g2[j] + 0.5 * ((double)o.mean[j] - (double)g2[j]);
        CHECK(fabs((double)o.next[j] - want) <= 1e-6, "server_lr 0.5: next[%d] = %.9g, want %.9g", j,
              o.next[j], want);
    }

    /* A mean without the control tensors is refused, and c is left alone. */
    {
        float before[NEL], after[NEL];
        read_c(half, g2, before);
        fedc_params *gm = make_model(g2), *mm = make_model(g2), *nx = make_model(g2);
        const fedc_params *ct = NULL;
        half->fit_tensors(half->state, gm, &ct, err, sizeof err);
        fedc_params *req = fedc_params_clone(gm);
        CHECK(ct && req && append_tensors(req, ct) == 0, "building the request");
        fedc_fit_info fit = {"node-a", 10, 10.0, NULL};
        fedc_round_info info = {2, 1, 1, 1, &fit};
        strcpy(err, "");
        CHECK_STATUS(half->aggregate_fit(half->state, &info, req, mm, nx, err, sizeof err), FEDC_ERR_SHAPE,
                     "scaffold aggregate_fit with a mean lacking the control tensors");
        CHECK(err[0] != '\0', "the refusal has a message");
        /* global lacking them too. */
        CHECK_STATUS(half->aggregate_fit(half->state, &info, gm, req, nx, err, sizeof err), FEDC_ERR_SHAPE,
                     "scaffold aggregate_fit with a global lacking the control tensors");
        read_c(half, g2, after);
        CHECK(memcmp(before, after, sizeof before) == 0, "a refused round leaves c as it was");
        fedc_params_destroy(gm);
        fedc_params_destroy(mm);
        fedc_params_destroy(nx);
        fedc_params_destroy(req);
    }
    fedc_strategy_destroy(half);
    fedc_strategy_destroy(s);
}

static void test_scaffold_save_restore(void)
{
    fedc_rng r;
    fedc_rng_seed(&r, 51);
    const uint64_t n[4] = {5, 60, 33, 2};
    const double steps[4] = {-1, -1, -1, -1};
    fedc_strategy *a = make("scaffold", "server_lr", 0.7, NULL, 0);
    float g[NEL];
    upd u[4];
    round_out oa, ob;
    random_model(&r, g);
    for (uint64_t round = 1; round <= 2; round++) {
        make_updates(&r, g, u, 4, n, steps, -1);
        CHECK_STATUS(sim_round(a, round, g, u, 4, 10, &oa), FEDC_OK, "scaffold round before saving");
        memcpy(g, oa.next, sizeof g);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[FEDC_ERRMSG_MAX];
    CHECK_STATUS(a->save(a->state, &buf, &len), FEDC_OK, "scaffold save");
    fedc_strategy *b = make("scaffold", "server_lr", 0.7, NULL, 0);
    CHECK_STATUS(restore_exact(b, buf, len, err, sizeof err), FEDC_OK, "scaffold restore");
    for (size_t cut = 0; cut < len; cut += 7) {
        int rc = restore_exact(b, buf, cut, err, sizeof err);
        CHECK(rc == FEDC_ERR_FORMAT, "scaffold restore of %zu of %zu bytes: got %d, want FEDC_ERR_FORMAT",
              cut, len, rc);
    }
    {
        fedc_strategy *nova = make("fednova", NULL, 0, NULL, 0);
        uint8_t *nb = NULL;
        size_t nl = 0;
        CHECK_STATUS(nova->save(nova->state, &nb, &nl), FEDC_OK, "fednova save");
        CHECK_STATUS(restore_exact(b, nb, nl, err, sizeof err), FEDC_ERR_FORMAT,
                     "scaffold restores fednova's bytes");
        free(nb);
        fedc_strategy_destroy(nova);
    }
    float ca[NEL], cb[NEL];
    read_c(a, g, ca);
    read_c(b, g, cb);
    CHECK(memcmp(ca, cb, sizeof ca) == 0, "c after restore equals c before");
    int nonzero = 0;
    for (int j = 0; j < NEL; j++) nonzero |= ca[j] != 0;
    CHECK(nonzero, "c is not zero after two rounds");

    make_updates(&r, g, u, 4, n, steps, -1);
    CHECK_STATUS(sim_round(a, 3, g, u, 4, 10, &oa), FEDC_OK, "scaffold round 3 (uninterrupted)");
    CHECK_STATUS(sim_round(b, 3, g, u, 4, 10, &ob), FEDC_OK, "scaffold round 3 (restored)");
    CHECK(memcmp(oa.next, ob.next, sizeof oa.next) == 0, "round 3 model equal bit for bit after restore");
    read_c(a, g, ca);
    read_c(b, g, cb);
    CHECK(memcmp(ca, cb, sizeof ca) == 0, "c after round 3 equal bit for bit after restore");
    free(buf);
    fedc_strategy_destroy(a);
    fedc_strategy_destroy(b);
}

int main(void)
{
    test_sgd_norm();
    test_fednova_equal_steps();
    test_exact_mean();
    test_fednova_unequal_steps();
    test_fednova_errors();
    test_fednova_save_restore();
    test_scaffold();
    test_scaffold_save_restore();
    return test_summary();
}
