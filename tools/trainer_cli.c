/* The built-in trainer behind the client callbacks. */
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
    };
    fedc_train_stats st;
    rc = fedc_model_train(t->model, t->train->x, t->train->y, t->train->n, &tc, &st, err, errlen);
    if (rc) return rc;
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
