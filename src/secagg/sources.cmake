fedc_sources(secagg/shamir.c secagg/masking.c secagg/protocol.c)
