fedc_sources(privacy/rdp.c privacy/dp.c privacy/ddg.c)
