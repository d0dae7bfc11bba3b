/*
 * bench_agg_cuda: FedAvg on the GPU against a device-to-device copy.
 *
 * Makes U updates (default 100) of one F32 tensor of N values (default
 * 16,777,216: 64 MiB) in GPU memory, values from N(0, 0.05) and weights
 * 1 .. 7, and a FedAvg accumulator on the same GPU
 * (fedc__fedavg_init_on).
 *
 * One aggregation pass is what a GPU simulation does each round: one call
 * of fedc__fedavg_check_fold_device over the U updates (every value
 * checked and folded into the 64-bit fixed-point sums, several updates per
 * pass over the sums), U commits, and fedc__fedavg_finalize_device (the
 * weighted mean into GPU memory). The sums are reset before each pass,
 * outside the timing. The reference pass is one cudaMemcpy, device to
 * device, of all U updates' bytes into a buffer of the same size.
 *
 * Both are timed with CUDA events on the legacy default stream, R times
 * each (default 10), interleaved, after one untimed pass of each; the
 * median is reported in GB/s (10^9 bytes) of update bytes (U * N * 4), with
 * the ratio. The accumulator's calls return only when their work on the
 * GPU is done, so the aggregation time includes their host overhead.
 * Finalize into host memory (what the server does) is timed on its own.
 *
 *   bench_agg_cuda [--updates U] [--numel N] [--reps R] [--device cuda:I] [--json]
 *
 * Without --updates, U is lowered when 2 * U * N * 4 bytes (the updates and
 * the copy's destination) do not fit in the GPU's free memory. Exits 77,
 * with the reason, when there is no usable GPU.
 *
 * The result is checked: the mean of a few elements (the tensor's ends
 * among them) must be bit-identical to the CPU's fixed-point arithmetic on
 * the same values.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "fedc/core.h"
#include "fedc/tensor.h"
#include "strategy/fedavg.h"

#define NO_GPU 77

/* Every CUDA call is checked: on failure it names the call and ends the
 * run through `done`. */
#define CU(call)                                                                                             \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            fprintf(stderr, "bench_agg_cuda: %s failed at line %d: %s\n", #call, __LINE__,                   \
                    cudaGetErrorString(e_));                                                                 \
            goto done;                                                                                       \
        }                                                                                                    \
    } while (0)

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_agg_cuda [--updates U] [--numel N] [--reps R] [--device cuda:I] [--json]\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    long updates = 100, numel = 16777216, reps = 10;
    int json = 0, updates_given = 0;
    const char *devname = "cuda:0";
    for (int i = 1; i < argc; i++) {
        long *target = NULL;
        if (!strcmp(argv[i], "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            devname = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--updates")) {
            target = &updates;
            updates_given = 1;
        } else if (!strcmp(argv[i], "--numel")) {
            target = &numel;
        } else if (!strcmp(argv[i], "--reps")) {
            target = &reps;
        }
        if (!target || i + 1 >= argc) {
            usage();
            return 2;
        }
        char *e;
        *target = strtol(argv[++i], &e, 10);
        if (*e || *target < 1 || *target > 1000000000L) {
            fprintf(stderr, "bench_agg_cuda: bad value '%s' for %s\n", argv[i], argv[i - 1]);
            return 2;
        }
    }

    char err[FEDC_ERRMSG_MAX], name[256] = "";
    fedc_device dev;
    if (fedc_device_parse(devname, &dev, err, sizeof err) || dev.type != FEDC_DEVICE_CUDA) {
        fprintf(stderr, "bench_agg_cuda: %s\n",
                dev.type == FEDC_DEVICE_CUDA ? err : "--device must be a GPU");
        return 2;
    }
    if (fedc_device_check(dev, name, sizeof name, err, sizeof err)) {
        fprintf(stderr, "bench_agg_cuda: no usable GPU: %s\n", err);
        return NO_GPU;
    }

    int exit_code = 1;
    fedc_params *model = NULL, *host_out = NULL;
    fedc__fedavg agg;
    int agg_ready = 0;
    float *d_updates = NULL, *d_copy = NULL, *d_out = NULL, *h_base = NULL, *h_out = NULL;
    const float **ptrs = NULL;
    double *weights = NULL;
    int64_t *sums = NULL;
    double *t_agg = NULL, *t_copy = NULL, *t_host = NULL;
    cudaEvent_t ev[4] = {NULL, NULL, NULL, NULL};
    const size_t n = (size_t)numel;
    /* Each update starts on a 256-byte boundary, as a cudaMalloc of its own
     * would. */
    const size_t stride = (n + 63) / 64 * 64;
    const size_t shift = 7; /* update u holds host values u*shift .. u*shift + n */

    size_t free_b = 0, total_b = 0;
    CU(cudaMemGetInfo(&free_b, &total_b));
    {
        /* The updates and the copy's destination, plus the sums (8 bytes),
         * the mean (4) and the accumulator's staging (16 MiB), and slack. */
        const double per_update = 2.0 * (double)stride * sizeof(float);
        const double fixed = (double)n * 12 + (64 << 20) + 0.05 * (double)free_b;
        long fit = (long)(((double)free_b - fixed) / per_update);
        if (fit < updates) {
            if (updates_given || fit < 1) {
                fprintf(stderr,
                        "bench_agg_cuda: %ld updates of %zu values do not fit in the %.1f GiB free on %s\n",
                        updates, n, (double)free_b / (1 << 30), devname);
                goto done;
            }
            fprintf(stderr, "bench_agg_cuda: only %ld updates fit in the %.1f GiB free on %s; using %ld\n",
                    fit, (double)free_b / (1 << 30), devname, fit);
            updates = fit;
        }
    }
    const size_t u_count = (size_t)updates;
    const size_t block_bytes = u_count * stride * sizeof(float);
    const double update_bytes = (double)u_count * (double)n * sizeof(float);

    ptrs = calloc(u_count, sizeof *ptrs);
    weights = calloc(u_count, sizeof *weights);
    t_agg = calloc((size_t)reps + 1, sizeof *t_agg);
    t_copy = calloc((size_t)reps + 1, sizeof *t_copy);
    t_host = calloc((size_t)reps + 1, sizeof *t_host);
    h_base = malloc((n + u_count * shift) * sizeof *h_base);
    h_out = malloc(n * sizeof *h_out);
    sums = malloc(n * sizeof *sums);
    if (!ptrs || !weights || !t_agg || !t_copy || !t_host || !h_base || !h_out || !sums) {
        fprintf(stderr, "bench_agg_cuda: out of memory\n");
        goto done;
    }
    fedc_rng rng;
    fedc_rng_seed(&rng, 42);
    for (size_t i = 0; i < n + u_count * shift; i++) h_base[i] = (float)(0.05 * fedc_rng_normal(&rng));

    CU(cudaMalloc((void **)&d_updates, block_bytes));
    CU(cudaMalloc((void **)&d_copy, block_bytes));
    CU(cudaMalloc((void **)&d_out, n * sizeof(float)));
    for (size_t u = 0; u < u_count; u++) {
        float *p = d_updates + u * stride;
        CU(cudaMemcpy(p, h_base + u * shift, n * sizeof(float), cudaMemcpyHostToDevice));
        ptrs[u] = p;
        weights[u] = 1 + u % 7;
    }
    CU(cudaMemset(d_copy, 0, block_bytes));
    for (int i = 0; i < 4; i++) CU(cudaEventCreate(&ev[i]));

    int64_t shape[1] = {numel};
    model = fedc_params_create();
    if (!model || fedc_params_add(model, "w", FEDC_F32, 1, shape, NULL, NULL, err, sizeof err)) {
        fprintf(stderr, "bench_agg_cuda: %s\n", model ? err : "out of memory");
        goto done;
    }
    host_out = fedc_params_clone(model);
    if (!host_out) {
        fprintf(stderr, "bench_agg_cuda: out of memory\n");
        goto done;
    }
    if (fedc__fedavg_init_on(&agg, model, u_count, dev, err, sizeof err)) {
        fprintf(stderr, "bench_agg_cuda: %s\n", err);
        goto done;
    }
    agg_ready = 1;

    /* Repetition 0 is the untimed warm-up. */
    for (long r = 0; r <= reps; r++) {
        CU(cudaDeviceSynchronize());
        CU(cudaEventRecord(ev[0], 0));
        CU(cudaMemcpy(d_copy, d_updates, block_bytes, cudaMemcpyDeviceToDevice));
        CU(cudaEventRecord(ev[1], 0));
        CU(cudaEventSynchronize(ev[1]));

        fedc__fedavg_reset(&agg, u_count);
        if (fedc__fedavg_status(&agg, err, sizeof err)) {
            fprintf(stderr, "bench_agg_cuda: reset: %s\n", err);
            goto done;
        }
        CU(cudaDeviceSynchronize());
        CU(cudaEventRecord(ev[2], 0));
        if (fedc__fedavg_check_fold_device(&agg, 0, ptrs, weights, u_count, err, sizeof err)) {
            fprintf(stderr, "bench_agg_cuda: fold: %s\n", err);
            goto done;
        }
        for (size_t u = 0; u < u_count; u++) fedc__fedavg_commit(&agg, weights[u]);
        float *outs[1] = {d_out};
        if (fedc__fedavg_finalize_device(&agg, outs, err, sizeof err)) {
            fprintf(stderr, "bench_agg_cuda: finalize: %s\n", err);
            goto done;
        }
        CU(cudaEventRecord(ev[3], 0));
        CU(cudaEventSynchronize(ev[3]));

        double h0 = fedc_now();
        if (fedc__fedavg_finalize(&agg, host_out, err, sizeof err)) {
            fprintf(stderr, "bench_agg_cuda: finalize to host: %s\n", err);
            goto done;
        }
        double h1 = fedc_now();

        float ms_copy = 0, ms_agg = 0;
        CU(cudaEventElapsedTime(&ms_copy, ev[0], ev[1]));
        CU(cudaEventElapsedTime(&ms_agg, ev[2], ev[3]));
        if (r == 0) continue;
        t_copy[r - 1] = ms_copy * 1e-3;
        t_agg[r - 1] = ms_agg * 1e-3;
        t_host[r - 1] = h1 - h0;
    }

    /* The last pass must have folded every value of every update exactly:
     * a few means, computed here as the CPU accumulator does, must match
     * the GPU's bit for bit, in GPU memory and in host memory. */
    CU(cudaMemcpy(h_out, d_out, n * sizeof(float), cudaMemcpyDeviceToHost));
    if (fedc__fedavg_read_sums(&agg, 0, sums, err, sizeof err)) {
        fprintf(stderr, "bench_agg_cuda: %s\n", err);
        goto done;
    }
    {
        const size_t probe[] = {0, 1, n / 3, n / 2 + 3, n - 1};
        const double scale = (double)(1u << FEDC_FEDAVG_FRACTION_BITS);
        uint64_t wsum = 0;
        for (size_t u = 0; u < u_count; u++) wsum += weights[u];
        const float *hf = fedc_params_at(host_out, 0)->data;
        for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
            size_t j = probe[k] < n ? probe[k] : n - 1;
            uint64_t want = 0;
            for (size_t u = 0; u < u_count; u++)
                want += (uint64_t)llrint((double)h_base[u * shift + j] * ((double)weights[u] * scale));
            float mean = (float)((double)(int64_t)want / ((double)wsum * scale));
            if ((uint64_t)sums[j] != want || memcmp(&mean, &h_out[j], sizeof mean) ||
                memcmp(&mean, &hf[j], sizeof mean)) {
                fprintf(stderr,
                        "bench_agg_cuda: element %zu: sum %lld (expected %lld), mean %.9g on the GPU, %.9g "
                        "in host memory (expected %.9g)\n",
                        j, (long long)sums[j], (long long)want, (double)h_out[j], (double)hf[j],
                        (double)mean);
                goto done;
            }
        }
    }
    uint64_t checksum = 0;
    for (size_t j = 0; j < n; j++) checksum = checksum * 31 + (uint64_t)sums[j];

    double agg_s = median(t_agg, reps), copy_s = median(t_copy, reps), host_s = median(t_host, reps);
    double agg_gbps = update_bytes / agg_s / 1e9, copy_gbps = update_bytes / copy_s / 1e9;
    if (json) {
        printf("{\"agg_gbps\": %.3f, \"copy_gbps\": %.3f, \"agg_over_copy\": %.3f, \"updates\": %zu, "
               "\"numel\": %zu, \"update_bytes\": %zu, \"agg_ms\": %.3f, \"copy_ms\": %.3f, "
               "\"finalize_host_ms\": %.3f, \"device\": \"%s\", \"checksum\": \"%016llx\"}\n",
               agg_gbps, copy_gbps, agg_gbps / copy_gbps, u_count, n, n * sizeof(float), agg_s * 1e3,
               copy_s * 1e3, host_s * 1e3, name, (unsigned long long)checksum);
    } else {
        printf("%s (%s): %zu updates x %zu F32 values (%zu bytes each), median of %ld\n", devname, name,
               u_count, n, n * sizeof(float), reps);
        printf("agg_gbps %.1f  (check + fold of all updates + finalize on the GPU, %.3f ms per pass)\n",
               agg_gbps, agg_s * 1e3);
        printf("copy_gbps %.1f  (cudaMemcpy device to device of the same bytes, %.3f ms)\n", copy_gbps,
               copy_s * 1e3);
        printf("agg / copy %.3f  (target >= 0.5)\n", agg_gbps / copy_gbps);
        printf("finalize into host memory %.3f ms\n", host_s * 1e3);
        printf("checksum %016llx\n", (unsigned long long)checksum);
    }
    exit_code = 0;
done:
    if (agg_ready) fedc__fedavg_free(&agg);
    for (int i = 0; i < 4; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    if (d_updates) cudaFree(d_updates);
    if (d_copy) cudaFree(d_copy);
    if (d_out) cudaFree(d_out);
    fedc_params_destroy(model);
    fedc_params_destroy(host_out);
    free(ptrs);
    free(weights);
    free(t_agg);
    free(t_copy);
    free(t_host);
    free(h_base);
    free(h_out);
    free(sums);
    return exit_code;
}
