/*
 * Bad input to the trainer: every case returns a status and a message, and
 * nothing crashes; the model stays usable afterwards.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "test_util.h"

#define N   40
#define PIX 784

static float x[N * PIX];
static int32_t y[N];

static const fedc_train_config good = {0.05, 0.9, 1e-4, 1, 8, 1, 0.0, NULL, 0.0, 0.0};

/* Runs one training that must fail with `want` and a message containing
 * `needle`. */
static void expect_train(fedc_model *m, const float *xs, const int32_t *ys, size_t n,
                         const fedc_train_config *cfg, int want, const char *needle, const char *what)
{
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_stats st;
    int rc = fedc_model_train(m, xs, ys, n, cfg, &st, err, sizeof(err));
    printf("     %s -> %s: %s\n", what, fedc_strerror(rc), err);
    CHECK(rc == want && err[0] && (!needle || strstr(err, needle)),
          "train with %s gives status %d (want %d) and a message mentioning '%s'", what, rc, want,
          needle ? needle : "");
}

int main(void)
{
    fedc_rng rng;
    fedc_rng_seed(&rng, 1);
    for (size_t i = 0; i < N * PIX; i++) x[i] = (float)fedc_rng_uniform(&rng);
    for (size_t i = 0; i < N; i++) y[i] = (int32_t)(i % 10);

    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_model_create("cnn", 1, &m, err, sizeof(err));
    fedc_params *orig = fedc_params_clone(fedc_model_params(m));
    fedc_train_config cfg;

    /* Labels. */
    int32_t bad_y[N];
    memcpy(bad_y, y, sizeof(bad_y));
    bad_y[17] = 10;
    expect_train(m, x, bad_y, N, &good, FEDC_ERR_INVALID, "example 17", "label 10 of 10 classes");
    bad_y[17] = -1;
    expect_train(m, x, bad_y, N, &good, FEDC_ERR_INVALID, "-1", "label -1");

    /* Configuration. */
    cfg = good;
    cfg.batch_size = 0;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "batch size", "batch_size 0");
    cfg = good;
    cfg.proximal_mu = -0.5;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "proximal mu", "proximal_mu -0.5");
    cfg.proximal_mu = NAN;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "proximal mu", "proximal_mu NaN");
    cfg.proximal_mu = INFINITY;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "proximal mu", "proximal_mu infinity");
    cfg = good;
    cfg.batch_size = -5;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "batch size", "batch_size -5");
    cfg = good;
    cfg.epochs = 0;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "epochs", "epochs 0");
    cfg = good;
    cfg.lr = 0.0;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "learning rate", "lr 0");
    cfg = good;
    cfg.lr = NAN;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "learning rate", "lr NaN");
    cfg = good;
    cfg.momentum = -0.5;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "momentum", "momentum -0.5");
    cfg = good;
    cfg.weight_decay = INFINITY;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_INVALID, "weight decay", "weight decay inf");
    expect_train(m, x, y, 0, &good, FEDC_ERR_INVALID, "no training examples", "n = 0");
    expect_train(m, NULL, y, N, &good, FEDC_ERR_INVALID, "NULL", "x = NULL");
    expect_train(m, x, NULL, N, &good, FEDC_ERR_INVALID, "NULL", "y = NULL");
    expect_train(m, x, y, N, NULL, FEDC_ERR_INVALID, "NULL", "cfg = NULL");

    /* Non-finite inputs. */
    float saved = x[5 * PIX + 300];
    x[5 * PIX + 300] = NAN;
    expect_train(m, x, y, N, &good, FEDC_ERR_NONFINITE, "example 5", "a NaN pixel");
    x[5 * PIX + 300] = -INFINITY;
    expect_train(m, x, y, N, &good, FEDC_ERR_NONFINITE, "infinite", "an infinite pixel");
    fedc_eval_stats es;
    int rc = fedc_model_evaluate(m, x, y, N, 16, &es, err, sizeof(err));
    CHECK(rc == FEDC_ERR_NONFINITE, "evaluate with an infinite pixel gives FEDC_ERR_NONFINITE: %s", err);
    float logits[N * 10];
    rc = fedc_model_predict(m, x, N, logits, err, sizeof(err));
    CHECK(rc == FEDC_ERR_NONFINITE, "predict with an infinite pixel gives FEDC_ERR_NONFINITE: %s", err);
    x[5 * PIX + 300] = saved;

    /* None of the refused calls touched the parameters. */
    char lerr[FEDC_ERRMSG_MAX];
    fedc_params *now = fedc_model_params(m);
    int same = 1;
    for (size_t i = 0; i < fedc_params_count(now); i++)
        same &= memcmp(fedc_params_at(now, i)->data, fedc_params_at(orig, i)->data,
                       fedc_params_at(now, i)->nbytes) == 0;
    CHECK(same, "refused calls leave the parameters unchanged");

    /* Evaluate's own checks. */
    rc = fedc_model_evaluate(m, x, y, N, 0, &es, err, sizeof(err));
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "batch size"), "evaluate with batch_size 0: %s", err);
    rc = fedc_model_evaluate(m, x, bad_y, N, 8, &es, err, sizeof(err));
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "label"), "evaluate with label -1: %s", err);
    rc = fedc_model_evaluate(m, x, y, 0, 8, &es, err, sizeof(err));
    CHECK(rc == FEDC_ERR_INVALID, "evaluate with n = 0: %s", err);

    /* A tiny or absent error buffer is fine. */
    char tiny[6];
    cfg = good;
    cfg.batch_size = 0;
    rc = fedc_model_train(m, x, y, N, &cfg, NULL, tiny, sizeof(tiny));
    CHECK(rc == FEDC_ERR_INVALID && strlen(tiny) < sizeof(tiny),
          "a 6-byte error buffer gets a truncated, terminated message '%s'", tiny);
    rc = fedc_model_train(m, x, y, N, &cfg, NULL, NULL, 0);
    CHECK(rc == FEDC_ERR_INVALID, "a NULL error buffer is accepted");

    /* Divergence: an absurd learning rate blows the loss up. */
    cfg = good;
    cfg.lr = 1e12;
    cfg.epochs = 3;
    expect_train(m, x, y, N, &cfg, FEDC_ERR_NONFINITE, "diverged", "lr 1e12");

    /* The model recovers by loading saved parameters. */
    rc = fedc_model_set_params(m, orig, lerr, sizeof(lerr));
    fedc_train_stats st;
    int rc2 = fedc_model_train(m, x, y, N, &good, &st, err, sizeof(err));
    CHECK(rc == FEDC_OK && rc2 == FEDC_OK && isfinite(st.loss),
          "after set_params the model trains again (loss %.4f)", st.loss);

    fedc_params_destroy(orig);
    fedc_model_destroy(m);
    return test_summary();
}
