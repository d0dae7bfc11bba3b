/*
 * What the strategy tests share: a small two-tensor model (w: 3 x 2, b: 4,
 * NEL elements in all) built from and flattened to a float array, and a
 * built-in strategy made with up to two parameters (the test fails if it
 * cannot be).
 */
#ifndef FEDC_TEST_STRATEGY_UTIL_H
#define FEDC_TEST_STRATEGY_UTIL_H

#include <string.h>

#include "fedc/core.h"
#include "fedc/strategy.h"
#include "test_util.h"

#define NEL 10

static inline fedc_params *make_model(const float *x)
{
    fedc_params *p = fedc_params_create();
    const int64_t w[2] = {3, 2}, b[1] = {4};
    if (!p || fedc_params_add(p, "w", FEDC_F32, 2, w, x, NULL, NULL, 0) ||
        fedc_params_add(p, "b", FEDC_F32, 1, b, x + 6, NULL, NULL, 0)) {
        fedc_params_destroy(p);
        return NULL;
    }
    return p;
}

static inline void flat(const fedc_params *p, float *out)
{
    memcpy(out, fedc_params_at(p, 0)->data, 6 * sizeof(float));
    memcpy(out + 6, fedc_params_at(p, 1)->data, 4 * sizeof(float));
}

static inline fedc_strategy *make(const char *name, const char *k1, double v1, const char *k2, double v2)
{
    fedc_config *c = fedc_config_create();
    if (k1) fedc_config_set_f64(c, k1, v1);
    if (k2) fedc_config_set_f64(c, k2, v2);
    fedc_strategy *s = NULL;
    char err[FEDC_ERRMSG_MAX];
    int rc = fedc_strategy_create(name, c, &s, err, sizeof err);
    CHECK(rc == FEDC_OK, "create %s: %s", name, err);
    fedc_config_destroy(c);
    return s;
}

#endif
