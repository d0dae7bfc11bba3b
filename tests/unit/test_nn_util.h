/*
 * Helpers shared by the trainer's tests: a synthetic data set the models can
 * learn, and a bit-for-bit comparison of two models' parameters.
 */
#ifndef FEDC_TEST_NN_UTIL_H
#define FEDC_TEST_NN_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"

#define NN_TEST_PIX 784

/* n examples of 1x28x28 floats and their labels. */
typedef struct nn_test_data {
    size_t n;
    float *x;
    int32_t *y;
} nn_test_data;

/* Uniform noise in [0, 1) with every tenth pixel, counted from the label,
 * doubled: learnable, and different for every seed. Exits when out of
 * memory. */
static inline nn_test_data nn_test_data_make(uint64_t seed, size_t n)
{
    nn_test_data d = {n, malloc(n * NN_TEST_PIX * sizeof(float)), malloc(n * sizeof(int32_t))};
    if (!d.x || !d.y) {
        printf("out of memory making %zu examples\n", n);
        exit(EXIT_FAILURE);
    }
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        d.y[i] = (int32_t)fedc_rng_below(&rng, 10);
        for (size_t p = 0; p < NN_TEST_PIX; p++)
            d.x[i * NN_TEST_PIX + p] =
                (float)fedc_rng_uniform(&rng) * (p % 10 == (size_t)d.y[i] ? 2.0f : 1.0f);
    }
    return d;
}

static inline void nn_test_data_free(nn_test_data *d)
{
    free(d->x);
    free(d->y);
    d->x = NULL;
    d->y = NULL;
}

/* Whether the two models' parameters are the same bits. */
static inline int nn_test_same_params(fedc_model *a, fedc_model *b)
{
    fedc_params *pa = fedc_model_params(a), *pb = fedc_model_params(b);
    if (fedc_params_count(pa) != fedc_params_count(pb)) return 0;
    for (size_t i = 0; i < fedc_params_count(pa); i++) {
        const fedc_tensor *ta = fedc_params_at(pa, i), *tb = fedc_params_at(pb, i);
        if (ta->nbytes != tb->nbytes || memcmp(ta->data, tb->data, ta->nbytes) != 0) return 0;
    }
    return 1;
}

#endif
