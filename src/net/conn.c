/* Blocking sockets with poll-based deadlines. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "fedc/core.h"
#include "net/conn.h"
#include "net/tls.h"

int fedc__parse_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen, char *err,
                         size_t errlen)
{
    const char *colon;
    size_t hl;
    if (!s || !*s) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "empty address (want HOST:PORT)");
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bad address '%s' (want [IPv6]:PORT)", s);
        hl = (size_t)(end - s - 1);
        colon = end + 1;
        s++;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bad address '%s' (want HOST:PORT)", s);
        hl = (size_t)(colon - s);
    }
    const char *p = colon + 1;
    char *end;
    long v = strtol(p, &end, 10);
    if (!*p || *end || v < 0 || v > 65535)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bad port in address '%s'", s);
    if (hl == 0 || hl >= hostlen || strlen(p) >= portlen)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "bad host in address '%s'", s);
    memcpy(host, s, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%s", p);
    return FEDC_OK;
}

void fedc__conn_from_fd(fedc__conn *c, int fd, const char *peer)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "?");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int fedc__conn_connect(fedc__conn *c, const char *hostport, double timeout, char *err, size_t errlen)
{
    char host[256], port[16];
    int rc = fedc__parse_hostport(hostport, host, sizeof host, port, sizeof port, err, errlen);
    if (rc) return rc;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g)
        return fedc_set_error(err, errlen, FEDC_ERR_CONNECT, "cannot resolve '%s': %s", host,
                              gai_strerror(g));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (r && errno == EINPROGRESS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            int pr = poll(&pfd, 1, timeout > 0 ? (int)(timeout * 1000) : -1);
            if (pr == 1) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                r = soerr ? -1 : 0;
                errno = soerr;
            } else {
                r = -1;
                errno = ETIMEDOUT;
            }
        }
        if (r == 0) {
            fcntl(fd, F_SETFL, fl);
            break;
        }
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return fedc_set_error(err, errlen, FEDC_ERR_CONNECT, "cannot connect to %s: %s", hostport,
                              strerror(last_errno));
    fedc__conn_from_fd(c, fd, hostport);
    return FEDC_OK;
}

/* Waits until fd is ready for `events` or io_timeout passes. */
static int wait_ready(fedc__conn *c, short events, char *err, size_t errlen)
{
    if (c->io_timeout <= 0) return FEDC_OK;
    struct pollfd pfd = {.fd = c->fd, .events = events};
    for (;;) {
        int r = poll(&pfd, 1, (int)(c->io_timeout * 1000));
        if (r > 0) return FEDC_OK;
        if (r == 0)
            return fedc_set_error(err, errlen, FEDC_ERR_TIMEOUT, "%s: no data for %.0f s", c->peer,
                                  c->io_timeout);
        if (errno != EINTR)
            return fedc_set_error(err, errlen, FEDC_ERR_IO, "%s: poll: %s", c->peer, strerror(errno));
    }
}

void fedc__socket_keepalive(int fd, double idle)
{
    if (!(idle > 0)) return;
    int on = 1, cnt = 3;
    int secs = idle < 1 ? 1 : (int)idle, intvl = secs / 3 > 0 ? secs / 3 : 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof secs);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    /* Data unacknowledged for as long also ends the connection (a peer that
     * vanished while we were sending). */
    unsigned user_timeout = (unsigned)(secs + cnt * intvl) * 1000u;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

void fedc__conn_memory(fedc__conn *c, const struct iovec *in, int in_count, fedc__bytes *out,
                       const char *peer)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->in = in;
    c->in_count = in_count;
    c->out = out;
    snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "memory");
}

int fedc__bytes_append(fedc__bytes *b, const void *data, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) return FEDC_ERR_NOMEM;
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        if (!d) return FEDC_ERR_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return FEDC_OK;
}

void fedc__bytes_free(fedc__bytes *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

static int memory_read(fedc__conn *c, char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        if (c->in_index >= c->in_count)
            return fedc_set_error(err, errlen, FEDC_ERR_CLOSED, "%s closed the connection", c->peer);
        const struct iovec *v = &c->in[c->in_index];
        size_t take = v->iov_len - c->in_offset;
        if (take > n) take = n;
        memcpy(p, (const char *)v->iov_base + c->in_offset, take);
        p += take;
        n -= take;
        c->in_offset += take;
        c->bytes_received += take;
        if (c->in_offset == v->iov_len) {
            c->in_index++;
            c->in_offset = 0;
        }
    }
    return FEDC_OK;
}

/* Reads through the TLS session: records are decrypted as they come. */
static int tls_read(fedc__conn *c, char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        if (SSL_pending(c->ssl) == 0) {
            int rc = wait_ready(c, POLLIN, err, errlen);
            if (rc) return rc;
        }
        int want = n > (1u << 30) ? (1 << 30) : (int)n;
        int r = SSL_read(c->ssl, p, want);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            c->bytes_received += (uint64_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_SYSCALL && errno == EINTR) continue;
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && (errno == 0 || errno == ECONNRESET))) {
            ERR_clear_error();
            return fedc_set_error(err, errlen, FEDC_ERR_CLOSED, "%s closed the connection", c->peer);
        }
        if (e == SSL_ERROR_WANT_READ ||
            (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))) {
            ERR_clear_error();
            return fedc_set_error(err, errlen, FEDC_ERR_TIMEOUT, "%s: no data for %.0f s", c->peer,
                                  c->io_timeout);
        }
        char why[300];
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "%s: TLS read: %s", c->peer,
                              fedc__tls_reason(c->ssl, why, sizeof why));
    }
    return FEDC_OK;
}

static int tls_write(fedc__conn *c, const char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        int want = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = SSL_write(c->ssl, p, want);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            c->bytes_sent += (uint64_t)w;
            continue;
        }
        int e = SSL_get_error(c->ssl, w);
        if (e == SSL_ERROR_SYSCALL && errno == EINTR) continue;
        char why[300];
        if (e == SSL_ERROR_SYSCALL && (errno == EPIPE || errno == ECONNRESET || errno == 0)) {
            ERR_clear_error();
            return fedc_set_error(err, errlen, FEDC_ERR_CLOSED, "%s: write: the connection was closed",
                                  c->peer);
        }
        if (e == SSL_ERROR_WANT_WRITE ||
            (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK))) {
            ERR_clear_error();
            return fedc_set_error(err, errlen, FEDC_ERR_TIMEOUT, "%s: write blocked for %.0f s", c->peer,
                                  c->io_timeout);
        }
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "%s: TLS write: %s", c->peer,
                              fedc__tls_reason(c->ssl, why, sizeof why));
    }
    return FEDC_OK;
}

int fedc__conn_read(fedc__conn *c, void *buf, size_t n, char *err, size_t errlen)
{
    char *p = buf;
    if (c->fd < 0 && c->out) return memory_read(c, p, n, err, errlen);
    if (c->ssl) return tls_read(c, p, n, err, errlen);
    while (n > 0) {
        int rc = wait_ready(c, POLLIN, err, errlen);
        if (rc) return rc;
        ssize_t r = recv(c->fd, p, n, 0);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            c->bytes_received += (uint64_t)r;
        } else if (r == 0) {
            return fedc_set_error(err, errlen, FEDC_ERR_CLOSED, "%s closed the connection", c->peer);
        } else if (errno != EINTR) {
            return fedc_set_error(err, errlen, errno == ECONNRESET ? FEDC_ERR_CLOSED : FEDC_ERR_IO,
                                  "%s: read: %s", c->peer, strerror(errno));
        }
    }
    return FEDC_OK;
}

int fedc__conn_writev(fedc__conn *c, struct iovec *iov, int iovcnt, char *err, size_t errlen)
{
    if (c->fd < 0 && c->out) {
        for (int i = 0; i < iovcnt; i++) {
            if (fedc__bytes_append(c->out, iov[i].iov_base, iov[i].iov_len))
                return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
            c->bytes_sent += iov[i].iov_len;
        }
        return FEDC_OK;
    }
    if (c->ssl) {
        for (int i = 0; i < iovcnt; i++) {
            int rc = tls_write(c, iov[i].iov_base, iov[i].iov_len, err, errlen);
            if (rc) return rc;
        }
        return FEDC_OK;
    }
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        int rc = wait_ready(c, POLLOUT, err, errlen);
        if (rc) return rc;
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)(iovcnt > 64 ? 64 : iovcnt);
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return fedc_set_error(err, errlen,
                                  (errno == EPIPE || errno == ECONNRESET) ? FEDC_ERR_CLOSED : FEDC_ERR_IO,
                                  "%s: write: %s", c->peer, strerror(errno));
        }
        c->bytes_sent += (uint64_t)w;
        size_t left = (size_t)w;
        while (left > 0 && iovcnt > 0) {
            if (left >= iov->iov_len) {
                left -= iov->iov_len;
                iov++;
                iovcnt--;
            } else {
                iov->iov_base = (char *)iov->iov_base + left;
                iov->iov_len -= left;
                left = 0;
            }
        }
    }
    return FEDC_OK;
}

int fedc__conn_write(fedc__conn *c, const void *buf, size_t n, char *err, size_t errlen)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
    return fedc__conn_writev(c, &iov, 1, err, errlen);
}

void fedc__conn_close(fedc__conn *c)
{
    if (c && c->ssl) {
        SSL_shutdown(c->ssl); /* our close_notify; the peer's is not awaited */
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    if (c && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

int fedc__listen_tcp(const char *hostport, int *fd_out, int *port_out, char *err, size_t errlen)
{
    char host[256], port[16];
    int rc = fedc__parse_hostport(hostport, host, sizeof host, port, sizeof port, err, errlen);
    if (rc) return rc;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "cannot resolve '%s': %s", host,
                              gai_strerror(g));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    if (fd < 0) {
        freeaddrinfo(res);
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "socket: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 128)) {
        int e = errno;
        close(fd);
        freeaddrinfo(res);
        return fedc_set_error(err, errlen, e == EADDRINUSE ? FEDC_ERR_ADDRINUSE : FEDC_ERR_IO,
                              "cannot listen on %s: %s", hostport, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (port_out)
        *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return FEDC_OK;
}
