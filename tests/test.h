/* tests/test.h: a tiny test harness shared by every test program.
 *
 * A test is a function `static void test_x(void)` that calls CHECK(...); RUN(test_x)
 * runs it and prints one line "ok   name" or "FAIL name". TEST_MAIN_END prints
 * "RESULT passed=N failed=M" (read by tests/run.sh, which prints the suite's final
 * "N passed, N failed") and returns non-zero when anything failed. */
#ifndef FLASH_TEST_H
#define FLASH_TEST_H
#include <stdio.h>
#include <math.h>

static int test_passed_, test_failed_, test_case_failed_;

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (!(cond)) {                                                              \
            test_case_failed_ = 1;                                                  \
            fprintf(stderr, "  check failed %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
        }                                                                           \
    } while (0)

#define RUN(fn)                                                                     \
    do {                                                                            \
        test_case_failed_ = 0;                                                      \
        fn();                                                                       \
        if (test_case_failed_) { test_failed_++; printf("FAIL %s\n", #fn); }        \
        else { test_passed_++; printf("ok   %s\n", #fn); }                          \
        fflush(stdout);                                                             \
    } while (0)

#define TEST_MAIN_END()                                                             \
    do {                                                                            \
        printf("RESULT passed=%d failed=%d\n", test_passed_, test_failed_);         \
        return test_failed_ ? 1 : 0;                                                \
    } while (0)

#endif
