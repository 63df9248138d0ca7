/* formats/atomic.c: atomic file replacement (see atomic.h). */
#include "atomic.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void af_free(AtomicFile *af) {
    free(af->path);
    free(af->tmp);
    af->path = af->tmp = NULL;
    af->f = NULL;
}

int afile_open(AtomicFile *af, const char *path, char *err, size_t errlen) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path);
    af->path = malloc(n + 1);
    af->tmp = malloc(n + 5);
    if (!af->path || !af->tmp) {
        snprintf(err, errlen, "out of memory writing %s", path);
        af_free(af);
        return -1;
    }
    memcpy(af->path, path, n + 1);
    memcpy(af->tmp, path, n);
    memcpy(af->tmp + n, ".tmp", 5);
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        snprintf(err, errlen, "cannot write %s: %s", af->tmp, strerror(errno));
        af_free(af);
        return -1;
    }
    return 0;
}

void afile_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    af_free(af);
}

/* fsync of the directory holding path: makes a rename into it durable */
static void sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path + (slash == path))) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);   /* some filesystems refuse a directory fsync: nothing more to do then */
        close(fd);
    }
    free(dir);
}

int afile_commit(AtomicFile *af, char *err, size_t errlen) {
    /* fflush moves stdio's buffer to the kernel, fsync the kernel's to the disk: only then
       may rename() show the new file under PATH */
    int bad = ferror(af->f) ? (errno ? errno : EIO) : 0;
    if (!bad && (fflush(af->f) || fsync(fileno(af->f)))) bad = errno ? errno : EIO;
    if (fclose(af->f) && !bad) bad = errno ? errno : EIO;
    af->f = NULL;
    if (bad) {
        snprintf(err, errlen, "writing %s failed: %s", af->tmp, strerror(bad));
        afile_abort(af);
        return -1;
    }
    if (rename(af->tmp, af->path)) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", af->tmp, af->path, strerror(errno));
        afile_abort(af);
        return -1;
    }
    sync_dir(af->path);
    af_free(af);
    return 0;
}

int afile_write(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    AtomicFile af;
    if (afile_open(&af, path, err, errlen)) return -1;
    if (n && fwrite(data, 1, n, af.f) != n) {
        snprintf(err, errlen, "writing %s failed: %s", af.tmp, strerror(errno ? errno : EIO));
        afile_abort(&af);
        return -1;
    }
    return afile_commit(&af, err, errlen);
}
