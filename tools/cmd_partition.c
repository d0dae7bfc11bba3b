/* fedc partition: split a data directory among clients, one data directory
 * per client, for simulations and for handing each client its own data. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/data.h"

#include "commands.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* Exit codes: 0 success, 1 the partition failed, 2 bad usage. */
enum { EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fprintf(f, "usage: fedc partition --clients N --out DIR [options]\n"
               "\n"
               "Splits the train split of a data directory among N clients and writes one data\n"
               "directory per client (DIR/client-000, DIR/client-001, ...), each holding that\n"
               "client's training examples and a local test split taken from its own share, plus\n"
               "DIR/partition.json describing the partition. The same options and seed give\n"
               "byte-identical files.\n"
               "\n"
               "options:\n"
               "  --data DIR              source data directory, IDX or CSV layout\n"
               "                          (default " DEFAULT_DATA_DIR ")\n"
               "  --clients N             number of clients (required)\n"
               "  --scheme S              iid | dirichlet | shards | sample (default iid)\n"
               "  --alpha A               dirichlet concentration, > 0; smaller is more skewed\n"
               "                          (default 0.5; dirichlet only)\n"
               "  --labels-per-client K   shards, and so about K labels, per client\n"
               "                          (default 2; shards only)\n"
               "  --examples-per-client S each client draws S distinct examples at random;\n"
               "                          clients overlap, so N may exceed the dataset\n"
               "                          (required with, and only for, sample)\n"
               "  --test-fraction F       share of each client's examples held out as its local\n"
               "                          test split, in [0, 1) (default 0.1)\n"
               "  --min-samples M         fewest examples per client (default 10)\n"
               "  --seed S                random seed, an unsigned 64-bit integer (default 0)\n"
               "  --out DIR               output directory (required)\n"
               "  -h, --help              print this help\n"
               "\n"
               "See docs/data.md for the schemes and the output layout.\n");
}

static int usage_error(const char *fmt, ...) FEDC_PRINTF(1, 2);

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("fedc partition: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'fedc partition --help'.\n", stderr);
    return EXIT_USAGE;
}

/* Whole-string unsigned decimal; rejects signs, blanks and overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_double(const char *s, double *out)
{
    if (!s || *s == '\0') return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

enum {
    OPT_DATA = 256,
    OPT_CLIENTS,
    OPT_SCHEME,
    OPT_ALPHA,
    OPT_LABELS,
    OPT_TEST_FRACTION,
    OPT_MIN_SAMPLES,
    OPT_SEED,
    OPT_OUT,
    OPT_PER_CLIENT
};

int fedc_cmd_partition(int argc, char **argv)
{
    static const struct option longopts[] = {{"data", required_argument, NULL, OPT_DATA},
                                             {"clients", required_argument, NULL, OPT_CLIENTS},
                                             {"scheme", required_argument, NULL, OPT_SCHEME},
                                             {"alpha", required_argument, NULL, OPT_ALPHA},
                                             {"labels-per-client", required_argument, NULL, OPT_LABELS},
                                             {"test-fraction", required_argument, NULL, OPT_TEST_FRACTION},
                                             {"min-samples", required_argument, NULL, OPT_MIN_SAMPLES},
                                             {"seed", required_argument, NULL, OPT_SEED},
                                             {"examples-per-client", required_argument, NULL, OPT_PER_CLIENT},
                                             {"out", required_argument, NULL, OPT_OUT},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    fedc_partition_options opt;
    const char *data_dir = DEFAULT_DATA_DIR, *out_dir = NULL;
    int have_clients = 0, have_alpha = 0, have_labels = 0, have_per_client = 0;
    uint64_t u;
    double v;

    fedc_partition_options_init(&opt);
    /* The dispatcher may have run getopt already; 0 makes glibc and musl
     * start afresh. We print our own messages, naming the flag. */
    optind = 0;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, ":h", longopts, NULL);
        if (c == -1) break;
        const char *flag = argv[optind - 1];
        switch (c) {
        case OPT_DATA: data_dir = optarg; break;
        case OPT_OUT: out_dir = optarg; break;
        case OPT_CLIENTS:
            if (!parse_u64(optarg, &u) || u < 1 || u > SIZE_MAX)
                return usage_error("--clients: '%s' is not a positive integer", optarg);
            opt.clients = (size_t)u;
            have_clients = 1;
            break;
        case OPT_SCHEME:
            if (fedc_partition_scheme_parse(optarg, &opt.scheme) != FEDC_OK)
                return usage_error("--scheme: unknown scheme '%s' (expected iid, dirichlet, shards or "
                                   "sample)",
                                   optarg);
            break;
        case OPT_ALPHA:
            if (!parse_double(optarg, &v) || v <= 0.0)
                return usage_error("--alpha: '%s' is not a positive number", optarg);
            opt.alpha = v;
            have_alpha = 1;
            break;
        case OPT_LABELS:
            if (!parse_u64(optarg, &u) || u < 1 || u > 1000000)
                return usage_error("--labels-per-client: '%s' is not a positive integer", optarg);
            opt.labels_per_client = (int)u;
            have_labels = 1;
            break;
        case OPT_TEST_FRACTION:
            if (!parse_double(optarg, &v) || v < 0.0 || v >= 1.0)
                return usage_error("--test-fraction: '%s' is not a number in [0, 1)", optarg);
            opt.test_fraction = v;
            break;
        case OPT_MIN_SAMPLES:
            if (!parse_u64(optarg, &u) || u < 1 || u > SIZE_MAX)
                return usage_error("--min-samples: '%s' is not a positive integer", optarg);
            opt.min_samples = (size_t)u;
            break;
        case OPT_SEED:
            if (!parse_u64(optarg, &u))
                return usage_error("--seed: '%s' is not an unsigned 64-bit integer", optarg);
            opt.seed = u;
            break;
        case OPT_PER_CLIENT:
            if (!parse_u64(optarg, &u) || u < 1 || u > UINT32_MAX)
                return usage_error("--examples-per-client: '%s' is not a positive integer", optarg);
            opt.examples_per_client = (size_t)u;
            have_per_client = 1;
            break;
        case 'h': usage(stdout); return 0;
        case ':': return usage_error("%s needs a value", flag);
        default:
            if (optopt > 0 && optopt < 256) return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", flag);
        }
    }
    if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
    if (!have_clients) return usage_error("missing --clients N (the number of clients)");
    if (!out_dir) return usage_error("missing --out DIR (where to write the clients' data)");
    if (have_alpha && opt.scheme != FEDC_PARTITION_DIRICHLET)
        return usage_error("--alpha applies only to --scheme dirichlet, not %s",
                           fedc_partition_scheme_name(opt.scheme));
    if (have_labels && opt.scheme != FEDC_PARTITION_SHARDS)
        return usage_error("--labels-per-client applies only to --scheme shards, not %s",
                           fedc_partition_scheme_name(opt.scheme));
    if (have_per_client && opt.scheme != FEDC_PARTITION_SAMPLE)
        return usage_error("--examples-per-client applies only to --scheme sample, not %s",
                           fedc_partition_scheme_name(opt.scheme));
    if (!have_per_client && opt.scheme == FEDC_PARTITION_SAMPLE)
        return usage_error("--scheme sample needs --examples-per-client S (the examples each client draws)");

    char err[FEDC_ERRMSG_MAX];
    fedc_partition_map *map = NULL;
    double t0 = fedc_now();
    int rc = fedc_partition(data_dir, out_dir, &opt, &map, err, sizeof err);
    if (rc != FEDC_OK) {
        fprintf(stderr, "fedc partition: %s\n", err);
        return 1;
    }
    size_t lo = SIZE_MAX, hi = 0;
    for (size_t c = 0; c < map->clients; c++) {
        size_t size = map->offset[c + 1] - map->offset[c];
        if (size < lo) lo = size;
        if (size > hi) hi = size;
    }
    if (opt.scheme == FEDC_PARTITION_SAMPLE)
        printf("%zu clients drew %zu examples each from the %zu of %s (sample, seed %llu)\n", map->clients,
               opt.examples_per_client, map->n, data_dir, (unsigned long long)opt.seed);
    else
        printf("partitioned %zu examples of %s into %zu clients (%s, seed %llu)\n", map->n, data_dir,
               map->clients, fedc_partition_scheme_name(opt.scheme), (unsigned long long)opt.seed);
    printf("examples per client: min %zu, max %zu (local test fraction %g)\n", lo, hi, opt.test_fraction);
    printf("wrote %s/client-*/ and %s/partition.json in %.1f s\n", out_dir, out_dir, fedc_now() - t0);
    fedc_partition_map_destroy(map);
    return 0;
}
