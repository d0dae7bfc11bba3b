fedc_sources(server/connection.c server/virtual.c server/server.c)
