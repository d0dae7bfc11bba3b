/*
 * Direct convolution kernels of the CPU backend (internal).
 *
 * For a first layer with one or a few input channels (the cnn's conv1:
 * 1 -> 6 channels, 5x5), im2col copies every pixel k*k times into a matrix
 * much larger than the cache and hands OpenBLAS a GEMM with 6 rows or 25
 * columns, a shape it runs at a fraction of its speed. These kernels instead
 * keep a row of outputs for a few channels in AVX2 registers and stream the
 * input once. They exist only for stride 1 and no padding, and only on CPUs
 * with AVX2 and FMA; fedc__nn_conv_direct_available() says whether they may
 * be called.
 */
#ifndef FEDC_NN_CONV_DIRECT_H
#define FEDC_NN_CONV_DIRECT_H

/* Non-zero when the kernels below can run on this CPU and are worth it for
 * this geometry (input channels c, kernel k x k, stride, pad). */
int fedc__nn_conv_direct_available(int c, int k, int stride, int pad);

/* y[o][n][oy][ox] = b[o] + sum over ci, ki, kj of w[o][ci][ki][kj] *
 * x[ci][n][oy + ki][ox + kj] for CNHW x of nb images of c x h x w, then
 * max(y, 0) when relu. Output oh = h - k + 1, ow = w - k + 1. */
void fedc__nn_conv_direct_fwd(const float *x, const float *w, const float *b, int c, int nb,
                              int h, int wd, int oc, int k, int relu, float *y);

/* dw[o][ci][ki][kj] (+)= sum over n, oy, ox of dy[o][n][oy][ox] *
 * x[ci][n][oy + ki][ox + kj]; adds to dw when accumulate, else overwrites. */
void fedc__nn_conv_direct_dw(const float *x, const float *dy, int c, int nb, int h, int wd,
                             int oc, int k, int accumulate, float *dw);

#endif /* FEDC_NN_CONV_DIRECT_H */
