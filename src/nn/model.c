/* The built-in models (mlp, cnn, mlp-large): construction, training,
 * evaluation, and the device they compute on. */
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
#include "nn/workers.h"
#ifdef FEDC_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

#define MAX_LAYERS  16
#define MAX_TENSORS (2 * MAX_LAYERS)
#define MAX_THREADS 64
/* A thread gets at least this many examples of a batch: below it, waking
 * threads costs more than they save. */
#define MIN_EXAMPLES_PER_THREAD 4

/* One layer of an architecture table. */
typedef struct layer_spec {
    fedc__nn_layer_kind kind;
    const char *name; /* parameter prefix, NULL for layers without parameters */
    int out;          /* dense: features; conv: channels */
    int k, stride, pad;
    int relu; /* ReLU fused onto the output */
} layer_spec;

typedef struct arch_spec {
    const char *name;
    int in_c, in_h, in_w;
    int nlayers;
    layer_spec layers[MAX_LAYERS];
} arch_spec;

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

/*
 * One trainer thread's working set: activations and gradients for its share
 * of each batch, over the parameters all threads share. Replica 0 always
 * exists; it also holds the momentum buffers and receives the sum of the
 * threads' gradients before each step.
 */
typedef struct replica {
    fedc__nn_layer layers[MAX_LAYERS];
    float *grad[MAX_TENSORS]; /* its layers' gradient buffers, in tensor order */
    int cap;                  /* examples per chunk its buffers hold */
    float *xb;                /* the chunk's input, NCHW */
    float *xt;                /* the same in CNHW, when the first layer is spatial and C > 1 */
    float *dlogits;
    int32_t *yb;  /* the chunk's labels (host) */
    int32_t *ybd; /* the same on the device, when the data stays there */
    /* Results of its share of the current job. */
    size_t begin, end;
    double loss_sum;
    uint64_t correct;
    int rc;
    char err[FEDC_ERRMSG_MAX];
} replica;

typedef enum job_kind { JOB_GRAD, JOB_EVAL, JOB_PREDICT } job_kind;

/* Work split among the threads: examples [0, n) of x, in shares of
 * consecutive examples, one per replica. */
typedef struct job {
    struct fedc_model *m;
    job_kind kind;
    const float *x;      /* host examples */
    const int32_t *y;    /* host labels (not for JOB_PREDICT) */
    const uint32_t *idx; /* JOB_GRAD: the job's examples are x[idx[i]], or x[i] if NULL */
    size_t n;
    int nthreads;
    float scale;   /* JOB_GRAD: factor of the loss gradient (1 / batch size) */
    float *logits; /* JOB_PREDICT: host output, n * classes */
    /* The same examples, labels and order uploaded to the device, when the
     * backend keeps data there (see on_device()); NULL otherwise. The loss
     * statistics then go to the model's accumulator, not to the replicas. */
    const float *xd;
    const int32_t *yd;
    const uint32_t *idxd;
} job;

struct fedc_model {
    const arch_spec *arch;
    int classes;
    int nlayers;
    /* The layers' geometry and flags, without buffers: each replica's layers
     * start as copies of these. */
    fedc__nn_layer geom[MAX_LAYERS];
    /* What users see; on a host-memory backend the layers compute on these
     * tensors' data directly. */
    fedc_params *params;
    size_t ntensors;
    size_t numel[MAX_TENSORS];

    /* The device and everything on it, replaced as a whole when the device
     * changes (see bind() and unbind()). */
    fedc_device device;
    const fedc__nn_backend *be;
    fedc__nn_backend *owned_be; /* be, when the model created it (a GPU's) */
    float *dev[MAX_TENSORS];    /* device copy of each tensor (the tensor data on CPU) */
    float *mom[MAX_TENSORS];    /* replica 0's momentum buffers */
    fedc__nn_xent_acc *acc;     /* device loss statistics, when on_device() */
    int nrep;                   /* replicas allocated */
    replica *rep[MAX_THREADS];
};

static atomic_int nn_threads = 1;

void fedc_nn_set_threads(int n)
{
    atomic_store(&nn_threads, n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n);
}

int fedc_nn_get_threads(void)
{
    return atomic_load(&nn_threads);
}

static size_t input_numel(const fedc_model *m)
{
    return (size_t)m->arch->in_c * m->arch->in_h * m->arch->in_w;
}

static int first_layer_needs_cnhw(const fedc_model *m)
{
    fedc__nn_layer_kind k = m->geom[0].kind;
    return m->arch->in_c > 1 && (k == FEDC__NN_CONV2D || k == FEDC__NN_MAXPOOL2D);
}

/* Whether the backend keeps a call's data on the device (backend.h):
 * examples, labels and loss statistics are then uploaded once and read back
 * once instead of crossing per chunk. */
static int on_device(const fedc__nn_backend *be)
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
    r->xb = bi->alloc(ctx, (size_t)cap * input_numel(m) * sizeof(float));
    r->dlogits = bi->alloc(ctx, (size_t)cap * m->classes * sizeof(float));
    r->yb = malloc((size_t)cap * sizeof(int32_t));
    if (!r->xb || !r->dlogits || !r->yb) goto fail;
    if (first_layer_needs_cnhw(m)) {
        r->xt = bi->alloc(ctx, (size_t)cap * input_numel(m) * sizeof(float));
        if (!r->xt) goto fail;
    }
    if (on_device(m->be)) {
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
static int reserve(fedc_model *m, int nthreads, int cap, char *err, size_t errlen)
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
    if (on_device(be)) {
        m->acc = bi->alloc(be->context, sizeof(*m->acc));
        if (!m->acc) goto nomem;
    }
    /* Gradient and momentum buffers come with the first reservation. */
    rc = reserve(m, 1, 1, err, errlen);
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

/* Runs replica r's layers over nb examples whose input is at `in` (device,
 * NCHW) and returns the logits. */
static const float *forward(const fedc_model *m, replica *r, const float *in, int nb)
{
    const fedc__nn_backend *be = m->be;
    if (first_layer_needs_cnhw(m)) {
        be->iface->swap01(be->context, in, nb, m->arch->in_c, m->arch->in_h * m->arch->in_w, r->xt);
        in = r->xt;
    }
    for (int i = 0; i < m->nlayers; i++) {
        fedc__nn_layer_forward(be, &r->layers[i], in, nb);
        in = r->layers[i].y;
    }
    return in;
}

/* Backpropagates r->dlogits through the layers after forward(m, r, in, nb). */
static void backward(const fedc_model *m, replica *r, const float *in, int nb, int accumulate)
{
    if (first_layer_needs_cnhw(m)) in = r->xt;
    float *dy = r->dlogits;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        fedc__nn_layer *l = &r->layers[i];
        fedc__nn_layer_backward(m->be, l, i == 0 ? in : r->layers[i - 1].y, dy, nb, accumulate);
        dy = l->dx;
    }
}

/* The share of replica t: consecutive examples, ceil(n / threads) each, so
 * that replica 0's is never empty when n > 0 (the later ones may be). */
static void share(size_t n, int nthreads, int t, size_t *begin, size_t *end)
{
    size_t per = (n + (size_t)nthreads - 1) / (size_t)nthreads;
    size_t b = per * (size_t)t, e = b + per;
    *begin = b < n ? b : n;
    *end = e < n ? e : n;
}

/* The error of a training whose loss went to NaN or infinity. */
static int diverged(char *err, size_t errlen, double loss)
{
    return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE,
                          "training diverged: the loss is %s (try a smaller learning rate)",
                          isnan(loss) ? "NaN" : "infinite");
}

/* Thread t's part of a job, chunk by chunk. */
static void run_share(void *arg, int t)
{
    const job *j = arg;
    fedc_model *m = j->m;
    replica *r = m->rep[t];
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    const size_t row = input_numel(m);
    share(j->n, j->nthreads, t, &r->begin, &r->end);
    r->loss_sum = 0.0;
    r->correct = 0;
    r->rc = FEDC_OK;
    for (size_t start = r->begin; start < r->end; start += (size_t)r->cap) {
        int cb = (int)(r->end - start < (size_t)r->cap ? r->end - start : (size_t)r->cap);
        const float *in;
        const int32_t *labels = j->y ? j->y + start : NULL;
        const int32_t *dev_labels = NULL;
        if (j->xd) {
            /* The data is on the device: nothing crosses to the host. */
            if (j->idxd) {
                bi->gather_rows_dev(ctx, r->xb, j->xd, j->idxd + start, (size_t)cb, row);
                bi->gather_rows_dev(ctx, r->ybd, j->yd, j->idxd + start, (size_t)cb, 1);
                in = r->xb;
                dev_labels = r->ybd;
            } else {
                in = j->xd + start * row;
                dev_labels = j->yd ? j->yd + start : NULL;
            }
        } else if (j->idx) {
            bi->gather_rows(ctx, r->xb, j->x, j->idx + start, (size_t)cb, row);
            for (int i = 0; i < cb; i++) r->yb[i] = j->y[j->idx[start + i]];
            in = r->xb;
            labels = r->yb;
        } else if (bi->host_memory) {
            /* On the CPU the caller's array is the device input; it is only read. */
            in = j->x + start * row;
        } else {
            bi->to_device(ctx, r->xb, j->x + start * row, (size_t)cb * row * sizeof(float));
            in = r->xb;
        }
        const float *logits = forward(m, r, in, cb);
        if (j->kind == JOB_PREDICT) {
            bi->to_host(ctx, j->logits + start * (size_t)m->classes, logits,
                        (size_t)cb * m->classes * sizeof(float));
            continue;
        }
        if (j->xd) {
            /* The loss statistics stay on the device until the caller reads
             * them; a non-finite loss is found then. */
            int grad = j->kind == JOB_GRAD;
            bi->softmax_xent_dev(ctx, logits, dev_labels, cb, m->classes, grad ? j->scale : 0.0f,
                                 grad ? r->dlogits : NULL, m->acc);
            if (grad) backward(m, r, in, cb, start > r->begin);
            continue;
        }
        if (j->kind == JOB_EVAL) {
            bi->softmax_xent(ctx, logits, labels, cb, m->classes, 0.0f, NULL, &r->loss_sum, &r->correct);
            continue;
        }
        double chunk_loss = 0.0;
        bi->softmax_xent(ctx, logits, labels, cb, m->classes, j->scale, r->dlogits, &chunk_loss, &r->correct);
        if (!isfinite(chunk_loss)) {
            r->rc = diverged(r->err, sizeof(r->err), chunk_loss);
            return;
        }
        r->loss_sum += chunk_loss;
        backward(m, r, in, cb, start > r->begin);
    }
}

/* How many threads a job of n examples gets. */
static int threads_for(const fedc_model *m, size_t n)
{
    /* Replicas share the parameters in place, which needs host memory. */
    if (!m->be->iface->host_memory) return 1;
    size_t most = n / MIN_EXAMPLES_PER_THREAD;
    int t = fedc_nn_get_threads();
    return (size_t)t <= most ? t : most > 1 ? (int)most : 1;
}

/* Runs a job on its threads and sums their results: loss and hits, and for
 * JOB_GRAD the gradients, into replica 0. Replica buffers must be reserved
 * for j->nthreads threads. */
static int run_job(fedc_model *m, job *j, fedc__nn_workers *workers, double *loss_sum, uint64_t *correct,
                   char *err, size_t errlen)
{
    fedc__nn_workers_run(workers, run_share, j);
    for (int t = 0; t < j->nthreads; t++) {
        replica *r = m->rep[t];
        if (r->rc != FEDC_OK) return fedc_set_error(err, errlen, r->rc, "%s", r->err);
        *loss_sum += r->loss_sum;
        *correct += r->correct;
    }
    if (j->kind == JOB_GRAD)
        for (int t = 1; t < j->nthreads; t++) {
            replica *r = m->rep[t];
            if (r->begin == r->end) continue;
            for (size_t i = 0; i < m->ntensors; i++)
                m->be->iface->add(m->be->context, m->rep[0]->grad[i], r->grad[i], m->numel[i]);
        }
    return FEDC_OK;
}

/* Chooses the threads for jobs of up to `work` examples, processed in
 * chunks of at most `chunk` (and FEDC__NN_MAX_CHUNK), reserves their
 * buffers and starts them. *workers is NULL for one thread; the caller
 * destroys it. Threads live for one call, so that no idle thread stays
 * behind in a process that holds many models. */
static int start_threads(fedc_model *m, size_t work, size_t chunk, int *nthreads, fedc__nn_workers **workers,
                         char *err, size_t errlen)
{
    int t = threads_for(m, work);
    *workers = NULL;
    if (t > 1) {
        *workers = fedc__nn_workers_create(t);
        if (!*workers) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory starting threads");
        t = fedc__nn_workers_count(*workers);
    }
    size_t cap = (work + (size_t)t - 1) / (size_t)t;
    if (cap > chunk) cap = chunk;
    if (cap > FEDC__NN_MAX_CHUNK) cap = FEDC__NN_MAX_CHUNK;
    int rc = reserve(m, t, cap < 1 ? 1 : (int)cap, err, errlen);
    if (rc != FEDC_OK) {
        fedc__nn_workers_destroy(*workers);
        *workers = NULL;
        return rc;
    }
    /* Each thread runs its own GEMMs; BLAS threads on top would only
     * compete with them for the cores. */
    m->be->iface->set_threads(m->be->context, 1);
    *nthreads = t;
    return FEDC_OK;
}

/* A call's examples, labels and order of the examples in device memory,
 * on a backend that keeps data there (see on_device()). */
typedef struct dev_data {
    float *x;
    int32_t *y;
    uint32_t *perm;
} dev_data;

static void dev_data_free(const fedc_model *m, dev_data *d)
{
    const fedc__nn_backend *be = m->be;
    be->iface->free(be->context, d->x);
    be->iface->free(be->context, d->perm);
    be->iface->free(be->context, d->y);
    memset(d, 0, sizeof(*d));
}

/* On a backend that keeps data on the device: uploads n examples and their
 * labels (when y is not NULL), makes room for an order of the examples
 * (when `order`), points the job at them and clears the loss statistics.
 * Elsewhere leaves *d empty and the job as it is. */
static int dev_data_upload(fedc_model *m, job *j, const float *x, const int32_t *y, size_t n, int order,
                           dev_data *d, char *err, size_t errlen)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    memset(d, 0, sizeof(*d));
    if (!on_device(m->be)) return FEDC_OK;
    size_t xbytes = n * input_numel(m) * sizeof(float);
    d->x = bi->alloc(ctx, xbytes);
    if (y) d->y = bi->alloc(ctx, n * sizeof(int32_t));
    if (order) d->perm = bi->alloc(ctx, n * sizeof(uint32_t));
    if (!d->x || (y && !d->y) || (order && !d->perm)) {
        dev_data_free(m, d);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of %s memory for %zu examples", bi->name, n);
    }
    bi->to_device(ctx, d->x, x, xbytes);
    if (y) bi->to_device(ctx, d->y, y, n * sizeof(int32_t));
    bi->zero(ctx, m->acc, sizeof(*m->acc));
    j->xd = d->x;
    j->yd = d->y;
    return FEDC_OK;
}

/* Adds the loss statistics gathered on the device to *loss_sum and
 * *correct. */
static void acc_read(const fedc_model *m, double *loss_sum, uint64_t *correct)
{
    fedc__nn_xent_acc acc;
    m->be->iface->to_host(m->be->context, &acc, m->acc, sizeof(acc));
    *loss_sum += acc.loss_sum;
    *correct += acc.correct;
}

int fedc__nn_model_loss_grad(fedc_model *m, const float *x, const int32_t *y, size_t nb, double *loss,
                             char *err, size_t errlen)
{
    fedc__nn_workers *workers;
    dev_data dd;
    job j = {m, JOB_GRAD, x, y, NULL, nb, 1, (float)(1.0 / (double)nb), NULL, NULL, NULL, NULL};
    int rc = start_threads(m, nb, nb, &j.nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    rc = dev_data_upload(m, &j, x, y, nb, 0, &dd, err, errlen);
    if (rc != FEDC_OK) {
        fedc__nn_workers_destroy(workers);
        return rc;
    }
    params_to_device(m);
    double sum = 0.0;
    uint64_t correct = 0;
    rc = run_job(m, &j, workers, &sum, &correct, err, errlen);
    if (j.xd) acc_read(m, &sum, &correct);
    if (loss) *loss = sum / (double)nb;
    dev_data_free(m, &dd);
    fedc__nn_workers_destroy(workers);
    return rc;
}

/* Checks the examples: finite inputs and labels in range (y may be NULL). */
static int check_examples(const fedc_model *m, const float *x, const int32_t *y, size_t n, char *err,
                          size_t errlen)
{
    size_t row = input_numel(m);
    for (size_t i = 0; i < n; i++) {
        if (y && (y[i] < 0 || y[i] >= m->classes))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "label %ld of example %zu is outside [0, %d)", (long)y[i], i, m->classes);
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

int fedc_model_train(fedc_model *m, const float *x, const int32_t *y, size_t n, const fedc_train_config *cfg,
                     fedc_train_stats *stats, char *err, size_t errlen)
{
    uint32_t *perm = NULL;
    dev_data dd = {NULL, NULL, NULL};
    /* FedProx: the parameters at the start of the call, on the device. */
    float *anchor[MAX_TENSORS] = {NULL};
    int rc, uploaded = 0;
    if (stats) memset(stats, 0, sizeof(*stats));
    if (!m || !x || !y || !cfg) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: NULL argument");
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: no training examples");
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
                              "train: weight decay must be finite and >= 0, got %g", cfg->weight_decay);
    if (!(cfg->proximal_mu >= 0.0) || !isfinite(cfg->proximal_mu))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: proximal mu must be finite and >= 0, got %g", cfg->proximal_mu);
    if (cfg->epochs < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: epochs must be >= 1, got %d",
                              cfg->epochs);
    if (cfg->batch_size < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "train: batch size must be >= 1, got %d",
                              cfg->batch_size);
    rc = check_examples(m, x, y, n, err, errlen);
    if (rc != FEDC_OK) return rc;

    size_t bs = (size_t)cfg->batch_size < n ? (size_t)cfg->batch_size : n;
    fedc__nn_workers *workers = NULL;
    job j = {m, JOB_GRAD, x, y, NULL, 0, 1, 0.0f, NULL, NULL, NULL, NULL};
    rc = start_threads(m, bs, bs, &j.nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    perm = malloc(n * sizeof(uint32_t));
    if (!perm) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    rc = dev_data_upload(m, &j, x, y, n, 1, &dd, err, errlen);
    if (rc != FEDC_OK) goto done;

    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    params_to_device(m);
    uploaded = 1;
    for (size_t i = 0; i < m->ntensors; i++) bi->zero(ctx, m->mom[i], m->numel[i] * sizeof(float));
    float mu = (float)cfg->proximal_mu;
    if (mu != 0.0f) {
        /* The host tensors still hold the starting parameters. */
        for (size_t i = 0; i < m->ntensors; i++) {
            anchor[i] = bi->alloc(ctx, m->numel[i] * sizeof(float));
            if (!anchor[i]) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory");
                goto done;
            }
            bi->to_device(ctx, anchor[i], fedc_params_at(m->params, i)->data, m->numel[i] * sizeof(float));
        }
    }

    fedc_rng rng;
    fedc_rng_seed(&rng, cfg->seed);
    float lr = (float)cfg->lr, mom = (float)cfg->momentum, wd = (float)cfg->weight_decay;
    double loss_sum = 0.0;
    uint64_t correct = 0, steps = 0;
    for (int epoch = 0; epoch < cfg->epochs; epoch++) {
        fedc_rng_shuffle_u32(&rng, perm, n);
        loss_sum = 0.0;
        correct = 0;
        if (dd.perm) {
            bi->to_device(ctx, dd.perm, perm, n * sizeof(uint32_t));
            bi->zero(ctx, m->acc, sizeof(*m->acc));
        }
        for (size_t start = 0; start < n; start += bs) {
            j.n = n - start < bs ? n - start : bs;
            j.idx = perm + start;
            j.idxd = dd.perm ? dd.perm + start : NULL;
            j.scale = (float)(1.0 / (double)j.n);
            rc = run_job(m, &j, workers, &loss_sum, &correct, err, errlen);
            if (rc != FEDC_OK) goto done;
            for (size_t i = 0; i < m->ntensors; i++) {
                if (mu != 0.0f)
                    bi->proximal_grad(ctx, m->rep[0]->grad[i], m->dev[i], anchor[i], m->numel[i], mu);
                bi->sgd_update(ctx, m->dev[i], m->rep[0]->grad[i], m->mom[i], m->numel[i], lr, mom, wd);
            }
            steps++;
        }
        if (dd.perm) {
            /* Data on the device is checked once per epoch, not per chunk:
             * the steps after the loss went bad are in the parameters. */
            acc_read(m, &loss_sum, &correct);
            if (!isfinite(loss_sum)) {
                rc = diverged(err, errlen, loss_sum);
                goto done;
            }
        }
    }
    params_to_host(m);
    uploaded = 0;
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
    if (uploaded) params_to_host(m);
    if (m->be)
        for (size_t i = 0; i < m->ntensors; i++) m->be->iface->free(m->be->context, anchor[i]);
    dev_data_free(m, &dd);
    fedc__nn_workers_destroy(workers);
    free(perm);
    return rc;
}

int fedc_model_evaluate(fedc_model *m, const float *x, const int32_t *y, size_t n, int batch_size,
                        fedc_eval_stats *stats, char *err, size_t errlen)
{
    if (stats) memset(stats, 0, sizeof(*stats));
    if (!m || !x || !y) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "evaluate: NULL argument");
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "evaluate: no examples");
    if (batch_size < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "evaluate: batch size must be >= 1, got %d",
                              batch_size);
    int rc = check_examples(m, x, y, n, err, errlen);
    if (rc != FEDC_OK) return rc;
    /* The batch size only bounds the working memory: each thread takes a
     * share of all n examples, in chunks of at most batch_size. */
    fedc__nn_workers *workers = NULL;
    dev_data dd;
    job j = {m, JOB_EVAL, x, y, NULL, n, 1, 0.0f, NULL, NULL, NULL, NULL};
    rc = start_threads(m, n, (size_t)batch_size, &j.nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    rc = dev_data_upload(m, &j, x, y, n, 0, &dd, err, errlen);
    if (rc != FEDC_OK) {
        fedc__nn_workers_destroy(workers);
        return rc;
    }
    params_to_device(m);
    double loss_sum = 0.0;
    uint64_t correct = 0;
    rc = run_job(m, &j, workers, &loss_sum, &correct, err, errlen);
    if (j.xd) acc_read(m, &loss_sum, &correct);
    dev_data_free(m, &dd);
    fedc__nn_workers_destroy(workers);
    if (rc != FEDC_OK) return rc;
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

int fedc_model_predict(fedc_model *m, const float *x, size_t n, float *logits, char *err, size_t errlen)
{
    if (!m || !x || !logits) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "predict: NULL argument");
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "predict: no examples");
    int rc = check_examples(m, x, NULL, n, err, errlen);
    if (rc != FEDC_OK) return rc;
    fedc__nn_workers *workers = NULL;
    dev_data dd;
    job j = {m, JOB_PREDICT, x, NULL, NULL, n, 1, 0.0f, logits, NULL, NULL, NULL};
    rc = start_threads(m, n, n, &j.nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    rc = dev_data_upload(m, &j, x, NULL, n, 0, &dd, err, errlen);
    if (rc != FEDC_OK) {
        fedc__nn_workers_destroy(workers);
        return rc;
    }
    params_to_device(m);
    double unused_loss = 0.0;
    uint64_t unused_correct = 0;
    rc = run_job(m, &j, workers, &unused_loss, &unused_correct, err, errlen);
    dev_data_free(m, &dd);
    fedc__nn_workers_destroy(workers);
    return rc;
}
