/*
 * fedc nn: the built-in trainer.
 *
 * A small set of models (multilayer perceptrons and a LeNet-style
 * convolutional network for 1x28x28 images) trained with minibatch SGD on
 * float arrays the caller provides, on the CPU or, in builds with CUDA, on
 * a GPU (fedc_model_set_device()). The models expose their weights as a
 * fedc_params set whose names and shapes follow PyTorch's conventions
 * ("conv1.weight" [out_c, in_c, kh, kw], "fc1.weight" [out, in], "fc1.bias"
 * [out]), so a model file saved from it loads into the equivalent
 * torch.nn.Module with load_state_dict().
 *
 * Equivalent PyTorch modules (the flatten is channel-major, as torch.flatten):
 *   mlp: Flatten, Linear(784,200), ReLU, Linear(200,200), ReLU, Linear(200,10)
 *   mlp-large: Flatten, Linear(784,1024), ReLU, Linear(1024,1024), ReLU,
 *        Linear(1024,10) (for benchmarks)
 *   cnn: Conv2d(1,6,5), ReLU, MaxPool2d(2), Conv2d(6,16,5), ReLU, MaxPool2d(2),
 *        Flatten, Linear(256,120), ReLU, Linear(120,84), ReLU, Linear(84,10)
 *
 * Training is deterministic: the same model seed, data and configuration
 * give bit-identical parameters on the same build, CPU and thread count
 * (see fedc_nn_set_threads()), or on the same build and GPU model. A GPU's
 * results differ from the CPU's by float rounding.
 *
 * A model is not safe to use from two threads at once; distinct models may
 * be used concurrently (then keep fedc_nn_set_threads() at 1, or the
 * threads of all of them compete for the cores).
 */
#ifndef FEDC_NN_H
#define FEDC_NN_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"
#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A model: its architecture, its parameters and the working memory of the
 * trainer. Opaque. */
typedef struct fedc_model fedc_model;

/*
 * Creates a model of architecture `arch` ("mlp", "cnn" or "mlp-large") with
 * parameters drawn from `seed` the way PyTorch initialises Linear and Conv2d
 * layers: every weight and bias uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)]
 * (Kaiming-uniform with a = sqrt(5)). The model computes on the CPU until
 * fedc_model_set_device() moves it. On success *out is a new model the
 * caller frees with fedc_model_destroy(). Returns FEDC_ERR_INVALID with a
 * message listing the known names for an unknown `arch`, FEDC_ERR_NOMEM when
 * out of memory.
 */
int fedc_model_create(const char *arch, uint64_t seed, fedc_model **out, char *err, size_t errlen);

/* Frees the model and its parameter set. No-op on NULL. */
void fedc_model_destroy(fedc_model *m);

/* The architecture name given to fedc_model_create(). The string lives as
 * long as the model. */
const char *fedc_model_arch(const fedc_model *m);

/* Input geometry the model expects for one example: channels, height and
 * width (1, 28, 28 for all built-in models). Any pointer may be NULL. */
void fedc_model_input_shape(const fedc_model *m, int *c, int *h, int *w);

/* Number of output classes (10 for all built-in models). */
int fedc_model_num_classes(const fedc_model *m);

/* Total number of scalar parameters (44,426 for "cnn", 199,210 for "mlp",
 * 1,863,690 for "mlp-large"). */
size_t fedc_model_num_params(const fedc_model *m);

/*
 * The model's live parameters, owned by the model and valid until it is
 * destroyed. The set's layout (names, order, dtypes, shapes) never changes;
 * writing into the tensors' data changes the model, and training changes
 * the tensors. Do not add tensors to it.
 */
fedc_params *fedc_model_params(fedc_model *m);

/*
 * Copies the data of `p` into the model's parameters. `p` must have exactly
 * the model's layout (see fedc_model_params()); otherwise returns
 * FEDC_ERR_SHAPE with a message naming the tensor and both shapes, and the
 * model is unchanged. `p` stays owned by the caller.
 */
int fedc_model_set_params(fedc_model *m, const fedc_params *p, char *err, size_t errlen);

/*
 * Moves the model to device `d`: its later fedc_model_train(),
 * fedc_model_evaluate() and fedc_model_predict() calls compute there.
 * fedc_model_params() stays the truth between calls: each call copies the
 * parameters to the device and training copies them back at its end. On a
 * GPU the trainer uses one thread whatever fedc_nn_set_threads() says, keeps
 * the examples of a call on the device, and checks the loss for NaN or
 * infinity once per epoch instead of once per step (so a diverged training
 * leaves the parameters of the end of that epoch).
 *
 * Returns FEDC_ERR_DEVICE with a message naming the device and the reason
 * when it cannot be used (see fedc_device_check(): a build without CUDA, no
 * driver, no such GPU), or FEDC_ERR_NOMEM when the model does not fit; the
 * model then stays on its current device. Never falls back to the CPU.
 */
int fedc_model_set_device(fedc_model *m, fedc_device d, char *err, size_t errlen);

/* The device the model computes on (the CPU unless moved). */
fedc_device fedc_model_get_device(const fedc_model *m);

/* Hyperparameters of fedc_model_train(). The update is PyTorch's SGD:
 *   g += weight_decay * w;  v = momentum * v + g;  w -= lr * v
 * applied to every parameter, biases included. With proximal_mu > 0 the
 * loss gains FedProx's proximal term mu/2 * ||w - w0||^2 (Li et al. 2020),
 * w0 being the parameters at the start of the call, so each step first does
 *   g += proximal_mu * (w - w0)
 * (as in Flower's FedProx, where the term is part of the loss). Zero it
 * (the default of a zero-initialised config) for plain SGD. With
 * grad_correction set, each step then adds SCAFFOLD's control variate
 * correction c - c_i (Karimireddy et al. 2020), fixed for the call:
 *   g += grad_correction[t]
 * for each tensor t, before the weight decay and the momentum.
 *
 * With dp_sgd_clip > 0 the call runs DP-SGD (Abadi et al. 2016, "Deep
 * Learning with Differential Privacy") instead of minibatch SGD. With
 * q = min(1, batch_size / n), each epoch has max(1, round(n / batch_size))
 * steps; at each step every example is taken independently with probability
 * q (Poisson sampling, from the cryptographic generator, never from `seed`:
 * who sees the seed must not learn which examples were used; a step may take
 * none). Each example's own loss gradient g_i (without the weight decay) is
 * clipped to L2 norm C = dp_sgd_clip over all parameters, and the step's
 * gradient is
 *   g = (sum_i g_i * min(1, C / ||g_i||) + N(0, (z C)^2 I)) / (q n)
 * with z = dp_sgd_noise_multiplier and the noise from fedc_dp_normal(); the
 * proximal term, the gradient correction, the weight decay and the momentum
 * then apply as above (they depend on no example). The run is not
 * reproducible: neither the sampling nor the noise is seeded. The caller
 * accounts the privacy spent from the steps taken, q and z (see
 * fedc_train_stats). The per-example gradients are computed one example at a
 * time (each of the trainer's threads takes its share of a step's examples);
 * DP-SGD costs several times the time of plain SGD. */
typedef struct fedc_train_config {
    double lr;           /* learning rate, > 0 */
    double momentum;     /* >= 0; 0 disables momentum */
    double weight_decay; /* L2 penalty, >= 0 */
    int epochs;          /* passes over the data, >= 1 */
    int batch_size;      /* examples per step, >= 1; the last batch may be smaller */
    uint64_t seed;       /* shuffling of the examples */
    double proximal_mu;  /* FedProx's mu, finite and >= 0; 0 disables the term */
    /* SCAFFOLD's c - c_i: per tensor, in model order (see fedc_model_params()),
     * numel floats in host memory added to the gradient of every step (before
     * momentum and weight decay); NULL (the default of a zero-initialised
     * config): none. Every array must be given and every value finite. Read
     * during the call only; stays owned by the caller. */
    const float *const *grad_correction;
    double dp_sgd_clip;             /* DP-SGD: per-example gradient L2 bound C, finite and >= 0;
                                     * 0 (the default of a zero-initialised config): off */
    double dp_sgd_noise_multiplier; /* DP-SGD: noise standard deviation / C, finite and > 0
                                     * when dp_sgd_clip > 0; ignored when it is 0 */
} fedc_train_config;

/* What fedc_model_train() reports. */
typedef struct fedc_train_stats {
    double loss;           /* mean cross-entropy over the examples of the last epoch */
    double accuracy;       /* fraction of the last epoch's examples classified right
                            * (measured on the fly, before each step's update) */
    uint64_t num_examples; /* examples in the training set (n), the FedAvg weight */
    uint64_t steps;        /* optimizer steps taken over all epochs */
    /* DP-SGD only (0 otherwise): the sampling rate q of every step, and the
     * number of examples sampled over all steps (an example sampled by two
     * steps counts twice). Loss and accuracy are then over the examples
     * sampled by the last epoch's steps (0 when it sampled none); they are
     * not privatised: do not send them where the noisy model may go. */
    double dp_sample_rate;
    uint64_t dp_examples;
} fedc_train_stats;

/*
 * Trains the model in place. `x` holds n examples of c*h*w floats each
 * (row-major NCHW, see fedc_model_input_shape()), `y` their labels in
 * [0, num_classes). Runs cfg->epochs epochs of minibatch SGD, reshuffling
 * the examples each epoch from cfg->seed, or of DP-SGD when cfg->dp_sgd_clip
 * > 0 (see fedc_train_config); the momentum buffers start at zero on each
 * call. `x` and `y` stay owned by the caller and are not modified.
 * `stats` may be NULL.
 *
 * Returns FEDC_ERR_INVALID for n == 0, a label out of range or a bad
 * configuration (the message names the field or the example),
 * FEDC_ERR_TOO_LARGE for more than 2^32 - 1 examples, FEDC_ERR_NONFINITE for
 * a NaN or infinite input value or value of cfg->grad_correction (the
 * message names the example, or the tensor and the element; the model is
 * then unchanged) or when the loss or the parameters diverge to NaN or
 * infinity (the parameters are then left as they were after the last step
 * taken; restore them with fedc_model_set_params()), FEDC_ERR_NOMEM when out
 * of memory.
 */
int fedc_model_train(fedc_model *m, const float *x, const int32_t *y, size_t n, const fedc_train_config *cfg,
                     fedc_train_stats *stats, char *err, size_t errlen);

/* What fedc_model_evaluate() reports. */
typedef struct fedc_eval_stats {
    double loss;           /* mean cross-entropy */
    double accuracy;       /* fraction classified right */
    uint64_t num_examples; /* n */
} fedc_eval_stats;

/*
 * Computes the mean loss and accuracy of the model on n examples laid out as
 * for fedc_model_train(). `batch_size` (>= 1) is the number of examples per
 * forward pass; it bounds the working memory and does not change the result
 * beyond float rounding. `stats` may be NULL. Errors as for
 * fedc_model_train(); the parameters are never changed.
 */
int fedc_model_evaluate(fedc_model *m, const float *x, const int32_t *y, size_t n, int batch_size,
                        fedc_eval_stats *stats, char *err, size_t errlen);

/*
 * Forward pass only: writes n * num_classes raw scores (logits, before the
 * softmax) to `logits`, example by example. `x` is laid out as for
 * fedc_model_train(). Returns FEDC_ERR_INVALID for n == 0 or NULL pointers,
 * FEDC_ERR_NONFINITE for a NaN or infinite input value.
 */
int fedc_model_predict(fedc_model *m, const float *x, size_t n, float *logits, char *err, size_t errlen);

/*
 * Number of threads the trainer computes with in this process (default 1,
 * so that many clients can share a machine); values below 1 are taken as 1,
 * above 64 as 64. Applies to every model from its next train, evaluate or
 * predict call.
 *
 * The threads split each minibatch (data parallelism): each runs the layers
 * on its share of the examples, BLAS calls included, and their gradients
 * are summed before the step. For networks this small that scales much
 * better than multithreaded GEMMs, so OpenBLAS itself is set to 1 thread
 * (a process-wide OpenBLAS setting) whenever the trainer runs. Threads are
 * started for each call and stopped at its end; batches of fewer than 4
 * examples per thread use fewer threads. Results are reproducible for a
 * given thread count; different counts sum the gradients in a different
 * order and so differ in the last bits.
 */
void fedc_nn_set_threads(int n);

/* The value set by fedc_nn_set_threads() (1 if never set). */
int fedc_nn_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* FEDC_NN_H */
