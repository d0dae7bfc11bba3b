/* A 2.5 GiB tensor travels each way between the real fedc server and one
 * client, with its hash checked at both ends.
 *
 * The server starts without a model, so it asks this client for its
 * parameters: one F32 tensor of 2.5 GiB goes client -> server, and the
 * server logs the BLAKE2b-256 of what it received. The server then sends the
 * model back with the round-1 fit request: server -> client, where the fit
 * callback hashes it. Both hashes must equal the hash of what was made here.
 * The fit callback then declines to train (the test is about transport), so
 * the server never needs memory for aggregating 2.5 GiB.
 *
 * FEDC_HUGE_BYTES overrides the size (a multiple of 4). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <sodium.h>

#include "fedc/client.h"

static unsigned char g_want[32];
static int g_fit_verified = -1;
static size_t g_bytes;

static void hash_params(const fedc_params *p, unsigned char out[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        crypto_generichash_update(&st, t->data, t->nbytes);
    }
    crypto_generichash_final(&st, out, 32);
}

static int get_parameters(void *user, const fedc_config *cfg, fedc_params **out, char *err, size_t errlen)
{
    (void)user;
    (void)cfg;
    fedc_params *p = fedc_params_create();
    int64_t shape[2] = {(int64_t)(g_bytes / 4 / 16384), 16384};
    fedc_tensor *t = NULL;
    int rc = fedc_params_add(p, "huge.weight", FEDC_F32, 2, shape, NULL, &t, err, errlen);
    if (rc) return rc;
    /* Distinct, position-dependent values: a lost, repeated or swapped chunk
     * changes the hash. */
    uint32_t *w = t->data;
    size_t n = t->nbytes / 4;
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        w[i] = (x & 0x807fffffu) | 0x3f000000u; /* finite floats in +-[0.5, 1) */
    }
    hash_params(p, g_want);
    fprintf(stderr, "test_huge_tensor: sending %zu bytes\n", t->nbytes);
    *out = p;
    return FEDC_OK;
}

static int fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *n, fedc_config *metrics,
               char *err, size_t errlen)
{
    (void)user;
    (void)cfg;
    (void)n;
    (void)metrics;
    unsigned char got[32];
    hash_params(params, got);
    g_fit_verified = fedc_params_nbytes(params) == g_bytes && sodium_memcmp(got, g_want, 32) == 0;
    fprintf(stderr, "test_huge_tensor: received the model back: %zu bytes, hash %s\n",
            fedc_params_nbytes(params), g_fit_verified ? "matches" : "DIFFERS");
    return fedc_set_error(err, errlen, FEDC_ERR_CANCELLED, "transport test: not training");
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) return -1;
    close(fd);
    return ntohs(a.sin_port);
}

int main(void)
{
    const char *bin = getenv("FEDC_BIN");
    const char *env_bytes = getenv("FEDC_HUGE_BYTES");
    g_bytes = env_bytes ? strtoull(env_bytes, NULL, 10) : (size_t)5 << 29; /* 2.5 GiB */
    if (!bin || g_bytes % (4 * 16384) || sodium_init() < 0) {
        fprintf(stderr, "test_huge_tensor: set FEDC_BIN; FEDC_HUGE_BYTES must be a multiple of 65536\n");
        return 2;
    }
    char dir[] = "/tmp/fedc-huge.XXXXXX";
    if (!mkdtemp(dir)) return 2;
    char listen[64], logpath[512], cmd[1024];
    int port = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf(logpath, sizeof logpath, "%s/server.log", dir);

    pid_t server = fork();
    if (server == 0) {
        FILE *f = freopen(logpath, "w", stderr);
        (void)f;
        execl(bin, bin, "server", "--listen", listen, "--min-clients", "1", "--rounds", "1",
              "--fraction-evaluate", "0", "--out", dir, "--quiet", "--insecure", (char *)NULL);
        _exit(127);
    }
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    opt.server = listen;
    opt.node_id = "huge";
    opt.insecure = 1; /* a test of sizes, not of TLS */
    opt.connect_timeout = 30;
    fedc_client_callbacks cb = {get_parameters, fit, NULL};
    fedc_client *c = fedc_client_create(&opt, &cb, NULL);
    int rc = fedc_client_run(c);
    if (rc) fprintf(stderr, "test_huge_tensor: client: %s\n", fedc_client_errmsg(c));
    fedc_client_destroy(c);
    int status = 0;
    waitpid(server, &status, 0);

    /* The server logged the hash of what it received. */
    char want_hex[65], line[1024];
    sodium_bin2hex(want_hex, sizeof want_hex, g_want, 32);
    FILE *log = fopen(logpath, "r");
    int server_verified = 0;
    while (log && fgets(line, sizeof line, log)) {
        fputs(line, stderr);
        if (strstr(line, "initial parameters from huge") && strstr(line, want_hex)) server_verified = 1;
    }
    if (log) fclose(log);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) {
    }

    int ok = rc == FEDC_OK && WIFEXITED(status) && WEXITSTATUS(status) == 0 && server_verified &&
             g_fit_verified == 1;
    printf("client -> server: %s\n", server_verified ? "hash matches" : "hash MISSING or DIFFERENT");
    printf("server -> client: %s\n", g_fit_verified == 1 ? "hash matches" : "hash DIFFERENT or not received");
    printf("%s passed, %s failed\n", ok ? "1" : "0", ok ? "0" : "1");
    return ok ? 0 : 1;
}
