/*
 * Checking macros for the CUDA backend: every CUDA runtime and cuBLAS call
 * goes through one of them, so that a failure is reported with the call, the
 * file and the line instead of surfacing later as wrong numbers.
 */
#ifndef FEDC_CUDA_CHECK_H
#define FEDC_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "fedc/core.h"

/* For functions that return a fedc status and take (err, errlen): returns
 * FEDC_ERR_DEVICE naming the failed call. */
#define FEDC_CUDA_TRY(call)                                                                                  \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess)                                                                               \
            return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "CUDA: %s failed at %s:%d: %s", #call,       \
                                  __FILE__, __LINE__, cudaGetErrorString(e_));                               \
    } while (0)

#define FEDC_CUBLAS_TRY(call)                                                                                \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "cuBLAS: %s failed at %s:%d: %s", #call,     \
                                  __FILE__, __LINE__, cublasGetStatusString(s_));                            \
    } while (0)

/* For calls inside ops that cannot return an error (the compute interface's
 * void ops): a failure there means the device is gone or the code is wrong,
 * and continuing would compute garbage, so the process stops with the call
 * named (ggml's CUDA_CHECK does the same). */
#define FEDC_CUDA_CHECK(call)                                                                                \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) fedc__cuda_fatal(#call, __FILE__, __LINE__, cudaGetErrorString(e_));          \
    } while (0)

#define FEDC_CUBLAS_CHECK(call)                                                                              \
    do {                                                                                                     \
        cublasStatus_t s_ = (call);                                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                     \
            fedc__cuda_fatal(#call, __FILE__, __LINE__, cublasGetStatusString(s_));                          \
    } while (0)

/* Checks the launch of the kernel just started. */
#define FEDC_CUDA_CHECK_LAUNCH() FEDC_CUDA_CHECK(cudaGetLastError())

/* Logs the failed call and aborts. */
#ifdef __cplusplus
extern "C" {
#endif
void fedc__cuda_fatal(const char *call, const char *file, int line, const char *what);
#ifdef __cplusplus
}
#endif

#endif /* FEDC_CUDA_CHECK_H */
