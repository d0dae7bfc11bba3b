/* fedc: the command-line front end. Each subcommand is a thin layer over
 * the library: flags in, library calls, progress out. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "fedc/core.h"

static void usage(FILE *f)
{
    fprintf(f,
            "fedc %s: federated learning\n"
            "\n"
            "usage: fedc COMMAND [FLAGS]\n"
            "\n"
            "commands:\n"
            "  server      run the federation server (aggregates the clients' updates)\n"
            "  client      run a client that trains the built-in model on its local data\n"
            "  partition   split a dataset into per-client data directories\n"
            "  sim         run the server and many virtual clients in one process\n"
            "  privacy     the (epsilon, delta) spent by steps of the sampled Gaussian mechanism\n"
            "  certs       make a test federation's TLS certificates (a CA, the server, the clients)\n"
            "  keygen      make a node's Ed25519 key pair and print its fingerprint\n"
            "  version     print the version\n"
            "\n"
            "'fedc COMMAND --help' lists a command's flags. Documentation: docs/.\n",
            FEDC_VERSION_STRING);
}

/* What `fedc version` says about GPUs: whether this build has the CUDA
 * backend, and if so whether the first GPU can be used (and why not). */
static void print_devices(void)
{
    if (!fedc_device_cuda_built()) {
        printf("cuda: not built (configure with -DFEDC_CUDA=ON)\n");
        return;
    }
    char name[256], err[FEDC_ERRMSG_MAX];
    fedc_device d = {FEDC_DEVICE_CUDA, 0};
    if (fedc_device_check(d, name, sizeof name, err, sizeof err) == FEDC_OK)
        printf("cuda: built, cuda:0 is %s\n", name);
    else
        printf("cuda: built, %s\n", err);
}

int main(int argc, char **argv)
{
    /* A peer that vanishes mid-write must be an error return, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return FEDC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "server")) return fedc_cmd_server(argc - 1, argv + 1);
    if (!strcmp(cmd, "client")) return fedc_cmd_client(argc - 1, argv + 1);
    if (!strcmp(cmd, "partition")) return fedc_cmd_partition(argc - 1, argv + 1);
    if (!strcmp(cmd, "sim")) return fedc_cmd_sim(argc - 1, argv + 1);
    if (!strcmp(cmd, "privacy")) return fedc_cmd_privacy(argc - 1, argv + 1);
    if (!strcmp(cmd, "certs")) return fedc_cmd_certs(argc - 1, argv + 1);
    if (!strcmp(cmd, "keygen")) return fedc_cmd_keygen(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("fedc %s (protocol 1)\n", FEDC_VERSION_STRING);
        print_devices();
        return FEDC_EXIT_OK;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return FEDC_EXIT_OK;
    }
    fprintf(stderr, "fedc: error: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return FEDC_EXIT_USAGE;
}
