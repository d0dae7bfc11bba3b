/* Writing a partition: one IDX data directory per client and a JSON
 * description of the whole. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data_internal.h"

/* Compressing the clients' files dominates the run time, and each client's
 * files are independent, so a few threads share the clients. */
#define MAX_WRITERS 8

/* client-000 ... client-999, then as many digits as the largest index
 * needs, so names sort in client order up to 1000 clients. */
static int name_width(size_t clients)
{
    int w = 3;
    for (size_t x = clients > 0 ? clients - 1 : 0; x >= 1000; x /= 10) w++;
    return w;
}

static void client_name(char *buf, size_t len, size_t c, int width)
{
    /* width is at most 20 (the digits of a size_t), which fits any buffer
     * the callers pass; the check only satisfies the compiler. */
    int w = snprintf(buf, len, "client-%0*zu", width, c);
    if (w < 0 || (size_t)w >= len) buf[0] = '\0';
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* The shortest decimal form that reads back as the same double. */
static void json_double(FILE *f, double v)
{
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

static void json_counts(FILE *f, const size_t *counts, int k)
{
    fputc('[', f);
    for (int i = 0; i < k; i++) fprintf(f, "%s%zu", i ? ", " : "", counts[i]);
    fputc(']', f);
}

static int write_json(const char *path, const fedc_dataset *d, const fedc_partition_map *p,
                      const fedc_partition_options *opt, const char *source, int as_u8, int width, char *err,
                      size_t errlen)
{
    size_t k = (size_t)d->num_classes;
    size_t *train_counts = calloc(k, sizeof *train_counts);
    size_t *test_counts = calloc(k, sizeof *test_counts);
    char *tmp = malloc(strlen(path) + 5);
    FILE *f = NULL;
    int rc = FEDC_OK;
    locale_t c_locale = (locale_t)0, saved_locale = (locale_t)0;

    if (!train_counts || !test_counts || !tmp) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    strcpy(tmp, path);
    strcat(tmp, ".tmp");
    f = fopen(tmp, "w");
    if (!f) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        goto done;
    }
    /* JSON needs a decimal point whatever locale the program chose. */
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale != (locale_t)0) saved_locale = uselocale(c_locale);

    fprintf(f, "{\n  \"format\": \"fedc-partition\",\n  \"version\": 1,\n  \"source\": ");
    if (source)
        json_string(f, source);
    else
        fputs("null", f);
    fprintf(f, ",\n  \"scheme\": \"%s\",\n  \"seed\": %llu,\n", fedc_partition_scheme_name(p->scheme),
            (unsigned long long)opt->seed);
    if (p->scheme == FEDC_PARTITION_DIRICHLET) {
        fputs("  \"alpha\": ", f);
        json_double(f, opt->alpha);
        fputs(",\n", f);
    }
    if (p->scheme == FEDC_PARTITION_SHARDS)
        fprintf(f, "  \"labels_per_client\": %d,\n", opt->labels_per_client);
    if (p->scheme == FEDC_PARTITION_SAMPLE)
        fprintf(f, "  \"examples_per_client\": %zu,\n", opt->examples_per_client);
    fputs("  \"test_fraction\": ", f);
    json_double(f, opt->test_fraction);
    fprintf(f,
            ",\n  \"min_samples\": %zu,\n  \"examples\": %zu,\n  \"num_classes\": %d,\n"
            "  \"shape\": [%d, %d, %d],\n  \"image_type\": \"%s\",\n  \"num_clients\": %zu,\n"
            "  \"clients\": [\n",
            opt->min_samples, p->n, d->num_classes, d->channels, d->height, d->width, as_u8 ? "u8" : "f32",
            p->clients);
    for (size_t c = 0; c < p->clients; c++) {
        size_t lo = p->offset[c], hi = p->offset[c + 1], t = p->test_count[c];
        memset(train_counts, 0, k * sizeof *train_counts);
        memset(test_counts, 0, k * sizeof *test_counts);
        for (size_t i = lo; i < hi - t; i++) train_counts[d->y[p->index[i]]]++;
        for (size_t i = hi - t; i < hi; i++) test_counts[d->y[p->index[i]]]++;
        char name[64];
        client_name(name, sizeof name, c, width);
        fprintf(f,
                "    {\"name\": \"%s\", \"examples\": %zu, \"train\": %zu, \"test\": %zu,\n"
                "     \"train_labels\": ",
                name, hi - lo, hi - lo - t, t);
        json_counts(f, train_counts, (int)k);
        fputs(",\n     \"test_labels\": ", f);
        json_counts(f, test_counts, (int)k);
        fprintf(f, "}%s\n", c + 1 < p->clients ? "," : "");
    }
    fputs("  ]\n}\n", f);

    if (c_locale != (locale_t)0) {
        uselocale(saved_locale);
        freelocale(c_locale);
    }
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    f = NULL;
    if (bad) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0)
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                            strerror(errno));
done:
    if (f) fclose(f);
    if (rc != FEDC_OK && tmp) remove(tmp);
    free(tmp);
    free(train_counts);
    free(test_counts);
    return rc;
}

/* The four IDX files of one client. */
static int write_client(const fedc_dataset *d, const fedc_partition_map *p, size_t c, int as_u8,
                        const char *dir, char *err, size_t errlen)
{
    static const char *const names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    const uint32_t *mine = p->index + p->offset[c];
    size_t size = p->offset[c + 1] - p->offset[c], t = p->test_count[c];
    int rc = fedc__mkdirs(dir, err, errlen);
    for (int i = 0; rc == FEDC_OK && i < 4; i++) {
        char *path = fedc__path_join(dir, names[i]);
        if (!path) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        const uint32_t *sel = i < 2 ? mine : mine + size - t;
        size_t count = i < 2 ? size - t : t;
        if (i % 2 == 0)
            rc = fedc__idx_write_images(path, d, sel, count, as_u8, err, errlen);
        else
            rc = fedc__idx_write_labels(path, d, sel, count, err, errlen);
        free(path);
    }
    return rc;
}

/* The clients still to write, shared by the writer threads. */
typedef struct write_queue {
    const fedc_dataset *d;
    const fedc_partition_map *p;
    const char *out_dir;
    int as_u8, width;
    pthread_mutex_t lock;
    size_t next;
    int rc; /* first failure, by client order */
    size_t failed_client;
    char err[FEDC_ERRMSG_MAX];
} write_queue;

static void *write_worker(void *arg)
{
    write_queue *q = arg;
    char name[64], err[FEDC_ERRMSG_MAX];
    for (;;) {
        pthread_mutex_lock(&q->lock);
        size_t c = q->next;
        int stop = q->rc != FEDC_OK || c >= q->p->clients;
        if (!stop) q->next++;
        pthread_mutex_unlock(&q->lock);
        if (stop) break;

        client_name(name, sizeof name, c, q->width);
        char *dir = fedc__path_join(q->out_dir, name);
        int rc = dir ? write_client(q->d, q->p, c, q->as_u8, dir, err, sizeof err)
                     : fedc_set_error(err, sizeof err, FEDC_ERR_NOMEM, "out of memory");
        free(dir);
        if (rc != FEDC_OK) {
            pthread_mutex_lock(&q->lock);
            if (q->rc == FEDC_OK || c < q->failed_client) {
                q->rc = rc;
                q->failed_client = c;
                memcpy(q->err, err, sizeof err);
            }
            pthread_mutex_unlock(&q->lock);
        }
    }
    return NULL;
}

static int write_clients(const fedc_dataset *d, const fedc_partition_map *p, int as_u8, const char *out_dir,
                         int width, char *err, size_t errlen)
{
    write_queue q = {.d = d, .p = p, .out_dir = out_dir, .as_u8 = as_u8, .width = width};
    pthread_t threads[MAX_WRITERS - 1];
    size_t started = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = cpus < 1 ? 1 : (size_t)cpus;
    if (want > MAX_WRITERS) want = MAX_WRITERS;
    if (want > p->clients) want = p->clients;
    if (pthread_mutex_init(&q.lock, NULL) != 0)
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "cannot create a mutex");
    /* The calling thread is one of the writers; if a thread cannot be
     * started, fewer threads simply do the same work. */
    while (started + 1 < want && pthread_create(&threads[started], NULL, write_worker, &q) == 0) started++;
    write_worker(&q);
    for (size_t i = 0; i < started; i++) pthread_join(threads[i], NULL);
    pthread_mutex_destroy(&q.lock);
    if (q.rc != FEDC_OK) fedc_set_error(err, errlen, q.rc, "%s", q.err);
    return q.rc;
}

int fedc_partition_write(const fedc_dataset *d, const fedc_partition_map *p,
                         const fedc_partition_options *opt, const char *source, const char *out_dir,
                         char *err, size_t errlen)
{
    char name[64];
    char *path = NULL;
    int rc;

    if (!d || !p || !opt || !out_dir)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "missing argument");
    if (p->n != d->n || p->num_classes != d->num_classes)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "partition of %zu examples in %d classes does not match a dataset "
                              "of %zu in %d",
                              p->n, p->num_classes, d->n, d->num_classes);
    int width = name_width(p->clients);
    rc = fedc__mkdirs(out_dir, err, errlen);
    if (rc != FEDC_OK) return rc;

    /* A directory left by an earlier partition into more clients would
     * make the output overlap; refuse rather than delete the user's files. */
    client_name(name, sizeof name, p->clients, width);
    path = fedc__path_join(out_dir, name);
    if (!path) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    if (fedc__path_exists(path)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                            "'%s' exists: '%s' holds an earlier partition into more than %zu "
                            "clients; remove it or choose another output directory",
                            path, out_dir, p->clients);
        free(path);
        return rc;
    }
    free(path);

    int as_u8 = fedc__dataset_is_u8(d);
    rc = write_clients(d, p, as_u8, out_dir, width, err, errlen);
    if (rc != FEDC_OK) return rc;
    /* partition.json comes last: its presence means the directories are
     * complete. */
    path = fedc__path_join(out_dir, "partition.json");
    if (!path) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    rc = write_json(path, d, p, opt, source, as_u8, width, err, errlen);
    free(path);
    return rc;
}

int fedc_partition(const char *data_dir, const char *out_dir, const fedc_partition_options *opt,
                   fedc_partition_map **out, char *err, size_t errlen)
{
    fedc_dataset *d = NULL;
    fedc_partition_map *p = NULL;
    if (out) *out = NULL;
    int rc = fedc_dataset_load_dir(data_dir, "train", &d, err, errlen);
    if (rc != FEDC_OK) return rc;
    rc = fedc_partition_compute(d, opt, &p, err, errlen);
    if (rc == FEDC_OK) rc = fedc_partition_write(d, p, opt, data_dir, out_dir, err, errlen);
    fedc_dataset_destroy(d);
    if (rc == FEDC_OK && out)
        *out = p;
    else
        fedc_partition_map_destroy(p);
    return rc;
}
