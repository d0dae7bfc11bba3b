/* The server's flags, shared by `fedc server` and `fedc sim` (which runs
 * the same server with simulated clients). */
#ifndef FEDC_TOOLS_SERVER_CLI_H
#define FEDC_TOOLS_SERVER_CLI_H

#include <getopt.h>

#include "fedc/data.h"
#include "fedc/nn.h"
#include "fedc/server.h"
#include "fedc/strategy.h"

/* Centralised evaluation with the built-in trainer (--test-data). */
typedef struct server_central {
    fedc_model *model;
    fedc_dataset *test;
    fedc_device device; /* where it evaluates */
} server_central;

typedef struct server_cli {
    fedc_server_options opt;
    const char *model_name, *initial, *test_dir;
    double lr, momentum, weight_decay;
    uint64_t epochs, batch;
    const char *device_text;      /* --device as given (NULL: the CPU) */
    const char *strategy_name;    /* --strategy (NULL: fedavg, with no strategy object) */
    fedc_config *strategy_params; /* --server-lr and the like, by key; NULL: none given */
    fedc_strategy *strategy;      /* made by server_cli_prepare() */
    int quiet;
    double dp_sgd_clip, dp_sgd_noise; /* --dp-sgd-clip, --dp-sgd-noise-multiplier (0: off) */
    /* DP flags given: --dp-clip 1, --dp-noise-multiplier 2, --dp-delta 4,
     * --target-epsilon 8, adaptive clipping's 16. */
    unsigned dp_flags;
    int secagg_flags; /* a --secagg-* flag was given */
    /* Filled by server_cli_prepare(). */
    fedc_params *init;
    fedc_config *config;
    server_central central;
} server_cli;

/* The flags' help text, for the commands' --help. */
extern const char server_cli_help[];
/* The long options (terminated by a zero entry); values are >= 256. */
extern const struct option server_cli_options[];
/* The most entries server_cli_options may have, its terminator included
 * (checked when it is compiled): the size of the commands' option tables. */
#define SERVER_CLI_MAX_OPTIONS 64

void server_cli_init(server_cli *c);
/* Handles option `opt` with `arg`: 0 if handled, 1 if not a server flag,
 * -1 after printing an error for a bad value. */
int server_cli_option(server_cli *c, const char *cmd, int opt, const char *arg);
/* Loads the initial model and the test data, and fills c->opt (config,
 * progress lines, central evaluation). Returns 0 or an exit code after
 * printing the error. */
int server_cli_prepare(server_cli *c, const char *cmd);
/* Reports how the federation ended and returns the exit code. */
int server_cli_finish(server_cli *c, const char *cmd, int rc, const char *errmsg, int have_model);
void server_cli_free(server_cli *c);

#endif
