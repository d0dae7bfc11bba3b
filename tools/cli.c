#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fedc %s: error: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_u64(const char *cmd, const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!v || !*v || *v == '-') goto bad;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) goto bad;
    if (x < min || x > max) {
        cli_error(cmd, "%s must be between %llu and %llu, got %s", flag, (unsigned long long)min,
                  (unsigned long long)max, v);
        return -1;
    }
    *out = x;
    return 0;
bad:
    cli_error(cmd, "%s expects a whole number, got '%s'", flag, v ? v : "");
    return -1;
}

int cli_double(const char *cmd, const char *flag, const char *v, double min, double max, double *out)
{
    char *end;
    errno = 0;
    if (!v || !*v) goto bad;
    double x = strtod(v, &end);
    if (errno || *end || !isfinite(x)) goto bad;
    if (x < min || x > max) {
        cli_error(cmd, "%s must be between %g and %g, got %s", flag, min, max, v);
        return -1;
    }
    *out = x;
    return 0;
bad:
    cli_error(cmd, "%s expects a number, got '%s'", flag, v ? v : "");
    return -1;
}

void cli_unknown_flag(const char *cmd, const char *arg)
{
    cli_error(cmd, "unknown or incomplete flag '%s' (see 'fedc %s --help')", arg ? arg : "?", cmd);
}

void cli_flags_begin(void)
{
    /* The dispatcher may have run getopt already; 0 makes glibc and musl
     * start afresh. We print our own messages, naming the flag. */
    optind = 0;
    opterr = 0;
}

int cli_flag(const char *cmd, int argc, char **argv, const struct option *longopts, void (*usage)(FILE *),
             int *exit_code)
{
    int c = getopt_long(argc, argv, ":h", longopts, NULL);
    switch (c) {
    case -1:
        if (!cli_no_operands(cmd, argc, argv)) return CLI_FLAGS_END;
        *exit_code = FEDC_EXIT_USAGE;
        return CLI_FLAGS_EXIT;
    case 'h':
        usage(stdout);
        *exit_code = FEDC_EXIT_OK;
        return CLI_FLAGS_EXIT;
    case ':':
        cli_error(cmd, "%s needs a value", argv[optind - 1]);
        *exit_code = FEDC_EXIT_USAGE;
        return CLI_FLAGS_EXIT;
    case '?':
        cli_unknown_flag(cmd, argv[optind - 1]);
        *exit_code = FEDC_EXIT_USAGE;
        return CLI_FLAGS_EXIT;
    default: return c;
    }
}

int cli_no_operands(const char *cmd, int argc, char **argv)
{
    if (optind >= argc) return 0;
    cli_error(cmd, "unexpected argument '%s'", argv[optind]);
    return -1;
}

int cli_device(const char *cmd, const char *text, fedc_device *out)
{
    char err[FEDC_ERRMSG_MAX], name[256];
    if (fedc_device_parse(text, out, err, sizeof err)) {
        cli_error(cmd, "--device: %s", err);
        return FEDC_EXIT_USAGE;
    }
    if (fedc_device_check(*out, name, sizeof name, err, sizeof err)) {
        cli_error(cmd, "--device: %s", err);
        return FEDC_EXIT_FAILURE;
    }
    if (out->type != FEDC_DEVICE_CPU) fedc_log(FEDC_LOG_INFO, cmd, "computing on %s (%s)", text, name);
    return FEDC_EXIT_OK;
}
