# unit tests: data
fedc_test(NAME test_data_idx SOURCES unit/test_data_idx.c TIMEOUT 30 LABELS data)
fedc_test(NAME test_data_csv SOURCES unit/test_data_csv.c TIMEOUT 30 LABELS data)
fedc_test(NAME test_data_partition SOURCES unit/test_data_partition.c TIMEOUT 30 LABELS data)
# The subcommand is compiled into its test as well as into the fedc program,
# so its flags are tested without starting a process.
fedc_test(NAME test_data_cli SOURCES unit/test_data_cli.c ${PROJECT_SOURCE_DIR}/tools/cmd_partition.c
          TIMEOUT 30 LABELS data)
