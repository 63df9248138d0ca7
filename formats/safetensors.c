/* formats/safetensors.c: see safetensors.h. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fileno, fstat, fsync */
#endif
#include "safetensors.h"
#include "regular.h"

#include "atomic.h"
#include "json.h"
#include <jansson.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Python's safetensors refuses headers above 100 MB; so do we, which also bounds the
   work a hostile header can cause. */
#define ST_MAX_HEADER 100000000ULL
#define ST_DATA_ALIGN 64

/* Every dtype the safetensors library knows, with its size in bits (F4/F6 are packed). */
static const struct {
    const char *name;
    StDtype dtype;
    unsigned bits;
} DTYPES[] = {
    {"F32", ST_F32, 32},     {"F64", ST_F64, 64},     {"I64", ST_I64, 64},
    {"I32", ST_I32, 32},     {"BOOL", ST_OTHER, 8},   {"U8", ST_OTHER, 8},
    {"I8", ST_OTHER, 8},     {"F8_E5M2", ST_OTHER, 8}, {"F8_E4M3", ST_OTHER, 8},
    {"F8_E8M0", ST_OTHER, 8}, {"F4", ST_OTHER, 4},    {"F6_E2M3", ST_OTHER, 6},
    {"F6_E3M2", ST_OTHER, 6}, {"I16", ST_OTHER, 16},  {"U16", ST_OTHER, 16},
    {"F16", ST_OTHER, 16},   {"BF16", ST_OTHER, 16},  {"U32", ST_OTHER, 32},
    {"U64", ST_OTHER, 64},   {"C64", ST_OTHER, 64},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

static int host_is_little_endian(void) {
    uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

size_t st_dtype_size(StDtype d) {
    switch (d) {
    case ST_F32: return 4;
    case ST_F64: return 8;
    case ST_I64: return 8;
    case ST_I32: return 4;
    default: return 0;
    }
}

static const char *dtype_name(StDtype d) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d && d != ST_OTHER) return DTYPES[i].name;
    return NULL;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i]; /* st_load checked it fits */
    return n;
}

/* ------------------------------------------------------------------ reading ---- */

void st_free(StFile *f) {
    if (!f) return;
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->tensors);
    free(f->alloc_);
    memset(f, 0, sizeof *f);
}

/* Adds a metadata entry (the parser has refused repeated keys); copies k and v. */
static int meta_put(StFile *f, const char *k, const char *v) {
    char *kc = strdup(k), *vc = strdup(v);
    char **nk = kc && vc ? realloc(f->meta_keys, (size_t)(f->n_meta + 1) * sizeof *nk) : NULL;
    if (nk) f->meta_keys = nk;
    char **nv = nk ? realloc(f->meta_vals, (size_t)(f->n_meta + 1) * sizeof *nv) : NULL;
    if (nv) f->meta_vals = nv;
    if (!nk || !nv) {
        free(kc);
        free(vc);
        return -1;
    }
    f->meta_keys[f->n_meta] = kc;
    f->meta_vals[f->n_meta] = vc;
    f->n_meta++;
    return 0;
}

/* The "__metadata__" value: an object of strings, or null. */
static int parse_metadata(StFile *f, const json_t *v, char *why, size_t wl) {
    if (json_is_null(v)) return 0;
    if (!json_is_object(v)) {
        set_err(why, wl, "\"__metadata__\" is not an object");
        return -1;
    }
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        if (!json_is_string(x)) {
            set_err(why, wl, "\"__metadata__\" value of \"%.64s\" is not a valid string", k);
            return -1;
        }
        if (meta_put(f, k, json_string_value(x)) != 0) {
            set_err(why, wl, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* An array of up to max non-negative integers into out; *n gets the count. -2 if longer. */
static int uint_array(const json_t *a, uint64_t *out, int max, int *n) {
    *n = 0;
    if (!json_is_array(a)) return -1;
    if (json_array_size(a) > (size_t)max) return -2;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0) return -1;
        out[(*n)++] = (uint64_t)json_integer_value(x);
    }
    return 0;
}

/* One tensor's {"dtype", "shape", "data_offsets"} into t, checking the fields themselves
   (not yet their place in the data region). Unknown fields are ignored, as Python's
   safetensors does. */
static int parse_tensor(StTensor *t, uint64_t off[2], const json_t *e, char *why, size_t wl) {
    if (!json_is_object(e)) {
        set_err(why, wl, "tensor \"%s\": entry is not an object", t->name);
        return -1;
    }
    const json_t *dt = json_object_get(e, "dtype"), *sh = json_object_get(e, "shape");
    const json_t *of = json_object_get(e, "data_offsets");
    if (!dt || !sh || !of) {
        set_err(why, wl, "tensor \"%s\": missing \"%s\"", t->name, !dt ? "dtype" : !sh ? "shape" : "data_offsets");
        return -1;
    }
    if (!json_is_string(dt)) {
        set_err(why, wl, "tensor \"%s\": \"dtype\" is not a string", t->name);
        return -1;
    }
    const char *ds = json_string_value(dt);
    size_t i = 0;
    while (i < N_DTYPES && strcmp(DTYPES[i].name, ds) != 0) i++;
    if (i == N_DTYPES) {
        set_err(why, wl, "tensor \"%s\": unsupported dtype \"%.32s\"", t->name, ds);
        return -1;
    }
    t->dtype = DTYPES[i].dtype;
    snprintf(t->dtype_str, sizeof t->dtype_str, "%s", DTYPES[i].name);
    uint64_t dims[8];
    int n, rc = uint_array(sh, dims, 8, &n);
    if (rc == -2) {
        set_err(why, wl, "tensor \"%s\": more than 8 dimensions (unsupported)", t->name);
        return -1;
    }
    if (rc != 0) {
        set_err(why, wl, "tensor \"%s\": \"shape\" is not an array of non-negative integers", t->name);
        return -1;
    }
    t->ndim = n;
    for (int k = 0; k < n; k++) t->shape[k] = (int64_t)dims[k];   /* < 2^63: JSON integers */
    if (uint_array(of, off, 2, &n) != 0 || n != 2) {
        set_err(why, wl, "tensor \"%s\": \"data_offsets\" is not [begin, end]", t->name);
        return -1;
    }
    return 0;
}

/* Checks one tensor's byte range against dtype * shape and the data region's size,
   then fills t->offset and t->nbytes. */
static int check_tensor_range(StTensor *t, const uint64_t off[2], uint64_t data_size, char *why,
                              size_t wl) {
    unsigned bits = 0;
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(DTYPES[i].name, t->dtype_str) == 0) bits = DTYPES[i].bits;
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d = (uint64_t)t->shape[i];
        if (d != 0 && numel > (uint64_t)INT64_MAX / d) {
            set_err(why, wl, "tensor \"%s\": shape has too many elements", t->name);
            return -1;
        }
        numel *= d;
    }
    if (numel > UINT64_MAX / bits) {
        set_err(why, wl, "tensor \"%s\": shape has too many elements", t->name);
        return -1;
    }
    uint64_t need_bits = numel * bits;
    if (need_bits % 8 != 0) {
        set_err(why, wl, "tensor \"%s\": %" PRIu64 " elements of %s do not fill whole bytes", t->name,
                numel, t->dtype_str);
        return -1;
    }
    if (off[0] > off[1]) {
        set_err(why, wl, "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                t->name, off[0], off[1]);
        return -1;
    }
    if (off[1] > data_size) {
        set_err(why, wl,
                "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] out of range: the data region "
                "has %" PRIu64 " bytes",
                t->name, off[0], off[1], data_size);
        return -1;
    }
    if (off[1] - off[0] != need_bits / 8) {
        set_err(why, wl,
                "tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but %s "
                "with %" PRIu64 " elements needs %" PRIu64,
                t->name, off[0], off[1], off[1] - off[0], t->dtype_str, numel, need_bits / 8);
        return -1;
    }
    t->offset = (size_t)off[0];
    t->nbytes = (size_t)(off[1] - off[0]);
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Checks that the ranges, sorted, tile [0, data_size) (names are unique: the parser refuses
   a repeated key). */
static int check_layout(StFile *f, size_t data_size, char *why, size_t wl) {
    if (f->n_tensors == 0) {
        if (data_size != 0) {
            set_err(why, wl, "no tensors but %zu bytes of data after the header", data_size);
            return -1;
        }
        return 0;
    }
    const StTensor **order = malloc((size_t)f->n_tensors * sizeof *order);
    if (!order) {
        set_err(why, wl, "out of memory");
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    {
        qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_by_offset);
        size_t expect = 0;
        for (int i = 0; i < f->n_tensors && rc == 0; i++) {
            if (order[i]->offset != expect) {
                set_err(why, wl,
                        "tensor \"%s\" starts at byte %zu but the previous one ends at %zu (%s)",
                        order[i]->name, order[i]->offset, expect,
                        order[i]->offset < expect ? "overlap" : "hole");
                rc = -1;
            }
            expect = order[i]->offset + order[i]->nbytes;
        }
        if (rc == 0 && expect != data_size) {
            set_err(why, wl, "tensors cover %zu bytes but the data region has %zu", expect, data_size);
            rc = -1;
        }
    }
    free(order);
    return rc;
}

/* Parses the header JSON h[0..n) into f and checks it against the data region. jansson
   parses strictly (RFC 8259) and refuses repeated keys, so a tensor cannot appear twice. */
static int parse_header(StFile *f, const char *h, size_t n, size_t data_size, char *why, size_t wl) {
    int cap = 0;
    if (!json_utf8_valid(h, n)) {
        set_err(why, wl, "header is not valid UTF-8");
        return -1;
    }
    /* safetensors requires the header to start with '{' itself (no leading spaces); only
       whitespace (the writer's padding) may follow the object */
    if (n == 0 || h[0] != '{') {
        set_err(why, wl, "invalid JSON header: it does not start with '{'");
        return -1;
    }
    json_error_t je;
    json_t *root = json_loadb(h, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        set_err(why, wl, "invalid JSON header (byte %d: %s)", je.position, je.text);
        return -1;
    }
    int rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(f, v, why, wl)) != 0) break;
            continue;
        }
        size_t klen = strlen(key);
        if (klen >= sizeof f->tensors[0].name) {
            set_err(why, wl, "tensor name of %zu bytes is too long (max %zu): \"%.64s...\"", klen,
                    sizeof f->tensors[0].name - 1, key);
            rc = -1;
            break;
        }
        if (f->n_tensors == cap) {
            int ncap = cap ? 2 * cap : 64;
            StTensor *nt = realloc(f->tensors, (size_t)ncap * sizeof *nt);
            if (!nt) {
                set_err(why, wl, "out of memory");
                rc = -1;
                break;
            }
            f->tensors = nt;
            cap = ncap;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        uint64_t off[2];
        memset(t, 0, sizeof *t);
        memcpy(t->name, key, klen + 1);
        if ((rc = parse_tensor(t, off, v, why, wl)) != 0) break;
        if ((rc = check_tensor_range(t, off, data_size, why, wl)) != 0) break;
        f->n_tensors++;
    }
    json_decref(root);
    if (rc) return -1;
    return check_layout(f, data_size, why, wl);
}

int st_load(StFile *f, const char *path, char *err, size_t errlen) {
    char why[512] = "";
    FILE *fp = NULL;
    memset(f, 0, sizeof *f);
    if (err && errlen) err[0] = '\0';
    if (!path) path = "(null)";
    if (!host_is_little_endian()) {
        snprintf(why, sizeof why, "big-endian hosts are not supported");
        goto fail;
    }
    fp = fopen_regular(path, "rb", why, sizeof why);
    if (!fp) goto fail;
    struct stat stt;
    if (fstat(fileno(fp), &stt) != 0 || !S_ISREG(stt.st_mode)) {
        snprintf(why, sizeof why, "not a regular file");
        goto fail;
    }
    if ((uint64_t)stt.st_size > (uint64_t)SIZE_MAX - ST_DATA_ALIGN) {
        snprintf(why, sizeof why, "file too large for this machine");
        goto fail;
    }
    size_t size = (size_t)stt.st_size;
    unsigned char lenbuf[8];
    if (size < 8 || fread(lenbuf, 1, 8, fp) != 8) {
        snprintf(why, sizeof why, "too short (%zu bytes) to hold the 8-byte header length", size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > size - 8) {
        snprintf(why, sizeof why, "header length %" PRIu64 " is larger than the file (%zu bytes)", hlen,
                 size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        snprintf(why, sizeof why, "header length %" PRIu64 " exceeds the 100 MB limit", hlen);
        goto fail;
    }
    /* Place the file in the block so that the data region starts ST_DATA_ALIGN-aligned,
       whatever the header length: tensors can then be read through typed pointers. */
    f->alloc_ = malloc(size + ST_DATA_ALIGN);
    if (!f->alloc_) {
        snprintf(why, sizeof why, "out of memory (%zu bytes)", size);
        goto fail;
    }
    uintptr_t data_addr = (uintptr_t)f->alloc_ + 8 + (uintptr_t)hlen;
    size_t shift = (ST_DATA_ALIGN - data_addr % ST_DATA_ALIGN) % ST_DATA_ALIGN;
    f->buf = (unsigned char *)f->alloc_ + shift;
    f->size = size;
    memcpy(f->buf, lenbuf, 8);
    if (fread(f->buf + 8, 1, size - 8, fp) != size - 8) {
        snprintf(why, sizeof why, "read error or file changed size while reading");
        goto fail;
    }
    fclose(fp);
    fp = NULL;
    f->data = f->buf + 8 + hlen;
    if (parse_header(f, (const char *)f->buf + 8, (size_t)hlen, size - 8 - (size_t)hlen, why, sizeof why) != 0)
        goto fail;
    return 0;
fail:
    if (fp) fclose(fp);
    st_free(f);
    set_err(err, errlen, "%s: %s", path, why);
    return -1;
}

const StTensor *st_find(const StFile *f, const char *name) {
    if (!f || !name) return NULL;
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const void *st_tensor_data(const StFile *f, const StTensor *t) {
    if (!f || !t || !f->data) return NULL;
    return f->data + t->offset;
}

const char *st_meta(const StFile *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* ------------------------------------------------------------------ writing ---- */

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} WTensor;

struct StWriter {
    WTensor *t;
    int n, cap;
    char **mk, **mv;
    int nm, mcap;
    char err[384]; /* first error from add/meta; non-empty makes save fail */
};

StWriter *st_writer_new(void) { return calloc(1, sizeof(StWriter)); }

void st_writer_free(StWriter *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->t);
    free(w->mk);
    free(w->mv);
    free(w);
}

/* Records the first error only (later ones are usually its consequences); returns -1. */
static int writer_fail(StWriter *w, const char *fmt, ...) {
    if (w->err[0]) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
    return -1;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
    if (!name) return writer_fail(w, "st_writer_add: NULL tensor name");
    /* Refuse now what st_load (or Python) would refuse later, rather than write a bad file. */
    size_t len = strlen(name);
    if (len >= sizeof(((StTensor *)0)->name))
        return writer_fail(w, "tensor name too long (max 255 bytes): \"%.64s...\"", name);
    if (!json_utf8_valid(name, len))
        return writer_fail(w, "tensor name is not valid UTF-8: \"%.64s\"", name);
    if (strcmp(name, "__metadata__") == 0)
        return writer_fail(w, "\"__metadata__\" cannot be a tensor name");
    if (!dtype_name(dtype))
        return writer_fail(w, "tensor \"%s\": cannot write dtype %d (only F32, F64, I64, I32)",
                           name, (int)dtype);
    if (ndim < 0 || ndim > 8) return writer_fail(w, "tensor \"%s\": ndim %d outside 0..8", name, ndim);
    if (ndim > 0 && !shape) return writer_fail(w, "tensor \"%s\": NULL shape", name);
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return writer_fail(w, "tensor \"%s\" added twice", name);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return writer_fail(w, "tensor \"%s\": negative dimension", name);
        if (shape[i] != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)shape[i])
            return writer_fail(w, "tensor \"%s\": too many elements", name);
        numel *= (uint64_t)shape[i];
    }
    if (numel > SIZE_MAX / 8) return writer_fail(w, "tensor \"%s\": too many elements", name);
    size_t nbytes = (size_t)numel * st_dtype_size(dtype);
    if (nbytes > 0 && !data) return writer_fail(w, "tensor \"%s\": NULL data", name);
    if (w->n == w->cap) {
        int ncap = w->cap ? 2 * w->cap : 64;
        WTensor *nt = realloc(w->t, (size_t)ncap * sizeof *nt);
        if (!nt) return writer_fail(w, "out of memory");
        w->t = nt;
        w->cap = ncap;
    }
    WTensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = dup_str(name);
    if (!t->name) return writer_fail(w, "out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->nbytes = nbytes;
    w->n++;
    return 0;
}

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                   const void *data) {
    if (w) writer_add(w, name, dtype, ndim, shape, data); /* errors stick in w->err */
}

static int writer_meta(StWriter *w, const char *key, const char *value) {
    if (!key || !value) return writer_fail(w, "st_writer_meta: NULL key or value");
    if (!json_utf8_valid(key, strlen(key)) || !json_utf8_valid(value, strlen(value)))
        return writer_fail(w, "metadata \"%.64s\": not valid UTF-8", key);
    char *v = dup_str(value);
    if (!v) return writer_fail(w, "out of memory");
    for (int i = 0; i < w->nm; i++) {
        if (strcmp(w->mk[i], key) == 0) {
            free(w->mv[i]);
            w->mv[i] = v;
            return 0;
        }
    }
    char *k = NULL;
    if (w->nm == w->mcap) {
        int ncap = w->mcap ? 2 * w->mcap : 16;
        char **nk = realloc(w->mk, (size_t)ncap * sizeof *nk);
        if (nk) w->mk = nk;
        char **nv = realloc(w->mv, (size_t)ncap * sizeof *nv);
        if (nv) w->mv = nv;
        if (!nk || !nv) goto oom;
        w->mcap = ncap;
    }
    k = dup_str(key);
    if (!k) goto oom;
    w->mk[w->nm] = k;
    w->mv[w->nm] = v;
    w->nm++;
    return 0;
oom:
    free(v);
    return writer_fail(w, "out of memory");
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    if (w) writer_meta(w, key, value); /* errors stick in w->err */
}

/* A growing string for the header; `oom` sticks once an allocation fails. */
typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} StrBuf;

static void sb_reserve(StrBuf *b, size_t extra) {
    if (b->oom || b->n + extra + 1 <= b->cap) return;
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->n + extra + 1) ncap *= 2;
    char *ns = realloc(b->s, ncap);
    if (!ns) {
        b->oom = 1;
        return;
    }
    b->s = ns;
    b->cap = ncap;
}

static void sb_add(StrBuf *b, const char *s) {
    size_t k = strlen(s);
    sb_reserve(b, k);
    if (b->oom) return;
    memcpy(b->s + b->n, s, k + 1);
    b->n += k;
}

static void sb_json_string(StrBuf *b, const char *s) {
    size_t k = (size_t)json_escape(NULL, 0, s);
    sb_reserve(b, k);
    if (b->oom) return;
    json_escape(b->s + b->n, k + 1, s);
    b->n += k;
}

/* Builds the header JSON, padded with spaces to a multiple of 8 bytes. */
static int build_header(const StWriter *w, StrBuf *b) {
    char num[48];
    uint64_t offset = 0;
    sb_add(b, "{");
    if (w->nm > 0) {
        sb_add(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) sb_add(b, ",");
            sb_json_string(b, w->mk[i]);
            sb_add(b, ":");
            sb_json_string(b, w->mv[i]);
        }
        sb_add(b, "}");
    }
    for (int i = 0; i < w->n; i++) {
        const WTensor *t = &w->t[i];
        if (i || w->nm > 0) sb_add(b, ",");
        sb_json_string(b, t->name);
        sb_add(b, ":{\"dtype\":\"");
        sb_add(b, dtype_name(t->dtype));
        sb_add(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
            sb_add(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset,
                 offset + (uint64_t)t->nbytes);
        sb_add(b, num);
        offset += t->nbytes;
    }
    sb_add(b, "}");
    while (!b->oom && b->n % 8 != 0) sb_add(b, " ");
    return b->oom ? -1 : 0;
}

int st_writer_save(StWriter *w, const char *path, char *err, size_t errlen) {
    StrBuf hdr = {0};
    FILE *fp = NULL;
    if (err && errlen) err[0] = '\0';
    if (!path) path = "(null)";
    if (!w) {
        set_err(err, errlen, "%s: NULL writer", path);
        return -1;
    }
    if (w->err[0]) {
        set_err(err, errlen, "%s: %s", path, w->err);
        return -1;
    }
    if (!host_is_little_endian()) {
        set_err(err, errlen, "%s: big-endian hosts are not supported", path);
        return -1;
    }
    if (build_header(w, &hdr) != 0) {
        set_err(err, errlen, "%s: out of memory building the header", path);
        goto fail;
    }
    if (hdr.n > ST_MAX_HEADER) {
        set_err(err, errlen, "%s: header of %zu bytes exceeds the 100 MB limit", path, hdr.n);
        goto fail;
    }
    AtomicFile af;
    char why[512];
    if (afile_open(&af, path, why, sizeof why)) {
        set_err(err, errlen, "%s: %s", path, why);
        goto fail;
    }
    fp = af.f;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)hdr.n >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(hdr.s, 1, hdr.n, fp) == hdr.n;
    for (int i = 0; ok && i < w->n; i++)
        if (w->t[i].nbytes > 0) ok = fwrite(w->t[i].data, 1, w->t[i].nbytes, fp) == w->t[i].nbytes;
    if (!ok) {
        set_err(err, errlen, "%s: writing %s failed: %s", path, af.tmp, strerror(errno));
        afile_abort(&af);
        goto fail;
    }
    if (afile_commit(&af, why, sizeof why)) {
        set_err(err, errlen, "%s: %s", path, why);
        goto fail;
    }
    free(hdr.s);
    return 0;
fail:
    free(hdr.s);
    return -1;
}
