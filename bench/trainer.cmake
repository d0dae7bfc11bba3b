# bench_trainer: samples per second of the built-in trainer on the small cnn.
# Compare with bench/pytorch_cnn.py, which trains the same network on the same
# amount of data (see the comment at the top of bench_trainer.c).
add_executable(bench_trainer bench_trainer.c)
target_link_libraries(bench_trainer PRIVATE fedc_static)
