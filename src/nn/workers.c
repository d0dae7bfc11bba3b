/* A fork-join thread pool (see workers.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "nn/workers.h"

typedef struct worker_slot {
    struct fedc__nn_workers *pool;
    int index;
} worker_slot;

struct fedc__nn_workers {
    int count; /* participants, the caller included */
    pthread_t *threads;
    worker_slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t generation; /* bumped for each run */
    int pending;         /* worker calls of the current run not yet returned */
    int stop;
    void (*fn)(void *arg, int i);
    void *arg;
};

static void *worker_main(void *p)
{
    worker_slot *slot = p;
    fedc__nn_workers *w = slot->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->generation == seen && !w->stop) pthread_cond_wait(&w->start, &w->mu);
        if (w->stop) break;
        seen = w->generation;
        void (*fn)(void *, int) = w->fn;
        void *arg = w->arg;
        pthread_mutex_unlock(&w->mu);
        fn(arg, slot->index);
        pthread_mutex_lock(&w->mu);
        if (--w->pending == 0) pthread_cond_signal(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

fedc__nn_workers *fedc__nn_workers_create(int n)
{
    fedc__nn_workers *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    if (n < 1) n = 1;
    w->count = 1;
    if (pthread_mutex_init(&w->mu, NULL) != 0) goto fail_mu;
    if (pthread_cond_init(&w->start, NULL) != 0) goto fail_start;
    if (pthread_cond_init(&w->done, NULL) != 0) goto fail_done;
    if (n > 1) {
        w->threads = calloc((size_t)n - 1, sizeof(*w->threads));
        w->slots = calloc((size_t)n - 1, sizeof(*w->slots));
        if (!w->threads || !w->slots) goto fail_threads;
        for (int i = 1; i < n; i++) {
            w->slots[i - 1].pool = w;
            w->slots[i - 1].index = i;
            /* A refused thread just makes the pool smaller. */
            if (pthread_create(&w->threads[i - 1], NULL, worker_main, &w->slots[i - 1]) != 0) break;
            w->count = i + 1;
        }
    }
    return w;
fail_threads:
    free(w->threads);
    free(w->slots);
    pthread_cond_destroy(&w->done);
fail_done:
    pthread_cond_destroy(&w->start);
fail_start:
    pthread_mutex_destroy(&w->mu);
fail_mu:
    free(w);
    return NULL;
}

void fedc__nn_workers_destroy(fedc__nn_workers *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->start);
    pthread_mutex_unlock(&w->mu);
    for (int i = 1; i < w->count; i++) pthread_join(w->threads[i - 1], NULL);
    free(w->threads);
    free(w->slots);
    pthread_cond_destroy(&w->done);
    pthread_cond_destroy(&w->start);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int fedc__nn_workers_count(const fedc__nn_workers *w)
{
    return w ? w->count : 1;
}

void fedc__nn_workers_run(fedc__nn_workers *w, void (*fn)(void *arg, int i), void *arg)
{
    if (!w || w->count == 1) {
        fn(arg, 0);
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->fn = fn;
    w->arg = arg;
    w->pending = w->count - 1;
    w->generation++;
    pthread_cond_broadcast(&w->start);
    pthread_mutex_unlock(&w->mu);
    fn(arg, 0);
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0) pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
