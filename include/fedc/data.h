/*
 * fedc data: datasets, their readers and writers, and partitioners that
 * split one dataset into many clients' shares.
 *
 * A dataset is a plain struct of n examples, each a row of `features`
 * floats and one integer label. Readers understand the IDX format of MNIST
 * and Fashion-MNIST (gzipped or not) and CSV files; see docs/data.md for the
 * formats, the layout of a data directory and the partition schemes.
 *
 * Every reader treats its input as untrusted: a missing, truncated or
 * malformed file gives a status code and a message naming the file and the
 * problem, never a crash, and sizes claimed by a header are checked against
 * the real file before any large allocation.
 *
 * All functions are reentrant; none keeps global state.
 */
#ifndef FEDC_DATA_H
#define FEDC_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Labels must be below this bound; it keeps a corrupt label column from
 * making every consumer allocate a huge one-hot or histogram. */
#define FEDC_DATA_MAX_CLASSES 65536

/*
 * A labelled dataset held in memory.
 *
 * `x` holds n rows of `features` floats (row-major, channel-major within a
 * row, so an image is channels x height x width); `y` holds n labels, each
 * in [0, num_classes). Both are allocated with fedc_aligned_alloc (64-byte
 * aligned, which the compute backends rely on) and belong to the dataset:
 * fedc_dataset_destroy frees them. Code that builds a dataset by hand
 * should start from fedc_dataset_create so that this holds.
 *
 * num_classes is inferred by the readers as the largest label + 1 (at least
 * 2). A client's share of a dataset may lack the top classes, so a program
 * that combines splits or clients sets the model's class count with
 * fedc_dataset_set_num_classes.
 */
typedef struct fedc_dataset {
    size_t n;                    /* examples */
    size_t features;             /* floats per example = channels*height*width */
    int channels, height, width; /* 1, rows, cols for IDX images; 1, 1, features for CSV */
    int num_classes;             /* max label + 1, at least 2; 10 for Fashion-MNIST */
    float *x;                    /* n * features, images scaled to [0, 1] */
    int32_t *y;                  /* n labels */
} fedc_dataset;

/*
 * Creates a dataset of n zero-filled examples with the given shape
 * (features = channels * height * width, each at least 1) and
 * num_classes (2 .. FEDC_DATA_MAX_CLASSES); labels start at 0. n may be 0.
 * On success *out is a new dataset the caller destroys. Fails with
 * FEDC_ERR_INVALID for a bad shape or class count, FEDC_ERR_TOO_LARGE when
 * the byte size overflows and FEDC_ERR_NOMEM.
 */
int fedc_dataset_create(size_t n, int channels, int height, int width, int num_classes, fedc_dataset **out,
                        char *err, size_t errlen);

/* Frees x, y and d. No-op on NULL. */
void fedc_dataset_destroy(fedc_dataset *d);

/*
 * Loads an IDX image file and an IDX label file (each gzipped or plain;
 * zlib tells them apart by content, not by name).
 *
 * Images: magic 0x0000TTDD with DD = 3 (n x rows x cols; channels 1) or
 * 4 (n x channels x rows x cols) and element type TT = 0x08 (unsigned
 * bytes, scaled to [0, 1] by dividing by 255) or 0x0D (big-endian float32,
 * taken as is; must be finite). Labels: DD = 1 and TT = 0x08 (unsigned
 * bytes) or 0x0C (big-endian int32, each in [0, FEDC_DATA_MAX_CLASSES)).
 *
 * The checks, each reported with the file's path: the file exists and is a
 * regular file (FEDC_ERR_NOTFOUND, FEDC_ERR_IO), it is not empty, the magic
 * number, element type and dimension count are as above, no dimension
 * other than n is zero, the data holds exactly as many bytes as the header
 * promises (neither truncated nor followed by extra bytes), the gzip stream
 * is intact, both files hold the same number of examples and every label is
 * in range (all FEDC_ERR_FORMAT; unsupported element types give
 * FEDC_ERR_UNSUPPORTED). A header claiming more data than the file can hold
 * is rejected before anything is allocated, and data is read in growing
 * chunks, so a lying header never causes a huge allocation.
 *
 * On success *out is a new dataset the caller destroys; on failure *out is
 * NULL.
 */
int fedc_dataset_load_idx(const char *images_path, const char *labels_path, fedc_dataset **out, char *err,
                          size_t errlen);

/*
 * Writes a dataset as an IDX image file and an IDX label file, gzipped
 * when the path ends in ".gz" and plain otherwise. Images are written as
 * unsigned bytes when every feature is exactly k/255 for an integer k in
 * [0, 255] (so data read from a u8 IDX file round-trips byte for byte) and
 * as big-endian float32 otherwise (lossless for any finite data). Labels
 * are unsigned bytes when num_classes <= 256, else big-endian int32. The
 * image file has 3 dimensions (n x height x width) when channels is 1 and
 * 4 otherwise. Output is deterministic: the gzip header carries no time
 * stamp or file name. Each file is written under a temporary name and
 * renamed into place, so a reader never sees half a file.
 */
int fedc_dataset_save_idx(const fedc_dataset *d, const char *images_path, const char *labels_path, char *err,
                          size_t errlen);

/* How the first line of a CSV file is treated. */
typedef enum fedc_csv_header {
    FEDC_CSV_HEADER_AUTO = 0, /* a header if any field of it is not a number */
    FEDC_CSV_HEADER_YES = 1,  /* always skip the first line */
    FEDC_CSV_HEADER_NO = 2    /* the first line is data */
} fedc_csv_header;

/*
 * Options of the CSV reader. Initialise with fedc_csv_options_init, which
 * sets the defaults given in brackets, then change what differs.
 */
typedef struct fedc_csv_options {
    int label_column;            /* 0-based column of the label, -1 for the last [0] */
    fedc_csv_header header;      /* [FEDC_CSV_HEADER_AUTO] */
    char delimiter;              /* field separator [','] */
    int scale;                   /* nonzero: divide every feature by 255, for image
                                    CSVs with 0..255 pixels [0: features as is] */
    int num_classes;             /* nonzero: labels must be below it and the
                                    dataset takes it as num_classes [0: infer] */
    int channels, height, width; /* nonzero: the shape of one example, whose
                                    product must equal the feature count
                                    [0: 1 x 1 x features] */
} fedc_csv_options;

/* Fills *opt with the defaults. */
void fedc_csv_options_init(fedc_csv_options *opt);

/*
 * Loads a CSV file (gzipped or plain): one example per line, a label
 * column and numeric feature columns; blank lines are skipped and CRLF line
 * ends are accepted. Labels are non-negative integers (written "3" or
 * "3.0"); features are finite decimal numbers. Every data line must have
 * the same number of fields as the first one.
 *
 * A bad row fails with FEDC_ERR_FORMAT and a message "path:line: problem"
 * (a label out of range: FEDC_ERR_RANGE); a missing file gives
 * FEDC_ERR_NOTFOUND and a file without data rows FEDC_ERR_FORMAT. opt may
 * be NULL for the defaults. On success *out is a new dataset the caller
 * destroys; on failure *out is NULL.
 */
int fedc_dataset_load_csv(const char *path, const fedc_csv_options *opt, fedc_dataset **out, char *err,
                          size_t errlen);

/*
 * A data directory holds a "train" and a "test" split in one of these
 * layouts (checked in order):
 *   train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz], test split
 *   t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz] (the
 *   Fashion-MNIST/MNIST file names, so the Debian dataset directory
 *   /usr/share/datasets/fashion-mnist itself is a valid data dir; the plain
 *   name is preferred when both exist), or
 *   train.csv[.gz] / test.csv[.gz], read with the default CSV options.
 * split is "train" or "test" (else FEDC_ERR_INVALID). A missing directory
 * or split gives FEDC_ERR_NOTFOUND naming the directory and the expected
 * files. Otherwise behaves as fedc_dataset_load_idx / _load_csv.
 */
int fedc_dataset_load_dir(const char *dir, const char *split, fedc_dataset **out, char *err, size_t errlen);

/*
 * Sets d->num_classes to num_classes after checking that it is in
 * [2, FEDC_DATA_MAX_CLASSES] (else FEDC_ERR_INVALID) and that every label
 * is below it (else FEDC_ERR_RANGE naming the first offending example).
 * d is unchanged on failure.
 */
int fedc_dataset_set_num_classes(fedc_dataset *d, int num_classes, char *err, size_t errlen);

/* Counts the examples of each class: counts must hold d->num_classes
 * entries, and counts[k] receives the number of examples labelled k. */
void fedc_dataset_label_counts(const fedc_dataset *d, size_t *counts);

/*
 * Copies the examples idx[0..count) of d, in that order, into a new
 * dataset with d's shape and num_classes. An index may repeat. Fails with
 * FEDC_ERR_RANGE if an index is >= d->n. On success *out is a new dataset
 * the caller destroys.
 */
int fedc_dataset_subset(const fedc_dataset *d, const uint32_t *idx, size_t count, fedc_dataset **out,
                        char *err, size_t errlen);

/* ---------------------------------------------------------------------- */
/* Partitioning                                                           */

typedef enum fedc_partition_scheme {
    /* A uniformly random split into near-equal shares. */
    FEDC_PARTITION_IID = 0,
    /* For each class, the class's examples are split among the clients in
     * proportions drawn from Dirichlet(alpha, ..., alpha), skipping clients
     * that already hold n/clients examples (the NIID-Bench scheme). Small
     * alpha gives few classes per client, large alpha approaches iid. */
    FEDC_PARTITION_DIRICHLET = 1,
    /* Examples sorted by label are cut into clients * K near-equal shards and
     * each client gets K random shards, so it sees about K classes. */
    FEDC_PARTITION_SHARDS = 2,
    /* Each client draws examples_per_client distinct examples uniformly at
     * random, from a stream of its own: clients overlap (an example may go
     * to several clients), so a dataset gives any number of clients, more
     * than it has examples included. A client's share depends only on the
     * seed, its index and the dataset's size, not on the number of
     * clients. */
    FEDC_PARTITION_SAMPLE = 3
} fedc_partition_scheme;

/* "iid", "dirichlet", "shards", "sample"; NULL for an unknown value. */
const char *fedc_partition_scheme_name(fedc_partition_scheme scheme);
/* Parses one of the names above; returns FEDC_ERR_INVALID if unknown. */
int fedc_partition_scheme_parse(const char *name, fedc_partition_scheme *out);

/*
 * Options of the partitioners. Initialise with
 * fedc_partition_options_init, which sets the defaults given in brackets.
 */
typedef struct fedc_partition_options {
    fedc_partition_scheme scheme; /* [FEDC_PARTITION_IID] */
    size_t clients;               /* number of clients, at least 1 [0: must be set] */
    double alpha;                 /* dirichlet concentration, > 0 [0.5] */
    int labels_per_client;        /* shards per client (K), >= 1 [2] */
    double test_fraction;         /* share of each client's examples held out as
                                     its local test split, in [0, 1) [0.1] */
    size_t min_samples;           /* fewest examples (train + test) per client [10] */
    uint64_t seed;                /* the same seed gives the same partition [0] */
    size_t examples_per_client;   /* sample: examples (train + test) each client
                                     draws, min_samples .. n [0: must be set] */
} fedc_partition_options;

/* Fills *opt with the defaults. */
void fedc_partition_options_init(fedc_partition_options *opt);

/*
 * A partition of n examples among clients. Client c holds the source
 * examples index[offset[c] .. offset[c + 1]); the first part of that range
 * (ascending source indices) is its local training split and the last
 * test_count[c] entries (also ascending) its local test split. A client's
 * range never repeats an index. For iid, dirichlet and shards every source
 * index in [0, n) appears exactly once, so offset[clients] == n; for sample
 * each client's range has examples_per_client entries and the ranges
 * overlap, so offset[clients] == clients * examples_per_client. The arrays
 * belong to the struct and are freed by fedc_partition_map_destroy.
 */
typedef struct fedc_partition_map {
    fedc_partition_scheme scheme;
    size_t clients;
    size_t n;           /* examples in the partitioned dataset */
    int num_classes;    /* of the partitioned dataset */
    uint32_t *index;    /* offset[clients] source example indices, grouped by client */
    size_t *offset;     /* clients + 1 entries */
    size_t *test_count; /* clients entries */
} fedc_partition_map;

/*
 * Computes a partition of d under opt. Deterministic: the same labels and
 * options give the same partition (iid, shards and sample bit for bit on every
 * platform; dirichlet uses libm's log and pow, whose last bits may differ
 * between C libraries). Every client gets at least opt->min_samples
 * examples: the dirichlet scheme redraws as NIID-Bench does, and if a
 * client is still short (dirichlet after many redraws, shards from
 * rounding), random examples move to it from the largest clients; with
 * sample every client gets exactly opt->examples_per_client. Fails with
 * FEDC_ERR_INVALID for bad options, when clients * min_samples exceeds d->n
 * (except for sample), when examples_per_client is 0, below min_samples or
 * above d->n (sample), or when d->n does not fit 32-bit indices, and with
 * FEDC_ERR_TOO_LARGE when clients * examples_per_client overflows the size
 * of the index. On success *out is a new partition the caller destroys.
 */
int fedc_partition_compute(const fedc_dataset *d, const fedc_partition_options *opt, fedc_partition_map **out,
                           char *err, size_t errlen);

/* Frees the partition and its arrays. No-op on NULL. */
void fedc_partition_map_destroy(fedc_partition_map *p);

/* The training and test splits of one client as new datasets (each may be
 * NULL to skip it), copied from d, the dataset p was computed on. The
 * datasets keep d's num_classes. The caller destroys them. */
int fedc_partition_client(const fedc_dataset *d, const fedc_partition_map *p, size_t client,
                          fedc_dataset **train, fedc_dataset **test, char *err, size_t errlen);

/*
 * Writes a computed partition of d under out_dir: one data directory per
 * client named client-000, client-001, ... (more digits beyond 1000
 * clients), each holding train-images-idx3-ubyte.gz,
 * train-labels-idx1-ubyte.gz (the client's training split) and
 * t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (its local test
 * split), written as fedc_dataset_save_idx does; and out_dir/partition.json
 * describing the partition (see docs/data.md). opt must be the options p
 * was computed with (they are recorded in partition.json); source, which may
 * be NULL, is recorded as the data's origin. out_dir and its parents are
 * created as needed. Fails with FEDC_ERR_INVALID if out_dir already holds a
 * client directory beyond the last one, left by an earlier partition into
 * more clients, since mixing the two would break disjointness.
 * Same inputs give byte-identical files.
 */
int fedc_partition_write(const fedc_dataset *d, const fedc_partition_map *p,
                         const fedc_partition_options *opt, const char *source, const char *out_dir,
                         char *err, size_t errlen);

/*
 * Loads the train split of data_dir (fedc_dataset_load_dir), partitions it
 * under opt and writes the result to out_dir (fedc_partition_write). The
 * test split of data_dir is not used: clients evaluate on their local test
 * splits and a server may evaluate on the source test split. If out is
 * non-NULL, *out receives the partition (the caller destroys it).
 */
int fedc_partition(const char *data_dir, const char *out_dir, const fedc_partition_options *opt,
                   fedc_partition_map **out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* FEDC_DATA_H */
