/*
 * Model files in the safetensors layout: bit-exact round trips of every
 * dtype (scalars and zero-size tensors included), the metadata and the
 * header padding, a read by NumPy that parses the format by hand, and
 * malformed files that must be refused with FEDC_ERR_FORMAT (or
 * FEDC_ERR_NOTFOUND) and a message, never a crash.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fedc/tensor.h"
#include "test_util.h"

static char g_dir[512];

static void path_in_dir(char *out, size_t outlen, const char *name)
{
    snprintf(out, outlen, "%s/%s", g_dir, name);
}

static int write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(buf, 1, n, f) : 0;
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = len > 0 ? (size_t)len : 0;
    return buf;
}

static int has_bytes(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m)) return 1;
    return 0;
}

/* Writes a file made of an 8-byte little-endian header size `hsize`, the
 * JSON text, and `data`. */
static int write_st(const char *path, uint64_t hsize, const char *json, const void *data, size_t dlen)
{
    size_t jlen = strlen(json);
    unsigned char *buf = malloc(8 + jlen + dlen + 1);
    if (!buf) return -1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hsize >> (8 * i));
    memcpy(buf + 8, json, jlen);
    if (dlen) memcpy(buf + 8 + jlen, data, dlen);
    int rc = write_bytes(path, buf, 8 + jlen + dlen);
    free(buf);
    return rc;
}

/* A set that covers every dtype, a scalar and zero-size tensors, with
 * values NumPy can recompute (see the script below). */
static fedc_params *make_model(void)
{
    fedc_params *p = fedc_params_create();
    if (!p) return NULL;
    fedc_tensor *t;
    int rc = 0;
    const int64_t s34[2] = {3, 4}, s4[1] = {4}, s22[2] = {2, 2}, s7[1] = {7}, s5[1] = {5}, s23[2] = {2, 3},
                  s3[1] = {3}, s2[1] = {2}, s03[2] = {0, 3};
    rc |= fedc_params_add(p, "weights", FEDC_F32, 2, s34, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 12; i++) ((float *)t->data)[i] = (float)i * 0.25f - 1.0f;
    rc |= fedc_params_add(p, "bias", FEDC_F64, 1, s4, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 4; i++) ((double *)t->data)[i] = -(double)i / 3.0;
    rc |= fedc_params_add(p, "counts", FEDC_I64, 2, s22, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 4; i++) ((int64_t *)t->data)[i] = (int64_t)i * 1000000000000LL - 5;
    rc |= fedc_params_add(p, "bytes", FEDC_U8, 1, s7, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 7; i++) ((uint8_t *)t->data)[i] = (uint8_t)(i * 37 % 256);
    rc |= fedc_params_add(p, "signed", FEDC_I8, 1, s5, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 5; i++) ((int8_t *)t->data)[i] = (int8_t)(i * 50 - 100);
    rc |= fedc_params_add(p, "idx", FEDC_I32, 2, s23, NULL, &t, NULL, 0);
    for (int i = 0; !rc && i < 6; i++) ((int32_t *)t->data)[i] = (i - 3) * 100000;
    const uint16_t half[3] = {0x3c00, 0xc000, 0x3555}, bhalf[2] = {0x3f80, 0xc0a0};
    rc |= fedc_params_add(p, "half", FEDC_F16, 1, s3, half, NULL, NULL, 0);
    rc |= fedc_params_add(p, "bhalf", FEDC_BF16, 1, s2, bhalf, NULL, NULL, 0);
    const float sc = 2.5f;
    rc |= fedc_params_add(p, "scalar", FEDC_F32, 0, NULL, &sc, NULL, NULL, 0);
    rc |= fedc_params_add(p, "empty", FEDC_F32, 2, s03, NULL, NULL, NULL, 0);
    if (rc) {
        fedc_params_destroy(p);
        return NULL;
    }
    return p;
}

/* Checks that `got` has the tensors of `want` in the same order with the
 * same bytes. */
static void check_same_params(const fedc_params *want, const fedc_params *got, const char *what)
{
    CHECK(got && fedc_params_count(got) == fedc_params_count(want), "%s: %zu tensors, want %zu", what,
          fedc_params_count(got), fedc_params_count(want));
    if (!got) return;
    for (size_t i = 0; i < fedc_params_count(want) && i < fedc_params_count(got); i++) {
        const fedc_tensor *a = fedc_params_at(want, i), *b = fedc_params_at(got, i);
        int same =
            !strcmp(a->name, b->name) && a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes;
        for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
        CHECK(same, "%s: tensor %zu is '%s' %s, want '%s' %s", what, i, b->name, fedc_dtype_name(b->dtype),
              a->name, fedc_dtype_name(a->dtype));
        CHECK(same && !memcmp(a->data, b->data, a->nbytes), "%s: tensor '%s' bytes differ", what, a->name);
    }
}

static int count_tmp_files(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp")) n++;
    if (d) closedir(d);
    return n;
}

static void test_round_trip(void)
{
    char err[FEDC_ERRMSG_MAX], path[768];
    path_in_dir(path, sizeof path, "model.safetensors");
    fedc_params *p = make_model();
    CHECK(p != NULL, "make_model");
    if (!p) return;

    /* Bit patterns that a float conversion would change: a signalling NaN
     * payload, -0 and a denormal. */
    fedc_tensor *w = fedc_params_find(p, "weights");
    const uint32_t odd[3] = {0x7fa00001u, 0x80000000u, 0x00000001u};
    memcpy(w->data, odd, sizeof odd);

    const char *keys[2] = {"format", "round"}, *vals[2] = {"pt", "7"};
    CHECK_STATUS(fedc_params_save(p, path, keys, vals, 2, err, sizeof err), FEDC_OK, "save");
    CHECK(count_tmp_files() == 0, "no temporary file is left after saving");
    fedc_params *q = NULL;
    CHECK_STATUS(fedc_params_load(path, &q, err, sizeof err), FEDC_OK, "load");
    check_same_params(p, q, "round trip");
    fedc_params_destroy(q);

    /* The header: its size is a multiple of 8 (data 8-byte aligned), it is
     * JSON with the metadata, and each entry has dtype, shape, offsets. */
    size_t flen = 0;
    unsigned char *raw = read_bytes(path, &flen);
    CHECK(raw && flen >= 8, "read back %zu bytes", flen);
    if (raw && flen >= 8) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++) n |= (uint64_t)raw[i] << (8 * i);
        CHECK(n % 8 == 0 && n <= flen - 8, "header size %llu is padded to 8", (unsigned long long)n);
        CHECK(flen - 8 - n == fedc_params_nbytes(p), "data section holds %zu bytes, want %zu",
              (size_t)(flen - 8 - n), fedc_params_nbytes(p));
        cJSON *root = n <= flen - 8 ? cJSON_ParseWithLength((const char *)raw + 8, n) : NULL;
        CHECK(cJSON_IsObject(root), "header is a JSON object");
        cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
        cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "format");
        cJSON *rnd = cJSON_GetObjectItemCaseSensitive(meta, "round");
        CHECK(cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "pt") && cJSON_IsString(rnd) &&
                  !strcmp(rnd->valuestring, "7"),
              "__metadata__ holds format=pt and round=7");
        cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "bias");
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(bias, "dtype");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(bias, "data_offsets");
        CHECK(cJSON_IsString(dt) && !strcmp(dt->valuestring, "F64") && cJSON_GetArraySize(off) == 2 &&
                  cJSON_GetArrayItem(off, 0)->valuedouble == 48 &&
                  cJSON_GetArrayItem(off, 1)->valuedouble == 80,
              "bias is F64 at data_offsets [48, 80]");
        cJSON *scal = cJSON_GetObjectItemCaseSensitive(root, "scalar");
        cJSON *ssh = cJSON_GetObjectItemCaseSensitive(scal, "shape");
        CHECK(cJSON_IsArray(ssh) && cJSON_GetArraySize(ssh) == 0, "a scalar has shape []");
        cJSON_Delete(root);
    }
    free(raw);

    /* Saving without metadata writes no __metadata__; saving again
     * replaces the file. */
    ((float *)fedc_params_find(p, "scalar")->data)[0] = -8.0f;
    CHECK_STATUS(fedc_params_save(p, path, NULL, NULL, 0, err, sizeof err), FEDC_OK, "save again");
    raw = read_bytes(path, &flen);
    CHECK(raw && !has_bytes(raw, flen, "__metadata__"), "no metadata when none is given");
    free(raw);
    CHECK_STATUS(fedc_params_load(path, &q, err, sizeof err), FEDC_OK, "load again");
    check_same_params(p, q, "overwritten file");
    fedc_params_destroy(q);

    /* An empty set round-trips too. */
    fedc_params *e = fedc_params_create();
    char epath[768];
    path_in_dir(epath, sizeof epath, "empty.safetensors");
    CHECK_STATUS(fedc_params_save(e, epath, NULL, NULL, 0, err, sizeof err), FEDC_OK, "save empty");
    CHECK_STATUS(fedc_params_load(epath, &q, err, sizeof err), FEDC_OK, "load empty");
    CHECK(q && fedc_params_count(q) == 0, "empty set round trip");
    fedc_params_destroy(q);
    fedc_params_destroy(e);
    unlink(epath);

    /* A set too big for one buffer of stdio, with many tensors. */
    fedc_params *big = fedc_params_create();
    char name[32];
    for (int i = 0; i < 50; i++) {
        int64_t len = 1000 + i * 997;
        fedc_tensor *t;
        snprintf(name, sizeof name, "layers.%d.weight", i);
        if (fedc_params_add(big, name, FEDC_F32, 1, &len, NULL, &t, NULL, 0)) break;
        for (int64_t k = 0; k < len; k++)
            ((uint32_t *)t->data)[k] = (uint32_t)(k * 2654435761u + (uint64_t)i);
    }
    CHECK_STATUS(fedc_params_save(big, path, NULL, NULL, 0, err, sizeof err), FEDC_OK, "save big");
    CHECK_STATUS(fedc_params_load(path, &q, err, sizeof err), FEDC_OK, "load big");
    check_same_params(big, q, "50-tensor set");
    fedc_params_destroy(q);
    fedc_params_destroy(big);

    /* Saving into a directory that does not exist is an I/O error that
     * names the file. */
    char bad[800];
    snprintf(bad, sizeof bad, "%s/no/such/dir/m.safetensors", g_dir);
    err[0] = '\0';
    CHECK_STATUS(fedc_params_save(p, bad, NULL, NULL, 0, err, sizeof err), FEDC_ERR_IO,
                 "save into a missing directory");
    CHECK_CONTAINS(err, "m.safetensors", "save error names the file");
    fedc_params_destroy(p);
    unlink(path);
}

/* Tensors come back in data-offset order, whatever the JSON order. */
static void test_offset_order(void)
{
    char err[FEDC_ERRMSG_MAX], path[768];
    path_in_dir(path, sizeof path, "order.safetensors");
    const char *json = "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                       "\"__metadata__\":{\"k\":\"v\"},"
                       "\"a\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}";
    const int32_t data[2] = {-7, 0x3f800000};
    write_st(path, strlen(json), json, data, sizeof data);
    fedc_params *q = NULL;
    CHECK_STATUS(fedc_params_load(path, &q, err, sizeof err), FEDC_OK, "load JSON out of order");
    CHECK(q && fedc_params_count(q) == 2 && !strcmp(fedc_params_at(q, 0)->name, "a") &&
              !strcmp(fedc_params_at(q, 1)->name, "b"),
          "tensors in data-offset order");
    CHECK(q && *(int32_t *)fedc_params_at(q, 0)->data == -7 && *(float *)fedc_params_at(q, 1)->data == 1.0f,
          "values follow their offsets");
    fedc_params_destroy(q);
    unlink(path);
}

/* NumPy reads the file: the script parses the 8-byte size and the JSON by
 * hand and checks every array against values it computes itself. Exit 77
 * means NumPy is missing. */
static const char numpy_script[] =
    "import json, struct, sys\n"
    "try:\n"
    "    import numpy as np\n"
    "except ImportError:\n"
    "    sys.exit(77)\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "n = struct.unpack('<Q', raw[:8])[0]\n"
    "assert n % 8 == 0, 'header size %d is not a multiple of 8' % n\n"
    "hdr = json.loads(raw[8:8 + n].decode('utf-8'))\n"
    "meta = hdr.pop('__metadata__')\n"
    "assert meta == {'format': 'pt', 'round': '7'}, meta\n"
    "data = raw[8 + n:]\n"
    "kinds = {'F32': '<f4', 'F64': '<f8', 'I64': '<i8', 'I32': '<i4', 'U8': 'u1', 'I8': 'i1',\n"
    "         'F16': '<f2', 'BF16': '<u2'}\n"
    "got = {}\n"
    "for name, e in hdr.items():\n"
    "    b, end = e['data_offsets']\n"
    "    got[name] = (e['dtype'], np.frombuffer(data[b:end], "
    "dtype=kinds[e['dtype']]).reshape(e['shape']))\n"
    "want = {\n"
    "    'weights': ('F32', (np.arange(12, dtype=np.float32) * np.float32(0.25) - "
    "np.float32(1)).reshape(3, 4)),\n"
    "    'bias': ('F64', np.array([-i / 3.0 for i in range(4)])),\n"
    "    'counts': ('I64', np.array([i * 10**12 - 5 for i in range(4)], dtype=np.int64).reshape(2, "
    "2)),\n"
    "    'bytes': ('U8', np.array([i * 37 % 256 for i in range(7)], dtype=np.uint8)),\n"
    "    'signed': ('I8', np.array([i * 50 - 100 for i in range(5)], dtype=np.int8)),\n"
    "    'idx': ('I32', np.array([(i - 3) * 100000 for i in range(6)], dtype=np.int32).reshape(2, "
    "3)),\n"
    "    'half': ('F16', np.array([1.0, -2.0, 0.333251953125], dtype=np.float16)),\n"
    "    'bhalf': ('BF16', np.array([0x3f80, 0xc0a0], dtype=np.uint16)),\n"
    "    'scalar': ('F32', np.array(2.5, dtype=np.float32)),\n"
    "    'empty': ('F32', np.zeros((0, 3), dtype=np.float32)),\n"
    "}\n"
    "assert sorted(got) == sorted(want), (sorted(got), sorted(want))\n"
    "for name, (dtype, value) in want.items():\n"
    "    gd, a = got[name]\n"
    "    assert gd == dtype, (name, gd, dtype)\n"
    "    assert a.shape == value.shape, (name, a.shape, value.shape)\n"
    "    assert a.dtype == value.dtype or dtype == 'BF16', (name, a.dtype, value.dtype)\n"
    "    assert np.array_equal(a, value), (name, a, value)\n"
    "print('numpy read %d tensors' % len(got))\n";

static void test_numpy_reads(void)
{
    const char *py = "/usr/bin/python3";
    if (access(py, X_OK) != 0) {
        TEST_NOTE("skipping the NumPy check: %s is not installed", py);
        return;
    }
    char err[FEDC_ERRMSG_MAX], path[768];
    path_in_dir(path, sizeof path, "numpy.safetensors");
    fedc_params *p = make_model();
    const char *keys[2] = {"format", "round"}, *vals[2] = {"pt", "7"};
    int rc = p ? fedc_params_save(p, path, keys, vals, 2, err, sizeof err) : FEDC_ERR_NOMEM;
    fedc_params_destroy(p);
    CHECK_STATUS(rc, FEDC_OK, "save for NumPy");
    if (rc) return;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl(py, "python3", "-c", numpy_script, path, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "ran %s", py);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        TEST_NOTE("skipping the NumPy check: numpy is not installed for %s", py);
    else
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "NumPy reads the file fedc wrote (python exit status %d)",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    unlink(path);
}

/* Loads `path` and expects `want` with a message; *out stays NULL. */
static void expect_load_fails(const char *path, int want, const char *what)
{
    char err[FEDC_ERRMSG_MAX];
    fedc_params *q = (fedc_params *)&err; /* must be reset to NULL */
    err[0] = '\0';
    int rc = fedc_params_load(path, &q, err, sizeof err);
    CHECK(rc == want, "%s: got %d (%s), want %d (%s); message '%s'", what, rc, fedc_strerror(rc), want,
          fedc_strerror(want), err);
    CHECK(q == NULL, "%s: *out is NULL on failure", what);
    CHECK(err[0] != '\0', "%s: there is a message", what);
    /* tensor.h: "a message naming the file and the problem". */
    CHECK(strstr(err, path) != NULL, "%s: the message names the file: '%s'", what, err);
    if (rc == FEDC_OK) fedc_params_destroy(q);
    if (getenv("FEDC_TEST_VERBOSE")) TEST_NOTE("%s: %s", what, err);
}

/* A header made of `json` padded to a multiple of 8, then `dlen` bytes of
 * data: a well-formed container around whatever JSON the case needs. */
static void write_case(const char *path, const char *json, size_t dlen)
{
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7;
    char *j = malloc(padded + 1);
    unsigned char *d = calloc(dlen ? dlen : 1, 1);
    if (!j || !d) {
        free(j);
        free(d);
        return;
    }
    memcpy(j, json, jlen);
    memset(j + jlen, ' ', padded - jlen);
    j[padded] = '\0';
    write_st(path, padded, j, d, dlen);
    free(j);
    free(d);
}

static void test_corrupt(void)
{
    char path[768];
    path_in_dir(path, sizeof path, "corrupt.safetensors");

    write_bytes(path, "", 0);
    expect_load_fails(path, FEDC_ERR_FORMAT, "empty file");
    write_bytes(path, "\x10\0\0\0\0\0\0", 7);
    expect_load_fails(path, FEDC_ERR_FORMAT, "7-byte file");

    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    const float two[2] = {1, 2};
    write_st(path, strlen(ok) + 100, ok, two, sizeof two);
    expect_load_fails(path, FEDC_ERR_FORMAT, "header size larger than the file");
    write_st(path, UINT64_MAX, ok, two, sizeof two);
    expect_load_fails(path, FEDC_ERR_FORMAT, "header size 2^64-1");
    write_st(path, (uint64_t)1 << 63, ok, two, sizeof two);
    expect_load_fails(path, FEDC_ERR_FORMAT, "header size 2^63");
    write_st(path, 0, ok, two, sizeof two);
    expect_load_fails(path, FEDC_ERR_FORMAT, "header size 0");
    write_st(path, 1, "{", NULL, 0);
    expect_load_fails(path, FEDC_ERR_FORMAT, "header size 1");
    write_st(path, strlen(ok), ok, two, 4);
    expect_load_fails(path, FEDC_ERR_FORMAT, "truncated data (4 of 8 bytes)");
    write_st(path, strlen(ok), ok, two, 0);
    expect_load_fails(path, FEDC_ERR_FORMAT, "no data at all");
    const float three[3] = {1, 2, 3};
    write_st(path, strlen(ok), ok, three, sizeof three);
    expect_load_fails(path, FEDC_ERR_FORMAT, "4 bytes of trailing data");

    static const struct {
        const char *json;
        size_t dlen;
        const char *what;
    } cases[] = {
        {"{\"a\": {\"dtype\": \"F32\", ", 8, "bad JSON (cut short)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}", 8, "bad JSON (trailing comma)"},
        {"not json at all", 8, "bad JSON (text)"},
        {"[1, 2, 3]", 8, "JSON array instead of an object"},
        {"\"a string\"", 8, "JSON string instead of an object"},
        {"{\"a\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype F128"},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "lower-case dtype"},
        {"{\"a\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "unsupported dtype BOOL"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing dtype"},
        {"{\"a\":{\"dtype\":1,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "numeric dtype"},
        {"{\"a\":5}", 8, "entry that is not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "shape not an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "negative dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10, "fractional dimension"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "string dimension"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "9 dimensions"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[9007199254740992,9007199254740992],\"data_offsets\":["
         "0,0]}}",
         0, "dimensions whose product overflows"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
         "dimensions whose product is 2^64"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "one data offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, "three data offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":\"0,8\"}}", 8, "data_offsets a string"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "reversed data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "negative data offset"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
         "offsets shorter than the shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12,
         "offsets longer than the shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
         "data that does not start at 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlapping tensors"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, "two tensors on the same bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
         20, "a gap between tensors"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         12, "second tensor truncated"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9007199254740993]}}", 8,
         "offset above 2^53"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_case(path, cases[i].json, cases[i].dlen);
        expect_load_fails(path, FEDC_ERR_FORMAT, cases[i].what);
    }

    char missing[800];
    snprintf(missing, sizeof missing, "%s/does-not-exist.safetensors", g_dir);
    expect_load_fails(missing, FEDC_ERR_NOTFOUND, "missing file");
    unlink(path);
}

/* tensor.h: "anything malformed FEDC_ERR_FORMAT ... with a message naming
 * the file". Tensor names the format allows in JSON but a parameter set
 * cannot hold are malformed files too. */
static void test_corrupt_names(void)
{
    char path[768];
    path_in_dir(path, sizeof path, "names.safetensors");
    write_case(path,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8);
    expect_load_fails(path, FEDC_ERR_FORMAT, "duplicate tensor name");
    write_case(path, "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_load_fails(path, FEDC_ERR_FORMAT, "empty tensor name");
    char json[600], name[301];
    memset(name, 'x', 300);
    name[300] = '\0';
    snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    write_case(path, json, 4);
    expect_load_fails(path, FEDC_ERR_FORMAT, "300-byte tensor name");
    unlink(path);
}

/* Seeded random mutations of a valid file never crash the loader; any
 * failure comes with a message and no set. */
static void test_mutations(void)
{
    char err[FEDC_ERRMSG_MAX], path[768], mpath[768];
    path_in_dir(path, sizeof path, "valid.safetensors");
    path_in_dir(mpath, sizeof mpath, "mutated.safetensors");
    fedc_params *p = make_model();
    if (!p || fedc_params_save(p, path, NULL, NULL, 0, err, sizeof err)) {
        CHECK(0, "could not write the file to mutate");
        fedc_params_destroy(p);
        return;
    }
    fedc_params_destroy(p);
    size_t n = 0;
    unsigned char *orig = read_bytes(path, &n);
    unsigned char *buf = malloc(n + 64);
    if (!orig || !buf) {
        free(orig);
        free(buf);
        return;
    }
    fedc_rng r;
    fedc_rng_seed(&r, 20240601);
    int ok = 0, refused = 0, consistent = 1;
    for (int it = 0; it < 600; it++) {
        memcpy(buf, orig, n);
        size_t len = n;
        int flips = 1 + (int)fedc_rng_below(&r, 4);
        for (int k = 0; k < flips; k++) {
            size_t pos = (size_t)fedc_rng_below(&r, it % 3 ? 8 + 400 : len);
            if (pos >= len) pos = len - 1;
            switch (fedc_rng_below(&r, 3)) {
            case 0: buf[pos] ^= (unsigned char)(1u << fedc_rng_below(&r, 8)); break;
            case 1: buf[pos] = (unsigned char)fedc_rng_below(&r, 256); break;
            default: buf[pos] = "{}[]\",:0123456789 -.eE"[fedc_rng_below(&r, 22)]; break;
            }
        }
        if (it % 7 == 0) len = (size_t)fedc_rng_below(&r, len + 1);
        write_bytes(mpath, buf, len);
        fedc_params *q = (fedc_params *)&r;
        err[0] = '\0';
        int rc = fedc_params_load(mpath, &q, err, sizeof err);
        if (rc == FEDC_OK) {
            ok++;
            if (!q) consistent = 0;
            fedc_params_destroy(q);
        } else {
            refused++;
            if (q != NULL || err[0] == '\0') consistent = 0;
        }
    }
    CHECK(consistent, "mutated files: %d loaded, %d refused, each failure with a message", ok, refused);
    CHECK(refused > 0, "some mutated files are refused (%d)", refused);
    free(orig);
    free(buf);
    unlink(path);
    unlink(mpath);
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/fedc-st-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        printf("cannot create a temporary directory: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    if (test_selected(argc, argv, "main")) {
        test_round_trip();
        test_offset_order();
        test_numpy_reads();
        test_corrupt();
        test_mutations();
    }
    if (test_selected(argc, argv, "names")) test_corrupt_names();
    rmdir(g_dir);
    return test_summary();
}
