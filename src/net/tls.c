/* TLS 1.3 contexts and the client's blocking session (tls.h). */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "fedc/core.h"
#include "net/tls.h"

const char *fedc__tls_reason(const SSL *ssl, char *buf, size_t len)
{
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_get_error();
    char lib[256] = "";
    if (e) ERR_error_string_n(e, lib, sizeof lib);
    ERR_clear_error();
    /* "error:0A000086:SSL routines::certificate verify failed": keep the reason. */
    const char *r = strrchr(lib, ':');
    r = r && r[1] ? r + 1 : lib;
    if (v != X509_V_OK)
        snprintf(buf, len, "%s (%s)", r[0] ? r : "certificate verify failed",
                 X509_verify_cert_error_string(v));
    else
        snprintf(buf, len, "%s", r[0] ? r : "connection closed during the TLS handshake");
    return buf;
}

static SSL_CTX *new_ctx(const SSL_METHOD *m, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(m);
    if (!ctx) {
        fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "cannot create a TLS context");
        return NULL;
    }
    /* TLS 1.3 only: its handshake always has forward secrecy and encrypts
     * the certificates. */
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    return ctx;
}

static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, const char *who, char *err,
                     size_t errlen)
{
    char why[300];
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s certificate %s: %s", who, cert,
                              fedc__tls_reason(NULL, why, sizeof why));
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s key %s: %s", who, key,
                              fedc__tls_reason(NULL, why, sizeof why));
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s key %s does not match the certificate %s",
                              who, key, cert);
    return FEDC_OK;
}

static int load_ca(SSL_CTX *ctx, const char *ca, char *err, size_t errlen)
{
    char why[300];
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "CA file %s: %s", ca,
                              fedc__tls_reason(NULL, why, sizeof why));
    return FEDC_OK;
}

int fedc__tls_server_ctx(const char *cert, const char *key, const char *ca, SSL_CTX **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    if (!cert || !key)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "TLS needs both a certificate and its key");
    SSL_CTX *ctx = new_ctx(TLS_server_method(), err, errlen);
    if (!ctx) return FEDC_ERR_NOMEM;
    int rc = load_pair(ctx, cert, key, "server", err, errlen);
    if (!rc && ca) {
        rc = load_ca(ctx, ca, err, errlen);
        if (!rc) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
            if (names) SSL_CTX_set_client_CA_list(ctx, names);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (rc) {
        SSL_CTX_free(ctx);
        return rc;
    }
    /* No session tickets: every connection makes a full handshake, so a
     * client certificate is always checked. */
    SSL_CTX_set_num_tickets(ctx, 0);
    /* A connection's record buffers (about 34 KiB) are freed while it is
     * idle: most of a server's connections wait for their next request. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    *out = ctx;
    return FEDC_OK;
}

int fedc__tls_client_ctx(const char *ca, const char *cert, const char *key, SSL_CTX **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    if (!ca) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "TLS needs the CA that signed the server");
    if (!cert != !key)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "a client certificate needs its key, and a key its "
                              "certificate");
    SSL_CTX *ctx = new_ctx(TLS_client_method(), err, errlen);
    if (!ctx) return FEDC_ERR_NOMEM;
    int rc = load_ca(ctx, ca, err, errlen);
    if (!rc && cert) rc = load_pair(ctx, cert, key, "client", err, errlen);
    if (rc) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    *out = ctx;
    return FEDC_OK;
}

static void set_timeouts(int fd, double seconds)
{
    struct timeval tv = {0, 0};
    if (seconds > 0) {
        tv.tv_sec = (time_t)seconds;
        tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int fedc__conn_tls_connect(fedc__conn *c, SSL_CTX *ctx, const char *name, double timeout, char *err,
                           size_t errlen)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "cannot create a TLS session");
    unsigned char addr[16];
    int is_ip = name && (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1);
    int ok = SSL_set_fd(ssl, c->fd);
    if (ok && name && is_ip) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    if (ok && name && !is_ip) ok = SSL_set_tlsext_host_name(ssl, name) && SSL_set1_host(ssl, name);
    if (!ok) {
        SSL_free(ssl);
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "TLS: cannot check for the name '%s'", name);
    }
    set_timeouts(c->fd, timeout);
    int r = SSL_connect(ssl);
    if (r != 1) {
        /* The connection ended without an alert or a verification failure:
         * nothing says the next try would fail too. */
        int e = SSL_get_error(ssl, r);
        unsigned long q = ERR_peek_error();
        int eof = 0;
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
        eof = e == SSL_ERROR_SSL && ERR_GET_LIB(q) == ERR_LIB_SSL &&
              ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
#else
        (void)q;
#endif
        int transient = SSL_get_verify_result(ssl) == X509_V_OK &&
                        (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN || eof);
        char why[300];
        fedc__tls_reason(ssl, why, sizeof why);
        SSL_free(ssl);
        set_timeouts(c->fd, c->io_timeout);
        return fedc_set_error(err, errlen, transient ? FEDC_ERR_CLOSED : FEDC_ERR_CONNECT,
                              "TLS handshake with %s failed: %s", c->peer, why);
    }
    set_timeouts(c->fd, c->io_timeout);
    c->ssl = ssl;
    return FEDC_OK;
}
