/*
 * DP-SGD in the built-in trainer: per-example clipping against gradients
 * computed independently (plain SGD on one example at a time), the noise's
 * spread, Poisson sampling, the argument checks, DP off unchanged, and
 * runs that are never reproducible.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "test_nn_util.h"
#include "test_util.h"

/* CHECK, printing its message also when it passes (the measured values). */
#define CHECK_SAY(cond, ...)                                                                                 \
    do {                                                                                                     \
        printf("     ");                                                                                     \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        CHECK(cond, __VA_ARGS__);                                                                            \
    } while (0)

/* All of the model's parameters in one array of doubles (caller frees). */
static double *flat(fedc_model *m, size_t *count)
{
    fedc_params *p = fedc_model_params(m);
    size_t total = fedc_model_num_params(m), k = 0;
    double *out = malloc(total * sizeof(double));
    if (!out) exit(EXIT_FAILURE);
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        const float *v = t->data;
        for (int64_t e = 0; e < fedc_tensor_numel(t); e++) out[k++] = v[e];
    }
    *count = total;
    return out;
}

static fedc_model *make(const char *arch)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    if (fedc_model_create(arch, 5, &m, err, sizeof(err)) != FEDC_OK) {
        printf("create %s: %s\n", arch, err);
        exit(EXIT_FAILURE);
    }
    return m;
}

/* Trains a fresh model (seed 5) on `n` examples and returns the parameter
 * change (after - before). */
static double *delta(const char *arch, const float *x, const int32_t *y, size_t n,
                     const fedc_train_config *cfg, fedc_train_stats *st, int *rc)
{
    fedc_model *m = make(arch);
    char err[FEDC_ERRMSG_MAX] = "";
    size_t total;
    double *before = flat(m, &total);
    *rc = fedc_model_train(m, x, y, n, cfg, st, err, sizeof(err));
    if (*rc != FEDC_OK) printf("     train: %s\n", err);
    double *after = flat(m, &total);
    for (size_t k = 0; k < total; k++) after[k] -= before[k];
    free(before);
    fedc_model_destroy(m);
    return after;
}

static fedc_train_config plain(double lr, int batch)
{
    fedc_train_config c = {lr, 0.0, 0.0, 1, batch, 3, 0.0, NULL, 0.0, 0.0};
    return c;
}

/* 1. The step equals -lr * sum_i clip(g_i) / n with the g_i from plain SGD on
 * one example each; with a huge clip, the plain full-batch step. */
static void test_clipping(const char *arch, int threads)
{
    enum { N = 8 };
    fedc_nn_set_threads(threads);
    nn_test_data d = nn_test_data_make(21, N);
    fedc_model *m0 = make(arch);
    size_t total = fedc_model_num_params(m0);
    fedc_model_destroy(m0);
    double *g[N], norm[N];
    int rc;
    fedc_train_config one = plain(1.0, 1);
    for (int i = 0; i < N; i++) {
        g[i] = delta(arch, d.x + (size_t)i * NN_TEST_PIX, d.y + i, 1, &one, NULL, &rc);
        double ss = 0.0;
        for (size_t k = 0; k < total; k++) {
            g[i][k] = -g[i][k];
            ss += g[i][k] * g[i][k];
        }
        norm[i] = sqrt(ss);
    }
    /* A clip between the smallest and the largest norm clips some. */
    double lo = norm[0], hi = norm[0];
    for (int i = 1; i < N; i++) {
        lo = norm[i] < lo ? norm[i] : lo;
        hi = norm[i] > hi ? norm[i] : hi;
    }
    double clips[2] = {0.5 * (lo + hi), 1e9};
    const double lr = 0.05;
    for (int c = 0; c < 2; c++) {
        double clip = clips[c];
        int clipped = 0;
        double *want = calloc(total, sizeof(double));
        for (int i = 0; i < N; i++) {
            double f = norm[i] > clip ? clip / norm[i] : 1.0;
            clipped += norm[i] > clip;
            for (size_t k = 0; k < total; k++) want[k] -= lr * f * g[i][k] / N;
        }
        fedc_train_config cfg = plain(lr, N);
        cfg.dp_sgd_clip = clip;
        /* Noise of standard deviation 1e-12 (z C). */
        cfg.dp_sgd_noise_multiplier = 1e-12 / clip;
        fedc_train_stats st;
        double *got = delta(arch, d.x, d.y, N, &cfg, &st, &rc);
        double maxw = 0.0, maxe = 0.0;
        for (size_t k = 0; k < total; k++) {
            maxw = fabs(want[k]) > maxw ? fabs(want[k]) : maxw;
            maxe = fabs(got[k] - want[k]) > maxe ? fabs(got[k] - want[k]) : maxe;
        }
        CHECK_SAY(rc == FEDC_OK && st.steps == 1 && st.dp_examples == N && st.dp_sample_rate == 1.0 &&
                      st.num_examples == N && maxe <= 1e-5 * maxw && maxw > 0.0,
                  "%s, %d thread(s), clip %g (%d of %d examples clipped, norms %.4g..%.4g): max |step - "
                  "independent| %.3g of max |step| %.3g; steps %llu, sampled %llu, q %g",
                  arch, threads, clip, clipped, N, lo, hi, maxe, maxw, (unsigned long long)st.steps,
                  (unsigned long long)st.dp_examples, st.dp_sample_rate);
        if (c == 0)
            CHECK_SAY(clipped > 0 && clipped < N, "the clip %g clips %d of %d examples", clip, clipped, N);
        if (c == 1) {
            /* No clipping: the plain full-batch step. */
            fedc_train_config pc = plain(lr, N);
            double *full = delta(arch, d.x, d.y, N, &pc, NULL, &rc);
            double e = 0.0;
            for (size_t k = 0; k < total; k++) e = fabs(got[k] - full[k]) > e ? fabs(got[k] - full[k]) : e;
            CHECK_SAY(rc == FEDC_OK && e <= 1e-5 * maxw,
                      "%s, clip 1e9: max |DP-SGD step - plain full-batch step| %.3g (step %.3g)", arch, e,
                      maxw);
            free(full);
        }
        free(got);
        free(want);
    }
    for (int i = 0; i < N; i++) free(g[i]);
    nn_test_data_free(&d);
    fedc_nn_set_threads(1);
}

/* 2. With the clipped gradients negligible, the step is the noise:
 * per coordinate N(0, (lr z C / n)^2). */
static void test_noise(void)
{
    enum { N = 8 };
    nn_test_data d = nn_test_data_make(22, N);
    const double lr = 1e-3, clip = 1e-3, z = 1e4;
    fedc_train_config cfg = plain(lr, N);
    cfg.dp_sgd_clip = clip;
    cfg.dp_sgd_noise_multiplier = z;
    int rc;
    fedc_train_stats st;
    double *got = delta("mlp", d.x, d.y, N, &cfg, &st, &rc);
    fedc_model *m0 = make("mlp");
    size_t total = fedc_model_num_params(m0);
    fedc_model_destroy(m0);
    double sum = 0.0, ss = 0.0;
    size_t within = 0;
    const double want = lr * z * clip / N;
    for (size_t k = 0; k < total; k++) {
        sum += got[k];
        ss += got[k] * got[k];
        within += fabs(got[k]) <= want;
    }
    double mean = sum / (double)total, sd = sqrt(ss / (double)total - mean * mean);
    double se_sd = want / sqrt(2.0 * (double)total), se_mean = want / sqrt((double)total);
    double frac = (double)within / (double)total, p1 = 0.682689492137086;
    double se_frac = sqrt(p1 * (1 - p1) / (double)total);
    CHECK_SAY(rc == FEDC_OK && fabs(sd - want) <= 5 * se_sd && fabs(mean) <= 5 * se_mean &&
                  fabs(frac - p1) <= 5 * se_frac,
              "noise: sd of the step %.6g (want %.6g +- %.2g), mean %.3g (+- %.2g), %.4f within 1 sd (want "
              "%.4f)",
              sd, want, 5 * se_sd, mean, 5 * se_mean, frac, p1);
    free(got);
    nn_test_data_free(&d);
}

/* 3. Poisson sampling: the number of examples per step averages q n and
 * varies. */
static void test_sampling(void)
{
    enum { N = 200 };
    nn_test_data d = nn_test_data_make(23, N);
    fedc_model *m = make("mlp");
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = plain(1e-6, 20);
    cfg.epochs = 10;
    cfg.dp_sgd_clip = 1e9;
    cfg.dp_sgd_noise_multiplier = 1e-12;
    fedc_train_stats st;
    int rc = fedc_model_train(m, d.x, d.y, N, &cfg, &st, err, sizeof(err));
    double q = 0.1, mean = q * N * 100, se = sqrt(N * 100 * q * (1 - q));
    CHECK_SAY(
        rc == FEDC_OK && st.steps == 100 && fabs(st.dp_sample_rate - q) < 1e-15 &&
            fabs((double)st.dp_examples - mean) <= 5 * se && st.loss > 0.0 && st.accuracy >= 0.0,
        "n 200, batch 20, 10 epochs: %llu steps at q %g sampled %llu examples (want %.0f +- %.0f); loss "
        "%.3f accuracy %.3f",
        (unsigned long long)st.steps, st.dp_sample_rate, (unsigned long long)st.dp_examples, mean, 5 * se,
        st.loss, st.accuracy);

    /* One step per call (batch 150: q 0.75, round(200/150) = 1 step): the
     * sample size varies from call to call. */
    cfg.epochs = 1;
    cfg.batch_size = 150;
    uint64_t first = 0, total = 0;
    int varies = 0, ok = 1;
    enum { CALLS = 20 };
    for (int c = 0; c < CALLS; c++) {
        rc = fedc_model_train(m, d.x, d.y, N, &cfg, &st, err, sizeof(err));
        ok &= rc == FEDC_OK && st.steps == 1;
        if (c == 0) first = st.dp_examples;
        varies |= st.dp_examples != first;
        total += st.dp_examples;
    }
    double m2 = 0.75 * N * CALLS, se2 = sqrt(N * CALLS * 0.75 * 0.25);
    CHECK_SAY(
        ok && varies && fabs((double)total - m2) <= 5 * se2,
        "batch 150 of 200: one step per call, %d calls sampled %llu (want %.0f +- %.0f), sizes vary: %d",
        CALLS, (unsigned long long)total, m2, 5 * se2, varies);

    /* A rate so small that most steps sample nothing: still valid steps. */
    cfg.batch_size = 1;
    cfg.lr = 1e-3;
    cfg.dp_sgd_clip = 1.0;
    cfg.dp_sgd_noise_multiplier = 1.0;
    rc = fedc_model_train(m, d.x, d.y, 4, &cfg, &st, err, sizeof(err));
    CHECK_SAY(rc == FEDC_OK && st.steps == 4 && st.dp_sample_rate == 0.25,
              "n 4, batch 1: %llu steps at q %g, %llu sampled (%s)", (unsigned long long)st.steps,
              st.dp_sample_rate, (unsigned long long)st.dp_examples, err);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

static void expect_invalid(fedc_model *m, const nn_test_data *d, double clip, double z, const char *needle)
{
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = plain(0.05, 8);
    cfg.dp_sgd_clip = clip;
    cfg.dp_sgd_noise_multiplier = z;
    int rc = fedc_model_train(m, d->x, d->y, d->n, &cfg, NULL, err, sizeof(err));
    CHECK_SAY(rc == FEDC_ERR_INVALID && strstr(err, needle), "clip %g, noise multiplier %g: %s (%s)", clip, z,
              fedc_strerror(rc), err);
}

/* 4. Argument errors; DP off is plain SGD, bit for bit. */
static void test_args_and_off(void)
{
    nn_test_data d = nn_test_data_make(24, 32);
    fedc_model *m = make("cnn");
    expect_invalid(m, &d, -1.0, 1.0, "dp_sgd_clip");
    expect_invalid(m, &d, NAN, 1.0, "dp_sgd_clip");
    expect_invalid(m, &d, INFINITY, 1.0, "dp_sgd_clip");
    expect_invalid(m, &d, 1.0, 0.0, "dp_sgd_noise_multiplier");
    expect_invalid(m, &d, 1.0, -2.0, "dp_sgd_noise_multiplier");
    expect_invalid(m, &d, 1.0, NAN, "dp_sgd_noise_multiplier");
    expect_invalid(m, &d, 1.0, INFINITY, "dp_sgd_noise_multiplier");
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_model *ref = make("cnn");
    CHECK_SAY(nn_test_same_params(m, ref), "the model is unchanged by the refused calls");
    fedc_model_destroy(ref);

    for (int threads = 1; threads <= 2; threads++) {
        fedc_nn_set_threads(threads);
        fedc_model *a = make("cnn"), *b = make("cnn"), *c = make("cnn");
        fedc_train_config off = {0.05, 0.9, 1e-4, 2, 8, 9, 0.0, NULL, 0.0, 0.0};
        fedc_train_config designated = {
            .lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4, .epochs = 2, .batch_size = 8, .seed = 9};
        fedc_train_config ignored = off;
        ignored.dp_sgd_noise_multiplier = 3.0; /* ignored with the clip 0 */
        fedc_train_stats sa, sb, sc;
        int ra = fedc_model_train(a, d.x, d.y, d.n, &off, &sa, err, sizeof(err));
        int rb = fedc_model_train(b, d.x, d.y, d.n, &designated, &sb, err, sizeof(err));
        int rcc = fedc_model_train(c, d.x, d.y, d.n, &ignored, &sc, err, sizeof(err));
        CHECK_SAY(
            ra == FEDC_OK && rb == FEDC_OK && rcc == FEDC_OK && nn_test_same_params(a, b) &&
                nn_test_same_params(a, c) && sa.loss == sb.loss && sa.loss == sc.loss && sa.steps == 8 &&
                sa.dp_sample_rate == 0.0 && sa.dp_examples == 0 && sc.dp_examples == 0,
            "DP off (%d thread(s)): bit-identical parameters and stats with the new fields zero, left out or "
            "with only a noise multiplier; steps %llu, loss %.6f",
            threads, (unsigned long long)sa.steps, sa.loss);
        fedc_model_destroy(a);
        fedc_model_destroy(b);
        fedc_model_destroy(c);
    }
    fedc_nn_set_threads(1);
    fedc_model_destroy(m);
    nn_test_data_free(&d);
}

/* 5. The same seeds, DP on: the sampling and the noise differ. */
static void test_not_seeded(void)
{
    nn_test_data d = nn_test_data_make(25, 32);
    fedc_model *a = make("mlp"), *b = make("mlp");
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = {0.05, 0.9, 1e-4, 2, 8, 9, 0.0, NULL, 1.0, 1.0};
    int ra = fedc_model_train(a, d.x, d.y, d.n, &cfg, NULL, err, sizeof(err));
    int rb = fedc_model_train(b, d.x, d.y, d.n, &cfg, NULL, err, sizeof(err));
    CHECK_SAY(ra == FEDC_OK && rb == FEDC_OK && !nn_test_same_params(a, b),
              "two DP-SGD runs with the same seeds give different parameters");
    fedc_model_destroy(a);
    fedc_model_destroy(b);
    nn_test_data_free(&d);
}

int main(void)
{
    test_clipping("mlp", 1);
    test_clipping("mlp", 2);
    test_clipping("cnn", 1);
    test_noise();
    test_sampling();
    test_args_and_off();
    test_not_seeded();
    return test_summary();
}
