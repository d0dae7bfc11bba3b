/* Blocking TCP connections with deadlines, used by clients (which do one
 * thing at a time) and by tests. The server uses the event loop instead. */
#ifndef FEDC_NET_CONN_H
#define FEDC_NET_CONN_H

#include <stddef.h>
#include <stdint.h>

struct iovec;
struct ssl_st;

/* A growable byte buffer: where an in-memory connection's writes go. */
typedef struct fedc__bytes {
    uint8_t *data;
    size_t len, cap;
} fedc__bytes;

/*
 * A connection is a socket (fd >= 0) or, in simulation, an in-memory stream
 * (fd == -1): reads consume `in` (a list of buffers the peer wrote) and
 * writes append to `out`. The protocol code above cannot tell the two
 * apart, so a simulated client produces and consumes exactly the bytes a
 * real one would.
 */
typedef struct fedc__conn {
    int fd;
    char peer[96];     /* "host:port" for messages */
    double io_timeout; /* seconds a single read or write may block; 0 = forever */
    uint64_t bytes_sent, bytes_received;
    const struct iovec *in; /* in-memory mode: what there is to read */
    int in_count, in_index;
    size_t in_offset;
    fedc__bytes *out;   /* in-memory mode: where writes go */
    struct ssl_st *ssl; /* a TLS session over fd (net/tls.h), or NULL */
} fedc__conn;

/* Sets up an in-memory connection over `in` (not copied; must outlive the
 * connection) writing to `out`. */
void fedc__conn_memory(fedc__conn *c, const struct iovec *in, int in_count, fedc__bytes *out,
                       const char *peer);
/* Appends n bytes to b. FEDC_ERR_NOMEM when it cannot grow. */
int fedc__bytes_append(fedc__bytes *b, const void *data, size_t n);
void fedc__bytes_free(fedc__bytes *b);

/* Splits "host:port" or "[v6]:port" into host and port. */
int fedc__parse_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen, char *err,
                         size_t errlen);

/* One connection attempt to host:port, giving up after `timeout` seconds.
 * FEDC_ERR_CONNECT with the reason (refused, unreachable, unknown host). */
int fedc__conn_connect(fedc__conn *c, const char *hostport, double timeout, char *err, size_t errlen);

/* Wraps an accepted or connected socket. */
void fedc__conn_from_fd(fedc__conn *c, int fd, const char *peer);

/* Reads exactly n bytes. FEDC_ERR_CLOSED when the peer closed before,
 * FEDC_ERR_TIMEOUT when io_timeout passed with no progress. */
int fedc__conn_read(fedc__conn *c, void *buf, size_t n, char *err, size_t errlen);
/* Writes exactly n bytes (MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE). */
int fedc__conn_write(fedc__conn *c, const void *buf, size_t n, char *err, size_t errlen);
/* Writes several buffers with writev. */
struct iovec;
int fedc__conn_writev(fedc__conn *c, struct iovec *iov, int iovcnt, char *err, size_t errlen);
/* Ends the TLS session, if any (close_notify), and closes the socket. */
void fedc__conn_close(fedc__conn *c);

/* Turns on TCP keepalive on fd: probes after `idle` seconds of silence,
 * every idle / 3 s, and the connection fails after 3 unanswered probes
 * (so within 2 idle s). idle <= 0 does nothing. */
void fedc__socket_keepalive(int fd, double idle);

/* Listens on host:port (tests and tools that need a blocking listener). */
int fedc__listen_tcp(const char *hostport, int *fd_out, int *port_out, char *err, size_t errlen);

#endif
