/* The simulator: the real server on its event loop, and worker threads that
 * answer its requests for virtual clients over in-memory connections. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "client/client_internal.h"
#include "proto/frame.h"
#include "server/server_internal.h"
#include "sim/sim_internal.h"

#define LOG_COMPONENT "sim"

/* ---- the user's callbacks, through the current worker ------------------ */

static int open_current(worker *w, char *err, size_t errlen)
{
    if (w->opened) return FEDC_OK;
    const fedc_sim_options *o = w->s->opt;
    w->client_user = NULL;
    int rc = o->open_client ? o->open_client(o->user, w->index, &w->client_user, err, errlen) : FEDC_OK;
    if (!rc) w->opened = 1;
    return rc;
}

static int shim_get_parameters(void *user, const fedc_config *cfg, fedc_params **out, char *err,
                               size_t errlen)
{
    worker *w = user;
    int rc = open_current(w, err, errlen);
    if (rc) return rc;
    if (!w->s->opt->callbacks.get_parameters)
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                              "this client does not define initial parameters");
    return w->s->opt->callbacks.get_parameters(w->client_user, cfg, out, err, errlen);
}

static int shim_fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *n,
                    fedc_config *metrics, char *err, size_t errlen)
{
    worker *w = user;
    int rc = open_current(w, err, errlen);
    if (rc) return rc;
    return w->s->opt->callbacks.fit(w->client_user, params, cfg, n, metrics, err, errlen);
}

static int shim_evaluate(void *user, const fedc_params *params, const fedc_config *cfg, double *loss,
                         uint64_t *n, fedc_config *metrics, char *err, size_t errlen)
{
    worker *w = user;
    if (!w->s->opt->callbacks.evaluate)
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "this client does not evaluate");
    int rc = open_current(w, err, errlen);
    if (rc) return rc;
    return w->s->opt->callbacks.evaluate(w->client_user, params, cfg, loss, n, metrics, err, errlen);
}

/* ---- the loop side ------------------------------------------------------ */

static void deliver(void *ctx, uint32_t index, uint8_t *frame, size_t frame_len, void *blob,
                    const uv_buf_t *bufs, unsigned nbufs)
{
    sim *s = ctx;
    /* The message must reach the client: closing the client from here, in
     * the middle of the server's send, is not an option. */
    job *j = fedc__sim_calloc_wait(sizeof *j);
    j->index = index;
    j->frame = frame;
    j->frame_len = frame_len;
    j->blob = blob;
    j->bufs = bufs;
    j->nbufs = nbufs;
    j->round = fedc__server_round(s->server);
    j->capacity = fedc__server_fit_capacity(s->server);
    const fedc_sim_options *o = s->opt;
    /* Faults hit requests: those that carry a model (fit, evaluate) and
     * the stages of secure aggregation. */
    int kind = 0;
    if ((blob || s->secagg) && (o->dropout_rate > 0 || o->straggler_rate > 0)) {
        /* Which request this is (fit, evaluate, which secure-aggregation
         * stage) is part of the draw, so that the requests of a round get
         * independent faults. */
        fedc__msg *m = NULL;
        if (fedc__msg_unpack(frame + FEDC_FRAME_HEADER_BYTES, frame_len - FEDC_FRAME_HEADER_BYTES, &m, NULL,
                             0) == FEDC_OK) {
            kind = (int)m->body_case;
            if (m->body_case == FEDC__V1__MESSAGE__BODY_SECAGG && m->secagg->payload.len > 4)
                kind = kind << 8 | m->secagg->payload.data[4];
            else if (!blob)
                kind = 0; /* not a request */
            fedc__msg_free(m);
        }
    }
    if (kind) {
        fedc_rng rng;
        fedc_rng_seed(&rng, fedc_seed_derive(o->fault_seed ^ 0x6661756c74ULL /* "fault" */,
                                             fedc__server_round(s->server),
                                             ((uint64_t)index << 16) | (uint64_t)kind));
        double u = fedc_rng_uniform(&rng), v = fedc_rng_uniform(&rng);
        if (u < o->dropout_rate)
            j->vanish = v < 0.5 ? VANISH_BEFORE : VANISH_HALFWAY;
        else if (u < o->dropout_rate + (1 - o->dropout_rate) * o->straggler_rate)
            j->delay = o->straggler_delay;
    }
#ifdef FEDC_HAVE_MPI
    if (s->mpi && index % (uint32_t)s->nranks != 0) {
        fedc__sim_mpi_submit(s, j);
        return;
    }
#endif
    fedc__sim_enqueue(s, j);
}

void *fedc__sim_calloc_wait(size_t n)
{
    void *p;
    while (!(p = calloc(1, n))) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    return p;
}

void fedc__sim_enqueue(sim *s, job *j)
{
    pthread_mutex_lock(&s->mu);
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void fedc__sim_complete(sim *s, done_msg *d)
{
#ifdef FEDC_HAVE_MPI
    if (s->mpi && s->rank != 0) {
        fedc__sim_mpi_answer(s, d);
        return;
    }
#endif
    pthread_mutex_lock(&s->mu);
    /* Each answer can hold a whole model: when the loop falls behind, wait
     * rather than pile them up, so memory stays bounded by the concurrency.
     * Not while the loop itself waits for the MPI ranks' sums, though: the
     * thread that fetches them may be the one here. */
    while (s->ndone >= 2 * s->nworkers && !s->stop && !s->collecting) pthread_cond_wait(&s->cv, &s->mu);
    s->ndone++;
    if (s->done_tail)
        s->done_tail->next = d;
    else
        s->done_head = d;
    s->done_tail = d;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
}

#ifdef FEDC_HAVE_MPI
typedef struct verdict_ctx {
    sim *s;
    const done_msg *d;
} verdict_ctx;

static void on_verdict(void *ctx, int kept)
{
    verdict_ctx *v = ctx;
    fedc__sim_mpi_verdict(v->s, v->d, kept);
}

static int collect(void *ctx, fedc__fedavg *agg, char *err, size_t errlen)
{
    return fedc__sim_mpi_collect(ctx, agg, err, errlen);
}
#endif

/* Gives one answer to the server: its bytes, then what became of the
 * client (broke the protocol, or vanished and came back). */
static void hand_over(sim *s, done_msg *d)
{
#ifdef FEDC_HAVE_MPI
    if (d->folded) {
        /* Folded on its rank: the server sees the FitRes, and that rank
         * hears whether the update counts. */
        verdict_ctx v = {s, d};
        fedc__server_feed_folded(s->server, d->index, d->out.data, d->out.len, d->wire_bytes, on_verdict, &v);
        fedc__bytes_free(&d->out);
        free(d);
        return;
    }
#endif
    if (d->out.len) fedc__server_feed(s->server, d->index, d->out.data, d->out.len);
    if (d->failed) {
        fedc__server_disconnect(s->server, d->index, d->why);
    } else if (d->vanish) {
        char id[160];
        fedc__bytes hello = {0};
        fedc__conn conn;
        snprintf(id, sizeof id, s->id_format, d->index);
        fedc__conn_memory(&conn, NULL, 0, &hello, "sim");
        if (fedc__client_send_hello(s->hello, &conn, id) == FEDC_OK)
            fedc__server_reconnect(s->server, d->index, hello.data, hello.len,
                                   "vanished (simulated dropout)");
        else
            fedc__server_disconnect(s->server, d->index, "vanished (simulated dropout)");
        fedc__bytes_free(&hello);
    }
    fedc__bytes_free(&d->out);
    free(d);
}

static void on_delayed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_delay_over(uv_timer_t *t)
{
    delayed *dl = t->data;
    sim *s = dl->timer.loop->data;
    for (delayed **pp = &s->delayed; *pp; pp = &(*pp)->next)
        if (*pp == dl) {
            *pp = dl->next;
            break;
        }
    hand_over(s, dl->d);
    dl->d = NULL;
    uv_close((uv_handle_t *)&dl->timer, on_delayed_closed);
}

/* Hands the workers' answers to the server, on the loop thread. */
static void on_done(uv_async_t *a)
{
    sim *s = a->data;
    pthread_mutex_lock(&s->mu);
    done_msg *d = s->done_head;
    s->done_head = s->done_tail = NULL;
    s->ndone = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    while (d) {
        done_msg *next = d->next;
        d->next = NULL;
        if (d->blob) fedc__server_blob_release(d->blob);
        d->blob = NULL;
        delayed *dl = d->delay > 0 ? calloc(1, sizeof *dl) : NULL;
        if (dl) {
            /* A straggler: the answer waits; the timer must not keep the
             * loop alive once the federation is over. */
            dl->d = d;
            dl->timer.data = dl;
            uv_timer_init(a->loop, &dl->timer);
            uv_timer_start(&dl->timer, on_delay_over, (uint64_t)(d->delay * 1000), 0);
            uv_unref((uv_handle_t *)&dl->timer);
            dl->next = s->delayed;
            s->delayed = dl;
        } else {
            hand_over(s, d);
        }
        d = next;
    }
}

/* ---- workers ------------------------------------------------------------ */

/* The first queued job whose client is not being answered by another
 * worker: a client sees its messages one at a time and in order. */
static job *take_job(sim *s)
{
    job *prev = NULL;
    for (job *j = s->head; j; prev = j, j = j->next) {
        if (s->busy[j->index]) continue;
        if (prev)
            prev->next = j->next;
        else
            s->head = j->next;
        if (s->tail == j) s->tail = prev;
        s->busy[j->index] = 1;
        return j;
    }
    return NULL;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    sim *s = w->s;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        job *j;
        while (!(j = take_job(s)) && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
        pthread_mutex_unlock(&s->mu);
        if (!j) break;

        /* The request as it would arrive on a socket: the message frame,
         * then the model's frames, read in place. */
        struct iovec stack_iov[64];
        struct iovec *iov = j->nbufs + 1 <= 64 ? stack_iov : malloc((j->nbufs + 1) * sizeof *iov);
        /* The answer must be delivered, even if only as a failure. */
        done_msg *d = fedc__sim_calloc_wait(sizeof *d);
        if (!iov) {
            /* Without memory the client cannot answer; the server sees it
             * vanish, as it would a crashed process. */
            d->failed = 1;
            snprintf(d->why, sizeof d->why, "out of memory in the simulator");
        } else {
            iov[0].iov_base = j->frame;
            iov[0].iov_len = j->frame_len;
            for (unsigned i = 0; i < j->nbufs; i++) {
                iov[i + 1].iov_base = j->bufs[i].base;
                iov[i + 1].iov_len = j->bufs[i].len;
            }
            fedc__conn conn;
            fedc__conn_memory(&conn, iov, (int)j->nbufs + 1, &d->out, "server");
            w->index = j->index;
            w->opened = 0;
            d->vanish = j->vanish;
            d->delay = j->delay;
            if (j->vanish != VANISH_BEFORE) {
                int finished = 0;
                /* Only this worker answers this client now (s->busy). */
                if (s->secagg) fedc__client_swap_secagg(w->client, &s->secagg[j->index]);
                int rc = fedc__client_serve(w->client, &conn, &finished);
                if (s->secagg) fedc__client_swap_secagg(w->client, &s->secagg[j->index]);
                if (w->opened && s->opt->close_client)
                    s->opt->close_client(s->opt->user, j->index, w->client_user);
                w->opened = 0;
                if (rc) {
                    d->failed = 1;
                    snprintf(d->why, sizeof d->why, "%s", fedc_client_errmsg(w->client));
                }
                /* Vanishing halfway: only the first half of the answer
                 * gets out. */
                if (j->vanish == VANISH_HALFWAY) d->out.len /= 2;
            }
        }
        if (iov && iov != stack_iov) free(iov);
        d->index = j->index;
        d->blob = j->blob;
        d->had_model = j->nbufs > 0;
#ifdef FEDC_HAVE_MPI
        if (j->remote_model) {
            fedc__sim_mpi_model_unref(j->blob);
            d->blob = NULL;
        }
#endif
        fedc__sim_complete(s, d);
        pthread_mutex_lock(&s->mu);
        s->busy[j->index] = 0;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        free(j->frame);
        free(j);
    }
    return NULL;
}

int fedc__sim_start_workers(sim *s, uint32_t *started)
{
    fedc_client_options co;
    fedc_client_options_init(&co);
    co.server = "sim";
    co.node_id = "sim";
    fedc_client_callbacks shim = {shim_get_parameters, shim_fit, shim_evaluate};
    *started = 0;
    for (uint32_t i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        w->s = s;
        w->client = fedc_client_create(&co, &shim, w);
        if (!w->client || pthread_create(&w->thread, NULL, worker_main, w)) {
            fedc_client_destroy(w->client);
            w->client = NULL;
            return FEDC_ERR_NOMEM;
        }
        (*started)++;
    }
    return FEDC_OK;
}

void fedc__sim_stop_workers(sim *s, uint32_t started)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (uint32_t i = 0; i < started; i++) pthread_join(s->workers[i].thread, NULL);
    for (uint32_t i = 0; i < s->nworkers; i++) {
        fedc_client_destroy(s->workers[i].client);
        s->workers[i].client = NULL;
    }
}

/* ---- running ------------------------------------------------------------ */

#ifndef FEDC_HAVE_MPI
int fedc_sim_mpi_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen)
{
    (void)argc;
    (void)argv;
    *rank = 0;
    *size = 1;
    return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                          "this fedc was built without MPI (install libopenmpi-dev and rebuild)");
}

void fedc_sim_mpi_finalize(void)
{
}
#endif

/* 1 if fmt holds exactly one conversion, a %u (with a width and the flags
 * 0 or - at most), so that distinct indices give distinct node ids: the
 * server relies on it (it checks a simulated client's id against clients
 * on sockets only). */
static int id_format_ok(const char *fmt)
{
    int conversions = 0;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') continue;
        if (*++p == '%') continue;
        while (*p == '0' || *p == '-') p++;
        while (*p >= '0' && *p <= '9') p++;
        if (*p != 'u') return 0;
        conversions++;
    }
    return conversions == 1;
}

void fedc_sim_options_init(fedc_sim_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->node_id_format = "client-%03u";
}

int fedc_sim_run(const fedc_server_options *server_opt, const fedc_sim_options *opt, char *err, size_t errlen)
{
    if (!opt || opt->clients == 0)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "the simulation needs at least 1 client");
    if (!opt->callbacks.fit)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "the simulation needs a fit callback");
    if (opt->node_id_format && !id_format_ok(opt->node_id_format))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "node id format '%s' must hold exactly one %%u (the client's index)",
                              opt->node_id_format);
    sim s;
    memset(&s, 0, sizeof s);
    s.opt = opt;
    s.nranks = 1;
    s.max_frame = server_opt->max_frame_bytes;
    /* Updates travel whole to rank 0 when the strategy needs each one, or
     * weighs it by its metrics, or has the clients send extra tensors, and
     * under DP (the server clips each update, unweighted): ranks fold with
     * num_examples, in the model's layout, unclipped. */
    s.whole_answers =
        server_opt->dp.mode != FEDC_DP_OFF ||
        (server_opt->strategy && ((server_opt->strategy->flags & FEDC_STRATEGY_ALL_UPDATES) ||
                                  server_opt->strategy->fit_weight || server_opt->strategy->fit_tensors));
    if (server_opt->authorized_keys)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "--authorized-keys is for fedc server: the simulator's virtual clients have no "
                              "node keys");
    if (server_opt->secagg.enabled) {
        if (opt->mpi)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                                  "--secagg does not run over --mpi yet: run the simulation in one process");
        s.whole_answers = 1;
        s.secagg = calloc(opt->clients, sizeof *s.secagg);
        if (!s.secagg) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    if (opt->mpi) {
#ifdef FEDC_HAVE_MPI
        int rc = fedc__sim_mpi_rank(&s.rank, &s.nranks, err, errlen);
        if (rc) return rc;
        s.mpi = 1;
#else
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "this fedc was built without MPI");
#endif
    }
    s.nworkers = opt->concurrency;
    if (s.nworkers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        s.nworkers = cores > 0 ? (uint32_t)cores : 1;
    }
    if (s.nworkers > opt->clients) s.nworkers = opt->clients;
    const char *fmt = opt->node_id_format ? opt->node_id_format : "client-%03u";
    s.id_format = fmt;
    int rc = FEDC_OK;
    s.busy = calloc(opt->clients, 1);
    s.workers = calloc(s.nworkers, sizeof *s.workers);
    if (!s.busy || !s.workers) {
        free(s.busy);
        free(s.workers);
        free(s.secagg);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    uint32_t started = 0;

#ifdef FEDC_HAVE_MPI
    if (s.mpi && s.rank != 0) {
        /* This rank only answers for its share of the clients. */
        rc = fedc__sim_start_workers(&s, &started);
        if (!rc)
            rc = fedc__sim_mpi_serve(&s, &started);
        else
            fedc_set_error(err, errlen, rc, "cannot start the workers");
        if (started) fedc__sim_stop_workers(&s, started);
        for (job *j = s.head, *next; j; j = next) {
            next = j->next;
            free(j->frame);
            if (j->blob) fedc__sim_mpi_model_unref(j->blob);
            free(j);
        }
        goto done;
    }
#endif

    fedc_server_options so = *server_opt;
    if (!so.listen || !strcmp(so.listen, "127.0.0.1:7000")) so.listen = "127.0.0.1:0";
    if (so.max_connections < opt->clients + 16) so.max_connections = opt->clients + 16;
    /* The virtual clients use no socket; TLS applies to real ones only. */
    if (!so.tls_cert) so.insecure = 1;
    s.server = fedc_server_create(&so, err, errlen);
    if (!s.server) {
        rc = FEDC_ERR_INVALID;
        goto done;
    }
    uv_async_init(fedc__server_loop(s.server), &s.async, on_done);
    s.async.data = &s;
    /* The server's own handles keep its loop running; this one must not
     * keep it from ending. */
    uv_unref((uv_handle_t *)&s.async);
    fedc__virtual_transport t = {.deliver = deliver, .ctx = &s};
#ifdef FEDC_HAVE_MPI
    if (s.mpi && s.nranks > 1) t.collect = collect;
#endif
    fedc__server_set_virtual(s.server, &t);
    fedc__server_loop(s.server)->data = &s;

    /* Every virtual client says hello, exactly as a real one would. */
    fedc_client_options co;
    fedc_client_options_init(&co);
    co.server = "sim";
    co.node_id = "sim";
    s.hello =
        fedc_client_create(&co, &(fedc_client_callbacks){shim_get_parameters, shim_fit, shim_evaluate}, NULL);
    if (!s.hello) rc = FEDC_ERR_NOMEM;
#ifdef FEDC_HAVE_MPI
    if (!rc && s.mpi) rc = fedc__sim_mpi_start(&s);
#endif
    char id[160];
    for (uint32_t i = 0; i < opt->clients && !rc; i++) {
        snprintf(id, sizeof id, fmt, i);
        fedc__bytes out = {0};
        fedc__conn conn;
        fedc__conn_memory(&conn, NULL, 0, &out, "sim");
        rc = fedc__server_add_virtual(s.server, i);
        if (!rc) rc = fedc__client_send_hello(s.hello, &conn, id);
        if (!rc) fedc__server_feed(s.server, i, out.data, out.len);
        fedc__bytes_free(&out);
    }
    if (!rc) rc = fedc__sim_start_workers(&s, &started);
    if (rc) {
        fedc_set_error(err, errlen, rc, "cannot set up %u virtual clients: %s", opt->clients,
                       fedc_strerror(rc));
    } else {
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT, "%u virtual clients, %u answering at once%s", opt->clients,
                 s.nworkers * (uint32_t)s.nranks, s.mpi ? " over MPI" : "");
        rc = fedc_server_run(s.server);
        if (rc) fedc_set_error(err, errlen, rc, "%s", fedc_server_errmsg(s.server));
    }

    /* Stop the workers, then give back whatever is still queued. */
    fedc__sim_stop_workers(&s, started);
#ifdef FEDC_HAVE_MPI
    if (s.mpi) fedc__sim_mpi_stop(&s);
#endif
    for (job *j = s.head, *next; j; j = next) {
        next = j->next;
        free(j->frame);
        if (j->blob) fedc__server_blob_release(j->blob);
        free(j);
    }
    for (done_msg *d = s.done_head, *next; d; d = next) {
        next = d->next;
        if (d->blob) fedc__server_blob_release(d->blob);
        fedc__bytes_free(&d->out);
        free(d);
    }
    for (delayed *dl = s.delayed, *next; dl; dl = next) {
        next = dl->next;
        fedc__bytes_free(&dl->d->out);
        free(dl->d);
        uv_close((uv_handle_t *)&dl->timer, on_delayed_closed);
    }
    uv_close((uv_handle_t *)&s.async, NULL);
    fedc_server_destroy(s.server);
    fedc_client_destroy(s.hello);
done:
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    free(s.busy);
    free(s.workers);
    for (uint32_t i = 0; s.secagg && i < opt->clients; i++) fedc__csa_destroy(s.secagg[i]);
    free(s.secagg);
    return rc;
}
