/* Training, evaluation and prediction of the built-in models, over the
 * trainer's threads (each runs its share of a batch on a replica of the
 * layers) or, on a GPU, with the data kept on the device. DP-SGD runs each
 * sampled example as a batch of one (each thread its share of a step's
 * examples), clips its gradient and sums it into the thread's own buffer;
 * the sums, the noise and the update follow on the calling thread. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/privacy.h"
#include "nn/model_impl.h"
#include "nn/workers.h"

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
     * backend keeps data there (see fedc__nn_on_device()); NULL otherwise. The loss
     * statistics then go to the model's accumulator, not to the replicas. */
    const float *xd;
    const int32_t *yd;
    const uint32_t *idxd;
} job;

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
    if (fedc__nn_first_layer_needs_cnhw(m)) {
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
    if (fedc__nn_first_layer_needs_cnhw(m)) in = r->xt;
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
    const size_t row = fedc__nn_input_numel(m);
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
    int rc = fedc__nn_model_reserve(m, t, cap < 1 ? 1 : (int)cap, err, errlen);
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
 * on a backend that keeps data there (see fedc__nn_on_device()). */
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
    if (!fedc__nn_on_device(m->be)) return FEDC_OK;
    size_t xbytes = n * fedc__nn_input_numel(m) * sizeof(float);
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

/* Runs job j once over all of its j->n examples, in chunks of at most
 * `chunk`: starts its threads, puts its examples on the device when the
 * backend keeps data there, and sums loss and hits into *loss_sum and
 * *correct (which start at zero). */
static int run_once(fedc_model *m, job *j, size_t chunk, double *loss_sum, uint64_t *correct, char *err,
                    size_t errlen)
{
    fedc__nn_workers *workers;
    dev_data dd;
    *loss_sum = 0.0;
    *correct = 0;
    int rc = start_threads(m, j->n, chunk, &j->nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    rc = dev_data_upload(m, j, j->x, j->y, j->n, 0, &dd, err, errlen);
    if (rc == FEDC_OK) {
        params_to_device(m);
        rc = run_job(m, j, workers, loss_sum, correct, err, errlen);
        if (j->xd && j->kind != JOB_PREDICT) acc_read(m, loss_sum, correct);
        dev_data_free(m, &dd);
    }
    fedc__nn_workers_destroy(workers);
    return rc;
}

int fedc__nn_model_loss_grad(fedc_model *m, const float *x, const int32_t *y, size_t nb, double *loss,
                             char *err, size_t errlen)
{
    job j = {m, JOB_GRAD, x, y, NULL, nb, 1, (float)(1.0 / (double)nb), NULL, NULL, NULL, NULL};
    double sum;
    uint64_t correct;
    int rc = run_once(m, &j, nb, &sum, &correct, err, errlen);
    if (loss) *loss = sum / (double)nb;
    return rc;
}

/* Checks the examples: finite inputs and labels in range (y may be NULL). */
static int check_examples(const fedc_model *m, const float *x, const int32_t *y, size_t n, char *err,
                          size_t errlen)
{
    size_t row = fedc__nn_input_numel(m);
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

/* Checks SCAFFOLD's gradient correction: one array per tensor, finite. */
static int check_correction(const fedc_model *m, const float *const *corr, char *err, size_t errlen)
{
    for (size_t i = 0; i < m->ntensors; i++) {
        const char *name = fedc_params_at(m->params, i)->name;
        if (!corr[i])
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "train: gradient correction of tensor '%s' is NULL", name);
        for (size_t k = 0; k < m->numel[i]; k++)
            if (!isfinite(corr[i][k]))
                return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE,
                                      "train: gradient correction of tensor '%s' element %zu is %s", name, k,
                                      isnan(corr[i][k]) ? "NaN" : "infinite");
    }
    return FEDC_OK;
}

/* DP-SGD's work for one step: the sampled examples, each run as a batch of
 * one, its gradient clipped and added to its thread's sum. */
typedef struct dp_job {
    fedc_model *m;
    const float *x;   /* host examples */
    const int32_t *y; /* host labels */
    const float *xd;  /* the same on the device, when the backend keeps data there */
    const int32_t *yd;
    const uint32_t *idx;  /* host: the step's examples */
    const uint32_t *idxd; /* the same on the device, with xd */
    size_t n;             /* how many */
    int nthreads;
    double clip;
    size_t total;              /* parameters of the model */
    size_t off[MAX_TENSORS];   /* offset of each tensor in a sum */
    float *sum[MAX_THREADS];   /* per thread: sum of its clipped gradients (device) */
    float *stage[MAX_THREADS]; /* per thread, off host memory: a gradient read back */
} dp_job;

/* The sum of the squares of n floats, in double; in independent lanes,
 * which the compiler vectorises. */
static double sum_squares(const float *g, size_t n)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, a4 = 0.0, a5 = 0.0, a6 = 0.0, a7 = 0.0;
    size_t p = 0;
    for (; p + 8 <= n; p += 8) {
        a0 += (double)g[p] * (double)g[p];
        a1 += (double)g[p + 1] * (double)g[p + 1];
        a2 += (double)g[p + 2] * (double)g[p + 2];
        a3 += (double)g[p + 3] * (double)g[p + 3];
        a4 += (double)g[p + 4] * (double)g[p + 4];
        a5 += (double)g[p + 5] * (double)g[p + 5];
        a6 += (double)g[p + 6] * (double)g[p + 6];
        a7 += (double)g[p + 7] * (double)g[p + 7];
    }
    for (; p < n; p++) a0 += (double)g[p] * (double)g[p];
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}

/* Example k of a DP-SGD step on replica r of thread t. */
static int dp_example(const dp_job *d, replica *r, int t, size_t k)
{
    fedc_model *m = d->m;
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    const size_t row = fedc__nn_input_numel(m);
    const float *in;
    const uint32_t e = d->idx[k];
    if (d->xd) {
        bi->gather_rows_dev(ctx, r->xb, d->xd, d->idxd + k, 1, row);
        bi->gather_rows_dev(ctx, r->ybd, d->yd, d->idxd + k, 1, 1);
        in = r->xb;
    } else if (bi->host_memory) {
        in = d->x + (size_t)e * row;
    } else {
        bi->to_device(ctx, r->xb, d->x + (size_t)e * row, row * sizeof(float));
        in = r->xb;
    }
    const float *logits = forward(m, r, in, 1);
    if (d->xd) {
        bi->softmax_xent_dev(ctx, logits, r->ybd, 1, m->classes, 1.0f, r->dlogits, m->acc);
    } else {
        double loss = 0.0;
        bi->softmax_xent(ctx, logits, d->y + e, 1, m->classes, 1.0f, r->dlogits, &loss, &r->correct);
        if (!isfinite(loss)) return diverged(r->err, sizeof(r->err), loss);
        r->loss_sum += loss;
    }
    backward(m, r, in, 1, 0);
    /* The example's gradient norm, over all tensors, in double. */
    double ss = 0.0;
    for (size_t i = 0; i < m->ntensors; i++) {
        const float *g = r->grad[i];
        if (!bi->host_memory) {
            bi->to_host(ctx, d->stage[t], g, m->numel[i] * sizeof(float));
            g = d->stage[t];
        }
        ss += sum_squares(g, m->numel[i]);
    }
    double norm = sqrt(ss);
    if (!isfinite(norm))
        return fedc_set_error(r->err, sizeof(r->err), FEDC_ERR_NONFINITE,
                              "training diverged: an example's gradient is not finite (try a smaller "
                              "learning rate)");
    float f = 1.0f;
    if (norm > d->clip) {
        /* Rounded down, so that the clipped norm never exceeds the clip. */
        f = (float)(d->clip / norm);
        if ((double)f * norm > d->clip) f = nextafterf(f, 0.0f);
    }
    for (size_t i = 0; i < m->ntensors; i++) bi->axpy(ctx, d->sum[t] + d->off[i], r->grad[i], m->numel[i], f);
    return FEDC_OK;
}

/* Thread t's share of a DP-SGD step's examples. */
static void run_dp_share(void *arg, int t)
{
    const dp_job *d = arg;
    replica *r = d->m->rep[t];
    share(d->n, d->nthreads, t, &r->begin, &r->end);
    r->loss_sum = 0.0;
    r->correct = 0;
    r->rc = FEDC_OK;
    for (size_t k = r->begin; k < r->end; k++) {
        r->rc = dp_example(d, r, t, k);
        if (r->rc != FEDC_OK) return;
    }
}

/* Poisson sampling: each of the n examples into idx independently with
 * probability q, from the cryptographic generator. Returns how many. */
static size_t dp_sample(uint32_t *idx, size_t n, double q)
{
    if (q >= 1.0) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        return n;
    }
    /* Example i is taken when a uniform 64-bit word is below q * 2^64. */
    const uint64_t below = (uint64_t)ldexp(q, 64);
    enum { BLOCK = 512 };
    uint64_t bits[BLOCK];
    size_t k = 0;
    for (size_t i = 0; i < n; i += BLOCK) {
        size_t len = n - i < BLOCK ? n - i : BLOCK;
        fedc_random_bytes(bits, len * sizeof(uint64_t));
        /* Without branches on the secret bits. */
        for (size_t b = 0; b < len; b++) {
            idx[k] = (uint32_t)(i + b);
            k += bits[b] < below;
        }
    }
    sodium_memzero(bits, sizeof bits);
    return k;
}

/* The DP-SGD buffers of a call. */
typedef struct dp_state {
    dp_job job;
    uint32_t *idx;    /* host: a step's examples, n */
    double *normal;   /* host: standard normals for the largest tensor */
    float *noise;     /* host: the same as floats */
    float *noise_dev; /* device copy of noise, off host memory */
    size_t largest;
} dp_state;

static void dp_state_free(fedc_model *m, dp_state *s, size_t n)
{
    const fedc__nn_backend_i *bi = m->be ? m->be->iface : NULL;
    void *ctx = m->be ? m->be->context : NULL;
    if (s->idx) sodium_memzero(s->idx, n * sizeof(uint32_t));
    if (s->normal) sodium_memzero(s->normal, s->largest * sizeof(double));
    if (s->noise) sodium_memzero(s->noise, s->largest * sizeof(float));
    free(s->idx);
    free(s->normal);
    free(s->noise);
    if (bi) {
        if (s->noise_dev) bi->zero(ctx, s->noise_dev, s->largest * sizeof(float));
        bi->free(ctx, s->noise_dev);
        /* The last examples' own gradients, unclipped and without noise. */
        for (int t = 0; t < s->job.nthreads && t < m->nrep; t++)
            for (size_t i = 0; i < m->ntensors; i++)
                bi->zero(ctx, m->rep[t]->grad[i], m->numel[i] * sizeof(float));
        for (int t = 0; t < MAX_THREADS; t++) {
            if (s->job.sum[t]) bi->zero(ctx, s->job.sum[t], s->job.total * sizeof(float));
            bi->free(ctx, s->job.sum[t]);
            if (s->job.stage[t]) sodium_memzero(s->job.stage[t], s->largest * sizeof(float));
            free(s->job.stage[t]);
        }
    }
    memset(s, 0, sizeof(*s));
}

/* Allocates the DP-SGD buffers for `nthreads` threads. */
static int dp_state_init(fedc_model *m, dp_state *s, size_t n, int nthreads, char *err, size_t errlen)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < m->ntensors; i++) {
        s->job.off[i] = s->job.total;
        s->job.total += m->numel[i];
        if (m->numel[i] > s->largest) s->largest = m->numel[i];
    }
    s->idx = malloc(n * sizeof(uint32_t));
    s->normal = malloc(s->largest * sizeof(double));
    s->noise = malloc(s->largest * sizeof(float));
    int ok = s->idx && s->normal && s->noise;
    if (ok && !bi->host_memory) ok = (s->noise_dev = bi->alloc(ctx, s->largest * sizeof(float))) != NULL;
    for (int t = 0; ok && t < nthreads; t++) {
        ok = (s->job.sum[t] = bi->alloc(ctx, s->job.total * sizeof(float))) != NULL;
        if (ok && !bi->host_memory) ok = (s->job.stage[t] = malloc(s->largest * sizeof(float))) != NULL;
    }
    if (!ok) {
        dp_state_free(m, s, n);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory for DP-SGD");
    }
    return FEDC_OK;
}

/* One DP-SGD step: samples, sums the clipped gradients of the sample into
 * replica 0's gradient buffers, adds the noise and scales by 1 / (q n).
 * Adds the sample's size, loss and hits to the counters. */
static int dp_step(fedc_model *m, dp_state *s, fedc__nn_workers *workers, const dev_data *dd, size_t n,
                   double q, double z, uint64_t *sampled, double *loss_sum, uint64_t *correct, char *err,
                   size_t errlen)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    dp_job *d = &s->job;
    for (int t = 0; t < d->nthreads; t++) bi->zero(ctx, d->sum[t], d->total * sizeof(float));
    d->n = dp_sample(s->idx, n, q);
    *sampled += d->n;
    if (d->n > 0) {
        d->idx = s->idx;
        if (dd->perm) {
            bi->to_device(ctx, dd->perm, s->idx, d->n * sizeof(uint32_t));
            d->idxd = dd->perm;
        }
        fedc__nn_workers_run(workers, run_dp_share, d);
        for (int t = 0; t < d->nthreads; t++) {
            replica *r = m->rep[t];
            if (r->rc != FEDC_OK) return fedc_set_error(err, errlen, r->rc, "%s", r->err);
            *loss_sum += r->loss_sum;
            *correct += r->correct;
        }
    }
    const float inv = (float)(1.0 / (q * (double)n));
    const float sigma = (float)(z * d->clip / (q * (double)n));
    for (size_t i = 0; i < m->ntensors; i++) {
        float *g = m->rep[0]->grad[i];
        bi->zero(ctx, g, m->numel[i] * sizeof(float));
        for (int t = 0; t < d->nthreads; t++) bi->axpy(ctx, g, d->sum[t] + d->off[i], m->numel[i], inv);
        fedc_dp_normal(s->normal, m->numel[i]);
        for (size_t p = 0; p < m->numel[i]; p++) s->noise[p] = (float)s->normal[p];
        const float *noise = s->noise;
        if (!bi->host_memory) {
            bi->to_device(ctx, s->noise_dev, s->noise, m->numel[i] * sizeof(float));
            noise = s->noise_dev;
        }
        bi->axpy(ctx, g, noise, m->numel[i], sigma);
    }
    return FEDC_OK;
}

/* One optimizer step from the gradient in replica 0: FedProx's proximal
 * term (mu != 0, towards `anchor`), SCAFFOLD's correction (corr[i] where
 * set), then SGD with momentum and weight decay. */
static void apply_step(fedc_model *m, float *const *anchor, float *const *corr, float mu, float lr, float mom,
                       float wd)
{
    const fedc__nn_backend_i *bi = m->be->iface;
    void *ctx = m->be->context;
    for (size_t i = 0; i < m->ntensors; i++) {
        if (mu != 0.0f) bi->proximal_grad(ctx, m->rep[0]->grad[i], m->dev[i], anchor[i], m->numel[i], mu);
        if (corr[i]) bi->axpy(ctx, m->rep[0]->grad[i], corr[i], m->numel[i], 1.0f);
        bi->sgd_update(ctx, m->dev[i], m->rep[0]->grad[i], m->mom[i], m->numel[i], lr, mom, wd);
    }
}

int fedc_model_train(fedc_model *m, const float *x, const int32_t *y, size_t n, const fedc_train_config *cfg,
                     fedc_train_stats *stats, char *err, size_t errlen)
{
    uint32_t *perm = NULL;
    dev_data dd = {NULL, NULL, NULL};
    /* FedProx: the parameters at the start of the call, on the device. */
    float *anchor[MAX_TENSORS] = {NULL};
    /* SCAFFOLD: the gradient correction, on the device. */
    float *corr[MAX_TENSORS] = {NULL};
    dp_state dps;
    int rc, uploaded = 0;
    memset(&dps, 0, sizeof(dps));
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
    if (!(cfg->dp_sgd_clip >= 0.0) || !isfinite(cfg->dp_sgd_clip))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: dp_sgd_clip must be finite and >= 0, got %g", cfg->dp_sgd_clip);
    const int dp = cfg->dp_sgd_clip > 0.0;
    if (dp && (!(cfg->dp_sgd_noise_multiplier > 0.0) || !isfinite(cfg->dp_sgd_noise_multiplier)))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "train: dp_sgd_noise_multiplier must be finite and > 0 with DP-SGD, got %g",
                              cfg->dp_sgd_noise_multiplier);
    rc = check_examples(m, x, y, n, err, errlen);
    if (rc != FEDC_OK) return rc;
    if (cfg->grad_correction) {
        rc = check_correction(m, cfg->grad_correction, err, errlen);
        if (rc != FEDC_OK) return rc;
    }

    size_t bs = (size_t)cfg->batch_size < n ? (size_t)cfg->batch_size : n;
    fedc__nn_workers *workers = NULL;
    job j = {m, JOB_GRAD, x, y, NULL, 0, 1, 0.0f, NULL, NULL, NULL, NULL};
    /* DP-SGD runs its examples one at a time. */
    rc = start_threads(m, bs, dp ? 1 : bs, &j.nthreads, &workers, err, errlen);
    if (rc != FEDC_OK) return rc;
    perm = malloc(n * sizeof(uint32_t));
    if (!perm) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    rc = dev_data_upload(m, &j, x, y, n, 1, &dd, err, errlen);
    if (rc != FEDC_OK) goto done;
    /* DP-SGD: the sampling rate, and round(n / batch size) steps per epoch. */
    double q = 0.0;
    size_t dp_steps = 0;
    if (dp) {
        q = (double)cfg->batch_size / (double)n;
        if (q > 1.0) q = 1.0;
        dp_steps = (size_t)llround((double)n / (double)cfg->batch_size);
        if (dp_steps < 1) dp_steps = 1;
        rc = dp_state_init(m, &dps, n, j.nthreads, err, errlen);
        if (rc != FEDC_OK) goto done;
        dps.job.m = m;
        dps.job.x = x;
        dps.job.y = y;
        dps.job.xd = dd.x;
        dps.job.yd = dd.y;
        dps.job.nthreads = j.nthreads;
        dps.job.clip = cfg->dp_sgd_clip;
    }

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
    if (cfg->grad_correction) {
        for (size_t i = 0; i < m->ntensors; i++) {
            corr[i] = bi->alloc(ctx, m->numel[i] * sizeof(float));
            if (!corr[i]) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "train: out of memory");
                goto done;
            }
            bi->to_device(ctx, corr[i], cfg->grad_correction[i], m->numel[i] * sizeof(float));
        }
    }

    fedc_rng rng;
    fedc_rng_seed(&rng, cfg->seed);
    float lr = (float)cfg->lr, mom = (float)cfg->momentum, wd = (float)cfg->weight_decay;
    double loss_sum = 0.0;
    uint64_t correct = 0, steps = 0, sampled = 0, sampled_epoch = 0;
    for (int epoch = 0; dp && epoch < cfg->epochs; epoch++) {
        loss_sum = 0.0;
        correct = 0;
        sampled_epoch = 0;
        if (dd.perm) bi->zero(ctx, m->acc, sizeof(*m->acc));
        for (size_t step = 0; step < dp_steps; step++) {
            rc = dp_step(m, &dps, workers, &dd, n, q, cfg->dp_sgd_noise_multiplier, &sampled_epoch, &loss_sum,
                         &correct, err, errlen);
            if (rc != FEDC_OK) goto done;
            apply_step(m, anchor, corr, mu, lr, mom, wd);
            steps++;
        }
        sampled += sampled_epoch;
        if (dd.perm) {
            acc_read(m, &loss_sum, &correct);
            if (!isfinite(loss_sum)) {
                rc = diverged(err, errlen, loss_sum);
                goto done;
            }
        }
    }
    for (int epoch = 0; !dp && epoch < cfg->epochs; epoch++) {
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
            apply_step(m, anchor, corr, mu, lr, mom, wd);
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
        /* DP-SGD: over the examples the last epoch sampled. */
        double over = dp ? (double)sampled_epoch : (double)n;
        stats->loss = over > 0.0 ? loss_sum / over : 0.0;
        stats->accuracy = over > 0.0 ? (double)correct / over : 0.0;
        stats->num_examples = n;
        stats->steps = steps;
        stats->dp_sample_rate = q;
        stats->dp_examples = sampled;
    }
done:
    /* The steps taken before a failure stay in the model, as documented. */
    if (uploaded) params_to_host(m);
    if (m->be)
        for (size_t i = 0; i < m->ntensors; i++) {
            m->be->iface->free(m->be->context, anchor[i]);
            m->be->iface->free(m->be->context, corr[i]);
        }
    if (dp) {
        if (dd.perm && m->be) m->be->iface->zero(m->be->context, dd.perm, n * sizeof(uint32_t));
        dp_state_free(m, &dps, n);
    }
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
    job j = {m, JOB_EVAL, x, y, NULL, n, 1, 0.0f, NULL, NULL, NULL, NULL};
    double loss_sum;
    uint64_t correct;
    rc = run_once(m, &j, (size_t)batch_size, &loss_sum, &correct, err, errlen);
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
    job j = {m, JOB_PREDICT, x, NULL, NULL, n, 1, 0.0f, logits, NULL, NULL, NULL};
    double unused_loss;
    uint64_t unused_correct;
    return run_once(m, &j, n, &unused_loss, &unused_correct, err, errlen);
}
