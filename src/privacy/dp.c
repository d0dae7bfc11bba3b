/* Differential privacy's mechanics (include/fedc/privacy.h): the modes'
 * names, Gaussian noise from a cryptographic generator, and the clients'
 * clipping. The server's side is in src/server/ (clip on arrival, noise at
 * the end of the round), the accounting in rdp.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "fedc/privacy.h"

static const char *const mode_names[] = {"off", "central", "client-clip", "local"};

const char *fedc_dp_mode_name(fedc_dp_mode mode)
{
    return (unsigned)mode < sizeof mode_names / sizeof mode_names[0] ? mode_names[mode] : "?";
}

int fedc_dp_mode_parse(const char *name, fedc_dp_mode *mode)
{
    for (size_t i = 0; name && i < sizeof mode_names / sizeof mode_names[0]; i++)
        if (!strcmp(name, mode_names[i])) {
            *mode = (fedc_dp_mode)i;
            return 0;
        }
    return -1;
}

double fedc_dp_adaptive_clip(double clip, double unclipped_fraction, double target_quantile, double clip_lr)
{
    return clip * exp(-clip_lr * (unclipped_fraction - target_quantile));
}

double fedc_dp_adaptive_noise_multiplier(double z, double count_stddev)
{
    if (!(z > 0) || !(2 * count_stddev > z) || !isfinite(z) || !isfinite(count_stddev)) return NAN;
    return 1.0 / sqrt(1.0 / (z * z) - 1.0 / (4.0 * count_stddev * count_stddev));
}

/* Uniform in (0, 1]: 53 random bits, plus one so that log() never sees 0. */
static double unit_open(uint64_t r)
{
    return ((double)(r >> 11) + 1.0) * 0x1p-53;
}

void fedc_dp_normal(double *out, size_t n)
{
    /* Random bits in blocks, two 64-bit words for each pair of normals. */
    enum { BLOCK = 512 };
    uint64_t bits[BLOCK];
    size_t i = 0;
    while (i < n) {
        fedc_random_bytes(bits, sizeof bits);
        for (size_t k = 0; k + 1 < BLOCK && i < n; k += 2) {
            double radius = sqrt(-2.0 * log(unit_open(bits[k])));
            double angle = 2.0 * M_PI * unit_open(bits[k + 1]);
            out[i++] = radius * cos(angle);
            if (i < n) out[i++] = radius * sin(angle);
        }
    }
    /* The bits were secret until used; leave no copy behind. */
    sodium_memzero(bits, sizeof bits);
}

int fedc_dp_clip_update(fedc_params *update, const fedc_params *global, double clip, double sigma,
                        double *norm, char *err, size_t errlen)
{
    if (!(clip > 0) || !isfinite(clip))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "dp: the clip norm must be > 0, got %g", clip);
    if (!(sigma >= 0) || !isfinite(sigma))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "dp: the noise must be >= 0, got %g", sigma);
    int rc = fedc_params_check_same_layout(global, update, err, errlen);
    if (rc) return rc;
    double sq = 0;
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        const fedc_tensor *g = fedc_params_at(global, t), *u = fedc_params_at(update, t);
        if (g->dtype != FEDC_F32)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "dp: tensor '%s' is %s, not F32",
                                  g->name, fedc_dtype_name(g->dtype));
        const float *gv = g->data, *uv = u->data;
        for (int64_t j = 0; j < fedc_tensor_numel(g); j++) {
            double d = (double)uv[j] - (double)gv[j];
            sq += d * d;
        }
    }
    if (!isfinite(sq))
        return fedc_set_error(err, errlen, FEDC_ERR_NONFINITE, "dp: the update holds NaN or infinite values");
    double l2 = sqrt(sq), scale = l2 > clip ? clip / l2 : 1.0;
    if (norm) *norm = l2;
    enum { CHUNK = 4096 };
    double noise[CHUNK];
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        const float *gv = fedc_params_at(global, t)->data;
        float *uv = fedc_params_at(update, t)->data;
        size_t n = (size_t)fedc_tensor_numel(fedc_params_at(global, t));
        for (size_t at = 0; at < n; at += CHUNK) {
            size_t k = n - at < CHUNK ? n - at : CHUNK;
            if (sigma > 0) fedc_dp_normal(noise, k);
            for (size_t j = 0; j < k; j++) {
                double d = ((double)uv[at + j] - (double)gv[at + j]) * scale;
                uv[at + j] = (float)((double)gv[at + j] + d + (sigma > 0 ? sigma * noise[j] : 0.0));
            }
        }
    }
    sodium_memzero(noise, sizeof noise);
    return FEDC_OK;
}
