/* FedAvg's streaming accumulator.
 *
 * Each update is folded in as soon as it has arrived and been validated:
 * memory is one 64-bit accumulator per model element, whatever the number
 * of clients. Values are accumulated in fixed point (x * weight * 2^24,
 * rounded to nearest) so that addition is exact and associative: the
 * aggregate is bit-identical whatever order the updates arrive in. */
#ifndef FEDC_STRATEGY_FEDAVG_H
#define FEDC_STRATEGY_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"
#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FEDC_FEDAVG_FRACTION_BITS 24
/* An update's aggregation weight (num_examples, or what a strategy's
 * fit_weight made of it) is a multiple of 2^-FEDC_FEDAVG_WEIGHT_BITS from
 * that to FEDC_FEDAVG_MAX_WEIGHT: the weights then add up exactly (as
 * integer units), so the mean does not depend on arrival order either. */
#define FEDC_FEDAVG_WEIGHT_BITS 16
#define FEDC_FEDAVG_MAX_WEIGHT  (1ull << 32)

/*
 * Where the sums live when they are not in host memory (a GPU). The
 * accumulator calls the device only through these operations and their
 * context, so the core needs no device headers; the CUDA backend
 * (src/cuda/fedavg_cuda.cu) provides one. Every operation works in the
 * same fixed point as the CPU: it adds round_to_nearest_even(x * scale) to
 * the 64-bit sums, with wrapping arithmetic. Each returns a fedc status;
 * after a device failure (FEDC_ERR_DEVICE) every later call returns that
 * same failure, since the sums can no longer be trusted.
 */
typedef struct fedc__fedavg_backend {
    /* Zeroes every sum. */
    int (*reset)(void *ctx, char *err, size_t errlen);
    /* Adds (or, with `subtract`, takes back) the n host values x to the
     * sums of tensor ti from element `offset`. When `bad` is not NULL, sets
     * it to 1 if any value is NaN or |x| > lim (the values are folded all
     * the same), else to 0. */
    int (*fold_host)(void *ctx, size_t ti, size_t offset, const float *x, size_t n, double scale, float lim,
                     int subtract, int *bad, char *err, size_t errlen);
    /* The same for k whole updates of tensor ti that lie in the device's
     * memory (x[j] holds numel[ti] values), update j with scale[j] and
     * lim[j]. Fails with FEDC_ERR_INVALID, before anything is folded, when
     * a pointer is not device memory of this GPU. */
    int (*fold_resident)(void *ctx, size_t ti, const float *const *x, const double *scale, const float *lim,
                         size_t k, int subtract, int *bad, char *err, size_t errlen);
    /* Finds the first value of update x (device memory, tensor ti) that
     * is NaN or has |x| > lim: *found says whether there is one, *index
     * and *value say which. */
    int (*find_bad)(void *ctx, size_t ti, const float *x, float lim, int *found, size_t *index, float *value,
                    char *err, size_t errlen);
    /* Writes (float)((double)sum / denom) of every element: out[i] holds
     * tensor i, in host memory or (with out_on_device) in device memory. */
    int (*finalize)(void *ctx, double denom, float *const *out, int out_on_device, char *err, size_t errlen);
    /* Copies the sums of tensor ti into host memory. */
    int (*read_sums)(void *ctx, size_t ti, int64_t *out, char *err, size_t errlen);
    /* The failure that stopped the device, or FEDC_OK. */
    int (*status)(void *ctx, char *err, size_t errlen);
    void (*destroy)(void *ctx);
} fedc__fedavg_backend;

typedef struct fedc__fedavg {
    size_t ntensors;
    int64_t **acc; /* per tensor, numel elements; NULL when the sums live on a device */
    size_t *numel;
    char **names;
    double bound; /* largest |x * weight * 2^24| one update may add */
    uint64_t max_updates;
    uint64_t updates;
    uint64_t weight_units; /* the committed weights' sum, in units of 2^-FEDC_FEDAVG_WEIGHT_BITS */
    double weight_sum;     /* the same in weight (exact below 2^37) */
    fedc_device device;    /* where the sums live */
    const fedc__fedavg_backend *backend; /* NULL for the CPU */
    void *backend_ctx;
} fedc__fedavg;

/* Prepares an accumulator for models of this layout (F32 tensors only:
 * FEDC_ERR_UNSUPPORTED names any other) and at most max_updates updates
 * per round (which sets the per-value range that cannot overflow). The sums
 * live in host memory. */
int fedc__fedavg_init(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, char *err,
                      size_t errlen);
/* The same with the sums on `dev`: the CPU (exactly fedc__fedavg_init) or
 * a GPU. A GPU that cannot be used, or a build without the CUDA backend,
 * is FEDC_ERR_DEVICE with the reason (never a fall back to the CPU). Every
 * function below works on either, with bit-identical results: the same
 * updates give the same sums and the same finalized model. */
int fedc__fedavg_init_on(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, fedc_device dev,
                         char *err, size_t errlen);
void fedc__fedavg_free(fedc__fedavg *a);
/* Zeroes the sums for a new round and sets the update capacity. */
void fedc__fedavg_reset(fedc__fedavg *a, uint64_t max_updates);

/* Rounds a weight to the nearest multiple of 2^-FEDC_FEDAVG_WEIGHT_BITS
 * (non-finite values are returned as they are, for the check to refuse). */
double fedc__fedavg_round_weight(double w);
/* Checks n values of tensor ti that start at element `offset` before they
 * are folded with this weight: every value finite and within range.
 * FEDC_ERR_NONFINITE or FEDC_ERR_RANGE name the tensor and element. */
int fedc__fedavg_check(const fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                       double weight, char *err, size_t errlen);
/* Checks the weight of an update (a multiple of 2^-16 from 2^-16 to
 * FEDC_FEDAVG_MAX_WEIGHT) and that the round still has room for it. */
int fedc__fedavg_check_weight(const fedc__fedavg *a, double weight, char *err, size_t errlen);

/* Checks and folds in one pass over x (the values are read once, while in
 * cache). On failure the values are taken back out, so the accumulator is
 * exactly as before, and the error is that of fedc__fedavg_check(). */
int fedc__fedavg_check_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                            double weight, char *err, size_t errlen);
/* Takes back values folded earlier with the same weight: integer sums make
 * this exact, so a rejected update leaves no trace. */
void fedc__fedavg_unfold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n, double weight);

/* Adds weight * x (checked values) to tensor ti at `offset`. */
void fedc__fedavg_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n, double weight);
/* Adds a whole checked update (same layout as the accumulator). */
void fedc__fedavg_fold_params(fedc__fedavg *a, const fedc_params *p, double weight);
/* Records that one complete update of this weight has been folded. */
void fedc__fedavg_commit(fedc__fedavg *a, double weight);

/* Writes the weighted mean into out (same layout). FEDC_ERR_INVALID when no
 * update was committed. */
int fedc__fedavg_finalize(const fedc__fedavg *a, fedc_params *out, char *err, size_t errlen);

/*
 * Updates that are already in the accumulator's device memory (host memory
 * for a CPU accumulator), as a GPU trainer or simulation produces them.
 */

/* Checks and folds tensor ti of k whole updates: updates[j] holds numel[ti]
 * values of update j, whose weight is weights[j]. A GPU reads all k in
 * one pass, writing each sum once. All or nothing: when any value is bad,
 * none of the k is left in the sums, and the error is that of
 * fedc__fedavg_check() for the first bad value of the first bad update,
 * prefixed with "update j: ". FEDC_ERR_INVALID when a pointer is not
 * memory of the accumulator's device. As with check_fold, the caller
 * commits each update once all its tensors are folded. The updates must be
 * complete when called (written on the legacy default stream, or their
 * stream synchronised); they are not kept. */
int fedc__fedavg_check_fold_device(fedc__fedavg *a, size_t ti, const float *const *updates,
                                   const double *weights, size_t k, char *err, size_t errlen);
/* Like fedc__fedavg_finalize, into out[i] (numel[i] floats of tensor i) in
 * the accumulator's device memory, so the mean can stay on the GPU. */
int fedc__fedavg_finalize_device(const fedc__fedavg *a, float *const *out, char *err, size_t errlen);
/* Copies the sums of tensor ti (numel[ti] values) into host memory at out. */
int fedc__fedavg_read_sums(const fedc__fedavg *a, size_t ti, int64_t *out, char *err, size_t errlen);
/* FEDC_OK, or the device failure that made the sums unusable: the
 * functions above that return nothing (reset, fold, unfold) record it here,
 * and every later call that returns a status reports it. */
int fedc__fedavg_status(const fedc__fedavg *a, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
