/*
 * The robust aggregators (src/strategy/robust.c): median, trimmed-mean,
 * krum, multikrum and bulyan against naive transcriptions of their papers
 * on small inputs (ties, even and odd counts, f at its limit), their
 * refusals just past the limit, invariance under shuffling the updates,
 * and, through a simulated federation, that in all-updates mode a NaN
 * update is still rejected and leaves no trace, a refusal of the strategy
 * fails the round only, and every update reaches the strategy in node-id
 * order.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/server.h"
#include "fedc/sim.h"
#include "fedc/strategy.h"
#include "test_strategy_util.h"
#include "test_util.h"

#define MAXN 16

/* Runs aggregate_all on the n flat updates x[i]; returns its status. */
static int aggregate(fedc_strategy *s, float (*x)[NEL], size_t n, float *next, char *err, size_t errlen)
{
    float zero[NEL] = {0};
    fedc_params *g = make_model(zero), *out = make_model(zero);
    fedc_params *u[MAXN];
    uint64_t w[MAXN];
    for (size_t i = 0; i < n; i++) {
        u[i] = make_model(x[i]);
        w[i] = 1 + 7 * i; /* ignored */
    }
    CHECK(s->flags == FEDC_STRATEGY_ALL_UPDATES && s->aggregate_all && !s->aggregate_fit,
          "%s asks for every update", s->name);
    fedc_round_info info = {1, (uint32_t)n, (uint32_t)n, 0, NULL};
    int rc = s->aggregate_all(s->state, &info, g, (const fedc_params *const *)u, w, n, out, err, errlen);
    if (!rc) flat(out, next);
    for (size_t i = 0; i < n; i++) fedc_params_destroy(u[i]);
    fedc_params_destroy(g);
    fedc_params_destroy(out);
    return rc;
}

/* ---- naive transcriptions -------------------------------------------- */

static void sort_up(double *v, size_t k) /* insertion sort */
{
    for (size_t i = 1; i < k; i++)
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

static double naive_median(double *v, size_t k)
{
    sort_up(v, k);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2.0;
}

static double naive_mean(const double *v, size_t k)
{
    double s = 0;
    for (size_t i = 0; i < k; i++) s += v[i];
    return s / (double)k;
}

static double dist2(const float *a, const float *b)
{
    double s = 0;
    for (int e = 0; e < NEL; e++) s += ((double)a[e] - b[e]) * ((double)a[e] - b[e]);
    return s;
}

/* Krum's score of update i among those with alive[j] set. */
static double naive_score(float (*x)[NEL], size_t n, const int *alive, size_t i, unsigned f)
{
    double d[MAXN];
    size_t k = 0, r = 0;
    for (size_t j = 0; j < n; j++) r += alive[j] != 0;
    for (size_t j = 0; j < n; j++)
        if (alive[j] && j != i) d[k++] = dist2(x[i], x[j]);
    sort_up(d, k);
    size_t q = r >= f + 3 ? r - f - 2 : 1; /* Bulyan's last picks: at least the nearest */
    double s = 0;
    for (size_t j = 0; j < q && j < k; j++) s += d[j];
    return s;
}

/* The alive update of lowest score (the lowest index on a tie). */
static size_t naive_best(float (*x)[NEL], size_t n, const int *alive, unsigned f, const int *taken)
{
    size_t best = n;
    double bs = 0;
    for (size_t i = 0; i < n; i++) {
        if (!alive[i] || taken[i]) continue;
        double sc = naive_score(x, n, alive, i, f);
        if (best == n || sc < bs) {
            best = i;
            bs = sc;
        }
    }
    return best;
}

static void naive(const char *rule, float (*x)[NEL], size_t n, double beta, unsigned f, size_t m, float *out)
{
    int sel[MAXN] = {0}, alive[MAXN], taken[MAXN] = {0};
    for (size_t i = 0; i < n; i++) alive[i] = 1;
    size_t k = n;
    if (!strcmp(rule, "krum") || !strcmp(rule, "multikrum")) {
        k = !strcmp(rule, "krum") ? 1 : (m ? m : n - f);
        for (size_t t = 0; t < k; t++) { /* scores among all n, best first */
            size_t b = naive_best(x, n, alive, f, taken);
            taken[b] = sel[b] = 1;
        }
    } else if (!strcmp(rule, "bulyan")) {
        k = n - 2 * f;
        for (size_t t = 0; t < k; t++) { /* scores among those left */
            size_t b = naive_best(x, n, alive, f, taken);
            sel[b] = 1;
            alive[b] = 0;
        }
    } else {
        for (size_t i = 0; i < n; i++) sel[i] = 1;
    }
    for (int e = 0; e < NEL; e++) {
        double v[MAXN];
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
            if (sel[i]) v[c++] = x[i][e];
        double r;
        if (!strcmp(rule, "median")) {
            r = naive_median(v, c);
        } else if (!strcmp(rule, "trimmed-mean")) {
            size_t cut = (size_t)floor(beta * (double)n);
            sort_up(v, c);
            r = naive_mean(v + cut, c - 2 * cut);
        } else if (!strcmp(rule, "bulyan")) {
            /* beta = theta - 2f values closest to the median, the lower
             * of two at the same distance first. */
            double med = naive_median(v, c), kept[MAXN];
            int used[MAXN] = {0};
            size_t keep = c - 2 * f;
            for (size_t t = 0; t < keep; t++) {
                size_t b = c;
                for (size_t i = 0; i < c; i++) {
                    if (used[i]) continue;
                    if (b == c || fabs(v[i] - med) < fabs(v[b] - med) ||
                        (fabs(v[i] - med) == fabs(v[b] - med) && v[i] < v[b]))
                        b = i;
                }
                used[b] = 1;
                kept[t] = v[b];
            }
            r = naive_mean(kept, keep);
        } else {
            r = naive_mean(v, c);
        }
        out[e] = (float)r;
    }
    if (!strcmp(rule, "krum"))
        for (size_t i = 0; i < n; i++)
            if (sel[i]) memcpy(out, x[i], sizeof(float) * NEL);
}

/* ---- the tests ----------------------------------------------------------- */

static void fill(fedc_rng *r, float (*x)[NEL], size_t n, int coarse)
{
    for (size_t i = 0; i < n; i++)
        for (int e = 0; e < NEL; e++)
            x[i][e] = coarse ? (float)((int)fedc_rng_below(r, 9) - 4) * 0.25f /* many ties, exact sums */
                             : (float)fedc_rng_normal(r);
    if (n > 2 && coarse) memcpy(x[n - 1], x[0], sizeof x[0]); /* equal updates: equal Krum scores */
}

typedef struct rule_case {
    const char *name;
    double beta;
    unsigned f;
    size_t m;
} rule_case;

static fedc_strategy *make_case(const rule_case *c)
{
    if (!strcmp(c->name, "trimmed-mean")) return make(c->name, "trim_beta", c->beta, NULL, 0);
    if (!strcmp(c->name, "median")) return make(c->name, NULL, 0, NULL, 0);
    if (!strcmp(c->name, "multikrum")) return make(c->name, "byzantine", c->f, "krum_m", (double)c->m);
    return make(c->name, "byzantine", c->f, NULL, 0);
}

static void test_against_naive(void)
{
    const rule_case cases[] = {
        {"median", 0, 0, 0},         {"trimmed-mean", 0.0, 0, 0},
        {"trimmed-mean", 0.2, 0, 0}, {"trimmed-mean", 0.49, 0, 0},
        {"krum", 0, 0, 0},           {"krum", 0, 1, 0},
        {"krum", 0, 2, 0},           {"multikrum", 0, 1, 0},
        {"multikrum", 0, 1, 3},      {"multikrum", 0, 0, 1},
        {"bulyan", 0, 0, 0},         {"bulyan", 0, 1, 0},
        {"bulyan", 0, 2, 0},
    };
    fedc_rng rng;
    fedc_rng_seed(&rng, 42);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fedc_strategy *s = make_case(&cases[c]);
        size_t lo = s->min_updates ? s->min_updates : 1;
        for (size_t n = lo; n <= MAXN && n <= lo + 6; n++) { /* n = the limit, then above; even and odd */
            for (int coarse = 0; coarse < 2; coarse++) {
                float x[MAXN][NEL], got[NEL], want[NEL];
                char err[FEDC_ERRMSG_MAX];
                fill(&rng, x, n, coarse);
                int rc = aggregate(s, x, n, got, err, sizeof err);
                CHECK(rc == FEDC_OK, "%s (case %zu) n=%zu: %s", cases[c].name, c, n, err);
                naive(cases[c].name, x, n, cases[c].beta, cases[c].f, cases[c].m, want);
                int same = 1;
                for (int e = 0; e < NEL; e++) same &= got[e] == want[e];
                CHECK(same, "%s (case %zu, f=%u) n=%zu %s agrees with the naive computation", cases[c].name,
                      c, cases[c].f, n, coarse ? "with ties" : "");
            }
        }
        fedc_strategy_destroy(s);
    }
}

/* A known answer, worked by hand: an even count averages the two middle
 * values; krum takes the update in the cluster. */
static void test_by_hand(void)
{
    float x[4][NEL] = {{0}}, got[NEL];
    char err[FEDC_ERRMSG_MAX];
    for (int e = 0; e < NEL; e++) {
        x[0][e] = 1;
        x[1][e] = 2;
        x[2][e] = 4;
        x[3][e] = 100;
    }
    fedc_strategy *med = make("median", NULL, 0, NULL, 0);
    CHECK(aggregate(med, x, 4, got, err, sizeof err) == FEDC_OK && got[0] == 3.0f && got[9] == 3.0f,
          "median of 1, 2, 4, 100 is 3");
    CHECK(aggregate(med, x, 3, got, err, sizeof err) == FEDC_OK && got[5] == 2.0f, "median of 1, 2, 4 is 2");
    fedc_strategy_destroy(med);
    fedc_strategy *tm = make("trimmed-mean", "trim_beta", 0.25, NULL, 0);
    CHECK(aggregate(tm, x, 4, got, err, sizeof err) == FEDC_OK && got[0] == 3.0f,
          "trimmed mean (beta 0.25) of 1, 2, 4, 100 is 3");
    fedc_strategy_destroy(tm);
    fedc_strategy *tm0 = make("trimmed-mean", NULL, 0, NULL, 0);
    CHECK(aggregate(tm0, x, 4, got, err, sizeof err) == FEDC_OK && got[0] == 26.75f,
          "trimmed mean with the default beta 0.2 cuts floor(0.8) = 0 of 4");
    fedc_strategy_destroy(tm0);
    fedc_strategy *k = make("krum", NULL, 0, NULL, 0);
    CHECK(aggregate(k, x, 4, got, err, sizeof err) == FEDC_OK && got[0] == 2.0f,
          "krum (f = 0) picks 2, nearest its 2 neighbours");
    fedc_strategy_destroy(k);
}

static void refused_at(const char *name, unsigned f, size_t n, const char *want)
{
    fedc_strategy *s = make(name, "byzantine", f, NULL, 0);
    float x[MAXN][NEL] = {{0}}, got[NEL];
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = aggregate(s, x, n, got, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "%s f=%u n=%zu is refused", name, f, n);
    CHECK_CONTAINS(err, want, name);
    fedc_strategy_destroy(s);
}

static void test_refusals(void)
{
    refused_at("krum", 1, 4,
               "krum: n = 4 updates with f = 1 (--byzantine) is too few; it needs n > 2f + 2 = 4");
    refused_at("multikrum", 2, 6, "multikrum: n = 6 updates with f = 2");
    refused_at("bulyan", 1, 6,
               "bulyan: n = 6 updates with f = 1 (--byzantine) is too few; it needs n >= 4f + 3 = 7");
    refused_at("bulyan", 0, 2, "it needs n >= 4f + 3 = 3");
    fedc_strategy *s = make("multikrum", "byzantine", 0, "krum_m", 5);
    float x[MAXN][NEL] = {{0}}, got[NEL];
    char err[FEDC_ERRMSG_MAX] = "";
    CHECK(aggregate(s, x, 4, got, err, sizeof err) == FEDC_ERR_INVALID,
          "multikrum --krum-m 5 of 4 is refused");
    CHECK_CONTAINS(err, "--krum-m 5 is more than the n = 4 updates", "multikrum m");
    CHECK(s->min_updates == 5, "multikrum --krum-m 5 needs 5 updates (%u)", s->min_updates);
    fedc_strategy_destroy(s);
    s = make("bulyan", "byzantine", 2, NULL, 0);
    CHECK(s->min_updates == 11, "bulyan f=2 needs 11 updates (%u)", s->min_updates);
    fedc_strategy_destroy(s);
    s = make("krum", "byzantine", 2, NULL, 0);
    CHECK(s->min_updates == 7, "krum f=2 needs 7 updates (%u)", s->min_updates);
    fedc_strategy_destroy(s);

    /* Parameters refused when the strategy is made. */
    const struct {
        const char *name, *key;
        double v;
        const char *want;
    } bad[] = {
        {"trimmed-mean", "trim_beta", 0.5, "--trim-beta must be in [0, 0.5)"},
        {"trimmed-mean", "trim_beta", -0.1, "--trim-beta must be in [0, 0.5)"},
        {"krum", "byzantine", 1.5, "--byzantine must be a whole number"},
        {"krum", "byzantine", -1, "--byzantine must be a whole number"},
        {"krum", "krum_m", 2, "--krum-m does not apply to strategy 'krum'"},
        {"median", "byzantine", 1, "--byzantine does not apply to strategy 'median'"},
        {"fedavg", "trim_beta", 0.1, "--trim-beta does not apply to strategy 'fedavg'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fedc_config *c = fedc_config_create();
        fedc_config_set_f64(c, bad[i].key, bad[i].v);
        fedc_strategy *t = NULL;
        int rc = fedc_strategy_create(bad[i].name, c, &t, err, sizeof err);
        CHECK(rc == FEDC_ERR_INVALID && t == NULL, "%s %s=%g is refused", bad[i].name, bad[i].key, bad[i].v);
        CHECK_CONTAINS(err, bad[i].want, bad[i].key);
        fedc_config_destroy(c);
    }
}

/* Shuffled updates (distinct, so that no tie is broken by position) give
 * the very same bytes. */
static void test_permutation(void)
{
    const rule_case cases[] = {{"median", 0, 0, 0},
                               {"trimmed-mean", 0.3, 0, 0},
                               {"krum", 0, 1, 0},
                               {"multikrum", 0, 1, 0},
                               {"bulyan", 0, 3, 0}};
    fedc_rng rng;
    fedc_rng_seed(&rng, 7);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fedc_strategy *s = make_case(&cases[c]);
        /* Bulyan's last picks with f < 3 compare single distances, which tie
         * for two mutually nearest updates: f = 3 there (n >= 15). */
        size_t lo = cases[c].f == 3 ? 15 : 7, hi = cases[c].f == 3 ? 16 : 10;
        for (size_t n = lo; n <= hi; n++) {
            float x[MAXN][NEL], y[MAXN][NEL], a[NEL], b[NEL];
            char err[FEDC_ERRMSG_MAX];
            fill(&rng, x, n, 0);
            memcpy(y, x, sizeof y);
            for (size_t t = 0; t < 5; t++) {
                for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
                    size_t j = (size_t)fedc_rng_below(&rng, i + 1);
                    float tmp[NEL];
                    memcpy(tmp, y[i], sizeof tmp);
                    memcpy(y[i], y[j], sizeof tmp);
                    memcpy(y[j], tmp, sizeof tmp);
                }
                int rc = aggregate(s, x, n, a, err, sizeof err) | aggregate(s, y, n, b, err, sizeof err);
                CHECK(rc == FEDC_OK && memcmp(a, b, sizeof a) == 0,
                      "%s n=%zu: shuffled updates give the same bytes", cases[c].name, n);
            }
        }
        fedc_strategy_destroy(s);
    }
}

/* ---- through the server, with simulated clients ------------------------ */

#define SIM_CLIENTS 5

static pthread_mutex_t sim_mu = PTHREAD_MUTEX_INITIALIZER;
static float sim_model[NEL];
static int sim_models;
static fedc_round_record sim_rec[4];
static char sim_reason[4][FEDC_ERRMSG_MAX];
static size_t sim_seen_n;
static float sim_seen_first[NEL];

static int sim_open(void *user, uint32_t index, void **client_user, char *err, size_t errlen)
{
    (void)user;
    (void)err;
    (void)errlen;
    *client_user = (void *)(uintptr_t)(index + 1);
    return FEDC_OK;
}

/* Client i sends (i + 1) / 4 + e / 100 in element e; client 0 sends a NaN. */
static int sim_fit(void *user, fedc_params *params, const fedc_config *config, uint64_t *n,
                   fedc_config *metrics, char *err, size_t errlen)
{
    (void)config;
    (void)metrics;
    (void)err;
    (void)errlen;
    size_t i = (size_t)(uintptr_t)user - 1;
    float *w = fedc_params_at(params, 0)->data, *b = fedc_params_at(params, 1)->data;
    for (int e = 0; e < NEL; e++) {
        float v = (float)(i + 1) * 0.25f + (float)e / 100;
        if (e < 6)
            w[e] = v;
        else
            b[e - 6] = v;
    }
    if (i == 0) w[3] = NAN;
    *n = 10 + i;
    return FEDC_OK;
}

static int sim_eval(void *user, const fedc_params *model, uint64_t round, double *loss, double *acc,
                    char *err, size_t errlen)
{
    (void)user;
    (void)round;
    (void)err;
    (void)errlen;
    pthread_mutex_lock(&sim_mu);
    flat(model, sim_model);
    sim_models++;
    pthread_mutex_unlock(&sim_mu);
    *loss = 0;
    *acc = 0;
    return FEDC_OK;
}

static void sim_round(void *user, const fedc_round_record *r)
{
    (void)user;
    if (r->round == 0 || r->round > 4) return;
    sim_rec[r->round - 1] = *r;
    snprintf(sim_reason[r->round - 1], sizeof sim_reason[0], "%s",
             r->failure_reason ? r->failure_reason : "");
}

/* A strategy of the test's own: refuses round 1, then records what it is
 * given and takes the median. */
typedef struct wrap {
    fedc_strategy iface;
    fedc_strategy *median;
} wrap;

static int wrap_all(void *st, const fedc_round_info *info, const fedc_params *global,
                    const fedc_params *const *updates, const uint64_t *weights, size_t n, fedc_params *next,
                    char *err, size_t errlen)
{
    wrap *w = st;
    if (info->round == 1) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "not in round 1");
    sim_seen_n = n;
    if (n) flat(updates[0], sim_seen_first);
    return w->median->aggregate_all(w->median->state, info, global, updates, weights, n, next, err, errlen);
}

static int run_sim(const fedc_strategy *st, uint64_t rounds, uint32_t min_clients)
{
    float zero[NEL] = {0};
    fedc_params *init = make_model(zero);
    fedc_server_options so;
    fedc_server_options_init(&so);
    so.insecure = 1;
    so.rounds = rounds;
    so.min_clients = min_clients;
    so.initial_model = init;
    so.fraction_evaluate = 0;
    so.strategy = st;
    so.central_eval = sim_eval;
    so.on_round = sim_round;
    fedc_sim_options sim;
    fedc_sim_options_init(&sim);
    sim.clients = SIM_CLIENTS;
    sim.concurrency = 2;
    sim.open_client = sim_open;
    sim.callbacks.fit = sim_fit;
    char err[FEDC_ERRMSG_MAX] = "";
    memset(sim_rec, 0, sizeof sim_rec);
    sim_models = 0;
    int rc = fedc_sim_run(&so, &sim, err, sizeof err);
    CHECK(rc == FEDC_OK, "fedc_sim_run: %s", err);
    fedc_params_destroy(init);
    return rc;
}

static void test_sim(void)
{
    /* Median of clients 1..4 (client 0's NaN is rejected): the mean of the
     * middle two, clients 2 and 3. */
    fedc_strategy *med = make("median", NULL, 0, NULL, 0);
    run_sim(med, 1, 4);
    CHECK(sim_rec[0].clients_ok == 4 && !sim_rec[0].failed, "the NaN update is rejected, 4 kept (ok %u)",
          sim_rec[0].clients_ok);
    int same = sim_models == 1;
    for (int e = 0; e < NEL; e++) {
        double a = (double)(0.75f + (float)e / 100), b = (double)(1.0f + (float)e / 100);
        same &= sim_model[e] == (float)((a + b) / 2);
    }
    CHECK(same, "the model is the median of the 4 valid updates (%d models, %g %g)", sim_models,
          (double)sim_model[0], (double)sim_model[9]);
    fedc_strategy_destroy(med);

    /* A refusal of the strategy fails round 1 only; round 2 sees the four
     * valid updates, client-001's first. */
    wrap w = {{0}, make("median", NULL, 0, NULL, 0)};
    w.iface.name = "wrap";
    w.iface.flags = FEDC_STRATEGY_ALL_UPDATES;
    w.iface.state = &w;
    w.iface.aggregate_all = wrap_all;
    sim_seen_n = 0;
    run_sim(&w.iface, 2, 4);
    CHECK(sim_rec[0].failed, "a FEDC_ERR_INVALID from aggregate_all fails the round");
    CHECK_CONTAINS(sim_reason[0], "strategy wrap: not in round 1", "the round's failure reason");
    CHECK(!sim_rec[1].failed && sim_models == 1, "round 2 succeeds");
    CHECK(sim_seen_n == 4 && sim_seen_first[0] == 0.5f, "updates come in node-id order (n %zu, first %g)",
          sim_seen_n, (double)sim_seen_first[0]);
    fedc_strategy_destroy(w.median);

    /* The server refuses min_clients below what the strategy needs. */
    fedc_strategy *k = make("bulyan", "byzantine", 1, NULL, 0);
    fedc_server_options so;
    fedc_server_options_init(&so);
    so.insecure = 1;
    so.listen = "127.0.0.1:0";
    so.strategy = k;
    so.min_clients = 6;
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_server *srv = fedc_server_create(&so, err, sizeof err);
    CHECK(srv == NULL, "bulyan f=1 with min_clients 6 is refused");
    CHECK_CONTAINS(err, "needs at least 7 updates", "min_clients");
    so.min_clients = 7;
    srv = fedc_server_create(&so, err, sizeof err);
    CHECK(srv != NULL, "bulyan f=1 with min_clients 7 is accepted: %s", err);
    fedc_server_destroy(srv);
    fedc_strategy_destroy(k);
}

int main(int argc, char **argv)
{
    if (test_selected(argc, argv, "main")) {
        test_by_hand();
        test_against_naive();
        test_refusals();
        test_permutation();
    }
    if (test_selected(argc, argv, "sim")) test_sim();
    return test_summary();
}
