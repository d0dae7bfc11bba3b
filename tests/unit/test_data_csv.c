/* CSV reader: headers, options, and bad rows reported by file and line. */
#define _GNU_SOURCE 1 /* nftw's FTW_DEPTH | FTW_PHYS */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "fedc/data.h"
#include "test_util.h"

static char tmpdir[256];
static char err[FEDC_ERRMSG_MAX];

static const char *path_of(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static const char *write_text(const char *name, const char *text)
{
    const char *path = path_of(name);
    FILE *f = fopen(path, "wb");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(name);
        exit(1);
    }
    return path;
}

/* Loads `text` as a CSV file and returns the dataset, or NULL after
 * checking the failure's status and message. */
static fedc_dataset *load(const char *name, const char *text, const fedc_csv_options *opt)
{
    fedc_dataset *d = NULL;
    err[0] = '\0';
    int rc = fedc_dataset_load_csv(write_text(name, text), opt, &d, err, sizeof err);
    if (rc != FEDC_OK) {
        CHECK(0, "%s: unexpected failure %d: %s", name, rc, err);
        return NULL;
    }
    return d;
}

static void expect_fail(const char *what, const char *name, const char *text, const fedc_csv_options *opt,
                        int want, const char *needle)
{
    fedc_dataset *d = (fedc_dataset *)0x1;
    err[0] = '\0';
    const char *path = text ? write_text(name, text) : path_of(name);
    int rc = fedc_dataset_load_csv(path, opt, &d, err, sizeof err);
    CHECK(rc == want && d == NULL && strstr(err, needle) && strstr(err, name),
          "%s: status %d (%s), expected %d; message: %s", what, rc, fedc_strerror(rc), want, err);
    if (rc == FEDC_OK) fedc_dataset_destroy(d);
}

static void test_good(void)
{
    fedc_csv_options opt;
    fedc_dataset *d = load("plain.csv", "1,0.5,-2.25\n0,3,4e2\n2,0,0\n", NULL);
    if (d) {
        CHECK(d->n == 3 && d->features == 2 && d->channels == 1 && d->height == 1 && d->width == 2,
              "no header: 3 rows of 2 features, shape 1x1x2");
        CHECK(d->y[0] == 1 && d->y[1] == 0 && d->y[2] == 2 && d->num_classes == 3,
              "labels from the first column, num_classes 3");
        CHECK(d->x[0] == 0.5f && d->x[1] == -2.25f && d->x[3] == 400.0f, "features taken as is by default");
        fedc_dataset_destroy(d);
    }
    d = load("header.csv", "label,pixel1,pixel2\n1,10,20\n0,30,40\n", NULL);
    CHECK(d && d->n == 2 && d->x[0] == 10.0f, "a text header is detected and skipped");
    fedc_dataset_destroy(d);

    fedc_csv_options_init(&opt);
    opt.header = FEDC_CSV_HEADER_YES;
    d = load("numeric-header.csv", "0,1,2\n1,10,20\n", &opt);
    CHECK(d && d->n == 1 && d->y[0] == 1, "header=YES skips a numeric first line");
    fedc_dataset_destroy(d);

    opt.header = FEDC_CSV_HEADER_NO;
    expect_fail("header=NO makes a text first line a bad row", "no-header.csv", "label,a\n1,2\n", &opt,
                FEDC_ERR_FORMAT, "no-header.csv:1:");

    fedc_csv_options_init(&opt);
    opt.scale = 1;
    d = load("scaled.csv", "3,255,0,51\n", &opt);
    CHECK(d && d->x[0] == 1.0f && d->x[1] == 0.0f && d->x[2] == 51.0f / 255.0f,
          "scale divides pixels by 255");
    fedc_dataset_destroy(d);

    fedc_csv_options_init(&opt);
    opt.label_column = -1;
    opt.delimiter = ';';
    d = load("last.csv", "\"a\";\"b\";\"y\"\r\n 1.5 ; 2 ; 1 \r\n\r\n3;4;0\r\n\n", &opt);
    CHECK(d && d->n == 2 && d->y[0] == 1 && d->y[1] == 0 && d->x[0] == 1.5f && d->x[3] == 4.0f,
          "label in the last column, ';' delimiter, quotes, blanks, CRLF, empty lines");
    fedc_dataset_destroy(d);

    fedc_csv_options_init(&opt);
    opt.label_column = 1;
    d = load("middle.csv", "5,1,6\n7,0,8", &opt);
    CHECK(d && d->n == 2 && d->y[0] == 1 && d->x[0] == 5.0f && d->x[1] == 6.0f,
          "label in a middle column; last line without newline");
    fedc_dataset_destroy(d);

    fedc_csv_options_init(&opt);
    opt.height = 2;
    opt.width = 2;
    d = load("shaped.csv", "1,1,2,3,4\n", &opt);
    CHECK(d && d->channels == 1 && d->height == 2 && d->width == 2, "height/width options");
    fedc_dataset_destroy(d);
    opt.width = 3;
    expect_fail("shape that does not match the columns", "shaped.csv", "1,1,2,3,4\n", &opt, FEDC_ERR_INVALID,
                "4 features");

    fedc_csv_options_init(&opt);
    opt.num_classes = 10;
    d = load("classes.csv", "1,0\n2,0\n", &opt);
    CHECK(d && d->num_classes == 10, "num_classes option sets the class count");
    fedc_dataset_destroy(d);
    d = load("float-label.csv", "3.0,1\n0,1\n", NULL);
    CHECK(d && d->y[0] == 3, "a label written 3.0 is accepted");
    fedc_dataset_destroy(d);
    d = load("one-class.csv", "0,1\n0,2\n", NULL);
    CHECK(d && d->num_classes == 2, "a single class still gives num_classes 2");
    fedc_dataset_destroy(d);

    const char *gz_path = path_of("zipped.csv.gz");
    gzFile gz = gzopen(gz_path, "wb");
    gzputs(gz, "label,x\n1,0.25\n0,0.75\n");
    gzclose(gz);
    d = NULL;
    int rc = fedc_dataset_load_csv(gz_path, NULL, &d, err, sizeof err);
    CHECK(rc == FEDC_OK && d->n == 2 && d->x[1] == 0.75f, "gzipped CSV loads");
    fedc_dataset_destroy(d);

    /* Rows wider than the reader's first line buffer. */
    size_t wide = 3000;
    char *text = malloc(wide * 8 + 16);
    char *p = text;
    p += sprintf(p, "1");
    for (size_t i = 0; i < wide; i++) p += sprintf(p, ",%zu", i % 256);
    strcpy(p, "\n");
    d = load("wide.csv", text, NULL);
    CHECK(d && d->features == wide && d->x[wide - 1] == (float)((wide - 1) % 256), "a row of %zu features",
          wide);
    fedc_dataset_destroy(d);
    free(text);
}

static void test_bad(void)
{
    fedc_csv_options opt;
    expect_fail("missing file", "no-such.csv", NULL, NULL, FEDC_ERR_NOTFOUND, "No such file");
    expect_fail("empty file", "empty.csv", "", NULL, FEDC_ERR_FORMAT, "no data rows");
    expect_fail("only blank lines", "blank.csv", "\n\n  \n", NULL, FEDC_ERR_FORMAT, "no data rows");
    expect_fail("header only", "header-only.csv", "label,a,b\n", NULL, FEDC_ERR_FORMAT, "only a header");
    expect_fail("non-numeric feature", "bad-feature.csv", "1,2,3\n0,4,5\n1,x7,6\n", NULL, FEDC_ERR_FORMAT,
                "bad-feature.csv:3: field 2 'x7' is not a finite number");
    expect_fail("too few fields", "short-row.csv", "1,2,3\n0,4\n", NULL, FEDC_ERR_FORMAT,
                "short-row.csv:2: expected 3 fields, found 2");
    expect_fail("too many fields", "long-row.csv", "l,a,b\n1,2,3\n0,4,5,6\n", NULL, FEDC_ERR_FORMAT,
                "long-row.csv:3: expected 3 fields, found 4");
    expect_fail("header and rows of different widths", "header-width.csv", "l,a,b,c\n1,2,3\n", NULL,
                FEDC_ERR_FORMAT, "header-width.csv:2: the header has 4 fields");
    expect_fail("empty field", "empty-field.csv", "1,,3\n", NULL, FEDC_ERR_FORMAT,
                "empty-field.csv:1: field 2");
    expect_fail("NaN feature", "nan.csv", "1,nan,3\n", NULL, FEDC_ERR_FORMAT, "nan.csv:1: field 2 'nan'");
    expect_fail("feature beyond float range", "huge.csv", "1,1e300\n", NULL, FEDC_ERR_FORMAT,
                "huge.csv:1: field 2 '1e300' does not fit a float");
    expect_fail("fractional label", "frac-label.csv", "1,2\n2.5,3\n", NULL, FEDC_ERR_FORMAT,
                "frac-label.csv:2: label '2.5' is not a whole number");
    expect_fail("negative label", "neg-label.csv", "1,2\n-1,3\n", NULL, FEDC_ERR_RANGE,
                "neg-label.csv:2: label -1 is outside");
    expect_fail("non-numeric label after the first row", "text-label.csv", "1,2\ncat,3\n", NULL,
                FEDC_ERR_FORMAT, "text-label.csv:2: label 'cat'");
    fedc_csv_options_init(&opt);
    opt.num_classes = 10;
    expect_fail("label beyond num_classes", "label-range.csv", "1,2\n10,3\n", &opt, FEDC_ERR_RANGE,
                "label-range.csv:2: label 10 is outside [0, 10)");
    expect_fail("huge label", "huge-label.csv", "1,2\n99999999,3\n", NULL, FEDC_ERR_RANGE,
                "huge-label.csv:2:");
    expect_fail("a single column", "one-column.csv", "1\n2\n", NULL, FEDC_ERR_FORMAT,
                "one-column.csv:1: found 1 field");
    fedc_csv_options_init(&opt);
    opt.label_column = 5;
    expect_fail("label column beyond the row", "label-col.csv", "1,2,3\n", &opt, FEDC_ERR_FORMAT,
                "label column 5 does not exist");
    fedc_csv_options_init(&opt);
    opt.delimiter = '.';
    expect_fail("a delimiter that cannot separate numbers", "delim.csv", "1.2\n", &opt, FEDC_ERR_INVALID,
                "delimiter");
    fedc_csv_options_init(&opt);
    opt.num_classes = 1;
    expect_fail("num_classes option of 1", "nc.csv", "1,2\n", &opt, FEDC_ERR_INVALID, "num_classes");
    expect_fail("binary garbage", "garbage.csv", "\x01\x02\xff\xfe,\x80\n\x7f\x03,\x90\n", NULL,
                FEDC_ERR_FORMAT, "garbage.csv:2:");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/fedc-test-csv-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_good();
    test_bad();
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
