# bench_agg_cuda: FedAvg of updates already in GPU memory against a
# device-to-device cudaMemcpy of the same bytes (see bench_agg_cuda.c).
# Built only with the CUDA backend (-DFEDC_CUDA=ON).
if(FEDC_HAVE_CUDA)
  add_executable(bench_agg_cuda bench_agg_cuda.c)
  # fedc_static brings CUDA::cudart_static, whose headers the bench uses.
  target_link_libraries(bench_agg_cuda PRIVATE fedc_static)
  target_compile_definitions(bench_agg_cuda PRIVATE FEDC_HAVE_CUDA=1)
  target_include_directories(bench_agg_cuda PRIVATE ${PROJECT_BINARY_DIR}/src/proto)
  add_dependencies(bench_agg_cuda fedc_proto_gen)
endif()
