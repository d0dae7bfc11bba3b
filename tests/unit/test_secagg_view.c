/*
 * What the server learns in secure aggregation (src/secagg/protocol.h): the
 * test drives one server object and n = 10 client objects in memory, records
 * every byte handed to fedc__sa_server_recv, and checks that nothing in the
 * recording gives a client's quantised input away.
 *
 *   - round 1: complete graph (K = 9, t = 5), no dropout; the inputs have
 *     strong structure, q_i[j] = (i+1) * 1000 + j;
 *   - round 2 (another round number, fresh clients and keys): a SecAgg+
 *     graph, K = 6, t = 4, the inputs realistic quantised vectors (16 bits,
 *     a smooth signal plus noise) known to the test, and three dropouts: one
 *     after advertising, one after sharing keys (its pairwise masks are
 *     reconstructed from t shares of its mask key), one after its masked
 *     input arrived (its input counts, it answers no unmask request).
 *     K = 4, t = 3 with n = 10 cannot survive these three dropouts on any
 *     graph (on the 10-cycle H(4, 10) some client in U2 always has two of
 *     the three among its four neighbours, leaving it 2 < t share holders);
 *     the test checks that claim exhaustively and runs K = 6, t = 4 instead.
 *
 * For each round:
 *   a. no 32-byte window (8 consecutive uint32, at any byte offset) of any
 *      q_i, 2 q_i, -q_i, q_i + c or q_i - c (c = 2^15, the quantisation
 *      offset of 16 bits) appears anywhere in the recording: every window,
 *      through a hash of the windows' first 8 bytes and a scan of every
 *      offset of the recording, cross-checked by memmem on a sample, and
 *      both shown to find a window planted in a copy of the recording;
 *   b. each masked input y_i (parsed from its MASKED message) is
 *      uncorrelated with q_i (|Pearson| < 0.1; noise is about 1/64) and with
 *      every other client's y_j, and y_i and the mask y_i - q_i look uniform
 *      (mean within 5 sigma of 2^31, chi-square of the top 4 bits below the
 *      Wilson-Hilferty bound at z = 5);
 *   c. the server's share counters: never t shares of both secrets of a
 *      client; a survivor's b count and a dropped-after-sharing client's
 *      s_sk count are exactly its neighbours that answered the unmask
 *      request (>= t), the other count 0; nothing for the early dropout;
 *   d. the sum from fedc__sa_server_finish is the plain sum mod 2^32 of the
 *      q_i whose masked input arrived, bit for bit.
 *
 * A client refusing an UNMASK_REQ that lists a client both in U3 and in D
 * is checked by test_secagg_protocol ("both secrets requested"). The server
 * object cannot be driven to ask for both (it builds the requests from its
 * own U3 and D, and its recv takes only the matching kind); but a malicious
 * server can tell different clients different stories (no consistency
 * round), and each client alone cannot notice. The last part plays that
 * split view and checks what it yields: the attacker rebuilds s_sk of the
 * client it lied about, strips the pairwise masks, and still faces
 * q + PRG(b) with fewer than t shares of b, because t > K/2.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"
#include "secagg/shamir.h"
#include "test_util.h"

#define N       10
#define DIM     4096
#define BITS    16
#define QOFF    (1u << (BITS - 1)) /* the quantised value of 0: round((2^16 - 1) / 2) */
#define WIN     8                  /* uint32 per window: 32 bytes */
#define NTR     5                  /* transforms of q: q, 2q, -q, q + c, q - c */
#define MAXMSG  64
#define HBITS   19
#define HSLOTS  (1u << HBITS)
#define EMPTY   0xFFFFFFFFu
#define NWINDOW (DIM - WIN + 1)

enum { LIVE, DROP_ADV, DROP_SHARE, DROP_MASKED };

static fedc_rng trng;
static const char *tr_name[NTR] = {"q", "2q", "-q", "q+c", "q-c"};

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- the recording: every buffer passed to fedc__sa_server_recv ---- */

typedef struct rec {
    uint8_t *p;
    size_t len, cap;
    size_t off[MAXMSG], mlen[MAXMSG];
    int nmsg;
} rec;

static int rec_recv(rec *r, fedc__sa_server *s, const uint8_t *msg, size_t len, char *err, size_t errlen)
{
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 1 << 16;
        while (cap < r->len + len) cap *= 2;
        uint8_t *p = realloc(r->p, cap);
        if (!p) return FEDC_ERR_NOMEM;
        r->p = p;
        r->cap = cap;
    }
    memcpy(r->p + r->len, msg, len);
    if (r->nmsg < MAXMSG) {
        r->off[r->nmsg] = r->len;
        r->mlen[r->nmsg] = len;
    }
    r->nmsg++;
    r->len += len;
    return fedc__sa_server_recv(s, msg, len, err, errlen);
}

/* ---- driving a round ---- */

/* Whether a dropout pattern can complete: |U1|, |U2| > t, |U3| >= t, every
 * client in U2 has t neighbours in U2 and t neighbours that answer (LIVE). */
static int feasible(const fedc__sa_config *cfg, const int *drop)
{
    uint32_t n = cfg->n, t = cfg->t, n2 = 0, n3 = 0;
    uint8_t adj[N * N];
    if (fedc__sa_neighbours(cfg, adj, NULL, 0)) return 0;
    for (uint32_t i = 0; i < n; i++) {
        n2 += drop[i] != DROP_ADV;
        n3 += drop[i] == LIVE || drop[i] == DROP_MASKED;
    }
    if (n < t + 1 || n2 < t + 1 || n3 < t) return 0;
    for (uint32_t j = 0; j < n; j++) {
        if (drop[j] == DROP_ADV) continue;
        uint32_t in2 = 0, in4 = 0;
        for (uint32_t h = 0; h < n; h++) {
            if (!adj[j * n + h]) continue;
            in2 += drop[h] != DROP_ADV;
            in4 += drop[h] == LIVE;
        }
        if (in2 < t || in4 < t) return 0;
    }
    return 1;
}

/* Plays one round; the server is left for the caller (share counters). */
static int play_round(const fedc__sa_config *cfg, const int *drop, const uint32_t *q, rec *r,
                      fedc__sa_server **srv, uint32_t *sum, uint32_t *surv)
{
    char err[FEDC_ERRMSG_MAX] = "";
    fedc__sa_client *c[N] = {0};
    uint8_t *in, *out;
    size_t inlen, outlen;
    int rc = fedc__sa_server_create(cfg, srv, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    for (uint32_t i = 0; !rc && i < cfg->n; i++) {
        rc = fedc__sa_client_create(cfg, i, &c[i], err, sizeof err);
        CHECK_STATUS(rc, FEDC_OK, err);
    }
    fedc__sa_server *s = *srv;
    /* 1: advertise */
    for (uint32_t i = 0; !rc && i < cfg->n; i++) {
        rc = fedc__sa_client_advertise(c[i], &out, &outlen, err, sizeof err);
        if (!rc) {
            rc = rec_recv(r, s, out, outlen, err, sizeof err);
            free(out);
        }
        CHECK_STATUS(rc, FEDC_OK, err);
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    /* 2: share keys */
    for (uint32_t i = 0; !rc && i < cfg->n; i++) {
        if (drop[i] == DROP_ADV) continue;
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (!rc) {
            rc = fedc__sa_client_share_keys(c[i], in, inlen, &out, &outlen, err, sizeof err);
            free(in);
        }
        if (!rc) {
            rc = rec_recv(r, s, out, outlen, err, sizeof err);
            free(out);
        }
        CHECK_STATUS(rc, FEDC_OK, err);
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    /* 3: masked inputs */
    for (uint32_t i = 0; !rc && i < cfg->n; i++) {
        if (drop[i] == DROP_ADV || drop[i] == DROP_SHARE) continue;
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (!rc) {
            rc = fedc__sa_client_masked_input(c[i], in, inlen, q + (size_t)i * cfg->dim, cfg->dim, &out,
                                              &outlen, err, sizeof err);
            free(in);
        }
        if (!rc) {
            rc = rec_recv(r, s, out, outlen, err, sizeof err);
            free(out);
        }
        CHECK_STATUS(rc, FEDC_OK, err);
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    /* 4: unmask */
    for (uint32_t i = 0; !rc && i < cfg->n; i++) {
        if (drop[i] != LIVE) continue;
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (!rc) {
            rc = fedc__sa_client_unmask(c[i], in, inlen, &out, &outlen, err, sizeof err);
            free(in);
        }
        if (!rc) {
            rc = rec_recv(r, s, out, outlen, err, sizeof err);
            free(out);
        }
        CHECK_STATUS(rc, FEDC_OK, err);
    }
    if (!rc) rc = fedc__sa_server_finish(s, sum, cfg->dim, surv, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    for (uint32_t i = 0; i < cfg->n; i++) fedc__sa_client_destroy(c[i]);
    return rc;
}

/* ---- a. windows of q in the recording ---- */

typedef struct win_index {
    uint8_t *bytes; /* N * NTR * DIM * 4: the transformed vectors, little-endian */
    uint64_t *key;  /* HSLOTS */
    uint32_t *who;  /* HSLOTS: (client * NTR + transform) * DIM + start, or EMPTY */
} win_index;

static uint32_t transform(uint32_t v, int tr)
{
    switch (tr) {
    case 0: return v;
    case 1: return 2u * v;
    case 2: return 0u - v;
    case 3: return v + QOFF;
    default: return v - QOFF;
    }
}

static uint32_t slot_of(uint64_t key)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - HBITS));
}

static int index_build(win_index *w, const uint32_t *q)
{
    w->bytes = malloc((size_t)N * NTR * DIM * 4);
    w->key = malloc(HSLOTS * sizeof *w->key);
    w->who = malloc(HSLOTS * sizeof *w->who);
    if (!w->bytes || !w->key || !w->who) return -1;
    memset(w->who, 0xFF, HSLOTS * sizeof *w->who);
    for (uint32_t i = 0; i < N; i++)
        for (int tr = 0; tr < NTR; tr++) {
            uint8_t *v = w->bytes + ((size_t)i * NTR + (size_t)tr) * DIM * 4;
            for (size_t j = 0; j < DIM; j++) put32(v + 4 * j, transform(q[(size_t)i * DIM + j], tr));
            for (uint32_t j = 0; j < NWINDOW; j++) {
                uint64_t k;
                memcpy(&k, v + 4 * (size_t)j, 8);
                uint32_t h = slot_of(k);
                while (w->who[h] != EMPTY) h = (h + 1) & (HSLOTS - 1);
                w->key[h] = k;
                w->who[h] = ((uint32_t)i * NTR + (uint32_t)tr) * DIM + j;
            }
        }
    return 0;
}

static void index_free(win_index *w)
{
    free(w->bytes);
    free(w->key);
    free(w->who);
}

/* Counts the windows found at any byte offset of buf; *first gets the first hit. */
static size_t index_scan(const win_index *w, const uint8_t *buf, size_t len, uint32_t *first, size_t *at)
{
    size_t hits = 0;
    for (size_t off = 0; off + WIN * 4 <= len; off++) {
        uint64_t k;
        memcpy(&k, buf + off, 8);
        for (uint32_t h = slot_of(k); w->who[h] != EMPTY; h = (h + 1) & (HSLOTS - 1)) {
            if (w->key[h] != k) continue;
            uint32_t id = w->who[h];
            const uint8_t *win = w->bytes + (size_t)(id / DIM) * DIM * 4 + (size_t)(id % DIM) * 4;
            if (memcmp(win, buf + off, WIN * 4) == 0) {
                if (!hits) {
                    *first = id;
                    *at = off;
                }
                hits++;
            }
        }
    }
    return hits;
}

/* A plain memmem (C11 has none): the first occurrence of needle in hay. */
static const uint8_t *find_bytes(const uint8_t *hay, size_t len, const uint8_t *needle, size_t nlen)
{
    for (size_t off = 0; off + nlen <= len;) {
        const uint8_t *p = memchr(hay + off, needle[0], len - nlen + 1 - off);
        if (!p) return NULL;
        if (memcmp(p, needle, nlen) == 0) return p;
        off = (size_t)(p - hay) + 1;
    }
    return NULL;
}

/* memmem for every window at a stride: the slow way, as a cross-check. */
static size_t memmem_scan(const win_index *w, const uint8_t *buf, size_t len, size_t stride)
{
    size_t hits = 0;
    for (size_t v = 0; v < (size_t)N * NTR; v++)
        for (size_t j = 0; j < NWINDOW; j += stride)
            hits += find_bytes(buf, len, w->bytes + v * DIM * 4 + 4 * j, WIN * 4) != NULL;
    return hits;
}

static void check_windows(const char *what, const rec *r, const uint32_t *q)
{
    win_index w = {0};
    if (index_build(&w, q)) {
        CHECK(0, "%s: out of memory for the window index", what);
        index_free(&w);
        return;
    }
    uint32_t id = 0;
    size_t at = 0, hits = index_scan(&w, r->p, r->len, &id, &at);
    CHECK(hits == 0,
          "%s: %zu windows of the inputs in the recording; first: client %u, %s, start %u, byte %zu", what,
          hits, id / DIM / NTR, tr_name[id / DIM % NTR], id % DIM, at);
    CHECK(memmem_scan(&w, r->p, r->len, 61) == 0, "%s: memmem finds a window of the inputs", what);
    /* positive control: plant 2 q_3[100 .. 107] at an odd offset of a copy */
    uint8_t *copy = malloc(r->len + 64);
    if (copy) {
        memcpy(copy, r->p, r->len);
        memset(copy + r->len, 0xA5, 64);
        const uint8_t *planted = w.bytes + ((size_t)3 * NTR + 1) * DIM * 4 + 100 * 4;
        memcpy(copy + r->len + 7, planted, WIN * 4);
        hits = index_scan(&w, copy, r->len + 64, &id, &at);
        CHECK(hits >= 1 && at == r->len + 7, "%s: planted window: %zu hits, the first at %zu", what, hits,
              at);
        CHECK(find_bytes(copy, r->len + 64, planted, WIN * 4) == copy + r->len + 7,
              "%s: memmem planted window", what);
        free(copy);
    }
    TEST_NOTE("%s: %zu bytes recorded in %d messages, %d windows x %d transforms x %d clients searched", what,
              r->len, r->nmsg, NWINDOW, NTR, N);
    index_free(&w);
}

/* ---- b. statistics of the masked inputs ---- */

static double pearson(const uint32_t *a, const uint32_t *b, size_t n)
{
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t k = 0; k < n; k++) {
        ma += a[k];
        mb += b[k];
    }
    ma /= (double)n;
    mb /= (double)n;
    for (size_t k = 0; k < n; k++) {
        double x = a[k] - ma, y = b[k] - mb;
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0.0;
}

/* Mean within 5 sigma of 2^31 and chi-square of the top 4 bits below the
 * Wilson-Hilferty bound at z = 5 (15 degrees of freedom). */
static void check_uniform(const uint32_t *v, size_t n, const char *what, uint32_t who)
{
    double mean = 0, cnt[16] = {0}, chi = 0, e = (double)n / 16;
    for (size_t k = 0; k < n; k++) {
        mean += v[k];
        cnt[v[k] >> 28]++;
    }
    mean /= (double)n;
    double sigma = 4294967296.0 / sqrt(12.0 * (double)n);
    CHECK(fabs(mean - 2147483648.0) < 5 * sigma, "%s of client %u: mean %.4g is %.1f sigma from 2^31", what,
          who, mean, (mean - 2147483648.0) / sigma);
    for (int b = 0; b < 16; b++) chi += (cnt[b] - e) * (cnt[b] - e) / e;
    double c = 2.0 / (9.0 * 15), r = 1.0 - c + 5 * sqrt(c), bound = 15 * r * r * r;
    CHECK(chi < bound, "%s of client %u: chi2 of the top 4 bits %.1f >= %.1f", what, who, chi, bound);
}

static void check_masked(const char *what, const rec *r, const uint32_t *q, const int *drop)
{
    uint32_t *y = malloc((size_t)N * DIM * 4), *m = malloc(DIM * 4);
    int seen[N] = {0}, nmasked = 0;
    double worst = 0, worst_pair = 0;
    if (!y || !m) {
        CHECK(0, "%s: out of memory", what);
        free(y);
        free(m);
        return;
    }
    for (int e = 0; e < r->nmsg && e < MAXMSG; e++) {
        const uint8_t *msg = r->p + r->off[e];
        if (msg[4] != FEDC__SA_MSG_MASKED) continue;
        uint32_t from = get32(msg + 16);
        uint64_t dim = get64(msg + FEDC__SA_HEADER_BYTES);
        CHECK(from < N && dim == DIM && r->mlen[e] == FEDC__SA_HEADER_BYTES + 8 + 4 * DIM,
              "%s: MASKED message from %u has dim %llu, %zu bytes", what, from, (unsigned long long)dim,
              r->mlen[e]);
        if (from >= N || dim != DIM || r->mlen[e] != FEDC__SA_HEADER_BYTES + 8 + 4 * DIM) continue;
        CHECK(!seen[from], "%s: two MASKED messages from %u", what, from);
        seen[from] = 1;
        nmasked++;
        uint32_t *yi = y + (size_t)from * DIM;
        const uint32_t *qi = q + (size_t)from * DIM;
        for (size_t k = 0; k < DIM; k++) yi[k] = get32(msg + FEDC__SA_HEADER_BYTES + 8 + 4 * k);
        for (size_t k = 0; k < DIM; k++) m[k] = yi[k] - qi[k];
        double cy = pearson(yi, qi, DIM), cm = pearson(m, qi, DIM);
        CHECK(fabs(cy) < 0.1, "%s: corr(y_%u, q_%u) = %.4f", what, from, from, cy);
        CHECK(fabs(cm) < 0.1, "%s: corr(y_%u - q_%u, q_%u) = %.4f", what, from, from, from, cm);
        if (fabs(cy) > worst) worst = fabs(cy);
        check_uniform(yi, DIM, "masked input", from);
        check_uniform(m, DIM, "mask y - q", from);
    }
    for (uint32_t i = 0; i < N; i++) {
        int want = drop[i] == LIVE || drop[i] == DROP_MASKED;
        CHECK(seen[i] == want, "%s: client %u: MASKED %s", what, i, seen[i] ? "received" : "missing");
        for (uint32_t j = 0; j < i; j++) {
            if (!seen[i] || !seen[j]) continue;
            double cij = pearson(y + (size_t)i * DIM, y + (size_t)j * DIM, DIM);
            CHECK(fabs(cij) < 0.1, "%s: corr(y_%u, y_%u) = %.4f", what, i, j, cij);
            if (fabs(cij) > worst_pair) worst_pair = fabs(cij);
        }
    }
    TEST_NOTE("%s: %d masked inputs, max |corr(y_i, q_i)| = %.4f, max |corr(y_i, y_j)| = %.4f", what, nmasked,
              worst, worst_pair);
    free(y);
    free(m);
}

/* ---- c. the share counters ---- */

static void check_counts(const char *what, const fedc__sa_server *s, const fedc__sa_config *cfg,
                         const int *drop)
{
    uint8_t adj[N * N];
    fedc__sa_neighbours(cfg, adj, NULL, 0);
    for (uint32_t j = 0; j < N; j++) {
        uint32_t nb, ns, live = 0;
        fedc__sa_server_share_counts(s, j, &nb, &ns);
        for (uint32_t h = 0; h < N; h++) live += adj[j * N + h] && drop[h] == LIVE;
        CHECK(!(nb >= cfg->t && ns >= cfg->t), "%s: client %u: %u b shares and %u s_sk shares, t = %u", what,
              j, nb, ns, cfg->t);
        if (drop[j] == DROP_ADV)
            CHECK(nb == 0 && ns == 0, "%s: early dropout %u: %u b, %u s_sk shares", what, j, nb, ns);
        else if (drop[j] == DROP_SHARE)
            CHECK(nb == 0 && ns == live && ns >= cfg->t,
                  "%s: dropped client %u: %u b, %u s_sk shares (want 0, %u)", what, j, nb, ns, live);
        else
            CHECK(ns == 0 && nb == live && nb >= cfg->t, "%s: survivor %u: %u b, %u s_sk shares (want %u, 0)",
                  what, j, nb, ns, live);
    }
}

/* ---- one round, all checks ---- */

static void view_round(const char *what, const fedc__sa_config *cfg, const int *drop, const uint32_t *q)
{
    rec r = {0};
    fedc__sa_server *s = NULL;
    uint32_t *sum = calloc(DIM, 4), *plain = calloc(DIM, 4), surv = 0, want_surv = 0;
    if (!sum || !plain) {
        CHECK(0, "%s: out of memory", what);
        free(sum);
        free(plain);
        return;
    }
    for (uint32_t i = 0; i < N; i++) {
        if (drop[i] != LIVE && drop[i] != DROP_MASKED) continue;
        want_surv++;
        for (size_t k = 0; k < DIM; k++) plain[k] += q[(size_t)i * DIM + k];
    }
    int rc = play_round(cfg, drop, q, &r, &s, sum, &surv);
    CHECK(r.nmsg <= MAXMSG, "%s: %d messages recorded", what, r.nmsg);
    if (!rc) {
        check_windows(what, &r, q);
        check_masked(what, &r, q, drop);
        check_counts(what, s, cfg, drop);
        CHECK(surv == want_surv, "%s: %u survivors, want %u", what, surv, want_surv);
        size_t diff = 0;
        for (size_t k = 0; k < DIM; k++) diff += sum[k] != plain[k];
        CHECK(diff == 0, "%s: the sum differs from the plain sum of U3 in %zu of %d values", what, diff, DIM);
    }
    fedc__sa_server_destroy(s);
    free(r.p);
    free(sum);
    free(plain);
}

static void test_views(void)
{
    uint32_t *q = malloc((size_t)N * DIM * 4);
    float *x = malloc(DIM * sizeof *x);
    char err[FEDC_ERRMSG_MAX];
    if (!q || !x) {
        CHECK(0, "out of memory");
        free(q);
        free(x);
        return;
    }
    CHECK_STATUS(fedc__secagg_check_params(1.0, BITS, N, err, sizeof err), FEDC_OK, err);

    /* round 1: complete graph, structured inputs, everyone stays */
    fedc__sa_config c1 = {.round = 41, .n = N, .k = N - 1, .t = (N - 1) / 2 + 1, .dim = DIM};
    int none[N] = {0};
    for (uint32_t i = 0; i < N; i++)
        for (uint32_t j = 0; j < DIM; j++) q[(size_t)i * DIM + j] = (i + 1) * 1000 + j;
    view_round("round 1 (complete graph)", &c1, none, q);

    /* K = 4, t = 3: no graph survives one dropout at each of the three stages */
    fedc__sa_config c4 = {.round = 42, .n = N, .k = 4, .t = 3, .dim = DIM};
    int possible = 0;
    for (int seed = 0; seed < 4; seed++) {
        c4.graph_seed[0] = (uint8_t)seed;
        for (uint32_t a = 0; a < N; a++)
            for (uint32_t b = 0; b < N; b++)
                for (uint32_t d = 0; d < N; d++) {
                    if (a == b || a == d || b == d) continue;
                    int drop[N] = {0};
                    drop[a] = DROP_ADV;
                    drop[b] = DROP_SHARE;
                    drop[d] = DROP_MASKED;
                    possible += feasible(&c4, drop);
                }
    }
    CHECK(possible == 0, "K = 4, t = 3: %d feasible placements of the three dropouts", possible);

    /* round 2: SecAgg+ graph K = 6, t = 4, quantised inputs, three dropouts */
    fedc__sa_config c2 = {.round = 42, .n = N, .k = 6, .t = 4, .dim = DIM};
    int drop[N] = {0};
    drop[2] = DROP_ADV;
    drop[5] = DROP_SHARE;
    drop[8] = DROP_MASKED;
    int seed = 0;
    for (; seed < 256; seed++) {
        c2.graph_seed[0] = (uint8_t)seed;
        if (feasible(&c2, drop)) break;
    }
    CHECK(seed < 256, "no graph seed for which round 2 can complete");
    for (uint32_t i = 0; i < N; i++) {
        double f = 0.01 * (i + 1), a = 0.3 + 0.05 * i;
        for (size_t j = 0; j < DIM; j++)
            x[j] = (float)(a * sin(f * (double)j) + 0.2 * fedc_rng_normal(&trng));
        fedc__secagg_quantize(x, DIM, 1.0, BITS, q + (size_t)i * DIM);
    }
    if (seed < 256) view_round("round 2 (SecAgg+, 3 dropouts)", &c2, drop, q);
    free(q);
    free(x);
}

/* ---- a split view: a malicious server asks for both secrets of client 0 ---- */

static void test_split_view(void)
{
    enum { SN = 6, ST = 3 };
    fedc__sa_config cfg = {.round = 77, .n = SN, .k = SN - 1, .t = ST, .dim = DIM};
    char err[FEDC_ERRMSG_MAX] = "";
    fedc__sa_server *s = NULL;
    fedc__sa_client *c[SN] = {0};
    uint32_t *q = malloc((size_t)SN * DIM * 4), *y0 = malloc(DIM * 4), *g = malloc(DIM * 4);
    uint8_t spk[SN][FEDC_SECAGG_KEY_BYTES];
    uint8_t *in, *out;
    size_t inlen, outlen;
    int rc = q && y0 && g ? FEDC_OK : FEDC_ERR_NOMEM;
    if (!rc) rc = fedc__sa_server_create(&cfg, &s, err, sizeof err);
    for (uint32_t i = 0; !rc && i < SN; i++) rc = fedc__sa_client_create(&cfg, i, &c[i], err, sizeof err);
    for (size_t k = 0; !rc && k < (size_t)SN * DIM; k++)
        q[k] = (uint32_t)(k % DIM) * 7 + 1000u * (uint32_t)(k / DIM);
    for (uint32_t i = 0; !rc && i < SN; i++) {
        rc = fedc__sa_client_advertise(c[i], &out, &outlen, err, sizeof err);
        if (!rc) {
            memcpy(spk[i], out + FEDC__SA_HEADER_BYTES + FEDC_SECAGG_KEY_BYTES, FEDC_SECAGG_KEY_BYTES);
            rc = fedc__sa_server_recv(s, out, outlen, err, sizeof err);
            free(out);
        }
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    for (uint32_t i = 0; !rc && i < SN; i++) {
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (!rc) {
            rc = fedc__sa_client_share_keys(c[i], in, inlen, &out, &outlen, err, sizeof err);
            free(in);
        }
        if (!rc) {
            rc = fedc__sa_server_recv(s, out, outlen, err, sizeof err);
            free(out);
        }
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    for (uint32_t i = 0; !rc && i < SN; i++) {
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (!rc) {
            rc = fedc__sa_client_masked_input(c[i], in, inlen, q + (size_t)i * DIM, DIM, &out, &outlen, err,
                                              sizeof err);
            free(in);
        }
        if (!rc && i == 0)
            for (size_t k = 0; k < DIM; k++) y0[k] = get32(out + FEDC__SA_HEADER_BYTES + 8 + 4 * k);
        if (!rc) {
            rc = fedc__sa_server_recv(s, out, outlen, err, sizeof err);
            free(out);
        }
    }
    if (!rc) rc = fedc__sa_server_advance(s, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    /* the honest request (U3 = everyone, D empty) to 1 and 2; to 3, 4, 5 a
     * forged one, U3 = 1..5 and D = {0}: each client alone sees a consistent
     * request and answers */
    uint8_t bsh[SN][FEDC_SECAGG_KEY_BYTES], ssh[SN][FEDC_SECAGG_KEY_BYTES], bx[SN], sx[SN];
    unsigned nb = 0, ns = 0, both = 0;
    unsigned cnt_b[SN] = {0}, cnt_s[SN] = {0};
    for (uint32_t i = 1; !rc && i < SN; i++) {
        rc = fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err);
        if (rc) break;
        if (i >= 3) { /* header, n3 = 6, 0..5, nd = 0  ->  n3 = 5, 1..5, nd = 1, 0 */
            put32(in + FEDC__SA_HEADER_BYTES, SN - 1);
            for (uint32_t j = 1; j < SN; j++) put32(in + FEDC__SA_HEADER_BYTES + 4 * j, j);
            put32(in + FEDC__SA_HEADER_BYTES + 4 * SN, 1);
            put32(in + FEDC__SA_HEADER_BYTES + 4 * SN + 4, 0);
        }
        rc = fedc__sa_client_unmask(c[i], in, inlen, &out, &outlen, err, sizeof err);
        free(in);
        CHECK_STATUS(rc, FEDC_OK, i >= 3 ? "a forged but consistent request is answered" : err);
        if (rc) break;
        uint32_t count = get32(out + FEDC__SA_HEADER_BYTES);
        for (uint32_t e = 0; e < count; e++) {
            const uint8_t *ent = out + FEDC__SA_HEADER_BYTES + 4 + (size_t)e * (5 + FEDC_SECAGG_KEY_BYTES);
            uint32_t owner = get32(ent);
            if (owner >= SN) continue;
            if (ent[4] == FEDC__SA_SHARE_B) cnt_b[owner]++;
            if (ent[4] == FEDC__SA_SHARE_S) cnt_s[owner]++;
            if (owner != 0) continue;
            if (ent[4] == FEDC__SA_SHARE_B) {
                memcpy(bsh[nb], ent + 5, FEDC_SECAGG_KEY_BYTES);
                bx[nb++] = (uint8_t)(i + 1);
            } else {
                memcpy(ssh[ns], ent + 5, FEDC_SECAGG_KEY_BYTES);
                sx[ns++] = (uint8_t)(i + 1);
            }
        }
        free(out);
    }
    for (uint32_t j = 0; j < SN; j++) both += cnt_b[j] >= ST && cnt_s[j] >= ST;
    CHECK(!rc && nb == 2 && ns == 3, "split view: %u b and %u s_sk shares of client 0", nb, ns);
    CHECK(both == 0, "split view: t shares of both secrets of %u clients", both);
    if (!rc && nb == 2 && ns == 3) {
        /* the attacker gets s_sk_0 (3 = t shares) and strips the pairwise masks */
        uint8_t ssk[FEDC_SECAGG_KEY_BYTES], pk[FEDC_SECAGG_KEY_BYTES], b[FEDC_SECAGG_KEY_BYTES];
        CHECK_STATUS(fedc__shamir_combine(&ssh[0][0], sx, ns, FEDC_SECAGG_KEY_BYTES, ssk, err, sizeof err),
                     FEDC_OK, err);
        crypto_scalarmult_base(pk, ssk);
        CHECK(memcmp(pk, spk[0], sizeof pk) == 0, "split view: the attacker's s_sk_0 does not match s_pk_0");
        memcpy(g, y0, DIM * 4);
        for (uint32_t k = 1; k < SN; k++) {
            uint8_t pair[FEDC_SECAGG_KEY_BYTES];
            CHECK_STATUS(fedc__secagg_agree(ssk, spk[k], spk[0], pair, err, sizeof err), FEDC_OK, err);
            fedc__secagg_apply_mask(g, DIM, pair, cfg.round, -fedc__secagg_pair_sign(0, k));
        }
        /* g = q_0 + PRG(b_0): still uniform and unrelated to q_0 */
        double cg = pearson(g, q, DIM);
        CHECK(fabs(cg) < 0.1, "split view: corr(q_0 + PRG(b_0), q_0) = %.4f", cg);
        check_uniform(g, DIM, "split view: q + PRG(b)", 0);
        /* with t - 1 shares of b_0, combine gives an unrelated seed */
        CHECK_STATUS(fedc__shamir_combine(&bsh[0][0], bx, nb, FEDC_SECAGG_KEY_BYTES, b, err, sizeof err),
                     FEDC_OK, err);
        fedc__secagg_apply_mask(g, DIM, b, cfg.round, -1);
        size_t same = 0;
        for (size_t k = 0; k < DIM; k++) same += g[k] == q[k];
        CHECK(same < 4, "split view: %zu values of q_0 recovered from t - 1 shares of b_0", same);
        TEST_NOTE(
            "split view: s_sk_0 rebuilt from 3 shares, corr(q_0 + PRG(b_0), q_0) = %.4f, %zu of %d values "
            "recovered with 2 < t shares of b_0",
            cg, same, DIM);
        sodium_memzero(ssk, sizeof ssk);
    }
    fedc__sa_server_destroy(s);
    for (uint32_t i = 0; i < SN; i++) fedc__sa_client_destroy(c[i]);
    free(q);
    free(y0);
    free(g);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0) return EXIT_FAILURE;
    fedc_rng_seed(&trng, 0x5EC4A6ull);
    test_views();
    test_split_view();
    return test_summary();
}
