/*
 * The trainer's path for a device whose memory is not host memory (a GPU's),
 * run on every machine through a stand-in device: the CPU backend's ops
 * behind a table that says its memory is not the host's, keeps data on the
 * device (gather_rows_dev, softmax_xent_dev), checks that every pointer an
 * op gets is on the side the op expects, and counts the copies.
 *
 * Its arithmetic is the CPU's, so a model trained on it must match the CPU
 * bit for bit; and a training must cross to the host only once per call
 * and epoch, never per step.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "test_nn_util.h"
#include "test_util.h"

#define MAX_ALLOC 4096
/* More tensors than any built-in model has. */
#define MAX_TENSORS 16

/* The stand-in's allocations, so that ops can tell device from host
 * pointers. */
static struct {
    char *p[MAX_ALLOC];
    size_t n[MAX_ALLOC];
} blocks;
static struct {
    int to_device, to_host, host_gathers, host_xents, bad_pointers;
} counts;
static const fedc__nn_backend_i *cpu;

static int on_device(const void *p)
{
    for (int i = 0; i < MAX_ALLOC; i++)
        if (blocks.p[i] && (const char *)p >= blocks.p[i] && (const char *)p < blocks.p[i] + blocks.n[i])
            return 1;
    return 0;
}

/* Records a pointer that is on the wrong side (NULL passes: optional
 * arguments). */
static void want_device(const void *p, const char *op)
{
    if (p && !on_device(p)) {
        if (counts.bad_pointers++ < 5) printf("     %s: a host pointer where device memory belongs\n", op);
    }
}

static void want_host(const void *p, const char *op)
{
    if (p && on_device(p)) {
        if (counts.bad_pointers++ < 5) printf("     %s: a device pointer where host memory belongs\n", op);
    }
}

static void *sd_alloc(void *ctx, size_t nbytes)
{
    void *p = cpu->alloc(ctx, nbytes ? nbytes : 1);
    for (int i = 0; p && i < MAX_ALLOC; i++)
        if (!blocks.p[i]) {
            blocks.p[i] = p;
            blocks.n[i] = nbytes ? nbytes : 1;
            return p;
        }
    cpu->free(ctx, p);
    return NULL;
}

static void sd_free(void *ctx, void *p)
{
    if (!p) return;
    for (int i = 0; i < MAX_ALLOC; i++)
        if (blocks.p[i] == p) {
            blocks.p[i] = NULL;
            cpu->free(ctx, p);
            return;
        }
    counts.bad_pointers++;
    printf("     free: not a device block\n");
}

static void sd_to_device(void *ctx, void *dst, const void *src, size_t nbytes)
{
    want_device(dst, "to_device");
    want_host(src, "to_device");
    counts.to_device++;
    cpu->to_device(ctx, dst, src, nbytes);
}

static void sd_to_host(void *ctx, void *dst, const void *src, size_t nbytes)
{
    want_host(dst, "to_host");
    want_device(src, "to_host");
    counts.to_host++;
    cpu->to_host(ctx, dst, src, nbytes);
}

static void sd_zero(void *ctx, void *p, size_t nbytes)
{
    want_device(p, "zero");
    cpu->zero(ctx, p, nbytes);
}

static void sd_gather_rows(void *ctx, float *dst, const float *src, const uint32_t *idx, size_t count,
                           size_t row_len)
{
    want_device(dst, "gather_rows");
    want_host(src, "gather_rows");
    counts.host_gathers++;
    cpu->gather_rows(ctx, dst, src, idx, count, row_len);
}

static void sd_gemm(void *ctx, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                    const float *b, int ldb, float beta, float *c, int ldc)
{
    want_device(a, "gemm");
    want_device(b, "gemm");
    want_device(c, "gemm");
    cpu->gemm(ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void sd_bias_act(void *ctx, float *y, const float *bias, int rows, int cols, int per_row, int relu)
{
    want_device(y, "bias_act");
    want_device(bias, "bias_act");
    cpu->bias_act(ctx, y, bias, rows, cols, per_row, relu);
}

static void sd_bias_grad(void *ctx, const float *dy, int rows, int cols, int per_row, int accumulate,
                         float *db)
{
    want_device(dy, "bias_grad");
    want_device(db, "bias_grad");
    cpu->bias_grad(ctx, dy, rows, cols, per_row, accumulate, db);
}

static void sd_relu_fwd(void *ctx, const float *x, float *y, size_t n)
{
    want_device(x, "relu_fwd");
    want_device(y, "relu_fwd");
    cpu->relu_fwd(ctx, x, y, n);
}

static void sd_relu_bwd(void *ctx, const float *y, const float *dy, float *dx, size_t n)
{
    want_device(y, "relu_bwd");
    want_device(dy, "relu_bwd");
    want_device(dx, "relu_bwd");
    cpu->relu_bwd(ctx, y, dy, dx, n);
}

static void sd_swap01(void *ctx, const float *src, int d0, int d1, int inner, float *dst)
{
    want_device(src, "swap01");
    want_device(dst, "swap01");
    cpu->swap01(ctx, src, d0, d1, inner, dst);
}

static void sd_im2col(void *ctx, const float *x, int c, int nb, int n0, int ns, int h, int w, int kh, int kw,
                      int stride, int pad, float *col)
{
    want_device(x, "im2col");
    want_device(col, "im2col");
    cpu->im2col(ctx, x, c, nb, n0, ns, h, w, kh, kw, stride, pad, col);
}

static void sd_col2im(void *ctx, const float *col, int c, int nb, int n0, int ns, int h, int w, int kh,
                      int kw, int stride, int pad, float *dx)
{
    want_device(col, "col2im");
    want_device(dx, "col2im");
    cpu->col2im(ctx, col, c, nb, n0, ns, h, w, kh, kw, stride, pad, dx);
}

static void sd_maxpool_fwd(void *ctx, const float *x, int planes, int h, int w, int k, int stride, float *y,
                           int32_t *argmax)
{
    want_device(x, "maxpool_fwd");
    want_device(y, "maxpool_fwd");
    want_device(argmax, "maxpool_fwd");
    cpu->maxpool_fwd(ctx, x, planes, h, w, k, stride, y, argmax);
}

static void sd_maxpool_bwd(void *ctx, const float *dy, const float *relu_y, const int32_t *argmax, int planes,
                           int h, int w, int k, int stride, float *dx)
{
    want_device(dy, "maxpool_bwd");
    want_device(relu_y, "maxpool_bwd");
    want_device(argmax, "maxpool_bwd");
    want_device(dx, "maxpool_bwd");
    cpu->maxpool_bwd(ctx, dy, relu_y, argmax, planes, h, w, k, stride, dx);
}

static void sd_softmax_xent(void *ctx, const float *logits, const int32_t *labels, int nb, int classes,
                            float scale, float *dlogits, double *loss_sum, uint64_t *correct)
{
    want_device(logits, "softmax_xent");
    want_host(labels, "softmax_xent");
    want_device(dlogits, "softmax_xent");
    counts.host_xents++;
    cpu->softmax_xent(ctx, logits, labels, nb, classes, scale, dlogits, loss_sum, correct);
}

static void sd_add(void *ctx, float *dst, const float *src, size_t n)
{
    want_device(dst, "add");
    want_device(src, "add");
    cpu->add(ctx, dst, src, n);
}

static void sd_sgd_update(void *ctx, float *w, const float *g, float *v, size_t n, float lr, float momentum,
                          float weight_decay)
{
    want_device(w, "sgd_update");
    want_device(g, "sgd_update");
    want_device(v, "sgd_update");
    cpu->sgd_update(ctx, w, g, v, n, lr, momentum, weight_decay);
}

static void sd_axpy(void *ctx, float *y, const float *x, size_t n, float alpha)
{
    want_device(y, "axpy");
    want_device(x, "axpy");
    cpu->axpy(ctx, y, x, n, alpha);
}

static void sd_gather_rows_dev(void *ctx, void *dst, const void *src, const uint32_t *idx, size_t count,
                               size_t row_len)
{
    (void)ctx;
    want_device(dst, "gather_rows_dev");
    want_device(src, "gather_rows_dev");
    want_device(idx, "gather_rows_dev");
    uint32_t *d = dst;
    const uint32_t *s = src;
    for (size_t i = 0; i < count; i++) memcpy(d + i * row_len, s + (size_t)idx[i] * row_len, row_len * 4);
}

static void sd_softmax_xent_dev(void *ctx, const float *logits, const int32_t *labels, int nb, int classes,
                                float scale, float *dlogits, fedc__nn_xent_acc *acc)
{
    want_device(logits, "softmax_xent_dev");
    want_device(labels, "softmax_xent_dev");
    want_device(dlogits, "softmax_xent_dev");
    want_device(acc, "softmax_xent_dev");
    double loss = 0.0;
    uint64_t right = 0;
    cpu->softmax_xent(ctx, logits, labels, nb, classes, scale, dlogits, &loss, &right);
    acc->loss_sum += loss;
    acc->correct += right;
}

static fedc__nn_backend_i sd_iface;
static fedc__nn_backend sd_backend;

static void make_standin(void)
{
    cpu = fedc__nn_backend_cpu()->iface;
    sd_iface = *cpu;
    sd_iface.name = "stand-in";
    sd_iface.host_memory = 0;
    sd_iface.alloc = sd_alloc;
    sd_iface.free = sd_free;
    sd_iface.to_device = sd_to_device;
    sd_iface.to_host = sd_to_host;
    sd_iface.zero = sd_zero;
    sd_iface.gather_rows = sd_gather_rows;
    sd_iface.gemm = sd_gemm;
    sd_iface.bias_act = sd_bias_act;
    sd_iface.bias_grad = sd_bias_grad;
    sd_iface.relu_fwd = sd_relu_fwd;
    sd_iface.relu_bwd = sd_relu_bwd;
    sd_iface.swap01 = sd_swap01;
    sd_iface.im2col = sd_im2col;
    sd_iface.col2im = sd_col2im;
    /* Like the CUDA backend: no direct convolution. The CPU reference then
     * computes differently for the first conv, so the tests below give it
     * the same table without it. */
    sd_iface.conv_direct_supported = NULL;
    sd_iface.conv_direct_fwd = NULL;
    sd_iface.conv_direct_dw = NULL;
    sd_iface.maxpool_fwd = sd_maxpool_fwd;
    sd_iface.maxpool_bwd = sd_maxpool_bwd;
    sd_iface.softmax_xent = sd_softmax_xent;
    sd_iface.add = sd_add;
    sd_iface.sgd_update = sd_sgd_update;
    sd_iface.axpy = sd_axpy;
    sd_iface.gather_rows_dev = sd_gather_rows_dev;
    sd_iface.softmax_xent_dev = sd_softmax_xent_dev;
    sd_backend.iface = &sd_iface;
    sd_backend.context = NULL;
}

/* The CPU backend without the direct convolution: the reference for the
 * stand-in, which has none either. */
static fedc__nn_backend_i plain_iface;
static fedc__nn_backend plain_backend;

static void make_plain(void)
{
    plain_iface = *fedc__nn_backend_cpu()->iface;
    plain_iface.conv_direct_supported = NULL;
    plain_iface.conv_direct_fwd = NULL;
    plain_iface.conv_direct_dw = NULL;
    plain_backend.iface = &plain_iface;
    plain_backend.context = NULL;
}

/* A model of `arch` from `seed` on the stand-in (standin) or the plain CPU. */
static fedc_model *model_on(const char *arch, uint64_t seed, int standin)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    int rc = fedc_model_create(arch, seed, &m, err, sizeof(err));
    if (rc == FEDC_OK)
        rc = fedc__nn_model_set_backend(m, standin ? &sd_backend : &plain_backend, err, sizeof(err));
    CHECK(rc == FEDC_OK, "%s: create on the %s (%s)", arch, standin ? "stand-in" : "cpu", rc ? err : "ok");
    return m;
}

/* Training, evaluation and prediction on the stand-in equal the CPU's, and
 * a training copies to the host only per call and epoch. With `correct`,
 * the training has a SCAFFOLD gradient correction, uploaded once. */
static void test_same_as_cpu(const char *arch, int batch, int epochs, int correct)
{
    const size_t n = 300;
    nn_test_data d = nn_test_data_make(3, n);
    const float *x = d.x;
    const int32_t *y = d.y;
    float *corr[MAX_TENSORS] = {NULL};
    fedc_model *ref = model_on(arch, 5, 0), *dev = model_on(arch, 5, 1);
    if (!ref || !dev) goto done;
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = {0.05, 0.9, 1e-4, epochs, batch, 11, 0.0, NULL, 0.0, 0.0};
    size_t ntensors = fedc_params_count(fedc_model_params(dev));
    if (correct && ntensors <= MAX_TENSORS) {
        fedc_rng rng;
        fedc_rng_seed(&rng, 12);
        for (size_t t = 0; t < ntensors; t++) {
            size_t k = (size_t)fedc_tensor_numel(fedc_params_at(fedc_model_params(dev), t));
            corr[t] = malloc(k * sizeof(float));
            for (size_t i = 0; corr[t] && i < k; i++)
                corr[t][i] = (float)(0.02 * fedc_rng_uniform(&rng) - 0.01);
            if (!corr[t]) goto done;
        }
        cfg.grad_correction = (const float *const *)corr;
    }
    fedc_train_stats sr, sd;
    int rr = fedc_model_train(ref, x, y, n, &cfg, &sr, err, sizeof(err));
    memset(&counts, 0, sizeof(counts));
    int rd = fedc_model_train(dev, x, y, n, &cfg, &sd, err, sizeof(err));
    /* Examples, labels and parameters once (and the correction), the order
     * of the examples once per epoch; the loss statistics once per epoch and
     * the parameters once. */
    int want_up = (int)(2 + ntensors * (correct ? 2 : 1)) + epochs, want_down = (int)ntensors + epochs;
    CHECK(rr == FEDC_OK && rd == FEDC_OK && (!correct || cfg.grad_correction),
          "%s, batch %d: both train (%s)", arch, batch, rd ? err : "ok");
    CHECK(counts.to_device == want_up && counts.to_host == want_down && counts.host_gathers == 0 &&
              counts.host_xents == 0,
          "%s, batch %d, %d epochs: %d uploads (want %d), %d downloads (want %d), %d host gathers, %d host "
          "losses (want 0)",
          arch, batch, epochs, counts.to_device, want_up, counts.to_host, want_down, counts.host_gathers,
          counts.host_xents);
    CHECK(counts.bad_pointers == 0, "%s, batch %d: %d pointers on the wrong side", arch, batch,
          counts.bad_pointers);
    CHECK(nn_test_same_params(ref, dev),
          "%s, batch %d%s: the stand-in trains the CPU's parameters bit for bit", arch, batch,
          correct ? ", gradient correction" : "");
    /* Batches of more than one chunk sum their chunks' losses in another
     * grouping. */
    double tol = batch > 256 ? 1e-12 * fabs(sr.loss) : 0.0;
    CHECK(fabs(sd.loss - sr.loss) <= tol && sd.accuracy == sr.accuracy && sd.steps == sr.steps &&
              sd.num_examples == sr.num_examples,
          "%s, batch %d: stats agree (loss %.9f vs %.9f, accuracy %.4f vs %.4f, steps %llu vs %llu)", arch,
          batch, sd.loss, sr.loss, sd.accuracy, sr.accuracy, (unsigned long long)sd.steps,
          (unsigned long long)sr.steps);

    fedc_eval_stats er, ed;
    memset(&counts, 0, sizeof(counts));
    rr = fedc_model_evaluate(ref, x, y, n, 64, &er, err, sizeof(err));
    rd = fedc_model_evaluate(dev, x, y, n, 64, &ed, err, sizeof(err));
    CHECK(rr == FEDC_OK && rd == FEDC_OK && ed.loss == er.loss && ed.accuracy == er.accuracy,
          "%s: evaluate agrees (loss %.9f vs %.9f)", arch, ed.loss, er.loss);
    CHECK(counts.to_host == 1 && counts.host_xents == 0 && counts.bad_pointers == 0,
          "%s: evaluate reads the statistics once (%d downloads, %d host losses, %d bad pointers)", arch,
          counts.to_host, counts.host_xents, counts.bad_pointers);
    float *lr = malloc(n * 10 * sizeof(float)), *ld = malloc(n * 10 * sizeof(float));
    rr = fedc_model_predict(ref, x, n, lr, err, sizeof(err));
    rd = fedc_model_predict(dev, x, n, ld, err, sizeof(err));
    CHECK(rr == FEDC_OK && rd == FEDC_OK && memcmp(lr, ld, n * 10 * sizeof(float)) == 0,
          "%s: predict agrees bit for bit", arch);
    free(lr);
    free(ld);
done:
    for (size_t t = 0; t < MAX_TENSORS; t++) free(corr[t]);
    fedc_model_destroy(ref);
    fedc_model_destroy(dev);
    nn_test_data_free(&d);
}

/* The gradients of one batch, two chunks of it included. */
/* The largest |a - b| over the two models' parameters, relative to the
 * largest |a|. */
static double param_gap(fedc_model *a, fedc_model *b)
{
    const fedc_params *pa = fedc_model_params(a), *pb = fedc_model_params(b);
    double gap = 0, big = 0;
    for (size_t t = 0; t < fedc_params_count(pa); t++) {
        const float *x = fedc_params_at(pa, t)->data, *y = fedc_params_at(pb, t)->data;
        for (int64_t i = 0; i < fedc_tensor_numel(fedc_params_at(pa, t)); i++) {
            gap = fmax(gap, fabs((double)x[i] - (double)y[i]));
            big = fmax(big, fabs((double)x[i]));
        }
    }
    return big > 0 ? gap / big : gap;
}

/* DP-SGD's device path (the examples, the sample list and each example's
 * gradient moving between host and device) against the CPU: with every
 * example taken (batch >= n, so q = 1) and noise of standard deviation
 * 1e-12, both compute the same clipped steps; the noise draws differ, so
 * the parameters agree to rounding, not bit for bit. */
static void test_dpsgd(const char *arch, double clip)
{
    const size_t n = 40;
    nn_test_data d = nn_test_data_make(9, n);
    fedc_model *ref = model_on(arch, 5, 0), *dev = model_on(arch, 5, 1);
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_train_config cfg = {0.05, 0.9, 1e-4, 3, (int)n, 11, 0.0, NULL, clip, 1e-12 / clip};
    fedc_train_stats sr, sd;
    int rr = ref ? fedc_model_train(ref, d.x, d.y, n, &cfg, &sr, err, sizeof(err)) : FEDC_ERR_NOMEM;
    memset(&counts, 0, sizeof(counts));
    int rd = dev ? fedc_model_train(dev, d.x, d.y, n, &cfg, &sd, err, sizeof(err)) : FEDC_ERR_NOMEM;
    CHECK(rr == FEDC_OK && rd == FEDC_OK, "%s, DP-SGD clip %g: both train (%s)", arch, clip, rd ? err : "ok");
    if (rr == FEDC_OK && rd == FEDC_OK) {
        double gap = param_gap(ref, dev);
        CHECK(gap < 1e-5, "%s, DP-SGD clip %g: the stand-in's parameters equal the CPU's (gap %.3g)", arch,
              clip, gap);
        CHECK(counts.bad_pointers == 0, "%s, DP-SGD: %d pointers on the wrong side", arch,
              counts.bad_pointers);
        CHECK(sd.steps == 3 && sr.steps == 3 && sd.dp_examples == 3 * n && sr.dp_examples == 3 * n &&
                  sd.dp_sample_rate == 1.0,
              "%s, DP-SGD: 3 steps of all %zu examples on both (%llu, %llu examples)", arch, n,
              (unsigned long long)sd.dp_examples, (unsigned long long)sr.dp_examples);
    }
    fedc_model_destroy(ref);
    fedc_model_destroy(dev);
    nn_test_data_free(&d);
}

static void test_loss_grad(const char *arch, size_t nb)
{
    nn_test_data d = nn_test_data_make(4, nb);
    const float *x = d.x;
    const int32_t *y = d.y;
    fedc_model *ref = model_on(arch, 6, 0), *dev = model_on(arch, 6, 1);
    if (ref && dev) {
        double lr = 0.0, ld = 0.0;
        memset(&counts, 0, sizeof(counts));
        int rr = fedc__nn_model_loss_grad(ref, x, y, nb, &lr, NULL, 0);
        int rd = fedc__nn_model_loss_grad(dev, x, y, nb, &ld, NULL, 0);
        const fedc__nn_backend *be = fedc__nn_model_backend(dev);
        int same = 1;
        for (size_t t = 0; t < fedc_params_count(fedc_model_params(dev)); t++) {
            const fedc_tensor *ten = fedc_params_at(fedc_model_params(dev), t);
            float *g = malloc(ten->nbytes);
            be->iface->to_host(be->context, g, fedc__nn_model_grad(dev, t), ten->nbytes);
            same = same && memcmp(g, fedc__nn_model_grad(ref, t), ten->nbytes) == 0;
            free(g);
        }
        double tol = nb > 256 ? 1e-12 * fabs(lr) : 0.0;
        CHECK(rr == FEDC_OK && rd == FEDC_OK && fabs(ld - lr) <= tol && same && counts.bad_pointers == 0,
              "%s, %zu examples: loss %.9f vs %.9f, gradients %s", arch, nb, ld, lr,
              same ? "equal" : "differ");
    }
    fedc_model_destroy(ref);
    fedc_model_destroy(dev);
    nn_test_data_free(&d);
}

/* A learning rate that blows up: found at the end of the epoch, with the
 * CPU's message. */
static void test_divergence(void)
{
    const size_t n = 64;
    nn_test_data d = nn_test_data_make(7, n);
    const float *x = d.x;
    const int32_t *y = d.y;
    fedc_model *dev = model_on("mlp", 1, 1), *ref = model_on("mlp", 1, 0);
    if (dev && ref) {
        char err[FEDC_ERRMSG_MAX] = "", err_ref[FEDC_ERRMSG_MAX] = "";
        fedc_train_config cfg = {1e6, 0.9, 0.0, 2, 8, 1, 0.0, NULL, 0.0, 0.0};
        int rd = fedc_model_train(dev, x, y, n, &cfg, NULL, err, sizeof(err));
        int rr = fedc_model_train(ref, x, y, n, &cfg, NULL, err_ref, sizeof(err_ref));
        printf("     lr 1e6: stand-in: %s; cpu: %s\n", err, err_ref);
        CHECK(rd == FEDC_ERR_NONFINITE && strstr(err, "training diverged"),
              "a diverging training on the stand-in gives FEDC_ERR_NONFINITE, 'training diverged' (got %d)",
              rd);
        CHECK(rr == FEDC_ERR_NONFINITE, "the same on the CPU gives FEDC_ERR_NONFINITE (got %d)", rr);
    }
    fedc_model_destroy(dev);
    fedc_model_destroy(ref);
    nn_test_data_free(&d);
}

/* Moving between backends keeps the parameters and the device reported;
 * a model on the stand-in goes back to the CPU. */
static void test_moves(void)
{
    fedc_model *m = NULL;
    char err[FEDC_ERRMSG_MAX] = "";
    fedc_model_create("cnn", 9, &m, err, sizeof(err));
    fedc_params *before = fedc_params_clone(fedc_model_params(m));
    int rc = fedc__nn_model_set_backend(m, &sd_backend, err, sizeof(err));
    CHECK(rc == FEDC_OK && fedc__nn_model_backend(m) == &sd_backend, "move to the stand-in");
    fedc_device cpu_dev = {FEDC_DEVICE_CPU, 0};
    rc = fedc_model_set_device(m, cpu_dev, err, sizeof(err));
    fedc_device d = fedc_model_get_device(m);
    CHECK(rc == FEDC_OK && fedc__nn_model_backend(m) == fedc__nn_backend_cpu() && d.type == FEDC_DEVICE_CPU,
          "set_device(cpu) moves it back to the CPU backend");
    int kept = 1;
    for (size_t i = 0; i < fedc_params_count(before); i++) {
        const fedc_tensor *a = fedc_params_at(before, i), *b = fedc_params_at(fedc_model_params(m), i);
        kept = kept && memcmp(a->data, b->data, a->nbytes) == 0;
    }
    CHECK(kept, "the parameters survive the moves");
    int live = 0;
    for (int i = 0; i < MAX_ALLOC; i++) live += blocks.p[i] != NULL;
    CHECK(live == 0, "the stand-in's memory is all freed after the move back (%d blocks left)", live);
    fedc_params_destroy(before);
    fedc_model_destroy(m);
}

int main(void)
{
    make_standin();
    make_plain();
    test_same_as_cpu("mlp", 32, 2, 0);
    test_same_as_cpu("cnn", 32, 2, 0);
    test_same_as_cpu("cnn", 300, 1, 0);
    test_same_as_cpu("mlp", 7, 1, 0);
    test_same_as_cpu("mlp", 32, 2, 1);
    test_same_as_cpu("cnn", 32, 2, 1);
    test_dpsgd("mlp", 0.5);
    test_dpsgd("cnn", 0.5);
    test_dpsgd("mlp", 1e9);
    test_loss_grad("mlp", 37);
    test_loss_grad("cnn", 300);
    test_divergence();
    test_moves();
    return test_summary();
}
