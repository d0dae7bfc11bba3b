/*
 * Status codes: every code has its own description, unknown codes have a
 * fallback, and fedc_set_error formats into a caller's buffer (which may be
 * NULL or small) and hands the status back.
 */
#include <string.h>

#include "fedc/core.h"
#include "test_util.h"

static void test_strerror(void)
{
    /* The values are ABI: check a few by number, not by name. */
    CHECK(FEDC_OK == 0 && FEDC_ERR_NOMEM == 1 && FEDC_ERR_FORMAT == 4 && FEDC_ERR_CLOSED == 11 &&
              FEDC_ERR_NOTFOUND == 14 && FEDC_ERR_NOTREACHED == 19 && FEDC_ERR_DEVICE == 20,
          "status codes keep their numbers");

    const char *seen[FEDC_ERR_DEVICE + 1];
    for (int s = FEDC_OK; s <= FEDC_ERR_DEVICE; s++) {
        const char *d = fedc_strerror(s);
        CHECK(d != NULL && d[0] != '\0', "fedc_strerror(%d) is a non-empty string", s);
        CHECK(d && strcmp(d, "unknown error") != 0, "fedc_strerror(%d) = '%s' is specific", s,
              d ? d : "(null)");
        seen[s] = d ? d : "";
        for (int t = 0; t < s; t++)
            CHECK(strcmp(seen[t], seen[s]) != 0, "codes %d and %d share the description '%s'", t, s, seen[s]);
    }
    CHECK(!strcmp(fedc_strerror(FEDC_OK), "success"), "FEDC_OK reads 'success', got '%s'",
          fedc_strerror(FEDC_OK));
    CHECK(!strcmp(fedc_strerror(FEDC_ERR_CLOSED), "connection closed"),
          "FEDC_ERR_CLOSED reads 'connection closed', got '%s'", fedc_strerror(FEDC_ERR_CLOSED));

    const int unknown[] = {-1, FEDC_ERR_DEVICE + 1, 1000, -2147483647 - 1, 2147483647};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *d = fedc_strerror(unknown[i]);
        CHECK(d && !strcmp(d, "unknown error"), "fedc_strerror(%d) = '%s', want 'unknown error'", unknown[i],
              d ? d : "(null)");
    }
}

static void test_set_error(void)
{
    char buf[64];
    memset(buf, 'x', sizeof buf);
    int rc = fedc_set_error(buf, sizeof buf, FEDC_ERR_IO, "cannot open '%s': %d", "model.st", 2);
    CHECK_STATUS(rc, FEDC_ERR_IO, "fedc_set_error returns its status");
    CHECK(!strcmp(buf, "cannot open 'model.st': 2"), "formatted message, got '%s'", buf);

    CHECK_STATUS(fedc_set_error(NULL, 0, FEDC_ERR_FORMAT, "ignored %d", 1), FEDC_ERR_FORMAT, "NULL buffer");
    CHECK_STATUS(fedc_set_error(NULL, 100, FEDC_ERR_RANGE, "ignored"), FEDC_ERR_RANGE,
                 "NULL buffer with a length");

    /* A zero length leaves the buffer untouched; a short one is truncated
     * and still NUL-terminated. */
    memset(buf, 'x', sizeof buf);
    fedc_set_error(buf, 0, FEDC_ERR_IO, "hello");
    CHECK(buf[0] == 'x', "a zero-length buffer is not written");
    char small[8];
    memset(small, 'x', sizeof small);
    fedc_set_error(small, sizeof small, FEDC_ERR_IO, "a much longer message than fits");
    CHECK(small[7] == '\0' && !strcmp(small, "a much "), "truncated to 7 chars + NUL, got '%.8s'", small);
}

int main(void)
{
    test_strerror();
    test_set_error();
    return test_summary();
}
