/*
 * bench_strategy: what the server does in one round with each built-in
 * strategy, in time and memory.
 *
 * Builds U client updates (default 100) of one F32 tensor of N values
 * (default 1,048,576, 4 MiB), drawn from N(0, 0.05) with a fixed seed, and
 * a global model drawn the same way. For each strategy made by
 * fedc_strategy_create() (fedprox with --proximal-mu 0.01; krum, multikrum
 * and bulyan with --byzantine F, default min(10, (U - 3) / 4) so that
 * bulyan's n >= 4f + 3 holds; every other parameter at its default), one
 * timed round is, as in the server:
 *   streaming strategies (fedavg, fedavgm, fedprox, fedadagrad, fedadam,
 *   fedyogi, scaffold, fednova): reset the fixed-point accumulator, check
 *   and fold each update (fedc__fedavg_check_weight, fedc__fedavg_check_fold,
 *   commit), finalize the weighted mean into a new model, then
 *   aggregate_fit into another new model. SCAFFOLD's updates also carry a
 *   control-variate change of N values (the accumulator covers 2N values);
 *   FedNova's carry the metrics local_steps (10 to 29) and local_momentum
 *   0.9, from which fit_weight gives each update's weight;
 *   all-updates strategies (median, trimmed-mean, krum, multikrum,
 *   bulyan): the same check and fold of each update, plus a copy of it
 *   (fedc_params_clone, as the server keeps each accepted update), then
 *   aggregate_all over the U copies into a new model.
 * Reported: the seconds of the whole round and, of those, the seconds to
 * collect the updates (check, fold and, for all-updates, copy). For the
 * streaming strategies, each is the median of R rounds (--reps R, default
 * 5); the all-updates ones run one round each, since each takes seconds (a
 * sort of U values per coordinate, and for the Krum family O(U^2 N)
 * distances).
 *
 * Memory, per strategy:
 *   held_bytes   computed from sizes: the accumulator (8 bytes per value),
 *                the round's output models (mean and next: 8 bytes per
 *                value; next only for all-updates: 4), the strategy's
 *                state (8 bytes per value for fedavgm's momentum and
 *                SCAFFOLD's c, 16 for the adaptive ones), SCAFFOLD's
 *                doubled sums, mean and control tensors and its request,
 *                a copy of the model and c (8 + 4 + 4 + 8 bytes per value
 *                more), the kept updates (U x 4 bytes per value) and
 *                Krum's U x U distances;
 *   rss_growth_bytes  measured: each strategy runs in a forked child (the
 *                updates, made before the fork, are shared and not
 *                counted), which reports its peak RSS (VmHWM of
 *                /proc/self/status) at the end of its first round less
 *                its RSS when it started.
 *
 *   bench_strategy [--updates U] [--numel N] [--reps R] [--byzantine F] [--json]
 *
 * --json prints one JSON object with a key per strategy; otherwise a table.
 * The aggregate of each strategy's last round is checked for finite values
 * and summed into a printed checksum, so nothing can be optimised away.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "fedc/strategy.h"
#include "fedc/tensor.h"
#include "strategy/fedavg.h"

static const char *const names[] = {"fedavg",  "fedavgm",   "fedprox", "fedadagrad", "fedadam",
                                    "fedyogi", "scaffold",  "fednova", "median",     "trimmed-mean",
                                    "krum",    "multikrum", "bulyan"};
#define NSTRAT (sizeof names / sizeof names[0])

/* What a child reports to the parent through a pipe. */
typedef struct result {
    int ok;
    int all_updates;
    long reps;
    double seconds;    /* median over the reps */
    double collect;    /* of which checking, folding and keeping the updates (median) */
    double held_bytes; /* computed from sizes */
    double rss_growth; /* VmHWM - VmRSS at the start, bytes; < 0: unknown */
    double checksum;   /* sum of the last aggregate */
    char err[FEDC_ERRMSG_MAX];
} result;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A "VmXXX:   123 kB" line of /proc/self/status, in bytes; -1 if absent. */
static double proc_status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtod(line + kl + 1, NULL) * 1024.0;
            break;
        }
    }
    fclose(f);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int make_strategy(const char *name, long f, fedc_strategy **out, char *err, size_t errlen)
{
    fedc_config *params = fedc_config_create();
    if (!params) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    int rc = FEDC_OK;
    if (!strcmp(name, "fedprox")) rc = fedc_config_set_f64(params, "proximal_mu", 0.01);
    if (!strcmp(name, "krum") || !strcmp(name, "multikrum") || !strcmp(name, "bulyan"))
        rc = fedc_config_set_f64(params, "byzantine", (double)f);
    if (rc)
        rc = fedc_set_error(err, errlen, rc, "cannot set the parameters");
    else
        rc = fedc_strategy_create(name, params, out, err, errlen);
    fedc_config_destroy(params);
    return rc;
}

/* One round of strategy st over the updates; *next gets the result.
 * `sent` is what the clients were sent (global, then any fit_tensors);
 * metrics[u] is update u's FitRes metrics. */
static int one_round(fedc_strategy *st, fedc__fedavg *agg, const fedc_params *global, const fedc_params *sent,
                     fedc_params *const *updates, fedc_config *const *metrics, size_t n, fedc_params **next,
                     double *collect_s, char *err, size_t errlen)
{
    double t0 = now_s();
    int all = (st->flags & FEDC_STRATEGY_ALL_UPDATES) != 0;
    fedc_params **kept = all ? calloc(n, sizeof *kept) : NULL;
    uint64_t *weights = all ? malloc(n * sizeof *weights) : NULL;
    fedc_fit_info *fits = calloc(n, sizeof *fits);
    char(*ids)[24] = calloc(n, sizeof *ids);
    fedc_params *mean = NULL;
    int rc = FEDC_OK;
    if ((all && (!kept || !weights)) || !fits || !ids)
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    fedc__fedavg_reset(agg, (uint64_t)n);
    for (size_t u = 0; !rc && u < n; u++) {
        double weight = 1;
        const fedc_tensor *t = fedc_params_at(updates[u], 0);
        if (st->fit_weight) {
            rc = st->fit_weight(st->state, 1, 1, metrics[u], &weight, err, errlen);
            weight = fedc__fedavg_round_weight(weight);
        }
        if (!rc) rc = fedc__fedavg_check_weight(agg, weight, err, errlen);
        /* Every tensor of the request (SCAFFOLD's control change: the
         * update's values again). */
        for (size_t ti = 0; !rc && ti < fedc_params_count(sent); ti++)
            rc = fedc__fedavg_check_fold(agg, ti, 0, t->data, (size_t)fedc_tensor_numel(t), weight, err,
                                         errlen);
        if (rc) break;
        snprintf(ids[u], sizeof ids[u], "u%05zu", u);
        fits[u] = (fedc_fit_info){ids[u], 1, weight, metrics[u]};
        if (all) {
            kept[u] = fedc_params_clone(updates[u]);
            weights[u] = weight;
            if (!kept[u]) {
                fedc__fedavg_unfold(agg, 0, 0, t->data, (size_t)fedc_tensor_numel(t), weight);
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory to keep an update");
                break;
            }
        }
        fedc__fedavg_commit(agg, weight);
    }
    *collect_s = now_s() - t0;
    if (!rc && !all) {
        mean = fedc_params_clone(sent);
        rc = mean ? fedc__fedavg_finalize(agg, mean, err, errlen)
                  : fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    fedc_params *out = rc ? NULL : fedc_params_clone(global);
    if (!rc && !out) rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    fedc_round_info info = {1, (uint32_t)n, (uint32_t)n, n, fits};
    if (!rc && all)
        rc = st->aggregate_all(st->state, &info, global, (const fedc_params *const *)kept, weights, n, out,
                               err, errlen);
    else if (!rc)
        rc = st->aggregate_fit(st->state, &info, sent, mean, out, err, errlen);
    for (size_t u = 0; kept && u < n; u++) fedc_params_destroy(kept[u]);
    free(kept);
    free(fits);
    free(ids);
    free(weights);
    fedc_params_destroy(mean);
    if (rc) {
        fedc_params_destroy(out);
        return rc;
    }
    fedc_params_destroy(*next);
    *next = out;
    return FEDC_OK;
}

/* Runs strategy `name` for `reps` rounds (in a forked child) into *r. */
static void run_strategy(const char *name, long f, long reps, const fedc_params *global,
                         fedc_params *const *updates, size_t n, size_t numel, result *r)
{
    memset(r, 0, sizeof *r);
    r->rss_growth = -1;
    /* Reset the peak RSS to the current RSS where the kernel allows it. */
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    double rss0 = proc_status_bytes("VmRSS"), hwm = -1;
    fedc_strategy *st = NULL;
    fedc__fedavg agg;
    int agg_ready = 0;
    fedc_params *next = NULL, *request = NULL;
    const fedc_params *sent = global; /* what the clients are sent */
    fedc_config **metrics = calloc(n, sizeof *metrics);
    double *times = calloc(2 * (size_t)reps, sizeof *times), *collect = times + reps;
    int rc =
        times && metrics ? FEDC_OK : fedc_set_error(r->err, sizeof r->err, FEDC_ERR_NOMEM, "out of memory");
    for (size_t u = 0; !rc && u < n; u++) {
        metrics[u] = fedc_config_create();
        if (!metrics[u] || fedc_config_set_i64(metrics[u], "local_steps", 10 + (int64_t)(u % 20)) ||
            fedc_config_set_f64(metrics[u], "local_momentum", 0.9))
            rc = fedc_set_error(r->err, sizeof r->err, FEDC_ERR_NOMEM, "out of memory");
    }
    if (!rc) rc = make_strategy(name, f, &st, r->err, sizeof r->err);
    /* The all-updates strategies take seconds a round: one is enough. */
    if (!rc && (st->flags & FEDC_STRATEGY_ALL_UPDATES)) reps = 1;
    if (!rc && st->fit_tensors) {
        /* What the server sends: a copy of the model, then the strategy's
         * tensors (the server makes the same copy each round). */
        const fedc_params *extra = NULL;
        rc = st->fit_tensors(st->state, global, &extra, r->err, sizeof r->err);
        if (!rc && !(request = fedc_params_clone(global)))
            rc = fedc_set_error(r->err, sizeof r->err, FEDC_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < fedc_params_count(extra); i++) {
            const fedc_tensor *t = fedc_params_at(extra, i);
            rc = fedc_params_add(request, t->name, t->dtype, t->ndim, t->shape, t->data, NULL, r->err,
                                 sizeof r->err);
        }
        sent = request;
    }
    if (!rc) rc = fedc__fedavg_init(&agg, sent, (uint64_t)n, r->err, sizeof r->err);
    if (!rc) agg_ready = 1;
    for (long i = 0; !rc && i < reps; i++) {
        double t0 = now_s();
        rc =
            one_round(st, &agg, global, sent, updates, metrics, n, &next, &collect[i], r->err, sizeof r->err);
        times[i] = now_s() - t0;
        /* The peak of the first round: later rounds run with glibc's
         * raised mmap threshold, whose freed blocks may stay resident. */
        if (!rc && i == 0) hwm = proc_status_bytes("VmHWM");
    }
    if (!rc) {
        if (hwm >= 0 && rss0 >= 0) r->rss_growth = hwm - rss0;
        qsort(times, (size_t)reps, sizeof *times, cmp_double);
        qsort(collect, (size_t)reps, sizeof *collect, cmp_double);
        r->seconds = reps % 2 ? times[reps / 2] : (times[reps / 2 - 1] + times[reps / 2]) / 2;
        r->collect = reps % 2 ? collect[reps / 2] : (collect[reps / 2 - 1] + collect[reps / 2]) / 2;
        r->reps = reps;
        r->all_updates = (st->flags & FEDC_STRATEGY_ALL_UPDATES) != 0;
        const float *x = fedc_params_at(next, 0)->data;
        double sum = 0;
        for (size_t j = 0; j < numel; j++) sum += x[j];
        if (!isfinite(sum)) {
            rc = fedc_set_error(r->err, sizeof r->err, FEDC_ERR_NONFINITE, "the aggregate is not finite");
        } else {
            r->checksum = sum;
            double v = (double)numel;
            double held = 8 * v; /* the accumulator */
            if (r->all_updates) {
                held += 4 * v + (double)n * 4 * v; /* next, and the kept updates */
                if (!strcmp(name, "krum") || !strcmp(name, "multikrum") || !strcmp(name, "bulyan"))
                    held += (double)n * (double)n * 8; /* the distances */
            } else {
                held += 8 * v; /* mean and next */
                if (!strcmp(name, "fedavgm")) held += 8 * v;
                /* c's sums, c, its float copy, c's mean, and the request
                 * (a copy of the model and c) */
                if (!strcmp(name, "scaffold")) held += 8 * v + 8 * v + 4 * v + 4 * v + 8 * v;
                if (!strcmp(name, "fedadagrad") || !strcmp(name, "fedadam") || !strcmp(name, "fedyogi"))
                    held += 16 * v;
            }
            r->held_bytes = held;
            r->ok = 1;
        }
    }
    free(times);
    for (size_t u = 0; metrics && u < n; u++) fedc_config_destroy(metrics[u]);
    free(metrics);
    fedc_params_destroy(request);
    fedc_params_destroy(next);
    if (agg_ready) fedc__fedavg_free(&agg);
    fedc_strategy_destroy(st);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_strategy [--updates U] [--numel N] [--reps R] [--byzantine F] [--json]\n");
}

int main(int argc, char **argv)
{
    long updates = 100, numel = 1048576, reps = 5, f = -1;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        long *dst = NULL;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(argv[i], "--updates"))
            dst = &updates;
        else if (!strcmp(argv[i], "--numel"))
            dst = &numel;
        else if (!strcmp(argv[i], "--reps"))
            dst = &reps;
        else if (!strcmp(argv[i], "--byzantine"))
            dst = &f;
        if (!dst || i + 1 >= argc) {
            usage();
            return 2;
        }
        char *end;
        *dst = strtol(argv[++i], &end, 10);
        if (*end || *dst < 0) {
            usage();
            return 2;
        }
    }
    if (updates < 1 || numel < 1 || reps < 1) {
        usage();
        return 2;
    }
    if (f < 0) f = updates >= 3 ? ((updates - 3) / 4 < 10 ? (updates - 3) / 4 : 10) : 0;

    char err[FEDC_ERRMSG_MAX];
    int exit_code = 1;
    fedc_params *global = fedc_params_create();
    fedc_params **ups = calloc((size_t)updates, sizeof *ups);
    const int64_t shape[1] = {numel};
    if (!global || !ups || fedc_params_add(global, "w", FEDC_F32, 1, shape, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_strategy: cannot make the model\n");
        goto done;
    }
    fedc_rng rng;
    fedc_rng_seed(&rng, 42);
    float *g = fedc_params_at(global, 0)->data;
    for (long j = 0; j < numel; j++) g[j] = (float)(0.05 * fedc_rng_normal(&rng));
    for (long u = 0; u < updates; u++) {
        ups[u] = fedc_params_clone(global);
        if (!ups[u]) {
            fprintf(stderr, "bench_strategy: out of memory for the updates\n");
            goto done;
        }
        float *v = fedc_params_at(ups[u], 0)->data;
        for (long j = 0; j < numel; j++) v[j] = (float)(0.05 * fedc_rng_normal(&rng));
    }

    result res[NSTRAT];
    double model_bytes = 4.0 * (double)numel;
    int failed = 0;
    for (size_t s = 0; s < NSTRAT; s++) {
        int fd[2];
        memset(&res[s], 0, sizeof res[s]);
        if (pipe(fd)) {
            snprintf(res[s].err, sizeof res[s].err, "pipe failed");
            failed = 1;
            continue;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            result mine;
            run_strategy(names[s], f, reps, global, ups, (size_t)updates, (size_t)numel, &mine);
            ssize_t w = write(fd[1], &mine, sizeof mine);
            _exit(w == (ssize_t)sizeof mine ? 0 : 1);
        }
        close(fd[1]);
        if (pid < 0) {
            close(fd[0]);
            snprintf(res[s].err, sizeof res[s].err, "fork failed");
            failed = 1;
            continue;
        }
        size_t got = 0;
        while (got < sizeof res[s]) {
            ssize_t k = read(fd[0], (char *)&res[s] + got, sizeof res[s] - got);
            if (k <= 0) break;
            got += (size_t)k;
        }
        close(fd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (got != sizeof res[s]) {
            memset(&res[s], 0, sizeof res[s]);
            snprintf(res[s].err, sizeof res[s].err, "the child died (status %d)", status);
        }
        if (!res[s].ok) {
            fprintf(stderr, "bench_strategy: %s: %s\n", names[s], res[s].err);
            failed = 1;
        }
    }

    double checksum = 0;
    for (size_t s = 0; s < NSTRAT; s++) checksum += res[s].ok ? res[s].checksum : 0;
    if (json) {
        printf("{\"updates\": %ld, \"numel\": %ld, \"byzantine\": %ld, \"model_bytes\": %.0f", updates, numel,
               f, model_bytes);
        for (size_t s = 0; s < NSTRAT; s++) {
            const result *r = &res[s];
            if (!r->ok) {
                printf(", \"%s\": null", names[s]);
                continue;
            }
            printf(", \"%s\": {\"seconds\": %.6f, \"collect_seconds\": %.6f, \"reps\": %ld, \"all_updates\": "
                   "%s, \"held_bytes\": %.0f, "
                   "\"held_models\": %.2f, \"rss_growth_bytes\": %.0f, \"rss_growth_models\": %.2f}",
                   names[s], r->seconds, r->collect, r->reps, r->all_updates ? "true" : "false",
                   r->held_bytes, r->held_bytes / model_bytes, r->rss_growth, r->rss_growth / model_bytes);
        }
        printf(", \"checksum\": %.6e}\n", checksum);
    } else {
        printf("%ld updates of %ld F32 values (model %.1f MiB), byzantine %ld\n", updates, numel,
               model_bytes / 1048576.0, f);
        printf("%-13s %-11s %10s %10s %5s %14s %14s\n", "strategy", "kind", "seconds", "collect", "reps",
               "held MiB (xM)", "RSS+ MiB (xM)");
        for (size_t s = 0; s < NSTRAT; s++) {
            const result *r = &res[s];
            if (!r->ok) {
                printf("%-13s failed: %s\n", names[s], r->err);
                continue;
            }
            printf("%-13s %-11s %10.4f %10.4f %5ld %7.1f (%5.1f) %7.1f (%5.1f)\n", names[s],
                   r->all_updates ? "all-updates" : "streaming", r->seconds, r->collect, r->reps,
                   r->held_bytes / 1048576.0, r->held_bytes / model_bytes, r->rss_growth / 1048576.0,
                   r->rss_growth / model_bytes);
        }
        printf("checksum %.6e\n", checksum);
    }
    exit_code = failed;
done:
    for (long u = 0; ups && u < updates; u++) fedc_params_destroy(ups[u]);
    free(ups);
    fedc_params_destroy(global);
    return exit_code;
}
