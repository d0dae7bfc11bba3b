/* TLS 1.3 with OpenSSL (docs/security.md): the contexts of the server and
 * the clients, and the client's blocking session over a fedc__conn. The
 * server drives its sessions over memory BIOs in its event loop
 * (src/server/connection.c).
 *
 * Only TLS 1.3 is offered. A server context requires client certificates
 * when it is given a CA (mutual TLS); a client context always verifies the
 * server's certificate against its CA and the server's name or address. */
#ifndef FEDC_NET_TLS_H
#define FEDC_NET_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "net/conn.h"

/* The server's context: certificate chain and key (PEM files); with ca,
 * clients must present a certificate it signed. FEDC_ERR_INVALID naming
 * the file and OpenSSL's reason. */
int fedc__tls_server_ctx(const char *cert, const char *key, const char *ca, SSL_CTX **out, char *err,
                         size_t errlen);
/* A client's context: the CA the server's certificate must chain to, and
 * optionally the client's own certificate and key (both or neither). */
int fedc__tls_client_ctx(const char *ca, const char *cert, const char *key, SSL_CTX **out, char *err,
                         size_t errlen);

/* Runs the client's TLS handshake on c's connected socket, checking the
 * server's certificate for `name` (a DNS name or an IP address; NULL: no
 * name check, the chain is still verified). On success c carries the
 * session: fedc__conn_read/write/close go through it. FEDC_ERR_CONNECT with
 * the reason (certificate verification's, or the alert the server sent);
 * FEDC_ERR_CLOSED when the server closed or reset the connection, or went
 * silent, before the handshake was done without saying why: a transient
 * failure (a server at its connection or file limit, overloaded, or
 * restarting) that is worth trying again. */
int fedc__conn_tls_connect(fedc__conn *c, SSL_CTX *ctx, const char *name, double timeout, char *err,
                           size_t errlen);

/* OpenSSL's last error (and the verification result of ssl, when not
 * NULL) as text into buf; clears the error queue. */
const char *fedc__tls_reason(const SSL *ssl, char *buf, size_t len);

#endif
