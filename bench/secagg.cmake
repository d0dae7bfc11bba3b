# bench_secagg: mask expansion (fedc's AES-128-CTR masks against OpenSSL's
# raw AES-128-CTR and libsodium's ChaCha20 and XChaCha20) and one in-memory
# SecAgg(+) round against a plain FedAvg round (see the comment at the top
# of bench_secagg.c). OpenSSL's libcrypto, for <openssl/evp.h> and the
# AES-128-CTR reference, comes with fedc_static's public dependencies
# (cmake/FedcDependencies.cmake requires it for the masks).
add_executable(bench_secagg bench_secagg.c)
target_link_libraries(bench_secagg PRIVATE fedc_static)
