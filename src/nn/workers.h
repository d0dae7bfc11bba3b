/*
 * A fork-join pool for the trainer's data parallelism (internal).
 *
 * fedc__nn_workers_run() calls fn(arg, i) once for every i in [0, n): i = 0
 * on the calling thread, the others on n - 1 persistent threads, and returns
 * when all calls have returned. Workers sleep on a condition variable
 * between runs rather than spin, so that an idle pool costs nothing on a
 * machine shared by many clients.
 */
#ifndef FEDC_NN_WORKERS_H
#define FEDC_NN_WORKERS_H

typedef struct fedc__nn_workers fedc__nn_workers;

/* Starts a pool of n participants (n - 1 threads). When the system refuses
 * some threads the pool is smaller: fedc__nn_workers_count() says how many
 * there are. Returns NULL when out of memory. */
fedc__nn_workers *fedc__nn_workers_create(int n);

/* Stops and joins the threads. No-op on NULL. */
void fedc__nn_workers_destroy(fedc__nn_workers *w);

/* Number of participants, the caller included. */
int fedc__nn_workers_count(const fedc__nn_workers *w);

/* Runs fn(arg, i) for i in [0, count) in parallel and waits for all. Not
 * reentrant: one run at a time per pool. */
void fedc__nn_workers_run(fedc__nn_workers *w, void (*fn)(void *arg, int i), void *arg);

#endif /* FEDC_NN_WORKERS_H */
