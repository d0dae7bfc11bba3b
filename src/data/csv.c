/*
 * CSV datasets: one example per line, a label column and numeric feature
 * columns. Kept deliberately simple (no quoted fields with embedded
 * delimiters): numeric tables are what a learning framework reads, and a
 * strict reader reports a malformed row by file and line instead of
 * guessing.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "data/data_internal.h"

/* A single line longer than this is taken as a sign of a wrong file. */
#define MAX_LINE ((size_t)64 << 20)

void fedc_csv_options_init(fedc_csv_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->label_column = 0;
    opt->header = FEDC_CSV_HEADER_AUTO;
    opt->delimiter = ',';
}

typedef struct csv_reader {
    const char *path;
    gzFile gz;
    char *line;
    size_t cap;
    size_t lineno;
} csv_reader;

/* Reads the next line without its line end into r->line. Returns 1 for a
 * line, 0 at the end of the file, or a negative fedc status on error. */
static int next_line(csv_reader *r, size_t *len, char *err, size_t errlen)
{
    size_t used = 0;
    for (;;) {
        if (r->cap - used < 2) {
            if (r->cap >= MAX_LINE) {
                return -fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "%s:%zu: line longer than %zu MiB",
                                       r->path, r->lineno + 1, MAX_LINE >> 20);
            }
            size_t next = r->cap ? r->cap * 2 : 4096;
            char *bigger = realloc(r->line, next);
            if (!bigger) return -fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            r->line = bigger;
            r->cap = next;
        }
        if (!gzgets(r->gz, r->line + used, (int)(r->cap - used))) {
            int zerr;
            gzerror(r->gz, &zerr);
            if (zerr == Z_ERRNO)
                return -fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot read '%s': %s", r->path,
                                       strerror(errno));
            if (zerr == Z_BUF_ERROR)
                return -fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                       "'%s' is truncated: the gzip stream ends early", r->path);
            if (zerr != Z_OK)
                return -fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                       "'%s' holds corrupt gzip data (zlib: %s)", r->path,
                                       fedc__gz_message(r->gz, r->path));
            if (used == 0) return 0;
            break; /* a last line without a newline */
        }
        used += strlen(r->line + used);
        if (used > 0 && r->line[used - 1] == '\n') break;
    }
    r->lineno++;
    while (used > 0 && (r->line[used - 1] == '\n' || r->line[used - 1] == '\r')) used--;
    r->line[used] = '\0';
    *len = used;
    return 1;
}

/* Splits the line in place at the delimiter, trimming blanks and one pair
 * of surrounding double quotes from each field. Returns the field count;
 * fields beyond `max` are counted but not stored. */
static size_t split_fields(char *line, char delim, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        char *end = strchr(p, delim);
        if (end) *end = '\0';
        char *s = p, *e = p + strlen(p);
        while (*s == ' ' || *s == '\t') s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (e - s >= 2 && *s == '"' && e[-1] == '"') {
            s++;
            e--;
        }
        *e = '\0';
        if (n < max) fields[n] = s;
        n++;
        if (!end) break;
        p = end + 1;
    }
    return n;
}

/* Parses a whole field as a finite number. Plain unsigned integers, the
 * common case of pixel CSVs, take a fast path that avoids strtod. */
static int parse_number(const char *s, double *out)
{
    if (*s >= '0' && *s <= '9') {
        long v = 0;
        const char *p = s;
        while (*p >= '0' && *p <= '9' && p - s < 9) v = v * 10 + (*p++ - '0');
        if (*p == '\0') {
            *out = (double)v;
            return 1;
        }
    }
    /* strtod would also take hexadecimal and "infinity"; a data file with
     * those is more likely broken than meant. */
    if (*s == '\0' || strpbrk(s, "xX")) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* Grows a heap array to hold at least `need` elements of `size` bytes. */
static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return 1;
    size_t next = *cap ? *cap : 1024;
    while (next < need) {
        if (next > SIZE_MAX / 2 / size) return 0;
        next *= 2;
    }
    void *bigger = realloc(*p, next * size);
    if (!bigger) return 0;
    *p = bigger;
    *cap = next;
    return 1;
}

int fedc_dataset_load_csv(const char *path, const fedc_csv_options *opt_in, fedc_dataset **out, char *err,
                          size_t errlen)
{
    fedc_csv_options opt;
    csv_reader r = {.path = path};
    char **fields = NULL;
    float *xs = NULL;
    int32_t *ys = NULL;
    size_t xs_cap = 0, ys_cap = 0, n = 0;
    size_t nfields = 0; /* fields per data row, fixed by the first one */
    size_t header_fields = 0;
    size_t label_col = 0;
    int32_t max_label = 0;
    fedc_dataset *d = NULL;
    locale_t c_locale = (locale_t)0, saved_locale = (locale_t)0;
    int rc = FEDC_OK, first = 1;
    struct stat st;

    *out = NULL;
    if (!path) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no CSV file path given");
    if (opt_in)
        opt = *opt_in;
    else
        fedc_csv_options_init(&opt);
    if (opt.num_classes != 0 && (opt.num_classes < 2 || opt.num_classes > FEDC_DATA_MAX_CLASSES))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "CSV file '%s': option num_classes %d is outside [2, %d]", path,
                              opt.num_classes, FEDC_DATA_MAX_CLASSES);
    if (opt.label_column < -1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "CSV file '%s': option label_column %d is invalid (use -1 for the "
                              "last column)",
                              path, opt.label_column);
    if (opt.delimiter == '\0' || opt.delimiter == '\n' || opt.delimiter == '\r' || opt.delimiter == '"' ||
        opt.delimiter == '.' || opt.delimiter == '-' || (opt.delimiter >= '0' && opt.delimiter <= '9'))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "CSV file '%s': option delimiter 0x%02x cannot separate numbers", path,
                              (unsigned char)opt.delimiter);
    int shape_given = opt.channels || opt.height || opt.width;
    if (shape_given && (opt.channels < 0 || opt.height <= 0 || opt.width <= 0))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "CSV file '%s': options give shape %d x %d x %d; set height and "
                              "width (and optionally channels) to positive values",
                              path, opt.channels, opt.height, opt.width);

    if (stat(path, &st) != 0)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                              "cannot open CSV file '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "CSV file '%s' is not a regular file", path);
    errno = 0;
    r.gz = gzopen(path, "rb");
    if (!r.gz)
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot open CSV file '%s': %s", path,
                              errno ? strerror(errno) : "out of memory");
    gzbuffer(r.gz, 256 * 1024);

    /* strtod follows LC_NUMERIC; a program that set a locale with a decimal
     * comma must not change how data files are read. uselocale affects only
     * this thread and is restored below. */
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale != (locale_t)0) saved_locale = uselocale(c_locale);

    for (;;) {
        size_t len;
        int got = next_line(&r, &len, err, errlen);
        if (got < 0) {
            rc = -got;
            goto fail;
        }
        if (got == 0) break;
        /* Blank lines (a trailing newline, spacing) carry no example. */
        size_t k = 0;
        while (k < len && (r.line[k] == ' ' || r.line[k] == '\t')) k++;
        if (k == len) continue;

        size_t count;
        if (!fields) {
            /* The first line fixes the field count; split twice, once to
             * count and once to store. */
            char *copy = strdup(r.line);
            if (!copy) goto nomem;
            char *dummy[1];
            count = split_fields(copy, opt.delimiter, dummy, 0);
            free(copy);
            fields = calloc(count, sizeof *fields);
            if (!fields) goto nomem;
            nfields = count;
            if (count < 2) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                    "%s:%zu: found %zu field; a row needs a label and at least "
                                    "one feature (delimiter '%c')",
                                    path, r.lineno, count, opt.delimiter);
                goto fail;
            }
            if (opt.label_column >= 0 && (size_t)opt.label_column >= count) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                    "%s:%zu: label column %d does not exist in a row of %zu "
                                    "fields",
                                    path, r.lineno, opt.label_column, count);
                goto fail;
            }
            label_col = opt.label_column < 0 ? count - 1 : (size_t)opt.label_column;
        }
        count = split_fields(r.line, opt.delimiter, fields, nfields);

        if (first) {
            first = 0;
            double ignored;
            int is_header = opt.header == FEDC_CSV_HEADER_YES || (opt.header == FEDC_CSV_HEADER_AUTO &&
                                                                  !parse_number(fields[label_col], &ignored));
            if (is_header) {
                /* The data rows fix the field count, so a header of another
                 * width is caught at the first data row. */
                header_fields = count;
                free(fields);
                fields = NULL;
                continue;
            }
        }
        if (count != nfields) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s:%zu: expected %zu fields, found %zu", path,
                                r.lineno, nfields, count);
            goto fail;
        }
        if (header_fields && header_fields != nfields) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "%s:%zu: the header has %zu fields but this first data row "
                                "has %zu",
                                path, r.lineno, header_fields, nfields);
            goto fail;
        }
        if (!grow((void **)&ys, &ys_cap, n + 1, sizeof *ys) ||
            !grow((void **)&xs, &xs_cap, (n + 1) * (nfields - 1), sizeof *xs))
            goto nomem;

        double v;
        const char *lf = fields[label_col];
        if (!parse_number(lf, &v)) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "%s:%zu: label '%.40s' (column %zu) is not a number", path, r.lineno, lf,
                                label_col + 1);
            goto fail;
        }
        if (v != floor(v)) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s:%zu: label '%.40s' is not a whole number",
                                path, r.lineno, lf);
            goto fail;
        }
        int limit = opt.num_classes ? opt.num_classes : FEDC_DATA_MAX_CLASSES;
        if (v < 0 || v >= limit) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_RANGE, "%s:%zu: label %.0f is outside [0, %d)", path,
                                r.lineno, v, limit);
            goto fail;
        }
        ys[n] = (int32_t)v;
        if (ys[n] > max_label) max_label = ys[n];

        float *row = xs + n * (nfields - 1);
        for (size_t j = 0, f = 0; j < nfields; j++) {
            if (j == label_col) continue;
            if (!parse_number(fields[j], &v)) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                    "%s:%zu: field %zu '%.40s' is not a finite number", path, r.lineno, j + 1,
                                    fields[j]);
                goto fail;
            }
            float fv = opt.scale ? (float)v / 255.0f : (float)v;
            if (!isfinite(fv)) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                    "%s:%zu: field %zu '%.40s' does not fit a float", path, r.lineno, j + 1,
                                    fields[j]);
                goto fail;
            }
            row[f++] = fv;
        }
        n++;
    }
    if (n == 0) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "CSV file '%s' holds no data rows%s", path,
                            header_fields ? " (only a header)" : "");
        goto fail;
    }

    size_t features = nfields - 1;
    int channels = 1, height = 1, width;
    if (shape_given) {
        channels = opt.channels ? opt.channels : 1;
        height = opt.height;
        width = opt.width;
        if ((size_t)channels * (size_t)height * (size_t)width != features) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                "CSV options give shape %d x %d x %d but the rows of '%s' have "
                                "%zu features",
                                channels, height, width, path, features);
            goto fail;
        }
    } else if (features > (size_t)INT32_MAX) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "'%s' has too many columns", path);
        goto fail;
    } else {
        width = (int)features;
    }
    int num_classes = opt.num_classes ? opt.num_classes : (max_label + 1 < 2 ? 2 : max_label + 1);
    rc = fedc__dataset_alloc(n, channels, height, width, num_classes, 0, &d, err, errlen);
    if (rc != FEDC_OK) goto fail;
    memcpy(d->x, xs, n * features * sizeof(float));
    memcpy(d->y, ys, n * sizeof(int32_t));
    *out = d;
    d = NULL;
    goto done;

nomem:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory reading CSV file '%s'", path);
fail:
done:
    if (c_locale != (locale_t)0) {
        uselocale(saved_locale);
        freelocale(c_locale);
    }
    fedc_dataset_destroy(d);
    gzclose_r(r.gz);
    free(r.line);
    free(fields);
    free(xs);
    free(ys);
    return rc;
}
