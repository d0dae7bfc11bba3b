/* Simulated clients: nodes without a socket, whose bytes are fed to the
 * same frame reader that socket reads go through (server_internal.h). */
#include "server/server_impl.h"

/* Frees the simulated clients closed since the last call. */
void fedc__srv_bury(fedc_server *s)
{
    while (s->graveyard) {
        node *n = s->graveyard;
        s->graveyard = n->next;
        free(n->pending);
        /* Set from a Hello while its signed nonce is awaited (node
         * authentication): a client that leaves or fails at that point
         * still holds it (found by fuzz_handshake). */
        free(n->hello_software);
        free(n->msgbuf);
        fedc_config_destroy(n->metrics);
        if (n->sk == S_GETPARAMS) fedc_params_destroy(n->stream_params);
        free(n);
    }
}

/* Runs fed bytes through the same frame reader as socket reads, copying
 * each piece where fedc__srv_on_alloc() says it belongs. Stops early, keeping the
 * rest, when the node must wait for a staging buffer. Returns the bytes
 * used. */
static size_t feed_bytes(node *n, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && !n->closing && !n->retired && !n->waiting_slot) {
        uv_buf_t buf;
        fedc__srv_on_alloc((uv_handle_t *)&n->tcp, 65536, &buf);
        size_t k = len - off < buf.len ? len - off : buf.len;
        memcpy(buf.base, data + off, k);
        off += k;
        fedc__srv_consume(n, k);
    }
    return off;
}

void fedc__srv_feed_pending(node *n)
{
    if (!n->pending) return;
    uint8_t *p = n->pending;
    size_t len = n->pending_len, off = n->pending_off;
    n->pending = NULL;
    off += feed_bytes(n, p + off, len - off);
    if (off < len && !n->closing) {
        n->pending = p;
        n->pending_len = len;
        n->pending_off = off;
    } else {
        free(p);
    }
}

void fedc__server_set_virtual(fedc_server *s, const fedc__virtual_transport *t)
{
    s->virt = *t;
}

int fedc__server_add_virtual(fedc_server *s, uint32_t index)
{
    if (index >= s->nvirtual) {
        uint32_t cap = s->nvirtual ? s->nvirtual : 64;
        while (cap <= index) cap *= 2;
        node **v = realloc(s->vnodes, cap * sizeof *v);
        if (!v) return FEDC_ERR_NOMEM;
        memset(v + s->nvirtual, 0, (cap - s->nvirtual) * sizeof *v);
        s->vnodes = v;
        s->nvirtual = cap;
    }
    node *n = calloc(1, sizeof *n);
    if (!n || !(n->metrics = fedc_config_create())) {
        free(n);
        return FEDC_ERR_NOMEM;
    }
    n->srv = s;
    n->slot = -1;
    n->sa_index = -1;
    n->is_virtual = 1;
    n->vindex = index;
    snprintf(n->peer, sizeof n->peer, "sim:%u", index);
    n->serial = s->next_serial++;
    n->next = s->nodes;
    s->nodes = n;
    s->nconnections++;
    s->vnodes[index] = n;
    return FEDC_OK;
}

void fedc__server_feed(fedc_server *s, uint32_t index, const uint8_t *data, size_t len)
{
    node *n = index < s->nvirtual ? s->vnodes[index] : NULL;
    if (!n || n->closing || n->retired) return;
    if (n->pending) {
        /* Keep the order: append behind what is already waiting. */
        uint8_t *p = realloc(n->pending, n->pending_len + len);
        if (!p) {
            fedc__srv_node_close(n, "out of memory");
            return;
        }
        memcpy(p + n->pending_len, data, len);
        n->pending = p;
        n->pending_len += len;
        return;
    }
    size_t used = feed_bytes(n, data, len);
    if (used < len && !n->closing) {
        n->pending = malloc(len - used);
        if (!n->pending) {
            fedc__srv_node_close(n, "out of memory");
        } else {
            memcpy(n->pending, data + used, len - used);
            n->pending_len = len - used;
            n->pending_off = 0;
        }
    }
    fedc__srv_bury(s);
}

void fedc__server_disconnect(fedc_server *s, uint32_t index, const char *why)
{
    node *n = index < s->nvirtual ? s->vnodes[index] : NULL;
    if (n && !n->closing) fedc__srv_node_close(n, why);
    fedc__srv_bury(s);
}

void fedc__server_reconnect(fedc_server *s, uint32_t index, const uint8_t *hello, size_t len, const char *why)
{
    /* The stage must not finish between the old connection's end and the new
     * one's hello: whether it did would depend on which result came last. */
    s->defer_stage = 1;
    fedc__server_disconnect(s, index, why);
    if (!s->stopping && fedc__server_add_virtual(s, index) == FEDC_OK)
        fedc__server_feed(s, index, hello, len);
    s->defer_stage = 0;
    fedc__srv_maybe_finish_stage(s);
    fedc__srv_bury(s);
}

void fedc__server_feed_folded(fedc_server *s, uint32_t index, const uint8_t *frame, size_t len,
                              uint64_t wire_bytes, void (*decided)(void *ctx, int kept), void *ctx)
{
    node *n = index < s->nvirtual ? s->vnodes[index] : NULL;
    uint64_t before = s->agg.updates;
    int kept = 0;
    /* The stage must not end before decided() has run: whoever folded the
     * update must hear the outcome before the sums are collected. */
    s->defer_stage = 1;
    if (n && !n->closing && !n->retired && !n->pending) {
        n->remote_folded = 1;
        size_t used = feed_bytes(n, frame, len);
        n->remote_folded = 0; /* n is freed only by fedc__srv_bury() */
        if (used == len && !n->closing && wire_bytes > len) s->bytes_received += wire_bytes - len;
        kept = s->agg_ready && s->agg.updates > before;
    }
    decided(ctx, kept);
    s->defer_stage = 0;
    fedc__srv_maybe_finish_stage(s);
    fedc__srv_bury(s);
}

uint64_t fedc__server_fit_capacity(const fedc_server *s)
{
    return s->agg_ready ? s->agg.max_updates : 0;
}

uint64_t fedc__server_round(const fedc_server *s)
{
    return s->round;
}

uint64_t fedc__server_blob_version(const void *blob)
{
    return ((const model_blob *)blob)->version;
}

void fedc__server_blob_release(void *blob)
{
    fedc__srv_blob_unref(blob);
}

uv_loop_t *fedc__server_loop(fedc_server *s)
{
    return &s->loop;
}
