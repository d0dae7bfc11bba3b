/*
 * bench_agg: server-side aggregation throughput against memcpy.
 *
 * Builds U distinct client updates (default 100) of one F32 tensor of
 * N elements (default 1,048,576, 4 MiB) with values drawn from N(0, 0.05),
 * and encodes each one as the exact bytes a client sends after its FitRes:
 * a TensorHeader MESSAGE frame and then DATA frames of at most 1 MiB
 * (fedc__params_encode_iov, flattened into one buffer per update).
 *
 * One aggregation pass takes the U buffers in turn and, for each:
 *   decode    parses every frame header (fedc__frame_header_decode) and the
 *             TensorHeader protobuf (fedc__msg_unpack,
 *             fedc__tensor_header_check), matches it against the model's
 *             layout and locates each DATA payload in the buffer;
 *   validate  and
 *   fold      run fedc__fedavg_check_fold on every DATA payload, as the
 *             server does when each chunk arrives: one pass checks every
 *             value and adds it to the fixed-point sums (a bad value would
 *             take the update back out), then the update is committed.
 * The reference pass memcpy()s the same U buffers, one after the other,
 * into a single destination buffer of the same size.
 *
 * Both are reported in GB/s (10^9 bytes) of input, the encoded bytes of all
 * U updates, best of R repetitions (default 10), interleaved so that both see
 * the same machine state. U * 4 MiB is far larger than the last-level
 * cache, so every pass reads its input from memory, as a server does with
 * updates that have just arrived from the network.
 *
 *   bench_agg [--updates U] [--elements N] [--reps R] [--json]
 *
 * The compiler cannot drop the work: the fold and check live in the
 * library (another translation unit, no LTO), every check result is used,
 * each memcpy is followed by a compiler barrier on the destination, and
 * checksums of the aggregate and of the destination are printed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "fedc/core.h"
#include "fedc/tensor.h"
#include "proto/frame.h"
#include "proto/wire.h"
#include "strategy/fedavg.h"

/* Keeps the compiler from assuming anything about *p: stores before this
 * point must happen, and later reads must reload. */
#define CLOBBER(p) __asm__ volatile("" : : "r"(p) : "memory")

typedef struct update {
    uint8_t *bytes; /* the encoded frames, as sent */
    size_t len;
} update;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_agg [--updates U] [--elements N] [--reps R] [--json]\n");
}

/* Encodes a parameter set into one contiguous buffer holding exactly the
 * bytes that fedc__params_encode_iov would put on the wire. */
static int encode_flat(const fedc_params *p, update *u, char *err, size_t errlen)
{
    struct iovec *iov = NULL;
    int n = 0;
    void *hdrmem = NULL;
    int rc = fedc__params_encode_iov(p, &iov, &n, &hdrmem, err, errlen);
    if (rc) return rc;
    size_t len = 0;
    for (int i = 0; i < n; i++) len += iov[i].iov_len;
    u->bytes = fedc_aligned_alloc(len);
    if (!u->bytes) {
        free(iov);
        free(hdrmem);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for an update");
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(u->bytes + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    u->len = len;
    free(iov);
    free(hdrmem);
    return FEDC_OK;
}

/* Where one DATA payload starts and how many elements it holds. */
typedef struct chunk {
    size_t ti, offset, n;
    const float *x;
} chunk;

/*
 * Decodes and validates one update against the model layout; on success
 * the located payloads are in chunks[0 .. *nchunks). DATA payloads of the
 * fedc sender hold whole elements (1 MiB chunks, then the remainder); a
 * payload that splits an element is refused here, which a streaming
 * receiver such as the server does not need to do.
 */
static int decode_and_check(fedc__fedavg *agg, const fedc_params *model, const update *u, uint64_t weight,
                            chunk *chunks, size_t maxchunks, size_t *nchunks, char *err, size_t errlen)
{
    const uint8_t *p = u->bytes, *end = u->bytes + u->len;
    size_t nt = fedc_params_count(model), k = 0;
    int rc = fedc__fedavg_check_weight(agg, weight, err, errlen);
    if (rc) return rc;
    for (size_t ti = 0; ti < nt; ti++) {
        uint8_t type;
        uint32_t len;
        if ((size_t)(end - p) < FEDC_FRAME_HEADER_BYTES)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "update cut short");
        rc = fedc__frame_header_decode(p, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, errlen);
        if (rc) return rc;
        p += FEDC_FRAME_HEADER_BYTES;
        if (type != FEDC_FRAME_MESSAGE || (size_t)(end - p) < len)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "expected a TensorHeader frame");
        fedc__msg *m = NULL;
        rc = fedc__msg_unpack(p, len, &m, err, errlen);
        if (rc) return rc;
        p += len;
        const fedc_tensor *want = fedc_params_at(model, ti);
        if (m->body_case != FEDC__V1__MESSAGE__BODY_TENSOR) {
            fedc__msg_free(m);
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "expected a TensorHeader");
        }
        const Fedc__V1__TensorHeader *h = m->tensor;
        rc = fedc__tensor_header_check(h, err, errlen);
        int same = !rc && !strcmp(h->name, want->name) && (int)h->dtype == (int)want->dtype &&
                   h->n_shape == (size_t)want->ndim;
        for (int d = 0; same && d < want->ndim; d++) same = h->shape[d] == (uint64_t)want->shape[d];
        size_t nbytes = (size_t)h->nbytes;
        fedc__msg_free(m);
        if (rc) return rc;
        if (!same) return fedc_set_error(err, errlen, FEDC_ERR_SHAPE, "tensor %zu: layout differs", ti);
        size_t got = 0;
        while (got < nbytes) {
            if ((size_t)(end - p) < FEDC_FRAME_HEADER_BYTES)
                return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "update cut short");
            rc = fedc__frame_header_decode(p, FEDC_DEFAULT_MAX_FRAME, &type, &len, err, errlen);
            if (rc) return rc;
            p += FEDC_FRAME_HEADER_BYTES;
            if (type != FEDC_FRAME_DATA || len == 0 || len > nbytes - got || (size_t)(end - p) < len ||
                len % sizeof(float) || k == maxchunks)
                return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "bad DATA frame");
            chunk *c = &chunks[k++];
            c->ti = ti;
            c->offset = got / sizeof(float);
            c->n = len / sizeof(float);
            /* The payload sits at whatever byte offset the framing puts it;
             * x86 loads, scalar and vector, accept any alignment. */
            c->x = (const float *)(const void *)p;
            rc = fedc__fedavg_check_fold(agg, ti, c->offset, c->x, c->n, weight, err, errlen);
            if (rc) return rc;
            p += len;
            got += len;
        }
    }
    if (p != end) return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "trailing bytes after the update");
    *nchunks = k;
    return FEDC_OK;
}

/* Reads element j of the single tensor of update u straight from its DATA
 * frames, for the check below that the timed passes folded every value. */
static float element_at(const update *u, size_t j)
{
    const uint8_t *p = u->bytes, *end = u->bytes + u->len;
    size_t first = 0; /* index of the first element of the current frame */
    while ((size_t)(end - p) >= FEDC_FRAME_HEADER_BYTES) {
        uint32_t len = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
        uint8_t type = p[4];
        p += FEDC_FRAME_HEADER_BYTES;
        if (type == FEDC_FRAME_DATA) {
            size_t n = len / sizeof(float);
            if (j < first + n) {
                float v;
                memcpy(&v, p + (j - first) * sizeof(float), sizeof v);
                return v;
            }
            first += n;
        }
        p += len;
    }
    return NAN;
}

int main(int argc, char **argv)
{
    long updates = 100, elements = 1048576, reps = 10;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        long *target = NULL;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(argv[i], "--updates"))
            target = &updates;
        else if (!strcmp(argv[i], "--elements"))
            target = &elements;
        else if (!strcmp(argv[i], "--reps"))
            target = &reps;
        if (!target || i + 1 >= argc) {
            usage();
            return 2;
        }
        char *e;
        *target = strtol(argv[++i], &e, 10);
        if (*e || *target < 1 || *target > 100000000L) {
            fprintf(stderr, "bench_agg: bad value '%s' for %s\n", argv[i], argv[i - 1]);
            return 2;
        }
    }

    int exit_code = 1;
    char err[FEDC_ERRMSG_MAX];
    fedc_params *model = NULL, *p = NULL;
    update *ups = calloc((size_t)updates, sizeof *ups);
    size_t maxchunks = (size_t)elements * sizeof(float) / FEDC_CHUNK_BYTES + 2;
    chunk *chunks = calloc(maxchunks, sizeof *chunks);
    uint8_t *dst = NULL;
    fedc__fedavg agg;
    int agg_ready = 0;
    if (!ups || !chunks) {
        fprintf(stderr, "bench_agg: out of memory\n");
        goto done;
    }

    /* One tensor, as a model of N parameters that travels as one piece. */
    int64_t shape[1] = {elements};
    model = fedc_params_create();
    p = fedc_params_create();
    if (!model || !p || fedc_params_add(model, "w", FEDC_F32, 1, shape, NULL, NULL, err, sizeof err) ||
        fedc_params_add(p, "w", FEDC_F32, 1, shape, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_agg: %s\n", err);
        goto done;
    }
    fedc_rng rng;
    fedc_rng_seed(&rng, 42);
    float *v = fedc_params_at(p, 0)->data;
    for (long u = 0; u < updates; u++) {
        for (long j = 0; j < elements; j++) v[j] = (float)(0.05 * fedc_rng_normal(&rng));
        if (encode_flat(p, &ups[u], err, sizeof err)) {
            fprintf(stderr, "bench_agg: %s\n", err);
            goto done;
        }
    }
    size_t ulen = ups[0].len;
    double input_bytes = 0;
    for (long u = 0; u < updates; u++) input_bytes += (double)ups[u].len;

    if (fedc__fedavg_init(&agg, model, (uint64_t)updates, err, sizeof err)) {
        fprintf(stderr, "bench_agg: %s\n", err);
        goto done;
    }
    agg_ready = 1;
    dst = fedc_aligned_alloc(ulen);
    if (!dst) {
        fprintf(stderr, "bench_agg: out of memory\n");
        goto done;
    }
    memset(dst, 0, ulen);

    /* One untimed pass of each to fault in the accumulator and the
     * destination, then R timed repetitions of each, interleaved. */
    double best_agg = 1e300, best_copy = 1e300;
    uint64_t acc_sum = 0;
    for (long r = 0; r <= reps; r++) {
        double t0 = now_s();
        for (long u = 0; u < updates; u++) {
            memcpy(dst, ups[u].bytes, ups[u].len);
            CLOBBER(dst);
        }
        double t1 = now_s();

        fedc__fedavg_reset(&agg, (uint64_t)updates);
        double t2 = now_s();
        for (long u = 0; u < updates; u++) {
            size_t nchunks = 0;
            const uint64_t weight = 1;
            if (decode_and_check(&agg, model, &ups[u], weight, chunks, maxchunks, &nchunks, err,
                                 sizeof err)) {
                fprintf(stderr, "bench_agg: update %ld: %s\n", u, err);
                goto done;
            }
            fedc__fedavg_commit(&agg, weight);
        }
        double t3 = now_s();
        CLOBBER(agg.acc[0]);
        if (r == 0) continue;
        if (t1 - t0 < best_copy) best_copy = t1 - t0;
        if (t3 - t2 < best_agg) best_agg = t3 - t2;
    }
    for (long j = 0; j < elements; j++) acc_sum += (uint64_t)agg.acc[0][j];
    uint64_t dst_sum = 0;
    for (size_t j = 0; j < ulen; j += 4096) dst_sum += dst[j];
    /* The last pass must have folded every value of every update: compare
     * a few sums (chunk edges included) with ones computed here. */
    size_t probe[] = {0, 1, (size_t)elements / 4, (size_t)elements / 2 + 3, (size_t)elements - 1};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
        int64_t want = 0;
        for (long u = 0; u < updates; u++)
            want += llrint((double)element_at(&ups[u], probe[k]) * (double)(1 << FEDC_FEDAVG_FRACTION_BITS));
        if (agg.updates != (uint64_t)updates || agg.acc[0][probe[k]] != want) {
            fprintf(stderr, "bench_agg: the aggregate of element %zu is %lld, expected %lld\n", probe[k],
                    (long long)agg.acc[0][probe[k]], (long long)want);
            goto done;
        }
    }

    double agg_gbps = input_bytes / best_agg / 1e9;
    double memcpy_gbps = input_bytes / best_copy / 1e9;
    if (json) {
        printf("{\"agg_gbps\": %.3f, \"memcpy_gbps\": %.3f, \"agg_over_memcpy\": %.3f, \"updates\": %ld, "
               "\"elements\": %ld, \"update_bytes\": %zu, \"checksum\": \"%016llx%016llx\"}\n",
               agg_gbps, memcpy_gbps, agg_gbps / memcpy_gbps, updates, elements, ulen,
               (unsigned long long)acc_sum, (unsigned long long)dst_sum);
    } else {
        printf("updates %ld x %zu bytes (%ld F32 values each), best of %ld\n", updates, ulen, elements, reps);
        printf("agg_gbps %.3f  (decode + check + fold, %.1f ms per pass)\n", agg_gbps, best_agg * 1e3);
        printf("memcpy_gbps %.3f  (%.1f ms per pass)\n", memcpy_gbps, best_copy * 1e3);
        printf("agg / memcpy %.3f  (target >= 0.7)\n", agg_gbps / memcpy_gbps);
        printf("checksum %016llx%016llx\n", (unsigned long long)acc_sum, (unsigned long long)dst_sum);
    }
    exit_code = 0;
done:
    if (agg_ready) fedc__fedavg_free(&agg);
    fedc_free(dst);
    for (long u = 0; ups && u < updates; u++) fedc_free(ups[u].bytes);
    free(ups);
    free(chunks);
    fedc_params_destroy(model);
    fedc_params_destroy(p);
    return exit_code;
}
