/* The CPU compute backend: OpenBLAS for the GEMMs, the AVX2 direct convolutions of
 * conv_direct.c where the CPU has them, plain loops for the rest. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "fedc/core.h"
#include "nn/backend.h"
#include "nn/conv_direct.h"

/* The default build is portable (no -march), which limits the compiler to
 * SSE2. The element-wise loops below are also compiled for AVX2 and picked
 * at load time on CPUs that have it. ThreadSanitizer instruments the
 * load-time resolvers, which then run before its runtime is up and crash,
 * so its builds keep the portable loops only. */
#if defined(__has_attribute) && (defined(__x86_64__) || defined(__i386__)) && !defined(__SANITIZE_THREAD__)
#if __has_attribute(target_clones)
#define HOT_LOOP __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef HOT_LOOP
#define HOT_LOOP
#endif

static void *cpu_alloc(void *ctx, size_t nbytes)
{
    (void)ctx;
    void *p = fedc_aligned_alloc(nbytes);
    if (p) memset(p, 0, nbytes);
    return p;
}

static void cpu_free(void *ctx, void *p)
{
    (void)ctx;
    fedc_free(p);
}

static void cpu_copy(void *ctx, void *dst, const void *src, size_t nbytes)
{
    (void)ctx;
    if (dst != src && nbytes) memcpy(dst, src, nbytes);
}

static void cpu_zero(void *ctx, void *p, size_t nbytes)
{
    (void)ctx;
    if (nbytes) memset(p, 0, nbytes);
}

static void cpu_gather_rows(void *ctx, float *dst, const float *src, const uint32_t *idx, size_t count,
                            size_t row_len)
{
    (void)ctx;
    for (size_t i = 0; i < count; i++)
        memcpy(dst + i * row_len, src + (size_t)idx[i] * row_len, row_len * sizeof(float));
}

static void cpu_set_threads(void *ctx, int n)
{
    (void)ctx;
    /* OpenBLAS keeps its thread count process-wide; asking again for the
     * same count is cheap, so callers may set it before every batch of work. */
    if (openblas_get_num_threads() != n) openblas_set_num_threads(n);
}

static void cpu_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                     const float *b, int ldb, float beta, float *c, int ldc)
{
    (void)ctx;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                a, lda, b, ldb, beta, c, ldc);
}

HOT_LOOP
static void cpu_bias_act(void *ctx, float *y, const float *bias, int rows, int cols, int per_row, int relu)
{
    (void)ctx;
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * cols;
        if (per_row) {
            float b = bias[r];
            if (relu)
                for (int j = 0; j < cols; j++) {
                    float v = yr[j] + b;
                    yr[j] = v > 0.0f ? v : 0.0f;
                }
            else
                for (int j = 0; j < cols; j++) yr[j] += b;
        } else {
            if (relu)
                for (int j = 0; j < cols; j++) {
                    float v = yr[j] + bias[j];
                    yr[j] = v > 0.0f ? v : 0.0f;
                }
            else
                for (int j = 0; j < cols; j++) yr[j] += bias[j];
        }
    }
}

/* Sum of n floats with eight independent partial sums: the compiler can keep
 * them in one vector register, and the fixed order keeps results
 * reproducible. */
HOT_LOOP
static float sum_floats(const float *x, size_t n)
{
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[i + l];
    float s = 0.0f;
    for (; i < n; i++) s += x[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

HOT_LOOP
static void cpu_bias_grad(void *ctx, const float *dy, int rows, int cols, int per_row, int accumulate,
                          float *db)
{
    (void)ctx;
    if (per_row) {
        for (int r = 0; r < rows; r++) {
            float s = sum_floats(dy + (size_t)r * cols, (size_t)cols);
            db[r] = accumulate ? db[r] + s : s;
        }
    } else {
        if (!accumulate) memset(db, 0, (size_t)cols * sizeof(float));
        for (int r = 0; r < rows; r++) {
            const float *dr = dy + (size_t)r * cols;
            for (int j = 0; j < cols; j++) db[j] += dr[j];
        }
    }
}

HOT_LOOP
static void cpu_relu_fwd(void *ctx, const float *x, float *y, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

HOT_LOOP
static void cpu_relu_bwd(void *ctx, const float *y, const float *dy, float *dx, size_t n)
{
    (void)ctx;
    /* Both loads are unconditional so that the select vectorises. */
    for (size_t i = 0; i < n; i++) {
        float d = dy[i];
        dx[i] = y[i] > 0.0f ? d : 0.0f;
    }
}

static void cpu_swap01(void *ctx, const float *src, int d0, int d1, int inner, float *dst)
{
    (void)ctx;
    size_t row = (size_t)inner * sizeof(float);
    for (int i = 0; i < d0; i++)
        for (int j = 0; j < d1; j++)
            memcpy(dst + ((size_t)j * d0 + i) * inner, src + ((size_t)i * d1 + j) * inner, row);
}

/* Copies n floats. The rows here are short (8 to 24 values), where a call
 * to memcpy costs more than the copy; fixed-size copies compile to a few
 * vector moves instead. */
static inline void copy_row(float *restrict dst, const float *restrict src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) memcpy(dst + i, src + i, 8 * sizeof(float));
    for (; i < n; i++) dst[i] = src[i];
}

HOT_LOOP
static void cpu_im2col(void *ctx, const float *x, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                       int stride, int pad, float *col)
{
    (void)ctx;
    const int oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    const size_t np = (size_t)ns * oh * ow;
    for (int ci = 0; ci < c; ci++)
        for (int ki = 0; ki < kh; ki++)
            for (int kj = 0; kj < kw; kj++) {
                float *row = col + ((size_t)(ci * kh + ki) * kw + kj) * np;
                for (int n = 0; n < ns; n++) {
                    const float *img = x + ((size_t)ci * nb + n0 + n) * h * w;
                    float *dst = row + (size_t)n * oh * ow;
                    if (stride == 1 && pad == 0) {
                        /* The common case: every source row is in range and
                         * contiguous. */
                        const float *src = img + (size_t)ki * w + kj;
                        for (int oy = 0; oy < oh; oy++) copy_row(dst + oy * ow, src + oy * w, ow);
                        continue;
                    }
                    for (int oy = 0; oy < oh; oy++, dst += ow) {
                        int iy = oy * stride - pad + ki;
                        if (iy < 0 || iy >= h) {
                            for (int ox = 0; ox < ow; ox++) dst[ox] = 0.0f;
                            continue;
                        }
                        const float *src = img + (size_t)iy * w;
                        for (int ox = 0; ox < ow; ox++) {
                            int ix = ox * stride - pad + kj;
                            dst[ox] = (ix >= 0 && ix < w) ? src[ix] : 0.0f;
                        }
                    }
                }
            }
}

HOT_LOOP
static void cpu_col2im(void *ctx, const float *col, int c, int nb, int n0, int ns, int h, int w, int kh,
                       int kw, int stride, int pad, float *dx)
{
    (void)ctx;
    const int oh = (h + 2 * pad - kh) / stride + 1, ow = (w + 2 * pad - kw) / stride + 1;
    const size_t np = (size_t)ns * oh * ow;
    const size_t plane = (size_t)h * w;
    /* Image by image, so that the image being summed into stays in L1 while
     * all kernel offsets add their rows to it. */
    for (int ci = 0; ci < c; ci++)
        for (int n = 0; n < ns; n++) {
            float *restrict img = dx + ((size_t)ci * nb + n0 + n) * plane;
            for (size_t i = 0; i < plane; i++) img[i] = 0.0f;
            /* kj outermost: consecutive read-modify-writes of a row then
             * start at the same column, which the store-to-load forwarding
             * of the CPU handles; a shift by one column between them (kj
             * innermost) stalls each load on the store before it. */
            for (int kj = 0; kj < kw; kj++)
                for (int ki = 0; ki < kh; ki++) {
                    const float *restrict src =
                        col + ((size_t)(ci * kh + ki) * kw + kj) * np + (size_t)n * oh * ow;
                    if (stride == 1 && pad == 0) {
                        float *restrict dst = img + (size_t)ki * w + kj;
                        for (int oy = 0; oy < oh; oy++)
                            for (int ox = 0; ox < ow; ox++) dst[oy * w + ox] += src[oy * ow + ox];
                        continue;
                    }
                    for (int oy = 0; oy < oh; oy++) {
                        int iy = oy * stride - pad + ki;
                        if (iy < 0 || iy >= h) continue;
                        float *dst = img + (size_t)iy * w;
                        for (int ox = 0; ox < ow; ox++) {
                            int ix = ox * stride - pad + kj;
                            if (ix >= 0 && ix < w) dst[ix] += src[oy * ow + ox];
                        }
                    }
                }
        }
}

HOT_LOOP
static void cpu_maxpool_fwd(void *ctx, const float *x, int planes, int h, int w, int k, int stride, float *y,
                            int32_t *argmax)
{
    (void)ctx;
    const int oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
    for (int p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * h * w;
        float *yp = y + (size_t)p * oh * ow;
        int32_t *ap = argmax + (size_t)p * oh * ow;
        if (k == 2 && stride == 2) {
            /* The 2x2 window of the cnn, without inner loops or branches;
             * the scan order (a, b, c, d) keeps the first maximum. */
            for (int oy = 0; oy < oh; oy++) {
                const float *r0 = xp + (size_t)2 * oy * w, *r1 = r0 + w;
                for (int ox = 0; ox < ow; ox++) {
                    int i = 2 * oy * w + 2 * ox;
                    float m = r0[2 * ox], v;
                    int at = i;
                    v = r0[2 * ox + 1];
                    at = v > m ? i + 1 : at;
                    m = v > m ? v : m;
                    v = r1[2 * ox];
                    at = v > m ? i + w : at;
                    m = v > m ? v : m;
                    v = r1[2 * ox + 1];
                    at = v > m ? i + w + 1 : at;
                    m = v > m ? v : m;
                    yp[oy * ow + ox] = m;
                    ap[oy * ow + ox] = at;
                }
            }
            continue;
        }
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
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
                yp[oy * ow + ox] = bv;
                ap[oy * ow + ox] = best;
            }
    }
}

HOT_LOOP
static void cpu_maxpool_bwd(void *ctx, const float *dy, const float *relu_y, const int32_t *argmax,
                            int planes, int h, int w, int k, int stride, float *dx)
{
    (void)ctx;
    const int oh = (h - k) / stride + 1, ow = (w - k) / stride + 1;
    const size_t plane = (size_t)h * w;
    for (int p = 0; p < planes; p++) {
        float *dxp = dx + (size_t)p * plane;
        const float *dyp = dy + (size_t)p * oh * ow;
        const float *yp = relu_y ? relu_y + (size_t)p * oh * ow : NULL;
        const int32_t *ap = argmax + (size_t)p * oh * ow;
        if (k == 2 && stride == 2) {
            /* Non-overlapping 2x2 windows: write each window whole (the
             * gradient at its maximum, zeros elsewhere) instead of clearing
             * the plane and scattering into it. */
            for (int oy = 0; oy < oh; oy++) {
                float *r0 = dxp + (size_t)2 * oy * w, *r1 = r0 + w;
                for (int ox = 0; ox < ow; ox++) {
                    int i = oy * ow + ox, at = ap[i] - (2 * oy * w + 2 * ox);
                    float d = dyp[i];
                    if (yp) d = yp[i] > 0.0f ? d : 0.0f;
                    r0[2 * ox] = at == 0 ? d : 0.0f;
                    r0[2 * ox + 1] = at == 1 ? d : 0.0f;
                    r1[2 * ox] = at == w ? d : 0.0f;
                    r1[2 * ox + 1] = at == w + 1 ? d : 0.0f;
                }
                /* An odd width leaves a last column outside every window. */
                for (int x = 2 * ow; x < w; x++) r0[x] = r1[x] = 0.0f;
            }
            for (size_t i = (size_t)2 * oh * w; i < plane; i++) dxp[i] = 0.0f;
            continue;
        }
        for (size_t i = 0; i < plane; i++) dxp[i] = 0.0f;
        if (yp)
            for (int i = 0; i < oh * ow; i++) dxp[ap[i]] += yp[i] > 0.0f ? dyp[i] : 0.0f;
        else
            for (int i = 0; i < oh * ow; i++) dxp[ap[i]] += dyp[i];
    }
}

static void cpu_softmax_xent(void *ctx, const float *logits, const int32_t *labels, int nb, int classes,
                             float scale, float *dlogits, double *loss_sum, uint64_t *correct)
{
    (void)ctx;
    double loss = 0.0;
    uint64_t right = 0;
    for (int i = 0; i < nb; i++) {
        const float *z = logits + (size_t)i * classes;
        int arg = 0;
        for (int j = 1; j < classes; j++)
            if (z[j] > z[arg]) arg = j;
        if (arg == labels[i]) right++;
        /* log-sum-exp shifted by the maximum, in double: cheap for a handful
         * of classes and it keeps the loss exact enough to compare runs. */
        double zmax = z[arg], s = 0.0;
        for (int j = 0; j < classes; j++) s += exp((double)z[j] - zmax);
        double lse = zmax + log(s);
        loss += lse - (double)z[labels[i]];
        if (dlogits) {
            float *d = dlogits + (size_t)i * classes;
            for (int j = 0; j < classes; j++) {
                double p = exp((double)z[j] - lse);
                d[j] = (float)(scale * (p - (j == labels[i] ? 1.0 : 0.0)));
            }
        }
    }
    *loss_sum += loss;
    *correct += right;
}

HOT_LOOP
static void cpu_add(void *ctx, float *dst, const float *src, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

HOT_LOOP
static void cpu_sgd_update(void *ctx, float *w, const float *g, float *v, size_t n, float lr, float momentum,
                           float weight_decay)
{
    (void)ctx;
    if (momentum == 0.0f) {
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] + weight_decay * w[i]);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float vi = momentum * v[i] + (g[i] + weight_decay * w[i]);
        v[i] = vi;
        w[i] -= lr * vi;
    }
}

HOT_LOOP
static void cpu_proximal_grad(void *ctx, float *g, const float *w, const float *w0, size_t n, float mu)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++) g[i] += mu * (w[i] - w0[i]);
}

static void cpu_axpy(void *ctx, float *y, const float *x, size_t n, float alpha)
{
    (void)ctx;
    /* CBLAS counts in ints: a longer vector goes in pieces. */
    const size_t most = (size_t)INT_MAX;
    for (size_t done = 0; done < n; done += most) {
        size_t len = n - done < most ? n - done : most;
        cblas_saxpy((int)len, alpha, x + done, 1, y + done, 1);
    }
}

static int cpu_conv_direct_supported(void *ctx, int c, int k, int stride, int pad)
{
    (void)ctx;
    return fedc__nn_conv_direct_available(c, k, stride, pad);
}

static void cpu_conv_direct_fwd(void *ctx, const float *x, const float *w, const float *b, int c, int nb,
                                int h, int wd, int oc, int k, int relu, float *y)
{
    (void)ctx;
    fedc__nn_conv_direct_fwd(x, w, b, c, nb, h, wd, oc, k, relu, y);
}

static void cpu_conv_direct_dw(void *ctx, const float *x, const float *dy, int c, int nb, int h, int wd,
                               int oc, int k, int accumulate, float *dw)
{
    (void)ctx;
    fedc__nn_conv_direct_dw(x, dy, c, nb, h, wd, oc, k, accumulate, dw);
}

static const fedc__nn_backend_i cpu_iface = {
    .name = "cpu",
    .host_memory = 1,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .zero = cpu_zero,
    .gather_rows = cpu_gather_rows,
    .set_threads = cpu_set_threads,
    .gemm = cpu_gemm,
    .bias_act = cpu_bias_act,
    .bias_grad = cpu_bias_grad,
    .relu_fwd = cpu_relu_fwd,
    .relu_bwd = cpu_relu_bwd,
    .swap01 = cpu_swap01,
    .im2col = cpu_im2col,
    .col2im = cpu_col2im,
    .conv_direct_supported = cpu_conv_direct_supported,
    .conv_direct_fwd = cpu_conv_direct_fwd,
    .conv_direct_dw = cpu_conv_direct_dw,
    .maxpool_fwd = cpu_maxpool_fwd,
    .maxpool_bwd = cpu_maxpool_bwd,
    .softmax_xent = cpu_softmax_xent,
    .add = cpu_add,
    .sgd_update = cpu_sgd_update,
    .proximal_grad = cpu_proximal_grad,
    .axpy = cpu_axpy,
};

static const fedc__nn_backend cpu_backend = {&cpu_iface, NULL};

const fedc__nn_backend *fedc__nn_backend_cpu(void)
{
    return &cpu_backend;
}
