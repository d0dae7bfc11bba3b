/*
 * libFuzzer target: the server's side of the connection set-up, with node
 * authentication on. One fedc_server (plaintext, authorized keys from a
 * temporary file listing two fixed keys of handshake_sim.h, never run) is
 * made at start-up; each input is what a new client sends on its
 * connection. It goes through the server's own frame reader and message
 * handling as the bytes of a simulated client (server_internal.h:
 * fedc__server_add_virtual, fedc__server_feed, fedc__server_disconnect):
 * Hello, the node key check, the AuthChallenge, the AuthResponse and
 * whatever follows.
 *
 * Input: byte 0 picks where the rest is cut in two (byte 0 modulo the
 * rest's length + 1), so that frames arrive in pieces; the two pieces are
 * fed one after the other, then the client disconnects.
 *
 * Besides "no crash, no leak, no sanitizer report", every frame the server
 * sends must decode and be AuthChallenge, Welcome or Error, in an order the
 * protocol allows (nothing after an Error; one challenge, with the nonce
 * of the seeded generator; a Welcome only after the challenge), and a
 * Welcome, i.e. an admitted node, needs an input that holds a genuine
 * signature of the nonce by a listed key (the fuzzer cannot forge Ed25519,
 * and Ed25519 signatures are deterministic: those are the only ones it can
 * have, from the seed corpus). After the disconnect the server must hold
 * no connection, idle node or closed node.
 */
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fedc/core.h"
#include "fedc/server.h"
#include "handshake_sim.h"
#include "proto/frame.h"
#include "proto/wire.h"
#include "server/server_impl.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- deterministic randombytes ---- */
static uint64_t g_rng;
static const char *rng_name(void)
{
    return "fedc-fuzz-handshake-splitmix64";
}
static uint32_t rng_random(void)
{
    return hs_rng_next(&g_rng);
}
static void rng_buf(void *buf, size_t n)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)hs_rng_next(&g_rng);
}
static randombytes_implementation rng_impl = {
    .implementation_name = rng_name, .random = rng_random, .buf = rng_buf};

static fedc_server *g_srv;
static char g_keys[64];
static uint8_t g_nonce[FEDC_NODEAUTH_NONCE];
/* The genuine signatures of the nonce: each listed key, for its fingerprint
 * and for its name as the node id. */
static uint8_t g_sigs[2 * HS_NLISTED][FEDC_NODEAUTH_SIG];

/* What the server sent to the current input's client. */
static struct {
    int challenge, welcome, error;
} g_seen;

static void cleanup(void)
{
    fedc_server_destroy(g_srv);
    unlink(g_keys);
}

static void deliver(void *ctx, uint32_t index, uint8_t *frame, size_t frame_len, void *blob,
                    const uv_buf_t *bufs, unsigned nbufs)
{
    (void)ctx;
    (void)bufs;
    (void)nbufs;
    if (blob) fedc__server_blob_release(blob);
    if (index != 0 || blob) abort(); /* no model is sent during a handshake */
    uint8_t type;
    uint32_t len;
    char err[FEDC_ERRMSG_MAX];
    fedc__msg *m = NULL;
    if (frame_len < FEDC_FRAME_HEADER_BYTES ||
        fedc__frame_header_decode(frame, UINT32_MAX, &type, &len, err, sizeof err) != FEDC_OK ||
        type != FEDC_FRAME_MESSAGE || len != frame_len - FEDC_FRAME_HEADER_BYTES ||
        fedc__msg_unpack(frame + FEDC_FRAME_HEADER_BYTES, len, &m, err, sizeof err) != FEDC_OK)
        abort();
    if (g_seen.error) abort(); /* an Error is the last message */
    switch (m->body_case) {
    case FEDC__V1__MESSAGE__BODY_AUTH_CHALLENGE:
        if (g_seen.challenge || g_seen.welcome) abort();
        if (m->auth_challenge->nonce.len != FEDC_NODEAUTH_NONCE ||
            memcmp(m->auth_challenge->nonce.data, g_nonce, FEDC_NODEAUTH_NONCE) != 0)
            abort();
        g_seen.challenge = 1;
        break;
    case FEDC__V1__MESSAGE__BODY_WELCOME:
        if (g_seen.welcome || !g_seen.challenge) abort();
        if (m->welcome->protocol_version != FEDC_PROTOCOL_VERSION) abort();
        g_seen.welcome = 1;
        break;
    case FEDC__V1__MESSAGE__BODY_ERROR:
        if (!m->error->reason || !m->error->reason[0]) abort();
        g_seen.error = 1;
        break;
    default: abort();
    }
    fedc__msg_free(m);
    free(frame);
}

static int contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t k)
{
    for (size_t i = 0; i + k <= n; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, k)) return 1;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (randombytes_set_implementation(&rng_impl) != 0 || sodium_init() < 0) abort();
    if (!getenv("FEDC_LOG")) fedc_log_set_level(FEDC_LOG_OFF); /* every refusal logs a line */
    hs_expected_nonce(g_nonce);

    const char *dir = getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR") : "/tmp";
    snprintf(g_keys, sizeof g_keys, "%s/fedc-fuzz-%ld.keys", dir, (long)getpid());
    FILE *f = fopen(g_keys, "w");
    if (!f) abort();
    fputs("# the authorized keys of fuzz_handshake\n", f);
    for (int k = 0; k < HS_NLISTED; k++) {
        uint8_t pub[FEDC_NODEKEY_PUB_LEN];
        char line[FEDC_NODEKEY_PUB_LINE_MAX], fpr[FEDC_NODEKEY_FPR_LEN + 1];
        EVP_PKEY *key = hs_key(k, pub);
        if (fedc__nodekey_format_pub(pub, hs_key_names[k], line, sizeof line) != FEDC_OK) abort();
        fprintf(f, "%s\n", line);
        fedc__nodekey_fingerprint(pub, fpr);
        if (fedc__nodeauth_sign(key, g_nonce, fpr, NULL, 0, g_sigs[2 * k]) != FEDC_OK ||
            fedc__nodeauth_sign(key, g_nonce, hs_key_names[k], NULL, 0, g_sigs[2 * k + 1]) != FEDC_OK)
            abort();
        EVP_PKEY_free(key);
    }
    if (fclose(f)) abort();

    fedc_server_options o;
    fedc_server_options_init(&o);
    o.listen = "127.0.0.1:0";
    o.insecure = 1; /* the simulated clients have no TLS */
    o.authorized_keys = g_keys;
    o.min_clients = 1000; /* never reached: the server is never run anyway */
    char err[FEDC_ERRMSG_MAX];
    g_srv = fedc_server_create(&o, err, sizeof err);
    if (!g_srv) {
        fprintf(stderr, "fuzz_handshake: cannot create the server: %s\n", err);
        abort();
    }
    fedc__virtual_transport t = {.deliver = deliver};
    fedc__server_set_virtual(g_srv, &t);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const uint8_t *in = data + 1;
    size_t len = size - 1, cut = data[0] % (len + 1);
    g_rng = HS_RNG_SEED;
    memset(&g_seen, 0, sizeof g_seen);

    if (fedc__server_add_virtual(g_srv, 0) != FEDC_OK) abort();
    if (cut) fedc__server_feed(g_srv, 0, in, cut);
    if (len > cut) fedc__server_feed(g_srv, 0, in + cut, len - cut);
    fedc__server_disconnect(g_srv, 0, NULL);

    /* The client is gone, and nothing of it is left. */
    fedc_server *s = g_srv;
    if (s->nodes || s->nconnections || s->nidle || s->graveyard || s->wait_head || s->vnodes[0]) abort();
    /* Admitted only with a genuine signature in the input. */
    if (g_seen.welcome) {
        int genuine = 0;
        for (int i = 0; i < 2 * HS_NLISTED && !genuine; i++)
            genuine = contains(in, len, g_sigs[i], FEDC_NODEAUTH_SIG);
        if (!genuine) abort();
    }
    /* Blocks of its own for each outcome, so that libFuzzer tells them apart. */
    static volatile unsigned outcome[8];
    switch (g_seen.challenge << 2 | g_seen.welcome << 1 | g_seen.error) {
    case 0: outcome[0]++; break; /* nothing sent: an incomplete hello */
    case 1: outcome[1]++; break; /* refused at once */
    case 4: outcome[4]++; break; /* challenged, no answer */
    case 5: outcome[5]++; break; /* challenged, refused */
    case 6: outcome[6]++; break; /* admitted */
    case 7: outcome[7]++; break; /* admitted, then refused */
    default: abort();            /* a Welcome without a challenge is caught in deliver() */
    }
    return 0;
}
