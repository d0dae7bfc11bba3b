/* The simulator across MPI ranks. Rank 0 runs the server; a client i with
 * i % size != 0 is answered on rank i % size. Between ranks travel the same
 * bytes the in-process transport carries: each request's message frame,
 * the model's frames (sent to a rank once per model version, not once per
 * client), and each answer. One thread per rank makes every MPI call
 * (MPI_THREAD_SERIALIZED is enough), with non-blocking sends so that two
 * ranks sending to each other never wait on each other. */
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server_internal.h"
#include "sim/sim_internal.h"

#define LOG_COMPONENT "sim"

enum { TAG_MODEL = 1, TAG_JOB = 2, TAG_ANSWER = 3, TAG_STOP = 4, TAG_STOPPED = 5 };

typedef struct job_header {
    uint32_t index;
    int32_t vanish;
    uint64_t version; /* 0: no model follows the message */
} job_header;

typedef struct answer_header {
    uint32_t index;
    int32_t failed;
    int32_t vanish;
    int32_t had_model;
    uint32_t why_len;
} answer_header;

typedef struct model_header {
    uint64_t version;
    uint64_t len;
} model_header;

/* A rank's copy of a model version, shared by the jobs that use it. */
typedef struct model_copy {
    atomic_int refs;
    uint64_t version;
    uint8_t *bytes;
    uv_buf_t buf;
} model_copy;

/* A send in flight and the buffer it must keep alive. */
typedef struct outgoing {
    MPI_Request req;
    uint8_t *buf;
    int is_answer;
} outgoing;

typedef struct sim_mpi {
    pthread_t pump;
    int pump_started;
    atomic_int stop;
    pthread_mutex_t mu;
    job *out_head, *out_tail;      /* rank 0: jobs for other ranks */
    done_msg *ans_head, *ans_tail; /* other ranks: answers for rank 0 */
    outgoing *sends;
    size_t nsends, capsends;
    uint64_t *sent_version; /* rank 0: the model each rank has */
    void **pend_blob;       /* rank 0: the model reference of each client's open request */
    double *pend_delay;
    model_copy *current;      /* other ranks: the latest model */
    pthread_cond_t room;      /* other ranks: answers pending fell below the bound */
    uint32_t answers_pending; /* other ranks: queued or being sent */
} sim_mpi;

static int g_we_initialised;

int fedc_sim_mpi_init(int *argc, char ***argv, int *rank, int *size, char *err, size_t errlen)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
            return fedc_set_error(err, errlen, FEDC_ERR_IO, "MPI_Init_thread failed");
        g_we_initialised = 1;
        if (provided < MPI_THREAD_SERIALIZED)
            return fedc_set_error(
                err, errlen, FEDC_ERR_UNSUPPORTED,
                "the MPI library does not support calls from a helper thread (MPI_THREAD_SERIALIZED)");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return FEDC_OK;
}

void fedc_sim_mpi_finalize(void)
{
    if (g_we_initialised) MPI_Finalize();
    g_we_initialised = 0;
}

int fedc__sim_mpi_rank(int *rank, int *nranks, char *err, size_t errlen)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "MPI is not initialised: call fedc_sim_mpi_init() first");
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, nranks);
    return FEDC_OK;
}

void fedc__sim_mpi_model_unref(void *model)
{
    model_copy *m = model;
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        free(m->bytes);
        free(m);
    }
}

/* Sleeps between polls: 20 us after recent traffic, doubling while idle up
 * to 1 ms, so that an idle pump leaves the cores to the workers. */
static void nap_idle(int *idle)
{
    long ns = 20000L << (*idle < 6 ? *idle : 6);
    if (ns > 1000000L) ns = 1000000L;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
    (*idle)++;
}

static void nap(void)
{
    int idle = 0;
    nap_idle(&idle);
}

static void answer_sent(sim_mpi *m)
{
    pthread_mutex_lock(&m->mu);
    if (m->answers_pending) m->answers_pending--;
    pthread_cond_broadcast(&m->room);
    pthread_mutex_unlock(&m->mu);
}

/* Starts a non-blocking send of buf (taken: freed when the send is done). */
static int post_send(sim_mpi *m, uint8_t *buf, size_t len, int dest, int tag)
{
    if (len > (size_t)INT32_MAX) {
        free(buf);
        if (tag == TAG_ANSWER) answer_sent(m);
        return FEDC_ERR_TOO_LARGE;
    }
    if (m->nsends == m->capsends) {
        size_t cap = m->capsends ? 2 * m->capsends : 64;
        outgoing *n = realloc(m->sends, cap * sizeof *n);
        if (!n) {
            free(buf);
            if (tag == TAG_ANSWER) answer_sent(m);
            return FEDC_ERR_NOMEM;
        }
        m->sends = n;
        m->capsends = cap;
    }
    outgoing *o = &m->sends[m->nsends];
    if (MPI_Isend(buf, (int)len, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &o->req) != MPI_SUCCESS) {
        free(buf);
        if (tag == TAG_ANSWER) answer_sent(m);
        return FEDC_ERR_IO;
    }
    o->buf = buf;
    o->is_answer = tag == TAG_ANSWER;
    m->nsends++;
    return FEDC_OK;
}

/* Frees the buffers of completed sends. Returns how many are still open. */
static size_t reap_sends(sim_mpi *m)
{
    size_t k = 0;
    for (size_t i = 0; i < m->nsends; i++) {
        int done = 0;
        MPI_Test(&m->sends[i].req, &done, MPI_STATUS_IGNORE);
        if (done) {
            free(m->sends[i].buf);
            if (m->sends[i].is_answer) answer_sent(m);
        } else {
            m->sends[k++] = m->sends[i];
        }
    }
    m->nsends = k;
    return k;
}

/* Receives the probed message into a new buffer. */
static uint8_t *recv_probed(MPI_Status *st, int *len)
{
    MPI_Get_count(st, MPI_BYTE, len);
    uint8_t *buf = malloc(*len > 0 ? (size_t)*len : 1);
    if (!buf) return NULL;
    MPI_Recv(buf, *len, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    return buf;
}

/* ---- rank 0 ------------------------------------------------------------ */

void fedc__sim_mpi_submit(sim *s, job *j)
{
    sim_mpi *m = s->mpi_state;
    pthread_mutex_lock(&m->mu);
    if (m->out_tail)
        m->out_tail->next = j;
    else
        m->out_head = j;
    m->out_tail = j;
    pthread_mutex_unlock(&m->mu);
}

/* Sends job j to its rank, preceded by the model if that rank lacks it. */
static void send_job(sim *s, sim_mpi *m, job *j)
{
    int r = (int)(j->index % (uint32_t)s->nranks);
    uint64_t version = j->blob ? fedc__server_blob_version(j->blob) : 0;
    if (j->blob && m->sent_version[r] != version) {
        size_t len = 0;
        for (unsigned i = 0; i < j->nbufs; i++) len += j->bufs[i].len;
        uint8_t *buf = malloc(sizeof(model_header) + len);
        if (buf) {
            model_header h = {version, len};
            memcpy(buf, &h, sizeof h);
            uint8_t *p = buf + sizeof h;
            for (unsigned i = 0; i < j->nbufs; i++) {
                memcpy(p, j->bufs[i].base, j->bufs[i].len);
                p += j->bufs[i].len;
            }
            if (post_send(m, buf, sizeof h + len, r, TAG_MODEL) == FEDC_OK) m->sent_version[r] = version;
        }
    }
    uint8_t *buf = malloc(sizeof(job_header) + j->frame_len);
    if (buf) {
        job_header h = {j->index, j->vanish, version};
        memcpy(buf, &h, sizeof h);
        memcpy(buf + sizeof h, j->frame, j->frame_len);
        post_send(m, buf, sizeof h + j->frame_len, r, TAG_JOB);
    }
    if (j->blob) {
        m->pend_blob[j->index] = j->blob;
        m->pend_delay[j->index] = j->delay;
    }
    free(j->frame);
    free(j);
}

/* Turns an answer from another rank into what a local worker would have
 * produced, and hands it to the server's loop. */
static void take_answer(sim *s, sim_mpi *m, const uint8_t *buf, int len, int deliver)
{
    answer_header h;
    if (len < (int)sizeof h) return;
    memcpy(&h, buf, sizeof h);
    if (h.index >= s->opt->clients || h.why_len > (uint32_t)len - sizeof h) return;
    void *blob = NULL;
    double delay = 0;
    if (h.had_model) {
        blob = m->pend_blob[h.index];
        delay = m->pend_delay[h.index];
        m->pend_blob[h.index] = NULL;
    }
    if (!deliver) {
        /* Only called so once the server's loop has stopped: the model
         * reference can be given back from this thread. */
        if (blob) fedc__server_blob_release(blob);
        return;
    }
    done_msg *d = fedc__sim_calloc_wait(sizeof *d); /* the answer must get through */
    d->index = h.index;
    d->failed = h.failed;
    d->vanish = h.vanish;
    d->had_model = h.had_model;
    d->delay = delay;
    d->blob = blob;
    size_t wl = h.why_len < sizeof d->why - 1 ? h.why_len : sizeof d->why - 1;
    memcpy(d->why, buf + sizeof h, wl);
    size_t off = sizeof h + h.why_len;
    if ((size_t)len > off && fedc__bytes_append(&d->out, buf + off, (size_t)len - off)) {
        d->failed = 1;
        snprintf(d->why, sizeof d->why, "out of memory in the simulator");
    }
    fedc__sim_complete(s, d);
}

static void *pump0(void *arg)
{
    sim *s = arg;
    sim_mpi *m = s->mpi_state;
    int idle = 0;
    while (!atomic_load(&m->stop)) {
        int busy = 0;
        pthread_mutex_lock(&m->mu);
        job *list = m->out_head;
        m->out_head = m->out_tail = NULL;
        pthread_mutex_unlock(&m->mu);
        for (job *j = list, *next; j; j = next) {
            next = j->next;
            send_job(s, m, j);
            busy = 1;
        }
        int flag = 0;
        MPI_Status st;
        while (MPI_Iprobe(MPI_ANY_SOURCE, TAG_ANSWER, MPI_COMM_WORLD, &flag, &st) == MPI_SUCCESS && flag) {
            int len = 0;
            uint8_t *buf = recv_probed(&st, &len);
            if (buf) take_answer(s, m, buf, len, 1);
            free(buf);
            busy = 1;
        }
        reap_sends(m);
        if (busy)
            idle = 0;
        else
            nap_idle(&idle);
    }
    return NULL;
}

int fedc__sim_mpi_start(sim *s)
{
    sim_mpi *m = calloc(1, sizeof *m);
    if (!m) return FEDC_ERR_NOMEM;
    m->sent_version = calloc((size_t)s->nranks, sizeof *m->sent_version);
    m->pend_blob = calloc(s->opt->clients, sizeof *m->pend_blob);
    m->pend_delay = calloc(s->opt->clients, sizeof *m->pend_delay);
    pthread_mutex_init(&m->mu, NULL);
    s->mpi_state = m;
    if (!m->sent_version || !m->pend_blob || !m->pend_delay || pthread_create(&m->pump, NULL, pump0, s))
        return FEDC_ERR_NOMEM;
    m->pump_started = 1;
    return FEDC_OK;
}

void fedc__sim_mpi_stop(sim *s)
{
    sim_mpi *m = s->mpi_state;
    if (!m) return;
    atomic_store(&m->stop, 1);
    if (m->pump_started) pthread_join(m->pump, NULL);
    /* Jobs never sent give their model references back. */
    for (job *j = m->out_head, *next; j; j = next) {
        next = j->next;
        free(j->frame);
        if (j->blob) fedc__server_blob_release(j->blob);
        free(j);
    }
    /* Tell every rank to stop, and read what they still send until each has
     * said it stopped, so that no send is left without a receiver. */
    for (int r = 1; r < s->nranks; r++) {
        uint8_t *b = malloc(1);
        if (b) post_send(m, b, 1, r, TAG_STOP);
    }
    int stopped = 0;
    while (stopped < s->nranks - 1) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
        if (!flag) {
            reap_sends(m);
            nap();
            continue;
        }
        int len = 0;
        uint8_t *buf = recv_probed(&st, &len);
        if (st.MPI_TAG == TAG_ANSWER && buf) take_answer(s, m, buf, len, 0);
        if (st.MPI_TAG == TAG_STOPPED) stopped++;
        free(buf);
    }
    while (reap_sends(m)) nap();
    for (uint32_t i = 0; i < s->opt->clients; i++)
        if (m->pend_blob[i]) fedc__server_blob_release(m->pend_blob[i]);
    free(m->sends);
    free(m->sent_version);
    free(m->pend_blob);
    free(m->pend_delay);
    pthread_mutex_destroy(&m->mu);
    free(m);
    s->mpi_state = NULL;
}

/* ---- the other ranks ------------------------------------------------------ */

void fedc__sim_mpi_answer(sim *s, done_msg *d)
{
    sim_mpi *m = s->mpi_state;
    pthread_mutex_lock(&m->mu);
    /* An answer can hold a whole model: a worker waits rather than let
     * them pile up faster than rank 0 takes them. */
    while (m->answers_pending >= 2 * s->nworkers && !atomic_load(&m->stop))
        pthread_cond_wait(&m->room, &m->mu);
    m->answers_pending++;
    if (m->ans_tail)
        m->ans_tail->next = d;
    else
        m->ans_head = d;
    m->ans_tail = d;
    pthread_mutex_unlock(&m->mu);
}

static void send_answers(sim_mpi *m, int *busy)
{
    pthread_mutex_lock(&m->mu);
    done_msg *d = m->ans_head;
    m->ans_head = m->ans_tail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (d) {
        done_msg *next = d->next;
        size_t wl = strlen(d->why);
        answer_header h = {d->index, d->failed, d->vanish, d->had_model, (uint32_t)wl};
        uint8_t *buf = malloc(sizeof h + wl + d->out.len);
        if (buf) {
            memcpy(buf, &h, sizeof h);
            memcpy(buf + sizeof h, d->why, wl);
            if (d->out.len) memcpy(buf + sizeof h + wl, d->out.data, d->out.len);
            post_send(m, buf, sizeof h + wl + d->out.len, 0, TAG_ANSWER);
        } else {
            answer_sent(m);
        }
        fedc__bytes_free(&d->out);
        free(d);
        d = next;
        *busy = 1;
    }
}

/* Handles one message from rank 0. Returns 1 on STOP. */
static int handle_from_root(sim *s, sim_mpi *m, MPI_Status *st)
{
    int len = 0;
    uint8_t *buf = recv_probed(st, &len);
    if (!buf) return 0;
    int stop = 0;
    if (st->MPI_TAG == TAG_MODEL && len >= (int)sizeof(model_header)) {
        model_copy *c = calloc(1, sizeof *c);
        if (c) {
            model_header h;
            memcpy(&h, buf, sizeof h);
            atomic_init(&c->refs, 1);
            c->version = h.version;
            c->bytes = buf; /* keep the whole message; the frames start after the header */
            buf = NULL;
            c->buf = uv_buf_init((char *)c->bytes + sizeof h, (unsigned)h.len);
            fedc__sim_mpi_model_unref(m->current);
            m->current = c;
        }
    } else if (st->MPI_TAG == TAG_JOB && len >= (int)sizeof(job_header)) {
        job_header h;
        memcpy(&h, buf, sizeof h);
        if (h.version && h.index < s->opt->clients && (!m->current || m->current->version != h.version)) {
            /* The model this request needs never arrived (rank 0 could not
             * send it): the client fails the request rather than train on
             * an older model. */
            done_msg *d = calloc(1, sizeof *d);
            if (d) {
                d->index = h.index;
                d->failed = 1;
                d->had_model = 1;
                snprintf(d->why, sizeof d->why, "model version %llu did not reach this rank",
                         (unsigned long long)h.version);
                fedc__sim_mpi_answer(s, d);
            }
            free(buf);
            return 0;
        }
        job *j = calloc(1, sizeof *j);
        if (j && h.index < s->opt->clients) {
            j->index = h.index;
            j->vanish = h.vanish;
            j->frame_len = (size_t)len - sizeof h;
            j->frame = malloc(j->frame_len ? j->frame_len : 1);
            if (j->frame) memcpy(j->frame, buf + sizeof h, j->frame_len);
            if (h.version && m->current) {
                atomic_fetch_add(&m->current->refs, 1);
                j->blob = m->current;
                j->bufs = &m->current->buf;
                j->nbufs = 1;
                j->remote_model = 1;
            }
            fedc__sim_enqueue(s, j);
        } else {
            free(j);
        }
    } else if (st->MPI_TAG == TAG_STOP) {
        stop = 1;
    }
    free(buf);
    return stop;
}

int fedc__sim_mpi_serve(sim *s, uint32_t *started)
{
    sim_mpi *m = calloc(1, sizeof *m);
    if (!m) return FEDC_ERR_NOMEM;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->room, NULL);
    s->mpi_state = m;
    int stop = 0, idle = 0;
    while (!stop) {
        int busy = 0, flag = 0;
        MPI_Status st;
        while (!stop && MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) == MPI_SUCCESS && flag) {
            stop = handle_from_root(s, m, &st);
            busy = 1;
        }
        send_answers(m, &busy);
        reap_sends(m);
        if (busy)
            idle = 0;
        else
            nap_idle(&idle);
    }
    /* Finish what was queued, send the last answers, then say so. No
     * worker may wait for room any more. */
    pthread_mutex_lock(&m->mu);
    atomic_store(&m->stop, 1);
    pthread_cond_broadcast(&m->room);
    pthread_mutex_unlock(&m->mu);
    fedc__sim_stop_workers(s, *started);
    *started = 0;
    int busy = 0;
    send_answers(m, &busy);
    uint8_t *b = malloc(1);
    if (b) post_send(m, b, 1, 0, TAG_STOPPED);
    while (reap_sends(m)) nap();
    fedc__sim_mpi_model_unref(m->current);
    free(m->sends);
    pthread_cond_destroy(&m->room);
    pthread_mutex_destroy(&m->mu);
    free(m);
    s->mpi_state = NULL;
    return FEDC_OK;
}
