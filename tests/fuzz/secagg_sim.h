/*
 * One secure-aggregation round (src/secagg/protocol.h) with n = 4 clients on
 * the complete graph (k = 3, t = 3, dim = 4), played in memory with
 * deterministic randomness, in which one message is swapped for the fuzz
 * input. Shared by fuzz_secagg.c and gen_corpus.c (which records the genuine
 * message at each point instead, as the seeds).
 *
 * libsodium's randombytes is replaced (randombytes_set_implementation,
 * before sodium_init) by a seeded generator that is reset before each
 * round, so that the same input replays the same keys, shares and nonces:
 * the seeds' ciphertexts decrypt, and a crash reproduces from its file.
 */
#ifndef FEDC_FUZZ_SECAGG_SIM_H
#define FEDC_FUZZ_SECAGG_SIM_H

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "secagg/protocol.h"

#define SIM_N   4u
#define SIM_DIM 4u

/* The points at which the fuzz input replaces a message (its first byte,
 * modulo SIM_POINTS, picks one). Server points: the input is delivered
 * before the clients' own messages of the stage. Client points: client 0
 * takes the input in place of the server's message, then (when it refused
 * it) the genuine one. */
enum {
    SIM_SERVER_ADVERTISE,   /* server_recv in stage ADVERTISE */
    SIM_SERVER_SHARES,      /* server_recv in stage SHARE */
    SIM_SERVER_MASKED,      /* server_recv in stage MASKED */
    SIM_SERVER_UNMASK_RESP, /* server_recv in stage UNMASK */
    SIM_CLIENT_KEYS,        /* client_share_keys */
    SIM_CLIENT_SHARES_FWD,  /* client_masked_input */
    SIM_CLIENT_UNMASK_REQ,  /* client_unmask */
    SIM_POINTS
};

/* ---- deterministic randombytes (SplitMix64) ---- */
static uint64_t sim_rng_state;
static const char *sim_rng_name(void)
{
    return "fedc-fuzz-splitmix64";
}
static uint32_t sim_rng_random(void)
{
    uint64_t z = (sim_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}
static void sim_rng_buf(void *buf, size_t n)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)sim_rng_random();
}
static randombytes_implementation sim_rng_impl = {
    .implementation_name = sim_rng_name, .random = sim_rng_random, .buf = sim_rng_buf};

static void sim_setup(void)
{
    if (randombytes_set_implementation(&sim_rng_impl) != 0 || sodium_init() < 0) abort();
}

/* A message at the chosen point: the fuzz input (inject) or, recording,
 * a copy of the genuine one (*rec, *reclen; malloc'd). */
typedef struct sim_io {
    int point;
    const uint8_t *inject;
    size_t inject_len;
    uint8_t **rec;
    size_t *reclen;
    int accepted; /* the fuzz message was taken */
} sim_io;

static void sim_record(sim_io *io, const uint8_t *msg, size_t len)
{
    *io->rec = malloc(len ? len : 1);
    if (!*io->rec) abort();
    memcpy(*io->rec, msg, len);
    *io->reclen = len;
}

/* The server's side of a point: deliver the input before the stage's messages. */
static void sim_server_point(sim_io *io, int point, fedc__sa_server *s, const uint8_t *genuine, size_t len)
{
    char err[FEDC_ERRMSG_MAX];
    if (io->point != point) return;
    if (io->rec) {
        if (!*io->rec) sim_record(io, genuine, len);
        return;
    }
    if (io->inject) {
        err[0] = '\0';
        int rc = fedc__sa_server_recv(s, io->inject, io->inject_len, err, sizeof err);
        if (rc == FEDC_OK)
            io->accepted = 1;
        else if (err[0] == '\0')
            abort(); /* every refusal comes with a message */
        io->inject = NULL;
    }
}

/* Plays the round; returns 1 when it completed with the right sum. */
static int sim_round(sim_io *io)
{
    char err[FEDC_ERRMSG_MAX];
    fedc__sa_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.round = 7;
    cfg.n = SIM_N;
    cfg.k = SIM_N - 1;
    cfg.t = 3;
    cfg.dim = SIM_DIM;
    fedc__sa_server *s = NULL;
    fedc__sa_client *c[SIM_N] = {0};
    uint32_t q[SIM_N][SIM_DIM], want[SIM_DIM] = {0}, sum[SIM_DIM], surv = 0;
    int ok = 0;
    sim_rng_state = 0xfedc;
    for (uint32_t i = 0; i < SIM_N; i++)
        for (uint32_t d = 0; d < SIM_DIM; d++) {
            q[i][d] = 1000u * i + d;
            want[d] += q[i][d];
        }
    if (fedc__sa_server_create(&cfg, &s, err, sizeof err)) abort();
    for (uint32_t i = 0; i < SIM_N; i++)
        if (fedc__sa_client_create(&cfg, i, &c[i], err, sizeof err)) abort();

    /* Stage 1: advertise. */
    uint8_t *msg[SIM_N] = {0};
    size_t len[SIM_N] = {0};
    for (uint32_t i = 0; i < SIM_N; i++)
        if (fedc__sa_client_advertise(c[i], &msg[i], &len[i], err, sizeof err)) abort();
    sim_server_point(io, SIM_SERVER_ADVERTISE, s, msg[0], len[0]);
    for (uint32_t i = 0; i < SIM_N; i++) {
        (void)fedc__sa_server_recv(s, msg[i], len[i], err, sizeof err);
        free(msg[i]);
        msg[i] = NULL;
    }
    if (fedc__sa_server_advance(s, err, sizeof err)) goto out;

    /* Stages 2 to 4: the server's message to each client, its answer. */
    for (int stage = 0; stage < 3; stage++) {
        int cpoint = SIM_CLIENT_KEYS + stage, spoint = SIM_SERVER_SHARES + stage;
        for (uint32_t i = 0; i < SIM_N; i++) {
            uint8_t *in = NULL, *out = NULL;
            size_t inlen = 0, outlen = 0;
            if (fedc__sa_server_message_for(s, i, &in, &inlen, err, sizeof err)) continue;
            int rc = -1;
            for (int attempt = 0; attempt < 2 && rc != FEDC_OK; attempt++) {
                const uint8_t *use = in;
                size_t uselen = inlen;
                if (attempt == 0 && i == 0 && io->point == cpoint) {
                    if (io->rec) {
                        if (!*io->rec) sim_record(io, in, inlen);
                    } else if (io->inject) {
                        use = io->inject;
                        uselen = io->inject_len;
                        io->inject = NULL;
                    }
                } else if (attempt == 1 && use == in && io->point != cpoint) {
                    break;
                }
                err[0] = '\0';
                switch (stage) {
                case 0:
                    rc = fedc__sa_client_share_keys(c[i], use, uselen, &out, &outlen, err, sizeof err);
                    break;
                case 1:
                    rc = fedc__sa_client_masked_input(c[i], use, uselen, q[i], SIM_DIM, &out, &outlen, err,
                                                      sizeof err);
                    break;
                default:
                    rc = fedc__sa_client_unmask(c[i], use, uselen, &out, &outlen, err, sizeof err);
                    break;
                }
                if (rc != FEDC_OK && err[0] == '\0') abort();
                if (use != in && rc == FEDC_OK) io->accepted = 1;
            }
            free(in);
            if (rc == FEDC_OK) {
                msg[i] = out;
                len[i] = outlen;
            }
        }
        sim_server_point(io, spoint, s, msg[0] ? msg[0] : (const uint8_t *)"", msg[0] ? len[0] : 0);
        for (uint32_t i = 0; i < SIM_N; i++) {
            if (msg[i]) (void)fedc__sa_server_recv(s, msg[i], len[i], err, sizeof err);
            free(msg[i]);
            msg[i] = NULL;
        }
        if (stage < 2 && fedc__sa_server_advance(s, err, sizeof err)) goto out;
    }
    if (fedc__sa_server_finish(s, sum, SIM_DIM, &surv, err, sizeof err) == FEDC_OK)
        ok = surv == SIM_N && memcmp(sum, want, sizeof sum) == 0;
out:
    fedc__sa_server_destroy(s);
    for (uint32_t i = 0; i < SIM_N; i++) fedc__sa_client_destroy(c[i]);
    return ok;
}

#endif
