/*
 * fedc core: status codes, logging, allocation and random numbers.
 *
 * Every other layer of fedc builds on this header and on tensor.h. Nothing
 * here performs I/O other than writing log lines to stderr.
 */
#ifndef FEDC_CORE_H
#define FEDC_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define FEDC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define FEDC_WARN_UNUSED  __attribute__((warn_unused_result))
#else
#define FEDC_PRINTF(f, a)
#define FEDC_WARN_UNUSED
#endif

/* Version of the library and of the wire protocol it speaks. */
#define FEDC_VERSION_MAJOR  0
#define FEDC_VERSION_MINOR  1
#define FEDC_VERSION_PATCH  0
#define FEDC_VERSION_STRING "0.1.0"

/* Size of the caller-provided buffers that receive detailed error text.
 * Functions that take `char *err, size_t errlen` write a NUL-terminated
 * sentence there on failure; the buffer may be NULL. */
#define FEDC_ERRMSG_MAX 512

/*
 * Status codes. FEDC_OK is zero; every failing call returns one of the
 * positive values below. The values are part of the ABI and are never
 * renumbered; new codes are appended.
 */
typedef enum fedc_status {
    FEDC_OK = 0,
    FEDC_ERR_NOMEM = 1,        /* out of memory */
    FEDC_ERR_INVALID = 2,      /* invalid argument or flag */
    FEDC_ERR_IO = 3,           /* operating-system I/O error */
    FEDC_ERR_FORMAT = 4,       /* malformed file or data */
    FEDC_ERR_PROTOCOL = 5,     /* the peer broke the wire protocol */
    FEDC_ERR_TOO_LARGE = 6,    /* a size limit was exceeded */
    FEDC_ERR_SHAPE = 7,        /* tensor names, dtypes or shapes disagree */
    FEDC_ERR_NONFINITE = 8,    /* NaN or Inf where finite values are needed */
    FEDC_ERR_RANGE = 9,        /* a value is outside the representable range */
    FEDC_ERR_TIMEOUT = 10,     /* a deadline passed */
    FEDC_ERR_CLOSED = 11,      /* the connection was closed */
    FEDC_ERR_CONNECT = 12,     /* could not connect */
    FEDC_ERR_ADDRINUSE = 13,   /* listen address already in use */
    FEDC_ERR_NOTFOUND = 14,    /* file, tensor or key not found */
    FEDC_ERR_UNSUPPORTED = 15, /* feature or dtype not supported */
    FEDC_ERR_CANCELLED = 16,   /* stopped on request */
    FEDC_ERR_VERSION = 17,     /* incompatible protocol version */
    FEDC_ERR_REJECTED = 18,    /* the peer refused us */
    FEDC_ERR_NOTREACHED = 19,  /* a goal (e.g. target accuracy) was not met */
    FEDC_ERR_DEVICE = 20       /* a compute device (GPU) is missing, unusable or failed */
} fedc_status;

/* A short static English description of a status code. Never NULL. */
const char *fedc_strerror(int status);

/* Logging. Lines go to stderr as "HH:MM:SS.mmm LEVEL component: text". */
typedef enum fedc_log_level {
    FEDC_LOG_DEBUG = 0,
    FEDC_LOG_INFO = 1,
    FEDC_LOG_WARN = 2,
    FEDC_LOG_ERROR = 3,
    FEDC_LOG_OFF = 4
} fedc_log_level;

/* Sets the minimum level that is printed (default FEDC_LOG_INFO, or the
 * value of the FEDC_LOG environment variable: debug|info|warn|error|off). */
void fedc_log_set_level(fedc_log_level level);
fedc_log_level fedc_log_get_level(void);

/* Writes one log line. `component` names the subsystem ("server", "client",
 * ...). Thread-safe: each line is written with a single write call. */
void fedc_log(fedc_log_level level, const char *component, const char *fmt, ...) FEDC_PRINTF(3, 4);

/* Memory aligned to 64 bytes (cache line, AVX-512). fedc_free(NULL) is a no-op. */
void *fedc_aligned_alloc(size_t nbytes);
void fedc_free(void *p);

/*
 * A small, fast, seedable pseudo-random generator (xoshiro256**, seeded
 * through splitmix64). It makes training and sampling reproducible for a
 * given seed. It is NOT cryptographic: privacy noise and key material use
 * fedc_random_bytes().
 */
typedef struct fedc_rng {
    uint64_t s[4];
    int has_spare; /* Box-Muller keeps its second value */
    double spare;
} fedc_rng;

void fedc_rng_seed(fedc_rng *rng, uint64_t seed);
uint64_t fedc_rng_u64(fedc_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double fedc_rng_uniform(fedc_rng *rng);
/* Uniform integer in [0, n); n > 0. Unbiased (rejection sampling). */
uint64_t fedc_rng_below(fedc_rng *rng, uint64_t n);
/* Standard normal. */
double fedc_rng_normal(fedc_rng *rng);
/* Gamma(shape, 1) for shape > 0 (Marsaglia-Tsang); used for Dirichlet draws. */
double fedc_rng_gamma(fedc_rng *rng, double shape);
/* Fisher-Yates shuffle of n uint32 values. */
void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *v, size_t n);

/* Mixes a seed with up to two tags into a new, well-spread 64-bit seed, so
 * that for example each (round, node) pair gets its own stream. */
uint64_t fedc_seed_derive(uint64_t seed, uint64_t tag1, uint64_t tag2);
/* Hash of a string (FNV-1a folded through splitmix64), for deriving seeds
 * from node ids. Not cryptographic. */
uint64_t fedc_hash_string(const char *s);

/* Fills buf with bytes from the operating system's CSPRNG (libsodium). */
void fedc_random_bytes(void *buf, size_t n);

/* Monotonic clock in seconds. */
double fedc_now(void);

/*
 * Compute devices. Work that can run on a GPU (the built-in trainer, the
 * server's aggregation) takes a fedc_device; the CPU is always available.
 * A device that was asked for and cannot be used is an error
 * (FEDC_ERR_DEVICE), never a silent fall back to the CPU.
 */
typedef enum fedc_device_type { FEDC_DEVICE_CPU = 0, FEDC_DEVICE_CUDA = 1 } fedc_device_type;

typedef struct fedc_device {
    fedc_device_type type;
    int index; /* which GPU (0 for the CPU) */
} fedc_device;

/* Parses "cpu", "cuda" (the first GPU) or "cuda:N". FEDC_ERR_INVALID names
 * the text on failure. */
int fedc_device_parse(const char *text, fedc_device *out, char *err, size_t errlen);
/* Writes "cpu" or "cuda:N" into buf. */
void fedc_device_format(fedc_device d, char *buf, size_t len);
/* Non-zero when this build of the library has the CUDA backend. */
int fedc_device_cuda_built(void);
/* Checks that the device can be used now: FEDC_OK for the CPU; for a GPU,
 * FEDC_ERR_DEVICE with the reason (a build without CUDA, no driver, no
 * such GPU). When it can and `name` is not NULL, writes the device's name
 * there (e.g. "NVIDIA H100 80GB HBM3"). */
int fedc_device_check(fedc_device d, char *name, size_t namelen, char *err, size_t errlen);

/* Formats into err (if non-NULL) like snprintf and returns `status`, so
 * callers can write `return fedc_set_error(err, errlen, FEDC_ERR_IO, "...")`. */
int fedc_set_error(char *err, size_t errlen, int status, const char *fmt, ...) FEDC_PRINTF(4, 5);

#ifdef __cplusplus
}
#endif
#endif /* FEDC_CORE_H */
