/* Writes a small synthetic image-classification dataset as a fedc data
 * directory (IDX files, docs/data.md), so integration tests need no
 * download and no large files.
 *
 * usage: make_synthetic OUTDIR N_TRAIN N_TEST SEED [SIGNAL]
 *
 * Each of the 10 classes has a random 28x28 prototype; an example is
 * SIGNAL * prototype + (1 - SIGNAL) * uniform noise, quantised to bytes.
 * The default SIGNAL (0.12) makes a task that a small model learns over a
 * few federated rounds rather than in the first one. */
#include <stdio.h>
#include <stdlib.h>

#include "fedc/data.h"

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: make_synthetic OUTDIR N_TRAIN N_TEST SEED [SIGNAL]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t ntrain = strtoul(argv[2], NULL, 10), ntest = strtoul(argv[3], NULL, 10);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    double signal = argc > 5 ? atof(argv[5]) : 0.12;
    enum { C = 10, P = 28 * 28 };
    static float proto[C][P];
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < P; i++) proto[c][i] = fedc_rng_uniform(&rng) < 0.5 ? 0.0f : 1.0f;
    char err[FEDC_ERRMSG_MAX], img[4096], lab[4096];
    for (int split = 0; split < 2; split++) {
        size_t n = split ? ntest : ntrain;
        fedc_dataset *d = NULL;
        if (fedc_dataset_create(n, 1, 28, 28, C, &d, err, sizeof err)) {
            fprintf(stderr, "make_synthetic: %s\n", err);
            return 1;
        }
        for (size_t k = 0; k < n; k++) {
            int c = (int)fedc_rng_below(&rng, C);
            d->y[k] = c;
            for (int i = 0; i < P; i++) {
                double v = signal * proto[c][i] + (1 - signal) * fedc_rng_uniform(&rng);
                int q = (int)(v * 255 + 0.5);
                d->x[k * P + (size_t)i] = (float)q / 255.0f;
            }
        }
        snprintf(img, sizeof img, "%s/%s-images-idx3-ubyte.gz", dir, split ? "t10k" : "train");
        snprintf(lab, sizeof lab, "%s/%s-labels-idx1-ubyte.gz", dir, split ? "t10k" : "train");
        int rc = fedc_dataset_save_idx(d, img, lab, err, sizeof err);
        fedc_dataset_destroy(d);
        if (rc) {
            fprintf(stderr, "make_synthetic: %s\n", err);
            return 1;
        }
    }
    return 0;
}
