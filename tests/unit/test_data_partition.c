/* Partitioners: disjoint, complete, seeded, minimum shares, the skew of
 * each scheme, and the files that fedc_partition writes. The data is a
 * synthetic dataset made here, whose features encode each example's index
 * so that the written files can be traced back to their source. */
#define _GNU_SOURCE 1 /* nftw's FTW_DEPTH | FTW_PHYS */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "fedc/data.h"
#include "test_util.h"

static char tmpdir[256];
static char err[FEDC_ERRMSG_MAX];

#define N_EXAMPLES 1000
#define N_CLASSES  10

static const char *path_of(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

/* 1000 examples, 100 per class in a scrambled order; features encode the
 * example's index in two bytes and its label in a third. */
static fedc_dataset *make_dataset(void)
{
    fedc_dataset *d = NULL;
    if (fedc_dataset_create(N_EXAMPLES, 1, 1, 3, N_CLASSES, &d, err, sizeof err) != FEDC_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    for (size_t i = 0; i < d->n; i++) {
        d->y[i] = (int32_t)((i * 7) % N_CLASSES);
        d->x[3 * i] = (float)(i & 255) / 255.0f;
        d->x[3 * i + 1] = (float)(i >> 8) / 255.0f;
        d->x[3 * i + 2] = (float)d->y[i] / 255.0f;
    }
    return d;
}

static size_t decode_index(const float *row)
{
    return (size_t)lrintf(row[0] * 255.0f) + 256 * (size_t)lrintf(row[1] * 255.0f);
}

static size_t client_size(const fedc_partition_map *p, size_t c)
{
    return p->offset[c + 1] - p->offset[c];
}

/* Disjoint, complete, at least min per client, ascending within each
 * split, and the expected local test share. */
static void check_map(const char *what, const fedc_partition_map *p, size_t min, double test_fraction)
{
    char *seen = calloc(p->n, 1);
    int complete = 1, ascending = 1, big_enough = 1, test_ok = 1;
    for (size_t i = 0; i < p->n; i++) {
        if (p->index[i] >= p->n || seen[p->index[i]])
            complete = 0;
        else
            seen[p->index[i]] = 1;
    }
    for (size_t c = 0; c < p->clients; c++) {
        size_t lo = p->offset[c], hi = p->offset[c + 1], t = p->test_count[c];
        if (hi - lo < min) big_enough = 0;
        size_t want = (size_t)floor(test_fraction * (double)(hi - lo) + 0.5);
        if (test_fraction > 0 && want < 1) want = 1;
        if (t != want) test_ok = 0;
        for (size_t i = lo + 1; i < hi; i++)
            if (i != hi - t && p->index[i] <= p->index[i - 1]) ascending = 0;
    }
    CHECK(p->offset[p->clients] == p->n && complete, "%s: every example goes to exactly one client", what);
    CHECK(big_enough, "%s: every client has at least %zu examples", what, min);
    CHECK(test_ok, "%s: each local test split is round(%.2f * share)", what, test_fraction);
    CHECK(ascending, "%s: indices ascend within each split", what);
    free(seen);
}

/* Mean over clients of the largest class's share of the client's data. */
static double mean_top_class_share(const fedc_dataset *d, const fedc_partition_map *p)
{
    double total = 0;
    for (size_t c = 0; c < p->clients; c++) {
        size_t counts[N_CLASSES] = {0}, top = 0;
        for (size_t i = p->offset[c]; i < p->offset[c + 1]; i++) counts[d->y[p->index[i]]]++;
        for (int k = 0; k < N_CLASSES; k++)
            if (counts[k] > top) top = counts[k];
        total += (double)top / (double)client_size(p, c);
    }
    return total / (double)p->clients;
}

static int distinct_labels(const fedc_dataset *d, const fedc_partition_map *p, size_t c)
{
    int present[N_CLASSES] = {0}, n = 0;
    for (size_t i = p->offset[c]; i < p->offset[c + 1]; i++) present[d->y[p->index[i]]] = 1;
    for (int k = 0; k < N_CLASSES; k++) n += present[k];
    return n;
}

static fedc_partition_map *compute(const fedc_dataset *d, fedc_partition_scheme scheme, size_t clients,
                                   double alpha, int k, uint64_t seed)
{
    fedc_partition_options opt;
    fedc_partition_options_init(&opt);
    opt.scheme = scheme;
    opt.clients = clients;
    opt.alpha = alpha;
    opt.labels_per_client = k;
    opt.seed = seed;
    fedc_partition_map *p = NULL;
    int rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    if (rc != FEDC_OK) CHECK(0, "partition %s failed: %s", fedc_partition_scheme_name(scheme), err);
    return p;
}

static int same_map(const fedc_partition_map *a, const fedc_partition_map *b)
{
    return a->clients == b->clients && a->n == b->n && a->offset[a->clients] == b->offset[b->clients] &&
           memcmp(a->index, b->index, a->offset[a->clients] * sizeof *a->index) == 0 &&
           memcmp(a->offset, b->offset, (a->clients + 1) * sizeof *a->offset) == 0 &&
           memcmp(a->test_count, b->test_count, a->clients * sizeof *a->test_count) == 0;
}

static void test_schemes(const fedc_dataset *d)
{
    static const struct {
        fedc_partition_scheme scheme;
        const char *name;
    } schemes[] = {{FEDC_PARTITION_IID, "iid"},
                   {FEDC_PARTITION_DIRICHLET, "dirichlet(0.5)"},
                   {FEDC_PARTITION_SHARDS, "shards(2)"}};
    for (size_t s = 0; s < 3; s++) {
        fedc_partition_map *a = compute(d, schemes[s].scheme, 10, 0.5, 2, 42);
        fedc_partition_map *b = compute(d, schemes[s].scheme, 10, 0.5, 2, 42);
        fedc_partition_map *c = compute(d, schemes[s].scheme, 10, 0.5, 2, 43);
        if (!a || !b || !c) return;
        check_map(schemes[s].name, a, 10, 0.1);
        check_map(schemes[s].name, c, 10, 0.1);
        CHECK(same_map(a, b), "%s: the same seed gives the same partition", schemes[s].name);
        CHECK(!same_map(a, c), "%s: another seed gives another partition", schemes[s].name);
        fedc_partition_map_destroy(a);
        fedc_partition_map_destroy(b);
        fedc_partition_map_destroy(c);
    }

    fedc_partition_map *p = compute(d, FEDC_PARTITION_IID, 10, 0, 0, 1);
    int equal = 1;
    for (size_t c = 0; p && c < 10; c++) equal &= client_size(p, c) == 100;
    double iid_share = p ? mean_top_class_share(d, p) : 1;
    CHECK(p && equal, "iid: 10 clients of exactly 100");
    CHECK(iid_share < 0.3, "iid: mean top-class share %.2f is near 0.1", iid_share);
    fedc_partition_map_destroy(p);

    p = compute(d, FEDC_PARTITION_DIRICHLET, 10, 0.05, 0, 1);
    double skew = p ? mean_top_class_share(d, p) : 0;
    CHECK(p && skew > 0.6, "dirichlet alpha 0.05: mean top-class share %.2f is high", skew);
    fedc_partition_map_destroy(p);
    p = compute(d, FEDC_PARTITION_DIRICHLET, 10, 1000, 0, 1);
    double flat = p ? mean_top_class_share(d, p) : 1;
    CHECK(p && flat < 0.3, "dirichlet alpha 1000: mean top-class share %.2f is near iid", flat);
    fedc_partition_map_destroy(p);

    /* 100 clients of 1000 examples with a tiny alpha: redraws rarely reach
     * ten examples each, so the repair step must. */
    p = compute(d, FEDC_PARTITION_DIRICHLET, 100, 0.01, 0, 9);
    if (p) check_map("dirichlet alpha 0.01, 100 clients of at least 10", p, 10, 0.1);
    fedc_partition_map_destroy(p);

    for (int k = 1; k <= 2; k++) {
        p = compute(d, FEDC_PARTITION_SHARDS, 10, 0, k, 5);
        int within = 1, equal_sizes = 1;
        for (size_t c = 0; p && c < 10; c++) {
            int labels = distinct_labels(d, p, c);
            within &= labels >= 1 && labels <= k;
            equal_sizes &= client_size(p, c) == 100;
        }
        CHECK(p && within && equal_sizes, "shards K=%d: every client has 1..%d labels, 100 examples", k, k);
        fedc_partition_map_destroy(p);
    }
    /* 3 shards of 33 or 34 per client: rounding may leave a client short of
     * 100 but never of the minimum. */
    p = compute(d, FEDC_PARTITION_SHARDS, 10, 0, 3, 5);
    int at_most_k = 1;
    for (size_t c = 0; p && c < 10; c++) at_most_k &= distinct_labels(d, p, c) <= 3 * 2;
    CHECK(p && at_most_k, "shards K=3 with shards straddling classes");
    if (p) check_map("shards K=3", p, 10, 0.1);
    fedc_partition_map_destroy(p);
}

static fedc_partition_map *compute_sample(const fedc_dataset *d, size_t clients, size_t per, uint64_t seed)
{
    fedc_partition_options opt;
    fedc_partition_options_init(&opt);
    opt.scheme = FEDC_PARTITION_SAMPLE;
    opt.clients = clients;
    opt.examples_per_client = per;
    opt.min_samples = 1;
    opt.seed = seed;
    fedc_partition_map *p = NULL;
    int rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    if (rc != FEDC_OK) CHECK(0, "partition sample failed: %s", err);
    return p;
}

/* The sample scheme: more clients than examples, each with exactly S
 * distinct, valid examples, a client's share independent of N. */
static void test_sample(const fedc_dataset *d)
{
    const size_t clients = 2500, per = 20; /* 2.5 clients per example */
    fedc_partition_map *a = compute_sample(d, clients, per, 7);
    fedc_partition_map *b = compute_sample(d, clients, per, 7);
    fedc_partition_map *c = compute_sample(d, clients, per, 8);
    fedc_partition_map *few = compute_sample(d, 10, per, 7);
    if (!a || !b || !c || !few) goto done;
    CHECK(a->n == d->n && a->offset[clients] == clients * per, "sample: 2500 clients x 20 entries over 1000");
    CHECK(same_map(a, b), "sample: the same seed gives the same partition");
    CHECK(!same_map(a, c), "sample: another seed gives another partition");
    CHECK(memcmp(few->index, a->index, 10 * per * sizeof *a->index) == 0 &&
              memcmp(few->test_count, a->test_count, 10 * sizeof *a->test_count) == 0,
          "sample: a client's share does not depend on the number of clients");
    int sizes = 1, distinct = 1, valid = 1, ascending = 1;
    size_t *drawn = calloc(d->n, sizeof *drawn);
    for (size_t k = 0; k < clients; k++) {
        size_t lo = a->offset[k], hi = a->offset[k + 1], t = a->test_count[k];
        sizes &= hi - lo == per && t == 2; /* round(0.1 * 20) */
        char seen[N_EXAMPLES] = {0};
        for (size_t i = lo; i < hi; i++) {
            uint32_t x = a->index[i];
            if (x >= d->n || d->y[x] < 0 || d->y[x] >= N_CLASSES) {
                valid = 0;
                continue;
            }
            distinct &= !seen[x];
            seen[x] = 1;
            drawn[x]++;
            if (i > lo && i != hi - t && x <= a->index[i - 1]) ascending = 0;
        }
    }
    size_t least = SIZE_MAX, most = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (drawn[i] < least) least = drawn[i];
        if (drawn[i] > most) most = drawn[i];
    }
    free(drawn);
    CHECK(sizes, "sample: every client has 20 examples, 2 of them its local test split");
    CHECK(distinct, "sample: no client draws an example twice (its test split never repeats its train)");
    CHECK(valid, "sample: every index and label is valid");
    CHECK(ascending, "sample: indices ascend within each split");
    /* 50,000 draws over 1,000 examples: about 50 each, binomial spread. */
    CHECK(least >= 20 && most <= 90,
          "sample: draws spread evenly: each example drawn %zu..%zu times (mean 50)", least, most);
    fedc_dataset *tr = NULL, *te = NULL;
    int rc = fedc_partition_client(d, a, clients - 1, &tr, &te, err, sizeof err);
    CHECK(rc == FEDC_OK && tr->n == 18 && te->n == 2 && tr->y[0] == d->y[a->index[a->offset[clients - 1]]],
          "sample: fedc_partition_client gives the last client its 18 + 2 examples (%s)", rc ? err : "ok");
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(te);
    fedc_partition_map_destroy(few);
    few = compute_sample(d, 3, d->n, 1);
    int all = few != NULL;
    for (size_t k = 0; few && k < 3; k++) all &= few->offset[k + 1] - few->offset[k] == d->n;
    CHECK(all, "sample: S = n gives every client the whole dataset");
done:
    fedc_partition_map_destroy(a);
    fedc_partition_map_destroy(b);
    fedc_partition_map_destroy(c);
    fedc_partition_map_destroy(few);
}

static void test_bad_options(const fedc_dataset *d)
{
    fedc_partition_options opt;
    fedc_partition_map *p = NULL;
    int rc;
    fedc_partition_options_init(&opt);
    opt.clients = 101;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && p == NULL && strstr(err, "at least 10"),
          "101 clients x 10 > 1000 examples: %s", err);
    opt.clients = 0;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "0 clients: %s", err);
    opt.clients = 10;
    opt.scheme = FEDC_PARTITION_DIRICHLET;
    opt.alpha = 0;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "alpha"), "alpha 0: %s", err);
    opt.alpha = NAN;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "alpha"), "alpha NaN: %s", err);
    fedc_partition_options_init(&opt);
    opt.clients = 10;
    opt.scheme = FEDC_PARTITION_SHARDS;
    opt.labels_per_client = 0;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "0 labels per client: %s", err);
    opt.labels_per_client = 101;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "more shards than examples: %s", err);
    fedc_partition_options_init(&opt);
    opt.clients = 10;
    opt.test_fraction = 1.0;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "test fraction"), "test fraction 1: %s", err);
    fedc_partition_options_init(&opt);
    opt.clients = 5000;
    opt.scheme = FEDC_PARTITION_SAMPLE;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && p == NULL && strstr(err, "examples per client"),
          "sample without examples per client: %s", err);
    opt.examples_per_client = 1001;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "cannot draw 1001 distinct examples"),
          "sample: more examples per client than the dataset has: %s", err);
    opt.examples_per_client = 5;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "below the minimum of 10"),
          "sample: examples per client below --min-samples: %s", err);
    opt.examples_per_client = SIZE_MAX / 8;
    opt.min_samples = 1;
    rc = fedc_partition_compute(d, &opt, &p, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "sample: examples per client far above n: %s", err);
    fedc_partition_scheme sc;
    CHECK(fedc_partition_scheme_parse("sample", &sc) == FEDC_OK && sc == FEDC_PARTITION_SAMPLE &&
              strcmp(fedc_partition_scheme_name(FEDC_PARTITION_SAMPLE), "sample") == 0,
          "the sample scheme's name parses");
    CHECK(fedc_partition_scheme_parse("shards", &sc) == FEDC_OK && sc == FEDC_PARTITION_SHARDS &&
              fedc_partition_scheme_parse("noniid", &sc) == FEDC_ERR_INVALID,
          "scheme names parse");
    fedc_partition_map_destroy(NULL);
    CHECK(1, "fedc_partition_map_destroy(NULL) is a no-op");
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* 1 if both files exist with the same bytes. */
static int same_file(const char *a, const char *b)
{
    size_t la = 0, lb = 0;
    unsigned char *x = read_all(a, &la), *y = read_all(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static const char *const client_files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

static int same_output(const char *a, const char *b, size_t clients)
{
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/partition.json", a);
    snprintf(pb, sizeof pb, "%s/partition.json", b);
    int same = same_file(pa, pb);
    for (size_t c = 0; c < clients; c++) {
        for (int f = 0; f < 4; f++) {
            snprintf(pa, sizeof pa, "%s/client-%03zu/%s", a, c, client_files[f]);
            snprintf(pb, sizeof pb, "%s/client-%03zu/%s", b, c, client_files[f]);
            same &= same_file(pa, pb);
        }
    }
    return same;
}

static cJSON *read_json(const char *path)
{
    size_t len;
    unsigned char *text = read_all(path, &len);
    if (!text) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    return j;
}

static void test_write(const fedc_dataset *d)
{
    char data_dir[512], out_a[512], out_b[512], out_c[512], path[600];
    snprintf(data_dir, sizeof data_dir, "%s/data", tmpdir);
    snprintf(out_a, sizeof out_a, "%s/out-a", tmpdir);
    snprintf(out_b, sizeof out_b, "%s/nested/out-b", tmpdir);
    snprintf(out_c, sizeof out_c, "%s/out-c", tmpdir);
    mkdir(data_dir, 0777);
    int rc = fedc_dataset_save_idx(d, path_of("data/train-images-idx3-ubyte.gz"),
                                   path_of("data/train-labels-idx1-ubyte.gz"), err, sizeof err);
    CHECK(rc == FEDC_OK, "write the synthetic data dir (%s)", rc ? err : "ok");

    fedc_partition_options opt;
    fedc_partition_options_init(&opt);
    opt.scheme = FEDC_PARTITION_DIRICHLET;
    opt.alpha = 0.3;
    opt.clients = 8;
    opt.seed = 2024;
    fedc_partition_map *map = NULL;
    rc = fedc_partition(data_dir, out_a, &opt, &map, err, sizeof err);
    CHECK(rc == FEDC_OK && map, "fedc_partition writes 8 dirichlet clients (%s)", rc ? err : "ok");
    if (rc != FEDC_OK) return;
    rc = fedc_partition(data_dir, out_b, &opt, NULL, err, sizeof err);
    CHECK(rc == FEDC_OK && same_output(out_a, out_b, 8),
          "the same seed writes byte-identical files (into a new nested directory)");
    opt.seed = 2025;
    rc = fedc_partition(data_dir, out_c, &opt, NULL, err, sizeof err);
    snprintf(path, sizeof path, "%s/client-000/train-labels-idx1-ubyte.gz", out_a);
    char other[600];
    snprintf(other, sizeof other, "%s/client-000/train-labels-idx1-ubyte.gz", out_c);
    CHECK(rc == FEDC_OK && !same_file(path, other), "another seed writes other files");
    opt.seed = 2024;

    /* Read every client back and trace each example to its source. */
    int *owner_count = calloc(d->n, sizeof *owner_count);
    int labels_match = 1, sizes_match = 1, loads = 1, valid_dirs = 1, same_as_api = 1;
    for (size_t c = 0; c < 8; c++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/client-%03zu", out_a, c);
        fedc_dataset *tr = NULL, *te = NULL, *api_tr = NULL, *api_te = NULL;
        if (fedc_dataset_load_dir(dir, "train", &tr, err, sizeof err) != FEDC_OK ||
            fedc_dataset_load_dir(dir, "test", &te, err, sizeof err) != FEDC_OK) {
            printf("     %s\n", err);
            valid_dirs = 0;
            fedc_dataset_destroy(tr);
            continue;
        }
        if (tr->n + te->n != client_size(map, c) || te->n != map->test_count[c]) sizes_match = 0;
        const fedc_dataset *parts[2] = {tr, te};
        for (int s = 0; s < 2; s++) {
            for (size_t i = 0; i < parts[s]->n; i++) {
                size_t src = decode_index(parts[s]->x + 3 * i);
                if (src >= d->n) {
                    loads = 0;
                    continue;
                }
                owner_count[src]++;
                if (parts[s]->y[i] != d->y[src]) labels_match = 0;
            }
        }
        if (fedc_partition_client(d, map, c, &api_tr, &api_te, err, sizeof err) != FEDC_OK ||
            api_tr->n != tr->n || api_te->n != te->n ||
            memcmp(api_tr->x, tr->x, tr->n * 3 * sizeof(float)) != 0 ||
            memcmp(api_te->y, te->y, te->n * sizeof(int32_t)) != 0)
            same_as_api = 0;
        fedc_dataset_destroy(tr);
        fedc_dataset_destroy(te);
        fedc_dataset_destroy(api_tr);
        fedc_dataset_destroy(api_te);
    }
    int once = loads;
    for (size_t i = 0; i < d->n; i++) once &= owner_count[i] == 1;
    free(owner_count);
    CHECK(valid_dirs, "every client directory is a valid data dir (train and test splits)");
    CHECK(once, "written files: every source example is in exactly one client's train or test");
    CHECK(labels_match, "written files: every example keeps its label");
    CHECK(sizes_match, "written files: sizes match the partition");
    CHECK(same_as_api, "fedc_partition_client gives the same data as the files");

    snprintf(path, sizeof path, "%s/partition.json", out_a);
    cJSON *j = read_json(path);
    CHECK(j != NULL, "partition.json is valid JSON");
    if (j) {
        cJSON *clients = cJSON_GetObjectItem(j, "clients");
        const char *scheme = cJSON_GetStringValue(cJSON_GetObjectItem(j, "scheme"));
        CHECK(scheme && strcmp(scheme, "dirichlet") == 0 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "seed")) == 2024 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "alpha")) == 0.3 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "num_clients")) == 8 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(j, "examples")) == 1000,
              "partition.json records scheme, seed, alpha, clients, examples");
        double total = 0;
        int hist_ok = cJSON_GetArraySize(clients) == 8;
        for (int c = 0; c < cJSON_GetArraySize(clients); c++) {
            cJSON *cl = cJSON_GetArrayItem(clients, c);
            double train = cJSON_GetNumberValue(cJSON_GetObjectItem(cl, "train"));
            double test = cJSON_GetNumberValue(cJSON_GetObjectItem(cl, "test"));
            double sum_train = 0, sum_test = 0;
            cJSON *h;
            cJSON_ArrayForEach(h, cJSON_GetObjectItem(cl, "train_labels"))
            {
                sum_train += h->valuedouble;
            }
            cJSON_ArrayForEach(h, cJSON_GetObjectItem(cl, "test_labels"))
            {
                sum_test += h->valuedouble;
            }
            hist_ok &= sum_train == train && sum_test == test &&
                       cJSON_GetNumberValue(cJSON_GetObjectItem(cl, "examples")) == train + test &&
                       (size_t)(train + test) == client_size(map, (size_t)c);
            total += train + test;
        }
        CHECK(hist_ok && total == 1000,
              "partition.json: per-client counts and label histograms add up to 1000");
        cJSON_Delete(j);
    }

    /* Fewer clients into a directory that holds more would mix two
     * partitions. */
    opt.clients = 5;
    rc = fedc_partition(data_dir, out_a, &opt, NULL, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && strstr(err, "client-005"),
          "re-partitioning into fewer clients over old output is refused: %s", err);
    opt.clients = 8;
    rc = fedc_partition(data_dir, out_a, &opt, NULL, err, sizeof err);
    CHECK(rc == FEDC_OK && same_output(out_a, out_b, 8),
          "re-running the same partition over its own output is fine");
    rc = fedc_partition(path_of("no-such-data"), out_c, &opt, NULL, err, sizeof err);
    CHECK(rc == FEDC_ERR_NOTFOUND && strstr(err, "no-such-data"), "missing data dir: %s", err);
    fedc_partition_map_destroy(map);

    /* The sample scheme writes the same directories; partition.json says
     * how many examples each client drew. */
    snprintf(out_c, sizeof out_c, "%s/out-sample", tmpdir);
    fedc_partition_options_init(&opt);
    opt.scheme = FEDC_PARTITION_SAMPLE;
    opt.clients = 4;
    opt.examples_per_client = 30;
    opt.seed = 5;
    rc = fedc_partition(data_dir, out_c, &opt, &map, err, sizeof err);
    CHECK(rc == FEDC_OK, "fedc_partition writes 4 sample clients (%s)", rc ? err : "ok");
    fedc_dataset *tr = NULL, *api_tr = NULL;
    snprintf(path, sizeof path, "%s/client-003", out_c);
    int same = rc == FEDC_OK && fedc_dataset_load_dir(path, "train", &tr, err, sizeof err) == FEDC_OK &&
               fedc_partition_client(d, map, 3, &api_tr, NULL, err, sizeof err) == FEDC_OK && tr->n == 27 &&
               api_tr->n == 27 && memcmp(api_tr->x, tr->x, 27 * 3 * sizeof(float)) == 0;
    CHECK(same, "sample: client-003's files hold its 27 training examples, as fedc_partition_client gives");
    fedc_dataset_destroy(tr);
    fedc_dataset_destroy(api_tr);
    snprintf(path, sizeof path, "%s/partition.json", out_c);
    j = read_json(path);
    CHECK(j && cJSON_GetNumberValue(cJSON_GetObjectItem(j, "examples_per_client")) == 30 &&
              strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "scheme")), "sample") == 0,
          "sample: partition.json records the scheme and examples_per_client");
    cJSON_Delete(j);
    fedc_partition_map_destroy(map);
}

/* A CSV source with features that are not k/255: clients get float32 IDX
 * files that hold the exact values. */
static void test_csv_source(void)
{
    char dir[512], out[512], path[600];
    snprintf(dir, sizeof dir, "%s/csvdata", tmpdir);
    snprintf(out, sizeof out, "%s/csv-out", tmpdir);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/train.csv", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "label,id,value\n");
    for (int i = 0; i < 60; i++) fprintf(f, "%d,%d,%.3f\n", i % 4, i, i * 0.125 - 3.3);
    fclose(f);
    fedc_partition_options opt;
    fedc_partition_options_init(&opt);
    opt.clients = 3;
    opt.seed = 11;
    int rc = fedc_partition(dir, out, &opt, NULL, err, sizeof err);
    CHECK(rc == FEDC_OK, "partition a CSV data dir (%s)", rc ? err : "ok");
    int exact = rc == FEDC_OK;
    size_t total = 0;
    for (int c = 0; c < 3 && exact; c++) {
        char cdir[600];
        snprintf(cdir, sizeof cdir, "%s/client-%03d", out, c);
        for (int s = 0; s < 2; s++) {
            fedc_dataset *d = NULL;
            if (fedc_dataset_load_dir(cdir, s ? "test" : "train", &d, err, sizeof err)) {
                exact = 0;
                break;
            }
            for (size_t i = 0; i < d->n; i++) {
                int id = (int)d->x[2 * i];
                char want[32];
                snprintf(want, sizeof want, "%.3f", id * 0.125 - 3.3);
                exact &= strtof(want, NULL) == d->x[2 * i + 1] && d->y[i] == id % 4;
            }
            total += d->n;
            fedc_dataset_destroy(d);
        }
    }
    CHECK(exact && total == 60, "CSV source: clients' float32 files hold the exact values");
    snprintf(path, sizeof path, "%s/partition.json", out);
    cJSON *j = read_json(path);
    const char *type = j ? cJSON_GetStringValue(cJSON_GetObjectItem(j, "image_type")) : NULL;
    CHECK(type && strcmp(type, "f32") == 0, "partition.json says image_type f32");
    cJSON_Delete(j);
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/fedc-test-partition-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    fedc_log_set_level(FEDC_LOG_WARN);
    fedc_dataset *d = make_dataset();
    test_schemes(d);
    test_sample(d);
    test_bad_options(d);
    test_write(d);
    test_csv_source();
    fedc_dataset_destroy(d);
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
