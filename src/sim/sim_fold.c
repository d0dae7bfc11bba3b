/* A rank's share of the FedAvg sums: the updates of the virtual clients
 * answered on one MPI rank, checked and folded there as the server would
 * check and fold them, so that only the sums need to reach rank 0.
 *
 * Only the plain case is handled here: a complete FitRes answer whose
 * tensors match the model's layout frame for frame. Anything else (a
 * malformed or cut-off answer, another message, a value the check refuses)
 * folds nothing and goes to the server whole, whose reader then decides
 * exactly as it would for a client on a socket. So this code may be
 * stricter than the server's reader, never more lenient. */
#include <stdlib.h>
#include <string.h>

#include "proto/frame.h"
#include "sim/sim_internal.h"

void fedc__sim_fold_init(fedc__sim_fold *f, uint32_t max_frame)
{
    memset(f, 0, sizeof *f);
    f->max_frame = max_frame;
}

void fedc__sim_fold_free(fedc__sim_fold *f)
{
    if (f->ready) fedc__fedavg_free(&f->acc);
    for (size_t i = 0; i < f->ntensors; i++) fedc__msg_free(f->headers[i]);
    free(f->headers);
    free(f->scratch);
    memset(f, 0, sizeof *f);
}

/* A walk over the frames of an encoded message stream. */
typedef struct cursor {
    const uint8_t *p;
    size_t len, off;
    uint32_t max_frame;
} cursor;

/* The next frame: 1 with its type and payload, 0 at the end, -1 if the
 * bytes do not hold a whole, valid frame. */
static int next_frame(cursor *c, uint8_t *type, const uint8_t **payload, uint32_t *plen)
{
    if (c->off == c->len) return 0;
    if (c->len - c->off < FEDC_FRAME_HEADER_BYTES ||
        fedc__frame_header_decode(c->p + c->off, c->max_frame, type, plen, NULL, 0) != FEDC_OK)
        return -1;
    c->off += FEDC_FRAME_HEADER_BYTES;
    if (*plen > c->len - c->off) return -1;
    *payload = c->p + c->off;
    c->off += *plen;
    return 1;
}

/* The next frame as a message with this body, or NULL. */
static fedc__msg *next_message(cursor *c, int body_case)
{
    uint8_t type;
    const uint8_t *payload;
    uint32_t plen;
    fedc__msg *m = NULL;
    if (next_frame(c, &type, &payload, &plen) != 1 || type != FEDC_FRAME_MESSAGE || plen == 0 ||
        fedc__msg_unpack(payload, plen, &m, NULL, 0) != FEDC_OK)
        return NULL;
    if ((int)m->body_case != body_case) {
        fedc__msg_free(m);
        return NULL;
    }
    return m;
}

static int same_header(const Fedc__V1__TensorHeader *a, const Fedc__V1__TensorHeader *b)
{
    if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->n_shape != b->n_shape ||
        a->nbytes != b->nbytes)
        return 0;
    for (size_t d = 0; d < a->n_shape; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

/* Walks `count` tensors from c: each a TensorHeader (checked, and equal to
 * want[i] when want is given) then DATA frames that fill it exactly, each a
 * whole number of 4-byte elements. Collects the headers into got when
 * given. 0 on success. */
static int walk_tensors(cursor *c, size_t count, fedc__msg *const *want, fedc__msg **got)
{
    for (size_t i = 0; i < count; i++) {
        fedc__msg *m = next_message(c, FEDC__V1__MESSAGE__BODY_TENSOR);
        if (!m) return -1;
        const Fedc__V1__TensorHeader *h = m->tensor;
        int ok =
            fedc__tensor_header_check(h, NULL, 0) == FEDC_OK && (!want || same_header(h, want[i]->tensor));
        uint64_t left = h->nbytes;
        if (got)
            got[i] = m;
        else
            fedc__msg_free(m);
        if (!ok) return -1;
        while (left > 0) {
            uint8_t type;
            const uint8_t *payload;
            uint32_t plen;
            if (next_frame(c, &type, &payload, &plen) != 1 || type != FEDC_FRAME_DATA || plen == 0 ||
                plen > left || plen % sizeof(float))
                return -1;
            left -= plen;
        }
    }
    return 0;
}

int fedc__sim_fold_layout(fedc__sim_fold *f, const uint8_t *frames, size_t len)
{
    if (f->headers) return FEDC_OK;
    /* Count the tensors, then collect their headers. */
    cursor c = {frames, len, 0, f->max_frame};
    size_t count = 0;
    uint8_t type;
    const uint8_t *payload;
    uint32_t plen;
    int r;
    while ((r = next_frame(&c, &type, &payload, &plen)) == 1) count += type == FEDC_FRAME_MESSAGE;
    if (r < 0 || count == 0) return FEDC_ERR_PROTOCOL;
    fedc__msg **headers = calloc(count, sizeof *headers);
    fedc_params *layout = fedc_params_create();
    c.off = 0;
    int rc = headers && layout ? FEDC_OK : FEDC_ERR_NOMEM;
    if (!rc && walk_tensors(&c, count, NULL, headers)) rc = FEDC_ERR_PROTOCOL;
    /* The accumulator wants a parameter set for the layout: a zero-filled
     * one, freed at once. */
    for (size_t i = 0; i < count && !rc; i++) {
        const Fedc__V1__TensorHeader *h = headers[i]->tensor;
        int64_t shape[FEDC_MAX_DIMS];
        for (size_t d = 0; d < h->n_shape; d++) shape[d] = (int64_t)h->shape[d];
        rc = fedc_params_add(layout, h->name, (fedc_dtype)h->dtype, (int)h->n_shape, shape, NULL, NULL, NULL,
                             0);
    }
    if (!rc) rc = fedc__fedavg_init(&f->acc, layout, f->capacity, NULL, 0);
    fedc_params_destroy(layout);
    if (rc) {
        for (size_t i = 0; headers && i < count; i++) fedc__msg_free(headers[i]);
        free(headers);
        return rc;
    }
    f->headers = headers;
    f->ntensors = count;
    f->ready = 1;
    return FEDC_OK;
}

void fedc__sim_fold_begin(fedc__sim_fold *f, uint64_t round, uint64_t capacity)
{
    if (f->ready) fedc__fedavg_reset(&f->acc, capacity);
    f->round = round;
    f->capacity = capacity;
    f->open = 1;
}

/* What to do with each DATA payload of an update. */
enum { CHUNK_FOLD, CHUNK_UNFOLD };

/* Applies `what` to the first `limit` DATA payloads of a well-formed update
 * (checked by walk_tensors) that starts at `start`. Folding stops at the
 * first payload the check refuses: returns the payloads folded. */
static size_t each_chunk(fedc__sim_fold *f, const uint8_t *answer, size_t len, size_t start, int what,
                         uint64_t weight, size_t limit)
{
    cursor c = {answer, len, start, f->max_frame};
    size_t done = 0, ti = 0, elem = 0;
    int first = 1;
    uint8_t type;
    const uint8_t *payload;
    uint32_t plen;
    while (done < limit && next_frame(&c, &type, &payload, &plen) == 1) {
        if (type == FEDC_FRAME_MESSAGE) {
            ti += !first;
            first = 0;
            elem = 0;
            continue;
        }
        /* Payloads sit at any byte offset after their 5-byte headers: the
         * values are copied to aligned memory, as the server receives
         * them. */
        memcpy(f->scratch, payload, plen);
        size_t n = plen / sizeof(float);
        if (what == CHUNK_UNFOLD) {
            fedc__fedavg_unfold(&f->acc, ti, elem, f->scratch, n, weight);
        } else if (fedc__fedavg_check_fold(&f->acc, ti, elem, f->scratch, n, weight, NULL, 0) != FEDC_OK) {
            break;
        }
        elem += n;
        done++;
    }
    return done;
}

int fedc__sim_fold_answer(fedc__sim_fold *f, const uint8_t *answer, size_t len, uint64_t *weight,
                          size_t *fitres_len)
{
    if (!f->ready || !f->open) return 0;
    cursor c = {answer, len, 0, f->max_frame};
    fedc__msg *m = next_message(&c, FEDC__V1__MESSAGE__BODY_FIT_RES);
    if (!m) return 0;
    const Fedc__V1__FitRes *r = m->fit_res;
    int ok = r->round == f->round && r->num_tensors == f->ntensors && r->num_tensors > 0 &&
             fedc__fedavg_check_weight(&f->acc, (double)r->num_examples, NULL, 0) == FEDC_OK;
    uint64_t w = r->num_examples;
    fedc__msg_free(m);
    size_t start = c.off;
    /* The whole stream must be sound before a value is folded: the answer
     * must end with its last tensor, too. */
    uint8_t type;
    const uint8_t *payload;
    uint32_t plen;
    if (!ok || walk_tensors(&c, f->ntensors, f->headers, NULL) || next_frame(&c, &type, &payload, &plen) != 0)
        return 0;
    size_t need = 0, chunks = 0;
    for (c.off = start; next_frame(&c, &type, &payload, &plen) == 1;) {
        if (type != FEDC_FRAME_DATA) continue;
        chunks++;
        if (plen > need) need = plen;
    }
    if (need > f->scratch_cap) {
        float *s = malloc(need);
        if (!s) return 0;
        free(f->scratch);
        f->scratch = s;
        f->scratch_cap = need;
    }
    size_t folded = each_chunk(f, answer, len, start, CHUNK_FOLD, w, chunks);
    if (folded < chunks) {
        /* A value the check refuses: the refused chunk was taken back out
         * by the check, the earlier ones are taken out here, and the server
         * will refuse the update with its own message. */
        each_chunk(f, answer, len, start, CHUNK_UNFOLD, w, folded);
        return 0;
    }
    fedc__fedavg_commit(&f->acc, w);
    *weight = w;
    *fitres_len = start;
    return 1;
}

void fedc__sim_fold_unfold(fedc__sim_fold *f, const uint8_t *answer, size_t len, size_t fitres_len,
                           uint64_t weight)
{
    each_chunk(f, answer, len, fitres_len, CHUNK_UNFOLD, weight, SIZE_MAX);
    /* The counts a commit added, taken back. */
    f->acc.updates--;
    f->acc.weight_units -= weight << FEDC_FEDAVG_WEIGHT_BITS;
    f->acc.weight_sum = (double)f->acc.weight_units / (double)(1u << FEDC_FEDAVG_WEIGHT_BITS);
}
