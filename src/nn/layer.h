/*
 * Layers of the nn trainer (internal).
 *
 * A layer knows its geometry, points at its parameters and owns its
 * gradients, momentum buffers and the activations of one batch. All the
 * arithmetic goes through a fedc__nn_backend. Layers are plain structs so
 * that the unit tests can build one of any shape and check its gradients.
 *
 * Layouts (see backend.h): conv and pool take and produce CNHW batches;
 * dense takes and produces [N][F]; flatten turns CNHW into [N][C*H*W] in
 * PyTorch's channel-major order; relu keeps whatever layout it is given.
 */
#ifndef FEDC_NN_LAYER_H
#define FEDC_NN_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"

typedef enum fedc__nn_layer_kind {
    FEDC__NN_DENSE = 0,
    FEDC__NN_CONV2D = 1,
    FEDC__NN_MAXPOOL2D = 2,
    FEDC__NN_RELU = 3,
    FEDC__NN_FLATTEN = 4
} fedc__nn_layer_kind;

#define FEDC__NN_LAYER_NAME 32

typedef struct fedc__nn_layer {
    fedc__nn_layer_kind kind;
    char name[FEDC__NN_LAYER_NAME]; /* prefix of the parameter names ("conv1") */
    /* Geometry of one example. Dense layers use c for the features and
     * h = w = 1. */
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int k, stride, pad; /* conv and pool: square k x k window */
    int relu;           /* dense and conv: a ReLU fused onto the output */
    /* conv with relu followed by a max-pool: the pool's backward applies the
     * ReLU's mask (relu_mask on the pool), so the conv skips its own pass
     * over the larger, unpooled gradient. */
    int relu_bwd_in_next;
    int relu_mask; /* max-pool: apply the mask of the ReLU before it */
    /* flatten: the input is already [N][F] (the model's NCHW input), so the
     * layer only renames it. */
    int in_batch_major;
    /* Whether backward must produce dx (not for the first layer). Set before
     * the first reserve: it decides how a conv computes. */
    int need_dx;
    /* conv: runs on the backend's direct convolution instead of im2col +
     * GEMM (decided by reserve: only without need_dx, where supported). */
    int direct;
    /* conv without direct: images per im2col block. The batch goes through
     * im2col + GEMM in blocks whose im2col matrix fits in the L2 cache;
     * one matrix for the whole batch would be written to and read back from
     * main memory. */
    int block;

    /* Parameters: device memory owned by whoever set them (the model). */
    float *w, *b;
    size_t wn, bn;
    /* Gradients and momentum, owned by the layer (NULL when wn == 0). */
    float *dw, *db, *vw, *vb;

    /* Activations for up to `cap` examples, owned by the layer. `y` and `dx`
     * point either at the owned buffers or, for a flatten that only renames,
     * at its input and its output gradient. */
    int cap;
    float *y, *dx;
    float *ybuf, *dxbuf, *col;
    int32_t *argmax;
} fedc__nn_layer;

/* Sets up a layer's geometry. `out` is the number of output features
 * (dense) or channels (conv); k, stride, pad describe conv and pool windows;
 * relu fuses a ReLU into dense and conv. Returns FEDC_ERR_INVALID with a
 * message when the geometry does not fit (kernel larger than the input, ...).
 * Allocates nothing. */
int fedc__nn_layer_init(fedc__nn_layer *l, fedc__nn_layer_kind kind, const char *name, int in_c, int in_h,
                        int in_w, int out, int k, int stride, int pad, int relu, char *err, size_t errlen);

/* Allocates gradients and momentum buffers (zeroed) and activation buffers
 * for `cap` examples; may be called again with a larger cap, which replaces
 * the activation buffers. Returns FEDC_ERR_NOMEM on failure, after which the
 * layer holds no activation buffers (cap 0) but keeps the gradient and
 * momentum buffers it has: those stay in place until the release. */
int fedc__nn_layer_reserve(const fedc__nn_backend *be, fedc__nn_layer *l, int cap);

/* Frees everything the layer owns (not w and b). */
void fedc__nn_layer_release(const fedc__nn_backend *be, fedc__nn_layer *l);

/* Elements of one example's input and output. */
size_t fedc__nn_layer_in_numel(const fedc__nn_layer *l);
size_t fedc__nn_layer_out_numel(const fedc__nn_layer *l);

/* y = layer(x) for nb <= cap examples. */
void fedc__nn_layer_forward(const fedc__nn_backend *be, fedc__nn_layer *l, const float *x, int nb);

/* Given the input x of the last forward and the gradient dy of the loss
 * with respect to y, computes dw and db (added to the existing values when
 * accumulate, else overwriting them) and, when need_dx, dx. May overwrite
 * dy. Relies on the state of the last forward (outputs, pooling indices,
 * the conv's last im2col block), so a forward of the same x must come
 * before each backward. */
void fedc__nn_layer_backward(const fedc__nn_backend *be, fedc__nn_layer *l, const float *x, float *dy, int nb,
                             int accumulate);

#endif /* FEDC_NN_LAYER_H */
