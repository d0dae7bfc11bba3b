# unit tests: core
fedc_test(NAME test_core_status SOURCES unit/test_core_status.c TIMEOUT 30 LABELS unit)
fedc_test(NAME test_core_log SOURCES unit/test_core_log.c TIMEOUT 30 LABELS unit)
# Prefixes longer than the 2048-byte log line; shows a stack overflow under the sanitizers.
fedc_test(NAME test_core_log_long_component SOURCES unit/test_core_log.c ARGS long-component
          TIMEOUT 30 LABELS unit)
fedc_test(NAME test_core_rng SOURCES unit/test_core_rng.c TIMEOUT 60 LABELS unit)
fedc_test(NAME test_core_config SOURCES unit/test_core_config.c TIMEOUT 30 LABELS unit)
fedc_test(NAME test_core_params SOURCES unit/test_core_params.c TIMEOUT 30 LABELS unit)
# fedc_params_check_finite on F16 and BF16 tensors.
fedc_test(NAME test_core_params_half_finite SOURCES unit/test_core_params.c ARGS half
          TIMEOUT 30 LABELS unit)
fedc_test(NAME test_core_safetensors SOURCES unit/test_core_safetensors.c TIMEOUT 60 LABELS unit)
# Files whose tensor names a parameter set cannot hold (duplicate, empty, too long).
fedc_test(NAME test_core_safetensors_names SOURCES unit/test_core_safetensors.c ARGS names
          TIMEOUT 30 LABELS unit)
# Node keys: fingerprints, the .pub line and loading a private key.
fedc_test(NAME test_core_nodekey SOURCES unit/test_core_nodekey.c TIMEOUT 30 LABELS unit)
