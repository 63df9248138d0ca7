/* fuzz/fuzz_common.h: the input as a file (the readers under test take paths). */
#ifndef FLASH_FUZZ_COMMON_H
#define FLASH_FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A per-process file in /dev/shm (memory), rewritten for each input; SUFFIX keeps a name
   ending the reader may look at (".gz"). */
static const char *fuzz_file(const uint8_t *data, size_t n, const char *suffix) {
    static char path[128];
    snprintf(path, sizeof path, "/dev/shm/flash-fuzz-%d%s", (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    if (fclose(f)) abort();
    return path;
}
#endif
