# bench_agg: decode + validate + fold of encoded client updates, next to
# memcpy of the same bytes (see the comment at the top of bench_agg.c).
add_executable(bench_agg bench_agg.c)
target_link_libraries(bench_agg PRIVATE fedc_static)
# proto/frame.h includes the header that protoc-c generates into the build tree.
target_include_directories(bench_agg PRIVATE ${PROJECT_BINARY_DIR}/src/proto)
add_dependencies(bench_agg fedc_proto_gen)
