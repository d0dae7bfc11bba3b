fedc_sources(net/conn.c)
