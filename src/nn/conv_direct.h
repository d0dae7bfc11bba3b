/*
 * Direct convolution kernels of the CPU backend (internal).
 *
 * The cnn's convolutions are small: conv1 maps 1 channel to 6 with a 5x5
 * kernel, conv2 6 channels to 16 on 12x12 images. As im2col + GEMM they
 * become GEMMs with 6 or 16 rows (or 25 columns) that OpenBLAS runs at a
 * fraction of its speed, after copying every input value k*k times into a
 * matrix larger than the cache. These kernels instead keep a tile of
 * outputs (3 channels x 3 vectors of 8 columns) in AVX2 registers and read
 * the input where it is. They handle stride 1 without padding, on CPUs with
 * AVX2 and FMA; fedc__nn_conv_direct_available() says whether they may be
 * called. Results do not depend on the thread count.
 */
#ifndef FEDC_NN_CONV_DIRECT_H
#define FEDC_NN_CONV_DIRECT_H

/* Non-zero when the kernels below can run on this CPU and take this
 * geometry (input channels c, kernel k x k, stride, pad). */
int fedc__nn_conv_direct_available(int c, int k, int stride, int pad);

/* y[o][n][oy][ox] = b[o] + sum over ci, ki, kj of w[o][ci][ki][kj] *
 * x[ci][n][oy + ki][ox + kj] for CNHW x of nb images of c x h x w, then
 * max(y, 0) when relu. Output oh = h - k + 1, ow = w - k + 1. */
void fedc__nn_conv_direct_fwd(const float *x, const float *w, const float *b, int c, int nb, int h, int wd,
                              int oc, int k, int relu, float *y);

/* dw[o][ci][ki][kj] (+)= sum over n, oy, ox of dy[o][n][oy][ox] *
 * x[ci][n][oy + ki][ox + kj]; adds to dw when accumulate, else overwrites. */
void fedc__nn_conv_direct_dw(const float *x, const float *dy, int c, int nb, int h, int wd, int oc, int k,
                             int accumulate, float *dw);

#endif /* FEDC_NN_CONV_DIRECT_H */
