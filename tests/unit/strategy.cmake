# unit tests: strategy
fedc_test(NAME test_strategy_fedavg SOURCES unit/test_strategy_fedavg.c TIMEOUT 60 LABELS unit)
# check() with weight 0, and the overflow bound for very large max_updates.
fedc_test(NAME test_strategy_fedavg_limits SOURCES unit/test_strategy_fedavg.c ARGS limits
          TIMEOUT 30 LABELS unit)
fedc_test(NAME test_strategy_unfold SOURCES unit/test_strategy_unfold.c TIMEOUT 60)
# The strategy API and the built-in strategies (fedavgm, fedadam, ... against naive computations).
fedc_test(NAME test_strategy_builtin SOURCES unit/test_strategy_builtin.c TIMEOUT 30 LABELS unit)
# The robust aggregators (median, trimmed-mean, krum, multikrum, bulyan) against naive computations,
# their refusals and permutation invariance; "sim": the server's all-updates mode end to end.
fedc_test(NAME test_strategy_robust SOURCES unit/test_strategy_robust.c TIMEOUT 60 LABELS unit)
fedc_test(NAME test_strategy_robust_sim SOURCES unit/test_strategy_robust.c ARGS sim TIMEOUT 60 LABELS unit)
# SCAFFOLD (fit_tensors) and FedNova (fit_weight) through a simulated server round: fedc_sgd_norm,
# FedNova = FedAvg bit for bit at equal steps and naive FedNova otherwise, SCAFFOLD's c, save/restore.
fedc_test(NAME test_strategy_nova SOURCES unit/test_strategy_nova.c TIMEOUT 30 LABELS unit)
# The hooks besides aggregate_fit (select_fit, configure/aggregate_evaluate, evaluate, fit_weight,
# fit_tensors) through a simulated federation with a strategy of the test's own, and their refusals.
fedc_test(NAME test_strategy_hooks SOURCES unit/test_strategy_hooks.c TIMEOUT 60 LABELS unit)
