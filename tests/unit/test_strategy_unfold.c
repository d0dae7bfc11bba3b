/* The server folds each chunk of an update as it arrives and takes the
 * folded chunks back out when a later chunk is bad or the client vanishes.
 * Integer sums make that exact: after folding and unfolding, the
 * accumulator is bit-identical to one that never saw the update. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "strategy/fedavg.h"
#include "test_util.h"

static fedc_params *layout(size_t n)
{
    fedc_params *p = fedc_params_create();
    int64_t shape[1] = {(int64_t)n};
    fedc_params_add(p, "w", FEDC_F32, 1, shape, NULL, NULL, NULL, 0);
    return p;
}

int main(void)
{
    enum { N = 10000 };
    char err[FEDC_ERRMSG_MAX];
    fedc_params *lay = layout(N);
    fedc__fedavg a, b;
    fedc__fedavg_init(&a, lay, 4, NULL, 0);
    fedc__fedavg_init(&b, lay, 4, NULL, 0);
    float *good = malloc(N * sizeof *good), *bad = malloc(N * sizeof *bad);
    fedc_rng rng;
    fedc_rng_seed(&rng, 42);
    for (int i = 0; i < N; i++) {
        good[i] = (float)(fedc_rng_normal(&rng) * 0.1);
        bad[i] = (float)(fedc_rng_normal(&rng) * 3.0);
    }

    /* a: the good update only. b: the good one, then chunks of another
     * folded and taken back out, as when its last chunk holds a NaN. */
    CHECK(fedc__fedavg_check_fold(&a, 0, 0, good, N, 7, err, sizeof err) == FEDC_OK, "fold good: %s", err);
    CHECK(fedc__fedavg_check_fold(&b, 0, 0, good, N, 7, err, sizeof err) == FEDC_OK, "fold good: %s", err);
    CHECK(fedc__fedavg_check_fold(&b, 0, 0, bad, 4000, 123, err, sizeof err) == FEDC_OK, "first chunk");
    CHECK(fedc__fedavg_check_fold(&b, 0, 4000, bad + 4000, 4000, 123, err, sizeof err) == FEDC_OK,
          "second chunk");
    bad[9000] = NAN;
    int rc = fedc__fedavg_check_fold(&b, 0, 8000, bad + 8000, 2000, 123, err, sizeof err);
    CHECK(rc == FEDC_ERR_NONFINITE, "NaN chunk refused (rc %d)", rc);
    CHECK(strstr(err, "element 9000") != NULL, "message names the element: %s", err);
    fedc__fedavg_unfold(&b, 0, 0, bad, 8000, 123);
    CHECK(memcmp(a.acc[0], b.acc[0], N * sizeof(int64_t)) == 0,
          "after taking the update back out the sums equal those without it");

    /* A chunk with an out-of-range value leaves the sums untouched too. */
    int64_t *before = malloc(N * sizeof *before);
    memcpy(before, b.acc[0], N * sizeof *before);
    float big[4] = {1.0f, 2.0f, 3e30f, 4.0f};
    rc = fedc__fedavg_check_fold(&b, 0, 100, big, 4, 5, err, sizeof err);
    CHECK(rc == FEDC_ERR_RANGE, "3e30 refused (rc %d): %s", rc, err);
    CHECK(memcmp(before, b.acc[0], N * sizeof *before) == 0, "refused chunk left no trace");

    /* check_fold gives the same sums as check followed by fold. */
    fedc__fedavg c;
    fedc__fedavg_init(&c, lay, 4, NULL, 0);
    CHECK(fedc__fedavg_check(&c, 0, 0, good, N, 7, err, sizeof err) == FEDC_OK, "check");
    fedc__fedavg_fold(&c, 0, 0, good, N, 7);
    CHECK(memcmp(a.acc[0], c.acc[0], N * sizeof(int64_t)) == 0, "check_fold == check + fold");

    free(before);
    free(good);
    free(bad);
    fedc__fedavg_free(&a);
    fedc__fedavg_free(&b);
    fedc__fedavg_free(&c);
    fedc_params_destroy(lay);
    return test_summary();
}
