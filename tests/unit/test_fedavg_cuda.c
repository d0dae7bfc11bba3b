/*
 * FedAvg's GPU accumulator against the CPU one (src/cuda/fedavg_cuda.cu
 * behind src/strategy/fedavg.c).
 *
 * On every machine it first checks the error path: an accumulator asked
 * for on a GPU that cannot be used (a build without CUDA, no driver, no
 * such GPU) is FEDC_ERR_DEVICE naming the reason. Without a usable GPU it
 * then prints "SKIP: <reason>" and exits 77, which CTest counts as
 * skipped.
 *
 * With a GPU, a CPU and a GPU accumulator are fed the same updates (seven
 * tensors of odd sizes, 3.5 million values in all, weights from 1 to
 * 2^32) by every route the server and a GPU simulation use: host chunks at
 * odd offsets, whole updates already on the GPU folded several at a time,
 * rejected updates (a NaN in the last chunk, an out-of-range value, a bad
 * update among many on the GPU), unfold, reset and finalize. After each
 * step the GPU's sums must be bit-identical to the CPU's (memcmp), its
 * error messages identical, and its finalized model bit-identical.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FEDC_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "fedc/tensor.h"
#include "strategy/fedavg.h"
#include "test_util.h"

/* CTest's SKIP_RETURN_CODE for this test. */
#define SKIPPED 77

/* CHECK, and one line saying what passed. */
#define CHECK_LINE(cond, ...)                                                                                \
    do {                                                                                                     \
        int line_ok_ = (cond);                                                                               \
        CHECK(line_ok_, __VA_ARGS__);                                                                        \
        if (line_ok_) {                                                                                      \
            printf("ok: ");                                                                                  \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
            fflush(stdout);                                                                                  \
        }                                                                                                    \
    } while (0)

enum { NTENSORS = 7 };
/* Odd sizes, none a multiple of a block or of 4; "d" is larger than the
 * GPU's staging buffer (2^20 values), "f" is empty. */
static const char *const tensor_names[NTENSORS] = {"a", "b", "c", "d", "e", "f", "g"};
static const int64_t tensor_sizes[NTENSORS] = {1, 3, 1000003, 2500001, 4099, 0, 777};

static fedc_params *make_layout(void)
{
    fedc_params *p = fedc_params_create();
    for (int t = 0; p && t < NTENSORS; t++) {
        int64_t shape[1] = {tensor_sizes[t]};
        if (fedc_params_add(p, tensor_names[t], FEDC_F32, 1, shape, NULL, NULL, NULL, 0)) {
            fedc_params_destroy(p);
            return NULL;
        }
    }
    return p;
}

/*
 * The error path, on every machine. Returns 1 when cuda:0 can be used;
 * otherwise 0 with the reason in `reason`.
 */
static int check_error_path(const fedc_params *layout, char *reason, size_t reasonlen)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__fedavg a;
    fedc_device cpu = {FEDC_DEVICE_CPU, 0}, gpu = {FEDC_DEVICE_CUDA, 0}, far = {FEDC_DEVICE_CUDA, 1023};

    int rc = fedc__fedavg_init_on(&a, layout, 4, cpu, err, sizeof err);
    CHECK_LINE(rc == FEDC_OK && a.backend == NULL && a.acc != NULL && a.ntensors == NTENSORS &&
                   a.device.type == FEDC_DEVICE_CPU,
               "init_on(cpu) makes a host accumulator (rc %d)", rc);
    fedc__fedavg_free(&a);

    err[0] = '\0';
    rc = fedc__fedavg_init_on(&a, layout, 4, far, err, sizeof err);
    CHECK_LINE(rc == FEDC_ERR_DEVICE && strstr(err, "cuda:1023") && a.ntensors == 0 && a.acc == NULL &&
                   a.backend == NULL,
               "init_on(cuda:1023) is FEDC_ERR_DEVICE naming the GPU and leaves nothing allocated: %s", err);
    fedc__fedavg_free(&a); /* harmless on a refused accumulator */

    if (!fedc_device_cuda_built()) {
        err[0] = '\0';
        rc = fedc__fedavg_init_on(&a, layout, 4, gpu, err, sizeof err);
        CHECK_LINE(rc == FEDC_ERR_DEVICE && strstr(err, "no CUDA backend"),
                   "without the CUDA backend init_on(cuda:0) is FEDC_ERR_DEVICE saying so: %s", err);
        snprintf(reason, reasonlen, "this build of fedc has no CUDA backend (configure with -DFEDC_CUDA=ON)");
        return 0;
    }
    char why[FEDC_ERRMSG_MAX] = "", name[256] = "";
    if (fedc_device_check(gpu, name, sizeof name, why, sizeof why) != FEDC_OK) {
        err[0] = '\0';
        rc = fedc__fedavg_init_on(&a, layout, 4, gpu, err, sizeof err);
        CHECK_LINE(rc == FEDC_ERR_DEVICE && !strcmp(err, why) && a.backend == NULL,
                   "without a usable GPU init_on(cuda:0) is FEDC_ERR_DEVICE with the reason: %s", err);
        snprintf(reason, reasonlen, "%s", why);
        return 0;
    }
    printf("GPU: cuda:0 is %s\n", name);
    return 1;
}

#ifdef FEDC_HAVE_CUDA

enum { NUPDATES = 24, NHOST = 6 }; /* updates 0..5 arrive as host chunks, the rest lie on the GPU */

typedef struct fixture {
    fedc_params *layout;
    fedc__fedavg cpu, gpu;
    float *host[NUPDATES][NTENSORS]; /* the updates' values */
    float *dev[NUPDATES][NTENSORS];  /* their copies on the GPU (from NHOST on) */
    void *dev_alloc[NUPDATES][NTENSORS];
    double weight[NUPDATES];
    size_t numel[NTENSORS];
} fixture;

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 1;
    CHECK(0, "%s: %s", what, cudaGetErrorString(e));
    return 0;
}

/* Compares every sum of the GPU accumulator with the CPU's; on a
 * difference, prints the first one. */
static int sums_equal(const fedc__fedavg *cpu, const fedc__fedavg *gpu)
{
    char err[FEDC_ERRMSG_MAX];
    for (size_t t = 0; t < cpu->ntensors; t++) {
        size_t n = cpu->numel[t];
        int64_t *s = malloc((n ? n : 1) * sizeof *s);
        if (!s || fedc__fedavg_read_sums(gpu, t, s, err, sizeof err)) {
            printf("  cannot read the GPU sums of tensor %zu: %s\n", t, s ? err : "out of memory");
            free(s);
            return 0;
        }
        if (n && memcmp(s, cpu->acc[t], n * sizeof *s)) {
            for (size_t i = 0; i < n; i++)
                if (s[i] != cpu->acc[t][i]) {
                    printf("  tensor '%s' element %zu: GPU %lld, CPU %lld\n", cpu->names[t], i,
                           (long long)s[i], (long long)cpu->acc[t][i]);
                    break;
                }
            free(s);
            return 0;
        }
        free(s);
    }
    return cpu->updates == gpu->updates && cpu->weight_sum == gpu->weight_sum;
}

/* Chunk lengths at odd boundaries: single values, a prime, lengths above
 * the GPU's 2^20-value staging buffer, and random ones. */
static size_t next_chunk(fedc_rng *r, size_t left, int k)
{
    static const size_t fixed[] = {1, 7, 65537, 1048577, 3, 2097155};
    size_t len = k < (int)(sizeof fixed / sizeof fixed[0]) ? fixed[k] : 1 + fedc_rng_below(r, 1500000);
    return len < left ? len : left;
}

/* Checks and folds update u into both accumulators chunk by chunk, as the
 * server does when it arrives. */
static int fold_host_chunks(fixture *f, fedc_rng *r, size_t u)
{
    char ec[FEDC_ERRMSG_MAX], eg[FEDC_ERRMSG_MAX];
    for (size_t t = 0; t < NTENSORS; t++) {
        int k = 0;
        for (size_t off = 0; off < f->numel[t];) {
            size_t len = next_chunk(r, f->numel[t] - off, k++);
            int rc1 = fedc__fedavg_check_fold(&f->cpu, t, off, f->host[u][t] + off, len, f->weight[u], ec,
                                              sizeof ec);
            int rc2 = fedc__fedavg_check_fold(&f->gpu, t, off, f->host[u][t] + off, len, f->weight[u], eg,
                                              sizeof eg);
            if (rc1 || rc2) {
                CHECK(0, "update %zu tensor %zu chunk at %zu: CPU %d (%s), GPU %d (%s)", u, t, off, rc1,
                      rc1 ? ec : "", rc2, rc2 ? eg : "");
                return 0;
            }
            off += len;
        }
    }
    fedc__fedavg_commit(&f->cpu, f->weight[u]);
    fedc__fedavg_commit(&f->gpu, f->weight[u]);
    return 1;
}

/* Fills update u: N(0, sd) values, with sd small enough for its weight. */
static void fill_update(fixture *f, fedc_rng *r, size_t u, double sd)
{
    for (size_t t = 0; t < NTENSORS; t++)
        for (size_t i = 0; i < f->numel[t]; i++) f->host[u][t][i] = (float)(sd * fedc_rng_normal(r));
}

static int setup(fixture *f)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_device gpu = {FEDC_DEVICE_CUDA, 0};
    f->layout = make_layout();
    if (!f->layout) return 0;
    for (size_t t = 0; t < NTENSORS; t++) f->numel[t] = (size_t)tensor_sizes[t];
    int rc = fedc__fedavg_init(&f->cpu, f->layout, 32, err, sizeof err);
    CHECK(rc == FEDC_OK, "CPU init: %s", err);
    if (rc) return 0;
    rc = fedc__fedavg_init_on(&f->gpu, f->layout, 32, gpu, err, sizeof err);
    CHECK_LINE(rc == FEDC_OK && f->gpu.backend != NULL && f->gpu.acc != NULL && f->gpu.acc[0] == NULL &&
                   f->gpu.device.type == FEDC_DEVICE_CUDA,
               "init_on(cuda:0) makes a GPU accumulator (rc %d%s%s)", rc, rc ? ": " : "", rc ? err : "");
    if (rc) return 0;

    /* Weights from 1 to the largest accepted, some whose products with
     * the values are inexact in double (so the GPU must round the product
     * exactly as the CPU does). */
    static const double w[NUPDATES] = {1, 3,      7,  1000,  123457, 4294967291ull, 1ull << 32, 65535,
                                         2, 999983, 31, 4096,  17,     4294967295u,   5,          77777,
                                         1, 262147, 9,  40000, 3,      1234567891,    8191,       100};
    fedc_rng r;
    fedc_rng_seed(&r, 20240611);
    for (size_t u = 0; u < NUPDATES; u++) {
        f->weight[u] = w[u];
        for (size_t t = 0; t < NTENSORS; t++) {
            f->host[u][t] = malloc((f->numel[t] ? f->numel[t] : 1) * sizeof(float));
            if (!f->host[u][t]) return 0;
        }
        /* The limit is about 2^27 / weight: weights near 2^32 get small
         * values, the others ordinary ones. */
        fill_update(f, &r, u, w[u] > (1ull << 24) ? 1e-4 : 0.05);
    }
    /* Edge values in update 0 (weight 1, scale 2^24), which arrives as
     * host chunks: halfway cases that round to even (0.5 -> 0, 1.5 -> 2,
     * 2.5 -> 2, and their negatives), subnormals, -0, and the limit the
     * check accepts for weight 1 (the float just below (2^51 - 1) / 2^24,
     * 2^27 - 8), on both signs. */
    float *c = f->host[0][2];
    const float edge[] = {0x1p-25f, 0x3p-25f, 0x5p-25f, -0x1p-25f, -0x3p-25f,    -0x5p-25f,
                          1e-40f,   -1e-45f,  -0.0f,    0.0f,      134217720.0f, -134217720.0f};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) c[1000 + 37 * i] = edge[i];
    /* Halfway cases in update 11 (weight 4096, on the GPU): x * 2^36 =
     * k + 1/2, in the four-wide path of tensor "c" (its last 3 values are
     * the kernel's tail) and in the unaligned tensor "e". */
    for (int i = 0; i < 13; i++) {
        float h = (float)((2 * i + 1) * (i % 2 ? -1 : 1)) * 0x1p-37f;
        f->host[11][2][999990 + i] = h;
        f->host[11][4][4086 + i] = h;
    }

    for (size_t u = NHOST; u < NUPDATES; u++)
        for (size_t t = 0; t < NTENSORS; t++) {
            /* Tensor "e" lies one float past a 16-byte boundary, so that
             * the GPU must take its unaligned path. */
            size_t pad = t == 4 ? 1 : 0;
            if (!cuda_ok(cudaMalloc(&f->dev_alloc[u][t], (f->numel[t] + pad + 1) * sizeof(float)),
                         "cudaMalloc"))
                return 0;
            f->dev[u][t] = (float *)f->dev_alloc[u][t] + pad;
            if (f->numel[t] && !cuda_ok(cudaMemcpy(f->dev[u][t], f->host[u][t], f->numel[t] * sizeof(float),
                                                   cudaMemcpyHostToDevice),
                                        "cudaMemcpy"))
                return 0;
        }
    return 1;
}

static void teardown(fixture *f)
{
    for (size_t u = 0; u < NUPDATES; u++)
        for (size_t t = 0; t < NTENSORS; t++) {
            free(f->host[u][t]);
            if (f->dev_alloc[u][t]) cuda_ok(cudaFree(f->dev_alloc[u][t]), "cudaFree");
        }
    fedc__fedavg_free(&f->cpu);
    fedc__fedavg_free(&f->gpu);
    fedc_params_destroy(f->layout);
}

/* Updates NHOST.. on the GPU (host copies for the CPU), tensor by tensor,
 * in calls of various sizes: 18 at once (a pass of 16 and one of 2), 1 and
 * 17, 5 and 13. */
static int fold_resident_updates(fixture *f)
{
    char ec[FEDC_ERRMSG_MAX], eg[FEDC_ERRMSG_MAX];
    const size_t k = NUPDATES - NHOST;
    for (size_t t = 0; t < NTENSORS; t++) {
        const float *hp[NUPDATES], *dp[NUPDATES];
        for (size_t j = 0; j < k; j++) {
            hp[j] = f->host[NHOST + j][t];
            dp[j] = f->dev[NHOST + j][t];
        }
        size_t split = t % 3 == 0 ? k : t % 3 == 1 ? 1 : 5;
        for (size_t j0 = 0; j0 < k; j0 = split, split = k) {
            int rc1 = fedc__fedavg_check_fold_device(&f->cpu, t, hp + j0, f->weight + NHOST + j0, split - j0,
                                                     ec, sizeof ec);
            int rc2 = fedc__fedavg_check_fold_device(&f->gpu, t, dp + j0, f->weight + NHOST + j0, split - j0,
                                                     eg, sizeof eg);
            if (rc1 || rc2) {
                CHECK(0, "tensor %zu updates %zu..%zu: CPU %d (%s), GPU %d (%s)", t, j0, split, rc1,
                      rc1 ? ec : "", rc2, rc2 ? eg : "");
                return 0;
            }
        }
    }
    for (size_t j = NHOST; j < NUPDATES; j++) {
        fedc__fedavg_commit(&f->cpu, f->weight[j]);
        fedc__fedavg_commit(&f->gpu, f->weight[j]);
    }
    return 1;
}

/* A host update whose value at (bad_t, bad_i) is `bad`, sent in chunks
 * until the one that holds it is refused; the chunks folded before are
 * then taken back out, as the server does. */
static void reject_host_update(fixture *f, const char *what, size_t bad_t, size_t bad_i, float bad, int want)
{
    char ec[FEDC_ERRMSG_MAX] = "", eg[FEDC_ERRMSG_MAX] = "";
    const uint64_t w = 9;
    float *x[NTENSORS];
    fedc_rng r;
    fedc_rng_seed(&r, 99 + bad_t);
    for (size_t t = 0; t < NTENSORS; t++) {
        x[t] = malloc((f->numel[t] ? f->numel[t] : 1) * sizeof(float));
        if (!x[t]) {
            CHECK(0, "out of memory");
            for (size_t i = 0; i < t; i++) free(x[i]);
            return;
        }
        for (size_t i = 0; i < f->numel[t]; i++) x[t][i] = (float)(0.05 * fedc_rng_normal(&r));
    }
    x[bad_t][bad_i] = bad;
    int rc1 = FEDC_OK, rc2 = FEDC_OK;
    size_t t = 0, off = 0;
    for (t = 0; t < NTENSORS && !rc1 && !rc2; t++) {
        int k = 0;
        for (off = 0; off < f->numel[t];) {
            size_t len = next_chunk(&r, f->numel[t] - off, k++);
            rc1 = fedc__fedavg_check_fold(&f->cpu, t, off, x[t] + off, len, w, ec, sizeof ec);
            rc2 = fedc__fedavg_check_fold(&f->gpu, t, off, x[t] + off, len, w, eg, sizeof eg);
            if (rc1 || rc2) break;
            off += len;
        }
        if (rc1 || rc2) break;
    }
    CHECK_LINE(rc1 == want && rc2 == want && !strcmp(ec, eg),
               "%s: refused by both with the same message (CPU %d, GPU %d): %s", what, rc1, rc2, eg);
    /* Tensors before t are complete; t is folded up to off. */
    for (size_t i = 0; i <= t && i < NTENSORS; i++) {
        size_t n = i < t ? f->numel[i] : off;
        fedc__fedavg_unfold(&f->cpu, i, 0, x[i], n, w);
        fedc__fedavg_unfold(&f->gpu, i, 0, x[i], n, w);
    }
    CHECK_LINE(sums_equal(&f->cpu, &f->gpu) && fedc__fedavg_status(&f->gpu, eg, sizeof eg) == FEDC_OK,
               "%s: after unfolding the chunks before it the sums are bit-identical", what);
    for (size_t i = 0; i < NTENSORS; i++) free(x[i]);
}

/* Copies the sums of the GPU accumulator, to prove a call left them
 * alone. */
static int64_t **snapshot(const fedc__fedavg *a)
{
    int64_t **s = calloc(a->ntensors, sizeof *s);
    for (size_t t = 0; s && t < a->ntensors; t++) {
        s[t] = malloc((a->numel[t] ? a->numel[t] : 1) * sizeof(int64_t));
        if (!s[t] || fedc__fedavg_read_sums(a, t, s[t], NULL, 0)) CHECK(0, "snapshot of tensor %zu", t);
    }
    return s;
}

static int same_as_snapshot(int64_t **s, const fedc__fedavg *a)
{
    int same = s != NULL;
    int64_t *now = NULL;
    for (size_t t = 0; same && t < a->ntensors; t++) {
        now = malloc((a->numel[t] ? a->numel[t] : 1) * sizeof(int64_t));
        same = now && s[t] && fedc__fedavg_read_sums(a, t, now, NULL, 0) == FEDC_OK &&
               !memcmp(now, s[t], a->numel[t] * sizeof(int64_t));
        free(now);
    }
    return same;
}

static void snapshot_free(int64_t **s, size_t n)
{
    for (size_t t = 0; s && t < n; t++) free(s[t]);
    free(s);
}

/* Sets value i of tensor ti of update u (one on the GPU), in both copies. */
static void set_value(fixture *f, size_t u, size_t ti, size_t i, float v)
{
    f->host[u][ti][i] = v;
    cuda_ok(cudaMemcpy(f->dev[u][ti] + i, &v, sizeof v, cudaMemcpyHostToDevice), "cudaMemcpy");
}

/* k updates on the GPU, one of them bad: nothing of any of them may stay. */
static void reject_resident(fixture *f, const char *what, size_t ti, size_t bad_u, size_t bad_i, float bad,
                            size_t bad_u2, size_t bad_i2, float bad2, int want)
{
    char ec[FEDC_ERRMSG_MAX] = "", eg[FEDC_ERRMSG_MAX] = "";
    const size_t k = NUPDATES - NHOST;
    const float *hp[NUPDATES], *dp[NUPDATES];
    for (size_t j = 0; j < k; j++) {
        hp[j] = f->host[NHOST + j][ti];
        dp[j] = f->dev[NHOST + j][ti];
    }
    const float keep1 = f->host[NHOST + bad_u][ti][bad_i], keep2 = f->host[NHOST + bad_u2][ti][bad_i2];
    set_value(f, NHOST + bad_u, ti, bad_i, bad);
    set_value(f, NHOST + bad_u2, ti, bad_i2, bad2);
    int64_t **before = snapshot(&f->gpu);
    int rc1 = fedc__fedavg_check_fold_device(&f->cpu, ti, hp, f->weight + NHOST, k, ec, sizeof ec);
    int rc2 = fedc__fedavg_check_fold_device(&f->gpu, ti, dp, f->weight + NHOST, k, eg, sizeof eg);
    CHECK_LINE(rc1 == want && rc2 == want && !strcmp(ec, eg),
               "%s: refused by both with the same message (CPU %d, GPU %d): %s", what, rc1, rc2, eg);
    CHECK_LINE(same_as_snapshot(before, &f->gpu) && sums_equal(&f->cpu, &f->gpu),
               "%s: none of the %zu updates is left in the sums", what, k);
    snapshot_free(before, f->gpu.ntensors);
    set_value(f, NHOST + bad_u2, ti, bad_i2, keep2);
    set_value(f, NHOST + bad_u, ti, bad_i, keep1);
}

/* Finalizes both accumulators, into host parameters and (for the GPU)
 * into device memory; every result must be bit-identical to the CPU's. */
static void compare_finalize(fixture *f, const char *what)
{
    char ec[FEDC_ERRMSG_MAX] = "", eg[FEDC_ERRMSG_MAX] = "";
    fedc_params *oc = fedc_params_clone(f->layout), *og = fedc_params_clone(f->layout);
    int rc1 = oc && og ? fedc__fedavg_finalize(&f->cpu, oc, ec, sizeof ec) : FEDC_ERR_NOMEM;
    int rc2 = oc && og ? fedc__fedavg_finalize(&f->gpu, og, eg, sizeof eg) : FEDC_ERR_NOMEM;
    int same = rc1 == FEDC_OK && rc2 == FEDC_OK;
    for (size_t t = 0; same && t < NTENSORS; t++)
        same = !memcmp(fedc_params_at(oc, t)->data, fedc_params_at(og, t)->data, f->numel[t] * sizeof(float));
    CHECK_LINE(same, "%s: finalize into host memory is bit-identical (CPU %d %s, GPU %d %s)", what, rc1, ec,
               rc2, eg);

    float *dout[NTENSORS] = {0};
    int ok = 1;
    for (size_t t = 0; t < NTENSORS; t++)
        ok = ok && cuda_ok(cudaMalloc((void **)&dout[t], (f->numel[t] ? f->numel[t] : 1) * sizeof(float)),
                           "cudaMalloc");
    rc2 = ok ? fedc__fedavg_finalize_device(&f->gpu, dout, eg, sizeof eg) : FEDC_ERR_NOMEM;
    same = rc1 == FEDC_OK && rc2 == FEDC_OK;
    for (size_t t = 0; same && t < NTENSORS; t++) {
        float *back = malloc((f->numel[t] ? f->numel[t] : 1) * sizeof(float));
        same = back && (f->numel[t] == 0 || cuda_ok(cudaMemcpy(back, dout[t], f->numel[t] * sizeof(float),
                                                               cudaMemcpyDeviceToHost),
                                                    "cudaMemcpy"));
        same = same && !memcmp(back, fedc_params_at(oc, t)->data, f->numel[t] * sizeof(float));
        free(back);
    }
    CHECK_LINE(same, "%s: finalize_device into GPU memory is bit-identical (GPU %d %s)", what, rc2,
               rc2 ? eg : "");
    for (size_t t = 0; t < NTENSORS; t++)
        if (dout[t]) cuda_ok(cudaFree(dout[t]), "cudaFree");
    fedc_params_destroy(oc);
    fedc_params_destroy(og);
}

static void run_gpu_checks(void)
{
    char ec[FEDC_ERRMSG_MAX] = "", eg[FEDC_ERRMSG_MAX] = "";
    fixture *f = calloc(1, sizeof *f);
    if (!f) {
        CHECK(0, "out of memory");
        return;
    }
    if (!setup(f)) {
        CHECK(0, "setup failed");
        teardown(f);
        free(f);
        return;
    }
    fedc_rng r;
    fedc_rng_seed(&r, 7);

    int ok = 1;
    for (size_t u = 0; ok && u < NHOST; u++) ok = fold_host_chunks(f, &r, u);
    CHECK_LINE(ok && sums_equal(&f->cpu, &f->gpu),
               "%d updates folded as host chunks at odd offsets: sums bit-identical", NHOST);

    ok = fold_resident_updates(f);
    CHECK_LINE(ok && sums_equal(&f->cpu, &f->gpu),
               "%d updates folded from GPU memory, several per pass: sums bit-identical", NUPDATES - NHOST);
    compare_finalize(f, "24 updates");

    /* Rejected host updates. */
    size_t last = f->numel[6] - 1; /* the last value of the last tensor */
    reject_host_update(f, "NaN in the last chunk", 6, last, NAN, FEDC_ERR_NONFINITE);
    reject_host_update(f, "3e30 in the middle of tensor 'd'", 3, 1500001, 3e30f, FEDC_ERR_RANGE);
    reject_host_update(f, "-Inf in tensor 'c'", 2, 77, -INFINITY, FEDC_ERR_NONFINITE);

    /* Rejected updates on the GPU: the first bad one (in the first pass of
     * 16) is reported, with its first bad element; a NaN in the second
     * pass; the last value of an unaligned tensor. */
    reject_resident(f, "GPU updates, 1e30 in update 3 and NaN in update 17", 2, 3, 5, 1e30f, 17, 999999, NAN,
                    FEDC_ERR_RANGE);
    reject_resident(f, "GPU updates, NaN in update 17 only", 2, 17, 1000002, NAN, 17, 1000002, NAN,
                    FEDC_ERR_NONFINITE);
    reject_resident(f, "GPU updates, Inf at the end of unaligned tensor 'e'", 4, 9, 4098, INFINITY, 9, 4098,
                    INFINITY, FEDC_ERR_NONFINITE);

    /* Host pointers are not GPU memory: refused before anything is folded. */
    {
        const float *hp[2] = {f->host[0][2], f->host[1][2]};
        int64_t **before = snapshot(&f->gpu);
        int rc = fedc__fedavg_check_fold_device(&f->gpu, 2, hp, f->weight, 2, eg, sizeof eg);
        CHECK_LINE(rc == FEDC_ERR_INVALID && same_as_snapshot(before, &f->gpu) &&
                       fedc__fedavg_status(&f->gpu, NULL, 0) == FEDC_OK,
                   "host pointers given as GPU updates: FEDC_ERR_INVALID, sums untouched: %s", eg);
        snapshot_free(before, f->gpu.ntensors);
        const double zero[2] = {7, 0};
        int rc1 = fedc__fedavg_check_fold_device(&f->cpu, 2, hp, zero, 2, ec, sizeof ec);
        const float *dp[2] = {f->dev[NHOST][2], f->dev[NHOST + 1][2]};
        rc = fedc__fedavg_check_fold_device(&f->gpu, 2, dp, zero, 2, eg, sizeof eg);
        CHECK_LINE(rc1 == FEDC_ERR_RANGE && rc == FEDC_ERR_RANGE && !strcmp(ec, eg) &&
                       sums_equal(&f->cpu, &f->gpu),
                   "weight 0 among GPU updates: refused by both with the same message: %s", eg);
    }

    /* Fold and unfold of a whole update, unchecked. */
    for (size_t t = 0; t < NTENSORS; t++) {
        fedc__fedavg_fold(&f->cpu, t, 0, f->host[2][t], f->numel[t], 1234);
        fedc__fedavg_fold(&f->gpu, t, 0, f->host[2][t], f->numel[t], 1234);
    }
    ok = sums_equal(&f->cpu, &f->gpu);
    for (size_t t = 0; t < NTENSORS; t++) {
        fedc__fedavg_unfold(&f->cpu, t, 0, f->host[2][t], f->numel[t], 1234);
        fedc__fedavg_unfold(&f->gpu, t, 0, f->host[2][t], f->numel[t], 1234);
    }
    CHECK_LINE(ok && sums_equal(&f->cpu, &f->gpu) && fedc__fedavg_status(&f->gpu, NULL, 0) == FEDC_OK,
               "fold then unfold of a whole update: bit-identical after each");
    compare_finalize(f, "after the rejections");

    /* A new round: reset, one update through fold_params, finalize. */
    fedc__fedavg_reset(&f->cpu, 4);
    fedc__fedavg_reset(&f->gpu, 4);
    int rc1 = fedc__fedavg_finalize(&f->cpu, NULL, ec, sizeof ec);
    int rc2 = fedc__fedavg_finalize(&f->gpu, NULL, eg, sizeof eg);
    CHECK_LINE(sums_equal(&f->cpu, &f->gpu) && rc1 == FEDC_ERR_INVALID && rc2 == FEDC_ERR_INVALID &&
                   !strcmp(ec, eg),
               "reset zeroes the sums; finalize with no update is refused by both: %s", eg);
    fedc_params *p = fedc_params_clone(f->layout);
    for (size_t t = 0; p && t < NTENSORS; t++)
        if (f->numel[t]) memcpy(fedc_params_at(p, t)->data, f->host[5][t], f->numel[t] * sizeof(float));
    if (p) {
        fedc__fedavg_fold_params(&f->cpu, p, 3);
        fedc__fedavg_fold_params(&f->gpu, p, 3);
        fedc__fedavg_commit(&f->cpu, 3);
        fedc__fedavg_commit(&f->gpu, 3);
    }
    CHECK_LINE(p && sums_equal(&f->cpu, &f->gpu),
               "after reset, fold_params of one update: sums bit-identical");
    compare_finalize(f, "one update after reset");
    fedc_params_destroy(p);

    teardown(f);
    free(f);
}

#endif /* FEDC_HAVE_CUDA */

int main(void)
{
    char reason[FEDC_ERRMSG_MAX] = "";
    fedc_params *layout = make_layout();
    CHECK(layout != NULL, "layout");
    int usable = layout && check_error_path(layout, reason, sizeof reason);
    fedc_params_destroy(layout);
    if (!usable) {
        if (test_failed_count || !test_passed_count) return test_summary();
        printf("SKIP: %s\n", reason);
        return SKIPPED;
    }
#ifdef FEDC_HAVE_CUDA
    run_gpu_checks();
#endif
    return test_summary();
}
