# The optional CUDA backend (-DFEDC_CUDA=ON). The default build is CPU-only
# and complete; with the option on, a missing CUDA toolkit is an error, never
# a silent CPU-only build.
option(FEDC_CUDA "Build the CUDA backend (needs the CUDA toolkit)" OFF)
set(FEDC_HAVE_CUDA OFF)
if(FEDC_CUDA)
  # nvcc is rarely on PATH: look where the toolkit installs by default.
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "FEDC_CUDA=ON but no CUDA compiler was found: install the CUDA toolkit, "
                        "or pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc")
  endif()
  # Native code for the A100 (80) and H100/H200 (90) generations; others
  # run the PTX of the highest one through the driver's JIT.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(FEDC_HAVE_CUDA ON)
  # The runtime is linked statically, so that a program needs only the
  # driver and cuBLAS where it runs.
  list(APPEND FEDC_DEP_TARGETS CUDA::cudart_static CUDA::cublas)
  message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}")
endif()
