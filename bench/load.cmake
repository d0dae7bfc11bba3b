# bench_load: N clients (default 1000) as threads of one process, each with
# its own mutual-TLS connection and node key, against one fedc server for R
# rounds; the server's peak memory, open files and round times (see the
# comment at the top of bench_load.c). It runs the fedc program built in this tree unless
# given --fedc PATH.
find_package(Threads REQUIRED)
add_executable(bench_load bench_load.c)
target_link_libraries(bench_load PRIVATE bench_proc fedc_static Threads::Threads m)
target_compile_definitions(bench_load PRIVATE FEDC_BENCH_FEDC_PATH="$<TARGET_FILE:fedc_cli>")
add_dependencies(bench_load fedc_cli)
