/*
 * The built-in models: parameter counts, names and shapes (PyTorch's
 * conventions), initialisation, set_params and the forward pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "fedc/tensor.h"
#include "test_nn_util.h"
#include "test_util.h"

typedef struct expected_tensor {
    const char *name;
    int ndim;
    int64_t shape[4];
    int fan_in;
} expected_tensor;

static const expected_tensor cnn_tensors[] = {
    {"conv1.weight", 4, {6, 1, 5, 5}, 25},   {"conv1.bias", 1, {6}, 25},
    {"conv2.weight", 4, {16, 6, 5, 5}, 150}, {"conv2.bias", 1, {16}, 150},
    {"fc1.weight", 2, {120, 256}, 256},      {"fc1.bias", 1, {120}, 256},
    {"fc2.weight", 2, {84, 120}, 120},       {"fc2.bias", 1, {84}, 120},
    {"fc3.weight", 2, {10, 84}, 84},         {"fc3.bias", 1, {10}, 84},
};

static const expected_tensor mlp_tensors[] = {
    {"fc1.weight", 2, {200, 784}, 784}, {"fc1.bias", 1, {200}, 784},       {"fc2.weight", 2, {200, 200}, 200},
    {"fc2.bias", 1, {200}, 200},        {"fc3.weight", 2, {10, 200}, 200}, {"fc3.bias", 1, {10}, 200},
};

static const expected_tensor mlp_large_tensors[] = {
    {"fc1.weight", 2, {1024, 784}, 784},   {"fc1.bias", 1, {1024}, 784},
    {"fc2.weight", 2, {1024, 1024}, 1024}, {"fc2.bias", 1, {1024}, 1024},
    {"fc3.weight", 2, {10, 1024}, 1024},   {"fc3.bias", 1, {10}, 1024},
};

static size_t count_params(const fedc_params *p)
{
    size_t total = 0;
    for (size_t i = 0; i < fedc_params_count(p); i++)
        total += (size_t)fedc_tensor_numel(fedc_params_at(p, i));
    return total;
}

static void check_layout(const char *arch, const expected_tensor *want, size_t nwant, size_t total)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX];
    int rc = fedc_model_create(arch, 1, &m, err, sizeof(err));
    CHECK(rc == FEDC_OK && m, "%s: create", arch);
    if (rc) return;
    fedc_params *p = fedc_model_params(m);
    CHECK(strcmp(fedc_model_arch(m), arch) == 0, "%s: fedc_model_arch is '%s'", arch, fedc_model_arch(m));
    int c = 0, h = 0, w = 0;
    fedc_model_input_shape(m, &c, &h, &w);
    CHECK(c == 1 && h == 28 && w == 28 && fedc_model_num_classes(m) == 10, "%s: input %dx%dx%d, %d classes",
          arch, c, h, w, fedc_model_num_classes(m));
    CHECK(count_params(p) == total && fedc_model_num_params(m) == total,
          "%s: %zu parameters (fedc_model_num_params %zu), expected %zu", arch, count_params(p),
          fedc_model_num_params(m), total);
    CHECK(fedc_params_count(p) == nwant, "%s: %zu tensors, expected %zu", arch, fedc_params_count(p), nwant);
    for (size_t i = 0; i < nwant && i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        int same = strcmp(t->name, want[i].name) == 0 && t->ndim == want[i].ndim && t->dtype == FEDC_F32;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == want[i].shape[d];
        char got[64], exp[64];
        fedc_shape_str(t->ndim, t->shape, got, sizeof(got));
        fedc_shape_str(want[i].ndim, want[i].shape, exp, sizeof(exp));
        CHECK(same, "%s: tensor %zu is '%s' F32 %s (expected '%s' %s)", arch, i, t->name, got, want[i].name,
              exp);

        /* PyTorch's default init: uniform in +-1/sqrt(fan_in); the extremes
         * of a few hundred draws come close to the bound, and the mean is
         * near zero. */
        const float *v = t->data;
        size_t n = (size_t)fedc_tensor_numel(t);
        double bound = 1.0 / sqrt((double)want[i].fan_in), lo = 0, hi = 0, mean = 0;
        for (size_t j = 0; j < n; j++) {
            lo = fmin(lo, v[j]);
            hi = fmax(hi, v[j]);
            mean += v[j];
        }
        mean /= (double)n;
        int inside = lo >= -bound && hi <= bound;
        int spread = n < 50 || (hi > 0.8 * bound && lo < -0.8 * bound);
        CHECK(inside && spread && fabs(mean) < 0.2 * bound,
              "%s: '%s' uniform in +-%.4f (min %.4f, max %.4f, mean %.4f)", arch, t->name, bound, lo, hi,
              mean);
    }
    fedc_model_destroy(m);
}

static void test_init_seed(void)
{
    fedc_model *a = NULL, *b = NULL, *c = NULL;
    fedc_model_create("cnn", 42, &a, NULL, 0);
    fedc_model_create("cnn", 42, &b, NULL, 0);
    fedc_model_create("cnn", 43, &c, NULL, 0);
    CHECK(a && b && c && nn_test_same_params(a, b), "cnn: the same seed gives identical initial "
                                                    "parameters");
    CHECK(a && c && !nn_test_same_params(a, c), "cnn: another seed gives other initial parameters");
    fedc_model_destroy(a);
    fedc_model_destroy(b);
    fedc_model_destroy(c);
}

static void test_unknown_arch(void)
{
    static int not_a_model;
    fedc_model *m = (fedc_model *)&not_a_model; /* must be reset to NULL */
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_model_create("resnet50", 1, &m, err, sizeof(err));
    printf("     message: %s\n", err);
    CHECK(rc == FEDC_ERR_INVALID && m == NULL && strstr(err, "resnet50") && strstr(err, "cnn") &&
              strstr(err, "mlp-large"),
          "unknown architecture gives FEDC_ERR_INVALID naming it and the known ones");
    rc = fedc_model_create(NULL, 1, &m, NULL, 0);
    CHECK(rc == FEDC_ERR_INVALID, "NULL architecture gives FEDC_ERR_INVALID");
    fedc_model_destroy(NULL);
    CHECK(1, "fedc_model_destroy(NULL) is a no-op");
}

static void test_set_params(void)
{
    fedc_model *a = NULL, *b = NULL, *mlp = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_model_create("cnn", 1, &a, NULL, 0);
    fedc_model_create("cnn", 2, &b, NULL, 0);
    fedc_model_create("mlp", 2, &mlp, NULL, 0);
    int rc = fedc_model_set_params(a, fedc_model_params(b), err, sizeof(err));
    CHECK(rc == FEDC_OK && nn_test_same_params(a, b), "set_params copies a same-layout set");

    fedc_params *copy = fedc_params_clone(fedc_model_params(a));
    rc = fedc_model_set_params(a, fedc_model_params(mlp), err, sizeof(err));
    printf("     message: %s\n", err);
    CHECK(rc == FEDC_ERR_SHAPE && strstr(err, "conv1.weight"),
          "set_params with the mlp's set on a cnn gives FEDC_ERR_SHAPE naming a tensor");

    /* A set with one wrong shape: the message names that tensor and both shapes. */
    fedc_params *bad = fedc_params_create();
    for (size_t i = 0; i < fedc_params_count(copy); i++) {
        const fedc_tensor *t = fedc_params_at(copy, i);
        int64_t shape[FEDC_MAX_DIMS];
        memcpy(shape, t->shape, sizeof(shape));
        if (strcmp(t->name, "fc2.weight") == 0) shape[1] = 121;
        fedc_params_add(bad, t->name, t->dtype, t->ndim, shape, NULL, NULL, NULL, 0);
    }
    err[0] = 0;
    rc = fedc_model_set_params(a, bad, err, sizeof(err));
    printf("     message: %s\n", err);
    CHECK(rc == FEDC_ERR_SHAPE && strstr(err, "fc2.weight") && strstr(err, "121") && strstr(err, "120"),
          "set_params with fc2.weight [84, 121] names the tensor and both shapes");
    CHECK(nn_test_same_params(a, b), "the model is unchanged after a refused set_params");

    /* Writing into the live tensors changes the model. */
    fedc_tensor *bias = fedc_params_find(fedc_model_params(a), "fc3.bias");
    float x[784] = {0};
    float before[10], after[10];
    fedc_model_predict(a, x, 1, before, NULL, 0);
    ((float *)bias->data)[3] += 1.0f;
    fedc_model_predict(a, x, 1, after, NULL, 0);
    CHECK(fabsf(after[3] - before[3] - 1.0f) < 1e-5f && after[2] == before[2],
          "writing into fc3.bias moves logit 3 by 1 (%.6f -> %.6f)", before[3], after[3]);
    fedc_params_destroy(copy);
    fedc_params_destroy(bad);
    fedc_model_destroy(a);
    fedc_model_destroy(b);
    fedc_model_destroy(mlp);
}

/* predict and evaluate agree with each other, do not depend on how the
 * examples are grouped, and ignore the batch size beyond rounding. */
static void test_predict(const char *arch)
{
    const size_t n = 300; /* more than one internal chunk */
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX];
    fedc_model_create(arch, 9, &m, err, sizeof(err));
    float *x = malloc(n * 784 * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    float *logits = malloc(n * 10 * sizeof(float));
    float one[10];
    fedc_rng rng;
    fedc_rng_seed(&rng, 4);
    for (size_t i = 0; i < n * 784; i++) x[i] = (float)fedc_rng_uniform(&rng);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)fedc_rng_below(&rng, 10);
    int rc = fedc_model_predict(m, x, n, logits, err, sizeof(err));
    CHECK(rc == FEDC_OK, "%s: predict %zu examples", arch, n);
    double worst = 0.0;
    for (size_t i = 0; i < n; i += 37) {
        fedc_model_predict(m, x + i * 784, 1, one, NULL, 0);
        for (int j = 0; j < 10; j++) worst = fmax(worst, fabs(one[j] - logits[i * 10 + j]));
    }
    CHECK(worst < 1e-5, "%s: one example at a time gives the same logits (max diff %.2e)", arch, worst);

    double loss = 0.0;
    size_t right = 0;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * 10;
        double zmax = z[0], s = 0.0;
        int arg = 0;
        for (int j = 1; j < 10; j++)
            if (z[j] > zmax) {
                zmax = z[j];
                arg = j;
            }
        for (int j = 0; j < 10; j++) s += exp(z[j] - zmax);
        loss += zmax + log(s) - z[y[i]];
        right += arg == y[i];
    }
    loss /= (double)n;
    fedc_eval_stats st1, st2;
    rc = fedc_model_evaluate(m, x, y, n, 64, &st1, err, sizeof(err));
    int rc2 = fedc_model_evaluate(m, x, y, n, 1000, &st2, err, sizeof(err));
    CHECK(rc == FEDC_OK && rc2 == FEDC_OK && fabs(st1.loss - loss) < 1e-5 && fabs(st2.loss - loss) < 1e-5 &&
              st1.num_examples == n && fabs(st1.accuracy - (double)right / n) < 1e-12,
          "%s: evaluate (batch 64: loss %.6f acc %.4f; batch 1000: loss %.6f) matches the "
          "logits (loss %.6f)",
          arch, st1.loss, st1.accuracy, st2.loss, loss);

    /* With two threads each takes half of the examples. */
    float *logits2 = malloc(n * 10 * sizeof(float));
    fedc_eval_stats st3;
    fedc_nn_set_threads(2);
    rc = fedc_model_predict(m, x, n, logits2, err, sizeof(err));
    rc2 = fedc_model_evaluate(m, x, y, n, 64, &st3, err, sizeof(err));
    fedc_nn_set_threads(1);
    worst = 0.0;
    for (size_t i = 0; i < n * 10; i++) worst = fmax(worst, fabs(logits2[i] - logits[i]));
    CHECK(rc == FEDC_OK && rc2 == FEDC_OK && worst < 1e-5 && fabs(st3.loss - st1.loss) < 1e-9 &&
              st3.accuracy == st1.accuracy,
          "%s: with 2 threads predict (max diff %.2e) and evaluate (loss %.6f) agree", arch, worst, st3.loss);
    free(logits2);
    free(x);
    free(y);
    free(logits);
    fedc_model_destroy(m);
}

int main(void)
{
    check_layout("cnn", cnn_tensors, sizeof(cnn_tensors) / sizeof(cnn_tensors[0]), 44426);
    check_layout("mlp", mlp_tensors, sizeof(mlp_tensors) / sizeof(mlp_tensors[0]),
                 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);
    check_layout("mlp-large", mlp_large_tensors, sizeof(mlp_large_tensors) / sizeof(mlp_large_tensors[0]),
                 1863690);
    test_init_seed();
    test_unknown_arch();
    test_set_params();
    test_predict("mlp");
    test_predict("cnn");
    return test_summary();
}
