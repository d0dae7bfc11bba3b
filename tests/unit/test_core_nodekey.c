/*
 * Node keys (src/core/nodekey.h): the fingerprint against SHA-256 test
 * values, the .pub line format (round trip, bad base64, another key type,
 * a key of the wrong length, bad or missing names) and loading a private
 * key file written by OpenSSL.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "core/nodekey.h"
#include "test_util.h"

/* base64 of 32 bytes 0x00, 0x01, ..., 0x1f. */
#define KEY_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

static void test_fingerprint(void)
{
    uint8_t zero[32] = {0};
    char fpr[33];
    /* SHA-256 of 32 zero bytes: 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925. */
    fedc__nodekey_fingerprint(zero, fpr);
    CHECK(strcmp(fpr, "66687aadf862bd776c8fc18b8e9f8e20") == 0, "fingerprint of zeros: %s", fpr);
    uint8_t seq[32];
    for (int i = 0; i < 32; i++) seq[i] = (uint8_t)i;
    /* SHA-256 of 00 01 .. 1f: 630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd. */
    fedc__nodekey_fingerprint(seq, fpr);
    CHECK(strcmp(fpr, "630dcd2966c4336691125448bbb25b4f") == 0, "fingerprint of 00..1f: %s", fpr);
}

static void test_parse_good(void)
{
    uint8_t pub[32];
    char name[FEDC_NODEKEY_NAME_MAX + 1], err[FEDC_ERRMSG_MAX];
    static const char *const lines[] = {"ed25519 " KEY_B64 " node-7", "ed25519 " KEY_B64 " node-7\n",
                                        "ed25519 " KEY_B64 " node-7\r\n", "ed25519\t" KEY_B64 "  node-7 \n"};
    for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++) {
        memset(pub, 0xee, sizeof pub);
        name[0] = '\0';
        err[0] = '\0';
        CHECK_STATUS(fedc__nodekey_parse_pub(lines[k], pub, name, sizeof name, err, sizeof err), FEDC_OK,
                     lines[k]);
        int same = 1;
        for (int i = 0; i < 32; i++) same &= pub[i] == i;
        CHECK(same, "line %zu: wrong key bytes", k);
        CHECK(strcmp(name, "node-7") == 0, "line %zu: name '%s' (%s)", k, name, err);
    }

    /* format_pub writes what parse_pub reads. */
    uint8_t in[32];
    for (int i = 0; i < 32; i++) in[i] = (uint8_t)(255 - 7 * i);
    char line[FEDC_NODEKEY_PUB_LINE_MAX];
    CHECK_STATUS(fedc__nodekey_format_pub(in, "a.b_c-1", line, sizeof line), FEDC_OK, "format_pub");
    CHECK_STATUS(fedc__nodekey_parse_pub(line, pub, name, sizeof name, err, sizeof err), FEDC_OK, line);
    CHECK(memcmp(pub, in, 32) == 0 && strcmp(name, "a.b_c-1") == 0, "round trip: '%s'", line);
    CHECK_STATUS(fedc__nodekey_format_pub(in, "bad name", line, sizeof line), FEDC_ERR_INVALID,
                 "format_pub with a bad name");
    CHECK_STATUS(fedc__nodekey_format_pub(in, "n", line, 20), FEDC_ERR_TOO_LARGE, "format_pub, small buffer");
    char longest[FEDC_NODEKEY_NAME_MAX + 1];
    memset(longest, 'x', FEDC_NODEKEY_NAME_MAX);
    longest[FEDC_NODEKEY_NAME_MAX] = '\0';
    CHECK_STATUS(fedc__nodekey_format_pub(in, longest, line, sizeof line), FEDC_OK,
                 "format_pub, longest name");
    CHECK_STATUS(fedc__nodekey_parse_pub(line, pub, name, sizeof name, err, sizeof err), FEDC_OK,
                 "parse_pub, longest name");
}

/* Each line must fail with FEDC_ERR_FORMAT and an error containing want. */
static void check_bad(const char *line, const char *want)
{
    uint8_t pub[32];
    char name[FEDC_NODEKEY_NAME_MAX + 1], err[FEDC_ERRMSG_MAX] = "";
    CHECK_STATUS(fedc__nodekey_parse_pub(line, pub, name, sizeof name, err, sizeof err), FEDC_ERR_FORMAT,
                 line);
    CHECK_CONTAINS(err, want, line);
}

static void test_parse_bad(void)
{
    /* bad base64: a character outside the alphabet, missing padding, junk after it */
    check_bad("ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8* node", "not valid base64");
    check_bad("ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 node", "not valid base64");
    check_bad("ed25519 " KEY_B64 "AA node", "not valid base64");
    check_bad("ed25519 !!!! node", "not valid base64");
    /* another key type */
    check_bad("ssh-ed25519 " KEY_B64 " node", "key type 'ssh-ed25519' is not ed25519");
    check_bad("rsa " KEY_B64 " node", "key type 'rsa'");
    check_bad("ED25519 " KEY_B64 " node", "key type 'ED25519'");
    /* wrong lengths: 31 and 33 bytes, nothing */
    check_bad("ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg== node", "the key is 31 bytes");
    check_bad("ed25519 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g node", "the key is 33 bytes");
    check_bad("ed25519 AAAA node", "the key is 3 bytes");
    /* missing fields, bad names, extra text */
    check_bad("", "empty");
    check_bad("\n", "empty");
    check_bad("ed25519", "no key");
    check_bad("ed25519 " KEY_B64, "no name");
    check_bad("ed25519 " KEY_B64 " \n", "no name");
    check_bad("ed25519 " KEY_B64 " .hidden", "invalid name '.hidden'");
    check_bad("ed25519 " KEY_B64 " a/b", "invalid name 'a/b'");
    check_bad("ed25519 " KEY_B64 " node extra", "unexpected text after the name");
    check_bad("ed25519 " KEY_B64 " node\nsecond line", "unexpected text");
    char line[300];
    snprintf(line, sizeof line, "ed25519 " KEY_B64 " %0*d", FEDC_NODEKEY_NAME_MAX + 1, 0);
    check_bad(line, "more than");

    /* A name buffer that is too small is an error, not a truncation. */
    uint8_t pub[32];
    char small[4], err[FEDC_ERRMSG_MAX];
    CHECK_STATUS(
        fedc__nodekey_parse_pub("ed25519 " KEY_B64 " node", pub, small, sizeof small, err, sizeof err),
        FEDC_ERR_TOO_LARGE, "parse_pub into a 4-byte name buffer");
}

/* Writes key as a PEM private key into a new temporary file; returns its path. */
static char *write_key(EVP_PKEY *key)
{
    char *path = strdup("/tmp/fedc-nodekey.XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(f != NULL, "cannot create %s", path);
    if (!f) return path;
    CHECK(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1, "PEM_write_PrivateKey");
    fclose(f);
    return path;
}

static void test_load(void)
{
    char err[FEDC_ERRMSG_MAX];
    uint8_t pub[32], want[32];
    EVP_PKEY *loaded = NULL;

    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    size_t n = sizeof want;
    CHECK(key && EVP_PKEY_get_raw_public_key(key, want, &n) == 1 && n == 32, "make an Ed25519 key");
    char *path = write_key(key);
    CHECK_STATUS(fedc__nodekey_load(path, &loaded, pub, err, sizeof err), FEDC_OK, "load an Ed25519 key");
    CHECK(loaded != NULL && memcmp(pub, want, 32) == 0, "loaded key's public key differs (%s)", err);
    CHECK(loaded && EVP_PKEY_eq(loaded, key) == 1, "loaded key is not the key written");
    EVP_PKEY_free(loaded);
    unlink(path);
    free(path);
    EVP_PKEY_free(key);

    /* A P-256 key is not a node key. */
    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    path = write_key(key);
    CHECK_STATUS(fedc__nodekey_load(path, &loaded, pub, err, sizeof err), FEDC_ERR_FORMAT,
                 "load a P-256 key");
    CHECK_CONTAINS(err, "not an Ed25519 key", "P-256 key");
    CHECK(loaded == NULL, "a failed load returned a key");
    unlink(path);
    free(path);
    EVP_PKEY_free(key);

    /* Not a key at all; no file. */
    char junk[] = "/tmp/fedc-nodekey.XXXXXX";
    int fd = mkstemp(junk);
    CHECK(fd >= 0 && write(fd, "ed25519 " KEY_B64 " node\n", 8 + 44 + 6) == 58, "write %s", junk);
    if (fd >= 0) close(fd);
    CHECK_STATUS(fedc__nodekey_load(junk, &loaded, pub, err, sizeof err), FEDC_ERR_FORMAT,
                 "load a .pub file");
    CHECK_CONTAINS(err, junk, "error names the file");
    unlink(junk);
    CHECK_STATUS(fedc__nodekey_load("/nonexistent/node.key", &loaded, pub, err, sizeof err),
                 FEDC_ERR_NOTFOUND, "load a missing file");
    CHECK_CONTAINS(err, "/nonexistent/node.key", "error names the missing file");
}

/* Node authentication: a signature verifies for its nonce, node id and TLS
 * binding only, so a captured response replayed on a new connection (a
 * fresh nonce, another TLS session) or under another id fails. */
static void test_auth(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"),
             *other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    uint8_t pub[32], opub[32];
    size_t n = 32;
    CHECK(key && other && EVP_PKEY_get_raw_public_key(key, pub, &n) == 1, "make a key");
    n = 32;
    EVP_PKEY_get_raw_public_key(other, opub, &n);
    uint8_t nonce[FEDC_NODEAUTH_NONCE], nonce2[FEDC_NODEAUTH_NONCE], bind[32], bind2[32],
        sig[FEDC_NODEAUTH_SIG];
    for (int i = 0; i < 32; i++) {
        nonce[i] = (uint8_t)i;
        nonce2[i] = (uint8_t)(i + 1);
        bind[i] = (uint8_t)(100 + i);
        bind2[i] = (uint8_t)(200 + i);
    }
    CHECK_STATUS(fedc__nodeauth_sign(key, nonce, "node-a", bind, 32, sig), FEDC_OK, "sign");
    CHECK(fedc__nodeauth_verify(pub, nonce, "node-a", bind, 32, sig), "a good signature verifies");
    CHECK(!fedc__nodeauth_verify(pub, nonce2, "node-a", bind, 32, sig), "replayed for another nonce");
    CHECK(!fedc__nodeauth_verify(pub, nonce, "node-a", bind2, 32, sig), "replayed on another TLS session");
    CHECK(!fedc__nodeauth_verify(pub, nonce, "node-a", NULL, 0, sig), "replayed on a plaintext connection");
    CHECK(!fedc__nodeauth_verify(pub, nonce, "node-b", bind, 32, sig), "replayed under another node id");
    CHECK(!fedc__nodeauth_verify(opub, nonce, "node-a", bind, 32, sig), "verified with another key");
    sig[10] ^= 1;
    CHECK(!fedc__nodeauth_verify(pub, nonce, "node-a", bind, 32, sig), "a flipped bit");
    /* Without a binding (plaintext) it still works. */
    CHECK_STATUS(fedc__nodeauth_sign(key, nonce, "node-a", NULL, 0, sig), FEDC_OK, "sign without binding");
    CHECK(fedc__nodeauth_verify(pub, nonce, "node-a", NULL, 0, sig), "a plaintext signature verifies");
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

/* The allow-list: comments and blank lines skipped, a bad line named. */
static void test_list(void)
{
    char dir[] = "/tmp/fedc-keys.XXXXXX", path[256], err[FEDC_ERRMSG_MAX];
    CHECK(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/authorized", dir);
    uint8_t a[32], b[32];
    for (int i = 0; i < 32; i++) {
        a[i] = (uint8_t)i;
        b[i] = (uint8_t)(255 - i);
    }
    char la[FEDC_NODEKEY_PUB_LINE_MAX], lb[FEDC_NODEKEY_PUB_LINE_MAX];
    fedc__nodekey_format_pub(a, "alpha", la, sizeof la);
    fedc__nodekey_format_pub(b, "beta", lb, sizeof lb);
    FILE *f = fopen(path, "w");
    fprintf(f, "# the federation's nodes\n\n%s\n   \n%s\n", la, lb);
    fclose(f);
    fedc__nodekey_entry *list = NULL;
    size_t n = 0;
    CHECK_STATUS(fedc__nodekey_load_list(path, &list, &n, err, sizeof err), FEDC_OK, err);
    CHECK(n == 2, "2 keys, got %zu", n);
    const fedc__nodekey_entry *e = fedc__nodekey_find(list, n, b);
    CHECK(e && !strcmp(e->name, "beta") && strlen(e->fpr) == 32, "find beta");
    uint8_t c[32] = {9};
    CHECK(!fedc__nodekey_find(list, n, c), "an unlisted key is not found");
    free(list);
    f = fopen(path, "a");
    fprintf(f, "ed25519 notbase64!! gamma\n");
    fclose(f);
    CHECK_STATUS(fedc__nodekey_load_list(path, &list, &n, err, sizeof err), FEDC_ERR_FORMAT, "a bad line");
    CHECK_CONTAINS(err, "line 6", "the bad line is named");
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_fingerprint();
    test_parse_good();
    test_parse_bad();
    test_load();
    test_auth();
    test_list();
    return test_summary();
}
