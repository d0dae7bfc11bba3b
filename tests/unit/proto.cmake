# unit tests: proto
fedc_test(NAME test_proto_frame SOURCES unit/test_proto_frame.c TIMEOUT 30 LABELS unit)
fedc_test(NAME test_proto_fuzz SOURCES unit/test_proto_fuzz.c TIMEOUT 120 LABELS unit)
fedc_test(NAME test_proto_wire SOURCES unit/test_proto_wire.c TIMEOUT 120 LABELS unit)
# proto/frame.h includes the generated "fedc.pb-c.h" by its bare name.
foreach(_t test_proto_frame test_proto_fuzz test_proto_wire)
  target_include_directories(${_t} PRIVATE ${PROJECT_BINARY_DIR}/src/proto)
endforeach()
