fedc_sources(core/status.c core/log.c core/rng.c core/util.c core/config.c core/tensor.c core/safetensors.c
             core/device.c core/nodekey.c)
