/* Direct convolution kernels in AVX2 + FMA (see conv_direct.h). */
#include <stddef.h>

#include "nn/conv_direct.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__has_include)
#if __has_include(<immintrin.h>)
#define HAVE_X86_KERNELS 1
#endif
#endif

#ifdef HAVE_X86_KERNELS
#include <immintrin.h>

#define KERNEL        __attribute__((target("avx2,fma")))
#define INLINE_KERNEL KERNEL static inline __attribute__((always_inline))

int fedc__nn_conv_direct_available(int c, int k, int stride, int pad)
{
    if (c < 1 || k < 1 || stride != 1 || pad != 0) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* A mask whose first `lanes` (0..8) 32-bit lanes are set. */
INLINE_KERNEL __m256i lane_mask(int lanes)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), idx);
}

INLINE_KERNEL float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 sh = _mm_movehdup_ps(s);
    s = _mm_add_ps(s, sh);
    sh = _mm_movehl_ps(sh, s);
    return _mm_cvtss_f32(_mm_add_ss(s, sh));
}

/*
 * The output planes of a batch are cut into "slots": 8 consecutive columns
 * of one output row of one image (the last slot of a row may be partial).
 * A row of 24 columns is three slots; a row of 8 is one, so that narrow
 * outputs (the cnn's conv2, 8x8) still fill whole vectors by taking slots
 * from several rows. Kernels walk the slots in order (image, row, column).
 */
typedef struct slot {
    ptrdiff_t in;  /* offset of the slot's first input value in a channel's batch */
    ptrdiff_t out; /* offset of its first output value in a channel's batch */
    int lanes;     /* valid columns, 0..8 (0: past the end of the batch) */
} slot;

typedef struct slot_walk {
    int n, oy, vx;          /* the next slot */
    int nb, oh, ow, nvx, w; /* geometry */
    ptrdiff_t plane_in, plane_out;
} slot_walk;

static inline void walk_init(slot_walk *s, int nb, int h, int w, int k)
{
    s->n = s->oy = s->vx = 0;
    s->nb = nb;
    s->oh = h - k + 1;
    s->ow = w - k + 1;
    s->nvx = (s->ow + 7) / 8;
    s->w = w;
    s->plane_in = (ptrdiff_t)h * w;
    s->plane_out = (ptrdiff_t)s->oh * s->ow;
}

static inline slot walk_next(slot_walk *s)
{
    slot r = {0, 0, 0};
    if (s->n >= s->nb) return r;
    r.in = s->n * s->plane_in + (ptrdiff_t)s->oy * s->w + 8 * s->vx;
    r.out = s->n * s->plane_out + (ptrdiff_t)s->oy * s->ow + 8 * s->vx;
    r.lanes = s->ow - 8 * s->vx < 8 ? s->ow - 8 * s->vx : 8;
    if (++s->vx == s->nvx) {
        s->vx = 0;
        if (++s->oy == s->oh) {
            s->oy = 0;
            s->n++;
        }
    }
    return r;
}

/* Forward tiles: up to 3 output channels x 3 slots. Nine accumulators,
 * three input vectors and a broadcast weight fit the 16 AVX2 registers, and
 * each input load feeds three FMAs. `chans` and `full` (all three slots
 * whole) are constants at each call (always_inline), so the loops unroll
 * and the accumulators stay in registers. */
#define TILE_SLOTS 3

INLINE_KERNEL void fwd_tile(const float *x, const float *w, const float *b, int c, int nb, int h, int wd,
                            int k, int relu, float *y, int o0, const slot *sl, const __m256i *mask,
                            const int chans, const int full)
{
    const ptrdiff_t cin = (ptrdiff_t)nb * h * wd;                      /* between input channels */
    const ptrdiff_t cout = (ptrdiff_t)nb * (h - k + 1) * (wd - k + 1); /* between outputs */
    const size_t wstride = (size_t)c * k * k;
    __m256 acc[3][TILE_SLOTS];
    for (int g = 0; g < chans; g++)
        for (int v = 0; v < TILE_SLOTS; v++) acc[g][v] = _mm256_broadcast_ss(b + o0 + g);
    for (int ci = 0; ci < c; ci++)
        for (int ki = 0; ki < k; ki++) {
            const float *xr = x + ci * cin + (ptrdiff_t)ki * wd;
            const float *wr = w + (size_t)o0 * wstride + ((size_t)ci * k + ki) * k;
            for (int kj = 0; kj < k; kj++) {
                __m256 xv[TILE_SLOTS];
                for (int v = 0; v < TILE_SLOTS; v++)
                    xv[v] = full ? _mm256_loadu_ps(xr + sl[v].in + kj)
                                 : _mm256_maskload_ps(xr + sl[v].in + kj, mask[v]);
                for (int g = 0; g < chans; g++) {
                    __m256 wv = _mm256_broadcast_ss(wr + g * wstride + kj);
                    for (int v = 0; v < TILE_SLOTS; v++) acc[g][v] = _mm256_fmadd_ps(wv, xv[v], acc[g][v]);
                }
            }
        }
    const __m256 zero = _mm256_setzero_ps();
    for (int g = 0; g < chans; g++)
        for (int v = 0; v < TILE_SLOTS; v++) {
            float *yp = y + (o0 + g) * cout + sl[v].out;
            __m256 r = relu ? _mm256_max_ps(acc[g][v], zero) : acc[g][v];
            if (full)
                _mm256_storeu_ps(yp, r);
            else
                _mm256_maskstore_ps(yp, mask[v], r);
        }
}

KERNEL void fedc__nn_conv_direct_fwd(const float *x, const float *w, const float *b, int c, int nb, int h,
                                     int wd, int oc, int k, int relu, float *y)
{
    slot_walk walk;
    walk_init(&walk, nb, h, wd, k);
    while (walk.n < nb) {
        slot sl[TILE_SLOTS];
        __m256i mask[TILE_SLOTS];
        int full = 1;
        for (int v = 0; v < TILE_SLOTS; v++) {
            sl[v] = walk_next(&walk);
            mask[v] = lane_mask(sl[v].lanes);
            full &= sl[v].lanes == 8;
        }
        /* The input rows of the tile stay in L1 across the channel groups. */
        int o0 = 0;
        if (full) {
            for (; o0 + 3 <= oc; o0 += 3) fwd_tile(x, w, b, c, nb, h, wd, k, relu, y, o0, sl, mask, 3, 1);
            for (; o0 < oc; o0++) fwd_tile(x, w, b, c, nb, h, wd, k, relu, y, o0, sl, mask, 1, 1);
        } else {
            for (; o0 + 3 <= oc; o0 += 3) fwd_tile(x, w, b, c, nb, h, wd, k, relu, y, o0, sl, mask, 3, 0);
            for (; o0 < oc; o0++) fwd_tile(x, w, b, c, nb, h, wd, k, relu, y, o0, sl, mask, 1, 0);
        }
    }
}

/* Weight gradient of `chans` (2 or 1) output channels o0.. for `cols`
 * (5 or 1) adjacent kernel columns kj0.. of one (ci, ki), summed over every
 * output row of the batch: ten independent accumulators keep the FMA units busy,
 * and each input load feeds both channels. Constants as in fwd_tile. */
INLINE_KERNEL void dw_tile(const float *x, const float *dy, int c, int nb, int h, int wd, int k,
                           int accumulate, float *dw, int o0, int ci, int ki, int kj0, const int chans,
                           const int cols)
{
    const ptrdiff_t cin = (ptrdiff_t)nb * h * wd;
    const ptrdiff_t cout = (ptrdiff_t)nb * (h - k + 1) * (wd - k + 1);
    const float *xc = x + ci * cin + (ptrdiff_t)ki * wd + kj0;
    const float *d0p = dy + o0 * cout, *d1p = d0p + cout;
    __m256 acc[2][5];
    for (int g = 0; g < chans; g++)
        for (int j = 0; j < cols; j++) acc[g][j] = _mm256_setzero_ps();
    const int oh = h - k + 1, ow = wd - k + 1, nfull = ow / 8, tail = ow % 8;
    const ptrdiff_t plane_in = (ptrdiff_t)h * wd, plane_out = (ptrdiff_t)oh * ow;
    const __m256i tmask = lane_mask(tail);
    for (int n = 0; n < nb; n++)
        for (int oy = 0; oy < oh; oy++) {
            const ptrdiff_t in = n * plane_in + (ptrdiff_t)oy * wd;
            const ptrdiff_t out = n * plane_out + (ptrdiff_t)oy * ow;
            __m256 d0, d1 = _mm256_setzero_ps();
            for (int vx = 0; vx < nfull; vx++) {
                d0 = _mm256_loadu_ps(d0p + out + 8 * vx);
                if (chans == 2) d1 = _mm256_loadu_ps(d1p + out + 8 * vx);
                for (int j = 0; j < cols; j++) {
                    __m256 xv = _mm256_loadu_ps(xc + in + 8 * vx + j);
                    acc[0][j] = _mm256_fmadd_ps(d0, xv, acc[0][j]);
                    if (chans == 2) acc[1][j] = _mm256_fmadd_ps(d1, xv, acc[1][j]);
                }
            }
            if (tail) {
                /* Masked lanes load as zero, so they add nothing. */
                d0 = _mm256_maskload_ps(d0p + out + 8 * nfull, tmask);
                if (chans == 2) d1 = _mm256_maskload_ps(d1p + out + 8 * nfull, tmask);
                for (int j = 0; j < cols; j++) {
                    __m256 xv = _mm256_maskload_ps(xc + in + 8 * nfull + j, tmask);
                    acc[0][j] = _mm256_fmadd_ps(d0, xv, acc[0][j]);
                    if (chans == 2) acc[1][j] = _mm256_fmadd_ps(d1, xv, acc[1][j]);
                }
            }
        }
    for (int g = 0; g < chans; g++)
        for (int j = 0; j < cols; j++) {
            float s = hsum(acc[g][j]);
            float *d = dw + (((size_t)(o0 + g) * c + ci) * k + ki) * k + kj0 + j;
            *d = accumulate ? *d + s : s;
        }
}

INLINE_KERNEL void dw_channels(const float *x, const float *dy, int c, int nb, int h, int wd, int k,
                               int accumulate, float *dw, int o0, const int chans)
{
    for (int ci = 0; ci < c; ci++)
        for (int ki = 0; ki < k; ki++) {
            int kj0 = 0;
            for (; kj0 + 5 <= k; kj0 += 5)
                dw_tile(x, dy, c, nb, h, wd, k, accumulate, dw, o0, ci, ki, kj0, chans, 5);
            for (; kj0 < k; kj0++) dw_tile(x, dy, c, nb, h, wd, k, accumulate, dw, o0, ci, ki, kj0, chans, 1);
        }
}

KERNEL void fedc__nn_conv_direct_dw(const float *x, const float *dy, int c, int nb, int h, int wd, int oc,
                                    int k, int accumulate, float *dw)
{
    int o0 = 0;
    for (; o0 + 2 <= oc; o0 += 2) dw_channels(x, dy, c, nb, h, wd, k, accumulate, dw, o0, 2);
    for (; o0 < oc; o0++) dw_channels(x, dy, c, nb, h, wd, k, accumulate, dw, o0, 1);
}

#else /* no x86 kernels: the CPU backend always takes the im2col path */

int fedc__nn_conv_direct_available(int c, int k, int stride, int pad)
{
    (void)c;
    (void)k;
    (void)stride;
    (void)pad;
    return 0;
}

void fedc__nn_conv_direct_fwd(const float *x, const float *w, const float *b, int c, int nb, int h, int wd,
                              int oc, int k, int relu, float *y)
{
    (void)x, (void)w, (void)b, (void)c, (void)nb, (void)h, (void)wd, (void)oc, (void)k;
    (void)relu, (void)y;
}

void fedc__nn_conv_direct_dw(const float *x, const float *dy, int c, int nb, int h, int wd, int oc, int k,
                             int accumulate, float *dw)
{
    (void)x, (void)dy, (void)c, (void)nb, (void)h, (void)wd, (void)oc, (void)k;
    (void)accumulate, (void)dw;
}

#endif
