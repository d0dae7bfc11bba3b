fedc_sources(client/client.c)
