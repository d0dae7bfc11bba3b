/*
 * bench_round: one federated round over loopback, without training.
 *
 * Writes a model of one F32 tensor of E elements (default 1,048,576:
 * 4 MiB, values from N(0, 0.05)) to a temporary directory, starts the real
 * `fedc server` program on it as a child process
 *
 *   fedc server --initial-model MODEL --rounds 1 --min-clients N
 *               --fraction-evaluate 0 --out OUT --listen 127.0.0.1:0
 *
 * reads the port it bound from its log line "listening on ... (port P)",
 * then forks N client processes. Each client uses the client library
 * (fedc/client.h) and answers the fit request with the model it received,
 * unchanged, and num_examples = 1. The round thus measures the server
 * sending the model to N clients, receiving N updates, validating and
 * folding them, and finalising the average.
 *
 * It reports
 *   round_seconds   the round's "seconds" from OUT/metrics.jsonl (the
 *                   server's own clock, from sampling the clients to the
 *                   end of the round);
 *   server_rss_mib  the server's peak resident set (ru_maxrss from wait4()
 *                   on the server process), in MiB and as a multiple of the
 *                   model size.
 *
 *   bench_round [--clients N] [--elements E] [--fedc PATH] [--timeout S]
 *               [--keep] [--json]
 *
 * Every wait is bounded by --timeout (default 120 s); on expiry the server
 * and clients are killed and the run fails. The fedc program defaults to
 * the one built next to this benchmark.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "bench_proc.h"
#include "fedc/client.h"
#include "fedc/core.h"
#include "fedc/tensor.h"

#ifndef FEDC_BENCH_FEDC_PATH
#define FEDC_BENCH_FEDC_PATH "fedc"
#endif

#define MAX_CLIENTS 1000
#define PROG        "bench_round"

static void usage(void)
{
    fprintf(stderr, "usage: bench_round [--clients N] [--elements E] [--fedc PATH] [--timeout S] "
                    "[--keep] [--json]\n");
}

/* ---- the client ------------------------------------------------------- */

static int echo_fit(void *user, fedc_params *params, const fedc_config *config, uint64_t *num_examples,
                    fedc_config *metrics, char *err, size_t errlen)
{
    (void)user;
    (void)params;
    (void)config;
    (void)metrics;
    (void)err;
    (void)errlen;
    *num_examples = 1;
    return FEDC_OK;
}

/* Runs in a forked child: one client until the server says the federation
 * is over. Never returns. */
static void run_client(int port, int index, double timeout)
{
    char server[64], id[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    snprintf(id, sizeof id, "bench-client-%03d", index);
    fedc_log_set_level(FEDC_LOG_WARN);
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    opt.server = server;
    opt.node_id = id;
    opt.connect_timeout = timeout;
    opt.insecure = 1; /* the protocol's own cost, without TLS */
    opt.io_timeout = timeout;
    fedc_client_callbacks cb = {NULL, echo_fit, NULL};
    fedc_client *c = fedc_client_create(&opt, &cb, NULL);
    if (!c) _exit(3);
    int rc = fedc_client_run(c);
    if (rc) fprintf(stderr, "bench_round: client %d: %s\n", index, fedc_client_errmsg(c));
    fedc_client_destroy(c);
    _exit(rc ? 1 : 0);
}

/* Waits for pid until the deadline; 0 when it exited (status set). */
static int wait_until(pid_t pid, double deadline, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return 0;
        if (r < 0 && errno != EINTR) return -1;
        if (bench_now_s() > deadline) return -1;
        bench_sleep_ms(5);
    }
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    long clients = 10, elements = 1048576;
    double timeout = 120;
    const char *fedc = FEDC_BENCH_FEDC_PATH;
    int json = 0, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--keep")) {
            keep = 1;
        } else if (!strcmp(a, "--fedc") && i + 1 < argc) {
            fedc = argv[++i];
        } else if ((!strcmp(a, "--clients") || !strcmp(a, "--elements") || !strcmp(a, "--timeout")) &&
                   i + 1 < argc) {
            char *e;
            double v = strtod(argv[++i], &e);
            long lim = !strcmp(a, "--clients") ? MAX_CLIENTS : !strcmp(a, "--timeout") ? 86400 : 1L << 30;
            if (*e || !(v >= 1) || v > (double)lim || (strcmp(a, "--timeout") && v != (double)(long)v)) {
                fprintf(stderr, "bench_round: bad value '%s' for %s\n", argv[i], a);
                return 2;
            }
            if (!strcmp(a, "--clients"))
                clients = (long)v;
            else if (!strcmp(a, "--elements"))
                elements = (long)v;
            else
                timeout = v;
        } else {
            usage();
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);

    int exit_code = 1;
    bench_dir d = {.dir = ""};
    pid_t server = -1;
    pid_t *kids = calloc((size_t)clients, sizeof *kids);
    char *metrics = NULL;
    cJSON *rec = NULL;
    if (!kids) {
        fprintf(stderr, "bench_round: out of memory\n");
        return 1;
    }

    if (bench_dir_create(&d, PROG)) goto done;
    /* The model file. It is freed before the server is forked, so that the
     * server child starts from a small copy of this process. */
    if (bench_write_model(PROG, &d, elements, 0.05)) goto done;

    double deadline = bench_now_s() + timeout;
    char nclients[32], tmo[32];
    snprintf(nclients, sizeof nclients, "%ld", clients);
    snprintf(tmo, sizeof tmo, "%.0f", timeout);
    char *const sargv[] = {
        (char *)fedc,    "server",      "--initial-model",     d.model, "--rounds",        "1",
        "--min-clients", nclients,      "--fraction-evaluate", "0",     "--out",           d.out,
        "--listen",      "127.0.0.1:0", "--wait-timeout",      tmo,     "--round-timeout", tmo,
        "--insecure",    NULL};
    server = bench_spawn(PROG, sargv, d.log, "info");
    if (server < 0) goto done;

    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    int port = bench_wait_port(PROG, &server, d.log, deadline, timeout, 0);
    if (!port) goto done;

    for (long i = 0; i < clients; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "bench_round: fork: %s\n", strerror(errno));
            goto done;
        }
        if (pid == 0) run_client(port, (int)i, timeout);
        kids[i] = pid;
    }

    /* Wait for the server; a client that fails meanwhile ends the run
     * early instead of leaving the server waiting for it. */
    long clients_left = clients;
    for (;;) {
        pid_t r = wait4(server, &status, WNOHANG, &ru);
        if (r == server) {
            server = -1;
            break;
        }
        for (long i = 0; i < clients; i++) {
            int st = 0;
            if (kids[i] <= 0 || waitpid(kids[i], &st, WNOHANG) != kids[i]) continue;
            kids[i] = 0;
            clients_left--;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "bench_round: client %ld failed (status %d)\n", i, st);
                goto done;
            }
        }
        if (bench_now_s() > deadline) {
            fprintf(stderr, "bench_round: the round did not finish within %.0f s\n", timeout);
            goto done;
        }
        bench_sleep_ms(5);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = bench_read_file(d.log);
        fprintf(stderr, "bench_round: the server failed (status %d):\n%s\n", status, log ? log : "");
        free(log);
        goto done;
    }
    for (long i = 0; i < clients && clients_left > 0; i++) {
        int st = 0;
        if (kids[i] <= 0) continue;
        if (wait_until(kids[i], deadline, &st)) {
            fprintf(stderr, "bench_round: client %ld did not finish within %.0f s\n", i, timeout);
            goto done;
        }
        kids[i] = 0;
        clients_left--;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "bench_round: client %ld failed (status %d)\n", i, st);
            goto done;
        }
    }

    metrics = bench_read_file(d.metrics);
    rec = metrics ? cJSON_Parse(metrics) : NULL;
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(rec, "seconds");
    const cJSON *ok = cJSON_GetObjectItemCaseSensitive(rec, "clients_ok");
    const cJSON *failed = cJSON_GetObjectItemCaseSensitive(rec, "failed");
    if (!cJSON_IsNumber(sec) || !cJSON_IsNumber(ok) || cJSON_IsTrue(failed)) {
        fprintf(stderr, "bench_round: no usable round record in metrics.jsonl: %s\n",
                metrics ? metrics : "(none)");
        goto done;
    }
    if ((long)ok->valuedouble != clients) {
        fprintf(stderr, "bench_round: %ld of %ld clients returned an update\n", (long)ok->valuedouble,
                clients);
        goto done;
    }

    double model_mib = (double)elements * sizeof(float) / (1024.0 * 1024.0);
    double rss_mib = (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
    if (json) {
        printf("{\"clients\": %ld, \"round_seconds\": %.4f, \"server_rss_mib\": %.1f, "
               "\"server_rss_models\": %.2f, \"model_mib\": %.2f}\n",
               clients, sec->valuedouble, rss_mib, rss_mib / model_mib, model_mib);
    } else {
        printf("clients %ld, model %.2f MiB\n", clients, model_mib);
        printf("round_seconds %.4f\n", sec->valuedouble);
        printf("server_rss_mib %.1f  (%.2f x the model)\n", rss_mib, rss_mib / model_mib);
    }
    exit_code = 0;

done:
    bench_kill(server);
    for (long i = 0; i < clients; i++) bench_kill(kids[i]);
    cJSON_Delete(rec);
    free(metrics);
    free(kids);
    bench_dir_finish(&d, PROG, keep, exit_code != 0);
    return exit_code;
}
