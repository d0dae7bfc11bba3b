/* Model files in the safetensors layout (https://github.com/huggingface/safetensors):
 * u64 little-endian header size N, N bytes of JSON, then the tensor bytes.
 * The JSON is built and parsed with cJSON. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fedc/tensor.h"

/* A header larger than this is refused as corrupt (the reference
 * implementation uses the same 100 MB limit). */
#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

static int write_all(FILE *f, const void *buf, size_t n)
{
    return fwrite(buf, 1, n, f) == n ? 0 : -1;
}

int fedc_params_save(const fedc_params *p, const char *path, const char *const *meta_keys,
                     const char *const *meta_values, size_t meta_count, char *err, size_t errlen)
{
    int rc = FEDC_ERR_NOMEM;
    char *json = NULL, *tmp = NULL;
    FILE *f = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) goto fail;

    if (meta_count > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        if (!meta) goto fail;
        for (size_t i = 0; i < meta_count; i++)
            if (!cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i])) goto fail;
    }
    size_t offset = 0;
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        cJSON *e = cJSON_AddObjectToObject(root, t->name);
        if (!e || !cJSON_AddStringToObject(e, "dtype", fedc_dtype_name(t->dtype))) goto fail;
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        if (!shape || !offs) goto fail;
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + t->nbytes)));
        offset += t->nbytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) goto fail;

    /* Pad the header with spaces so the data starts 8-byte aligned, as the
     * reference writer does. */
    size_t jlen = strlen(json);
    size_t padded = (jlen + 7) & ~(size_t)7;
    unsigned char hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    if (!tmp) goto fail;
    snprintf(tmp, plen + 16, "%s.tmp%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        goto fail_quiet;
    }
    static const char spaces[8] = "        ";
    if (write_all(f, hdr, 8) || write_all(f, json, jlen) || write_all(f, spaces, padded - jlen)) goto io_fail;
    for (size_t i = 0; i < fedc_params_count(p); i++) {
        const fedc_tensor *t = fedc_params_at(p, i);
        if (write_all(f, t->data, t->nbytes)) goto io_fail;
    }
    if (fflush(f) || fsync(fileno(f))) goto io_fail;
    if (fclose(f)) {
        f = NULL;
        goto io_fail;
    }
    f = NULL;
    if (rename(tmp, path)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                            strerror(errno));
        unlink(tmp);
        goto fail_quiet;
    }
    rc = FEDC_OK;
    goto done;

io_fail:
    rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    if (f) fclose(f);
    f = NULL;
    unlink(tmp);
    goto fail_quiet;
fail:
    rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory while saving '%s'", path);
fail_quiet:
done:
    if (f) fclose(f);
    free(tmp);
    free(json);
    cJSON_Delete(root);
    return rc;
}

typedef struct entry {
    const char *name;
    fedc_dtype dtype;
    int ndim;
    int64_t shape[FEDC_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* A JSON number that is a non-negative integer below 2^53. */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return -1;
    double v = j->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || v != (double)(uint64_t)v) return -1;
    *out = (uint64_t)v;
    return 0;
}

int fedc_params_load(const char *path, fedc_params **out, char *err, size_t errlen)
{
    int rc;
    FILE *f = NULL;
    char *json = NULL;
    cJSON *root = NULL;
    entry *ents = NULL;
    fedc_params *p = NULL;
    *out = NULL;

    f = fopen(path, "rb");
    if (!f)
        return fedc_set_error(err, errlen, errno == ENOENT ? FEDC_ERR_NOTFOUND : FEDC_ERR_IO,
                              "cannot open model file '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
        goto fail;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    unsigned char hdr[8];
    if (fsize < 8 || fread(hdr, 1, 8, f) != 8) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "'%s' is not a safetensors file: shorter than its 8-byte header size", path);
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)hdr[i] << (8 * i);
    if (n < 2 || n > SAFETENSORS_MAX_HEADER || n > fsize - 8) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "'%s': header size %llu is impossible for a %llu-byte file", path,
                            (unsigned long long)n, (unsigned long long)fsize);
        goto fail;
    }
    json = malloc(n + 1);
    if (!json) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (fread(json, 1, n, f) != n) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "'%s': truncated header", path);
        goto fail;
    }
    json[n] = '\0';
    root = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(root)) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "'%s': header is not a JSON object", path);
        goto fail;
    }
    size_t count = 0;
    for (cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__")) count++;
    ents = calloc(count ? count : 1, sizeof *ents);
    if (!ents) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t k = 0;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        entry *en = &ents[k++];
        en->name = e->string;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        en->dtype = cJSON_IsString(dt) ? fedc_dtype_from_name(dt->valuestring) : FEDC_DTYPE_INVALID;
        if (en->dtype == FEDC_DTYPE_INVALID) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "'%s': tensor '%s' has a missing or unsupported dtype", path, en->name);
            goto fail;
        }
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > FEDC_MAX_DIMS || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "'%s': tensor '%s' has a bad shape or data_offsets", path, en->name);
            goto fail;
        }
        uint64_t numel = 1;
        for (cJSON *d = sh->child; d; d = d->next) {
            uint64_t v;
            if (json_uint(d, &v) || (v && numel > UINT64_MAX / v)) {
                rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "'%s': tensor '%s' has a bad dimension",
                                    path, en->name);
                goto fail;
            }
            en->shape[en->ndim++] = (int64_t)v;
            numel *= v;
        }
        if (json_uint(of->child, &en->begin) || json_uint(of->child->next, &en->end) || en->end < en->begin ||
            en->end - en->begin != numel * fedc_dtype_size(en->dtype) || numel > UINT64_MAX / 8) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "'%s': tensor '%s' data_offsets do not match its dtype and shape", path,
                                en->name);
            goto fail;
        }
    }
    qsort(ents, count, sizeof *ents, cmp_entry);
    /* The data must tile the byte buffer exactly: no gap, no overlap. */
    uint64_t expect = 0;
    for (size_t i = 0; i < count; i++) {
        if (ents[i].begin != expect) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                                "'%s': tensor '%s' data does not follow the previous tensor", path,
                                ents[i].name);
            goto fail;
        }
        expect = ents[i].end;
    }
    if (expect != fsize - 8 - n) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT,
                            "'%s': file holds %llu data bytes but the header describes %llu", path,
                            (unsigned long long)(fsize - 8 - n), (unsigned long long)expect);
        goto fail;
    }
    p = fedc_params_create();
    if (!p) {
        rc = fedc_set_error(err, errlen, FEDC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        fedc_tensor *t;
        char why[FEDC_ERRMSG_MAX];
        rc = fedc_params_add(p, ents[i].name, ents[i].dtype, ents[i].ndim, ents[i].shape, NULL, &t, why,
                             sizeof why);
        if (rc) {
            rc = fedc_set_error(err, errlen, rc == FEDC_ERR_NOMEM ? rc : FEDC_ERR_FORMAT, "'%s': %s", path,
                                why);
            goto fail;
        }
        if (fread(t->data, 1, t->nbytes, f) != t->nbytes) {
            rc = fedc_set_error(err, errlen, FEDC_ERR_FORMAT, "'%s': truncated data of tensor '%s'", path,
                                t->name);
            goto fail;
        }
    }
    *out = p;
    p = NULL;
    rc = FEDC_OK;
fail:
    fedc_params_destroy(p);
    free(ents);
    cJSON_Delete(root);
    free(json);
    if (f) fclose(f);
    return rc;
}
