/*
 * SCAFFOLD's gradient correction (fedc_train_config.grad_correction): a
 * zero correction changes nothing, one step moves the parameters by exactly
 * -lr times the correction, a non-finite value is refused before the model
 * changes, and a correction changes a longer training with momentum.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "nn/backend.h"
#include "test_nn_util.h"
#include "test_util.h"

#define MAX_T 16

/* One correction array per tensor of m, each value uniform in
 * [-scale, scale) (0 with scale 0). Exits when out of memory. */
static size_t make_correction(fedc_model *m, uint64_t seed, float scale, float **corr)
{
    fedc_params *p = fedc_model_params(m);
    size_t count = fedc_params_count(p);
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    for (size_t t = 0; t < count && t < MAX_T; t++) {
        size_t k = (size_t)fedc_tensor_numel(fedc_params_at(p, t));
        corr[t] = malloc(k * sizeof(float));
        if (!corr[t]) {
            printf("out of memory\n");
            exit(EXIT_FAILURE);
        }
        for (size_t i = 0; i < k; i++) corr[t][i] = scale * (float)(2.0 * fedc_rng_uniform(&rng) - 1.0);
    }
    return count;
}

static void free_correction(float **corr, size_t count)
{
    for (size_t t = 0; t < count; t++) free(corr[t]);
}

/* Whether m's parameters are the bits of `p`. */
static int params_equal(fedc_model *m, const fedc_params *p)
{
    fedc_params *q = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(q); t++) {
        const fedc_tensor *a = fedc_params_at(q, t), *b = fedc_params_at(p, t);
        if (a->nbytes != b->nbytes || memcmp(a->data, b->data, a->nbytes) != 0) return 0;
    }
    return 1;
}

/* Trains m from the parameters `start` and returns the trained ones (the
 * caller destroys them), or NULL when the training fails. */
static fedc_params *train_from(fedc_model *m, const fedc_params *start, const nn_test_data *d,
                               const fedc_train_config *cfg)
{
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_model_set_params(m, start, err, sizeof(err));
    if (rc == FEDC_OK) rc = fedc_model_train(m, d->x, d->y, d->n, cfg, NULL, err, sizeof(err));
    CHECK(rc == FEDC_OK, "training (%s)", rc ? err : "ok");
    return rc == FEDC_OK ? fedc_params_clone(fedc_model_params(m)) : NULL;
}

/* (a) An all-zero correction gives the bits of no correction, momentum and
 * weight decay included. */
static void test_zero_is_none(void)
{
    nn_test_data d = nn_test_data_make(1, 48);
    fedc_model *m = NULL;
    fedc_model_create("mlp", 2, &m, NULL, 0);
    fedc_params *start = fedc_params_clone(fedc_model_params(m));
    float *corr[MAX_T] = {0};
    size_t count = make_correction(m, 0, 0.0f, corr);
    fedc_train_config cfg = {0.05, 0.9, 1e-4, 2, 16, 3, 0.0, NULL, 0.0, 0.0};
    fedc_params *plain = train_from(m, start, &d, &cfg);
    cfg.grad_correction = (const float *const *)corr;
    fedc_params *zero = train_from(m, start, &d, &cfg);
    CHECK(plain && zero && params_equal(m, plain),
          "a zero correction trains the parameters of no correction bit for bit");
    fedc_params_destroy(plain);
    fedc_params_destroy(zero);
    fedc_params_destroy(start);
    free_correction(corr, count);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

/* (b) One full-batch step without momentum or weight decay: the correction
 * moves every parameter by -lr * c, up to the rounding of the two updates. */
static void test_one_step(void)
{
    const double lr = 0.1;
    nn_test_data d = nn_test_data_make(4, 24);
    fedc_model *m = NULL;
    fedc_model_create("mlp", 5, &m, NULL, 0);
    fedc_params *start = fedc_params_clone(fedc_model_params(m));
    float *corr[MAX_T] = {0};
    size_t count = make_correction(m, 6, 0.5f, corr);
    fedc_train_config cfg = {lr, 0.0, 0.0, 1, (int)d.n, 7, 0.0, NULL, 0.0, 0.0};
    fedc_params *plain = train_from(m, start, &d, &cfg);
    cfg.grad_correction = (const float *const *)corr;
    fedc_params *with = train_from(m, start, &d, &cfg);
    if (plain && with) {
        double worst = 0.0;
        size_t bad = 0;
        for (size_t t = 0; t < count; t++) {
            const float *a = fedc_params_at(with, t)->data, *b = fedc_params_at(plain, t)->data;
            size_t k = (size_t)fedc_tensor_numel(fedc_params_at(with, t));
            for (size_t i = 0; i < k; i++) {
                double want = -lr * corr[t][i];
                double got = (double)a[i] - (double)b[i];
                /* Each side is a float update w - lr * g' rounded once or
                 * twice: a few units in the last place of the values. */
                double tol = 4.0 * FLT_EPSILON * (fabs(a[i]) + fabs(b[i]) + fabs(want));
                double off = fabs(got - want);
                if (off > tol) bad++;
                if (off > worst) worst = off;
            }
        }
        CHECK(bad == 0, "one step: w_with - w_without == -lr * c (%zu values off, worst by %.3g)", bad,
              worst);
    }
    fedc_params_destroy(plain);
    fedc_params_destroy(with);
    fedc_params_destroy(start);
    free_correction(corr, count);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

/* (c) A NaN or an infinity in the correction, or a missing array: refused
 * with the tensor named, and the parameters untouched. */
static void test_refused(void)
{
    nn_test_data d = nn_test_data_make(8, 16);
    fedc_model *m = NULL;
    fedc_model_create("mlp", 9, &m, NULL, 0);
    fedc_params *start = fedc_params_clone(fedc_model_params(m));
    float *corr[MAX_T] = {0};
    size_t count = make_correction(m, 10, 0.1f, corr);
    const size_t t = count > 2 ? 2 : count - 1;
    const char *name = fedc_params_at(fedc_model_params(m), t)->name;
    char want[256], err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = {0.05, 0.9, 1e-4, 1, 8, 1, 0.0, (const float *const *)corr, 0.0, 0.0};

    corr[t][12] = NAN;
    int rc = fedc_model_train(m, d.x, d.y, d.n, &cfg, NULL, err, sizeof(err));
    CHECK_STATUS(rc, FEDC_ERR_NONFINITE, "a NaN in the correction");
    snprintf(want, sizeof(want), "gradient correction of tensor '%s' element 12 is NaN", name);
    CHECK_CONTAINS(err, want, "a NaN in the correction");
    CHECK(params_equal(m, start), "a NaN in the correction leaves the parameters unchanged");

    corr[t][12] = 0.0f;
    corr[0][0] = -INFINITY;
    rc = fedc_model_train(m, d.x, d.y, d.n, &cfg, NULL, err, sizeof(err));
    CHECK_STATUS(rc, FEDC_ERR_NONFINITE, "an infinity in the correction");
    snprintf(want, sizeof(want), "tensor '%s' element 0 is infinite", fedc_params_at(start, 0)->name);
    CHECK_CONTAINS(err, want, "an infinity in the correction");
    CHECK(params_equal(m, start), "an infinity in the correction leaves the parameters unchanged");

    corr[0][0] = 0.0f;
    float *saved = corr[t];
    corr[t] = NULL;
    rc = fedc_model_train(m, d.x, d.y, d.n, &cfg, NULL, err, sizeof(err));
    CHECK_STATUS(rc, FEDC_ERR_INVALID, "a missing correction array");
    CHECK_CONTAINS(err, name, "a missing correction array");
    CHECK(params_equal(m, start), "a missing correction array leaves the parameters unchanged");
    corr[t] = saved;

    fedc_params_destroy(start);
    free_correction(corr, count);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

/* (d) Over many steps with momentum the correction changes the result, and
 * moves the parameters against it. */
static void test_changes_training(void)
{
    nn_test_data d = nn_test_data_make(11, 64);
    fedc_model *m = NULL;
    fedc_model_create("mlp", 12, &m, NULL, 0);
    fedc_params *start = fedc_params_clone(fedc_model_params(m));
    float *corr[MAX_T] = {0};
    size_t count = make_correction(m, 13, 0.05f, corr);
    fedc_train_config cfg = {0.02, 0.9, 1e-4, 2, 16, 14, 0.0, NULL, 0.0, 0.0};
    fedc_params *plain = train_from(m, start, &d, &cfg);
    cfg.grad_correction = (const float *const *)corr;
    fedc_params *with = train_from(m, start, &d, &cfg);
    if (plain && with) {
        CHECK(!params_equal(m, plain), "a correction changes an 8-step momentum training");
        /* The correction adds the same -lr * c to every step's descent, so
         * the difference it makes points against c. */
        double dot = 0.0;
        for (size_t t = 0; t < count; t++) {
            const float *a = fedc_params_at(with, t)->data, *b = fedc_params_at(plain, t)->data;
            size_t k = (size_t)fedc_tensor_numel(fedc_params_at(with, t));
            for (size_t i = 0; i < k; i++) dot += ((double)a[i] - (double)b[i]) * corr[t][i];
        }
        CHECK(dot < 0.0, "the correction moves the parameters against it (dot product %.4g)", dot);
    }
    fedc_params_destroy(plain);
    fedc_params_destroy(with);
    fedc_params_destroy(start);
    free_correction(corr, count);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

/* The backend op by hand: y += alpha * x, values exact in binary. */
static void test_axpy_by_hand(void)
{
    const fedc__nn_backend *be = fedc__nn_backend_cpu();
    float y[3] = {1.0f, -2.0f, 0.5f}, x[3] = {0.25f, 4.0f, -1.0f};
    be->iface->axpy(be->context, y, x, 3, 2.0f);
    CHECK(y[0] == 1.5f && y[1] == 6.0f && y[2] == -1.5f, "axpy: y %g %g %g (hand 1.5 6 -1.5)", y[0], y[1],
          y[2]);
    be->iface->axpy(be->context, y, x, 0, 2.0f);
    CHECK(y[0] == 1.5f, "axpy of 0 values changes nothing");
}

int main(void)
{
    test_axpy_by_hand();
    test_zero_is_none();
    test_one_step();
    test_refused();
    test_changes_training();
    return test_summary();
}
