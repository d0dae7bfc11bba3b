# unit tests: FedAvg on the GPU against the CPU. Registered in every build:
# without the CUDA backend or a usable GPU it checks the error path, prints
# "SKIP: <reason>" and exits 77, which CTest reports as skipped.
fedc_test(NAME test_fedavg_cuda SOURCES unit/test_fedavg_cuda.c TIMEOUT 120 LABELS cuda)
set_tests_properties(test_fedavg_cuda PROPERTIES SKIP_RETURN_CODE 77)
if(FEDC_HAVE_CUDA)
  # The test allocates its GPU copies of the updates with the CUDA runtime
  # (reached through fedc_static's CUDA::cudart_static).
  target_compile_definitions(test_fedavg_cuda PRIVATE FEDC_HAVE_CUDA=1)
endif()
# The accumulator's device routing against a fake device that computes what
# the CUDA kernels do, in host memory: runs on every machine.
fedc_test(NAME test_strategy_backend SOURCES unit/test_strategy_backend.c TIMEOUT 30 LABELS unit)
