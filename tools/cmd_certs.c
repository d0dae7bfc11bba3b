/* fedc certs: the PKI of a test federation, for TLS with mutual
 * authentication: a CA, a server certificate and client certificates, all
 * with ECDSA P-256 keys, made with OpenSSL's libcrypto. */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "cli.h"
#include "commands.h"
#include "keyfiles.h"

#define CMD "certs"

#define MAX_CLIENTS  1000
#define MAX_HOSTS    64
#define MAX_DAYS     36500
#define ORGANIZATION "fedc test federation"
#define CA_NAME      "fedc test CA"

/* The names every server certificate holds. */
#define DEFAULT_SAN "DNS:localhost,IP:127.0.0.1,IP:::1"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fedc certs --out DIR [--clients N] [--host NAME]... [--days D] [--force]\n"
            "\n"
            "Makes the certificates of a test federation, for TLS 1.3 with mutual authentication\n"
            "(ECDSA P-256 keys, SHA-256 signatures):\n"
            "  DIR/ca.pem, DIR/ca.key           a CA that signs the others\n"
            "  DIR/server.pem, DIR/server.key   the server's certificate (serverAuth), for\n"
            "                                   localhost, 127.0.0.1, ::1 and every --host\n"
            "  DIR/client-000.pem, .key, ...    one per client (clientAuth), CN client-000, ...\n"
            "Private keys (*.key) are readable by their owner only (mode 0600).\n"
            "\n"
            "flags:\n"
            "  --out DIR       directory for the files, created if missing (required)\n"
            "  --clients N     number of client certificates, 0 to %d (default 3)\n"
            "  --host NAME     another DNS name or IP address the server is reached at;\n"
            "                  repeat for more (at most %d)\n"
            "  --days D        validity in days, 1 to %d (default 365); each certificate is\n"
            "                  valid from one hour ago\n"
            "  --force         replace existing files (otherwise an existing file is an error)\n"
            "  -h, --help      print this help\n"
            "\n"
            "For tests and trials: a production deployment issues its certificates from its own\n"
            "CA (see docs/cli.md).\n",
            MAX_CLIENTS, MAX_HOSTS, MAX_DAYS);
}

/* 1 for a DNS name fit for a certificate: labels of letters, digits, '-'
 * and '_', 1 to 63 characters each, 253 in all; "*." may lead. */
static int dns_name_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253) return 0;
    if (h[0] == '*' && h[1] == '.') h += 2;
    size_t label = 0;
    for (const char *p = h;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63) return 0;
            if (*p == '\0') return 1;
            label = 0;
            continue;
        }
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return 0;
        label++;
    }
}

static int is_ip(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

/* Prints the pending OpenSSL error after "what". */
static void ssl_fail(const char *what)
{
    char why[256];
    keyfiles_ssl_error(why, sizeof why);
    cli_error(CMD, "%s: %s", what, why);
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!k) ssl_fail("cannot make a P-256 key");
    return k;
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ex = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    int ok = ex && X509_add_ext(cert, ex, -1) == 1;
    X509_EXTENSION_free(ex);
    if (!ok) {
        char what[300];
        snprintf(what, sizeof what, "cannot add the extension %s = %s", OBJ_nid2sn(nid), value);
        ssl_fail(what);
    }
    return ok ? 0 : -1;
}

/* A random positive 126-bit serial number: 16 bytes, the top bit clear. */
static int set_serial(X509 *cert)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        ssl_fail("cannot draw a serial number");
        return -1;
    }
    b[0] = (unsigned char)((b[0] & 0x3f) | 0x40);
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL;
    BN_free(bn);
    if (!ok) ssl_fail("cannot set the serial number");
    return ok ? 0 : -1;
}

/* What a certificate is made of. */
typedef struct {
    const char *cn;
    EVP_PKEY *key;        /* the subject's key */
    X509 *issuer;         /* NULL: self-signed (the CA) */
    EVP_PKEY *issuer_key; /* the CA's key */
    const char *eku;      /* extendedKeyUsage of a leaf */
    const char *san;      /* subjectAltName, or NULL */
    time_t now;
    long days;
} cert_spec;

static X509 *make_cert(const cert_spec *s)
{
    X509 *c = X509_new();
    if (!c) {
        ssl_fail("out of memory");
        return NULL;
    }
    X509_NAME *name = X509_get_subject_name(c);
    time_t now = s->now;
    X509V3_CTX ctx;
    if (X509_set_version(c, X509_VERSION_3) != 1 || set_serial(c)) goto fail;
    if (!X509_time_adj_ex(X509_getm_notBefore(c), 0, -3600, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(c), (int)s->days, 0, &now) ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)ORGANIZATION, -1, -1, 0) !=
            1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)s->cn, -1, -1, 0) != 1 ||
        X509_set_issuer_name(c, s->issuer ? X509_get_subject_name(s->issuer) : name) != 1 ||
        X509_set_pubkey(c, s->key) != 1) {
        ssl_fail("cannot fill in the certificate");
        goto fail;
    }
    X509V3_set_ctx(&ctx, s->issuer ? s->issuer : c, c, NULL, NULL, 0);
    if (!s->issuer) {
        if (add_ext(c, &ctx, NID_basic_constraints, "critical,CA:TRUE") ||
            add_ext(c, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
            add_ext(c, &ctx, NID_subject_key_identifier, "hash") ||
            add_ext(c, &ctx, NID_authority_key_identifier, "keyid:always"))
            goto fail;
    } else {
        if (add_ext(c, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
            add_ext(c, &ctx, NID_key_usage, "critical,digitalSignature") ||
            add_ext(c, &ctx, NID_ext_key_usage, s->eku) ||
            add_ext(c, &ctx, NID_subject_key_identifier, "hash") ||
            add_ext(c, &ctx, NID_authority_key_identifier, "keyid:always"))
            goto fail;
        if (s->san && add_ext(c, &ctx, NID_subject_alt_name, s->san)) goto fail;
    }
    if (X509_sign(c, s->issuer_key, EVP_sha256()) <= 0) {
        ssl_fail("cannot sign the certificate");
        goto fail;
    }
    return c;
fail:
    X509_free(c);
    return NULL;
}

/* Makes a key and a certificate and writes them to DIR/base.key and
 * DIR/base.pem; *cert_out and *key_out, when given, take them. */
static int issue(keyfiles *kf, const char *dir, const char *base, cert_spec *s, X509 **cert_out,
                 EVP_PKEY **key_out)
{
    char pem[4096], keyp[4096], file[64];
    snprintf(file, sizeof file, "%s.pem", base);
    if (keyfiles_path(kf, dir, file, pem, sizeof pem)) return -1;
    snprintf(file, sizeof file, "%s.key", base);
    if (keyfiles_path(kf, dir, file, keyp, sizeof keyp)) return -1;
    s->key = new_key();
    if (!s->key) return -1;
    if (!s->issuer) s->issuer_key = s->key;
    X509 *c = make_cert(s);
    int rc = -1;
    if (c && !keyfiles_write_cert(kf, pem, c) && !keyfiles_write_key(kf, keyp, s->key)) rc = 0;
    if (rc == 0 && cert_out) {
        *cert_out = c;
        c = NULL;
    }
    if (rc == 0 && key_out) {
        *key_out = s->key;
        s->key = NULL;
    }
    X509_free(c);
    EVP_PKEY_free(s->key);
    s->key = NULL;
    return rc;
}

enum { OPT_CLIENTS = KEYFILES_OPT_NEXT, OPT_HOST, OPT_DAYS };

int fedc_cmd_certs(int argc, char **argv)
{
    static const struct option longopts[] = {KEYFILES_LONGOPTS,
                                             {"clients", required_argument, NULL, OPT_CLIENTS},
                                             {"host", required_argument, NULL, OPT_HOST},
                                             {"days", required_argument, NULL, OPT_DAYS},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    keyfiles kf = {.cmd = CMD};
    const char *hosts[MAX_HOSTS];
    size_t nhosts = 0;
    uint64_t clients = 3, days = 365;

    int c, code;
    cli_flags_begin();
    while ((c = keyfiles_flag(&kf, "the certificates", argc, argv, longopts, usage, &code)) !=
           CLI_FLAGS_END) {
        switch (c) {
        case CLI_FLAGS_EXIT: return code;
        case OPT_CLIENTS:
            if (cli_u64(CMD, "--clients", optarg, 0, MAX_CLIENTS, &clients)) return FEDC_EXIT_USAGE;
            break;
        case OPT_HOST:
            if (nhosts == MAX_HOSTS) {
                cli_error(CMD, "more than %d --host flags", MAX_HOSTS);
                return FEDC_EXIT_USAGE;
            }
            if (!is_ip(optarg) && !dns_name_ok(optarg)) {
                cli_error(CMD, "--host '%s' is neither an IP address nor a DNS name", optarg);
                return FEDC_EXIT_USAGE;
            }
            hosts[nhosts++] = optarg;
            break;
        case OPT_DAYS:
            if (cli_u64(CMD, "--days", optarg, 1, MAX_DAYS, &days)) return FEDC_EXIT_USAGE;
            break;
        }
    }
    const char *out = kf.dir;

    /* The server's subjectAltName: the defaults, then each new --host. */
    size_t sanlen = sizeof DEFAULT_SAN;
    for (size_t i = 0; i < nhosts; i++) sanlen += strlen(hosts[i]) + 5;
    char *san = malloc(sanlen);
    if (!san) {
        cli_error(CMD, "out of memory");
        return FEDC_EXIT_FAILURE;
    }
    strcpy(san, DEFAULT_SAN);
    for (size_t i = 0; i < nhosts; i++) {
        char item[300];
        snprintf(item, sizeof item, "%s:%s", is_ip(hosts[i]) ? "IP" : "DNS", hosts[i]);
        /* Skip a name already listed (each item is followed by ',' or the end). */
        size_t il = strlen(item);
        int dup = 0;
        for (const char *p = san; (p = strstr(p, item)) != NULL; p += il)
            if ((p == san || p[-1] == ',') && (p[il] == ',' || p[il] == '\0')) dup = 1;
        if (!dup) {
            strcat(san, ",");
            strcat(san, item);
        }
    }
    const char *server_cn = "localhost";
    for (size_t i = 0; i < nhosts; i++)
        if (!is_ip(hosts[i]) && hosts[i][0] != '*') {
            server_cn = hosts[i];
            break;
        }

    int rc = FEDC_EXIT_FAILURE;
    X509 *ca = NULL;
    EVP_PKEY *ca_key = NULL;

    /* Refuse before writing anything if a file is in the way. */
    char path[4096], base[32];
    static const char *const fixed[] = {"ca.pem", "ca.key", "server.pem", "server.key"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (keyfiles_path(&kf, out, fixed[i], path, sizeof path) || keyfiles_check(&kf, path)) goto done;
    for (uint64_t i = 0; i < clients; i++) {
        for (int k = 0; k < 2; k++) {
            snprintf(base, sizeof base, "client-%03u.%s", (unsigned)i, k ? "key" : "pem");
            if (keyfiles_path(&kf, out, base, path, sizeof path) || keyfiles_check(&kf, path)) goto done;
        }
    }
    if (keyfiles_mkdir(&kf, out)) goto done;

    time_t now = time(NULL);
    cert_spec s = {.cn = CA_NAME, .now = now, .days = (long)days};
    if (issue(&kf, out, "ca", &s, &ca, &ca_key)) goto undo;

    s = (cert_spec){.cn = server_cn,
                    .issuer = ca,
                    .issuer_key = ca_key,
                    .eku = "serverAuth",
                    .san = san,
                    .now = now,
                    .days = (long)days};
    if (issue(&kf, out, "server", &s, NULL, NULL)) goto undo;

    for (uint64_t i = 0; i < clients; i++) {
        snprintf(base, sizeof base, "client-%03u", (unsigned)i);
        s = (cert_spec){.cn = base,
                        .issuer = ca,
                        .issuer_key = ca_key,
                        .eku = "clientAuth",
                        .now = now,
                        .days = (long)days};
        if (issue(&kf, out, base, &s, NULL, NULL)) goto undo;
    }

    printf("%s/ca.pem  CA certificate, CN=%s\n", out, CA_NAME);
    printf("%s/ca.key  CA private key: it signs certificates, keep it away from the nodes\n", out);
    printf("%s/server.pem  server certificate, CN=%s, %s\n", out, server_cn, san);
    printf("%s/server.key  server private key\n", out);
    for (uint64_t i = 0; i < clients; i++) {
        printf("%s/client-%03u.pem  client certificate, CN=client-%03u\n", out, (unsigned)i, (unsigned)i);
        printf("%s/client-%03u.key  client private key\n", out, (unsigned)i);
    }

    char from[32], until[32];
    time_t t0 = now - 3600, t1 = now + (time_t)days * 86400;
    struct tm tm;
    strftime(from, sizeof from, "%Y-%m-%d %H:%M:%S", gmtime_r(&t0, &tm));
    strftime(until, sizeof until, "%Y-%m-%d %H:%M:%S", gmtime_r(&t1, &tm));
    printf("valid from %s to %s UTC\n", from, until);
    rc = FEDC_EXIT_OK;
    goto done;
undo:
    keyfiles_undo(&kf);
done:
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    keyfiles_free(&kf);
    free(san);
    return rc;
}
