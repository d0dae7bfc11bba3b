/* fedc server: the server's flags (server_cli.c) -> fedc_server. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "server_cli.h"

#define CMD "server"

static fedc_server *g_server;
static volatile sig_atomic_t g_suspended;
/* SIGINT stops (exit 1, "stopped on request"); SIGTERM suspends: the round
 * in progress is abandoned, the last complete round's checkpoint is on
 * disk for --resume, and the exit status is 0 (docs/checkpoints.md). */
static void on_signal(int sig)
{
    if (!g_server) return;
    if (sig == SIGHUP) {
        /* --authorized-keys is read again; revoked keys are disconnected. */
        fedc_server_reload_keys(g_server);
        return;
    }
    if (sig == SIGTERM) {
        g_suspended = 1;
        fedc_server_suspend(g_server);
    } else {
        fedc_server_stop(g_server);
    }
}

int fedc_cmd_server(int argc, char **argv)
{
    server_cli c;
    server_cli_init(&c);
    struct option opts[SERVER_CLI_MAX_OPTIONS + 2]; /* + --resume, --help */
    size_t n = 0;
    while (server_cli_options[n].name) {
        opts[n] = server_cli_options[n];
        n++;
    }
    opts[n++] = (struct option){"resume", required_argument, NULL, 'r'};
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n] = (struct option){NULL, 0, NULL, 0};
    int opt, idx = -1, out_given = 0;
    const char *resume = NULL;
    opterr = 0;
    optind = 1;
    while ((idx = -1, opt = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (opt == 'h') {
            printf("usage: fedc server [FLAGS]\n\n"
                   "Waits for clients, then runs rounds: sample clients, send them the global\n"
                   "model, fold their updates into a FedAvg aggregate as they arrive, evaluate.\n"
                   "After every round OUT/checkpoint.fedc holds what the next round needs.\n\n%s"
                   "  --resume DIR              continue the federation checkpointed in DIR (its OUT),\n"
                   "                            with the flags it started with\n\n"
                   "SIGTERM suspends (the round in progress is abandoned; exit 0, resume with\n"
                   "--resume); SIGINT stops (exit 1).\n",
                   server_cli_help);
            return FEDC_EXIT_OK;
        }
        if (opt == 'r') {
            resume = optarg;
            continue;
        }
        if (idx >= 0 && strcmp(opts[idx].name, "out") == 0) out_given = 1;
        int r = server_cli_option(&c, CMD, opt, optarg);
        if (r < 0) return FEDC_EXIT_USAGE;
        if (r > 0) {
            cli_unknown_flag(CMD, argv[optind - 1]);
            return FEDC_EXIT_USAGE;
        }
    }
    if (cli_no_operands(CMD, argc, argv)) return FEDC_EXIT_USAGE;
    const char *tls_bad = NULL;
    if (c.opt.insecure && (c.opt.tls_cert || c.opt.tls_key || c.opt.tls_ca))
        tls_bad = "--insecure and the TLS flags (--cert, --key, --ca) exclude each other";
    else if (!c.opt.insecure && !c.opt.tls_cert && !c.opt.tls_key)
        tls_bad =
            "--cert FILE and --key FILE are required for TLS (fedc certs makes a test set), or --insecure "
            "for plaintext";
    else if (!c.opt.insecure && (!c.opt.tls_cert || !c.opt.tls_key))
        tls_bad = c.opt.tls_cert ? "--cert needs --key" : "--key needs --cert";
    if (tls_bad) {
        cli_error(CMD, "%s", tls_bad);
        server_cli_free(&c);
        return FEDC_EXIT_USAGE;
    }
    if (c.opt.insecure)
        fedc_log(FEDC_LOG_WARN, CMD,
                 "--insecure: connections are plaintext, unauthenticated and unencrypted");
    int exit_code = server_cli_prepare(&c, CMD);
    if (exit_code) {
        server_cli_free(&c);
        return exit_code;
    }
    if (resume) {
        /* The model comes from the checkpoint; --model or --initial-model,
         * when given, must have its layout. OUT is the checkpoint's. */
        c.opt.resume_dir = resume;
        if (!out_given) c.opt.out_dir = resume;
    }
    char err[FEDC_ERRMSG_MAX];
    fedc_server *s = fedc_server_create(&c.opt, err, sizeof err);
    if (!s) {
        cli_error(CMD, "%s", err);
        server_cli_free(&c);
        return FEDC_EXIT_FAILURE;
    }
    /* The server keeps its own copy of the model; ours can go. */
    fedc_params_destroy(c.init);
    c.init = NULL;
    c.opt.initial_model = NULL;
    g_server = s;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    int rc = fedc_server_run(s);
    g_server = NULL;
    if (g_suspended && rc == FEDC_OK) {
        if (!c.quiet && c.opt.out_dir)
            printf("suspended: continue with fedc server --resume %s and the same flags\n", c.opt.out_dir);
        fedc_server_destroy(s);
        server_cli_free(&c);
        return FEDC_EXIT_OK;
    }
    exit_code = server_cli_finish(&c, CMD, rc, fedc_server_errmsg(s), fedc_server_model(s) != NULL);
    fedc_server_destroy(s);
    server_cli_free(&c);
    return exit_code;
}
