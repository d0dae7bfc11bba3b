/* Hooks of the server for the simulator: clients without sockets.
 *
 * A simulated client is a node like any other, but its bytes travel in
 * memory: what the server sends it goes to deliver(), and what it answers
 * comes back through fedc__server_feed(), which runs the very frame reader
 * that socket reads go through. Everything here runs on the server's loop
 * thread. */
#ifndef FEDC_SERVER_INTERNAL_H
#define FEDC_SERVER_INTERNAL_H

#include <uv.h>

#include "fedc/server.h"
#include "strategy/fedavg.h"

typedef struct fedc__virtual_transport {
    /* Called for every message to simulated client `index`: `frame` is one
     * encoded MESSAGE frame (the callee owns it and frees it with free());
     * when a model follows, `blob` is a reference to it whose frames are
     * bufs[0..nbufs), valid until the reference is given back with
     * fedc__server_blob_release() on the loop thread. */
    void (*deliver)(void *ctx, uint32_t index, uint8_t *frame, size_t frame_len, void *blob,
                    const uv_buf_t *bufs, unsigned nbufs);
    /* Called when a fit stage's results are all in, before the new model is
     * computed from agg: adds to agg's sums the updates that were folded
     * outside the server (see fedc__server_feed_folded). Non-zero ends the
     * federation with that status and the message in err. May be NULL. */
    int (*collect)(void *ctx, fedc__fedavg *agg, char *err, size_t errlen);
    void *ctx;
} fedc__virtual_transport;

void fedc__server_set_virtual(fedc_server *s, const fedc__virtual_transport *t);
/* Adds simulated client `index`, which has yet to say hello. */
int fedc__server_add_virtual(fedc_server *s, uint32_t index);
/* Bytes from simulated client `index`, as they would come off its socket. */
void fedc__server_feed(fedc_server *s, uint32_t index, const uint8_t *data, size_t len);
/* Simulated client `index` vanished (its connection closed). */
void fedc__server_disconnect(fedc_server *s, uint32_t index, const char *why);
/* Simulated client `index` drops its connection (logged with `why`) and
 * connects again at once with the Hello in `hello`; the round's stage is
 * settled only after both, so the outcome does not depend on timing. */
void fedc__server_reconnect(fedc_server *s, uint32_t index, const uint8_t *hello, size_t len,
                            const char *why);
/* Simulated client `index` answered its fit request with an update that was
 * checked and folded into an accumulator outside the server (another MPI
 * rank; collect() adds those sums in). `frame` is the answer's FitRes
 * MESSAGE frame and `wire_bytes` the size of the whole answer, counted as
 * received. The server handles the FitRes as if the tensors had followed:
 * it counts the update, or refuses it (a stale round, a bad weight, an
 * unexpected message). decided(ctx, kept) says which before the stage can
 * end; kept == 0 means the update must come back out of those sums. */
void fedc__server_feed_folded(fedc_server *s, uint32_t index, const uint8_t *frame, size_t len,
                              uint64_t wire_bytes, void (*decided)(void *ctx, int kept), void *ctx);
/* How many updates the round in progress expects: the capacity that sets
 * the range limit of FedAvg's fixed point (0 before the first model). */
uint64_t fedc__server_fit_capacity(const fedc_server *s);
/* A number that identifies the model a blob carries, unique in the process. */
uint64_t fedc__server_blob_version(const void *blob);
/* The round in progress (0 before the first). */
uint64_t fedc__server_round(const fedc_server *s);
void fedc__server_blob_release(void *blob);
uv_loop_t *fedc__server_loop(fedc_server *s);

#endif
