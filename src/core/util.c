/* Aligned allocation, time and the operating system's CSPRNG. */
#include <stdlib.h>
#include <time.h>

#include <sodium.h>

#include "fedc/core.h"

void *fedc_aligned_alloc(size_t nbytes)
{
    void *p = NULL;
    if (nbytes == 0) nbytes = 64;
    if (posix_memalign(&p, 64, nbytes) != 0) return NULL;
    return p;
}

void fedc_free(void *p)
{
    free(p);
}

double fedc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void fedc_random_bytes(void *buf, size_t n)
{
    /* sodium_init is idempotent and thread-safe; randombytes_buf aborts
     * rather than return weak bytes if the kernel source is unusable. */
    if (sodium_init() < 0) abort();
    randombytes_buf(buf, n);
}
