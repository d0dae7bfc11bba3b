/* The server's connection layer: accepting clients, the incremental frame
 * reader, writes, polite closes, and simulated clients fed through the same
 * reader. The tensor streams it reads are folded into the aggregate as they
 * arrive by stream.c.
 *
 * Reading is zero-copy for tensor data: the allocation callback hands libuv
 * the exact place the next bytes belong (a frame header, a message buffer,
 * or the receiving tensor itself), so a DATA payload lands directly in the
 * staging buffer of the update it belongs to. */
#include "server/server_impl.h"

static void node_resume(node *n);

/* ---- models ---------------------------------------------------------- */

model_blob *fedc__srv_blob_new(fedc_params *p, char *err, size_t errlen)
{
    model_blob *b = calloc(1, sizeof *b);
    if (!b) {
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    struct iovec *iov = NULL;
    int n = 0;
    if (fedc__params_encode_iov(p, &iov, &n, &b->hdrmem, err, errlen)) {
        free(b);
        return NULL;
    }
    b->bufs = malloc((size_t)(n ? n : 1) * sizeof *b->bufs);
    if (!b->bufs) {
        free(iov);
        free(b->hdrmem);
        free(b);
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n; i++) b->bufs[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
    free(iov);
    b->nbufs = (unsigned)n;
    b->params = p;
    static uint64_t next_version = 1; /* models are made on the loop thread only */
    b->version = next_version++;
    b->refs = 1;
    return b;
}

void fedc__srv_blob_unref(model_blob *b)
{
    if (!b || --b->refs > 0) return;
    fedc_params_destroy(b->params);
    free(b->bufs);
    free(b->hdrmem);
    free(b);
}

/* BLAKE2b-256 of the model's bytes, as hex: logged so runs can be compared. */
void fedc__srv_model_digest(const fedc_params *p, char hex[65])
{
    unsigned char h[32];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        crypto_generichash_update(&st, t->data, t->nbytes);
    }
    crypto_generichash_final(&st, h, sizeof h);
    sodium_bin2hex(hex, 65, h, sizeof h);
}

void fedc__srv_set_state(node *n, node_state st)
{
    fedc_server *s = n->srv;
    if (n->state == NODE_IDLE && s->nidle) s->nidle--;
    n->state = st;
    if (st == NODE_IDLE) s->nidle++;
}

/* ---- writing --------------------------------------------------------- */

typedef struct write_req {
    uv_write_t req;
    node *n;
    uint8_t *frame;
    model_blob *blob;
    uv_buf_t *bufs;
    int close_after;
} write_req;

static void on_write(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    if (w->n && w->close_after) {
        if (status == 0)
            fedc__srv_begin_drain(w->n);
        else
            fedc__srv_node_close(w->n, NULL);
    }
    free(w->frame);
    free(w->bufs);
    fedc__srv_blob_unref(w->blob);
    free(w);
    (void)status; /* a failed write shows up as a read error and closes the node */
}

/* Sends message m, followed by the model in `blob` if non-NULL. */
int fedc__srv_node_send(node *n, const fedc__msg *m, model_blob *blob, int close_after)
{
    fedc_server *s = n->srv;
    if (n->closing) return FEDC_ERR_CLOSED;
    write_req *w = calloc(1, sizeof *w);
    if (!w) return FEDC_ERR_NOMEM;
    size_t flen;
    char err[FEDC_ERRMSG_MAX];
    if (fedc__frame_pack_message(m, &w->frame, &flen, err, sizeof err)) {
        free(w);
        return FEDC_ERR_NOMEM;
    }
    unsigned nb = 1 + (blob ? blob->nbufs : 0);
    w->bufs = malloc(nb * sizeof *w->bufs);
    if (!w->bufs) {
        free(w->frame);
        free(w);
        return FEDC_ERR_NOMEM;
    }
    w->bufs[0] = uv_buf_init((char *)w->frame, (unsigned)flen);
    uint64_t total = flen;
    if (blob) {
        memcpy(w->bufs + 1, blob->bufs, blob->nbufs * sizeof *w->bufs);
        blob->refs++;
        w->blob = blob;
        for (unsigned i = 1; i < nb; i++) total += w->bufs[i].len;
    }
    w->n = n;
    w->close_after = close_after;
    if (n->ssl) {
        /* Encrypted as the socket drains (tls.c), which takes the frame,
         * the buffers and the model's reference. */
        uint8_t *frame = w->frame;
        uv_buf_t *bufs = w->bufs;
        free(w);
        int rc = fedc__srv_tls_send(n, frame, flen, bufs, nb, blob, close_after);
        if (rc) {
            free(frame);
            free(bufs);
            fedc__srv_blob_unref(blob);
            return rc;
        }
        s->bytes_sent += total;
        return FEDC_OK;
    }
    if (n->is_virtual) {
        /* The simulator takes the frame and a reference to the model; it
         * hands the reference back through fedc__server_blob_release(). */
        s->bytes_sent += total;
        s->virt.deliver(s->virt.ctx, n->vindex, w->frame, flen, w->blob, blob ? blob->bufs : NULL,
                        blob ? blob->nbufs : 0);
        free(w->bufs);
        free(w);
        if (close_after) fedc__srv_node_close(n, NULL);
        return FEDC_OK;
    }
    int r = uv_write(&w->req, (uv_stream_t *)&n->tcp, w->bufs, nb, on_write);
    if (r) {
        free(w->frame);
        free(w->bufs);
        fedc__srv_blob_unref(w->blob);
        free(w);
        return FEDC_ERR_IO;
    }
    s->bytes_sent += total;
    return FEDC_OK;
}

static void retire(node *n, const char *why);

static void send_error_and_close(node *n, const char *reason)
{
    Fedc__V1__Error e = FEDC__V1__ERROR__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    e.reason = (char *)reason;
    m.body_case = FEDC__V1__MESSAGE__BODY_ERROR;
    m.error = &e;
    if (fedc__srv_node_send(n, &m, NULL, 1)) fedc__srv_node_close(n, NULL);
    /* The client is finished with now, though its connection lingers while
     * the error is delivered: nothing of it may stay in the round. The
     * error goes out first, so that it comes before anything the round's
     * end sends. */
    retire(n, reason);
}

/* ---- nodes ------------------------------------------------------------ */

static void on_node_closed(uv_handle_t *h)
{
    node *n = (node *)h;
    if (n->timer_open) return; /* the timer's close callback frees */
    fedc__srv_tls_free(n);
    free(n->hello_software);
    free(n->msgbuf);
    fedc_config_destroy(n->metrics);
    if (n->sk == S_GETPARAMS) fedc_params_destroy(n->stream_params);
    free(n);
}

static void on_timer_closed(uv_handle_t *h)
{
    node *n = h->data;
    n->timer_open = 0;
    if (uv_is_closing((uv_handle_t *)&n->tcp) && n->closing == 2) on_node_closed((uv_handle_t *)&n->tcp);
}

void fedc__srv_release_slot(node *n)
{
    fedc_server *s = n->srv;
    if (n->slot < 0) return;
    s->slot_busy[n->slot] = 0;
    n->slot = -1;
    n->stream_params = NULL;
    /* Wake the first client waiting for a staging buffer. */
    while (s->wait_head) {
        node *w = s->wait_head;
        s->wait_head = w->wait_next;
        if (!s->wait_head) s->wait_tail = NULL;
        w->waiting_slot = 0;
        w->wait_next = NULL;
        if (w->closing) continue;
        node_resume(w);
        break;
    }
}

void fedc__srv_unlink_waiter(node *n)
{
    fedc_server *s = n->srv;
    node **pp = &s->wait_head, *prev = NULL;
    while (*pp) {
        if (*pp == n) {
            *pp = n->wait_next;
            if (s->wait_tail == n) s->wait_tail = prev;
            break;
        }
        prev = *pp;
        pp = &(*pp)->wait_next;
    }
    n->waiting_slot = 0;
}

/* Records that node n's current request ended without a usable result. */
void fedc__srv_request_failed(node *n, const char *why)
{
    fedc_server *s = n->srv;
    if (n->req == REQ_NONE) return;
    int current = !n->result_recorded && n->req_round == s->round &&
                  ((n->req == REQ_FIT && s->ph == PHASE_FIT) || (n->req == REQ_EVAL && s->ph == PHASE_EVAL) ||
                   (n->req == REQ_GETPARAMS && s->ph == PHASE_INIT));
    if (current) {
        n->result_recorded = 1;
        if (n->req == REQ_FIT) s->failed++;
        if (s->stage_pending) s->stage_pending--;
        if (why)
            fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT,
                     "round %llu: node %s (%s) failed: %s", (unsigned long long)s->round, n->id, n->peer,
                     why);
    }
    n->req = REQ_NONE;
    if (!n->closing && !n->retired) fedc__srv_set_state(n, NODE_IDLE);
    /* A late answer makes its client idle again: a server waiting for
     * clients may now have enough. */
    if (current || s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
}

/* Takes n out of the federation at once: its partial update out of the
 * aggregate, its staging buffer back, its request counted as failed, and
 * never sampled again. fedc__srv_node_close() finishes the job when the connection
 * ends. */
static void retire(node *n, const char *why)
{
    if (n->closing) return;
    n->retired = 1;
    /* Not idle from now on, so that the stage fedc__srv_request_failed() may finish
     * cannot sample it again. */
    fedc__srv_set_state(n, NODE_BUSY);
    if (n->waiting_slot) fedc__srv_unlink_waiter(n);
    fedc__srv_unfold_partial(n);
    fedc__srv_release_slot(n);
    fedc__srv_request_failed(n, why);
}

void fedc__srv_node_close(node *n, const char *why)
{
    fedc_server *s = n->srv;
    if (n->closing) return;
    /* A simulation's clients come and go by the thousand: their departures
     * are in the round's counts, and in the log at debug level. */
    if (why)
        fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_WARN, LOG_COMPONENT, "dropping %s (%s): %s",
                 n->id[0] ? n->id : "client", n->peer, why);
    n->closing = 1;
    fedc__srv_secagg_forget(n);
    if (n->waiting_slot) fedc__srv_unlink_waiter(n);
    fedc__srv_unfold_partial(n);
    fedc__srv_release_slot(n);
    fedc__srv_request_failed(n, why ? why : "disconnected");
    for (node **pp = &s->nodes; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    s->nconnections--;
    if (!n->is_virtual) s->nsockets--;
    if (n->state == NODE_IDLE && s->nidle) s->nidle--;
    n->closing = 2;
    if (n->is_virtual) {
        /* Code up the stack may still hold n (a close can come from inside
         * the reader): it is freed when control is back at the top. */
        if (s->vnodes && n->vindex < s->nvirtual) s->vnodes[n->vindex] = NULL;
        n->next = s->graveyard;
        s->graveyard = n;
        if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
        return;
    }
    if (n->timer_open) {
        uv_timer_stop(&n->handshake_timer);
        uv_close((uv_handle_t *)&n->handshake_timer, on_timer_closed);
    }
    uv_close((uv_handle_t *)&n->tcp, on_node_closed);
    if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
}

void fedc__srv_protocol_error(node *n, const char *fmt, ...)
{
    char why[FEDC_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    fedc_log(FEDC_LOG_ERROR, LOG_COMPONENT, "protocol error from %s (%s): %s", n->id[0] ? n->id : "client",
             n->peer, why);
    send_error_and_close(n, why);
}

/* ---- messages ---------------------------------------------------------- */

static void admit(node *n, const char *node_id, const char *software);

static void on_hello(node *n, const Fedc__V1__Hello *h)
{
    fedc_server *s = n->srv;
    if (h->protocol_version != FEDC_PROTOCOL_VERSION) {
        char why[128];
        snprintf(why, sizeof why, "protocol version %u not supported (this server speaks %u)",
                 h->protocol_version, FEDC_PROTOCOL_VERSION);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: %s", n->peer, why);
        send_error_and_close(n, why);
        return;
    }
    if (!h->node_id || !fedc__node_id_valid(h->node_id)) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: invalid node id", n->peer);
        send_error_and_close(n, "invalid node id: 1 to 128 characters of [A-Za-z0-9._:-]");
        return;
    }
    if (h->max_frame_bytes != 0 && h->max_frame_bytes < FEDC_CHUNK_BYTES) {
        send_error_and_close(n, "max_frame_bytes must be at least 1048576");
        return;
    }
    if (!s->keys_path) {
        admit(n, h->node_id, h->software);
        return;
    }
    /* Node authentication: a listed key, then a signed nonce. */
    char fpr[FEDC_NODEKEY_FPR_LEN + 1] = "none";
    if (h->node_key.len == FEDC_NODEKEY_PUB_LEN) fedc__nodekey_fingerprint(h->node_key.data, fpr);
    const fedc__nodekey_entry *e = h->node_key.len == FEDC_NODEKEY_PUB_LEN
                                       ? fedc__nodekey_find(s->keys, s->nkeys, h->node_key.data)
                                       : NULL;
    char why[300];
    if (!e) {
        if (h->node_key.len == 0)
            snprintf(why, sizeof why,
                     "this server admits only nodes with an authorized key (fedc client --node-key)");
        else
            snprintf(why, sizeof why, "node key %s is not authorized on this server", fpr);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s (node id %s, key %s): not in the authorized keys",
                 n->peer, h->node_id, fpr);
        send_error_and_close(n, why);
        return;
    }
    if (strcmp(h->node_id, e->fpr) && strcmp(h->node_id, e->name)) {
        snprintf(why, sizeof why,
                 "node id '%s' does not belong to key %s: use its fingerprint or its name '%s'", h->node_id,
                 e->fpr, e->name);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refused %s: %s", n->peer, why);
        send_error_and_close(n, why);
        return;
    }
    snprintf(n->id, sizeof n->id, "%s", h->node_id);
    memcpy(n->key, e->pub, sizeof n->key);
    free(n->hello_software);
    n->hello_software = strdup(h->software ? h->software : "");
    randombytes_buf(n->nonce, sizeof n->nonce);
    n->auth_pending = 1;
    Fedc__V1__AuthChallenge ch = FEDC__V1__AUTH_CHALLENGE__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    ch.nonce.data = n->nonce;
    ch.nonce.len = sizeof n->nonce;
    m.body_case = FEDC__V1__MESSAGE__BODY_AUTH_CHALLENGE;
    m.auth_challenge = &ch;
    if (fedc__srv_node_send(n, &m, NULL, 0))
        fedc__srv_node_close(n, "cannot send the authentication challenge");
}

/* The TLS exporter value the signature is bound to (none in plaintext). */
static size_t channel_binding(node *n, uint8_t out[32])
{
    if (!n->ssl) return 0;
    if (SSL_export_keying_material(n->ssl, out, 32, FEDC_NODEAUTH_EXPORTER, sizeof FEDC_NODEAUTH_EXPORTER - 1,
                                   NULL, 0, 0) != 1)
        return 0;
    return 32;
}

static void on_auth_response(node *n, const Fedc__V1__AuthResponse *r)
{
    uint8_t binding[32];
    size_t blen = channel_binding(n, binding);
    n->auth_pending = 0;
    if (r->signature.len != FEDC_NODEAUTH_SIG ||
        !fedc__nodeauth_verify(n->key, n->nonce, n->id, binding, blen, r->signature.data)) {
        char fpr[FEDC_NODEKEY_FPR_LEN + 1];
        fedc__nodekey_fingerprint(n->key, fpr);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT,
                 "refused %s (node id %s, key %s): its signature does not verify", n->peer, n->id, fpr);
        send_error_and_close(n, "node authentication failed: the signature does not verify");
        return;
    }
    n->has_key = 1;
    char id[sizeof n->id];
    snprintf(id, sizeof id, "%s", n->id);
    admit(n, id, n->hello_software);
    free(n->hello_software);
    n->hello_software = NULL;
}

void fedc__srv_revoke_unlisted(fedc_server *s)
{
    for (node *n = s->nodes; n; n = n->next) {
        if (!n->has_key || n->closing || n->draining || n->retired) continue;
        if (fedc__nodekey_find(s->keys, s->nkeys, n->key)) continue;
        char fpr[FEDC_NODEKEY_FPR_LEN + 1];
        fedc__nodekey_fingerprint(n->key, fpr);
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "revoked %s (%s): key %s is no longer authorized", n->id,
                 n->peer, fpr);
        send_error_and_close(n, "this node's key was revoked");
    }
}

static void admit(node *n, const char *node_id, const char *software)
{
    fedc_server *s = n->srv;
    /* A simulated client's id differs from every other simulated client's
     * (the simulator numbers them), so only clients on sockets can clash
     * with it: with none, its hello skips a scan that would make joining N
     * simulated clients cost O(N^2). */
    snprintf(n->id, sizeof n->id, "%s", node_id);
    for (node *o = n->is_virtual && s->nsockets == 0 ? NULL : s->nodes, *next; o; o = next) {
        next = o->next;
        if (o != n && o->state != NODE_HANDSHAKE && !o->closing && !o->draining && !o->retired &&
            !strcmp(o->id, node_id)) {
            /* The newest connection wins: a client that reconnects after its
             * old connection went silent (a dead link, a half-open socket)
             * must not wait for the server to notice. The old one is told
             * and closed; its request, if any, counts as failed. */
            char why[256];
            snprintf(why, sizeof why, "node id '%s' connected again from %s: this connection is replaced",
                     node_id, n->peer);
            fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "%s (was %s)", why, o->peer);
            send_error_and_close(o, why);
        }
    }
    if (n->timer_open) uv_timer_stop(&n->handshake_timer);
    Fedc__V1__Welcome w = FEDC__V1__WELCOME__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    w.protocol_version = FEDC_PROTOCOL_VERSION;
    w.server_id = "fedc " FEDC_VERSION_STRING;
    w.max_frame_bytes = s->opt.max_frame_bytes;
    m.body_case = FEDC__V1__MESSAGE__BODY_WELCOME;
    m.welcome = &w;
    if (fedc__srv_node_send(n, &m, NULL, 0)) {
        fedc__srv_node_close(n, "cannot send welcome");
        return;
    }
    fedc__srv_set_state(n, NODE_IDLE);
    /* A simulation's thousands of virtual clients join silently. */
    fedc_log(n->is_virtual ? FEDC_LOG_DEBUG : FEDC_LOG_INFO, LOG_COMPONENT, "client %s joined from %s (%s)",
             n->id, n->peer, software ? software : "");
    if (s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
}

static void on_message(node *n, fedc__msg *m)
{
    fedc_server *s = n->srv;
    if (n->state == NODE_HANDSHAKE) {
        if (n->auth_pending) {
            if (m->body_case != FEDC__V1__MESSAGE__BODY_AUTH_RESPONSE) {
                fedc__srv_protocol_error(n, "expected auth_response, got %s", fedc__msg_name(m));
                return;
            }
            on_auth_response(n, m->auth_response);
            return;
        }
        if (m->body_case != FEDC__V1__MESSAGE__BODY_HELLO) {
            fedc__srv_protocol_error(n, "expected hello, got %s", fedc__msg_name(m));
            return;
        }
        on_hello(n, m->hello);
        return;
    }
    if (n->sk != S_NONE && !n->expect_header) {
        /* A tensor's data is still owed: nothing may interrupt it. */
        fedc__srv_protocol_error(n, "%s message in the middle of tensor '%s' (%zu of %zu bytes received)",
                                 fedc__msg_name(m), n->cur_t ? n->cur_t->name : "?", n->cur_got,
                                 n->cur_nbytes);
        return;
    }
    if (n->expect_header) {
        if (m->body_case != FEDC__V1__MESSAGE__BODY_TENSOR) {
            fedc__srv_protocol_error(n, "expected tensor %u of %u, got %s", n->stream_index + 1,
                                     n->stream_total, fedc__msg_name(m));
            return;
        }
        fedc__srv_on_tensor_header(n, m->tensor);
        return;
    }
    switch (m->body_case) {
    case FEDC__V1__MESSAGE__BODY_FIT_RES: fedc__srv_on_fit_res(n, m->fit_res); break;
    case FEDC__V1__MESSAGE__BODY_SECAGG: fedc__srv_on_secagg(n, m->secagg); break;
    case FEDC__V1__MESSAGE__BODY_GET_PARAMETERS_RES:
        if (n->req != REQ_GETPARAMS) {
            fedc__srv_protocol_error(n, "unexpected get_parameters_res");
            return;
        }
        if (m->get_parameters_res->num_tensors > FEDC_MAX_MODEL_TENSORS) {
            fedc__srv_protocol_error(n, "get_parameters_res announces %u tensors (at most %u)",
                                     m->get_parameters_res->num_tensors, FEDC_MAX_MODEL_TENSORS);
            return;
        }
        n->sk = S_GETPARAMS;
        n->stream_bytes = 0;
        n->stream_total = m->get_parameters_res->num_tensors;
        n->stream_index = 0;
        n->stream_params = fedc_params_create();
        if (!n->stream_params) {
            fedc__srv_node_close(n, "out of memory");
            return;
        }
        if (n->stream_total == 0)
            fedc__srv_stream_finished(n);
        else
            n->expect_header = 1;
        break;
    case FEDC__V1__MESSAGE__BODY_EVALUATE_RES: {
        const Fedc__V1__EvaluateRes *r = m->evaluate_res;
        if (n->req != REQ_EVAL || r->round != n->req_round) {
            fedc__srv_protocol_error(n, "unexpected evaluate_res for round %llu",
                                     (unsigned long long)r->round);
            return;
        }
        int current = n->req_round == s->round && s->ph == PHASE_EVAL && !n->result_recorded;
        if (current) {
            fedc_config *mc = fedc_config_create();
            if (mc) fedc__config_from_kv(mc, r->metrics, r->n_metrics);
            double acc = fedc__srv_metric_or_nan(mc, "accuracy", NULL);
            fedc_config_destroy(mc);
            if (!isfinite(r->loss) || r->num_examples == 0) {
                fedc__srv_request_failed(n, "evaluation result with a non-finite loss or no examples");
                return;
            }
            if (s->nevals == s->capevals) {
                size_t nc = s->capevals ? 2 * s->capevals : 16;
                eval_result *ne = realloc(s->evals, nc * sizeof *ne);
                if (ne) {
                    s->evals = ne;
                    s->capevals = nc;
                }
            }
            if (s->nevals < s->capevals) {
                eval_result *e = &s->evals[s->nevals++];
                snprintf(e->id, sizeof e->id, "%s", n->id);
                e->n = r->num_examples;
                e->loss = r->loss;
                e->acc = acc;
            }
            n->result_recorded = 1;
            if (s->stage_pending) s->stage_pending--;
        }
        n->req = REQ_NONE;
        fedc__srv_set_state(n, NODE_IDLE);
        /* A late answer makes its client idle again: a server waiting for
         * clients may now have enough. */
        if (current || s->ph == PHASE_WAIT) fedc__srv_maybe_finish_stage(s);
        break;
    }
    case FEDC__V1__MESSAGE__BODY_FAILURE:
        if (n->req == REQ_NONE) {
            fedc__srv_protocol_error(n, "failure message with no request pending");
            return;
        }
        fedc__srv_request_failed(n, m->failure->reason && m->failure->reason[0] ? m->failure->reason
                                                                                : "client failure");
        break;
    case FEDC__V1__MESSAGE__BODY_ERROR:
        fedc__srv_node_close(n, m->error->reason && m->error->reason[0] ? m->error->reason
                                                                        : "client reported an error");
        break;
    default: fedc__srv_protocol_error(n, "unexpected %s message", fedc__msg_name(m)); break;
    }
}

/* ---- reading --------------------------------------------------------- */

void fedc__srv_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    node *n = (node *)h;
    (void)suggested;
    if (n->ssl) {
        /* Ciphertext: into the session first (tls.c). */
        *buf = uv_buf_init((char *)n->srv->tls_buf, sizeof n->srv->tls_buf);
        return;
    }
    fedc__srv_reader_buf(n, buf);
}

void fedc__srv_reader_buf(node *n, uv_buf_t *buf)
{
    fedc_server *s = n->srv;
    if (n->draining || n->retired) {
        *buf = uv_buf_init((char *)s->discard, DISCARD_BYTES);
        return;
    }
    switch (n->rs) {
    case R_HDR: *buf = uv_buf_init((char *)n->hdr + n->hdr_got, FEDC_FRAME_HEADER_BYTES - n->hdr_got); break;
    case R_MSG: *buf = uv_buf_init((char *)n->msgbuf + n->fgot, n->flen - n->fgot); break;
    case R_DATA:
        if (n->data_dst) {
            *buf = uv_buf_init((char *)n->data_dst + n->fgot, n->flen - n->fgot);
        } else {
            uint32_t left = n->flen - n->fgot;
            *buf = uv_buf_init((char *)s->discard, left < DISCARD_BYTES ? left : DISCARD_BYTES);
        }
        break;
    }
}

static void on_header_complete(node *n)
{
    fedc_server *s = n->srv;
    char why[FEDC_ERRMSG_MAX];
    if (fedc__frame_header_decode(n->hdr, s->opt.max_frame_bytes, &n->ftype, &n->flen, why, sizeof why)) {
        fedc__srv_protocol_error(n, "%s", why);
        return;
    }
    n->fgot = 0;
    if (n->ftype == FEDC_FRAME_MESSAGE) {
        if (n->flen > n->msgcap) {
            uint32_t cap = n->flen < 4096 ? 4096 : n->flen;
            uint8_t *nb = realloc(n->msgbuf, cap);
            if (!nb) {
                fedc__srv_node_close(n, "out of memory");
                return;
            }
            n->msgbuf = nb;
            n->msgcap = cap;
        }
        n->rs = R_MSG;
        return;
    }
    /* DATA: it must continue the tensor being received. */
    if (n->sk == S_NONE || n->expect_header) {
        fedc__srv_protocol_error(n, "DATA frame (%u bytes) where no tensor data is expected", n->flen);
        return;
    }
    if (n->flen == 0 || n->flen > n->cur_nbytes - n->cur_got) {
        fedc__srv_protocol_error(n, "DATA frame of %u bytes overruns the tensor (%zu of %zu bytes received)",
                                 n->flen, n->cur_got, n->cur_nbytes);
        return;
    }
    n->data_dst = n->cur_t ? (uint8_t *)n->cur_t->data + n->cur_got : NULL;
    n->rs = R_DATA;
}

void fedc__srv_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    node *n = (node *)st;
    if (nread == 0 || n->closing) return;
    if (n->draining || n->retired) {
        if (nread < 0) fedc__srv_node_close(n, NULL);
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF)
            fedc__srv_node_close(n, (n->req != REQ_NONE || n->sk != S_NONE) ? "connection closed mid-request"
                                                                            : NULL);
        else {
            char why[128];
            snprintf(why, sizeof why, "read error: %s", uv_strerror((int)nread));
            fedc__srv_node_close(n, why);
        }
        return;
    }
    if (n->ssl)
        fedc__srv_tls_on_read(n, buf->base, (size_t)nread);
    else
        fedc__srv_consume(n, (size_t)nread);
}

/* Advances the frame reader by nread bytes that have just been placed where
 * fedc__srv_on_alloc() said. */
void fedc__srv_consume(node *n, size_t nread)
{
    fedc_server *s = n->srv;
    s->bytes_received += (uint64_t)nread;
    switch (n->rs) {
    case R_HDR:
        n->hdr_got += (uint32_t)nread;
        if (n->hdr_got == FEDC_FRAME_HEADER_BYTES) {
            n->hdr_got = 0;
            on_header_complete(n);
            if (!n->closing && n->rs == R_MSG && n->flen == 0) n->rs = R_HDR;
        }
        break;
    case R_MSG:
        n->fgot += (uint32_t)nread;
        if (n->fgot == n->flen) {
            n->rs = R_HDR;
            fedc__msg *m = NULL;
            char why[FEDC_ERRMSG_MAX];
            if (fedc__msg_unpack(n->msgbuf, n->flen, &m, why, sizeof why)) {
                fedc__srv_protocol_error(n, "%s", why);
                return;
            }
            on_message(n, m);
            fedc__msg_free(m);
            if (!n->closing && (n->is_virtual || n->msgcap > (1u << 20))) {
                /* A simulated client's whole message is always at hand, so it
                 * needs no buffer between messages: with a large population
                 * this is most of the memory per client. A large message (a
                 * masked input, the size of the model) is rare: its buffer
                 * is not kept either. */
                free(n->msgbuf);
                n->msgbuf = NULL;
                n->msgcap = 0;
            }
        }
        break;
    case R_DATA: {
        n->fgot += (uint32_t)nread;
        if (n->fgot == n->flen) {
            n->rs = R_HDR;
            fedc__srv_on_data_done(n, n->flen);
        }
        break;
    }
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    fedc__srv_node_close(t->data, NULL);
}

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* After the last message to a client (Shutdown, or an Error), close
 * politely: send FIN, then read and drop whatever the client was still
 * sending until it closes too (at most 5 s). Closing at once would reset a
 * client that is in the middle of sending an update, and the reset would
 * destroy the message it has not read yet. */
void fedc__srv_begin_drain(node *n)
{
    if (n->closing || n->draining) return;
    if (n->is_virtual || !n->timer_open) {
        fedc__srv_node_close(n, NULL);
        return;
    }
    n->draining = 1;
    if (n->ssl) fedc__srv_tls_close_notify(n);
    if (n->closing) return;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&n->tcp, on_shutdown_done)) {
        free(req);
        fedc__srv_node_close(n, NULL);
        return;
    }
    uv_timer_stop(&n->handshake_timer);
    uv_timer_start(&n->handshake_timer, on_drain_timeout, 5000, 0);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    node *n = t->data;
    if (n->state == NODE_HANDSHAKE) fedc__srv_node_close(n, "no hello within the handshake timeout");
}

void fedc__srv_on_connection(uv_stream_t *server, int status)
{
    fedc_server *s = server->data;
    if (status < 0) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "accept failed: %s", uv_strerror(status));
        return;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) return;
    n->srv = s;
    n->slot = -1;
    n->sa_index = -1;
    n->metrics = fedc_config_create();
    uv_tcp_init(&s->loop, &n->tcp);
    n->tcp.data = n;
    if (uv_accept(server, (uv_stream_t *)&n->tcp) || !n->metrics) {
        fedc_config_destroy(n->metrics);
        n->metrics = NULL;
        n->closing = 2;
        uv_close((uv_handle_t *)&n->tcp, on_node_closed);
        return;
    }
    uv_tcp_nodelay(&n->tcp, 1);
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&n->tcp, &fd) == 0) fedc__socket_keepalive(fd, s->opt.heartbeat);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&n->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(n->peer, sizeof n->peer, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port & 0xffff);
    n->serial = s->next_serial++;
    n->next = s->nodes;
    s->nodes = n;
    s->nconnections++;
    s->nsockets++;
    if (s->nconnections > s->opt.max_connections || s->stopping) {
        fedc_log(FEDC_LOG_WARN, LOG_COMPONENT, "refusing %s: %s", n->peer,
                 s->stopping ? "the federation is ending" : "connection limit reached");
        send_error_and_close(n, s->stopping ? "the federation is ending" : "server connection limit reached");
        return;
    }
    uv_timer_init(&s->loop, &n->handshake_timer);
    n->handshake_timer.data = n;
    n->timer_open = 1;
    uv_timer_start(&n->handshake_timer, on_handshake_timeout, (uint64_t)(s->opt.handshake_timeout * 1000), 0);
    if (s->tls && fedc__srv_tls_accept(n)) {
        fedc__srv_node_close(n, "out of memory for a TLS session");
        return;
    }
    uv_read_start((uv_stream_t *)&n->tcp, fedc__srv_on_alloc, fedc__srv_on_read);
}

void fedc__srv_read_resume(node *n)
{
    uv_read_start((uv_stream_t *)&n->tcp, fedc__srv_on_alloc, fedc__srv_on_read);
    /* Plaintext may already wait in the session: no new read would come for it. */
    if (n->ssl) fedc__srv_tls_pump(n);
}

static void node_resume(node *n)
{
    if (fedc__srv_acquire_slot(n) != 1) {
        fedc__srv_node_close(n, "out of memory for an update buffer");
        return;
    }
    if (n->is_virtual)
        fedc__srv_feed_pending(n);
    else
        fedc__srv_read_resume(n);
}
