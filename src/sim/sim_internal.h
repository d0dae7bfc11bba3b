/* The simulator's internals, shared by the in-process transport (sim.c)
 * and the one between MPI ranks (sim_mpi.c). */
#ifndef FEDC_SIM_INTERNAL_H
#define FEDC_SIM_INTERNAL_H

#include <pthread.h>
#include <uv.h>

#include "fedc/sim.h"
#include "net/conn.h"

/* A message (and maybe a model) on its way to a virtual client. */
typedef struct job {
    struct job *next;
    uint32_t index;
    uint8_t *frame;
    size_t frame_len;
    void *blob;
    const uv_buf_t *bufs;
    unsigned nbufs;
    int vanish;       /* fault: 0 none, VANISH_BEFORE or VANISH_HALFWAY */
    double delay;     /* fault: seconds the answer is held back */
    int remote_model; /* blob is an MPI rank's copy of the model (sim_mpi.c) */
} job;

enum { VANISH_BEFORE = 1, VANISH_HALFWAY = 2 };

/* A virtual client's answer on its way back to the server. */
typedef struct done_msg {
    struct done_msg *next;
    uint32_t index;
    fedc__bytes out;
    void *blob;    /* the model reference to give back, on the loop thread */
    int failed;    /* the client broke the protocol: disconnect it */
    int vanish;    /* fault: disconnect, then connect again */
    int had_model; /* the request carried a model (its reference is due back) */
    double delay;
    char why[FEDC_ERRMSG_MAX];
} done_msg;

/* An answer held back by the straggler fault. */
typedef struct delayed {
    uv_timer_t timer;
    struct delayed *next;
    done_msg *d;
} delayed;

typedef struct sim sim;

/* What a worker's fedc_client passes to its callbacks: the shim forwards to
 * the user's callbacks with the current virtual client's pointer, opening
 * the client on first use so that a Welcome or Shutdown loads nothing. */
typedef struct worker {
    sim *s;
    pthread_t thread;
    fedc_client *client;
    uint32_t index;
    int opened;
    void *client_user;
} worker;

struct sim {
    const fedc_sim_options *opt;
    fedc_server *server;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    uint8_t *busy; /* per virtual client: a worker is answering it */
    int stop;
    done_msg *done_head, *done_tail;
    uint32_t ndone; /* answers waiting for the loop: bounded, see worker_main */
    uv_async_t async;
    worker *workers;
    uint32_t nworkers;
    fedc_client *hello; /* writes the Hello of a client that connects again */
    const char *id_format;
    delayed *delayed;
    /* MPI: clients with index % nranks == rank are answered here; rank 0
     * runs the server and passes the others' messages on (sim_mpi.c). */
    int mpi, rank, nranks;
    struct sim_mpi *mpi_state;
};

/* calloc that waits for memory rather than fail: for messages that must
 * get through (a lost one would leave the server waiting for ever). */
void *fedc__sim_calloc_wait(size_t n);
/* Queues a job for this process's workers. */
void fedc__sim_enqueue(sim *s, job *j);
/* Hands an answer to the server (rank 0) or to the MPI pump (other ranks). */
void fedc__sim_complete(sim *s, done_msg *d);
/* Runs the worker threads of this process: returns after fedc__sim_stop_workers. */
int fedc__sim_start_workers(sim *s, uint32_t *started);
void fedc__sim_stop_workers(sim *s, uint32_t started);

#ifdef FEDC_HAVE_MPI
/* This process's rank and the number of ranks (MPI must be initialised). */
int fedc__sim_mpi_rank(int *rank, int *nranks, char *err, size_t errlen);
/* Rank 0: starts the thread that forwards jobs to the other ranks and
 * brings back their answers; submit() is called from deliver(). */
int fedc__sim_mpi_start(sim *s);
void fedc__sim_mpi_submit(sim *s, job *j);
/* Rank 0: tells the other ranks the federation is over and gives back the
 * models their pending jobs held (call with the loop stopped). */
void fedc__sim_mpi_stop(sim *s);
/* Other ranks: answer jobs from rank 0 until it says stop, then stop the
 * `started` workers (and set it to 0). */
int fedc__sim_mpi_serve(sim *s, uint32_t *started);
/* Other ranks: queue an answer for rank 0. */
void fedc__sim_mpi_answer(sim *s, done_msg *d);
void fedc__sim_mpi_model_unref(void *model);
#endif

#endif
