# bench_round: one round of the real fedc server with N echo clients over
# loopback (see the comment at the top of bench_round.c). It runs the fedc
# program built in this tree unless given --fedc PATH.
add_executable(bench_round bench_round.c)
target_link_libraries(bench_round PRIVATE bench_proc fedc_static)
target_compile_definitions(bench_round PRIVATE FEDC_BENCH_FEDC_PATH="$<TARGET_FILE:fedc_cli>")
add_dependencies(bench_round fedc_cli)
