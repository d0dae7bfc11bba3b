/* fedc server: the server's flags (server_cli.c) -> fedc_server. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "server_cli.h"

#define CMD "server"

static fedc_server *g_server;
static void on_signal(int sig)
{
    (void)sig;
    if (g_server) fedc_server_stop(g_server);
}

int fedc_cmd_server(int argc, char **argv)
{
    server_cli c;
    server_cli_init(&c);
    struct option opts[SERVER_CLI_MAX_OPTIONS + 1]; /* + --help */
    size_t n = 0;
    while (server_cli_options[n].name) {
        opts[n] = server_cli_options[n];
        n++;
    }
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n] = (struct option){NULL, 0, NULL, 0};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: fedc server [FLAGS]\n\n"
                   "Waits for clients, then runs rounds: sample clients, send them the global\n"
                   "model, fold their updates into a FedAvg aggregate as they arrive, evaluate.\n\n%s",
                   server_cli_help);
            return FEDC_EXIT_OK;
        }
        int r = server_cli_option(&c, CMD, opt, optarg);
        if (r < 0) return FEDC_EXIT_USAGE;
        if (r > 0) {
            cli_unknown_flag(CMD, argv[optind - 1]);
            return FEDC_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s'", argv[optind]);
        return FEDC_EXIT_USAGE;
    }
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
    int rc = fedc_server_run(s);
    g_server = NULL;
    exit_code = server_cli_finish(&c, CMD, rc, fedc_server_errmsg(s), fedc_server_model(s) != NULL);
    fedc_server_destroy(s);
    server_cli_free(&c);
    return exit_code;
}
