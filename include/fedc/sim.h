/*
 * Simulation: a whole federation in one process.
 *
 * fedc_sim_run() runs the real server and a population of virtual clients.
 * The network is replaced by an in-memory transport, nothing else: every
 * message a client would send over TCP is encoded, handed to the server's
 * frame reader and decoded there, and the server's requests reach the
 * clients the same way. So strategies, checks and aggregation behave as in
 * a deployment, and the same seed gives the same model as real processes
 * on loopback with the same node ids and data.
 *
 * A virtual client exists only while it answers a request: open_client()
 * is called on a worker thread before each request and close_client()
 * after it, so memory grows with `concurrency`, not with `clients`.
 */
#ifndef FEDC_SIM_H
#define FEDC_SIM_H

#include <stdint.h>

#include "fedc/client.h"
#include "fedc/server.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_sim_options {
    uint32_t clients;     /* the population (required, >= 1) */
    uint32_t concurrency; /* requests answered at once, one worker thread each (0: the cores) */
    /* Node id format: exactly one %u for the client's index, with a width
     * and the flags 0 or - at most (default "client-%03u", the names fedc
     * partition gives its directories); anything else is FEDC_ERR_INVALID. */
    const char *node_id_format;
    /*
     * Called on a worker thread before virtual client `index` answers a
     * request: set *client_user to whatever the callbacks need (its data,
     * for example). May be NULL. A non-zero return fails that request as a
     * client-side failure, with the message in err.
     */
    int (*open_client)(void *user, uint32_t index, void **client_user, char *err, size_t errlen);
    /* Called after the request; frees what open_client made. May be NULL. */
    void (*close_client)(void *user, uint32_t index, void *client_user);
    /* The clients' training code; the callbacks receive client_user. */
    fedc_client_callbacks callbacks;
    void *user;
    /*
     * Faults, for testing what a strategy does with unreliable clients.
     * Each training or evaluation request is, independently:
     *   with probability dropout_rate, answered by a client that vanishes:
     *     half the time before it answers, half the time halfway through
     *     sending its answer; it connects again at once and may be sampled
     *     in later rounds;
     *   else with probability straggler_rate, answered straggler_delay
     *     seconds late (after the round timeout, the answer is dropped).
     * The draws come from fault_seed, the round and the client, so they do
     * not depend on timing or concurrency.
     */
    double dropout_rate;
    double straggler_rate;
    double straggler_delay;
    uint64_t fault_seed;
    /* Spread the clients over the ranks of MPI_COMM_WORLD (client i is
     * answered on rank i % size; rank 0 also runs the server). Each rank
     * checks and folds its clients' updates into FedAvg sums of its own,
     * which MPI_Reduce adds into the server's at the end of each round;
     * other answers go to rank 0 whole (docs/simulation.md). The result is
     * bit-identical to one process. Every rank calls fedc_sim_run() with
     * the same options after fedc_sim_mpi_init(). */
    int mpi;
} fedc_sim_options;

/* Initialises MPI for fedc_sim_run() with mpi set, and says this process's
 * rank and the number of ranks. FEDC_ERR_UNSUPPORTED when fedc was built
 * without MPI. */
int fedc_sim_mpi_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen);
/* Finalises MPI if fedc_sim_mpi_init() initialised it. */
void fedc_sim_mpi_finalize(void);

/* Fills opt with the defaults above (no callbacks). */
void fedc_sim_options_init(fedc_sim_options *opt);

/*
 * Runs the federation with the server options `server` (listen defaults to
 * an ephemeral loopback port, so real clients may join too) and returns
 * what fedc_server_run() would, with the message in err on failure.
 * The callbacks run on up to `concurrency` threads at once: they must not
 * share mutable state without locking.
 */
int fedc_sim_run(const fedc_server_options *server, const fedc_sim_options *sim, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
