/* trainer/runtime.c: the clock and the fatal exit. */
#include "runtime.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void die(const char *fmt, const char *msg) {
    fprintf(stderr, fmt, msg);
    fputc('\n', stderr);
    exit(1);
}
