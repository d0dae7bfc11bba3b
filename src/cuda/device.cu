/* Finding and checking a GPU. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"

extern "C" void fedc__cuda_fatal(const char *call, const char *file, int line, const char *what)
{
    fedc_log(FEDC_LOG_ERROR, "cuda", "fatal: %s failed at %s:%d: %s", call, file, line, what);
    abort();
}

extern "C" int fedc__cuda_device_check(int index, char *name, size_t namelen, char *err, size_t errlen)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorInsufficientDriver)
        return fedc_set_error(err, errlen, FEDC_ERR_DEVICE,
                              "cuda:%d: no usable GPU: no NVIDIA driver, or one older than this build's CUDA "
                              "%d.%d runtime (%s)",
                              index, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10,
                              cudaGetErrorString(e));
    if (e != cudaSuccess)
        return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "cuda:%d: no usable GPU (%s)", index,
                              cudaGetErrorString(e));
    if (index < 0 || index >= count)
        return fedc_set_error(err, errlen, FEDC_ERR_DEVICE, "cuda:%d: no such GPU (this machine has %d)",
                              index, count);
    FEDC_CUDA_TRY(cudaSetDevice(index));
    cudaDeviceProp prop;
    FEDC_CUDA_TRY(cudaGetDeviceProperties(&prop, index));
    /* A trivial call that needs the device's context: fails here, with its
     * reason, when the GPU is in use exclusively elsewhere or broken. */
    FEDC_CUDA_TRY(cudaFree(0));
    if (name && namelen) snprintf(name, namelen, "%s", prop.name);
    return FEDC_OK;
}
