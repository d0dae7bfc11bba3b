fedc_sources(sim/sim.c sim/sim_fold.c)
if(FEDC_HAVE_MPI)
  fedc_sources(sim/sim_mpi.c)
endif()
