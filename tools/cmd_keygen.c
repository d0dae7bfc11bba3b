/* fedc keygen: a node's Ed25519 key pair, for node authentication (the
 * format is in src/core/nodekey.h). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "cli.h"
#include "commands.h"
#include "core/nodekey.h"
#include "keyfiles.h"

#define CMD "keygen"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fedc keygen --out DIR [--name NAME] [--force]\n"
            "\n"
            "Makes a node key pair (Ed25519) with which a server or client authenticates itself:\n"
            "  DIR/NAME.key   the private key, PEM, readable by its owner only (mode 0600)\n"
            "  DIR/NAME.pub   the public key, one line: ed25519 <base64 of the 32-byte key> NAME\n"
            "and prints the key's fingerprint: the first 16 bytes of SHA-256 of the raw public\n"
            "key, in hex. The fingerprint is the node's default node id.\n"
            "\n"
            "flags:\n"
            "  --out DIR     directory for the files, created if missing (required)\n"
            "  --name NAME   the key's name: 1 to %d characters of [A-Za-z0-9._-], not\n"
            "                starting with '.' (default: node)\n"
            "  --force       replace existing files (otherwise an existing file is an error)\n"
            "  -h, --help    print this help\n",
            FEDC_NODEKEY_NAME_MAX);
}

enum { OPT_NAME = KEYFILES_OPT_NEXT };

int fedc_cmd_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {KEYFILES_LONGOPTS,
                                             {"name", required_argument, NULL, OPT_NAME},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    keyfiles kf = {.cmd = CMD};
    const char *name = "node";
    int c, code;
    cli_flags_begin();
    while ((c = keyfiles_flag(&kf, "the key files", argc, argv, longopts, usage, &code)) != CLI_FLAGS_END) {
        switch (c) {
        case CLI_FLAGS_EXIT: return code;
        case OPT_NAME: name = optarg; break;
        }
    }
    if (!fedc__nodekey_name_ok(name)) {
        cli_error(CMD, "invalid --name '%s': use 1 to %d characters of [A-Za-z0-9._-], not starting with '.'",
                  name, FEDC_NODEKEY_NAME_MAX);
        return FEDC_EXIT_USAGE;
    }

    const char *out = kf.dir;
    char key_path[4096], pub_path[4096], file[FEDC_NODEKEY_NAME_MAX + 8];
    snprintf(file, sizeof file, "%s.key", name);
    if (keyfiles_path(&kf, out, file, key_path, sizeof key_path)) return FEDC_EXIT_FAILURE;
    snprintf(file, sizeof file, "%s.pub", name);
    if (keyfiles_path(&kf, out, file, pub_path, sizeof pub_path)) return FEDC_EXIT_FAILURE;
    if (keyfiles_check(&kf, key_path) || keyfiles_check(&kf, pub_path)) return FEDC_EXIT_FAILURE;
    if (keyfiles_mkdir(&kf, out)) return FEDC_EXIT_FAILURE;

    int rc = FEDC_EXIT_FAILURE;
    char why[256];
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    uint8_t pub[FEDC_NODEKEY_PUB_LEN];
    size_t publen = sizeof pub;
    char line[FEDC_NODEKEY_PUB_LINE_MAX], fpr[FEDC_NODEKEY_FPR_LEN + 1];
    if (!key || EVP_PKEY_get_raw_public_key(key, pub, &publen) != 1 || publen != sizeof pub) {
        keyfiles_ssl_error(why, sizeof why);
        cli_error(CMD, "cannot make an Ed25519 key: %s", why);
        goto done;
    }
    if (fedc__nodekey_format_pub(pub, name, line, sizeof line) != FEDC_OK) {
        cli_error(CMD, "cannot format the public key line for '%s'", name);
        goto done;
    }
    if (keyfiles_write_key(&kf, key_path, key) || keyfiles_write_line(&kf, pub_path, line)) {
        keyfiles_undo(&kf);
        goto done;
    }
    fedc__nodekey_fingerprint(pub, fpr);
    printf("%s  private key (keep it secret)\n", key_path);
    printf("%s  public key\n", pub_path);
    printf("fingerprint: %s\n", fpr);
    rc = FEDC_EXIT_OK;
done:
    EVP_PKEY_free(key);
    keyfiles_free(&kf);
    return rc;
}
