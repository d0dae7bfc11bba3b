# unit tests: secure aggregation's primitives
# Shamir sharing over GF(2^8) (src/secagg/shamir.c): the field against a slow reference, every
# t-subset of the shares giving the secret back, fewer than t revealing nothing (chi-square), errors.
fedc_test(NAME test_secagg_shamir SOURCES unit/test_secagg_shamir.c TIMEOUT 120 LABELS unit)
# Masking (src/secagg/masking.c): quantisation, X25519 pairwise keys, PRG masks that cancel in the sum.
fedc_test(NAME test_secagg_masking SOURCES unit/test_secagg_masking.c TIMEOUT 120 LABELS unit)
# The constant-time check of the GF(2^8) arithmetic, split and combine: under memcheck the secrets
# are marked undefined, so any branch or address that depends on them fails the run. Not with the
# sanitizers (valgrind cannot run their binaries); labelled valgrind, not unit.
find_program(FEDC_VALGRIND valgrind)
if(FEDC_VALGRIND AND NOT FEDC_SANITIZE)
  add_test(NAME test_secagg_shamir_ct
           COMMAND ${FEDC_VALGRIND} -q --error-exitcode=1 $<TARGET_FILE:test_secagg_shamir>)
  set_tests_properties(test_secagg_shamir_ct PROPERTIES TIMEOUT 300 LABELS valgrind
                       ENVIRONMENT "FEDC_SECAGG_TEST_SCALE=4"
                       FAIL_REGULAR_EXPRESSION "not under valgrind")
endif()
# The protocol core (src/secagg/protocol.h) in an in-memory federation: exact sums with dropouts at
# every stage (complete graph and SecAgg+), clean aborts below t, never both secrets of a client,
# malicious messages refused, masked inputs uniform.
fedc_test(NAME test_secagg_protocol SOURCES unit/test_secagg_protocol.c TIMEOUT 120 LABELS unit)
# What the server learns: every byte it receives over two rounds (complete graph; SecAgg+ with three
# dropouts) holds no window of any input, masked inputs look uniform, share counters, exact sums.
fedc_test(NAME test_secagg_view SOURCES unit/test_secagg_view.c TIMEOUT 120 LABELS unit)
