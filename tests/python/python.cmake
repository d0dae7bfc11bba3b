# Interoperability test: a client written in Python from docs/protocol.md and
# src/proto/fedc.proto alone trains next to fedc's C clients. Needs protoc
# (protobuf-compiler), python3-protobuf and python3-numpy.
add_test(NAME test_python_client
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/python/test_python_client.sh)
set_tests_properties(test_python_client PROPERTIES
  TIMEOUT 300
  LABELS integration
  ENVIRONMENT "FEDC_BIN=$<TARGET_FILE:fedc_cli>;FEDC_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
