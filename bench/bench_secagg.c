/*
 * bench_secagg: what secure aggregation (src/secagg/) costs, on one core,
 * with fixed synthetic updates (no training, no network).
 *
 * 1. Mask expansion. A buffer of --buf-mib MiB (default 64) is filled,
 *    again and again for at least 0.5 s of this thread's CPU time (best of
 *    3 such trials, after one untimed pass), by:
 *      expand        fedc__secagg_expand: the AES-128-CTR keystream (key
 *                    BLAKE2b-128 of the seed, src/secagg/masking.h) as
 *                    uint32, what every mask is;
 *      apply_mask    fedc__secagg_apply_mask: the same keystream, 16 KiB at
 *                    a time, added to the buffer mod 2^32 (what the clients
 *                    and the server actually call);
 *      aes128ctr     OpenSSL EVP AES-128-CTR over the buffer in place (the
 *                    buffer starts zeroed: the first pass is the keystream
 *                    itself, later passes cost the same): the raw cipher
 *                    that expand wraps, its upper bound;
 *      chacha20      libsodium crypto_stream_chacha20_ietf, and
 *      xchacha20     libsodium crypto_stream_xchacha20 (the masks' previous
 *                    generator), for reference.
 *    Reported in GB/s (10^9 bytes per CPU second) with expand / aes128ctr
 *    (the target is >= 0.7) and whether the CPU has AES-NI (the "aes" flag
 *    of /proc/cpuinfo) and AVX2 (libsodium's fast ChaCha20).
 *
 * 2. One round, SecAgg(+) against plain FedAvg, for each number of clients
 *    n (--clients, default 10,100), each graph (--neighbours, default 0,32:
 *    0 is the complete graph, K = n - 1, SecAgg; an even K < n - 1 is
 *    SecAgg+'s sparse graph and is skipped when K >= n - 1) and each
 *    dropout fraction f (--dropout, default 0,0.1,0.3). Threshold t =
 *    floor(K / 2) + 1. A model of D = --dim floats (default 1,048,576,
 *    4 MiB), one fixed update per client drawn from N(0, 0.05) with a fixed
 *    seed, quantised with range 1 and the most bits for which n values
 *    cannot wrap the sum mod 2^32.
 *    round(f * n) clients, picked with a fixed seed (redrawn when SecAgg+'s
 *    graph would leave a secret with fewer than t holders), drop after
 *    sharing keys and before sending their masked input: the costly case
 *    for the server, which must then reconstruct each dropped client's mask
 *    key and remove its pairwise masks with every surviving neighbour. (A
 *    client dropping after its masked input arrived costs the server no
 *    more than a survivor.) The dropped clients do not answer the unmask
 *    request either.
 *    The server object and the n client objects of src/secagg/protocol.h
 *    run the four stages in memory in this one thread, one call at a time;
 *    each call is timed with CLOCK_THREAD_CPUTIME_ID and charged to its
 *    party:
 *      server  create, recv of every message, advance, message_for (also
 *              SHARES_FWD for the clients that then drop), finish, and the
 *              dequantisation of the sum into a float mean;
 *      client  create (its key pairs), advertise, share_keys, quantize of
 *              its update plus masked_input, unmask.
 *    The round's cost is the server's time plus the slowest client's
 *    (clients run in parallel in a real round; the network is left out).
 *    The plain round, for the same survivors: the server resets the FedAvg
 *    accumulator (src/strategy/fedavg.h; allocated and touched beforehand,
 *    as a server keeps it from round to round), checks and folds each survivor's
 *    float update (fedc__fedavg_check_weight, check_fold, commit, as the
 *    server does) and finalizes the mean; a client's cost is a memcpy of
 *    its update into a buffer already in memory, an honest lower bound of
 *    encoding it (the real client serialises it too). Reported: both, and
 *    secagg / plain. The secagg sum is checked against the plain sum of the
 *    survivors' quantised vectors, so a wrong round fails the benchmark.
 *
 *   bench_secagg [--dim D] [--clients N[,N...]] [--dropout F[,F...]]
 *                [--neighbours K[,K...]] [--buf-mib M] [--no-prg]
 *                [--no-rounds] [--quick] [--json]
 *
 * --quick: D = 4096, clients 10,20, neighbours 0,8, dropout 0,0.3, a 1 MiB
 * buffer and 0.05 s trials (a smoke run of a second or two); later options
 * override it. --json prints one JSON object per line: one for the mask
 * expansion, one per round, then a summary (the last line).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "fedc/core.h"
#include "fedc/tensor.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"
#include "strategy/fedavg.h"

#define MAX_LIST 16

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether /proc/cpuinfo's flags (x86) or Features (arm) list `flag`; -1: unknown. */
static int cpu_flag(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    static char line[8192];
    int found = -1;
    size_t fl = strlen(flag);
    while (found < 0 && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) && strncmp(line, "Features", 8)) continue;
        found = 0;
        char *colon = strchr(line, ':');
        for (char *p = colon ? colon + 1 : line; *p;) {
            while (*p == ' ' || *p == '\t') p++;
            size_t w = strcspn(p, " \t\n");
            if (w == fl && !strncmp(p, flag, fl)) found = 1;
            p += w;
            if (*p == '\n') break;
        }
    }
    fclose(f);
    return found;
}

/* ---------------- 1. mask expansion ---------------- */

enum { PRG_EXPAND, PRG_APPLY, PRG_AES, PRG_CHACHA, PRG_XCHACHA, NPRG };
static const char *const prg_names[NPRG] = {"expand", "apply_mask", "aes128ctr", "chacha20", "xchacha20"};

typedef struct prg_ctx {
    uint32_t *buf;
    size_t words;
    uint8_t key[32];
    uint8_t nonce[24];
    EVP_CIPHER_CTX *aes;
} prg_ctx;

/* One pass of generator g over the buffer; 0 on success. */
static int prg_pass(prg_ctx *c, int g)
{
    size_t bytes = c->words * 4;
    switch (g) {
    case PRG_EXPAND: return fedc__secagg_expand(c->key, 1, c->buf, c->words) ? 1 : 0;
    case PRG_APPLY: return fedc__secagg_apply_mask(c->buf, c->words, c->key, 1, 1) ? 1 : 0;
    case PRG_CHACHA:
        return crypto_stream_chacha20_ietf((unsigned char *)c->buf, bytes, c->nonce, c->key) ? 1 : 0;
    case PRG_XCHACHA:
        return crypto_stream_xchacha20((unsigned char *)c->buf, bytes, c->nonce, c->key) ? 1 : 0;
    case PRG_AES:
        if (!c->aes) return 1;
        for (size_t at = 0; at < bytes;) {
            size_t m = bytes - at < (1u << 30) ? bytes - at : (1u << 30);
            int outl = 0;
            unsigned char *p = (unsigned char *)c->buf + at;
            if (EVP_EncryptUpdate(c->aes, p, &outl, p, (int)m) != 1 || (size_t)outl != m) return 1;
            at += m;
        }
        return 0;
    }
    return 1;
}

/* GB/s of generator g: best of 3 trials of at least min_s CPU seconds; -1 if unavailable. */
static double prg_gbps(prg_ctx *c, int g, double min_s, double *check)
{
    memset(c->buf, 0, c->words * 4);
    if (prg_pass(c, g)) return -1; /* untimed: pages and caches warm */
    double best = -1;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = cpu_s(), t = 0;
        long passes = 0;
        do {
            if (prg_pass(c, g)) return -1;
            passes++;
            t = cpu_s() - t0;
        } while (t < min_s);
        double gbps = (double)passes * (double)c->words * 4 / t / 1e9;
        if (gbps > best) best = gbps;
    }
    for (size_t i = 0; i < c->words; i += 4093) *check += c->buf[i];
    return best;
}

typedef struct prg_result {
    double gbps[NPRG];
    int aes_ni, avx2;
    double mib;
} prg_result;

static int run_prg(double mib, double min_s, prg_result *r, double *check)
{
    prg_ctx c;
    memset(&c, 0, sizeof c);
    memset(r, 0, sizeof *r);
    r->mib = mib;
    c.words = (size_t)(mib * 1048576.0 / 4);
    if (c.words < 16) c.words = 16;
    c.buf = malloc(c.words * 4);
    if (!c.buf) {
        fprintf(stderr, "bench_secagg: out of memory for the %.0f MiB buffer\n", mib);
        return 1;
    }
    for (size_t i = 0; i < sizeof c.key; i++) c.key[i] = (uint8_t)(7 * i + 1);
    for (size_t i = 0; i < sizeof c.nonce; i++) c.nonce[i] = (uint8_t)(3 * i + 5);
    static const unsigned char iv[16] = {0};
    c.aes = EVP_CIPHER_CTX_new();
    if (!c.aes || EVP_EncryptInit_ex(c.aes, EVP_aes_128_ctr(), NULL, c.key, iv) != 1) {
        EVP_CIPHER_CTX_free(c.aes);
        c.aes = NULL;
    }
    int failed = 0;
    for (int g = 0; g < NPRG; g++) {
        r->gbps[g] = prg_gbps(&c, g, min_s, check);
        if (r->gbps[g] < 0) failed = 1;
    }
    EVP_CIPHER_CTX_free(c.aes);
    free(c.buf);
    r->aes_ni = cpu_flag("aes");
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (r->aes_ni < 0) r->aes_ni = __builtin_cpu_supports("aes") ? 1 : 0;
#endif
    r->avx2 = sodium_runtime_has_avx2();
    return failed;
}

/* ---------------- 2. one round ---------------- */

typedef struct round_result {
    uint32_t n, k, t, dropped, survivors;
    unsigned bits;
    double server_s;      /* every server call, dequantisation included */
    double finish_s;      /* of which finish + dequantisation */
    double client_max_s;  /* the slowest client, all its calls */
    double client_mask_s; /* of which quantize + masked_input */
    double plain_server_s, plain_client_s;
    double checksum;
} round_result;

typedef struct bench_round {
    const fedc__sa_config *cfg;
    fedc__sa_server *s;
    fedc__sa_client **c;
    double *tc, ts;
    char err[FEDC_ERRMSG_MAX];
} bench_round;

#define TIME_INTO(acc, call)                                                                                 \
    do {                                                                                                     \
        double t0_ = cpu_s();                                                                                \
        rc = (call);                                                                                         \
        (acc) += cpu_s() - t0_;                                                                              \
    } while (0)

/* Picks `dropped` clients (drop[i] = 1) with a seeded shuffle such that
 * the round can complete: every secret the server needs has t holders
 * among the survivors. 0 when no draw of 200 works. */
static int pick_dropouts(const fedc__sa_config *cfg, uint32_t dropped, uint8_t *drop, uint8_t *adj)
{
    uint32_t n = cfg->n;
    uint32_t *perm = malloc(n * sizeof *perm);
    if (!perm || fedc__sa_neighbours(cfg, adj, NULL, 0)) {
        free(perm);
        return 0;
    }
    for (uint64_t seed = 1; seed <= 200; seed++) {
        fedc_rng rng;
        fedc_rng_seed(&rng, 1000 + seed);
        for (uint32_t i = 0; i < n; i++) perm[i] = i;
        fedc_rng_shuffle_u32(&rng, perm, n);
        memset(drop, 0, n);
        for (uint32_t i = 0; i < dropped; i++) drop[perm[i]] = 1;
        int ok = n - dropped >= cfg->t;
        for (uint32_t j = 0; ok && j < n; j++) {
            uint32_t holders = 0;
            for (uint32_t h = 0; h < n; h++) holders += adj[(size_t)j * n + h] && !drop[h];
            ok = holders >= cfg->t;
        }
        if (ok) {
            free(perm);
            return 1;
        }
    }
    free(perm);
    return 0;
}

/* The message the server has for client i, then the client's answer to it
 * through `step`, then the server takes the answer. */
static int run_secagg(bench_round *b, const float *updates, const uint8_t *drop, double range, unsigned bits,
                      uint32_t *q, uint32_t *expect, uint32_t *sum, float *mean, round_result *r)
{
    const fedc__sa_config *cfg = b->cfg;
    uint32_t n = cfg->n;
    size_t dim = (size_t)cfg->dim;
    char *err = b->err;
    size_t errlen = sizeof b->err;
    int rc;
    uint8_t *in = NULL, *out = NULL;
    size_t inlen = 0, outlen = 0;
    double *tmask = calloc(n, sizeof *tmask);
    if (!tmask) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    memset(expect, 0, dim * 4);

    TIME_INTO(b->ts, fedc__sa_server_create(cfg, &b->s, err, errlen));
    for (uint32_t i = 0; !rc && i < n; i++)
        TIME_INTO(b->tc[i], fedc__sa_client_create(cfg, i, &b->c[i], err, errlen));
    /* 1. advertise */
    for (uint32_t i = 0; !rc && i < n; i++) {
        TIME_INTO(b->tc[i], fedc__sa_client_advertise(b->c[i], &out, &outlen, err, errlen));
        if (!rc) TIME_INTO(b->ts, fedc__sa_server_recv(b->s, out, outlen, err, errlen));
        free(out);
        out = NULL;
    }
    if (!rc) TIME_INTO(b->ts, fedc__sa_server_advance(b->s, err, errlen));
    /* 2. share keys: everyone */
    for (uint32_t i = 0; !rc && i < n; i++) {
        TIME_INTO(b->ts, fedc__sa_server_message_for(b->s, i, &in, &inlen, err, errlen));
        if (!rc)
            TIME_INTO(b->tc[i], fedc__sa_client_share_keys(b->c[i], in, inlen, &out, &outlen, err, errlen));
        if (!rc) TIME_INTO(b->ts, fedc__sa_server_recv(b->s, out, outlen, err, errlen));
        free(in);
        free(out);
        in = out = NULL;
    }
    if (!rc) TIME_INTO(b->ts, fedc__sa_server_advance(b->s, err, errlen));
    /* 3. masked input: the server sends SHARES_FWD to all of U2; the
     * dropped clients never answer. */
    for (uint32_t i = 0; !rc && i < n; i++) {
        TIME_INTO(b->ts, fedc__sa_server_message_for(b->s, i, &in, &inlen, err, errlen));
        if (!rc && !drop[i]) {
            double t0 = cpu_s();
            fedc__secagg_quantize(updates + (size_t)i * dim, dim, range, bits, q);
            rc = fedc__sa_client_masked_input(b->c[i], in, inlen, q, dim, &out, &outlen, err, errlen);
            tmask[i] = cpu_s() - t0;
            b->tc[i] += tmask[i];
            for (size_t k = 0; k < dim; k++) expect[k] += q[k]; /* untimed: the check */
            if (!rc) TIME_INTO(b->ts, fedc__sa_server_recv(b->s, out, outlen, err, errlen));
        }
        free(in);
        free(out);
        in = out = NULL;
    }
    if (!rc) TIME_INTO(b->ts, fedc__sa_server_advance(b->s, err, errlen));
    /* 4. unmask: the survivors answer */
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (drop[i]) continue;
        TIME_INTO(b->ts, fedc__sa_server_message_for(b->s, i, &in, &inlen, err, errlen));
        if (!rc) TIME_INTO(b->tc[i], fedc__sa_client_unmask(b->c[i], in, inlen, &out, &outlen, err, errlen));
        if (!rc) TIME_INTO(b->ts, fedc__sa_server_recv(b->s, out, outlen, err, errlen));
        free(in);
        free(out);
        in = out = NULL;
    }
    uint32_t surv = 0;
    if (!rc) {
        double t0 = cpu_s();
        rc = fedc__sa_server_finish(b->s, sum, dim, &surv, err, errlen);
        if (!rc) fedc__secagg_dequantize_sum(sum, dim, surv, range, bits, mean);
        r->finish_s = cpu_s() - t0;
        b->ts += r->finish_s;
    }
    if (!rc && memcmp(sum, expect, dim * 4))
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the secure sum differs from the plain sum");
    if (!rc && surv != n - r->dropped)
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%u survivors, expected %u", surv, n - r->dropped);
    if (!rc) {
        r->server_s = b->ts;
        for (uint32_t i = 0; i < n; i++)
            if (b->tc[i] > r->client_max_s) {
                r->client_max_s = b->tc[i];
                r->client_mask_s = tmask[i];
            }
        r->survivors = surv;
        for (size_t k = 0; k < dim; k++) r->checksum += mean[k];
    }
    free(tmask);
    return rc;
}

/* The plain round over the same survivors: FedAvg's fold and mean, and a
 * memcpy per client. */
static int run_plain(const fedc_params *layout, const float *updates, const uint8_t *drop, uint32_t n,
                     size_t dim, fedc_params *meanp, float *wire, round_result *r, char *err, size_t errlen)
{
    fedc__fedavg agg;
    int rc = fedc__fedavg_init(&agg, layout, n, err, errlen);
    if (rc) return rc;
    /* The server keeps its accumulator from round to round: a first,
     * untimed reset pays for its pages. */
    fedc__fedavg_reset(&agg, n);
    double t0 = cpu_s();
    fedc__fedavg_reset(&agg, n);
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (drop[i]) continue;
        rc = fedc__fedavg_check_weight(&agg, 1, err, errlen);
        if (!rc) rc = fedc__fedavg_check_fold(&agg, 0, 0, updates + (size_t)i * dim, dim, 1, err, errlen);
        if (!rc) fedc__fedavg_commit(&agg, 1);
    }
    if (!rc) rc = fedc__fedavg_finalize(&agg, meanp, err, errlen);
    r->plain_server_s = cpu_s() - t0;
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (drop[i]) continue;
        double t1 = cpu_s();
        memcpy(wire, updates + (size_t)i * dim, dim * 4);
        double t = cpu_s() - t1;
        if (t > r->plain_client_s) r->plain_client_s = t;
        r->checksum += wire[i % dim];
    }
    fedc__fedavg_free(&agg);
    return rc;
}

static int run_round(uint32_t n, uint32_t kreq, double frac, size_t dim, const float *updates,
                     const fedc_params *layout, round_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    fedc__sa_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.round = 1;
    cfg.n = n;
    cfg.k = kreq ? kreq : n - 1;
    cfg.t = cfg.k / 2 + 1;
    cfg.dim = dim;
    for (size_t i = 0; i < sizeof cfg.graph_seed; i++) cfg.graph_seed[i] = (uint8_t)(11 * i + 3);
    r->n = n;
    r->k = cfg.k;
    r->t = cfg.t;
    r->dropped = (uint32_t)floor(frac * n + 0.5);
    int rc = fedc__sa_check_config(&cfg, err, errlen);
    if (rc) return rc;
    /* The most bits for which n quantised values cannot wrap. */
    unsigned bits = FEDC_SECAGG_MAX_BITS;
    while (bits > 1 && fedc__secagg_check_params(1.0, bits, n, NULL, 0)) bits--;
    r->bits = bits;

    bench_round b;
    memset(&b, 0, sizeof b);
    b.cfg = &cfg;
    uint8_t *drop = calloc(n, 1), *adj = malloc((size_t)n * n);
    b.c = calloc(n, sizeof *b.c);
    b.tc = calloc(n, sizeof *b.tc);
    uint32_t *q = malloc(dim * 4), *expect = malloc(dim * 4), *sum = malloc(dim * 4);
    float *mean = malloc(dim * 4), *wire = malloc(dim * 4);
    fedc_params *meanp = fedc_params_clone(layout);
    if (!drop || !adj || !b.c || !b.tc || !q || !expect || !sum || !mean || !wire || !meanp) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto done;
    }
    /* Touch the buffers the timed code writes into, so that neither side
     * pays for their first page faults. */
    memset(q, 0, dim * 4);
    memset(sum, 0, dim * 4);
    memset(mean, 0, dim * 4);
    memset(wire, 0, dim * 4);
    if (!pick_dropouts(&cfg, r->dropped, drop, adj)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                            "no choice of %u dropouts leaves every secret %u holders (n %u, K %u)",
                            r->dropped, cfg.t, n, cfg.k);
        goto done;
    }
    rc = run_secagg(&b, updates, drop, 1.0, bits, q, expect, sum, mean, r);
    if (rc) {
        snprintf(err, errlen, "%s", b.err);
        goto done;
    }
    rc = run_plain(layout, updates, drop, n, dim, meanp, wire, r, err, errlen);
done:
    fedc__sa_server_destroy(b.s);
    for (uint32_t i = 0; b.c && i < n; i++) fedc__sa_client_destroy(b.c[i]);
    free(b.c);
    free(b.tc);
    free(drop);
    free(adj);
    free(q);
    free(expect);
    free(sum);
    free(mean);
    free(wire);
    fedc_params_destroy(meanp);
    return rc;
}

/* ---------------- options and output ---------------- */

static void usage(void)
{
    fprintf(stderr, "usage: bench_secagg [--dim D] [--clients N[,N...]] [--dropout F[,F...]]\n"
                    "                    [--neighbours K[,K...]] [--buf-mib M] [--no-prg] [--no-rounds]\n"
                    "                    [--quick] [--json]\n");
}

/* A comma-separated list of numbers into v (at most MAX_LIST); its length, or -1. */
static int parse_list(const char *s, double *v)
{
    int n = 0;
    while (*s) {
        char *end;
        double x = strtod(s, &end);
        if (end == s || n == MAX_LIST || !(x >= 0)) return -1;
        v[n++] = x;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return n ? n : -1;
}

int main(int argc, char **argv)
{
    double dimd = 1048576, mib = 64, min_s = 0.5;
    double clients[MAX_LIST] = {10, 100}, drops[MAX_LIST] = {0, 0.1, 0.3}, nbs[MAX_LIST] = {0, 32};
    int nclients = 2, ndrops = 3, nnbs = 2, json = 0, do_prg = 1, do_rounds = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--no-prg")) {
            do_prg = 0;
        } else if (!strcmp(a, "--no-rounds")) {
            do_rounds = 0;
        } else if (!strcmp(a, "--quick")) {
            dimd = 4096, mib = 1, min_s = 0.05;
            clients[0] = 10, clients[1] = 20, nclients = 2;
            drops[0] = 0, drops[1] = 0.3, ndrops = 2;
            nbs[0] = 0, nbs[1] = 8, nnbs = 2;
        } else if (i + 1 < argc && (!strcmp(a, "--dim") || !strcmp(a, "--buf-mib"))) {
            char *end;
            double x = strtod(argv[++i], &end);
            if (*end || !(x > 0) || (!strcmp(a, "--dim") && (x != floor(x) || x > FEDC__SA_MAX_DIM))) {
                usage();
                return 2;
            }
            *(!strcmp(a, "--dim") ? &dimd : &mib) = x;
        } else if (i + 1 < argc && !strcmp(a, "--clients")) {
            if ((nclients = parse_list(argv[++i], clients)) < 0) {
                usage();
                return 2;
            }
        } else if (i + 1 < argc && !strcmp(a, "--dropout")) {
            if ((ndrops = parse_list(argv[++i], drops)) < 0) {
                usage();
                return 2;
            }
        } else if (i + 1 < argc && !strcmp(a, "--neighbours")) {
            if ((nnbs = parse_list(argv[++i], nbs)) < 0) {
                usage();
                return 2;
            }
        } else {
            usage();
            return 2;
        }
    }
    for (int i = 0; i < nclients; i++)
        if (clients[i] < 2 || clients[i] > FEDC__SA_MAX_CLIENTS || clients[i] != floor(clients[i])) {
            fprintf(stderr, "bench_secagg: --clients must be whole numbers from 2 to %d\n",
                    FEDC__SA_MAX_CLIENTS);
            return 2;
        }
    for (int i = 0; i < ndrops; i++)
        if (drops[i] >= 1) {
            fprintf(stderr, "bench_secagg: --dropout fractions must be below 1\n");
            return 2;
        }
    for (int i = 0; i < nnbs; i++)
        if (nbs[i] != floor(nbs[i]) || (nbs[i] > 0 && (nbs[i] < 2 || fmod(nbs[i], 2) != 0))) {
            fprintf(stderr, "bench_secagg: --neighbours must be 0 (complete graph) or even, >= 2\n");
            return 2;
        }
    if (sodium_init() < 0) {
        fprintf(stderr, "bench_secagg: sodium_init failed\n");
        return 1;
    }
    double check = 0;
    int failed = 0;

    prg_result pr;
    memset(&pr, 0, sizeof pr);
    const char *ssl = OpenSSL_version(OPENSSL_VERSION);
    if (do_prg) {
        failed |= run_prg(mib, min_s, &pr, &check);
        double ratio = pr.gbps[PRG_AES] > 0 ? pr.gbps[PRG_EXPAND] / pr.gbps[PRG_AES] : -1;
        if (json) {
            printf("{\"bench\": \"prg\", \"buffer_mib\": %.0f, \"aes_ni\": %s, \"avx2\": %s", mib,
                   pr.aes_ni < 0 ? "null"
                   : pr.aes_ni   ? "true"
                                 : "false",
                   pr.avx2 ? "true" : "false");
            for (int g = 0; g < NPRG; g++) {
                if (pr.gbps[g] < 0)
                    printf(", \"%s_gbps\": null", prg_names[g]);
                else
                    printf(", \"%s_gbps\": %.3f", prg_names[g], pr.gbps[g]);
            }
            if (ratio < 0)
                printf(", \"expand_over_aes\": null");
            else
                printf(", \"expand_over_aes\": %.3f", ratio);
            printf(", \"openssl\": \"%s\", \"sodium\": \"%s\"}\n", ssl, sodium_version_string());
        } else {
            printf("mask expansion into a %.0f MiB buffer, one core (AES-NI %s, AVX2 %s; %s, libsodium %s)\n",
                   mib,
                   pr.aes_ni < 0 ? "unknown"
                   : pr.aes_ni   ? "yes"
                                 : "no",
                   pr.avx2 ? "yes" : "no", ssl, sodium_version_string());
            for (int g = 0; g < NPRG; g++) {
                if (pr.gbps[g] < 0)
                    printf("  %-12s %10s\n", prg_names[g], "n/a");
                else
                    printf("  %-12s %7.2f GB/s\n", prg_names[g], pr.gbps[g]);
            }
            if (ratio >= 0)
                printf("  expand / aes128ctr = %.3f (target >= 0.7: %s)\n", ratio,
                       ratio >= 0.7 ? "met" : "MISSED");
        }
        fflush(stdout);
    }

    round_result *rr = calloc(MAX_LIST * MAX_LIST * MAX_LIST, sizeof *rr);
    int nrr = 0;
    if (do_rounds && rr) {
        size_t dim = (size_t)dimd;
        uint32_t nmax = 0;
        for (int i = 0; i < nclients; i++)
            if ((uint32_t)clients[i] > nmax) nmax = (uint32_t)clients[i];
        float *updates = malloc((size_t)nmax * dim * sizeof *updates);
        fedc_params *layout = fedc_params_create();
        const int64_t shape[1] = {(int64_t)dim};
        char err[FEDC_ERRMSG_MAX];
        if (!updates || !layout ||
            fedc_params_add(layout, "w", FEDC_F32, 1, shape, NULL, NULL, err, sizeof err)) {
            fprintf(stderr, "bench_secagg: out of memory for %u updates of %zu values\n", nmax, dim);
            free(updates);
            fedc_params_destroy(layout);
            free(rr);
            return 1;
        }
        fedc_rng rng;
        fedc_rng_seed(&rng, 42);
        for (size_t j = 0; j < (size_t)nmax * dim; j++) updates[j] = (float)(0.05 * fedc_rng_normal(&rng));
        if (!json)
            printf("\none round, %zu F32 values (%.1f MiB); dropouts leave after sharing keys, before their "
                   "masked input\n"
                   "%5s %4s %4s %5s %4s | %9s %9s %9s %9s | %9s %9s %9s | %8s\n",
                   dim, (double)dim * 4 / 1048576.0, "n", "K", "t", "drop", "bits", "server", "(finish)",
                   "client", "secagg", "p.server", "p.client", "plain", "ratio");
        for (int ci = 0; ci < nclients; ci++)
            for (int ki = 0; ki < nnbs; ki++)
                for (int di = 0; di < ndrops; di++) {
                    uint32_t n = (uint32_t)clients[ci], k = (uint32_t)nbs[ki];
                    if (k && k >= n - 1) continue; /* a sparse graph needs K < n - 1 */
                    round_result *r = &rr[nrr];
                    int rc = run_round(n, k, drops[di], dim, updates, layout, r, err, sizeof err);
                    if (rc) {
                        fprintf(stderr, "bench_secagg: n %u, K %u, dropout %.2f: %s\n", n, k ? k : n - 1,
                                drops[di], err);
                        failed = 1;
                        continue;
                    }
                    nrr++;
                    check += r->checksum;
                    double sec = r->server_s + r->client_max_s, plain = r->plain_server_s + r->plain_client_s;
                    if (json)
                        printf(
                            "{\"bench\": \"round\", \"clients\": %u, \"neighbours\": %u, \"threshold\": %u, "
                            "\"dropped\": %u, \"survivors\": %u, \"dim\": %zu, \"bits\": %u, "
                            "\"server_s\": %.6f, \"server_finish_s\": %.6f, \"client_max_s\": %.6f, "
                            "\"client_mask_s\": %.6f, \"secagg_s\": %.6f, \"plain_server_s\": %.6f, "
                            "\"plain_client_s\": %.6f, \"plain_s\": %.6f, \"secagg_over_plain\": %.3f}\n",
                            r->n, r->k, r->t, r->dropped, r->survivors, dim, r->bits, r->server_s,
                            r->finish_s, r->client_max_s, r->client_mask_s, sec, r->plain_server_s,
                            r->plain_client_s, plain, sec / plain);
                    else
                        printf("%5u %4u %4u %5u %4u | %9.4f %9.4f %9.4f %9.4f | %9.4f %9.4f %9.4f | %8.1f\n",
                               r->n, r->k, r->t, r->dropped, r->bits, r->server_s, r->finish_s,
                               r->client_max_s, sec, r->plain_server_s, r->plain_client_s, plain,
                               sec / plain);
                    fflush(stdout);
                }
        free(updates);
        fedc_params_destroy(layout);
    }

    /* The summary: the last line, what bench/run.sh keeps. The round
     * target: SecAgg at most 2x plain for 100 clients on the complete
     * graph without dropouts. */
    double ratio = pr.gbps[PRG_AES] > 0 && do_prg ? pr.gbps[PRG_EXPAND] / pr.gbps[PRG_AES] : -1;
    double round_target = -1;
    for (int i = 0; i < nrr; i++)
        if (rr[i].n == 100 && rr[i].k == 99 && rr[i].dropped == 0)
            round_target =
                (rr[i].server_s + rr[i].client_max_s) / (rr[i].plain_server_s + rr[i].plain_client_s);
    if (json) {
        printf("{\"bench\": \"secagg\"");
        if (do_prg) {
            printf(", \"expand_gbps\": %.3f", pr.gbps[PRG_EXPAND]);
            if (ratio >= 0)
                printf(", \"aes128ctr_gbps\": %.3f, \"expand_over_aes\": %.3f, \"prg_target_met\": %s",
                       pr.gbps[PRG_AES], ratio, ratio >= 0.7 ? "true" : "false");
        }
        printf(", \"rounds\": {");
        for (int i = 0; i < nrr; i++) {
            const round_result *r = &rr[i];
            double sec = r->server_s + r->client_max_s, plain = r->plain_server_s + r->plain_client_s;
            printf(
                "%s\"n%u_k%u_drop%u\": {\"secagg_s\": %.6f, \"plain_s\": %.6f, \"secagg_over_plain\": %.3f}",
                i ? ", " : "", r->n, r->k, r->dropped, sec, plain, sec / plain);
        }
        printf("}");
        if (round_target >= 0)
            printf(", \"secagg_over_plain_100\": %.3f, \"round_target_met\": %s", round_target,
                   round_target <= 2.0 ? "true" : "false");
        printf(", \"checksum\": %.6e}\n", check);
    } else {
        if (round_target >= 0)
            printf("secagg / plain, 100 clients, complete graph, no dropouts = %.1f (target <= 2: %s)\n",
                   round_target, round_target <= 2.0 ? "met" : "MISSED");
        printf("checksum %.6e\n", check);
    }
    free(rr);
    return failed;
}
