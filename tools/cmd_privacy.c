/* fedc privacy: the (epsilon, delta) privacy spent by steps of the sampled
 * Gaussian mechanism (DP-SGD, DP-FedAvg), from the RDP accountant of
 * include/fedc/privacy.h. */
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "fedc/privacy.h"

#define CMD "privacy"

/* More orders than anyone lists by hand; a longer --orders is refused. */
#define MAX_ORDERS 4096

static void usage(FILE *f)
{
    fprintf(f, "usage: fedc privacy --q Q --noise-multiplier Z --steps T --delta D [--orders LIST]\n"
               "\n"
               "Prints the epsilon of (epsilon, delta)-DP spent by T steps of the sampled Gaussian\n"
               "mechanism (each record or client sampled with probability Q, Gaussian noise of\n"
               "Z times the clipping norm), from its Renyi-DP at each order, as one line:\n"
               "  epsilon=E order=A\n"
               "where A is the order that gave the smallest epsilon.\n"
               "\n"
               "flags:\n"
               "  --q Q                  sampling rate, in [0, 1] (required)\n"
               "  --noise-multiplier Z   noise standard deviation over the clipping norm, > 0 (required)\n"
               "  --steps T              number of steps (compositions), a whole number (required)\n"
               "  --delta D              target delta, in (0, 1) (required)\n"
               "  --orders LIST          comma-separated RDP orders, each > 1, 'inf' allowed\n"
               "                         (default: 1.1 to 10.9 by 0.1, 11 to 63, 128, 256, 512, 1024)\n"
               "  -h, --help             print this help\n"
               "\n"
               "See include/fedc/privacy.h for the accountant and the papers it follows.\n");
}

/* Parses a comma-separated list of orders into a new array. */
static int parse_orders(const char *text, double **out, size_t *n)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    if (cap > MAX_ORDERS) {
        cli_error(CMD, "--orders lists %zu orders, more than %d", cap, MAX_ORDERS);
        return -1;
    }
    double *v = malloc(cap * sizeof *v);
    if (!v) {
        cli_error(CMD, "out of memory");
        return -1;
    }
    size_t k = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        char *end;
        double a = NAN;
        if (len > 0 && len < sizeof item) {
            memcpy(item, p, len);
            item[len] = '\0';
            a = strtod(item, &end);
            if (*end != '\0' || end == item) a = NAN;
        }
        if (isnan(a) || a <= 1.0 || (isfinite(a) && a > FEDC_RDP_MAX_ORDER)) {
            cli_error(CMD, "--orders: '%.*s' is not an order > 1 and <= %g (or inf)",
                      (int)(len < 64 ? len : 64), p, FEDC_RDP_MAX_ORDER);
            free(v);
            return -1;
        }
        v[k++] = a;
        if (!comma) break;
        p = comma + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

enum { OPT_Q = 256, OPT_Z, OPT_STEPS, OPT_DELTA, OPT_ORDERS };

int fedc_cmd_privacy(int argc, char **argv)
{
    static const struct option longopts[] = {{"q", required_argument, NULL, OPT_Q},
                                             {"noise-multiplier", required_argument, NULL, OPT_Z},
                                             {"steps", required_argument, NULL, OPT_STEPS},
                                             {"delta", required_argument, NULL, OPT_DELTA},
                                             {"orders", required_argument, NULL, OPT_ORDERS},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    double q = NAN, z = NAN, delta = NAN;
    uint64_t steps = 0;
    int have_steps = 0;
    const char *orders_text = NULL;

    int c, code;
    cli_flags_begin();
    while ((c = cli_flag(CMD, argc, argv, longopts, usage, &code)) != CLI_FLAGS_END) {
        switch (c) {
        case CLI_FLAGS_EXIT: return code;
        case OPT_Q:
            if (cli_double(CMD, "--q", optarg, 0.0, 1.0, &q)) return FEDC_EXIT_USAGE;
            break;
        case OPT_Z:
            if (cli_double(CMD, "--noise-multiplier", optarg, -DBL_MAX, DBL_MAX, &z)) return FEDC_EXIT_USAGE;
            if (z <= 0.0) {
                cli_error(CMD, "--noise-multiplier must be > 0, got %s", optarg);
                return FEDC_EXIT_USAGE;
            }
            break;
        case OPT_STEPS:
            if (cli_u64(CMD, "--steps", optarg, 0, UINT64_MAX, &steps)) return FEDC_EXIT_USAGE;
            have_steps = 1;
            break;
        case OPT_DELTA:
            if (cli_double(CMD, "--delta", optarg, -DBL_MAX, DBL_MAX, &delta)) return FEDC_EXIT_USAGE;
            if (delta <= 0.0 || delta >= 1.0) {
                cli_error(CMD, "--delta must be in (0, 1), got %s", optarg);
                return FEDC_EXIT_USAGE;
            }
            break;
        case OPT_ORDERS: orders_text = optarg; break;
        }
    }
    if (isnan(q)) {
        cli_error(CMD, "--q is required (the sampling rate)");
        return FEDC_EXIT_USAGE;
    }
    if (isnan(z)) {
        cli_error(CMD, "--noise-multiplier is required");
        return FEDC_EXIT_USAGE;
    }
    if (!have_steps) {
        cli_error(CMD, "--steps is required (the number of steps)");
        return FEDC_EXIT_USAGE;
    }
    if (isnan(delta)) {
        cli_error(CMD, "--delta is required");
        return FEDC_EXIT_USAGE;
    }

    double *orders = NULL;
    size_t n = 0;
    if (orders_text && parse_orders(orders_text, &orders, &n)) return FEDC_EXIT_USAGE;
    char err[FEDC_ERRMSG_MAX];
    double eps, order;
    int rc = fedc_privacy_epsilon(q, z, steps, delta, orders, n, &eps, &order, err, sizeof err);
    free(orders);
    if (rc != FEDC_OK) {
        cli_error(CMD, "%s", err);
        return rc == FEDC_ERR_INVALID ? FEDC_EXIT_USAGE : FEDC_EXIT_FAILURE;
    }
    printf("epsilon=%.6f order=%g\n", eps, order);
    return FEDC_EXIT_OK;
}
