/* The dataset struct: allocation, class counts and subsets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

int fedc__dataset_alloc(size_t n, int channels, int height, int width, int num_classes, int zero,
                        fedc_dataset **out, char *err, size_t errlen)
{
    fedc_dataset *d = NULL;
    *out = NULL;
    if (channels < 1 || height < 1 || width < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "dataset shape %d x %d x %d: every dimension must be at least 1", channels,
                              height, width);
    if (num_classes < 2 || num_classes > FEDC_DATA_MAX_CLASSES)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "dataset with %d classes: the class count must be in [2, %d]", num_classes,
                              FEDC_DATA_MAX_CLASSES);
    /* Each factor is below 2^31, so two of them cannot overflow a 64-bit
     * size_t; the checks below cover the rest, including 32-bit hosts. */
    size_t features = (size_t)channels * (size_t)height;
    if (features > SIZE_MAX / (size_t)width) goto too_large;
    features *= (size_t)width;
    if (n != 0 && features > SIZE_MAX / sizeof(float) / n) goto too_large;
    if (n > SIZE_MAX / sizeof(int32_t)) goto too_large;

    d = calloc(1, sizeof *d);
    if (!d) goto nomem;
    d->n = n;
    d->features = features;
    d->channels = channels;
    d->height = height;
    d->width = width;
    d->num_classes = num_classes;
    d->x = fedc_aligned_alloc(n * features * sizeof(float));
    d->y = fedc_aligned_alloc(n * sizeof(int32_t));
    if (!d->x || !d->y) goto nomem;
    if (zero) {
        memset(d->x, 0, n * features * sizeof(float));
        memset(d->y, 0, n * sizeof(int32_t));
    }
    *out = d;
    return FEDC_OK;

too_large:
    return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                          "dataset of %zu examples of %d x %d x %d floats is too large", n, channels, height,
                          width);
nomem:
    fedc_dataset_destroy(d);
    return fedc_set_error(err, errlen, FEDC_ERR_NOMEM,
                          "out of memory allocating %zu examples of %d x %d x %d floats", n, channels, height,
                          width);
}

int fedc_dataset_create(size_t n, int channels, int height, int width, int num_classes, fedc_dataset **out,
                        char *err, size_t errlen)
{
    return fedc__dataset_alloc(n, channels, height, width, num_classes, 1, out, err, errlen);
}

void fedc_dataset_destroy(fedc_dataset *d)
{
    if (!d) return;
    fedc_free(d->x);
    fedc_free(d->y);
    free(d);
}

int fedc_dataset_set_num_classes(fedc_dataset *d, int num_classes, char *err, size_t errlen)
{
    if (num_classes < 2 || num_classes > FEDC_DATA_MAX_CLASSES)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "class count %d is outside [2, %d]", num_classes,
                              FEDC_DATA_MAX_CLASSES);
    for (size_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0 || d->y[i] >= num_classes)
            return fedc_set_error(err, errlen, FEDC_ERR_RANGE, "example %zu has label %d, outside [0, %d)", i,
                                  (int)d->y[i], num_classes);
    }
    d->num_classes = num_classes;
    return FEDC_OK;
}

void fedc_dataset_label_counts(const fedc_dataset *d, size_t *counts)
{
    memset(counts, 0, (size_t)d->num_classes * sizeof *counts);
    for (size_t i = 0; i < d->n; i++) {
        /* Labels are kept in range by every constructor; a hand-edited
         * dataset that breaks this must not write out of bounds. */
        if (d->y[i] >= 0 && d->y[i] < d->num_classes) counts[d->y[i]]++;
    }
}

int fedc_dataset_subset(const fedc_dataset *d, const uint32_t *idx, size_t count, fedc_dataset **out,
                        char *err, size_t errlen)
{
    *out = NULL;
    for (size_t i = 0; i < count; i++) {
        if (idx[i] >= d->n)
            return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                                  "subset index %u (entry %zu) is outside a dataset of %zu "
                                  "examples",
                                  (unsigned)idx[i], i, d->n);
    }
    fedc_dataset *s = NULL;
    int rc = fedc__dataset_alloc(count, d->channels, d->height, d->width, d->num_classes, 0, &s, err, errlen);
    if (rc != FEDC_OK) return rc;
    for (size_t i = 0; i < count; i++) {
        memcpy(s->x + i * d->features, d->x + (size_t)idx[i] * d->features, d->features * sizeof(float));
        s->y[i] = d->y[idx[i]];
    }
    *out = s;
    return FEDC_OK;
}

int fedc__dataset_is_u8(const fedc_dataset *d)
{
    size_t total = d->n * d->features;
    for (size_t i = 0; i < total; i++) {
        float v = d->x[i];
        /* The comparison also rejects NaN, and the range test keeps lrintf
         * within what a long can hold. */
        if (!(v >= 0.0f && v <= 1.0f)) return 0;
        long k = lrintf(v * 255.0f);
        if ((float)k / 255.0f != v) return 0;
    }
    return 1;
}
