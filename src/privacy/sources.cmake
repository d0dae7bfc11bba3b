fedc_sources(privacy/rdp.c privacy/dp.c)
