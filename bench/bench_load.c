/*
 * bench_load: many authenticated TLS clients in one process against one
 * `fedc server`, for several rounds.
 *
 * One load-generator process (this one) raises its file limit
 * (RLIMIT_NOFILE, soft to hard), makes a test PKI with `fedc certs
 * --clients min(N, 1000)` (client i uses certificate i mod 1000, so up to
 * 1000 clients every client has its own certificate), and a node key
 * per client with `fedc keygen --name load-NNNN` (node authentication,
 * docs/security.md), all of whose public keys go into the server's
 * allow-list. It writes a model of one F32 tensor of P zeros and starts
 * the real server as a child:
 *
 *   fedc server --initial-model MODEL --rounds R --min-clients N
 *               --fraction-evaluate 0 --out OUT --listen 127.0.0.1:0
 *               --cert server.pem --key server.key --ca ca.pem
 *               --authorized-keys authorized_keys --quiet
 *
 * (the child inherits the raised file limit). It then runs N clients as
 * threads with small stacks (--stack KiB, default 256), each calling
 * fedc_client_run() of the client library with mutual TLS: the server's
 * CA, the client's certificate and key, node id load-NNNN and that
 * name's node key, with which it signs the server's challenge. The fit
 * callback adds 0.001 to every parameter and reports num_examples = 1, so
 * after R rounds every parameter of the server's final model is R * 0.001;
 * the benchmark checks a few of them.
 *
 * While it runs a sampler thread reads the server's /proc/PID/status
 * (VmHWM, the peak resident set) and counts /proc/PID/fd every 50 ms.
 * Round times are the "seconds" of each line of OUT/metrics.jsonl (the
 * server's clock, from sampling the clients to the end of the round).
 * It reports
 *   server_peak_rss_mib   the server's VmHWM at the end (MiB)
 *   server_peak_fds       the most open descriptors the server had
 *   round_seconds         each round's time, and their mean
 *   connect_seconds       from starting the client threads to the first
 *                         fit call (all N connected, TLS handshakes and
 *                         node challenges done, the model sent to the
 *                         first client)
 *   wall_seconds          from starting the server to its exit
 *   loadgen_peak_rss_mib  this process's VmHWM (all N clients' state)
 *
 *   bench_load [--clients N] [--rounds R] [--params P | --model-mb M]
 *              [--no-tls] [--no-node-auth] [--stack KiB] [--timeout S]
 *              [--fedc PATH] [--keep] [--json]
 *
 * --model-mb M sets P = M * 2^20 / 4. --no-tls runs plaintext
 * (--insecure) for comparison, without node keys; --no-node-auth keeps
 * mutual TLS but makes no node keys. Every wait is bounded by --timeout
 * (default 600 s); on expiry the clients are stopped, the server killed
 * and the run fails. Exit status 0 when every client finished and every
 * round succeeded with all N clients.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define MAX_CLIENTS 100000
#define MAX_CERTS   1000 /* fedc certs --clients makes at most this many */
#define MAX_ROUNDS  1000
#define FIT_DELTA   0.001f
#define PROG        "bench_load"
#define LOG_TAIL    3000 /* bytes of a log shown on failure */

static void usage(void)
{
    fprintf(stderr, "usage: bench_load [--clients N] [--rounds R] [--params P | --model-mb M] [--no-tls]\n"
                    "                  [--no-node-auth] [--stack KiB] [--timeout S] [--fedc PATH] [--keep]\n"
                    "                  [--json]\n");
}

/* ---- the clients -------------------------------------------------------- */

typedef struct load_client {
    pthread_t thread;
    int started;
    fedc_client *c;
    char id[32];
    char cert[1200], key[1200], node_key[1300];
    int rc;
    char err[FEDC_ERRMSG_MAX];
} load_client;

static double g_start;                        /* when the client threads were started */
static _Atomic long long g_first_fit_ns = -1; /* first fit call, ns after g_start */
static atomic_long g_fits;

static int add_fit(void *user, fedc_params *params, const fedc_config *config, uint64_t *num_examples,
                   fedc_config *metrics, char *err, size_t errlen)
{
    (void)user;
    (void)config;
    (void)metrics;
    (void)err;
    (void)errlen;
    long long ns = (long long)((bench_now_s() - g_start) * 1e9), want = -1;
    atomic_compare_exchange_strong(&g_first_fit_ns, &want, ns);
    atomic_fetch_add(&g_fits, 1);
    for (size_t i = 0; i < fedc_params_count(params); i++) {
        fedc_tensor *t = fedc_params_at(params, i);
        if (t->dtype != FEDC_F32) continue;
        float *v = t->data;
        int64_t n = fedc_tensor_numel(t);
        for (int64_t j = 0; j < n; j++) v[j] += FIT_DELTA;
    }
    *num_examples = 1;
    return FEDC_OK;
}

static void *client_main(void *arg)
{
    load_client *lc = arg;
    lc->rc = fedc_client_run(lc->c);
    if (lc->rc) snprintf(lc->err, sizeof lc->err, "%s", fedc_client_errmsg(lc->c));
    return NULL;
}

/* ---- the sampler -------------------------------------------------------- */

typedef struct sampler {
    pid_t pid;
    atomic_int stop;
    long peak_fds;
    long hwm_kib; /* the last VmHWM read */
    long samples;
} sampler;

/* VmHWM of /proc/PID/status in KiB ("self" for this process), -1 if unreadable. */
static long vm_hwm_kib(const char *pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%s/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) {
            v = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static long count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void *sampler_main(void *arg)
{
    sampler *s = arg;
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)s->pid);
    while (!atomic_load(&s->stop)) {
        long fds = count_fds(s->pid);
        long hwm = vm_hwm_kib(pid);
        if (fds > s->peak_fds) s->peak_fds = fds;
        if (hwm > s->hwm_kib) s->hwm_kib = hwm;
        s->samples++;
        bench_sleep_ms(50);
    }
    return NULL;
}

/* ---- files and processes ------------------------------------------------ */

/* Runs argv to completion with stdout and stderr to log_path; its exit
 * status, or -1. */
static int run_program(char *const argv[], const char *log_path)
{
    pid_t pid = bench_spawn(PROG, argv, log_path, NULL);
    if (pid < 0) return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit; 0 if it covers `need`. */
static int raise_nofile(rlim_t need, rlim_t *soft_out, rlim_t *hard_out)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl.rlim_cur = rl.rlim_max;
    }
    *soft_out = rl.rlim_cur;
    *hard_out = rl.rlim_max;
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need ? 0 : -1;
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    long clients = 1000, rounds = 3, stack_kib = 256;
    long long params = 4096;
    double timeout = 600;
    const char *fedc = FEDC_BENCH_FEDC_PATH;
    int json = 0, keep = 0, tls = 1, node_auth = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--keep")) {
            keep = 1;
        } else if (!strcmp(a, "--no-tls")) {
            tls = 0;
        } else if (!strcmp(a, "--no-node-auth")) {
            node_auth = 0;
        } else if (!strcmp(a, "--fedc") && i + 1 < argc) {
            fedc = argv[++i];
        } else if ((!strcmp(a, "--clients") || !strcmp(a, "--rounds") || !strcmp(a, "--params") ||
                    !strcmp(a, "--model-mb") || !strcmp(a, "--stack") || !strcmp(a, "--timeout")) &&
                   i + 1 < argc) {
            char *e;
            double v = strtod(argv[++i], &e);
            double lim = !strcmp(a, "--clients")    ? MAX_CLIENTS
                         : !strcmp(a, "--rounds")   ? MAX_ROUNDS
                         : !strcmp(a, "--params")   ? (double)(1LL << 32)
                         : !strcmp(a, "--model-mb") ? 16384
                         : !strcmp(a, "--stack")    ? 65536
                                                    : 86400;
            int integral = strcmp(a, "--timeout") != 0;
            if (*e || !(v >= 1) || v > lim || (integral && v != floor(v)) ||
                (!strcmp(a, "--stack") && v < 64)) {
                fprintf(stderr, "bench_load: bad value '%s' for %s\n", argv[i], a);
                return 2;
            }
            if (!strcmp(a, "--clients"))
                clients = (long)v;
            else if (!strcmp(a, "--rounds"))
                rounds = (long)v;
            else if (!strcmp(a, "--params"))
                params = (long long)v;
            else if (!strcmp(a, "--model-mb"))
                params = (long long)v * (1LL << 20) / 4;
            else if (!strcmp(a, "--stack"))
                stack_kib = (long)v;
            else
                timeout = v;
        } else {
            usage();
            return 2;
        }
    }
    if (!tls) node_auth = 0;  /* node keys are checked over TLS only */
    signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(2) */
    fedc_log_set_level(FEDC_LOG_WARN);

    /* This process holds one socket per client and the server one per
     * client plus its listener and files; both need the limit raised. */
    rlim_t need = (rlim_t)clients + 64, soft = 0, hard = 0;
    if (raise_nofile(need, &soft, &hard)) {
        fprintf(stderr,
                "bench_load: the open-file limit is %llu (hard %llu), below the %llu that %ld clients "
                "need; raise the hard limit (ulimit -Hn, or LimitNOFILE= in systemd)\n",
                (unsigned long long)soft, (unsigned long long)hard, (unsigned long long)need, clients);
        return 1;
    }

    int exit_code = 1;
    char err[FEDC_ERRMSG_MAX];
    bench_dir d = {.dir = ""};
    char pki[1100], ca[1200], scert[1200], skey[1200], final_path[1200], certs_log[1200];
    char keys[1200], allowed[1200];
    char server_addr[64];
    pid_t server = -1;
    load_client *lc = calloc((size_t)clients, sizeof *lc);
    sampler smp;
    memset(&smp, 0, sizeof smp);
    pthread_t smp_thread;
    int smp_started = 0, status = 0;
    char *metrics = NULL;
    double certs_seconds = 0, keys_seconds = 0, t_server = 0, t_end = 0;
    long threads_started = 0, server_maxrss_kib = 0;
    long ncerts = clients < MAX_CERTS ? clients : MAX_CERTS;
    if (!lc) {
        fprintf(stderr, "bench_load: out of memory\n");
        return 1;
    }

    if (bench_dir_create(&d, PROG)) goto done;
    snprintf(final_path, sizeof final_path, "%s/model.safetensors", d.out);
    snprintf(pki, sizeof pki, "%s/pki", d.dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", pki);
    snprintf(scert, sizeof scert, "%s/server.pem", pki);
    snprintf(skey, sizeof skey, "%s/server.key", pki);
    snprintf(certs_log, sizeof certs_log, "%s/certs.log", d.dir);
    snprintf(keys, sizeof keys, "%s/keys", pki);
    snprintf(allowed, sizeof allowed, "%s/authorized_keys", pki);

    /* The PKI: a CA, the server's certificate, a certificate per client. */
    if (tls) {
        char n[32];
        snprintf(n, sizeof n, "%ld", ncerts);
        char *const cargv[] = {(char *)fedc, "certs", "--out", pki, "--clients", n, NULL};
        double t0 = bench_now_s();
        int rc = run_program(cargv, certs_log);
        certs_seconds = bench_now_s() - t0;
        if (rc != 0) {
            bench_print_log(PROG, "fedc certs failed", certs_log, LOG_TAIL);
            goto done;
        }
    }

    /* Node authentication: a key pair per client from `fedc keygen`, named
     * after its node id, and the server's allow-list of all of them. */
    if (node_auth) {
        double t0 = bench_now_s();
        FILE *list = fopen(allowed, "w");
        if (!list) {
            fprintf(stderr, "bench_load: cannot create '%s': %s\n", allowed, strerror(errno));
            goto done;
        }
        int bad = 0;
        for (long i = 0; i < clients && !bad; i++) {
            char name[32], pub[1300], line[512];
            snprintf(name, sizeof name, "load-%04ld", i);
            char *const kargv[] = {(char *)fedc, "keygen", "--out", keys, "--name", name, NULL};
            if (run_program(kargv, certs_log) != 0) {
                bench_print_log(PROG, "fedc keygen failed", certs_log, LOG_TAIL);
                bad = 1;
                break;
            }
            snprintf(pub, sizeof pub, "%s/%s.pub", keys, name);
            FILE *f = fopen(pub, "r");
            if (!f || !fgets(line, sizeof line, f) || fputs(line, list) == EOF) {
                fprintf(stderr, "bench_load: cannot copy '%s' into the allow-list\n", pub);
                bad = 1;
            }
            if (f) fclose(f);
        }
        if (fclose(list) || bad) goto done;
        keys_seconds = bench_now_s() - t0;
    }

    /* The model: one F32 tensor of zeros. */
    if (bench_write_model(PROG, &d, (int64_t)params, 0.0)) goto done;

    double deadline = bench_now_s() + timeout;
    char nclients[32], nrounds[32], tmo[32];
    snprintf(nclients, sizeof nclients, "%ld", clients);
    snprintf(nrounds, sizeof nrounds, "%ld", rounds);
    snprintf(tmo, sizeof tmo, "%.0f", timeout);
    const char *sargv[32];
    int na = 0;
    const char *fixed[] = {fedc,
                           "server",
                           "--initial-model",
                           d.model,
                           "--rounds",
                           nrounds,
                           "--min-clients",
                           nclients,
                           "--fraction-evaluate",
                           "0",
                           "--out",
                           d.out,
                           "--listen",
                           "127.0.0.1:0",
                           "--wait-timeout",
                           tmo,
                           "--round-timeout",
                           tmo,
                           "--quiet"};
    for (size_t j = 0; j < sizeof fixed / sizeof fixed[0]; j++) sargv[na++] = fixed[j];
    if (tls) {
        sargv[na++] = "--cert";
        sargv[na++] = scert;
        sargv[na++] = "--key";
        sargv[na++] = skey;
        sargv[na++] = "--ca";
        sargv[na++] = ca;
    } else {
        sargv[na++] = "--insecure";
    }
    if (node_auth) {
        sargv[na++] = "--authorized-keys";
        sargv[na++] = allowed;
    }
    sargv[na] = NULL;
    t_server = bench_now_s();
    /* FEDC_LOG=info for the "listening on" line. */
    server = bench_spawn(PROG, (char *const *)sargv, d.log, "info");
    if (server < 0) goto done;
    smp.pid = server;
    if (pthread_create(&smp_thread, NULL, sampler_main, &smp) == 0) smp_started = 1;

    int port = bench_wait_port(PROG, &server, d.log, deadline, timeout, LOG_TAIL);
    if (!port) goto done;
    snprintf(server_addr, sizeof server_addr, "127.0.0.1:%d", port);

    /* The clients: created first, so that a timeout can stop every one. */
    for (long i = 0; i < clients; i++) {
        snprintf(lc[i].id, sizeof lc[i].id, "load-%04ld", i);
        snprintf(lc[i].cert, sizeof lc[i].cert, "%s/client-%03ld.pem", pki, i % ncerts);
        snprintf(lc[i].key, sizeof lc[i].key, "%s/client-%03ld.key", pki, i % ncerts);
        snprintf(lc[i].node_key, sizeof lc[i].node_key, "%s/%s.key", keys, lc[i].id);
        fedc_client_options opt;
        fedc_client_options_init(&opt);
        opt.server = server_addr;
        opt.node_id = lc[i].id;
        opt.connect_timeout = timeout;
        opt.io_timeout = timeout;
        if (tls) {
            opt.tls_ca = ca;
            opt.tls_cert = lc[i].cert;
            opt.tls_key = lc[i].key;
            if (node_auth) opt.node_key = lc[i].node_key;
        } else {
            opt.insecure = 1;
        }
        fedc_client_callbacks cb = {NULL, add_fit, NULL};
        lc[i].c = fedc_client_create(&opt, &cb, NULL);
        if (!lc[i].c) {
            fprintf(stderr, "bench_load: cannot create client %ld\n", i);
            goto done;
        }
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    int sr = pthread_attr_setstacksize(&attr, (size_t)stack_kib * 1024);
    if (sr) {
        fprintf(stderr, "bench_load: stack size %ld KiB: %s\n", stack_kib, strerror(sr));
        pthread_attr_destroy(&attr);
        goto done;
    }
    g_start = bench_now_s();
    for (long i = 0; i < clients; i++) {
        int r = pthread_create(&lc[i].thread, &attr, client_main, &lc[i]);
        if (r) {
            fprintf(stderr, "bench_load: thread %ld of %ld: %s\n", i + 1, clients, strerror(r));
            break;
        }
        lc[i].started = 1;
        threads_started++;
    }
    pthread_attr_destroy(&attr);
    if (threads_started < clients) goto done;

    /* Wait for the server to end the federation. */
    for (;;) {
        struct rusage ru;
        memset(&ru, 0, sizeof ru);
        if (wait4(server, &status, WNOHANG, &ru) == server) {
            /* ru_maxrss (KiB): the peak even if it came after the last sample. */
            server_maxrss_kib = ru.ru_maxrss;
            server = -1;
            break;
        }
        if (bench_now_s() > deadline) {
            fprintf(stderr, "bench_load: the federation did not finish within %.0f s\n", timeout);
            bench_print_log(PROG, "server log", d.log, LOG_TAIL);
            goto done;
        }
        bench_sleep_ms(20);
    }
    t_end = bench_now_s();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_load: the server failed (status %d)\n", status);
        bench_print_log(PROG, "server log", d.log, LOG_TAIL);
        goto done;
    }

    exit_code = 0;

done:
    /* Stop and join the clients (after the server's Shutdown they have
     * returned on their own). */
    bench_kill(server);
    for (long i = 0; i < clients; i++)
        if (lc[i].started && exit_code) fedc_client_stop(lc[i].c);
    long clients_ok = 0, shown = 0;
    for (long i = 0; i < clients; i++) {
        if (lc[i].started) {
            pthread_join(lc[i].thread, NULL);
            if (lc[i].rc == FEDC_OK)
                clients_ok++;
            else if (shown++ < 5)
                fprintf(stderr, "bench_load: client %s: %s\n", lc[i].id, lc[i].err);
        }
        fedc_client_destroy(lc[i].c);
    }
    if (smp_started) {
        atomic_store(&smp.stop, 1);
        pthread_join(smp_thread, NULL);
    }
    long loadgen_hwm = vm_hwm_kib("self");
    if (exit_code == 0 && clients_ok != clients) {
        fprintf(stderr, "bench_load: %ld of %ld clients failed\n", clients - clients_ok, clients);
        exit_code = 1;
    }

    /* The round records. */
    double rsec[MAX_ROUNDS], rsum = 0, rmax = 0;
    long nrec = 0, rounds_full = 0;
    metrics = exit_code == 0 ? bench_read_file(d.metrics) : NULL;
    for (char *line = metrics; line && *line && nrec < MAX_ROUNDS;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *rec = cJSON_Parse(line);
        const cJSON *sec = cJSON_GetObjectItemCaseSensitive(rec, "seconds");
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(rec, "clients_ok");
        const cJSON *failed = cJSON_GetObjectItemCaseSensitive(rec, "failed");
        if (cJSON_IsNumber(sec)) {
            rsec[nrec++] = sec->valuedouble;
            rsum += sec->valuedouble;
            if (sec->valuedouble > rmax) rmax = sec->valuedouble;
            if (cJSON_IsNumber(ok) && (long)ok->valuedouble == clients && !cJSON_IsTrue(failed))
                rounds_full++;
        }
        cJSON_Delete(rec);
        line = nl ? nl + 1 : NULL;
    }
    if (exit_code == 0 && (nrec != rounds || rounds_full != rounds)) {
        fprintf(stderr, "bench_load: %ld of %ld rounds completed with all %ld clients:\n%s\n", rounds_full,
                rounds, clients, metrics ? metrics : "(no metrics.jsonl)");
        exit_code = 1;
    }

    /* The final model: every parameter is rounds * FIT_DELTA. */
    if (exit_code == 0) {
        fedc_params *fin = NULL;
        if (fedc_params_load(final_path, &fin, err, sizeof err)) {
            fprintf(stderr, "bench_load: the final model: %s\n", err);
            exit_code = 1;
        } else {
            fedc_tensor *t = fedc_params_find(fin, "w");
            const float *v = t ? t->data : NULL;
            int64_t n = t ? fedc_tensor_numel(t) : 0;
            float want = (float)rounds * FIT_DELTA;
            for (int k = 0; k < 3 && v; k++) {
                int64_t j = k == 0 ? 0 : k == 1 ? n / 2 : n - 1;
                if (fabsf(v[j] - want) > 1e-5f + 1e-4f * want) {
                    fprintf(stderr, "bench_load: final w[%lld] = %g, expected %g\n", (long long)j, v[j],
                            want);
                    exit_code = 1;
                    break;
                }
            }
            if (!v || n != params) {
                fprintf(stderr, "bench_load: the final model has the wrong layout\n");
                exit_code = 1;
            }
            fedc_params_destroy(fin);
        }
    }

    if (exit_code == 0) {
        double model_mib = (double)params * 4 / (1024.0 * 1024.0);
        long srv_kib = smp.hwm_kib > server_maxrss_kib ? smp.hwm_kib : server_maxrss_kib;
        double srv_mib = (double)srv_kib / 1024.0, gen_mib = (double)loadgen_hwm / 1024.0;
        double first = g_first_fit_ns >= 0 ? (double)g_first_fit_ns * 1e-9 : NAN;
        if (json) {
            printf("{\"clients\": %ld, \"rounds\": %ld, \"params\": %lld, \"model_mib\": %.3f, \"tls\": %s, "
                   "\"node_auth\": %s, \"round_seconds\": [",
                   clients, rounds, params, model_mib, tls ? "true" : "false", node_auth ? "true" : "false");
            for (long r = 0; r < nrec; r++) printf("%s%.4f", r ? ", " : "", rsec[r]);
            printf("], \"round_seconds_mean\": %.4f, \"round_seconds_max\": %.4f, \"connect_seconds\": %.3f, "
                   "\"wall_seconds\": %.3f, \"server_peak_rss_mib\": %.1f, \"server_peak_fds\": %ld, "
                   "\"loadgen_peak_rss_mib\": %.1f, \"certs_seconds\": %.3f, \"keys_seconds\": %.3f, "
                   "\"nofile_limit\": %llu, "
                   "\"stack_kib\": %ld, \"target_1000_clients\": %s, \"target_rss_512mib\": %s}\n",
                   rsum / (double)nrec, rmax, first, t_end - t_server, srv_mib, smp.peak_fds, gen_mib,
                   certs_seconds, keys_seconds, (unsigned long long)soft, stack_kib,
                   clients >= 1000 ? "true" : "null", srv_mib < 512 ? "true" : "false");
        } else {
            printf("bench_load: %ld clients (%s), %ld rounds, model %lld floats (%.2f MiB)\n", clients,
                   !tls        ? "plaintext"
                   : node_auth ? "mutual TLS, one certificate and one node key each"
                               : "mutual TLS, one certificate each",
                   rounds, params, model_mib);
            if (tls)
                printf("  %-28s %10.3f s  (%ld client certificates)\n", "fedc certs", certs_seconds, ncerts);
            if (node_auth)
                printf("  %-28s %10.3f s  (%ld node keys, all on the allow-list)\n", "fedc keygen",
                       keys_seconds, clients);
            printf("  %-28s %10.3f s\n", "connect (start to 1st fit)", first);
            for (long r = 0; r < nrec; r++) printf("  round %-22ld %10.3f s\n", r + 1, rsec[r]);
            printf("  %-28s %10.3f s\n", "wall (server start to exit)", t_end - t_server);
            printf("  %-28s %10.1f MiB  (%.1f x the model; target < 512 MiB: %s)\n", "server peak RSS",
                   srv_mib, srv_mib / model_mib, srv_mib < 512 ? "met" : "MISSED");
            printf("  %-28s %10ld\n", "server peak open fds", smp.peak_fds);
            printf("  %-28s %10.1f MiB  (%ld client threads, %ld KiB stacks)\n", "load generator peak RSS",
                   gen_mib, clients, stack_kib);
            printf("  %-28s %10llu\n", "open-file limit", (unsigned long long)soft);
        }
    }

    free(metrics);
    free(lc);
    bench_dir_finish(&d, PROG, keep, exit_code != 0);
    return exit_code;
}
