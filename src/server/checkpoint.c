/* The server's checkpoint file (docs/checkpoints.md has the layout): little-
 * endian fields, the model's tensors, and a BLAKE2b-256 of everything
 * before it at the end, so that a torn or altered file is refused. The
 * format has a single encoding: decoding then encoding gives back the same
 * bytes. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fedc/core.h"
#include "server/checkpoint.h"

static const uint8_t MAGIC[8] = {'F', 'E', 'D', 'C', 'C', 'K', 'P', 'T'};
#define DIGEST_BYTES 32u
#define MAX_TENSORS  16384u /* as many as a model may have on the wire */
#define MAX_ORDERS   4096u

/* ---- encoding ------------------------------------------------------------ */

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} wbuf;

static void put(wbuf *w, const void *src, size_t n)
{
    if (w->oom || n == 0) return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n) cap *= 2;
        uint8_t *q = realloc(w->p, cap);
        if (!q) {
            w->oom = 1;
            return;
        }
        w->p = q;
        w->cap = cap;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_uint(wbuf *w, uint64_t v, unsigned bytes)
{
    uint8_t b[8];
    for (unsigned i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    put(w, b, bytes);
}

static void put_f64(wbuf *w, double x)
{
    uint64_t v;
    memcpy(&v, &x, sizeof v);
    put_uint(w, v, 8);
}

int fedc__checkpoint_encode(const fedc__checkpoint *c, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
    size_t nt = fedc_params_count(c->model), namelen = strlen(c->strategy);
    if (nt == 0 || nt > MAX_TENSORS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "a checkpoint holds 1 to %u tensors, not %zu",
                              MAX_TENSORS, nt);
    if (namelen > FEDC__CHECKPOINT_MAX_NAME || c->ddg_orders > MAX_ORDERS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "strategy name or RDP orders too long");
    for (size_t i = 0; i < namelen; i++)
        if (c->strategy[i] < 0x20 || c->strategy[i] > 0x7e)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "the strategy's name is not printable ASCII: a checkpoint cannot hold it");
    wbuf w = {0};
    put(&w, MAGIC, sizeof MAGIC);
    put_uint(&w, FEDC__CHECKPOINT_VERSION, 4);
    put_uint(&w, c->round, 8);
    put_uint(&w, c->seed, 8);
    put_uint(&w, c->sampling, 1);
    put_uint(&w, c->secagg != 0, 1);
    put_uint(&w, c->dp_mode, 1);
    put_uint(&w, c->dp_adaptive != 0, 1);
    put_uint(&w, c->target_reached != 0, 1);
    put_f64(&w, c->fraction_fit);
    put_f64(&w, c->dp_clip_option);
    put_f64(&w, c->dp_noise_multiplier);
    put_f64(&w, c->dp_delta);
    put_uint(&w, c->dp_steps, 8);
    put_f64(&w, c->dp_clip);
    put_f64(&w, c->epsilon_record);
    put_uint(&w, c->ddg_orders, 4);
    for (uint32_t i = 0; i < c->ddg_orders; i++) put_f64(&w, c->ddg_rdp[i]);
    put_uint(&w, namelen, 1);
    put(&w, c->strategy, namelen);
    put_uint(&w, c->strategy_state_len, 8);
    put(&w, c->strategy_state, c->strategy_state_len);
    put_uint(&w, nt, 4);
    for (size_t i = 0; i < nt; i++) {
        const fedc_tensor *t = fedc_params_at(c->model, i);
        size_t tl = strlen(t->name);
        put_uint(&w, tl, 2);
        put(&w, t->name, tl);
        put_uint(&w, (uint64_t)t->dtype, 1);
        put_uint(&w, (uint64_t)t->ndim, 1);
        for (int d = 0; d < t->ndim; d++) put_uint(&w, (uint64_t)t->shape[d], 8);
        put(&w, t->data, t->nbytes);
    }
    uint8_t digest[DIGEST_BYTES];
    if (!w.oom) {
        crypto_generichash(digest, sizeof digest, w.p, w.len, NULL, 0);
        put(&w, digest, sizeof digest);
    }
    if (w.oom) {
        free(w.p);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    *buf = w.p;
    *len = w.len;
    return FEDC_OK;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct rbuf {
    const uint8_t *p;
    size_t len, at;
} rbuf;

static int take(rbuf *r, void *dst, size_t n)
{
    if (r->len - r->at < n) return -1;
    if (n) memcpy(dst, r->p + r->at, n);
    r->at += n;
    return 0;
}

static int get_uint(rbuf *r, unsigned bytes, uint64_t *v)
{
    uint8_t b[8];
    if (take(r, b, bytes)) return -1;
    *v = 0;
    for (unsigned i = 0; i < bytes; i++) *v |= (uint64_t)b[i] << (8 * i);
    return 0;
}

static int get_f64(rbuf *r, double *x)
{
    uint64_t v;
    if (get_uint(r, 8, &v)) return -1;
    memcpy(x, &v, sizeof v);
    return 0;
}

static int truncated(char *err, size_t errlen, const char *what)
{
    return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint truncated in %s", what);
}

static int bad(char *err, size_t errlen, const char *what)
{
    return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: %s", what);
}

/* The options and counters before the RDP vector. */
static int decode_head(rbuf *r, fedc__checkpoint *c, char *err, size_t errlen)
{
    uint8_t magic[sizeof MAGIC];
    uint64_t v, flags[5];
    if (take(r, magic, sizeof magic) || memcmp(magic, MAGIC, sizeof MAGIC))
        return bad(err, errlen, "not a fedc checkpoint (no FEDCCKPT magic)");
    if (get_uint(r, 4, &v)) return truncated(err, errlen, "the header");
    if (v != FEDC__CHECKPOINT_VERSION)
        return fedc_set_error(err, errlen, FEDC_ERR_VERSION,
                              "checkpoint format version %llu; this fedc reads version %u",
                              (unsigned long long)v, FEDC__CHECKPOINT_VERSION);
    if (get_uint(r, 8, &c->round) || get_uint(r, 8, &c->seed)) return truncated(err, errlen, "the header");
    for (int i = 0; i < 5; i++)
        if (get_uint(r, 1, &flags[i])) return truncated(err, errlen, "the header");
    if (flags[0] > 1) return bad(err, errlen, "unknown sampling");
    if (flags[1] > 1 || flags[3] > 1 || flags[4] > 1)
        return bad(err, errlen, "a flag byte is neither 0 nor 1");
    if (flags[2] > 3) return bad(err, errlen, "unknown DP mode");
    c->sampling = (unsigned)flags[0];
    c->secagg = (int)flags[1];
    c->dp_mode = (unsigned)flags[2];
    c->dp_adaptive = (int)flags[3];
    c->target_reached = (int)flags[4];
    if (get_f64(r, &c->fraction_fit) || get_f64(r, &c->dp_clip_option) ||
        get_f64(r, &c->dp_noise_multiplier) || get_f64(r, &c->dp_delta) || get_uint(r, 8, &c->dp_steps) ||
        get_f64(r, &c->dp_clip) || get_f64(r, &c->epsilon_record))
        return truncated(err, errlen, "the header");
    return FEDC_OK;
}

static int decode_tensor(rbuf *r, fedc_params *p, char *err, size_t errlen)
{
    uint64_t namelen, dtype, ndim, dim;
    char name[FEDC_MAX_NAME];
    int64_t shape[FEDC_MAX_DIMS];
    if (get_uint(r, 2, &namelen)) return truncated(err, errlen, "a tensor");
    if (namelen == 0 || namelen >= FEDC_MAX_NAME)
        return bad(err, errlen, "a tensor name of 0 or over 255 bytes");
    if (take(r, name, namelen)) return truncated(err, errlen, "a tensor name");
    name[namelen] = '\0';
    if (memchr(name, '\0', namelen)) return bad(err, errlen, "a tensor name holds a NUL byte");
    if (get_uint(r, 1, &dtype) || get_uint(r, 1, &ndim)) return truncated(err, errlen, "a tensor");
    size_t esize = fedc_dtype_size((fedc_dtype)dtype);
    if (dtype == 0 || esize == 0 || dtype > FEDC_BF16)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: tensor '%s' has unknown dtype %llu",
                              name, (unsigned long long)dtype);
    if (ndim > FEDC_MAX_DIMS)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: tensor '%s' has %llu dimensions",
                              name, (unsigned long long)ndim);
    /* The byte size, bounded by what is left of the file before any allocation. */
    uint64_t nbytes = esize;
    int zero = 0, over = 0;
    for (uint64_t d = 0; d < ndim; d++) {
        if (get_uint(r, 8, &dim)) return truncated(err, errlen, "a tensor shape");
        if (dim > (uint64_t)INT64_MAX)
            return fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                  "checkpoint: tensor '%s' has a negative dimension", name);
        shape[d] = (int64_t)dim;
        if (dim == 0)
            zero = 1;
        else if (dim > (uint64_t)(r->len - r->at) / nbytes + 1)
            over = 1;
        else
            nbytes *= dim;
    }
    if (zero) nbytes = 0;
    if (over || nbytes > r->len - r->at)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint truncated in the data of tensor '%s'",
                              name);
    const void *data = r->p + r->at;
    char why[FEDC_ERRMSG_MAX];
    int rc = fedc_params_add(p, name, (fedc_dtype)dtype, (int)ndim, shape, data, NULL, why, sizeof why);
    if (rc == FEDC_ERR_NOMEM) return fedc_set_error(err, errlen, rc, "out of memory");
    if (rc) return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: %s", why);
    r->at += (size_t)nbytes;
    return FEDC_OK;
}

int fedc__checkpoint_decode(const uint8_t *buf, size_t len, fedc__checkpoint *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (len < sizeof MAGIC + DIGEST_BYTES) return truncated(err, errlen, "the header");
    uint8_t digest[DIGEST_BYTES];
    crypto_generichash(digest, sizeof digest, buf, len - DIGEST_BYTES, NULL, 0);
    if (sodium_memcmp(digest, buf + len - DIGEST_BYTES, DIGEST_BYTES))
        return bad(err, errlen, "its BLAKE2b-256 digest does not match (a torn or altered file)");
    rbuf r = {buf, len - DIGEST_BYTES, 0};
    uint64_t v;
    int rc = decode_head(&r, c, err, errlen);
    if (rc) goto fail;
    rc = FEDC_ERR_FORMAT;
    if (get_uint(&r, 4, &v)) {
        truncated(err, errlen, "the RDP vector");
        goto fail;
    }
    if (v > MAX_ORDERS || v * 8 > r.len - r.at) {
        bad(err, errlen, "an RDP vector longer than the file or than 4096 orders");
        goto fail;
    }
    c->ddg_orders = (uint32_t)v;
    if (v) {
        c->ddg_rdp = malloc(v * sizeof *c->ddg_rdp);
        if (!c->ddg_rdp) goto oom;
        for (uint64_t i = 0; i < v; i++) get_f64(&r, &c->ddg_rdp[i]);
    }
    if (get_uint(&r, 1, &v) || v > FEDC__CHECKPOINT_MAX_NAME || take(&r, c->strategy, v)) {
        bad(err, errlen, "the strategy name is truncated or over 64 bytes");
        goto fail;
    }
    c->strategy[v] = '\0';
    for (uint64_t i = 0; i < v; i++)
        if (c->strategy[i] < 0x20 || c->strategy[i] > 0x7e) {
            bad(err, errlen, "the strategy name holds a byte that is not printable ASCII");
            goto fail;
        }
    if (get_uint(&r, 8, &v) || v > r.len - r.at) {
        truncated(err, errlen, "the strategy state");
        goto fail;
    }
    c->strategy_state_len = (size_t)v;
    if (v) {
        c->strategy_state = malloc((size_t)v);
        if (!c->strategy_state) goto oom;
        take(&r, c->strategy_state, (size_t)v);
    }
    if (get_uint(&r, 4, &v)) {
        truncated(err, errlen, "the model");
        goto fail;
    }
    if (v == 0 || v > MAX_TENSORS) {
        fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: a model of %llu tensors (1 to %u allowed)",
                       (unsigned long long)v, MAX_TENSORS);
        goto fail;
    }
    c->model = fedc_params_create();
    if (!c->model) goto oom;
    for (uint64_t i = 0; i < v; i++) {
        rc = decode_tensor(&r, c->model, err, errlen);
        if (rc == FEDC_ERR_NOMEM) goto oom;
        if (rc) goto fail;
    }
    if (r.at != r.len) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "checkpoint: %zu bytes after the model",
                            r.len - r.at);
        goto fail;
    }
    return FEDC_OK;
oom:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
fail:
    fedc__checkpoint_free(c);
    return rc;
}

void fedc__checkpoint_free(fedc__checkpoint *c)
{
    free(c->ddg_rdp);
    free(c->strategy_state);
    fedc_params_destroy(c->model);
    memset(c, 0, sizeof *c);
}

/* ---- files --------------------------------------------------------------- */

int fedc__write_file_atomic(const char *path, const void *buf, size_t len, char *err, size_t errlen)
{
    char tmp[4096 + 32], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp ||
        snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "path too long: '%s'", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    const uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(fd, p + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) goto io_fail;
        done += (size_t)k;
    }
    if (fsync(fd)) goto io_fail;
    if (close(fd)) {
        fd = -1;
        goto io_fail;
    }
    fd = -1;
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                              strerror(e));
    }
    /* The rename itself is durable once the directory is. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd)) {
        int e = errno;
        if (dfd >= 0) close(dfd);
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot sync directory '%s': %s", dir, strerror(e));
    }
    close(dfd);
    return FEDC_OK;
io_fail : {
    int e = errno ? errno : EIO;
    if (fd >= 0) close(fd);
    unlink(tmp);
    return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot write '%s': %s", tmp, strerror(e));
}
}

int fedc__checkpoint_write(const char *dir, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, FEDC__CHECKPOINT_FILE) >= (int)sizeof path)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "path too long: '%s'", dir);
    return fedc__write_file_atomic(path, buf, len, err, errlen);
}

int fedc__checkpoint_read(const char *dir, fedc__checkpoint *c, char *err, size_t errlen)
{
    char path[4096], why[FEDC_ERRMSG_MAX];
    memset(c, 0, sizeof *c);
    if (snprintf(path, sizeof path, "%s/%s", dir, FEDC__CHECKPOINT_FILE) >= (int)sizeof path)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "path too long: '%s'", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                              "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 0 || (uint64_t)st.st_size > SIZE_MAX) {
        fclose(f);
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot read '%s'", path);
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(f);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    int ok = fread(buf, 1, len, f) == len;
    int e = errno;
    fclose(f);
    if (!ok) {
        free(buf);
        return fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot read '%s': %s", path, strerror(e));
    }
    int rc = fedc__checkpoint_decode(buf, len, c, why, sizeof why);
    free(buf);
    if (rc) return fedc_set_error(err, errlen, rc, "'%s': %s", path, why);
    return FEDC_OK;
}
