# bench_strategy: time and memory of one server round with each built-in
# strategy (see the comment at the top of bench_strategy.c).
add_executable(bench_strategy bench_strategy.c)
target_link_libraries(bench_strategy PRIVATE fedc_static)
