/* Dense, conv2d, max-pool, ReLU and flatten layers over a compute backend. */
#include <stdio.h>
#include <string.h>

#include "fedc/core.h"
#include "nn/layer.h"

int fedc__nn_layer_init(fedc__nn_layer *l, fedc__nn_layer_kind kind, const char *name, int in_c, int in_h,
                        int in_w, int out, int k, int stride, int pad, int relu, char *err, size_t errlen)
{
    memset(l, 0, sizeof(*l));
    l->kind = kind;
    snprintf(l->name, sizeof(l->name), "%s", name ? name : "");
    l->in_c = in_c;
    l->in_h = in_h;
    l->in_w = in_w;
    l->k = k;
    l->stride = stride;
    l->pad = pad;
    l->relu = relu;
    l->need_dx = 1;
    if (in_c < 1 || in_h < 1 || in_w < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "layer '%s': empty input %dx%dx%d", l->name,
                              in_c, in_h, in_w);
    switch (kind) {
    case FEDC__NN_DENSE:
        if (out < 1 || in_h != 1 || in_w != 1)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "dense layer '%s': needs a flat input and >= 1 output", l->name);
        l->out_c = out;
        l->out_h = l->out_w = 1;
        l->wn = (size_t)out * in_c;
        l->bn = (size_t)out;
        return FEDC_OK;
    case FEDC__NN_CONV2D:
        if (out < 1 || k < 1 || stride < 1 || pad < 0 || in_h + 2 * pad < k || in_w + 2 * pad < k)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "conv layer '%s': kernel %d (stride %d, pad %d) does not fit "
                                  "a %dx%d input",
                                  l->name, k, stride, pad, in_h, in_w);
        l->out_c = out;
        l->out_h = (in_h + 2 * pad - k) / stride + 1;
        l->out_w = (in_w + 2 * pad - k) / stride + 1;
        l->wn = (size_t)out * in_c * k * k;
        l->bn = (size_t)out;
        return FEDC_OK;
    case FEDC__NN_MAXPOOL2D:
        if (k < 1 || stride < 1 || in_h < k || in_w < k)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "max-pool layer '%s': window %d does not fit a %dx%d input", l->name, k,
                                  in_h, in_w);
        l->out_c = in_c;
        l->out_h = (in_h - k) / stride + 1;
        l->out_w = (in_w - k) / stride + 1;
        return FEDC_OK;
    case FEDC__NN_RELU:
        l->out_c = in_c;
        l->out_h = in_h;
        l->out_w = in_w;
        return FEDC_OK;
    case FEDC__NN_FLATTEN:
        l->out_c = in_c * in_h * in_w;
        l->out_h = l->out_w = 1;
        return FEDC_OK;
    }
    return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "layer '%s': unknown kind %d", l->name, (int)kind);
}

/* Target size of a conv's im2col block unless the backend sets its own:
 * about half of a typical 512 KiB L2 cache, leaving room for the weights
 * and the output block. */
#define COL_BLOCK_BYTES (256u * 1024u)

size_t fedc__nn_layer_in_numel(const fedc__nn_layer *l)
{
    return (size_t)l->in_c * l->in_h * l->in_w;
}

size_t fedc__nn_layer_out_numel(const fedc__nn_layer *l)
{
    return (size_t)l->out_c * l->out_h * l->out_w;
}

/* A flatten whose input already has each example contiguous (batch-major,
 * or a single channel, where CNHW and NCHW coincide) only renames it. */
static int flatten_is_alias(const fedc__nn_layer *l)
{
    return l->kind == FEDC__NN_FLATTEN && (l->in_batch_major || l->in_c == 1);
}

static void release_activations(const fedc__nn_backend *be, fedc__nn_layer *l)
{
    be->iface->free(be->context, l->ybuf);
    be->iface->free(be->context, l->dxbuf);
    be->iface->free(be->context, l->col);
    be->iface->free(be->context, l->argmax);
    l->ybuf = l->dxbuf = l->col = NULL;
    l->argmax = NULL;
    l->y = l->dx = NULL;
    l->cap = 0;
}

int fedc__nn_layer_reserve(const fedc__nn_backend *be, fedc__nn_layer *l, int cap)
{
    const fedc__nn_backend_i *bi = be->iface;
    void *ctx = be->context;
    /* Gradient and momentum buffers live from their allocation to the
     * release, failed reservations included: the model keeps pointers to
     * them. */
    if (l->wn) {
        if (!l->dw) l->dw = bi->alloc(ctx, l->wn * sizeof(float));
        if (!l->db) l->db = bi->alloc(ctx, l->bn * sizeof(float));
        if (!l->vw) l->vw = bi->alloc(ctx, l->wn * sizeof(float));
        if (!l->vb) l->vb = bi->alloc(ctx, l->bn * sizeof(float));
        if (!l->dw || !l->db || !l->vw || !l->vb) return FEDC_ERR_NOMEM;
    }
    if (cap <= l->cap) return FEDC_OK;
    release_activations(be, l);
    size_t in_n = (size_t)cap * fedc__nn_layer_in_numel(l);
    size_t out_n = (size_t)cap * fedc__nn_layer_out_numel(l);
    if (!flatten_is_alias(l)) {
        l->ybuf = bi->alloc(ctx, out_n * sizeof(float));
        if (l->need_dx) l->dxbuf = bi->alloc(ctx, in_n * sizeof(float));
        if (!l->ybuf || (l->need_dx && !l->dxbuf)) goto fail;
    }
    l->direct = l->kind == FEDC__NN_CONV2D && bi->conv_direct_supported &&
                bi->conv_direct_supported(ctx, l->in_c, l->k, l->stride, l->pad);
    /* The im2col matrix serves the GEMM path and, in both paths, the
     * gradient of the input (W^T dy, folded back by col2im). */
    if (l->kind == FEDC__NN_CONV2D && (!l->direct || l->need_dx)) {
        size_t per_image = (size_t)l->in_c * l->k * l->k * l->out_h * l->out_w * sizeof(float);
        size_t block = (bi->col_block_bytes ? bi->col_block_bytes : COL_BLOCK_BYTES) / per_image;
        l->block = block < 1 ? 1 : block > (size_t)cap ? cap : (int)block;
        l->col = bi->alloc(ctx, per_image * (size_t)l->block);
        if (!l->col) goto fail;
    }
    if (l->kind == FEDC__NN_MAXPOOL2D) {
        l->argmax = bi->alloc(ctx, out_n * sizeof(int32_t));
        if (!l->argmax) goto fail;
    }
    l->y = l->ybuf;
    l->dx = l->dxbuf;
    l->cap = cap;
    return FEDC_OK;
fail:
    release_activations(be, l);
    return FEDC_ERR_NOMEM;
}

void fedc__nn_layer_release(const fedc__nn_backend *be, fedc__nn_layer *l)
{
    release_activations(be, l);
    be->iface->free(be->context, l->dw);
    be->iface->free(be->context, l->db);
    be->iface->free(be->context, l->vw);
    be->iface->free(be->context, l->vb);
    l->dw = l->db = l->vw = l->vb = NULL;
}

void fedc__nn_layer_forward(const fedc__nn_backend *be, fedc__nn_layer *l, const float *x, int nb)
{
    const fedc__nn_backend_i *bi = be->iface;
    void *ctx = be->context;
    switch (l->kind) {
    case FEDC__NN_DENSE: {
        int in = l->in_c, out = l->out_c;
        /* y[N, out] = x[N, in] * W[out, in]^T, then bias and ReLU in one pass. */
        bi->gemm(ctx, 0, 1, nb, out, in, 1.0f, x, in, l->w, in, 0.0f, l->y, out);
        bi->bias_act(ctx, l->y, l->b, nb, out, 0, l->relu);
        break;
    }
    case FEDC__NN_CONV2D: {
        int kk = l->in_c * l->k * l->k;
        int np = nb * l->out_h * l->out_w;
        if (l->direct) {
            bi->conv_direct_fwd(ctx, x, l->w, l->b, l->in_c, nb, l->in_h, l->in_w, l->out_c, l->k, l->relu,
                                l->y);
            break;
        }
        /* Per block of images: W[OC, K] * col[K, block*P] lands directly in
         * the block's columns of the CNHW output (row stride N*P). */
        const int p = l->out_h * l->out_w;
        for (int n0 = 0; n0 < nb; n0 += l->block) {
            int ns = nb - n0 < l->block ? nb - n0 : l->block;
            bi->im2col(ctx, x, l->in_c, nb, n0, ns, l->in_h, l->in_w, l->k, l->k, l->stride, l->pad, l->col);
            bi->gemm(ctx, 0, 0, l->out_c, ns * p, kk, 1.0f, l->w, kk, l->col, ns * p, 0.0f,
                     l->y + (size_t)n0 * p, np);
        }
        bi->bias_act(ctx, l->y, l->b, l->out_c, np, 1, l->relu);
        break;
    }
    case FEDC__NN_MAXPOOL2D:
        bi->maxpool_fwd(ctx, x, l->in_c * nb, l->in_h, l->in_w, l->k, l->stride, l->y, l->argmax);
        break;
    case FEDC__NN_RELU: bi->relu_fwd(ctx, x, l->y, (size_t)nb * fedc__nn_layer_in_numel(l)); break;
    case FEDC__NN_FLATTEN:
        if (flatten_is_alias(l))
            l->y = (float *)x;
        else
            bi->swap01(ctx, x, l->in_c, nb, l->in_h * l->in_w, l->y);
        break;
    }
}

void fedc__nn_layer_backward(const fedc__nn_backend *be, fedc__nn_layer *l, const float *x, float *dy, int nb,
                             int accumulate)
{
    const fedc__nn_backend_i *bi = be->iface;
    void *ctx = be->context;
    float beta = accumulate ? 1.0f : 0.0f;
    switch (l->kind) {
    case FEDC__NN_DENSE: {
        int in = l->in_c, out = l->out_c;
        if (l->relu) bi->relu_bwd(ctx, l->y, dy, dy, (size_t)nb * out);
        bi->gemm(ctx, 1, 0, out, in, nb, 1.0f, dy, out, x, in, beta, l->dw, in);
        bi->bias_grad(ctx, dy, nb, out, 0, accumulate, l->db);
        if (l->need_dx) bi->gemm(ctx, 0, 0, nb, in, out, 1.0f, dy, out, l->w, in, 0.0f, l->dx, in);
        break;
    }
    case FEDC__NN_CONV2D: {
        int kk = l->in_c * l->k * l->k;
        int np = nb * l->out_h * l->out_w;
        if (l->relu && !l->relu_bwd_in_next) bi->relu_bwd(ctx, l->y, dy, dy, (size_t)l->out_c * np);
        bi->bias_grad(ctx, dy, l->out_c, np, 1, accumulate, l->db);
        const int p = l->out_h * l->out_w;
        if (l->direct) {
            bi->conv_direct_dw(ctx, x, dy, l->in_c, nb, l->in_h, l->in_w, l->out_c, l->k, accumulate, l->dw);
            if (!l->need_dx) break;
            for (int n0 = 0; n0 < nb; n0 += l->block) {
                int ns = nb - n0 < l->block ? nb - n0 : l->block;
                bi->gemm(ctx, 1, 0, kk, ns * p, l->out_c, 1.0f, l->w, kk, dy + (size_t)n0 * p, np, 0.0f,
                         l->col, ns * p);
                bi->col2im(ctx, l->col, l->in_c, nb, n0, ns, l->in_h, l->in_w, l->k, l->k, l->stride, l->pad,
                           l->dx);
            }
            break;
        }
        /* Blocks in reverse order: the last block's im2col matrix is still in
         * place from the forward pass. */
        const int last = (nb - 1) / l->block * l->block;
        for (int n0 = last; n0 >= 0; n0 -= l->block) {
            int ns = nb - n0 < l->block ? nb - n0 : l->block;
            const float *dyb = dy + (size_t)n0 * p;
            if (n0 != last)
                bi->im2col(ctx, x, l->in_c, nb, n0, ns, l->in_h, l->in_w, l->k, l->k, l->stride, l->pad,
                           l->col);
            bi->gemm(ctx, 0, 1, l->out_c, kk, ns * p, 1.0f, dyb, np, l->col, ns * p,
                     (accumulate || n0 != last) ? 1.0f : 0.0f, l->dw, kk);
            if (l->need_dx) {
                /* The block's im2col matrix is no longer needed: reuse it for
                 * its gradient. */
                bi->gemm(ctx, 1, 0, kk, ns * p, l->out_c, 1.0f, l->w, kk, dyb, np, 0.0f, l->col, ns * p);
                bi->col2im(ctx, l->col, l->in_c, nb, n0, ns, l->in_h, l->in_w, l->k, l->k, l->stride, l->pad,
                           l->dx);
            }
        }
        break;
    }
    case FEDC__NN_MAXPOOL2D:
        if (l->need_dx)
            bi->maxpool_bwd(ctx, dy, l->relu_mask ? l->y : NULL, l->argmax, l->in_c * nb, l->in_h, l->in_w,
                            l->k, l->stride, l->dx);
        break;
    case FEDC__NN_RELU:
        if (l->need_dx) bi->relu_bwd(ctx, l->y, dy, l->dx, (size_t)nb * fedc__nn_layer_in_numel(l));
        break;
    case FEDC__NN_FLATTEN:
        if (flatten_is_alias(l))
            l->dx = dy;
        else if (l->need_dx)
            bi->swap01(ctx, dy, nb, l->in_c, l->in_h * l->in_w, l->dx);
        break;
    }
}
