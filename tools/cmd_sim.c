/* fedc sim: the server and a population of virtual clients in one process.
 * The dataset is partitioned in memory exactly as fedc partition would, and
 * each virtual client trains the built-in model on its share, through the
 * same client callbacks as fedc client. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "data/data_internal.h"
#include "fedc/sim.h"
#include "server_cli.h"
#include "trainer_cli.h"

#define CMD "sim"

static const char usage_head[] =
    "usage: fedc sim --clients N [FLAGS]\n"
    "\n"
    "Runs the server and N virtual clients in one process. The network is\n"
    "replaced by an in-memory transport; every protocol message is still\n"
    "encoded and decoded. The dataset is split in memory as fedc partition\n"
    "would, and each client trains the built-in model on its share.\n"
    "\n"
    "  --clients N               the population (required)\n"
    "  --concurrency K           clients answering at once (default: the cores)\n"
    "  --data DIR                the dataset to split (default /usr/share/datasets/fashion-mnist)\n"
    "  --scheme iid|dirichlet|shards|sample, --alpha A, --labels-per-client K,\n"
    "  --examples-per-client S, --test-fraction F, --min-samples M\n"
    "                            partition options, as for fedc partition (sample lets\n"
    "                            clients overlap, for more clients than examples)\n"
    "  --partition-seed S        seed of the partition (default: --seed)\n"
    "  --dropout-rate P          each request: the client vanishes (before or while answering)\n"
    "                            with probability P, and connects again (default 0)\n"
    "  --straggler-rate P        each request: the answer comes --straggler-delay S seconds\n"
    "  --straggler-delay S       late with probability P (defaults 0 and 10)\n"
    "  --mpi                     spread the clients over MPI ranks: run as\n"
    "                            mpirun -np P fedc sim --mpi ...; rank 0 runs the server\n"
    "  --attack MODE             testing tool for robust aggregation (default: off): the\n"
    "                            attacking clients train honestly, then send a poisoned\n"
    "                            update (sign-flip, gaussian or scale:K, as fedc client --attack)\n"
    "  --state-dir DIR           where the clients keep state across rounds, one file each\n"
    "                            (SCAFFOLD's control variates, DP-SGD's privacy spent;\n"
    "                            default OUT/client-state,\n"
    "                            emptied of an earlier run's files at start)\n"
    "  --attack-fraction F       share of clients that attack, in (0, 1] (default 1): the\n"
    "                            first ceil(F*N) client indices, 0 .. ceil(F*N)-1\n"

    "\n"
    "Server flags, as for fedc server (--listen defaults to an ephemeral port):\n";

typedef struct sim_data {
    const fedc_dataset *data;
    const fedc_partition_map *map;
    const char *arch;
    uint64_t seed;
    fedc_device device; /* where the clients train (--device) */
    trainer_attack attack;
    uint32_t attackers;    /* clients 0 .. attackers-1 send poisoned updates */
    const char *state_dir; /* clients' state across rounds (SCAFFOLD), or NULL */
} sim_data;

/* Each worker thread keeps one model between the clients it serves, freed
 * when the thread ends. */
static pthread_key_t g_model_key;
static void free_model(void *m)
{
    fedc_model_destroy(m);
}

static int open_client(void *user, uint32_t index, void **client_user, char *err, size_t errlen)
{
    sim_data *sd = user;
    trainer *t = calloc(1, sizeof *t);
    if (!t) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    int rc = fedc_partition_client(sd->data, sd->map, index, &t->train, &t->test, err, errlen);
    if (rc) {
        free(t);
        return rc;
    }
    if (t->test && t->test->n == 0) {
        fedc_dataset_destroy(t->test);
        t->test = NULL;
    }
    t->default_arch = sd->arch;
    t->seed = sd->seed;
    t->device = sd->device;
    if (index < sd->attackers) t->attack = sd->attack;
    if (sd->state_dir) {
        size_t len = strlen(sd->state_dir) + 48;
        char *path = malloc(len);
        if (!path) {
            fedc_dataset_destroy(t->train);
            fedc_dataset_destroy(t->test);
            free(t);
            return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        }
        snprintf(path, len, "%s/scaffold-%u.safetensors", sd->state_dir, index);
        t->state_path = path;
        t->control_announced = 1; /* the simulator says where, once */
        char *dp_path = malloc(len);
        if (!dp_path) {
            free(path);
            fedc_dataset_destroy(t->train);
            fedc_dataset_destroy(t->test);
            free(t);
            return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        }
        snprintf(dp_path, len, "%s/dpsgd-%u.safetensors", sd->state_dir, index);
        t->dp_state_path = dp_path;
    }
    t->model = pthread_getspecific(g_model_key);
    pthread_setspecific(g_model_key, NULL);
    *client_user = t;
    return FEDC_OK;
}

static void close_client(void *user, uint32_t index, void *client_user)
{
    trainer *t = client_user;
    (void)user;
    (void)index;
    pthread_setspecific(g_model_key, t->model);
    free((char *)t->state_path);
    free((char *)t->dp_state_path);
    free(t->dp_rdp);
    fedc_params_destroy(t->control);
    fedc_dataset_destroy(t->train);
    fedc_dataset_destroy(t->test);
    free(t);
}

/* Makes the clients' state directory and (rank 0, before any client
 * trains) removes the state files a previous run left there: a new
 * federation starts from zero. */
static int prepare_state_dir(const char *dir, int rank, char *err, size_t errlen)
{
    int rc = fedc__mkdirs(dir, err, errlen);
    if (rc || rank != 0) return rc;
    DIR *dp = opendir(dir);
    if (!dp) return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot open '%s': %s", dir, strerror(errno));
    unsigned removed = 0;
    char path[4096];
    for (struct dirent *e; (e = readdir(dp));) {
        size_t len = strlen(e->d_name);
        if ((strncmp(e->d_name, "scaffold-", 9) && strncmp(e->d_name, "dpsgd-", 6)) || len < 12 ||
            strcmp(e->d_name + len - 12, ".safetensors"))
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path && unlink(path) == 0)
            removed++;
    }
    closedir(dp);
    if (removed)
        fedc_log(FEDC_LOG_INFO, CMD, "removed %u clients' state files of an earlier run from %s", removed,
                 dir);
    return FEDC_OK;
}

enum {
    OPT_CLIENTS = 1000,
    OPT_CONCURRENCY,
    OPT_DATA,
    OPT_SCHEME,
    OPT_ALPHA,
    OPT_LPC,
    OPT_TEST_FRACTION,
    OPT_MIN_SAMPLES,
    OPT_PER_CLIENT,
    OPT_PSEED,
    OPT_DROPOUT,
    OPT_STRAGGLER,
    OPT_STRAGGLER_DELAY,
    OPT_MPI,
    OPT_ATTACK,
    OPT_ATTACK_FRACTION,
    OPT_STATE_DIR,
    OPT_HELP
};

int fedc_cmd_sim(int argc, char **argv)
{
    static const struct option own[] = {
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"data", required_argument, NULL, OPT_DATA},
        {"scheme", required_argument, NULL, OPT_SCHEME},
        {"alpha", required_argument, NULL, OPT_ALPHA},
        {"labels-per-client", required_argument, NULL, OPT_LPC},
        {"test-fraction", required_argument, NULL, OPT_TEST_FRACTION},
        {"min-samples", required_argument, NULL, OPT_MIN_SAMPLES},
        {"examples-per-client", required_argument, NULL, OPT_PER_CLIENT},
        {"partition-seed", required_argument, NULL, OPT_PSEED},
        {"dropout-rate", required_argument, NULL, OPT_DROPOUT},
        {"straggler-rate", required_argument, NULL, OPT_STRAGGLER},
        {"straggler-delay", required_argument, NULL, OPT_STRAGGLER_DELAY},
        {"mpi", no_argument, NULL, OPT_MPI},
        {"attack", required_argument, NULL, OPT_ATTACK},
        {"attack-fraction", required_argument, NULL, OPT_ATTACK_FRACTION},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"help", no_argument, NULL, OPT_HELP},
    };
    struct option opts[SERVER_CLI_MAX_OPTIONS + sizeof own / sizeof own[0]];
    size_t n = 0;
    for (; server_cli_options[n].name; n++) opts[n] = server_cli_options[n];
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) opts[n++] = own[i];
    opts[n] = (struct option){NULL, 0, NULL, 0};

    server_cli c;
    server_cli_init(&c);
    c.opt.listen = "127.0.0.1:0";
    fedc_sim_options so;
    fedc_sim_options_init(&so);
    so.straggler_delay = 10;
    fedc_partition_options po;
    fedc_partition_options_init(&po);
    const char *data_dir = "/usr/share/datasets/fashion-mnist";
    int have_pseed = 0;
    trainer_attack attack = {TRAINER_ATTACK_NONE, 0.0};
    double attack_fraction = -1.0;
    const char *state_dir = NULL;
    char default_state_dir[4096];
    uint64_t u;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case OPT_CLIENTS:
            bad = cli_u64(CMD, "--clients", optarg, 1, 10000000, &u);
            so.clients = (uint32_t)u;
            break;
        case OPT_CONCURRENCY:
            bad = cli_u64(CMD, "--concurrency", optarg, 1, 4096, &u);
            so.concurrency = (uint32_t)u;
            break;
        case OPT_DATA: data_dir = optarg; break;
        case OPT_SCHEME:
            if (fedc_partition_scheme_parse(optarg, &po.scheme)) {
                cli_error(CMD, "--scheme must be iid, dirichlet, shards or sample, got '%s'", optarg);
                bad = 1;
            }
            break;
        case OPT_ALPHA: bad = cli_double(CMD, "--alpha", optarg, 1e-6, 1e6, &po.alpha); break;
        case OPT_LPC:
            bad = cli_u64(CMD, "--labels-per-client", optarg, 1, 1000000, &u);
            po.labels_per_client = (int)u;
            break;
        case OPT_TEST_FRACTION:
            bad = cli_double(CMD, "--test-fraction", optarg, 0, 0.99, &po.test_fraction);
            break;
        case OPT_MIN_SAMPLES:
            bad = cli_u64(CMD, "--min-samples", optarg, 1, 100000000, &u);
            po.min_samples = (size_t)u;
            break;
        case OPT_PER_CLIENT:
            bad = cli_u64(CMD, "--examples-per-client", optarg, 1, UINT32_MAX, &u);
            po.examples_per_client = (size_t)u;
            break;
        case OPT_PSEED:
            bad = cli_u64(CMD, "--partition-seed", optarg, 0, UINT64_MAX, &po.seed);
            have_pseed = 1;
            break;
        case OPT_DROPOUT: bad = cli_double(CMD, "--dropout-rate", optarg, 0, 1, &so.dropout_rate); break;
        case OPT_STRAGGLER:
            bad = cli_double(CMD, "--straggler-rate", optarg, 0, 1, &so.straggler_rate);
            break;
        case OPT_STRAGGLER_DELAY:
            bad = cli_double(CMD, "--straggler-delay", optarg, 0, 1e6, &so.straggler_delay);
            break;
        case OPT_MPI: so.mpi = 1; break;
        case OPT_ATTACK:
            if (trainer_attack_parse(optarg, &attack)) {
                cli_error(CMD, "--attack must be " TRAINER_ATTACK_VALUES ", got '%s'", optarg);
                bad = 1;
            }
            break;
        case OPT_ATTACK_FRACTION:
            bad = cli_double(CMD, "--attack-fraction", optarg, 0, 1, &attack_fraction);
            if (!bad && attack_fraction == 0.0) {
                cli_error(CMD, "--attack-fraction must be > 0, got '%s'", optarg);
                bad = 1;
            }
            break;
        case OPT_STATE_DIR: state_dir = optarg; break;
        case OPT_HELP: printf("%s%s", usage_head, server_cli_help); return FEDC_EXIT_OK;
        default: {
            int r = server_cli_option(&c, CMD, opt, optarg);
            if (r > 0) cli_unknown_flag(CMD, argv[optind - 1]);
            bad = r != 0;
        }
        }
        if (bad) return FEDC_EXIT_USAGE;
    }
    if (cli_no_operands(CMD, argc, argv)) return FEDC_EXIT_USAGE;
    if (so.clients == 0) {
        cli_error(CMD, "--clients is required (see 'fedc sim --help')");
        return FEDC_EXIT_USAGE;
    }
    if (attack_fraction >= 0.0 && attack.kind == TRAINER_ATTACK_NONE) {
        cli_error(CMD, "--attack-fraction needs --attack MODE");
        return FEDC_EXIT_USAGE;
    }
    if ((po.examples_per_client != 0) != (po.scheme == FEDC_PARTITION_SAMPLE)) {
        if (po.examples_per_client)
            cli_error(CMD, "--examples-per-client applies only to --scheme sample, not %s",
                      fedc_partition_scheme_name(po.scheme));
        else
            cli_error(CMD, "--scheme sample needs --examples-per-client S (the examples each client draws)");
        return FEDC_EXIT_USAGE;
    }
    if (!have_pseed) po.seed = c.opt.seed;
    so.fault_seed = c.opt.seed;
    if (!state_dir) {
        /* Under the output directory, named before ranks other than 0 drop
         * it: each rank keeps the state of its own clients. */
        snprintf(default_state_dir, sizeof default_state_dir, "%s/client-state",
                 c.opt.out_dir ? c.opt.out_dir : "out");
        state_dir = default_state_dir;
    }
    int rank = 0, nranks = 1;
    char err[FEDC_ERRMSG_MAX];
    if (so.mpi) {
        if (fedc_sim_mpi_init(NULL, NULL, &rank, &nranks, err, sizeof err)) {
            cli_error(CMD, "--mpi: %s", err);
            fedc_sim_mpi_finalize();
            return FEDC_EXIT_FAILURE;
        }
        if (rank != 0) {
            /* Only rank 0 runs the server: the others need neither its
             * files nor its output. */
            c.quiet = 1;
            c.test_dir = NULL;
            c.opt.out_dir = NULL;
        }
    }
    po.clients = so.clients;

    int exit_code = server_cli_prepare(&c, CMD);
    fedc_dataset *d = NULL;
    fedc_partition_map *map = NULL;
    if (exit_code) goto done;
    exit_code = FEDC_EXIT_FAILURE;
    if (fedc_dataset_load_dir(data_dir, "train", &d, err, sizeof err)) {
        cli_error(CMD, "--data: %s", err);
        goto done;
    }
    if (fedc_partition_compute(d, &po, &map, err, sizeof err)) {
        cli_error(CMD, "partition: %s", err);
        exit_code = FEDC_EXIT_USAGE;
        goto done;
    }
    if (pthread_key_create(&g_model_key, free_model)) {
        cli_error(CMD, "cannot create thread-local storage");
        goto done;
    }
    sim_data sd = {d, map, c.model_name ? c.model_name : "cnn", c.opt.seed, c.opt.device, attack, 0, NULL};
    if ((c.opt.strategy && c.opt.strategy->fit_tensors) || c.dp_sgd_clip > 0) {
        /* The clients keep state between rounds (SCAFFOLD's c_i, what
         * DP-SGD has spent), in files: a simulated client exists only
         * while it answers. */
        if (prepare_state_dir(state_dir, rank, err, sizeof err)) {
            cli_error(CMD, "--state-dir: %s", err);
            goto done;
        }
        sd.state_dir = state_dir;
    }
    if (attack.kind != TRAINER_ATTACK_NONE) {
        double f = attack_fraction >= 0.0 ? attack_fraction : 1.0;
        /* The slack keeps a fraction such as 2/7 from rounding up to 3 of 7. */
        sd.attackers = (uint32_t)ceil(f * (double)so.clients - 1e-9);
        if (sd.attackers == 0) sd.attackers = 1;
        if (rank == 0)
            fedc_log(FEDC_LOG_WARN, CMD,
                     "--attack: clients 0 to %u of %u send poisoned updates (a testing tool)",
                     sd.attackers - 1, so.clients);
    }
    if (so.mpi && c.opt.device.type != FEDC_DEVICE_CPU) {
        /* The ranks' sums are combined by MPI in host memory, so the
         * server's sums stay there; the clients still train on the GPU. */
        c.opt.device = (fedc_device){FEDC_DEVICE_CPU, 0};
        if (rank == 0)
            fedc_log(FEDC_LOG_INFO, CMD,
                     "--mpi: the updates are summed on the CPU (MPI combines the ranks' "
                     "sums in host memory); the clients train on the GPU");
    }
    so.open_client = open_client;
    so.close_client = close_client;
    so.callbacks = trainer_callbacks;
    so.user = &sd;
    int rc = fedc_sim_run(&c.opt, &so, err, sizeof err);
    exit_code = server_cli_finish(&c, CMD, rc, err, rc != FEDC_ERR_INVALID);
    /* The main thread never served a client, so its slot is empty. */
    pthread_key_delete(g_model_key);
done:
    fedc_partition_map_destroy(map);
    fedc_dataset_destroy(d);
    server_cli_free(&c);
    if (so.mpi) fedc_sim_mpi_finalize();
    return exit_code;
}
