/*
 * The built-in strategies (src/strategy/strategy.c): FedAvgM with momentum 0
 * and server-lr 1 is FedAvg bit for bit; the adaptive ones agree with a
 * naive transcription of Reddi et al. (2021), Algorithm 2; save/restore
 * resumes bit for bit; bad names and parameters are refused with messages
 * that name the flag.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/server.h"
#include "fedc/strategy.h"
#include "test_strategy_util.h"
#include "test_util.h"

/* One round: next = strategy(global, mean), as flat arrays. */
static int run_round(fedc_strategy *s, uint64_t round, const float *g, const float *mean, float *next)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *pg = make_model(g), *pm = make_model(mean), *pn = make_model(g);
    fedc_round_info info = {round, 1, 1, 0, NULL};
    int rc = s->aggregate_fit(s->state, &info, pg, pm, pn, err, sizeof err);
    CHECK(rc == FEDC_OK, "%s round %llu: %s", s->name, (unsigned long long)round, err);
    flat(pn, next);
    fedc_params_destroy(pg);
    fedc_params_destroy(pm);
    fedc_params_destroy(pn);
    return rc;
}

/* The round-r inputs: a global model and the clients' mean near it. */
static void inputs(fedc_rng *r, float *g, float *mean)
{
    for (int i = 0; i < NEL; i++) {
        g[i] = (float)(fedc_rng_normal(r) * 0.5);
        mean[i] = g[i] + (float)(fedc_rng_normal(r) * 0.05);
    }
    g[3] = 1.0f; /* values far apart in magnitude */
    mean[3] = 1e-20f;
    mean[4] = g[4]; /* a zero pseudo-gradient */
}

static void test_fedavgm_is_fedavg(void)
{
    fedc_strategy *avg = make("fedavg", NULL, 0, NULL, 0);
    fedc_strategy *m0 = make("fedavgm", "server_momentum", 0.0, "server_lr", 1.0);
    fedc_strategy *mdef = make("fedavgm", NULL, 0, NULL, 0); /* Flower's defaults are the same */
    fedc_rng r;
    fedc_rng_seed(&r, 3);
    float g[NEL], mean[NEL], a[NEL], b[NEL], c[NEL];
    for (uint64_t round = 1; round <= 4; round++) {
        inputs(&r, g, mean);
        run_round(avg, round, g, mean, a);
        run_round(m0, round, g, mean, b);
        run_round(mdef, round, g, mean, c);
        CHECK(memcmp(a, mean, sizeof a) == 0, "fedavg: next is the mean (round %llu)",
              (unsigned long long)round);
        CHECK(memcmp(a, b, sizeof a) == 0, "fedavgm momentum 0 lr 1 = fedavg bit for bit (round %llu)",
              (unsigned long long)round);
        CHECK(memcmp(a, c, sizeof a) == 0, "fedavgm defaults = fedavg (round %llu)",
              (unsigned long long)round);
    }
    fedc_strategy_destroy(avg);
    fedc_strategy_destroy(m0);
    fedc_strategy_destroy(mdef);
}

static int close_to(double got, double want)
{
    return fabs(got - want) <= 1e-6 * fmax(1.0, fabs(want));
}

/* Naive transcriptions of the update rules, state per element in double. */
static void naive_fedavgm(double lr, double mom, double *vel, const float *g, const float *mean, double *out)
{
    for (int i = 0; i < NEL; i++) {
        double d = (double)g[i] - (double)mean[i];
        vel[i] = mom * vel[i] + d;
        out[i] = (double)g[i] - lr * vel[i];
    }
}

static void naive_adaptive(const char *name, double eta, double b1, double b2, double tau, double *m,
                           double *v, const float *g, const float *mean, double *out)
{
    for (int i = 0; i < NEL; i++) {
        double delta = (double)mean[i] - (double)g[i];
        m[i] = b1 * m[i] + (1 - b1) * delta;
        if (!strcmp(name, "fedadagrad"))
            v[i] = v[i] + delta * delta;
        else if (!strcmp(name, "fedadam"))
            v[i] = b2 * v[i] + (1 - b2) * delta * delta;
        else {
            double sgn = v[i] - delta * delta > 0 ? 1 : v[i] - delta * delta < 0 ? -1 : 0;
            v[i] = v[i] - (1 - b2) * delta * delta * sgn;
        }
        out[i] = (double)g[i] + eta * m[i] / (sqrt(v[i]) + tau);
    }
}

static void test_against_naive(void)
{
    static const struct {
        const char *name;
        double eta, b1, b2, tau; /* the defaults, except where set below */
        const char *k;
        double kv;
    } cases[] = {
        {"fedadagrad", 0.1, 0.0, 0, 1e-9, NULL, 0},
        {"fedadagrad", 0.1, 0.5, 0, 1e-9, "beta1", 0.5},
        {"fedadam", 0.1, 0.9, 0.99, 1e-9, NULL, 0},
        {"fedadam", 0.1, 0.9, 0.99, 1e-3, "tau", 1e-3},
        {"fedyogi", 0.01, 0.9, 0.99, 1e-3, NULL, 0},
        {"fedyogi", 0.5, 0.9, 0.99, 1e-3, "server_lr", 0.5},
        {"fedavgm", 0.7, 0.9, 0, 0, "server_momentum", 0.9},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fedc_strategy *s = !strcmp(cases[c].name, "fedavgm")
                               ? make("fedavgm", "server_lr", 0.7, "server_momentum", 0.9)
                               : make(cases[c].name, cases[c].k, cases[c].kv, NULL, 0);
        double m[NEL] = {0}, v[NEL] = {0}, want[NEL];
        float g[NEL], mean[NEL], got[NEL];
        fedc_rng r;
        fedc_rng_seed(&r, 11 + c);
        inputs(&r, g, mean);
        int bad = 0;
        for (uint64_t round = 1; round <= 5; round++) {
            if (!strcmp(cases[c].name, "fedavgm"))
                naive_fedavgm(0.7, 0.9, m, g, mean, want);
            else
                naive_adaptive(cases[c].name, cases[c].eta, cases[c].b1, cases[c].b2, cases[c].tau, m, v, g,
                               mean, want);
            run_round(s, round, g, mean, got);
            for (int i = 0; i < NEL; i++)
                if (!close_to(got[i], want[i])) {
                    if (!bad++)
                        printf("%s case %zu round %llu element %d: got %.9g want %.9g\n", cases[c].name, c,
                               (unsigned long long)round, i, got[i], want[i]);
                }
            /* The next round starts from this model; the clients move it. */
            memcpy(g, got, sizeof g);
            for (int i = 0; i < NEL; i++) mean[i] = g[i] + (float)(fedc_rng_normal(&r) * 0.05);
        }
        CHECK(bad == 0, "%s (case %zu) agrees with the naive computation", cases[c].name, c);
        fedc_strategy_destroy(s);
    }
}

static void test_save_restore(void)
{
    const char *names[] = {"fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"};
    char err[FEDC_ERRMSG_MAX];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        int avgm = !strcmp(names[k], "fedavgm");
        fedc_strategy *a =
            avgm ? make("fedavgm", "server_momentum", 0.9, NULL, 0) : make(names[k], NULL, 0, NULL, 0);
        fedc_strategy *b =
            avgm ? make("fedavgm", "server_momentum", 0.9, NULL, 0) : make(names[k], NULL, 0, NULL, 0);
        fedc_rng r;
        fedc_rng_seed(&r, 100 + k);
        float g[NEL], mean[NEL], na[NEL], nb[NEL];
        /* Restoring the state of a strategy that has not run a round. */
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_STATUS(a->save(a->state, &buf, &len), FEDC_OK, "save before any round");
        CHECK_STATUS(b->restore(b->state, buf, len, err, sizeof err), FEDC_OK, "restore a fresh state");
        free(buf);
        for (uint64_t round = 1; round <= 2; round++) {
            inputs(&r, g, mean);
            run_round(a, round, g, mean, na);
        }
        CHECK_STATUS(a->save(a->state, &buf, &len), FEDC_OK, "save");
        CHECK_STATUS(b->restore(b->state, buf, len - 1, err, sizeof err), FEDC_ERR_FORMAT, "truncated state");
        CHECK_STATUS(b->restore(b->state, buf, len, err, sizeof err), FEDC_OK, "restore");
        free(buf);
        for (uint64_t round = 3; round <= 4; round++) {
            inputs(&r, g, mean);
            run_round(a, round, g, mean, na);
            run_round(b, round, g, mean, nb);
            CHECK(memcmp(na, nb, sizeof na) == 0, "%s: round %llu after restore equals the uninterrupted one",
                  names[k], (unsigned long long)round);
        }
        /* A state saved by one strategy does not restore into another. */
        fedc_strategy *other = make(k ? "fedavg" : "fedadam", NULL, 0, NULL, 0);
        CHECK_STATUS(a->save(a->state, &buf, &len), FEDC_OK, "save");
        CHECK_STATUS(other->restore(other->state, buf, len, err, sizeof err), FEDC_ERR_FORMAT,
                     "other strategy");
        CHECK_CONTAINS(err, "not of strategy", "restore into another strategy");
        free(buf);
        fedc_strategy_destroy(other);
        fedc_strategy_destroy(a);
        fedc_strategy_destroy(b);
    }
}

static void test_layout_change(void)
{
    fedc_strategy *s = make("fedadam", NULL, 0, NULL, 0);
    float x[NEL] = {0}, y[NEL];
    run_round(s, 1, x, x, y);
    fedc_params *p = fedc_params_create();
    const int64_t shape[1] = {3};
    fedc_params_add(p, "w", FEDC_F32, 1, shape, NULL, NULL, NULL, 0);
    char err[FEDC_ERRMSG_MAX];
    fedc_round_info info = {2, 1, 1, 0, NULL};
    CHECK_STATUS(s->aggregate_fit(s->state, &info, p, p, p, err, sizeof err), FEDC_ERR_SHAPE,
                 "a model of another size");
    fedc_params_destroy(p);
    fedc_strategy_destroy(s);
}

static void refused(const char *name, const char *key, double v, const char *want)
{
    fedc_config *c = fedc_config_create();
    if (key) fedc_config_set_f64(c, key, v);
    fedc_strategy *s = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc_strategy_create(name, c, &s, err, sizeof err), FEDC_ERR_INVALID, name);
    CHECK(s == NULL, "%s: nothing created", name);
    CHECK_CONTAINS(err, want, name);
    fedc_config_destroy(c);
}

static void test_bad_parameters(void)
{
    refused("fedsgd", NULL, 0, "unknown strategy 'fedsgd' (known: fedavg, fedavgm, fedadagrad");
    refused(NULL, NULL, 0, "unknown strategy");
    refused("fedavgm", "server_momentum", 1.0, "--server-momentum must be in [0, 1)");
    refused("fedavgm", "server_momentum", -0.1, "--server-momentum");
    refused("fedavgm", "server_lr", 0, "--server-lr must be positive");
    refused("fedadam", "tau", 0, "--tau must be positive");
    refused("fedadam", "beta1", 1.0, "--beta1");
    refused("fedyogi", "beta2", 1.5, "--beta2");
    refused("fedadam", "server_lr", INFINITY, "--server-lr must be a finite number");
    refused("fedadagrad", "beta2", 0.9, "--beta2 does not apply to strategy 'fedadagrad'");
    refused("fedavg", "server_lr", 0.5, "--server-lr does not apply to strategy 'fedavg'");
    refused("fedprox", NULL, 0, "--proximal-mu is required");
    refused("fedprox", "proximal_mu", -1, "--proximal-mu must be at least 0");
    refused("fedadam", "proximal_mu", 0.1, "--proximal-mu does not apply");
    refused("fedadam", "lr", 0.1, "unknown strategy parameter 'lr'");
}

static void test_fedprox_config(void)
{
    fedc_strategy *p = make("fedprox", "proximal_mu", 0.01, NULL, 0);
    fedc_strategy *a = make("fedavg", NULL, 0, NULL, 0);
    fedc_config *c = fedc_config_create();
    CHECK_STATUS(a->configure_fit(a->state, 1, c), FEDC_OK, "fedavg configure_fit");
    CHECK(fedc_config_count(c) == 0, "fedavg adds no keys");
    CHECK_STATUS(p->configure_fit(p->state, 1, c), FEDC_OK, "fedprox configure_fit");
    double mu = 0;
    CHECK(fedc_config_get_f64(c, "proximal_mu", &mu) == FEDC_OK && mu == 0.01, "fedprox sends proximal_mu");
    /* Aggregation is FedAvg's. */
    float g[NEL], mean[NEL], next[NEL];
    fedc_rng r;
    fedc_rng_seed(&r, 5);
    inputs(&r, g, mean);
    run_round(p, 1, g, mean, next);
    CHECK(memcmp(next, mean, sizeof next) == 0, "fedprox aggregates like fedavg");
    fedc_config_destroy(c);
    fedc_strategy_destroy(p);
    fedc_strategy_destroy(a);
    fedc_strategy_destroy(NULL);
}

/* The server refuses a strategy that asks for a mode it does not know, or
 * lacks aggregate_fit (aggregate_all with FEDC_STRATEGY_ALL_UPDATES). */
static void test_server_refuses(void)
{
    fedc_strategy *s = make("fedavg", NULL, 0, NULL, 0);
    fedc_strategy odd = *s;
    fedc_server_options opt;
    fedc_server_options_init(&opt);
    opt.insecure = 1;
    opt.listen = "127.0.0.1:0";
    opt.strategy = &odd;
    char err[FEDC_ERRMSG_MAX] = "";
    odd.flags = 1u << 7;
    fedc_server *srv = fedc_server_create(&opt, err, sizeof err);
    CHECK(srv == NULL, "a strategy with an unknown flag is refused");
    CHECK_CONTAINS(err, "needs a mode this server does not support", "unknown flag");
    fedc_server_destroy(srv);
    odd.flags = 0;
    odd.aggregate_fit = NULL;
    srv = fedc_server_create(&opt, err, sizeof err);
    CHECK(srv == NULL, "a strategy without aggregate_fit is refused");
    fedc_server_destroy(srv);
    odd.flags = FEDC_STRATEGY_ALL_UPDATES;
    odd.aggregate_fit = s->aggregate_fit;
    srv = fedc_server_create(&opt, err, sizeof err);
    CHECK(srv == NULL, "an all-updates strategy without aggregate_all is refused");
    CHECK_CONTAINS(err, "aggregate_all", "all-updates without aggregate_all");
    fedc_server_destroy(srv);
    opt.strategy = s;
    srv = fedc_server_create(&opt, err, sizeof err);
    CHECK(srv != NULL, "a built-in strategy is accepted: %s", err);
    fedc_server_destroy(srv);
    fedc_strategy_destroy(s);
}

int main(void)
{
    test_fedavgm_is_fedavg();
    test_against_naive();
    test_save_restore();
    test_layout_change();
    test_bad_parameters();
    test_fedprox_config();
    test_server_refuses();
    return test_summary();
}
