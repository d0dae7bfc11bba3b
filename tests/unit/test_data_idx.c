/* IDX reader and writer: round trips, data directories, and every kind of
 * broken file, each of which must give the right status and a message
 * naming the file, never a crash. */
#define _GNU_SOURCE 1 /* nftw's FTW_DEPTH | FTW_PHYS */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "fedc/data.h"
#include "test_util.h"

static char tmpdir[256];
static char err[FEDC_ERRMSG_MAX];

static const char *path_of(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_plain(const char *name, const void *data, size_t len)
{
    FILE *f = fopen(path_of(name), "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(name);
        exit(1);
    }
}

static void write_gz(const char *name, const void *data, size_t len)
{
    gzFile gz = gzopen(path_of(name), "wb");
    if (!gz || (len && gzwrite(gz, data, (unsigned)len) != (int)len) || gzclose(gz) != Z_OK) {
        fprintf(stderr, "cannot write %s\n", name);
        exit(1);
    }
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

/* Builds an IDX file in memory: header then `len` bytes of data. */
static size_t make_idx(unsigned char *buf, int type, int ndim, const uint32_t *dims, const void *data,
                       size_t len)
{
    unsigned char *p = buf;
    *p++ = 0;
    *p++ = 0;
    *p++ = (unsigned char)type;
    *p++ = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) {
        *p++ = (unsigned char)(dims[i] >> 24);
        *p++ = (unsigned char)(dims[i] >> 16);
        *p++ = (unsigned char)(dims[i] >> 8);
        *p++ = (unsigned char)dims[i];
    }
    if (len && data) memcpy(p, data, len);
    return (size_t)(p - buf) + len;
}

/* A valid pair of 5 images of 2x3 and 5 labels, plain and gzipped. */
static unsigned char good_img[64], good_lbl[32];
static size_t good_img_len, good_lbl_len;

static void make_good_files(void)
{
    unsigned char pixels[30], labels[5] = {0, 1, 2, 1, 0};
    for (int i = 0; i < 30; i++) pixels[i] = (unsigned char)(i * 8);
    uint32_t idims[3] = {5, 2, 3}, ldims[1] = {5};
    good_img_len = make_idx(good_img, 0x08, 3, idims, pixels, sizeof pixels);
    good_lbl_len = make_idx(good_lbl, 0x08, 1, ldims, labels, sizeof labels);
    write_plain("good-images", good_img, good_img_len);
    write_plain("good-labels", good_lbl, good_lbl_len);
    write_gz("good-images.gz", good_img, good_img_len);
    write_gz("good-labels.gz", good_lbl, good_lbl_len);
}

/* Loads images/labels and checks the status and that the message contains
 * `needle` (and the offending file's name, when `file` is given). */
static void expect(const char *what, const char *images, const char *labels, int want, const char *needle,
                   const char *file)
{
    fedc_dataset *d = (fedc_dataset *)0x1;
    err[0] = '\0';
    int rc = fedc_dataset_load_idx(path_of(images), path_of(labels), &d, err, sizeof err);
    int ok = want == FEDC_OK ? rc == FEDC_OK && d != NULL
                             : rc == want && d == NULL && strstr(err, needle) != NULL &&
                                   (!file || strstr(err, file) != NULL);
    CHECK(ok, "%s: status %d (%s), expected %d; message: %s", what, rc, fedc_strerror(rc), want, err);
    if (rc == FEDC_OK) fedc_dataset_destroy(d);
}

static int same_dataset(const fedc_dataset *a, const fedc_dataset *b)
{
    return a->n == b->n && a->features == b->features && a->channels == b->channels &&
           a->height == b->height && a->width == b->width && a->num_classes == b->num_classes &&
           memcmp(a->x, b->x, a->n * a->features * sizeof(float)) == 0 &&
           memcmp(a->y, b->y, a->n * sizeof(int32_t)) == 0;
}

static void test_good(void)
{
    fedc_dataset *d = NULL;
    int rc = fedc_dataset_load_idx(path_of("good-images"), path_of("good-labels"), &d, err, sizeof err);
    CHECK(rc == FEDC_OK, "plain IDX pair loads (%s)", rc ? err : "ok");
    if (rc) return;
    CHECK(d->n == 5 && d->features == 6 && d->channels == 1 && d->height == 2 && d->width == 3,
          "plain IDX pair: 5 examples of 1x2x3");
    CHECK(d->num_classes == 3, "num_classes is max label + 1 = 3 (got %d)", d->num_classes);
    CHECK(d->x[0] == 0.0f && d->x[29] == (float)(29 * 8) / 255.0f && d->y[2] == 2,
          "pixels are scaled by 1/255 and labels kept");
    fedc_dataset *g = NULL;
    rc = fedc_dataset_load_idx(path_of("good-images.gz"), path_of("good-labels.gz"), &g, err, sizeof err);
    CHECK(rc == FEDC_OK && same_dataset(d, g), "gzipped IDX pair loads the same data");
    fedc_dataset_destroy(g);

    size_t counts[3];
    fedc_dataset_label_counts(d, counts);
    CHECK(counts[0] == 2 && counts[1] == 2 && counts[2] == 1, "label counts 2, 2, 1");

    uint32_t pick[3] = {4, 0, 4};
    fedc_dataset *s = NULL;
    rc = fedc_dataset_subset(d, pick, 3, &s, err, sizeof err);
    CHECK(rc == FEDC_OK && s->n == 3 && s->y[0] == 0 && s->x[6] == d->x[0] && s->num_classes == 3,
          "subset copies the chosen rows in order");
    fedc_dataset_destroy(s);
    pick[1] = 5;
    rc = fedc_dataset_subset(d, pick, 3, &s, err, sizeof err);
    CHECK(rc == FEDC_ERR_RANGE && s == NULL, "subset with an index past the end: %s", err);

    rc = fedc_dataset_set_num_classes(d, 2, err, sizeof err);
    CHECK(rc == FEDC_ERR_RANGE && d->num_classes == 3,
          "set_num_classes below the largest label is refused: %s", err);
    rc = fedc_dataset_set_num_classes(d, 1, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID, "set_num_classes(1) is invalid: %s", err);
    rc = fedc_dataset_set_num_classes(d, 10, err, sizeof err);
    CHECK(rc == FEDC_OK && d->num_classes == 10, "set_num_classes(10) widens the class count");
    fedc_dataset_destroy(d);
    fedc_dataset_destroy(NULL);
    CHECK(1, "fedc_dataset_destroy(NULL) is a no-op");
}

static void test_round_trip(void)
{
    fedc_dataset *d = NULL, *r = NULL;
    int rc = fedc_dataset_create(7, 1, 3, 4, 3, &d, err, sizeof err);
    CHECK(rc == FEDC_OK, "create 7 x 1x3x4");
    for (size_t i = 0; i < d->n * d->features; i++) d->x[i] = (float)((i * 37) % 256) / 255.0f;
    for (size_t i = 0; i < d->n; i++) d->y[i] = (int32_t)(i % 3);

    rc = fedc_dataset_save_idx(d, path_of("rt-img.gz"), path_of("rt-lbl.gz"), err, sizeof err);
    CHECK(rc == FEDC_OK, "save u8 dataset gzipped (%s)", rc ? err : "ok");
    rc = fedc_dataset_load_idx(path_of("rt-img.gz"), path_of("rt-lbl.gz"), &r, err, sizeof err);
    CHECK(rc == FEDC_OK && same_dataset(d, r), "u8 round trip is exact");
    fedc_dataset_destroy(r);
    r = NULL;

    size_t len1, len2;
    unsigned char *a = read_all(path_of("rt-img.gz"), &len1);
    CHECK(a && len1 > 2 && a[0] == 0x1f && a[1] == 0x8b, "a .gz path is written gzipped");
    rc = fedc_dataset_save_idx(d, path_of("rt-img.gz"), path_of("rt-lbl.gz"), err, sizeof err);
    unsigned char *b = read_all(path_of("rt-img.gz"), &len2);
    CHECK(rc == FEDC_OK && a && b && len1 == len2 && memcmp(a, b, len1) == 0,
          "writing the same data twice gives identical bytes");
    free(a);
    free(b);

    rc = fedc_dataset_save_idx(d, path_of("rt-img"), path_of("rt-lbl"), err, sizeof err);
    a = read_all(path_of("rt-img"), &len1);
    CHECK(rc == FEDC_OK && a && len1 == 16 + 7 * 12 && a[2] == 0x08 && a[3] == 3,
          "a plain path is written uncompressed, u8, 3 dimensions");
    free(a);
    CHECK(access(path_of("rt-img.tmp"), F_OK) != 0, "no temporary file is left behind");

    /* Values that are not k/255 must survive: float32 storage. */
    for (size_t i = 0; i < d->n * d->features; i++) d->x[i] = -1.5f + 0.3f * (float)i;
    rc = fedc_dataset_save_idx(d, path_of("rt-f32-img"), path_of("rt-f32-lbl"), err, sizeof err);
    a = read_all(path_of("rt-f32-img"), &len1);
    CHECK(rc == FEDC_OK && a && a[2] == 0x0D && len1 == 16 + 7 * 12 * 4,
          "non-u8 features are written as float32");
    free(a);
    rc = fedc_dataset_load_idx(path_of("rt-f32-img"), path_of("rt-f32-lbl"), &r, err, sizeof err);
    CHECK(rc == FEDC_OK && same_dataset(d, r), "float32 round trip is exact");
    fedc_dataset_destroy(r);
    fedc_dataset_destroy(d);

    /* Several channels (4 dimensions) and more than 256 classes (int32). */
    rc = fedc_dataset_create(4, 3, 2, 2, 300, &d, err, sizeof err);
    for (size_t i = 0; i < d->n * d->features; i++) d->x[i] = (float)(i % 256) / 255.0f;
    d->y[0] = 299;
    d->y[1] = 7;
    rc = fedc_dataset_save_idx(d, path_of("rt-c3-img.gz"), path_of("rt-c3-lbl.gz"), err, sizeof err);
    CHECK(rc == FEDC_OK, "save a 3-channel, 300-class dataset");
    rc = fedc_dataset_load_idx(path_of("rt-c3-img.gz"), path_of("rt-c3-lbl.gz"), &r, err, sizeof err);
    CHECK(rc == FEDC_OK && same_dataset(d, r), "3-channel, int32-label round trip is exact (%s)",
          rc ? err : "ok");
    fedc_dataset_destroy(r);
    fedc_dataset_destroy(d);

    /* An empty dataset is a valid file. */
    rc = fedc_dataset_create(0, 1, 28, 28, 10, &d, err, sizeof err);
    rc = rc ? rc : fedc_dataset_save_idx(d, path_of("rt-0-img.gz"), path_of("rt-0-lbl.gz"), err, sizeof err);
    rc = rc ? rc : fedc_dataset_load_idx(path_of("rt-0-img.gz"), path_of("rt-0-lbl.gz"), &r, err, sizeof err);
    CHECK(rc == FEDC_OK && r->n == 0 && r->height == 28, "empty dataset round trip");
    fedc_dataset_destroy(r);
    fedc_dataset_destroy(d);

    rc = fedc_dataset_create(3, 0, 2, 2, 10, &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && d == NULL, "create with a zero dimension: %s", err);
    rc = fedc_dataset_create(3, 1, 2, 2, 1, &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && d == NULL, "create with one class: %s", err);
    rc = fedc_dataset_create(SIZE_MAX / 2, 1, 1 << 20, 1 << 20, 10, &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_TOO_LARGE && d == NULL, "create with an overflowing size: %s", err);
}

static void test_corrupt(void)
{
    unsigned char buf[4096], data[4096];
    size_t len;
    uint32_t dims[4];
    memset(data, 7, sizeof data);

    expect("missing image file", "no-such-images", "good-labels", FEDC_ERR_NOTFOUND, "No such file",
           "no-such-images");
    expect("missing label file", "good-images", "no-such-labels", FEDC_ERR_NOTFOUND, "No such file",
           "no-such-labels");
    write_plain("empty", "", 0);
    expect("empty image file", "empty", "good-labels", FEDC_ERR_FORMAT, "empty", "empty");
    write_gz("empty.gz", "", 0);
    expect("gzipped empty file", "empty.gz", "good-labels", FEDC_ERR_FORMAT, "truncated", "empty.gz");
    mkdir(path_of("a-directory"), 0777);
    expect("a directory instead of a file", "a-directory", "good-labels", FEDC_ERR_IO, "not a regular file",
           "a-directory");

    write_plain("bad-magic", "\x12\x34\x56\x78\0\0\0\1\0\0\0\1\0\0\0\1\0", 17);
    expect("bad magic number", "bad-magic", "good-labels", FEDC_ERR_FORMAT, "magic number 0x12345678",
           "bad-magic");
    write_plain("text-file", "hello, this is not an IDX file\n", 31);
    expect("a text file", "text-file", "good-labels", FEDC_ERR_FORMAT, "magic", "text-file");
    expect("labels given as images", "good-labels", "good-labels", FEDC_ERR_FORMAT,
           "1 dimensions, expected 3 or 4", NULL);
    expect("images given as labels", "good-images", "good-images", FEDC_ERR_FORMAT,
           "3 dimensions, expected 1", NULL);
    dims[0] = 5, dims[1] = 2, dims[2] = 3;
    len = make_idx(buf, 0x0B, 3, dims, data, 60);
    write_plain("type-i16", buf, len);
    expect("unsupported element type", "type-i16", "good-labels", FEDC_ERR_UNSUPPORTED, "element type 0x0b",
           "type-i16");

    write_plain("trunc-magic", "\0\0\x08", 3);
    expect("truncated inside the magic number", "trunc-magic", "good-labels", FEDC_ERR_FORMAT, "truncated",
           "trunc-magic");
    write_plain("trunc-dims", "\0\0\x08\x03\0\0\0\5\0\0", 10);
    expect("truncated inside the dimensions", "trunc-dims", "good-labels", FEDC_ERR_FORMAT,
           "inside the header", "trunc-dims");
    write_plain("trunc-data", good_img, good_img_len - 4);
    expect("truncated data (plain)", "trunc-data", "good-labels", FEDC_ERR_FORMAT, "truncated", "trunc-data");
    write_gz("trunc-data.gz", good_img, good_img_len - 4);
    expect("truncated data (gzipped)", "trunc-data.gz", "good-labels", FEDC_ERR_FORMAT, "ends after 26 bytes",
           "trunc-data.gz");
    memcpy(buf, good_img, good_img_len);
    buf[good_img_len] = 1;
    write_plain("extra-data", buf, good_img_len + 1);
    expect("extra bytes after the data (plain)", "extra-data", "good-labels", FEDC_ERR_FORMAT,
           "1 bytes after", "extra-data");
    write_gz("extra-data.gz", buf, good_img_len + 1);
    expect("extra bytes after the data (gzipped)", "extra-data.gz", "good-labels", FEDC_ERR_FORMAT,
           "bytes after", "extra-data.gz");

    /* A gzip file cut short, and one with damaged compressed bytes. */
    dims[0] = 40, dims[1] = 10, dims[2] = 10;
    for (size_t i = 0; i < 4000; i++) data[i] = (unsigned char)((i * 2654435761u) >> 13);
    len = make_idx(buf, 0x08, 3, dims, data, 4000);
    write_gz("big.gz", buf, len);
    unsigned char labels40[40] = {0};
    uint32_t ld[1] = {40};
    unsigned char lbuf[64];
    write_plain("labels40", lbuf, make_idx(lbuf, 0x08, 1, ld, labels40, 40));
    expect("control: 40 good images", "big.gz", "labels40", FEDC_OK, "", NULL);
    size_t gzlen;
    unsigned char *gz = read_all(path_of("big.gz"), &gzlen);
    write_plain("cut.gz", gz, gzlen / 2);
    expect("gzip stream cut in half", "cut.gz", "labels40", FEDC_ERR_FORMAT, "truncated", "cut.gz");
    write_plain("cut-trailer.gz", gz, gzlen - 4);
    expect("gzip stream without its length trailer", "cut-trailer.gz", "labels40", FEDC_ERR_FORMAT,
           "truncated", "cut-trailer.gz");
    for (size_t i = 40; i < 60; i++) gz[i] ^= 0x5a;
    write_plain("corrupt.gz", gz, gzlen);
    expect("corrupt gzip data", "corrupt.gz", "labels40", FEDC_ERR_FORMAT, "gzip", "corrupt.gz");
    free(gz);

    expect("image and label counts differ", "good-images", "labels40", FEDC_ERR_FORMAT, "holds 5 images but",
           "labels40");

    /* Headers that lie about their size. None of these may allocate what
     * they claim; the plain ones are checked against the file size. */
    dims[0] = 0xFFFFFFFFu, dims[1] = 28, dims[2] = 28;
    len = make_idx(buf, 0x08, 3, dims, data, 100);
    write_plain("huge-plain", buf, len);
    expect("huge claimed size (plain)", "huge-plain", "good-labels", FEDC_ERR_FORMAT, "truncated",
           "huge-plain");
    write_gz("huge.gz", buf, len);
    expect("huge claimed size (gzipped)", "huge.gz", "good-labels", FEDC_ERR_FORMAT, "more than a gzip file",
           "huge.gz");
    dims[0] = 200000, dims[1] = 28, dims[2] = 28; /* 157 MB: possible for a 4 KB gzip? no */
    len = make_idx(buf, 0x08, 3, dims, data, 3000);
    write_gz("lying.gz", buf, len);
    expect("claimed size beyond deflate's ratio", "lying.gz", "good-labels", FEDC_ERR_FORMAT,
           "more than a gzip file", "lying.gz");
    /* Mostly zeros compress well, so this claim (8 MB) passes the ratio
     * bound and the reader must notice the missing data while reading in
     * chunks, having allocated only what arrived. */
    dims[0] = 10204, dims[1] = 28, dims[2] = 28;
    static unsigned char mostly_zeros[(1 << 20) + 8192];
    fedc_rng rng;
    fedc_rng_seed(&rng, 1);
    for (size_t i = 0; i < 8192; i++) mostly_zeros[i] = (unsigned char)fedc_rng_u64(&rng);
    unsigned char *zbuf = malloc(sizeof mostly_zeros + 32);
    len = make_idx(zbuf, 0x08, 3, dims, mostly_zeros, sizeof mostly_zeros);
    write_gz("zeros.gz", zbuf, len);
    expect("claimed size within the ratio bound but data missing", "zeros.gz", "good-labels", FEDC_ERR_FORMAT,
           "ends after 1056768 bytes", "zeros.gz");
    free(zbuf);
    /* A real file larger than the first read buffer (4 MiB) grows it. */
    dims[0] = 6000, dims[1] = 28, dims[2] = 28;
    size_t big_len = 6000u * 784u;
    zbuf = calloc(1, big_len + 32);
    len = make_idx(zbuf, 0x08, 3, dims, NULL, 0) + big_len;
    zbuf[len - 1] = 255;
    write_gz("large.gz", zbuf, len);
    unsigned char *lz = calloc(1, 6000 + 16);
    uint32_t l6000[1] = {6000};
    size_t lzlen = make_idx(lz, 0x08, 1, l6000, NULL, 0) + 6000;
    lz[lzlen - 1] = 9;
    write_gz("large-labels.gz", lz, lzlen);
    fedc_dataset *large = NULL;
    int lrc = fedc_dataset_load_idx(path_of("large.gz"), path_of("large-labels.gz"), &large, err, sizeof err);
    CHECK(lrc == FEDC_OK && large->n == 6000 && large->x[big_len - 1] == 1.0f && large->y[5999] == 9 &&
              large->num_classes == 10,
          "a 4.7 MB gzipped file is read through the growing buffer (%s)", lrc ? err : "ok");
    fedc_dataset_destroy(large);
    free(zbuf);
    free(lz);
    dims[0] = 0xFFFFFFFFu, dims[1] = 0xFFFFFFFFu, dims[2] = 0xFFFFFFFFu;
    len = make_idx(buf, 0x08, 3, dims, data, 10);
    write_plain("overflow", buf, len);
    expect("dimensions whose product overflows", "overflow", "good-labels", FEDC_ERR_FORMAT,
           "invalid dimension size", "overflow");
    dims[0] = 0xFFFFFFFFu, dims[1] = 0x7FFFFFFFu, dims[2] = 0x7FFFFFFFu, dims[3] = 0x7FFFFFFFu;
    len = make_idx(buf, 0x08, 4, dims, data, 10);
    write_plain("overflow4", buf, len);
    expect("4-d dimensions whose product overflows", "overflow4", "good-labels", FEDC_ERR_FORMAT,
           "no file can hold", "overflow4");
    dims[0] = 5, dims[1] = 0, dims[2] = 3;
    len = make_idx(buf, 0x08, 3, dims, data, 0);
    write_plain("zero-rows", buf, len);
    expect("a zero image dimension", "zero-rows", "good-labels", FEDC_ERR_FORMAT, "invalid dimension size 0",
           "zero-rows");

    /* Labels out of range: int32 labels may be negative or huge. */
    unsigned char l32[20] = {0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
    dims[0] = 5;
    write_plain("neg-labels", buf, make_idx(buf, 0x0C, 1, dims, l32, 20));
    expect("negative int32 label", "good-images", "neg-labels", FEDC_ERR_FORMAT, "example 1 has label -1",
           "neg-labels");
    l32[4] = 0x00, l32[5] = 0x10, l32[6] = 0x00, l32[7] = 0x00;
    write_plain("big-labels", buf, make_idx(buf, 0x0C, 1, dims, l32, 20));
    expect("int32 label beyond the class limit", "good-images", "big-labels", FEDC_ERR_FORMAT,
           "label 1048576", "big-labels");

    /* Non-finite float32 pixels. */
    unsigned char f32[5 * 6 * 4] = {0};
    f32[8] = 0x7F, f32[9] = 0xC0; /* NaN as the third float */
    dims[0] = 5, dims[1] = 2, dims[2] = 3;
    write_plain("nan-images", buf, make_idx(buf, 0x0D, 3, dims, f32, sizeof f32));
    expect("NaN in float32 images", "nan-images", "good-labels", FEDC_ERR_FORMAT, "not a finite number",
           "nan-images");
}

static void test_load_dir(void)
{
    fedc_dataset *d = NULL;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/datadir", tmpdir);
    mkdir(dir, 0777);
    int rc = fedc_dataset_load_dir(dir, "train", &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_NOTFOUND && strstr(err, dir) && strstr(err, "train-images-idx3-ubyte") &&
              strstr(err, "train.csv"),
          "empty data dir: NOTFOUND naming the dir and the expected files: %s", err);
    write_gz("datadir/train-images-idx3-ubyte.gz", good_img, good_img_len);
    rc = fedc_dataset_load_dir(dir, "train", &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_NOTFOUND && strstr(err, "train-labels-idx1-ubyte"),
          "images without labels: NOTFOUND naming the labels: %s", err);
    write_gz("datadir/train-labels-idx1-ubyte.gz", good_lbl, good_lbl_len);
    write_plain("datadir/t10k-images-idx3-ubyte", good_img, good_img_len);
    write_plain("datadir/t10k-labels-idx1-ubyte", good_lbl, good_lbl_len);
    rc = fedc_dataset_load_dir(dir, "train", &d, err, sizeof err);
    CHECK(rc == FEDC_OK && d->n == 5, "IDX data dir, gzipped train split loads");
    fedc_dataset_destroy(d);
    rc = fedc_dataset_load_dir(dir, "test", &d, err, sizeof err);
    CHECK(rc == FEDC_OK && d->n == 5, "IDX data dir, plain t10k test split loads");
    fedc_dataset_destroy(d);
    rc = fedc_dataset_load_dir(dir, "validation", &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_INVALID && d == NULL, "unknown split name: %s", err);
    rc = fedc_dataset_load_dir(path_of("no-such-dir"), "train", &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_NOTFOUND && strstr(err, "no-such-dir"), "missing data dir: %s", err);
    rc = fedc_dataset_load_dir(path_of("good-images"), "train", &d, err, sizeof err);
    CHECK(rc == FEDC_ERR_NOTFOUND && strstr(err, "not a directory"), "a file as data dir: %s", err);

    snprintf(dir, sizeof dir, "%s/csvdir", tmpdir);
    mkdir(dir, 0777);
    write_plain("csvdir/train.csv", "label,a,b\n1,0.5,2\n0,3,4\n", 24);
    write_gz("csvdir/test.csv.gz", "1,0.5,2\n", 8);
    rc = fedc_dataset_load_dir(dir, "train", &d, err, sizeof err);
    CHECK(rc == FEDC_OK && d->n == 2 && d->features == 2 && d->x[0] == 0.5f, "CSV data dir, train.csv loads");
    fedc_dataset_destroy(d);
    rc = fedc_dataset_load_dir(dir, "test", &d, err, sizeof err);
    CHECK(rc == FEDC_OK && d->n == 1, "CSV data dir, test.csv.gz loads");
    fedc_dataset_destroy(d);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/fedc-test-idx-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    make_good_files();
    test_good();
    test_round_trip();
    test_corrupt();
    test_load_dir();
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
