/* formats/atomic.h: writing a file so that a crash leaves either the old file or the new one,
 * whole: the bytes go to PATH.tmp, which is flushed and fsync'ed, renamed over PATH, and the
 * directory fsync'ed so that the rename itself is durable. Every file of a run directory is
 * written this way (checkpoints, config.json, loss.png, exports; metrics.csv and samples.txt
 * when they are created or cut back on a resume, before rows are appended to them). */
#ifndef FLASH_ATOMIC_H
#define FLASH_ATOMIC_H
#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *f;                   /* write here, then afile_commit or afile_abort */
    char *path, *tmp;
} AtomicFile;

/* Opens PATH.tmp for writing (binary). 0, or -1 with a message. */
int afile_open(AtomicFile *af, const char *path, char *err, size_t errlen);
/* Flush, fsync, close, rename over PATH, fsync the directory. 0, or -1 with a message (the
   temporary file is then removed, PATH untouched). Frees af either way. */
int afile_commit(AtomicFile *af, char *err, size_t errlen);
/* Closes and removes the temporary file; PATH untouched. */
void afile_abort(AtomicFile *af);
/* The whole file at once. */
int afile_write(const char *path, const void *data, size_t n, char *err, size_t errlen);

#endif
