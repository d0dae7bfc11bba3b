/*
 * Named tensors and parameter sets.
 *
 * A model travels as a parameter set: an ordered list of named tensors,
 * each with a dtype, a shape and little-endian data. fedc does not know what
 * a layer is; any ML framework can map its state onto this. The same
 * structures are used on the wire (see docs/protocol.md) and in model files,
 * which use the safetensors layout so that NumPy and PyTorch read them.
 */
#ifndef FEDC_TENSOR_H
#define FEDC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. The numeric values are the ones used on the wire. */
typedef enum fedc_dtype {
    FEDC_DTYPE_INVALID = 0,
    FEDC_F32 = 1,
    FEDC_F64 = 2,
    FEDC_I32 = 3,
    FEDC_I64 = 4,
    FEDC_U8 = 5,
    FEDC_I8 = 6,
    FEDC_F16 = 7,
    FEDC_BF16 = 8
} fedc_dtype;

/* Bytes per element, or 0 for an unknown dtype. */
size_t fedc_dtype_size(fedc_dtype dtype);
/* The safetensors name ("F32", "I64", ...), or NULL for an unknown dtype. */
const char *fedc_dtype_name(fedc_dtype dtype);
/* Parses a safetensors dtype name; returns FEDC_DTYPE_INVALID if unknown. */
fedc_dtype fedc_dtype_from_name(const char *name);

#define FEDC_MAX_DIMS 8
#define FEDC_MAX_NAME 256 /* longest tensor name, including the NUL */

/*
 * One tensor. `name` and `data` are owned by the parameter set that holds
 * the tensor; `data` is 64-byte aligned and holds exactly `nbytes` bytes,
 * which is numel * fedc_dtype_size(dtype). A tensor with ndim == 0 is a
 * scalar (one element).
 */
typedef struct fedc_tensor {
    char *name;
    fedc_dtype dtype;
    int ndim;
    int64_t shape[FEDC_MAX_DIMS];
    void *data;
    size_t nbytes;
} fedc_tensor;

/* Number of elements (product of the shape; 1 for a scalar). */
int64_t fedc_tensor_numel(const fedc_tensor *t);
/* Writes the shape as "[a, b, c]" into buf; returns buf. */
char *fedc_shape_str(int ndim, const int64_t *shape, char *buf, size_t buflen);

/* An ordered set of uniquely named tensors. Opaque. */
typedef struct fedc_params fedc_params;

/* Creates an empty set. Returns NULL when out of memory. */
fedc_params *fedc_params_create(void);
/* Frees the set, its tensors and their data. No-op on NULL. */
void fedc_params_destroy(fedc_params *p);

/*
 * Appends a tensor. `data` (nbytes of it) is copied when non-NULL, else the
 * tensor is zero-filled. On success *out (if non-NULL) points at the new
 * tensor, which stays valid until the set is destroyed or grows again.
 * Fails with FEDC_ERR_INVALID for a duplicate or empty name, a bad dtype,
 * a negative dimension or more than FEDC_MAX_DIMS dimensions, and with
 * FEDC_ERR_TOO_LARGE when the byte size overflows.
 */
int fedc_params_add(fedc_params *p, const char *name, fedc_dtype dtype, int ndim, const int64_t *shape,
                    const void *data, fedc_tensor **out, char *err, size_t errlen);

size_t fedc_params_count(const fedc_params *p);
/* The i-th tensor (insertion order), or NULL when i is out of range. */
fedc_tensor *fedc_params_at(const fedc_params *p, size_t i);
/* The tensor with this name, or NULL. */
fedc_tensor *fedc_params_find(const fedc_params *p, const char *name);
/* Total data bytes of all tensors. */
size_t fedc_params_nbytes(const fedc_params *p);

/* Deep copy. Returns NULL when out of memory. The caller destroys it. */
fedc_params *fedc_params_clone(const fedc_params *p);

/*
 * Checks that `got` has exactly the tensors of `want`: same count, same
 * names in the same order, same dtypes and shapes. On a mismatch returns
 * FEDC_ERR_SHAPE with a message naming the tensor and both shapes, for
 * example "tensor 'fc1.weight': expected F32 [200, 784], got F32 [100, 784]".
 */
int fedc_params_check_same_layout(const fedc_params *want, const fedc_params *got, char *err, size_t errlen);

/* Copies the data of src into dst; both must have the same layout. */
int fedc_params_copy_data(fedc_params *dst, const fedc_params *src, char *err, size_t errlen);

/* Returns FEDC_ERR_NONFINITE (naming the tensor and index) if any floating
 * point element is NaN or Inf, else FEDC_OK. */
int fedc_params_check_finite(const fedc_params *p, char *err, size_t errlen);

/*
 * Model files in the safetensors layout: an 8-byte little-endian header
 * length N, N bytes of JSON describing each tensor's dtype, shape and
 * data_offsets, then the raw little-endian data. Tensors are written in
 * set order; "__metadata__" holds string key/values (may be NULL/0).
 * Saving writes a temporary file and renames it over `path`, so a reader
 * never sees a half-written model.
 */
int fedc_params_save(const fedc_params *p, const char *path, const char *const *meta_keys,
                     const char *const *meta_values, size_t meta_count, char *err, size_t errlen);

/* Loads a safetensors file. Tensors come back in data-offset order (which is
 * the writer's order for files fedc and the safetensors library write).
 * On success *out is a new set the caller destroys. A missing file gives
 * FEDC_ERR_NOTFOUND, anything malformed FEDC_ERR_FORMAT, both with a
 * message naming the file and the problem. */
int fedc_params_load(const char *path, fedc_params **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* FEDC_TENSOR_H */
