/*
 * IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic number
 * (two zero bytes, an element type, a dimension count), one big-endian
 * 32-bit size per dimension, then the elements in big-endian row-major
 * order. Files may be gzipped; zlib reads both forms through one API.
 *
 * The reader treats the file as untrusted. The header's sizes are checked
 * against the size of the file on disk before any allocation (exactly for a
 * plain file, against deflate's largest possible expansion for a gzipped
 * one), and the data is then read in chunks into a buffer that grows only
 * as data actually arrives, so a lying header cannot make us allocate more
 * than the file really holds.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "data/data_internal.h"

enum { IDX_U8 = 0x08, IDX_I32 = 0x0C, IDX_F32 = 0x0D };

/* Deflate cannot expand data by more than about 1032:1, so a gzip file of S
 * bytes holds at most this many times S bytes (plus slack for tiny files). */
#define GZIP_MAX_RATIO 1032u
#define GZIP_SLACK     4096u

/* Largest single gzread/gzwrite call; their length is an unsigned int. */
#define IO_CHUNK ((size_t)1 << 20)
/* First buffer for the data of a gzipped file; it doubles from here. */
#define FIRST_BUFFER ((size_t)4 << 20)

typedef struct idx_file {
    const char *path;
    const char *what; /* "image" or "label", for messages */
    int type;
    int ndim;
    uint32_t dims[4];
    size_t esize;
    size_t count; /* elements */
    size_t bytes; /* data bytes */
    unsigned char *data;
} idx_file;

static const char *type_name(int type)
{
    switch (type) {
    case IDX_U8: return "unsigned bytes";
    case IDX_I32: return "int32";
    case IDX_F32: return "float32";
    default: return "?";
    }
}

static void format_dims(char *buf, size_t len, int ndim, const uint32_t *dims)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%u", i ? " x " : "", (unsigned)dims[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
}

/* Reads up to n bytes into buf; *got says how many arrived. Returns Z_OK,
 * or the zlib error: Z_BUF_ERROR when a gzip stream is cut short (zlib
 * first hands out what it could decode), Z_DATA_ERROR and friends for
 * corrupt data, Z_ERRNO for an operating-system error. */
static int read_some(gzFile gz, void *buf, size_t n, size_t *got)
{
    int zerr = Z_OK;
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        if (want > IO_CHUNK) want = IO_CHUNK;
        int r = gzread(gz, (unsigned char *)buf + *got, (unsigned)want);
        if (r <= 0) break;
        *got += (size_t)r;
    }
    gzerror(gz, &zerr);
    return zerr;
}

/* The message for a zlib error other than a short stream. */
static int read_failed(const idx_file *f, gzFile gz, int zerr, char *err, size_t errlen)
{
    if (zerr == Z_ERRNO)
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot read IDX %s file '%s': %s", f->what, f->path,
                              strerror(errno));
    return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "IDX %s file '%s' holds corrupt gzip data (zlib: %s)",
                          f->what, f->path, fedc__gz_message(gz, f->path));
}

/* Parses the header and reads the data of one IDX file. */
static int idx_read(idx_file *f, int ndim_min, int ndim_max, int type_a, int type_b,
                    const char *expected_magic, char *err, size_t errlen)
{
    gzFile gz = NULL;
    int rc = FEDC_OK, zerr;
    size_t got;
    char dims_text[96];
    struct stat st;

    if (stat(f->path, &st) != 0) {
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                              "cannot open IDX %s file '%s': %s", f->what, f->path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "IDX %s file '%s' is not a regular file", f->what,
                              f->path);
    if (st.st_size == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "IDX %s file '%s' is empty", f->what, f->path);
    gz = gzopen(f->path, "rb");
    if (!gz) {
        rc = fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                            "cannot open IDX %s file '%s': %s", f->what, f->path,
                            errno ? strerror(errno) : "out of memory");
        goto fail;
    }
    gzbuffer(gz, 256 * 1024);

    unsigned char magic[4];
    zerr = read_some(gz, magic, sizeof magic, &got);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
        rc = read_failed(f, gz, zerr, err, errlen);
        goto fail;
    }
    if (got < sizeof magic) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' is truncated: it ends after %zu bytes, inside the "
                            "4-byte magic number",
                            f->what, f->path, got);
        goto fail;
    }
    if (magic[0] != 0 || magic[1] != 0) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' has a bad magic number 0x%02x%02x%02x%02x "
                            "(expected %s; an IDX file starts with two zero bytes)",
                            f->what, f->path, magic[0], magic[1], magic[2], magic[3], expected_magic);
        goto fail;
    }
    f->type = magic[2];
    f->ndim = magic[3];
    if (f->type != type_a && f->type != type_b) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                            "IDX %s file '%s' has element type 0x%02x; supported are 0x%02x "
                            "(%s) and 0x%02x (%s)",
                            f->what, f->path, f->type, type_a, type_name(type_a), type_b, type_name(type_b));
        goto fail;
    }
    if (f->ndim < ndim_min || f->ndim > ndim_max) {
        if (ndim_min == ndim_max)
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX %s file '%s' has %d dimensions, expected %d (magic %s)", f->what,
                                f->path, f->ndim, ndim_min, expected_magic);
        else
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX %s file '%s' has %d dimensions, expected %d or %d (magic %s)", f->what,
                                f->path, f->ndim, ndim_min, ndim_max, expected_magic);
        goto fail;
    }
    f->esize = f->type == IDX_U8 ? 1 : 4;

    unsigned char raw[16];
    size_t dims_bytes = 4 * (size_t)f->ndim;
    zerr = read_some(gz, raw, dims_bytes, &got);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
        rc = read_failed(f, gz, zerr, err, errlen);
        goto fail;
    }
    if (got < dims_bytes) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' is truncated: it ends inside the header, after %zu "
                            "of the %zu bytes of dimension sizes",
                            f->what, f->path, got, dims_bytes);
        goto fail;
    }
    for (int i = 0; i < f->ndim; i++) {
        const unsigned char *b = raw + 4 * i;
        f->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }
    format_dims(dims_text, sizeof dims_text, f->ndim, f->dims);

    /* Every size but the count of examples must be positive and fit the
     * dataset's int shape fields; the product must fit size_t. */
    uint64_t count = 1;
    int overflow = 0;
    for (int i = 0; i < f->ndim; i++) {
        if (i > 0 && (f->dims[i] == 0 || f->dims[i] > INT_MAX)) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX %s file '%s' has an invalid dimension size %u (dimensions "
                                "%s)",
                                f->what, f->path, (unsigned)f->dims[i], dims_text);
            goto fail;
        }
        if (f->dims[i] != 0 && count > UINT64_MAX / f->dims[i]) overflow = 1;
        count *= f->dims[i];
    }
    if (overflow || count > SIZE_MAX / 4) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' claims dimensions %s, which no file can hold", f->what, f->path,
                            dims_text);
        goto fail;
    }
    f->count = (size_t)count;
    f->bytes = f->count * f->esize;

    int direct = gzdirect(gz);
    uint64_t file_size = (uint64_t)st.st_size;
    uint64_t header_size = 4 + dims_bytes;
    if (direct) {
        uint64_t have = file_size - header_size;
        if (have < f->bytes) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX %s file '%s' is truncated: its header promises %s %s "
                                "(%zu bytes of data) but the file holds only %llu",
                                f->what, f->path, dims_text, type_name(f->type), f->bytes,
                                (unsigned long long)have);
            goto fail;
        }
        if (have > f->bytes) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX %s file '%s' has %llu bytes after the %zu bytes of data its "
                                "header promises (%s %s)",
                                f->what, f->path, (unsigned long long)(have - f->bytes), f->bytes, dims_text,
                                type_name(f->type));
            goto fail;
        }
    } else if (file_size > (UINT64_MAX - GZIP_SLACK) / GZIP_MAX_RATIO ||
               f->bytes > file_size * GZIP_MAX_RATIO + GZIP_SLACK) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' claims dimensions %s (%zu bytes of data), more "
                            "than a gzip file of %llu bytes can hold",
                            f->what, f->path, dims_text, f->bytes, (unsigned long long)file_size);
        goto fail;
    }

    /* A plain file's size was checked exactly above; a gzipped one's data
     * is read into a buffer that doubles as it fills. */
    size_t cap = direct || f->bytes < FIRST_BUFFER ? f->bytes : FIRST_BUFFER;
    size_t have = 0;
    f->data = malloc(cap ? cap : 1);
    if (!f->data) goto nomem;
    for (;;) {
        zerr = read_some(gz, f->data + have, cap - have, &got);
        have += got;
        if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
            rc = read_failed(f, gz, zerr, err, errlen);
            goto fail;
        }
        if (have < cap || have == f->bytes) break;
        size_t next = cap > f->bytes / 2 ? f->bytes : cap * 2;
        unsigned char *bigger = realloc(f->data, next);
        if (!bigger) goto nomem;
        f->data = bigger;
        cap = next;
    }
    if (have < f->bytes) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' is truncated: its header promises %s %s (%zu "
                            "bytes of data) but the data ends after %zu bytes",
                            f->what, f->path, dims_text, type_name(f->type), f->bytes, have);
        goto fail;
    }
    /* Reading on to the end also makes zlib check the gzip trailer's CRC
     * and length, so corruption anywhere in the stream is noticed. */
    unsigned char extra[64];
    size_t extra_bytes = 0;
    do {
        zerr = read_some(gz, extra, sizeof extra, &got);
        extra_bytes += got;
    } while (zerr == Z_OK && got == sizeof extra && extra_bytes < 4096);
    if (zerr == Z_BUF_ERROR) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' is truncated: the gzip stream ends early", f->what, f->path);
        goto fail;
    }
    if (zerr != Z_OK) {
        rc = read_failed(f, gz, zerr, err, errlen);
        goto fail;
    }
    if (extra_bytes > 0) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX %s file '%s' has %s%zu bytes after the %zu bytes of data its "
                            "header promises (%s %s)",
                            f->what, f->path, extra_bytes >= 4096 ? "at least " : "", extra_bytes, f->bytes,
                            dims_text, type_name(f->type));
        goto fail;
    }
    gzclose_r(gz);
    return FEDC_OK;

nomem:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM,
                        "out of memory reading IDX %s file '%s' (%zu bytes of data)", f->what, f->path,
                        f->bytes);
fail:
    free(f->data);
    f->data = NULL;
    if (gz) gzclose_r(gz);
    return rc;
}

const char *fedc__gz_message(gzFile gz, const char *path)
{
    int zerr;
    const char *msg = gzerror(gz, &zerr);
    /* zlib prefixes its message with the path, which ours already names. */
    size_t len = strlen(path);
    if (strncmp(msg, path, len) == 0 && msg[len] == ':' && msg[len + 1] == ' ') msg += len + 2;
    return msg;
}

static uint32_t load_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void store_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

int fedc_dataset_load_idx(const char *images_path, const char *labels_path, fedc_dataset **out, char *err,
                          size_t errlen)
{
    idx_file im = {.path = images_path, .what = "image"};
    idx_file lb = {.path = labels_path, .what = "label"};
    fedc_dataset *d = NULL;
    int rc;

    *out = NULL;
    if (!images_path || !labels_path)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "no IDX file path given");
    /* Labels first: they are small, so a wrong pairing or a broken label
     * file is reported before the large image file is decompressed. */
    rc = idx_read(&lb, 1, 1, IDX_U8, IDX_I32, "0x00000801", err, errlen);
    if (rc != FEDC_OK) goto fail;
    rc = idx_read(&im, 3, 4, IDX_U8, IDX_F32, "0x00000803", err, errlen);
    if (rc != FEDC_OK) goto fail;

    size_t n = im.dims[0];
    if (lb.dims[0] != n) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "IDX image file '%s' holds %zu images but label file '%s' holds %u "
                            "labels",
                            images_path, n, labels_path, (unsigned)lb.dims[0]);
        goto fail;
    }
    int channels = im.ndim == 4 ? (int)im.dims[1] : 1;
    int height = (int)im.dims[im.ndim - 2];
    int width = (int)im.dims[im.ndim - 1];

    /* Validate the labels before allocating the (four times larger) float
     * images, and learn the class count on the way. */
    int32_t max_label = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t v = lb.type == IDX_U8 ? (int64_t)lb.data[i] : (int64_t)(int32_t)load_be32(lb.data + 4 * i);
        if (v < 0 || v >= FEDC_DATA_MAX_CLASSES) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "IDX label file '%s': example %zu has label %lld, outside [0, "
                                "%d)",
                                labels_path, i, (long long)v, FEDC_DATA_MAX_CLASSES);
            goto fail;
        }
        if (v > max_label) max_label = (int32_t)v;
    }
    int num_classes = max_label + 1 < 2 ? 2 : max_label + 1;
    rc = fedc__dataset_alloc(n, channels, height, width, num_classes, 0, &d, err, errlen);
    if (rc != FEDC_OK) goto fail;
    for (size_t i = 0; i < n; i++)
        d->y[i] = lb.type == IDX_U8 ? (int32_t)lb.data[i] : (int32_t)load_be32(lb.data + 4 * i);

    size_t total = n * d->features;
    if (im.type == IDX_U8) {
        float table[256];
        for (int k = 0; k < 256; k++) table[k] = (float)k / 255.0f;
        for (size_t i = 0; i < total; i++) d->x[i] = table[im.data[i]];
    } else {
        for (size_t i = 0; i < total; i++) {
            uint32_t bits = load_be32(im.data + 4 * i);
            float v;
            memcpy(&v, &bits, sizeof v);
            if (!isfinite(v)) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                    "IDX image file '%s': example %zu, feature %zu is not a "
                                    "finite number",
                                    images_path, i / d->features, i % d->features);
                goto fail;
            }
            d->x[i] = v;
        }
    }
    free(im.data);
    free(lb.data);
    *out = d;
    return FEDC_OK;

fail:
    fedc_dataset_destroy(d);
    free(im.data);
    free(lb.data);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                */

typedef struct idx_writer {
    const char *path;
    char *tmp;
    gzFile gz;
} idx_writer;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static int writer_open(idx_writer *w, const char *path, char *err, size_t errlen)
{
    w->path = path;
    w->gz = NULL;
    w->tmp = malloc(strlen(path) + 5);
    if (!w->tmp) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    strcpy(w->tmp, path);
    strcat(w->tmp, ".tmp");
    /* Level 6 is zlib's default balance; "T" writes a plain file through
     * the same calls. zlib's gzip header has no time stamp or name, so the
     * same data always gives the same bytes. */
    errno = 0;
    w->gz = gzopen(w->tmp, ends_with(path, ".gz") ? "wb6" : "wbT");
    if (!w->gz) {
        int rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create '%s': %s", w->tmp,
                                errno ? strerror(errno) : "out of memory");
        free(w->tmp);
        w->tmp = NULL;
        return rc;
    }
    gzbuffer(w->gz, 256 * 1024);
    return FEDC_OK;
}

static int writer_put(idx_writer *w, const void *buf, size_t len, char *err, size_t errlen)
{
    const unsigned char *p = buf;
    while (len > 0) {
        size_t n = len > IO_CHUNK ? IO_CHUNK : len;
        if (gzwrite(w->gz, p, (unsigned)n) != (int)n) {
            int zerr;
            gzerror(w->gz, &zerr);
            return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot write '%s': %s", w->tmp,
                                  zerr == Z_ERRNO ? strerror(errno) : fedc__gz_message(w->gz, w->tmp));
        }
        p += n;
        len -= n;
    }
    return FEDC_OK;
}

/* Closes the file and, if everything went well, renames it into place;
 * otherwise removes the temporary file. Returns rc or the close error. */
static int writer_close(idx_writer *w, int rc, char *err, size_t errlen)
{
    if (w->gz) {
        int zrc = gzclose_w(w->gz);
        w->gz = NULL;
        if (rc == FEDC_OK && zrc != Z_OK)
            rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot write '%s': %s", w->tmp,
                                zrc == Z_ERRNO ? strerror(errno) : "zlib error");
    }
    if (w->tmp) {
        if (rc == FEDC_OK && rename(w->tmp, w->path) != 0)
            rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot rename '%s' to '%s': %s", w->tmp, w->path,
                                strerror(errno));
        if (rc != FEDC_OK) remove(w->tmp);
        free(w->tmp);
        w->tmp = NULL;
    }
    return rc;
}

static int writer_header(idx_writer *w, int type, int ndim, const uint32_t *dims, char *err, size_t errlen)
{
    unsigned char h[4 + 16] = {0, 0, (unsigned char)type, (unsigned char)ndim};
    for (int i = 0; i < ndim; i++) store_be32(h + 4 + 4 * i, dims[i]);
    return writer_put(w, h, 4 + 4 * (size_t)ndim, err, errlen);
}

static int check_selection(const char *path, const fedc_dataset *d, const uint32_t *idx, size_t m, char *err,
                           size_t errlen)
{
    if (m > UINT32_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE,
                              "cannot write '%s': %zu examples exceed the IDX limit of 2^32 - 1", path, m);
    for (size_t i = 0; idx && i < m; i++) {
        if (idx[i] >= d->n)
            return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                                  "cannot write '%s': example index %u is outside a dataset of "
                                  "%zu examples",
                                  path, (unsigned)idx[i], d->n);
    }
    return FEDC_OK;
}

int fedc__idx_write_images(const char *path, const fedc_dataset *d, const uint32_t *idx, size_t count,
                           int as_u8, char *err, size_t errlen)
{
    size_t m = idx ? count : d->n;
    idx_writer w = {0};
    unsigned char *buf = NULL;
    int rc = check_selection(path, d, idx, m, err, errlen);
    if (rc != FEDC_OK) return rc;

    size_t esize = as_u8 ? 1 : 4;
    size_t row_bytes = d->features * esize;
    /* Stage whole rows in a buffer of about 256 KiB (at least one row). */
    size_t rows_per_buf = row_bytes >= (256u << 10) ? 1 : (256u << 10) / row_bytes;
    buf = malloc(rows_per_buf * row_bytes);
    if (!buf) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");

    rc = writer_open(&w, path, err, errlen);
    if (rc != FEDC_OK) goto done;
    uint32_t dims[4];
    int ndim;
    dims[0] = (uint32_t)m;
    if (d->channels == 1) {
        ndim = 3;
        dims[1] = (uint32_t)d->height;
        dims[2] = (uint32_t)d->width;
    } else {
        ndim = 4;
        dims[1] = (uint32_t)d->channels;
        dims[2] = (uint32_t)d->height;
        dims[3] = (uint32_t)d->width;
    }
    rc = writer_header(&w, as_u8 ? IDX_U8 : IDX_F32, ndim, dims, err, errlen);
    for (size_t i = 0; rc == FEDC_OK && i < m;) {
        size_t rows = m - i < rows_per_buf ? m - i : rows_per_buf;
        unsigned char *p = buf;
        for (size_t r = 0; r < rows; r++, i++) {
            const float *x = d->x + (size_t)(idx ? idx[i] : i) * d->features;
            if (as_u8) {
                for (size_t j = 0; j < d->features; j++) *p++ = (unsigned char)lrintf(x[j] * 255.0f);
            } else {
                for (size_t j = 0; j < d->features; j++, p += 4) {
                    uint32_t bits;
                    memcpy(&bits, &x[j], sizeof bits);
                    store_be32(p, bits);
                }
            }
        }
        rc = writer_put(&w, buf, (size_t)(p - buf), err, errlen);
    }
done:
    rc = writer_close(&w, rc, err, errlen);
    free(buf);
    return rc;
}

int fedc__idx_write_labels(const char *path, const fedc_dataset *d, const uint32_t *idx, size_t count,
                           char *err, size_t errlen)
{
    size_t m = idx ? count : d->n;
    idx_writer w = {0};
    int rc = check_selection(path, d, idx, m, err, errlen);
    if (rc != FEDC_OK) return rc;
    /* A label outside the class count would be cut to a byte silently. */
    for (size_t i = 0; i < m; i++) {
        int32_t y = d->y[idx ? idx[i] : i];
        if (y < 0 || y >= d->num_classes)
            return fedc_set_error(err, errlen, FEDC_ERR_RANGE,
                                  "cannot write '%s': example %zu has label %d, outside [0, %d)", path,
                                  (size_t)(idx ? idx[i] : i), (int)y, d->num_classes);
    }
    int as_u8 = d->num_classes <= 256;
    rc = writer_open(&w, path, err, errlen);
    if (rc != FEDC_OK) return rc;
    uint32_t dims[1] = {(uint32_t)m};
    rc = writer_header(&w, as_u8 ? IDX_U8 : IDX_I32, 1, dims, err, errlen);
    unsigned char buf[4096];
    for (size_t i = 0; rc == FEDC_OK && i < m;) {
        size_t used = 0;
        for (; i < m && used + 4 <= sizeof buf; i++) {
            int32_t y = d->y[idx ? idx[i] : i];
            if (as_u8)
                buf[used++] = (unsigned char)y;
            else {
                store_be32(buf + used, (uint32_t)y);
                used += 4;
            }
        }
        rc = writer_put(&w, buf, used, err, errlen);
    }
    return writer_close(&w, rc, err, errlen);
}

int fedc_dataset_save_idx(const fedc_dataset *d, const char *images_path, const char *labels_path, char *err,
                          size_t errlen)
{
    int rc = fedc__idx_write_images(images_path, d, NULL, 0, fedc__dataset_is_u8(d), err, errlen);
    if (rc != FEDC_OK) return rc;
    return fedc__idx_write_labels(labels_path, d, NULL, 0, err, errlen);
}
