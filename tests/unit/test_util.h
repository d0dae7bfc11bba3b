/*
 * Assertion macros shared by the unit tests.
 *
 * CHECK(cond, fmt, ...) counts a pass or a failure; a failure prints
 * "file:line: FAIL: message" so the line to look at is in the CTest log.
 * CHECK_STATUS compares two fedc status codes and prints both names.
 * A test's main() ends with `return test_summary();`, which prints
 * "N passed, M failed" and turns the count into the exit status (a run in
 * which no check ran fails too).
 *
 * A program may split its cases into parts that CTest runs as separate
 * entries: the entry passes the part's name as its argument, and
 * test_selected(argc, argv, "name") says whether a part runs. Without an
 * argument the part called "main" runs.
 *
 * The counters are plain ints: call CHECK from the main thread only (other
 * threads hand their results back to it).
 */
#ifndef FEDC_TEST_UTIL_H
#define FEDC_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedc/core.h"

static int test_passed_count;
static int test_failed_count;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            test_passed_count++;                                                                             \
        } else {                                                                                             \
            test_failed_count++;                                                                             \
            printf("%s:%d: FAIL: ", __FILE__, __LINE__);                                                     \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
            fflush(stdout);                                                                                  \
        }                                                                                                    \
    } while (0)

/* Checks that a call returned the status `want`; `what` names the call. */
#define CHECK_STATUS(got, want, what)                                                                        \
    do {                                                                                                     \
        int check_got_ = (got), check_want_ = (want);                                                        \
        CHECK(check_got_ == check_want_, "%s: got %d (%s), want %d (%s)", (what), check_got_,                \
              fedc_strerror(check_got_), check_want_, fedc_strerror(check_want_));                           \
    } while (0)

/* Checks that `hay` (an error message) contains `needle`. */
#define CHECK_CONTAINS(hay, needle, what)                                                                    \
    do {                                                                                                     \
        const char *check_hay_ = (hay), *check_needle_ = (needle);                                           \
        CHECK(check_hay_ &&strstr(check_hay_, check_needle_) != NULL,                                        \
              "%s: message '%s' does not contain '%s'", (what), check_hay_ ? check_hay_ : "(null)",          \
              check_needle_);                                                                                \
    } while (0)

/* Prints a progress note that is not an assertion (a skipped sub-check). */
#define TEST_NOTE(...)                                                                                       \
    do {                                                                                                     \
        printf("note: ");                                                                                    \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        fflush(stdout);                                                                                      \
    } while (0)

static inline int test_selected(int argc, char **argv, const char *part)
{
    return strcmp(argc > 1 ? argv[1] : "main", part) == 0;
}

static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);
    if (test_passed_count + test_failed_count == 0) printf("no check ran\n");
    fflush(stdout);
    return (test_failed_count || test_passed_count == 0) ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
