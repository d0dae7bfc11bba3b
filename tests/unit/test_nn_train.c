/*
 * End-to-end training on a synthetic, separable data set generated here:
 * the loss must fall and the models must classify held-out examples well;
 * training must be bit-for-bit reproducible from its seeds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "test_nn_util.h"
#include "test_util.h"

#define SIDE 28
#define PIX  (SIDE * SIDE)

/* Class k is a bright 7x7 square centred on the k-th point of a 4x3 grid,
 * shifted by up to 2 pixels per example, over uniform noise in [0, 0.4]:
 * separable, but not by any single pixel. Values stay in [0, 1]. */
static void make_data(uint64_t seed, size_t n, float *x, int32_t *y)
{
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        int k = (int)fedc_rng_below(&rng, 10);
        int cy = 5 + (k / 4) * 8 + (int)fedc_rng_below(&rng, 5) - 2;
        int cx = 4 + (k % 4) * 6 + (int)fedc_rng_below(&rng, 5) - 2;
        float *img = x + i * PIX;
        for (int p = 0; p < PIX; p++) img[p] = (float)(0.4 * fedc_rng_uniform(&rng));
        for (int dy = -3; dy <= 3; dy++)
            for (int dx = -3; dx <= 3; dx++) {
                int r = cy + dy, c = cx + dx;
                if (r >= 0 && r < SIDE && c >= 0 && c < SIDE)
                    img[r * SIDE + c] = (float)(0.7 + 0.3 * fedc_rng_uniform(&rng));
            }
        y[i] = k;
    }
}

static void test_learns(const char *arch, double lr, int threads)
{
    const size_t ntrain = 800, ntest = 300;
    float *x = malloc(ntrain * PIX * sizeof(float)), *xt = malloc(ntest * PIX * sizeof(float));
    int32_t *y = malloc(ntrain * sizeof(int32_t)), *yt = malloc(ntest * sizeof(int32_t));
    make_data(1, ntrain, x, y);
    make_data(2, ntest, xt, yt);
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX], name[32];
    fedc_model_create(arch, 3, &m, err, sizeof(err));
    fedc_nn_set_threads(threads);
    snprintf(name, sizeof(name), "%s, %d thread%s", arch, threads, threads > 1 ? "s" : "");
    arch = name;

    fedc_eval_stats before, after;
    fedc_model_evaluate(m, xt, yt, ntest, 100, &before, err, sizeof(err));
    fedc_train_config cfg = {lr, 0.9, 1e-4, 1, 32, 7, 0.0, NULL, 0.0, 0.0};
    fedc_train_stats st1, st3;
    int rc = fedc_model_train(m, x, y, ntrain, &cfg, &st1, err, sizeof(err));
    CHECK(rc == FEDC_OK, "%s: train epoch 1 (%s)", arch, rc ? err : "ok");
    cfg.epochs = 3;
    cfg.seed = 8;
    rc = fedc_model_train(m, x, y, ntrain, &cfg, &st3, err, sizeof(err));
    CHECK(rc == FEDC_OK, "%s: train epochs 2-4 (%s)", arch, rc ? err : "ok");
    rc = fedc_model_evaluate(m, xt, yt, ntest, 100, &after, err, sizeof(err));
    printf("     %s: held-out loss %.4f acc %.3f before; train loss %.4f (epoch 1) -> %.4f "
           "(epoch 4), acc %.3f; held-out loss %.4f acc %.3f after\n",
           arch, before.loss, before.accuracy, st1.loss, st3.loss, st3.accuracy, after.loss, after.accuracy);
    CHECK(st3.loss < 0.5 * st1.loss && st3.loss < 0.5, "%s: training loss falls (%.4f -> %.4f)", arch,
          st1.loss, st3.loss);
    CHECK(rc == FEDC_OK && after.loss < 0.3 * before.loss,
          "%s: held-out loss falls (%.4f -> "
          "%.4f)",
          arch, before.loss, after.loss);
    CHECK(after.accuracy >= 0.95, "%s: held-out accuracy %.3f >= 0.95", arch, after.accuracy);
    CHECK(st3.num_examples == ntrain && st3.steps == 3 * 25, "%s: stats report %llu examples, %llu steps",
          arch, (unsigned long long)st3.num_examples, (unsigned long long)st3.steps);
    fedc_nn_set_threads(1);
    free(x);
    free(xt);
    free(y);
    free(yt);
    fedc_model_destroy(m);
}

/* Trains a fresh model and returns it (the caller destroys it). */
static fedc_model *trained(const char *arch, uint64_t model_seed, uint64_t shuffle_seed, const float *x,
                           const int32_t *y, size_t n)
{
    fedc_model *m = NULL;
    fedc_model_create(arch, model_seed, &m, NULL, 0);
    fedc_train_config cfg = {0.05, 0.9, 1e-4, 2, 16, shuffle_seed, 0.0, NULL, 0.0, 0.0};
    if (fedc_model_train(m, x, y, n, &cfg, NULL, NULL, 0) != FEDC_OK) {
        fedc_model_destroy(m);
        return NULL;
    }
    return m;
}

static void test_determinism(const char *arch, int threads)
{
    const size_t n = 200;
    float *x = malloc(n * PIX * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    make_data(5, n, x, y);
    fedc_nn_set_threads(threads);
    fedc_model *a = trained(arch, 1, 10, x, y, n);
    fedc_model *b = trained(arch, 1, 10, x, y, n);
    fedc_model *c = trained(arch, 1, 11, x, y, n);
    fedc_model *d = trained(arch, 2, 10, x, y, n);
    CHECK(a && b && c && d, "%s, %d thread(s): four trainings succeed", arch, threads);
    if (a && b && c && d) {
        CHECK(nn_test_same_params(a, b),
              "%s, %d thread(s): same seeds give bit-identical "
              "parameters",
              arch, threads);
        CHECK(!nn_test_same_params(a, c),
              "%s, %d thread(s): another shuffle seed gives other "
              "parameters",
              arch, threads);
        CHECK(!nn_test_same_params(a, d),
              "%s, %d thread(s): another model seed gives other "
              "parameters",
              arch, threads);
    }
    fedc_nn_set_threads(1);
    fedc_model_destroy(a);
    fedc_model_destroy(b);
    fedc_model_destroy(c);
    fedc_model_destroy(d);
    free(x);
    free(y);
}

int main(void)
{
    CHECK(fedc_nn_get_threads() == 1, "the trainer uses 1 thread by default");
    test_learns("mlp", 0.05, 1);
    test_learns("cnn", 0.05, 1);
    test_learns("cnn", 0.05, 2);
    test_determinism("mlp", 1);
    test_determinism("cnn", 1);
    test_determinism("mlp", 2);
    test_determinism("cnn", 2);
    test_determinism("cnn", 3);
    return test_summary();
}
