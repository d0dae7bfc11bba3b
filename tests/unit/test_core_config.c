/*
 * Config and metrics maps: set and get of every kind, replacing a key (and
 * its kind), the conversion rules between f64 and i64, the *_or getters,
 * iteration in insertion order, merge and clear.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fedc/config.h"
#include "test_util.h"

static void test_set_get(void)
{
    fedc_config *c = fedc_config_create();
    CHECK(c != NULL, "create");
    if (!c) return;
    CHECK(fedc_config_count(c) == 0, "a new map is empty");

    CHECK_STATUS(fedc_config_set_f64(c, "lr", 0.05), FEDC_OK, "set_f64");
    CHECK_STATUS(fedc_config_set_i64(c, "epochs", -3), FEDC_OK, "set_i64");
    CHECK_STATUS(fedc_config_set_str(c, "model", "mlp"), FEDC_OK, "set_str");
    CHECK_STATUS(fedc_config_set_bool(c, "shuffle", 7), FEDC_OK, "set_bool");
    CHECK(fedc_config_count(c) == 4, "four entries, got %zu", fedc_config_count(c));

    double f = 0;
    int64_t i = 0;
    const char *s = NULL;
    int b = -1;
    CHECK_STATUS(fedc_config_get_f64(c, "lr", &f), FEDC_OK, "get_f64");
    CHECK(f == 0.05, "lr = %g", f);
    CHECK_STATUS(fedc_config_get_i64(c, "epochs", &i), FEDC_OK, "get_i64");
    CHECK(i == -3, "epochs = %lld", (long long)i);
    CHECK_STATUS(fedc_config_get_str(c, "model", &s), FEDC_OK, "get_str");
    CHECK(s && !strcmp(s, "mlp"), "model = '%s'", s ? s : "(null)");
    CHECK_STATUS(fedc_config_get_bool(c, "shuffle", &b), FEDC_OK, "get_bool");
    CHECK(b == 1, "a nonzero bool reads back as 1, got %d", b);

    /* Missing keys. */
    CHECK_STATUS(fedc_config_get_f64(c, "nope", &f), FEDC_ERR_NOTFOUND, "get_f64 of a missing key");
    CHECK_STATUS(fedc_config_get_i64(c, "nope", &i), FEDC_ERR_NOTFOUND, "get_i64 of a missing key");
    CHECK_STATUS(fedc_config_get_str(c, "nope", &s), FEDC_ERR_NOTFOUND, "get_str of a missing key");
    CHECK_STATUS(fedc_config_get_bool(c, "nope", &b), FEDC_ERR_NOTFOUND, "get_bool of a missing key");
    CHECK_STATUS(fedc_config_get_f64(c, "LR", &f), FEDC_ERR_NOTFOUND, "keys are case-sensitive");

    /* Empty and NULL keys are refused and add nothing. */
    CHECK_STATUS(fedc_config_set_f64(c, "", 1.0), FEDC_ERR_INVALID, "set_f64 with an empty key");
    CHECK_STATUS(fedc_config_set_i64(c, NULL, 1), FEDC_ERR_INVALID, "set_i64 with a NULL key");
    CHECK_STATUS(fedc_config_set_str(c, "", "x"), FEDC_ERR_INVALID, "set_str with an empty key");
    CHECK_STATUS(fedc_config_set_bool(c, NULL, 1), FEDC_ERR_INVALID, "set_bool with a NULL key");
    CHECK_STATUS(fedc_config_set_bool(NULL, "k", 1), FEDC_ERR_INVALID, "set on a NULL map");
    CHECK(fedc_config_count(c) == 4, "refused keys add nothing (count %zu)", fedc_config_count(c));

    /* A NULL string value is stored as "". Key and value are copied. */
    char key[8] = "name", val[8] = "abc";
    CHECK_STATUS(fedc_config_set_str(c, key, val), FEDC_OK, "set_str from a local buffer");
    strcpy(key, "zzzz");
    strcpy(val, "xyz");
    CHECK(fedc_config_get_str(c, "name", &s) == FEDC_OK && !strcmp(s, "abc"), "key and value were copied");
    CHECK_STATUS(fedc_config_set_str(c, "empty", NULL), FEDC_OK, "set_str(NULL)");
    CHECK(fedc_config_get_str(c, "empty", &s) == FEDC_OK && s && s[0] == '\0',
          "a NULL string is stored as \"\"");
    fedc_config_destroy(c);
    fedc_config_destroy(NULL);
}

static void test_replace(void)
{
    fedc_config *c = fedc_config_create();
    if (!c) return;
    fedc_config_set_i64(c, "a", 1);
    fedc_config_set_str(c, "b", "first");
    fedc_config_set_f64(c, "c", 3.5);

    /* Replacing keeps the position and count; the kind follows the value. */
    CHECK_STATUS(fedc_config_set_str(c, "a", "now a string"), FEDC_OK, "replace i64 with str");
    CHECK_STATUS(fedc_config_set_str(c, "b", "second"), FEDC_OK, "replace str with str");
    CHECK_STATUS(fedc_config_set_bool(c, "c", 0), FEDC_OK, "replace f64 with bool");
    CHECK(fedc_config_count(c) == 3, "replacing adds no entry (count %zu)", fedc_config_count(c));
    const char *s = NULL;
    int64_t i = 0;
    int b = -1;
    CHECK_STATUS(fedc_config_get_i64(c, "a", &i), FEDC_ERR_INVALID, "old kind no longer reads");
    CHECK(fedc_config_get_str(c, "a", &s) == FEDC_OK && !strcmp(s, "now a string"), "new str");
    CHECK(fedc_config_get_str(c, "b", &s) == FEDC_OK && !strcmp(s, "second"), "replaced str");
    CHECK(fedc_config_get_bool(c, "c", &b) == FEDC_OK && b == 0, "replaced with bool false");
    CHECK(!strcmp(fedc_config_key_at(c, 0), "a") && !strcmp(fedc_config_key_at(c, 1), "b") &&
              !strcmp(fedc_config_key_at(c, 2), "c"),
          "replacing keeps insertion order");
    CHECK(fedc_config_kind_at(c, 0) == FEDC_VALUE_STR && fedc_config_kind_at(c, 2) == FEDC_VALUE_BOOL,
          "kind_at follows the replacement");

    /* A string replaced by a number releases the old string (ASan checks
     * the leak) and no longer reads as a string. */
    CHECK_STATUS(fedc_config_set_i64(c, "b", 9), FEDC_OK, "replace str with i64");
    CHECK_STATUS(fedc_config_get_str(c, "b", &s), FEDC_ERR_INVALID, "str of an i64");
    CHECK(fedc_config_get_i64(c, "b", &i) == FEDC_OK && i == 9, "b = 9");
    fedc_config_destroy(c);
}

static void test_conversions(void)
{
    fedc_config *c = fedc_config_create();
    if (!c) return;
    double f = 0;
    int64_t i = 0;
    int b = 0;
    const char *s = NULL;

    /* f64 accepts an integer. */
    fedc_config_set_i64(c, "n", 42);
    CHECK(fedc_config_get_f64(c, "n", &f) == FEDC_OK && f == 42.0, "f64 of i64 42 = %g", f);
    fedc_config_set_i64(c, "big", INT64_MAX);
    CHECK(fedc_config_get_f64(c, "big", &f) == FEDC_OK && f == 9223372036854775807.0,
          "f64 of INT64_MAX = %.17g", f);

    /* i64 accepts a double that is an exact integer, and nothing else. */
    struct {
        double v;
        int ok;
        int64_t want;
    } cases[] = {
        {3.0, 1, 3}, {-7.0, 1, -7},    {0.0, 1, 0},       {-0.0, 1, 0}, {1e15, 1, 1000000000000000LL},
        {2.5, 0, 0}, {-0.5, 0, 0},     {1e-300, 0, 0},    {1e19, 0, 0}, {-1e19, 0, 0},
        {NAN, 0, 0}, {INFINITY, 0, 0}, {-INFINITY, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fedc_config_set_f64(c, "x", cases[k].v);
        i = 12345;
        int rc = fedc_config_get_i64(c, "x", &i);
        if (cases[k].ok)
            CHECK(rc == FEDC_OK && i == cases[k].want, "i64 of f64 %g: rc %d value %lld", cases[k].v, rc,
                  (long long)i);
        else
            CHECK(rc == FEDC_ERR_INVALID && i == 12345,
                  "i64 of f64 %g is refused and leaves the output alone (rc %d, value %lld)", cases[k].v, rc,
                  (long long)i);
    }

    /* Strings and bools convert to nothing, and nothing converts to them. */
    fedc_config_set_str(c, "s", "1");
    fedc_config_set_bool(c, "t", 1);
    CHECK_STATUS(fedc_config_get_f64(c, "s", &f), FEDC_ERR_INVALID, "f64 of a string");
    CHECK_STATUS(fedc_config_get_i64(c, "s", &i), FEDC_ERR_INVALID, "i64 of a string");
    CHECK_STATUS(fedc_config_get_bool(c, "s", &b), FEDC_ERR_INVALID, "bool of a string");
    CHECK_STATUS(fedc_config_get_f64(c, "t", &f), FEDC_ERR_INVALID, "f64 of a bool");
    CHECK_STATUS(fedc_config_get_i64(c, "t", &i), FEDC_ERR_INVALID, "i64 of a bool");
    CHECK_STATUS(fedc_config_get_str(c, "t", &s), FEDC_ERR_INVALID, "str of a bool");
    CHECK_STATUS(fedc_config_get_bool(c, "n", &b), FEDC_ERR_INVALID, "bool of an i64");
    CHECK_STATUS(fedc_config_get_str(c, "n", &s), FEDC_ERR_INVALID, "str of an i64");

    /* The *_or getters fall back on absence and on a kind that does not
     * convert, and convert like the getters otherwise. */
    fedc_config_set_f64(c, "half", 0.5);
    fedc_config_set_f64(c, "two", 2.0);
    CHECK(fedc_config_f64_or(c, "missing", 1.25) == 1.25, "f64_or of a missing key");
    CHECK(fedc_config_f64_or(c, "s", 1.25) == 1.25, "f64_or of a string");
    CHECK(fedc_config_f64_or(c, "n", 1.25) == 42.0, "f64_or of an i64");
    CHECK(fedc_config_i64_or(c, "missing", -1) == -1, "i64_or of a missing key");
    CHECK(fedc_config_i64_or(c, "half", -1) == -1, "i64_or of 0.5");
    CHECK(fedc_config_i64_or(c, "two", -1) == 2, "i64_or of 2.0");
    CHECK(fedc_config_i64_or(c, "t", -1) == -1, "i64_or of a bool");
    CHECK(fedc_config_f64_or(NULL, "x", 3.0) == 3.0, "f64_or on a NULL map");
    fedc_config_destroy(c);
}

static void test_iteration_merge_clear(void)
{
    fedc_config *a = fedc_config_create(), *b = fedc_config_create();
    if (!a || !b) {
        fedc_config_destroy(a);
        fedc_config_destroy(b);
        return;
    }
    /* More entries than the first allocation, to exercise growth. */
    char key[32];
    for (int k = 0; k < 20; k++) {
        snprintf(key, sizeof key, "k%02d", k);
        fedc_config_set_i64(a, key, k * 10);
    }
    fedc_config_set_str(a, "s", "text");
    fedc_config_set_bool(a, "flag", 1);
    fedc_config_set_f64(a, "f", -1.5);
    CHECK(fedc_config_count(a) == 23, "23 entries, got %zu", fedc_config_count(a));
    int order = 1;
    for (int k = 0; k < 20; k++) {
        snprintf(key, sizeof key, "k%02d", k);
        double f = 0;
        int64_t n = -1;
        const char *s = NULL;
        int bo = 0;
        fedc_config_value_at(a, (size_t)k, &f, &n, &s, &bo);
        if (strcmp(fedc_config_key_at(a, (size_t)k), key) ||
            fedc_config_kind_at(a, (size_t)k) != FEDC_VALUE_I64 || n != k * 10)
            order = 0;
    }
    CHECK(order, "key_at/kind_at/value_at walk the entries in insertion order");
    {
        double f = 0;
        int64_t n = 0;
        const char *s = NULL;
        int bo = 0;
        fedc_config_value_at(a, 20, &f, &n, &s, &bo);
        CHECK(fedc_config_kind_at(a, 20) == FEDC_VALUE_STR && s && !strcmp(s, "text"), "entry 20");
        fedc_config_value_at(a, 21, &f, &n, &s, &bo);
        CHECK(fedc_config_kind_at(a, 21) == FEDC_VALUE_BOOL && bo == 1, "entry 21");
        fedc_config_value_at(a, 22, &f, &n, &s, &bo);
        CHECK(fedc_config_kind_at(a, 22) == FEDC_VALUE_F64 && f == -1.5, "entry 22");
        /* NULL out-parameters are allowed. */
        fedc_config_value_at(a, 22, NULL, NULL, NULL, NULL);
        /* Out of range: NULL key, kind 0, outputs untouched. */
        f = 7;
        fedc_config_value_at(a, 23, &f, &n, &s, &bo);
        CHECK(fedc_config_key_at(a, 23) == NULL && (int)fedc_config_kind_at(a, 23) == 0 && f == 7,
              "index 23 is out of range");
        CHECK(fedc_config_key_at(NULL, 0) == NULL && fedc_config_count(NULL) == 0, "a NULL map is empty");
    }

    /* Merge: equal keys take src's value and kind in place, new keys are
     * appended in src's order. */
    fedc_config_set_str(b, "k05", "five");
    fedc_config_set_f64(b, "new1", 0.25);
    fedc_config_set_bool(b, "f", 0);
    fedc_config_set_i64(b, "new2", -2);
    CHECK_STATUS(fedc_config_merge(a, b), FEDC_OK, "merge");
    CHECK(fedc_config_count(a) == 25, "merge adds two keys (count %zu)", fedc_config_count(a));
    const char *s = NULL;
    int bo = 1;
    double f = 0;
    int64_t n = 0;
    CHECK(fedc_config_get_str(a, "k05", &s) == FEDC_OK && !strcmp(s, "five") &&
              !strcmp(fedc_config_key_at(a, 5), "k05"),
          "merged k05 replaced in place");
    CHECK(fedc_config_get_bool(a, "f", &bo) == FEDC_OK && bo == 0, "merged f is now bool false");
    CHECK(!strcmp(fedc_config_key_at(a, 23), "new1") && !strcmp(fedc_config_key_at(a, 24), "new2"),
          "new keys appended in src order");
    CHECK(fedc_config_get_f64(a, "new1", &f) == FEDC_OK && f == 0.25, "new1");
    CHECK(fedc_config_get_i64(a, "new2", &n) == FEDC_OK && n == -2, "new2");
    CHECK(fedc_config_count(b) == 4, "merge leaves src alone");
    CHECK_STATUS(fedc_config_merge(a, NULL), FEDC_OK, "merging NULL is a no-op");
    fedc_config *empty = fedc_config_create();
    CHECK_STATUS(fedc_config_merge(empty, a), FEDC_OK, "merge into an empty map");
    CHECK(fedc_config_count(empty) == 25, "a merged copy has every entry");
    int same = 1;
    for (size_t k = 0; k < 25; k++)
        if (strcmp(fedc_config_key_at(empty, k), fedc_config_key_at(a, k)) ||
            fedc_config_kind_at(empty, k) != fedc_config_kind_at(a, k))
            same = 0;
    CHECK(same, "a merged copy keeps order and kinds");
    fedc_config_destroy(empty);

    /* Clear empties the map, which stays usable. */
    fedc_config_clear(a);
    CHECK(fedc_config_count(a) == 0, "clear empties the map");
    CHECK_STATUS(fedc_config_get_str(a, "s", &s), FEDC_ERR_NOTFOUND, "cleared keys are gone");
    CHECK_STATUS(fedc_config_set_i64(a, "again", 1), FEDC_OK, "set after clear");
    CHECK(fedc_config_count(a) == 1 && !strcmp(fedc_config_key_at(a, 0), "again"), "reused map");
    fedc_config_clear(NULL);
    fedc_config_destroy(a);
    fedc_config_destroy(b);
}

int main(void)
{
    test_set_get();
    test_replace();
    test_conversions();
    test_iteration_merge_clear();
    return test_summary();
}
