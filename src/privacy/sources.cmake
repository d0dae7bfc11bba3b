fedc_sources(privacy/rdp.c)
