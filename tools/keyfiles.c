/* Output files of fedc certs and fedc keygen (see keyfiles.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "data/data_internal.h"
#include "keyfiles.h"

int keyfiles_flag(keyfiles *kf, const char *what, int argc, char **argv, const struct option *longopts,
                  void (*usage)(FILE *), int *exit_code)
{
    for (;;) {
        int c = cli_flag(kf->cmd, argc, argv, longopts, usage, exit_code);
        switch (c) {
        case KEYFILES_OPT_OUT: kf->dir = optarg; break;
        case KEYFILES_OPT_FORCE: kf->force = 1; break;
        case CLI_FLAGS_END:
            if (kf->dir && *kf->dir) return CLI_FLAGS_END;
            cli_error(kf->cmd, "--out is required (the directory for %s)", what);
            *exit_code = FEDC_EXIT_USAGE;
            return CLI_FLAGS_EXIT;
        default: return c;
        }
    }
}

int keyfiles_mkdir(keyfiles *kf, const char *dir)
{
    char err[FEDC_ERRMSG_MAX];
    if (fedc__mkdirs(dir, err, sizeof err) != FEDC_OK) {
        cli_error(kf->cmd, "%s", err);
        return -1;
    }
    return 0;
}

int keyfiles_path(keyfiles *kf, const char *dir, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= outlen) {
        cli_error(kf->cmd, "path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

int keyfiles_check(keyfiles *kf, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        cli_error(kf->cmd, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!kf->force) {
        cli_error(kf->cmd, "%s already exists (--force replaces it)", path);
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        cli_error(kf->cmd, "%s is a directory", path);
        return -1;
    }
    return 0;
}

void keyfiles_ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown OpenSSL error");
    ERR_clear_error();
}

/* Creates path anew with mode, recording it for keyfiles_undo. */
static FILE *create(keyfiles *kf, const char *path, mode_t mode)
{
    if (kf->n == kf->cap) {
        size_t cap = kf->cap ? 2 * kf->cap : 16;
        char **w = realloc(kf->written, cap * sizeof *w);
        if (!w) {
            cli_error(kf->cmd, "out of memory");
            return NULL;
        }
        kf->written = w;
        kf->cap = cap;
    }
    char *copy = strdup(path);
    if (!copy) {
        cli_error(kf->cmd, "out of memory");
        return NULL;
    }
    /* An existing file (or link) is replaced only with --force, and then
     * removed first: O_EXCL creates a new file with this mode, and never
     * writes through a link. */
    if (kf->force && unlink(path) != 0 && errno != ENOENT) {
        cli_error(kf->cmd, "cannot replace %s: %s", path, strerror(errno));
        free(copy);
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        cli_error(kf->cmd, "cannot create %s: %s%s", path, strerror(errno),
                  errno == EEXIST ? " (--force replaces it)" : "");
        free(copy);
        return NULL;
    }
    kf->written[kf->n++] = copy;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        cli_error(kf->cmd, "%s: %s", path, strerror(errno));
        close(fd);
    }
    return f;
}

/* Closes f; ok says whether the writes into it succeeded. */
static int finish(keyfiles *kf, const char *path, FILE *f, int ok)
{
    int bad = ferror(f);
    errno = 0;
    if (fclose(f) != 0 || bad) {
        cli_error(kf->cmd, "cannot write %s: %s", path, errno ? strerror(errno) : "I/O error");
        return -1;
    }
    if (!ok) {
        char why[256];
        keyfiles_ssl_error(why, sizeof why);
        cli_error(kf->cmd, "cannot write %s: %s", path, why);
        return -1;
    }
    return 0;
}

int keyfiles_write_key(keyfiles *kf, const char *path, EVP_PKEY *key)
{
    FILE *f = create(kf, path, 0600);
    if (!f) return -1;
    int ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    return finish(kf, path, f, ok);
}

int keyfiles_write_cert(keyfiles *kf, const char *path, X509 *cert)
{
    FILE *f = create(kf, path, 0644);
    if (!f) return -1;
    int ok = PEM_write_X509(f, cert) == 1;
    return finish(kf, path, f, ok);
}

int keyfiles_write_line(keyfiles *kf, const char *path, const char *line)
{
    FILE *f = create(kf, path, 0644);
    if (!f) return -1;
    fprintf(f, "%s\n", line);
    return finish(kf, path, f, 1);
}

void keyfiles_undo(keyfiles *kf)
{
    for (size_t i = 0; i < kf->n; i++) unlink(kf->written[i]);
}

void keyfiles_free(keyfiles *kf)
{
    for (size_t i = 0; i < kf->n; i++) free(kf->written[i]);
    free(kf->written);
    kf->written = NULL;
    kf->n = kf->cap = 0;
}
