# unit tests: the trainer's CUDA backend against the CPU backend. Registered
# in every build: without the CUDA backend or a usable GPU it checks the
# error path of fedc_model_set_device, prints "SKIP: <reason>" and exits 77,
# which CTest reports as skipped.
fedc_test(NAME test_nn_cuda SOURCES unit/test_nn_cuda.c TIMEOUT 120 LABELS cuda)
set_tests_properties(test_nn_cuda PROPERTIES SKIP_RETURN_CODE 77)
