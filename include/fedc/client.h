/*
 * The client API: connect your own training code to a fedc federation.
 *
 * You supply three callbacks and a user-data pointer; fedc_client_run()
 * connects to the server, answers its requests by calling them, and returns
 * when the server ends the federation. Nothing else is needed: the server
 * never runs code on the client and never sees the client's data.
 *
 *   fedc_client_options opt;
 *   fedc_client_options_init(&opt);
 *   opt.server = "10.0.0.5:7000";
 *   fedc_client_callbacks cb = { my_get_parameters, my_fit, my_evaluate };
 *   fedc_client *c = fedc_client_create(&opt, &cb, my_state);
 *   int rc = fedc_client_run(c);          // FEDC_OK when the server said "done"
 *   if (rc) fprintf(stderr, "%s\n", fedc_client_errmsg(c));
 *   fedc_client_destroy(c);
 *
 * examples/custom_client.c is a complete client with its own training code.
 */
#ifndef FEDC_CLIENT_H
#define FEDC_CLIENT_H

#include <stdint.h>

#include "fedc/config.h"
#include "fedc/core.h"
#include "fedc/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fedc_client_callbacks {
    /*
     * Called when the server has no initial model and asks this client for
     * one. Store a new parameter set in *out; the library takes ownership
     * and destroys it. May be NULL if your deployment always gives the
     * server a model (--model or --initial-model).
     */
    int (*get_parameters)(void *user, const fedc_config *config, fedc_params **out, char *err, size_t errlen);
    /*
     * Trains on local data. `params` holds the global model; update it in
     * place: its contents after the call are the update sent back. Set
     * *num_examples (the aggregation weight, > 0) and optionally add
     * metrics (for example "train_loss"). `config` holds the server's round
     * configuration ("round", "lr", "local_epochs", "batch_size", "seed",
     * ...; see docs/protocol.md). Return FEDC_OK, or an error code with a
     * message in err: the server then drops this client from the round
     * and the client stays connected.
     */
    int (*fit)(void *user, fedc_params *params, const fedc_config *config, uint64_t *num_examples,
               fedc_config *metrics, char *err, size_t errlen);
    /*
     * Evaluates `params` on the local test split: set *loss, *num_examples
     * and optionally metrics such as "accuracy". May be NULL, in which case
     * evaluation requests are answered with a failure.
     */
    int (*evaluate)(void *user, const fedc_params *params, const fedc_config *config, double *loss,
                    uint64_t *num_examples, fedc_config *metrics, char *err, size_t errlen);
} fedc_client_callbacks;

typedef struct fedc_client_options {
    const char *server;       /* "HOST:PORT" of the server (required) */
    const char *node_id;      /* this node's id; NULL: a random one is made */
    double connect_timeout;   /* seconds to keep retrying to reach the server (default 60) */
    double io_timeout;        /* seconds a read may wait once connected; 0 = forever (default) */
    double heartbeat;         /* TCP keepalive as on the server (fedc_server_options.heartbeat; default 30) */
    uint32_t max_frame_bytes; /* largest frame accepted (default 16 MiB) */
    uint64_t max_model_bytes; /* largest model accepted (default 16 GiB) */
    /* TLS 1.3 (docs/security.md): the CA file (PEM) the server's certificate
     * must chain to; the server's certificate must also name the host of
     * `server` (or tls_server_name). With tls_cert and tls_key (PEM) the
     * client presents its own certificate (mutual TLS). Without tls_ca the
     * connection is plaintext, which is refused unless insecure is set.
     * A program using TLS should ignore SIGPIPE (OpenSSL writes to the
     * socket with write(2)). The strings are not copied: they must stay
     * valid until fedc_client_run() returns. */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_server_name;
    int insecure; /* allow a plaintext connection */
    /* Node authentication (docs/security.md): the node's Ed25519 private
     * key, a PEM file from `fedc keygen`. The client presents its public
     * key and signs the server's nonce with it when the server asks. With
     * no node_id, the key's fingerprint is the node id. NULL: none. */
    const char *node_key;
} fedc_client_options;

/* Fills opt with the defaults above. */
void fedc_client_options_init(fedc_client_options *opt);

typedef struct fedc_client fedc_client;

/* Creates a client (no connection is made yet). Copies the options and
 * strings. Returns NULL when out of memory or when opt->server or cb->fit
 * is missing. */
fedc_client *fedc_client_create(const fedc_client_options *opt, const fedc_client_callbacks *cb, void *user);
/* Closes any connection and frees the client. No-op on NULL. */
void fedc_client_destroy(fedc_client *c);

/* This client's node id (given or generated). */
const char *fedc_client_node_id(const fedc_client *c);

/*
 * Runs the client until the server ends the federation (returns FEDC_OK).
 * While the server is not reachable it retries with exponential backoff
 * (0.1 s doubling to 5 s, with jitter) for at most connect_timeout seconds,
 * then returns FEDC_ERR_CONNECT. A TLS handshake that the server closes
 * or resets without an alert (a server at its connection or file limit,
 * or overloaded) counts as unreachable and is retried the same way; one
 * that fails verification or ends with an alert returns FEDC_ERR_CONNECT
 * at once. If an established connection breaks, it
 * reconnects under the same rule. A refused handshake returns
 * FEDC_ERR_REJECTED or FEDC_ERR_VERSION; a protocol violation by the server
 * FEDC_ERR_PROTOCOL. fedc_client_errmsg() then says what happened.
 */
int fedc_client_run(fedc_client *c);

/* Text of the last error (empty if none). Owned by the client. */
const char *fedc_client_errmsg(const fedc_client *c);

/* Asks a running fedc_client_run to return FEDC_ERR_CANCELLED at its next
 * wait. Safe to call from a signal handler or another thread. */
void fedc_client_stop(fedc_client *c);

#ifdef __cplusplus
}
#endif
#endif
