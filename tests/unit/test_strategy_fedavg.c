/*
 * FedAvg's fixed-point accumulator (src/strategy/fedavg.c).
 *
 * Error bound used against a double-precision weighted mean: each fold adds
 * round(x * w * 2^24) to a 64-bit sum. When x * w * 2^24 is exact in double
 * (24-bit float mantissa times a weight below 2^29) the rounding error is at
 * most 1/2 unit; otherwise the product's own rounding adds at most
 * |x * w * 2^24| * 2^-53. Integer sums are exact, so over n updates of total
 * weight W the mean is off by at most
 *     (n / 2 + sum |x w| 2^24 2^-53) / (W 2^24)
 * before finalize divides in double (relative 2^-53, plus 2^-53 for the
 * int64-to-double conversion) and rounds to float (half an ulp, relative
 * 2^-24).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/tensor.h"
#include "strategy/fedavg.h"
#include "test_util.h"

static fedc_params *make_layout(void)
{
    fedc_params *p = fedc_params_create();
    const int64_t w[2] = {3, 4}, b[1] = {5}, e[1] = {0}, big[1] = {1000};
    if (!p || fedc_params_add(p, "w", FEDC_F32, 2, w, NULL, NULL, NULL, 0) ||
        fedc_params_add(p, "b", FEDC_F32, 1, b, NULL, NULL, NULL, 0) ||
        fedc_params_add(p, "s", FEDC_F32, 0, NULL, NULL, NULL, NULL, 0) ||
        fedc_params_add(p, "e", FEDC_F32, 1, e, NULL, NULL, NULL, 0) ||
        fedc_params_add(p, "big", FEDC_F32, 1, big, NULL, NULL, NULL, 0)) {
        fedc_params_destroy(p);
        return NULL;
    }
    return p;
}

static float uniformf(fedc_rng *r, double lo, double hi)
{
    return (float)(lo + (hi - lo) * fedc_rng_uniform(r));
}

/* Copies of the accumulator's sums and counters, to prove a call left it
 * alone. */
typedef struct snapshot {
    int64_t *acc[8];
    size_t numel[8];
    size_t ntensors;
    uint64_t updates, weight_sum;
} snapshot;

static void snap_take(snapshot *s, const fedc__fedavg *a)
{
    memset(s, 0, sizeof *s);
    s->ntensors = a->ntensors < 8 ? a->ntensors : 8;
    for (size_t i = 0; i < s->ntensors; i++) {
        s->numel[i] = a->numel[i];
        s->acc[i] = malloc((a->numel[i] ? a->numel[i] : 1) * sizeof(int64_t));
        if (s->acc[i]) memcpy(s->acc[i], a->acc[i], a->numel[i] * sizeof(int64_t));
    }
    s->updates = a->updates;
    s->weight_sum = a->weight_sum;
}

static int snap_same(const snapshot *s, const fedc__fedavg *a)
{
    if (s->updates != a->updates || s->weight_sum != a->weight_sum) return 0;
    for (size_t i = 0; i < s->ntensors; i++)
        if (!s->acc[i] || memcmp(s->acc[i], a->acc[i], s->numel[i] * sizeof(int64_t))) return 0;
    return 1;
}

static void snap_free(snapshot *s)
{
    for (size_t i = 0; i < s->ntensors; i++) free(s->acc[i]);
}

/* check_weight + check of every tensor + fold + commit, as the server does. */
static int add_update(fedc__fedavg *a, const fedc_params *u, uint64_t w, char *err, size_t errlen)
{
    int rc = fedc__fedavg_check_weight(a, w, err, errlen);
    for (size_t i = 0; !rc && i < a->ntensors; i++) {
        const fedc_tensor *t = fedc_params_at(u, i);
        rc = fedc__fedavg_check(a, i, 0, t->data, a->numel[i], w, err, errlen);
    }
    if (rc) return rc;
    fedc__fedavg_fold_params(a, u, w);
    fedc__fedavg_commit(a, w);
    return FEDC_OK;
}

static void test_init(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *p = make_layout();
    fedc__fedavg a;
    CHECK_STATUS(fedc__fedavg_init(&a, p, 4, err, sizeof err), FEDC_OK, "init");
    CHECK(a.ntensors == 5 && a.numel[0] == 12 && a.numel[2] == 1 && a.numel[3] == 0 && a.numel[4] == 1000 &&
              a.updates == 0 && a.weight_sum == 0 && a.max_updates == 4,
          "init takes the layout");
    int zero = 1;
    for (size_t i = 0; i < a.ntensors; i++)
        for (size_t j = 0; j < a.numel[i]; j++)
            if (a.acc[i][j]) zero = 0;
    CHECK(zero, "sums start at zero");
    fedc__fedavg_free(&a);
    fedc__fedavg_free(&a); /* freed state is zeroed: freeing again is harmless */

    CHECK_STATUS(fedc__fedavg_init(&a, p, 0, err, sizeof err), FEDC_OK, "init with max_updates 0");
    CHECK(a.max_updates == 1, "max_updates 0 means 1 (%llu)", (unsigned long long)a.max_updates);
    fedc__fedavg_free(&a);

    /* Non-F32 tensors are refused, naming the tensor and its dtype. */
    const fedc_dtype others[] = {FEDC_F64, FEDC_I32, FEDC_I64, FEDC_U8, FEDC_I8, FEDC_F16, FEDC_BF16};
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++) {
        fedc_params *q = fedc_params_clone(p);
        const int64_t n3[1] = {3};
        fedc_params_add(q, "counter", others[k], 1, n3, NULL, NULL, NULL, 0);
        err[0] = '\0';
        CHECK_STATUS(fedc__fedavg_init(&a, q, 4, err, sizeof err), FEDC_ERR_UNSUPPORTED, "non-F32 tensor");
        CHECK_CONTAINS(err, "'counter'", "the message names the tensor");
        CHECK_CONTAINS(err, fedc_dtype_name(others[k]), "the message names the dtype");
        CHECK(a.ntensors == 0 && a.acc == NULL && a.names == NULL, "a refused init leaves nothing allocated");
        fedc__fedavg_free(&a);
        fedc_params_destroy(q);
    }
    /* Even as the first tensor. */
    fedc_params *q = fedc_params_create();
    fedc_params_add(q, "ids", FEDC_I64, 0, NULL, NULL, NULL, NULL, 0);
    CHECK_STATUS(fedc__fedavg_init(&a, q, 1, err, sizeof err), FEDC_ERR_UNSUPPORTED, "I64 first tensor");
    fedc_params_destroy(q);
    fedc_params_destroy(p);
}

/* The weighted mean against a double computation, on random inputs. */
static void run_mean_trials(const char *what, int trials, uint64_t wlo, uint64_t whi, double vmax,
                            uint64_t seed)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_rng r;
    fedc_rng_seed(&r, seed);
    fedc_params *layout = make_layout();
    int worst_ok = 1;
    double worst_ratio = 0;
    for (int trial = 0; trial < trials; trial++) {
        int n = 1 + (int)fedc_rng_below(&r, 8);
        fedc__fedavg a;
        if (fedc__fedavg_init(&a, layout, (uint64_t)n, err, sizeof err)) {
            CHECK(0, "init: %s", err);
            break;
        }
        fedc_params *u[8];
        uint64_t w[8];
        uint64_t W = 0;
        int rc = FEDC_OK;
        for (int k = 0; k < n; k++) {
            u[k] = fedc_params_clone(layout);
            w[k] = wlo + fedc_rng_below(&r, whi - wlo + 1);
            W += w[k];
            for (size_t i = 0; i < fedc_params_count(layout); i++) {
                fedc_tensor *t = fedc_params_at(u[k], i);
                for (int64_t j = 0; j < fedc_tensor_numel(t); j++)
                    ((float *)t->data)[j] = uniformf(&r, -vmax, vmax);
            }
            if (!rc) rc = add_update(&a, u[k], w[k], err, sizeof err);
        }
        CHECK(rc == FEDC_OK, "%s trial %d: updates accepted (rc %d: %s)", what, trial, rc, rc ? err : "");
        fedc_params *out = fedc_params_clone(layout);
        rc = rc ? rc : fedc__fedavg_finalize(&a, out, err, sizeof err);
        CHECK(rc == FEDC_OK && a.updates == (uint64_t)n && a.weight_sum == W, "%s trial %d: finalize", what,
              trial);
        for (size_t i = 0; rc == FEDC_OK && i < fedc_params_count(layout); i++) {
            const fedc_tensor *t = fedc_params_at(out, i);
            for (int64_t j = 0; j < fedc_tensor_numel(t); j++) {
                double num = 0, absum = 0;
                for (int k = 0; k < n; k++) {
                    double x = ((float *)fedc_params_at(u[k], i)->data)[j];
                    num += x * (double)w[k];
                    absum += fabs(x) * (double)w[k];
                }
                double ref = num / (double)W;
                double got = ((float *)t->data)[j];
                /* Fixed-point error, plus slack for the double reference
                 * and for finalize's int64-to-double and division. */
                double efp = (n * 0.5 + absum * 0x1p24 * 0x1p-53) / ((double)W * 0x1p24) +
                             absum / (double)W * (n + 4) * 0x1p-52;
                /* The float result must be a rounding of some value within
                 * efp of the mean: between the float at or below ref - efp
                 * and the float at or above ref + efp. */
                double lo = ref - efp, hi = ref + efp;
                float flo = (float)lo, fhi = (float)hi;
                if ((double)flo > lo) flo = nextafterf(flo, -INFINITY);
                if ((double)fhi < hi) fhi = nextafterf(fhi, INFINITY);
                double halfulp = (double)(nextafterf(fabsf((float)ref), INFINITY) - fabsf((float)ref)) / 2;
                double ratio = fabs(got - ref) / (efp + halfulp);
                if (ratio > worst_ratio) worst_ratio = ratio;
                if (!(got >= flo && got <= fhi)) {
                    if (worst_ok)
                        printf("%s trial %d tensor '%s' element %lld: got %.9g, double mean %.17g, "
                               "outside "
                               "[%.9g, %.9g] (fixed-point bound %g)\n",
                               what, trial, t->name, (long long)j, got, ref, (double)flo, (double)fhi, efp);
                    worst_ok = 0;
                }
            }
        }
        fedc_params_destroy(out);
        for (int k = 0; k < n; k++) fedc_params_destroy(u[k]);
        fedc__fedavg_free(&a);
    }
    CHECK(worst_ok, "%s: every element is a float rounding of the mean within the fixed-point bound", what);
    TEST_NOTE("%s: worst |error| / (fixed-point bound + half a float ulp) = %.3f", what, worst_ratio);
    fedc_params_destroy(layout);
}

static void test_weighted_mean(void)
{
    run_mean_trials("small weights", 40, 1, 1000, 10.0, 1);
    run_mean_trials("tiny values", 20, 1, 100, 1e-5, 2);
    /* Weights near the 2^32 maximum (the product then rounds in double);
     * values within the limit for that weight: 2^27 / 2^32 = 2^-5. */
    run_mean_trials("huge weights", 20, (1ull << 32) - 1000, 1ull << 32, 0.03, 3);
    run_mean_trials("mixed weights", 20, 1, 1ull << 32, 0.03, 4);
}

/* A 1-client average of values that are multiples of 2^-24 is exact, for
 * any weight; so is the mean of identical updates. */
static void test_exact(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_rng r;
    fedc_rng_seed(&r, 5);
    fedc_params *layout = make_layout();
    int exact1 = 1, exactn = 1;
    for (int trial = 0; trial < 30; trial++) {
        uint64_t w = trial < 10 ? 1 + fedc_rng_below(&r, 100) : 1 + fedc_rng_below(&r, 1ull << 32);
        /* |x| w <= 2^26 keeps x inside the limit of 2^27 / w. */
        double vmax = ldexp(1.0, 26) / (double)w;
        fedc_params *u = fedc_params_clone(layout);
        for (size_t i = 0; i < fedc_params_count(u); i++) {
            fedc_tensor *t = fedc_params_at(u, i);
            for (int64_t j = 0; j < fedc_tensor_numel(t); j++) {
                /* A 24-bit integer times 2^e, e >= -24, below vmax. */
                int e = -24 + (int)fedc_rng_below(&r, 20);
                double m = (double)(int64_t)(fedc_rng_below(&r, 1u << 24)) - (double)(1u << 23);
                double x = ldexp(m, e);
                while (fabs(x) > vmax && e > -24) x = ldexp(m, --e);
                if (fabs(x) > vmax) x = 0;
                ((float *)t->data)[j] = (float)x;
            }
        }
        fedc__fedavg a;
        fedc__fedavg_init(&a, layout, 4, NULL, 0);
        fedc_params *out = fedc_params_clone(layout);
        int rc = add_update(&a, u, w, err, sizeof err);
        if (!rc) rc = fedc__fedavg_finalize(&a, out, err, sizeof err);
        for (size_t i = 0; i < fedc_params_count(u); i++)
            if (rc || memcmp(fedc_params_at(u, i)->data, fedc_params_at(out, i)->data,
                             fedc_params_at(u, i)->nbytes))
                exact1 = 0;
        /* The same values from three more clients of other weights. */
        fedc__fedavg_reset(&a, 4);
        uint64_t ws[4] = {w, 1 + w / 3, 1 + w / 7, 1};
        for (int k = 0; k < 4 && !rc; k++) rc = add_update(&a, u, ws[k], err, sizeof err);
        if (!rc) rc = fedc__fedavg_finalize(&a, out, err, sizeof err);
        for (size_t i = 0; i < fedc_params_count(u); i++)
            if (rc || memcmp(fedc_params_at(u, i)->data, fedc_params_at(out, i)->data,
                             fedc_params_at(u, i)->nbytes))
                exactn = 0;
        if (rc) printf("trial %d weight %llu: %s\n", trial, (unsigned long long)w, err);
        fedc__fedavg_free(&a);
        fedc_params_destroy(out);
        fedc_params_destroy(u);
    }
    CHECK(exact1, "a 1-client average of multiples of 2^-24 is bit-exact");
    CHECK(exactn, "the average of identical updates is bit-exact");
    fedc_params_destroy(layout);
}

static void shuffle_ints(fedc_rng *r, int *v, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)fedc_rng_below(r, (uint64_t)i + 1), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

/* The same updates folded in many orders, whole or in chunks, give
 * bit-identical sums and results. */
static void test_order_independence(void)
{
    enum { N = 6, ORDERS = 12 };
    char err[FEDC_ERRMSG_MAX];
    fedc_rng r;
    fedc_rng_seed(&r, 6);
    fedc_params *layout = make_layout();
    fedc_params *u[N];
    uint64_t w[N];
    for (int k = 0; k < N; k++) {
        u[k] = fedc_params_clone(layout);
        w[k] = 1 + fedc_rng_below(&r, 5000);
        for (size_t i = 0; i < fedc_params_count(u[k]); i++) {
            fedc_tensor *t = fedc_params_at(u[k], i);
            for (int64_t j = 0; j < fedc_tensor_numel(t); j++) {
                /* Magnitudes from 2^-20 to 2^4 so that float sums would
                 * depend on the order. */
                double x = ldexp(2 * fedc_rng_uniform(&r) - 1, (int)fedc_rng_below(&r, 25) - 20);
                ((float *)t->data)[j] = (float)x;
            }
        }
    }
    fedc_params *first = NULL;
    snapshot first_acc;
    memset(&first_acc, 0, sizeof first_acc);
    int same_out = 1, same_acc = 1;
    for (int o = 0; o < ORDERS; o++) {
        int order[N];
        for (int k = 0; k < N; k++) order[k] = o == 1 ? N - 1 - k : k;
        if (o >= 2) shuffle_ints(&r, order, N);
        fedc__fedavg a;
        fedc__fedavg_init(&a, layout, N, NULL, 0);
        if (o % 3 != 2) {
            for (int k = 0; k < N; k++) add_update(&a, u[order[k]], w[order[k]], err, sizeof err);
        } else {
            /* Interleaved chunks: every update split at random points, the
             * pieces of all updates folded in a random order. */
            enum { MAXP = 512 };
            static struct piece {
                int k;
                size_t ti, off, n;
            } pieces[MAXP];
            int np = 0;
            for (int k = 0; k < N; k++)
                for (size_t ti = 0; ti < a.ntensors; ti++) {
                    size_t off = 0;
                    while (off < a.numel[ti] && np < MAXP) {
                        size_t n = 1 + (size_t)fedc_rng_below(&r, 300);
                        if (n > a.numel[ti] - off) n = a.numel[ti] - off;
                        pieces[np++] = (struct piece){k, ti, off, n};
                        off += n;
                    }
                }
            for (int i = np - 1; i > 0; i--) {
                int j = (int)fedc_rng_below(&r, (uint64_t)i + 1);
                struct piece t = pieces[i];
                pieces[i] = pieces[j];
                pieces[j] = t;
            }
            for (int i = 0; i < np; i++) {
                const struct piece *pc = &pieces[i];
                const float *x = (const float *)fedc_params_at(u[pc->k], pc->ti)->data + pc->off;
                if (fedc__fedavg_check(&a, pc->ti, pc->off, x, pc->n, w[pc->k], err, sizeof err) == FEDC_OK)
                    fedc__fedavg_fold(&a, pc->ti, pc->off, x, pc->n, w[pc->k]);
            }
            for (int k = 0; k < N; k++) fedc__fedavg_commit(&a, w[order[k]]);
        }
        fedc_params *out = fedc_params_clone(layout);
        CHECK_STATUS(fedc__fedavg_finalize(&a, out, err, sizeof err), FEDC_OK, "finalize");
        if (o == 0) {
            first = out;
            snap_take(&first_acc, &a);
        } else {
            if (!snap_same(&first_acc, &a)) same_acc = 0;
            for (size_t i = 0; i < fedc_params_count(out); i++)
                if (memcmp(fedc_params_at(out, i)->data, fedc_params_at(first, i)->data,
                           fedc_params_at(out, i)->nbytes)) {
                    if (same_out) printf("order %d: tensor '%s' differs\n", o, fedc_params_at(out, i)->name);
                    same_out = 0;
                }
            fedc_params_destroy(out);
        }
        /* reset() and refold in yet another order: the same again. */
        if (o == ORDERS - 1) {
            fedc__fedavg_reset(&a, N);
            CHECK(a.updates == 0 && a.weight_sum == 0, "reset clears the counters");
            for (int k = N - 1; k >= 0; k--) add_update(&a, u[(k * 5) % N], w[(k * 5) % N], err, sizeof err);
            CHECK(snap_same(&first_acc, &a), "after reset, a new order gives the same sums");
        }
        fedc__fedavg_free(&a);
    }
    CHECK(same_acc, "%d orders (whole updates and interleaved chunks) give identical int64 sums", ORDERS);
    CHECK(same_out, "%d orders give bit-identical averages (memcmp)", ORDERS);

    /* For contrast (not an assertion): a float running sum in two orders. */
    float f1 = 0, f2 = 0;
    for (int k = 0; k < N; k++) f1 += ((float *)fedc_params_at(u[k], 4)->data)[0] * (float)w[k];
    for (int k = N - 1; k >= 0; k--) f2 += ((float *)fedc_params_at(u[k], 4)->data)[0] * (float)w[k];
    TEST_NOTE("a plain float sum of the same products: %.9g forwards, %.9g backwards", f1, f2);

    snap_free(&first_acc);
    fedc_params_destroy(first);
    for (int k = 0; k < N; k++) fedc_params_destroy(u[k]);
    fedc_params_destroy(layout);
}

static void test_check(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *layout = make_layout();
    fedc__fedavg a;
    fedc__fedavg_init(&a, layout, 4, NULL, 0);
    /* One committed update, so the accumulator holds something. */
    fedc_params *u = fedc_params_clone(layout);
    for (size_t i = 0; i < fedc_params_count(u); i++) {
        fedc_tensor *t = fedc_params_at(u, i);
        for (int64_t j = 0; j < fedc_tensor_numel(t); j++) ((float *)t->data)[j] = (float)j * 0.5f - 3.0f;
    }
    CHECK_STATUS(add_update(&a, u, 10, err, sizeof err), FEDC_OK, "a first update");
    snapshot before;
    snap_take(&before, &a);

    float *w = fedc_params_at(u, 0)->data;   /* "w", 12 elements */
    float *big = fedc_params_at(u, 4)->data; /* "big", 1000 elements */
    const struct {
        float v;
        const char *word;
    } nonfinite[] = {{NAN, "NaN"}, {-NAN, "NaN"}, {INFINITY, "Inf"}, {-INFINITY, "Inf"}};
    for (size_t k = 0; k < sizeof nonfinite / sizeof nonfinite[0]; k++) {
        float keep = w[7];
        w[7] = nonfinite[k].v;
        err[0] = '\0';
        CHECK_STATUS(fedc__fedavg_check(&a, 0, 0, w, 12, 10, err, sizeof err), FEDC_ERR_NONFINITE,
                     "non-finite in 'w'");
        char want[64];
        snprintf(want, sizeof want, "tensor 'w' element 7 is %s", nonfinite[k].word);
        CHECK(!strcmp(err, want), "message '%s', want '%s'", err, want);
        /* The element number counts from the tensor's start, not the chunk's. */
        CHECK_STATUS(fedc__fedavg_check(&a, 0, 5, w + 5, 7, 10, err, sizeof err), FEDC_ERR_NONFINITE,
                     "non-finite in a chunk at offset 5");
        CHECK(!strcmp(err, want), "chunk message '%s', want '%s'", err, want);
        /* A chunk that stops before the bad element is fine. */
        CHECK_STATUS(fedc__fedavg_check(&a, 0, 0, w, 7, 10, err, sizeof err), FEDC_OK,
                     "the chunk before element 7");
        w[7] = keep;

        keep = big[999];
        big[999] = nonfinite[k].v;
        CHECK_STATUS(fedc__fedavg_check(&a, 4, 0, big, 1000, 1, err, sizeof err), FEDC_ERR_NONFINITE,
                     "non-finite at the end of 'big'");
        snprintf(want, sizeof want, "tensor 'big' element 999 is %s", nonfinite[k].word);
        CHECK(!strcmp(err, want), "message '%s', want '%s'", err, want);
        big[999] = keep;
    }
    /* The first bad element is the one reported. */
    big[3] = NAN;
    big[500] = INFINITY;
    CHECK_STATUS(fedc__fedavg_check(&a, 4, 0, big, 1000, 1, err, sizeof err), FEDC_ERR_NONFINITE,
                 "two bad elements");
    CHECK_CONTAINS(err, "element 3 ", "the first bad element is reported");
    big[3] = 0;
    big[500] = 0;

    /* Range. With at most 4 updates the limit of |x| * w * 2^24 is 2^51 - 1,
     * so for weight 1 the largest float accepted is 2^27 - 8. */
    float s = 134217720.0f; /* 2^27 - 8 */
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1, err, sizeof err), FEDC_OK, "2^27 - 8 with weight 1");
    s = -134217720.0f;
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1, err, sizeof err), FEDC_OK,
                 "-(2^27 - 8) with weight 1");
    s = 134217728.0f;
    err[0] = '\0';
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1, err, sizeof err), FEDC_ERR_RANGE,
                 "2^27 with weight 1");
    CHECK_CONTAINS(err, "tensor 's' element 0", "range message names the tensor and element");
    CHECK_CONTAINS(err, "weight 1", "range message gives the weight");
    s = -3e38f;
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1, err, sizeof err), FEDC_ERR_RANGE, "-3e38");
    /* The limit scales with the weight: 2^27 / 1000 = 134217.7. */
    s = 134217.0f;
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1000, err, sizeof err), FEDC_OK,
                 "134217 with weight 1000");
    s = 134218.0f;
    CHECK_STATUS(fedc__fedavg_check(&a, 2, 0, &s, 1, 1000, err, sizeof err), FEDC_ERR_RANGE,
                 "134218 with weight 1000");
    big[640] = 2e8f;
    CHECK_STATUS(fedc__fedavg_check(&a, 4, 600, big + 600, 400, 1, err, sizeof err), FEDC_ERR_RANGE,
                 "out of range inside a chunk");
    CHECK_CONTAINS(err, "tensor 'big' element 640 ", "range message counts from the tensor start");
    big[640] = 0;
    /* Tiny, denormal and signed-zero values are fine. */
    float odd[4] = {-0.0f, 1e-45f, -1e-38f, 0.0f};
    CHECK_STATUS(fedc__fedavg_check(&a, 1, 0, odd, 4, 1ull << 32, err, sizeof err), FEDC_OK,
                 "denormals and -0");

    /* Values outside the tensor. */
    CHECK_STATUS(fedc__fedavg_check(&a, 5, 0, w, 1, 1, err, sizeof err), FEDC_ERR_INVALID, "tensor index 5");
    CHECK_STATUS(fedc__fedavg_check(&a, 0, 10, w, 3, 1, err, sizeof err), FEDC_ERR_INVALID,
                 "12-element tensor, 10 + 3");
    CHECK_STATUS(fedc__fedavg_check(&a, 0, 13, w, 0, 1, err, sizeof err), FEDC_ERR_INVALID, "offset 13");
    CHECK_STATUS(fedc__fedavg_check(&a, 0, 12, w, 0, 1, err, sizeof err), FEDC_OK,
                 "an empty chunk at the end");
    CHECK_STATUS(fedc__fedavg_check(&a, 3, 0, w, 0, 1, err, sizeof err), FEDC_OK, "the zero-size tensor");

    CHECK(snap_same(&before, &a), "failed (and passed) checks leave the accumulator's bytes alone");
    snap_free(&before);
    fedc_params_destroy(u);
    fedc__fedavg_free(&a);
    fedc_params_destroy(layout);
}

/* With weight 0 the range limit would be infinite and +-Inf would slip
 * through: check() refuses the weight itself. */
static void test_check_weight_zero(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *layout = make_layout();
    fedc__fedavg a;
    fedc__fedavg_init(&a, layout, 1, NULL, 0);
    float x[2] = {1.0f, INFINITY};
    CHECK_STATUS(fedc__fedavg_check(&a, 1, 0, x, 2, 0, err, sizeof err), FEDC_ERR_RANGE,
                 "+Inf checked with weight 0");
    x[1] = NAN;
    CHECK_STATUS(fedc__fedavg_check(&a, 1, 0, x, 2, 0, err, sizeof err), FEDC_ERR_RANGE,
                 "NaN checked with weight 0");
    fedc__fedavg_free(&a);
    fedc_params_destroy(layout);
}

static void test_check_weight(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *layout = make_layout();
    fedc__fedavg a;
    fedc__fedavg_init(&a, layout, 3, NULL, 0);
    err[0] = '\0';
    CHECK_STATUS(fedc__fedavg_check_weight(&a, 0, err, sizeof err), FEDC_ERR_RANGE, "weight 0");
    CHECK_CONTAINS(err, "num_examples 0", "weight 0 message");
    CHECK_STATUS(fedc__fedavg_check_weight(&a, 1, err, sizeof err), FEDC_OK, "weight 1");
    CHECK_STATUS(fedc__fedavg_check_weight(&a, FEDC_FEDAVG_MAX_WEIGHT, err, sizeof err), FEDC_OK,
                 "weight 2^32");
    CHECK_STATUS(fedc__fedavg_check_weight(&a, FEDC_FEDAVG_MAX_WEIGHT + 1, err, sizeof err), FEDC_ERR_RANGE,
                 "weight 2^32 + 1");
    CHECK_STATUS(fedc__fedavg_check_weight(&a, UINT64_MAX, err, sizeof err), FEDC_ERR_RANGE,
                 "weight 2^64 - 1");

    fedc_params *u = fedc_params_clone(layout);
    for (int k = 0; k < 3; k++)
        CHECK_STATUS(add_update(&a, u, 5, err, sizeof err), FEDC_OK, "update within max_updates");
    err[0] = '\0';
    CHECK_STATUS(fedc__fedavg_check_weight(&a, 5, err, sizeof err), FEDC_ERR_RANGE,
                 "a 4th update with max_updates 3");
    CHECK_CONTAINS(err, "3", "the message gives the capacity");
    CHECK(a.updates == 3 && a.weight_sum == 15, "three updates of weight 5 committed");
    fedc__fedavg_reset(&a, 5);
    CHECK(a.max_updates == 5, "reset sets the capacity");
    for (int k = 0; k < 5; k++) CHECK_STATUS(add_update(&a, u, 1, err, sizeof err), FEDC_OK, "after reset");
    CHECK_STATUS(fedc__fedavg_check_weight(&a, 1, err, sizeof err), FEDC_ERR_RANGE,
                 "a 6th update with max_updates 5");
    fedc_params_destroy(u);
    fedc__fedavg_free(&a);
    fedc_params_destroy(layout);
}

static void test_finalize_empty(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *layout = make_layout();
    fedc__fedavg a;
    fedc__fedavg_init(&a, layout, 2, NULL, 0);
    fedc_params *out = fedc_params_clone(layout);
    float *o = fedc_params_at(out, 0)->data;
    o[0] = 42.0f;
    err[0] = '\0';
    CHECK_STATUS(fedc__fedavg_finalize(&a, out, err, sizeof err), FEDC_ERR_INVALID,
                 "finalize with no update");
    CHECK(err[0] != '\0' && o[0] == 42.0f, "a message, and out untouched ('%s')", err);
    /* Folded but not committed is still no update. */
    fedc__fedavg_fold_params(&a, layout, 1);
    CHECK_STATUS(fedc__fedavg_finalize(&a, out, err, sizeof err), FEDC_ERR_INVALID,
                 "finalize before any commit");
    fedc__fedavg_reset(&a, 2);
    CHECK_STATUS(fedc__fedavg_finalize(&a, out, err, sizeof err), FEDC_ERR_INVALID, "finalize after reset");
    fedc_params_destroy(out);
    fedc__fedavg_free(&a);
    fedc_params_destroy(layout);
}

/* The largest values check() accepts, folded max_updates times, must not
 * overflow the int64 sums (UBSan traps signed overflow in the sanitizer
 * build; here the average must come out as the value itself). */
static void test_no_overflow(void)
{
    char err[FEDC_ERRMSG_MAX];
    const uint64_t caps[] = {1, 3, 2048, 2049, 5000};
    const uint64_t weights[] = {1, 777, FEDC_FEDAVG_MAX_WEIGHT};
    fedc_params *layout = fedc_params_create();
    const int64_t two[1] = {2};
    fedc_params_add(layout, "x", FEDC_F32, 1, two, NULL, NULL, NULL, 0);
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        for (size_t wi = 0; wi < sizeof weights / sizeof weights[0]; wi++) {
            fedc__fedavg a;
            fedc__fedavg_init(&a, layout, caps[c], NULL, 0);
            uint64_t w = weights[wi];
            /* Search the largest accepted float: start from the documented
             * limit and step down until check() agrees. */
            double limd = a.bound / ((double)w * 0x1p24);
            float lim = nextafterf((float)limd, INFINITY);
            for (int i = 0; i < 8; i++) {
                float v[2] = {lim, -lim};
                if (fedc__fedavg_check(&a, 0, 0, v, 2, w, NULL, 0) == FEDC_OK) break;
                lim = nextafterf(lim, 0.0f);
            }
            float v[2] = {lim, -lim};
            int rc = FEDC_OK;
            for (uint64_t k = 0; k < caps[c] && !rc; k++) {
                rc = fedc__fedavg_check_weight(&a, w, err, sizeof err);
                if (!rc) rc = fedc__fedavg_check(&a, 0, 0, v, 2, w, err, sizeof err);
                if (!rc) {
                    fedc__fedavg_fold(&a, 0, 0, v, 2, w);
                    fedc__fedavg_commit(&a, w);
                }
            }
            fedc_params *out = fedc_params_clone(layout);
            if (!rc) rc = fedc__fedavg_finalize(&a, out, err, sizeof err);
            const float *o = fedc_params_at(out, 0)->data;
            CHECK(rc == FEDC_OK && o[0] == lim && o[1] == -lim,
                  "%llu updates of +-%.9g with weight %llu average to themselves (got %.9g %.9g, "
                  "rc %d)",
                  (unsigned long long)caps[c], lim, (unsigned long long)w, o[0], o[1], rc);
            fedc_params_destroy(out);
            fedc__fedavg_free(&a);
        }
    }
    fedc_params_destroy(layout);
}

/* The invariant behind check()'s range: max_updates updates of at most
 * `bound` each fit in an int64. bound_for() stops doubling at 2^40, so for
 * max_updates above 2^41 the range it allows can overflow. */
static void test_bound_invariant(void)
{
    fedc_params *layout = make_layout();
    const uint64_t caps[] = {1, 2, 2048, 2049, 1u << 20, 1ull << 40, (1ull << 41) + 1, 1ull << 50};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        fedc__fedavg a;
        fedc__fedavg_init(&a, layout, caps[c], NULL, 0);
        /* Each fold adds at most floor(bound) (bound is an integer). */
        long double total = (long double)a.bound * (long double)a.max_updates;
        CHECK(total <= 0x1p63L - 1, "max_updates %llu: %llu x bound %.0f = %.4Lg fits in int64",
              (unsigned long long)caps[c], (unsigned long long)a.max_updates, a.bound, total);
        fedc__fedavg_free(&a);
    }
    fedc_params_destroy(layout);
}

int main(int argc, char **argv)
{
    if (test_selected(argc, argv, "main")) {
        test_init();
        test_weighted_mean();
        test_exact();
        test_order_independence();
        test_check();
        test_check_weight();
        test_finalize_empty();
        test_no_overflow();
    }
    if (test_selected(argc, argv, "limits")) {
        test_check_weight_zero();
        test_bound_invariant();
    }
    return test_summary();
}
