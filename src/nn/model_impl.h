/*
 * The model's internals, shared by model.c (architectures, construction,
 * the device it computes on) and train.c (training, evaluation and
 * prediction over the trainer's threads).
 */
#ifndef FEDC_NN_MODEL_IMPL_H
#define FEDC_NN_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"
#include "fedc/nn.h"
#include "fedc/tensor.h"
#include "nn/backend.h"
#include "nn/layer.h"
#include "nn/model.h"

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

/* Elements of one input example (C * H * W). */
size_t fedc__nn_input_numel(const fedc_model *m);
/* Whether the input must be turned from NCHW into CNHW for the first layer. */
int fedc__nn_first_layer_needs_cnhw(const fedc_model *m);
/* Whether the backend keeps a call's data on the device (backend.h):
 * examples, labels and loss statistics are then uploaded once and read back
 * once instead of crossing per chunk. */
int fedc__nn_on_device(const fedc__nn_backend *be);
/* Makes sure replicas 0 .. nthreads-1 exist with buffers for `cap`
 * examples each. */
int fedc__nn_model_reserve(fedc_model *m, int nthreads, int cap, char *err, size_t errlen);

#endif /* FEDC_NN_MODEL_IMPL_H */
