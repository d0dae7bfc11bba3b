/*
 * Strategies: how the server turns a round's client models into the next
 * global model, and what extra configuration it sends with each training
 * request.
 *
 * A strategy is a table of functions plus a state pointer, in the manner of
 * ggml's backend interface or libuv's handles. The server keeps calling the
 * same strategy, with the same state, from round to round, so server-side
 * optimiser state (momentum, second moments) lives in the state.
 *
 *   char err[FEDC_ERRMSG_MAX];
 *   fedc_config *params = fedc_config_create();
 *   fedc_config_set_f64(params, "server_lr", 0.1);
 *   fedc_strategy *st = NULL;
 *   if (fedc_strategy_create("fedadam", params, &st, err, sizeof err)) ... // err names the flag
 *   opt.strategy = st;                  // fedc_server_options
 *   ... fedc_server_create / run / destroy ...
 *   fedc_strategy_destroy(st);          // after the server is destroyed
 *
 * By default the server sums the clients' models in its streaming
 * fixed-point accumulator (whatever the strategy, in host or GPU memory), so
 * memory does not grow with the number of clients; the strategy sees only
 * the weighted mean of the round (aggregate_fit). Robust aggregators
 * (coordinate-wise median, trimmed mean, Krum, Bulyan) need every update at
 * once: such a strategy sets FEDC_STRATEGY_ALL_UPDATES, and the server then
 * keeps a copy of each accepted update (n x the model in host memory) and
 * calls aggregate_all instead. A server refuses any flag it does not know.
 * See docs/strategies.md.
 */
#ifndef FEDC_STRATEGY_H
#define FEDC_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

#include "fedc/config.h"
#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The strategy needs every update of a round at once: the server keeps a
 * copy of each accepted update (still checked exactly as for FedAvg: a NaN,
 * an out-of-range value or a wrong layout rejects it and leaves no trace)
 * and calls aggregate_all, not aggregate_fit. Memory: one copy of the model
 * per accepted update, in host memory. */
#define FEDC_STRATEGY_ALL_UPDATES 1u
/* The flags a server of this version understands. A strategy whose flags
 * contain any other bit is refused by fedc_server_create(). */
#define FEDC_STRATEGY_KNOWN_FLAGS FEDC_STRATEGY_ALL_UPDATES

/* One accepted update of a round, as aggregate_fit and aggregate_all see
 * it. Everything belongs to the server and lives until the call returns. */
typedef struct fedc_fit_info {
    const char *node_id;
    uint64_t num_examples;      /* what the client reported */
    double weight;              /* its aggregation weight (fit_weight's, else num_examples) */
    const fedc_config *metrics; /* the client's FitRes metrics (e.g. "local_steps") */
} fedc_fit_info;

/* One client's answer to an evaluation request. */
typedef struct fedc_eval_info {
    const char *node_id;
    uint64_t num_examples;
    double loss;
    double accuracy; /* NaN when the client reported none */
} fedc_eval_info;

/* What the server knows of the round being aggregated. */
typedef struct fedc_round_info {
    uint64_t round;            /* 1-based */
    uint32_t population;       /* clients connected and idle when the round was sampled */
    uint32_t sampled;          /* clients sent a training request */
    size_t nfits;              /* accepted updates ... */
    const fedc_fit_info *fits; /* ... in node-id order */
} fedc_round_info;

typedef struct fedc_strategy {
    /* Short name, e.g. "fedadam"; owned by the strategy. */
    const char *name;
    /* Modes the strategy needs from the server (FEDC_STRATEGY_ALL_UPDATES or
     * 0; see FEDC_STRATEGY_KNOWN_FLAGS). */
    unsigned flags;
    /* The fewest updates a round must bring for aggregate_all to accept
     * them (Krum's n > 2f + 2, say); 0: any number. fedc_server_create()
     * refuses a min_clients below it. */
    uint32_t min_updates;
    /* Passed as the first argument of every function below. */
    void *state;

    /* Optional (NULL: the server's sampling stands). Which clients train
     * in `round`: ids holds the n idle clients in node-id order, and
     * chosen[i] is 1 for those the server's sampling picked (--sampling,
     * --fraction-fit, from the seed), else 0; the strategy may change
     * chosen. It must depend on the state, round and ids only and must not
     * change the state. Choosing fewer than --min-clients fails the round.
     * A failure ends the federation. */
    int (*select_fit)(void *state, uint64_t round, const char *const *ids, size_t n, unsigned char *chosen,
                      char *err, size_t errlen);

    /* Adds the strategy's keys to the config sent with a training request
     * of `round` (1-based), e.g. "proximal_mu". May be called once per
     * sampled client, so it must depend on the state and round only, and
     * must not change the state. NULL: nothing to add. Returns a fedc
     * status (FEDC_ERR_NOMEM). */
    int (*configure_fit)(void *state, uint64_t round, fedc_config *cfg);

    /* Optional (NULL: none). Tensors sent to every client after the model
     * in each training request of a round, e.g. SCAFFOLD's server control
     * variate. Called at the start of every round with the global model;
     * set *out to the strategy's own tensors (names distinct from the
     * model's), whose layout must stay the same from round to round; the
     * server copies them. A client must then answer with its model
     * followed by tensors of exactly that layout, which are aggregated with
     * the model: in aggregate_fit, `global` holds the model's tensors
     * followed by these, and `mean` the weighted mean of the clients'
     * model tensors followed by the weighted mean of their extra ones;
     * `next` holds the model's tensors only. Evaluation requests carry the
     * model only. Not allowed with FEDC_STRATEGY_ALL_UPDATES. Returns a
     * fedc status with a message; a failure ends the federation. */
    int (*fit_tensors)(void *state, const fedc_params *global, const fedc_params **out, char *err,
                       size_t errlen);

    /* Optional (NULL: each update weighs its num_examples). The aggregation
     * weight of one update, from what its FitRes says, decided before its
     * tensors are folded in: FedNova divides by the client's local steps,
     * for instance. The update's num_examples must itself be a valid weight
     * (1 to 2^32) first. The server rounds *weight to a multiple of 2^-16; it
     * must be finite, at least 2^-16 and at most 2^32. Called on the
     * server's thread for every update of the round; it must depend on the
     * state, round, num_examples and metrics only and must not change the
     * state. A failure (FEDC_ERR_INVALID with a message, e.g. a missing
     * metric) rejects that update only. Not allowed with
     * FEDC_STRATEGY_ALL_UPDATES. */
    int (*fit_weight)(void *state, uint64_t round, uint64_t num_examples, const fedc_config *metrics,
                      double *weight, char *err, size_t errlen);

    /* Makes the next global model. `info` describes the round (its number
     * and accepted updates). `global` is the model the clients were sent,
     * `mean` the weighted mean of the models they returned (FedAvg's
     * result); both are read only (with fit_tensors, both are followed by
     * the extra tensors). `next` has the model's layout and holds a copy
     * of it on entry; the strategy overwrites it. Called
     * once per successful round, in order; a failed round (too few results)
     * does not call it. Required unless flags has FEDC_STRATEGY_ALL_UPDATES
     * (then unused, may be NULL). Returns a fedc status with a message in
     * err; a failure ends the federation. */
    int (*aggregate_fit)(void *state, const fedc_round_info *info, const fedc_params *global,
                         const fedc_params *mean, fedc_params *next, char *err, size_t errlen);

    /* With FEDC_STRATEGY_ALL_UPDATES (required then): makes the next global
     * model from the n >= 1 accepted updates of the round, in node-id order
     * (so the result does not depend on arrival order; info->fits[i]
     * describes updates[i]); weights[i] is update i's num_examples. Everything but `next` is read only and
     * belongs to the server; `next` has global's layout and holds a copy of
     * it on entry. FEDC_ERR_INVALID (with a message naming what is wrong,
     * e.g. too few updates for the strategy's parameters) fails the round:
     * the model stays as it was and the federation goes on. Any other
     * failure ends the federation. */
    int (*aggregate_all)(void *state, const fedc_round_info *info, const fedc_params *global,
                         const fedc_params *const *updates, const uint64_t *weights, size_t n,
                         fedc_params *next, char *err, size_t errlen);

    /* Optional: adds keys to the config sent with each evaluation request
     * of `round`, under the same rules as configure_fit. */
    int (*configure_evaluate)(void *state, uint64_t round, fedc_config *cfg);

    /* Optional (NULL: the means weighted by num_examples). Turns the n >= 1
     * evaluation answers of `round` (node-id order) into the round's
     * federated loss and accuracy (NaN: none), recorded in metrics.jsonl as
     * fed_eval_loss and fed_eval_accuracy and used for --target-accuracy
     * when there is no central evaluation. A failure ends the federation. */
    int (*aggregate_evaluate)(void *state, uint64_t round, const fedc_eval_info *evals, size_t n,
                              double *loss, double *accuracy, char *err, size_t errlen);

    /* Optional: centralised evaluation of the new global model of `round`
     * on data the server holds, recorded as central_eval_loss and
     * central_eval_accuracy (NaN: none). It runs on a worker thread while
     * the clients evaluate, so it must not touch what the other functions
     * change. A failure is logged and the round goes on. A server refuses a
     * strategy with evaluate together with fedc_server_options.central_eval. */
    int (*evaluate)(void *state, uint64_t round, const fedc_params *model, double *loss, double *accuracy,
                    char *err, size_t errlen);

    /* Serialises the state to a new buffer (*buf, *len), which the caller
     * frees with free(). The bytes are portable (little-endian) and name the
     * strategy. Returns FEDC_OK or FEDC_ERR_NOMEM. */
    int (*save)(void *state, uint8_t **buf, size_t *len);
    /* Replaces the state with bytes written by `save` of a strategy of the
     * same name, so that the next round gives, bit for bit, what it would
     * have given without the interruption (the hyperparameters are not in
     * the bytes: create the strategy with the same ones). On failure
     * (FEDC_ERR_FORMAT or FEDC_ERR_NOMEM, with a message) the state is left
     * as it was. */
    int (*restore)(void *state, const uint8_t *buf, size_t len, char *err, size_t errlen);

    /* Frees the state (and, for the strategies made by
     * fedc_strategy_create(), this struct, which lives in it). */
    void (*destroy)(void *state);
} fedc_strategy;

/*
 * Creates a built-in strategy: "fedavg", "fedavgm", "fedadagrad",
 * "fedadam", "fedyogi", "fedprox", "scaffold" (which sends its control
 * variate with fit_tensors), "fednova" (which weighs updates with
 * fit_weight, from the metrics "local_steps" and "local_momentum"), or one
 * of the robust aggregators
 * "median", "trimmed-mean", "krum", "multikrum", "bulyan" (which set
 * FEDC_STRATEGY_ALL_UPDATES and ignore the weights). `params` (NULL: none) holds its
 * hyperparameters as doubles under these keys, each of which is also a
 * command-line flag (`_` spelt `-`):
 *
 *   server_lr        fedavgm 1.0, fedadagrad 0.1, fedadam 0.1, fedyogi 0.01,
 *                    scaffold 1.0
 *   server_momentum  fedavgm 0.0 (in [0, 1))
 *   beta1            fedadagrad 0.0, fedadam 0.9, fedyogi 0.9 (in [0, 1))
 *   beta2            fedadam 0.99, fedyogi 0.99 (in [0, 1))
 *   tau              fedadagrad 1e-9, fedadam 1e-9, fedyogi 1e-3 (> 0)
 *   proximal_mu      fedprox, required (>= 0)
 *   trim_beta        trimmed-mean 0.2 (in [0, 0.5))
 *   byzantine        krum, multikrum, bulyan 0 (an integer >= 0): f
 *   krum_m           multikrum 0, meaning n - f (an integer >= 0)
 *
 * server_lr must be positive; every value must be finite. On success
 * *out owns the strategy (free it with fedc_strategy_destroy()). Returns
 * FEDC_ERR_INVALID with a message in err for an unknown name (listing the
 * known ones), a key the strategy does not take, or a value out of range
 * (naming the flag, e.g. "--server-momentum"); FEDC_ERR_NOMEM.
 */
int fedc_strategy_create(const char *name, const fedc_config *params, fedc_strategy **out, char *err,
                         size_t errlen);

/*
 * The norm of the local aggregation vector of `steps` steps of SGD with
 * heavy-ball momentum (buffer starting at zero), as FedNova (Wang et al.
 * 2020) defines it: the sum over k = 1..steps of (1 - momentum^k) / (1 -
 * momentum), which is `steps` for momentum 0. A client's total movement
 * is about lr * norm * (its mean gradient): FedNova divides by it, and the
 * built-in trainer's SCAFFOLD uses it in place of the step count. NaN for
 * steps < 1 or momentum outside [0, 1).
 */
double fedc_sgd_norm(double steps, double momentum);

/* Calls s->destroy(s->state). No-op on NULL. */
void fedc_strategy_destroy(fedc_strategy *s);

/* The built-in strategies' names, separated by ", " (for help texts). */
const char *fedc_strategy_names(void);

#ifdef __cplusplus
}
#endif
#endif
