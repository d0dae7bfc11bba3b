# Small helpers so that each layer lists its own sources and tests.

# fedc_sources(file...) adds files (relative to src/) to the library.
macro(fedc_sources)
  foreach(_f ${ARGN})
    list(APPEND FEDC_SOURCES ${PROJECT_SOURCE_DIR}/src/${_f})
  endforeach()
endmacro()

# fedc_test(NAME name SOURCES file... [TIMEOUT s] [LABELS l...] [ARGS a...])
# builds one test program linked to the static library and registers it
# with CTest as its own entry, labelled unit.
function(fedc_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LABELS;ARGS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE fedc_static)
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "FEDC_BIN=$<TARGET_FILE:fedc_cli>;FEDC_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
  # Every test made here is a unit test; the sanitizer pass selects them by label.
  list(APPEND T_LABELS unit)
  list(REMOVE_DUPLICATES T_LABELS)
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}")
endfunction()
