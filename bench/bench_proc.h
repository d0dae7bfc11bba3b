/* What the benchmarks that run the real `fedc` program (bench_round,
 * bench_load) share: the clock, a temporary directory for the model, the
 * server's log and its OUT, and the server process from its start to the
 * port it listens on. `prog` is the benchmark's name, for its messages
 * ("bench_round: ..."), all on stderr. */
#ifndef FEDC_BENCH_PROC_H
#define FEDC_BENCH_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Seconds on the monotonic clock. */
double bench_now_s(void);

void bench_sleep_ms(long ms);

/* The whole file as a NUL-terminated string the caller frees, or NULL. */
char *bench_read_file(const char *path);

/* Prints "PROG: WHAT:" and the file at path; with tail > 0 only its last
 * `tail` bytes, after "PROG: WHAT (last lines):". */
void bench_print_log(const char *prog, const char *what, const char *path, size_t tail);

/* The benchmark's temporary directory $TMPDIR/fedc-bench-NAME-XXXXXX and
 * the paths in it: the model, OUT, the server's log and OUT/metrics.jsonl. */
typedef struct bench_dir {
    char dir[1024];
    char model[1100], out[1100], log[1100];
    char metrics[1200];
} bench_dir;

/* Creates the directory (NAME is prog after "bench_") and fills in the
 * paths; on failure prints why and returns -1. */
int bench_dir_create(bench_dir *d, const char *prog);

/* At the end of a run: keeps the directory, saying where, when asked to
 * (`keep`) or when the run failed; otherwise removes it. Nothing to do if
 * it was never created. */
void bench_dir_finish(const bench_dir *d, const char *prog, int keep, int failed);

/* Writes d->model: one F32 tensor "w" of n elements, N(0, stddev) from a
 * generator seeded with 7, or zeros for stddev 0. The parameters are freed
 * before it returns, so that a server forked next starts from a small copy
 * of the benchmark. Prints why and returns -1 on failure. */
int bench_write_model(const char *prog, const bench_dir *d, int64_t n, double stddev);

/* Forks and runs argv (argv[0] the program, NULL-terminated) with stdout
 * and stderr to log_path, and FEDC_LOG set to fedc_log unless NULL. A child
 * that cannot exec writes why to the log and exits 127. Returns the child,
 * or -1 after printing why fork failed. */
pid_t bench_spawn(const char *prog, char *const argv[], const char *log_path, const char *fedc_log);

/* Waits for the server's "listening on ... (port P)" line in log_path (it
 * must run with FEDC_LOG=info) and returns P. Returns 0 after printing why
 * if the server exited first (its log is printed, see bench_print_log's
 * tail, and *server is set to -1) or the deadline passed (timeout is the
 * number of seconds it allowed, for the message). */
int bench_wait_port(const char *prog, pid_t *server, const char *log_path, double deadline, double timeout,
                    size_t tail);

/* Kills pid (if > 0) and reaps it. */
void bench_kill(pid_t pid);

#endif
