fedc_sources(secagg/shamir.c secagg/masking.c)
