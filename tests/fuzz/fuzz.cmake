# libFuzzer targets (-DFEDC_FUZZ=ON, clang only; docs/fuzzing.md).
# The library objects are compiled with coverage instrumentation for the
# fuzzer and with ASan + UBSan (the options are added in the top-level
# CMakeLists.txt, before the library); each target below links libFuzzer's
# main. Every target fuzz_<name> has its seed corpus in corpus/<name>/.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "FEDC_FUZZ=ON needs clang (libFuzzer): configure with CC=clang "
                      "(Debian packages clang and libclang-rt-14-dev)")
endif()

set(FEDC_FUZZ_TARGETS frame message strategy_state secagg safetensors checkpoint handshake)
foreach(_t ${FEDC_FUZZ_TARGETS})
  add_executable(fuzz_${_t} ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_${_t}.c)
  target_link_libraries(fuzz_${_t} PRIVATE fedc_static)
  target_compile_options(fuzz_${_t} PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_${_t} PRIVATE -fsanitize=fuzzer)
  set_target_properties(fuzz_${_t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests/fuzz)
endforeach()
list(TRANSFORM FEDC_FUZZ_TARGETS PREPEND fuzz_ OUTPUT_VARIABLE _fuzz_programs)
add_custom_target(fedc_fuzz DEPENDS ${_fuzz_programs})

# The generator of the seed corpus (gen_corpus.c); not a fuzz target.
add_executable(fuzz_gen_corpus ${PROJECT_SOURCE_DIR}/tests/fuzz/gen_corpus.c)
target_link_libraries(fuzz_gen_corpus PRIVATE fedc_static)
set_target_properties(fuzz_gen_corpus PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests/fuzz)
