# unit tests: strategy
fedc_test(NAME test_strategy_fedavg SOURCES unit/test_strategy_fedavg.c TIMEOUT 60 LABELS unit)
# check() with weight 0, and the overflow bound for very large max_updates.
fedc_test(NAME test_strategy_fedavg_limits SOURCES unit/test_strategy_fedavg.c ARGS limits
          TIMEOUT 30 LABELS unit)
fedc_test(NAME test_strategy_unfold SOURCES unit/test_strategy_unfold.c TIMEOUT 60)
