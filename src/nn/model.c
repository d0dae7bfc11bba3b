/* The built-in models (mlp, cnn, mlp-large): the architectures,
 * construction, parameters, and the device they compute on. Training,
 * evaluation and prediction are in train.c. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model_impl.h"
#ifdef FEDC_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* clang-format off */
static const arch_spec archs[] = {
    {"mlp", 1, 28, 28, 4, {
        {FEDC__NN_FLATTEN,   NULL,    0,   0, 0, 0, 0},
        {FEDC__NN_DENSE,     "fc1",   200, 0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc2",   200, 0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc3",   10,  0, 0, 0, 0}}},
    {"cnn", 1, 28, 28, 8, {
        {FEDC__NN_CONV2D,    "conv1", 6,   5, 1, 0, 1},
        {FEDC__NN_MAXPOOL2D, NULL,    0,   2, 2, 0, 0},
        {FEDC__NN_CONV2D,    "conv2", 16,  5, 1, 0, 1},
        {FEDC__NN_MAXPOOL2D, NULL,    0,   2, 2, 0, 0},
        {FEDC__NN_FLATTEN,   NULL,    0,   0, 0, 0, 0},
        {FEDC__NN_DENSE,     "fc1",   120, 0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc2",   84,  0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc3",   10,  0, 0, 0, 0}}},
    /* The mlp widened for benchmarks, large enough to keep a GPU busy. */
    {"mlp-large", 1, 28, 28, 4, {
        {FEDC__NN_FLATTEN,   NULL,    0,    0, 0, 0, 0},
        {FEDC__NN_DENSE,     "fc1",   1024, 0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc2",   1024, 0, 0, 0, 1},
        {FEDC__NN_DENSE,     "fc3",   10,   0, 0, 0, 0}}},
};
/* clang-format on */

static atomic_int nn_threads = 1;

void fedc_nn_set_threads(int n)
{
    atomic_store(&nn_threads, n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n);
}

int fedc_nn_get_threads(void)
{
    return atomic_load(&nn_threads);
}

size_t fedc__nn_input_numel(const fedc_model *m)
{
    return (size_t)m->arch->in_c * m->arch->in_h * m->arch->in_w;
}

int fedc__nn_first_layer_needs_cnhw(const fedc_model *m)
{
    fedc__nn_layer_kind k = m->geom[0].kind;
    return m->arch->in_c > 1 && (k == FEDC__NN_CONV2D || k == FEDC__NN_MAXPOOL2D);
}

int fedc__nn_on_device(const fedc__nn_backend *be)
{
    return be->iface->gather_rows_dev && be->iface->softmax_xent_dev;
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

static int add_layer_params(fedc_model *m, fedc__nn_layer *l, fedc_rng *rng, char *err, size_t errlen)
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

static void replica_free_workspace(const fedc__nn_backend *be, replica *r)
{
    const fedc__nn_backend_i *bi = be->iface;
    bi->free(be->context, r->xb);
    bi->free(be->context, r->xt);
    bi->free(be->context, r->dlogits);
    bi->free(be->context, r->ybd);
    free(r->yb);
    r->xb = r->xt = r->dlogits = NULL;
    r->yb = r->ybd = NULL;
    r->cap = 0;
}

static void replica_destroy(const fedc_model *m, replica *r)
{
    if (!r) return;
    replica_free_workspace(m->be, r);
    for (int i = 0; i < m->nlayers; i++) fedc__nn_layer_release(m->be, &r->layers[i]);
    free(r);
}

/* Makes sure replica r holds chunks of `cap` examples. Buffers only grow, so
 * that training allocates nothing per step. */
static int replica_reserve(fedc_model *m, replica *r, int cap, char *err, size_t errlen)
{
    if (cap <= r->cap) return FEDC_OK;
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    replica_free_workspace(m->be, r);
    for (int i = 0; i < m->nlayers; i++)
        if (fedc__nn_layer_reserve(m->be, &r->layers[i], cap) != FEDC_OK) goto fail;
    r->xb = bi->alloc(ctx, (size_t)cap * fedc__nn_input_numel(m) * sizeof(float));
    r->dlogits = bi->alloc(ctx, (size_t)cap * m->classes * sizeof(float));
    r->yb = malloc((size_t)cap * sizeof(int32_t));
    if (!r->xb || !r->dlogits || !r->yb) goto fail;
    if (fedc__nn_first_layer_needs_cnhw(m)) {
        r->xt = bi->alloc(ctx, (size_t)cap * fedc__nn_input_numel(m) * sizeof(float));
        if (!r->xt) goto fail;
    }
    if (fedc__nn_on_device(m->be)) {
        r->ybd = bi->alloc(ctx, (size_t)cap * sizeof(int32_t));
        if (!r->ybd) goto fail;
    }
    for (int i = 0, k = 0; i < m->nlayers; i++) {
        const fedc__nn_layer *l = &r->layers[i];
        if (!l->wn) continue;
        r->grad[k++] = l->dw;
        r->grad[k++] = l->db;
    }
    r->cap = cap;
    return FEDC_OK;
fail:
    replica_free_workspace(m->be, r);
    return fedc_set_error(err, errlen, FEDC_ERR_NOMEM,
                          "out of memory reserving trainer buffers for %d examples", cap);
}

/* Makes replicas 0 .. nthreads-1 exist with room for chunks of `cap`. New
 * replicas copy the model's layer geometry and compute on the device copies
 * of its parameters, with buffers of their own. */
int fedc__nn_model_reserve(fedc_model *m, int nthreads, int cap, char *err, size_t errlen)
{
    for (int t = m->nrep; t < nthreads; t++) {
        replica *r = calloc(1, sizeof(*r));
        if (!r) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        for (int i = 0, k = 0; i < m->nlayers; i++) {
            fedc__nn_layer *l = &r->layers[i];
            *l = m->geom[i];
            if (!l->wn) continue;
            l->w = m->dev[k++];
            l->b = m->dev[k++];
        }
        m->rep[t] = r;
        m->nrep = t + 1;
    }
    for (int t = 0; t < nthreads; t++) {
        int rc = replica_reserve(m, m->rep[t], cap, err, errlen);
        if (rc != FEDC_OK) return rc;
    }
    return FEDC_OK;
}

/* Destroys a backend the model created (a GPU's). */
static void backend_destroy(fedc__nn_backend *be)
{
    if (!be) return;
#ifdef FEDC_HAVE_CUDA
    fedc__nn_backend_cuda_destroy(be);
#endif
}

/* Forgets the model's device state (without freeing it). */
static void clear_binding(fedc_model *m)
{
    m->be = NULL;
    m->owned_be = NULL;
    m->acc = NULL;
    m->nrep = 0;
    memset(m->rep, 0, sizeof(m->rep));
    memset(m->dev, 0, sizeof(m->dev));
    memset(m->mom, 0, sizeof(m->mom));
}

/* Frees everything the model holds on its device: the replicas, the device
 * copies of the tensors, the loss accumulator, and the backend itself when
 * the model created it. The parameters (host) stay. */
static void unbind(fedc_model *m)
{
    const fedc__nn_backend *be = m->be;
    if (!be) return;
    for (int t = 0; t < m->nrep; t++) replica_destroy(m, m->rep[t]);
    if (!be->iface->host_memory)
        for (size_t i = 0; i < m->ntensors; i++) be->iface->free(be->context, m->dev[i]);
    be->iface->free(be->context, m->acc);
    backend_destroy(m->owned_be);
    clear_binding(m);
}

/* Sets up a model that has no backend on `be`: device copies of the tensors
 * (the tensors themselves on a host-memory backend), replica 0 with the
 * gradient and momentum buffers, the loss accumulator. On failure frees what
 * it took, leaving the model without a backend again. */
static int bind(fedc_model *m, const fedc__nn_backend *be, char *err, size_t errlen)
{
    const fedc__nn_backend_i *bi = be->iface;
    int rc;
    m->be = be;
    for (size_t i = 0; i < m->ntensors; i++) {
        if (bi->host_memory) {
            m->dev[i] = fedc_params_at(m->params, i)->data;
            continue;
        }
        m->dev[i] = bi->alloc(be->context, m->numel[i] * sizeof(float));
        if (!m->dev[i]) goto nomem;
    }
    if (fedc__nn_on_device(be)) {
        m->acc = bi->alloc(be->context, sizeof(*m->acc));
        if (!m->acc) goto nomem;
    }
    /* Gradient and momentum buffers come with the first reservation. */
    rc = fedc__nn_model_reserve(m, 1, 1, err, errlen);
    if (rc != FEDC_OK) goto fail;
    for (int i = 0, k = 0; i < m->nlayers; i++) {
        const fedc__nn_layer *l = &m->rep[0]->layers[i];
        if (!l->wn) continue;
        m->mom[k++] = l->vw;
        m->mom[k++] = l->vb;
    }
    return FEDC_OK;
nomem:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory placing the model on the %s backend",
                        bi->name);
fail:
    unbind(m);
    return rc;
}

/* Moves the model onto backend `be`, which it destroys later when `owned`
 * is be. The state on the old backend is set aside until the new one is
 * complete, so that a failure leaves the model where it was (and destroys
 * `owned`). */
static int move_to(fedc_model *m, const fedc__nn_backend *be, fedc__nn_backend *owned, fedc_device device,
                   char *err, size_t errlen)
{
    fedc_model old = *m;
    clear_binding(m);
    int rc = bind(m, be, err, errlen);
    if (rc != FEDC_OK) {
        backend_destroy(owned);
        *m = old;
        return rc;
    }
    m->owned_be = owned;
    m->device = device;
    unbind(&old);
    return FEDC_OK;
}

void fedc_model_destroy(fedc_model *m)
{
    if (!m) return;
    unbind(m);
    fedc_params_destroy(m->params);
    free(m);
}

/* Writes the names of the built-in architectures, comma-separated. */
static void format_arch_names(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]) && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", archs[i].name);
        if (w < 0) break;
        used += (size_t)w;
    }
}

int fedc_model_create(const char *arch, uint64_t seed, fedc_model **out, char *err, size_t errlen)
{
    const arch_spec *spec = NULL;
    fedc_model *m = NULL;
    int rc;
    if (out) *out = NULL;
    if (!arch || !out)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "model: NULL architecture or output");
    for (size_t i = 0; i < sizeof(archs) / sizeof(archs[0]); i++)
        if (strcmp(arch, archs[i].name) == 0) spec = &archs[i];
    if (!spec) {
        char known[128];
        format_arch_names(known, sizeof(known));
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown model architecture '%s' (known: %s)",
                              arch, known);
    }

    m = calloc(1, sizeof(*m));
    if (!m) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory creating a model");
    m->arch = spec;
    m->device.type = FEDC_DEVICE_CPU;
    m->device.index = 0;
    m->params = fedc_params_create();
    if (!m->params) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory creating a model");
        goto fail;
    }
    fedc__nn_layer *layers = m->geom;

    fedc_rng rng;
    fedc_rng_seed(&rng, seed);
    int c = spec->in_c, h = spec->in_h, w = spec->in_w;
    int batch_major = 1; /* the model input is NCHW */
    for (int i = 0; i < spec->nlayers; i++) {
        const layer_spec *ls = &spec->layers[i];
        fedc__nn_layer *l = &layers[i];
        rc = fedc__nn_layer_init(l, ls->kind, ls->name, c, h, w, ls->out, ls->k, ls->stride, ls->pad,
                                 ls->relu, err, errlen);
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
        if (ls->kind == FEDC__NN_MAXPOOL2D && i > 0 && layers[i - 1].relu) {
            layers[i - 1].relu_bwd_in_next = 1;
            l->relu_mask = 1;
        }
        c = l->out_c;
        h = l->out_h;
        w = l->out_w;
    }
    m->classes = c;
    m->ntensors = fedc_params_count(m->params);
    for (int i = 0, t = 0; i < m->nlayers; i++) {
        const fedc__nn_layer *l = &layers[i];
        if (!l->wn) continue;
        m->numel[t++] = l->wn;
        m->numel[t++] = l->bn;
    }
    /* The layers get their tensors only now, in bind(): adding to a set may
     * move its tensor structs (not their data). */
    rc = bind(m, fedc__nn_backend_cpu(), err, errlen);
    if (rc != FEDC_OK) goto fail;
    *out = m;
    return FEDC_OK;
fail:
    fedc_model_destroy(m);
    return rc;
}

int fedc_model_set_device(fedc_model *m, fedc_device d, char *err, size_t errlen)
{
    if (!m) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "model: NULL argument");
    if (d.type == FEDC_DEVICE_CPU) {
        const fedc_device cpu = {FEDC_DEVICE_CPU, 0};
        if (m->be == fedc__nn_backend_cpu()) return FEDC_OK;
        return move_to(m, fedc__nn_backend_cpu(), NULL, cpu, err, errlen);
    }
    if (d.type == m->device.type && d.index == m->device.index) return FEDC_OK;
    /* The check says what is missing (a build without CUDA, no driver, no
     * such GPU) with the device's name; no fallback to the CPU. */
    int rc = fedc_device_check(d, NULL, 0, err, errlen);
    if (rc != FEDC_OK) return rc;
#ifdef FEDC_HAVE_CUDA
    if (d.type == FEDC_DEVICE_CUDA) {
        fedc__nn_backend *be = NULL;
        rc = fedc__nn_backend_cuda_create(d.index, &be, err, errlen);
        if (rc != FEDC_OK) return rc;
        return move_to(m, be, be, d, err, errlen);
    }
#endif
    char where[32];
    fedc_device_format(d, where, sizeof(where));
    return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "%s: the trainer has no backend for this device",
                          where);
}

fedc_device fedc_model_get_device(const fedc_model *m)
{
    fedc_device cpu = {FEDC_DEVICE_CPU, 0};
    return m ? m->device : cpu;
}

int fedc__nn_model_set_backend(fedc_model *m, const fedc__nn_backend *be, char *err, size_t errlen)
{
    const fedc_device cpu = {FEDC_DEVICE_CPU, 0};
    if (m->be == be) return FEDC_OK;
    return move_to(m, be, NULL, cpu, err, errlen);
}

const fedc__nn_backend *fedc__nn_model_backend(const fedc_model *m)
{
    return m->be;
}

const char *fedc_model_arch(const fedc_model *m)
{
    return m->arch->name;
}

void fedc_model_input_shape(const fedc_model *m, int *c, int *h, int *w)
{
    if (c) *c = m->arch->in_c;
    if (h) *h = m->arch->in_h;
    if (w) *w = m->arch->in_w;
}

int fedc_model_num_classes(const fedc_model *m)
{
    return m->classes;
}

size_t fedc_model_num_params(const fedc_model *m)
{
    size_t total = 0;
    for (size_t i = 0; i < m->ntensors; i++) total += m->numel[i];
    return total;
}

fedc_params *fedc_model_params(fedc_model *m)
{
    return m->params;
}

int fedc_model_set_params(fedc_model *m, const fedc_params *p, char *err, size_t errlen)
{
    if (!m || !p) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "model: NULL argument");
    int rc = fedc_params_check_same_layout(m->params, p, err, errlen);
    if (rc != FEDC_OK) return rc;
    return fedc_params_copy_data(m->params, p, err, errlen);
}

float *fedc__nn_model_grad(fedc_model *m, size_t i)
{
    return i < m->ntensors ? m->rep[0]->grad[i] : NULL;
}
