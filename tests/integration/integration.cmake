# Integration tests: the real fedc programs as separate processes on loopback.
add_executable(make_synthetic integration/make_synthetic.c)
target_link_libraries(make_synthetic PRIVATE fedc_static)

add_executable(poison_client integration/poison_client.c)
target_link_libraries(poison_client PRIVATE fedc_static)

set(FEDC_IT_ENV "FEDC_BIN=$<TARGET_FILE:fedc_cli>;FEDC_MAKE_SYNTHETIC=$<TARGET_FILE:make_synthetic>"
    "FEDC_POISON_CLIENT=$<TARGET_FILE:poison_client>;FEDC_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
if(TARGET custom_client)
  list(APPEND FEDC_IT_ENV "FEDC_EXAMPLE_CLIENT=$<TARGET_FILE:custom_client>"
       "FEDC_EXAMPLE_STRATEGY=$<TARGET_FILE:custom_strategy>")
endif()

# fedc_integration_test(name timeout labels)
function(fedc_integration_test name timeout labels)
  add_test(NAME ${name} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/${name}.sh)
  set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout} LABELS "${labels}" ENVIRONMENT "${FEDC_IT_ENV}")
endfunction()

fedc_integration_test(test_federation 300 "integration;sanitize")
fedc_integration_test(test_client_killed 300 integration)
fedc_integration_test(test_determinism 300 integration)
fedc_integration_test(test_bad_input 300 integration)
fedc_integration_test(test_reject_no_trace 300 integration)
fedc_integration_test(test_round_timeout 300 integration)
fedc_integration_test(test_server_lifecycle 300 integration)
fedc_integration_test(test_resume 300 integration)
fedc_integration_test(test_sim 300 "integration;sanitize")
fedc_integration_test(test_strategies 120 "integration;sanitize")
fedc_integration_test(test_device 120 "integration;cuda")
fedc_integration_test(test_attack 120 integration)
fedc_integration_test(test_scaffold 300 integration)
fedc_integration_test(test_privacy_cli 60 integration)
fedc_integration_test(test_no_weak_rng 30 integration)
fedc_integration_test(test_certs 60 integration)
fedc_integration_test(test_dp 300 integration)
fedc_integration_test(test_secagg 300 integration)
fedc_integration_test(test_tls 120 integration)
fedc_integration_test(test_reconnect 120 integration)
fedc_integration_test(test_node_auth 120 integration)
# deploy/ (Dockerfile, compose, Kubernetes): syntax, structure and fedc's flags;
# no container engine needed.
fedc_integration_test(test_deploy_files 60 integration)
# Four network namespaces (root only; exit 77, skipped, where they cannot be made).
fedc_integration_test(test_netns 180 integration)
set_tests_properties(test_netns PROPERTIES SKIP_RETURN_CODE 77)
if(FEDC_HAVE_MPI)
  fedc_integration_test(test_sim_mpi 300 integration)
endif()
# What an MPI rank folds of its clients' updates, without MPI (runs under
# the sanitizers with the unit tests).
fedc_test(NAME test_sim_fold SOURCES integration/test_sim_fold.c TIMEOUT 60 LABELS integration)
if(TARGET custom_client)
  fedc_integration_test(test_example_client 300 integration)
  fedc_integration_test(test_example_strategy 120 integration)
endif()

# In-process: the server against hostile raw-protocol clients (also runs
# under the sanitizers with the unit tests).
fedc_test(NAME test_server_hostile SOURCES integration/test_server_hostile.c TIMEOUT 120 LABELS integration)

add_test(NAME test_install COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/integration/test_install.sh)
set_tests_properties(test_install PROPERTIES TIMEOUT 300 LABELS integration
                     ENVIRONMENT "${FEDC_IT_ENV};FEDC_BUILD_DIR=${PROJECT_BINARY_DIR}")

add_executable(test_huge_tensor integration/test_huge_tensor.c)
target_link_libraries(test_huge_tensor PRIVATE fedc_static)
add_test(NAME test_huge_tensor COMMAND test_huge_tensor)
set_tests_properties(test_huge_tensor PROPERTIES TIMEOUT 600 LABELS "integration;large"
                     ENVIRONMENT "${FEDC_IT_ENV}" RUN_SERIAL TRUE)
