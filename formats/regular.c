/* formats/regular.c: see regular.h. */
#include "regular.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *file_kind_name(unsigned mode) {
    return S_ISFIFO(mode) ? "a FIFO" : S_ISDIR(mode) ? "a directory" :
           S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : S_ISSOCK(mode) ? "a socket" : "a special file";
}

FILE *fopen_regular(const char *path, const char *mode, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { snprintf(err, errlen, "cannot open: %s", strerror(errno)); return NULL; }
    struct stat sb;
    if (fstat(fd, &sb)) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "not a regular file (%s)", file_kind_name(sb.st_mode));
        close(fd);
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, mode);
    if (!f) { snprintf(err, errlen, "cannot open: %s", strerror(errno)); close(fd); }
    return f;
}
