/*
 * Node keys: the Ed25519 key pair a node (server or client) authenticates
 * itself with, as `fedc keygen` writes it.
 *
 *   NAME.key  the private key, PEM (PKCS#8), readable by its owner only
 *   NAME.pub  one line: "ed25519 <base64 of the 32-byte raw public key> NAME"
 *
 * A key's fingerprint is the first 16 bytes of SHA-256 of the raw public
 * key, as 32 lowercase hex digits; it is a node's id unless one is given.
 */
#ifndef FEDC_CORE_NODEKEY_H
#define FEDC_CORE_NODEKEY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#define FEDC_NODEKEY_PUB_LEN      32  /* bytes of a raw Ed25519 public key */
#define FEDC_NODEKEY_FPR_LEN      32  /* hex digits of a fingerprint */
#define FEDC_NODEKEY_NAME_MAX     64  /* characters of a key's name */
#define FEDC_NODEKEY_PUB_LINE_MAX 128 /* a .pub line, its terminating NUL included */

/* out = the fingerprint of pub: 32 lowercase hex digits and a NUL. */
void fedc__nodekey_fingerprint(const uint8_t pub[32], char out[33]);

/* 1 if name can name a key (and its files): 1 to FEDC_NODEKEY_NAME_MAX
 * characters of [A-Za-z0-9._-], not starting with '.'; else 0. */
int fedc__nodekey_name_ok(const char *name);

/* Writes the .pub line of pub and name, without a newline, into out
 * (FEDC_NODEKEY_PUB_LINE_MAX bytes suffice). FEDC_ERR_INVALID for a bad
 * name, FEDC_ERR_TOO_LARGE when out is too small. */
int fedc__nodekey_format_pub(const uint8_t pub[32], const char *name, char *out, size_t outlen);

/* Parses a .pub line (a trailing "\n" or "\r\n" is allowed; fields are
 * separated by spaces or tabs): pub = the raw public key, name = the name
 * (namelen bytes; FEDC_NODEKEY_NAME_MAX + 1 suffice). FEDC_ERR_FORMAT, with
 * what is wrong in err, for another key type, bad base64, a key that is not
 * 32 bytes, a missing or bad name, or extra fields. */
int fedc__nodekey_parse_pub(const char *line, uint8_t pub[32], char *name, size_t namelen, char *err,
                            size_t errlen);

/* Reads the PEM private key at path, which must be an unencrypted Ed25519
 * key: *key = the key (the caller frees it with EVP_PKEY_free), pub = its
 * raw public key. FEDC_ERR_NOTFOUND / FEDC_ERR_IO when the file cannot be
 * read, FEDC_ERR_FORMAT when it holds no such key; err names the file. */
int fedc__nodekey_load(const char *path, EVP_PKEY **key, uint8_t pub[32], char *err, size_t errlen);

/* ---- node authentication (docs/security.md) ----
 *
 * The server sends a fresh 32-byte nonce; the client signs
 *     FEDC_NODEAUTH_CTX || nonce || node id || binding
 * with its node key, where binding is the TLS exporter value of the
 * connection (RFC 8446 section 7.5, label FEDC_NODEAUTH_EXPORTER, 32
 * bytes) or empty on a plaintext connection. A signature is therefore good
 * for one nonce, one node id and one TLS session: a captured handshake
 * replayed on another connection fails. */
#define FEDC_NODEAUTH_CTX      "fedc node auth v1"
#define FEDC_NODEAUTH_EXPORTER "EXPORTER-fedc-node-auth-v1"
#define FEDC_NODEAUTH_NONCE    32
#define FEDC_NODEAUTH_SIG      64

/* sig = Ed25519 signature of the message above with key. FEDC_ERR_INVALID
 * when OpenSSL refuses. */
int fedc__nodeauth_sign(EVP_PKEY *key, const uint8_t nonce[FEDC_NODEAUTH_NONCE], const char *node_id,
                        const uint8_t *binding, size_t binding_len, uint8_t sig[FEDC_NODEAUTH_SIG]);
/* 1 when sig is pub's signature of that message, else 0 (libsodium). */
int fedc__nodeauth_verify(const uint8_t pub[32], const uint8_t nonce[FEDC_NODEAUTH_NONCE],
                          const char *node_id, const uint8_t *binding, size_t binding_len,
                          const uint8_t sig[FEDC_NODEAUTH_SIG]);

/* An allow-list of node keys: the lines of an authorized-keys file, each a
 * .pub line as fedc keygen writes it; blank lines and lines starting with
 * '#' are skipped. */
typedef struct fedc__nodekey_entry {
    uint8_t pub[32];
    char name[FEDC_NODEKEY_NAME_MAX + 1];
    char fpr[FEDC_NODEKEY_FPR_LEN + 1];
} fedc__nodekey_entry;

/* Reads path into *out (n entries; free() it). FEDC_ERR_FORMAT names the
 * line that does not parse; FEDC_ERR_NOTFOUND / FEDC_ERR_IO for the file. */
int fedc__nodekey_load_list(const char *path, fedc__nodekey_entry **out, size_t *n, char *err, size_t errlen);
/* The entry of pub in list, or NULL. */
const fedc__nodekey_entry *fedc__nodekey_find(const fedc__nodekey_entry *list, size_t n,
                                              const uint8_t pub[32]);

#endif
