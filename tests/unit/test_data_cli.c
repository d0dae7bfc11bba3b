/* The `fedc partition` subcommand: flags, exit codes and output, run in
 * process through fedc_cmd_partition. */
#define _GNU_SOURCE 1 /* nftw's FTW_DEPTH | FTW_PHYS */
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/data.h"

#include "../../tools/commands.h"
#include "test_util.h"

static char tmpdir[256];
static char data_dir[512];

/* Runs `fedc partition` with the arguments first, then ap (NULL-terminated). */
static int run_list(const char *first, va_list ap)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "partition";
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    argv[argc] = NULL;
    fflush(stdout);
    int rc = fedc_cmd_partition(argc, argv);
    fflush(stdout);
    fflush(stderr);
    return rc;
}

/* Runs `fedc partition` with the given arguments (NULL-terminated). */
static int run(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    int rc = run_list(first, ap);
    va_end(ap);
    return rc;
}

static const char *out_path(const char *name)
{
    static char buf[4][600];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 600, "%s/%s", tmpdir, name);
    return p;
}

/* Runs `fedc partition` with stderr going to a file; 1 if the exit code is
 * `want_rc` and the message holds `want`. */
static int run_says(int want_rc, const char *want, const char *first, ...)
{
    char path[600];
    snprintf(path, sizeof path, "%s/stderr.txt", tmpdir);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    if (saved < 0 || !f) return 0;
    dup2(fileno(f), 2);
    va_list ap;
    va_start(ap, first);
    int rc = run_list(first, ap);
    va_end(ap);
    dup2(saved, 2);
    close(saved);
    char text[2048] = "";
    rewind(f);
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    if (rc != want_rc || !strstr(text, want)) {
        printf("     exit %d, said: %s", rc, text);
        return 0;
    }
    return 1;
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

int main(void)
{
    char err[FEDC_ERRMSG_MAX];
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/fedc-test-cli-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    /* 200 examples of 2x2 pixels, 4 classes. */
    snprintf(data_dir, sizeof data_dir, "%s/data", tmpdir);
    mkdir(data_dir, 0777);
    fedc_dataset *d = NULL;
    if (fedc_dataset_create(200, 1, 2, 2, 4, &d, err, sizeof err) != FEDC_OK) return 1;
    for (size_t i = 0; i < 200; i++) {
        d->y[i] = (int32_t)(i % 4);
        for (int j = 0; j < 4; j++) d->x[4 * i + j] = (float)((i + j) % 256) / 255.0f;
    }
    char img[600], lbl[600];
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte.gz", data_dir);
    snprintf(lbl, sizeof lbl, "%s/train-labels-idx1-ubyte.gz", data_dir);
    if (fedc_dataset_save_idx(d, img, lbl, err, sizeof err) != FEDC_OK) return 1;
    fedc_dataset_destroy(d);
    fedc_log_set_level(FEDC_LOG_WARN);

    CHECK(run("--help", NULL) == 0, "--help exits 0");
    CHECK(run("--clients", "abc", "--out", out_path("x"), NULL) == 2, "non-numeric --clients exits 2");
    CHECK(run("--clients", "-3", "--out", out_path("x"), NULL) == 2, "negative --clients exits 2");
    CHECK(run("--clients", "0", "--out", out_path("x"), NULL) == 2, "--clients 0 exits 2");
    CHECK(run("--clients", "4", "--scheme", "dirichlet", "--alpha", "0", "--out", out_path("x"), NULL) == 2,
          "--alpha 0 exits 2");
    CHECK(run("--clients", "4", "--scheme", "dirichlet", "--alpha", "-1", "--out", out_path("x"), NULL) == 2,
          "--alpha -1 exits 2");
    CHECK(run("--clients", "4", "--scheme", "dirichlet", "--alpha", "x", "--out", out_path("x"), NULL) == 2,
          "--alpha x exits 2");
    CHECK(run("--clients", "4", "--data", data_dir, NULL) == 2, "missing --out exits 2");
    CHECK(run("--out", out_path("x"), NULL) == 2, "missing --clients exits 2");
    CHECK(run("--clients", "4", "--scheme", "random", "--out", out_path("x"), NULL) == 2,
          "unknown --scheme exits 2");
    CHECK(run("--clients", "4", "--bogus", "--out", out_path("x"), NULL) == 2, "unknown flag exits 2");
    CHECK(run("--clients", "4", "--out", NULL) == 2, "flag without its value exits 2");
    CHECK(run("--clients", "4", "--test-fraction", "1.5", "--out", out_path("x"), NULL) == 2,
          "--test-fraction 1.5 exits 2");
    CHECK(run("--clients", "4", "--seed", "1x", "--out", out_path("x"), NULL) == 2,
          "malformed --seed exits 2");
    CHECK(run("--clients", "4", "--alpha", "0.5", "--out", out_path("x"), NULL) == 2,
          "--alpha without --scheme dirichlet exits 2");
    CHECK(run("--clients", "4", "--out", out_path("x"), "stray", NULL) == 2, "a stray argument exits 2");
    CHECK(access(out_path("x"), F_OK) != 0, "no usage error created the output directory");

    CHECK(run("--data", data_dir, "--clients", "4", "--scheme", "shards", "--labels-per-client", "1",
              "--seed", "3", "--out", out_path("shards"), NULL) == 0,
          "shards into 4 clients exits 0");
    fedc_dataset *c0 = NULL;
    char cdir[700];
    snprintf(cdir, sizeof cdir, "%s/client-003", out_path("shards"));
    int rc = fedc_dataset_load_dir(cdir, "train", &c0, err, sizeof err);
    CHECK(rc == FEDC_OK && c0->n == 45, "client-003 holds 45 training examples (%s)", rc ? err : "ok");
    fedc_dataset_destroy(c0);
    snprintf(cdir, sizeof cdir, "%s/partition.json", out_path("shards"));
    CHECK(access(cdir, F_OK) == 0, "partition.json is written");

    CHECK(run("--data", data_dir, "--clients", "21", "--out", out_path("too-many"), NULL) == 1,
          "21 clients x 10 > 200 examples exits 1");
    CHECK(run("--data", out_path("no-such-data"), "--clients", "2", "--out", out_path("y"), NULL) == 1,
          "a missing data dir exits 1");
    CHECK(run("--data", data_dir, "--clients", "2", "--scheme", "dirichlet", "--alpha", "0.1",
              "--test-fraction", "0", "--min-samples", "50", "--seed", "18446744073709551615", "--out",
              out_path("dir"), NULL) == 0,
          "dirichlet with every option and the largest seed exits 0");

    /* The sample scheme: more clients than examples. */
    CHECK(run_says(2, "--scheme sample needs --examples-per-client", "--clients", "300", "--scheme", "sample",
                   "--out", out_path("x"), NULL),
          "--scheme sample without --examples-per-client exits 2 and says so");
    CHECK(run_says(2, "--examples-per-client applies only to --scheme sample", "--clients", "4",
                   "--examples-per-client", "5", "--out", out_path("x"), NULL),
          "--examples-per-client with iid exits 2 and says so");
    CHECK(run_says(2, "--examples-per-client: '0' is not a positive integer", "--clients", "4", "--scheme",
                   "sample", "--examples-per-client", "0", "--out", out_path("x"), NULL),
          "--examples-per-client 0 exits 2 and says so");
    CHECK(run_says(1, "cannot draw 201 distinct examples per client from a dataset of 200", "--data",
                   data_dir, "--clients", "4", "--scheme", "sample", "--examples-per-client", "201", "--out",
                   out_path("x"), NULL),
          "more examples per client than the dataset holds exits 1 and says so");
    CHECK(run_says(1, "below the minimum of 10", "--data", data_dir, "--clients", "4", "--scheme", "sample",
                   "--examples-per-client", "5", "--out", out_path("x"), NULL),
          "examples per client below --min-samples exits 1 and says so");
    CHECK(run("--data", data_dir, "--clients", "250", "--scheme", "sample", "--examples-per-client", "5",
              "--min-samples", "5", "--seed", "9", "--out", out_path("sample"), NULL) == 0,
          "sample: 250 clients of 5 from 200 examples exits 0");
    snprintf(cdir, sizeof cdir, "%s/client-249", out_path("sample"));
    fedc_dataset *c249 = NULL, *t249 = NULL;
    rc = fedc_dataset_load_dir(cdir, "train", &c249, err, sizeof err);
    if (rc == FEDC_OK) rc = fedc_dataset_load_dir(cdir, "test", &t249, err, sizeof err);
    CHECK(rc == FEDC_OK && c249->n == 4 && t249->n == 1,
          "client-249 holds 4 training and 1 test example (%s)", rc ? err : "ok");
    fedc_dataset_destroy(c249);
    fedc_dataset_destroy(t249);

    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
