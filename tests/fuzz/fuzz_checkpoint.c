/*
 * libFuzzer target: the server's checkpoint reader (src/server/checkpoint.c,
 * fedc__checkpoint_decode; the layout is in docs/checkpoints.md).
 *
 * Each input is decoded twice: as it is (so that the digest check refuses
 * almost everything a mutation makes), and with its last 32 bytes replaced
 * by the BLAKE2b-256 of the rest, so that the fields behind the digest are
 * fuzzed too. Nothing may crash; a refusal is FEDC_ERR_FORMAT,
 * FEDC_ERR_VERSION or FEDC_ERR_NOMEM with a message; a checkpoint that
 * decodes must encode back to exactly the bytes decoded (the format has a
 * single encoding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fedc/core.h"
#include "server/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const uint8_t *data, size_t size)
{
    fedc__checkpoint c;
    char err[FEDC_ERRMSG_MAX];
    err[0] = '\0';
    int rc = fedc__checkpoint_decode(data, size, &c, err, sizeof err);
    if (rc != FEDC_OK) {
        if ((rc != FEDC_ERR_FORMAT && rc != FEDC_ERR_VERSION && rc != FEDC_ERR_NOMEM) || err[0] == '\0' ||
            c.model != NULL)
            abort();
        return;
    }
    if (!c.model) abort();
    uint8_t *buf = NULL;
    size_t len = 0;
    if (fedc__checkpoint_encode(&c, &buf, &len, err, sizeof err) != FEDC_OK) abort();
    if (len != size || memcmp(buf, data, size) != 0) abort();
    free(buf);
    fedc__checkpoint_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    if (size < 32) return 0;
    uint8_t *copy = malloc(size);
    if (!copy) abort();
    memcpy(copy, data, size);
    crypto_generichash(copy + size - 32, 32, copy, size - 32, NULL, 0);
    check(copy, size);
    free(copy);
    return 0;
}
