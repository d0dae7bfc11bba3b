# sources of the nn layer: the built-in trainer and its CPU compute backend
fedc_sources(nn/backend_cpu.c nn/conv_direct.c nn/layer.c nn/model.c nn/train.c nn/workers.c)
