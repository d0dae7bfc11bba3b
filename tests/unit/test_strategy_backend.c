/*
 * The accumulator's device routing (src/strategy/fedavg.c), on any machine:
 * a fake device backend that keeps its sums in host memory, computing
 * exactly what the CUDA kernels compute, stands in for the GPU. A CPU
 * accumulator and one on the fake device are fed the same updates by every
 * route (host chunks, several "resident" updates per call, rejected
 * updates, unfold, finalize) and must agree bit for bit, with the same
 * error messages. Device failures must reach the caller and stick.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/tensor.h"
#include "strategy/fedavg.h"
#include "test_util.h"

typedef struct fake {
    size_t ntensors;
    size_t *numel;
    uint64_t **sums;
    int status;         /* sticky FEDC_ERR_DEVICE */
    int fail_in;        /* the fail_in-th operation from now fails (0: none) */
    int lie;            /* fold reports a bad value where there is none */
    int calls_resident; /* fold_resident calls */
    char msg[FEDC_ERRMSG_MAX];
} fake;

/* round_to_nearest_even(x * scale) as __double2ll_rn does for the values
 * that pass the check; others only need to be deterministic. */
static uint64_t fixed_point(float x, double scale)
{
    return (uint64_t)llrint((double)x * scale);
}

static int fake_enter(fake *f, char *err, size_t errlen)
{
    if (!f->status && f->fail_in && --f->fail_in == 0) {
        f->status = FEDC_ERR_DEVICE;
        snprintf(f->msg, sizeof f->msg, "fake: the device fell off the bus");
    }
    if (f->status) return fedc_set_error(err, errlen, f->status, "%s", f->msg);
    return FEDC_OK;
}

static int fake_reset(void *ctx, char *err, size_t errlen)
{
    fake *f = ctx;
    int rc = fake_enter(f, err, errlen);
    if (rc) return rc;
    for (size_t t = 0; t < f->ntensors; t++) memset(f->sums[t], 0, f->numel[t] * sizeof(uint64_t));
    return FEDC_OK;
}

static int fake_fold_host(void *ctx, size_t ti, size_t offset, const float *x, size_t n, double scale,
                          float lim, int subtract, int *bad, char *err, size_t errlen)
{
    fake *f = ctx;
    int rc = fake_enter(f, err, errlen);
    if (rc) return rc;
    if (ti >= f->ntensors || offset > f->numel[ti] || n > f->numel[ti] - offset)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    int b = 0;
    for (size_t i = 0; i < n; i++) {
        b |= !(fabsf(x[i]) <= lim);
        uint64_t q = fixed_point(x[i], scale);
        f->sums[ti][offset + i] = subtract ? f->sums[ti][offset + i] - q : f->sums[ti][offset + i] + q;
    }
    if (bad) *bad = b || f->lie;
    return FEDC_OK;
}

static int fake_fold_resident(void *ctx, size_t ti, const float *const *x, const double *scale,
                              const float *lim, size_t k, int subtract, int *bad, char *err, size_t errlen)
{
    fake *f = ctx;
    f->calls_resident++;
    int any = 0;
    for (size_t j = 0; j < k; j++) {
        int b = 0;
        int rc = fake_fold_host(ctx, ti, 0, x[j], f->numel[ti], scale[j], lim[j], subtract, &b, err, errlen);
        if (rc) return rc;
        any |= b;
    }
    if (bad) *bad = any;
    return FEDC_OK;
}

static int fake_find_bad(void *ctx, size_t ti, const float *x, float lim, int *found, size_t *index,
                         float *value, char *err, size_t errlen)
{
    fake *f = ctx;
    *found = 0;
    int rc = fake_enter(f, err, errlen);
    if (rc) return rc;
    for (size_t i = 0; i < f->numel[ti]; i++)
        if (!(fabsf(x[i]) <= lim)) {
            *found = 1;
            *index = i;
            *value = x[i];
            break;
        }
    return FEDC_OK;
}

static int fake_finalize(void *ctx, double denom, float *const *out, int on_device, char *err, size_t errlen)
{
    fake *f = ctx;
    int rc = fake_enter(f, err, errlen);
    if (rc) return rc;
    for (size_t t = 0; t < f->ntensors; t++)
        for (size_t i = 0; i < f->numel[t]; i++) out[t][i] = (float)((double)(int64_t)f->sums[t][i] / denom);
    return FEDC_OK;
}

static int fake_read_sums(void *ctx, size_t ti, int64_t *out, char *err, size_t errlen)
{
    fake *f = ctx;
    int rc = fake_enter(f, err, errlen);
    if (rc) return rc;
    if (f->numel[ti]) memcpy(out, f->sums[ti], f->numel[ti] * sizeof *out);
    return FEDC_OK;
}

static int fake_status(void *ctx, char *err, size_t errlen)
{
    fake *f = ctx;
    if (f->status) return fedc_set_error(err, errlen, f->status, "%s", f->msg);
    return FEDC_OK;
}

static void fake_destroy(void *ctx)
{
    fake *f = ctx;
    for (size_t t = 0; t < f->ntensors; t++) free(f->sums[t]);
    free(f->sums);
    free(f->numel);
    free(f);
}

static const fedc__fedavg_backend fake_ops = {fake_reset,    fake_fold_host, fake_fold_resident,
                                              fake_find_bad, fake_finalize,  fake_read_sums,
                                              fake_status,   fake_destroy};

/* A CPU accumulator moved onto the fake device: its host sums stay
 * allocated but unused. */
static fake *install_fake(fedc__fedavg *a)
{
    fake *f = calloc(1, sizeof *f);
    f->ntensors = a->ntensors;
    f->numel = calloc(a->ntensors, sizeof *f->numel);
    f->sums = calloc(a->ntensors, sizeof *f->sums);
    for (size_t t = 0; t < a->ntensors; t++) {
        f->numel[t] = a->numel[t];
        f->sums[t] = calloc(a->numel[t] ? a->numel[t] : 1, sizeof(uint64_t));
    }
    a->backend = &fake_ops;
    a->backend_ctx = f;
    a->device.type = FEDC_DEVICE_CUDA;
    return f;
}

enum { NT = 3, NU = 6 };
static const int64_t sizes[NT] = {1001, 7, 0};

static int same_sums(const fedc__fedavg *cpu, const fedc__fedavg *dev)
{
    for (size_t t = 0; t < NT; t++) {
        int64_t s[1001];
        if (fedc__fedavg_read_sums(dev, t, s, NULL, 0) ||
            (cpu->numel[t] && memcmp(s, cpu->acc[t], cpu->numel[t] * sizeof *s)))
            return 0;
    }
    return 1;
}

int main(void)
{
    char ec[FEDC_ERRMSG_MAX] = "", ed[FEDC_ERRMSG_MAX] = "";
    fedc_params *layout = fedc_params_create();
    const char *names[NT] = {"w", "b", "e"};
    for (int t = 0; t < NT; t++)
        fedc_params_add(layout, names[t], FEDC_F32, 1, &sizes[t], NULL, NULL, NULL, 0);
    fedc__fedavg cpu, dev;
    CHECK_STATUS(fedc__fedavg_init(&cpu, layout, 8, ec, sizeof ec), FEDC_OK, "cpu init");
    CHECK_STATUS(fedc__fedavg_init(&dev, layout, 8, ed, sizeof ed), FEDC_OK, "dev init");
    fake *f = install_fake(&dev);

    float *x[NU][NT];
    double w[NU] = {1, 3, 1000, 77, 5, 4294967291ull};
    fedc_rng r;
    fedc_rng_seed(&r, 5);
    for (int u = 0; u < NU; u++)
        for (int t = 0; t < NT; t++) {
            x[u][t] = malloc((sizes[t] ? (size_t)sizes[t] : 1) * sizeof(float));
            for (int64_t i = 0; i < sizes[t]; i++)
                x[u][t][i] = (float)(fedc_rng_normal(&r) * (w[u] > 1000000 ? 1e-4 : 0.05));
        }

    /* Host chunks at odd offsets, updates 0..2. */
    int rc1 = FEDC_OK, rc2 = FEDC_OK;
    for (int u = 0; u < 3; u++) {
        for (size_t t = 0; t < NT; t++)
            for (size_t off = 0, len = 1; off < (size_t)sizes[t]; off += len, len = len * 3 + 1) {
                if (len > (size_t)sizes[t] - off) len = (size_t)sizes[t] - off;
                rc1 |= fedc__fedavg_check_fold(&cpu, t, off, x[u][t] + off, len, w[u], ec, sizeof ec);
                rc2 |= fedc__fedavg_check_fold(&dev, t, off, x[u][t] + off, len, w[u], ed, sizeof ed);
            }
        fedc__fedavg_commit(&cpu, w[u]);
        fedc__fedavg_commit(&dev, w[u]);
    }
    CHECK(rc1 == FEDC_OK && rc2 == FEDC_OK && same_sums(&cpu, &dev), "host chunks: the same sums");

    /* Updates 3..5 "resident", one call per tensor. */
    for (size_t t = 0; t < NT; t++) {
        const float *p[3] = {x[3][t], x[4][t], x[5][t]};
        rc1 |= fedc__fedavg_check_fold_device(&cpu, t, p, w + 3, 3, ec, sizeof ec);
        rc2 |= fedc__fedavg_check_fold_device(&dev, t, p, w + 3, 3, ed, sizeof ed);
    }
    for (int u = 3; u < NU; u++) {
        fedc__fedavg_commit(&cpu, w[u]);
        fedc__fedavg_commit(&dev, w[u]);
    }
    CHECK(rc1 == FEDC_OK && rc2 == FEDC_OK && same_sums(&cpu, &dev) && f->calls_resident == NT,
          "resident updates: the same sums, one device call per tensor (%d)", f->calls_resident);

    /* A bad chunk: refused with the CPU's message, no trace. */
    float bad[5] = {0.1f, 0.2f, NAN, 0.3f, 0.4f};
    rc1 = fedc__fedavg_check_fold(&cpu, 0, 500, bad, 5, 9, ec, sizeof ec);
    rc2 = fedc__fedavg_check_fold(&dev, 0, 500, bad, 5, 9, ed, sizeof ed);
    CHECK(rc1 == FEDC_ERR_NONFINITE && rc2 == rc1 && !strcmp(ec, ed) && same_sums(&cpu, &dev),
          "NaN chunk: same refusal (%s / %s), no trace", ec, ed);

    /* A bad resident update among three: none stays; the first bad one is
     * named. */
    x[4][0][17] = 1e30f;
    x[5][0][3] = NAN;
    {
        const float *p[3] = {x[3][0], x[4][0], x[5][0]};
        rc1 = fedc__fedavg_check_fold_device(&cpu, 0, p, w + 3, 3, ec, sizeof ec);
        rc2 = fedc__fedavg_check_fold_device(&dev, 0, p, w + 3, 3, ed, sizeof ed);
    }
    CHECK(rc1 == FEDC_ERR_RANGE && rc2 == rc1 && !strcmp(ec, ed) &&
              strstr(ed, "update 1: tensor 'w' element 17") && same_sums(&cpu, &dev),
          "bad resident update: same refusal (%s / %s), no trace", ec, ed);
    {
        const double w0[2] = {1, 0};
        const float *p[2] = {x[3][0], x[4][0]};
        rc1 = fedc__fedavg_check_fold_device(&cpu, 0, p, w0, 2, ec, sizeof ec);
        rc2 = fedc__fedavg_check_fold_device(&dev, 0, p, w0, 2, ed, sizeof ed);
        CHECK(rc1 == FEDC_ERR_RANGE && rc2 == rc1 && !strcmp(ec, ed) && strstr(ed, "update 1: weight 0"),
              "weight 0 among resident updates: same refusal (%s / %s)", ec, ed);
        rc1 = fedc__fedavg_check_fold_device(&cpu, NT, p, w0, 2, ec, sizeof ec);
        rc2 = fedc__fedavg_check_fold_device(&dev, NT, p, w0, 2, ed, sizeof ed);
        CHECK(rc1 == FEDC_ERR_INVALID && rc2 == rc1, "no such tensor: FEDC_ERR_INVALID");
        CHECK_STATUS(fedc__fedavg_check_fold_device(&dev, 0, p, w0, 0, ed, sizeof ed), FEDC_OK, "k = 0");
    }

    /* Unfold, fold. */
    fedc__fedavg_fold(&cpu, 0, 3, x[0][0], 900, 11);
    fedc__fedavg_fold(&dev, 0, 3, x[0][0], 900, 11);
    int same = same_sums(&cpu, &dev);
    fedc__fedavg_unfold(&cpu, 0, 3, x[0][0], 900, 11);
    fedc__fedavg_unfold(&dev, 0, 3, x[0][0], 900, 11);
    CHECK(same && same_sums(&cpu, &dev), "fold and unfold: the same sums after each");

    /* Finalize, to host parameters and to "device" buffers. */
    fedc_params *oc = fedc_params_clone(layout), *od = fedc_params_clone(layout);
    rc1 = fedc__fedavg_finalize(&cpu, oc, ec, sizeof ec);
    rc2 = fedc__fedavg_finalize(&dev, od, ed, sizeof ed);
    same = rc1 == FEDC_OK && rc2 == FEDC_OK;
    for (size_t t = 0; same && t < NT; t++)
        same = !memcmp(fedc_params_at(oc, t)->data, fedc_params_at(od, t)->data,
                       (size_t)sizes[t] * sizeof(float));
    CHECK(same, "finalize: bit-identical");
    float o0[1001], o1[7], o2[1];
    float *outs[NT] = {o0, o1, o2};
    rc2 = fedc__fedavg_finalize_device(&dev, outs, ed, sizeof ed);
    rc1 = fedc__fedavg_finalize_device(&cpu, outs, ec, sizeof ec);
    CHECK(rc1 == FEDC_OK && rc2 == FEDC_OK && !memcmp(o0, fedc_params_at(oc, 0)->data, sizeof o0) &&
              !memcmp(o1, fedc_params_at(oc, 1)->data, sizeof o1),
          "finalize_device: bit-identical");

    /* A device that flags a bad value the host check cannot find: an
     * error, and the values are taken back out. */
    f->lie = 1;
    rc2 = fedc__fedavg_check_fold(&dev, 1, 0, x[0][1], 7, 2, ed, sizeof ed);
    f->lie = 0;
    CHECK(rc2 == FEDC_ERR_DEVICE && strstr(ed, "host check accepts") && same_sums(&cpu, &dev),
          "a device check that disagrees with the host is FEDC_ERR_DEVICE: %s", ed);

    /* A device failure in a call that returns nothing (reset) sticks: the
     * status and every later call report it. */
    CHECK_STATUS(fedc__fedavg_status(&dev, ed, sizeof ed), FEDC_OK, "status before the failure");
    f->fail_in = 1;
    fedc__fedavg_reset(&dev, 8);
    CHECK(fedc__fedavg_status(&dev, ed, sizeof ed) == FEDC_ERR_DEVICE && strstr(ed, "fell off"),
          "a failed reset is reported by status: %s", ed);
    CHECK_STATUS(fedc__fedavg_check_fold(&dev, 0, 0, x[0][0], 4, 1, ed, sizeof ed), FEDC_ERR_DEVICE,
                 "check_fold after the failure");
    CHECK_STATUS(fedc__fedavg_finalize(&dev, od, ed, sizeof ed), FEDC_ERR_DEVICE,
                 "finalize after the failure");
    {
        const float *p[1] = {x[0][0]};
        CHECK_STATUS(fedc__fedavg_check_fold_device(&dev, 0, p, w, 1, ed, sizeof ed), FEDC_ERR_DEVICE,
                     "check_fold_device after the failure");
    }
    CHECK_STATUS(fedc__fedavg_status(&cpu, ec, sizeof ec), FEDC_OK, "a CPU accumulator never fails");

    fedc_params_destroy(oc);
    fedc_params_destroy(od);
    for (int u = 0; u < NU; u++)
        for (int t = 0; t < NT; t++) free(x[u][t]);
    fedc__fedavg_free(&cpu);
    fedc__fedavg_free(&dev);
    fedc_params_destroy(layout);
    return test_summary();
}
