# unit tests: privacy
# The RDP accountant (src/privacy/rdp.c) against the values published in the test suites of
# TensorFlow Privacy, dp_accounting and Opacus; monotonicity, closed forms, argument checks.
fedc_test(NAME test_privacy_rdp SOURCES unit/test_privacy_rdp.c TIMEOUT 60 LABELS unit)
# DP mechanics (src/privacy/dp.c): mode names, the CSPRNG normals' statistics, clipping and noise.
fedc_test(NAME test_privacy_dp SOURCES unit/test_privacy_dp.c TIMEOUT 120 LABELS unit)
# Adaptive clipping (Andrew et al. 2021): its formulas, and convergence to the target quantile.
fedc_test(NAME test_privacy_adaptive SOURCES unit/test_privacy_adaptive.c TIMEOUT 60 LABELS unit)
# The distributed discrete Gaussian (src/privacy/ddg.c, Kairouz et al. 2021): the Hadamard rotation,
# the discrete Gaussian sampler's statistics, conditional rounding, encode/decode with modular wrap,
# and the RDP accounting against the Gaussian's.
fedc_test(NAME test_privacy_ddg SOURCES unit/test_privacy_ddg.c TIMEOUT 60 LABELS unit)
