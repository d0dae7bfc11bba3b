/* fedc client: the built-in trainer on local data, connected through the
 * client library's callbacks exactly as user code would be. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cli.h"
#include "commands.h"
#include "core/nodekey.h"
#include "data/data_internal.h"
#include "fedc/client.h"
#include "fedc/data.h"
#include "fedc/nn.h"
#include "trainer_cli.h"

#define CMD "client"

static const char usage_text[] =
    "usage: fedc client --server HOST:PORT --data DIR [FLAGS]\n"
    "\n"
    "Trains the built-in model on the data in DIR whenever the server asks, and\n"
    "sends back only the updated parameters. DIR is a data directory (docs/data.md):\n"
    "its train split is used for training, its test split for federated evaluation.\n"
    "\n"
    "  --server HOST:PORT      the server (required)\n"
    "  --ca FILE               TLS: the CA that signed the server's certificate (PEM);\n"
    "                          the certificate must also name HOST (docs/security.md)\n"
    "  --cert FILE --key FILE  TLS: this client's certificate and key, for a server\n"
    "                          that requires them (fedc server --ca)\n"
    "  --server-name NAME      the name the server's certificate must carry (default HOST)\n"
    "  --insecure              connect without TLS (plaintext: anyone on the path can\n"
    "                          read and change the traffic)\n"
    "  --node-key FILE         node authentication: this node's key (fedc keygen); its\n"
    "                          fingerprint is the node id unless --node-id is given\n"
    "  --heartbeat S           probe a silent server after S s (TCP keepalive): a dead\n"
    "                          server or link is noticed within 2S s (default 30; 0: off)\n"
    "  --data DIR              local data directory (required; checked before connecting)\n"
    "  --node-id ID            this node's id (default: random, printed at start)\n"
    "  --connect-timeout S     keep retrying an unreachable server for S s (default 60)\n"
    "  --model ARCH            mlp, mlp-large or cnn: offered if the server has no model\n"
    "                          (default cnn)\n"
    "  --seed S                seed of that initial model (default 0)\n"
    "  --threads N             BLAS threads for training (default 1)\n"
    "  --device cpu|cuda[:N]   where the model trains (default cpu); a GPU that\n"
    "                          cannot be used is an error, never a silent CPU run\n"
    "  --state-dir DIR         where state kept across rounds and restarts lives (made if\n"
    "                          missing): SCAFFOLD's control variate, DIR/scaffold.safetensors,\n"
    "                          and the privacy DP-SGD has spent, DIR/dp_sgd.safetensors.\n"
    "                          One directory per client (default: memory only); remove the\n"
    "                          scaffold file for a new federation, keep the dp_sgd one: it\n"
    "                          counts every federation this data took part in\n"
    "  --attack MODE           testing tool for robust aggregation (default: off): after\n"
    "                          honest training, send a poisoned update instead, with\n"
    "                          u = trained - global: sign-flip sends global - u,\n"
    "                          scale:K global + K*u, gaussian global + noise with each\n"
    "                          tensor's standard deviation of u (seeded by the round)\n";

static fedc_client *g_client;
static void on_signal(int sig)
{
    (void)sig;
    if (g_client) fedc_client_stop(g_client);
}

enum {
    OPT_SERVER = 256,
    OPT_DATA,
    OPT_NODE,
    OPT_CONNECT,
    OPT_MODEL,
    OPT_SEED,
    OPT_THREADS,
    OPT_DEVICE,
    OPT_ATTACK,
    OPT_STATE_DIR,
    OPT_CA,
    OPT_CERT,
    OPT_KEY,
    OPT_SERVER_NAME,
    OPT_INSECURE,
    OPT_HEARTBEAT,
    OPT_NODE_KEY,
    OPT_HELP
};

int fedc_cmd_client(int argc, char **argv)
{
    static const struct option longopts[] = {{"server", required_argument, NULL, OPT_SERVER},
                                             {"data", required_argument, NULL, OPT_DATA},
                                             {"node-id", required_argument, NULL, OPT_NODE},
                                             {"connect-timeout", required_argument, NULL, OPT_CONNECT},
                                             {"model", required_argument, NULL, OPT_MODEL},
                                             {"seed", required_argument, NULL, OPT_SEED},
                                             {"threads", required_argument, NULL, OPT_THREADS},
                                             {"device", required_argument, NULL, OPT_DEVICE},
                                             {"attack", required_argument, NULL, OPT_ATTACK},
                                             {"state-dir", required_argument, NULL, OPT_STATE_DIR},
                                             {"ca", required_argument, NULL, OPT_CA},
                                             {"cert", required_argument, NULL, OPT_CERT},
                                             {"key", required_argument, NULL, OPT_KEY},
                                             {"server-name", required_argument, NULL, OPT_SERVER_NAME},
                                             {"insecure", no_argument, NULL, OPT_INSECURE},
                                             {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
                                             {"node-key", required_argument, NULL, OPT_NODE_KEY},
                                             {"help", no_argument, NULL, OPT_HELP},
                                             {NULL, 0, NULL, 0}};
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    const char *data = NULL;
    trainer t = {.default_arch = "cnn"};
    uint64_t threads = 1;
    const char *device = "cpu", *state_dir = NULL;
    char state_path[4096], dp_state_path[4096];
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SERVER: opt.server = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_NODE: opt.node_id = optarg; break;
        case OPT_CONNECT:
            if (cli_double(CMD, "--connect-timeout", optarg, 0, 1e7, &opt.connect_timeout))
                return FEDC_EXIT_USAGE;
            break;
        case OPT_MODEL: t.default_arch = optarg; break;
        case OPT_SEED:
            if (cli_u64(CMD, "--seed", optarg, 0, UINT64_MAX, &t.seed)) return FEDC_EXIT_USAGE;
            break;
        case OPT_THREADS:
            if (cli_u64(CMD, "--threads", optarg, 1, 1024, &threads)) return FEDC_EXIT_USAGE;
            break;
        case OPT_DEVICE: device = optarg; break;
        case OPT_ATTACK:
            if (trainer_attack_parse(optarg, &t.attack)) {
                cli_error(CMD, "--attack must be " TRAINER_ATTACK_VALUES ", got '%s'", optarg);
                return FEDC_EXIT_USAGE;
            }
            break;
        case OPT_STATE_DIR: state_dir = optarg; break;
        case OPT_CA: opt.tls_ca = optarg; break;
        case OPT_CERT: opt.tls_cert = optarg; break;
        case OPT_KEY: opt.tls_key = optarg; break;
        case OPT_SERVER_NAME: opt.tls_server_name = optarg; break;
        case OPT_INSECURE: opt.insecure = 1; break;
        case OPT_NODE_KEY: opt.node_key = optarg; break;
        case OPT_HEARTBEAT:
            if (cli_double(CMD, "--heartbeat", optarg, 0, 1e6, &opt.heartbeat)) return FEDC_EXIT_USAGE;
            break;
        case OPT_HELP: fputs(usage_text, stdout); return FEDC_EXIT_OK;
        default: cli_unknown_flag(CMD, argv[optind - 1]); return FEDC_EXIT_USAGE;
        }
    }
    if (cli_no_operands(CMD, argc, argv)) return FEDC_EXIT_USAGE;
    if (!opt.server || !data) {
        cli_error(CMD, "%s is required (see 'fedc client --help')", !opt.server ? "--server" : "--data");
        return FEDC_EXIT_USAGE;
    }
    if (opt.insecure && (opt.tls_ca || opt.tls_cert || opt.tls_key)) {
        cli_error(CMD, "--insecure and the TLS flags (--ca, --cert, --key) exclude each other");
        return FEDC_EXIT_USAGE;
    }
    if (!opt.insecure && !opt.tls_ca) {
        cli_error(CMD,
                  "--ca FILE is required to check the server's certificate (fedc certs makes a test set), "
                  "or --insecure for plaintext");
        return FEDC_EXIT_USAGE;
    }
    if (!opt.tls_cert != !opt.tls_key) {
        cli_error(CMD, "%s needs %s", opt.tls_cert ? "--cert" : "--key", opt.tls_cert ? "--key" : "--cert");
        return FEDC_EXIT_USAGE;
    }
    if (opt.insecure)
        fedc_log(FEDC_LOG_WARN, CMD,
                 "--insecure: the connection to %s is plaintext, unauthenticated and "
                 "unencrypted",
                 opt.server);
    int drc = cli_device(CMD, device, &t.device);
    if (drc != FEDC_EXIT_OK) return drc;
    char err[FEDC_ERRMSG_MAX];
    if (state_dir) {
        if ((size_t)snprintf(state_path, sizeof state_path, "%s/scaffold.safetensors", state_dir) >=
            sizeof state_path) {
            cli_error(CMD, "--state-dir: path too long");
            return FEDC_EXIT_USAGE;
        }
        if (fedc__mkdirs(state_dir, err, sizeof err)) {
            cli_error(CMD, "--state-dir: %s", err);
            return FEDC_EXIT_FAILURE;
        }
        t.state_path = state_path;
        snprintf(dp_state_path, sizeof dp_state_path, "%s/dp_sgd.safetensors", state_dir);
        t.dp_state_path = dp_state_path;
    }
    if (fedc_model_create(t.default_arch, 0, &t.model, err, sizeof err)) {
        cli_error(CMD, "--model: %s", err);
        return FEDC_EXIT_USAGE;
    }
    if (t.device.type != FEDC_DEVICE_CPU && fedc_model_set_device(t.model, t.device, err, sizeof err)) {
        cli_error(CMD, "--device: %s", err);
        fedc_model_destroy(t.model);
        return FEDC_EXIT_FAILURE;
    }
    int exit_code = FEDC_EXIT_FAILURE;
    fedc_client *cl = NULL;
    /* The data is checked before any connection is made. */
    if (fedc_dataset_load_dir(data, "train", &t.train, err, sizeof err)) {
        cli_error(CMD, "--data: %s", err);
        goto done;
    }
    int trc = fedc_dataset_load_dir(data, "test", &t.test, err, sizeof err);
    if (trc == FEDC_ERR_NOTFOUND) {
        fedc_log(FEDC_LOG_WARN, CMD, "no test split in %s: federated evaluation requests will fail", data);
    } else if (trc) {
        cli_error(CMD, "--data: %s", err);
        goto done;
    }
    if (trainer_check_geometry(&t, t.train, err, sizeof err)) {
        cli_error(CMD, "--data: %s", err);
        goto done;
    }
    fedc_nn_set_threads((int)threads);
    char fpr[FEDC_NODEKEY_FPR_LEN + 1];
    if (opt.node_key) {
        /* The key is checked now, and its fingerprint is the node id. */
        EVP_PKEY *key = NULL;
        uint8_t pub[FEDC_NODEKEY_PUB_LEN];
        if (fedc__nodekey_load(opt.node_key, &key, pub, err, sizeof err)) {
            cli_error(CMD, "--node-key: %s", err);
            goto done;
        }
        EVP_PKEY_free(key);
        fedc__nodekey_fingerprint(pub, fpr);
        if (!opt.node_id) opt.node_id = fpr;
    }
    cl = fedc_client_create(&opt, &trainer_callbacks, &t);
    if (!cl) {
        cli_error(CMD,
                  opt.node_id ? "invalid --node-id '%s': use 1 to 128 characters of [A-Za-z0-9._:-]"
                              : "out of memory%s",
                  opt.node_id ? opt.node_id : "");
        exit_code = opt.node_id ? FEDC_EXIT_USAGE : FEDC_EXIT_FAILURE;
        goto done;
    }
    printf("node id: %s (%zu training examples, %zu test examples)\n", fedc_client_node_id(cl), t.train->n,
           t.test ? t.test->n : (size_t)0);
    if (t.attack.kind != TRAINER_ATTACK_NONE)
        fedc_log(FEDC_LOG_WARN, CMD, "--attack: this client sends poisoned updates (a testing tool)");
    fflush(stdout);
    g_client = cl;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = fedc_client_run(cl);
    g_client = NULL;
    if (rc == FEDC_OK) {
        exit_code = FEDC_EXIT_OK;
    } else {
        cli_error(CMD, "%s", fedc_client_errmsg(cl));
    }
done:
    fedc_client_destroy(cl);
    trainer_release(&t);
    fedc_dataset_destroy(t.train);
    fedc_dataset_destroy(t.test);
    return exit_code;
}
