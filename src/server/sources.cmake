fedc_sources(server/server.c)
