/* Output files of the commands that make key material (fedc certs, fedc
 * keygen), and the flags that place them (--out DIR, --force): all are
 * checked before any is written, each is created anew (never through an
 * existing file or link), private keys readable by their owner only, and a
 * command that fails part way removes what it wrote. */
#ifndef FEDC_TOOLS_KEYFILES_H
#define FEDC_TOOLS_KEYFILES_H

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>

#include <openssl/types.h>

typedef struct {
    const char *cmd; /* for error messages */
    const char *dir; /* --out: the directory of the files */
    int force;       /* --force: replace existing files */
    char **written;  /* paths created so far */
    size_t n, cap;
} keyfiles;

/* The flags every such command takes, first in its longopts; its own
 * flags' codes start at KEYFILES_OPT_NEXT. */
enum { KEYFILES_OPT_OUT = 256, KEYFILES_OPT_FORCE, KEYFILES_OPT_NEXT };
/* clang-format off */
#define KEYFILES_LONGOPTS \
    {"out", required_argument, NULL, KEYFILES_OPT_OUT}, {"force", no_argument, NULL, KEYFILES_OPT_FORCE}
/* clang-format on */

/* cli_flag() for such a command: takes --out DIR into kf->dir and --force
 * into kf->force, and returns the command's own flags. If the flags end
 * without --out, prints "--out is required (the directory for WHAT)" and
 * returns CLI_FLAGS_EXIT with FEDC_EXIT_USAGE. */
int keyfiles_flag(keyfiles *kf, const char *what, int argc, char **argv, const struct option *longopts,
                  void (*usage)(FILE *), int *exit_code);

/* Creates dir (and its parents) if missing. Prints the error and returns -1
 * on failure. */
int keyfiles_mkdir(keyfiles *kf, const char *dir);

/* out = "dir/name". Prints the error and returns -1 if it does not fit. */
int keyfiles_path(keyfiles *kf, const char *dir, const char *name, char *out, size_t outlen);

/* 0 if path may be written: it does not exist, or --force was given.
 * Otherwise prints an error naming it and returns -1. */
int keyfiles_check(keyfiles *kf, const char *path);

/* Writes a PEM private key (mode 0600) or certificate (mode 0644, less the
 * umask) to path, or text (mode 0644) followed by a newline. Each prints
 * the error, naming the file, and returns -1 on failure. */
int keyfiles_write_key(keyfiles *kf, const char *path, EVP_PKEY *key);
int keyfiles_write_cert(keyfiles *kf, const char *path, X509 *cert);
int keyfiles_write_line(keyfiles *kf, const char *path, const char *line);

/* Removes every file written so far (after a failure). */
void keyfiles_undo(keyfiles *kf);

/* Frees kf's memory; the files stay. */
void keyfiles_free(keyfiles *kf);

/* The first error of OpenSSL's error queue as text (then empties the queue). */
void keyfiles_ssl_error(char *buf, size_t len);

#endif
