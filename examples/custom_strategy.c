/*
 * A strategy of your own, written against include/fedc/strategy.h and run
 * by the real server: FedAvg with a bounded server step and a decaying
 * client learning rate.
 *
 *   custom_strategy HOST:PORT ROUNDS OUT_DIR [TEST_DIR]
 *
 * starts a server for the built-in mlp on HOST:PORT, waits for two clients
 * (`fedc client --server HOST:PORT --data DIR`; more may join), and runs
 * ROUNDS rounds. TLS files come from the environment: FEDC_TLS_CERT and
 * FEDC_TLS_KEY (the server's), FEDC_TLS_CA (to require client
 * certificates), or FEDC_INSECURE=1 for plaintext.
 * Each round:
 *   - select_fit lets one client rest in every even round when three or
 *     more were sampled (the server's sampling picks, the strategy may
 *     change it);
 *   - configure_fit tells the clients to train with lr = 0.1 * 0.5^(round-1)
 *     (a per-round config key overrides the server's fit config);
 *   - aggregate_fit takes FedAvg's weighted mean of the clients' models and
 *     moves the global model towards it, by at most MAX_STEP in L2 norm;
 *   - aggregate_evaluate reports the worst client's accuracy as the
 *     round's federated accuracy, instead of the mean: a model is only as
 *     good as it is for the client it serves worst;
 *   - with TEST_DIR, evaluate scores the new model on that data directory's
 *     test split, on the server (centralised evaluation);
 *   - after the round the strategy's state is saved to OUT_DIR/strategy.state
 *     with save(), as a checkpointing program would, and read back with
 *     restore() to show the round trip.
 * docs/strategies.md explains each callback.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fedc/config.h>
#include <fedc/core.h>
#include <fedc/data.h>
#include <fedc/nn.h>
#include <fedc/server.h>
#include <fedc/strategy.h>

#define MAX_STEP 0.4 /* the largest L2 norm of one server step */

typedef struct bounded_state {
    uint64_t rounds;  /* rounds aggregated */
    double last_norm; /* the norm of the last step, before bounding */
} bounded_state;

/* What evaluate needs; not part of the saved state. */
typedef struct central {
    fedc_dataset *test; /* NULL: no centralised evaluation */
    fedc_model *model;
} central;

typedef struct strategy_data {
    bounded_state state;
    central eval;
} strategy_data;

static int bounded_select_fit(void *state, uint64_t round, const char *const *ids, size_t n,
                              unsigned char *chosen, char *err, size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += chosen[i];
    if (round % 2 == 0 && k >= 3) {
        /* Rest the first chosen client, by node id. */
        for (size_t i = 0; i < n; i++)
            if (chosen[i]) {
                chosen[i] = 0;
                printf("strategy: round %llu: %s rests, %zu of %zu train\n", (unsigned long long)round,
                       ids[i], k - 1, n);
                break;
            }
    }
    return FEDC_OK;
}

static int bounded_aggregate_evaluate(void *state, uint64_t round, const fedc_eval_info *evals, size_t n,
                                      double *loss, double *accuracy, char *err, size_t errlen)
{
    (void)state;
    (void)err;
    (void)errlen;
    double worst = NAN, l = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isnan(evals[i].accuracy) && !(evals[i].accuracy >= worst)) worst = evals[i].accuracy;
        l += evals[i].loss * (double)evals[i].num_examples;
        w += (double)evals[i].num_examples;
    }
    *loss = w > 0 ? l / w : NAN;
    *accuracy = worst;
    printf("strategy: round %llu: worst of %zu clients' accuracy %.4f\n", (unsigned long long)round, n,
           worst);
    return FEDC_OK;
}

/* Runs on the server's worker thread: it reads only `eval`, which nothing
 * else changes during the run. */
static int bounded_evaluate(void *state, uint64_t round, const fedc_params *model, double *loss,
                            double *accuracy, char *err, size_t errlen)
{
    strategy_data *d = state;
    (void)round;
    if (!d->eval.test) return FEDC_OK; /* loss and accuracy stay NaN */
    int rc = fedc_model_set_params(d->eval.model, model, err, errlen);
    fedc_eval_stats st;
    if (!rc)
        rc = fedc_model_evaluate(d->eval.model, d->eval.test->x, d->eval.test->y, d->eval.test->n, 256, &st,
                                 err, errlen);
    if (rc) return rc;
    *loss = st.loss;
    *accuracy = st.accuracy;
    return FEDC_OK;
}

static int bounded_configure_fit(void *state, uint64_t round, fedc_config *cfg)
{
    (void)state;
    return fedc_config_set_f64(cfg, "lr", 0.1 * pow(0.5, (double)(round - 1)));
}

static int bounded_aggregate_fit(void *state, const fedc_round_info *info, const fedc_params *global,
                                 const fedc_params *mean, fedc_params *next, char *err, size_t errlen)
{
    bounded_state *s = &((strategy_data *)state)->state;
    double sq = 0.0;
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        const fedc_tensor *g = fedc_params_at(global, t), *m = fedc_params_at(mean, t);
        if (g->dtype != FEDC_F32)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "tensor '%s' is not F32", g->name);
        const float *gv = g->data, *mv = m->data;
        for (int64_t i = 0; i < fedc_tensor_numel(g); i++)
            sq += ((double)mv[i] - gv[i]) * ((double)mv[i] - gv[i]);
    }
    double norm = sqrt(sq), scale = norm > MAX_STEP ? MAX_STEP / norm : 1.0;
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        const fedc_tensor *g = fedc_params_at(global, t), *m = fedc_params_at(mean, t);
        const float *gv = g->data, *mv = m->data;
        float *nv = fedc_params_at(next, t)->data;
        for (int64_t i = 0; i < fedc_tensor_numel(g); i++)
            nv[i] = (float)(gv[i] + scale * ((double)mv[i] - gv[i]));
    }
    s->rounds++;
    s->last_norm = norm;
    printf("strategy: round %llu: %zu updates, step norm %.4f, scaled by %.4f\n",
           (unsigned long long)info->round, info->nfits, norm, scale);
    fflush(stdout);
    return FEDC_OK;
}

/* The state as 16 bytes (host byte order: a real program that moves
 * checkpoints between machines would fix the order). */
static int bounded_save(void *state, uint8_t **buf, size_t *len)
{
    *buf = malloc(sizeof(bounded_state));
    if (!*buf) return FEDC_ERR_NOMEM;
    memcpy(*buf, &((strategy_data *)state)->state, sizeof(bounded_state));
    *len = sizeof(bounded_state);
    return FEDC_OK;
}

static int bounded_restore(void *state, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    if (len != sizeof(bounded_state))
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "bounded state: %zu bytes, want %zu", len,
                              sizeof(bounded_state));
    memcpy(&((strategy_data *)state)->state, buf, len);
    return FEDC_OK;
}

/* on_round: checkpoints the strategy's state after every round. */
typedef struct checkpoint {
    fedc_strategy *strategy;
    char path[4096];
} checkpoint;

static void on_round(void *user, const fedc_round_record *r)
{
    checkpoint *c = user;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (c->strategy->save(c->strategy->state, &buf, &len) != FEDC_OK) return;
    FILE *f = fopen(c->path, "wb");
    if (f) {
        fwrite(buf, 1, len, f);
        fclose(f);
    }
    /* Reading it back into a fresh state gives the same state. */
    strategy_data copy;
    char err[FEDC_ERRMSG_MAX];
    if (bounded_restore(&copy, buf, len, err, sizeof err) == FEDC_OK)
        printf("round %llu: accuracy %.4f, state saved (%zu bytes, %llu rounds aggregated)\n",
               (unsigned long long)r->round, r->fed_eval_accuracy, len,
               (unsigned long long)copy.state.rounds);
    fflush(stdout);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: custom_strategy HOST:PORT ROUNDS OUT_DIR [TEST_DIR]\n");
        return 2;
    }
    char err[FEDC_ERRMSG_MAX];
    fedc_model *model = NULL;
    strategy_data data = {{0, 0.0}, {NULL, NULL}};
    if (fedc_model_create("mlp", 1, &model, err, sizeof err) != FEDC_OK ||
        (argc == 5 && (fedc_dataset_load_dir(argv[4], "test", &data.eval.test, err, sizeof err) != FEDC_OK ||
                       fedc_model_create("mlp", 1, &data.eval.model, err, sizeof err) != FEDC_OK))) {
        fprintf(stderr, "custom_strategy: %s\n", err);
        fedc_model_destroy(model);
        fedc_dataset_destroy(data.eval.test);
        return 1;
    }
    fedc_strategy strategy = {
        .name = "bounded-fedavg",
        .state = &data,
        .select_fit = bounded_select_fit,
        .configure_fit = bounded_configure_fit,
        .aggregate_fit = bounded_aggregate_fit,
        .aggregate_evaluate = bounded_aggregate_evaluate,
        .evaluate = bounded_evaluate,
        .save = bounded_save,
        .restore = bounded_restore,
    };
    checkpoint cp = {&strategy, ""};
    snprintf(cp.path, sizeof cp.path, "%s/strategy.state", argv[3]);

    fedc_config *fit = fedc_config_create();
    fedc_config_set_str(fit, "model", "mlp");
    fedc_config_set_i64(fit, "local_epochs", 1);
    fedc_config_set_i64(fit, "batch_size", 32);

    fedc_server_options opt;
    fedc_server_options_init(&opt);
    /* TLS from the environment (docs/security.md): the server's certificate
     * and key, and the CA of the clients' certificates; FEDC_INSECURE=1
     * for plaintext. */
    opt.tls_cert = getenv("FEDC_TLS_CERT");
    opt.tls_key = getenv("FEDC_TLS_KEY");
    opt.tls_ca = getenv("FEDC_TLS_CA");
    opt.insecure = getenv("FEDC_INSECURE") && !strcmp(getenv("FEDC_INSECURE"), "1");
    opt.listen = argv[1];
    opt.rounds = strtoull(argv[2], NULL, 10);
    opt.min_clients = 2;
    opt.initial_model = fedc_model_params(model);
    opt.fit_config = fit;
    opt.out_dir = argv[3];
    opt.strategy = &strategy;
    opt.on_round = on_round;
    opt.on_round_user = &cp;

    int rc = FEDC_ERR_INVALID;
    fedc_server *s = fedc_server_create(&opt, err, sizeof err);
    if (s) {
        rc = fedc_server_run(s);
        if (rc != FEDC_OK) snprintf(err, sizeof err, "%s", fedc_server_errmsg(s));
        fedc_server_destroy(s);
    }
    if (rc != FEDC_OK) fprintf(stderr, "custom_strategy: %s\n", err);
    fedc_config_destroy(fit);
    fedc_model_destroy(model);
    fedc_model_destroy(data.eval.model);
    fedc_dataset_destroy(data.eval.test);
    return rc == FEDC_OK ? 0 : 1;
}
