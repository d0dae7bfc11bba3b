/* Flag parsing helpers shared by the fedc subcommands. Every parse error
 * names the flag and the bad value. */
#ifndef FEDC_TOOLS_CLI_H
#define FEDC_TOOLS_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "fedc/core.h"

/* Exit codes of the fedc program (docs/cli.md). */
#define FEDC_EXIT_OK         0
#define FEDC_EXIT_FAILURE    1 /* a runtime error: data, network, I/O */
#define FEDC_EXIT_USAGE      2 /* unknown or malformed flags */
#define FEDC_EXIT_NOTREACHED 3 /* server: --target-accuracy not reached within --rounds */

/* Prints "fedc CMD: error: ..." to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) FEDC_PRINTF(2, 3);

/* Parse a value for `flag`; on error print it (for command cmd) and return -1. */
int cli_u64(const char *cmd, const char *flag, const char *v, uint64_t min, uint64_t max, uint64_t *out);
int cli_double(const char *cmd, const char *flag, const char *v, double min, double max, double *out);

/* Parses and checks a --device value (the CPU, or a GPU that is usable
 * now) and logs the GPU chosen. Returns FEDC_EXIT_OK, or prints the error
 * and returns FEDC_EXIT_USAGE for a malformed value and FEDC_EXIT_FAILURE
 * for a device that cannot be used. */
int cli_device(const char *cmd, const char *text, fedc_device *out);

/* getopt_long's message for an unknown flag is replaced by ours: call this
 * with the argv element that failed. */
void cli_unknown_flag(const char *cmd, const char *arg);

/* A subcommand's flags, read with getopt_long: long flags, -h and --help
 * (longopts maps "help" to 'h'). Call cli_flags_begin() once, then
 * cli_flag() until it returns CLI_FLAGS_END or CLI_FLAGS_EXIT. It returns
 * each other flag's code, its value in optarg, for the caller's switch;
 * what every subcommand does alike it does itself, setting *exit_code and
 * returning CLI_FLAGS_EXIT: -h or --help prints usage(stdout) and gives
 * FEDC_EXIT_OK; a flag without its value, an unknown flag, or an argument
 * left after the flags prints the error and gives FEDC_EXIT_USAGE. */
#define CLI_FLAGS_END  (-1)
#define CLI_FLAGS_EXIT (-2)
void cli_flags_begin(void);
int cli_flag(const char *cmd, int argc, char **argv, const struct option *longopts, void (*usage)(FILE *),
             int *exit_code);

/* After getopt: prints the error and returns -1 if an argument is left
 * after the flags. */
int cli_no_operands(const char *cmd, int argc, char **argv);

#endif
