/* FedAvg in 64-bit fixed point. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategy/fedavg.h"
#ifdef FEDC_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* Adding 1.5 * 2^52 to a double of magnitude below 2^51 leaves the value,
 * rounded to the nearest integer, in the low mantissa bits: subtracting the
 * constant's bit pattern yields that integer. Unlike llrint this compiles
 * to vector code on AVX2, which has no packed double-to-int64 conversion. */
#define MAGIC       6755399441055744.0
#define MAGIC_BITS  0x4338000000000000LL
#define FIXED_SCALE ((double)(1ull << FEDC_FEDAVG_FRACTION_BITS))

static double bound_for(uint64_t max_updates)
{
    uint64_t p = 1;
    while (p < max_updates && p < (1ull << 62)) p <<= 1;
    double b = ldexp(1.0, 62) / (double)p;
    double magic_limit = ldexp(1.0, 51) - 1.0;
    return b < magic_limit ? b : magic_limit;
}

/* Takes the layout; the sums are allocated in host memory when host_sums
 * is set (a device accumulator leaves acc[i] NULL). */
static int init_layout(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, int host_sums,
                       char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    size_t n = fedc_params_count(layout);
    a->ntensors = n;
    a->acc = calloc(n ? n : 1, sizeof *a->acc);
    a->numel = calloc(n ? n : 1, sizeof *a->numel);
    a->names = calloc(n ? n : 1, sizeof *a->names);
    if (!a->acc || !a->numel || !a->names) goto nomem;
    for (size_t i = 0; i < n; i++) {
        const fedc_tensor *t = fedc_params_at(layout, i);
        if (t->dtype != FEDC_F32) {
            fedc__fedavg_free(a);
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                                  "tensor '%s' is %s: FedAvg aggregates F32 tensors only", t->name,
                                  fedc_dtype_name(t->dtype));
        }
        a->numel[i] = (size_t)fedc_tensor_numel(t);
        /* calloc of a large block maps zero pages lazily: untouched parts of
         * a huge accumulator cost no memory. */
        if (host_sums) {
            a->acc[i] = calloc(a->numel[i] ? a->numel[i] : 1, sizeof(int64_t));
            if (!a->acc[i]) goto nomem;
        }
        a->names[i] = strdup(t->name);
        if (!a->names[i]) goto nomem;
    }
    a->max_updates = max_updates ? max_updates : 1;
    a->bound = bound_for(a->max_updates);
    return FEDC_OK;
nomem:
    fedc__fedavg_free(a);
    return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for the aggregation buffers");
}

int fedc__fedavg_init(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, char *err,
                      size_t errlen)
{
    return init_layout(a, layout, max_updates, 1, err, errlen);
}

int fedc__fedavg_init_on(fedc__fedavg *a, const fedc_params *layout, uint64_t max_updates, fedc_device dev,
                         char *err, size_t errlen)
{
    if (dev.type == FEDC_DEVICE_CPU) return fedc__fedavg_init(a, layout, max_updates, err, errlen);
    memset(a, 0, sizeof *a);
    /* Names the reason a GPU cannot be used: no CUDA in this build, no
     * driver, no such GPU. */
    int rc = fedc_device_check(dev, NULL, 0, err, errlen);
    if (rc) return rc;
#ifdef FEDC_HAVE_CUDA
    rc = init_layout(a, layout, max_updates, 0, err, errlen);
    if (rc) return rc;
    rc = fedc__cuda_fedavg_open(dev.index, a->ntensors, a->numel, &a->backend, &a->backend_ctx, err, errlen);
    if (rc) {
        fedc__fedavg_free(a);
        return rc;
    }
    a->device = dev;
    return FEDC_OK;
#else
    return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "this build of fedc has no CUDA backend");
#endif
}

void fedc__fedavg_free(fedc__fedavg *a)
{
    if (a->backend) a->backend->destroy(a->backend_ctx);
    for (size_t i = 0; a->acc && i < a->ntensors; i++) {
        free(a->acc[i]);
        if (a->names) free(a->names[i]);
    }
    free(a->acc);
    free(a->numel);
    free(a->names);
    memset(a, 0, sizeof *a);
}

void fedc__fedavg_reset(fedc__fedavg *a, uint64_t max_updates)
{
    /* A device failure is kept by the backend: fedc__fedavg_status and
     * every later call that returns a status report it. */
    if (a->backend)
        (void)a->backend->reset(a->backend_ctx, NULL, 0);
    else
        for (size_t i = 0; i < a->ntensors; i++) memset(a->acc[i], 0, a->numel[i] * sizeof(int64_t));
    a->updates = 0;
    a->weight_units = 0;
    a->weight_sum = 0;
    a->max_updates = max_updates ? max_updates : 1;
    a->bound = bound_for(a->max_updates);
}

#define WEIGHT_UNIT ((double)(1u << FEDC_FEDAVG_WEIGHT_BITS))

double fedc__fedavg_round_weight(double w)
{
    return isfinite(w) ? nearbyint(w * WEIGHT_UNIT) / WEIGHT_UNIT : w;
}

/* A weight the accumulator takes: finite, in range, on the 2^-16 grid. */
static int weight_ok(double w)
{
    return w >= 1.0 / WEIGHT_UNIT && w <= (double)FEDC_FEDAVG_MAX_WEIGHT &&
           w * WEIGHT_UNIT == floor(w * WEIGHT_UNIT);
}

/* "num_examples 12" (`what`) for whole weights, as clients report them,
 * else the weight a strategy made. */
static int weight_error(char *err, size_t errlen, const char *what, double w)
{
    if (w == floor(w) && w >= 0 && w < 1e19)
        return fedc_set_error(err, errlen, FEDC_ERR_RANGE, "%s %.0f is outside 1..%llu", what, w,
                              (unsigned long long)FEDC_FEDAVG_MAX_WEIGHT);
    return fedc_set_error(
        err, errlen, FEDC_ERR_RANGE, "weight %.17g is not a multiple of 2^-%d from 2^-%d to %llu", w,
        FEDC_FEDAVG_WEIGHT_BITS, FEDC_FEDAVG_WEIGHT_BITS, (unsigned long long)FEDC_FEDAVG_MAX_WEIGHT);
}

int fedc__fedavg_check_weight(const fedc__fedavg *a, double weight, char *err, size_t errlen)
{
    if (!weight_ok(weight)) return weight_error(err, errlen, "num_examples", weight);
    if ((uint64_t)(weight * WEIGHT_UNIT) > UINT64_MAX - a->weight_units)
        return fedc_set_error(err, errlen, FEDC_ERR_RANGE, "the round's total weight would overflow");
    if (a->updates >= a->max_updates)
        return fedc_set_error(err, errlen, FEDC_ERR_RANGE, "more updates than the %llu expected this round",
                              (unsigned long long)a->max_updates);
    return FEDC_OK;
}

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FEDC_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define FEDC_MULTIVERSION
#endif

static float limit_for(const fedc__fedavg *a, double weight);

/* Returns nonzero if any |x[i]| > lim or x[i] is NaN. Branch-free so it
 * vectorises; the caller searches for the culprit only on failure. */
FEDC_MULTIVERSION
static int any_out_of_range(const float *restrict x, size_t n, float lim)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= !(fabsf(x[i]) <= lim);
    return bad;
}

int fedc__fedavg_check(const fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                       double weight, char *err, size_t errlen)
{
    if (ti >= a->ntensors || offset > a->numel[ti] || n > a->numel[ti] - offset)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    if (!weight_ok(weight)) return weight_error(err, errlen, "weight", weight);
    float lim = limit_for(a, weight);
    if (!any_out_of_range(x, n, lim)) return FEDC_OK;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]) || isinf(x[i]))
            return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "tensor '%s' element %zu is %s",
                                  a->names[ti], offset + i, isnan(x[i]) ? "NaN" : "Inf");
        if (!(fabsf(x[i]) <= lim))
            return fedc_set_error(
                err, errlen, FEDC_ERR_RANGE,
                "tensor '%s' element %zu = %g is too large to aggregate with weight %g (limit %g)",
                a->names[ti], offset + i, (double)x[i], weight, (double)lim);
    }
    return FEDC_OK;
}

FEDC_MULTIVERSION
static void fold_f32(uint64_t *restrict acc, const float *restrict x, size_t n, double s)
{
    for (size_t i = 0; i < n; i++) {
        double v = (double)x[i] * s + MAGIC;
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        acc[i] += bits - (uint64_t)MAGIC_BITS;
    }
}

/* The sums use unsigned (wrapping) arithmetic so that folding values that
 * turn out to be out of range, then taking them back, is still exact. */
/* Values are read once, so they are prefetched as non-temporal: without the
 * hint, a large update streaming in from memory evicts the accumulator
 * (which is read and written for every update) from the caches. Measured by
 * bench/bench_agg: about 0.63 of memcpy's speed without, 0.75 with. */
#define FOLD_BLOCK          64   /* floats per block: four cache lines */
#define FOLD_PREFETCH_BYTES 4096 /* how far ahead of the block */

FEDC_MULTIVERSION
static int check_fold_f32(uint64_t *restrict acc, const float *restrict x, size_t n, double s, float lim)
{
    int bad = 0;
    for (size_t b = 0; b < n; b += FOLD_BLOCK) {
        size_t end = n - b < FOLD_BLOCK ? n : b + FOLD_BLOCK;
        const char *ahead = (const char *)(x + b) + FOLD_PREFETCH_BYTES;
        for (size_t k = 0; k < FOLD_BLOCK * sizeof(float); k += 64) __builtin_prefetch(ahead + k, 0, 0);
        for (size_t i = b; i < end; i++) {
            bad |= !(fabsf(x[i]) <= lim);
            double v = (double)x[i] * s + MAGIC;
            uint64_t bits;
            memcpy(&bits, &v, sizeof bits);
            acc[i] += bits - (uint64_t)MAGIC_BITS;
        }
    }
    return bad;
}

FEDC_MULTIVERSION
static void unfold_f32(uint64_t *restrict acc, const float *restrict x, size_t n, double s)
{
    for (size_t i = 0; i < n; i++) {
        double v = (double)x[i] * s + MAGIC;
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        acc[i] -= bits - (uint64_t)MAGIC_BITS;
    }
}

static float limit_for(const fedc__fedavg *a, double weight)
{
    double limd = a->bound / (weight * FIXED_SCALE);
    float lim = (float)limd;
    if ((double)lim > limd) lim = nextafterf(lim, 0.0f);
    return lim;
}

/* The device checks while it folds; on failure it takes the values back
 * out and the host values, checked here, name the culprit. */
static int device_check_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                             double weight, char *err, size_t errlen)
{
    double s = weight * FIXED_SCALE;
    float lim = limit_for(a, weight);
    int bad = 0;
    int rc = a->backend->fold_host(a->backend_ctx, ti, offset, x, n, s, lim, 0, &bad, err, errlen);
    if (rc || !bad) return rc;
    rc = a->backend->fold_host(a->backend_ctx, ti, offset, x, n, s, lim, 1, NULL, err, errlen);
    if (rc) return rc;
    rc = fedc__fedavg_check(a, ti, offset, x, n, weight, err, errlen);
    if (rc == FEDC_OK)
        rc =
            fedc_set_error(err, errlen, FEDC_ERR_DEVICE,
                           "the GPU refused values of tensor '%s' that the host check accepts", a->names[ti]);
    return rc;
}

int fedc__fedavg_check_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n,
                            double weight, char *err, size_t errlen)
{
    if (ti >= a->ntensors || offset > a->numel[ti] || n > a->numel[ti] - offset || !weight_ok(weight))
        return fedc__fedavg_check(a, ti, offset, x, n, weight, err, errlen);
    if (a->backend) return device_check_fold(a, ti, offset, x, n, weight, err, errlen);
    uint64_t *acc = (uint64_t *)(a->acc[ti] + offset);
    double s = weight * FIXED_SCALE;
    if (!check_fold_f32(acc, x, n, s, limit_for(a, weight))) return FEDC_OK;
    unfold_f32(acc, x, n, s);
    return fedc__fedavg_check(a, ti, offset, x, n, weight, err, errlen);
}

void fedc__fedavg_unfold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n, double weight)
{
    if (a->backend) {
        (void)a->backend->fold_host(a->backend_ctx, ti, offset, x, n, weight * FIXED_SCALE, 0.0f, 1, NULL,
                                    NULL, 0);
        return;
    }
    unfold_f32((uint64_t *)(a->acc[ti] + offset), x, n, weight * FIXED_SCALE);
}

void fedc__fedavg_fold(fedc__fedavg *a, size_t ti, size_t offset, const float *x, size_t n, double weight)
{
    if (a->backend) {
        (void)a->backend->fold_host(a->backend_ctx, ti, offset, x, n, weight * FIXED_SCALE, 0.0f, 0, NULL,
                                    NULL, 0);
        return;
    }
    fold_f32((uint64_t *)(a->acc[ti] + offset), x, n, weight * FIXED_SCALE);
}

void fedc__fedavg_fold_params(fedc__fedavg *a, const fedc_params *p, double weight)
{
    for (size_t i = 0; i < a->ntensors; i++)
        fedc__fedavg_fold(a, i, 0, fedc_params_at(p, i)->data, a->numel[i], weight);
}

void fedc__fedavg_commit(fedc__fedavg *a, double weight)
{
    a->updates++;
    a->weight_units += (uint64_t)(weight * WEIGHT_UNIT);
    a->weight_sum = (double)a->weight_units / WEIGHT_UNIT;
}

int fedc__fedavg_finalize(const fedc__fedavg *a, fedc_params *out, char *err, size_t errlen)
{
    /* A device that failed earlier (in a reset, say) is reported first. */
    int rc = fedc__fedavg_status(a, err, errlen);
    if (rc) return rc;
    if (a->updates == 0 || a->weight_units == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no update to average");
    double denom = (double)a->weight_units * (FIXED_SCALE / WEIGHT_UNIT);
    if (a->backend) {
        float **o = malloc((a->ntensors ? a->ntensors : 1) * sizeof *o);
        if (!o) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < a->ntensors; i++) o[i] = fedc_params_at(out, i)->data;
        rc = a->backend->finalize(a->backend_ctx, denom, o, 0, err, errlen);
        free(o);
        return rc;
    }
    for (size_t i = 0; i < a->ntensors; i++) {
        fedc_tensor *t = fedc_params_at(out, i);
        float *o = t->data;
        const int64_t *s = a->acc[i];
        for (size_t j = 0; j < a->numel[i]; j++) o[j] = (float)((double)s[j] / denom);
    }
    return FEDC_OK;
}

/* ---- updates in the accumulator's device memory ----------------------- */

/* Rewrites err as "update j: <err>". */
static int for_update(size_t j, int rc, char *err, size_t errlen)
{
    char why[FEDC_ERRMSG_MAX];
    snprintf(why, sizeof why, "%s", err && errlen ? err : "");
    return fedc_set_error(err, errlen, rc, "update %zu: %s", j, why);
}

/* A CPU accumulator: the updates are in host memory; each is checked and
 * folded as the server does, the earlier ones taken back on failure. */
static int host_check_fold_many(fedc__fedavg *a, size_t ti, const float *const *updates,
                                const double *weights, size_t k, char *err, size_t errlen)
{
    for (size_t j = 0; j < k; j++) {
        int rc = fedc__fedavg_check_fold(a, ti, 0, updates[j], a->numel[ti], weights[j], err, errlen);
        if (rc) {
            for (size_t i = 0; i < j; i++)
                fedc__fedavg_unfold(a, ti, 0, updates[i], a->numel[ti], weights[i]);
            return for_update(j, rc, err, errlen);
        }
    }
    return FEDC_OK;
}

/* A GPU accumulator: one pass folds and checks all k; on failure a second
 * takes them back out and the first bad value is looked up on the GPU. */
static int device_check_fold_many(fedc__fedavg *a, size_t ti, const float *const *updates,
                                  const double *weights, size_t k, char *err, size_t errlen)
{
    double *scale = malloc(k * sizeof *scale);
    float *lim = malloc(k * sizeof *lim);
    int rc = FEDC_OK, bad = 0;
    if (!scale || !lim) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t j = 0; j < k; j++) {
        scale[j] = (double)weights[j] * FIXED_SCALE;
        lim[j] = limit_for(a, weights[j]);
    }
    rc = a->backend->fold_resident(a->backend_ctx, ti, updates, scale, lim, k, 0, &bad, err, errlen);
    if (rc || !bad) goto done;
    rc = a->backend->fold_resident(a->backend_ctx, ti, updates, scale, lim, k, 1, NULL, err, errlen);
    if (rc) goto done;
    for (size_t j = 0; j < k; j++) {
        int found = 0;
        size_t index = 0;
        float value = 0;
        rc =
            a->backend->find_bad(a->backend_ctx, ti, updates[j], lim[j], &found, &index, &value, err, errlen);
        if (rc) goto done;
        if (!found) continue;
        /* The host check of the one value writes the CPU's message. */
        rc = fedc__fedavg_check(a, ti, index, &value, 1, weights[j], err, errlen);
        if (rc == FEDC_OK)
            rc = fedc_set_error(
                err, errlen, FEDC_ERR_DEVICE,
                "the GPU refused element %zu of tensor '%s' (%g), which the host check accepts", index,
                a->names[ti], (double)value);
        rc = for_update(j, rc, err, errlen);
        goto done;
    }
    rc = fedc_set_error(err, errlen, FEDC_ERR_DEVICE,
                        "the GPU refused values of tensor '%s' but then found none out of range",
                        a->names[ti]);
done:
    free(scale);
    free(lim);
    return rc;
}

int fedc__fedavg_check_fold_device(fedc__fedavg *a, size_t ti, const float *const *updates,
                                   const double *weights, size_t k, char *err, size_t errlen)
{
    int rc = fedc__fedavg_status(a, err, errlen);
    if (rc) return rc;
    if (ti >= a->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    if (k == 0) return FEDC_OK;
    if (!updates || !weights) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "updates: NULL pointer");
    for (size_t j = 0; j < k; j++) {
        /* The weight, before anything is folded (no values to check). */
        rc = fedc__fedavg_check(a, ti, 0, NULL, 0, weights[j], err, errlen);
        if (!rc && !updates[j] && a->numel[ti])
            rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID, "NULL pointer");
        if (rc) return for_update(j, rc, err, errlen);
    }
    if (a->backend) return device_check_fold_many(a, ti, updates, weights, k, err, errlen);
    return host_check_fold_many(a, ti, updates, weights, k, err, errlen);
}

int fedc__fedavg_finalize_device(const fedc__fedavg *a, float *const *out, char *err, size_t errlen)
{
    int rc = fedc__fedavg_status(a, err, errlen);
    if (rc) return rc;
    if (a->updates == 0 || a->weight_sum == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no update to average");
    if (!out && a->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "output: NULL pointer");
    double denom = (double)a->weight_sum * FIXED_SCALE;
    if (a->backend) return a->backend->finalize(a->backend_ctx, denom, out, 1, err, errlen);
    for (size_t i = 0; i < a->ntensors; i++) {
        float *o = out[i];
        const int64_t *s = a->acc[i];
        for (size_t j = 0; j < a->numel[i]; j++) o[j] = (float)((double)s[j] / denom);
    }
    return FEDC_OK;
}

int fedc__fedavg_read_sums(const fedc__fedavg *a, size_t ti, int64_t *out, char *err, size_t errlen)
{
    if (ti >= a->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no tensor %zu", ti);
    if (a->backend) return a->backend->read_sums(a->backend_ctx, ti, out, err, errlen);
    if (a->numel[ti]) memcpy(out, a->acc[ti], a->numel[ti] * sizeof *out);
    return FEDC_OK;
}

int fedc__fedavg_status(const fedc__fedavg *a, char *err, size_t errlen)
{
    return a->backend ? a->backend->status(a->backend_ctx, err, errlen) : FEDC_OK;
}
