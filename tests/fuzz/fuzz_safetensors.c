/*
 * libFuzzer target: the safetensors reader (src/core/safetensors.c,
 * fedc_params_load). It reads a path, so each input is written to one
 * temporary file (made once, rewritten in place) and loaded from there.
 * Nothing may crash; a refusal carries a message; a loaded set must save
 * (fedc_params_save) and load again to the same layout and bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fedc/core.h"
#include "fedc/tensor.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_in[64], g_out[64];

static void cleanup(void)
{
    unlink(g_in);
    unlink(g_out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR") : "/tmp";
    snprintf(g_in, sizeof g_in, "%s/fedc-fuzz-%ld.in", dir, (long)getpid());
    snprintf(g_out, sizeof g_out, "%s/fedc-fuzz-%ld.out", dir, (long)getpid());
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[FEDC_ERRMSG_MAX];
    FILE *f = fopen(g_in, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
    fedc_params *p = NULL;
    err[0] = '\0';
    int rc = fedc_params_load(g_in, &p, err, sizeof err);
    if (rc != FEDC_OK) {
        if (p != NULL || err[0] == '\0') abort();
        return 0;
    }
    if (!p) abort();
    /* What loaded must save and load again, the same. */
    if (fedc_params_save(p, g_out, NULL, NULL, 0, err, sizeof err) != FEDC_OK) abort();
    fedc_params *again = NULL;
    if (fedc_params_load(g_out, &again, err, sizeof err) != FEDC_OK) abort();
    if (fedc_params_check_same_layout(p, again, err, sizeof err) != FEDC_OK) abort();
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *a = fedc_params_at(p, i), *b = fedc_params_at(again, i);
        if (a->nbytes != b->nbytes || (a->nbytes && memcmp(a->data, b->data, a->nbytes) != 0)) abort();
    }
    fedc_params_destroy(again);
    fedc_params_destroy(p);
    return 0;
}
