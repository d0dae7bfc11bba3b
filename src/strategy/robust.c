/* Robust aggregation over whole updates. Everything is computed in double
 * and every sum runs over values sorted in ascending order, so the result
 * depends on the set of updates only, not on the order they are given in
 * (except where equal Krum scores are broken by the lowest index: the
 * server passes the updates in node-id order). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"
#include "strategy/robust.h"

uint32_t fedc__robust_min_updates(fedc__robust_rule rule, const fedc__robust_params *p)
{
    switch (rule) {
    case FEDC__ROBUST_KRUM: return 2 * p->f + 3;
    case FEDC__ROBUST_MULTIKRUM: return p->m > 2 * p->f + 3 ? p->m : 2 * p->f + 3;
    case FEDC__ROBUST_BULYAN: return 4 * p->f + 3;
    default: return 1;
    }
}

static const char *rule_name(fedc__robust_rule rule)
{
    switch (rule) {
    case FEDC__ROBUST_MEDIAN: return "median";
    case FEDC__ROBUST_TRIMMED_MEAN: return "trimmed-mean";
    case FEDC__ROBUST_KRUM: return "krum";
    case FEDC__ROBUST_MULTIKRUM: return "multikrum";
    default: return "bulyan";
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The mean of v[lo..hi), which is sorted, summed in that order. */
static double mean_sorted(const double *v, size_t lo, size_t hi)
{
    double s = 0;
    for (size_t i = lo; i < hi; i++) s += v[i];
    return s / (double)(hi - lo);
}

static double median_sorted(const double *v, size_t k)
{
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2.0;
}

/* Bulyan's coordinate step: the mean of the `keep` values of sorted v[0..k)
 * closest to their median (of two at the same distance, the lower). They
 * form a window around the median, grown one value at a time. */
static double closest_to_median_mean(const double *v, size_t k, size_t keep)
{
    double med = median_sorted(v, k);
    size_t lo = 0;
    while (lo < k && v[lo] <= med) lo++; /* v[lo - 1] <= med < v[lo] */
    size_t hi = lo;
    for (size_t taken = 0; taken < keep; taken++) {
        if (lo > 0 && (hi == k || med - v[lo - 1] <= v[hi] - med))
            lo--;
        else
            hi++;
    }
    return mean_sorted(v, lo, hi);
}

/* Squared Euclidean distances between every pair of updates, over all
 * tensors; d is n x n. */
static void distances(const fedc_params *const *updates, size_t n, double *d)
{
    size_t nt = fedc_params_count(updates[0]);
    for (size_t i = 0; i < n; i++) {
        d[i * n + i] = 0;
        for (size_t j = i + 1; j < n; j++) {
            double s = 0;
            for (size_t t = 0; t < nt; t++) {
                const float *a = fedc_params_at(updates[i], t)->data;
                const float *b = fedc_params_at(updates[j], t)->data;
                size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(updates[i], t));
                for (size_t e = 0; e < numel; e++) {
                    double x = (double)a[e] - (double)b[e];
                    s += x * x;
                }
            }
            d[i * n + j] = d[j * n + i] = s;
        }
    }
}

/* Krum scores of the r updates alive[0..r): each one's sum of squared
 * distances to its r - f - 2 nearest others, summed nearest first. Bulyan's
 * last picks leave too few for that (r - f - 2 < 1 when f < 3): the score
 * is then the distance to the nearest other, so that it still says which
 * updates lie close together (r - 1 when only one other is left, 0 alone).
 * tmp holds r doubles. */
static void krum_scores(const double *d, size_t n, const size_t *alive, size_t r, uint32_t f, double *score,
                        double *tmp)
{
    size_t q = r > (size_t)f + 3 ? r - f - 2 : 1;
    for (size_t a = 0; a < r; a++) {
        size_t k = 0;
        for (size_t b = 0; b < r; b++)
            if (b != a) tmp[k++] = d[alive[a] * n + alive[b]];
        qsort(tmp, k, sizeof *tmp, cmp_double);
        double s = 0;
        for (size_t i = 0; i < q && i < k; i++) s += tmp[i];
        score[a] = s;
    }
}

/* Position in alive[0..r) of the lowest score; the first on a tie. */
static size_t lowest(const double *score, size_t r)
{
    size_t best = 0;
    for (size_t a = 1; a < r; a++)
        if (score[a] < score[best]) best = a;
    return best;
}

int fedc__robust_aggregate(fedc__robust_rule rule, const fedc__robust_params *p, const fedc_params *global,
                           const fedc_params *const *updates, size_t n, fedc_params *next, char *err,
                           size_t errlen)
{
    const char *name = rule_name(rule);
    if (n == 0) return fedc_set_error(err, errlen, FEDC_ERR_INVALID, "%s: no update to aggregate", name);
    if (rule == FEDC__ROBUST_KRUM || rule == FEDC__ROBUST_MULTIKRUM) {
        if (n <= 2 * (size_t)p->f + 2)
            return fedc_set_error(
                err, errlen, FEDC_ERR_INVALID,
                "%s: n = %zu updates with f = %u (--byzantine) is too few; it needs n > 2f + 2 "
                "= %zu",
                name, n, p->f, 2 * (size_t)p->f + 2);
    } else if (rule == FEDC__ROBUST_BULYAN) {
        if (n < 4 * (size_t)p->f + 3)
            return fedc_set_error(
                err, errlen, FEDC_ERR_INVALID,
                "bulyan: n = %zu updates with f = %u (--byzantine) is too few; it needs n >= "
                "4f + 3 = %zu",
                n, p->f, 4 * (size_t)p->f + 3);
    }
    size_t m = rule == FEDC__ROBUST_MULTIKRUM ? (p->m ? p->m : n - p->f) : 0;
    if (rule == FEDC__ROBUST_MULTIKRUM && m > n)
        return fedc_set_error(err, errlen, FEDC_ERR_INVALID,
                              "multikrum: --krum-m %zu is more than the n = %zu updates of the round", m, n);
    int rc = fedc__strategy_check_models(global, updates, n, next, NULL, err, errlen);
    if (rc) return rc;

    /* Krum-based rules first choose the updates (sel[0..k)) that the
     * coordinate-wise step then combines. */
    size_t *sel = malloc(n * sizeof *sel), *alive = malloc(n * sizeof *alive);
    double *d = NULL, *score = malloc(n * sizeof *score), *tmp = malloc(n * sizeof *tmp);
    size_t k = n;
    if (!sel || !alive || !score || !tmp) goto nomem;
    for (size_t i = 0; i < n; i++) sel[i] = alive[i] = i;
    if (rule == FEDC__ROBUST_KRUM || rule == FEDC__ROBUST_MULTIKRUM || rule == FEDC__ROBUST_BULYAN) {
        d = malloc(n * n * sizeof *d);
        if (!d) goto nomem;
        distances(updates, n, d);
        k = rule == FEDC__ROBUST_KRUM ? 1 : rule == FEDC__ROBUST_MULTIKRUM ? m : n - 2 * (size_t)p->f;
        size_t r = n;
        if (rule == FEDC__ROBUST_BULYAN) {
            /* Iterated Krum: the best of those left, k times. */
            for (size_t t = 0; t < k; t++) {
                krum_scores(d, n, alive, r, p->f, score, tmp);
                size_t b = lowest(score, r);
                sel[t] = alive[b];
                memmove(alive + b, alive + b + 1, (r - b - 1) * sizeof *alive);
                r--;
            }
        } else {
            /* The k lowest scores, a stable selection (ties: lowest index). */
            krum_scores(d, n, alive, r, p->f, score, tmp);
            for (size_t t = 0; t < k; t++) {
                size_t b = lowest(score, r);
                sel[t] = alive[b];
                memmove(alive + b, alive + b + 1, (r - b - 1) * sizeof *alive);
                memmove(score + b, score + b + 1, (r - b - 1) * sizeof *score);
                r--;
            }
        }
    }

    size_t cut = rule == FEDC__ROBUST_TRIMMED_MEAN ? (size_t)floor(p->trim_beta * (double)n) : 0;
    size_t keep = rule == FEDC__ROBUST_BULYAN ? k - 2 * (size_t)p->f : 0;
    for (size_t t = 0; t < fedc_params_count(global); t++) {
        float *out = fedc_params_at(next, t)->data;
        size_t numel = (size_t)fedc_tensor_numel(fedc_params_at(global, t));
        if (rule == FEDC__ROBUST_KRUM) {
            if (numel) memcpy(out, fedc_params_at(updates[sel[0]], t)->data, numel * sizeof *out);
            continue;
        }
        for (size_t e = 0; e < numel; e++) {
            for (size_t i = 0; i < k; i++)
                tmp[i] = ((const float *)fedc_params_at(updates[sel[i]], t)->data)[e];
            qsort(tmp, k, sizeof *tmp, cmp_double);
            double v;
            if (rule == FEDC__ROBUST_MEDIAN)
                v = median_sorted(tmp, k);
            else if (rule == FEDC__ROBUST_TRIMMED_MEAN)
                v = mean_sorted(tmp, cut, k - cut);
            else if (rule == FEDC__ROBUST_MULTIKRUM)
                v = mean_sorted(tmp, 0, k);
            else
                v = closest_to_median_mean(tmp, k, keep);
            out[e] = (float)v;
        }
    }
    free(d);
    free(sel);
    free(alive);
    free(score);
    free(tmp);
    return FEDC_OK;
nomem:
    free(d);
    free(sel);
    free(alive);
    free(score);
    free(tmp);
    return fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "%s: out of memory for %zu updates", name, n);
}
