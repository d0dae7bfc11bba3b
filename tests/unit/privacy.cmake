# unit tests: privacy
# The RDP accountant (src/privacy/rdp.c) against the values published in the test suites of
# TensorFlow Privacy, dp_accounting and Opacus; monotonicity, closed forms, argument checks.
fedc_test(NAME test_privacy_rdp SOURCES unit/test_privacy_rdp.c TIMEOUT 60 LABELS unit)
