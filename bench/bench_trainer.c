/*
 * bench_trainer: training throughput of the built-in trainer.
 *
 * Trains a model (the small cnn by default) with minibatch SGD + momentum
 * on random 1x28x28 inputs in [0, 1) with random labels and prints
 * `trainer_samples_per_s`, the examples processed per second of training.
 * The first epoch is a warm-up (page faults, BLAS buffers) and is not timed.
 *
 *   bench_trainer [--arch cnn|mlp|mlp-large] [--samples 4096] [--epochs 3]
 *                 [--batch 64] [--threads 2] [--device cpu|cuda[:N]] [--json]
 *
 * bench/pytorch_cnn.py runs the same network, batch and optimizer in
 * PyTorch with the same defaults; run both on an idle machine:
 *
 *   build/bench/bench_trainer --json
 *   python3 bench/pytorch_cnn.py --json
 *
 * On a GPU (a build with -DFEDC_CUDA=ON), `--device cuda` trains there; the
 * timed call includes copying the examples to the GPU once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"

static void usage(void)
{
    fprintf(stderr, "usage: bench_trainer [--arch cnn|mlp|mlp-large] [--samples N] [--epochs N] "
                    "[--batch N] [--threads N] [--device cpu|cuda[:N]] [--json]\n");
}

int main(int argc, char **argv)
{
    const char *arch = "cnn", *device = "cpu";
    long samples = 4096, epochs = 3, batch = 64, threads = 2;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long *target = NULL;
        if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        }
        if (strcmp(a, "--arch") == 0 && i + 1 < argc) {
            arch = argv[++i];
            continue;
        }
        if (strcmp(a, "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
            continue;
        }
        if (strcmp(a, "--samples") == 0) target = &samples;
        if (strcmp(a, "--epochs") == 0) target = &epochs;
        if (strcmp(a, "--batch") == 0) target = &batch;
        if (strcmp(a, "--threads") == 0) target = &threads;
        if (!target || i + 1 >= argc) {
            usage();
            return 2;
        }
        char *end;
        *target = strtol(argv[++i], &end, 10);
        if (*end || *target < 1 || *target > 100000000L) {
            fprintf(stderr, "bench_trainer: bad value '%s' for %s\n", argv[i], a);
            return 2;
        }
    }

    char err[FEDC_ERRMSG_MAX];
    fedc_model *m = NULL;
    int rc = fedc_model_create(arch, 1, &m, err, sizeof(err));
    if (rc != FEDC_OK) {
        fprintf(stderr, "bench_trainer: %s\n", err);
        return 1;
    }
    fedc_device dev;
    if (fedc_device_parse(device, &dev, err, sizeof err) != FEDC_OK ||
        fedc_model_set_device(m, dev, err, sizeof err) != FEDC_OK) {
        fprintf(stderr, "bench_trainer: --device: %s\n", err);
        fedc_model_destroy(m);
        return 1;
    }
    int c, h, w;
    fedc_model_input_shape(m, &c, &h, &w);
    size_t row = (size_t)c * h * w, n = (size_t)samples;
    float *x = malloc(n * row * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    if (!x || !y) {
        fprintf(stderr, "bench_trainer: out of memory\n");
        return 1;
    }
    fedc_rng rng;
    fedc_rng_seed(&rng, 1);
    for (size_t i = 0; i < n * row; i++) x[i] = (float)fedc_rng_uniform(&rng);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)fedc_rng_below(&rng, (uint64_t)fedc_model_num_classes(m));

    fedc_nn_set_threads((int)threads);
    fedc_train_config cfg = {0.01, 0.9, 0.0, 1, (int)batch, 1, 0.0, NULL, 0.0, 0.0};
    fedc_train_stats st;
    rc = fedc_model_train(m, x, y, n, &cfg, &st, err, sizeof(err)); /* warm-up */
    double t0 = fedc_now();
    if (rc == FEDC_OK) {
        cfg.epochs = (int)epochs;
        cfg.seed = 2;
        rc = fedc_model_train(m, x, y, n, &cfg, &st, err, sizeof(err));
    }
    double dt = fedc_now() - t0;
    if (rc != FEDC_OK) {
        fprintf(stderr, "bench_trainer: %s\n", err);
        return 1;
    }
    double sps = (double)n * (double)epochs / dt;
    if (json)
        printf("{\"benchmark\": \"bench_trainer\", \"arch\": \"%s\", \"device\": \"%s\", "
               "\"threads\": %ld, \"batch_size\": %ld, \"samples\": %zu, \"epochs\": %ld, "
               "\"seconds\": %.6f, \"last_epoch_loss\": %.6f, \"params\": %zu, "
               "\"trainer_samples_per_s\": %.1f}\n",
               arch, device, threads, batch, n, epochs, dt, st.loss, fedc_model_num_params(m), sps);
    else {
        printf("%s on %s, %ld threads, batch %ld, %zu samples x %ld epochs in %.3f s, loss %.4f\n", arch,
               device, threads, batch, n, epochs, dt, st.loss);
        printf("trainer_samples_per_s %.1f\n", sps);
    }
    free(x);
    free(y);
    fedc_model_destroy(m);
    return 0;
}
