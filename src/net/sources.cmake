fedc_sources(net/conn.c net/tls.c)
