# The wire schema is compiled with protoc-c at build time.
set(FEDC_PROTO_OUT ${PROJECT_BINARY_DIR}/src/proto)
file(MAKE_DIRECTORY ${FEDC_PROTO_OUT})
add_custom_command(
  OUTPUT ${FEDC_PROTO_OUT}/fedc.pb-c.c ${FEDC_PROTO_OUT}/fedc.pb-c.h
  COMMAND ${PROTOC_C} --c_out=${FEDC_PROTO_OUT} -I${PROJECT_SOURCE_DIR}/src/proto
          ${PROJECT_SOURCE_DIR}/src/proto/fedc.proto
  DEPENDS ${PROJECT_SOURCE_DIR}/src/proto/fedc.proto
  COMMENT "protoc-c fedc.proto")
add_custom_target(fedc_proto_gen DEPENDS ${FEDC_PROTO_OUT}/fedc.pb-c.c ${FEDC_PROTO_OUT}/fedc.pb-c.h)
list(APPEND FEDC_SOURCES ${FEDC_PROTO_OUT}/fedc.pb-c.c)
set_source_files_properties(${FEDC_PROTO_OUT}/fedc.pb-c.c PROPERTIES GENERATED TRUE
                            COMPILE_OPTIONS "-Wno-missing-prototypes;-Wno-strict-prototypes")
list(APPEND FEDC_PRIVATE_INCLUDES ${FEDC_PROTO_OUT})
fedc_sources(proto/frame.c proto/wire.c)
