/* The built-in strategies (include/fedc/strategy.h, docs/strategies.md):
 * FedAvg, FedProx's server side, FedAvgM and the adaptive optimisers of
 * Reddi et al. (FedAdagrad, FedAdam, FedYogi) start from the round's
 * weighted mean that the fixed-point accumulator made, as do SCAFFOLD
 * (whose control variates travel as extra tensors) and FedNova (whose
 * weights divide by each client's local steps); the robust
 * aggregators (median, trimmed mean, Krum, multi-Krum, Bulyan: robust.c)
 * take every update. They share one state layout and one save format; the
 * arithmetic is done in double, in a fixed order, hence deterministic. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "fedc/strategy.h"
#include "strategy/robust.h"

typedef enum kind {
    K_FEDAVG,
    K_FEDPROX,
    K_FEDAVGM,
    K_FEDADAGRAD,
    K_FEDADAM,
    K_FEDYOGI,
    K_SCAFFOLD,
    K_FEDNOVA,
    K_MEDIAN,
    K_TRIMMED_MEAN,
    K_KRUM,
    K_MULTIKRUM,
    K_BULYAN
} kind;

/* Which hyperparameters a strategy takes, as bits of the `hyper` table. */
enum { H_LR = 1, H_MOM = 2, H_B1 = 4, H_B2 = 8, H_TAU = 16, H_MU = 32, H_BETA = 64, H_F = 128, H_M = 256 };

static const struct {
    const char *key, *flag;
} hyper[] = {{"server_lr", "--server-lr"},
             {"server_momentum", "--server-momentum"},
             {"beta1", "--beta1"},
             {"beta2", "--beta2"},
             {"tau", "--tau"},
             {"proximal_mu", "--proximal-mu"},
             {"trim_beta", "--trim-beta"},
             {"byzantine", "--byzantine"},
             {"krum_m", "--krum-m"}};
#define NHYPER (sizeof hyper / sizeof hyper[0])

static const struct {
    const char *name;
    kind k;
    unsigned takes;
    double def[NHYPER]; /* defaults, in the order of `hyper` (Flower's) */
    unsigned nvec;      /* per-element state vectors: momentum and second moment */
} kinds[] = {
    {"fedavg", K_FEDAVG, 0, {0}, 0},
    {"fedavgm", K_FEDAVGM, H_LR | H_MOM, {1.0, 0.0}, 1},
    {"fedadagrad", K_FEDADAGRAD, H_LR | H_B1 | H_TAU, {0.1, 0, 0.0, 0, 1e-9}, 2},
    {"fedadam", K_FEDADAM, H_LR | H_B1 | H_B2 | H_TAU, {0.1, 0, 0.9, 0.99, 1e-9}, 2},
    {"fedyogi", K_FEDYOGI, H_LR | H_B1 | H_B2 | H_TAU, {0.01, 0, 0.9, 0.99, 1e-3}, 2},
    {"fedprox", K_FEDPROX, H_MU, {0, 0, 0, 0, 0, NAN}, 0},
    {"scaffold", K_SCAFFOLD, H_LR, {1.0}, 1},
    {"fednova", K_FEDNOVA, 0, {0}, 0},
    {"median", K_MEDIAN, 0, {0}, 0},
    {"trimmed-mean", K_TRIMMED_MEAN, H_BETA, {0, 0, 0, 0, 0, 0, 0.2}, 0},
    {"krum", K_KRUM, H_F, {0}, 0},
    {"multikrum", K_MULTIKRUM, H_F | H_M, {0}, 0},
    {"bulyan", K_BULYAN, H_F, {0}, 0},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

typedef struct state {
    fedc_strategy iface; /* handed out by fedc_strategy_create() */
    kind k;
    unsigned nvec;
    double lr, mom, b1, b2, tau, mu;
    fedc__robust_params robust; /* the robust aggregators' parameters */
    uint64_t rounds;            /* rounds aggregated so far */
    size_t n;                   /* model elements; 0 until the first round */
    double *m;                  /* fedavgm's velocity, the first moment, or SCAFFOLD's c */
    double *v;                  /* the second moment */
    fedc_params *ctl;           /* SCAFFOLD: c as the tensors sent to the clients */
    double a_ref;               /* FedNova: the previous round's tau_eff (1 before) */
} state;

/* SCAFFOLD's control variate of model tensor "w" travels as "scaffold/w". */
#define SCAFFOLD_PREFIX "scaffold/"

const char *fedc_strategy_names(void)
{
    return "fedavg, fedavgm, fedadagrad, fedadam, fedyogi, fedprox, scaffold, fednova, median, trimmed-mean, "
           "krum, multikrum, bulyan";
}

static int configure_fit(void *st, uint64_t round, fedc_config *cfg)
{
    const state *s = st;
    (void)round;
    if (s->k == K_FEDPROX) return fedc_config_set_f64(cfg, "proximal_mu", s->mu);
    /* Tells the clients that the request carries c after the model. */
    if (s->k == K_SCAFFOLD) return fedc_config_set_bool(cfg, "scaffold", 1);
    return FEDC_OK;
}

int fedc__strategy_check_models(const fedc_params *global, const fedc_params *const *models, size_t n,
                                const fedc_params *next, size_t *total, char *err, size_t errlen)
{
    int rc = fedc_params_check_same_layout(global, next, err, errlen);
    for (size_t i = 0; !rc && i < n; i++) rc = fedc_params_check_same_layout(global, models[i], err, errlen);
    if (rc) return rc;
    size_t sum = 0;
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const fedc_tensor *t = fedc_params_at(global, i);
        if (t->dtype != FEDC_F32)
            return fedc_set_error(err, errlen, FEDC_ERR_UNSUPPORTED, "tensor '%s' is %s; strategies need F32",
                                  t->name, fedc_dtype_name(t->dtype));
        sum += (size_t)fedc_tensor_numel(t);
    }
    if (total) *total = sum;
    return FEDC_OK;
}

/* Allocates the zeroed state vectors on the first round; later rounds must
 * bring a model of the same size. */
static int ensure_vectors(state *s, size_t n, char *err, size_t errlen)
{
    if (s->nvec == 0) return FEDC_OK;
    if (s->m) {
        if (s->n == n) return FEDC_OK;
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                              "%s: the model has %zu elements but the strategy's state has %zu",
                              s->iface.name, n, s->n);
    }
    s->m = calloc(n ? n : 1, sizeof *s->m);
    s->v = s->nvec > 1 ? calloc(n ? n : 1, sizeof *s->v) : NULL;
    if (!s->m || (s->nvec > 1 && !s->v)) {
        free(s->m);
        free(s->v);
        s->m = s->v = NULL;
        return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for the strategy's state");
    }
    s->n = n;
    return FEDC_OK;
}

/* One element of the next model; m and v are this element's state. */
static float step(const state *s, float g, float mean, double *m, double *v)
{
    switch (s->k) {
    case K_FEDAVGM: {
        /* d = g - mean, vel = mom * vel + d, next = g - lr * vel, written as
         * mean + ((1 - lr) d - lr mom vel_old) so that momentum 0 and lr 1
         * give exactly the mean. */
        double d = (double)g - (double)mean;
        double delta = (1.0 - s->lr) * d - s->lr * s->mom * *m;
        *m = s->mom * *m + d;
        return delta == 0 ? mean : (float)((double)mean + delta);
    }
    case K_FEDADAGRAD:
    case K_FEDADAM:
    case K_FEDYOGI: {
        double d = (double)mean - (double)g, d2 = d * d;
        *m = s->b1 * *m + (1.0 - s->b1) * d;
        if (s->k == K_FEDADAGRAD)
            *v = *v + d2;
        else if (s->k == K_FEDADAM)
            *v = s->b2 * *v + (1.0 - s->b2) * d2;
        else
            *v = *v - (1.0 - s->b2) * d2 * (double)((*v > d2) - (*v < d2));
        return (float)((double)g + s->lr * *m / (sqrt(*v) + s->tau));
    }
    default: return mean;
    }
}

/* ---- SCAFFOLD (Karimireddy et al. 2020) ------------------------------ */

/* The tensors of c, named after the model's, on the first round. */
static int make_control(state *s, const fedc_params *global, char *err, size_t errlen)
{
    fedc_params *c = fedc_params_create();
    if (!c) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const fedc_tensor *t = fedc_params_at(global, i);
        char name[FEDC_MAX_NAME];
        if ((size_t)snprintf(name, sizeof name, "%s%s", SCAFFOLD_PREFIX, t->name) >= sizeof name) {
            fedc_params_destroy(c);
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                                  "tensor name '%s' is too long to carry scaffold's prefix '%s'", t->name,
                                  SCAFFOLD_PREFIX);
        }
        int rc = fedc_params_add(c, name, t->dtype, t->ndim, t->shape, NULL, NULL, err, errlen);
        if (rc) {
            fedc_params_destroy(c);
            return rc;
        }
    }
    s->ctl = c;
    return FEDC_OK;
}

static int scaffold_fit_tensors(void *st, const fedc_params *global, const fedc_params **out, char *err,
                                size_t errlen)
{
    state *s = st;
    size_t n;
    int rc = fedc__strategy_check_models(global, NULL, 0, global, &n, err, errlen);
    if (!rc) rc = ensure_vectors(s, n, err, errlen);
    if (!rc && !s->ctl) rc = make_control(s, global, err, errlen);
    if (rc) return rc;
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(s->ctl); i++) {
        fedc_tensor *t = fedc_params_at(s->ctl, i);
        float *d = t->data;
        for (int64_t j = 0; j < fedc_tensor_numel(t); j++) d[j] = (float)s->m[at++];
    }
    *out = s->ctl;
    return FEDC_OK;
}

/* global and mean: the model's T tensors, then c's (or the mean of the
 * clients' delta c); next: the model's. */
static int scaffold_aggregate(state *s, const fedc_round_info *info, const fedc_params *global,
                              const fedc_params *mean, fedc_params *next, char *err, size_t errlen)
{
    size_t nt = fedc_params_count(next), n;
    if (fedc_params_count(global) != 2 * nt || fedc_params_count(mean) != 2 * nt)
        return fedc_set_error(err, errlen, FEDC_ERR_SHAPE,
                              "scaffold: expected the model's %zu tensors and as many control variates, got "
                              "%zu and %zu",
                              nt, fedc_params_count(global), fedc_params_count(mean));
    int rc = fedc__strategy_check_models(next, NULL, 0, next, &n, err, errlen);
    if (!rc) rc = ensure_vectors(s, n, err, errlen);
    if (rc) return rc;
    for (size_t i = 0; i < 2 * nt; i++) {
        const fedc_tensor *w = fedc_params_at(next, i % nt);
        if (fedc_tensor_numel(fedc_params_at(global, i)) != fedc_tensor_numel(w) ||
            fedc_tensor_numel(fedc_params_at(mean, i)) != fedc_tensor_numel(w) ||
            fedc_params_at(global, i)->dtype != FEDC_F32 || fedc_params_at(mean, i)->dtype != FEDC_F32)
            return fedc_set_error(err, errlen, FEDC_ERR_SHAPE, "scaffold: tensor %zu does not match '%s'", i,
                                  w->name);
    }
    /* c <- c + |S|/N * mean(delta c_i), with S the clients that answered
     * and N those that could have been sampled. */
    double frac = info->population ? (double)info->nfits / (double)info->population : 1.0;
    if (frac > 1.0) frac = 1.0;
    size_t at = 0;
    for (size_t i = 0; i < nt; i++) {
        const float *x = fedc_params_at(global, i)->data;
        const float *y = fedc_params_at(mean, i)->data;
        const float *dc = fedc_params_at(mean, nt + i)->data;
        float *out = fedc_params_at(next, i)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(next, i));
        for (size_t j = 0; j < numel; j++, at++) {
            /* x <- x + lr (mean y - x): with lr 1, FedAvg's mean exactly. */
            out[j] = s->lr == 1.0 ? y[j] : (float)((double)x[j] + s->lr * ((double)y[j] - (double)x[j]));
            s->m[at] += frac * (double)dc[j];
        }
    }
    s->rounds++;
    return FEDC_OK;
}

/* ---- FedNova (Wang et al. 2020) --------------------------------------- */

double fedc_sgd_norm(double steps, double momentum)
{
    if (!(steps >= 1) || !(momentum >= 0 && momentum < 1)) return NAN;
    if (momentum == 0) return steps;
    /* The closed form of the sum, as in the paper's code. */
    return (steps - momentum * (1.0 - pow(momentum, steps)) / (1.0 - momentum)) / (1.0 - momentum);
}

/* The norm a_i of a client's local aggregation vector, from the metrics
 * "local_steps" and "local_momentum" (0 when absent). */
static int fednova_norm(const fedc_config *metrics, double *a, char *err, size_t errlen)
{
    double tau, rho = 0.0;
    int rc = fedc_config_get_f64(metrics, "local_steps", &tau);
    if (rc != FEDC_OK && rc != FEDC_ERR_NOTFOUND)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "metric 'local_steps' must be a number");
    if (rc != FEDC_OK)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "the update has no metric 'local_steps' (the number of local SGD steps), which "
                              "fednova needs");
    if (!(tau >= 1 && tau <= 1e12 && tau == floor(tau)))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "metric 'local_steps' must be a whole number >= 1, got %g", tau);
    rc = fedc_config_get_f64(metrics, "local_momentum", &rho);
    if (rc != FEDC_OK && rc != FEDC_ERR_NOTFOUND)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "metric 'local_momentum' must be a number");
    if (rc == FEDC_OK && !(rho >= 0 && rho < 1))
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "metric 'local_momentum' must be in [0, 1), got %g", rho);
    *a = fedc_sgd_norm(tau, rho);
    return FEDC_OK;
}

/* Weight n_i * a_ref / a_i: the mean is then the normalised average; a_ref
 * cancels out in aggregate_fit, but when every client's a_i equals it the
 * weights are exactly FedAvg's. */
static int fednova_fit_weight(void *st, uint64_t round, uint64_t num_examples, const fedc_config *metrics,
                              double *weight, char *err, size_t errlen)
{
    const state *s = st;
    double a = 1.0;
    (void)round;
    int rc = fednova_norm(metrics, &a, err, errlen);
    if (rc) return rc;
    *weight = (double)num_examples * (s->a_ref / a);
    return FEDC_OK;
}

/*
 * x <- x - tau_eff * sum_i p_i (x - y_i) / a_i, with p_i = n_i / sum n and
 * tau_eff = sum_i p_i a_i. With weights w_i = n_i a_ref / a_i, the mean M
 * of the y_i gives sum_i p_i (x - y_i) / a_i = (sum w / (a_ref sum n)) (x - M),
 * so x <- x + f (M - x) with f = tau_eff sum w / (a_ref sum n), which is
 * exactly 1 when all a_i are equal to a_ref.
 */
static int fednova_aggregate(state *s, const fedc_round_info *info, const fedc_params *global,
                             const fedc_params *mean, fedc_params *next, char *err, size_t errlen)
{
    size_t n;
    int rc = fedc__strategy_check_models(global, &mean, 1, next, &n, err, errlen);
    if (rc) return rc;
    if (info->nfits == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "fednova: no update");
    double sum_n = 0, sum_na = 0, sum_w = 0, a0 = 0;
    int equal = 1;
    for (size_t i = 0; i < info->nfits; i++) {
        double a = 1.0;
        char why[FEDC_ERRMSG_MAX];
        if (fednova_norm(info->fits[i].metrics, &a, why, sizeof why))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "fednova: update of %s: %s",
                                  info->fits[i].node_id, why);
        if (i == 0) a0 = a;
        equal &= a == a0;
        sum_n += (double)info->fits[i].num_examples;
        sum_na += (double)info->fits[i].num_examples * a;
        sum_w += info->fits[i].weight;
    }
    double tau_eff = equal ? a0 : sum_na / sum_n;
    double f = (tau_eff * sum_w) / (s->a_ref * sum_n);
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const float *x = fedc_params_at(global, i)->data;
        const float *mu = fedc_params_at(mean, i)->data;
        float *out = fedc_params_at(next, i)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(global, i));
        for (size_t j = 0; j < numel; j++)
            out[j] = f == 1.0 ? mu[j] : (float)((double)x[j] + f * ((double)mu[j] - (double)x[j]));
    }
    s->a_ref = tau_eff;
    s->rounds++;
    return FEDC_OK;
}

static int aggregate_fit(void *st, const fedc_round_info *info, const fedc_params *global,
                         const fedc_params *mean, fedc_params *next, char *err, size_t errlen)
{
    state *s = st;
    size_t n;
    if (s->k == K_SCAFFOLD) return scaffold_aggregate(s, info, global, mean, next, err, errlen);
    if (s->k == K_FEDNOVA) return fednova_aggregate(s, info, global, mean, next, err, errlen);
    int rc = fedc__strategy_check_models(global, &mean, 1, next, &n, err, errlen);
    if (!rc) rc = ensure_vectors(s, n, err, errlen);
    if (rc) return rc;
    size_t at = 0;
    for (size_t i = 0; i < fedc_params_count(global); i++) {
        const float *g = fedc_params_at(global, i)->data;
        const float *mu = fedc_params_at(mean, i)->data;
        float *out = fedc_params_at(next, i)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(global, i));
        if (s->nvec == 0) {
            if (numel) memcpy(out, mu, numel * sizeof *out);
        } else {
            for (size_t j = 0; j < numel; j++, at++)
                out[j] = step(s, g[j], mu[j], &s->m[at], s->v ? &s->v[at] : NULL);
        }
    }
    s->rounds++;
    return FEDC_OK;
}

static fedc__robust_rule robust_rule(kind k)
{
    switch (k) {
    case K_MEDIAN: return FEDC__ROBUST_MEDIAN;
    case K_TRIMMED_MEAN: return FEDC__ROBUST_TRIMMED_MEAN;
    case K_KRUM: return FEDC__ROBUST_KRUM;
    case K_MULTIKRUM: return FEDC__ROBUST_MULTIKRUM;
    default: return FEDC__ROBUST_BULYAN;
    }
}

static int is_robust(kind k)
{
    return k >= K_MEDIAN;
}

/* The robust aggregators ignore the weights: a client cannot buy influence
 * by claiming more examples. */
static int aggregate_all(void *st, const fedc_round_info *info, const fedc_params *global,
                         const fedc_params *const *updates, const uint64_t *weights, size_t n,
                         fedc_params *next, char *err, size_t errlen)
{
    state *s = st;
    (void)info;
    (void)weights;
    int rc = fedc__robust_aggregate(robust_rule(s->k), &s->robust, global, updates, n, next, err, errlen);
    if (!rc) s->rounds++;
    return rc;
}

/*
 * Save format, little-endian: "FEDCSTRT", u32 version (2), u32 name length,
 * the name, u64 rounds, u64 elements n, u32 vectors k, then k * n doubles
 * (IEEE bits as u64), u32 scalars c, then c doubles (FedNova's a_ref). k is
 * 0 until the first round has sized the state.
 */
#define VERSION 2
#define MAGIC   "FEDCSTRT"

static uint8_t *put_u64(uint8_t *p, uint64_t x, int bytes)
{
    for (int i = 0; i < bytes; i++) *p++ = (uint8_t)(x >> (8 * i));
    return p;
}

static uint64_t get_u64(const uint8_t *p, int bytes)
{
    uint64_t x = 0;
    for (int i = 0; i < bytes; i++) x |= (uint64_t)p[i] << (8 * i);
    return x;
}

static int save(void *st, uint8_t **buf, size_t *len)
{
    const state *s = st;
    size_t namelen = strlen(s->iface.name);
    unsigned k = s->m ? s->nvec : 0, c = s->k == K_FEDNOVA;
    size_t total = 8 + 4 + 4 + namelen + 8 + 8 + 4 + (size_t)k * s->n * 8 + 4 + (size_t)c * 8;
    uint8_t *b = malloc(total), *p = b;
    if (!b) return FEDC_ERR_NOMEM;
    memcpy(p, MAGIC, 8);
    p = put_u64(p + 8, VERSION, 4);
    p = put_u64(p, namelen, 4);
    memcpy(p, s->iface.name, namelen);
    p = put_u64(p + namelen, s->rounds, 8);
    p = put_u64(p, k ? s->n : 0, 8);
    p = put_u64(p, k, 4);
    for (unsigned vi = 0; vi < k; vi++) {
        const double *vec = vi == 0 ? s->m : s->v;
        for (size_t j = 0; j < s->n; j++) {
            uint64_t bits;
            memcpy(&bits, &vec[j], 8);
            p = put_u64(p, bits, 8);
        }
    }
    p = put_u64(p, c, 4);
    if (c) {
        uint64_t bits;
        memcpy(&bits, &s->a_ref, 8);
        p = put_u64(p, bits, 8);
    }
    *buf = b;
    *len = total;
    return FEDC_OK;
}

static int restore(void *st, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    state *s = st;
    size_t namelen = strlen(s->iface.name), head = 8 + 4 + 4 + namelen + 8 + 8 + 4;
    size_t tail = 4 + (s->k == K_FEDNOVA ? 8 : 0); /* the scalars this strategy keeps */
    if (len < 16 || memcmp(buf, MAGIC, 8) || get_u64(buf + 8, 4) != VERSION)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "not a saved fedc strategy state (version %d)",
                              VERSION);
    if (get_u64(buf + 12, 4) != namelen || len < head || memcmp(buf + 16, s->iface.name, namelen))
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the saved state is not of strategy '%s'",
                              s->iface.name);
    const uint8_t *p = buf + 16 + namelen;
    uint64_t rounds = get_u64(p, 8), n = get_u64(p + 8, 8), k = get_u64(p + 16, 4);
    p += 20;
    if ((k != 0 && k != s->nvec) || (k == 0 && n != 0) || len < head + tail ||
        (k && n > (len - head - tail) / 8 / k) || len != head + (size_t)(k * n * 8) + tail ||
        get_u64(buf + len - tail, 4) != (tail - 4) / 8)
        return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the saved state of '%s' is malformed",
                              s->iface.name);
    double *m = NULL, *v = NULL;
    if (k) {
        m = malloc((size_t)n * 8 + 8);
        v = k > 1 ? malloc((size_t)n * 8 + 8) : NULL;
        if (!m || (k > 1 && !v)) {
            free(m);
            free(v);
            return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory for the strategy's state");
        }
        for (uint64_t vi = 0; vi < k; vi++) {
            double *vec = vi == 0 ? m : v;
            for (size_t j = 0; j < n; j++, p += 8) {
                uint64_t bits = get_u64(p, 8);
                memcpy(&vec[j], &bits, 8);
            }
        }
    }
    double a_ref = 1.0;
    if (tail > 4) {
        uint64_t bits = get_u64(buf + len - 8, 8);
        memcpy(&a_ref, &bits, 8);
        if (!(a_ref > 0) || !isfinite(a_ref)) {
            free(m);
            free(v);
            return fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "the saved state of '%s' is malformed",
                                  s->iface.name);
        }
    }
    free(s->m);
    free(s->v);
    s->m = m;
    s->v = v;
    s->n = (size_t)n;
    s->rounds = rounds;
    s->a_ref = a_ref;
    /* SCAFFOLD's tensors are remade from the restored c. */
    fedc_params_destroy(s->ctl);
    s->ctl = NULL;
    return FEDC_OK;
}

static void destroy(void *st)
{
    state *s = st;
    if (!s) return;
    free(s->m);
    free(s->v);
    fedc_params_destroy(s->ctl);
    free(s);
}

/* Reads the hyperparameters of strategy ki from params into vals, checking
 * that each key is one it takes and each value is in range. */
static int read_params(size_t ki, const fedc_config *params, double *vals, char *err, size_t errlen)
{
    for (size_t h = 0; h < NHYPER; h++) vals[h] = kinds[ki].def[h];
    for (size_t i = 0; params && i < fedc_config_count(params); i++) {
        const char *key = fedc_config_key_at(params, i);
        size_t h = 0;
        while (h < NHYPER && strcmp(key, hyper[h].key)) h++;
        if (h == NHYPER)
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown strategy parameter '%s'", key);
        if (!(kinds[ki].takes & (1u << h)))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s does not apply to strategy '%s'",
                                  hyper[h].flag, kinds[ki].name);
        if (fedc_config_get_f64(params, key, &vals[h]) || !isfinite(vals[h]))
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s must be a finite number", hyper[h].flag);
    }
    for (size_t h = 0; h < NHYPER; h++) {
        if (!(kinds[ki].takes & (1u << h))) continue;
        double x = vals[h];
        const char *need = NULL;
        if ((1u << h) == H_LR && !(x > 0))
            need = "must be positive";
        else if (((1u << h) & (H_MOM | H_B1 | H_B2)) && !(x >= 0 && x < 1))
            need = "must be in [0, 1)";
        else if ((1u << h) == H_TAU && !(x > 0))
            need = "must be positive";
        else if ((1u << h) == H_MU && isnan(x))
            need = "is required";
        else if ((1u << h) == H_MU && !(x >= 0))
            need = "must be at least 0";
        else if ((1u << h) == H_BETA && !(x >= 0 && x < 0.5))
            need = "must be in [0, 0.5)";
        else if (((1u << h) & (H_F | H_M)) && !(x >= 0 && x <= 1e6 && x == floor(x)))
            need = "must be a whole number from 0 to 1000000";
        if (need) {
            if (isnan(x))
                return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "strategy '%s': %s %s", kinds[ki].name,
                                      hyper[h].flag, need);
            return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "strategy '%s': %s %s, got %g",
                                  kinds[ki].name, hyper[h].flag, need, x);
        }
    }
    return FEDC_OK;
}

int fedc_strategy_create(const char *name, const fedc_config *params, fedc_strategy **out, char *err,
                         size_t errlen)
{
    size_t ki = 0;
    while (ki < NKINDS && (!name || strcmp(name, kinds[ki].name))) ki++;
    if (ki == NKINDS)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "unknown strategy '%s' (known: %s)",
                              name ? name : "(null)", fedc_strategy_names());
    double vals[NHYPER];
    int rc = read_params(ki, params, vals, err, errlen);
    if (rc) return rc;
    state *s = calloc(1, sizeof *s);
    if (!s) return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
    s->k = kinds[ki].k;
    s->nvec = kinds[ki].nvec;
    s->lr = vals[0];
    s->mom = vals[1];
    s->b1 = vals[2];
    s->b2 = vals[3];
    s->tau = vals[4];
    s->mu = vals[5];
    s->robust.trim_beta = vals[6];
    s->robust.f = (uint32_t)vals[7];
    s->robust.m = (uint32_t)vals[8];
    s->iface.name = kinds[ki].name;
    s->iface.state = s;
    s->iface.configure_fit = configure_fit;
    s->a_ref = 1.0;
    if (s->k == K_SCAFFOLD) s->iface.fit_tensors = scaffold_fit_tensors;
    if (s->k == K_FEDNOVA) s->iface.fit_weight = fednova_fit_weight;
    if (is_robust(s->k)) {
        s->iface.flags = FEDC_STRATEGY_ALL_UPDATES;
        s->iface.min_updates = fedc__robust_min_updates(robust_rule(s->k), &s->robust);
        s->iface.aggregate_all = aggregate_all;
    } else {
        s->iface.aggregate_fit = aggregate_fit;
    }
    s->iface.save = save;
    s->iface.restore = restore;
    s->iface.destroy = destroy;
    *out = &s->iface;
    return FEDC_OK;
}

void fedc_strategy_destroy(fedc_strategy *s)
{
    if (s && s->destroy) s->destroy(s->state);
}
