fedc_sources(server/connection.c server/stream.c server/virtual.c server/server.c server/aggregate.c server/secure.c server/tls.c server/checkpoint.c server/resume.c)
