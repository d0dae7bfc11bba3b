/* fedc client: the built-in trainer on local data, connected through the
 * client library's callbacks exactly as user code would be. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "fedc/client.h"
#include "fedc/data.h"
#include "fedc/nn.h"

#define CMD "client"

static const char usage_text[] =
    "usage: fedc client --server HOST:PORT --data DIR [FLAGS]\n"
    "\n"
    "Trains the built-in model on the data in DIR whenever the server asks, and\n"
    "sends back only the updated parameters. DIR is a data directory (docs/data.md):\n"
    "its train split is used for training, its test split for federated evaluation.\n"
    "\n"
    "  --server HOST:PORT      the server (required)\n"
    "  --data DIR              local data directory (required; checked before connecting)\n"
    "  --node-id ID            this node's id (default: random, printed at start)\n"
    "  --connect-timeout S     keep retrying an unreachable server for S s (default 60)\n"
    "  --model mlp|cnn         architecture offered if the server has no model (default cnn)\n"
    "  --seed S                seed of that initial model (default 0)\n"
    "  --threads N             BLAS threads for training (default 1)\n";

typedef struct trainer {
    fedc_dataset *train, *test;
    fedc_model *model;
    const char *default_arch;
    uint64_t seed;
} trainer;

/* Makes sure the model has the architecture the server asked for. */
static int ensure_model(trainer *t, const fedc_config *cfg, char *err, size_t errlen)
{
    const char *arch = NULL;
    if (fedc_config_get_str(cfg, "model", &arch) != FEDC_OK) arch = t->default_arch;
    if (t->model && !strcmp(fedc_model_arch(t->model), arch)) return FEDC_OK;
    fedc_model_destroy(t->model);
    t->model = NULL;
    return fedc_model_create(arch, t->seed, &t->model, err, errlen);
}

static int check_geometry(trainer *t, const fedc_dataset *d, char *err, size_t errlen)
{
    int c, h, w;
    fedc_model_input_shape(t->model, &c, &h, &w);
    if ((size_t)c * (size_t)h * (size_t)w != d->features)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                              "model '%s' expects %dx%dx%d inputs, the local data has %zu features per example",
                              fedc_model_arch(t->model), c, h, w, d->features);
    return FEDC_OK;
}

static int cb_get_parameters(void *user, const fedc_config *cfg, fedc_params **out, char *err, size_t errlen)
{
    trainer *t = user;
    int rc = ensure_model(t, cfg, err, errlen);
    if (rc) return rc;
    *out = fedc_params_clone(fedc_model_params(t->model));
    return *out ? FEDC_OK : FEDC_ERR_NOMEM;
}

static int cb_fit(void *user, fedc_params *params, const fedc_config *cfg, uint64_t *num_examples,
                  fedc_config *metrics, char *err, size_t errlen)
{
    trainer *t = user;
    int rc = ensure_model(t, cfg, err, errlen);
    if (!rc) rc = check_geometry(t, t->train, err, errlen);
    if (!rc) rc = fedc_model_set_params(t->model, params, err, errlen);
    if (rc) return rc;
    fedc_train_config tc = {
        .lr = fedc_config_f64_or(cfg, "lr", 0.05),
        .momentum = fedc_config_f64_or(cfg, "momentum", 0.0),
        .weight_decay = fedc_config_f64_or(cfg, "weight_decay", 0.0),
        .epochs = (int)fedc_config_i64_or(cfg, "local_epochs", 1),
        .batch_size = (int)fedc_config_i64_or(cfg, "batch_size", 32),
        .seed = (uint64_t)fedc_config_i64_or(cfg, "seed", 0),
    };
    fedc_train_stats st;
    rc = fedc_model_train(t->model, t->train->x, t->train->y, t->train->n, &tc, &st, err, errlen);
    if (rc) return rc;
    rc = fedc_params_copy_data(params, fedc_model_params(t->model), err, errlen);
    if (rc) return rc;
    *num_examples = t->train->n;
    fedc_config_set_f64(metrics, "train_loss", st.loss);
    fedc_config_set_f64(metrics, "train_accuracy", st.accuracy);
    return FEDC_OK;
}

static int cb_evaluate(void *user, const fedc_params *params, const fedc_config *cfg, double *loss,
                       uint64_t *num_examples, fedc_config *metrics, char *err, size_t errlen)
{
    trainer *t = user;
    if (!t->test) return fedc_set_error(err, errlen, FEDC_ERR_NOTFOUND, "this client has no local test split");
    int rc = ensure_model(t, cfg, err, errlen);
    if (!rc) rc = check_geometry(t, t->test, err, errlen);
    if (!rc) rc = fedc_model_set_params(t->model, params, err, errlen);
    if (rc) return rc;
    fedc_eval_stats st;
    rc = fedc_model_evaluate(t->model, t->test->x, t->test->y, t->test->n, 256, &st, err, errlen);
    if (rc) return rc;
    *loss = st.loss;
    *num_examples = t->test->n;
    fedc_config_set_f64(metrics, "accuracy", st.accuracy);
    return FEDC_OK;
}

static fedc_client *g_client;
static void on_signal(int sig)
{
    (void)sig;
    if (g_client) fedc_client_stop(g_client);
}

enum { OPT_SERVER = 256, OPT_DATA, OPT_NODE, OPT_CONNECT, OPT_MODEL, OPT_SEED, OPT_THREADS, OPT_HELP };

int fedc_cmd_client(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"server", required_argument, NULL, OPT_SERVER},
        {"data", required_argument, NULL, OPT_DATA},
        {"node-id", required_argument, NULL, OPT_NODE},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT},
        {"model", required_argument, NULL, OPT_MODEL},
        {"seed", required_argument, NULL, OPT_SEED},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0}};
    fedc_client_options opt;
    fedc_client_options_init(&opt);
    const char *data = NULL;
    trainer t = {.default_arch = "cnn"};
    uint64_t threads = 1;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_SERVER: opt.server = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_NODE: opt.node_id = optarg; break;
        case OPT_CONNECT:
            if (cli_double(CMD, "--connect-timeout", optarg, 0, 1e7, &opt.connect_timeout)) return FEDC_EXIT_USAGE;
            break;
        case OPT_MODEL: t.default_arch = optarg; break;
        case OPT_SEED:
            if (cli_u64(CMD, "--seed", optarg, 0, UINT64_MAX, &t.seed)) return FEDC_EXIT_USAGE;
            break;
        case OPT_THREADS:
            if (cli_u64(CMD, "--threads", optarg, 1, 1024, &threads)) return FEDC_EXIT_USAGE;
            break;
        case OPT_HELP: fputs(usage_text, stdout); return FEDC_EXIT_OK;
        default: cli_unknown_flag(CMD, argv[optind - 1]); return FEDC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return FEDC_EXIT_USAGE;
    }
    if (!opt.server || !data) {
        cli_error(CMD, "%s is required (see 'fedc client --help')", !opt.server ? "--server" : "--data");
        return FEDC_EXIT_USAGE;
    }
    char err[FEDC_ERRMSG_MAX];
    if (fedc_model_create(t.default_arch, 0, &t.model, err, sizeof err)) {
        cli_error(CMD, "--model: %s", err);
        return FEDC_EXIT_USAGE;
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
    if (check_geometry(&t, t.train, err, sizeof err)) {
        cli_error(CMD, "--data: %s", err);
        goto done;
    }
    fedc_nn_set_threads((int)threads);
    fedc_client_callbacks cb = {cb_get_parameters, cb_fit, cb_evaluate};
    cl = fedc_client_create(&opt, &cb, &t);
    if (!cl) {
        cli_error(CMD, opt.node_id ? "invalid --node-id '%s': use 1 to 128 characters of [A-Za-z0-9._:-]"
                                   : "out of memory%s", opt.node_id ? opt.node_id : "");
        exit_code = opt.node_id ? FEDC_EXIT_USAGE : FEDC_EXIT_FAILURE;
        goto done;
    }
    printf("node id: %s (%zu training examples, %zu test examples)\n", fedc_client_node_id(cl), t.train->n,
           t.test ? t.test->n : (size_t)0);
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
    fedc_model_destroy(t.model);
    fedc_dataset_destroy(t.train);
    fedc_dataset_destroy(t.test);
    return exit_code;
}
