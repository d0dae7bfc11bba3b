/*
 * Parameter sets: adding tensors (and the inputs that are refused), lookup,
 * deep copies, layout comparison and its messages, copying data, and the
 * non-finite check.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fedc/tensor.h"
#include "test_util.h"

static void test_dtypes(void)
{
    static const struct {
        fedc_dtype d;
        size_t size;
        const char *name;
    } t[] = {{FEDC_F32, 4, "F32"}, {FEDC_F64, 8, "F64"}, {FEDC_I32, 4, "I32"}, {FEDC_I64, 8, "I64"},
             {FEDC_U8, 1, "U8"},   {FEDC_I8, 1, "I8"},   {FEDC_F16, 2, "F16"}, {FEDC_BF16, 2, "BF16"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        CHECK(fedc_dtype_size(t[i].d) == t[i].size, "size of %s", t[i].name);
        const char *n = fedc_dtype_name(t[i].d);
        CHECK(n && !strcmp(n, t[i].name), "name of dtype %d", (int)t[i].d);
        CHECK(fedc_dtype_from_name(t[i].name) == t[i].d, "dtype of '%s'", t[i].name);
    }
    CHECK(fedc_dtype_size(FEDC_DTYPE_INVALID) == 0 && fedc_dtype_size((fedc_dtype)9) == 0 &&
              fedc_dtype_size((fedc_dtype)-1) == 0,
          "unknown dtypes have size 0");
    CHECK(fedc_dtype_name(FEDC_DTYPE_INVALID) == NULL && fedc_dtype_name((fedc_dtype)9) == NULL &&
              fedc_dtype_name((fedc_dtype)-3) == NULL,
          "unknown dtypes have no name");
    CHECK(fedc_dtype_from_name("f32") == FEDC_DTYPE_INVALID &&
              fedc_dtype_from_name("F128") == FEDC_DTYPE_INVALID &&
              fedc_dtype_from_name("") == FEDC_DTYPE_INVALID &&
              fedc_dtype_from_name(NULL) == FEDC_DTYPE_INVALID,
          "unknown names give FEDC_DTYPE_INVALID");

    char buf[64];
    const int64_t shape[3] = {200, 784, 3};
    CHECK(!strcmp(fedc_shape_str(2, shape, buf, sizeof buf), "[200, 784]"), "shape_str '%s'", buf);
    CHECK(!strcmp(fedc_shape_str(0, shape, buf, sizeof buf), "[]"), "scalar shape_str '%s'", buf);
    /* A short buffer is truncated but stays a terminated string. */
    char tiny[6];
    memset(tiny, 'x', sizeof tiny);
    fedc_shape_str(3, shape, tiny, sizeof tiny);
    CHECK(memchr(tiny, '\0', sizeof tiny) != NULL && !strncmp(tiny, "[200", 4),
          "shape_str into 6 bytes gives '%.6s'", tiny);
}

static void test_add_find(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    CHECK(p && fedc_params_count(p) == 0 && fedc_params_nbytes(p) == 0, "a new set is empty");
    if (!p) return;

    const float w[6] = {1, 2, 3, 4, 5, 6};
    const int64_t s23[2] = {2, 3};
    fedc_tensor *t = NULL;
    CHECK_STATUS(fedc_params_add(p, "w", FEDC_F32, 2, s23, w, &t, err, sizeof err), FEDC_OK, "add w");
    CHECK(t && !strcmp(t->name, "w") && t->dtype == FEDC_F32 && t->ndim == 2 && t->shape[0] == 2 &&
              t->shape[1] == 3 && t->nbytes == 24 && fedc_tensor_numel(t) == 6,
          "w has the given layout");
    CHECK(t && t->data != w && !memcmp(t->data, w, sizeof w), "w's data was copied");
    CHECK(t && ((uintptr_t)t->data % 64) == 0, "tensor data is 64-byte aligned");

    /* NULL data zero-fills; a scalar has one element; a zero dimension
     * gives an empty tensor. */
    const int64_t s5[1] = {5}, s302[3] = {3, 0, 2};
    CHECK_STATUS(fedc_params_add(p, "z", FEDC_I64, 1, s5, NULL, &t, err, sizeof err), FEDC_OK, "add z");
    int zero = 1;
    for (int i = 0; t && i < 5; i++)
        if (((int64_t *)t->data)[i] != 0) zero = 0;
    CHECK(zero, "NULL data gives zeros");
    const double pi = 3.25;
    CHECK_STATUS(fedc_params_add(p, "scalar", FEDC_F64, 0, NULL, &pi, &t, err, sizeof err), FEDC_OK,
                 "add a scalar");
    CHECK(t && t->ndim == 0 && t->nbytes == 8 && fedc_tensor_numel(t) == 1 && *(double *)t->data == 3.25,
          "a scalar holds one element");
    CHECK_STATUS(fedc_params_add(p, "empty", FEDC_U8, 3, s302, NULL, &t, err, sizeof err), FEDC_OK,
                 "add a zero-size tensor");
    CHECK(t && t->nbytes == 0 && fedc_tensor_numel(t) == 0 && t->data != NULL,
          "a zero-size tensor has 0 bytes and a valid pointer");
    CHECK(fedc_params_count(p) == 4 && fedc_params_nbytes(p) == 24 + 40 + 8, "count %zu nbytes %zu",
          fedc_params_count(p), fedc_params_nbytes(p));

    /* Refused: duplicate, empty or over-long name, bad dtype, bad ndim,
     * negative dimension, overflowing size. Nothing is added. */
    err[0] = '\0';
    CHECK_STATUS(fedc_params_add(p, "w", FEDC_F32, 1, s5, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "duplicate name");
    CHECK_CONTAINS(err, "'w'", "duplicate name message");
    CHECK_STATUS(fedc_params_add(p, "", FEDC_F32, 1, s5, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "empty name");
    CHECK_STATUS(fedc_params_add(p, NULL, FEDC_F32, 1, s5, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "NULL name");
    char longname[FEDC_MAX_NAME + 1];
    memset(longname, 'n', FEDC_MAX_NAME);
    longname[FEDC_MAX_NAME] = '\0';
    CHECK_STATUS(fedc_params_add(p, longname, FEDC_F32, 1, s5, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "a 256-byte name");
    longname[FEDC_MAX_NAME - 1] = '\0';
    CHECK_STATUS(fedc_params_add(p, longname, FEDC_F32, 1, s5, NULL, NULL, err, sizeof err), FEDC_OK,
                 "a 255-byte name is the longest allowed");
    const int bad_dtypes[] = {0, 9, -1, 100};
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof bad_dtypes[0]; i++) {
        err[0] = '\0';
        CHECK_STATUS(fedc_params_add(p, "bad", (fedc_dtype)bad_dtypes[i], 1, s5, NULL, NULL, err, sizeof err),
                     FEDC_ERR_INVALID, "bad dtype");
        CHECK_CONTAINS(err, "'bad'", "bad dtype message names the tensor");
    }
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_STATUS(fedc_params_add(p, "bad", FEDC_F32, 9, s9, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "9 dimensions");
    CHECK_STATUS(fedc_params_add(p, "bad", FEDC_F32, -1, s9, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "-1 dimensions");
    CHECK_STATUS(fedc_params_add(p, "ok8", FEDC_F32, 8, s9, NULL, NULL, err, sizeof err), FEDC_OK,
                 "8 dimensions are allowed");
    const int64_t neg[2] = {3, -2};
    CHECK_STATUS(fedc_params_add(p, "bad", FEDC_F32, 2, neg, NULL, NULL, err, sizeof err), FEDC_ERR_INVALID,
                 "negative dimension");
    CHECK_CONTAINS(err, "-2", "negative dimension message");
    const int64_t huge[3] = {INT64_MAX, INT64_MAX, 2};
    CHECK_STATUS(fedc_params_add(p, "bad", FEDC_F32, 3, huge, NULL, NULL, err, sizeof err),
                 FEDC_ERR_TOO_LARGE, "overflowing size");
    CHECK(fedc_params_count(p) == 6 && fedc_params_find(p, "bad") == NULL,
          "refused tensors are not added (count %zu)", fedc_params_count(p));

    /* Lookup by name and by index, in insertion order. */
    CHECK(fedc_params_find(p, "scalar") == fedc_params_at(p, 2), "find = at(2)");
    CHECK(fedc_params_find(p, "nope") == NULL && fedc_params_find(p, NULL) == NULL &&
              fedc_params_find(NULL, "w") == NULL,
          "find of a missing name");
    CHECK(fedc_params_at(p, 6) == NULL && fedc_params_at(NULL, 0) == NULL, "at out of range");
    CHECK(!strcmp(fedc_params_at(p, 0)->name, "w") && !strcmp(fedc_params_at(p, 3)->name, "empty"),
          "insertion order");

    /* Growth past the first allocation keeps every tensor intact. */
    char name[32];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "grow%d", i);
        float v = (float)i;
        int64_t one = 1;
        fedc_params_add(p, name, FEDC_F32, 1, &one, &v, NULL, err, sizeof err);
    }
    int grown = fedc_params_count(p) == 46;
    for (int i = 0; i < 40 && grown; i++) {
        snprintf(name, sizeof name, "grow%d", i);
        const fedc_tensor *g = fedc_params_find(p, name);
        if (!g || *(float *)g->data != (float)i) grown = 0;
    }
    CHECK(grown && !memcmp(fedc_params_find(p, "w")->data, w, sizeof w), "46 tensors after growth");
    fedc_params_destroy(p);
    fedc_params_destroy(NULL);
}

static fedc_params *make_set(float first)
{
    fedc_params *p = fedc_params_create();
    const int64_t a[2] = {200, 784}, b[1] = {200};
    fedc_tensor *t;
    if (!p || fedc_params_add(p, "fc1.weight", FEDC_F32, 2, a, NULL, &t, NULL, 0) ||
        fedc_params_add(p, "fc1.bias", FEDC_F32, 1, b, NULL, NULL, NULL, 0) ||
        fedc_params_add(p, "step", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0)) {
        fedc_params_destroy(p);
        return NULL;
    }
    float *v = t->data;
    for (int i = 0; i < 200 * 784; i++) v[i] = first + (float)i * 0.5f;
    return p;
}

static void test_clone_layout_copy(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *a = make_set(1.0f);
    CHECK(a != NULL, "make_set");
    if (!a) return;
    fedc_params *c = fedc_params_clone(a);
    CHECK(c && fedc_params_count(c) == 3, "clone has 3 tensors");
    if (!c) {
        fedc_params_destroy(a);
        return;
    }
    CHECK_STATUS(fedc_params_check_same_layout(a, c, err, sizeof err), FEDC_OK, "clone layout");
    int deep = 1;
    for (size_t i = 0; i < 3; i++) {
        const fedc_tensor *x = fedc_params_at(a, i), *y = fedc_params_at(c, i);
        if (x->data == y->data || x->name == y->name || memcmp(x->data, y->data, x->nbytes)) deep = 0;
    }
    CHECK(deep, "clone copies names and data");
    ((float *)fedc_params_at(c, 0)->data)[7] = -99.0f;
    CHECK(((float *)fedc_params_at(a, 0)->data)[7] == 4.5f, "changing the clone leaves the original");
    fedc_params *empty = fedc_params_create(), *ec = fedc_params_clone(empty);
    CHECK(ec && fedc_params_count(ec) == 0, "clone of an empty set");
    fedc_params_destroy(ec);

    /* copy_data restores the original values. */
    CHECK_STATUS(fedc_params_copy_data(c, a, err, sizeof err), FEDC_OK, "copy_data");
    CHECK(!memcmp(fedc_params_at(a, 0)->data, fedc_params_at(c, 0)->data, 200 * 784 * 4),
          "copy_data copies the bytes");

    /* Layout mismatches name the tensor and both layouts. */
    fedc_params *d = fedc_params_create();
    const int64_t small[2] = {100, 784}, b[1] = {200};
    fedc_params_add(d, "fc1.weight", FEDC_F32, 2, small, NULL, NULL, NULL, 0);
    fedc_params_add(d, "fc1.bias", FEDC_F32, 1, b, NULL, NULL, NULL, 0);
    fedc_params_add(d, "step", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0);
    err[0] = '\0';
    CHECK_STATUS(fedc_params_check_same_layout(a, d, err, sizeof err), FEDC_ERR_SHAPE, "shape mismatch");
    CHECK(!strcmp(err, "tensor 'fc1.weight': expected F32 [200, 784], got F32 [100, 784]"),
          "shape mismatch message: '%s'", err);
    err[0] = '\0';
    CHECK_STATUS(fedc_params_copy_data(d, a, err, sizeof err), FEDC_ERR_SHAPE, "copy_data between layouts");
    CHECK_CONTAINS(err, "fc1.weight", "copy_data mismatch message");

    fedc_params *e = fedc_params_create();
    const int64_t a2[2] = {200, 784};
    fedc_params_add(e, "fc1.weight", FEDC_F32, 2, a2, NULL, NULL, NULL, 0);
    fedc_params_add(e, "fc1.bias", FEDC_F64, 1, b, NULL, NULL, NULL, 0);
    fedc_params_add(e, "step", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_same_layout(a, e, err, sizeof err), FEDC_ERR_SHAPE, "dtype mismatch");
    CHECK(!strcmp(err, "tensor 'fc1.bias': expected F32 [200], got F64 [200]"),
          "dtype mismatch message: '%s'", err);

    fedc_params *f = fedc_params_create();
    fedc_params_add(f, "fc1.weight", FEDC_F32, 2, a2, NULL, NULL, NULL, 0);
    fedc_params_add(f, "fc2.bias", FEDC_F32, 1, b, NULL, NULL, NULL, 0);
    fedc_params_add(f, "step", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_same_layout(a, f, err, sizeof err), FEDC_ERR_SHAPE, "name mismatch");
    CHECK_CONTAINS(err, "'fc1.bias'", "name mismatch names the expected tensor");
    CHECK_CONTAINS(err, "'fc2.bias'", "name mismatch names the received tensor");
    CHECK_CONTAINS(err, "[200]", "name mismatch gives the shapes");

    fedc_params *g = fedc_params_create();
    fedc_params_add(g, "fc1.weight", FEDC_F32, 2, a2, NULL, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_same_layout(a, g, err, sizeof err), FEDC_ERR_SHAPE, "fewer tensors");
    CHECK(!strcmp(err, "expected 3 tensors, got 1"), "count mismatch message: '%s'", err);
    CHECK_STATUS(fedc_params_check_same_layout(g, a, err, sizeof err), FEDC_ERR_SHAPE, "more tensors");
    CHECK(!strcmp(err, "expected 1 tensors, got 3"), "count mismatch message: '%s'", err);

    /* A different rank is a mismatch even when the element count agrees. */
    fedc_params *h = fedc_params_create();
    const int64_t flat[1] = {200 * 784};
    fedc_params_add(h, "fc1.weight", FEDC_F32, 1, flat, NULL, NULL, NULL, 0);
    fedc_params_add(h, "fc1.bias", FEDC_F32, 1, b, NULL, NULL, NULL, 0);
    fedc_params_add(h, "step", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_same_layout(a, h, err, sizeof err), FEDC_ERR_SHAPE, "rank mismatch");
    CHECK(!strcmp(err, "tensor 'fc1.weight': expected F32 [200, 784], got F32 [156800]"),
          "rank mismatch message: '%s'", err);
    CHECK_STATUS(fedc_params_check_same_layout(empty, empty, err, sizeof err), FEDC_OK, "empty sets");

    fedc_params_destroy(a);
    fedc_params_destroy(c);
    fedc_params_destroy(d);
    fedc_params_destroy(e);
    fedc_params_destroy(f);
    fedc_params_destroy(g);
    fedc_params_destroy(h);
    fedc_params_destroy(empty);
}

static void test_check_finite(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    const int64_t n10[1] = {10};
    fedc_tensor *f32, *f64, *i32;
    fedc_params_add(p, "ints", FEDC_I32, 1, n10, NULL, &i32, NULL, 0);
    fedc_params_add(p, "layer.w", FEDC_F32, 1, n10, NULL, &f32, NULL, 0);
    fedc_params_add(p, "layer.b", FEDC_F64, 1, n10, NULL, &f64, NULL, 0);
    float *x = f32->data;
    double *y = f64->data;
    for (int i = 0; i < 10; i++) {
        x[i] = (float)i - 5.0f;
        y[i] = 1e300 * i;
        ((int32_t *)i32->data)[i] = INT32_MAX - i;
    }
    x[9] = 3.4028235e38f; /* FLT_MAX is finite */
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_OK, "finite values");

    x[3] = NAN;
    err[0] = '\0';
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE, "F32 NaN");
    CHECK(!strcmp(err, "tensor 'layer.w': element 3 is NaN"), "F32 NaN message: '%s'", err);
    x[3] = 0;
    x[7] = -INFINITY;
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE, "F32 -Inf");
    CHECK(!strcmp(err, "tensor 'layer.w': element 7 is Inf"), "F32 -Inf message: '%s'", err);
    x[7] = 0;
    y[9] = INFINITY;
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE, "F64 +Inf");
    CHECK(!strcmp(err, "tensor 'layer.b': element 9 is Inf"), "F64 Inf message: '%s'", err);
    y[9] = 0;
    y[0] = -NAN;
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE, "F64 NaN");
    CHECK(!strcmp(err, "tensor 'layer.b': element 0 is NaN"), "F64 NaN message: '%s'", err);
    y[0] = 0;
    CHECK_STATUS(fedc_params_check_finite(p, NULL, 0), FEDC_OK, "finite again, NULL buffer");
    fedc_params_destroy(p);
}

/* tensor.h promises NONFINITE for "any floating point element": F16 and
 * BF16 are floating-point dtypes of the library too. */
static void test_check_finite_half(void)
{
    char err[FEDC_ERRMSG_MAX];
    const int64_t n4[1] = {4};
    /* F16: 0x3c00 = 1.0, 0x7c00 = +Inf, 0x7e00 = NaN. BF16: 0x3f80 = 1.0,
     * 0x7f80 = +Inf, 0x7fc0 = NaN. */
    const uint16_t f16_ok[4] = {0x3c00, 0x0000, 0xbc00, 0x7bff};
    const uint16_t f16_nan[4] = {0x3c00, 0x7e00, 0x3c00, 0x3c00};
    const uint16_t bf16_inf[4] = {0x3f80, 0x3f80, 0x7f80, 0x3f80};
    fedc_params *p = fedc_params_create();
    fedc_params_add(p, "h", FEDC_F16, 1, n4, f16_ok, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_OK, "finite F16 values");
    fedc_params_destroy(p);

    p = fedc_params_create();
    fedc_params_add(p, "h", FEDC_F16, 1, n4, f16_nan, NULL, NULL, 0);
    err[0] = '\0';
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE,
                 "F16 NaN (tensor.h: any floating point element)");
    fedc_params_destroy(p);

    p = fedc_params_create();
    fedc_params_add(p, "bh", FEDC_BF16, 1, n4, bf16_inf, NULL, NULL, 0);
    CHECK_STATUS(fedc_params_check_finite(p, err, sizeof err), FEDC_ERR_NONFINITE,
                 "BF16 +Inf (tensor.h: any floating point element)");
    fedc_params_destroy(p);
}

int main(int argc, char **argv)
{
    if (test_selected(argc, argv, "main")) {
        test_dtypes();
        test_add_find();
        test_clone_layout_copy();
        test_check_finite();
    }
    if (test_selected(argc, argv, "half")) test_check_finite_half();
    return test_summary();
}
