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

    /* Adds the strategy's keys to the config sent with a training request
     * of `round` (1-based), e.g. "proximal_mu". May be called once per
     * sampled client, so it must depend on the state and round only, and
     * must not change the state. NULL: nothing to add. Returns a fedc
     * status (FEDC_ERR_NOMEM). */
    int (*configure_fit)(void *state, uint64_t round, fedc_config *cfg);

    /* Makes the next global model. `global` is the model the clients were
     * sent in `round`, `mean` the weighted mean of the models they returned
     * (FedAvg's result); both are read only. `next` has their layout and
     * holds a copy of `global` on entry; the strategy overwrites it. Called
     * once per successful round, in order; a failed round (too few results)
     * does not call it. Required unless flags has FEDC_STRATEGY_ALL_UPDATES
     * (then unused, may be NULL). Returns a fedc status with a message in
     * err; a failure ends the federation. */
    int (*aggregate_fit)(void *state, uint64_t round, const fedc_params *global, const fedc_params *mean,
                         fedc_params *next, char *err, size_t errlen);

    /* With FEDC_STRATEGY_ALL_UPDATES (required then): makes the next global
     * model from the n >= 1 accepted updates of `round`, in node-id order
     * (so the result does not depend on arrival order); weights[i] is
     * update i's num_examples. Everything but `next` is read only and
     * belongs to the server; `next` has global's layout and holds a copy of
     * it on entry. FEDC_ERR_INVALID (with a message naming what is wrong,
     * e.g. too few updates for the strategy's parameters) fails the round:
     * the model stays as it was and the federation goes on. Any other
     * failure ends the federation. */
    int (*aggregate_all)(void *state, uint64_t round, const fedc_params *global,
                         const fedc_params *const *updates, const uint64_t *weights, size_t n,
                         fedc_params *next, char *err, size_t errlen);

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
 * "fedadam", "fedyogi", "fedprox", or one of the robust aggregators
 * "median", "trimmed-mean", "krum", "multikrum", "bulyan" (which set
 * FEDC_STRATEGY_ALL_UPDATES and ignore the weights). `params` (NULL: none) holds its
 * hyperparameters as doubles under these keys, each of which is also a
 * command-line flag (`_` spelt `-`):
 *
 *   server_lr        fedavgm 1.0, fedadagrad 0.1, fedadam 0.1, fedyogi 0.01
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

/* Calls s->destroy(s->state). No-op on NULL. */
void fedc_strategy_destroy(fedc_strategy *s);

/* The built-in strategies' names, separated by ", " (for help texts). */
const char *fedc_strategy_names(void);

#ifdef __cplusplus
}
#endif
#endif
