/*
 * SGD with momentum and weight decay: the backend's update against numbers
 * worked out by hand, and fedc_model_train's steps against the same update
 * applied to gradients from the model; the same for FedProx's proximal
 * term.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "test_util.h"

/* w = 1, constant gradient 0.5, lr 0.1, momentum 0.9, weight decay 0.1:
 *   step 1: g' = 0.5 + 0.1*1      = 0.6       v = 0.6
 *           w = 1 - 0.1*0.6                  = 0.94
 *   step 2: g' = 0.5 + 0.1*0.94   = 0.594     v = 0.9*0.6 + 0.594       = 1.134
 *           w = 0.94 - 0.1*1.134             = 0.8266
 *   step 3: g' = 0.5 + 0.1*0.8266 = 0.58266   v = 0.9*1.134 + 0.58266   = 1.60326
 *           w = 0.8266 - 0.1*1.60326         = 0.666274
 * Without momentum (same lr and decay): w = 0.94, then 0.94 - 0.1*0.594 = 0.8806,
 * then 0.8806 - 0.1*(0.5 + 0.08806) = 0.821794. */
static void test_update_by_hand(void)
{
    const fedc__nn_backend *be = fedc__nn_backend_cpu();
    float w[2] = {1.0f, 1.0f}, g[2] = {0.5f, 0.5f}, v[2] = {0.0f, 0.0f};
    const double want_w[3] = {0.94, 0.8266, 0.666274};
    const double want_v[3] = {0.6, 1.134, 1.60326};
    const double want_plain[3] = {0.94, 0.8806, 0.821794};
    for (int step = 0; step < 3; step++) {
        be->iface->sgd_update(be->context, w, g, v, 1, 0.1f, 0.9f, 0.1f);
        be->iface->sgd_update(be->context, w + 1, g + 1, v + 1, 1, 0.1f, 0.0f, 0.1f);
        CHECK(fabs(w[0] - want_w[step]) < 1e-6 && fabs(v[0] - want_v[step]) < 1e-6,
              "momentum 0.9, decay 0.1, step %d: w %.6f (hand %.6f), v %.6f (hand %.6f)", step + 1, w[0],
              want_w[step], v[0], want_v[step]);
        CHECK(fabs(w[1] - want_plain[step]) < 1e-6 && v[1] == 0.0f,
              "no momentum, decay 0.1, step %d: w %.6f (hand %.6f), buffer untouched", step + 1, w[1],
              want_plain[step]);
    }
}

static void snapshot(fedc_model *m, float **out)
{
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        const fedc_tensor *ten = fedc_params_at(p, t);
        out[t] = malloc(ten->nbytes);
        memcpy(out[t], ten->data, ten->nbytes);
    }
}

static void grads(fedc_model *m, const float *x, const int32_t *y, size_t n, float **out)
{
    double loss;
    fedc__nn_model_loss_grad(m, x, y, n, &loss, NULL, 0);
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        const fedc_tensor *ten = fedc_params_at(p, t);
        out[t] = malloc(ten->nbytes);
        memcpy(out[t], fedc__nn_model_grad(m, t), ten->nbytes);
    }
}

static void load(fedc_model *m, float *const *vals)
{
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        fedc_tensor *ten = fedc_params_at(p, t);
        memcpy(ten->data, vals[t], ten->nbytes);
    }
}

/* The largest difference between the model's parameters and `want`, or
 * with `l2` the Euclidean norm of the difference. */
static double param_diff(fedc_model *m, float *const *want, int l2)
{
    fedc_params *p = fedc_model_params(m);
    double worst = 0.0, sq = 0.0;
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        const fedc_tensor *ten = fedc_params_at(p, t);
        const float *v = ten->data;
        for (int64_t i = 0; i < fedc_tensor_numel(ten); i++) {
            double d = (double)v[i] - (double)want[t][i];
            worst = fmax(worst, fabs(d));
            sq += d * d;
        }
    }
    return l2 ? sqrt(sq) : worst;
}

static double max_diff(fedc_model *m, float *const *want)
{
    return param_diff(m, want, 0);
}

/* n random examples for the 784-input models (the caller frees them), with
 * labels i % 10 in y. */
static float *make_examples(size_t n, uint64_t seed, int32_t *y)
{
    float *x = malloc(n * 784 * sizeof(float));
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * 784; i++) x[i] = (float)fedc_rng_uniform(&rng);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)(i % 10);
    return x;
}

#define NT 10

static void free_all(float **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
}

/* Full-batch training for two epochs must equal two hand-applied steps
 * (with FedProx's term mu (w - w0), which is zero at the first step):
 *   v1 = g(w0) + wd w0                          w1 = w0 - lr v1
 *   v2 = mom v1 + g(w1) + mu (w1 - w0) + wd w1  w2 = w1 - lr v2
 * and two calls of one epoch each restart the momentum (and the proximal
 * term's anchor, at w1 for the second call):
 *   w2' = w1 - lr (g(w1) + wd w1). */
static void test_train_steps(const char *arch, double mu)
{
    const size_t n = 8;
    const double lr = 0.05, mom = 0.9, wd = 0.05;
    fedc_model *m = NULL;
    fedc_model_create(arch, 17, &m, NULL, 0);
    size_t count = fedc_params_count(fedc_model_params(m));
    int32_t y[8];
    float *x = make_examples(n, 5, y);

    float *w0[NT] = {0}, *g0[NT] = {0}, *w1[NT] = {0}, *g1[NT] = {0}, *v1[NT] = {0};
    float *w2[NT] = {0}, *w2r[NT] = {0};
    snapshot(m, w0);
    grads(m, x, y, n, g0);
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < count; t++) {
        size_t k = (size_t)fedc_tensor_numel(fedc_params_at(p, t));
        v1[t] = malloc(k * sizeof(float));
        w1[t] = malloc(k * sizeof(float));
        for (size_t i = 0; i < k; i++) {
            double v = (double)g0[t][i] + wd * w0[t][i];
            v1[t][i] = (float)v;
            w1[t][i] = (float)(w0[t][i] - lr * v);
        }
    }
    load(m, w1);
    grads(m, x, y, n, g1);
    for (size_t t = 0; t < count; t++) {
        size_t k = (size_t)fedc_tensor_numel(fedc_params_at(p, t));
        w2[t] = malloc(k * sizeof(float));
        w2r[t] = malloc(k * sizeof(float));
        for (size_t i = 0; i < k; i++) {
            double g = (double)g1[t][i] + wd * w1[t][i];
            double prox = mu * ((double)w1[t][i] - (double)w0[t][i]);
            w2[t][i] = (float)(w1[t][i] - lr * (mom * v1[t][i] + g + prox));
            w2r[t][i] = (float)(w1[t][i] - lr * g);
        }
    }

    fedc_train_config cfg = {lr, mom, wd, 2, (int)n, 99, mu, NULL, 0.0, 0.0};
    fedc_train_stats st;
    char err[FEDC_ERRMSG_MAX];
    load(m, w0);
    int rc = fedc_model_train(m, x, y, n, &cfg, &st, err, sizeof(err));
    double d = max_diff(m, w2);
    CHECK(rc == FEDC_OK && d < 2e-6 && st.steps == 2 && st.num_examples == n,
          "%s, mu %g: two full-batch epochs equal two hand-applied momentum steps (max diff %.2e, "
          "%llu steps)",
          arch, mu, d, (unsigned long long)st.steps);

    cfg.epochs = 1;
    load(m, w0);
    fedc_model_train(m, x, y, n, &cfg, NULL, err, sizeof(err));
    double d1 = max_diff(m, w1);
    fedc_model_train(m, x, y, n, &cfg, NULL, err, sizeof(err));
    double d2 = max_diff(m, w2r);
    CHECK(d1 < 2e-6 && d2 < 2e-6,
          "%s, mu %g: each call starts with zero momentum (after call 1: %.2e, call 2: %.2e)", arch, mu, d1,
          d2);

    /* The last batch of an epoch may be smaller: 8 examples in batches of 3. */
    cfg.epochs = 2;
    cfg.batch_size = 3;
    rc = fedc_model_train(m, x, y, n, &cfg, &st, err, sizeof(err));
    CHECK(rc == FEDC_OK && st.steps == 6,
          "%s: 8 examples in batches of 3 for 2 epochs take %llu "
          "steps (6)",
          arch, (unsigned long long)st.steps);
    free_all(w0, count);
    free_all(g0, count);
    free_all(w1, count);
    free_all(g1, count);
    free_all(v1, count);
    free_all(w2, count);
    free_all(w2r, count);
    free(x);
    fedc_model_destroy(m);
}

/* FedProx's term by hand: g = 0.5, w = 1, w0 = 0.5, mu = 0.2 gives
 * g = 0.5 + 0.2 * 0.5 = 0.6; with w == w0 it adds nothing. */
static void test_proximal_by_hand(void)
{
    const fedc__nn_backend *be = fedc__nn_backend_cpu();
    float g[2] = {0.5f, 0.5f}, w[2] = {1.0f, 0.25f}, w0[2] = {0.5f, 0.25f};
    be->iface->proximal_grad(be->context, g, w, w0, 2, 0.2f);
    CHECK(fabs(g[0] - 0.6) < 1e-7 && g[1] == 0.5f, "proximal_grad: g %.7f (hand 0.6), %.7f (hand 0.5)", g[0],
          g[1]);
}

/* Applies one optimizer step to the model's parameters the way the trainer
 * does, from the gradient of examples x, y (the backend's own ops, so the
 * result must be bit-identical to fedc_model_train's). */
static void op_step(fedc_model *m, const float *x, const int32_t *y, size_t n, float **v, float *const *w0,
                    const fedc_train_config *cfg)
{
    const fedc__nn_backend *be = fedc__nn_backend_cpu();
    fedc__nn_model_loss_grad(m, x, y, n, NULL, NULL, 0);
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        fedc_tensor *ten = fedc_params_at(p, t);
        size_t k = (size_t)fedc_tensor_numel(ten);
        if (cfg->proximal_mu != 0.0)
            be->iface->proximal_grad(be->context, fedc__nn_model_grad(m, t), ten->data, w0[t], k,
                                     (float)cfg->proximal_mu);
        be->iface->sgd_update(be->context, ten->data, fedc__nn_model_grad(m, t), v[t], k, (float)cfg->lr,
                              (float)cfg->momentum, (float)cfg->weight_decay);
    }
}

static int same_bits(fedc_model *m, float *const *want)
{
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        const fedc_tensor *ten = fedc_params_at(p, t);
        if (memcmp(ten->data, want[t], ten->nbytes)) return 0;
    }
    return 1;
}

/* One example (so that no shuffle changes the order of a sum), three epochs:
 * fedc_model_train must give exactly the bits of the same ops applied by
 * hand, without the proximal op when mu is 0 (the plain SGD path) and with
 * it when mu > 0. */
static void test_fedprox_bits(double mu)
{
    fedc_model *m = NULL;
    fedc_model_create("mlp", 23, &m, NULL, 0);
    size_t count = fedc_params_count(fedc_model_params(m));
    int32_t y[1];
    float *x = make_examples(1, 8, y);
    fedc_train_config cfg = {0.05, 0.9, 0.01, 3, 1, 4, mu, NULL, 0.0, 0.0};

    float *w0[NT] = {0}, *v[NT] = {0}, *want[NT] = {0};
    snapshot(m, w0);
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < count; t++) v[t] = calloc(1, fedc_params_at(p, t)->nbytes);
    for (int step = 0; step < cfg.epochs; step++) op_step(m, x, y, 1, v, w0, &cfg);
    snapshot(m, want);

    load(m, w0);
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_model_train(m, x, y, 1, &cfg, NULL, err, sizeof(err));
    CHECK(rc == FEDC_OK && same_bits(m, want),
          "mu %g: three steps of fedc_model_train are bit-identical to the backend's ops applied by hand "
          "(%s)",
          mu, rc ? err : "ok");
    free_all(w0, count);
    free_all(v, count);
    free_all(want, count);
    free(x);
    fedc_model_destroy(m);
}

/* A large mu pulls the trained weights towards the start. */
static void test_fedprox_pulls_back(void)
{
    const size_t n = 64;
    fedc_model *m = NULL;
    fedc_model_create("mlp", 41, &m, NULL, 0);
    size_t count = fedc_params_count(fedc_model_params(m));
    int32_t y[64];
    float *x = make_examples(n, 12, y);
    float *w0[NT] = {0};
    snapshot(m, w0);
    double d[2];
    const double mus[2] = {0.0, 5.0};
    for (int k = 0; k < 2; k++) {
        fedc_train_config cfg = {0.1, 0.0, 0.0, 5, 8, 3, mus[k], NULL, 0.0, 0.0};
        load(m, w0);
        fedc_model_train(m, x, y, n, &cfg, NULL, NULL, 0);
        d[k] = param_diff(m, w0, 1);
    }
    CHECK(d[1] < 0.8 * d[0], "after 5 epochs ||w - w0|| is %.4f with mu 5, %.4f without", d[1], d[0]);
    free_all(w0, count);
    free(x);
    fedc_model_destroy(m);
}

int main(void)
{
    test_update_by_hand();
    test_train_steps("mlp", 0.0);
    test_train_steps("cnn", 0.0);
    test_train_steps("mlp", 2.0);
    test_train_steps("cnn", 2.0);
    test_proximal_by_hand();
    test_fedprox_bits(0.0);
    test_fedprox_bits(0.5);
    test_fedprox_pulls_back();
    return test_summary();
}
