/* The server's flags and set-up, shared by fedc server and fedc sim. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "server_cli.h"

const char server_cli_help[] =
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
    "  --model mlp|mlp-large|cnn start from the built-in architecture\n"
    "  --initial-model FILE      start from a safetensors file\n"
    "                            (neither: ask the first client for its parameters)\n"
    "  --lr X --momentum X --weight-decay X --local-epochs N --batch-size N\n"
    "                            training settings sent to the clients each round\n"
    "                            (defaults 0.05, 0.9, 0, 1, 32)\n"
    "  --test-data DIR           evaluate the global model on DIR's test split every round\n"
    "  --out DIR                 write DIR/metrics.jsonl and DIR/model.safetensors (default out)\n"
    "  --seed S                  seed for sampling and client training (default 0)\n"
    "  --cert FILE --key FILE    TLS: the server's certificate chain and key (PEM;\n"
    "                            fedc certs makes a test set; docs/security.md)\n"
    "  --ca FILE                 TLS: clients must present a certificate this CA signed\n"
    "  --insecure                plaintext connections, no TLS (anyone on the path can\n"
    "                            read and change the traffic)\n"
    "  --authorized-keys FILE    node authentication: admit only clients holding one of\n"
    "                            these keys (fedc keygen .pub lines), proved by signing a\n"
    "                            fresh nonce; SIGHUP reloads the file and disconnects\n"
    "                            revoked keys (docs/security.md)\n"
    "  --heartbeat S             probe a silent client after S s (TCP keepalive); drop it\n"
    "                            after 3 unanswered probes, within 2S s (default 30; 0: off)\n"
    "  --max-frame-bytes N       largest frame accepted (default 16777216)\n"
    "  --device cpu|cuda[:N]     where the server aggregates and evaluates (default cpu)\n"
    "  --strategy NAME           how updates become the next model: fedavg (default),\n"
    "                            fedavgm, fedadagrad, fedadam, fedyogi, fedprox, scaffold,\n"
    "                            fednova, or the robust median, trimmed-mean, krum,\n"
    "                            multikrum, bulyan\n"
    "                            (docs/strategies.md)\n"
    "  --server-lr X             server learning rate (fedavgm 1.0, fedadagrad 0.1,\n"
    "                            fedadam 0.1, fedyogi 0.01, scaffold 1.0)\n"
    "  --server-momentum X       fedavgm's server momentum in [0, 1) (default 0)\n"
    "  --beta1 X --beta2 X       adaptive strategies' moment decay rates in [0, 1)\n"
    "                            (beta1: fedadagrad 0, fedadam/fedyogi 0.9; beta2 0.99)\n"
    "  --tau X                   adaptivity > 0 (fedadagrad/fedadam 1e-9, fedyogi 1e-3)\n"
    "  --proximal-mu X           fedprox's proximal term >= 0, sent to the clients (required)\n"
    "  --trim-beta B             trimmed-mean: fraction cut from each end, in [0, 0.5) (0.2)\n"
    "  --byzantine F             krum, multikrum, bulyan: faulty clients tolerated (0)\n"
    "  --krum-m M                multikrum: updates averaged (default n - F)\n"
    "  --dp central|client-clip|local\n"
    "                            differential privacy (docs/privacy.md): the server clips\n"
    "                            and noises (central), the clients clip and the server\n"
    "                            noises (client-clip), or the clients do both (local)\n"
    "  --dp-clip C               L2 norm bound of one client's update (required with --dp)\n"
    "  --dp-noise-multiplier Z   noise standard deviation / C (required with --dp)\n"
    "  --dp-delta D              the delta epsilon is reported at (default 1e-5)\n"
    "  --target-epsilon E        stop before a round that would spend more than E\n"
    "  --dp-sgd-clip C           record-level DP: the clients train with DP-SGD, each\n"
    "                            example's gradient clipped to C (docs/privacy.md)\n"
    "  --dp-sgd-noise-multiplier Z  DP-SGD's noise standard deviation / C\n"
    "  --dp-adaptive             central DP: the clip norm follows a quantile of the\n"
    "                            update norms (Andrew et al. 2021), starting at --dp-clip\n"
    "  --dp-target-quantile Q    that quantile, in (0, 1) (default 0.5)\n"
    "  --dp-clip-lr L            its learning rate (default 0.2)\n"
    "  --dp-clipped-count-stddev S  noise of the count (default max(expected clients / 20, Z))\n"
    "  --secagg                  secure aggregation (docs/secagg.md): the server learns only\n"
    "                            the sum of each round's updates; 3 to 255 clients a round\n"
    "  --secagg-neighbours K     clients each one shares keys with: n - 1 (default up to\n"
    "                            199 clients, then 198) or an even number (SecAgg+)\n"
    "  --secagg-threshold T      neighbours that must stay for a client's masks to be\n"
    "                            removed; more than K/2 (default floor(K/2) + 1)\n"
    "  --secagg-range R          each coordinate of an update is clipped to [-R, R] (8)\n"
    "  --secagg-bits B           bits per coordinate, 1 .. 24 (default: the most that the\n"
    "                            round's sum cannot overflow, up to 24)\n"
    "  --secagg-max-weight W     a client's weight is min(num_examples, W) / W (1000)\n"
    "  --secagg-timeout S        seconds each stage after training waits (default 60)\n"
    "  --quiet                   no progress lines\n";

enum {
    OPT_LISTEN = 256,
    OPT_ROUNDS,
    OPT_TARGET,
    OPT_MIN_CLIENTS,
    OPT_SAMPLING,
    OPT_FRACTION_FIT,
    OPT_FRACTION_EVAL,
    OPT_ROUND_TIMEOUT,
    OPT_WAIT_TIMEOUT,
    OPT_MODEL,
    OPT_INITIAL,
    OPT_LR,
    OPT_MOMENTUM,
    OPT_WD,
    OPT_EPOCHS,
    OPT_BATCH,
    OPT_TEST_DATA,
    OPT_OUT,
    OPT_SEED,
    OPT_MAX_FRAME,
    OPT_DEVICE,
    OPT_QUIET,
    OPT_STRATEGY,
    OPT_SERVER_LR,
    OPT_SERVER_MOMENTUM,
    OPT_BETA1,
    OPT_BETA2,
    OPT_TAU,
    OPT_PROXIMAL_MU,
    OPT_TRIM_BETA,
    OPT_BYZANTINE,
    OPT_KRUM_M,
    OPT_DP,
    OPT_DP_CLIP,
    OPT_DP_NOISE,
    OPT_DP_DELTA,
    OPT_TARGET_EPS,
    OPT_DP_ADAPTIVE,
    OPT_DP_QUANTILE,
    OPT_DP_CLIP_LR,
    OPT_DP_COUNT_SD,
    OPT_DP_SGD_CLIP,
    OPT_DP_SGD_NOISE,
    OPT_SECAGG,
    OPT_SECAGG_K,
    OPT_SECAGG_T,
    OPT_SECAGG_RANGE,
    OPT_SECAGG_BITS,
    OPT_SECAGG_WEIGHT,
    OPT_SECAGG_TIMEOUT,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_INSECURE,
    OPT_HEARTBEAT,
    OPT_AUTH_KEYS
};

const struct option server_cli_options[] = {
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
    {"device", required_argument, NULL, OPT_DEVICE},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"strategy", required_argument, NULL, OPT_STRATEGY},
    {"server-lr", required_argument, NULL, OPT_SERVER_LR},
    {"server-momentum", required_argument, NULL, OPT_SERVER_MOMENTUM},
    {"beta1", required_argument, NULL, OPT_BETA1},
    {"beta2", required_argument, NULL, OPT_BETA2},
    {"tau", required_argument, NULL, OPT_TAU},
    {"proximal-mu", required_argument, NULL, OPT_PROXIMAL_MU},
    {"trim-beta", required_argument, NULL, OPT_TRIM_BETA},
    {"byzantine", required_argument, NULL, OPT_BYZANTINE},
    {"krum-m", required_argument, NULL, OPT_KRUM_M},
    {"dp", required_argument, NULL, OPT_DP},
    {"dp-clip", required_argument, NULL, OPT_DP_CLIP},
    {"dp-noise-multiplier", required_argument, NULL, OPT_DP_NOISE},
    {"dp-delta", required_argument, NULL, OPT_DP_DELTA},
    {"target-epsilon", required_argument, NULL, OPT_TARGET_EPS},
    {"dp-adaptive", no_argument, NULL, OPT_DP_ADAPTIVE},
    {"dp-target-quantile", required_argument, NULL, OPT_DP_QUANTILE},
    {"dp-clip-lr", required_argument, NULL, OPT_DP_CLIP_LR},
    {"dp-clipped-count-stddev", required_argument, NULL, OPT_DP_COUNT_SD},
    {"dp-sgd-clip", required_argument, NULL, OPT_DP_SGD_CLIP},
    {"dp-sgd-noise-multiplier", required_argument, NULL, OPT_DP_SGD_NOISE},
    {"secagg", no_argument, NULL, OPT_SECAGG},
    {"secagg-neighbours", required_argument, NULL, OPT_SECAGG_K},
    {"secagg-threshold", required_argument, NULL, OPT_SECAGG_T},
    {"secagg-range", required_argument, NULL, OPT_SECAGG_RANGE},
    {"secagg-bits", required_argument, NULL, OPT_SECAGG_BITS},
    {"secagg-max-weight", required_argument, NULL, OPT_SECAGG_WEIGHT},
    {"secagg-timeout", required_argument, NULL, OPT_SECAGG_TIMEOUT},
    {"cert", required_argument, NULL, OPT_TLS_CERT},
    {"key", required_argument, NULL, OPT_TLS_KEY},
    {"ca", required_argument, NULL, OPT_TLS_CA},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
    {"authorized-keys", required_argument, NULL, OPT_AUTH_KEYS},
    {NULL, 0, NULL, 0}};
_Static_assert(sizeof server_cli_options / sizeof server_cli_options[0] <= SERVER_CLI_MAX_OPTIONS,
               "raise SERVER_CLI_MAX_OPTIONS");

void server_cli_init(server_cli *c)
{
    memset(c, 0, sizeof *c);
    fedc_server_options_init(&c->opt);
    c->opt.out_dir = "out";
    c->lr = 0.05;
    c->momentum = 0.9;
    c->epochs = 1;
    c->batch = 32;
}

/* Records a strategy hyperparameter under its key; fedc_strategy_create()
 * checks later whether the strategy takes it and whether it is in range. */
static int strategy_param(server_cli *c, const char *cmd, const char *flag, const char *arg)
{
    double x;
    if (cli_double(cmd, flag, arg, -HUGE_VAL, HUGE_VAL, &x)) return -1;
    char key[32];
    snprintf(key, sizeof key, "%s", flag + 2);
    for (char *p = key; *p; p++)
        if (*p == '-') *p = '_';
    if (!c->strategy_params) c->strategy_params = fedc_config_create();
    if (!c->strategy_params || fedc_config_set_f64(c->strategy_params, key, x)) {
        cli_error(cmd, "out of memory");
        return -1;
    }
    return 0;
}

int server_cli_option(server_cli *c, const char *cmd, int opt, const char *arg)
{
    uint64_t u;
    switch (opt) {
    case OPT_LISTEN: c->opt.listen = arg; return 0;
    case OPT_ROUNDS: return cli_u64(cmd, "--rounds", arg, 1, 1000000, &c->opt.rounds);
    case OPT_TARGET: return cli_double(cmd, "--target-accuracy", arg, 0, 1, &c->opt.target_accuracy);
    case OPT_MIN_CLIENTS:
        if (cli_u64(cmd, "--min-clients", arg, 1, 10000000, &u)) return -1;
        c->opt.min_clients = (uint32_t)u;
        return 0;
    case OPT_SAMPLING:
        if (!strcmp(arg, "fixed"))
            c->opt.sampling = FEDC_SAMPLING_FIXED;
        else if (!strcmp(arg, "poisson"))
            c->opt.sampling = FEDC_SAMPLING_POISSON;
        else {
            cli_error(cmd, "--sampling must be 'fixed' or 'poisson', got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_FRACTION_FIT: return cli_double(cmd, "--fraction-fit", arg, 1e-9, 1, &c->opt.fraction_fit);
    case OPT_FRACTION_EVAL:
        return cli_double(cmd, "--fraction-evaluate", arg, 0, 1, &c->opt.fraction_evaluate);
    case OPT_ROUND_TIMEOUT: return cli_double(cmd, "--round-timeout", arg, 0.001, 1e7, &c->opt.round_timeout);
    case OPT_WAIT_TIMEOUT: return cli_double(cmd, "--wait-timeout", arg, 0, 1e7, &c->opt.wait_timeout);
    case OPT_MODEL: c->model_name = arg; return 0;
    case OPT_INITIAL: c->initial = arg; return 0;
    case OPT_LR: return cli_double(cmd, "--lr", arg, 1e-12, 1e6, &c->lr);
    case OPT_MOMENTUM: return cli_double(cmd, "--momentum", arg, 0, 0.999999, &c->momentum);
    case OPT_WD: return cli_double(cmd, "--weight-decay", arg, 0, 1e3, &c->weight_decay);
    case OPT_EPOCHS: return cli_u64(cmd, "--local-epochs", arg, 1, 100000, &c->epochs);
    case OPT_BATCH: return cli_u64(cmd, "--batch-size", arg, 1, 1000000, &c->batch);
    case OPT_TEST_DATA: c->test_dir = arg; return 0;
    case OPT_OUT: c->opt.out_dir = arg; return 0;
    case OPT_SEED: return cli_u64(cmd, "--seed", arg, 0, UINT64_MAX, &c->opt.seed);
    case OPT_MAX_FRAME:
        if (cli_u64(cmd, "--max-frame-bytes", arg, (1u << 20) + 64, UINT32_MAX, &u)) return -1;
        c->opt.max_frame_bytes = (uint32_t)u;
        return 0;
    case OPT_DEVICE: c->device_text = arg; return 0;
    case OPT_QUIET: c->quiet = 1; return 0;
    case OPT_STRATEGY: c->strategy_name = arg; return 0;
    case OPT_SERVER_LR: return strategy_param(c, cmd, "--server-lr", arg);
    case OPT_SERVER_MOMENTUM: return strategy_param(c, cmd, "--server-momentum", arg);
    case OPT_BETA1: return strategy_param(c, cmd, "--beta1", arg);
    case OPT_BETA2: return strategy_param(c, cmd, "--beta2", arg);
    case OPT_TAU: return strategy_param(c, cmd, "--tau", arg);
    case OPT_PROXIMAL_MU: return strategy_param(c, cmd, "--proximal-mu", arg);
    case OPT_TRIM_BETA: return strategy_param(c, cmd, "--trim-beta", arg);
    case OPT_BYZANTINE: return strategy_param(c, cmd, "--byzantine", arg);
    case OPT_KRUM_M: return strategy_param(c, cmd, "--krum-m", arg);
    case OPT_DP:
        if (fedc_dp_mode_parse(arg, &c->opt.dp.mode) || c->opt.dp.mode == FEDC_DP_OFF) {
            cli_error(cmd, "--dp must be central, client-clip or local, got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_DP_CLIP:
        c->dp_flags |= 1;
        return cli_double(cmd, "--dp-clip", arg, 1e-300, 1e300, &c->opt.dp.clip);
    case OPT_DP_NOISE:
        c->dp_flags |= 2;
        return cli_double(cmd, "--dp-noise-multiplier", arg, 1e-300, 1e300, &c->opt.dp.noise_multiplier);
    case OPT_DP_DELTA:
        c->dp_flags |= 4;
        if (cli_double(cmd, "--dp-delta", arg, 0, 1, &c->opt.dp.delta)) return -1;
        if (c->opt.dp.delta <= 0 || c->opt.dp.delta >= 1) {
            cli_error(cmd, "--dp-delta must be in (0, 1), got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_TARGET_EPS:
        c->dp_flags |= 8;
        return cli_double(cmd, "--target-epsilon", arg, 1e-300, 1e300, &c->opt.dp.target_epsilon);
    case OPT_DP_ADAPTIVE: c->opt.dp.adaptive = 1; return 0;
    case OPT_DP_SGD_CLIP: return cli_double(cmd, "--dp-sgd-clip", arg, 1e-300, 1e300, &c->dp_sgd_clip);
    case OPT_DP_SGD_NOISE:
        return cli_double(cmd, "--dp-sgd-noise-multiplier", arg, 1e-300, 1e300, &c->dp_sgd_noise);
    case OPT_DP_QUANTILE:
        c->dp_flags |= 16;
        if (cli_double(cmd, "--dp-target-quantile", arg, 0, 1, &c->opt.dp.target_quantile)) return -1;
        if (c->opt.dp.target_quantile <= 0 || c->opt.dp.target_quantile >= 1) {
            cli_error(cmd, "--dp-target-quantile must be in (0, 1), got '%s'", arg);
            return -1;
        }
        return 0;
    case OPT_DP_CLIP_LR:
        c->dp_flags |= 16;
        return cli_double(cmd, "--dp-clip-lr", arg, 1e-300, 1e300, &c->opt.dp.clip_lr);
    case OPT_DP_COUNT_SD:
        c->dp_flags |= 16;
        return cli_double(cmd, "--dp-clipped-count-stddev", arg, 1e-300, 1e300,
                          &c->opt.dp.clipped_count_stddev);
    case OPT_SECAGG: c->opt.secagg.enabled = 1; return 0;
    case OPT_TLS_CERT: c->opt.tls_cert = arg; return 0;
    case OPT_TLS_KEY: c->opt.tls_key = arg; return 0;
    case OPT_TLS_CA: c->opt.tls_ca = arg; return 0;
    case OPT_INSECURE: c->opt.insecure = 1; return 0;
    case OPT_HEARTBEAT: return cli_double(cmd, "--heartbeat", arg, 0, 1e6, &c->opt.heartbeat);
    case OPT_AUTH_KEYS: c->opt.authorized_keys = arg; return 0;
    case OPT_SECAGG_K:
        c->secagg_flags = 1;
        if (cli_u64(cmd, "--secagg-neighbours", arg, 2, 254, &u)) return -1;
        c->opt.secagg.neighbours = (uint32_t)u;
        return 0;
    case OPT_SECAGG_T:
        c->secagg_flags = 1;
        if (cli_u64(cmd, "--secagg-threshold", arg, 2, 254, &u)) return -1;
        c->opt.secagg.threshold = (uint32_t)u;
        return 0;
    case OPT_SECAGG_RANGE:
        c->secagg_flags = 1;
        return cli_double(cmd, "--secagg-range", arg, 1e-30, 1e30, &c->opt.secagg.range);
    case OPT_SECAGG_BITS:
        c->secagg_flags = 1;
        if (cli_u64(cmd, "--secagg-bits", arg, 1, 24, &u)) return -1;
        c->opt.secagg.bits = (unsigned)u;
        return 0;
    case OPT_SECAGG_WEIGHT:
        c->secagg_flags = 1;
        return cli_double(cmd, "--secagg-max-weight", arg, 1, 1e30, &c->opt.secagg.max_weight);
    case OPT_SECAGG_TIMEOUT:
        c->secagg_flags = 1;
        return cli_double(cmd, "--secagg-timeout", arg, 1e-3, 1e9, &c->opt.secagg.stage_timeout);
    default: return 1;
    }
}

static const char *match_arch(const fedc_params *p);

static int central_eval(void *user, const fedc_params *p, uint64_t round, double *loss, double *acc,
                        char *err, size_t errlen)
{
    server_central *c = user;
    (void)round;
    if (!c->model) {
        /* The model may have come from a client: its layout tells which
         * built-in architecture can evaluate it. */
        const char *arch = match_arch(p);
        if (!arch)
            return fedc_set_error(
                err, errlen, FEDC_ERR_UNSUPPORTED,
                "the model matches no built-in architecture, so --test-data cannot evaluate it");
        int rc = fedc_model_create(arch, 0, &c->model, err, errlen);
        if (!rc && c->device.type != FEDC_DEVICE_CPU)
            rc = fedc_model_set_device(c->model, c->device, err, errlen);
        if (rc) {
            fedc_model_destroy(c->model);
            c->model = NULL;
            return rc;
        }
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

static void on_round(void *user, const fedc_round_record *r)
{
    const server_cli *pr = user;
    if (pr->quiet) return;
    double acc = isfinite(r->central_eval_accuracy) ? r->central_eval_accuracy : r->fed_eval_accuracy;
    double loss = isfinite(r->central_eval_loss) ? r->central_eval_loss : r->fed_eval_loss;
    char lbuf[32], abuf[32], tbuf[32];
    snprintf(tbuf, sizeof tbuf, isfinite(r->train_loss) ? "%.4f" : "-", r->train_loss);
    snprintf(lbuf, sizeof lbuf, isfinite(loss) ? "%.4f" : "-", loss);
    snprintf(abuf, sizeof abuf, isfinite(acc) ? "%.4f" : "-", acc);
    char ebuf[96] = "";
    if (pr->opt.dp.mode != FEDC_DP_OFF) snprintf(ebuf, sizeof ebuf, "  epsilon %.4f", r->epsilon);
    if (isfinite(r->epsilon_record))
        snprintf(ebuf + strlen(ebuf), sizeof ebuf - strlen(ebuf), "  epsilon_record %.4f", r->epsilon_record);
    printf("round %3llu/%llu  clients %u ok %u failed  train loss %s  eval loss %s  accuracy %s%s  %6.1f s  "
           "%7.1f MB%s%s\n",
           (unsigned long long)r->round, (unsigned long long)pr->opt.rounds, r->clients_ok, r->clients_failed,
           tbuf, lbuf, abuf, ebuf, r->seconds, (double)(r->bytes_sent + r->bytes_received) / 1e6,
           r->failed ? "  FAILED: " : "", r->failed ? r->failure_reason : "");
    fflush(stdout);
}

/* The built-in architecture whose layout equals p, or NULL. */
static const char *match_arch(const fedc_params *p)
{
    static const char *archs[] = {"cnn", "mlp", "mlp-large"};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        fedc_model *m = NULL;
        if (fedc_model_create(archs[i], 0, &m, NULL, 0)) continue;
        int same = fedc_params_check_same_layout(fedc_model_params(m), p, NULL, 0) == FEDC_OK;
        fedc_model_destroy(m);
        if (same) return archs[i];
    }
    return NULL;
}

static void on_progress(void *user, uint64_t round, uint32_t done, uint32_t sampled)
{
    const server_cli *c = user;
    if (c->quiet) return;
    printf("  round %llu: %u of %u clients done\n", (unsigned long long)round, done, sampled);
    fflush(stdout);
}

int server_cli_prepare(server_cli *c, const char *cmd)
{
    char err[FEDC_ERRMSG_MAX];
    if (c->model_name && c->initial) {
        cli_error(cmd, "--model and --initial-model exclude each other");
        return FEDC_EXIT_USAGE;
    }
    if (c->device_text) {
        int drc = cli_device(cmd, c->device_text, &c->opt.device);
        if (drc != FEDC_EXIT_OK) return drc;
        c->central.device = c->opt.device;
    }
    if ((c->dp_sgd_clip > 0) != (c->dp_sgd_noise > 0)) {
        cli_error(cmd, "%s needs %s", c->dp_sgd_clip > 0 ? "--dp-sgd-clip" : "--dp-sgd-noise-multiplier",
                  c->dp_sgd_clip > 0 ? "--dp-sgd-noise-multiplier Z" : "--dp-sgd-clip C");
        return FEDC_EXIT_USAGE;
    }
    /* --dp-delta serves record-level DP too. */
    if (c->dp_sgd_clip > 0 && c->opt.dp.mode == FEDC_DP_OFF) c->dp_flags &= ~4u;
    if (c->opt.dp.mode == FEDC_DP_OFF && c->dp_flags) {
        cli_error(cmd, "%s needs --dp MODE",
                  c->dp_flags & 1   ? "--dp-clip"
                  : c->dp_flags & 2 ? "--dp-noise-multiplier"
                  : c->dp_flags & 4 ? "--dp-delta"
                                    : "--target-epsilon");
        return FEDC_EXIT_USAGE;
    }
    if ((c->dp_flags & 16) && !c->opt.dp.adaptive) {
        cli_error(cmd, "--dp-target-quantile, --dp-clip-lr and --dp-clipped-count-stddev need --dp-adaptive");
        return FEDC_EXIT_USAGE;
    }
    if (c->opt.dp.adaptive && c->opt.dp.mode != FEDC_DP_CENTRAL) {
        cli_error(cmd, "--dp-adaptive needs --dp central (the server must see each update's norm)");
        return FEDC_EXIT_USAGE;
    }
    if (c->opt.dp.mode != FEDC_DP_OFF && (c->dp_flags & 3) != 3) {
        cli_error(cmd, "--dp %s needs %s", fedc_dp_mode_name(c->opt.dp.mode),
                  c->dp_flags & 1 ? "--dp-noise-multiplier Z" : "--dp-clip C");
        return FEDC_EXIT_USAGE;
    }
    if (c->secagg_flags && !c->opt.secagg.enabled) {
        cli_error(cmd, "the --secagg-* flags need --secagg");
        return FEDC_EXIT_USAGE;
    }
    if (c->strategy_name || c->strategy_params) {
        if (fedc_strategy_create(c->strategy_name ? c->strategy_name : "fedavg", c->strategy_params,
                                 &c->strategy, err, sizeof err)) {
            cli_error(cmd, "--strategy: %s", err);
            return FEDC_EXIT_USAGE;
        }
        c->opt.strategy = c->strategy;
        if (c->strategy->min_updates > c->opt.min_clients) {
            cli_error(cmd,
                      "--strategy %s needs at least %u updates a round with these parameters (see "
                      "--byzantine, --krum-m); raise --min-clients (now %u) to %u",
                      c->strategy->name, c->strategy->min_updates, c->opt.min_clients,
                      c->strategy->min_updates);
            return FEDC_EXIT_USAGE;
        }
    }
    c->config = fedc_config_create();
    if (!c->config) {
        cli_error(cmd, "out of memory");
        return FEDC_EXIT_FAILURE;
    }
    if (c->model_name) {
        fedc_model *m = NULL;
        if (fedc_model_create(c->model_name, c->opt.seed, &m, err, sizeof err)) {
            cli_error(cmd, "--model: %s", err);
            return FEDC_EXIT_USAGE;
        }
        c->init = fedc_params_clone(fedc_model_params(m));
        fedc_model_destroy(m);
    } else if (c->initial) {
        if (fedc_params_load(c->initial, &c->init, err, sizeof err)) {
            cli_error(cmd, "--initial-model: %s", err);
            return FEDC_EXIT_FAILURE;
        }
        c->model_name = match_arch(c->init);
    }
    if (c->test_dir && fedc_dataset_load_dir(c->test_dir, "test", &c->central.test, err, sizeof err)) {
        cli_error(cmd, "--test-data: %s", err);
        return FEDC_EXIT_FAILURE;
    }
    if (c->model_name) fedc_config_set_str(c->config, "model", c->model_name);
    fedc_config_set_f64(c->config, "lr", c->lr);
    fedc_config_set_f64(c->config, "momentum", c->momentum);
    fedc_config_set_f64(c->config, "weight_decay", c->weight_decay);
    fedc_config_set_i64(c->config, "local_epochs", (int64_t)c->epochs);
    fedc_config_set_i64(c->config, "batch_size", (int64_t)c->batch);
    if (c->dp_sgd_clip > 0) {
        /* Record-level DP happens on the clients: they are told how. */
        fedc_config_set_f64(c->config, "dp_sgd_clip", c->dp_sgd_clip);
        fedc_config_set_f64(c->config, "dp_sgd_noise_multiplier", c->dp_sgd_noise);
        fedc_config_set_f64(c->config, "dp_delta", c->opt.dp.delta);
    }
    c->opt.fit_config = c->config;
    c->opt.initial_model = c->init;
    c->opt.on_round = on_round;
    c->opt.on_round_user = c;
    /* Long rounds say how far they have got every 10 seconds. */
    c->opt.on_progress = on_progress;
    c->opt.progress_interval = 10;
    if (c->central.test) {
        c->opt.central_eval = central_eval;
        c->opt.central_eval_user = &c->central;
    }
    return 0;
}

int server_cli_finish(server_cli *c, const char *cmd, int rc, const char *errmsg, int have_model)
{
    const char *out = c->opt.out_dir;
    if (rc == FEDC_OK) {
        if (!c->quiet && out)
            printf("done: model in %s/model.safetensors, metrics in %s/metrics.jsonl\n", out, out);
        return FEDC_EXIT_OK;
    }
    cli_error(cmd, "%s", errmsg && errmsg[0] ? errmsg : fedc_strerror(rc));
    if (!c->quiet && out && have_model)
        printf("model in %s/model.safetensors, metrics in %s/metrics.jsonl\n", out, out);
    return rc == FEDC_ERR_NOTREACHED ? FEDC_EXIT_NOTREACHED : FEDC_EXIT_FAILURE;
}

void server_cli_free(server_cli *c)
{
    fedc_params_destroy(c->init);
    c->init = NULL;
    fedc_model_destroy(c->central.model);
    fedc_dataset_destroy(c->central.test);
    fedc_config_destroy(c->config);
    fedc_config_destroy(c->strategy_params);
    fedc_strategy_destroy(c->strategy);
    c->strategy_params = NULL;
    c->strategy = NULL;
    c->opt.strategy = NULL;
    memset(&c->central, 0, sizeof c->central);
    c->config = NULL;
}
