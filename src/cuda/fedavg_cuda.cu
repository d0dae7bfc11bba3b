/*
 * FedAvg's fixed-point sums on a GPU: the device side of
 * src/strategy/fedavg.c, behind its fedc__fedavg_backend interface.
 *
 * The results must be bit-identical to the CPU's, so every step is the same
 * IEEE operation in the same order:
 *   fold      sum += (uint64)llrint_even((double)x * scale), wrapping; the
 *             CPU rounds with the 1.5 * 2^52 trick, which equals
 *             __double2ll_rn for |x * scale| < 2^51, and the accumulator's
 *             bound keeps every accepted value below that. The product is
 *             __dmul_rn so that nvcc cannot contract anything into an FMA.
 *   check     !(fabsf(x) <= lim), NaN included, in the same pass.
 *   finalize  (float)((double)(int64)sum / denom), each step rounded to
 *             nearest even (__ll2double_rn, __ddiv_rn, __double2float_rn).
 * Values that fail the check are folded all the same and taken back out by
 * the caller: __double2ll_rn gives the same (meaningless) integer both
 * times, so wrapping arithmetic restores the sums exactly.
 *
 * Host values (the server's chunks as they arrive) go through two pinned
 * staging buffers, so that the copy of one piece into pinned memory
 * overlaps the transfer and fold of the previous one. Updates already on
 * the GPU are read kGroup at a time by one kernel that writes each sum
 * once, so a pass costs 4 bytes per update value plus 16 bytes per sum for
 * every kGroup updates.
 *
 * Every operation is synchronous: when it returns, its work on the GPU has
 * finished (its status says whether it went well).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "strategy/fedavg.h"

namespace
{

constexpr int kThreads = 256;
constexpr size_t kStageFloats = size_t(1) << 20; /* 4 MiB per staging buffer */
constexpr int kGroup = 16;                       /* updates per pass over the sums */
constexpr int kBlocksPerSm = 8;                  /* 2048 threads: a full SM */

struct agg_ctx {
    int device;
    int sms;
    size_t ntensors;
    size_t *numel;             /* host copy of the layout */
    unsigned long long **sums; /* per tensor, pointers into base */
    unsigned long long *base;  /* all sums, each tensor starting 32-byte aligned */
    size_t total;              /* elements in base */
    cudaStream_t stream;       /* blocking: ordered after the legacy default stream */
    float *h_stage[2];         /* pinned */
    float *d_stage[2];
    cudaEvent_t staged[2];                 /* recorded after the last work that used buffer b */
    int *d_bad, *h_bad;                    /* a check failed */
    unsigned long long *d_first, *h_first; /* first bad element */
    int status;                            /* sticky FEDC_ERR_DEVICE once the GPU failed */
    char msg[FEDC_ERRMSG_MAX];
};

/* The arguments of one multi-update pass, passed by value (kernel parameter
 * memory): K pointers, scales and limits. */
struct fold_args {
    const float *x[kGroup];
    double scale[kGroup];
    float lim[kGroup];
};

__device__ __forceinline__ unsigned long long fixed_point(float v, double scale)
{
    return (unsigned long long)__double2ll_rn(__dmul_rn((double)v, scale));
}

__device__ __forceinline__ int out_of_range(float v, float lim)
{
    return !(fabsf(v) <= lim);
}

/* One update's values, x[0 .. n) into acc[0 .. n). */
__global__ void fold_one_kernel(unsigned long long *__restrict__ acc, const float *__restrict__ x, size_t n,
                                double scale, float lim, int subtract, int *bad)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    int b = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float v = x[i];
        b |= out_of_range(v, lim);
        const unsigned long long q = fixed_point(v, scale);
        acc[i] = subtract ? acc[i] - q : acc[i] + q;
    }
    if (b && bad) atomicOr(bad, 1);
}

/* K whole updates of n values, four elements per thread: acc and every
 * g.x[j] are 16-byte aligned. The last n % 4 elements are done by the
 * first threads of the grid. */
template <int K>
__global__ void fold_many_vec4_kernel(unsigned long long *__restrict__ acc, size_t n, fold_args g,
                                      int subtract, int *bad)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t nv = n / 4;
    int b = 0;
    for (size_t v = tid; v < nv; v += stride) {
        /* All K loads are issued before any is used, so that each thread
         * has K * 16 bytes in flight. Update values are read once:
         * evict-first, so they do not push the sums out of L2. */
        float4 f[K];
#pragma unroll
        for (int j = 0; j < K; j++) f[j] = __ldcs(reinterpret_cast<const float4 *>(g.x[j]) + v);
        unsigned long long s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma unroll
        for (int j = 0; j < K; j++) {
            const double sc = g.scale[j];
            const float lim = g.lim[j];
            b |= out_of_range(f[j].x, lim) | out_of_range(f[j].y, lim) | out_of_range(f[j].z, lim) |
                 out_of_range(f[j].w, lim);
            s0 += fixed_point(f[j].x, sc);
            s1 += fixed_point(f[j].y, sc);
            s2 += fixed_point(f[j].z, sc);
            s3 += fixed_point(f[j].w, sc);
        }
        ulonglong2 *p = reinterpret_cast<ulonglong2 *>(acc) + 2 * v; /* elements 4v .. 4v+3 */
        ulonglong2 a0 = p[0], a1 = p[1];
        if (subtract) {
            a0.x -= s0;
            a0.y -= s1;
            a1.x -= s2;
            a1.y -= s3;
        } else {
            a0.x += s0;
            a0.y += s1;
            a1.x += s2;
            a1.y += s3;
        }
        p[0] = a0;
        p[1] = a1;
    }
    const size_t t = nv * 4 + tid;
    if (t < n) {
        unsigned long long s = 0;
#pragma unroll
        for (int j = 0; j < K; j++) {
            const float f = g.x[j][t];
            b |= out_of_range(f, g.lim[j]);
            s += fixed_point(f, g.scale[j]);
        }
        acc[t] = subtract ? acc[t] - s : acc[t] + s;
    }
    if (b && bad) atomicOr(bad, 1);
}

/* The same, one element per thread, for updates that are not 16-byte
 * aligned. */
template <int K>
__global__ void fold_many_kernel(unsigned long long *__restrict__ acc, size_t n, fold_args g, int subtract,
                                 int *bad)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    int b = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float f[K];
#pragma unroll
        for (int j = 0; j < K; j++) f[j] = __ldcs(g.x[j] + i);
        unsigned long long s = 0;
#pragma unroll
        for (int j = 0; j < K; j++) {
            b |= out_of_range(f[j], g.lim[j]);
            s += fixed_point(f[j], g.scale[j]);
        }
        acc[i] = subtract ? acc[i] - s : acc[i] + s;
    }
    if (b && bad) atomicOr(bad, 1);
}

/* The lowest index i < n with x[i] NaN or |x[i]| > lim, into *first (which
 * starts at ULLONG_MAX). */
__global__ void first_bad_kernel(const float *__restrict__ x, size_t n, float lim, unsigned long long *first)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (out_of_range(x[i], lim)) {
            atomicMin(first, (unsigned long long)i);
            break; /* this thread's later elements have higher indices */
        }
    }
}

__global__ void mean_kernel(const unsigned long long *__restrict__ acc, float *__restrict__ out, size_t n,
                            double denom)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = __double2float_rn(__ddiv_rn(__ll2double_rn((long long)acc[i]), denom));
}

/* Blocks for a grid-stride kernel over `items` work items: enough to fill
 * every SM, and no more than there are items. */
unsigned int grid_for(const agg_ctx *c, size_t items)
{
    size_t blocks = (items + kThreads - 1) / kThreads;
    size_t cap = (size_t)c->sms * kBlocksPerSm;
    if (blocks > cap) blocks = cap;
    return blocks ? (unsigned int)blocks : 1u;
}

template <int K>
void launch_many(const agg_ctx *c, unsigned long long *acc, size_t n, const fold_args &g, bool vec4,
                 int subtract, int *bad)
{
    if (vec4)
        fold_many_vec4_kernel<K>
            <<<grid_for(c, n / 4 + 1), kThreads, 0, c->stream>>>(acc, n, g, subtract, bad);
    else
        fold_many_kernel<K><<<grid_for(c, n), kThreads, 0, c->stream>>>(acc, n, g, subtract, bad);
}

/* Launches the pass for k (1 .. kGroup) updates; the caller checks the
 * launch. */
void launch_group(const agg_ctx *c, int k, unsigned long long *acc, size_t n, const fold_args &g, bool vec4,
                  int subtract, int *bad)
{
    switch (k) {
    case 1: launch_many<1>(c, acc, n, g, vec4, subtract, bad); break;
    case 2: launch_many<2>(c, acc, n, g, vec4, subtract, bad); break;
    case 3: launch_many<3>(c, acc, n, g, vec4, subtract, bad); break;
    case 4: launch_many<4>(c, acc, n, g, vec4, subtract, bad); break;
    case 5: launch_many<5>(c, acc, n, g, vec4, subtract, bad); break;
    case 6: launch_many<6>(c, acc, n, g, vec4, subtract, bad); break;
    case 7: launch_many<7>(c, acc, n, g, vec4, subtract, bad); break;
    case 8: launch_many<8>(c, acc, n, g, vec4, subtract, bad); break;
    case 9: launch_many<9>(c, acc, n, g, vec4, subtract, bad); break;
    case 10: launch_many<10>(c, acc, n, g, vec4, subtract, bad); break;
    case 11: launch_many<11>(c, acc, n, g, vec4, subtract, bad); break;
    case 12: launch_many<12>(c, acc, n, g, vec4, subtract, bad); break;
    case 13: launch_many<13>(c, acc, n, g, vec4, subtract, bad); break;
    case 14: launch_many<14>(c, acc, n, g, vec4, subtract, bad); break;
    case 15: launch_many<15>(c, acc, n, g, vec4, subtract, bad); break;
    case 16: launch_many<16>(c, acc, n, g, vec4, subtract, bad); break;
    default: break; /* callers pass 1 .. kGroup */
    }
}
static_assert(kGroup == 16, "launch_group has one case per group size");

/* Checks that p can be read by this GPU as an array of floats: memory of
 * this device (or managed memory), float-aligned. Its extent cannot be
 * checked here; the caller promises numel values. */
int check_device_ptr(const agg_ctx *c, const void *p, const char *what, size_t j, char *err, size_t errlen)
{
    if (!p) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s %zu is a NULL pointer", what, j);
    if ((uintptr_t)p % sizeof(float))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s %zu (%p) is not aligned to a float", what, j,
                              p);
    cudaPointerAttributes at;
    cudaError_t e = cudaPointerGetAttributes(&at, p);
    if (e != cudaSuccess) {
        /* Not a failure of the device: clear the error so that it does not
         * surface at the next launch check. */
        (void)cudaGetLastError();
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s %zu (%p) is not GPU memory: %s", what, j, p,
                              cudaGetErrorString(e));
    }
    if ((at.type != cudaMemoryTypeDevice && at.type != cudaMemoryTypeManaged) || at.device != c->device)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s %zu (%p) is not memory of cuda:%d", what, j,
                              p, c->device);
    return FEDC_OK;
}

/* ---- the operations; each writes its error into c->msg --------------- */

int do_reset(agg_ctx *c, char *err, size_t errlen)
{
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    FEDC_CUDA_TRY(cudaMemsetAsync(c->base, 0, c->total * sizeof(unsigned long long), c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    return FEDC_OK;
}

int do_fold_host(agg_ctx *c, size_t ti, size_t offset, const float *x, size_t n, double scale, float lim,
                 int subtract, int *bad, char *err, size_t errlen)
{
    if (bad) *bad = 0;
    if (ti >= c->ntensors || offset > c->numel[ti] || n > c->numel[ti] - offset)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    if (n == 0) return FEDC_OK;
    if (!x) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values: NULL pointer");
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    if (bad) FEDC_CUDA_TRY(cudaMemsetAsync(c->d_bad, 0, sizeof(int), c->stream));
    unsigned long long *acc = c->sums[ti] + offset;
    size_t done = 0;
    for (int b = 0; done < n; b ^= 1) {
        const size_t len = n - done < kStageFloats ? n - done : kStageFloats;
        /* The transfer and fold that last read buffer b are finished (an
         * event never recorded counts as finished). */
        FEDC_CUDA_TRY(cudaEventSynchronize(c->staged[b]));
        memcpy(c->h_stage[b], x + done, len * sizeof(float));
        FEDC_CUDA_TRY(cudaMemcpyAsync(c->d_stage[b], c->h_stage[b], len * sizeof(float),
                                      cudaMemcpyHostToDevice, c->stream));
        fold_one_kernel<<<grid_for(c, len), kThreads, 0, c->stream>>>(
            acc + done, c->d_stage[b], len, scale, lim, subtract, bad ? c->d_bad : nullptr);
        FEDC_CUDA_TRY(cudaGetLastError());
        FEDC_CUDA_TRY(cudaEventRecord(c->staged[b], c->stream));
        done += len;
    }
    if (bad)
        FEDC_CUDA_TRY(cudaMemcpyAsync(c->h_bad, c->d_bad, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    if (bad) *bad = *c->h_bad != 0;
    return FEDC_OK;
}

int do_fold_resident(agg_ctx *c, size_t ti, const float *const *x, const double *scale, const float *lim,
                     size_t k, int subtract, int *bad, char *err, size_t errlen)
{
    if (bad) *bad = 0;
    if (ti >= c->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    const size_t n = c->numel[ti];
    if (k == 0 || n == 0) return FEDC_OK;
    if (!x || !scale || !lim) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "updates: NULL pointer");
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    bool vec4 = true;
    for (size_t j = 0; j < k; j++) {
        int rc = check_device_ptr(c, x[j], "update", j, err, errlen);
        if (rc) return rc;
        if ((uintptr_t)x[j] % 16) vec4 = false;
    }
    if (bad) FEDC_CUDA_TRY(cudaMemsetAsync(c->d_bad, 0, sizeof(int), c->stream));
    for (size_t j0 = 0; j0 < k; j0 += kGroup) {
        const int m = k - j0 < (size_t)kGroup ? (int)(k - j0) : kGroup;
        fold_args g;
        memset(&g, 0, sizeof g);
        for (int j = 0; j < m; j++) {
            g.x[j] = x[j0 + j];
            g.scale[j] = scale[j0 + j];
            g.lim[j] = lim[j0 + j];
        }
        launch_group(c, m, c->sums[ti], n, g, vec4, subtract, bad ? c->d_bad : nullptr);
        FEDC_CUDA_TRY(cudaGetLastError());
    }
    if (bad)
        FEDC_CUDA_TRY(cudaMemcpyAsync(c->h_bad, c->d_bad, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    if (bad) *bad = *c->h_bad != 0;
    return FEDC_OK;
}

int do_find_bad(agg_ctx *c, size_t ti, const float *x, float lim, int *found, size_t *index, float *value,
                char *err, size_t errlen)
{
    *found = 0;
    if (ti >= c->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "values outside the tensor");
    const size_t n = c->numel[ti];
    if (n == 0) return FEDC_OK;
    int rc = check_device_ptr(c, x, "update", 0, err, errlen);
    if (rc) return rc;
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    FEDC_CUDA_TRY(cudaMemsetAsync(c->d_first, 0xff, sizeof(unsigned long long), c->stream));
    first_bad_kernel<<<grid_for(c, n), kThreads, 0, c->stream>>>(x, n, lim, c->d_first);
    FEDC_CUDA_TRY(cudaGetLastError());
    FEDC_CUDA_TRY(cudaMemcpyAsync(c->h_first, c->d_first, sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                                  c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    const unsigned long long i = *c->h_first;
    if (i >= n) return FEDC_OK;
    FEDC_CUDA_TRY(cudaMemcpyAsync(c->h_stage[0], x + i, sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    *found = 1;
    *index = (size_t)i;
    *value = c->h_stage[0][0];
    return FEDC_OK;
}

int do_finalize(agg_ctx *c, double denom, float *const *out, int on_device, char *err, size_t errlen)
{
    if (!out && c->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "output: NULL pointer");
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    if (on_device) {
        for (size_t i = 0; i < c->ntensors; i++) {
            if (c->numel[i] == 0) continue;
            int rc = check_device_ptr(c, out[i], "output tensor", i, err, errlen);
            if (rc) return rc;
        }
        for (size_t i = 0; i < c->ntensors; i++) {
            const size_t n = c->numel[i];
            if (n == 0) continue;
            mean_kernel<<<grid_for(c, n), kThreads, 0, c->stream>>>(c->sums[i], out[i], n, denom);
            FEDC_CUDA_TRY(cudaGetLastError());
        }
        FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
        return FEDC_OK;
    }
    for (size_t i = 0; i < c->ntensors; i++) {
        const size_t n = c->numel[i];
        if (n && !out[i])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "output tensor %zu is a NULL pointer", i);
        for (size_t done = 0; done < n;) {
            const size_t len = n - done < kStageFloats ? n - done : kStageFloats;
            mean_kernel<<<grid_for(c, len), kThreads, 0, c->stream>>>(c->sums[i] + done, c->d_stage[0], len,
                                                                      denom);
            FEDC_CUDA_TRY(cudaGetLastError());
            FEDC_CUDA_TRY(cudaMemcpyAsync(c->h_stage[0], c->d_stage[0], len * sizeof(float),
                                          cudaMemcpyDeviceToHost, c->stream));
            FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
            memcpy(out[i] + done, c->h_stage[0], len * sizeof(float));
            done += len;
        }
    }
    return FEDC_OK;
}

int do_read_sums(agg_ctx *c, size_t ti, int64_t *out, char *err, size_t errlen)
{
    if (ti >= c->ntensors) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no tensor %zu", ti);
    const size_t n = c->numel[ti];
    if (n == 0) return FEDC_OK;
    if (!out) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "output: NULL pointer");
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    FEDC_CUDA_TRY(
        cudaMemcpyAsync(out, c->sums[ti], n * sizeof(unsigned long long), cudaMemcpyDeviceToHost, c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    return FEDC_OK;
}

/* ---- the backend interface: sticky failures around the operations ---- */

/* Reports the result of an operation: a device failure stops the
 * accumulator for good; any error's text goes to the caller. */
int settle(agg_ctx *c, int rc, char *err, size_t errlen)
{
    if (rc == FEDC_ERR_DEVICE) c->status = rc;
    if (rc && err && errlen) snprintf(err, errlen, "%s", c->msg);
    return rc;
}

/* Nonzero (the failure, copied to err) when the GPU failed earlier. */
int stopped(const agg_ctx *c, char *err, size_t errlen)
{
    if (c->status && err && errlen) snprintf(err, errlen, "%s", c->msg);
    return c->status;
}

int op_reset(void *vc, char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_reset(c, c->msg, sizeof c->msg), err, errlen);
}

int op_fold_host(void *vc, size_t ti, size_t offset, const float *x, size_t n, double scale, float lim,
                 int subtract, int *bad, char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_fold_host(c, ti, offset, x, n, scale, lim, subtract, bad, c->msg, sizeof c->msg), err,
                  errlen);
}

int op_fold_resident(void *vc, size_t ti, const float *const *x, const double *scale, const float *lim,
                     size_t k, int subtract, int *bad, char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_fold_resident(c, ti, x, scale, lim, k, subtract, bad, c->msg, sizeof c->msg), err,
                  errlen);
}

int op_find_bad(void *vc, size_t ti, const float *x, float lim, int *found, size_t *index, float *value,
                char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    *found = 0;
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_find_bad(c, ti, x, lim, found, index, value, c->msg, sizeof c->msg), err, errlen);
}

int op_finalize(void *vc, double denom, float *const *out, int on_device, char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_finalize(c, denom, out, on_device, c->msg, sizeof c->msg), err, errlen);
}

int op_read_sums(void *vc, size_t ti, int64_t *out, char *err, size_t errlen)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (c->status) return stopped(c, err, errlen);
    return settle(c, do_read_sums(c, ti, out, c->msg, sizeof c->msg), err, errlen);
}

int op_status(void *vc, char *err, size_t errlen)
{
    return stopped(static_cast<agg_ctx *>(vc), err, errlen);
}

/* Cleanup cannot fail the caller; a failure there is logged. */
void released(cudaError_t e, const char *call)
{
    if (e != cudaSuccess)
        fedc_log(FEDC_LOG_WARN, "cuda", "%s failed while freeing the aggregation buffers: %s", call,
                 cudaGetErrorString(e));
}

void op_destroy(void *vc)
{
    agg_ctx *c = static_cast<agg_ctx *>(vc);
    if (!c) return;
    released(cudaSetDevice(c->device), "cudaSetDevice");
    if (c->stream) {
        released(cudaStreamSynchronize(c->stream), "cudaStreamSynchronize");
        released(cudaStreamDestroy(c->stream), "cudaStreamDestroy");
    }
    for (int b = 0; b < 2; b++) {
        if (c->staged[b]) released(cudaEventDestroy(c->staged[b]), "cudaEventDestroy");
        if (c->h_stage[b]) released(cudaFreeHost(c->h_stage[b]), "cudaFreeHost");
        if (c->d_stage[b]) released(cudaFree(c->d_stage[b]), "cudaFree");
    }
    if (c->h_bad) released(cudaFreeHost(c->h_bad), "cudaFreeHost");
    if (c->h_first) released(cudaFreeHost(c->h_first), "cudaFreeHost");
    if (c->d_bad) released(cudaFree(c->d_bad), "cudaFree");
    if (c->d_first) released(cudaFree(c->d_first), "cudaFree");
    if (c->base) released(cudaFree(c->base), "cudaFree");
    free(c->numel);
    free(c->sums);
    free(c);
}

const fedc__fedavg_backend cuda_fedavg_ops = {op_reset,    op_fold_host, op_fold_resident, op_find_bad,
                                              op_finalize, op_read_sums, op_status,        op_destroy};

/* Allocates everything c needs (c->device, ntensors and numel are set);
 * on failure the caller frees what was made with op_destroy. */
int open_ctx(agg_ctx *c, char *err, size_t errlen)
{
    /* Each tensor starts on a multiple of 4 sums (32 bytes), which the
     * four-element kernels need. */
    size_t total = 0;
    const size_t limit = SIZE_MAX / sizeof(unsigned long long) - 4;
    for (size_t i = 0; i < c->ntensors; i++) {
        const size_t padded = (c->numel[i] + 3) / 4 * 4;
        if (c->numel[i] > limit || padded > limit - total)
            return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "the model is too large to aggregate");
        total += padded;
    }
    c->total = total;
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    FEDC_CUDA_TRY(cudaDeviceGetAttribute(&c->sms, cudaDevAttrMultiProcessorCount, c->device));
    if (c->sms < 1) c->sms = 1;
    const size_t bytes = (total ? total : 4) * sizeof(unsigned long long);
    cudaError_t e = cudaMalloc((void **)&c->base, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it */
        c->base = nullptr;
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM,
                              "cuda:%d: not enough GPU memory for the aggregation sums (%zu MiB)", c->device,
                              bytes >> 20);
    }
    FEDC_CUDA_TRY(e);
    for (size_t i = 0, off = 0; i < c->ntensors; i++) {
        c->sums[i] = c->base + off;
        off += (c->numel[i] + 3) / 4 * 4;
    }
    FEDC_CUDA_TRY(cudaStreamCreate(&c->stream));
    for (int b = 0; b < 2; b++) {
        FEDC_CUDA_TRY(cudaEventCreateWithFlags(&c->staged[b], cudaEventDisableTiming));
        FEDC_CUDA_TRY(
            cudaHostAlloc((void **)&c->h_stage[b], kStageFloats * sizeof(float), cudaHostAllocDefault));
        FEDC_CUDA_TRY(cudaMalloc((void **)&c->d_stage[b], kStageFloats * sizeof(float)));
    }
    FEDC_CUDA_TRY(cudaHostAlloc((void **)&c->h_bad, sizeof(int), cudaHostAllocDefault));
    FEDC_CUDA_TRY(cudaHostAlloc((void **)&c->h_first, sizeof(unsigned long long), cudaHostAllocDefault));
    FEDC_CUDA_TRY(cudaMalloc((void **)&c->d_bad, sizeof(int)));
    FEDC_CUDA_TRY(cudaMalloc((void **)&c->d_first, sizeof(unsigned long long)));
    FEDC_CUDA_TRY(cudaMemsetAsync(c->base, 0, bytes, c->stream));
    FEDC_CUDA_TRY(cudaStreamSynchronize(c->stream));
    return FEDC_OK;
}

} // namespace

extern "C" int fedc__cuda_fedavg_open(int index, size_t ntensors, const size_t *numel,
                                      const struct fedc__fedavg_backend **ops, void **ctx, char *err,
                                      size_t errlen)
{
    *ops = nullptr;
    *ctx = nullptr;
    agg_ctx *c = static_cast<agg_ctx *>(calloc(1, sizeof *c));
    if (!c) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for the aggregation buffers");
    c->device = index;
    c->ntensors = ntensors;
    c->numel = static_cast<size_t *>(calloc(ntensors ? ntensors : 1, sizeof *c->numel));
    c->sums = static_cast<unsigned long long **>(calloc(ntensors ? ntensors : 1, sizeof *c->sums));
    if (!c->numel || !c->sums) {
        op_destroy(c);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for the aggregation buffers");
    }
    if (ntensors) memcpy(c->numel, numel, ntensors * sizeof *numel);
    int rc = open_ctx(c, err, errlen);
    if (rc) {
        op_destroy(c);
        return rc;
    }
    *ops = &cuda_fedavg_ops;
    *ctx = c;
    return FEDC_OK;
}
