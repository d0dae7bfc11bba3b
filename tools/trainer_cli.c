/* The built-in trainer behind the client callbacks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_cli.h"

/* Makes sure the model has the architecture the server asked for. */
static int ensure_model(trainer *t, const fedc_config *cfg, char *err, size_t errlen)
{
    const char *arch = NULL;
    if (fedc_config_get_str(cfg, "model", &arch) != FEDC_OK) arch = t->default_arch;
    if (t->model && !strcmp(fedc_model_arch(t->model), arch)) return FEDC_OK;
    fedc_model_destroy(t->model);
    t->model = NULL;
    int rc = fedc_model_create(arch, t->seed, &t->model, err, errlen);
    if (rc == FEDC_OK && t->device.type != FEDC_DEVICE_CPU) {
        rc = fedc_model_set_device(t->model, t->device, err, errlen);
        if (rc != FEDC_OK) {
            fedc_model_destroy(t->model);
            t->model = NULL;
        }
    }
    return rc;
}

int trainer_check_geometry(trainer *t, const fedc_dataset *d, char *err, size_t errlen)
{
    int c, h, w;
    fedc_model_input_shape(t->model, &c, &h, &w);
    if ((size_t)c * (size_t)h * (size_t)w != d->features)
        return fedc_set_error(
            err, errlen, FEDC_ERR_SHAPE,
            "model '%s' expects %dx%dx%d inputs, the local data has %zu features per example",
            fedc_model_arch(t->model), c, h, w, d->features);
    return FEDC_OK;
}

int trainer_attack_parse(const char *s, trainer_attack *out)
{
    trainer_attack a = {TRAINER_ATTACK_NONE, 0.0};
    if (!strcmp(s, "sign-flip")) {
        a.kind = TRAINER_ATTACK_SIGN_FLIP;
    } else if (!strcmp(s, "gaussian")) {
        a.kind = TRAINER_ATTACK_GAUSSIAN;
    } else if (!strncmp(s, "scale:", 6)) {
        char *end;
        a.kind = TRAINER_ATTACK_SCALE;
        a.scale = strtod(s + 6, &end);
        if (end == s + 6 || *end || !isfinite(a.scale)) return -1;
    } else {
        return -1;
    }
    *out = a;
    return 0;
}

/* Replaces the honest result of local training, `trained`, by the attack's
 * poisoned parameters, written into `global` (which holds the round's global
 * model on entry). The arithmetic is float, as the aggregation's inputs. */
static void poison(const trainer_attack *a, fedc_params *global, const fedc_params *trained, uint64_t seed)
{
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    float k = a->kind == TRAINER_ATTACK_SCALE ? (float)a->scale : -1.0f;
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        float *g = fedc_params_at(global, t)->data;
        const float *w = fedc_params_at(trained, t)->data;
        size_t n = (size_t)fedc_tensor_numel(fedc_params_at(global, t));
        if (a->kind != TRAINER_ATTACK_GAUSSIAN) {
            for (size_t i = 0; i < n; i++) g[i] = g[i] + k * (w[i] - g[i]);
            continue;
        }
        double mean = 0.0, var = 0.0;
        for (size_t i = 0; i < n; i++) mean += (double)w[i] - (double)g[i];
        mean /= (double)(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            double d = (double)w[i] - (double)g[i] - mean;
            var += d * d;
        }
        double sd = sqrt(var / (double)(n ? n : 1));
        for (size_t i = 0; i < n; i++) g[i] = g[i] + (float)(sd * fedc_rng_normal(&rng));
    }
}

static int cb_get_parameters(void *user, const fedc_config *cfg, fedc_params **out, char *err, size_t errlen)
{
    trainer *t = user;
    int rc = ensure_model(t, cfg, err, errlen);
    if (rc) return rc;
    *out = fedc_params_clone(fedc_model_params(t->model));
    return *out ? FEDC_OK : FEDC_ERR_NOMEM;
}

static int cb_fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *num_examples,
                  fedc_config *metrics, char *err, size_t errlen)
{
    trainer *t = user;
    int rc = ensure_model(t, cfg, err, errlen);
    if (!rc) rc = trainer_check_geometry(t, t->train, err, errlen);
    if (!rc) rc = fedc_model_set_params(t->model, params, err, errlen);
    if (rc) return rc;
    fedc_train_config tc = {
        .lr = fedc_config_f64_or(cfg, "lr", 0.05),
        .momentum = fedc_config_f64_or(cfg, "momentum", 0.0),
        .weight_decay = fedc_config_f64_or(cfg, "weight_decay", 0.0),
        .epochs = (int)fedc_config_i64_or(cfg, "local_epochs", 1),
        .batch_size = (int)fedc_config_i64_or(cfg, "batch_size", 32),
        .seed = (uint64_t)fedc_config_i64_or(cfg, "seed", 0),
        /* Sent by a server whose strategy is FedProx. */
        .proximal_mu = fedc_config_f64_or(cfg, "proximal_mu", 0.0),
    };
    fedc_train_stats st;
    rc = fedc_model_train(t->model, t->train->x, t->train->y, t->train->n, &tc, &st, err, errlen);
    if (rc) return rc;
    if (t->attack.kind != TRAINER_ATTACK_NONE)
        poison(&t->attack, params, fedc_model_params(t->model), tc.seed);
    else
        rc = fedc_params_copy_data(params, fedc_model_params(t->model), err, errlen);
    if (rc) return rc;
    *num_examples = t->train->n;
    fedc_config_set_f64(metrics, "train_loss", st.loss);
    fedc_config_set_f64(metrics, "train_accuracy", st.accuracy);
    return FEDC_OK;
}

static int cb_evaluate(void *user, const fedc_params *params, const fedc_config *cfg, double *loss,
                       uint64_t *num_examples, fedc_config *metrics, char *err, size_t errlen)
{
    trainer *t = user;
    if (!t->test)
        return fedc_set_error(err, errlen, FEDC_ERR_NOTFOUND, "this client has no local test split");
    int rc = ensure_model(t, cfg, err, errlen);
    if (!rc) rc = trainer_check_geometry(t, t->test, err, errlen);
    if (!rc) rc = fedc_model_set_params(t->model, params, err, errlen);
    if (rc) return rc;
    fedc_eval_stats st;
    rc = fedc_model_evaluate(t->model, t->test->x, t->test->y, t->test->n, 256, &st, err, errlen);
    if (rc) return rc;
    *loss = st.loss;
    *num_examples = t->test->n;
    fedc_config_set_f64(metrics, "accuracy", st.accuracy);
    return FEDC_OK;
}

const fedc_client_callbacks trainer_callbacks = {cb_get_parameters, cb_fit, cb_evaluate};
