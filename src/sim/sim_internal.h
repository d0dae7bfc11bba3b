/* The simulator's internals, shared by the in-process transport (sim.c)
 * and the one between MPI ranks (sim_mpi.c). */
#ifndef FEDC_SIM_INTERNAL_H
#define FEDC_SIM_INTERNAL_H

#include <pthread.h>
#include <uv.h>

#include "fedc/sim.h"
#include "net/conn.h"
#include "proto/frame.h"
#include "strategy/fedavg.h"

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
    uint64_t round;   /* MPI: the server's round and fit capacity when it was sent */
    uint64_t capacity;
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
    /* MPI: the update in `out` was folded into its rank's sums. On that
     * rank the answer waits, whole, for rank 0's verdict; on rank 0 `out`
     * holds only its FitRes frame. */
    int folded;
    uint64_t round, weight, wire_bytes;
    size_t fitres_len;
} done_msg;

/* An answer held back by the straggler fault. */
typedef struct delayed {
    uv_timer_t timer;
    struct delayed *next;
    done_msg *d;
} delayed;

typedef struct sim sim;

/* A rank's share of the FedAvg sums (sim_fold.c): the updates answered on
 * one MPI rank, checked and folded as the server would, so that only the
 * sums go to rank 0 (with MPI_Reduce). */
typedef struct fedc__sim_fold {
    fedc__fedavg acc;
    int ready;           /* acc has the model's layout */
    fedc__msg **headers; /* the model's TensorHeaders, which an update must repeat */
    size_t ntensors;
    uint64_t round;    /* the round the sums belong to */
    uint64_t capacity; /* its fit capacity (the range limit) */
    int open;          /* updates of that round may still be folded */
    uint32_t max_frame;
    float *scratch; /* one DATA payload, copied to aligned memory */
    size_t scratch_cap;
} fedc__sim_fold;

void fedc__sim_fold_init(fedc__sim_fold *f, uint32_t max_frame);
void fedc__sim_fold_free(fedc__sim_fold *f);
/* Takes the layout from a model's frames (a TensorHeader message, then DATA
 * frames, per tensor); the first model only. FEDC_ERR_PROTOCOL for frames
 * that are not such a stream, FEDC_ERR_UNSUPPORTED for a model FedAvg does
 * not aggregate. */
int fedc__sim_fold_layout(fedc__sim_fold *f, const uint8_t *frames, size_t len);
/* Zeroes the sums for `round`, whose range limit comes from `capacity` (the
 * server's fedc__server_fit_capacity), and opens them to updates. */
void fedc__sim_fold_begin(fedc__sim_fold *f, uint64_t round, uint64_t capacity);
/* If `answer` is a complete FitRes of the open round whose tensors repeat
 * the layout's headers, checks and folds its values in one pass
 * (fedc__fedavg_check_weight, then fedc__fedavg_check_fold per DATA
 * payload) and returns 1 with its weight and the length of its FitRes
 * frame. Otherwise, or when a value is refused, returns 0 and the sums are
 * exactly as before: the answer must go to the server whole. */
int fedc__sim_fold_answer(fedc__sim_fold *f, const uint8_t *answer, size_t len, uint64_t *weight,
                          size_t *fitres_len);
/* Takes an answer that fedc__sim_fold_answer folded back out, exactly. */
void fedc__sim_fold_unfold(fedc__sim_fold *f, const uint8_t *answer, size_t len, size_t fitres_len,
                           uint64_t weight);

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
    uint32_t max_frame; /* the server's largest frame, for reading answers on other ranks */
    int whole_answers;  /* the strategy needs every update: other ranks fold nothing */
    int collecting;     /* rank 0's loop waits for the ranks' sums: nobody may wait for it */
    /* Secure aggregation: each virtual client's state between the stages
     * of a round (the workers' clients serve many virtual clients). */
    struct fedc__csa **secagg;
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
/* Rank 0, on the loop thread: the server kept (or refused) an update that
 * was folded on another rank; that rank hears it. */
void fedc__sim_mpi_verdict(sim *s, const done_msg *d, int kept);
/* Rank 0, on the loop thread (the server's collect hook): adds the other
 * ranks' sums into agg with MPI_Reduce, and checks that they hold exactly
 * the updates the server kept. */
int fedc__sim_mpi_collect(sim *s, fedc__fedavg *agg, char *err, size_t errlen);
void fedc__sim_mpi_model_unref(void *model);
#endif

#endif
