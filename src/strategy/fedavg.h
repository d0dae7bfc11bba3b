/* FedAvg's streaming accumulator.
 *
 * Each update is folded in as soon as it has arrived and been validated:
 * memory is one 64-bit accumulator per model element, whatever the number
 * of clients. Values are accumulated in fixed point (x * weight * 2^24,
 * rounded to nearest) so that addition is exact and associative: the
 * aggregate is bit-identical whatever order the updates arrive in. */
#ifndef FEDC_STRATEGY_FEDAVG_H
#define FEDC_STRATEGY_FEDAVG_H

#include <stdint.h>

#include "fedc/tensor.h"

#define FEDC_FEDAVG_FRACTION_BITS 24
/* Largest aggregation weight (num_examples) accepted for one update. */
#define FEDC_FEDAVG_MAX_WEIGHT (1ull << 32)

typedef struct fedc__fedavg {
    size_t ntensors;
    int64_t **acc; /* per tensor, numel elements */
    size_t *numel;
    char **names;
    double bound; /* largest |x * weight * 2^24| one update may add */
    uint64_t max_updates;
    uint64_t updates;
    uint64_t weight_sum;
} fedc__fedavg;

/* Prepares an accumulator for models of this layout (F32 tensors only:
 * FEDC_ERR_UNSUPPORTED names any other) and at most max_updates updates
 * per round (which sets the per-value range that cannot overflow). */
int fedc__fedavg_init(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, char *err,
                      size_t errlen);
void fedc__fedavg_free(fedc__fedavg *a);
/* Zeroes the sums for a new round and sets the update capacity. */
void fedc__fedavg_reset(fedc__fedavg *a, uint64_t max_updates);

/* Checks n values of tensor ti that start at element `offset` before they
 * are folded with this weight: every value finite and within range.
 * FEDC_ERR_NONFINITE or FEDC_ERR_RANGE name the tensor and element. */
int fedc__fedavg_check(const fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                       uint64_t weight, char *err, size_t errlen);
/* Checks the weight of an update (1 .. FEDC_FEDAVG_MAX_WEIGHT) and that the
 * round still has room for it. */
int fedc__fedavg_check_weight(const fedc__fedavg *a, uint64_t weight, char *err, size_t errlen);

/* Checks and folds in one pass over x (the values are read once, while in
 * cache). On failure the values are taken back out, so the accumulator is
 * exactly as before, and the error is that of fedc__fedavg_check(). */
int fedc__fedavg_check_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                            uint64_t weight, char *err, size_t errlen);
/* Takes back values folded earlier with the same weight: integer sums make
 * this exact, so a rejected update leaves no trace. */
void fedc__fedavg_unfold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                         uint64_t weight);

/* Adds weight * x (checked values) to tensor ti at `offset`. */
void fedc__fedavg_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n, uint64_t weight);
/* Adds a whole checked update (same layout as the accumulator). */
void fedc__fedavg_fold_params(fedc__fedavg *a, const fedc_params *p, uint64_t weight);
/* Records that one complete update of this weight has been folded. */
void fedc__fedavg_commit(fedc__fedavg *a, uint64_t weight);

/* Writes the weighted mean into out (same layout). FEDC_ERR_INVALID when no
 * update was committed. */
int fedc__fedavg_finalize(const fedc__fedavg *a, fedc_params *out, char *err, size_t errlen);

#endif
