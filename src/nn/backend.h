/*
 * The compute backend of the nn layer (internal).
 *
 * Layers never touch tensor memory with their own loops or BLAS calls: they
 * call the ops below through a table of function pointers plus a context
 * pointer, so that a backend for another device (CUDA) can be added as one
 * more table without changing the layers or the public API. Every pointer an
 * op receives is "device memory" (allocated with the backend's alloc), except
 * where an op says host. The CPU backend's device memory is host memory,
 * which lets the model train directly on the tensors of its fedc_params.
 *
 * Activation layouts. Spatial activations (conv, pool) are kept "CNHW":
 * channel-major over the whole batch, [C][N][H][W], so that a convolution of
 * many images is one GEMM (W[OC, K] * im2col[K, N*H*W]) with the output
 * already in place, and a pool sees C*N independent planes. Dense
 * activations are [N][F]. The model input (NCHW) equals CNHW when C == 1.
 */
#ifndef FEDC_NN_BACKEND_H
#define FEDC_NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The loss statistics that softmax_xent_dev adds to, in device memory. */
typedef struct fedc__nn_xent_acc {
    double loss_sum;  /* summed cross-entropy */
    uint64_t correct; /* rows whose first maximum is the label */
} fedc__nn_xent_acc;

typedef struct fedc__nn_backend_i {
    const char *name;
    /* Non-zero when device memory is host memory, so that host data may be
     * used in place and the copies below may be skipped. */
    int host_memory;
    /* Bytes a conv layer's im2col block should take (see layer.h), or 0 for
     * the default, which is sized for a CPU's L2 cache. A GPU wants the
     * whole chunk in one block: one large GEMM instead of many small ones. */
    size_t col_block_bytes;

    /* Memory. alloc returns zeroed memory or NULL; free(NULL) is a no-op. */
    void *(*alloc)(void *ctx, size_t nbytes);
    void (*free)(void *ctx, void *p);
    void (*to_device)(void *ctx, void *dst, const void *host_src, size_t nbytes);
    void (*to_host)(void *ctx, void *host_dst, const void *src, size_t nbytes);
    void (*zero)(void *ctx, void *p, size_t nbytes);
    /* Copies rows idx[0..count) of the host matrix `host_src` (rows of
     * row_len floats) into consecutive rows of dst. */
    void (*gather_rows)(void *ctx, float *dst, const float *host_src, const uint32_t *idx, size_t count,
                        size_t row_len);

    /* Threads each of the following ops may use. For OpenBLAS this is a
     * process-wide setting; the CPU backend's own loops run on the calling
     * thread. The trainer's threads (see fedc_nn_set_threads) are a level
     * above: each runs its share of a batch and calls the ops with 1. */
    void (*set_threads)(void *ctx, int n);

    /* C[m,n] = alpha * op(A) * op(B) + beta * C, row-major, op = transpose
     * when ta/tb is non-zero (lda/ldb are the row strides of A and B as
     * stored). */
    void (*gemm)(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);

    /* y[r][j] += bias (bias[r] when per_row, else bias[j]) for a rows x cols
     * matrix, then y = max(y, 0) when relu. */
    void (*bias_act)(void *ctx, float *y, const float *bias, int rows, int cols, int per_row, int relu);
    /* db (+)= sums of dy: over each row (db[r], per_row) or each column
     * (db[j]); accumulates into db when accumulate, else overwrites. */
    void (*bias_grad)(void *ctx, const float *dy, int rows, int cols, int per_row, int accumulate, float *db);

    /* y = max(x, 0), n elements; y may equal x. */
    void (*relu_fwd)(void *ctx, const float *x, float *y, size_t n);
    /* dx = y > 0 ? dy : 0 where y is the ReLU's output; dx may equal dy. */
    void (*relu_bwd)(void *ctx, const float *y, const float *dy, float *dx, size_t n);

    /* dst[j][i][:] = src[i][j][:] for src of shape [d0][d1][inner]: swaps
     * the two outer axes (NCHW <-> CNHW, and the flatten). */
    void (*swap01)(void *ctx, const float *src, int d0, int d1, int inner, float *dst);

    /* im2col over images n0 .. n0+ns-1 of a CNHW batch x[c][nb][h][w] for a
     * kh x kw kernel; col is [c*kh*kw][ns*oh*ow]:
     * col[(ci*kh + ki)*kw + kj][((n-n0)*oh + oy)*ow + ox] =
     *     x[ci][n][oy*stride - pad + ki][ox*stride - pad + kj] (0 outside). */
    void (*im2col)(void *ctx, const float *x, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                   int stride, int pad, float *col);
    /* The adjoint of im2col: sets images n0 .. n0+ns-1 of dx to the sums of
     * the col entries that read each of their values. */
    void (*col2im)(void *ctx, const float *col, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                   int stride, int pad, float *dx);

    /* Optional (NULL when a backend has none): direct convolution, for the
     * forward pass and the weight gradient, without an im2col matrix. Small
     * convolutions (few channels, small images) make GEMMs with a dimension
     * of 6 or 16, which BLAS libraries run far below their peak. A conv layer
     * uses these when conv_direct_supported() accepts its geometry; the input
     * gradient still goes through GEMM + col2im. CNHW layouts; w is
     * [oc][c][k][k].
     * fwd:  y = conv(x, w) + b, then max(y, 0) when relu.
     * dw:   dw (+)= the weight gradient for output gradient dy. */
    int (*conv_direct_supported)(void *ctx, int c, int k, int stride, int pad);
    void (*conv_direct_fwd)(void *ctx, const float *x, const float *w, const float *b, int c, int nb, int h,
                            int wd, int oc, int k, int relu, float *y);
    void (*conv_direct_dw)(void *ctx, const float *x, const float *dy, int c, int nb, int h, int wd, int oc,
                           int k, int accumulate, float *dw);

    /* Max pooling over `planes` independent h x w planes (floor output size,
     * no padding). argmax[i] is the index within its input plane of the value
     * chosen for output i (the first maximum on ties). */
    void (*maxpool_fwd)(void *ctx, const float *x, int planes, int h, int w, int k, int stride, float *y,
                        int32_t *argmax);
    /* dx = 0 except dx[argmax] += dy, plane by plane. When relu_y (the pool's
     * output) is not NULL, only outputs > 0 pass their gradient: this is the
     * backward of a ReLU before the pool, fused into the scatter (the maximum
     * of ReLU outputs is zero exactly when the chosen input is). */
    void (*maxpool_bwd)(void *ctx, const float *dy, const float *relu_y, const int32_t *argmax, int planes,
                        int h, int w, int k, int stride, float *dx);

    /* Softmax cross-entropy of logits [nb][classes] against host labels.
     * Adds the summed loss to *loss_sum and the number of rows whose first
     * maximum is the label to *correct (both host). When dlogits is not NULL
     * it receives scale * (softmax - onehot). */
    void (*softmax_xent)(void *ctx, const float *logits, const int32_t *host_labels, int nb, int classes,
                         float scale, float *dlogits, double *loss_sum, uint64_t *correct);

    /* dst += src, n values (sums the gradients of parallel workers). */
    void (*add)(void *ctx, float *dst, const float *src, size_t n);

    /* PyTorch's SGD step on n values: g' = g + wd * w; v = momentum * v + g';
     * w -= lr * v (v untouched and w -= lr * g' when momentum == 0). */
    void (*sgd_update)(void *ctx, float *w, const float *g, float *v, size_t n, float lr, float momentum,
                       float weight_decay);

    /* FedProx's proximal term on n values: g += mu * (w - w0), the gradient
     * of mu/2 * ||w - w0||^2 added to the loss's (before sgd_update). */
    void (*proximal_grad)(void *ctx, float *g, const float *w, const float *w0, size_t n, float mu);

    /* y += alpha * x, n values (SCAFFOLD's gradient correction, added to the
     * gradient before sgd_update). */
    void (*axpy)(void *ctx, float *y, const float *x, size_t n, float alpha);

    /* Optional (NULL on the CPU, where host data is used in place): data that
     * stays on the device. With both ops set, the trainer uploads a call's
     * examples and labels once (and each epoch's order of the examples once
     * per epoch), gathers every chunk on the device and reads the loss
     * statistics back once per epoch, so that nothing crosses to the host
     * per chunk or per step. */

    /* Like gather_rows, but src and idx are device memory and a row is
     * row_len 32-bit values: floats, or int32 labels with row_len 1. */
    void (*gather_rows_dev)(void *ctx, void *dst, const void *src, const uint32_t *idx, size_t count,
                            size_t row_len);
    /* Like softmax_xent, but the labels are device memory and the summed
     * loss and the hits are added to *acc, also device memory. The sum runs
     * in a fixed order, so that runs are reproducible. A label outside
     * [0, classes) gives a NaN loss. */
    void (*softmax_xent_dev)(void *ctx, const float *logits, const int32_t *labels, int nb, int classes,
                             float scale, float *dlogits, fedc__nn_xent_acc *acc);
} fedc__nn_backend_i;

typedef struct fedc__nn_backend {
    const fedc__nn_backend_i *iface;
    void *context;
} fedc__nn_backend;

/* The always-available CPU backend (OpenBLAS). Static; never freed. */
const fedc__nn_backend *fedc__nn_backend_cpu(void);

#ifdef __cplusplus
}
#endif

#endif /* FEDC_NN_BACKEND_H */
