/* The built-in models (mlp, cnn): construction, training, evaluation. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "fedc/tensor.h"
#include "nn/backend.h"
#include "nn/layer.h"
#include "nn/model.h"

#define MAX_LAYERS 16
#define MAX_TENSORS (2 * MAX_LAYERS)

/* One layer of an architecture table. */
typedef struct layer_spec {
    fedc__nn_layer_kind kind;
    const char *name; /* parameter prefix, NULL for layers without parameters */
    int out;          /* dense: features; conv: channels */
    int k, stride, pad;
    int relu;         /* ReLU fused onto the output */
} layer_spec;

typedef struct arch_spec {
    const char *name;
    int in_c, in_h, in_w;
    int nlayers;
    layer_spec layers[MAX_LAYERS];
} arch_spec;

static const arch_spec archs[] = {
    {"mlp", 1, 28, 28, 4,
     {{FEDC__NN_FLATTEN, NULL, 0, 0, 0, 0, 0},
      {FEDC__NN_DENSE, "fc1", 200, 0, 0, 0, 1},
      {FEDC__NN_DENSE, "fc2", 200, 0, 0, 0, 1},
      {FEDC__NN_DENSE, "fc3", 10, 0, 0, 0, 0}}},
    {"cnn", 1, 28, 28, 8,
     {{FEDC__NN_CONV2D, "conv1", 6, 5, 1, 0, 1},
      {FEDC__NN_MAXPOOL2D, NULL, 0, 2, 2, 0, 0},
      {FEDC__NN_CONV2D, "conv2", 16, 5, 1, 0, 1},
      {FEDC__NN_MAXPOOL2D, NULL, 0, 2, 2, 0, 0},
      {FEDC__NN_FLATTEN, NULL, 0, 0, 0, 0, 0},
      {FEDC__NN_DENSE, "fc1", 120, 0, 0, 0, 1},
      {FEDC__NN_DENSE, "fc2", 84, 0, 0, 0, 1},
      {FEDC__NN_DENSE, "fc3", 10, 0, 0, 0, 0}}},
};

struct fedc_model {
    const arch_spec *arch;
    const fedc__nn_backend *be;
    int classes;
    int nlayers;
    fedc__nn_layer layers[MAX_LAYERS];
    /* What users see; on a host-memory backend the layers compute on these
     * tensors' data directly. */
    fedc_params *params;
    size_t ntensors;
    float *dev[MAX_TENSORS];  /* device copy of each tensor (the tensor data on CPU) */
    float *grad[MAX_TENSORS]; /* the owning layer's gradient buffer */
    float *mom[MAX_TENSORS];  /* the owning layer's momentum buffer */
    size_t numel[MAX_TENSORS];
    /* Working memory for chunks of up to `cap` examples. */
    int cap;
    float *xb;      /* the chunk's input, NCHW */
    float *xt;      /* the same in CNHW, when the first layer is spatial and C > 1 */
    float *dlogits;
    int32_t *yb;    /* the chunk's labels (host) */
};

static atomic_int nn_threads = 1;

void fedc_nn_set_threads(int n) { atomic_store(&nn_threads, n < 1 ? 1 : n); }

int fedc_nn_get_threads(void) { return atomic_load(&nn_threads); }

static size_t input_numel(const fedc_model *m)
{
    return (size_t)m->arch->in_c * m->arch->in_h * m->arch->in_w;
}

static int first_layer_needs_cnhw(const fedc_model *m)
{
    fedc__nn_layer_kind k = m->layers[0].kind;
    return m->arch->in_c > 1 && (k == FEDC__NN_CONV2D || k == FEDC__NN_MAXPOOL2D);
}

/* PyTorch's default initialisation of Linear and Conv2d: kaiming_uniform_
 * with a = sqrt(5) gives bound gain * sqrt(3 / fan_in) with gain =
 * sqrt(2 / (1 + 5)), that is 1 / sqrt(fan_in), and the bias uses the same
 * bound. */
static void init_uniform(fedc_rng *rng, float *v, size_t n, size_t fan_in)
{
    double bound = 1.0 / sqrt((double)fan_in);
    for (size_t i = 0; i < n; i++) v[i] = (float)((2.0 * fedc_rng_uniform(rng) - 1.0) * bound);
}

static int add_layer_params(fedc_model *m, fedc__nn_layer *l, fedc_rng *rng, char *err,
                            size_t errlen)
{
    char name[FEDC_MAX_NAME];
    int64_t wshape[4], bshape[1] = {(int64_t)l->bn};
    int wdim;
    size_t fan_in;
    if (l->kind == FEDC__NN_CONV2D) {
        wshape[0] = l->out_c;
        wshape[1] = l->in_c;
        wshape[2] = l->k;
        wshape[3] = l->k;
        wdim = 4;
        fan_in = (size_t)l->in_c * l->k * l->k;
    } else {
        wshape[0] = l->out_c;
        wshape[1] = l->in_c;
        wdim = 2;
        fan_in = (size_t)l->in_c;
    }
    /* Draw the values first so that weight then bias consume the stream in
     * a fixed order, independent of how the parameter set stores them. */
    float *wv = malloc(l->wn * sizeof(float));
    float *bv = malloc(l->bn * sizeof(float));
    int rc = FEDC_ERR_NOMEM;
    if (!wv || !bv) goto done;
    init_uniform(rng, wv, l->wn, fan_in);
    init_uniform(rng, bv, l->bn, fan_in);
    snprintf(name, sizeof(name), "%s.weight", l->name);
    rc = fedc_params_add(m->params, name, FEDC_F32, wdim, wshape, wv, NULL, err, errlen);
    if (rc != FEDC_OK) goto done;
    snprintf(name, sizeof(name), "%s.bias", l->name);
    rc = fedc_params_add(m->params, name, FEDC_F32, 1, bshape, bv, NULL, err, errlen);
done:
    free(wv);
    free(bv);
    return rc;
}

static void release_workspace(fedc_model *m)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    bi->free(m->be->context, m->xb);
    bi->free(m->be->context, m->xt);
    bi->free(m->be->context, m->dlogits);
    free(m->yb);
    m->xb = m->xt = m->dlogits = NULL;
    m->yb = NULL;
    m->cap = 0;
}

/* Makes sure the working memory holds chunks of `cap` examples. Buffers only
 * grow, so that training allocates nothing per step. */
static int reserve(fedc_model *m, int cap, char *err, size_t errlen)
{
    if (cap <= m->cap) return FEDC_OK;
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    release_workspace(m);
    for (int i = 0; i < m->nlayers; i++)
        if (fedc__nn_layer_reserve(m->be, &m->layers[i], cap) != FEDC_OK) goto fail;
    m->xb = bi->alloc(ctx, (size_t)cap * input_numel(m) * sizeof(float));
    m->dlogits = bi->alloc(ctx, (size_t)cap * m->classes * sizeof(float));
    m->yb = malloc((size_t)cap * sizeof(int32_t));
    if (!m->xb || !m->dlogits || !m->yb) goto fail;
    if (first_layer_needs_cnhw(m)) {
        m->xt = bi->alloc(ctx, (size_t)cap * input_numel(m) * sizeof(float));
        if (!m->xt) goto fail;
    }
    m->cap = cap;
    return FEDC_OK;
fail:
    release_workspace(m);
    return fedc_set_error(err, errlen, FEDC_ERR_NOMEM,
                          "out of memory reserving trainer buffers for %d examples", cap);
}

void fedc_model_destroy(fedc_model *m)
{
    if (!m) return;
    const fedc__nn_backend_i *bi = m->be->iface;
    release_workspace(m);
    for (int i = 0; i < m->nlayers; i++) fedc__nn_layer_release(m->be, &m->layers[i]);
    if (!bi->host_memory)
        for (size_t i = 0; i < m->ntensors; i++) bi->free(m->be->context, m->dev[i]);
    fedc_params_destroy(m->params);
    free(m);
}

int fedc_model_create(const char *arch, uint64_t seed, fedc_model **out, char *err,
                      size_t errlen)
{
    const arch_spec *spec = NULL;
    fedc_model *m = NULL;
    int rc;
    if (out) *out = NULL;
    if (!arch || !out)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "model: NULL architecture or output");
    for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
        if (strcmp(arch, archs[i].name) == 0) spec = &archs[i];
    if (!spec)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "unknown model architecture '%s' (known: mlp, cnn)", arch);

    m = calloc(1, sizeof(*m));
    if (!m) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory creating a model");
    m->arch = spec;
    m->be = fedc__nn_backend_cpu();
    m->params = fedc_params_create();
    if (!m->params) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory creating a model");
        goto fail;
    }

    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    int c = spec->in_c, h = spec->in_h, w = spec->in_w;
    int batch_major = 1; /* the model input is NCHW */
    for (int i = 0; i < spec->nlayers; i++) {
        const layer_spec *ls = &spec->layers[i];
        fedc__nn_layer *l = &m->layers[i];
        rc = fedc__nn_layer_init(l, ls->kind, ls->name, c, h, w, ls->out, ls->k, ls->stride,
                                 ls->pad, ls->relu, err, errlen);
        if (rc != FEDC_OK) goto fail;
        m->nlayers = i + 1;
        l->in_batch_major = batch_major;
        /* Nothing upstream of the first layer wants a gradient. */
        l->need_dx = i > 0;
        if (ls->kind == FEDC__NN_DENSE || ls->kind == FEDC__NN_FLATTEN) batch_major = 1;
        if (ls->kind == FEDC__NN_CONV2D || ls->kind == FEDC__NN_MAXPOOL2D) batch_major = 0;
        if (l->wn) {
            rc = add_layer_params(m, l, &rng, err, errlen);
            if (rc != FEDC_OK) goto fail;
        }
        if (ls->kind == FEDC__NN_MAXPOOL2D && i > 0 && m->layers[i - 1].relu) {
            m->layers[i - 1].relu_bwd_in_next = 1;
            l->relu_mask = 1;
        }
        c = l->out_c;
        h = l->out_h;
        w = l->out_w;
    }
    m->classes = c;

    /* Point the layers at their tensors. The tensors are fetched only now
     * because adding to a set may move its tensor structs (not their data). */
    m->ntensors = fedc_params_count(m->params);
    size_t t = 0;
    for (int i = 0; i < m->nlayers; i++) {
        fedc__nn_layer *l = &m->layers[i];
        if (!l->wn) continue;
        float *host[2] = {fedc_params_at(m->params, t)->data, fedc_params_at(m->params, t + 1)->data};
        size_t n[2] = {l->wn, l->bn};
        for (int j = 0; j < 2; j++) {
            m->numel[t + j] = n[j];
            if (m->be->iface->host_memory) {
                m->dev[t + j] = host[j];
            } else {
                m->dev[t + j] = m->be->iface->alloc(m->be->context, n[j] * sizeof(float));
                if (!m->dev[t + j]) {
                    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory creating a model");
                    goto fail;
                }
            }
        }
        l->w = m->dev[t];
        l->b = m->dev[t + 1];
        t += 2;
    }
    /* Gradient and momentum buffers come with the first reservation. */
    rc = reserve(m, 1, err, errlen);
    if (rc != FEDC_OK) goto fail;
    for (int i = 0, k = 0; i < m->nlayers; i++) {
        fedc__nn_layer *l = &m->layers[i];
        if (!l->wn) continue;
        m->grad[k] = l->dw;
        m->grad[k + 1] = l->db;
        m->mom[k] = l->vw;
        m->mom[k + 1] = l->vb;
        k += 2;
    }
    *out = m;
    return FEDC_OK;
fail:
    fedc_model_destroy(m);
    return rc;
}

const char *fedc_model_arch(const fedc_model *m) { return m->arch->name; }

void fedc_model_input_shape(const fedc_model *m, int *c, int *h, int *w)
{
    if (c) *c = m->arch->in_c;
    if (h) *h = m->arch->in_h;
    if (w) *w = m->arch->in_w;
}

int fedc_model_num_classes(const fedc_model *m) { return m->classes; }

size_t fedc_model_num_params(const fedc_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->ntensors; i++) total += m->numel[i];
    return total;
}

fedc_params *fedc_model_params(fedc_model *m) { return m->params; }

int fedc_model_set_params(fedc_model *m, const fedc_params *p, char *err, size_t errlen)
{
    if (!m || !p) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "model: NULL argument");
    int rc = fedc_params_check_same_layout(m->params, p, err, errlen);
    if (rc != FEDC_OK) return rc;
    return fedc_params_copy_data(m->params, p, err, errlen);
}

float *fedc__nn_model_grad(fedc_model *m, size_t i) { return i < m->ntensors ? m->grad[i] : NULL; }

/* The tensors of fedc_model_params() are the truth between calls: a
 * device backend copies them in before and out after each piece of work. */
static void params_to_device(fedc_model *m)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    if (bi->host_memory) return;
    for (size_t i = 0; i < m->ntensors; i++)
        bi->to_device(m->be->context, m->dev[i], fedc_params_at(m->params, i)->data,
                      m->numel[i] * sizeof(float));
}

static void params_to_host(fedc_model *m)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    if (bi->host_memory) return;
    for (size_t i = 0; i < m->ntensors; i++)
        bi->to_host(m->be->context, fedc_params_at(m->params, i)->data, m->dev[i],
                    m->numel[i] * sizeof(float));
}

/* Runs the layers over nb examples whose input is at `in` (device, NCHW)
 * and returns the logits. */
static const float *forward(fedc_model *m, const float *in, int nb)
{
    const fedc__nn_backend *be = m->be;
    if (first_layer_needs_cnhw(m)) {
        be->iface->swap01(be->context, in, nb, m->arch->in_c, m->arch->in_h * m->arch->in_w,
                          m->xt);
        in = m->xt;
    }
    for (int i = 0; i < m->nlayers; i++) {
        fedc__nn_layer_forward(be, &m->layers[i], in, nb);
        in = m->layers[i].y;
    }
    return in;
}

/* Backpropagates m->dlogits through the layers after forward(m, in, nb). */
static void backward(fedc_model *m, const float *in, int nb, int accumulate)
{
    if (first_layer_needs_cnhw(m)) in = m->xt;
    float *dy = m->dlogits;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        fedc__nn_layer *l = &m->layers[i];
        fedc__nn_layer_backward(m->be, l, i == 0 ? in : m->layers[i - 1].y, dy, nb, accumulate);
        dy = l->dx;
    }
}

/* Forward, loss and backward over the nb examples x[idx[0..nb)] (all of x
 * in order when idx is NULL), in chunks of at most m->cap, summing the
 * gradients. The loss gradient is scaled by 1/nb, the mean over the batch.
 * Fails with FEDC_ERR_NONFINITE before any gradient is used when a chunk's
 * loss is not finite. */
static int batch_grad(fedc_model *m, const float *x, const int32_t *y, const uint32_t *idx,
                      size_t nb, double *loss_sum, uint64_t *correct, char *err, size_t errlen)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    size_t row = input_numel(m);
    float scale = (float)(1.0 / (double)nb);
    for (size_t start = 0; start < nb; start += (size_t)m->cap) {
        int cb = (int)(nb - start < (size_t)m->cap ? nb - start : (size_t)m->cap);
        if (idx) {
            bi->gather_rows(ctx, m->xb, x, idx + start, (size_t)cb, row);
            for (int i = 0; i < cb; i++) m->yb[i] = y[idx[start + i]];
        } else {
            bi->to_device(ctx, m->xb, x + start * row, (size_t)cb * row * sizeof(float));
            memcpy(m->yb, y + start, (size_t)cb * sizeof(int32_t));
        }
        const float *logits = forward(m, m->xb, cb);
        double chunk_loss = 0.0;
        bi->softmax_xent(ctx, logits, m->yb, cb, m->classes, scale, m->dlogits, &chunk_loss,
                         correct);
        if (!isfinite(chunk_loss))
            return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE,
                                  "training diverged: the loss is %s (try a smaller learning "
                                  "rate)",
                                  isnan(chunk_loss) ? "NaN" : "infinite");
        *loss_sum += chunk_loss;
        backward(m, m->xb, cb, start > 0);
    }
    return FEDC_OK;
}

int fedc__nn_model_loss_grad(fedc_model *m, const float *x, const int32_t *y, size_t nb,
                             double *loss, char *err, size_t errlen)
{
    int rc = reserve(m, nb < FEDC__NN_MAX_CHUNK ? (int)nb : FEDC__NN_MAX_CHUNK, err, errlen);
    if (rc != FEDC_OK) return rc;
    m->be->iface->set_threads(m->be->context, fedc_nn_get_threads());
    params_to_device(m);
    double sum = 0.0;
    uint64_t correct = 0;
    rc = batch_grad(m, x, y, NULL, nb, &sum, &correct, err, errlen);
    if (loss) *loss = sum / (double)nb;
    return rc;
}

/* Checks the examples: finite inputs and labels in range (y may be NULL). */
static int check_examples(const fedc_model *m, const float *x, const int32_t *y, size_t n,
                          char *err, size_t errlen)
{
    size_t row = input_numel(m);
    for (size_t i = 0; i < n; i++) {
        if (y && (y[i] < 0 || y[i] >= m->classes))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "label %ld of example %zu is outside [0, %d)", (long)y[i], i,
                                  m->classes);
        const float *xi = x + i * row;
        /* A branch-free scan of the exponent bits (all ones for NaN and
         * infinity) keeps the common, all-finite case one vectorised pass. */
        uint32_t bad = 0;
        for (size_t j = 0; j < row; j++) {
            uint32_t bits;
            memcpy(&bits, &xi[j], sizeof(bits));
            bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
        }
        if (bad) {
            for (size_t j = 0; j < row; j++)
                if (!isfinite(xi[j]))
                    return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE,
                                          "input value %zu of example %zu is %s", j, i,
                                          isnan(xi[j]) ? "NaN" : "infinite");
        }
    }
    return FEDC_OK;
}

int fedc_model_train(fedc_model *m, const float *x, const int32_t *y, size_t n,
                     const fedc_train_config *cfg, fedc_train_stats *stats, char *err,
                     size_t errlen)
{
    uint32_t *perm = NULL;
    int rc, uploaded = 0;
    if (stats) memset(stats, 0, sizeof(*stats));
    if (!m || !x || !y || !cfg)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: NULL argument");
    if (n == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: no training examples");
    if (n > UINT32_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                              "train: %zu examples is more than the trainer's limit of %lu", n,
                              (unsigned long)UINT32_MAX);
    if (!(cfg->lr > 0.0) || !isfinite(cfg->lr))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: learning rate must be finite and > 0, got %g", cfg->lr);
    if (!(cfg->momentum >= 0.0) || !isfinite(cfg->momentum))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: momentum must be finite and >= 0, got %g", cfg->momentum);
    if (!(cfg->weight_decay >= 0.0) || !isfinite(cfg->weight_decay))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: weight decay must be finite and >= 0, got %g",
                              cfg->weight_decay);
    if (cfg->epochs < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: epochs must be >= 1, got %d",
                              cfg->epochs);
    if (cfg->batch_size < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: batch size must be >= 1, got %d", cfg->batch_size);
    rc = check_examples(m, x, y, n, err, errlen);
    if (rc != FEDC_OK) return rc;

    size_t bs = (size_t)cfg->batch_size < n ? (size_t)cfg->batch_size : n;
    rc = reserve(m, bs < FEDC__NN_MAX_CHUNK ? (int)bs : FEDC__NN_MAX_CHUNK, err, errlen);
    if (rc != FEDC_OK) return rc;
    perm = malloc(n * sizeof(uint32_t));
    if (!perm) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;

    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    bi->set_threads(ctx, fedc_nn_get_threads());
    params_to_device(m);
    uploaded = 1;
    for (size_t i = 0; i < m->ntensors; i++) bi->zero(ctx, m->mom[i], m->numel[i] * sizeof(float));

    fedc_rng rng;
    fedc_rng_seed(&rng, cfg->seed);
    float lr = (float)cfg->lr, mom = (float)cfg->momentum, wd = (float)cfg->weight_decay;
    double loss_sum = 0.0;
    uint64_t correct = 0, steps = 0;
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        fedc_rng_shuffle_u32(&rng, perm, n);
        loss_sum = 0.0;
        correct = 0;
        for (size_t start = 0; start < n; start += bs) {
            size_t nb = n - start < bs ? n - start : bs;
            rc = batch_grad(m, x, y, perm + start, nb, &loss_sum, &correct, err, errlen);
            if (rc != FEDC_OK) goto done;
            for (size_t i = 0; i < m->ntensors; i++)
                bi->sgd_update(ctx, m->dev[i], m->grad[i], m->mom[i], m->numel[i], lr, mom, wd);
            steps++;
        }
    }
    params_to_host(m);
    rc = fedc_params_check_finite(m->params, err, errlen);
    if (rc != FEDC_OK) goto done;
    if (stats) {
        stats->loss = loss_sum / (double)n;
        stats->accuracy = (double)correct / (double)n;
        stats->num_examples = n;
        stats->steps = steps;
    }
done:
    /* The steps taken before a failure stay in the model, as documented. */
    if (rc != FEDC_OK && uploaded) params_to_host(m);
    free(perm);
    return rc;
}

int fedc_model_evaluate(fedc_model *m, const float *x, const int32_t *y, size_t n,
                        int batch_size, fedc_eval_stats *stats, char *err, size_t errlen)
{
    if (stats) memset(stats, 0, sizeof(*stats));
    if (!m || !x || !y)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "evaluate: NULL argument");
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "evaluate: no examples");
    if (batch_size < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "evaluate: batch size must be >= 1, got %d", batch_size);
    int rc = check_examples(m, x, y, n, err, errlen);
    if (rc != FEDC_OK) return rc;
    size_t chunk = (size_t)batch_size < n ? (size_t)batch_size : n;
    if (chunk > FEDC__NN_MAX_CHUNK) chunk = FEDC__NN_MAX_CHUNK;
    rc = reserve(m, (int)chunk, err, errlen);
    if (rc != FEDC_OK) return rc;

    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    size_t row = input_numel(m);
    bi->set_threads(ctx, fedc_nn_get_threads());
    params_to_device(m);
    double loss_sum = 0.0;
    uint64_t correct = 0;
    for (size_t start = 0; start < n; start += chunk) {
        int cb = (int)(n - start < chunk ? n - start : chunk);
        const float *in = x + start * row;
        /* On the CPU the caller's array is the device input; it is only read. */
        if (!bi->host_memory) {
            bi->to_device(ctx, m->xb, in, (size_t)cb * row * sizeof(float));
            in = m->xb;
        }
        const float *logits = forward(m, in, cb);
        bi->softmax_xent(ctx, logits, y + start, cb, m->classes, 0.0f, NULL, &loss_sum, &correct);
    }
    if (!isfinite(loss_sum))
        return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE,
                              "evaluate: the loss is not finite (the parameters hold NaN or "
                              "overflow)");
    if (stats) {
        stats->loss = loss_sum / (double)n;
        stats->accuracy = (double)correct / (double)n;
        stats->num_examples = n;
    }
    return FEDC_OK;
}

int fedc_model_predict(fedc_model *m, const float *x, size_t n, float *logits, char *err,
                       size_t errlen)
{
    if (!m || !x || !logits)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "predict: NULL argument");
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "predict: no examples");
    int rc = check_examples(m, x, NULL, n, err, errlen);
    if (rc != FEDC_OK) return rc;
    size_t chunk = n < FEDC__NN_MAX_CHUNK ? n : FEDC__NN_MAX_CHUNK;
    rc = reserve(m, (int)chunk, err, errlen);
    if (rc != FEDC_OK) return rc;

    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    size_t row = input_numel(m);
    bi->set_threads(ctx, fedc_nn_get_threads());
    params_to_device(m);
    for (size_t start = 0; start < n; start += chunk) {
        int cb = (int)(n - start < chunk ? n - start : chunk);
        const float *in = x + start * row;
        if (!bi->host_memory) {
            bi->to_device(ctx, m->xb, in, (size_t)cb * row * sizeof(float));
            in = m->xb;
        }
        const float *out = forward(m, in, cb);
        bi->to_host(ctx, logits + start * (size_t)m->classes, out,
                    (size_t)cb * m->classes * sizeof(float));
    }
    return FEDC_OK;
}
