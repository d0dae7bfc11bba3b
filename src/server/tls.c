/* TLS on the server's connections (docs/security.md): OpenSSL sessions
 * over memory BIOs, driven by the event loop.
 *
 * Reading: the ciphertext libuv reads goes into the session's input BIO;
 * the plaintext is then decrypted straight into the place the frame reader
 * wants its next bytes (fedc__srv_reader_buf, the same places as without
 * TLS), and the reader advances as if it had read them from the socket.
 * When the reader pauses a client (it waits for a staging buffer) the
 * plaintext stays in the session until fedc__srv_tls_pump() is called again.
 *
 * Writing: a message and the model that follows it are queued as plaintext
 * (the model by reference, as without TLS) and encrypted 256 KiB at a time
 * while less than 1 MiB of ciphertext waits on the socket, so sending a
 * large model to many clients never holds a ciphertext copy of it each.
 * The ciphertext buffers of that size are kept on a short free list in the
 * server, so that streaming a model does not allocate one per chunk. */
#include <openssl/err.h>

#include "net/tls.h"
#include "server/server_impl.h"

#define TLS_CHUNK    (256u << 10)
#define TLS_INFLIGHT (1u << 20)
/* A pooled write buffer: a chunk's ciphertext (16 KiB records, each 22
 * bytes longer than its plaintext) or what a handshake sends. */
#define TLS_BUF_CAP  (TLS_CHUNK + (16u << 10))
#define TLS_POOL_MAX 16u

typedef struct tls_out {
    struct tls_out *next;
    uv_buf_t *bufs;
    unsigned nbufs, at;
    size_t off;
    uint8_t *frame;
    model_blob *blob;
    int close_after;
} tls_out;

/* Ciphertext on its way to the socket; the bytes follow the struct. */
typedef struct tls_write {
    uv_write_t req;
    node *n;
    struct tls_write *next_free; /* on fedc_server.tls_pool */
    size_t cap, len;
    int close_after; /* the last bytes of a message after which the connection closes */
    uint8_t data[];
} tls_write;

/* A write of at least len bytes. A chunk of a model takes a pooled
 * buffer; a small write (a handshake, a short message) gets its own of its
 * size, so that a thousand connections do not each hold a chunk's worth. */
static tls_write *write_get(fedc_server *s, size_t len)
{
    int chunk = len > TLS_CHUNK / 2 && len <= TLS_BUF_CAP;
    tls_write *w;
    if (chunk && s->tls_pool) {
        w = s->tls_pool;
        s->tls_pool = w->next_free;
        s->tls_pool_len--;
    } else {
        size_t cap = chunk ? TLS_BUF_CAP : len;
        w = malloc(sizeof *w + cap);
        if (!w) return NULL;
        w->cap = cap;
    }
    memset(&w->req, 0, sizeof w->req);
    return w;
}

static void write_put(fedc_server *s, tls_write *w)
{
    if (w->cap != TLS_BUF_CAP || s->tls_pool_len >= TLS_POOL_MAX) {
        free(w);
        return;
    }
    w->next_free = s->tls_pool;
    s->tls_pool = w;
    s->tls_pool_len++;
}

void fedc__srv_tls_pool_free(fedc_server *s)
{
    while (s->tls_pool) {
        tls_write *w = s->tls_pool;
        s->tls_pool = w->next_free;
        free(w);
    }
    s->tls_pool_len = 0;
}

static void free_out(tls_out *o)
{
    free(o->frame);
    free(o->bufs);
    fedc__srv_blob_unref(o->blob);
    free(o);
}

int fedc__srv_tls_accept(node *n)
{
    fedc_server *s = n->srv;
    n->ssl = SSL_new(s->tls);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    if (!n->ssl || !rbio || !wbio) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(n->ssl);
        n->ssl = NULL;
        return FEDC_ERR_NOMEM;
    }
    SSL_set_bio(n->ssl, rbio, wbio);
    SSL_set_accept_state(n->ssl);
    return FEDC_OK;
}

void fedc__srv_tls_free(node *n)
{
    while (n->tls_queue) {
        tls_out *o = n->tls_queue;
        n->tls_queue = o->next;
        free_out(o);
    }
    SSL_free(n->ssl);
    n->ssl = NULL;
}

static void flush_wbio(node *n, int close_after);

static void on_tls_write(uv_write_t *req, int status)
{
    tls_write *w = (tls_write *)req;
    node *n = w->n;
    size_t len = w->len;
    int close_after = w->close_after;
    write_put(n->srv, w);
    if (status == 0 && !n->closing) {
        n->tls_inflight -= len;
        if (close_after)
            fedc__srv_begin_drain(n);
        else
            fedc__srv_tls_flush(n);
    }
}

/* Moves the ciphertext waiting in the output BIO to the socket. */
static void flush_wbio(node *n, int close_after)
{
    BIO *wbio = SSL_get_wbio(n->ssl);
    size_t len = (size_t)BIO_pending(wbio);
    if (len == 0) {
        if (close_after) fedc__srv_begin_drain(n);
        return;
    }
    tls_write *w = write_get(n->srv, len);
    if (!w || BIO_read(wbio, w->data, (int)len) != (int)len) {
        if (w) write_put(n->srv, w);
        fedc__srv_node_close(n, "out of memory");
        return;
    }
    w->n = n;
    w->len = len;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&n->tcp, &b, 1, on_tls_write)) {
        write_put(n->srv, w);
        fedc__srv_node_close(n, "write failed");
        return;
    }
    n->tls_inflight += len;
}

/* Fails the connection with OpenSSL's reason. */
static void tls_failed(node *n, const char *what)
{
    char why[300], msg[400];
    fedc__tls_reason(n->ssl, why, sizeof why);
    snprintf(msg, sizeof msg, "%s: %s", what, why);
    /* The alert OpenSSL made, if any, tells the client why. */
    BIO *wbio = SSL_get_wbio(n->ssl);
    if (BIO_pending(wbio) > 0) {
        char *p;
        long len = BIO_get_mem_data(wbio, &p);
        if (len > 0) {
            uv_buf_t b = uv_buf_init(p, (unsigned)len);
            uv_try_write((uv_stream_t *)&n->tcp, &b, 1);
        }
    }
    fedc__srv_node_close(n, msg);
}

void fedc__srv_tls_flush(node *n)
{
    while (n->tls_queue && n->tls_inflight < TLS_INFLIGHT && !n->closing) {
        tls_out *o = n->tls_queue;
        if (o->at == o->nbufs) {
            n->tls_queue = o->next;
            int close_after = o->close_after;
            free_out(o);
            if (close_after) {
                flush_wbio(n, 1);
                return;
            }
            continue;
        }
        const uv_buf_t *b = &o->bufs[o->at];
        size_t len = b->len - o->off;
        if (len > TLS_CHUNK) len = TLS_CHUNK;
        if (len > 0) {
            int w = SSL_write(n->ssl, b->base + o->off, (int)len);
            if (w <= 0) {
                int e = SSL_get_error(n->ssl, w);
                if (e == SSL_ERROR_WANT_READ) break; /* the handshake is not done: wait for the client */
                tls_failed(n, "TLS write failed");
                return;
            }
            o->off += (size_t)w;
        }
        if (o->off == b->len) {
            o->at++;
            o->off = 0;
        }
        flush_wbio(n, 0);
    }
}

int fedc__srv_tls_send(node *n, uint8_t *frame, size_t flen, uv_buf_t *bufs, unsigned nbufs, model_blob *blob,
                       int close_after)
{
    tls_out *o = calloc(1, sizeof *o);
    if (!o) return FEDC_ERR_NOMEM;
    bufs[0] = uv_buf_init((char *)frame, (unsigned)flen);
    o->bufs = bufs;
    o->nbufs = nbufs;
    o->frame = frame;
    o->blob = blob;
    o->close_after = close_after;
    tls_out **pp = &n->tls_queue;
    while (*pp) pp = &(*pp)->next;
    *pp = o;
    fedc__srv_tls_flush(n);
    return FEDC_OK;
}

void fedc__srv_tls_pump(node *n)
{
    fedc_server *s = n->srv;
    if (!SSL_is_init_finished(n->ssl)) {
        int r = SSL_do_handshake(n->ssl);
        flush_wbio(n, 0);
        if (n->closing) return;
        if (r != 1) {
            int e = SSL_get_error(n->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
            tls_failed(n, "TLS handshake failed");
            return;
        }
        fedc__srv_tls_flush(n); /* what was queued before the handshake ended */
    }
    /* Decrypt into wherever the reader wants its next bytes, until the
     * session has no more or the reader pauses (waiting_slot) or ends. */
    while (!n->closing && !n->waiting_slot) {
        uv_buf_t b;
        if (n->draining || n->retired)
            b = uv_buf_init((char *)s->discard, DISCARD_BYTES);
        else
            fedc__srv_reader_buf(n, &b);
        int r = SSL_read(n->ssl, b.base, (int)b.len);
        if (r > 0) {
            if (!n->draining && !n->retired) fedc__srv_consume(n, (size_t)r);
            continue;
        }
        int e = SSL_get_error(n->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* The client's close_notify: as a clean end of its stream. */
            ERR_clear_error();
            fedc__srv_node_close(n, (n->req != REQ_NONE || n->sk != S_NONE) ? "connection closed mid-request"
                                                                            : NULL);
            return;
        }
        tls_failed(n, "TLS read failed");
        return;
    }
    flush_wbio(n, 0); /* key updates and the like */
}

void fedc__srv_tls_close_notify(node *n)
{
    if (SSL_is_init_finished(n->ssl)) SSL_shutdown(n->ssl);
    ERR_clear_error();
    flush_wbio(n, 0);
}

void fedc__srv_tls_on_read(node *n, const char *data, size_t len)
{
    BIO *rbio = SSL_get_rbio(n->ssl);
    if (BIO_write(rbio, data, (int)len) != (int)len) {
        fedc__srv_node_close(n, "out of memory");
        return;
    }
    fedc__srv_tls_pump(n);
}
