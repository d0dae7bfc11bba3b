/*
 * Partitioners: which client gets which example.
 *
 * Every scheme first decides an owner for each example, then a common
 * stage guarantees the minimum share, groups the examples by client and
 * holds out each client's local test split. All randomness comes from
 * fedc_rng streams derived from the user's seed, so a partition depends
 * only on the dataset's labels and the options.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

/* Tags that give each use of randomness its own stream (ASCII "part",
 * "test"), so that for example changing the test fraction does not change
 * which examples a client gets. */
#define TAG_ASSIGN 0x70617274u
#define TAG_TEST   0x74657374u
#define TAG_SAMPLE 0x73616d70u /* "samp" */

/* A dirichlet draw that leaves a client short is redrawn up to this many
 * times (NIID-Bench redraws without limit) before the shortfall is
 * repaired by moving examples. */
#define DIRICHLET_TRIES 200

void fedc_partition_options_init(fedc_partition_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->scheme = FEDC_PARTITION_IID;
    opt->clients = 0;
    opt->alpha = 0.5;
    opt->labels_per_client = 2;
    opt->test_fraction = 0.1;
    opt->min_samples = 10;
    opt->seed = 0;
    opt->examples_per_client = 0;
}

const char *fedc_partition_scheme_name(fedc_partition_scheme scheme)
{
    switch (scheme) {
    case FEDC_PARTITION_IID: return "iid";
    case FEDC_PARTITION_DIRICHLET: return "dirichlet";
    case FEDC_PARTITION_SHARDS: return "shards";
    case FEDC_PARTITION_SAMPLE: return "sample";
    default: return NULL;
    }
}

int fedc_partition_scheme_parse(const char *name, fedc_partition_scheme *out)
{
    static const fedc_partition_scheme all[] = {FEDC_PARTITION_IID, FEDC_PARTITION_DIRICHLET,
                                                FEDC_PARTITION_SHARDS, FEDC_PARTITION_SAMPLE};
    for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(name, fedc_partition_scheme_name(all[i])) == 0) {
            *out = all[i];
            return FEDC_OK;
        }
    }
    return FEDC_ERR_INVALID;
}

void fedc_partition_map_destroy(fedc_partition_map *p)
{
    if (!p) return;
    free(p->index);
    free(p->offset);
    free(p->test_count);
    free(p);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Groups `order` (n example indices) by label into `sorted`, keeping the
 * order within a class; class_off gets num_classes + 1 offsets. */
static void group_by_label(const fedc_dataset *d, const uint32_t *order, size_t n, uint32_t *sorted,
                           size_t *class_off)
{
    size_t k = (size_t)d->num_classes;
    memset(class_off, 0, (k + 1) * sizeof *class_off);
    for (size_t i = 0; i < n; i++) class_off[d->y[order[i]] + 1]++;
    for (size_t c = 0; c < k; c++) class_off[c + 1] += class_off[c];
    size_t *next = class_off; /* reused as write cursors, then restored */
    for (size_t i = 0; i < n; i++) sorted[next[d->y[order[i]]]++] = order[i];
    for (size_t c = k; c > 0; c--) class_off[c] = class_off[c - 1];
    class_off[0] = 0;
}

static void assign_iid(fedc_rng *rng, size_t n, size_t clients, uint32_t *perm, uint32_t *owner)
{
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    fedc_rng_shuffle_u32(rng, perm, n);
    /* Client c takes perm[c*n/N .. (c+1)*n/N): sizes differ by at most one. */
    for (size_t c = 0; c < clients; c++) {
        size_t lo = (size_t)((uint64_t)c * n / clients);
        size_t hi = (size_t)((uint64_t)(c + 1) * n / clients);
        for (size_t i = lo; i < hi; i++) owner[perm[i]] = (uint32_t)c;
    }
}

/*
 * The NIID-Bench scheme: for each class, shuffle its examples, draw
 * proportions p ~ Dir(alpha) over the clients, zero the proportion of every
 * client that already holds n/N examples (which keeps shares from growing
 * without bound), renormalise and cut the class at the cumulative
 * proportions. Redraw everything while some client is below the minimum.
 * Returns the number of draws made.
 */
static int assign_dirichlet(fedc_rng *rng, const fedc_dataset *d, size_t clients, double alpha,
                            size_t min_samples, uint32_t *sorted, const size_t *class_off, double *prop,
                            size_t *sizes, uint32_t *owner)
{
    size_t n = d->n;
    double fair = (double)n / (double)clients;
    int tries = 0;
    while (tries < DIRICHLET_TRIES) {
        tries++;
        memset(sizes, 0, clients * sizeof *sizes);
        for (int k = 0; k < d->num_classes; k++) {
            uint32_t *cls = sorted + class_off[k];
            size_t len = class_off[k + 1] - class_off[k];
            fedc_rng_shuffle_u32(rng, cls, len);
            double sum = 0.0;
            for (size_t c = 0; c < clients; c++) {
                double g = fedc_rng_gamma(rng, alpha);
                prop[c] = (double)sizes[c] < fair ? g : 0.0;
                sum += prop[c];
            }
            if (!(sum > 0.0)) {
                /* Every open client drew zero, or none is open: with a
                 * tiny alpha the gamma draws underflow, and the limit of
                 * Dir(alpha) as alpha -> 0 puts the whole class on one
                 * client, so pick one. */
                size_t open = 0;
                for (size_t c = 0; c < clients; c++) open += (double)sizes[c] < fair;
                size_t pick = (size_t)fedc_rng_below(rng, open ? open : clients);
                for (size_t c = 0; c < clients; c++) {
                    int eligible = !open || (double)sizes[c] < fair;
                    prop[c] = 0.0;
                    if (eligible && pick-- == 0) prop[c] = 1.0;
                }
                sum = 1.0;
            }
            double cum = 0.0;
            size_t lo = 0;
            for (size_t c = 0; c < clients; c++) {
                cum += prop[c] / sum;
                size_t hi = c + 1 == clients ? len : (size_t)(cum * (double)len);
                if (hi > len) hi = len;
                if (hi < lo) hi = lo;
                for (size_t i = lo; i < hi; i++) owner[cls[i]] = (uint32_t)c;
                sizes[c] += hi - lo;
                lo = hi;
            }
        }
        size_t smallest = sizes[0];
        for (size_t c = 1; c < clients; c++)
            if (sizes[c] < smallest) smallest = sizes[c];
        if (smallest >= min_samples) break;
    }
    return tries;
}

/*
 * Sort the examples by label (in a random order within each class), cut
 * them into clients*K shards of near-equal size and give each client K
 * shards drawn at random. With shard boundaries inside a class, a client
 * sees K classes, or fewer when two of its shards share one.
 */
static int assign_shards(fedc_rng *rng, const fedc_dataset *d, size_t clients, size_t k, uint32_t *perm,
                         uint32_t *sorted, size_t *class_off, uint32_t *owner)
{
    size_t n = d->n, shards = clients * k;
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    fedc_rng_shuffle_u32(rng, perm, n);
    group_by_label(d, perm, n, sorted, class_off);
    uint32_t *shard_perm = malloc(shards * sizeof *shard_perm);
    if (!shard_perm) return FEDC_ERR_NOMEM;
    for (size_t s = 0; s < shards; s++) shard_perm[s] = (uint32_t)s;
    fedc_rng_shuffle_u32(rng, shard_perm, shards);
    for (size_t j = 0; j < shards; j++) {
        size_t s = shard_perm[j], c = j / k;
        size_t lo = (size_t)((uint64_t)s * n / shards);
        size_t hi = (size_t)((uint64_t)(s + 1) * n / shards);
        for (size_t i = lo; i < hi; i++) owner[sorted[i]] = (uint32_t)c;
    }
    free(shard_perm);
    return FEDC_OK;
}

/*
 * Each client draws `per` distinct examples (Floyd's algorithm) from a
 * random stream of its own, so its share depends only on the seed, its
 * index and the dataset's size, not on how many clients there are. The
 * draws are independent, so clients overlap. `taken` marks the draws of
 * the client at hand and is cleared after each: O(per) work per client.
 */
static int assign_sample(uint64_t seed, size_t n, size_t clients, size_t per, uint32_t *index, size_t *offset)
{
    uint8_t *taken = calloc(n / 8 + 1, 1);
    if (!taken) return FEDC_ERR_NOMEM;
    for (size_t c = 0; c < clients; c++) {
        fedc_rng rng;
        fedc_rng_seed(&rng, fedc_seed_derive(seed, TAG_SAMPLE, c));
        uint32_t *mine = index + c * per;
        for (size_t j = n - per, k = 0; j < n; j++, k++) {
            size_t t = (size_t)fedc_rng_below(&rng, j + 1);
            if (taken[t / 8] & (1u << (t % 8))) t = j;
            taken[t / 8] |= (uint8_t)(1u << (t % 8));
            mine[k] = (uint32_t)t;
        }
        for (size_t i = 0; i < per; i++) taken[mine[i] / 8] = 0;
        offset[c + 1] = offset[c] + per;
    }
    free(taken);
    return FEDC_OK;
}

/*
 * Moves random examples from the largest client to each client below the
 * minimum. Since n >= clients * min_samples, the largest client always
 * holds more than the minimum while another is short, so donors never fall
 * below it themselves.
 */
static int repair_minimum(fedc_rng *rng, size_t n, size_t clients, size_t min_samples, uint32_t *owner,
                          size_t *sizes, size_t *moved)
{
    size_t short_total = 0;
    *moved = 0;
    for (size_t c = 0; c < clients; c++) sizes[c] = 0;
    for (size_t i = 0; i < n; i++) sizes[owner[i]]++;
    for (size_t c = 0; c < clients; c++)
        if (sizes[c] < min_samples) short_total++;
    if (short_total == 0) return FEDC_OK;

    /* Per-client member lists, so that a random member is found in O(1). */
    size_t *off = calloc(clients + 1, sizeof *off);
    uint32_t *members = malloc(n * sizeof *members);
    size_t *fill = calloc(clients, sizeof *fill);
    int rc = FEDC_OK;
    if (!off || !members || !fill) {
        rc = FEDC_ERR_NOMEM;
        goto done;
    }
    for (size_t c = 0; c < clients; c++) off[c + 1] = off[c] + sizes[c];
    for (size_t i = 0; i < n; i++) members[off[owner[i]] + fill[owner[i]]++] = (uint32_t)i;
    for (size_t c = 0; c < clients; c++) {
        while (sizes[c] < min_samples) {
            size_t donor = 0;
            for (size_t j = 1; j < clients; j++)
                if (sizes[j] > sizes[donor]) donor = j;
            size_t r = (size_t)fedc_rng_below(rng, sizes[donor]);
            uint32_t *list = members + off[donor];
            owner[list[r]] = (uint32_t)c;
            list[r] = list[--sizes[donor]];
            sizes[c]++;
            (*moved)++;
        }
    }
done:
    free(off);
    free(members);
    free(fill);
    return rc;
}

int fedc_partition_compute(const fedc_dataset *d, const fedc_partition_options *opt, fedc_partition_map **out,
                           char *err, size_t errlen)
{
    fedc_partition_map *p = NULL;
    uint32_t *owner = NULL, *perm = NULL, *sorted = NULL;
    size_t *class_off = NULL, *sizes = NULL;
    double *prop = NULL;
    int rc = FEDC_OK;
    const char *scheme = opt ? fedc_partition_scheme_name(opt->scheme) : NULL;

    *out = NULL;
    if (!d || !opt) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no dataset or options");
    if (!scheme)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown partition scheme %d", (int)opt->scheme);
    size_t n = d->n, clients = opt->clients;
    if (clients < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "partition into %zu clients: need at least 1",
                              clients);
    if (opt->min_samples < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "minimum examples per client must be at least 1");
    if (opt->scheme == FEDC_PARTITION_DIRICHLET && !(opt->alpha > 0.0 && isfinite(opt->alpha)))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "dirichlet alpha %g must be a positive number",
                              opt->alpha);
    if (opt->scheme == FEDC_PARTITION_SHARDS && opt->labels_per_client < 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "labels per client %d must be at least 1",
                              opt->labels_per_client);
    if (!(opt->test_fraction >= 0.0 && opt->test_fraction < 1.0))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "test fraction %g must be in [0, 1)",
                              opt->test_fraction);
    if (n > UINT32_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "cannot partition %zu examples: at most 2^32 - 1 are supported", n);
    int sample = opt->scheme == FEDC_PARTITION_SAMPLE;
    size_t per = opt->examples_per_client, total = n;
    if (sample) {
        if (per < 1)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "the sample scheme needs the number of examples each client draws "
                                  "(examples per client, at least 1)");
        if (per > n)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "cannot draw %zu distinct examples per client from a dataset of %zu", per,
                                  n);
        if (per < opt->min_samples)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "%zu examples per client is below the minimum of %zu that every client "
                                  "must have",
                                  per, opt->min_samples);
        if (clients > SIZE_MAX / sizeof(uint32_t) / per)
            return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                                  "%zu clients x %zu examples per client is too many to index", clients, per);
        total = clients * per;
    } else if (clients > n / opt->min_samples) {
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "cannot give %zu clients at least %zu examples each: the dataset "
                              "holds only %zu (at most %zu clients)",
                              clients, opt->min_samples, n, n / opt->min_samples);
    }
    size_t k = (size_t)opt->labels_per_client;
    if (opt->scheme == FEDC_PARTITION_SHARDS && k > n / clients)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "cannot cut %zu examples into %zu clients x %zu shards", n, clients, k);

    fedc_rng rng;
    fedc_rng_seed(&rng, fedc_seed_derive(opt->seed, TAG_ASSIGN, (uint64_t)opt->scheme));
    owner = malloc((n ? n : 1) * sizeof *owner);
    perm = malloc((n ? n : 1) * sizeof *perm);
    sorted = malloc((n ? n : 1) * sizeof *sorted);
    class_off = malloc(((size_t)d->num_classes + 1) * sizeof *class_off);
    sizes = calloc(clients, sizeof *sizes);
    prop = malloc(clients * sizeof *prop);
    p = calloc(1, sizeof *p);
    if (!owner || !perm || !sorted || !class_off || !sizes || !prop || !p) goto nomem;
    p->index = malloc((total ? total : 1) * sizeof *p->index);
    p->offset = calloc(clients + 1, sizeof *p->offset);
    p->test_count = calloc(clients, sizeof *p->test_count);
    if (!p->index || !p->offset || !p->test_count) goto nomem;
    p->scheme = opt->scheme;
    p->clients = clients;
    p->n = n;
    p->num_classes = d->num_classes;

    for (size_t i = 0; i < n; i++) {
        if (d->y[i] < 0 || d->y[i] >= d->num_classes) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_RANGE, "example %zu has label %d, outside [0, %d)", i,
                                (int)d->y[i], d->num_classes);
            goto fail;
        }
    }

    if (sample) {
        if (assign_sample(opt->seed, n, clients, per, p->index, p->offset) != FEDC_OK) goto nomem;
    } else {
        switch (opt->scheme) {
        case FEDC_PARTITION_IID: assign_iid(&rng, n, clients, perm, owner); break;
        case FEDC_PARTITION_DIRICHLET: {
            for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
            group_by_label(d, perm, n, sorted, class_off);
            int tries = assign_dirichlet(&rng, d, clients, opt->alpha, opt->min_samples, sorted, class_off,
                                         prop, sizes, owner);
            fedc_log(FEDC_LOG_DEBUG, "data", "dirichlet partition: %d draw%s", tries, tries == 1 ? "" : "s");
            break;
        }
        case FEDC_PARTITION_SHARDS:
            if (assign_shards(&rng, d, clients, k, perm, sorted, class_off, owner) != FEDC_OK) goto nomem;
            break;
        case FEDC_PARTITION_SAMPLE: break; /* drawn above */
        }

        size_t moved = 0;
        if (repair_minimum(&rng, n, clients, opt->min_samples, owner, sizes, &moved) != FEDC_OK) goto nomem;
        if (moved)
            fedc_log(FEDC_LOG_INFO, "data", "%s partition: moved %zu examples to clients below %zu examples",
                     scheme, moved, opt->min_samples);

        /* Group by client, ascending source index within each client. */
        for (size_t i = 0; i < n; i++) p->offset[owner[i] + 1]++;
        for (size_t c = 0; c < clients; c++) p->offset[c + 1] += p->offset[c];
        memset(sizes, 0, clients * sizeof *sizes);
        for (size_t i = 0; i < n; i++) p->index[p->offset[owner[i]] + sizes[owner[i]]++] = (uint32_t)i;
    }

    /* Each client's local test split is a random subset of its own share,
     * from a stream of its own, moved to the end of its range. */
    for (size_t c = 0; c < clients; c++) {
        uint32_t *mine = p->index + p->offset[c];
        size_t size = p->offset[c + 1] - p->offset[c], t = 0;
        if (opt->test_fraction > 0.0 && size >= 2) {
            t = (size_t)floor(opt->test_fraction * (double)size + 0.5);
            if (t < 1) t = 1;
            if (t > size - 1) t = size - 1;
        }
        p->test_count[c] = t;
        fedc_rng trng;
        fedc_rng_seed(&trng, fedc_seed_derive(opt->seed, TAG_TEST, c));
        fedc_rng_shuffle_u32(&trng, mine, size);
        qsort(mine, size - t, sizeof *mine, cmp_u32);
        qsort(mine + size - t, t, sizeof *mine, cmp_u32);
    }
    *out = p;
    p = NULL;
    goto done;

nomem:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory partitioning %zu examples", n);
fail:
done:
    fedc_partition_map_destroy(p);
    free(owner);
    free(perm);
    free(sorted);
    free(class_off);
    free(sizes);
    free(prop);
    return rc;
}

int fedc_partition_client(const fedc_dataset *d, const fedc_partition_map *p, size_t client,
                          fedc_dataset **train, fedc_dataset **test, char *err, size_t errlen)
{
    fedc_dataset *tr = NULL;
    int rc;
    if (train) *train = NULL;
    if (test) *test = NULL;
    if (p->n != d->n)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "partition of %zu examples does not match a dataset of %zu", p->n, d->n);
    if (client >= p->clients)
        return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                              "client %zu does not exist in a partition into %zu clients", client,
                              p->clients);
    const uint32_t *mine = p->index + p->offset[client];
    size_t size = p->offset[client + 1] - p->offset[client], t = p->test_count[client];
    if (train) {
        rc = fedc_dataset_subset(d, mine, size - t, &tr, err, errlen);
        if (rc != FEDC_OK) return rc;
    }
    if (test) {
        rc = fedc_dataset_subset(d, mine + size - t, t, test, err, errlen);
        if (rc != FEDC_OK) {
            fedc_dataset_destroy(tr);
            return rc;
        }
    }
    if (train) *train = tr;
    return FEDC_OK;
}
