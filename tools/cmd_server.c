/* fedc server: flags -> fedc_server_options, plus the built-in model
 * (--model), model files (--initial-model) and centralised evaluation on a
 * held-out dataset (--test-data). */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "fedc/data.h"
#include "fedc/nn.h"
#include "fedc/server.h"

#define CMD "server"

static const char usage_text[] =
    "usage: fedc server [FLAGS]\n"
    "\n"
    "Waits for clients, then runs rounds: sample clients, send them the global\n"
    "model, fold their updates into a FedAvg aggregate as they arrive, evaluate.\n"
    "\n"
    "  --listen HOST:PORT        address to listen on (default 127.0.0.1:7000)\n"
    "  --rounds R                the cap on rounds (default 10)\n"
    "  --target-accuracy A       stop once accuracy reaches A (central if --test-data,\n"
    "                            else federated); exit 3 if --rounds comes first\n"
    "  --min-clients K           clients needed to start, and results per round (default 2)\n"
    "  --sampling fixed|poisson  client sampling (default fixed)\n"
    "  --fraction-fit F          share of clients sampled per round (default 1.0)\n"
    "  --fraction-evaluate F     share of clients asked to evaluate (default 1.0)\n"
    "  --round-timeout S         seconds to wait for results per stage (default 600)\n"
    "  --wait-timeout S          give up if K clients are not connected within S s (default: wait)\n"
    "  --model mlp|cnn           start from the built-in architecture\n"
    "  --initial-model FILE      start from a safetensors file\n"
    "                            (neither: ask the first client for its parameters)\n"
    "  --lr X --momentum X --weight-decay X --local-epochs N --batch-size N\n"
    "                            training settings sent to the clients each round\n"
    "                            (defaults 0.05, 0.9, 0, 1, 32)\n"
    "  --test-data DIR           evaluate the global model on DIR's test split every round\n"
    "  --out DIR                 write DIR/metrics.jsonl and DIR/model.safetensors (default out)\n"
    "  --seed S                  seed for sampling and client training (default 0)\n"
    "  --max-frame-bytes N       largest frame accepted (default 16777216)\n"
    "  --quiet                   no progress lines\n";

typedef struct central {
    fedc_model *model;
    fedc_dataset *test;
} central;

static const char *match_arch(const fedc_params *p);

static int central_eval(void *user, const fedc_params *p, uint64_t round, double *loss, double *acc,
                        char *err, size_t errlen)
{
    central *c = user;
    (void)round;
    if (!c->model) {
        /* The model may have come from a client: its layout tells which
         * built-in architecture can evaluate it. */
        const char *arch = match_arch(p);
        if (!arch)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED,
                                  "the model matches no built-in architecture, so --test-data cannot evaluate it");
        int rc = fedc_model_create(arch, 0, &c->model, err, errlen);
        if (rc) return rc;
    }
    int rc = fedc_model_set_params(c->model, p, err, errlen);
    if (rc) return rc;
    fedc_eval_stats st;
    rc = fedc_model_evaluate(c->model, c->test->x, c->test->y, c->test->n, 500, &st, err, errlen);
    if (rc) return rc;
    *loss = st.loss;
    *acc = st.accuracy;
    return FEDC_OK;
}

typedef struct progress {
    uint64_t rounds;
    int quiet;
} progress;

static void on_round(void *user, const fedc_round_record *r)
{
    progress *pr = user;
    if (pr->quiet) return;
    double acc = isfinite(r->central_eval_accuracy) ? r->central_eval_accuracy : r->fed_eval_accuracy;
    double loss = isfinite(r->central_eval_loss) ? r->central_eval_loss : r->fed_eval_loss;
    char lbuf[32], abuf[32], tbuf[32];
    snprintf(tbuf, sizeof tbuf, isfinite(r->train_loss) ? "%.4f" : "-", r->train_loss);
    snprintf(lbuf, sizeof lbuf, isfinite(loss) ? "%.4f" : "-", loss);
    snprintf(abuf, sizeof abuf, isfinite(acc) ? "%.4f" : "-", acc);
    printf("round %3llu/%llu  clients %u ok %u failed  train loss %s  eval loss %s  accuracy %s  %6.1f s  %7.1f MB%s%s\n",
           (unsigned long long)r->round, (unsigned long long)pr->rounds, r->clients_ok, r->clients_failed, tbuf,
           lbuf, abuf, r->seconds, (double)(r->bytes_sent + r->bytes_received) / 1e6, r->failed ? "  FAILED: " : "",
           r->failed ? r->failure_reason : "");
    fflush(stdout);
}

static fedc_server *g_server;
static void on_signal(int sig)
{
    (void)sig;
    if (g_server) fedc_server_stop(g_server);
}

/* The built-in architecture whose layout equals p, or NULL. */
static const char *match_arch(const fedc_params *p)
{
    static const char *archs[] = {"cnn", "mlp"};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        fedc_model *m = NULL;
        if (fedc_model_create(archs[i], 0, &m, NULL, 0)) continue;
        int same = fedc_params_check_same_layout(fedc_model_params(m), p, NULL, 0) == FEDC_OK;
        fedc_model_destroy(m);
        if (same) return archs[i];
    }
    return NULL;
}

enum {
    OPT_LISTEN = 256, OPT_ROUNDS, OPT_TARGET, OPT_MIN_CLIENTS, OPT_SAMPLING, OPT_FRACTION_FIT,
    OPT_FRACTION_EVAL, OPT_ROUND_TIMEOUT, OPT_WAIT_TIMEOUT, OPT_MODEL, OPT_INITIAL, OPT_LR, OPT_MOMENTUM,
    OPT_WD, OPT_EPOCHS, OPT_BATCH, OPT_TEST_DATA, OPT_OUT, OPT_SEED, OPT_MAX_FRAME, OPT_QUIET, OPT_HELP
};

int fedc_cmd_server(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"rounds", required_argument, NULL, OPT_ROUNDS},
        {"target-accuracy", required_argument, NULL, OPT_TARGET},
        {"min-clients", required_argument, NULL, OPT_MIN_CLIENTS},
        {"sampling", required_argument, NULL, OPT_SAMPLING},
        {"fraction-fit", required_argument, NULL, OPT_FRACTION_FIT},
        {"fraction-evaluate", required_argument, NULL, OPT_FRACTION_EVAL},
        {"round-timeout", required_argument, NULL, OPT_ROUND_TIMEOUT},
        {"wait-timeout", required_argument, NULL, OPT_WAIT_TIMEOUT},
        {"model", required_argument, NULL, OPT_MODEL},
        {"initial-model", required_argument, NULL, OPT_INITIAL},
        {"lr", required_argument, NULL, OPT_LR},
        {"momentum", required_argument, NULL, OPT_MOMENTUM},
        {"weight-decay", required_argument, NULL, OPT_WD},
        {"local-epochs", required_argument, NULL, OPT_EPOCHS},
        {"batch-size", required_argument, NULL, OPT_BATCH},
        {"test-data", required_argument, NULL, OPT_TEST_DATA},
        {"out", required_argument, NULL, OPT_OUT},
        {"seed", required_argument, NULL, OPT_SEED},
        {"max-frame-bytes", required_argument, NULL, OPT_MAX_FRAME},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0}};
    fedc_server_options opt;
    fedc_server_options_init(&opt);
    opt.out_dir = "out";
    const char *model_name = NULL, *initial = NULL, *test_dir = NULL;
    double lr = 0.05, momentum = 0.9, wd = 0.0;
    uint64_t epochs = 1, batch = 32, u;
    double d;
    int quiet = 0, c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LISTEN: opt.listen = optarg; break;
        case OPT_ROUNDS:
            if (cli_u64(CMD, "--rounds", optarg, 1, 1000000, &opt.rounds)) return FEDC_EXIT_USAGE;
            break;
        case OPT_TARGET:
            if (cli_double(CMD, "--target-accuracy", optarg, 0, 1, &opt.target_accuracy)) return FEDC_EXIT_USAGE;
            break;
        case OPT_MIN_CLIENTS:
            if (cli_u64(CMD, "--min-clients", optarg, 1, 1000000, &u)) return FEDC_EXIT_USAGE;
            opt.min_clients = (uint32_t)u;
            break;
        case OPT_SAMPLING:
            if (!strcmp(optarg, "fixed")) opt.sampling = FEDC_SAMPLING_FIXED;
            else if (!strcmp(optarg, "poisson")) opt.sampling = FEDC_SAMPLING_POISSON;
            else {
                cli_error(CMD, "--sampling must be 'fixed' or 'poisson', got '%s'", optarg);
                return FEDC_EXIT_USAGE;
            }
            break;
        case OPT_FRACTION_FIT:
            if (cli_double(CMD, "--fraction-fit", optarg, 1e-9, 1, &opt.fraction_fit)) return FEDC_EXIT_USAGE;
            break;
        case OPT_FRACTION_EVAL:
            if (cli_double(CMD, "--fraction-evaluate", optarg, 0, 1, &opt.fraction_evaluate)) return FEDC_EXIT_USAGE;
            break;
        case OPT_ROUND_TIMEOUT:
            if (cli_double(CMD, "--round-timeout", optarg, 0.001, 1e7, &opt.round_timeout)) return FEDC_EXIT_USAGE;
            break;
        case OPT_WAIT_TIMEOUT:
            if (cli_double(CMD, "--wait-timeout", optarg, 0, 1e7, &opt.wait_timeout)) return FEDC_EXIT_USAGE;
            break;
        case OPT_MODEL: model_name = optarg; break;
        case OPT_INITIAL: initial = optarg; break;
        case OPT_LR:
            if (cli_double(CMD, "--lr", optarg, 1e-12, 1e6, &lr)) return FEDC_EXIT_USAGE;
            break;
        case OPT_MOMENTUM:
            if (cli_double(CMD, "--momentum", optarg, 0, 0.999999, &momentum)) return FEDC_EXIT_USAGE;
            break;
        case OPT_WD:
            if (cli_double(CMD, "--weight-decay", optarg, 0, 1e3, &wd)) return FEDC_EXIT_USAGE;
            break;
        case OPT_EPOCHS:
            if (cli_u64(CMD, "--local-epochs", optarg, 1, 100000, &epochs)) return FEDC_EXIT_USAGE;
            break;
        case OPT_BATCH:
            if (cli_u64(CMD, "--batch-size", optarg, 1, 1000000, &batch)) return FEDC_EXIT_USAGE;
            break;
        case OPT_TEST_DATA: test_dir = optarg; break;
        case OPT_OUT: opt.out_dir = optarg; break;
        case OPT_SEED:
            if (cli_u64(CMD, "--seed", optarg, 0, UINT64_MAX, &opt.seed)) return FEDC_EXIT_USAGE;
            break;
        case OPT_MAX_FRAME:
            if (cli_u64(CMD, "--max-frame-bytes", optarg, (1u << 20) + 64, UINT32_MAX, &u)) return FEDC_EXIT_USAGE;
            opt.max_frame_bytes = (uint32_t)u;
            break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: fputs(usage_text, stdout); return FEDC_EXIT_OK;
        default: cli_unknown_flag(CMD, argv[optind - 1]); return FEDC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return FEDC_EXIT_USAGE;
    }
    if (model_name && initial) {
        cli_error(CMD, "--model and --initial-model exclude each other");
        return FEDC_EXIT_USAGE;
    }
    (void)d;

    int exit_code = FEDC_EXIT_FAILURE;
    char err[FEDC_ERRMSG_MAX];
    fedc_params *init = NULL;
    fedc_model *m = NULL;
    central cen = {0};
    fedc_config *cfg = fedc_config_create();
    fedc_server *s = NULL;
    if (!cfg) goto done;

    if (model_name) {
        if (fedc_model_create(model_name, opt.seed, &m, err, sizeof err)) {
            cli_error(CMD, "--model: %s", err);
            exit_code = FEDC_EXIT_USAGE;
            goto done;
        }
        init = fedc_params_clone(fedc_model_params(m));
        fedc_model_destroy(m);
        m = NULL;
    } else if (initial) {
        if (fedc_params_load(initial, &init, err, sizeof err)) {
            cli_error(CMD, "--initial-model: %s", err);
            goto done;
        }
        model_name = match_arch(init);
    }
    if (test_dir) {
        if (fedc_dataset_load_dir(test_dir, "test", &cen.test, err, sizeof err)) {
            cli_error(CMD, "--test-data: %s", err);
            goto done;
        }
    }
    if (model_name) fedc_config_set_str(cfg, "model", model_name);
    fedc_config_set_f64(cfg, "lr", lr);
    fedc_config_set_f64(cfg, "momentum", momentum);
    fedc_config_set_f64(cfg, "weight_decay", wd);
    fedc_config_set_i64(cfg, "local_epochs", (int64_t)epochs);
    fedc_config_set_i64(cfg, "batch_size", (int64_t)batch);
    opt.fit_config = cfg;
    opt.initial_model = init;

    progress pr = {opt.rounds, quiet};
    opt.on_round = on_round;
    opt.on_round_user = &pr;
    if (cen.test) {
        opt.central_eval = central_eval;
        opt.central_eval_user = &cen;
    }
    s = fedc_server_create(&opt, err, sizeof err);
    if (!s) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    /* The server keeps its own copy of the model; ours can go. */
    fedc_params_destroy(init);
    init = NULL;
    g_server = s;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int rc = fedc_server_run(s);
    g_server = NULL;
    if (rc == FEDC_OK) {
        exit_code = FEDC_EXIT_OK;
        if (!quiet && opt.out_dir)
            printf("done: model in %s/model.safetensors, metrics in %s/metrics.jsonl\n", opt.out_dir, opt.out_dir);
    } else {
        cli_error(CMD, "%s", fedc_server_errmsg(s)[0] ? fedc_server_errmsg(s) : fedc_strerror(rc));
        if (!quiet && opt.out_dir && fedc_server_model(s))
            printf("model in %s/model.safetensors, metrics in %s/metrics.jsonl\n", opt.out_dir, opt.out_dir);
        exit_code = rc == FEDC_ERR_NOTREACHED ? FEDC_EXIT_NOTREACHED : FEDC_EXIT_FAILURE;
    }
done:
    fedc_server_destroy(s);
    fedc_params_destroy(init);
    fedc_model_destroy(cen.model);
    fedc_dataset_destroy(cen.test);
    fedc_config_destroy(cfg);
    return exit_code;
}
