fedc_sources(sim/sim.c)
