/* data/dataset.c: see dataset.h. */
#include "dataset.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* enwik8 is exactly 10^8 bytes and data_split ignores anything past them: neither the raw
   reader nor the gzip reader keeps more (a gzip bomb cannot exhaust memory). */
#define DATA_USED ((size_t)100000000)

/* Writes "path: message" into err (when the caller gave a buffer) and returns -1,
 * so every failure path is one line: `return fail(err, errlen, path, "...", ...);`. */
static int fail(char *err, size_t errlen, const char *path, const char *fmt, ...) {
    if (err && errlen > 0) {
        int k = snprintf(err, errlen, "%s: ", path);
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* Reads the whole stream into a malloc'ed buffer. Reads in growing chunks instead of
 * asking for the file size first so it also works on pipes and /dev/stdin.
 * Returns 0, or -1 with errno describing the failure (ENOMEM, or the read error). */
static int read_all(FILE *f, size_t limit, uint8_t **out, size_t *n) {
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) { errno = ENOMEM; return -1; }
    for (;;) {
        if (len == cap) {
            if (cap > SIZE_MAX / 2) { free(buf); errno = ENOMEM; return -1; }
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) { free(buf); errno = ENOMEM; return -1; }
            buf = bigger;
            cap *= 2;
        }
        if (len >= limit) break;
        size_t want = cap - len < limit - len ? cap - len : limit - len;
        size_t got = fread(buf + len, 1, want, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                int e = errno ? errno : EIO;
                free(buf);
                errno = e;
                return -1;
            }
            break;   /* EOF */
        }
    }
    *out = buf;
    *n = len;
    return 0;
}

/* Inflates gzip data held in memory. zlib's counters are 32-bit (uInt), so input and
 * output are handed to inflate in chunks of at most 1 GiB; the output buffer doubles
 * when full. A finished member followed by another gzip magic is decoded as the next
 * member (what `cat a.gz b.gz` makes, and what gzip -d accepts); trailing zero bytes
 * (block padding) are ignored like gzip does; any other trailing bytes are corruption. */
static int inflate_gzip(const char *path, const uint8_t *in, size_t nin,
                        uint8_t **out, size_t *nout, char *err, size_t errlen) {
    const size_t chunk = (size_t)1 << 30;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* 15+16: gzip wrapper only. The caller has already checked the magic, so the
     * auto-detect of 15+32 would add nothing but accepting zlib streams by accident. */
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return fail(err, errlen, path, "cannot initialise zlib inflate");

    /* enwik8 compresses about 2.8x under gzip -9; start at 4x to usually avoid regrowth. */
    size_t cap = nin < (SIZE_MAX - (1 << 16)) / 4 ? nin * 4 + (1 << 16) : nin;
    if (cap > DATA_USED) cap = DATA_USED;
    size_t len = 0, in_pos = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) { inflateEnd(&zs); return fail(err, errlen, path, "out of memory (%zu bytes)", cap); }

    for (;;) {
        if (zs.avail_in == 0 && in_pos < nin) {
            size_t k = nin - in_pos < chunk ? nin - in_pos : chunk;
            zs.next_in = (Bytef *)(in + in_pos);   /* zlib never writes through next_in */
            zs.avail_in = (uInt)k;
            in_pos += k;
        }
        if (len == DATA_USED) break;   /* all that is used: the rest is not inflated (nor checked) */
        if (len == cap) {
            size_t grow = cap * 2 < DATA_USED ? cap * 2 : DATA_USED;
            uint8_t *bigger = realloc(buf, grow);
            if (!bigger) {
                free(buf); inflateEnd(&zs);
                return fail(err, errlen, path, "out of memory while decompressing (%zu bytes so far)", len);
            }
            buf = bigger;
            cap = grow;
        }
        size_t room = cap - len < chunk ? cap - len : chunk;
        zs.next_out = buf + len;
        zs.avail_out = (uInt)room;

        int ret = inflate(&zs, Z_NO_FLUSH);
        len += room - zs.avail_out;

        if (ret == Z_STREAM_END) {
            /* One member done (its CRC and length already checked by zlib). */
            size_t pos = (size_t)(zs.next_in - in);   /* first byte after the member */
            if (pos >= nin) break;
            if (nin - pos >= 2 && in[pos] == 0x1f && in[pos + 1] == 0x8b) {
                inflateReset(&zs);
                continue;
            }
            size_t i = pos;
            while (i < nin && in[i] == 0) i++;
            if (i == nin) break;
            free(buf); inflateEnd(&zs);
            return fail(err, errlen, path,
                        "corrupt gzip data (%zu bytes of garbage after the gzip stream at offset %zu)",
                        nin - pos, pos);
        }
        if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT) {
            /* Bad deflate data, bad header, or a CRC/length mismatch in the trailer. */
            const char *why = zs.msg ? zs.msg : "invalid data";
            int r = fail(err, errlen, path, "corrupt gzip data (zlib: %s)", why);
            free(buf); inflateEnd(&zs);
            return r;
        }
        if (ret == Z_MEM_ERROR) {
            free(buf); inflateEnd(&zs);
            return fail(err, errlen, path, "out of memory in zlib inflate");
        }
        if (ret != Z_OK && ret != Z_BUF_ERROR) {
            free(buf); inflateEnd(&zs);
            return fail(err, errlen, path, "zlib inflate failed (code %d)", ret);
        }
        /* inflate stops only when input runs out, output is full, or the member ends.
         * With all input consumed and output room left, the stream simply stopped
         * before its end (and before the 8-byte gzip trailer): truncated. */
        if (zs.avail_in == 0 && in_pos == nin && zs.avail_out > 0) {
            free(buf); inflateEnd(&zs);
            return fail(err, errlen, path,
                        "truncated gzip data (stream ends before the gzip trailer, after %zu "
                        "decompressed bytes)", len);
        }
    }
    inflateEnd(&zs);

    if (len == 0) {
        free(buf);
        return fail(err, errlen, path, "empty after decompression (the gzip stream holds 0 bytes)");
    }
    uint8_t *fit = realloc(buf, len);   /* give back the unused growth room */
    *out = fit ? fit : buf;
    *nout = len;
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

int data_load(const char *path, uint8_t **out, size_t *n, char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    /* only a regular file: a FIFO without a writer would block forever, a directory or a
       device is no data file */
    struct stat sb;
    if (stat(path, &sb)) return fail(err, errlen, path, "cannot open: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return fail(err, errlen, path, "not a regular file (%s); give the data as a file",
                    S_ISFIFO(sb.st_mode) ? "a FIFO" : S_ISDIR(sb.st_mode) ? "a directory" :
                    S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) ? "a device" : "a special file");
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errlen, path, "cannot open: %s", strerror(errno));

    uint8_t *raw = NULL;
    size_t nraw = 0;
    errno = 0;
    /* gzip input is read whole (its size is the file's); raw data only as far as it is used */
    unsigned char magic[2] = {0, 0};
    size_t nm = fread(magic, 1, 2, f);
    rewind(f);
    const int gz_magic = nm == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    int rc = read_all(f, gz_magic ? SIZE_MAX : DATA_USED, &raw, &nraw);
    int read_errno = errno;
    fclose(f);
    if (rc != 0) return fail(err, errlen, path, "cannot read: %s", strerror(read_errno));

    if (nraw == 0) {
        free(raw);
        return fail(err, errlen, path, "file is empty (0 bytes)");
    }

    int is_gzip = nraw >= 2 && raw[0] == 0x1f && raw[1] == 0x8b;
    /* other compressed forms would train on their compressed bytes: refused by their magic */
    static const struct { const char *magic; size_t n; const char *name, *how; } other[] = {
        {"PK\x03\x04", 4, "zip", "unzip it (unzip FILE.zip) and give the extracted file, or gzip it"},
        {"\xfd" "7zXZ\0", 6, "xz", "convert it: xz -dc FILE.xz | gzip > FILE.gz"},
        {"BZh", 3, "bzip2", "convert it: bzip2 -dc FILE.bz2 | gzip > FILE.gz"},
        {"\x28\xb5\x2f\xfd", 4, "zstd", "convert it: zstd -dc FILE.zst | gzip > FILE.gz"},
        {"7z\xbc\xaf\x27\x1c", 6, "7z", "extract it (7z x FILE.7z) and give the extracted file"},
    };
    for (size_t i = 0; !is_gzip && i < sizeof other / sizeof other[0]; i++)
        if (nraw >= other[i].n && !memcmp(raw, other[i].magic, other[i].n)) {
            free(raw);
            return fail(err, errlen, path, "%s data (its magic bytes), which this program does not "
                        "read: %s", other[i].name, other[i].how);
        }
    if (!is_gzip) {
        /* A ".gz" name promises gzip; silently training on the compressed bytes of some
         * other format (zip, xz, a saved HTML error page) would waste a whole run. */
        if (ends_with(path, ".gz")) {
            free(raw);
            return fail(err, errlen, path,
                        "not gzip data (the name ends in .gz but the file does not start "
                        "with the gzip magic 1f 8b)");
        }
        uint8_t *fit = realloc(raw, nraw);
        *out = fit ? fit : raw;
        *n = nraw;
        return 0;
    }

    rc = inflate_gzip(path, raw, nraw, out, n, err, errlen);
    free(raw);
    return rc;
}

int data_split(const uint8_t *bytes, size_t n, size_t min_len, DataSplit *s, char *err, size_t errlen) {
    const size_t full = 100000000;   /* enwik8 is exactly 10^8 bytes */
    memset(s, 0, sizeof *s);
    if (n >= full) {
        /* The split every enwik8 result is reported on: 90M / 5M / 5M. */
        s->n_train = 90000000;
        s->n_val = 5000000;
        s->n_test = 5000000;
        s->proportional = 0;
    } else {
        /* Shorter files (test subsets): same proportions, the rounding slack goes to test.
         * n < 10^8 so n*9 cannot overflow. */
        s->n_train = n * 9 / 10;
        s->n_val = n / 20;
        s->n_test = n - s->n_train - s->n_val;
        s->proportional = 1;
    }
    s->train = bytes;
    s->val = bytes ? bytes + s->n_train : NULL;
    s->test = bytes ? bytes + s->n_train + s->n_val : NULL;

    const char *names[3] = {"train", "val", "test"};
    size_t lens[3] = {s->n_train, s->n_val, s->n_test};
    for (int i = 0; i < 3; i++) {
        if (lens[i] < min_len) {
            if (err && errlen > 0)
                snprintf(err, errlen,
                         "%s split is %zu bytes, shorter than the %zu bytes one example needs "
                         "(T+1); the data holds %zu bytes%s",
                         names[i], lens[i], min_len, n,
                         s->proportional ? ", split 90/5/5 in proportion" : "");
            return -1;
        }
    }
    return 0;
}

uint32_t data_crc32(const uint8_t *p, size_t n) {
    uLong c = crc32(0, Z_NULL, 0);
    for (size_t k = 0; k < n; k += 1u << 30)   /* zlib's length is a uInt: 1 GiB at a time */
        c = crc32(c, p + k, (uInt)(n - k < (1u << 30) ? n - k : (1u << 30)));
    return (uint32_t)c;
}
