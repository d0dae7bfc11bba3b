/* A rank's share of the FedAvg sums (src/sim/sim_fold.c), which fedc sim
 * --mpi folds on the rank where a client ran: the sums must equal the
 * server's accumulator bit for bit, a refused update must leave no trace,
 * and anything but a sound FitRes must fold nothing (it then goes to the
 * server whole). Answers are encoded exactly as a client sends them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "net/conn.h"
#include "proto/wire.h"
#include "sim/sim_internal.h"
#include "unit/test_util.h"

/* Two tensors; the first spans three 1 MiB DATA frames. */
#define BIG   (600 * 1024)
#define SMALL 10

static fedc_params *make_params(float scale)
{
    fedc_params *p = fedc_params_create();
    fedc_tensor *a = NULL, *b = NULL;
    int64_t s1[2] = {BIG / 1024, 1024}, s2[1] = {SMALL};
    fedc_params_add(p, "w", FEDC_F32, 2, s1, NULL, &a, NULL, 0);
    fedc_params_add(p, "b", FEDC_F32, 1, s2, NULL, &b, NULL, 0);
    a = fedc_params_at(p, 0);
    for (size_t i = 0; i < BIG; i++) ((float *)a->data)[i] = scale * (float)sin((double)i * 0.001);
    for (size_t i = 0; i < SMALL; i++) ((float *)b->data)[i] = scale * (float)i;
    return p;
}

/* The bytes a client sends: message m, then p's frames (p may be NULL). */
static fedc__bytes encode(const fedc__msg *m, const fedc_params *p)
{
    fedc__bytes out = {0};
    fedc__conn c;
    fedc__conn_memory(&c, NULL, 0, &out, "test");
    char err[FEDC_ERRMSG_MAX];
    if (fedc__send_message_params(&c, m, p, err, sizeof err)) printf("encode: %s\n", err);
    return out;
}

static fedc__bytes fit_res(uint64_t round, uint64_t n, const fedc_params *p)
{
    Fedc__V1__FitRes r = FEDC__V1__FIT_RES__INIT;
    Fedc__V1__Message m = FEDC__V1__MESSAGE__INIT;
    r.round = round;
    r.num_examples = n;
    r.num_tensors = p ? (uint32_t)fedc_params_count(p) : 0;
    m.body_case = FEDC__V1__MESSAGE__BODY_FIT_RES;
    m.fit_res = &r;
    return encode(&m, p);
}

/* The model's frames, as rank 0 sends them. */
static fedc__bytes model_frames(const fedc_params *p)
{
    struct iovec *iov = NULL;
    int n = 0;
    void *mem = NULL;
    fedc__bytes out = {0};
    fedc__params_encode_iov(p, &iov, &n, &mem, NULL, 0);
    for (int i = 0; i < n; i++) fedc__bytes_append(&out, iov[i].iov_base, iov[i].iov_len);
    free(iov);
    free(mem);
    return out;
}

static int same_sums(const fedc__fedavg *a, const fedc__fedavg *b)
{
    if (a->ntensors != b->ntensors || a->updates != b->updates || a->weight_sum != b->weight_sum) return 0;
    for (size_t i = 0; i < a->ntensors; i++)
        if (a->numel[i] != b->numel[i] || memcmp(a->acc[i], b->acc[i], a->numel[i] * sizeof(int64_t)))
            return 0;
    return 1;
}

static int fold(fedc__sim_fold *f, const fedc__bytes *answer, uint64_t *w, size_t *fl)
{
    return fedc__sim_fold_answer(f, answer->data, answer->len, w, fl);
}

int main(void)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *model = make_params(0), *u1 = make_params(0.5f), *u2 = make_params(-0.25f);
    fedc_params *bad = make_params(1), *huge = make_params(1);
    ((float *)fedc_params_at(bad, 0)->data)[BIG - 5] = NAN; /* in the last DATA frame */
    ((float *)fedc_params_at(huge, 1)->data)[3] = 1e30f;

    fedc__sim_fold f;
    fedc__sim_fold_init(&f, FEDC_DEFAULT_MAX_FRAME);
    fedc__bytes frames = model_frames(model);
    CHECK(fedc__sim_fold_layout(&f, frames.data, frames.len) == FEDC_OK && f.ready && f.ntensors == 2,
          "the layout comes from the model's frames");
    fedc__sim_fold_begin(&f, 3, 8);

    /* The server's accumulator for the same round: 8 expected updates. */
    fedc__fedavg ref, snapshot;
    if (fedc__fedavg_init(&ref, model, 8, err, sizeof err) ||
        fedc__fedavg_init(&snapshot, model, 8, err, sizeof err))
        return 1;

    fedc__bytes a1 = fit_res(3, 17, u1), a2 = fit_res(3, 5, u2);
    uint64_t w = 0;
    size_t fl = 0;
    CHECK(fold(&f, &a1, &w, &fl) && w == 17, "a sound update is folded, weight 17");
    fedc__fedavg_fold_params(&ref, u1, 17);
    fedc__fedavg_commit(&ref, 17);
    CHECK(same_sums(&f.acc, &ref), "the sums equal the server's accumulator bit for bit");
    /* The FitRes frame is what rank 0 receives: it must be a whole frame. */
    fedc__msg *m = NULL;
    CHECK(fl > FEDC_FRAME_HEADER_BYTES &&
              fedc__msg_unpack(a1.data + FEDC_FRAME_HEADER_BYTES, fl - FEDC_FRAME_HEADER_BYTES, &m, NULL,
                               0) == FEDC_OK &&
              m->body_case == FEDC__V1__MESSAGE__BODY_FIT_RES && m->fit_res->num_examples == 17,
          "the FitRes frame's length is reported");
    fedc__msg_free(m);
    size_t fl2 = 0;
    CHECK(fold(&f, &a2, &w, &fl2) && w == 5, "a second update is folded");
    fedc__fedavg_fold_params(&ref, u2, 5);
    fedc__fedavg_commit(&ref, 5);
    CHECK(same_sums(&f.acc, &ref), "two updates: the sums still equal the server's");

    /* Refused values: the check takes them back out, leaving no trace. */
    fedc__bytes nan_answer = fit_res(3, 4, bad), range_answer = fit_res(3, 4000000000ull, huge);
    CHECK(!fold(&f, &nan_answer, &w, &fl) && same_sums(&f.acc, &ref),
          "a NaN in the last chunk of a tensor: nothing folded, no trace of the earlier chunks");
    CHECK(!fold(&f, &range_answer, &w, &fl) && same_sums(&f.acc, &ref),
          "a value beyond the fixed-point range: nothing folded, no trace");
    fedc__bytes zero = fit_res(3, 0, u1);
    CHECK(!fold(&f, &zero, &w, &fl), "num_examples 0 is refused by the weight check");

    /* Anything but a sound FitRes of the open round folds nothing. */
    fedc__bytes other_round = fit_res(2, 5, u1);
    CHECK(!fold(&f, &other_round, &w, &fl), "a FitRes of another round");
    fedc__bytes cut = fit_res(3, 5, u1);
    cut.len -= 1000;
    CHECK(!fold(&f, &cut, &w, &fl), "an answer cut short (a client vanishing halfway)");
    fedc__bytes trailing = fit_res(3, 5, u1);
    fedc__bytes_append(&trailing, a1.data, fl);
    CHECK(!fold(&f, &trailing, &w, &fl), "an answer with a frame after its last tensor");
    fedc_params *other = fedc_params_create();
    int64_t s1[2] = {BIG / 1024, 1024}, s2[1] = {SMALL + 1};
    fedc_params_add(other, "w", FEDC_F32, 2, s1, NULL, NULL, NULL, 0);
    fedc_params_add(other, "b", FEDC_F32, 1, s2, NULL, NULL, NULL, 0);
    fedc__bytes shape = fit_res(3, 5, other);
    CHECK(!fold(&f, &shape, &w, &fl), "a tensor of another shape");
    fedc__bytes none = fit_res(3, 5, NULL);
    CHECK(!fold(&f, &none, &w, &fl), "a FitRes without tensors");
    Fedc__V1__Failure fail = FEDC__V1__FAILURE__INIT;
    Fedc__V1__Message fm = FEDC__V1__MESSAGE__INIT;
    fail.reason = "no data";
    fm.body_case = FEDC__V1__MESSAGE__BODY_FAILURE;
    fm.failure = &fail;
    fedc__bytes failure = encode(&fm, NULL);
    CHECK(!fold(&f, &failure, &w, &fl), "a Failure message");
    CHECK(same_sums(&f.acc, &ref), "after all the refusals the sums are the two updates'");

    /* A refused verdict takes an update back out exactly. */
    fedc__sim_fold_unfold(&f, a2.data, a2.len, fl2, 5);
    fedc__fedavg_reset(&snapshot, 8);
    fedc__fedavg_fold_params(&snapshot, u1, 17);
    fedc__fedavg_commit(&snapshot, 17);
    CHECK(same_sums(&f.acc, &snapshot), "unfolding the second update leaves exactly the first");

    /* A closed round folds nothing; a new one starts from zero. */
    f.open = 0;
    CHECK(!fold(&f, &a1, &w, &fl), "nothing is folded once the round's sums were collected");
    fedc__sim_fold_begin(&f, 4, 8);
    fedc__fedavg_reset(&snapshot, 8);
    CHECK(same_sums(&f.acc, &snapshot), "a new round starts from zero");

    fedc__bytes *all[] = {&frames,      &a1,  &a2,       &nan_answer, &range_answer, &zero,
                          &other_round, &cut, &trailing, &shape,      &none,         &failure};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fedc__bytes_free(all[i]);
    fedc__fedavg_free(&ref);
    fedc__fedavg_free(&snapshot);
    fedc__sim_fold_free(&f);
    fedc_params_destroy(model);
    fedc_params_destroy(u1);
    fedc_params_destroy(u2);
    fedc_params_destroy(bad);
    fedc_params_destroy(huge);
    fedc_params_destroy(other);
    return test_summary();
}
