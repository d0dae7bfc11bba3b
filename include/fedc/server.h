/*
 * The server: holds the global model, runs rounds over the connected
 * clients, aggregates their updates with FedAvg (or another strategy,
 * see fedc/strategy.h) and records metrics.
 *
 *   fedc_server_options opt;
 *   fedc_server_options_init(&opt);
 *   opt.listen = "0.0.0.0:7000";
 *   opt.rounds = 20;
 *   opt.min_clients = 3;
 *   opt.initial_model = params;          // or NULL: a client provides it
 *   char err[FEDC_ERRMSG_MAX];
 *   fedc_server *s = fedc_server_create(&opt, err, sizeof err);   // binds the port
 *   int rc = fedc_server_run(s);         // returns when the federation ends
 *   fedc_server_destroy(s);
 *
 * One event loop serves every connection; nothing blocks it but the
 * aggregation arithmetic. Updates are folded into the aggregate as they
 * arrive, so memory grows with the model size, not with the number of
 * clients.
 */
#ifndef FEDC_SERVER_H
#define FEDC_SERVER_H

#include <stdint.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "fedc/privacy.h"
#include "fedc/strategy.h"
#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fedc_sampling {
    FEDC_SAMPLING_FIXED = 0,  /* max(min_clients, ceil(fraction * n)) clients, uniformly */
    FEDC_SAMPLING_POISSON = 1 /* each connected client independently with probability fraction */
} fedc_sampling;

/* What happened in one round; passed to on_round and written as one line of
 * OUT/metrics.jsonl. Values that were not measured are NaN. */
typedef struct fedc_round_record {
    uint64_t round;
    int failed;                 /* fewer than min_clients results: model unchanged */
    const char *failure_reason; /* set when failed */
    uint32_t clients_sampled;
    uint32_t clients_ok;
    uint32_t clients_failed;
    double train_loss;    /* mean of the clients' train_loss, weighted by num_examples */
    double fed_eval_loss; /* clients' evaluation of the new model, weighted */
    double fed_eval_accuracy;
    double central_eval_loss; /* the central_eval callback's result */
    double central_eval_accuracy;
    double seconds;
    uint64_t bytes_sent;
    uint64_t bytes_received;
    /* With differential privacy (fedc_server_options.dp): the epsilon spent
     * so far at dp.delta (NaN without DP), how many of this round's
     * updates the server clipped, and the clip norm it used. */
    double epsilon;
    double delta;
    uint32_t dp_clipped;
    double dp_clip;
    /* Record-level DP (DP-SGD on the clients): the largest epsilon any
     * client has reported in its FitRes metric "epsilon_record" so far
     * (NaN: none did). */
    double epsilon_record;
} fedc_round_record;

/* Centralised evaluation of the global model after a round, run on a worker
 * thread. Return FEDC_OK and set loss and accuracy. */
typedef int (*fedc_central_eval_fn)(void *user, const fedc_params *model, uint64_t round, double *loss,
                                    double *accuracy, char *err, size_t errlen);

/* Secure aggregation (docs/secagg.md): SecAgg+ (Bell et al. 2020; the
 * complete graph of Bonawitz et al. 2017 when K = n - 1). The server learns
 * the sum of the surviving clients' quantised, weighted updates and nothing
 * else, and the round survives clients dropping out at any stage as long as
 * each survivor keeps T neighbours. A zero field takes its default, chosen
 * per round from the number n of clients sampled. */
typedef struct fedc_secagg_options {
    int enabled;
    uint32_t neighbours;  /* K: n - 1 (every other client) up to n = 199, else 198 (see secagg.md) */
    uint32_t threshold;   /* T: floor(K / 2) + 1, the least that is safe; must be > K / 2 */
    double range;         /* R: each coordinate of an update is clipped to [-R, R] (default 8) */
    unsigned bits;        /* B: bits per coordinate; default the most, up to 24, that n cannot wrap */
    double max_weight;    /* W: a client's weight is min(num_examples, W) / W (default 1000) */
    double stage_timeout; /* seconds each stage after training waits (default 60) */
} fedc_secagg_options;

typedef struct fedc_server_options {
    const char *listen;               /* "HOST:PORT" (default "127.0.0.1:7000"; port 0 picks one) */
    uint64_t rounds;                  /* the cap on rounds (default 10) */
    double target_accuracy;           /* stop when central (else federated) accuracy >= this; <= 0: off */
    uint32_t min_clients;             /* clients needed to start and results needed per round (default 2) */
    fedc_sampling sampling;           /* default FEDC_SAMPLING_FIXED */
    double fraction_fit;              /* default 1.0 */
    double fraction_evaluate;         /* share of clients asked to evaluate (default 1.0; 0: none) */
    double round_timeout;             /* seconds a stage waits for results (default 600) */
    double wait_timeout;              /* seconds to wait for min_clients; 0 = forever (default) */
    const fedc_params *initial_model; /* copied; NULL: ask the first client for its parameters */
    const fedc_config *fit_config;    /* extra keys sent with every fit and evaluate request */
    const char *out_dir;      /* metrics.jsonl, model.safetensors and checkpoint.fedc go here; NULL: none */
    uint64_t seed;            /* client sampling and the per-client "seed" config key */
    uint32_t max_frame_bytes; /* largest frame accepted (default 16 MiB) */
    uint32_t
        max_inflight_updates; /* updates received at once, each needing a model-sized buffer (default 2) */
    uint64_t max_model_bytes; /* largest model accepted from a client (default 16 GiB) */
    /* Connections held at once (default 10000). Each is a file descriptor:
     * fedc_server_run() raises the process's soft open-file limit
     * (RLIMIT_NOFILE), within the hard limit, to max_connections + 64, and
     * logs a warning when the hard limit cannot hold min_clients. */
    uint32_t max_connections;
    /* TLS 1.3 (docs/security.md): the server's certificate chain and
     * private key, PEM files. With tls_ca set, every client must present a
     * certificate signed by that CA (mutual TLS). Without tls_cert the
     * connections are plaintext, which is refused unless insecure is set. */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
    int insecure; /* allow plaintext connections */
    /* Node authentication (docs/security.md): a file of the node keys
     * allowed in, one `fedc keygen` .pub line each. A client must then
     * present one of them and sign the server's fresh nonce with it; its
     * node id must be the key's fingerprint or name. NULL: off. Reloaded
     * by fedc_server_reload_keys(). */
    const char *authorized_keys;
    double handshake_timeout; /* seconds for a new connection to say hello (default 10) */
    /* Heartbeat: after this many seconds without traffic the kernel probes
     * the client (TCP keepalive), every heartbeat / 3 s; after 3 unanswered
     * probes the connection is dropped, so a client whose machine or link
     * died is noticed within 2 x heartbeat s even in the middle of a long
     * round (default 30; 0: off). */
    double heartbeat;
    /* Where the updates are summed (default the CPU). On a GPU the sums are
     * bit-identical to the CPU's; worth it for large models. */
    fedc_device device;
    /* How the round's clients' models become the next global model, and
     * extra keys for each training request (include/fedc/strategy.h).
     * NULL: FedAvg, the weighted mean. Not owned: it must outlive the
     * server, which calls it with the same state every round. */
    const fedc_strategy *strategy;
    /* Differential privacy (fedc/privacy.h, docs/privacy.md); mode
     * FEDC_DP_OFF by default. Not with a strategy that needs every update
     * or weighs or extends them (the robust aggregators, scaffold,
     * fednova). */
    fedc_dp_options dp;
    /* Secure aggregation; off by default. Not with a strategy that needs
     * every update or weighs or extends them, nor with --dp central (the
     * server cannot clip what it cannot see). */
    fedc_secagg_options secagg;
    fedc_central_eval_fn central_eval;
    void *central_eval_user;
    void (*on_round)(void *user, const fedc_round_record *r);
    void *on_round_user;
    /* Called every progress_interval seconds while a round's training stage
     * runs (0: never), with the results in so far; uses on_round_user. */
    void (*on_progress)(void *user, uint64_t round, uint32_t done, uint32_t sampled);
    double progress_interval;
    /* Continue the federation whose checkpoint is in this directory
     * (docs/checkpoints.md) instead of starting afresh; NULL: a fresh
     * start. With out_dir set after every round, OUT/checkpoint.fedc holds
     * the global model, the round number, the strategy's state (its
     * save/restore), the DP accountant and whether the target was reached.
     * On resume the model comes from there (initial_model, when set, must
     * have its layout), the rounds go on from the one after it, and the
     * lines of OUT/metrics.jsonl for later rounds are dropped. out_dir NULL
     * takes this directory; otherwise it must be the same one. The other
     * options should be the ones the federation started with: a checkpoint
     * written with another strategy, seed, sampling, fraction_fit, DP mode
     * or parameters, or secure aggregation on or off is refused, naming
     * the difference (rounds, timeouts and the like may change).
     * fedc_server_create() fails with FEDC_ERR_NOTFOUND when the directory
     * has no checkpoint, FEDC_ERR_INVALID for a mismatch, FEDC_ERR_FORMAT
     * or FEDC_ERR_VERSION for a damaged or foreign file. */
    const char *resume_dir;
} fedc_server_options;

/* Fills opt with the defaults documented above. */
void fedc_server_options_init(fedc_server_options *opt);

typedef struct fedc_server fedc_server;

/* Validates the options, creates OUT (if set) and binds the listening
 * socket. Returns NULL with a message in err for a bad option, a port in use
 * (naming it) or an unusable output directory. */
fedc_server *fedc_server_create(const fedc_server_options *opt, char *err, size_t errlen);
/* Closes every connection and frees the server. No-op on NULL. */
void fedc_server_destroy(fedc_server *s);

/* The TCP port actually bound (useful with port 0). */
int fedc_server_port(const fedc_server *s);

/*
 * Runs the federation: waits for min_clients, obtains the initial model,
 * runs up to `rounds` rounds, then tells every client the federation is
 * over and saves OUT/model.safetensors. After each round (failed ones too)
 * it writes OUT/checkpoint.fedc atomically (temporary file, fsync, rename,
 * fsync of OUT); a checkpoint that cannot be written is logged as an error
 * and the federation goes on. Returns FEDC_OK when it ran all
 * rounds or reached target_accuracy, FEDC_ERR_NOTREACHED when a target was
 * set and the cap came first, FEDC_ERR_TIMEOUT when wait_timeout passed,
 * FEDC_ERR_CANCELLED after fedc_server_stop(). fedc_server_errmsg() says why.
 */
int fedc_server_run(fedc_server *s);

/* Ends a running federation at the next opportunity (the current round is
 * abandoned). Async-signal-safe. */
void fedc_server_stop(fedc_server *s);
/* Suspends a running federation so that resume_dir can continue it: the
 * round in progress is abandoned, the checkpoint of the last complete
 * round is made sure to be on disk (written again if writing it after the
 * round failed), the clients are told to shut down, and fedc_server_run()
 * returns FEDC_OK (FEDC_ERR_IO when that checkpoint cannot be written).
 * OUT/model.safetensors is not written: the model is in the checkpoint.
 * Async-signal-safe; `fedc server` calls it on SIGTERM. */
void fedc_server_suspend(fedc_server *s);

/* Reads opt.authorized_keys again (fedc server does on SIGHUP): connected
 * clients whose key is no longer listed are told and disconnected. A file
 * that does not parse is logged and the old list kept. Async-signal-safe. */
void fedc_server_reload_keys(fedc_server *s);

/* The current global model (owned by the server; NULL before it exists). */
const fedc_params *fedc_server_model(const fedc_server *s);
/* Text of the last error. Owned by the server. */
const char *fedc_server_errmsg(const fedc_server *s);

#ifdef __cplusplus
}
#endif
#endif
