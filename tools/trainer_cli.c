/* The built-in trainer behind the client callbacks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fedc/privacy.h"
#include "fedc/strategy.h"
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

void trainer_release(trainer *t)
{
    fedc_model_destroy(t->model);
    t->model = NULL;
    fedc_params_destroy(t->control);
    t->control = NULL;
    free(t->dp_rdp);
    t->dp_rdp = NULL;
}

/* ---- record-level DP: what DP-SGD has spent ------------------------------ */

/* Adds a round of DP-SGD (steps at sampling rate q, noise multiplier z) to
 * the RDP this client's records have spent, keeps it, and gives the epsilon
 * at delta. Every round this client trains counts, whoever aggregates it. */
static int record_account(trainer *t, double q, double z, uint64_t steps, double delta, double *eps,
                          char *err, size_t errlen)
{
    size_t n;
    const double *orders = fedc_rdp_default_orders(&n);
    const int64_t shape[1] = {(int64_t)n};
    int rc = FEDC_OK;
    if (!t->dp_rdp) {
        t->dp_rdp = calloc(n, sizeof *t->dp_rdp);
        if (!t->dp_rdp) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        if (t->dp_state_path && access(t->dp_state_path, F_OK) == 0) {
            fedc_params *p = NULL;
            rc = fedc_params_load(t->dp_state_path, &p, err, errlen);
            const fedc_tensor *r = rc ? NULL : fedc_params_find(p, "rdp");
            if (!rc && (!r || r->dtype != FEDC_F64 || r->ndim != 1 || r->shape[0] != (int64_t)n))
                rc = fedc_set_error(
                    err, errlen, FEDC_ERR_FORMAT,
                    "%s does not hold an RDP vector of %zu orders; remove it only if this client's "
                    "data has never been used with DP-SGD",
                    t->dp_state_path, n);
            if (!rc) memcpy(t->dp_rdp, r->data, n * sizeof *t->dp_rdp);
            fedc_params_destroy(p);
            if (rc) {
                free(t->dp_rdp);
                t->dp_rdp = NULL;
                return rc;
            }
        }
    }
    double *round = malloc(n * sizeof *round);
    if (!round) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    rc = fedc_rdp_sampled_gaussian(q, z, steps, orders, n, round, err, errlen);
    for (size_t i = 0; !rc && i < n; i++) t->dp_rdp[i] += round[i];
    free(round);
    if (!rc && t->dp_state_path) {
        fedc_params *p = fedc_params_create();
        rc = p ? fedc_params_add(p, "rdp", FEDC_F64, 1, shape, t->dp_rdp, NULL, err, errlen)
               : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        static const char *const keys[] = {"fedc.state"};
        static const char *const values[] = {"DP-SGD: RDP spent at the default orders"};
        if (!rc) rc = fedc_params_save(p, t->dp_state_path, keys, values, 1, err, errlen);
        fedc_params_destroy(p);
    }
    if (!rc) rc = fedc_rdp_epsilon(orders, t->dp_rdp, n, delta, eps, NULL, err, errlen);
    return rc;
}

/* ---- SCAFFOLD (Karimireddy et al. 2020), the client's side ------------- */

#define SCAFFOLD_PREFIX "scaffold/"

/* A request of a SCAFFOLD round carries the model's T tensors, then the
 * server's control variate c as T tensors named "scaffold/<name>". Copies
 * the model part into a new parameter set (*model). */
static int scaffold_split(const fedc_params *params, const fedc_params *layout, fedc_params **model,
                          char *err, size_t errlen)
{
    size_t nt = fedc_params_count(layout);
    if (fedc_params_count(params) != 2 * nt)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                              "scaffold: the request has %zu tensors, expected the model's %zu and as many "
                              "control variates",
                              fedc_params_count(params), nt);
    fedc_params *m = fedc_params_create();
    int rc = m ? FEDC_OK : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nt; i++) {
        const fedc_tensor *w = fedc_params_at(params, i), *c = fedc_params_at(params, nt + i);
        if (strncmp(c->name, SCAFFOLD_PREFIX, strlen(SCAFFOLD_PREFIX)) ||
            strcmp(c->name + strlen(SCAFFOLD_PREFIX), w->name) || c->dtype != FEDC_F32 ||
            fedc_tensor_numel(c) != fedc_tensor_numel(w))
            rc = fedc_set_error(
                err, errlen, FEDC_ERR_SHAPE,
                "scaffold: tensor %zu is '%s', expected the control variate '%s%s' of the same "
                "size",
                nt + i, c->name, SCAFFOLD_PREFIX, w->name);
        else
            rc = fedc_params_add(m, w->name, w->dtype, w->ndim, w->shape, w->data, NULL, err, errlen);
    }
    if (rc) {
        fedc_params_destroy(m);
        return rc;
    }
    *model = m;
    return FEDC_OK;
}

/* This client's c_i: from its state file or memory, else zero. */
static int control_load(trainer *t, const fedc_params *layout, fedc_params **ci, char *err, size_t errlen)
{
    fedc_params *c = NULL;
    int rc = FEDC_OK;
    if (t->control) {
        c = fedc_params_clone(t->control);
        if (!c) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    } else if (t->state_path && access(t->state_path, F_OK) == 0) {
        rc = fedc_params_load(t->state_path, &c, err, errlen);
        if (rc) return rc;
    }
    if (c) {
        char why[FEDC_ERRMSG_MAX];
        if (fedc_params_check_same_layout(layout, c, why, sizeof why)) {
            fedc_params_destroy(c);
            return fedc_set_error(
                err, errlen, FEDC_ERR_SHAPE,
                "scaffold: the saved control variate %s does not fit this model (%s); remove "
                "it or use another --state-dir",
                t->state_path ? t->state_path : "(in memory)", why);
        }
        *ci = c;
        return FEDC_OK;
    }
    c = fedc_params_clone(layout);
    if (!c) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < fedc_params_count(c); i++)
        memset(fedc_params_at(c, i)->data, 0, fedc_params_at(c, i)->nbytes);
    *ci = c;
    return FEDC_OK;
}

/* Keeps c_i for the next round (taking it). */
static int control_store(trainer *t, fedc_params *ci, char *err, size_t errlen)
{
    if (!t->state_path) {
        fedc_params_destroy(t->control);
        t->control = ci;
        return FEDC_OK;
    }
    static const char *const keys[] = {"fedc.state"};
    static const char *const values[] = {"scaffold client control variate"};
    int rc = fedc_params_save(ci, t->state_path, keys, values, 1, err, errlen);
    fedc_params_destroy(ci);
    return rc;
}

/*
 * One SCAFFOLD round (option II of the paper): train with the gradient
 * corrected by c - c_i, then c_i+ = c_i - c + (x - y) / (K lr) after K
 * steps (K: fedc_sgd_norm of the steps and momentum). The answer is the model y followed by delta c_i = c_i+
 * - c_i in the control variate's tensors. `params` holds x then c on entry.
 */
static int scaffold_fit(trainer *t, fedc_params *params, fedc_train_config *tc, fedc_train_stats *st,
                        char *err, size_t errlen)
{
    const fedc_params *layout = fedc_model_params(t->model);
    size_t nt = fedc_params_count(layout);
    fedc_params *x = NULL, *ci = NULL;
    float **corr = calloc(nt ? nt : 1, sizeof *corr);
    int rc = corr ? FEDC_OK : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    if (!rc) rc = scaffold_split(params, layout, &x, err, errlen);
    if (!rc) rc = fedc_model_set_params(t->model, x, err, errlen);
    int had_file = t->state_path && access(t->state_path, F_OK) == 0;
    if (!rc) rc = control_load(t, layout, &ci, err, errlen);
    for (size_t i = 0; !rc && i < nt; i++) {
        const fedc_tensor *c = fedc_params_at(params, nt + i), *own = fedc_params_at(ci, i);
        size_t n = (size_t)fedc_tensor_numel(c);
        corr[i] = malloc((n ? n : 1) * sizeof(float));
        if (!corr[i]) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t j = 0; j < n; j++)
            corr[i][j] = ((const float *)c->data)[j] - ((const float *)own->data)[j];
    }
    if (!rc && !t->control_announced) {
        t->control_announced = 1;
        if (t->state_path)
            fedc_log(FEDC_LOG_INFO, "client", "scaffold: control variate kept in %s (%s)", t->state_path,
                     had_file ? "continuing from the saved one" : "new, starting from zero");
        else
            fedc_log(FEDC_LOG_WARN, "client",
                     "scaffold: no --state-dir, so the control variate is kept in memory only and lost if "
                     "this client restarts");
    }
    if (!rc) {
        tc->grad_correction = (const float *const *)corr;
        rc = fedc_model_train(t->model, t->train->x, t->train->y, t->train->n, tc, st, err, errlen);
        tc->grad_correction = NULL;
    }
    if (!rc) {
        /* c_i+ into ci, delta c_i into the answer's control tensors. With
         * momentum, (x - y) / lr is about norm * (mean gradient), not
         * steps * (mean gradient): FedNova's norm takes the place of the
         * step count (the same for momentum 0). */
        double k_lr = fedc_sgd_norm((double)st->steps, tc->momentum) * tc->lr;
        for (size_t i = 0; i < nt; i++) {
            const float *xv = fedc_params_at(x, i)->data, *yv = fedc_params_at(layout, i)->data;
            float *own = fedc_params_at(ci, i)->data, *delta = fedc_params_at(params, nt + i)->data;
            const float *c = delta; /* holds c until overwritten, element by element */
            size_t n = (size_t)fedc_tensor_numel(fedc_params_at(layout, i));
            for (size_t j = 0; j < n; j++) {
                float next = (float)((double)own[j] - (double)c[j] + ((double)xv[j] - (double)yv[j]) / k_lr);
                delta[j] = next - own[j];
                own[j] = next;
            }
        }
        rc = fedc_params_check_finite(ci, err, errlen);
    }
    if (!rc) {
        /* The model part of the answer; the attack, if any, poisons it. */
        if (t->attack.kind != TRAINER_ATTACK_NONE)
            poison(&t->attack, x, layout, tc->seed);
        else
            rc = fedc_params_copy_data(x, layout, err, errlen);
        for (size_t i = 0; !rc && i < nt; i++)
            memcpy(fedc_params_at(params, i)->data, fedc_params_at(x, i)->data, fedc_params_at(x, i)->nbytes);
    }
    if (!rc) {
        rc = control_store(t, ci, err, errlen);
        ci = NULL;
    }
    for (size_t i = 0; corr && i < nt; i++) free(corr[i]);
    free(corr);
    fedc_params_destroy(x);
    fedc_params_destroy(ci);
    return rc;
}

static int cb_fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *num_examples,
                  fedc_config *metrics, char *err, size_t errlen)
{
    trainer *t = user;
    int scaffold = 0;
    if (fedc_config_get_bool(cfg, "scaffold", &scaffold) != FEDC_OK) scaffold = 0;
    int rc = ensure_model(t, cfg, err, errlen);
    if (!rc) rc = trainer_check_geometry(t, t->train, err, errlen);
    if (!rc && !scaffold) rc = fedc_model_set_params(t->model, params, err, errlen);
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
        /* Record-level DP: DP-SGD, as the server asks. */
        .dp_sgd_clip = fedc_config_f64_or(cfg, "dp_sgd_clip", 0.0),
        .dp_sgd_noise_multiplier = fedc_config_f64_or(cfg, "dp_sgd_noise_multiplier", 0.0),
    };
    fedc_train_stats st;
    /* Client-clip and local DP: this client bounds (and in local DP
     * noises) its own update, which needs the global model it started
     * from. */
    double dp_clip = 0, dp_z = 0;
    fedc_params *start = NULL;
    if (fedc_config_get_f64(cfg, "dp_clip", &dp_clip) == FEDC_OK) {
        if (fedc_config_get_f64(cfg, "dp_noise_multiplier", &dp_z) != FEDC_OK) dp_z = 0;
        if (!(dp_clip > 0) || !(dp_z >= 0) || !isfinite(dp_clip) || !isfinite(dp_z))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "dp_clip %g / dp_noise_multiplier %g from the server are not valid",
                                  dp_clip, dp_z);
        if (scaffold)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                                  "DP does not go with scaffold's requests");
        start = fedc_params_clone(params);
        if (!start) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    if (scaffold) {
        rc = scaffold_fit(t, params, &tc, &st, err, errlen);
    } else {
        rc = fedc_model_train(t->model, t->train->x, t->train->y, t->train->n, &tc, &st, err, errlen);
        if (!rc && t->attack.kind != TRAINER_ATTACK_NONE)
            poison(&t->attack, params, fedc_model_params(t->model), tc.seed);
        else if (!rc)
            rc = fedc_params_copy_data(params, fedc_model_params(t->model), err, errlen);
    }
    if (!rc && start) rc = fedc_dp_clip_update(params, start, dp_clip, dp_z * dp_clip, NULL, err, errlen);
    fedc_params_destroy(start);
    double eps_record = NAN;
    if (!rc && tc.dp_sgd_clip > 0)
        rc = record_account(t, st.dp_sample_rate, tc.dp_sgd_noise_multiplier, st.steps,
                            fedc_config_f64_or(cfg, "dp_delta", 1e-5), &eps_record, err, errlen);
    if (rc) return rc;
    *num_examples = t->train->n;
    if (tc.dp_sgd_clip > 0) fedc_config_set_f64(metrics, "epsilon_record", eps_record);
    /* The loss and accuracy of the local data are not privatised: under
     * record-level or local DP they stay here. */
    if (!(tc.dp_sgd_clip > 0) && !(dp_z > 0)) {
        fedc_config_set_f64(metrics, "train_loss", st.loss);
        fedc_config_set_f64(metrics, "train_accuracy", st.accuracy);
    }
    /* What FedNova normalises by (any strategy may read them). */
    fedc_config_set_i64(metrics, "local_steps", (int64_t)st.steps);
    fedc_config_set_f64(metrics, "local_momentum", tc.momentum);
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
