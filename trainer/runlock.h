/* trainer/runlock.h: one writer per run directory. A run (training, a resume, an export
 * into the directory) holds an exclusive lock on DIR/.lock for its whole life; the kernel
 * drops it when the process ends, however it ends, so a killed run never leaves a stale
 * lock. A second process is refused and told which process holds the directory. */
#ifndef FLASH_RUNLOCK_H
#define FLASH_RUNLOCK_H
#include <stddef.h>

/* Takes DIR's lock (DIR must exist). Returns a descriptor to keep open (>= 0), or -1 with a
   message naming the holder's pid. */
int runlock_take(const char *dir, char *err, size_t errlen);
void runlock_release(int fd);

#endif
