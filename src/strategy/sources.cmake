fedc_sources(strategy/fedavg.c strategy/robust.c strategy/strategy.c)
