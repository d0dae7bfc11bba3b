fedc_sources(client/client.c client/secagg.c)
