/* trainer/runlock.c: see runlock.h. flock(2) on DIR/.lock, the holder's pid written into it
 * for the message. */
#include "runlock.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int runlock_take(const char *dir, char *err, size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.lock", dir);
    /* O_NOFOLLOW: a symlink planted as .lock is refused, never followed to another file */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot lock the run directory %s (%s): %s", dir, path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        if (e == EWOULDBLOCK)
            snprintf(err, errlen, "the run directory %s is in use by another run (process %s); "
                     "wait for it to finish, stop it, or choose another --out", dir, pid[0] ? pid : "unknown");
        else
            snprintf(err, errlen, "cannot lock the run directory %s: %s", dir, strerror(e));
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) || pwrite(fd, pid, (size_t)len, 0) != len) { /* the pid is only for messages */ }
    return fd;
}

void runlock_release(int fd) {
    if (fd >= 0) close(fd);   /* closing drops the flock */
}
