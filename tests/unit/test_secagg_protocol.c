/*
 * The secure aggregation protocol core (src/secagg/protocol.h), driven by
 * an in-memory federation: the test plays the server's transport, relaying
 * every message between one server object and n client objects.
 *
 *   - complete graph, n = 8, t = 5, d = 1000: without dropouts the result
 *     is the plain sum mod 2^32 bit for bit;
 *   - dropouts at each stage (after advertising, after sharing, a masked
 *     input that never arrives, a survivor that does not answer the unmask
 *     request), alone and combined, plus random patterns: the sum over U3
 *     is exact whenever every secret has t shares, and otherwise the round
 *     aborts cleanly with a message naming the client and the counts;
 *   - after every round, the server never holds shares of both secrets of
 *     any client (its counters), and a client refuses an unmask request
 *     that lists a client as both survivor and dropped;
 *   - malicious inputs: ciphertexts of the wrong size, replayed from another
 *     round, forged, addressed to another recipient; a masked input of the
 *     wrong dimension; indices out of range; wrong rounds and stages;
 *     repeated messages: each refused with a clear message, the object
 *     still usable after it;
 *   - a masked input of an all-zero vector has a uniform top byte
 *     (chi-square, Wilson-Hilferty at z = 5);
 *   - SecAgg+: n = 20, K = 8, t = 5 with 6 dropouts across the stages gives
 *     the exact sum; t <= K/2 and other bad configurations are refused.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "secagg/protocol.h"
#include "test_util.h"

#define MAXN 32

/* DROP_SKIP: the driver leaves the client out of a stage the test played by hand. */
enum { DROP_NONE, DROP_AFTER_ADV, DROP_AFTER_SHARE, DROP_Y_LOST, DROP_UNMASK, DROP_SKIP };

static fedc_rng trng;

typedef struct sim {
    fedc__sa_config cfg;
    fedc__sa_server *s;
    fedc__sa_client *c[MAXN];
    uint32_t *q; /* n * dim */
    int drop[MAXN];
    char err[FEDC_ERRMSG_MAX];
} sim;

static void sim_free(sim *m)
{
    fedc__sa_server_destroy(m->s);
    for (uint32_t i = 0; i < MAXN; i++) fedc__sa_client_destroy(m->c[i]);
    free(m->q);
    memset(m, 0, sizeof *m);
}

static int sim_init(sim *m, const fedc__sa_config *cfg, const int *drop)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int rc = fedc__sa_server_create(cfg, &m->s, m->err, sizeof m->err);
    CHECK_STATUS(rc, FEDC_OK, m->err);
    if (rc) return rc;
    /* The server keeps its own copy of the round's parameters. */
    const fedc__sa_config *sc = fedc__sa_server_config(m->s);
    CHECK(sc && sc != cfg && sc->round == cfg->round && sc->n == cfg->n && sc->k == cfg->k &&
              sc->t == cfg->t && sc->dim == cfg->dim &&
              memcmp(sc->graph_seed, cfg->graph_seed, sizeof cfg->graph_seed) == 0,
          "the server's configuration differs from the one it was created with");
    CHECK(fedc__sa_server_config(NULL) == NULL, "a NULL server has a configuration");
    for (uint32_t i = 0; i < cfg->n; i++) {
        rc = fedc__sa_client_create(cfg, i, &m->c[i], m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        m->drop[i] = drop ? drop[i] : DROP_NONE;
    }
    m->q = malloc(cfg->n * cfg->dim * 4);
    for (size_t k = 0; k < cfg->n * cfg->dim; k++) m->q[k] = (uint32_t)fedc_rng_u64(&trng) & 0xFFFFFF;
    return FEDC_OK;
}

/* Stage 1: everyone advertises; the server closes the stage. */
static int sim_advertise(sim *m)
{
    for (uint32_t i = 0; i < m->cfg.n; i++) {
        uint8_t *msg;
        size_t len;
        int rc = fedc__sa_client_advertise(m->c[i], &msg, &len, m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        rc = fedc__sa_server_recv(m->s, msg, len, m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        free(msg);
    }
    return fedc__sa_server_advance(m->s, m->err, sizeof m->err);
}

/* Stage 2: the clients that did not vanish after advertising share keys. */
static int sim_share(sim *m)
{
    for (uint32_t i = 0; i < m->cfg.n; i++) {
        if (m->drop[i] == DROP_AFTER_ADV) continue;
        uint8_t *in, *out;
        size_t inlen, outlen;
        int rc = fedc__sa_server_message_for(m->s, i, &in, &inlen, m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        rc = fedc__sa_client_share_keys(m->c[i], in, inlen, &out, &outlen, m->err, sizeof m->err);
        free(in);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        rc = fedc__sa_server_recv(m->s, out, outlen, m->err, sizeof m->err);
        free(out);
        CHECK_STATUS(rc, FEDC_OK, m->err);
    }
    return fedc__sa_server_advance(m->s, m->err, sizeof m->err);
}

/* Stage 3: masked inputs (a lost one is computed but never delivered). */
static int sim_masked(sim *m, uint8_t **keep, size_t *keeplen, uint32_t keep_who)
{
    for (uint32_t i = 0; i < m->cfg.n; i++) {
        if (m->drop[i] == DROP_AFTER_ADV || m->drop[i] == DROP_AFTER_SHARE || m->drop[i] == DROP_SKIP)
            continue;
        uint8_t *in, *out;
        size_t inlen, outlen;
        int rc = fedc__sa_server_message_for(m->s, i, &in, &inlen, m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        rc = fedc__sa_client_masked_input(m->c[i], in, inlen, m->q + (size_t)i * m->cfg.dim, m->cfg.dim, &out,
                                          &outlen, m->err, sizeof m->err);
        free(in);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        if (m->drop[i] != DROP_Y_LOST) {
            rc = fedc__sa_server_recv(m->s, out, outlen, m->err, sizeof m->err);
            CHECK_STATUS(rc, FEDC_OK, m->err);
        }
        if (keep && i == keep_who) {
            *keep = out;
            *keeplen = outlen;
        } else {
            free(out);
        }
    }
    return fedc__sa_server_advance(m->s, m->err, sizeof m->err);
}

/* Stage 4: the survivors that do not drop answer; the server finishes. */
static int sim_unmask(sim *m, uint32_t *sum, uint32_t *surv)
{
    for (uint32_t i = 0; i < m->cfg.n; i++) {
        if (m->drop[i] != DROP_NONE) continue;
        uint8_t *in, *out;
        size_t inlen, outlen;
        int rc = fedc__sa_server_message_for(m->s, i, &in, &inlen, m->err, sizeof m->err);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        rc = fedc__sa_client_unmask(m->c[i], in, inlen, &out, &outlen, m->err, sizeof m->err);
        free(in);
        CHECK_STATUS(rc, FEDC_OK, m->err);
        if (rc) return rc;
        rc = fedc__sa_server_recv(m->s, out, outlen, m->err, sizeof m->err);
        free(out);
        CHECK_STATUS(rc, FEDC_OK, m->err);
    }
    return fedc__sa_server_finish(m->s, sum, m->cfg.dim, surv, m->err, sizeof m->err);
}

/* The server never holds shares of both secrets of a client. */
static void check_counters(const sim *m)
{
    int both = 0, over = 0;
    for (uint32_t j = 0; j < m->cfg.n; j++) {
        uint32_t nb, ns;
        fedc__sa_server_share_counts(m->s, j, &nb, &ns);
        both += nb > 0 && ns > 0;
        over += nb >= m->cfg.t && ns >= m->cfg.t;
    }
    CHECK(both == 0 && over == 0, "server holds shares of both secrets of %d clients (%d over t)", both,
          over);
}

/* Whether a dropout pattern can complete: every client in U2 has t
 * neighbours in U2, |U2| > t, |U3| >= t, and every secret the server needs
 * has t holders among the answering survivors U4. */
static int feasible(const fedc__sa_config *cfg, const int *drop)
{
    uint32_t n = cfg->n, t = cfg->t, n2 = 0, n3 = 0;
    uint8_t adj[MAXN * MAXN];
    fedc__sa_neighbours(cfg, adj, NULL, 0);
    for (uint32_t i = 0; i < n; i++) {
        n2 += drop[i] != DROP_AFTER_ADV;
        n3 += drop[i] == DROP_NONE || drop[i] == DROP_UNMASK;
    }
    if (n2 < t + 1 || n3 < t) return 0;
    for (uint32_t j = 0; j < n; j++) {
        if (drop[j] == DROP_AFTER_ADV) continue;
        uint32_t in2 = 0, in4 = 0;
        for (uint32_t h = 0; h < n; h++) {
            if (!adj[j * n + h]) continue;
            in2 += drop[h] != DROP_AFTER_ADV;
            in4 += drop[h] == DROP_NONE;
        }
        if (in2 < t || in4 < t) return 0;
    }
    return 1;
}

/* Runs a whole round; checks the exact sum over U3, or a clean abort
 * when the pattern is not feasible. Returns the final status. */
static int run_round(const fedc__sa_config *cfg, const int *drop, const char *what)
{
    sim m;
    if (sim_init(&m, cfg, drop)) {
        sim_free(&m);
        return -1;
    }
    int want_ok = feasible(cfg, drop);
    uint32_t *sum = calloc(cfg->dim, 4), *plain = calloc(cfg->dim, 4), surv = 0, want_surv = 0;
    for (uint32_t i = 0; i < cfg->n; i++) {
        if (m.drop[i] != DROP_NONE && m.drop[i] != DROP_UNMASK) continue;
        want_surv++;
        for (size_t k = 0; k < cfg->dim; k++) plain[k] += m.q[(size_t)i * cfg->dim + k];
    }
    int rc = sim_advertise(&m);
    if (!rc) rc = sim_share(&m);
    if (!rc) rc = sim_masked(&m, NULL, NULL, 0);
    if (!rc) rc = sim_unmask(&m, sum, &surv);
    if (want_ok) {
        CHECK_STATUS(rc, FEDC_OK, m.err);
        CHECK(surv == want_surv, "%s: %u survivors, want %u", what, surv, want_surv);
        CHECK(memcmp(sum, plain, cfg->dim * 4) == 0, "%s: the unmasked sum differs from the plain sum", what);
    } else {
        CHECK_STATUS(rc, FEDC_ERR_INVALID, what);
        CHECK_CONTAINS(m.err, "aborted", what);
        CHECK(fedc__sa_server_stage(m.s) == FEDC__SA_STAGE_DONE, "%s: server not DONE after abort", what);
    }
    check_counters(&m);
    free(sum);
    free(plain);
    sim_free(&m);
    return rc;
}

static fedc__sa_config complete_cfg(uint32_t n, uint32_t t, uint64_t dim, uint64_t round)
{
    fedc__sa_config c;
    memset(&c, 0, sizeof c);
    c.round = round;
    c.n = n;
    c.k = n - 1;
    c.t = t;
    c.dim = dim;
    return c;
}

static void test_complete(void)
{
    fedc__sa_config cfg = complete_cfg(8, 5, 1000, 7);
    int none[8] = {0};
    CHECK_STATUS(run_round(&cfg, none, "no dropout"), FEDC_OK, "no dropout");

    struct {
        const char *what;
        int drop[8];
        int ok;
    } cases[] = {
        {"advertise then vanish", {0, DROP_AFTER_ADV, 0, 0, 0, 0, 0, 0}, 1},
        {"drop after sharing", {0, 0, 0, DROP_AFTER_SHARE, 0, 0, 0, 0}, 1},
        {"masked input lost", {0, 0, 0, 0, 0, DROP_Y_LOST, 0, 0}, 1},
        {"silent at unmasking", {0, 0, 0, 0, 0, 0, DROP_UNMASK, 0}, 1},
        {"advertise + unmask", {0, DROP_AFTER_ADV, 0, 0, DROP_UNMASK, 0, 0, 0}, 1},
        {"share + masked lost", {0, 0, DROP_AFTER_SHARE, 0, 0, DROP_Y_LOST, 0, 0}, 1},
        {"advertise + masked lost", {DROP_AFTER_ADV, 0, 0, 0, 0, 0, 0, DROP_Y_LOST}, 1},
        {"three at the end: below t", {0, DROP_AFTER_SHARE, DROP_Y_LOST, DROP_UNMASK, 0, 0, 0, 0}, 0},
        {"all stages: below t", {0, DROP_AFTER_ADV, 0, DROP_AFTER_SHARE, 0, DROP_Y_LOST, DROP_UNMASK, 0}, 0},
        {"three before sharing", {DROP_AFTER_ADV, DROP_AFTER_ADV, DROP_AFTER_ADV, 0, 0, 0, 0, 0}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK(feasible(&cfg, cases[c].drop) == cases[c].ok, "%s: feasibility", cases[c].what);
        run_round(&cfg, cases[c].drop, cases[c].what);
    }
    /* random patterns, smaller vectors */
    cfg.dim = 64;
    int n_ok = 0, n_abort = 0;
    for (int r = 0; r < 40; r++) {
        int drop[8];
        for (int i = 0; i < 8; i++)
            drop[i] = fedc_rng_below(&trng, 3) ? DROP_NONE : (int)fedc_rng_below(&trng, 4) + 1;
        cfg.round = 100 + (uint64_t)r;
        char what[64];
        snprintf(what, sizeof what, "random pattern %d", r);
        if (run_round(&cfg, drop, what) == FEDC_OK)
            n_ok++;
        else
            n_abort++;
    }
    TEST_NOTE("random dropout patterns: %d exact, %d aborted", n_ok, n_abort);
}

/* ---- malicious inputs ---- */

#define FWD_ENTRY (8 + FEDC__SA_CT_BYTES)

static size_t fwd_entry_off(const uint8_t *msg, uint32_t e)
{
    uint32_t n2 = (uint32_t)msg[24] | (uint32_t)msg[25] << 8;
    return FEDC__SA_HEADER_BYTES + 4 + 4 * (size_t)n2 + 4 + (size_t)e * FWD_ENTRY;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void test_malicious(void)
{
    fedc__sa_config cfg = complete_cfg(6, 4, 50, 11);
    sim m, other;
    char err[FEDC_ERRMSG_MAX];
    if (sim_init(&m, &cfg, NULL) ||
        sim_init(&other, &(fedc__sa_config){.round = 12, .n = 6, .k = 5, .t = 4, .dim = 50}, NULL)) {
        sim_free(&m);
        return;
    }
    uint8_t *msg, *msg2, *out;
    size_t len, len2, outlen;
    int rc;

    /* stage 1: a bad advertise, out of range sender, wrong type, wrong round */
    rc = fedc__sa_client_advertise(m.c[0], &msg, &len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    put32(msg + 16, 9);
    rc = fedc__sa_server_recv(m.s, msg, len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "sender out of range");
    CHECK_CONTAINS(err, "out of range", "sender out of range");
    put32(msg + 16, 0);
    msg[8] ^= 1; /* round 10 */
    rc = fedc__sa_server_recv(m.s, msg, len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "wrong round");
    CHECK_CONTAINS(err, "round 10", "wrong round");
    msg[8] ^= 1;
    rc = fedc__sa_server_recv(m.s, msg, len - 1, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "truncated advertise");
    CHECK_CONTAINS(err, "truncated", "truncated advertise");
    rc = fedc__sa_server_recv(m.s, msg, len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    rc = fedc__sa_server_recv(m.s, msg, len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "repeated advertise");
    CHECK_CONTAINS(err, "second", "repeated advertise");
    free(msg);
    for (uint32_t i = 1; i < 6; i++) {
        fedc__sa_client_advertise(m.c[i], &msg, &len, err, sizeof err);
        CHECK_STATUS(fedc__sa_server_recv(m.s, msg, len, err, sizeof err), FEDC_OK, err);
        free(msg);
    }
    CHECK_STATUS(fedc__sa_server_advance(m.s, err, sizeof err), FEDC_OK, err);
    CHECK_STATUS(sim_advertise(&other), FEDC_OK, other.err);

    /* stage 2: a KEYS message for another client, with an out-of-range index */
    fedc__sa_server_message_for(m.s, 1, &msg, &len, err, sizeof err);
    rc = fedc__sa_client_share_keys(m.c[0], msg, len, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "KEYS for another client");
    CHECK_CONTAINS(err, "addressed to 1", "KEYS for another client");
    free(msg);
    fedc__sa_server_message_for(m.s, 0, &msg, &len, err, sizeof err);
    put32(msg + FEDC__SA_HEADER_BYTES + 4, 17); /* first neighbour's index */
    rc = fedc__sa_client_share_keys(m.c[0], msg, len, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "KEYS index out of range");
    CHECK_CONTAINS(err, "17 is not a neighbour", "KEYS index out of range");
    put32(msg + FEDC__SA_HEADER_BYTES + 4, 1);
    /* a message of the wrong stage to the client */
    rc = fedc__sa_client_masked_input(m.c[0], msg, len, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_INVALID, "client call in the wrong stage");
    CHECK_CONTAINS(err, "wrong stage", "client call in the wrong stage");
    free(msg);
    /* a message of the wrong stage to the server */
    {
        fedc__sa_client *fresh;
        fedc__sa_client_create(&cfg, 3, &fresh, err, sizeof err);
        fedc__sa_client_advertise(fresh, &msg, &len, err, sizeof err);
        rc = fedc__sa_server_recv(m.s, msg, len, err, sizeof err);
        CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "ADVERTISE in the share stage");
        CHECK_CONTAINS(err, "got a ADVERTISE message", "ADVERTISE in the share stage");
        free(msg);
        fedc__sa_client_destroy(fresh);
    }
    CHECK_STATUS(sim_share(&m), FEDC_OK, m.err);
    CHECK_STATUS(sim_share(&other), FEDC_OK, other.err);

    /* stage 3: tampered forwards to client 2 (its first entry is from client 0) */
    fedc__sa_server_message_for(m.s, 2, &msg, &len, err, sizeof err);
    size_t e0 = fwd_entry_off(msg, 0), e1 = fwd_entry_off(msg, 1);
    uint8_t *bad = malloc(len);
    /* wrong size: the ciphertext one byte short */
    memcpy(bad, msg, e0 + 4);
    put32(bad + e0 + 4, FEDC__SA_CT_BYTES - 1);
    memcpy(bad + e0 + 8, msg + e0 + 8, FEDC__SA_CT_BYTES - 1);
    memcpy(bad + e0 + 8 + FEDC__SA_CT_BYTES - 1, msg + e1, len - e1);
    rc = fedc__sa_client_masked_input(m.c[2], bad, len - 1, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "ciphertext of the wrong size");
    CHECK_CONTAINS(err, "has 103 bytes", "ciphertext of the wrong size");
    /* forged: a flipped byte */
    memcpy(bad, msg, len);
    bad[e0 + 8 + 40] ^= 0x20;
    rc = fedc__sa_client_masked_input(m.c[2], bad, len, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "forged ciphertext");
    CHECK_CONTAINS(err, "from client 0 does not decrypt", "forged ciphertext");
    /* addressed to another recipient: client 0's ciphertext for client 3 */
    fedc__sa_server_message_for(m.s, 3, &msg2, &len2, err, sizeof err);
    memcpy(bad, msg, len);
    memcpy(bad + e0 + 8, msg2 + fwd_entry_off(msg2, 0) + 8, FEDC__SA_CT_BYTES);
    rc = fedc__sa_client_masked_input(m.c[2], bad, len, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "ciphertext for another recipient");
    CHECK_CONTAINS(err, "does not decrypt", "ciphertext for another recipient");
    free(msg2);
    /* replayed from another round: round 12's ciphertext from 0 to 2 */
    fedc__sa_server_message_for(other.s, 2, &msg2, &len2, err, sizeof err);
    memcpy(bad, msg, len);
    memcpy(bad + e0 + 8, msg2 + fwd_entry_off(msg2, 0) + 8, FEDC__SA_CT_BYTES);
    rc = fedc__sa_client_masked_input(m.c[2], bad, len, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "ciphertext from another round");
    CHECK_CONTAINS(err, "does not decrypt", "ciphertext from another round");
    /* a whole message of the other round */
    rc = fedc__sa_client_masked_input(m.c[2], msg2, len2, m.q, cfg.dim, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "message from another round");
    CHECK_CONTAINS(err, "round 12", "message from another round");
    free(msg2);
    /* a missing ciphertext: U2 says 6 clients, 4 ciphertexts */
    memcpy(bad, msg, len);
    put32(bad + e0 - 4, 4);
    rc = fedc__sa_client_masked_input(m.c[2], bad, len - FWD_ENTRY, m.q, cfg.dim, &out, &outlen, err,
                                      sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "missing ciphertext");
    CHECK_CONTAINS(err, "expected one from each", "missing ciphertext");
    /* a masked input of the wrong dimension */
    rc = fedc__sa_client_masked_input(m.c[2], msg, len, m.q, cfg.dim - 1, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_INVALID, "input of the wrong dimension");
    CHECK_CONTAINS(err, "dimension 49", "input of the wrong dimension");
    free(bad);
    /* after all the refusals, the genuine message works */
    rc = fedc__sa_client_masked_input(m.c[2], msg, len, m.q + 2 * cfg.dim, cfg.dim, &out, &outlen, err,
                                      sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    free(msg);
    /* the server refuses a MASKED of the wrong dimension, then takes the real one */
    bad = malloc(outlen);
    memcpy(bad, out, outlen);
    bad[24] = 49;
    rc = fedc__sa_server_recv(m.s, bad, outlen - 4, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "MASKED of the wrong dimension");
    CHECK_CONTAINS(err, "dimension 49", "MASKED of the wrong dimension");
    free(bad);
    CHECK_STATUS(fedc__sa_server_recv(m.s, out, outlen, err, sizeof err), FEDC_OK, err);
    free(out);
    m.drop[2] = DROP_SKIP; /* already sent: the driver must not repeat it */
    rc = sim_masked(&m, NULL, NULL, 0);
    CHECK_STATUS(rc, FEDC_OK, m.err);
    m.drop[2] = DROP_NONE;

    /* stage 4: a request naming client 1 both survivor and dropped */
    fedc__sa_server_message_for(m.s, 0, &msg, &len, err, sizeof err);
    bad = malloc(len + 4);
    memcpy(bad, msg, len - 4); /* U3 = 0..5, D count */
    put32(bad + len - 4, 1);   /* D = {1} */
    put32(bad + len, 1);
    rc = fedc__sa_client_unmask(m.c[0], bad, len + 4, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_INVALID, "both secrets requested");
    CHECK_CONTAINS(err, "both a survivor and dropped", "both secrets requested");
    /* U3 with an index out of range */
    memcpy(bad, msg, len);
    put32(bad + FEDC__SA_HEADER_BYTES + 4 + 4 * 5, 6);
    rc = fedc__sa_client_unmask(m.c[0], bad, len, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "U3 index out of range");
    CHECK_CONTAINS(err, "index 6 in U3 out of range", "U3 index out of range");
    free(bad);
    /* the genuine request; then a response with a share of the wrong kind */
    rc = fedc__sa_client_unmask(m.c[0], msg, len, &out, &outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    free(msg);
    out[FEDC__SA_HEADER_BYTES + 4 + 4] = FEDC__SA_SHARE_S;
    rc = fedc__sa_server_recv(m.s, out, outlen, err, sizeof err);
    CHECK_STATUS(rc, FEDC_ERR_PROTOCOL, "share of the wrong kind");
    CHECK_CONTAINS(err, "only b shares are accepted", "share of the wrong kind");
    check_counters(&m);
    out[FEDC__SA_HEADER_BYTES + 4 + 4] = FEDC__SA_SHARE_B;
    CHECK_STATUS(fedc__sa_server_recv(m.s, out, outlen, err, sizeof err), FEDC_OK, err);
    free(out);
    m.drop[0] = DROP_SKIP; /* answered already */
    uint32_t *sum = calloc(cfg.dim, 4), *plain = calloc(cfg.dim, 4), surv;
    rc = sim_unmask(&m, sum, &surv);
    CHECK_STATUS(rc, FEDC_OK, m.err);
    for (uint32_t i = 0; i < 6; i++)
        for (size_t k = 0; k < cfg.dim; k++) plain[k] += m.q[i * cfg.dim + k];
    CHECK(surv == 6 && memcmp(sum, plain, cfg.dim * 4) == 0, "sum after the refused inputs");
    check_counters(&m);
    free(sum);
    free(plain);
    sim_free(&m);
    sim_free(&other);
}

/* A masked all-zero input looks uniform. */
static void test_uniform(void)
{
    fedc__sa_config cfg = complete_cfg(3, 2, 1u << 16, 5);
    sim m;
    if (sim_init(&m, &cfg, NULL)) {
        sim_free(&m);
        return;
    }
    memset(m.q, 0, 3 * cfg.dim * 4);
    uint8_t *y = NULL;
    size_t ylen = 0;
    CHECK_STATUS(sim_advertise(&m), FEDC_OK, m.err);
    CHECK_STATUS(sim_share(&m), FEDC_OK, m.err);
    CHECK_STATUS(sim_masked(&m, &y, &ylen, 1), FEDC_OK, m.err);
    CHECK(y && ylen == FEDC__SA_HEADER_BYTES + 8 + cfg.dim * 4, "masked message size");
    if (y) {
        double cnt[256] = {0}, chi = 0, e = (double)cfg.dim / 256;
        for (size_t k = 0; k < cfg.dim; k++) cnt[y[FEDC__SA_HEADER_BYTES + 8 + 4 * k + 3]]++;
        for (int b = 0; b < 256; b++) chi += (cnt[b] - e) * (cnt[b] - e) / e;
        double c = 2.0 / (9.0 * 255), r = 1.0 - c + 5 * sqrt(c), bound = 255 * r * r * r;
        CHECK(chi < bound, "top byte of a masked zero vector: chi2 %.1f >= %.1f", chi, bound);
        TEST_NOTE("masked zero vector, top byte chi2 = %.1f (bound %.1f)", chi, bound);
    }
    free(y);
    uint32_t *sum = calloc(cfg.dim, 4), surv;
    CHECK_STATUS(sim_unmask(&m, sum, &surv), FEDC_OK, m.err);
    size_t nz = 0;
    for (size_t k = 0; k < cfg.dim; k++) nz += sum[k] != 0;
    CHECK(nz == 0, "sum of zero vectors has %zu non-zero values", nz);
    free(sum);
    sim_free(&m);
}

static void test_secagg_plus(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__sa_config cfg = {.round = 3, .n = 20, .k = 8, .t = 4, .dim = 200};
    CHECK_STATUS(fedc__sa_check_config(&cfg, err, sizeof err), FEDC_ERR_INVALID, "t = K/2");
    CHECK_CONTAINS(err, "t must be more than half the neighbours", "t = K/2");
    fedc__sa_server *s = NULL;
    CHECK_STATUS(fedc__sa_server_create(&cfg, &s, err, sizeof err), FEDC_ERR_INVALID, "server with t = K/2");
    cfg.k = 7;
    cfg.t = 5;
    CHECK_STATUS(fedc__sa_check_config(&cfg, err, sizeof err), FEDC_ERR_INVALID, "odd K");
    cfg.k = 20;
    CHECK_STATUS(fedc__sa_check_config(&cfg, err, sizeof err), FEDC_ERR_INVALID, "K >= n");
    cfg.k = 8;
    cfg.t = 9;
    CHECK_STATUS(fedc__sa_check_config(&cfg, err, sizeof err), FEDC_ERR_INVALID, "t > K");
    cfg.t = 5;
    CHECK_STATUS(fedc__sa_check_config(&cfg, err, sizeof err), FEDC_OK, err);

    /* the graph: 8-regular, symmetric, and different seeds give different graphs */
    uint8_t adj[20 * 20], adj2[20 * 20];
    CHECK_STATUS(fedc__sa_neighbours(&cfg, adj, err, sizeof err), FEDC_OK, err);
    int regular = 1;
    for (int i = 0; i < 20; i++) {
        int deg = 0;
        for (int j = 0; j < 20; j++) {
            deg += adj[i * 20 + j];
            if (adj[i * 20 + j] != adj[j * 20 + i]) regular = 0;
        }
        if (deg != 8 || adj[i * 20 + i]) regular = 0;
    }
    CHECK(regular, "the SecAgg+ graph is 8-regular and symmetric");
    cfg.graph_seed[0] = 1;
    fedc__sa_neighbours(&cfg, adj2, err, sizeof err);
    CHECK(memcmp(adj, adj2, sizeof adj) != 0, "another seed gives another graph");

    /* 6 dropouts across the stages; find a seed for which t shares remain */
    int drop[20] = {0};
    drop[1] = drop[11] = DROP_AFTER_ADV;
    drop[4] = DROP_AFTER_SHARE;
    drop[14] = DROP_Y_LOST;
    drop[7] = drop[17] = DROP_UNMASK;
    int found = 0;
    for (int seed = 0; seed < 200 && found < 3; seed++) {
        cfg.graph_seed[0] = (uint8_t)seed;
        if (!feasible(&cfg, drop)) continue;
        found++;
        CHECK_STATUS(run_round(&cfg, drop, "SecAgg+ with 6 dropouts"), FEDC_OK, "SecAgg+ with 6 dropouts");
    }
    CHECK(found == 3, "found %d feasible graphs", found);
    /* and an infeasible one aborts cleanly */
    int aborted = 0;
    for (int seed = 0; seed < 200; seed++) {
        cfg.graph_seed[0] = (uint8_t)seed;
        int d2[20] = {0};
        d2[2] = d2[3] = d2[5] = DROP_AFTER_SHARE;
        d2[6] = d2[8] = d2[9] = d2[10] = DROP_UNMASK;
        if (feasible(&cfg, d2)) continue;
        /* clients with fewer than t neighbours in U2 would refuse; keep to the server's aborts */
        uint32_t ok = 1;
        fedc__sa_neighbours(&cfg, adj, NULL, 0);
        for (int i = 0; i < 20; i++) {
            int in2 = 0;
            for (int j = 0; j < 20; j++) in2 += adj[i * 20 + j] && d2[j] != DROP_AFTER_ADV;
            if (in2 < 5) ok = 0;
        }
        if (!ok) continue;
        CHECK_STATUS(run_round(&cfg, d2, "SecAgg+ infeasible"), FEDC_ERR_INVALID, "SecAgg+ infeasible");
        aborted = 1;
        break;
    }
    CHECK(aborted, "no infeasible SecAgg+ pattern found to abort");
}

/* SecAgg+: a client refuses to unmask when its own neighbourhood keeps
 * fewer than t survivors, even if the round keeps more. */
static void test_neighbourhood_survivors(void)
{
    fedc__sa_config cfg = {.round = 9, .n = 20, .k = 8, .t = 5, .dim = 16};
    for (int i = 0; i < 32; i++) cfg.graph_seed[i] = (uint8_t)(7 * i + 1);
    uint8_t adj[20 * 20];
    char err[FEDC_ERRMSG_MAX];
    CHECK_STATUS(fedc__sa_neighbours(&cfg, adj, err, sizeof err), FEDC_OK, err);
    sim m;
    if (sim_init(&m, &cfg, NULL)) return;
    int rc = sim_advertise(&m);
    if (!rc) rc = sim_share(&m);
    if (!rc) rc = sim_masked(&m, NULL, NULL, 0);
    CHECK_STATUS(rc, FEDC_OK, m.err);
    uint8_t *msg = NULL, *out = NULL;
    size_t len = 0, outlen = 0;
    if (!rc) rc = fedc__sa_server_message_for(m.s, 0, &msg, &len, err, sizeof err);
    CHECK_STATUS(rc, FEDC_OK, err);
    if (!rc) {
        /* U3 = client 0 and its 11 non-neighbours, D = its 8 neighbours:
         * 12 survivors in the round, 1 in client 0's neighbourhood. */
        uint8_t req[FEDC__SA_HEADER_BYTES + 4 + 4 * 20 + 4];
        size_t at = FEDC__SA_HEADER_BYTES, n3 = 0, nd = 0;
        memcpy(req, msg, FEDC__SA_HEADER_BYTES);
        at += 4;
        for (uint32_t j = 0; j < 20; j++)
            if (!adj[j]) put32(req + at + 4 * n3++, j);
        put32(req + FEDC__SA_HEADER_BYTES, (uint32_t)n3);
        size_t dat = at + 4 * n3;
        for (uint32_t j = 0; j < 20; j++)
            if (adj[j]) put32(req + dat + 4 + 4 * nd++, j);
        put32(req + dat, (uint32_t)nd);
        CHECK(n3 == 12 && nd == 8, "client 0 has %zu non-neighbours and %zu neighbours", n3 - 1, nd);
        rc = fedc__sa_client_unmask(m.c[0], req, dat + 4 + 4 * nd, &out, &outlen, err, sizeof err);
        CHECK_STATUS(rc, FEDC_ERR_INVALID, "too few survivors among the neighbours");
        CHECK_CONTAINS(err, "among its neighbours", "too few survivors among the neighbours");
        free(out);
    }
    free(msg);
    sim_free(&m);
}

/* The defaults fedc server --secagg takes from the number of clients. */
static void test_defaults(void)
{
    /* K: the complete graph while n - 1 <= 198, the smallest even K whose
     * neighbourhoods survive a random third dropping with probability
     * 1 - 1e-6 beyond. */
    CHECK(fedc__sa_too_few_neighbours(198) <= 1e-6, "K 198: %g", fedc__sa_too_few_neighbours(198));
    CHECK(fedc__sa_too_few_neighbours(196) > 1e-6, "K 196: %g", fedc__sa_too_few_neighbours(196));
    /* Against a direct sum for a small case: P[Bin(4, 2/3) <= 2] = 1 - P[3] - P[4]. */
    double p4 = 1 - 4 * (8.0 / 27) * (1.0 / 3) - 16.0 / 81;
    CHECK(fabs(fedc__sa_too_few_neighbours(4) - p4) < 1e-12, "K 4: %g, want %g",
          fedc__sa_too_few_neighbours(4), p4);
    CHECK(fedc__sa_default_neighbours(3) == 2, "n 3: %u", fedc__sa_default_neighbours(3));
    CHECK(fedc__sa_default_neighbours(8) == 7, "n 8: %u", fedc__sa_default_neighbours(8));
    CHECK(fedc__sa_default_neighbours(199) == 198, "n 199: %u", fedc__sa_default_neighbours(199));
    CHECK(fedc__sa_default_neighbours(200) == 198, "n 200: %u", fedc__sa_default_neighbours(200));
    CHECK(fedc__sa_default_neighbours(255) == 198, "n 255: %u", fedc__sa_default_neighbours(255));
    /* B: 24 while n (2^24 - 1) < 2^32, i.e. n <= 256; fewer never needed
     * below 255 clients, but the rule holds for any n. */
    CHECK(fedc__sa_default_bits(8) == 24, "bits n 8: %u", fedc__sa_default_bits(8));
    CHECK(fedc__sa_default_bits(255) == 24, "bits n 255: %u", fedc__sa_default_bits(255));
    CHECK(fedc__sa_default_bits(257) == 23, "bits n 257: %u", fedc__sa_default_bits(257));
    for (uint32_t n = 3; n <= FEDC__SA_MAX_CLIENTS; n++) {
        fedc__sa_config cfg = {.round = 1, .n = n, .dim = 1};
        cfg.k = fedc__sa_default_neighbours(n);
        cfg.t = cfg.k / 2 + 1;
        char err[FEDC_ERRMSG_MAX];
        if (fedc__sa_check_config(&cfg, err, sizeof err)) {
            CHECK(0, "n %u: the defaults K %u T %u are refused: %s", n, cfg.k, cfg.t, err);
            break;
        }
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0) return EXIT_FAILURE;
    fedc_rng_seed(&trng, 0x5EC466ull);
    test_complete();
    test_malicious();
    test_uniform();
    test_secagg_plus();
    test_neighbourhood_survivors();
    test_defaults();
    return test_summary();
}
