/* Node keys: fingerprints, the .pub line format and loading a private key
 * (see nodekey.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "core/nodekey.h"
#include "fedc/core.h"

#define KEY_TYPE "ed25519"

/* The longest base64 field looked at: well past a 32-byte key's 44. */
#define B64_MAX 1024

void fedc__nodekey_fingerprint(const uint8_t pub[32], char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t h[crypto_hash_sha256_BYTES];
    if (sodium_init() < 0) abort();
    crypto_hash_sha256(h, pub, FEDC_NODEKEY_PUB_LEN);
    for (int i = 0; i < FEDC_NODEKEY_FPR_LEN / 2; i++) {
        out[2 * i] = hex[h[i] >> 4];
        out[2 * i + 1] = hex[h[i] & 15];
    }
    out[FEDC_NODEKEY_FPR_LEN] = '\0';
}

int fedc__nodekey_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > FEDC_NODEKEY_NAME_MAX || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '_' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

int fedc__nodekey_format_pub(const uint8_t pub[32], const char *name, char *out, size_t outlen)
{
    if (!fedc__nodekey_name_ok(name)) return FEDC_ERR_INVALID;
    char b64[sodium_base64_ENCODED_LEN(FEDC_NODEKEY_PUB_LEN, sodium_base64_VARIANT_ORIGINAL)];
    if (sodium_init() < 0) abort();
    sodium_bin2base64(b64, sizeof b64, pub, FEDC_NODEKEY_PUB_LEN, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf(out, outlen, "%s %s %s", KEY_TYPE, b64, name);
    if (n < 0 || (size_t)n >= outlen) return FEDC_ERR_TOO_LARGE;
    return FEDC_OK;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* The next field of *p (skipping blanks before it): its start and length;
 * *p moves past it. A field ends at a blank, "\r\n", "\n" or the end. */
static const char *next_field(const char **p, size_t *len)
{
    const char *s = *p;
    while (is_blank(*s)) s++;
    const char *e = s;
    while (*e && !is_blank(*e) && *e != '\n' && *e != '\r') e++;
    *p = e;
    *len = (size_t)(e - s);
    return s;
}

int fedc__nodekey_parse_pub(const char *line, uint8_t pub[32], char *name, size_t namelen, char *err,
                            size_t errlen)
{
    const char *p = line;
    size_t len;
    const char *type = next_field(&p, &len);
    if (len == 0) return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "empty public key line");
    if (len != strlen(KEY_TYPE) || memcmp(type, KEY_TYPE, len) != 0)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "key type '%.*s' is not %s",
                              (int)(len > 32 ? 32 : len), type, KEY_TYPE);

    const char *b64 = next_field(&p, &len);
    if (len == 0) return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "no key after '%s'", KEY_TYPE);
    if (len > B64_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                              "the key is %zu base64 characters, an %s key is 44", len, KEY_TYPE);
    uint8_t raw[B64_MAX];
    size_t rawlen = 0;
    const char *end = NULL;
    if (sodium_init() < 0) abort();
    if (sodium_base642bin(raw, sizeof raw, b64, len, NULL, &rawlen, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        end != b64 + len)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the key '%.*s' is not valid base64",
                              (int)(len > 64 ? 64 : len), b64);
    if (rawlen != FEDC_NODEKEY_PUB_LEN)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the key is %zu bytes, an %s key is %d", rawlen,
                              KEY_TYPE, FEDC_NODEKEY_PUB_LEN);

    const char *nm = next_field(&p, &len);
    if (len == 0) return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "no name after the key");
    char tmp[FEDC_NODEKEY_NAME_MAX + 1];
    if (len > FEDC_NODEKEY_NAME_MAX)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the name is %zu characters, more than %d", len,
                              FEDC_NODEKEY_NAME_MAX);
    memcpy(tmp, nm, len);
    tmp[len] = '\0';
    if (!fedc__nodekey_name_ok(tmp))
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                              "invalid name '%s': use 1 to %d characters of [A-Za-z0-9._-], not starting "
                              "with '.'",
                              tmp, FEDC_NODEKEY_NAME_MAX);
    while (is_blank(*p)) p++;
    if (*p == '\r') p++;
    if (*p == '\n') p++;
    if (*p != '\0')
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "unexpected text after the name '%s'", tmp);
    if (len >= namelen) return fedc_set_error(err, errlen, FEDC_ERR_TOO_LARGE, "name buffer too small");
    memcpy(pub, raw, FEDC_NODEKEY_PUB_LEN);
    memcpy(name, tmp, len + 1);
    return FEDC_OK;
}

/* The passphrase callback: node keys are not encrypted, and a prompt on the
 * terminal is never wanted. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

int fedc__nodekey_load(const char *path, EVP_PKEY **key, uint8_t pub[32], char *err, size_t errlen)
{
    *key = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", path,
                              strerror(errno));
    ERR_clear_error();
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
    fclose(f);
    if (!k) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        ERR_clear_error();
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s: not an unencrypted PEM private key (%s)",
                              path, why);
    }
    if (EVP_PKEY_get_id(k) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(k);
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s: not an Ed25519 key", path);
    }
    size_t n = FEDC_NODEKEY_PUB_LEN;
    if (EVP_PKEY_get_raw_public_key(k, pub, &n) != 1 || n != FEDC_NODEKEY_PUB_LEN) {
        ERR_clear_error();
        EVP_PKEY_free(k);
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s: cannot read the public key", path);
    }
    *key = k;
    return FEDC_OK;
}

/* ---- node authentication ---- */

static size_t auth_message(uint8_t **out, const uint8_t nonce[FEDC_NODEAUTH_NONCE], const char *node_id,
                           const uint8_t *binding, size_t binding_len)
{
    size_t ctx = sizeof FEDC_NODEAUTH_CTX - 1, id = strlen(node_id);
    size_t len = ctx + FEDC_NODEAUTH_NONCE + id + binding_len;
    uint8_t *m = malloc(len);
    if (!m) return 0;
    memcpy(m, FEDC_NODEAUTH_CTX, ctx);
    memcpy(m + ctx, nonce, FEDC_NODEAUTH_NONCE);
    memcpy(m + ctx + FEDC_NODEAUTH_NONCE, node_id, id);
    if (binding_len) memcpy(m + ctx + FEDC_NODEAUTH_NONCE + id, binding, binding_len);
    *out = m;
    return len;
}

int fedc__nodeauth_sign(EVP_PKEY *key, const uint8_t nonce[FEDC_NODEAUTH_NONCE], const char *node_id,
                        const uint8_t *binding, size_t binding_len, uint8_t sig[FEDC_NODEAUTH_SIG])
{
    uint8_t *m = NULL;
    size_t len = auth_message(&m, nonce, node_id, binding, binding_len);
    if (!len) return FEDC_ERR_NOMEM;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = FEDC_NODEAUTH_SIG;
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, &siglen, m, len) == 1 && siglen == FEDC_NODEAUTH_SIG;
    EVP_MD_CTX_free(ctx);
    free(m);
    ERR_clear_error();
    return ok ? FEDC_OK : FEDC_ERR_INVALID;
}

int fedc__nodeauth_verify(const uint8_t pub[32], const uint8_t nonce[FEDC_NODEAUTH_NONCE],
                          const char *node_id, const uint8_t *binding, size_t binding_len,
                          const uint8_t sig[FEDC_NODEAUTH_SIG])
{
    uint8_t *m = NULL;
    size_t len = auth_message(&m, nonce, node_id, binding, binding_len);
    if (!len) return 0;
    int ok = crypto_sign_verify_detached(sig, m, len, pub) == 0;
    free(m);
    return ok;
}

int fedc__nodekey_load_list(const char *path, fedc__nodekey_entry **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO, "%s: %s", path,
                              strerror(errno));
    fedc__nodekey_entry *list = NULL;
    size_t count = 0, cap = 0, lineno = 0;
    char line[1024];
    int rc = FEDC_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0') continue;
        if (count == cap) {
            size_t nc = cap ? 2 * cap : 16;
            fedc__nodekey_entry *nl = realloc(list, nc * sizeof *nl);
            if (!nl) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
                break;
            }
            list = nl;
            cap = nc;
        }
        fedc__nodekey_entry *e = &list[count];
        char why[256];
        if (fedc__nodekey_parse_pub(p, e->pub, e->name, sizeof e->name, why, sizeof why)) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "%s line %zu: %s", path, lineno, why);
            break;
        }
        fedc__nodekey_fingerprint(e->pub, e->fpr);
        count++;
    }
    if (!rc && ferror(f)) rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "%s: read error", path);
    fclose(f);
    if (rc) {
        free(list);
        return rc;
    }
    *out = list;
    *n = count;
    return FEDC_OK;
}

const fedc__nodekey_entry *fedc__nodekey_find(const fedc__nodekey_entry *list, size_t n,
                                              const uint8_t pub[32])
{
    for (size_t i = 0; i < n; i++)
        if (sodium_memcmp(list[i].pub, pub, 32) == 0) return &list[i];
    return NULL;
}
