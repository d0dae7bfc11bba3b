/* The server's internals: the state of connections and rounds, shared by
 * the connection layer (connection.c: sockets, the frame reader, writes,
 * closes), the reading of updates (stream.c: tensors checked and folded as
 * they arrive, rejects, DP clipping, the end of an update), simulated
 * clients (virtual.c), the round driver (server.c: sampling, stages,
 * metrics, the public API) and the end of a fit stage (aggregate.c: the
 * strategy's hooks, the mean, DP noise and accounting, the next model). */
#ifndef FEDC_SERVER_IMPL_H
#define FEDC_SERVER_IMPL_H

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <openssl/ssl.h>
#include <sodium.h>
#include <uv.h>

#include "core/nodekey.h"
#include "fedc/server.h"
#include "net/conn.h"
#include "proto/wire.h"
#include "secagg/protocol.h"
#include "server/server_internal.h"
#include "strategy/fedavg.h"

#define LOG_COMPONENT "server"
/* Most tensors a model may have (docs/protocol.md). */
#define FEDC_MAX_MODEL_TENSORS 16384u
#define DISCARD_BYTES          (64u << 10)

typedef enum { NODE_HANDSHAKE, NODE_IDLE, NODE_BUSY } node_state;
typedef enum { REQ_NONE, REQ_GETPARAMS, REQ_FIT, REQ_EVAL } req_kind;
typedef enum { R_HDR, R_MSG, R_DATA } read_state;
typedef enum { S_NONE, S_GETPARAMS, S_FIT } stream_kind;
typedef enum { PHASE_WAIT, PHASE_INIT, PHASE_FIT, PHASE_EVAL, PHASE_DONE } phase;

/* A model shared by every pending write that sends it: the frames that
 * carry it point into its tensors, so it lives until the last write ends. */
typedef struct model_blob {
    int refs;
    uint64_t version; /* unique per model this server held */
    fedc_params *params;
    uv_buf_t *bufs;
    unsigned nbufs;
    void *hdrmem;
} model_blob;

typedef struct node node;
typedef struct fedc_server fedc_server;

struct node {
    uv_tcp_t tcp; /* first: the handle's address is the node's */
    fedc_server *srv;
    node *next;
    uint64_t serial;
    int is_virtual; /* a simulated client: no socket, see fedc__server_feed */
    int draining;   /* said its last word: reading and dropping until the peer closes */
    int retired;    /* out of the federation (see retire()): input is dropped */
    uint32_t vindex;
    uint8_t *pending; /* virtual: fed bytes held back while waiting for a slot */
    size_t pending_len, pending_off;
    char peer[INET6_ADDRSTRLEN + 16]; /* "[v6]:port" or "v4:port" */
    char id[129];
    node_state state;
    int closing;
    uv_timer_t handshake_timer;
    int timer_open;

    req_kind req;
    uint64_t req_round;
    int result_recorded; /* this request's result counted in the stage */
    int asked_params;    /* already asked for initial parameters */

    /* Frame reader. */
    read_state rs;
    uint8_t hdr[FEDC_FRAME_HEADER_BYTES];
    uint32_t hdr_got;
    uint8_t ftype;
    uint32_t flen, fgot;
    uint8_t *msgbuf;
    uint32_t msgcap;
    uint8_t *data_dst; /* NULL: discard */

    /* Tensor stream that follows FitRes / GetParametersRes. */
    stream_kind sk;
    uint32_t stream_total, stream_index;
    uint64_t stream_bytes; /* GetParametersRes: bytes announced so far */
    int expect_header;     /* next frame must be a TensorHeader */
    fedc_tensor *cur_t;
    size_t cur_nbytes, cur_got, cur_checked;
    fedc_params *stream_params; /* staging buffer or the new initial model */
    int slot;                   /* staging slot held, -1 if none */
    int waiting_slot;           /* paused until a slot frees */
    node *wait_next;
    int stale;         /* result of an old round: consume and drop */
    int remote_folded; /* the FitRes being fed was folded elsewhere (fedc__server_feed_folded) */
    int folding;       /* this update's chunks are being folded into the aggregate */
    int rejected;
    char reject_reason[FEDC_ERRMSG_MAX];
    uint64_t num_examples; /* of the FitRes being read */
    double weight;         /* its aggregation weight (see fedc_strategy.fit_weight) */
    fedc_config *metrics;

    /* Secure aggregation (secure.c): this node's index in the round, -1
     * when it takes no part, and whether it answered the current stage. */
    int32_t sa_index;
    int sa_answered;

    /* TLS (tls.c): the session, the plaintext queued to be encrypted, and
     * the ciphertext bytes written but not yet on the wire. */
    SSL *ssl;
    struct tls_out *tls_queue;
    size_t tls_inflight;

    /* Node authentication (connection.c): the key the client presented,
     * and while its signature is awaited, the nonce and its hello. */
    int has_key, auth_pending;
    uint8_t key[32];
    uint8_t nonce[FEDC_NODEAUTH_NONCE];
    char *hello_software;
};

typedef struct fit_result {
    char id[129];
    uint64_t n;           /* num_examples */
    double weight;        /* the aggregation weight */
    double loss;          /* NaN if not reported */
    fedc_config *metrics; /* the FitRes metrics (NULL when out of memory) */
    fedc_params *update;  /* the whole update, with FEDC_STRATEGY_ALL_UPDATES only */
} fit_result;

typedef struct eval_result {
    char id[129];
    uint64_t n;
    double loss, acc;
} eval_result;

struct fedc_server {
    fedc_server_options opt;
    char *listen_addr;
    char *out_dir;
    fedc_config *fit_config;
    char errmsg[FEDC_ERRMSG_MAX];
    int rc;
    int loop_inited, handles_open, grace_open;

    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t stage_timer;
    uv_timer_t wait_timer;
    uv_timer_t progress_timer;
    uv_timer_t grace_timer; /* ends connections still open 10 s after shutdown began */
    int defer_stage;        /* fedc__server_reconnect() is replacing a node */
    uv_async_t stop_async;
    uv_work_t central_work;
    int port;

    node *nodes;
    uint64_t next_serial;
    uint32_t nconnections;
    uint32_t nsockets;          /* connections that are not simulated clients */
    uint32_t nidle;             /* nodes in NODE_IDLE, kept by fedc__srv_set_state() */
    SSL_CTX *tls;               /* NULL: plaintext connections (opt.insecure) */
    struct tls_write *tls_pool; /* free ciphertext buffers (tls.c) */
    unsigned tls_pool_len;
    /* Node authentication: the allow-list read from opt.authorized_keys
     * (NULL: off), reloaded by fedc_server_reload_keys(). */
    char *keys_path;
    fedc__nodekey_entry *keys;
    size_t nkeys;
    volatile sig_atomic_t reload_requested, stop_requested;
    uint8_t tls_buf[64u << 10]; /* ciphertext just read, before it goes into a session */
    int running;
    fedc__virtual_transport virt;
    node **vnodes; /* simulated clients by index */
    uint32_t nvirtual;
    node *graveyard; /* closed simulated clients, freed by fedc__srv_bury() */
    uint8_t discard[DISCARD_BYTES];

    model_blob *model;
    model_blob *fit;  /* what training requests carry: the model, then the strategy's fit_tensors */
    fedc__fedavg agg; /* laid out as fit */
    int agg_ready;
    int fit_layout_set; /* agg has been laid out for a strategy's fit_tensors */
    fedc_params **slots;
    int *slot_busy;
    node *wait_head, *wait_tail;

    phase ph;
    uint64_t round;
    int stopping;
    int finished;
    double round_start;
    uint64_t bytes_sent, bytes_received, round_sent0, round_received0;
    uint32_t stage_pending; /* requests whose result is still due */
    uint32_t population;    /* idle clients when the round was sampled */
    uint32_t sampled, ok, failed;
    fit_result *fits;
    size_t nfits, capfits;
    eval_result *evals;
    size_t nevals, capevals;
    int central_running;
    double central_loss, central_acc;
    char central_err[FEDC_ERRMSG_MAX];
    int central_rc;
    fedc_round_record rec;
    char fail_reason[FEDC_ERRMSG_MAX];
    FILE *metrics;
    int target_reached;

    /* Checkpoints (checkpoint.c, docs/checkpoints.md): the last round whose
     * checkpoint is on disk, the bytes of a newer one that could not be
     * written (retried by fedc_server_suspend), whether they are off (a
     * strategy that cannot save its state), and suspension. */
    uint64_t ckpt_round;
    uint8_t *ckpt_unsaved;
    size_t ckpt_unsaved_len;
    uint64_t ckpt_unsaved_round;
    int ckpt_off;
    int resumed;
    volatile sig_atomic_t suspend_requested; /* set by fedc_server_suspend() */
    int suspending;

    /* Differential privacy (opt.dp). */
    double dp_q;           /* the sampling rate charged: fraction_fit under Poisson sampling, else 1 */
    double dp_z;           /* the noise multiplier charged (Z; Z/2 in local mode, see privacy.md) */
    uint64_t dp_steps;     /* rounds charged so far */
    uint32_t dp_clipped;   /* updates the server clipped this round */
    double dp_clip;        /* the clip norm of this round (it moves with --dp-adaptive) */
    double epsilon_record; /* the largest "epsilon_record" a client reported (NaN: none) */

    /* Secure aggregation (opt.secagg, secure.c): the round's protocol
     * server, its clients by index (NULL once dropped), its parameters,
     * and the mean it produced for fedc__srv_finish_fit(). The round's K,
     * t and dimension (the model's coordinates plus the weight, or with
     * the discrete Gaussian the padded coordinates) are those of
     * fedc__sa_server_config(sa). */
    fedc__sa_server *sa;
    node **sa_nodes;
    uint32_t sa_n;
    /* The quantisation bits: not a parameter of the protocol, which sums
     * mod 2^32 whatever the width, so its configuration does not hold it. */
    unsigned sa_bits;
    uint8_t sa_graph_seed[32];
    fedc_params *sa_mean;
    /* With --dp client-clip: the distributed discrete Gaussian's round
     * parameters, and the RDP spent so far at fedc_rdp_default_orders(). */
    int sa_ddg;
    double sa_ddg_gamma, sa_ddg_stddev;
    uint8_t sa_ddg_seed[32];
    double *ddg_rdp;
};

/* Central and client-clip DP: the server clips each update on arrival. */
static inline int fedc__srv_dp_clips(const fedc_server *s)
{
    return s->opt.dp.mode == FEDC_DP_CENTRAL || s->opt.dp.mode == FEDC_DP_CLIENT_CLIP;
}

/* Shared between the connection layer (connection.c, stream.c, virtual.c)
 * and the round driver (server.c, aggregate.c); each is defined in the file
 * named. */

/* connection.c */
model_blob *fedc__srv_blob_new(fedc_params *p, char *err, size_t errlen);
void fedc__srv_blob_unref(model_blob *b);
void fedc__srv_model_digest(const fedc_params *p, char hex[65]);
void fedc__srv_set_state(node *n, node_state st);
int fedc__srv_node_send(node *n, const fedc__msg *m, model_blob *blob, int close_after);
void fedc__srv_node_close(node *n, const char *why);
void fedc__srv_request_failed(node *n, const char *why);
void fedc__srv_on_connection(uv_stream_t *server, int status);
void fedc__srv_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void fedc__srv_consume(node *n, size_t nread);
/* libuv's read callback for a client's socket. */
void fedc__srv_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
/* Logs a protocol violation and closes n with an Error saying it. */
void fedc__srv_protocol_error(node *n, const char *fmt, ...) FEDC_PRINTF(2, 3);
/* Gives n's staging buffer back and wakes the first client waiting for one. */
void fedc__srv_release_slot(node *n);
/* Takes n out of the queue of clients waiting for a staging buffer. */
void fedc__srv_unlink_waiter(node *n);

/* The reader's next destination (a frame header, a message buffer, a
 * tensor's bytes or the discard buffer), as fedc__srv_on_alloc() gives it. */
void fedc__srv_reader_buf(node *n, uv_buf_t *buf);
/* Reads from n again after a pause (uv_read_start, and under TLS the
 * plaintext already decrypted or buffered). */
void fedc__srv_read_resume(node *n);
/* After the last message to n: close_notify under TLS, FIN, then read and
 * drop until the client closes (at most 5 s). */
void fedc__srv_begin_drain(node *n);

/* Disconnects the authenticated clients whose key left the allow-list. */
void fedc__srv_revoke_unlisted(fedc_server *s);

/* tls.c */
/* Sets up n's TLS session (server side) before its first read. */
int fedc__srv_tls_accept(node *n);
/* Frees n's session and whatever it still had queued. */
void fedc__srv_tls_free(node *n);
/* Frees the server's pool of ciphertext buffers. */
void fedc__srv_tls_pool_free(fedc_server *s);
/* len bytes of ciphertext arrived: handshake, then the plaintext to the reader. */
void fedc__srv_tls_on_read(node *n, const char *data, size_t len);
/* Decrypts what the session holds into the reader until it pauses. */
void fedc__srv_tls_pump(node *n);
/* Queues frame (flen bytes; bufs[0] is set to it) and bufs[1 .. nbufs-1]
 * (a model, `blob` referenced) for encryption; takes frame, bufs and the
 * reference. close_after: drain and close once it is on the wire. */
int fedc__srv_tls_send(node *n, uint8_t *frame, size_t flen, uv_buf_t *bufs, unsigned nbufs, model_blob *blob,
                       int close_after);
/* Encrypts more of the queue while the socket keeps up. */
void fedc__srv_tls_flush(node *n);
/* Queues the session's close_notify for the socket. */
void fedc__srv_tls_close_notify(node *n);

/* stream.c */
/* Takes the chunks of n's update folded so far back out of the aggregate. */
void fedc__srv_unfold_partial(node *n);
/* Gives up on n's update; the rest of its stream is read and dropped. */
void fedc__srv_abandon_update(node *n);
/* Sets up reception of the next tensor after its header, or finishes. */
void fedc__srv_on_tensor_header(node *n, const Fedc__V1__TensorHeader *h);
/* A DATA payload of len bytes has arrived: checks and folds what is complete. */
void fedc__srv_on_data_done(node *n, uint32_t len);
/* The finite value of metric k1 (else k2, when not NULL) in c, or NaN. */
double fedc__srv_metric_or_nan(const fedc_config *c, const char *k1, const char *k2);
/* The end of n's tensor stream: the initial model, or a fit result committed or failed. */
void fedc__srv_stream_finished(node *n);
/* Gives n a free staging buffer: 1, or 0 when all are busy, -1 out of memory. */
int fedc__srv_acquire_slot(node *n);
/* A FitRes: checks it and starts reading the update's tensors. */
void fedc__srv_on_fit_res(node *n, const Fedc__V1__FitRes *r);

/* virtual.c */
void fedc__srv_bury(fedc_server *s);
void fedc__srv_feed_pending(node *n);

/* server.c */
void fedc__srv_maybe_finish_stage(fedc_server *s);
/* The stage timer ran out: the results still due count as failures. */
void fedc__srv_on_stage_timeout(uv_timer_t *t);
void fedc__srv_begin_shutdown(fedc_server *s, int rc);
void fedc__srv_set_model(fedc_server *s, fedc_params *p);
/* Drops the whole updates and the metrics the fit results hold. */
void fedc__srv_free_updates(fedc_server *s);
/* qsort/bsearch order of node pointers by node id. */
int fedc__srv_cmp_node_id(const void *a, const void *b);
/* Starts the round's evaluation stage. */
void fedc__srv_start_eval(fedc_server *s);
/* Ends the round: evaluations combined, metrics written, then the next round or the end. */
void fedc__srv_finish_round(fedc_server *s);

/* resume.c */
/* The checkpoint of the round just ended, written to OUT (a
 * failure is logged; the bytes are kept for a suspend). */
void fedc__srv_write_checkpoint(fedc_server *s);
/* A checkpoint whose write failed, written again; FEDC_ERR_IO when not. */
int fedc__srv_flush_checkpoint(fedc_server *s, char *err, size_t errlen);
/* opt->resume_dir's checkpoint: its state into s, its model into *model. */
int fedc__srv_load_checkpoint(fedc_server *s, const fedc_server_options *opt, fedc_params **model, char *err,
                              size_t errlen);
/* Drops metrics.jsonl's lines of rounds after `round` (and a torn line). */
int fedc__srv_trim_metrics(const char *path, uint64_t round, char *err, size_t errlen);

/* secure.c */
/* Checks opt->secagg against the rest of the options at create time. */
int fedc__srv_secagg_check(const fedc_server_options *opt, char *err, size_t errlen);
/* Sets up the round's secure aggregation for the k sampled nodes v (sorted
 * by id here): indices, parameters, the protocol server. Non-zero: the
 * round cannot use it (s->fail_reason says why) and must fail. */
int fedc__srv_secagg_prepare(fedc_server *s, node **v, size_t k);
/* A SecAgg message from n. */
void fedc__srv_on_secagg(node *n, const Fedc__V1__SecAgg *m);
/* Every client of the current stage has answered, failed or timed out:
 * the next stage, or the mean and fedc__srv_finish_fit(), or a failed round. */
void fedc__srv_secagg_stage_done(fedc_server *s);
/* The epsilon spent so far under --dp client-clip with --secagg. */
double fedc__srv_ddg_epsilon(const fedc_server *s);
/* n is going away: it takes no further part in the round. */
void fedc__srv_secagg_forget(node *n);
/* Frees the round's secure-aggregation state (wiping its secrets). */
void fedc__srv_secagg_end(fedc_server *s);

/* aggregate.c */
/* Makes s->fit, the model plus the strategy's fit_tensors; a failure ends the federation. */
int fedc__srv_prepare_fit(fedc_server *s);
/* Lets the strategy's select_fit change the round's sample. */
int fedc__srv_strategy_select(fedc_server *s, node **all, size_t n, node **v, size_t *k);
/* The epsilon of `steps` rounds at the accountant's q and z. */
double fedc__srv_dp_epsilon(const fedc_server *s, uint64_t steps);
/* Ends the fit stage: the aggregate, DP, the strategy, then evaluation. */
void fedc__srv_finish_fit(fedc_server *s);

#endif
