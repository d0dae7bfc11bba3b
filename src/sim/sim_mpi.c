/* The simulator across MPI ranks. Rank 0 runs the server; a client i with
 * i % size != 0 is answered on rank i % size. To a rank go each request's
 * message frame and the model's frames (once per model version, not once
 * per client). Back comes, for an update, only its FitRes frame: the rank
 * checks and folds the tensors into sums of its own (sim_fold.c), rank 0's
 * server decides whether the update counts and says so (a verdict; a
 * refused update is taken back out), and when the round's results are in
 * MPI_Reduce adds every rank's sums into the server's. Any other answer
 * (an evaluation, a failure, a fault, a value the check refuses) travels
 * whole, as the bytes the in-process transport carries, and rank 0's server
 * reads it as before. One thread per rank makes every MPI call
 * (MPI_THREAD_SERIALIZED is enough), with non-blocking point-to-point sends
 * so that two ranks sending to each other never wait on each other. */
#include <mpi.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/server_internal.h"
#include "sim/sim_internal.h"

#define LOG_COMPONENT "sim"

enum {
    TAG_MODEL = 1,
    TAG_JOB = 2,
    TAG_ANSWER = 3,
    TAG_STOP = 4,
    TAG_STOPPED = 5,
    TAG_VERDICT = 6, /* rank 0 -> r: verdicts on updates folded there */
    TAG_REDUCE = 7   /* rank 0 -> r: join the MPI_Reduce of a round's sums */
};

/* Elements per MPI_Reduce call (the count is an int); every rank cuts the
 * sums the same way. */
#define REDUCE_CHUNK ((size_t)1 << 20)

typedef struct job_header {
    uint32_t index;
    int32_t vanish;
    uint64_t version; /* 0: no model follows the message */
    uint64_t round;   /* the server's round and fit capacity */
    uint64_t capacity;
    double delay; /* fault: rank 0 holds the answer back this long */
} job_header;

typedef struct answer_header {
    uint32_t index;
    int32_t failed;
    int32_t vanish;
    int32_t had_model;
    uint32_t why_len;
    int32_t folded; /* the update is in the rank's sums: only its FitRes frame follows */
    uint64_t round, weight, wire_bytes;
} answer_header;

typedef struct verdict {
    uint32_t index;
    int32_t kept;
    uint64_t round;
} verdict;

/* TAG_REDUCE: the round, then the element count of each of ntensors. */
typedef struct reduce_header {
    uint64_t round;
    uint64_t ntensors;
} reduce_header;

enum { COLLECT_NONE, COLLECT_ASKED, COLLECT_DONE };

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
    int is_answer; /* counts in answers_pending until sent */
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
    uint32_t answers_pending; /* other ranks: queued, being sent, or folded and awaiting a verdict */
    fedc__sim_fold fold;      /* other ranks: this rank's share of the round's sums */
    done_msg *held;           /* other ranks: folded answers awaiting rank 0's verdict */
    /* Rank 0: verdicts to send, and the round's sums to collect. */
    verdict *verdicts;
    size_t nverdicts, capverdicts;
    atomic_int collect_state;
    pthread_cond_t collected;
    fedc__fedavg *collect_agg;
    uint64_t collect_round;
    int collect_rc;
    char collect_err[FEDC_ERRMSG_MAX];
    uint64_t kept_round, kept_updates, kept_weight; /* what the server kept of the ranks' folds */
    uint64_t stat_folded, stat_kept, stat_whole, stat_reduces;
    uint64_t stat_bytes, stat_spared; /* answer bytes received over MPI; and not sent, being folded */
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

/* Starts a non-blocking send of buf (taken: freed when the send is done).
 * An answer that counts in answers_pending stops counting when sent. */
static int post_send(sim_mpi *m, uint8_t *buf, size_t len, int dest, int tag, int is_answer)
{
    int rc = len > (size_t)INT32_MAX ? FEDC_ERR_TOO_LARGE : FEDC_OK;
    if (!rc && m->nsends == m->capsends) {
        /* Waits for memory: the record of a send must not be lost. */
        size_t cap = m->capsends ? 2 * m->capsends : 64;
        outgoing *n;
        while (!(n = realloc(m->sends, cap * sizeof *n))) nap();
        m->sends = n;
        m->capsends = cap;
    }
    outgoing *o = rc ? NULL : &m->sends[m->nsends];
    if (!rc && MPI_Isend(buf, (int)len, MPI_BYTE, dest, tag, MPI_COMM_WORLD, &o->req) != MPI_SUCCESS)
        rc = FEDC_ERR_IO;
    if (rc) {
        free(buf);
        if (is_answer) answer_sent(m);
        return rc;
    }
    o->buf = buf;
    o->is_answer = is_answer;
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
            if (post_send(m, buf, sizeof h + len, r, TAG_MODEL, 0) == FEDC_OK) m->sent_version[r] = version;
        }
    }
    uint8_t *buf = malloc(sizeof(job_header) + j->frame_len);
    if (buf) {
        job_header h = {j->index, j->vanish, version, j->round, j->capacity, j->delay};
        memcpy(buf, &h, sizeof h);
        memcpy(buf + sizeof h, j->frame, j->frame_len);
        post_send(m, buf, sizeof h + j->frame_len, r, TAG_JOB, 0);
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
    d->folded = h.folded;
    d->round = h.round;
    d->weight = h.weight;
    d->wire_bytes = h.wire_bytes;
    m->stat_folded += d->folded;
    m->stat_whole += !d->folded && (size_t)len > sizeof h + h.why_len; /* not empty (a Welcome's) */
    m->stat_bytes += (uint64_t)len;
    if (d->folded && h.wire_bytes > (uint64_t)len - sizeof h - h.why_len)
        m->stat_spared += h.wire_bytes - ((uint64_t)len - sizeof h - h.why_len);
    size_t wl = h.why_len < sizeof d->why - 1 ? h.why_len : sizeof d->why - 1;
    memcpy(d->why, buf + sizeof h, wl);
    size_t off = sizeof h + h.why_len;
    if ((size_t)len > off && fedc__bytes_append(&d->out, buf + off, (size_t)len - off)) {
        /* The client is dropped; its rank takes the fold back out when the
         * sums are collected, as for any update without a verdict. */
        d->failed = 1;
        d->folded = 0;
        snprintf(d->why, sizeof d->why, "out of memory in the simulator");
    }
    fedc__sim_complete(s, d);
}

void fedc__sim_mpi_verdict(sim *s, const done_msg *d, int kept)
{
    sim_mpi *m = s->mpi_state;
    pthread_mutex_lock(&m->mu);
    if (m->nverdicts == m->capverdicts) {
        /* A verdict must get through (a kept update would otherwise be taken
         * out of its rank's sums): wait for memory rather than drop it. */
        size_t cap = m->capverdicts ? 2 * m->capverdicts : 256;
        verdict *v;
        while (!(v = realloc(m->verdicts, cap * sizeof *v))) nap();
        m->verdicts = v;
        m->capverdicts = cap;
    }
    m->verdicts[m->nverdicts++] = (verdict){d->index, kept, d->round};
    if (kept) {
        if (m->kept_round != d->round) m->kept_updates = m->kept_weight = 0;
        m->kept_round = d->round;
        m->kept_updates++;
        m->kept_weight += d->weight;
        m->stat_kept++;
    }
    pthread_mutex_unlock(&m->mu);
}

/* Sends the queued verdicts, one message per rank. */
static void send_verdicts(sim *s, sim_mpi *m, verdict *v, size_t n)
{
    for (int r = 1; r < s->nranks && n; r++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += v[i].index % (uint32_t)s->nranks == (uint32_t)r;
        if (!k) continue;
        verdict *buf = fedc__sim_calloc_wait(k * sizeof *buf); /* see fedc__sim_mpi_verdict */
        k = 0;
        for (size_t i = 0; i < n; i++)
            if (v[i].index % (uint32_t)s->nranks == (uint32_t)r) buf[k++] = v[i];
        post_send(m, (uint8_t *)buf, k * sizeof *buf, r, TAG_VERDICT, 0);
    }
}

/* MPI_Reduce of a round's sums, element counts `numel` per tensor, into
 * `recv` at rank 0 (MPI_IN_PLACE there: recv holds rank 0's own sums). On
 * the other ranks `send` holds the rank's sums, or is NULL for zeros. */
static void reduce_sums(size_t ntensors, const uint64_t *numel, int64_t *const *send, int64_t *const *recv,
                        const uint64_t counts[2], uint64_t total[2])
{
    int64_t *zeros = NULL;
    size_t nzeros = 0;
    for (size_t i = 0; i < ntensors; i++)
        if (numel[i] > nzeros) nzeros = numel[i] < REDUCE_CHUNK ? (size_t)numel[i] : REDUCE_CHUNK;
    for (size_t i = 0; i < ntensors; i++) {
        for (uint64_t off = 0; off < numel[i]; off += REDUCE_CHUNK) {
            int n = (int)(numel[i] - off < REDUCE_CHUNK ? numel[i] - off : REDUCE_CHUNK);
            if (recv) {
                MPI_Reduce(MPI_IN_PLACE, recv[i] + off, n, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
                continue;
            }
            const int64_t *from = send ? send[i] + off : NULL;
            if (!from) {
                /* Waits for memory rather than fail: every rank must join
                 * every call. */
                if (!zeros) zeros = fedc__sim_calloc_wait(nzeros * sizeof *zeros);
                from = zeros;
            }
            MPI_Reduce(from, NULL, n, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
        }
    }
    free(zeros);
    MPI_Reduce(counts, total, 2, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
}

/* The TAG_REDUCE message for agg's round (see reduce_header), in memory
 * that waits to be had: every rank must get it, or it would never join the
 * reduction. */
static uint8_t *reduce_message(const fedc__fedavg *agg, uint64_t round, size_t *len)
{
    reduce_header h = {round, agg->ntensors};
    *len = sizeof h + agg->ntensors * sizeof(uint64_t);
    uint8_t *buf = fedc__sim_calloc_wait(*len);
    memcpy(buf, &h, sizeof h);
    for (size_t i = 0; i < agg->ntensors; i++) {
        uint64_t e = agg->numel[i];
        memcpy(buf + sizeof h + i * sizeof e, &e, sizeof e);
    }
    return buf;
}

/* Rank 0: has every rank add its sums into the server's, and checks that
 * they hold the updates the server kept, no more, no fewer. */
static void collect_sums(sim *s, sim_mpi *m)
{
    fedc__fedavg *agg = m->collect_agg;
    for (int r = 1; r < s->nranks; r++) {
        size_t len;
        uint8_t *buf = reduce_message(agg, m->collect_round, &len);
        post_send(m, buf, len, r, TAG_REDUCE, 0);
    }
    uint64_t *numel = fedc__sim_calloc_wait(agg->ntensors * sizeof *numel);
    for (size_t i = 0; i < agg->ntensors; i++) numel[i] = agg->numel[i];
    uint64_t none[2] = {0, 0}, total[2] = {0, 0};
    reduce_sums(agg->ntensors, numel, NULL, agg->acc, none, total);
    free(numel);
    pthread_mutex_lock(&m->mu);
    uint64_t want = m->kept_round == m->collect_round ? m->kept_updates : 0;
    uint64_t want_w = m->kept_round == m->collect_round ? m->kept_weight : 0;
    m->collect_rc = FEDC_OK;
    /* The ranks count weight in the accumulator's units. */
    if (total[0] != want || total[1] != want_w << FEDC_FEDAVG_WEIGHT_BITS)
        m->collect_rc = fedc_set_error(
            m->collect_err, sizeof m->collect_err, FEDC_ERR_PROTOCOL,
            "round %llu: the MPI ranks' sums hold %llu updates of total weight %llu, the server kept %llu "
            "of weight %llu",
            (unsigned long long)m->collect_round, (unsigned long long)total[0],
            (unsigned long long)(total[1] >> FEDC_FEDAVG_WEIGHT_BITS), (unsigned long long)want,
            (unsigned long long)want_w);
    m->stat_reduces++;
    atomic_store(&m->collect_state, COLLECT_DONE);
    pthread_cond_broadcast(&m->collected);
    pthread_mutex_unlock(&m->mu);
}

int fedc__sim_mpi_collect(sim *s, fedc__fedavg *agg, char *err, size_t errlen)
{
    sim_mpi *m = s->mpi_state;
    /* Refused before any rank is asked: each would wait in MPI_Reduce. */
    if (!agg->acc)
        return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                              "fedc sim --mpi adds the ranks' sums in host memory: the server's sums cannot "
                              "live on a device");
    pthread_mutex_lock(&s->mu);
    s->collecting = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&m->mu);
    m->collect_agg = agg;
    m->collect_round = fedc__server_round(s->server);
    atomic_store(&m->collect_state, COLLECT_ASKED);
    while (atomic_load(&m->collect_state) != COLLECT_DONE) pthread_cond_wait(&m->collected, &m->mu);
    atomic_store(&m->collect_state, COLLECT_NONE);
    m->collect_agg = NULL;
    int rc = m->collect_rc;
    if (rc) fedc_set_error(err, errlen, rc, "%s", m->collect_err);
    pthread_mutex_unlock(&m->mu);
    pthread_mutex_lock(&s->mu);
    s->collecting = 0;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void *pump0(void *arg)
{
    sim *s = arg;
    sim_mpi *m = s->mpi_state;
    int idle = 0;
    while (!atomic_load(&m->stop)) {
        int busy = 0;
        /* The verdicts and a request to collect are taken together: every
         * verdict given before the request goes out before the ranks are
         * told to reduce, so that no rank reduces a kept update as
         * undecided. */
        pthread_mutex_lock(&m->mu);
        job *list = m->out_head;
        m->out_head = m->out_tail = NULL;
        verdict *v = m->verdicts;
        size_t nv = m->nverdicts;
        m->verdicts = NULL;
        m->nverdicts = m->capverdicts = 0;
        int collect = atomic_load(&m->collect_state) == COLLECT_ASKED;
        pthread_mutex_unlock(&m->mu);
        for (job *j = list, *next; j; j = next) {
            next = j->next;
            send_job(s, m, j);
            busy = 1;
        }
        send_verdicts(s, m, v, nv);
        free(v);
        if (collect) collect_sums(s, m);
        busy |= nv > 0 || collect;
        int flag = 0;
        MPI_Status st;
        while (atomic_load(&m->collect_state) != COLLECT_ASKED &&
               MPI_Iprobe(MPI_ANY_SOURCE, TAG_ANSWER, MPI_COMM_WORLD, &flag, &st) == MPI_SUCCESS && flag) {
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
    pthread_cond_init(&m->collected, NULL);
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
        if (b) post_send(m, b, 1, r, TAG_STOP, 0);
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
    if (s->nranks > 1)
        fedc_log(FEDC_LOG_INFO, LOG_COMPONENT,
                 "MPI: %llu updates folded on the ranks where they were trained (%llu kept by the server), "
                 "their sums added with MPI_Reduce in %llu rounds; %llu other answers (evaluations, "
                 "failures, faults) sent whole to rank 0; answers took %.1f MB over MPI, %.1f MB less than "
                 "whole",
                 (unsigned long long)m->stat_folded, (unsigned long long)m->stat_kept,
                 (unsigned long long)m->stat_reduces, (unsigned long long)m->stat_whole,
                 (double)m->stat_bytes / 1e6, (double)m->stat_spared / 1e6);
    for (uint32_t i = 0; m->pend_blob && i < s->opt->clients; i++)
        if (m->pend_blob[i]) fedc__server_blob_release(m->pend_blob[i]);
    free(m->sends);
    free(m->sent_version);
    free(m->pend_blob);
    free(m->pend_delay);
    free(m->verdicts);
    pthread_cond_destroy(&m->collected);
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

/* Frees an answer that was folded here, once its fate is known. */
static void release_held(sim_mpi *m, done_msg *d)
{
    fedc__bytes_free(&d->out);
    free(d);
    answer_sent(m);
}

/* Takes the folded answers that wait for a verdict out of the sums when
 * `unfold` is set (they were not kept), and frees them. */
static void release_all_held(sim_mpi *m, int unfold)
{
    for (done_msg *d = m->held, *next; d; d = next) {
        next = d->next;
        if (unfold) fedc__sim_fold_unfold(&m->fold, d->out.data, d->out.len, d->fitres_len, d->weight);
        release_held(m, d);
    }
    m->held = NULL;
}

/* Sends the workers' answers to rank 0. An update that checks out is folded
 * here and only its FitRes frame goes; the answer waits for the verdict. An
 * answer held back or cut short by a fault goes whole: rank 0 plays the
 * fault out, as in one process. */
static void send_answers(sim_mpi *m, int *busy)
{
    pthread_mutex_lock(&m->mu);
    done_msg *d = m->ans_head;
    m->ans_head = m->ans_tail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (d) {
        done_msg *next = d->next;
        d->next = NULL;
        uint64_t weight = 0;
        size_t fitres = 0;
        int fold = !d->failed && !d->vanish && !(d->delay > 0) &&
                   fedc__sim_fold_answer(&m->fold, d->out.data, d->out.len, &weight, &fitres);
        size_t wl = fold ? 0 : strlen(d->why), body = fold ? fitres : d->out.len;
        answer_header h = {d->index, d->failed,     d->vanish, d->had_model, (uint32_t)wl,
                           fold,     m->fold.round, weight,    d->out.len};
        uint8_t *buf = malloc(sizeof h + wl + body);
        if (buf) {
            memcpy(buf, &h, sizeof h);
            memcpy(buf + sizeof h, d->why, wl);
            if (body) memcpy(buf + sizeof h + wl, d->out.data, body);
            post_send(m, buf, sizeof h + wl + body, 0, TAG_ANSWER, !fold);
        } else if (!fold) {
            answer_sent(m);
        }
        if (fold) {
            /* Without a verdict it is taken out when the sums are collected. */
            d->folded = 1;
            d->round = m->fold.round;
            d->weight = weight;
            d->fitres_len = fitres;
            d->next = m->held;
            m->held = d;
        } else {
            fedc__bytes_free(&d->out);
            free(d);
        }
        d = next;
        *busy = 1;
    }
}

static void on_verdicts(sim_mpi *m, const uint8_t *buf, int len)
{
    for (size_t off = 0; off + sizeof(verdict) <= (size_t)len; off += sizeof(verdict)) {
        verdict v;
        memcpy(&v, buf + off, sizeof v);
        for (done_msg **pp = &m->held; *pp; pp = &(*pp)->next) {
            done_msg *d = *pp;
            if (d->index != v.index || d->round != v.round) continue;
            *pp = d->next;
            if (!v.kept) fedc__sim_fold_unfold(&m->fold, d->out.data, d->out.len, d->fitres_len, d->weight);
            release_held(m, d);
            break;
        }
    }
}

/* Joins rank 0's MPI_Reduce of a round's sums. */
static void on_reduce(sim_mpi *m, const uint8_t *buf, int len)
{
    reduce_header h;
    if (len < (int)sizeof h) return;
    memcpy(&h, buf, sizeof h);
    if (h.ntensors > ((size_t)len - sizeof h) / sizeof(uint64_t)) return;
    uint64_t *numel = fedc__sim_calloc_wait(h.ntensors ? h.ntensors * sizeof *numel : 1);
    memcpy(numel, buf + sizeof h, h.ntensors * sizeof *numel);
    /* The server gave its verdict on every update it kept before asking for
     * the sums: what still waits for one was not kept. */
    release_all_held(m, 1);
    fedc__sim_fold *f = &m->fold;
    int mine = f->ready && f->open && f->round == h.round && f->ntensors == h.ntensors;
    for (size_t i = 0; mine && i < h.ntensors; i++) mine = f->acc.numel[i] == numel[i];
    if (f->round == h.round) f->open = 0;
    /* Sums of another round (or none) count as zeros; rank 0's count check
     * would then catch what is missing. */
    uint64_t counts[2] = {mine ? f->acc.updates : 0, mine ? f->acc.weight_units : 0};
    reduce_sums(h.ntensors, numel, mine ? f->acc.acc : NULL, NULL, counts, NULL);
    free(numel);
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
            /* The first model gives the layout of the sums. A strategy that
             * needs every update gets none: without a layout this rank
             * folds nothing and sends every answer whole to rank 0. */
            if (!s->whole_answers) fedc__sim_fold_layout(&m->fold, c->bytes + sizeof h, (size_t)h.len);
        }
    } else if (st->MPI_TAG == TAG_JOB && len >= (int)sizeof(job_header)) {
        job_header h;
        memcpy(&h, buf, sizeof h);
        if (h.round > m->fold.round) {
            /* A new round: its sums start from zero, so answers of the last
             * one that still wait for a verdict need not be taken out. */
            release_all_held(m, 0);
            fedc__sim_fold_begin(&m->fold, h.round, h.capacity);
        }
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
            j->delay = h.delay;
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
    } else if (st->MPI_TAG == TAG_VERDICT) {
        on_verdicts(m, buf, len);
    } else if (st->MPI_TAG == TAG_REDUCE) {
        on_reduce(m, buf, len);
    } else if (st->MPI_TAG == TAG_STOP) {
        /* The last answers go whole; rank 0 no longer reads them. */
        m->fold.open = 0;
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
    fedc__sim_fold_init(&m->fold, s->max_frame);
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
    if (b) post_send(m, b, 1, 0, TAG_STOPPED, 0);
    while (reap_sends(m)) nap();
    release_all_held(m, 0);
    fedc__sim_fold_free(&m->fold);
    fedc__sim_mpi_model_unref(m->current);
    free(m->sends);
    pthread_cond_destroy(&m->room);
    pthread_mutex_destroy(&m->mu);
    free(m);
    s->mpi_state = NULL;
    return FEDC_OK;
}
