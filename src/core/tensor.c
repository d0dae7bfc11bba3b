/* Named tensors and parameter sets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/tensor.h"

struct fedc_params {
    size_t count, cap;
    fedc_tensor *tensors;
};

size_t fedc_dtype_size(fedc_dtype dtype)
{
    switch (dtype) {
    case FEDC_F32:
    case FEDC_I32: return 4;
    case FEDC_F64:
    case FEDC_I64: return 8;
    case FEDC_U8:
    case FEDC_I8: return 1;
    case FEDC_F16:
    case FEDC_BF16: return 2;
    default: return 0;
    }
}

static const char *const dtype_names[] = {NULL, "F32", "F64", "I32", "I64", "U8", "I8", "F16", "BF16"};

const char *fedc_dtype_name(fedc_dtype dtype)
{
    if ((int)dtype <= 0 || (int)dtype > FEDC_BF16) return NULL;
    return dtype_names[dtype];
}

fedc_dtype fedc_dtype_from_name(const char *name)
{
    for (int i = 1; i <= FEDC_BF16; i++)
        if (name && !strcmp(name, dtype_names[i])) return (fedc_dtype)i;
    return FEDC_DTYPE_INVALID;
}

int64_t fedc_tensor_numel(const fedc_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

char *fedc_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen)
{
    size_t off = 0;
    if (buflen == 0) return buf;
    buf[0] = '\0';
    off += (size_t)snprintf(buf, buflen, "[");
    for (int i = 0; i < ndim && off < buflen; i++)
        off += (size_t)snprintf(buf + off, buflen - off, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (off < buflen) snprintf(buf + off, buflen - off, "]");
    return buf;
}

fedc_params *fedc_params_create(void)
{
    return calloc(1, sizeof(fedc_params));
}

void fedc_params_destroy(fedc_params *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->count; i++) {
        free(p->tensors[i].name);
        fedc_free(p->tensors[i].data);
    }
    free(p->tensors);
    free(p);
}

int fedc_params_add(fedc_params *p, const char *name, fedc_dtype dtype, int ndim, const int64_t *shape,
                    const void *data, fedc_tensor **out, char *err, size_t errlen)
{
    if (!p || !name || !*name) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "tensor name is empty");
    if (strlen(name) >= FEDC_MAX_NAME)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "tensor name longer than %d bytes",
                              FEDC_MAX_NAME - 1);
    size_t esize = fedc_dtype_size(dtype);
    if (esize == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "tensor '%s': unknown dtype %d", name,
                              (int)dtype);
    if (ndim < 0 || ndim > FEDC_MAX_DIMS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "tensor '%s': %d dimensions (at most %d)", name,
                              ndim, FEDC_MAX_DIMS);
    if (fedc_params_find(p, name))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "duplicate tensor name '%s'", name);
    size_t nbytes = esize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "tensor '%s': negative dimension %lld", name,
                                  (long long)shape[i]);
        if (shape[i] > 0 && nbytes > SIZE_MAX / (size_t)shape[i] / 2)
            return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "tensor '%s': size overflows", name);
        nbytes *= (size_t)shape[i];
    }
    if (p->count == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 8;
        fedc_tensor *nt = realloc(p->tensors, ncap * sizeof *nt);
        if (!nt) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        p->tensors = nt;
        p->cap = ncap;
    }
    fedc_tensor *t = &p->tensors[p->count];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = fedc_aligned_alloc(nbytes);
    if (!t->name || !t->data) {
        free(t->name);
        fedc_free(t->data);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for tensor '%s' (%zu bytes)", name,
                              nbytes);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    if (data)
        memcpy(t->data, data, nbytes);
    else
        memset(t->data, 0, nbytes);
    p->count++;
    if (out) *out = t;
    return FEDC_OK;
}

size_t fedc_params_count(const fedc_params *p)
{
    return p ? p->count : 0;
}

fedc_tensor *fedc_params_at(const fedc_params *p, size_t i)
{
    return (p && i < p->count) ? &p->tensors[i] : NULL;
}

fedc_tensor *fedc_params_find(const fedc_params *p, const char *name)
{
    if (!p || !name) return NULL;
    for (size_t i = 0; i < p->count; i++)
        if (!strcmp(p->tensors[i].name, name)) return &p->tensors[i];
    return NULL;
}

size_t fedc_params_nbytes(const fedc_params *p)
{
    size_t n = 0;
    for (size_t i = 0; p && i < p->count; i++) n += p->tensors[i].nbytes;
    return n;
}

fedc_params *fedc_params_clone(const fedc_params *p)
{
    fedc_params *c = fedc_params_create();
    if (!c) return NULL;
    for (size_t i = 0; p && i < p->count; i++) {
        const fedc_tensor *t = &p->tensors[i];
        if (fedc_params_add(c, t->name, t->dtype, t->ndim, t->shape, t->data, NULL, NULL, 0)) {
            fedc_params_destroy(c);
            return NULL;
        }
    }
    return c;
}

static int tensor_layout_differs(const fedc_tensor *a, const fedc_tensor *b)
{
    if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim) return 1;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 1;
    return 0;
}

int fedc_params_check_same_layout(const fedc_params *want, const fedc_params *got, char *err, size_t errlen)
{
    char s1[160], s2[160];
    size_t n = want->count < got->count ? want->count : got->count;
    for (size_t i = 0; i < n; i++) {
        const fedc_tensor *a = &want->tensors[i], *b = &got->tensors[i];
        if (!tensor_layout_differs(a, b)) continue;
        if (strcmp(a->name, b->name))
            return fedc_set_error(
                err, errlen, FEDC_ERR_SHAPE, "tensor %zu: expected '%s' %s %s, got '%s' %s %s", i, a->name,
                fedc_dtype_name(a->dtype), fedc_shape_str(a->ndim, a->shape, s1, sizeof s1), b->name,
                fedc_dtype_name(b->dtype), fedc_shape_str(b->ndim, b->shape, s2, sizeof s2));
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE, "tensor '%s': expected %s %s, got %s %s", a->name,
                              fedc_dtype_name(a->dtype), fedc_shape_str(a->ndim, a->shape, s1, sizeof s1),
                              fedc_dtype_name(b->dtype), fedc_shape_str(b->ndim, b->shape, s2, sizeof s2));
    }
    if (want->count != got->count)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE, "expected %zu tensors, got %zu", want->count,
                              got->count);
    return FEDC_OK;
}

int fedc_params_copy_data(fedc_params *dst, const fedc_params *src, char *err, size_t errlen)
{
    int rc = fedc_params_check_same_layout(dst, src, err, errlen);
    if (rc) return rc;
    for (size_t i = 0; i < dst->count; i++)
        memcpy(dst->tensors[i].data, src->tensors[i].data, dst->tensors[i].nbytes);
    return FEDC_OK;
}

int fedc_params_check_finite(const fedc_params *p, char *err, size_t errlen)
{
    for (size_t i = 0; i < p->count; i++) {
        const fedc_tensor *t = &p->tensors[i];
        int64_t n = fedc_tensor_numel(t);
        if (t->dtype == FEDC_F32) {
            const float *v = t->data;
            for (int64_t j = 0; j < n; j++)
                if (!isfinite(v[j]))
                    return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "tensor '%s': element %lld is %s",
                                          t->name, (long long)j, isnan(v[j]) ? "NaN" : "Inf");
        } else if (t->dtype == FEDC_F16 || t->dtype == FEDC_BF16) {
            /* An all-ones exponent field means Inf or NaN in both formats. */
            const uint16_t *v = t->data;
            uint16_t mask = t->dtype == FEDC_F16 ? 0x7c00 : 0x7f80;
            for (int64_t j = 0; j < n; j++)
                if ((v[j] & mask) == mask)
                    return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "tensor '%s': element %lld is %s",
                                          t->name, (long long)j,
                                          (v[j] & (uint16_t) ~(mask | 0x8000)) ? "NaN" : "Inf");
        } else if (t->dtype == FEDC_F64) {
            const double *v = t->data;
            for (int64_t j = 0; j < n; j++)
                if (!isfinite(v[j]))
                    return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "tensor '%s': element %lld is %s",
                                          t->name, (long long)j, isnan(v[j]) ? "NaN" : "Inf");
        }
    }
    return FEDC_OK;
}
