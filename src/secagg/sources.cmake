fedc_sources(secagg/shamir.c secagg/masking.c secagg/protocol_codec.c secagg/protocol_config.c
             secagg/protocol_client.c secagg/protocol_server.c)
