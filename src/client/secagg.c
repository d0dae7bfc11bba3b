/* Secure aggregation on the client (docs/secagg.md): the client's side of
 * one round of src/secagg/protocol.h, between the training and the
 * server's four stages.
 *
 * After fit, the client's update delta = trained - global is weighted by
 * f = min(num_examples, W) / W, clipped to [-R, R] per coordinate and
 * quantised to B bits; f itself, quantised to B bits over [0, 1], is one
 * more coordinate. So the server's unmasked sum holds sum f_i delta_i and
 * sum f_i, whose ratio is the weighted mean of the updates. With
 * differential privacy (ddg_gamma set) the update is instead encoded with
 * the distributed discrete Gaussian (privacy/ddg.h): clipped, rotated,
 * rounded to the grid and noised, unweighted. The quantised vector waits
 * here, wiped after it was masked. */
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "privacy/ddg.h"
#include "secagg/masking.h"
#include "secagg/protocol.h"

struct fedc__csa {
    uint64_t round;
    fedc__sa_client *sa;
    uint32_t *q; /* the quantised input until it is masked; dim values */
    size_t dim;
};

void fedc__csa_destroy(fedc__csa *c)
{
    if (!c) return;
    fedc__sa_client_destroy(c->sa);
    if (c->q) sodium_memzero(c->q, c->dim * sizeof *c->q);
    free(c->q);
    free(c);
}

uint64_t fedc__csa_round(const fedc__csa *c)
{
    return c->round;
}

/* Checks the setup's numbers against the model; the protocol checks the rest. */
static int check_setup(const Fedc__V1__SecAggSetup *su, const fedc_params *global, const fedc_params *trained,
                       char *err, size_t errlen)
{
    if (su->graph_seed.len != FEDC_SECAGG_KEY_BYTES)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg setup: graph seed of %zu bytes, not %d",
                              su->graph_seed.len, FEDC_SECAGG_KEY_BYTES);
    if (!(su->max_weight >= 1) || !isfinite(su->max_weight))
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg setup: max_weight %g is not at least 1",
                              su->max_weight);
    int ddg = su->ddg_gamma != 0;
    if (ddg && su->ddg_rotation_seed.len != FEDC_DDG_SEED_BYTES)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg setup: rotation seed of %zu bytes, not %d", su->ddg_rotation_seed.len,
                              FEDC_DDG_SEED_BYTES);
    int rc = ddg ? FEDC_OK
                 : fedc__secagg_check_params(su->clip_range, su->bits, su->num_clients ? su->num_clients : 1,
                                             err, errlen);
    if (rc) return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg setup: %s", err);
    size_t n = fedc_params_count(global);
    if (fedc_params_count(trained) != n)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "fit returned %zu tensors, the model has %zu",
                              fedc_params_count(trained), n);
    uint64_t dim = 1;
    for (size_t i = 0; i < n; i++) {
        const fedc_tensor *g = fedc_params_at(global, i), *t = fedc_params_at(trained, i);
        if (g->dtype != FEDC_F32 || t->dtype != FEDC_F32 || fedc_tensor_numel(g) != fedc_tensor_numel(t))
            return fedc_set_error(
                err, errlen, FEDC_ERR_INVALID,
                "tensor '%s': secure aggregation needs float32 tensors of the model's shape", g->name);
        dim += (uint64_t)fedc_tensor_numel(g);
    }
    uint64_t want = ddg ? fedc__ddg_padded_dim((size_t)dim - 1) : dim;
    if (want != su->dim)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                              "secagg setup: dim %llu, but the model has %llu "
                              "parameters (%s)",
                              (unsigned long long)su->dim, (unsigned long long)dim - 1,
                              ddg ? "padded to a power of two" : "plus 1 weight");
    if (ddg) {
        fedc__ddg_params p = {su->ddg_clip, su->ddg_gamma, su->ddg_beta, su->ddg_local_stddev, su->bits};
        rc = fedc__ddg_check(&p, (size_t)dim - 1, err, errlen);
        if (rc) return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg setup: %s", err);
    }
    return FEDC_OK;
}

/* The update trained - global, encoded with the distributed discrete
 * Gaussian into q[0 .. su->dim - 1]. */
static int ddg_encode(const Fedc__V1__SecAggSetup *su, uint64_t round, const fedc_params *global,
                      const fedc_params *trained, uint32_t *q, char *err, size_t errlen)
{
    size_t d = 0;
    for (size_t i = 0; i < fedc_params_count(global); i++)
        d += (size_t)fedc_tensor_numel(fedc_params_at(global, i));
    float *delta = malloc((d ? d : 1) * sizeof *delta);
    if (!delta) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const float *g = fedc_params_at(global, i)->data, *t = fedc_params_at(trained, i)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(global, i));
        for (size_t j = 0; j < numel; j++) delta[at + j] = (float)((double)t[j] - (double)g[j]);
        at += numel;
    }
    fedc__ddg_params p = {su->ddg_clip, su->ddg_gamma, su->ddg_beta, su->ddg_local_stddev, su->bits};
    int rc = fedc__ddg_encode(&p, delta, d, su->ddg_rotation_seed.data, round, q, NULL, err, errlen);
    sodium_memzero(delta, d * sizeof *delta);
    free(delta);
    return rc;
}

int fedc__csa_begin(const Fedc__V1__SecAggSetup *su, uint64_t round, const fedc_params *global,
                    const fedc_params *trained, uint64_t num_examples, fedc__csa **out, uint8_t **msg,
                    size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *msg = NULL;
    int rc = check_setup(su, global, trained, err, errlen);
    if (rc) return rc;
    fedc__sa_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.round = round;
    cfg.n = su->num_clients;
    cfg.k = su->neighbours;
    cfg.t = su->threshold;
    cfg.dim = su->dim;
    memcpy(cfg.graph_seed, su->graph_seed.data, sizeof cfg.graph_seed);
    fedc__csa *c = calloc(1, sizeof *c);
    if (!c) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    c->round = round;
    c->dim = (size_t)su->dim;
    c->q = malloc(c->dim * sizeof *c->q);
    enum { CHUNK = 4096 };
    float *tmp = malloc(CHUNK * sizeof *tmp);
    if (!c->q || !tmp) {
        free(tmp);
        fedc__csa_destroy(c);
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    }
    if (su->ddg_gamma != 0) {
        rc = ddg_encode(su, round, global, trained, c->q, err, errlen);
        free(tmp);
        if (rc) {
            fedc__csa_destroy(c);
            return rc;
        }
        goto keys;
    }
    double f = fmin((double)num_examples, su->max_weight) / su->max_weight;
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const float *g = fedc_params_at(global, i)->data, *t = fedc_params_at(trained, i)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(global, i));
        for (size_t j = 0; j < numel; j += CHUNK) {
            size_t k = numel - j < CHUNK ? numel - j : CHUNK;
            for (size_t e = 0; e < k; e++) tmp[e] = (float)(f * ((double)t[j + e] - (double)g[j + e]));
            fedc__secagg_quantize(tmp, k, su->clip_range, su->bits, c->q + at + j);
        }
        at += numel;
    }
    sodium_memzero(tmp, CHUNK * sizeof *tmp);
    free(tmp);
    /* The weight, on the grid of [0, 1]. */
    c->q[c->dim - 1] = (uint32_t)llround(f * (double)((1ull << su->bits) - 1));
keys:
    rc = fedc__sa_client_create(&cfg, su->index, &c->sa, err, errlen);
    if (!rc) rc = fedc__sa_client_advertise(c->sa, msg, len, err, errlen);
    if (rc) {
        fedc__csa_destroy(c);
        return rc;
    }
    *out = c;
    return FEDC_OK;
}

int fedc__csa_step(fedc__csa *c, const uint8_t *in, size_t inlen, uint8_t **msg, size_t *len, int *last,
                   char *err, size_t errlen)
{
    *msg = NULL;
    *last = 0;
    if (inlen < FEDC__SA_HEADER_BYTES)
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg message of %zu bytes: no header",
                              inlen);
    switch (in[4]) {
    case FEDC__SA_MSG_KEYS: return fedc__sa_client_share_keys(c->sa, in, inlen, msg, len, err, errlen);
    case FEDC__SA_MSG_SHARES_FWD: {
        if (!c->q)
            return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL,
                                  "secagg: a second request for the masked input");
        int rc = fedc__sa_client_masked_input(c->sa, in, inlen, c->q, c->dim, msg, len, err, errlen);
        if (!rc) {
            sodium_memzero(c->q, c->dim * sizeof *c->q);
            free(c->q);
            c->q = NULL;
        }
        return rc;
    }
    case FEDC__SA_MSG_UNMASK_REQ:
        *last = 1;
        return fedc__sa_client_unmask(c->sa, in, inlen, msg, len, err, errlen);
    default:
        return fedc_set_error(err, errlen, FEDC_ERR_PROTOCOL, "secagg message of type %u is not for a client",
                              in[4]);
    }
}
