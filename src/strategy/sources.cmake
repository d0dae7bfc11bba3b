fedc_sources(strategy/fedavg.c)
