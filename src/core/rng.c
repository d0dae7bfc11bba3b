/* xoshiro256** (Blackman and Vigna) seeded through splitmix64. */
#include <math.h>

#include "fedc/core.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void fedc_rng_seed(fedc_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
    rng->has_spare = 0;
    rng->spare = 0.0;
}

uint64_t fedc_rng_u64(fedc_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double fedc_rng_uniform(fedc_rng *rng)
{
    return (double)(fedc_rng_u64(rng) >> 11) * 0x1.0p-53;
}

uint64_t fedc_rng_below(fedc_rng *rng, uint64_t n)
{
    /* Reject the top partial bucket so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do {
        r = fedc_rng_u64(rng);
    } while (r >= limit);
    return r % n;
}

double fedc_rng_normal(fedc_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * fedc_rng_uniform(rng) - 1.0;
        v = 2.0 * fedc_rng_uniform(rng) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double m = sqrt(-2.0 * log(s) / s);
    rng->spare = v * m;
    rng->has_spare = 1;
    return u * m;
}

double fedc_rng_gamma(fedc_rng *rng, double shape)
{
    if (shape < 1.0) {
        /* Boost: Gamma(a) = Gamma(a + 1) * U^(1/a). */
        double u = fedc_rng_uniform(rng);
        while (u == 0.0) u = fedc_rng_uniform(rng);
        return fedc_rng_gamma(rng, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = fedc_rng_normal(rng);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = fedc_rng_uniform(rng);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

void fedc_rng_shuffle_u32(fedc_rng *rng, uint32_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fedc_rng_below(rng, i);
        uint32_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

uint64_t fedc_seed_derive(uint64_t seed, uint64_t tag1, uint64_t tag2)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x);
    x = a ^ tag1;
    uint64_t b = splitmix64(&x);
    x = b ^ tag2;
    return splitmix64(&x);
}

uint64_t fedc_hash_string(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return splitmix64(&h);
}
