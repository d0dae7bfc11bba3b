/* A secure aggregation round's public parameters (protocol.h): checking a
 * configuration, the neighbour graph it implies (complete, or SecAgg+'s
 * Harary graph on a permutation drawn from the graph seed), and the
 * defaults fedc server --secagg picks for K and the quantisation bits. */
#include <inttypes.h>
#include <stdint.h>
#include <math.h>

#include "fedc/core.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"

/* ---------------------------------------------------------------- config, graph */

int fedc__sa_check_config(const fedc__sa_config *cfg, char *err, size_t errlen)
{
    if (!cfg) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL configuration");
    if (cfg->n < 2 || cfg->n > FEDC__SA_MAX_CLIENTS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: n must be 2 .. %d, got %" PRIu32,
                              FEDC__SA_MAX_CLIENTS, cfg->n);
    if (cfg->k != cfg->n - 1 && (cfg->k < 2 || cfg->k % 2 || cfg->k > cfg->n - 2))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: the neighbour count K must be n - 1 = %" PRIu32
                              " (complete graph) or even in 2 .. n - 2, got %" PRIu32,
                              cfg->n - 1, cfg->k);
    if (2ull * cfg->t <= cfg->k)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: t must be more than half the neighbours (t = %" PRIu32 ", K = %" PRIu32
                              ")",
                              cfg->t, cfg->k);
    if (cfg->t > cfg->k)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "secagg: t = %" PRIu32 " exceeds the neighbour count K = %" PRIu32, cfg->t,
                              cfg->k);
    if (cfg->dim < 1 || cfg->dim > FEDC__SA_MAX_DIM)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: dim must be 1 .. %u, got %" PRIu64,
                              FEDC__SA_MAX_DIM, cfg->dim);
    return FEDC_OK;
}

int fedc__sa_neighbours(const fedc__sa_config *cfg, uint8_t *adj, char *err, size_t errlen)
{
    int rc = fedc__sa_check_config(cfg, err, errlen);
    if (rc) return rc;
    if (!adj) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "secagg: NULL adjacency buffer");
    uint32_t n = cfg->n;
    if (cfg->k == n - 1) {
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++) adj[i * n + j] = i != j;
        return FEDC_OK;
    }
    uint32_t w[FEDC__SA_MAX_CLIENTS], perm[FEDC__SA_MAX_CLIENTS], pos[FEDC__SA_MAX_CLIENTS];
    if (fedc__secagg_expand(cfg->graph_seed, cfg->round, w, n))
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "secagg: out of memory (OpenSSL)");
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = n - 1; i >= 1; i--) {
        uint32_t j = (uint32_t)(((uint64_t)w[i] * (i + 1)) >> 32);
        uint32_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (uint32_t p = 0; p < n; p++) pos[perm[p]] = p;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++) {
            uint32_t d = pos[i] > pos[j] ? pos[i] - pos[j] : pos[j] - pos[i];
            if (n - d < d) d = n - d;
            adj[i * n + j] = d >= 1 && d <= cfg->k / 2;
        }
    return FEDC_OK;
}

/* ---------------------------------------------------------------- defaults */

double fedc__sa_too_few_neighbours(uint32_t k)
{
    double p = 0;
    for (uint32_t i = 0; i <= k / 2; i++) {
        double lg = lgamma(k + 1.0) - lgamma(i + 1.0) - lgamma(k - i + 1.0);
        p += exp(lg + i * log(2.0 / 3) + (k - i) * log(1.0 / 3));
    }
    return p;
}

uint32_t fedc__sa_default_neighbours(uint32_t n)
{
    if (n < 2) return 0;
    uint32_t k = 2;
    while (k < n - 1 && fedc__sa_too_few_neighbours(k) > 1e-6) k += 2;
    return k < n - 1 ? k : n - 1;
}

unsigned fedc__sa_default_bits(uint32_t n)
{
    unsigned b = 24;
    while (b > 1 && (uint64_t)n * ((1ull << b) - 1) >= (1ull << 32)) b--;
    return b;
}
