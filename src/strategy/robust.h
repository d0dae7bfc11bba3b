/* Robust aggregation rules over whole updates (docs/strategies.md):
 * coordinate-wise median and trimmed mean, Krum, multi-Krum and Bulyan.
 * They ignore the clients' weights. */
#ifndef FEDC_STRATEGY_ROBUST_H
#define FEDC_STRATEGY_ROBUST_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/tensor.h"

typedef enum fedc__robust_rule {
    FEDC__ROBUST_MEDIAN,
    FEDC__ROBUST_TRIMMED_MEAN,
    FEDC__ROBUST_KRUM,
    FEDC__ROBUST_MULTIKRUM,
    FEDC__ROBUST_BULYAN
} fedc__robust_rule;

typedef struct fedc__robust_params {
    double trim_beta; /* trimmed mean: the fraction cut from each end */
    uint32_t f;       /* Krum, multi-Krum, Bulyan: Byzantine clients tolerated */
    uint32_t m;       /* multi-Krum: updates averaged; 0 means n - f */
} fedc__robust_params;

/* Checks that `next` and the n models share global's layout and that every
 * tensor is F32; sets *total (if not NULL) to the number of elements.
 * Shared by every built-in strategy (defined in strategy.c). */
int fedc__strategy_check_models(const fedc_params *global, const fedc_params *const *models, size_t n,
                                const fedc_params *next, size_t *total, char *err, size_t errlen);

/* The fewest updates the rule accepts with these parameters (Krum needs
 * n > 2f + 2, and multi-Krum n >= m too; Bulyan n >= 4f + 3); 1 for the
 * others. */
uint32_t fedc__robust_min_updates(fedc__robust_rule rule, const fedc__robust_params *p);

/* Writes into `next` (global's layout; every tensor F32) the rule applied
 * to the n updates, which have that layout too. Ties go to the lowest
 * index. FEDC_ERR_INVALID names n and f when n is too small for the rule;
 * FEDC_ERR_SHAPE or FEDC_ERR_UNSUPPORTED for a bad layout; FEDC_ERR_NOMEM. */
int fedc__robust_aggregate(fedc__robust_rule rule, const fedc__robust_params *p, const fedc_params *global,
                           const fedc_params *const *updates, size_t n, fedc_params *next, char *err,
                           size_t errlen);

#endif
