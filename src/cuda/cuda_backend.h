/*
 * The CUDA backend's entry points (internal), callable from C.
 *
 * Only files in src/cuda include CUDA headers. The rest of the library calls
 * the functions below, which exist when the library was configured with
 * -DFEDC_CUDA=ON (FEDC_HAVE_CUDA); callers guard their use with
 * #ifdef FEDC_HAVE_CUDA and report FEDC_ERR_DEVICE otherwise.
 */
#ifndef FEDC_CUDA_BACKEND_H
#define FEDC_CUDA_BACKEND_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Checks that GPU `index` exists and can run our kernels, and makes it the
 * calling thread's current device. On success writes its name into `name`
 * (when not NULL); on failure returns FEDC_ERR_DEVICE with the reason
 * (no driver, no GPU, index out of range, an architecture without code). */
int fedc__cuda_device_check(int index, char *name, size_t namelen, char *err, size_t errlen);

/* ---- nn: the trainer's compute backend (nn_backend.cu) ---- */

struct fedc__nn_backend;

/* Creates a backend of the trainer's ops (src/nn/backend.h) on GPU `index`,
 * with its own stream and cuBLAS handle; the caller checked the GPU with
 * fedc_device_check(). On success *out is the caller's, freed with
 * fedc__nn_backend_cuda_destroy(); on failure returns FEDC_ERR_DEVICE (or
 * FEDC_ERR_NOMEM) with a message naming the GPU. Set FEDC_CUDA_SYNC=1 in the
 * environment to wait for every op, so that a failing kernel is reported
 * by the op that launched it. */
int fedc__nn_backend_cuda_create(int index, struct fedc__nn_backend **out, char *err, size_t errlen);

/* Waits for the backend's work and frees it. No-op on NULL. */
void fedc__nn_backend_cuda_destroy(struct fedc__nn_backend *be);

/* ---- aggregation (fedavg_cuda.cu) ---------------------------------------- */

struct fedc__fedavg_backend; /* strategy/fedavg.h */

/* Makes FedAvg's fixed-point sums, all zero, on GPU `index` for ntensors
 * tensors of numel[i] elements. On success *ops and *ctx are the
 * accumulator's backend interface (strategy/fedavg.h), and (*ops)->destroy
 * frees them; on failure nothing is left allocated and the status is
 * FEDC_ERR_DEVICE, or FEDC_ERR_NOMEM when the GPU's memory is short. */
int fedc__cuda_fedavg_open(int index, size_t ntensors, const size_t *numel,
                           const struct fedc__fedavg_backend **ops, void **ctx, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* FEDC_CUDA_BACKEND_H */
