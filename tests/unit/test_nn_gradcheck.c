/*
 * Gradients of every nn layer, and of whole models, against central finite
 * differences.
 *
 * For a layer y = f(x; w, b) the test uses the scalar L = sum(r .* y) for a
 * fixed random r, so that dL/dy = r; backward() must then give dL/dx, dL/dw
 * and dL/db. L is summed in double and the layers compute in float, so the
 * step and the tolerances are sized for float rounding. Where a ReLU or a
 * max-pool makes f piecewise linear, the inputs keep away from the kinks, or
 * a coordinate whose step crosses a kink is recognised and skipped.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "nn/backend.h"
#include "nn/layer.h"
#include "nn/model.h"
#include "test_util.h"

/* The backend the checks run on: the CPU backend, and the same backend with
 * its direct convolution kernels removed, so that both conv paths (direct
 * and im2col + GEMM) are checked on machines that have the kernels. */
static const fedc__nn_backend *be;
static fedc__nn_backend_i plain_iface;
static fedc__nn_backend plain_backend;
static const char *be_name = "cpu";

static void fill_uniform(fedc_rng *rng, float *v, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * fedc_rng_uniform(rng));
}

/* Values of magnitude in [0.05, 1] with a random sign: far from ReLU's kink
 * compared with the finite-difference step. */
static void fill_away_from_zero(fedc_rng *rng, float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float a = (float)(0.05 + 0.95 * fedc_rng_uniform(rng));
        v[i] = fedc_rng_uniform(rng) < 0.5 ? -a : a;
    }
}

static double dot_output(const fedc__nn_layer *l, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)r[i] * (double)l->y[i];
    return s;
}

/* A bitmask-free fingerprint of which outputs are exactly zero, to notice a
 * finite-difference step that switches a fused ReLU on or off. */
static unsigned long zero_pattern(const fedc__nn_layer *l, size_t n)
{
    unsigned long h = 1469598103u;
    for (size_t i = 0; i < n; i++) h = h * 31u + (l->y[i] == 0.0f ? 1u : 2u);
    return h;
}

typedef struct grad_report {
    int checked, skipped;
    double worst; /* largest |analytic - numeric| / (atol + rtol * scale) */
} grad_report;

/* Central differences of L with respect to each of the n values at v,
 * compared with the analytic gradient g. */
static void check_coords(fedc__nn_layer *l, const float *x, int nb, const float *r, size_t out_n, float *v,
                         const float *g, size_t n, double eps, grad_report *rep)
{
    const double atol = 2e-3, rtol = 1e-2;
    for (size_t i = 0; i < n; i++) {
        float saved = v[i];
        v[i] = (float)(saved + eps);
        double hi_eps = (double)v[i] - saved;
        fedc__nn_layer_forward(be, l, x, nb);
        double lp = dot_output(l, r, out_n);
        unsigned long zp = zero_pattern(l, out_n);
        v[i] = (float)(saved - eps);
        double lo_eps = saved - (double)v[i];
        fedc__nn_layer_forward(be, l, x, nb);
        double lm = dot_output(l, r, out_n);
        unsigned long zm = zero_pattern(l, out_n);
        v[i] = saved;
        if (zp != zm) {
            rep->skipped++;
            continue;
        }
        double num = (lp - lm) / (hi_eps + lo_eps);
        double ana = g[i];
        double scale = fabs(num) > fabs(ana) ? fabs(num) : fabs(ana);
        double err = fabs(num - ana) / (atol + rtol * scale);
        if (err > rep->worst) rep->worst = err;
        rep->checked++;
    }
}

/* Runs the finite-difference check of one initialised layer on nb examples
 * with input x and reports input (when need_dx) and parameter gradients. */
static void gradcheck_layer_dx(const char *what, fedc__nn_layer *l, float *x, int nb, uint64_t seed,
                               int need_dx)
{
    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    size_t in_n = (size_t)nb * fedc__nn_layer_in_numel(l);
    size_t out_n = (size_t)nb * fedc__nn_layer_out_numel(l);
    float *r = malloc(out_n * sizeof(float));
    float *dy = malloc(out_n * sizeof(float));
    float *dx = malloc(in_n * sizeof(float));
    float *dw = malloc((l->wn + 1) * sizeof(float));
    float *db = malloc((l->bn + 1) * sizeof(float));
    fill_uniform(&rng, r, out_n, -1.0, 1.0);

    l->need_dx = need_dx;
    CHECK(fedc__nn_layer_reserve(be, l, nb) == FEDC_OK, "%s: reserve buffers", what);
    fedc__nn_layer_forward(be, l, x, nb);
    memcpy(dy, r, out_n * sizeof(float));
    fedc__nn_layer_backward(be, l, x, dy, nb, 0);
    if (need_dx) memcpy(dx, l->dx, in_n * sizeof(float));
    if (l->wn) {
        memcpy(dw, l->dw, l->wn * sizeof(float));
        memcpy(db, l->db, l->bn * sizeof(float));
    }

    grad_report rx = {0, 0, 0.0}, rw = {0, 0, 0.0}, rb = {0, 0, 0.0};
    if (need_dx) {
        check_coords(l, x, nb, r, out_n, x, dx, in_n, 1e-3, &rx);
        CHECK(rx.worst <= 1.0 && rx.skipped * 10 <= rx.checked + rx.skipped,
              "%s: input gradient, %d values (%d skipped at kinks), worst error %.3f of "
              "tolerance",
              what, rx.checked, rx.skipped, rx.worst);
    }
    if (l->wn) {
        check_coords(l, x, nb, r, out_n, l->w, dw, l->wn, 1e-3, &rw);
        CHECK(rw.worst <= 1.0 && rw.skipped * 10 <= rw.checked + rw.skipped,
              "%s: weight gradient, %d values (%d skipped at kinks), worst error %.3f of "
              "tolerance",
              what, rw.checked, rw.skipped, rw.worst);
        check_coords(l, x, nb, r, out_n, l->b, db, l->bn, 1e-3, &rb);
        CHECK(rb.worst <= 1.0 && rb.skipped * 10 <= rb.checked + rb.skipped,
              "%s: bias gradient, %d values (%d skipped at kinks), worst error %.3f of tolerance", what,
              rb.checked, rb.skipped, rb.worst);

        /* Accumulating a second backward must add the same gradient again. */
        fedc__nn_layer_forward(be, l, x, nb);
        memcpy(dy, r, out_n * sizeof(float));
        fedc__nn_layer_backward(be, l, x, dy, nb, 1);
        double worst = 0.0;
        for (size_t i = 0; i < l->wn; i++) worst = fmax(worst, fabs(l->dw[i] - 2.0 * dw[i]));
        for (size_t i = 0; i < l->bn; i++) worst = fmax(worst, fabs(l->db[i] - 2.0 * db[i]));
        CHECK(worst < 1e-4, "%s: accumulated backward doubles the gradient (max diff %.2e)", what, worst);
    }
    fedc__nn_layer_release(be, l);
    free(r);
    free(dy);
    free(dx);
    free(dw);
    free(db);
}

static void gradcheck_layer(const char *what, fedc__nn_layer *l, float *x, int nb, uint64_t seed)
{
    gradcheck_layer_dx(what, l, x, nb, seed, 1);
}

static void test_dense(int relu)
{
    fedc__nn_layer l;
    fedc_rng rng;
    fedc_rng_seed(&rng, 11);
    const int nb = 3, in = 7, out = 5;
    char err[FEDC_ERRMSG_MAX];
    int rc = fedc__nn_layer_init(&l, FEDC__NN_DENSE, "fc", in, 1, 1, out, 0, 0, 0, relu, err, sizeof(err));
    CHECK(rc == FEDC_OK, "dense%s: init", relu ? "+relu" : "");
    float w[35], b[5], x[21];
    fill_uniform(&rng, w, 35, -0.5, 0.5);
    fill_uniform(&rng, b, 5, -0.5, 0.5);
    fill_uniform(&rng, x, 21, -1.0, 1.0);
    l.w = w;
    l.b = b;
    gradcheck_layer(relu ? "dense+relu 7->5" : "dense 7->5", &l, x, nb, 12);
}

static void test_conv(int c, int h, int w, int out, int k, int stride, int pad, int relu, int nb)
{
    fedc__nn_layer l;
    fedc_rng rng;
    fedc_rng_seed(&rng, 21 + (uint64_t)stride * 7 + (uint64_t)pad);
    char err[FEDC_ERRMSG_MAX], what[128];
    snprintf(what, sizeof(what), "[%s] conv %dx%dx%d -> %d, k%d s%d p%d%s, batch %d", be_name, c, h, w, out,
             k, stride, pad, relu ? " +relu" : "", nb);
    int rc = fedc__nn_layer_init(&l, FEDC__NN_CONV2D, "conv", c, h, w, out, k, stride, pad, relu, err,
                                 sizeof(err));
    CHECK(rc == FEDC_OK, "%s: init (output %dx%d)", what, l.out_h, l.out_w);
    l.need_dx = 1;
    if (fedc__nn_layer_reserve(be, &l, nb) == FEDC_OK)
        printf("     %s: %s\n", what, l.direct ? "direct kernels" : "im2col + GEMM");
    fedc__nn_layer_release(be, &l);
    float *wt = malloc(l.wn * sizeof(float)), *bs = malloc(l.bn * sizeof(float));
    size_t xn = (size_t)nb * c * h * w;
    float *x = malloc(xn * sizeof(float));
    fill_uniform(&rng, wt, l.wn, -0.5, 0.5);
    fill_uniform(&rng, bs, l.bn, -0.5, 0.5);
    fill_uniform(&rng, x, xn, -1.0, 1.0);
    l.w = wt;
    l.b = bs;
    gradcheck_layer(what, &l, x, nb, 22);
    free(wt);
    free(bs);
    free(x);
}

/* A conv on a CNHW batch must agree with a direct loop over NCHW indices:
 * this pins the layout, which finite differences alone would not. */
static void test_conv_values(void)
{
    const int c = 2, h = 5, w = 6, oc = 3, k = 3, nb = 2, stride = 1, pad = 1;
    fedc__nn_layer l;
    char err[FEDC_ERRMSG_MAX];
    fedc_rng rng;
    fedc_rng_seed(&rng, 5);
    fedc__nn_layer_init(&l, FEDC__NN_CONV2D, "conv", c, h, w, oc, k, stride, pad, 0, err, sizeof(err));
    float wt[3 * 2 * 3 * 3], bs[3], x[2 * 2 * 5 * 6];
    fill_uniform(&rng, wt, sizeof(wt) / sizeof(wt[0]), -1, 1);
    fill_uniform(&rng, bs, 3, -1, 1);
    fill_uniform(&rng, x, sizeof(x) / sizeof(x[0]), -1, 1);
    l.w = wt;
    l.b = bs;
    fedc__nn_layer_reserve(be, &l, nb);
    fedc__nn_layer_forward(be, &l, x, nb); /* x is read as CNHW: x[ci][n][i][j] */
    double worst = 0.0;
    for (int n = 0; n < nb; n++)
        for (int o = 0; o < oc; o++)
            for (int i = 0; i < l.out_h; i++)
                for (int j = 0; j < l.out_w; j++) {
                    double s = bs[o];
                    for (int ci = 0; ci < c; ci++)
                        for (int ki = 0; ki < k; ki++)
                            for (int kj = 0; kj < k; kj++) {
                                int ii = i - pad + ki, jj = j - pad + kj;
                                if (ii < 0 || ii >= h || jj < 0 || jj >= w) continue;
                                s += (double)wt[((o * c + ci) * k + ki) * k + kj] *
                                     x[((ci * nb + n) * h + ii) * w + jj];
                            }
                    float got = l.y[((o * nb + n) * l.out_h + i) * l.out_w + j];
                    worst = fmax(worst, fabs(got - s));
                }
    CHECK(worst < 1e-5,
          "[%s] conv forward equals a direct loop over [out_c, in_c, kh, kw] "
          "weights (max diff %.2e)",
          be_name, worst);
    fedc__nn_layer_release(be, &l);
}

/* A conv that needs no input gradient (a first layer) may run on the
 * backend's direct convolution; it must agree with the im2col + GEMM path
 * and pass the finite-difference check itself. The shapes exercise partial
 * vectors (ow 30 = 24 + 6, ow 8), leftover channels (oc 4 = 3 + 1) and
 * kernels narrower than the column block (k 3). */
static void test_conv_direct(int c, int h, int w, int oc, int k, int nb)
{
    char err[FEDC_ERRMSG_MAX], what[128];
    fedc__nn_layer a, b;
    fedc_rng rng;
    fedc_rng_seed(&rng, 91 + (uint64_t)k);
    fedc__nn_layer_init(&a, FEDC__NN_CONV2D, "conv", c, h, w, oc, k, 1, 0, 1, err, sizeof(err));
    fedc__nn_layer_init(&b, FEDC__NN_CONV2D, "conv", c, h, w, oc, k, 1, 0, 1, err, sizeof(err));
    float *wt = malloc(a.wn * sizeof(float)), *bs = malloc(a.bn * sizeof(float));
    size_t xn = (size_t)nb * c * h * w, yn = (size_t)nb * fedc__nn_layer_out_numel(&a);
    float *x = malloc(xn * sizeof(float)), *dy = malloc(yn * sizeof(float));
    float *dy2 = malloc(yn * sizeof(float));
    fill_uniform(&rng, wt, a.wn, -0.5, 0.5);
    fill_uniform(&rng, bs, a.bn, -0.2, 0.2);
    fill_uniform(&rng, x, xn, 0.0, 1.0);
    fill_uniform(&rng, dy, yn, -1.0, 1.0);
    memcpy(dy2, dy, yn * sizeof(float));
    a.w = b.w = wt;
    a.b = b.b = bs;
    a.need_dx = 0;
    b.need_dx = 1;
    const fedc__nn_backend *plain = &plain_backend;
    fedc__nn_layer_reserve(be, &a, nb);
    fedc__nn_layer_reserve(plain, &b, nb);
    snprintf(what, sizeof(what), "conv %dx%dx%d -> %d, k%d +relu, batch %d, no dx (%s)", c, h, w, oc, k, nb,
             a.direct ? "direct kernel" : "im2col: no direct kernel on this CPU");
    fedc__nn_layer_forward(be, &a, x, nb);
    fedc__nn_layer_forward(plain, &b, x, nb);
    double dyv = 0.0, dwv = 0.0, dbv = 0.0;
    for (size_t i = 0; i < yn; i++) dyv = fmax(dyv, fabs(a.y[i] - b.y[i]));
    fedc__nn_layer_backward(be, &a, x, dy, nb, 0);
    fedc__nn_layer_backward(plain, &b, x, dy2, nb, 0);
    for (size_t i = 0; i < a.wn; i++) dwv = fmax(dwv, fabs(a.dw[i] - b.dw[i]));
    for (size_t i = 0; i < a.bn; i++) dbv = fmax(dbv, fabs(a.db[i] - b.db[i]));
    CHECK(dyv < 1e-5 && dwv < 1e-3 && dbv < 1e-3,
          "%s: same output (max diff %.2e), weight and bias gradients (%.2e, %.2e) as im2col", what, dyv, dwv,
          dbv);
    fedc__nn_layer_release(be, &a);
    fedc__nn_layer_release(plain, &b);
    /* Without the ReLU for the finite differences: over hundreds of outputs
     * per channel a weight step would cross some ReLU kink nearly always. */
    a.relu = 0;
    snprintf(what, sizeof(what), "conv %dx%dx%d -> %d, k%d, batch %d, no dx (%s)", c, h, w, oc, k, nb,
             a.direct ? "direct kernel" : "im2col");
    gradcheck_layer_dx(what, &a, x, nb, 92, 0);
    free(wt);
    free(bs);
    free(x);
    free(dy);
    free(dy2);
}

/* The pool's fused ReLU mask (used after a conv with a ReLU) equals the
 * pool's plain backward followed by the ReLU's backward. */
static void test_maxpool_relu_mask(void)
{
    const fedc__nn_backend_i *bi = be->iface;
    const int planes = 5, h = 6, w = 6, oh = 3, ow = 3;
    float x[5 * 36], y[5 * 9], dy[5 * 9], dx1[5 * 36], dx2[5 * 36];
    int32_t arg[5 * 9];
    fedc_rng rng;
    fedc_rng_seed(&rng, 101);
    /* ReLU outputs: about half exact zeros, so whole windows are zero. */
    for (int i = 0; i < planes * h * w; i++) {
        double u = fedc_rng_uniform(&rng);
        x[i] = u < 0.6 ? 0.0f : (float)u;
    }
    fill_uniform(&rng, dy, (size_t)planes * oh * ow, -1.0, 1.0);
    bi->maxpool_fwd(be->context, x, planes, h, w, 2, 2, y, arg);
    bi->maxpool_bwd(be->context, dy, y, arg, planes, h, w, 2, 2, dx1);
    bi->maxpool_bwd(be->context, dy, NULL, arg, planes, h, w, 2, 2, dx2);
    bi->relu_bwd(be->context, x, dx2, dx2, (size_t)planes * h * w);
    int zeros = 0;
    for (int i = 0; i < planes * oh * ow; i++) zeros += y[i] == 0.0f;
    CHECK(memcmp(dx1, dx2, sizeof(dx1)) == 0 && zeros > 0,
          "maxpool backward with the fused ReLU mask equals pool then ReLU backward (%d zero "
          "windows)",
          zeros);
}

static void test_maxpool(int k, int stride)
{
    fedc__nn_layer l;
    char err[FEDC_ERRMSG_MAX], what[64];
    const int c = 2, h = 6, w = 7, nb = 2;
    snprintf(what, sizeof(what), "maxpool k%d s%d on %dx%d", k, stride, h, w);
    fedc__nn_layer_init(&l, FEDC__NN_MAXPOOL2D, "pool", c, h, w, 0, k, stride, 0, 0, err, sizeof(err));
    size_t n = (size_t)c * h * w * nb;
    float *x = malloc(n * sizeof(float));
    uint32_t *perm = malloc(n * sizeof(uint32_t));
    fedc_rng rng;
    fedc_rng_seed(&rng, 31);
    /* Distinct values 0.05 apart: the winner of each window never changes
     * under a step of 1e-2. */
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    fedc_rng_shuffle_u32(&rng, perm, n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(perm[i] * 0.05 - 2.0);
    gradcheck_layer(what, &l, x, nb, 32);
    free(x);
    free(perm);
}

static void test_relu(void)
{
    fedc__nn_layer l;
    char err[FEDC_ERRMSG_MAX];
    fedc__nn_layer_init(&l, FEDC__NN_RELU, "relu", 3, 4, 5, 0, 0, 0, 0, 0, err, sizeof(err));
    float x[2 * 60];
    fedc_rng rng;
    fedc_rng_seed(&rng, 41);
    fill_away_from_zero(&rng, x, 120);
    gradcheck_layer("relu on 3x4x5", &l, x, 2, 42);
}

static void test_flatten(void)
{
    fedc__nn_layer l;
    char err[FEDC_ERRMSG_MAX];
    const int c = 3, h = 2, w = 2, nb = 2;
    fedc__nn_layer_init(&l, FEDC__NN_FLATTEN, "flatten", c, h, w, 0, 0, 0, 0, 0, err, sizeof(err));
    l.in_batch_major = 0;
    float x[24];
    for (int i = 0; i < 24; i++) x[i] = (float)i;
    fedc__nn_layer_reserve(be, &l, nb);
    fedc__nn_layer_forward(be, &l, x, nb);
    /* CNHW in, [N][C*H*W] out with each example in channel-major order. */
    int ok = 1;
    for (int n = 0; n < nb; n++)
        for (int ci = 0; ci < c; ci++)
            for (int s = 0; s < h * w; s++)
                if (l.y[(n * c + ci) * h * w + s] != x[(ci * nb + n) * h * w + s]) ok = 0;
    CHECK(ok, "flatten turns a CNHW batch into per-example channel-major rows");
    fedc__nn_layer_release(be, &l);
    gradcheck_layer("flatten 3x2x2", &l, x, nb, 52);
}

static void test_softmax_xent(void)
{
    const int nb = 4, classes = 5;
    float z[20], d[20];
    int32_t y[4] = {0, 3, 4, 1};
    fedc_rng rng;
    fedc_rng_seed(&rng, 61);
    fill_uniform(&rng, z, 20, -3.0, 3.0);
    double loss = 0.0;
    uint64_t correct = 0;
    const fedc__nn_backend_i *bi = be->iface;
    bi->softmax_xent(be->context, z, y, nb, classes, 1.0f / nb, d, &loss, &correct);
    /* Reference loss in double. */
    double ref = 0.0;
    uint64_t ref_correct = 0;
    for (int i = 0; i < nb; i++) {
        double m = z[i * classes], s = 0.0;
        int arg = 0;
        for (int j = 0; j < classes; j++)
            if (z[i * classes + j] > m) {
                m = z[i * classes + j];
                arg = j;
            }
        for (int j = 0; j < classes; j++) s += exp(z[i * classes + j] - m);
        ref += m + log(s) - z[i * classes + y[i]];
        ref_correct += arg == y[i];
    }
    CHECK(fabs(loss - ref) < 1e-9 && correct == ref_correct,
          "softmax-xent: loss %.9f (reference %.9f), correct %llu (reference %llu)", loss, ref,
          (unsigned long long)correct, (unsigned long long)ref_correct);
    double worst = 0.0;
    const double eps = 1e-3;
    for (int i = 0; i < nb * classes; i++) {
        float saved = z[i];
        double lp = 0.0, lm = 0.0;
        uint64_t c = 0;
        z[i] = (float)(saved + eps);
        double up = (double)z[i] - saved;
        bi->softmax_xent(be->context, z, y, nb, classes, 0.0f, NULL, &lp, &c);
        z[i] = (float)(saved - eps);
        double down = saved - (double)z[i];
        bi->softmax_xent(be->context, z, y, nb, classes, 0.0f, NULL, &lm, &c);
        z[i] = saved;
        double num = (lp - lm) / nb / (up + down);
        worst = fmax(worst, fabs(num - d[i]));
    }
    CHECK(worst < 1e-5,
          "softmax-xent: gradient of the mean loss vs finite differences (max "
          "diff %.2e)",
          worst);
    /* Large logits must not overflow. */
    float big[3] = {1000.0f, -1000.0f, 999.0f};
    int32_t yb[1] = {2};
    loss = 0.0;
    bi->softmax_xent(be->context, big, yb, 1, 3, 1.0f, d, &loss, &correct);
    CHECK(fabs(loss - (1.0 + log1p(exp(-1.0)))) < 1e-6 && isfinite(d[0]),
          "softmax-xent: logits of +-1000 give a finite loss %.6f", loss);
}

/* Whole-model check: the gradient from fedc__nn_model_loss_grad against
 * central differences of the mean loss, on a sample of coordinates of every
 * tensor. A coordinate where two step sizes disagree sits on a kink (a
 * ReLU or a max-pool switching) and is skipped. */
static void test_model(const char *arch, int nb)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX];
    int rc = fedc_model_create(arch, 7, &m, err, sizeof(err));
    CHECK(rc == FEDC_OK, "%s: create (%s)", arch, rc ? err : "ok");
    if (rc) return;
    int c, h, w;
    fedc_model_input_shape(m, &c, &h, &w);
    size_t row = (size_t)c * h * w;
    float *x = malloc((size_t)nb * row * sizeof(float));
    int32_t *y = malloc((size_t)nb * sizeof(int32_t));
    fedc_rng rng;
    fedc_rng_seed(&rng, 71);
    fill_uniform(&rng, x, (size_t)nb * row, 0.0, 1.0);
    for (int i = 0; i < nb; i++) y[i] = (int32_t)fedc_rng_below(&rng, 10);
    double loss;
    rc = fedc__nn_model_loss_grad(m, x, y, (size_t)nb, &loss, err, sizeof(err));
    CHECK(rc == FEDC_OK && loss > 1.5 && loss < 3.5,
          "%s: loss of an untrained model %.4f (ln 10 "
          "= 2.303)",
          arch, loss);
    fedc_params *p = fedc_model_params(m);
    for (size_t t = 0; t < fedc_params_count(p); t++) {
        fedc_tensor *ten = fedc_params_at(p, t);
        float *v = ten->data;
        size_t n = (size_t)fedc_tensor_numel(ten);
        float *g = malloc(n * sizeof(float));
        memcpy(g, fedc__nn_model_grad(m, t), n * sizeof(float));
        int checked = 0, skipped = 0;
        double worst = 0.0;
        const int samples = 12;
        for (int s = 0; s < samples; s++) {
            size_t i = (size_t)fedc_rng_below(&rng, n);
            double num[2];
            const double steps[2] = {2e-3, 1e-3};
            for (int e = 0; e < 2; e++) {
                float saved = v[i];
                double lp, lm;
                v[i] = (float)(saved + steps[e]);
                double up = (double)v[i] - saved;
                fedc__nn_model_loss_grad(m, x, y, (size_t)nb, &lp, err, sizeof(err));
                v[i] = (float)(saved - steps[e]);
                double down = saved - (double)v[i];
                fedc__nn_model_loss_grad(m, x, y, (size_t)nb, &lm, err, sizeof(err));
                v[i] = saved;
                num[e] = (lp - lm) / (up + down);
            }
            const double atol = 1e-3, rtol = 3e-2;
            if (fabs(num[0] - num[1]) > atol + rtol * fabs(num[1])) {
                skipped++;
                continue;
            }
            double scale = fmax(fabs(num[1]), fabs(g[i]));
            worst = fmax(worst, fabs(num[1] - g[i]) / (atol + rtol * scale));
            checked++;
        }
        CHECK(worst <= 1.0 && skipped * 3 <= samples,
              "%s: gradient of '%s' at %d sampled values (%d skipped at kinks), worst error "
              "%.3f of tolerance",
              arch, ten->name, checked, skipped, worst);
        free(g);
    }
    free(x);
    free(y);
    fedc_model_destroy(m);
}

/* A minibatch larger than the trainer's chunk is processed in chunks whose
 * gradients are summed; the result must be the mean gradient over all. */
static void test_chunked_gradient(void)
{
    const size_t n1 = FEDC__NN_MAX_CHUNK, n2 = 44, n = n1 + n2;
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX];
    fedc_model_create("mlp", 3, &m, err, sizeof(err));
    float *x = malloc(n * 784 * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    fedc_rng rng;
    fedc_rng_seed(&rng, 81);
    fill_uniform(&rng, x, n * 784, 0.0, 1.0);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)fedc_rng_below(&rng, 10);
    size_t count = fedc_params_count(fedc_model_params(m));
    double l_all, l1, l2, worst = 0.0;
    fedc__nn_model_loss_grad(m, x, y, n, &l_all, err, sizeof(err));
    float **g = malloc(count * sizeof(float *));
    for (size_t t = 0; t < count; t++) {
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(fedc_model_params(m), t));
        g[t] = malloc(numel * sizeof(float));
        memcpy(g[t], fedc__nn_model_grad(m, t), numel * sizeof(float));
    }
    fedc__nn_model_loss_grad(m, x, y, n1, &l1, err, sizeof(err));
    float **g1 = malloc(count * sizeof(float *));
    for (size_t t = 0; t < count; t++) {
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(fedc_model_params(m), t));
        g1[t] = malloc(numel * sizeof(float));
        memcpy(g1[t], fedc__nn_model_grad(m, t), numel * sizeof(float));
    }
    fedc__nn_model_loss_grad(m, x + n1 * 784, y + n1, n2, &l2, err, sizeof(err));
    for (size_t t = 0; t < count; t++) {
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(fedc_model_params(m), t));
        const float *g2 = fedc__nn_model_grad(m, t);
        for (size_t i = 0; i < numel; i++) {
            double want = ((double)n1 * g1[t][i] + (double)n2 * g2[i]) / (double)n;
            worst = fmax(worst, fabs(want - g[t][i]));
        }
        free(g[t]);
        free(g1[t]);
    }
    double lwant = (l1 * n1 + l2 * n2) / n;
    CHECK(fabs(lwant - l_all) < 1e-9 && worst < 1e-6,
          "a batch of %zu (chunks of %d) has the mean gradient of its parts (max diff %.2e)", n,
          FEDC__NN_MAX_CHUNK, worst);
    free(g);
    free(g1);
    free(x);
    free(y);
    fedc_model_destroy(m);
}

/* The trainer's threads split a batch and sum their gradients: any thread
 * count must give the one-thread gradient up to float rounding. 37 examples
 * make uneven shares; 300 make each share go through the layers in chunks. */
static void test_threads_agree(const char *arch, size_t n)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX];
    fedc_model_create(arch, 21, &m, err, sizeof(err));
    float *x = malloc(n * 784 * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    fedc_rng rng;
    fedc_rng_seed(&rng, 22);
    fill_uniform(&rng, x, n * 784, 0.0, 1.0);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)fedc_rng_below(&rng, 10);
    fedc_params *p = fedc_model_params(m);
    size_t count = fedc_params_count(p), total = fedc_model_num_params(m);
    float *g1 = malloc(total * sizeof(float));
    double l1 = 0.0;
    fedc_nn_set_threads(1);
    int rc = fedc__nn_model_loss_grad(m, x, y, n, &l1, err, sizeof(err));
    for (size_t t = 0, off = 0; t < count; t++) {
        size_t k = (size_t)fedc_tensor_numel(fedc_params_at(p, t));
        memcpy(g1 + off, fedc__nn_model_grad(m, t), k * sizeof(float));
        off += k;
    }
    for (int threads = 2; threads <= 3; threads++) {
        double lt = 0.0, worst = 0.0, gmax = 0.0;
        fedc_nn_set_threads(threads);
        rc |= fedc__nn_model_loss_grad(m, x, y, n, &lt, err, sizeof(err));
        for (size_t t = 0, off = 0; t < count; t++) {
            size_t k = (size_t)fedc_tensor_numel(fedc_params_at(p, t));
            const float *g = fedc__nn_model_grad(m, t);
            for (size_t i = 0; i < k; i++) {
                worst = fmax(worst, fabs(g[i] - g1[off + i]));
                gmax = fmax(gmax, fabs(g1[off + i]));
            }
            off += k;
        }
        CHECK(rc == FEDC_OK && fabs(lt - l1) < 1e-9 * fabs(l1) && worst <= 1e-5 * gmax,
              "%s, %zu examples: %d threads give the 1-thread loss (%.9f vs %.9f) and gradient "
              "(max diff %.2e, largest value %.2e)",
              arch, n, threads, lt, l1, worst, gmax);
    }
    fedc_nn_set_threads(1);
    free(g1);
    free(x);
    free(y);
    fedc_model_destroy(m);
}

int main(void)
{
    be = fedc__nn_backend_cpu();
    plain_iface = *be->iface;
    plain_iface.conv_direct_supported = NULL;
    plain_backend.iface = &plain_iface;
    plain_backend.context = be->context;
    test_dense(0);
    test_dense(1);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            be = &plain_backend;
            be_name = "cpu, no direct kernels";
        }
        test_conv(1, 6, 6, 2, 3, 1, 0, 0, 2);
        test_conv(2, 7, 6, 3, 3, 2, 1, 0, 3);
        test_conv(2, 6, 6, 3, 3, 1, 0, 1, 2);
        /* 57.6 KiB of im2col matrix per image: the batch of 5 goes through
         * im2col + GEMM in blocks (4 + 1), whose weight gradients are summed. */
        test_conv(4, 16, 16, 3, 5, 1, 0, 0, 5);
        test_conv_values();
    }
    be = fedc__nn_backend_cpu();
    be_name = "cpu";
    test_conv_direct(1, 12, 34, 4, 5, 3);
    test_conv_direct(2, 9, 10, 6, 3, 2);
    test_maxpool(2, 2);
    test_maxpool(3, 2);
    test_maxpool_relu_mask();
    test_relu();
    test_flatten();
    test_softmax_xent();
    test_model("mlp", 3);
    test_model("cnn", 3);
    test_chunked_gradient();
    test_threads_agree("cnn", 37);
    test_threads_agree("mlp", 300);
    return test_summary();
}
