# sources of the CUDA backend: built only with -DFEDC_CUDA=ON. Nothing outside
# this folder includes a CUDA header; the rest of the library reaches it
# through src/cuda/cuda_backend.h, compiled out when FEDC_HAVE_CUDA is not set.
if(FEDC_HAVE_CUDA)
  fedc_sources(cuda/device.cu cuda/fedavg_cuda.cu cuda/nn_backend.cu)
endif()
