# sources of the data layer
fedc_sources(data/dataset.c data/fsutil.c data/idx.c data/csv.c data/datadir.c
             data/partition.c data/partition_write.c)
