/*
 * The trainer's compute backend on a GPU (the ops of src/nn/backend.h).
 *
 * Each backend has one stream and one cuBLAS handle on it; every op is
 * enqueued on that stream, so ops run in the order the trainer calls them
 * and only the copies to the host wait for the GPU. GEMMs go through cuBLAS
 * with TF32 off, everything else through the simple kernels below: one
 * thread per output value in a grid-stride loop, with size_t indices.
 *
 * Results are reproducible: no kernel adds floats with atomics, so every
 * sum runs in an order fixed by the shapes alone. Element-wise ops round
 * each operation as the CPU backend does (no fused multiply-add), and where
 * a value is a sum the kernels add in the CPU backend's order when that
 * order costs nothing on a GPU (col2im, the max-pool backward, the bias
 * gradient of a dense layer), so that those ops match the CPU bit for bit.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "nn/backend.h"

namespace
{

/* Threads per block; a power of two (the reductions need one). */
constexpr int kThreads = 256;
/* At most this many blocks per launch; grid-stride loops cover the rest. */
constexpr size_t kMaxBlocks = 4096;
/* An im2col block as large as a chunk of any built-in model (see
 * col_block_bytes in backend.h). */
constexpr size_t kColBlockBytes = (size_t)256 << 20;

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    /* Synchronise after every op (FEDC_CUDA_SYNC=1 in the environment), so
     * that a failing kernel is reported by the op that launched it. */
    int sync_each_op;
    /* Scratch of softmax_xent (host labels): the labels and the statistics
     * on the device, grown on demand. */
    int32_t *labels;
    size_t labels_cap;
    fedc__nn_xent_acc *acc;
};

/* The backend handed out: the table's pointer pair and its context in one
 * allocation. */
struct cuda_backend {
    fedc__nn_backend be;
    cuda_ctx ctx;
};

unsigned int blocks_for(size_t n)
{
    size_t b = (n + kThreads - 1) / kThreads;
    return (unsigned int)(b < kMaxBlocks ? b : kMaxBlocks);
}

/* Makes the backend's GPU current on the calling thread: the trainer may be
 * called from any thread, and CUDA's current device is per thread. */
void enter(const cuda_ctx *c)
{
    int cur = -1;
    FEDC_CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != c->device) FEDC_CUDA_CHECK(cudaSetDevice(c->device));
}

/* Checks the kernel just launched. */
void launched(const cuda_ctx *c)
{
    FEDC_CUDA_CHECK_LAUNCH();
    if (c->sync_each_op) FEDC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

#define GRID_STRIDE(i, n)                                                                                    \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                                  \
         i += (size_t)gridDim.x * blockDim.x)

/* ---- kernels ---------------------------------------------------------- */

__global__ void k_bias_act(float *y, const float *bias, size_t total, size_t cols, int per_row, int relu)
{
    GRID_STRIDE(i, total)
    {
        float v = __fadd_rn(y[i], per_row ? bias[i / cols] : bias[i % cols]);
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* db[r] (+)= the sum of row r: one block per row, each thread summing a
 * strided part, then a tree in shared memory. */
__global__ void k_bias_grad_rows(const float *dy, int rows, size_t cols, int accumulate, float *db)
{
    __shared__ float part[kThreads];
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *row = dy + (size_t)r * cols;
        float s = 0.0f;
        for (size_t j = threadIdx.x; j < cols; j += blockDim.x) s = __fadd_rn(s, row[j]);
        part[threadIdx.x] = s;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if ((int)threadIdx.x < half)
                part[threadIdx.x] = __fadd_rn(part[threadIdx.x], part[threadIdx.x + half]);
            __syncthreads();
        }
        if (threadIdx.x == 0) db[r] = accumulate ? __fadd_rn(db[r], part[0]) : part[0];
        /* The next row starts with every read of this one done. */
        __syncthreads();
    }
}

/* db[j] (+)= the sum of column j, one thread per column, rows in order (the
 * CPU backend's order). */
__global__ void k_bias_grad_cols(const float *dy, size_t rows, size_t cols, int accumulate, float *db)
{
    GRID_STRIDE(j, cols)
    {
        float s = accumulate ? db[j] : 0.0f;
        for (size_t r = 0; r < rows; r++) s = __fadd_rn(s, dy[r * cols + j]);
        db[j] = s;
    }
}

__global__ void k_relu_fwd(const float *x, float *y, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

__global__ void k_relu_bwd(const float *y, const float *dy, float *dx, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float d = dy[i];
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}

/* dst[j][i][t] = src[i][j][t], one thread per source value. */
__global__ void k_swap01(const float *src, size_t d0, size_t d1, size_t inner, float *dst)
{
    GRID_STRIDE(e, d0 * d1 * inner)
    {
        size_t t = e % inner, q = e / inner;
        size_t j = q % d1, i = q / d1;
        dst[(j * d0 + i) * inner + t] = src[e];
    }
}

/* One thread per col value: col[(ci*kh + ki)*kw + kj][(n*oh + oy)*ow + ox]. */
__global__ void k_im2col(const float *x, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                         int stride, int pad, int oh, int ow, float *col)
{
    const size_t np = (size_t)ns * oh * ow;
    GRID_STRIDE(e, (size_t)c * kh * kw * np)
    {
        size_t pos = e % np, krow = e / np;
        int ox = (int)(pos % ow);
        size_t q = pos / ow;
        int oy = (int)(q % oh);
        int n = (int)(q / oh);
        int kj = (int)(krow % kw);
        size_t q2 = krow / kw;
        int ki = (int)(q2 % kh);
        int ci = (int)(q2 / kh);
        int iy = oy * stride - pad + ki, ix = ox * stride - pad + kj;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[(((size_t)ci * nb + n0 + n) * h + iy) * w + ix];
        col[e] = v;
    }
}

/* One thread per value of images n0 .. n0+ns-1 of dx: the sum of the col
 * entries that read it, in the CPU backend's order (kj outer, ki inner). */
__global__ void k_col2im(const float *col, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                         int stride, int pad, int oh, int ow, float *dx)
{
    const size_t np = (size_t)ns * oh * ow;
    GRID_STRIDE(e, (size_t)c * ns * h * w)
    {
        int ix = (int)(e % w);
        size_t q = e / w;
        int iy = (int)(q % h);
        q /= h;
        int n = (int)(q % ns);
        int ci = (int)(q / ns);
        float s = 0.0f;
        for (int kj = 0; kj < kw; kj++) {
            int tx = ix + pad - kj;
            if (tx < 0 || tx % stride != 0 || tx / stride >= ow) continue;
            int ox = tx / stride;
            for (int ki = 0; ki < kh; ki++) {
                int ty = iy + pad - ki;
                if (ty < 0 || ty % stride != 0 || ty / stride >= oh) continue;
                int oy = ty / stride;
                s = __fadd_rn(s,
                              col[((size_t)(ci * kh + ki) * kw + kj) * np + ((size_t)n * oh + oy) * ow + ox]);
            }
        }
        dx[(((size_t)ci * nb + n0 + n) * h + iy) * w + ix] = s;
    }
}

/* One thread per output: the first maximum of its window. */
__global__ void k_maxpool_fwd(const float *x, size_t planes, int h, int w, int k, int stride, int oh, int ow,
                              float *y, int32_t *argmax)
{
    const size_t per_plane = (size_t)oh * ow;
    GRID_STRIDE(e, planes * per_plane)
    {
        size_t p = e / per_plane;
        int o = (int)(e % per_plane);
        int oy = o / ow, ox = o % ow;
        const float *xp = x + p * h * w;
        int best = oy * stride * w + ox * stride;
        float bv = xp[best];
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                int i = (oy * stride + ki) * w + ox * stride + kj;
                if (xp[i] > bv) {
                    bv = xp[i];
                    best = i;
                }
            }
        y[e] = bv;
        argmax[e] = best;
    }
}

/* One thread per input value: the sum of the gradients of the outputs that
 * chose it, in output order (the CPU backend's), gated by relu_y > 0 when
 * relu_y is not NULL. Values outside every window get 0. */
__global__ void k_maxpool_bwd(const float *dy, const float *relu_y, const int32_t *argmax, size_t planes,
                              int h, int w, int k, int stride, int oh, int ow, float *dx)
{
    const size_t plane = (size_t)h * w, per_plane = (size_t)oh * ow;
    GRID_STRIDE(e, planes * plane)
    {
        size_t p = e / plane;
        int at = (int)(e % plane);
        int iy = at / w, ix = at % w;
        /* The windows that hold (iy, ix): oy*stride <= iy <= oy*stride + k - 1. */
        int oy_lo = iy - k + 1 <= 0 ? 0 : (iy - k + 1 + stride - 1) / stride;
        int ox_lo = ix - k + 1 <= 0 ? 0 : (ix - k + 1 + stride - 1) / stride;
        int oy_hi = iy / stride < oh - 1 ? iy / stride : oh - 1;
        int ox_hi = ix / stride < ow - 1 ? ix / stride : ow - 1;
        float s = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; oy++)
            for (int ox = ox_lo; ox <= ox_hi; ox++) {
                size_t o = p * per_plane + (size_t)oy * ow + ox;
                if (argmax[o] != at) continue;
                float d = dy[o];
                if (relu_y) d = relu_y[o] > 0.0f ? d : 0.0f;
                s = __fadd_rn(s, d);
            }
        dx[e] = s;
    }
}

/* Softmax cross-entropy in one block (a chunk has at most a few hundred
 * rows of a few classes): thread t takes rows t, t + blockDim, ...; the
 * partial sums meet in a fixed tree, and thread 0 adds the total to *acc.
 * Log-sum-exp in double, as on the CPU. */
__global__ void k_softmax_xent(const float *logits, const int32_t *labels, int nb, int classes, float scale,
                               float *dlogits, fedc__nn_xent_acc *acc)
{
    __shared__ double loss_part[kThreads];
    __shared__ unsigned long long hit_part[kThreads];
    double loss = 0.0;
    unsigned long long hits = 0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) {
        const float *z = logits + (size_t)i * classes;
        const int label = labels[i];
        const int valid = label >= 0 && label < classes;
        int arg = 0;
        for (int j = 1; j < classes; j++)
            if (z[j] > z[arg]) arg = j;
        if (arg == label) hits++;
        double zmax = z[arg], s = 0.0;
        for (int j = 0; j < classes; j++) s += exp((double)z[j] - zmax);
        double lse = zmax + log(s);
        loss += valid ? lse - (double)z[label] : __longlong_as_double(0x7ff8000000000000LL);
        if (dlogits) {
            float *d = dlogits + (size_t)i * classes;
            for (int j = 0; j < classes; j++) {
                double p = exp((double)z[j] - lse);
                d[j] = (float)((double)scale * (p - (j == label ? 1.0 : 0.0)));
            }
        }
    }
    loss_part[threadIdx.x] = loss;
    hit_part[threadIdx.x] = hits;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) {
            loss_part[threadIdx.x] += loss_part[threadIdx.x + half];
            hit_part[threadIdx.x] += hit_part[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        acc->loss_sum += loss_part[0];
        acc->correct += hit_part[0];
    }
}

__global__ void k_add(float *dst, const float *src, size_t n)
{
    GRID_STRIDE(i, n) dst[i] = __fadd_rn(dst[i], src[i]);
}

/* FedProx's term, rounded as the CPU backend rounds it. */
__global__ void k_proximal_grad(float *g, const float *w, const float *w0, size_t n, float mu)
{
    GRID_STRIDE(i, n) g[i] = __fadd_rn(g[i], __fmul_rn(mu, __fsub_rn(w[i], w0[i])));
}

/* PyTorch's SGD, rounded as the CPU backend rounds it (no fused
 * multiply-add). */
__global__ void k_sgd(float *w, const float *g, float *v, size_t n, float lr, float momentum,
                      float weight_decay)
{
    GRID_STRIDE(i, n)
    {
        float wi = w[i];
        float gi = __fadd_rn(g[i], __fmul_rn(weight_decay, wi));
        if (momentum != 0.0f) {
            gi = __fadd_rn(__fmul_rn(momentum, v[i]), gi);
            v[i] = gi;
        }
        w[i] = __fsub_rn(wi, __fmul_rn(lr, gi));
    }
}

/* Rows of 32-bit values: dst[i][t] = src[idx[i]][t]. */
__global__ void k_gather_rows(uint32_t *dst, const uint32_t *src, const uint32_t *idx, size_t count,
                              size_t row_len)
{
    GRID_STRIDE(e, count * row_len)
    {
        size_t i = e / row_len, t = e % row_len;
        dst[e] = src[(size_t)idx[i] * row_len + t];
    }
}

/* ---- the ops ------------------------------------------------------------ */

cuda_ctx *as_ctx(void *ctx)
{
    return static_cast<cuda_ctx *>(ctx);
}

void *cu_alloc(void *ctx, size_t nbytes)
{
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    void *p = NULL;
    if (cudaMalloc(&p, nbytes ? nbytes : 1) != cudaSuccess) {
        /* Out of memory is the caller's to report; clear the error so that
         * the next launch check does not take it for its own. */
        (void)cudaGetLastError();
        return NULL;
    }
    FEDC_CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, c->stream));
    return p;
}

void cu_free(void *ctx, void *p)
{
    if (!p) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    /* No op still queued may use p. (cudaFree waits for the device too,
     * but saying so costs nothing: frees are rare.) */
    FEDC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    FEDC_CUDA_CHECK(cudaFree(p));
}

/* A copy between host and device that is complete on return: the caller
 * may change or free its host buffer, or read it, right away. */
void copy_sync(void *ctx, void *dst, const void *src, size_t nbytes, cudaMemcpyKind kind)
{
    if (!nbytes) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    FEDC_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, c->stream));
    FEDC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

void cu_to_device(void *ctx, void *dst, const void *host_src, size_t nbytes)
{
    copy_sync(ctx, dst, host_src, nbytes, cudaMemcpyHostToDevice);
}

void cu_to_host(void *ctx, void *host_dst, const void *src, size_t nbytes)
{
    copy_sync(ctx, host_dst, src, nbytes, cudaMemcpyDeviceToHost);
}

void cu_zero(void *ctx, void *p, size_t nbytes)
{
    if (!nbytes) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    FEDC_CUDA_CHECK(cudaMemsetAsync(p, 0, nbytes, c->stream));
}

/* Host rows into device rows: one copy per row. Only the tests use it; the
 * trainer uploads its data once and gathers on the GPU. */
void cu_gather_rows(void *ctx, float *dst, const float *host_src, const uint32_t *idx, size_t count,
                    size_t row_len)
{
    if (!count || !row_len) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    for (size_t i = 0; i < count; i++)
        FEDC_CUDA_CHECK(cudaMemcpyAsync(dst + i * row_len, host_src + (size_t)idx[i] * row_len,
                                        row_len * sizeof(float), cudaMemcpyHostToDevice, c->stream));
    FEDC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

void cu_set_threads(void *ctx, int n)
{
    (void)ctx;
    (void)n;
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same
 * memory read as column-major matrices of transposed shape, so cuBLAS gets
 * B before A, n before m, and the same transpose flags. */
void cu_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0) return;
    cuda_ctx *cc = as_ctx(ctx);
    enter(cc);
    FEDC_CUBLAS_CHECK(cublasSgemm(cc->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n,
                                  m, k, &alpha, b, ldb, a, lda, &beta, c, ldc));
    if (cc->sync_each_op) FEDC_CUDA_CHECK(cudaStreamSynchronize(cc->stream));
}

void cu_bias_act(void *ctx, float *y, const float *bias, int rows, int cols, int per_row, int relu)
{
    size_t total = (size_t)rows * (size_t)cols;
    if (rows <= 0 || cols <= 0) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_bias_act<<<blocks_for(total), kThreads, 0, c->stream>>>(y, bias, total, (size_t)cols, per_row, relu);
    launched(c);
}

void cu_bias_grad(void *ctx, const float *dy, int rows, int cols, int per_row, int accumulate, float *db)
{
    cuda_ctx *c = as_ctx(ctx);
    int nsums = per_row ? rows : cols;
    if (nsums <= 0) return;
    enter(c);
    if (rows <= 0 || cols <= 0) {
        /* Sums of nothing. */
        if (!accumulate) FEDC_CUDA_CHECK(cudaMemsetAsync(db, 0, (size_t)nsums * sizeof(float), c->stream));
        return;
    }
    if (per_row) {
        unsigned int grid = (unsigned int)((size_t)rows < kMaxBlocks ? (size_t)rows : kMaxBlocks);
        k_bias_grad_rows<<<grid, kThreads, 0, c->stream>>>(dy, rows, (size_t)cols, accumulate, db);
    } else {
        k_bias_grad_cols<<<blocks_for((size_t)cols), kThreads, 0, c->stream>>>(dy, (size_t)rows, (size_t)cols,
                                                                               accumulate, db);
    }
    launched(c);
}

void cu_relu_fwd(void *ctx, const float *x, float *y, size_t n)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_relu_fwd<<<blocks_for(n), kThreads, 0, c->stream>>>(x, y, n);
    launched(c);
}

void cu_relu_bwd(void *ctx, const float *y, const float *dy, float *dx, size_t n)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_relu_bwd<<<blocks_for(n), kThreads, 0, c->stream>>>(y, dy, dx, n);
    launched(c);
}

void cu_swap01(void *ctx, const float *src, int d0, int d1, int inner, float *dst)
{
    size_t total = (size_t)d0 * (size_t)d1 * (size_t)inner;
    if (d0 <= 0 || d1 <= 0 || inner <= 0) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_swap01<<<blocks_for(total), kThreads, 0, c->stream>>>(src, (size_t)d0, (size_t)d1, (size_t)inner, dst);
    launched(c);
}

void cu_im2col(void *ctx, const float *x, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
               int stride, int pad, float *col)
{
    const int oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    if (c <= 0 || ns <= 0 || oh <= 0 || ow <= 0) return;
    size_t total = (size_t)c * kh * kw * ns * oh * ow;
    cuda_ctx *cc = as_ctx(ctx);
    enter(cc);
    k_im2col<<<blocks_for(total), kThreads, 0, cc->stream>>>(x, c, nb, n0, ns, h, w, kh, kw, stride, pad, oh,
                                                             ow, col);
    launched(cc);
}

void cu_col2im(void *ctx, const float *col, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
               int stride, int pad, float *dx)
{
    const int oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    if (c <= 0 || ns <= 0 || h <= 0 || w <= 0 || oh <= 0 || ow <= 0) return;
    size_t total = (size_t)c * ns * h * w;
    cuda_ctx *cc = as_ctx(ctx);
    enter(cc);
    k_col2im<<<blocks_for(total), kThreads, 0, cc->stream>>>(col, c, nb, n0, ns, h, w, kh, kw, stride, pad,
                                                             oh, ow, dx);
    launched(cc);
}

void cu_maxpool_fwd(void *ctx, const float *x, int planes, int h, int w, int k, int stride, float *y,
                    int32_t *argmax)
{
    const int oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
    if (planes <= 0 || oh <= 0 || ow <= 0) return;
    size_t total = (size_t)planes * oh * ow;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_maxpool_fwd<<<blocks_for(total), kThreads, 0, c->stream>>>(x, (size_t)planes, h, w, k, stride, oh, ow,
                                                                 y, argmax);
    launched(c);
}

void cu_maxpool_bwd(void *ctx, const float *dy, const float *relu_y, const int32_t *argmax, int planes, int h,
                    int w, int k, int stride, float *dx)
{
    const int oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
    if (planes <= 0 || h <= 0 || w <= 0 || oh <= 0 || ow <= 0) return;
    size_t total = (size_t)planes * h * w;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_maxpool_bwd<<<blocks_for(total), kThreads, 0, c->stream>>>(dy, relu_y, argmax, (size_t)planes, h, w, k,
                                                                 stride, oh, ow, dx);
    launched(c);
}

void cu_softmax_xent_dev(void *ctx, const float *logits, const int32_t *labels, int nb, int classes,
                         float scale, float *dlogits, fedc__nn_xent_acc *acc)
{
    if (nb <= 0 || classes <= 0) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_softmax_xent<<<1, kThreads, 0, c->stream>>>(logits, labels, nb, classes, scale, dlogits, acc);
    launched(c);
}

/* The host-label form: uploads the labels, runs the device form on a
 * cleared accumulator and reads it back. Only the tests use it. */
void cu_softmax_xent(void *ctx, const float *logits, const int32_t *host_labels, int nb, int classes,
                     float scale, float *dlogits, double *loss_sum, uint64_t *correct)
{
    if (nb <= 0 || classes <= 0) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    if ((size_t)nb > c->labels_cap) {
        FEDC_CUDA_CHECK(cudaFree(c->labels));
        c->labels = NULL;
        c->labels_cap = 0;
        FEDC_CUDA_CHECK(cudaMalloc(&c->labels, (size_t)nb * sizeof(int32_t)));
        c->labels_cap = (size_t)nb;
    }
    cu_to_device(ctx, c->labels, host_labels, (size_t)nb * sizeof(int32_t));
    cu_zero(ctx, c->acc, sizeof(*c->acc));
    cu_softmax_xent_dev(ctx, logits, c->labels, nb, classes, scale, dlogits, c->acc);
    fedc__nn_xent_acc got;
    cu_to_host(ctx, &got, c->acc, sizeof(got));
    *loss_sum += got.loss_sum;
    *correct += got.correct;
}

void cu_add(void *ctx, float *dst, const float *src, size_t n)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_add<<<blocks_for(n), kThreads, 0, c->stream>>>(dst, src, n);
    launched(c);
}

void cu_sgd_update(void *ctx, float *w, const float *g, float *v, size_t n, float lr, float momentum,
                   float weight_decay)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_sgd<<<blocks_for(n), kThreads, 0, c->stream>>>(w, g, v, n, lr, momentum, weight_decay);
    launched(c);
}

void cu_proximal_grad(void *ctx, float *g, const float *w, const float *w0, size_t n, float mu)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_proximal_grad<<<blocks_for(n), kThreads, 0, c->stream>>>(g, w, w0, n, mu);
    launched(c);
}

/* cuBLAS on the model's stream; it counts in ints, so a longer vector goes
 * in pieces. */
void cu_axpy(void *ctx, float *y, const float *x, size_t n, float alpha)
{
    if (!n) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    const size_t most = (size_t)INT_MAX;
    for (size_t done = 0; done < n; done += most) {
        size_t len = n - done < most ? n - done : most;
        FEDC_CUBLAS_CHECK(cublasSaxpy(c->blas, (int)len, &alpha, x + done, 1, y + done, 1));
    }
    if (c->sync_each_op) FEDC_CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

void cu_gather_rows_dev(void *ctx, void *dst, const void *src, const uint32_t *idx, size_t count,
                        size_t row_len)
{
    if (!count || !row_len) return;
    cuda_ctx *c = as_ctx(ctx);
    enter(c);
    k_gather_rows<<<blocks_for(count * row_len), kThreads, 0, c->stream>>>(
        static_cast<uint32_t *>(dst), static_cast<const uint32_t *>(src), idx, count, row_len);
    launched(c);
}

fedc__nn_backend_i make_iface()
{
    fedc__nn_backend_i i;
    memset(&i, 0, sizeof(i));
    i.name = "cuda";
    i.host_memory = 0;
    i.col_block_bytes = kColBlockBytes;
    i.alloc = cu_alloc;
    i.free = cu_free;
    i.to_device = cu_to_device;
    i.to_host = cu_to_host;
    i.zero = cu_zero;
    i.gather_rows = cu_gather_rows;
    i.set_threads = cu_set_threads;
    i.gemm = cu_gemm;
    i.bias_act = cu_bias_act;
    i.bias_grad = cu_bias_grad;
    i.relu_fwd = cu_relu_fwd;
    i.relu_bwd = cu_relu_bwd;
    i.swap01 = cu_swap01;
    i.im2col = cu_im2col;
    i.col2im = cu_col2im;
    /* No direct convolution: the layers use im2col + GEMM. */
    i.conv_direct_supported = NULL;
    i.conv_direct_fwd = NULL;
    i.conv_direct_dw = NULL;
    i.maxpool_fwd = cu_maxpool_fwd;
    i.maxpool_bwd = cu_maxpool_bwd;
    i.softmax_xent = cu_softmax_xent;
    i.add = cu_add;
    i.sgd_update = cu_sgd_update;
    i.proximal_grad = cu_proximal_grad;
    i.axpy = cu_axpy;
    i.gather_rows_dev = cu_gather_rows_dev;
    i.softmax_xent_dev = cu_softmax_xent_dev;
    return i;
}

/* The table, built on first use (C++ has no designated initializers
 * before C++20); thread-safe as a function-local static. */
const fedc__nn_backend_i *cuda_iface()
{
    static const fedc__nn_backend_i iface = make_iface();
    return &iface;
}

/* Frees what create made; the handles that are NULL were not made. */
void release(cuda_backend *cb)
{
    cuda_ctx *c = &cb->ctx;
    /* Errors are ignored here: this runs on failure paths and at teardown,
     * where a broken device must not stop the process. */
    if (cudaSetDevice(c->device) == cudaSuccess) {
        if (c->stream) (void)cudaStreamSynchronize(c->stream);
        if (c->labels) (void)cudaFree(c->labels);
        if (c->acc) (void)cudaFree(c->acc);
        if (c->blas) (void)cublasDestroy(c->blas);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
    }
    (void)cudaGetLastError();
    free(cb);
}

/* Creates the stream, the cuBLAS handle and the scratch of a new backend. */
int setup(cuda_ctx *c, char *err, size_t errlen)
{
    FEDC_CUDA_TRY(cudaSetDevice(c->device));
    FEDC_CUDA_TRY(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    FEDC_CUBLAS_TRY(cublasCreate(&c->blas));
    FEDC_CUBLAS_TRY(cublasSetStream(c->blas, c->stream));
    /* Plain fp32 GEMMs: no TF32 tensor cores, whose 10-bit mantissas would
     * make the GPU's training drift from the CPU's. */
    FEDC_CUBLAS_TRY(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    FEDC_CUBLAS_TRY(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST));
    FEDC_CUDA_TRY(cudaMalloc(&c->acc, sizeof(*c->acc)));
    return FEDC_OK;
}

} // namespace

extern "C" int fedc__nn_backend_cuda_create(int index, fedc__nn_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    cuda_backend *cb = static_cast<cuda_backend *>(calloc(1, sizeof(cuda_backend)));
    if (!cb) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "cuda:%d: out of memory", index);
    cb->ctx.device = index;
    const char *sync = getenv("FEDC_CUDA_SYNC");
    cb->ctx.sync_each_op = sync && sync[0] && strcmp(sync, "0") != 0;
    char why[FEDC_ERRMSG_MAX] = "";
    int rc = setup(&cb->ctx, why, sizeof(why));
    if (rc != FEDC_OK) {
        release(cb);
        return fedc_set_error(err, errlen, rc, "cuda:%d: cannot set up the trainer's backend: %s", index,
                              why);
    }
    cb->be.iface = cuda_iface();
    cb->be.context = &cb->ctx;
    *out = &cb->be;
    return FEDC_OK;
}

extern "C" void fedc__nn_backend_cuda_destroy(fedc__nn_backend *be)
{
    if (!be) return;
    /* be is the first member of its cuda_backend. */
    release(reinterpret_cast<cuda_backend *>(be));
}
