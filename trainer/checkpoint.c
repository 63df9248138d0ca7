/* trainer/checkpoint.c: atomic, checksummed checkpoints. */
#include "checkpoint.h"
#include "atomic.h"
#include "regular.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CKPT_MAGIC "FLASHCKP"
#define HEADER_BYTES 32
#define STATE_BYTES (8 + 8 + 8 + 32 + 32)
#define JSON_MAX (1 << 20)

void checkpoint_path(char *buf, size_t n, const char *dir, uint64_t step) {
    snprintf(buf, n, "%s/ckpt-%08llu.bin", dir, (unsigned long long)step);
}

static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put_u64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get_u32(const unsigned char *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

static void pack_state(unsigned char *p, const TrainState *st) {
    uint64_t e;
    memcpy(&e, &st->elapsed_s, 8);
    put_u64(p, st->step);
    put_u64(p + 8, st->tokens);
    put_u64(p + 16, e);
    for (int i = 0; i < 4; i++) put_u64(p + 24 + 8 * i, st->data_rng.s[i]);
    for (int i = 0; i < 4; i++) put_u64(p + 56 + 8 * i, st->sample_rng.s[i]);
}

static void unpack_state(const unsigned char *p, TrainState *st) {
    uint64_t e = get_u64(p + 16);
    st->step = get_u64(p);
    st->tokens = get_u64(p + 8);
    memcpy(&st->elapsed_s, &e, 8);
    for (int i = 0; i < 4; i++) st->data_rng.s[i] = get_u64(p + 24 + 8 * i);
    for (int i = 0; i < 4; i++) st->sample_rng.s[i] = get_u64(p + 56 + 8 * i);
}

typedef struct { FILE *f; uLong crc; int bad; } Out;

static void out_write(Out *o, const void *p, size_t n) {
    if (o->bad) return;
    if (fwrite(p, 1, n, o->f) != n) o->bad = errno ? errno : EIO;
    o->crc = crc32(o->crc, p, (uInt)n);
}

int checkpoint_save(const char *path, const Options *opts, const TrainState *st, Model *m,
                    char *err, size_t errlen) {
    const size_t n = model_table(m)->total;
    char *json = malloc(JSON_MAX);
    float *host = malloc(n * sizeof(float));
    if (!json || !host) { free(json); free(host); snprintf(err, errlen, "out of memory"); return -1; }
    int jlen = options_to_json(opts, json, JSON_MAX);
    if (jlen < 0) { free(json); free(host); snprintf(err, errlen, "the run's settings do not fit in a checkpoint"); return -1; }
    AtomicFile af;
    if (afile_open(&af, path, err, errlen)) { free(json); free(host); return -1; }
    Out o = {af.f, crc32(0, Z_NULL, 0), 0};
    unsigned char hdr[HEADER_BYTES] = {0}, state[STATE_BYTES];
    memcpy(hdr, CKPT_MAGIC, 8);
    put_u32(hdr + 8, CKPT_VERSION);
    put_u32(hdr + 12, (uint32_t)jlen);
    put_u64(hdr + 16, n);
    /* the checksum is known only at the end: write a placeholder, then seek back */
    if (fwrite(hdr, 1, HEADER_BYTES, o.f) != HEADER_BYTES) o.bad = errno ? errno : EIO;
    out_write(&o, json, (size_t)jlen);
    pack_state(state, st);
    out_write(&o, state, STATE_BYTES);
    const StateKind kinds[3] = {STATE_PARAMS, STATE_ADAM_M, STATE_ADAM_V};
    static const char *const kind_name[3] = {"parameters", "Adam first moments", "Adam second moments"};
    for (int k = 0; k < 3 && !o.bad; k++) {
        if (model_read(m, kinds[k], host, err, errlen)) { o.bad = -1; break; }
        /* non-finite weights are never saved: a checkpoint is a state to continue from */
        size_t bad = n;
        for (size_t i = 0; i < n && bad == n; i++)
            if (!isfinite(host[i])) bad = i;
        if (bad < n) {
            snprintf(err, errlen, "not writing checkpoint %s: the model's %s are not finite "
                     "(value %zu of %zu is %g)", path, kind_name[k], bad, n, (double)host[bad]);
            o.bad = -1;
            break;
        }
        out_write(&o, host, n * sizeof(float));
    }
    put_u32(hdr + 24, (uint32_t)o.crc);
    if (!o.bad && (fseek(o.f, 24, SEEK_SET) || fwrite(hdr + 24, 1, 4, o.f) != 4)) o.bad = errno ? errno : EIO;
    free(json);
    free(host);
    if (o.bad) {
        if (o.bad != -1)   /* else model_read's message */
            snprintf(err, errlen, "writing checkpoint %s failed: %s", af.tmp, strerror(o.bad));
        afile_abort(&af);
        return -1;
    }
    return afile_commit(&af, err, errlen);
}

int checkpoint_load(const char *path, Options *o, TrainState *st, CkptState *cs,
                    char *err, size_t errlen) {
    memset(cs, 0, sizeof *cs);
    char why[256];
    FILE *f = fopen_regular(path, "rb", why, sizeof why);
    if (!f) { snprintf(err, errlen, "checkpoint %s: %s", path, why); return -1; }
    unsigned char hdr[HEADER_BYTES];
    size_t got = fread(hdr, 1, HEADER_BYTES, f);
    if (got < 8 || memcmp(hdr, CKPT_MAGIC, 8)) {
        snprintf(err, errlen, "%s is not a flash.c checkpoint (no FLASHCKP header)", path);
        fclose(f);
        return -1;
    }
    if (got < HEADER_BYTES) {
        snprintf(err, errlen, "checkpoint %s is truncated (%zu bytes, shorter than its header)", path, got);
        fclose(f);
        return -1;
    }
    /* Every header byte is checked: the magic and the version here, the JSON length and the
       element count by the file's exact length below, the checksum (of everything after the
       header) against the body, and the reserved bytes 28-31 must be the zeros written. */
    uint32_t version = get_u32(hdr + 8), jlen = get_u32(hdr + 12), crc_want = get_u32(hdr + 24);
    uint64_t n = get_u64(hdr + 16);
    if (get_u32(hdr + 28) != 0) {
        snprintf(err, errlen, "checkpoint %s is corrupt (its header's reserved bytes 28-31 are not zero)", path);
        fclose(f);
        return -1;
    }
    if (version != CKPT_VERSION) {
        snprintf(err, errlen, "checkpoint %s has format version %u; this program reads version %d",
                 path, version, CKPT_VERSION);
        fclose(f);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    uint64_t want = HEADER_BYTES + (uint64_t)jlen + STATE_BYTES + 3 * n * sizeof(float);
    if (jlen >= JSON_MAX || n > ((uint64_t)1 << 40) || (uint64_t)fsize != want) {
        snprintf(err, errlen, "checkpoint %s is %s: %ld bytes where its header says %llu",
                 path, (uint64_t)fsize < want ? "truncated" : "corrupt (wrong length)", fsize,
                 (unsigned long long)want);
        fclose(f);
        return -1;
    }
    size_t body = (size_t)(want - HEADER_BYTES);
    unsigned char *buf = malloc(body + 1);
    if (!buf) { snprintf(err, errlen, "out of memory reading %s", path); fclose(f); return -1; }
    fseek(f, HEADER_BYTES, SEEK_SET);
    if (fread(buf, 1, body, f) != body) {
        snprintf(err, errlen, "cannot read checkpoint %s: %s", path, strerror(errno));
        free(buf); fclose(f);
        return -1;
    }
    fclose(f);
    uLong crc = crc32(0, Z_NULL, 0);
    for (size_t k = 0; k < body; k += 1u << 30)
        crc = crc32(crc, buf + k, (uInt)(body - k < (1u << 30) ? body - k : (1u << 30)));
    if ((uint32_t)crc != crc_want) {
        snprintf(err, errlen, "checkpoint %s is corrupt (checksum mismatch)", path);
        free(buf);
        return -1;
    }
    char *json = (char *)buf;
    char saved = json[jlen];
    json[jlen] = 0;
    char e2[512];
    int rc = options_from_json(o, json, e2, sizeof e2);
    json[jlen] = saved;
    if (rc) { snprintf(err, errlen, "checkpoint %s: %s", path, e2); free(buf); return -1; }
    ParamTable table;
    if (params_table_build(&table, &o->model)) {
        snprintf(err, errlen, "out of memory reading %s", path);
        free(buf);
        return -1;
    }
    const size_t need = table.total;
    params_table_free(&table);
    if (need != n) {
        snprintf(err, errlen, "checkpoint %s holds %llu parameters but its model config needs %zu",
                 path, (unsigned long long)n, need);
        free(buf);
        return -1;
    }
    unpack_state(buf + jlen, st);
    for (int g = 0; g < 2; g++) {
        const Rng *r = g ? &st->sample_rng : &st->data_rng;
        if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) {
            snprintf(err, errlen, "checkpoint %s is corrupt: its %s generator's state is all zero "
                     "(xoshiro256 never reaches it)", path, g ? "sample" : "data");
            free(buf);
            return -1;
        }
    }
    /* the run ends at its last step: a counter past it is corruption, and resume would cut
       metrics.csv to rows that no checkpoint proves */
    if (st->step > (uint64_t)o->opt.total) {
        snprintf(err, errlen, "checkpoint %s is corrupt: step %llu is past the run's %ld steps", path,
                 (unsigned long long)st->step, o->opt.total);
        free(buf);
        return -1;
    }
    if (!(st->elapsed_s >= 0 && st->elapsed_s < 1e12)) {
        snprintf(err, errlen, "checkpoint %s is corrupt: elapsed time %g s", path, st->elapsed_s);
        free(buf);
        return -1;
    }
    {
        const unsigned char *arr = buf + jlen + STATE_BYTES;
        static const char *const what[3] = {"parameters", "Adam first moments", "Adam second moments"};
        for (uint64_t i = 0; i < 3 * n; i++) {
            float v;
            memcpy(&v, arr + 4 * i, 4);
            if (!isfinite(v)) {
                snprintf(err, errlen, "checkpoint %s holds non-finite %s (value %llu is %g): "
                         "it cannot be evaluated, sampled or resumed", path, what[i / n],
                         (unsigned long long)(i % n), (double)v);
                free(buf);
                return -1;
            }
        }
    }
    /* the arrays moved to the front of the buffer, which malloc aligned for floats */
    memmove(buf, buf + jlen + STATE_BYTES, 3 * n * sizeof(float));
    cs->values = (float *)(void *)buf;
    cs->n = n;
    return 0;
}

int checkpoint_apply(const CkptState *cs, Model *m, int moments, char *err, size_t errlen) {
    if (model_table(m)->total != cs->n) {
        snprintf(err, errlen, "the checkpoint holds %zu parameters, the model %zu", cs->n,
                 model_table(m)->total);
        return -1;
    }
    if (model_write(m, STATE_PARAMS, cs->values, err, errlen)) return -1;
    if (moments && (model_write(m, STATE_ADAM_M, cs->values + cs->n, err, errlen) ||
                    model_write(m, STATE_ADAM_V, cs->values + 2 * cs->n, err, errlen)))
        return -1;
    return 0;
}

void checkpoint_state_free(CkptState *cs) {
    free(cs->values);
    memset(cs, 0, sizeof *cs);
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

int checkpoint_name_step(const char *name, uint64_t *step) {
    /* exactly what checkpoint_path writes: "ckpt-" + %08llu + ".bin" */
    if (strncmp(name, "ckpt-", 5)) return -1;
    const char *p = name + 5, *q = p;
    unsigned long long s = 0;
    while (*q >= '0' && *q <= '9') {
        if (s > (~0ULL - 9) / 10) return -1;
        s = s * 10 + (unsigned)(*q++ - '0');
    }
    if (strcmp(q, ".bin")) return -1;
    char canon[64];
    snprintf(canon, sizeof canon, "ckpt-%08llu.bin", s);
    if (strcmp(canon, name)) return -1;
    *step = s;
    return 0;
}

/* Keeps the newest `max` steps of all the directory holds (any number of files). */
int checkpoint_list(const char *dir, uint64_t *steps, int max) {
    DIR *d = opendir(dir);
    if (!d || max < 1) { if (d) closedir(d); return 0; }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t s;
        if (checkpoint_name_step(de->d_name, &s)) continue;
        if (n < max) { steps[n++] = s; qsort(steps, n, sizeof *steps, cmp_desc); continue; }
        if (s <= steps[n - 1]) continue;
        int i = n - 1;   /* insert in order, dropping the oldest kept */
        while (i > 0 && steps[i - 1] < s) { steps[i] = steps[i - 1]; i--; }
        steps[i] = s;
    }
    closedir(d);
    return n;
}

int checkpoint_list_all(const char *dir, uint64_t **steps) {
    *steps = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t s;
        if (checkpoint_name_step(de->d_name, &s)) continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 64;
            uint64_t *b = realloc(*steps, sizeof **steps * (size_t)nc);
            if (!b) { closedir(d); free(*steps); *steps = NULL; return -1; }
            *steps = b;
            cap = nc;
        }
        (*steps)[n++] = s;
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof **steps, cmp_desc);
    return n;
}

int checkpoint_has_magic(const char *path) {
    char why[256];
    FILE *f = fopen_regular(path, "rb", why, sizeof why);
    if (!f) return 0;
    char m[8];
    int ok = fread(m, 1, 8, f) == 8 && !memcmp(m, CKPT_MAGIC, 8);
    fclose(f);
    return ok;
}

int checkpoint_load_arg(const char *arg, Options *o, TrainState *st, CkptState *cs,
                        char *path_out, size_t path_len, char *err, size_t errlen) {
    struct stat sb;
    if (stat(arg, &sb)) { snprintf(err, errlen, "cannot open %s: %s", arg, strerror(errno)); return -1; }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(path_out, path_len, "%s", arg);
        return checkpoint_load(arg, o, st, cs, err, errlen);
    }
    uint64_t *steps;
    int n = checkpoint_list_all(arg, &steps);
    if (n < 0) { snprintf(err, errlen, "out of memory listing %s", arg); return -1; }
    if (!n) { snprintf(err, errlen, "no checkpoint (ckpt-*.bin) in %s", arg); return -1; }
    for (int i = 0; i < n; i++) {
        checkpoint_path(path_out, path_len, arg, steps[i]);
        char e[2048];
        if (!checkpoint_load(path_out, o, st, cs, e, sizeof e)) { free(steps); return 0; }
        fprintf(stderr, "warning: skipping %s\n", e);
        snprintf(err, errlen, "no valid checkpoint in %s (newest problem: %s)", arg, e);
    }
    free(steps);
    return -1;
}
