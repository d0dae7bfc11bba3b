/* The fedc server as a child of a benchmark (see bench_proc.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_proc.h"
#include "fedc/core.h"
#include "fedc/tensor.h"

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void bench_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

char *bench_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
        if (cap - len - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = '\0';
    return buf;
}

void bench_print_log(const char *prog, const char *what, const char *path, size_t tail)
{
    char *text = bench_read_file(path);
    if (tail > 0) {
        /* A log that cannot be read has no last lines to show. */
        if (!text) return;
        size_t n = strlen(text);
        fprintf(stderr, "%s: %s (last lines):\n%s\n", prog, what, n > tail ? text + n - tail : text);
    } else {
        fprintf(stderr, "%s: %s:\n%s\n", prog, what, text ? text : "");
    }
    free(text);
}

int bench_dir_create(bench_dir *d, const char *prog)
{
    const char *tmp = getenv("TMPDIR");
    const char *name = strncmp(prog, "bench_", 6) ? prog : prog + 6;
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "%s/fedc-bench-%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", name);
    if (!mkdtemp(d->dir)) {
        fprintf(stderr, "%s: cannot create a temporary directory: %s\n", prog, strerror(errno));
        d->dir[0] = '\0';
        return -1;
    }
    snprintf(d->model, sizeof d->model, "%s/model.safetensors", d->dir);
    snprintf(d->out, sizeof d->out, "%s/out", d->dir);
    snprintf(d->log, sizeof d->log, "%s/server.log", d->dir);
    snprintf(d->metrics, sizeof d->metrics, "%s/metrics.jsonl", d->out);
    return 0;
}

/* Removes dir, its files and the files of its subdirectories (the model,
 * the logs, OUT and the PKI); a benchmark directory holds nothing deeper. */
static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            struct stat st;
            if (lstat(path, &st)) continue;
            if (S_ISDIR(st.st_mode)) {
                if (depth < 1) remove_tree(path, depth + 1);
            } else {
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

void bench_dir_finish(const bench_dir *d, const char *prog, int keep, int failed)
{
    if (!d->dir[0]) return;
    if (keep || failed)
        fprintf(stderr, "%s: files kept in %s\n", prog, d->dir);
    else
        remove_tree(d->dir, 0);
}

int bench_write_model(const char *prog, const bench_dir *d, int64_t n, double stddev)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *p = fedc_params_create();
    int64_t shape[1] = {n};
    fedc_tensor *t = NULL;
    if (!p || fedc_params_add(p, "w", FEDC_F32, 1, shape, NULL, &t, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, p ? err : "out of memory");
        fedc_params_destroy(p);
        return -1;
    }
    if (stddev > 0.0) {
        fedc_rng rng;
        fedc_rng_seed(&rng, 7);
        float *v = t->data;
        for (int64_t j = 0; j < n; j++) v[j] = (float)(stddev * fedc_rng_normal(&rng));
    } else {
        memset(t->data, 0, t->nbytes);
    }
    int rc = fedc_params_save(p, d->model, NULL, NULL, 0, err, sizeof err);
    fedc_params_destroy(p);
    if (rc) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}

pid_t bench_spawn(const char *prog, char *const argv[], const char *log_path, const char *fedc_log)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        if (fedc_log) setenv("FEDC_LOG", fedc_log, 1);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "%s: cannot run '%s': %s\n", prog, argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* The port from the server's "listening on ... (port P)" line, 0 if not
 * logged yet. */
static int port_from_log(const char *log_path)
{
    char *text = bench_read_file(log_path);
    if (!text) return 0;
    int port = 0;
    const char *p = strstr(text, "listening on ");
    if (p) p = strstr(p, "(port ");
    if (p) port = atoi(p + 6);
    free(text);
    return port;
}

int bench_wait_port(const char *prog, pid_t *server, const char *log_path, double deadline, double timeout,
                    size_t tail)
{
    int port, status;
    while (!(port = port_from_log(log_path))) {
        if (waitpid(*server, &status, WNOHANG) == *server) {
            *server = -1;
            bench_print_log(prog, "the server exited before listening", log_path, tail);
            return 0;
        }
        if (bench_now_s() > deadline) {
            fprintf(stderr, "%s: the server did not start listening within %.0f s\n", prog, timeout);
            return 0;
        }
        bench_sleep_ms(5);
    }
    return port;
}

void bench_kill(pid_t pid)
{
    if (pid <= 0) return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
