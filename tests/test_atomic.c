/* tests/test_atomic.c: the atomic file writer (formats/atomic.c): a commit replaces the file
 * whole and leaves no temporary behind; an abort leaves the old file as it was; a path that
 * cannot be written is refused with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "atomic.h"
#include "test.h"

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 4096);
    if (b) fread(b, 1, 4095, f);
    fclose(f);
    return b;
}

static void test_commit_and_abort(void) {
    char path[256], tmp[300], err[512];
    snprintf(path, sizeof path, "/tmp/flash_test_atomic_%ld.txt", (long)getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(afile_write(path, "first\n", 6, err, sizeof err) == 0, "%s", err);
    char *got = slurp(path);
    CHECK(got && !strcmp(got, "first\n"), "after the first write: \"%s\"", got ? got : "(none)");
    free(got);
    CHECK(access(tmp, F_OK) != 0, "a temporary file was left behind");
    AtomicFile af;
    CHECK(afile_open(&af, path, err, sizeof err) == 0, "%s", err);
    fputs("second, unfinished", af.f);
    got = slurp(path);
    CHECK(got && !strcmp(got, "first\n"), "PATH changed before the commit: \"%s\"", got ? got : "(none)");
    free(got);
    afile_abort(&af);
    got = slurp(path);
    CHECK(got && !strcmp(got, "first\n"), "an abort changed PATH: \"%s\"", got ? got : "(none)");
    free(got);
    CHECK(access(tmp, F_OK) != 0, "an abort left the temporary file");
    CHECK(afile_open(&af, path, err, sizeof err) == 0, "%s", err);
    fputs("third\n", af.f);
    CHECK(afile_commit(&af, err, sizeof err) == 0, "%s", err);
    got = slurp(path);
    CHECK(got && !strcmp(got, "third\n"), "after the commit: \"%s\"", got ? got : "(none)");
    free(got);
    unlink(path);
}

static void test_unwritable(void) {
    char err[512] = "";
    CHECK(afile_write("/tmp/no/such/dir/x.bin", "x", 1, err, sizeof err) == -1 && strstr(err, "cannot write"),
          "a missing directory: \"%s\"", err);
}

int main(void) {
    RUN(test_commit_and_abort);
    RUN(test_unwritable);
    TEST_MAIN_END();
}
