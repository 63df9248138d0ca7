/* tests/test_safetensors.c: formats/safetensors.c and formats/json.c.
 *
 * Usage: test_safetensors [FIXTURE_DIR]   (default ../shared/fixtures, from the repo root)
 * Temporary files go to /tmp, named after the process id, and are removed at the end. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* getpid, opendir, unlink */
#endif
#include "config.h"
#include "json.h"
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *fixture_dir = "../shared/fixtures";

/* A per-process temp path /tmp/test_st_PID_TAG.safetensors (static buffer per slot). */
static const char *tmp_path(const char *tag) {
    static char bufs[4][256];
    static int slot;
    char *b = bufs[slot++ % 4];
    snprintf(b, 256, "/tmp/test_st_%ld_%s.safetensors", (long)getpid(), tag);
    return b;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    size_t w = n ? fwrite(data, 1, n, fp) : 0;
    return (fclose(fp) == 0 && w == n) ? 0 : -1;
}

/* Reads a whole file into a malloc'd buffer; NULL on error. */
static unsigned char *read_file(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    if (b && fread(b, 1, (size_t)sz, fp) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(fp);
    *n = (size_t)sz;
    return b;
}

/* Writes a safetensors file by hand: the header length `hlen` is given separately so
   tests can lie about it. */
static void write_raw_st(const char *path, uint64_t hlen, const char *header, const void *data, size_t ndata) {
    size_t nh = strlen(header);
    unsigned char *b = malloc(8 + nh + ndata + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, header, nh);
    if (ndata) memcpy(b + 8 + nh, data, ndata);
    write_file(path, b, 8 + nh + ndata);
    free(b);
}

static void write_st(const char *path, const char *header, const void *data, size_t ndata) {
    write_raw_st(path, strlen(header), header, data, ndata);
}

/* st_load must refuse path with a message naming the file and containing `why`. */
#define CHECK_REFUSED(path, why)                                                            \
    do {                                                                                    \
        StFile f_;                                                                          \
        char e_[512] = "";                                                                  \
        int rc_ = st_load(&f_, (path), e_, sizeof e_);                                      \
        CHECK(rc_ == -1, "%s should be refused", (path));                                   \
        CHECK(strstr(e_, (path)) != NULL, "message does not name the file: '%s'", e_);      \
        CHECK(strstr(e_, (why)) != NULL, "message '%s' lacks '%s'", e_, (why));             \
        CHECK(f_.buf == NULL && f_.tensors == NULL && f_.n_tensors == 0, "not emptied");    \
        st_free(&f_);                                                                       \
    } while (0)

static int shape_is(const StTensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

/* ------------------------------------------------------------------ round trip ---- */

static const char *TRICKY_META = "quote \" backslash \\ newline \n tab \t ctrl \x01 unicode \xc3\xa9 \xf0\x9f\x98\x80 end";
static const char *CONFIG_META = "{\"dim\": 64, \"norm_type\": \"layernorm\", \"path\": \"C:\\\\x\"}";

static void test_roundtrip(void) {
    const char *path = tmp_path("rt");
    float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    float scalar = 42.5f;
    int64_t ids[5] = {0, -1, INT64_MAX, INT64_MIN, 255};
    double d[2] = {3.141592653589793, -1e300};
    int32_t i32[3] = {7, -7, INT32_MAX};
    int64_t sh_a[2] = {2, 3}, sh_ids[1] = {5}, sh_d[1] = {2}, sh_i32[3] = {1, 3, 1}, sh_empty[2] = {0, 5};

    StWriter *w = st_writer_new();
    CHECK(w != NULL, "writer");
    st_writer_add(w, "ids", ST_I64, 1, sh_ids, ids);
    st_writer_add(w, "d", ST_F64, 1, sh_d, d);
    st_writer_add(w, "a.weight", ST_F32, 2, sh_a, a);
    st_writer_add(w, "scalar", ST_F32, 0, NULL, &scalar);
    st_writer_add(w, "i32", ST_I32, 3, sh_i32, i32);
    st_writer_add(w, "empty", ST_F32, 2, sh_empty, NULL);
    st_writer_add(w, "name with \"quotes\" and \\", ST_F32, 0, NULL, &scalar);
    st_writer_meta(w, "tricky", TRICKY_META);
    st_writer_meta(w, "config", CONFIG_META);
    st_writer_meta(w, "replaced", "old");
    st_writer_meta(w, "replaced", "new");
    st_writer_meta(w, "empty", "");
    char err[512] = "";
    int rc = st_writer_save(w, path, err, sizeof err);
    CHECK(rc == 0, "save: %s", err);
    st_writer_free(w);

    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);

    size_t n;
    unsigned char *raw = read_file(path, &n);
    CHECK(raw && n >= 8, "read back");
    if (raw && n >= 8) {
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
        CHECK(hlen % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hlen);
        CHECK(hlen + 8 <= n && raw[8] == '{', "header starts with {");
        /* 6*4 + 4 + 5*8 + 2*8 + 3*4 + 0 + 4 bytes of data */
        CHECK(n == 8 + hlen + 100, "file size %zu, header %llu", n, (unsigned long long)hlen);
    }
    free(raw);

    StFile f;
    rc = st_load(&f, path, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    unlink(path);
    if (rc != 0) return;
    CHECK(f.n_tensors == 7, "n_tensors %d", f.n_tensors);
    const StTensor *t = st_find(&f, "a.weight");
    CHECK(t && t->dtype == ST_F32 && strcmp(t->dtype_str, "F32") == 0 && shape_is(t, 2, sh_a), "a.weight");
    CHECK(t && st_numel(t) == 6 && t->nbytes == 24, "a.weight size");
    CHECK(t && memcmp(st_tensor_data(&f, t), a, sizeof a) == 0, "a.weight data");
    /* Offsets follow the order of st_writer_add. */
    const StTensor *ti = st_find(&f, "ids");
    CHECK(ti && ti->offset == 0 && ti->dtype == ST_I64 && shape_is(ti, 1, sh_ids), "ids first");
    CHECK(ti && memcmp(st_tensor_data(&f, ti), ids, sizeof ids) == 0, "ids data");
    CHECK(ti && ((uintptr_t)st_tensor_data(&f, ti)) % 8 == 0, "data region aligned");
    const StTensor *td = st_find(&f, "d");
    CHECK(td && td->offset == 40 && td->dtype == ST_F64 && memcmp(st_tensor_data(&f, td), d, sizeof d) == 0, "d");
    CHECK(t && t->offset == 56, "a.weight after d");
    const StTensor *ts = st_find(&f, "scalar");
    CHECK(ts && ts->ndim == 0 && st_numel(ts) == 1 && ts->nbytes == 4, "0-dim scalar");
    CHECK(ts && *(const float *)st_tensor_data(&f, ts) == 42.5f, "scalar value");
    const StTensor *t32 = st_find(&f, "i32");
    CHECK(t32 && t32->dtype == ST_I32 && shape_is(t32, 3, sh_i32) && memcmp(st_tensor_data(&f, t32), i32, 12) == 0, "i32");
    const StTensor *te = st_find(&f, "empty");
    CHECK(te && shape_is(te, 2, sh_empty) && te->nbytes == 0 && st_numel(te) == 0, "empty tensor");
    CHECK(st_find(&f, "name with \"quotes\" and \\") != NULL, "escaped tensor name");
    CHECK(st_find(&f, "missing") == NULL && st_find(&f, "a.weigh") == NULL, "absent tensor");

    const char *v = st_meta(&f, "tricky");
    CHECK(v && strcmp(v, TRICKY_META) == 0, "tricky meta: '%s'", v ? v : "(null)");
    v = st_meta(&f, "config");
    CHECK(v && strcmp(v, CONFIG_META) == 0, "config meta: '%s'", v ? v : "(null)");
    double dim = 0;
    char s[64];
    CHECK(v && json_get_number(v, "dim", &dim) == 0 && dim == 64, "config dim");
    CHECK(v && json_get_string(v, "path", s, sizeof s) == 0 && strcmp(s, "C:\\x") == 0, "config path '%s'", s);
    v = st_meta(&f, "replaced");
    CHECK(v && strcmp(v, "new") == 0, "meta replaced");
    v = st_meta(&f, "empty");
    CHECK(v && v[0] == '\0', "empty meta");
    CHECK(st_meta(&f, "nope") == NULL, "absent meta");
    CHECK(f.n_meta == 4, "n_meta %d", f.n_meta);
    st_free(&f);
    CHECK(f.buf == NULL && f.n_tensors == 0, "st_free empties");
    st_free(&f); /* twice is harmless */
}

/* A file with no tensors and no metadata is "{}" padded to 8 bytes. */
static void test_roundtrip_empty(void) {
    const char *path = tmp_path("empty");
    StWriter *w = st_writer_new();
    char err[512] = "";
    CHECK(st_writer_save(w, path, err, sizeof err) == 0, "save: %s", err);
    st_writer_free(w);
    size_t n;
    unsigned char *raw = read_file(path, &n);
    CHECK(raw && n == 16 && raw[0] == 8 && memcmp(raw + 8, "{}      ", 8) == 0, "empty file layout");
    free(raw);
    StFile f;
    CHECK(st_load(&f, path, err, sizeof err) == 0 && f.n_tensors == 0 && f.n_meta == 0, "load: %s", err);
    st_free(&f);
    unlink(path);
}

/* Saving over an existing file replaces it whole. */
static void test_overwrite(void) {
    const char *path = tmp_path("ow");
    float big[100] = {0}, small[1] = {7};
    int64_t sh_big[1] = {100}, sh_small[1] = {1};
    char err[512] = "";
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 1, sh_big, big);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 1, sh_small, small);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    StFile f;
    CHECK(st_load(&f, path, err, sizeof err) == 0, "%s", err);
    const StTensor *t = st_find(&f, "x");
    CHECK(t && t->shape[0] == 1 && *(const float *)st_tensor_data(&f, t) == 7.0f, "new content");
    st_free(&f);
    unlink(path);
}

/* Bad writer calls make st_writer_save fail with a message, and write nothing. */
static void test_writer_errors(void) {
    const char *path = tmp_path("werr");
    float x = 1;
    int64_t neg[1] = {-1}, one[1] = {1};
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    struct {
        const char *why;
        const char *name;
        StDtype dtype;
        int ndim;
        const int64_t *shape;
        const void *data;
    } cases[] = {
        {"added twice", "x", ST_F32, 0, NULL, &x},
        {"cannot write dtype", "y", ST_OTHER, 0, NULL, &x},
        {"ndim", "y", ST_F32, 9, one, &x},
        {"negative", "y", ST_F32, 1, neg, &x},
        {"NULL data", "y", ST_F32, 1, one, NULL},
        {"too long", longname, ST_F32, 0, NULL, &x},
        {"__metadata__", "__metadata__", ST_F32, 0, NULL, &x},
        {"UTF-8", "bad\xff", ST_F32, 0, NULL, &x},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unlink(path);
        StWriter *w = st_writer_new();
        st_writer_add(w, "x", ST_F32, 0, NULL, &x);
        st_writer_add(w, cases[i].name, cases[i].dtype, cases[i].ndim, cases[i].shape, cases[i].data);
        char err[512] = "";
        int rc = st_writer_save(w, path, err, sizeof err);
        CHECK(rc == -1, "case %zu should fail", i);
        CHECK(strstr(err, path) && strstr(err, cases[i].why), "case %zu: '%s'", i, err);
        CHECK(access(path, F_OK) != 0, "case %zu wrote a file", i);
        st_writer_free(w);
    }
    /* An unwritable destination: the error names the path, no crash. */
    StWriter *w = st_writer_new();
    char err[512] = "";
    CHECK(st_writer_save(w, "/nonexistent_dir/x.safetensors", err, sizeof err) == -1, "unwritable");
    CHECK(strstr(err, "/nonexistent_dir/x.safetensors") != NULL, "'%s'", err);
    st_writer_free(w);
}

/* ------------------------------------------------------------------ fixtures ---- */

static void check_config(const StFile *f, const char *name) {
    const char *cfg = st_meta(f, "config");
    CHECK(cfg != NULL, "%s: no config", name);
    if (!cfg) return;
    double dim = 0, ntok = 0, ef = 0;
    char norm[32];
    int causal = -1;
    CHECK(json_get_number(cfg, "dim", &dim) == 0 && dim == 64, "%s: dim", name);
    CHECK(json_get_number(cfg, "num_tokens", &ntok) == 0 && ntok == 256, "%s: num_tokens", name);
    CHECK(json_get_number(cfg, "expansion_factor", &ef) == 0 && ef == 2.0, "%s: expansion_factor", name);
    CHECK(json_get_bool(cfg, "causal", &causal) == 0 && causal == 1, "%s: causal", name);
    CHECK(json_get_string(cfg, "norm_type", norm, sizeof norm) == 0 &&
              (strcmp(norm, "layernorm") == 0 || strcmp(norm, "scalenorm") == 0),
          "%s: norm_type", name);
    CHECK(json_get_number(cfg, "norm_type", &dim) == -1, "%s: norm_type is not a number", name);
    CHECK(json_get_number(cfg, "no_such_key", &dim) == 1, "%s: absent key", name);
}

static int cmp_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Rewrites a loaded fixture with st_writer (tensors in file order, metadata in header
   order): the result must be byte-identical to the file written by Python. */
static void check_rewrite_identical(const StFile *f, const char *src, const char *name) {
    const char *path = tmp_path("rewrite");
    const StTensor **order = malloc((size_t)f->n_tensors * sizeof *order);
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_offset);
    StWriter *w = st_writer_new();
    for (int i = 0; i < f->n_meta; i++) st_writer_meta(w, f->meta_keys[i], f->meta_vals[i]);
    for (int i = 0; i < f->n_tensors; i++)
        st_writer_add(w, order[i]->name, order[i]->dtype, order[i]->ndim, order[i]->shape,
                      st_tensor_data(f, order[i]));
    char err[512] = "";
    CHECK(st_writer_save(w, path, err, sizeof err) == 0, "%s: rewrite: %s", name, err);
    st_writer_free(w);
    free(order);
    size_t n1, n2;
    unsigned char *a = read_file(src, &n1), *b = read_file(path, &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "%s: rewrite differs (%zu vs %zu bytes)", name, n1, n2);
    free(a);
    free(b);
    unlink(path);
}

static void test_fixtures(void) {
    DIR *dir = opendir(fixture_dir);
    CHECK(dir != NULL, "cannot open fixture dir %s", fixture_dir);
    if (!dir) return;
    int count = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        const char *ext = ".safetensors";
        if (len < strlen(ext) || strcmp(de->d_name + len - strlen(ext), ext) != 0) continue;
        char path[1024], err[512] = "";
        snprintf(path, sizeof path, "%s/%s", fixture_dir, de->d_name);
        StFile f;
        int rc = st_load(&f, path, err, sizeof err);
        CHECK(rc == 0, "%s", err);
        if (rc != 0) continue;
        count++;
        CHECK(f.n_tensors > 0, "%s: no tensors", path);
        int all_known = 1;
        for (int i = 0; i < f.n_tensors; i++) {
            const StTensor *t = &f.tensors[i];
            all_known &= t->dtype != ST_OTHER;
            if (t->dtype == ST_OTHER) continue; /* none today; st_writer cannot write them */
            CHECK((size_t)st_numel(t) * st_dtype_size(t->dtype) == t->nbytes, "%s: %s size", path, t->name);
            CHECK(((uintptr_t)st_tensor_data(&f, t)) % st_dtype_size(t->dtype) == 0, "%s: %s misaligned", path,
                  t->name);
        }
        check_config(&f, path);
        if (all_known) check_rewrite_identical(&f, path, de->d_name);
        st_free(&f);
    }
    closedir(dir);
    CHECK(count >= 8, "loaded %d fixtures, expected at least 8", count);
}

static void test_fixture_shapes(void) {
    char path[1024], err[512] = "";
    StFile f;
    snprintf(path, sizeof path, "%s/flash_small.weights.safetensors", fixture_dir);
    if (st_load(&f, path, err, sizeof err) == 0) {
        const int64_t sh[2] = {256, 64};
        const StTensor *t = st_find(&f, "token_emb.weight");
        CHECK(t && t->dtype == ST_F32 && shape_is(t, 2, sh), "token_emb.weight [256,64] F32");
        const int64_t sh1[1] = {1};
        CHECK(shape_is(st_find(&f, "layers.0.norm.g"), 1, sh1), "layers.0.norm.g [1]");
        st_free(&f);
    } else {
        CHECK(0, "%s", err);
    }
    snprintf(path, sizeof path, "%s/flash_small.expected.safetensors", fixture_dir);
    if (st_load(&f, path, err, sizeof err) == 0) {
        const int64_t sh[2] = {2, 46}, shl[3] = {2, 45, 256}, sh1[1] = {1};
        const StTensor *t = st_find(&f, "tokens");
        CHECK(t && t->dtype == ST_I64 && strcmp(t->dtype_str, "I64") == 0 && shape_is(t, 2, sh), "tokens I64 [2,46]");
        if (t) {
            const int64_t *tok = st_tensor_data(&f, t);
            int in_range = 1;
            for (int64_t i = 0; i < st_numel(t); i++) in_range &= tok[i] >= 0 && tok[i] < 256;
            CHECK(in_range, "token ids in [0,256)");
        }
        CHECK(shape_is(st_find(&f, "logits"), 3, shl), "logits [2,45,256]");
        const StTensor *l = st_find(&f, "loss");
        CHECK(l && shape_is(l, 1, sh1), "loss [1]");
        if (l) {
            float loss = *(const float *)st_tensor_data(&f, l);
            CHECK(loss > 1.0f && loss < 20.0f, "loss %g plausible", loss);
        }
        CHECK(st_meta(&f, "T") && strcmp(st_meta(&f, "T"), "45") == 0, "meta T");
        st_free(&f);
    } else {
        CHECK(0, "%s", err);
    }
    snprintf(path, sizeof path, "%s/flash_small_ln.expected.safetensors", fixture_dir);
    if (st_load(&f, path, err, sizeof err) == 0) {
        const int64_t sh[2] = {2, 65};
        CHECK(shape_is(st_find(&f, "tokens"), 2, sh), "ln tokens [2,65]");
        int shift = -1;
        CHECK(json_get_bool(st_meta(&f, "config"), "shift_tokens", &shift) == 0 && shift == 0, "shift_tokens");
        st_free(&f);
    } else {
        CHECK(0, "%s", err);
    }
    snprintf(path, sizeof path, "%s/adamw_local.expected.safetensors", fixture_dir);
    if (st_load(&f, path, err, sizeof err) == 0) {
        const int64_t sh[4] = {3, 2, 2, 41};
        CHECK(shape_is(st_find(&f, "batches"), 4, sh), "batches [3,2,2,41]");
        CHECK(st_meta(&f, "clip_mode") && strcmp(st_meta(&f, "clip_mode"), "local") == 0, "clip_mode");
        st_free(&f);
    } else {
        CHECK(0, "%s", err);
    }
}

/* ------------------------------------------------------------------ malformed ---- */

static void test_malformed(void) {
    const char *p = tmp_path("bad");
    unsigned char zeros[64] = {0};
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp");

    CHECK_REFUSED("/tmp/definitely_not_here.safetensors", "cannot open");
    CHECK_REFUSED(dir, "not a regular file");
    write_file(p, zeros, 0);
    CHECK_REFUSED(p, "too short");
    write_file(p, zeros, 5);
    CHECK_REFUSED(p, "too short");
    write_raw_st(p, 1000, "{}", NULL, 0);
    CHECK_REFUSED(p, "larger than the file");
    write_raw_st(p, UINT64_MAX, "{}", NULL, 0);
    CHECK_REFUSED(p, "larger than the file");
    write_raw_st(p, 0, "", NULL, 0);
    CHECK_REFUSED(p, "invalid JSON");

    /* Bad JSON of several kinds. */
    const char *bad_json[] = {
        "{\"a\":{\"dtype\":\"F32\",",
        "[]",
        " {}",                     /* safetensors wants '{' first */
        "{}x",                     /* trailing garbage */
        "{\"a\" {}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[1,}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"\\q\"}}",
        "{\"a\\",
        "{\"a",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        write_st(p, bad_json[i], zeros, 4);
        CHECK_REFUSED(p, "JSON");
    }

    /* Each header (with a data region of n zero bytes) is refused with a message
       containing the expected text. */
    const struct { const char *header; size_t n; const char *why; } refused[] = {
        /* Offsets past the end, inconsistent with the shape, overlapping, with holes, or
           leaving bytes over. */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "out of range"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12"},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, "needs 32"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "end before"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "hole"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "cover 4 bytes but the data region has 8"},
        {"{}", 4, "no tensors"},
        /* Unsupported or ill-typed fields. */
        {"{\"a\":{\"dtype\":\"X99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unsupported dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "more than 8 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,4]}}", 4, "too many elements"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4, "integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\""},
        {"{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
        {"{\"a\":[0,4]}", 4, "not an object"},
        {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "not a valid string"},
        {"{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate"},
        {"{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "UTF-8"},
        {"{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1, "whole bytes"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        write_st(p, refused[i].header, zeros, refused[i].n);
        CHECK_REFUSED(p, refused[i].why);
    }
    {
        char hdr[400];
        char name[300];
        memset(name, 'n', 299);
        name[299] = '\0';
        snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
        write_st(p, hdr, zeros, 4);
        CHECK_REFUSED(p, "too long");
    }
    {
        /* Deep nesting in an ignored field must not exhaust the stack. */
        size_t depth = 100000;
        char *hdr = malloc(2 * depth + 200);
        size_t n = (size_t)sprintf(hdr, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":");
        memset(hdr + n, '[', depth);
        memset(hdr + n + depth, ']', depth);
        strcpy(hdr + n + 2 * depth, "}}");
        write_st(p, hdr, zeros, 4);
        CHECK_REFUSED(p, "JSON");
        free(hdr);
    }

    /* Things that are fine: unknown fields skipped, BF16 kept as ST_OTHER, null metadata,
       padding spaces after the object, zero-size tensors. */
    write_st(p, "{\"__metadata__\":null,\"b\":{\"shape\":[3],\"x\":{\"y\":[1,2,{}]},\"dtype\":\"BF16\","
                "\"data_offsets\":[0,6]},\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[6,6]}}   ",
             zeros, 6);
    StFile f;
    char err[512] = "";
    CHECK(st_load(&f, p, err, sizeof err) == 0, "%s", err);
    const StTensor *t = st_find(&f, "b");
    CHECK(t && t->dtype == ST_OTHER && strcmp(t->dtype_str, "BF16") == 0 && t->nbytes == 6 && st_numel(t) == 3,
          "BF16 tensor");
    CHECK(st_dtype_size(ST_OTHER) == 0 && st_dtype_size(ST_F64) == 8 && st_dtype_size(ST_I32) == 4, "dtype sizes");
    st_free(&f);

    /* A header length that is not a multiple of 8: the data must still come out aligned. */
    write_st(p, "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", zeros, 16);
    CHECK(st_load(&f, p, err, sizeof err) == 0, "%s", err);
    CHECK(f.n_tensors == 1 && ((uintptr_t)f.data) % 64 == 0, "data region aligned");
    st_free(&f);
    unlink(p);
}

/* Every truncation of a real fixture is refused, never crashes. */
static void test_truncated_fixture(void) {
    char src[1024];
    snprintf(src, sizeof src, "%s/flash_small.weights.safetensors", fixture_dir);
    size_t n;
    unsigned char *b = read_file(src, &n);
    CHECK(b != NULL && n > 4000, "read %s", src);
    if (!b) return;
    const char *p = tmp_path("trunc");
    size_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    size_t cuts[] = {0, 1, 7, 8, 9, 100, hlen, hlen + 7, hlen + 8, hlen + 9, n / 2, n - 4, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_file(p, b, cuts[i]);
        StFile f;
        char err[512] = "";
        CHECK(st_load(&f, p, err, sizeof err) == -1 && strstr(err, p), "cut at %zu: '%s'", cuts[i], err);
    }
    /* One byte too many is refused as well. */
    unsigned char *c = malloc(n + 1);
    memcpy(c, b, n);
    c[n] = 0;
    write_file(p, c, n + 1);
    CHECK_REFUSED(p, "data region");
    free(c);
    free(b);
    unlink(p);
}

/* Random byte changes to a small valid file: whatever st_load accepts must be
   consistent, and nothing may crash (run under ASan/UBSan to make this bite). */
static void test_fuzz(void) {
    const char *src = tmp_path("fuzzsrc"), *p = tmp_path("fuzz");
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t ids[3] = {1, 2, 3}, sh_a[2] = {2, 3}, sh_ids[1] = {3};
    StWriter *w = st_writer_new();
    st_writer_add(w, "ids", ST_I64, 1, sh_ids, ids);
    st_writer_add(w, "a", ST_F32, 2, sh_a, a);
    st_writer_meta(w, "config", "{\"dim\": 64, \"s\": \"x\\\"y\"}");
    char err[512] = "";
    CHECK(st_writer_save(w, src, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    size_t n;
    unsigned char *b = read_file(src, &n);
    CHECK(b != NULL, "read");
    if (!b) return;
    unsigned char *c = malloc(n);
    uint64_t rng = 12345;
    int accepted = 0, refused = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(c, b, n);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(rng >> 33) % n;
            static const char interesting[] = "{}[]\",:0919 -\\u.eE";
            unsigned char v = (rng >> 20) & 1 ? (unsigned char)(rng >> 8)
                                                : (unsigned char)interesting[(rng >> 8) % (sizeof interesting - 1)];
            c[pos] = v;
        }
        write_file(p, c, n);
        StFile f;
        if (st_load(&f, p, err, sizeof err) == 0) {
            accepted++;
            size_t data_size = f.size - (size_t)(f.data - f.buf);
            for (int i = 0; i < f.n_tensors; i++) {
                const StTensor *t = &f.tensors[i];
                CHECK(t->offset + t->nbytes <= data_size, "iter %d: range past the data", iter);
                if (t->dtype != ST_OTHER)
                    CHECK((size_t)st_numel(t) * st_dtype_size(t->dtype) == t->nbytes, "iter %d: size", iter);
            }
            st_free(&f);
        } else {
            refused++;
            CHECK(err[0] != '\0', "iter %d: empty message", iter);
        }
    }
    CHECK(accepted > 0 && refused > 0, "fuzz accepted %d refused %d", accepted, refused);
    free(c);
    free(b);
    unlink(p);
    unlink(src);
}

/* ------------------------------------------------------------------ json ---- */

static void test_json_get(void) {
    const char *cfg = "{\"num_tokens\": 256, \"dim\": 64, \"expansion_factor\": 2.0, "
                      "\"norm_type\": \"layernorm\", \"shift_tokens\": false, \"causal\": true}";
    double d = -1;
    int b = -1;
    char s[64];
    CHECK(json_get_number(cfg, "num_tokens", &d) == 0 && d == 256, "num_tokens");
    CHECK(json_get_number(cfg, "expansion_factor", &d) == 0 && d == 2.0, "expansion_factor");
    CHECK(json_get_bool(cfg, "shift_tokens", &b) == 0 && b == 0, "shift_tokens");
    CHECK(json_get_bool(cfg, "causal", &b) == 0 && b == 1, "causal");
    CHECK(json_get_string(cfg, "norm_type", s, sizeof s) == 0 && strcmp(s, "layernorm") == 0, "norm_type");
    /* absent */
    CHECK(json_get_number(cfg, "depth", &d) == 1, "absent number");
    CHECK(json_get_bool(cfg, "depth", &b) == 1, "absent bool");
    CHECK(json_get_string(cfg, "depth", s, sizeof s) == 1, "absent string");
    CHECK(json_get_number(cfg, "", &d) == 1, "empty key");
    CHECK(json_get_number(cfg, "dim ", &d) == 1, "key prefix is not a match");
    /* wrong type */
    CHECK(json_get_number(cfg, "norm_type", &d) == -1, "string as number");
    CHECK(json_get_bool(cfg, "dim", &b) == -1, "number as bool");
    CHECK(json_get_string(cfg, "causal", s, sizeof s) == -1, "bool as string");
    CHECK(json_get_number("{\"x\": null}", "x", &d) == -1, "null as number");
    CHECK(json_get_number("{\"x\": \"5\"}", "x", &d) == -1, "quoted number");
    CHECK(json_get_number("{\"x\": [5]}", "x", &d) == -1, "array as number");
    /* numbers */
    CHECK(json_get_number("{\"x\":-1.5e3}", "x", &d) == 0 && d == -1500, "exponent");
    CHECK(json_get_number("{\"x\":0}", "x", &d) == 0 && d == 0, "zero");
    CHECK(json_get_number("{\"x\":1E-2}", "x", &d) == 0 && d == 0.01, "1E-2");
    CHECK(json_get_number("{\"x\":01}", "x", &d) == -1, "leading zero");
    CHECK(json_get_number("{\"x\":+1}", "x", &d) == -1, "plus sign");
    CHECK(json_get_number("{\"x\":1.}", "x", &d) == -1, "1.");
    CHECK(json_get_number("{\"x\":.5}", "x", &d) == -1, ".5");
    CHECK(json_get_number("{\"x\":0x10}", "x", &d) == -1, "hex");
    CHECK(json_get_number("{\"x\":inf}", "x", &d) == -1, "inf");
    CHECK(json_get_number("{\"x\":NaN}", "x", &d) == -1, "NaN");
    CHECK(json_get_number("{\"x\":1e}", "x", &d) == -1, "1e");
    /* nesting is skipped, only top-level keys count */
    const char *nested = "{\"inner\": {\"dim\": 5, \"s\": \"}{\\\"\", \"arr\": [1, {\"dim\": 6}, []]}, "
                         "\"tricky\": \"\\\"dim\\\": 7\", \"dim\": 64}";
    CHECK(json_get_number(nested, "dim", &d) == 0 && d == 64, "nested dim: %g", d);
    CHECK(json_get_number(nested, "s", &d) == 1, "nested key not found at top level");
    CHECK(json_get_number(nested, "inner", &d) == -1, "object as number");
    CHECK(json_get_number("{\"a\": {\"dim\": 5}}", "dim", &d) == 1, "only nested");
    /* whitespace, escaped keys, duplicates */
    CHECK(json_get_number(" \n\t{ \"dim\" \r\n : \t 3 \n} \n", "dim", &d) == 0 && d == 3, "whitespace");
    CHECK(json_get_number("{\"d\\u0069m\": 7}", "dim", &d) == 0 && d == 7, "escaped key");
    CHECK(json_get_number("{\"dim\": 1, \"dim\": 2}", "dim", &d) == -1, "a repeated key is refused");
    CHECK(json_get_number("{}", "dim", &d) == 1, "empty object");
    /* malformed */
    CHECK(json_get_number("{\"dim\": 64", "dim", &d) == -1, "unterminated");
    CHECK(json_get_number("{\"dim\": 64,}", "dim", &d) == -1, "trailing comma");
    CHECK(json_get_number("{\"dim\": 64} x", "dim", &d) == -1, "trailing garbage");
    CHECK(json_get_number("[1]", "dim", &d) == -1, "not an object");
    CHECK(json_get_number("", "dim", &d) == -1, "empty text");
    CHECK(json_get_number("{dim: 1}", "dim", &d) == -1, "unquoted key");
    CHECK(json_get_number("{\"dim\" 1}", "dim", &d) == -1, "missing colon");
    CHECK(json_get_number("{\"a\": tru, \"dim\": 1}", "dim", &d) == -1, "bad literal elsewhere");
    CHECK(json_get_number("{\"a\": \"x\", \"dim\": 1", "a", &d) == -1, "malformed after the key");
    CHECK(json_get_number(NULL, "dim", &d) == -1, "NULL json");
    CHECK(json_get_bool("{\"b\": True}", "b", &b) == -1, "True");
    CHECK(json_get_bool("{\"b\": false}", "b", &b) == 0 && b == 0, "false");
}

static void test_json_strings(void) {
    char s[64];
    CHECK(json_get_string("{\"s\": \"a\\\"b\\\\c\\/d\\n\\t\\r\\b\\f\"}", "s", s, sizeof s) == 0 &&
              strcmp(s, "a\"b\\c/d\n\t\r\b\f") == 0,
          "escapes");
    CHECK(json_get_string("{\"s\": \"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"}", "s", s, sizeof s) == 0 &&
              strcmp(s, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0,
          "\\u escapes to UTF-8");
    CHECK(json_get_string("{\"s\": \"\"}", "s", s, sizeof s) == 0 && s[0] == '\0', "empty string");
    CHECK(json_get_string("{\"s\": \"\\ud83d\"}", "s", s, sizeof s) == -1, "lone high surrogate");
    CHECK(json_get_string("{\"s\": \"\\ude00\"}", "s", s, sizeof s) == -1, "lone low surrogate");
    CHECK(json_get_string("{\"s\": \"\\u0000\"}", "s", s, sizeof s) == -1, "\\u0000");
    CHECK(json_get_string("{\"s\": \"\\u12\"}", "s", s, sizeof s) == -1, "short \\u");
    CHECK(json_get_string("{\"s\": \"\\x\"}", "s", s, sizeof s) == -1, "unknown escape");
    CHECK(json_get_string("{\"s\": \"a\nb\"}", "s", s, sizeof s) == -1, "raw newline");
    CHECK(json_get_string("{\"s\": \"abc", "s", s, sizeof s) == -1, "unterminated string");
    CHECK(json_get_string("{\"s\": \"abc\\", "s", s, sizeof s) == -1, "ends in backslash");
    /* size limits */
    CHECK(json_get_string("{\"s\": \"abcd\"}", "s", s, 5) == 0 && strcmp(s, "abcd") == 0, "exact fit");
    CHECK(json_get_string("{\"s\": \"abcd\"}", "s", s, 4) == -1 && s[0] == '\0', "too small");
}

static void test_json_escape(void) {
    char buf[128];
    CHECK(json_escape(buf, sizeof buf, "plain") == 7 && strcmp(buf, "\"plain\"") == 0, "plain");
    CHECK(json_escape(buf, sizeof buf, "") == 2 && strcmp(buf, "\"\"") == 0, "empty");
    int n = json_escape(buf, sizeof buf, "a\"b\\c\nd\te\x01\x1f\x7f\xc3\xa9/");
    const char *want = "\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\x7f\xc3\xa9/\"";
    CHECK(n == (int)strlen(want) && strcmp(buf, want) == 0, "escapes: %s", buf);
    /* snprintf-style truncation and size query */
    CHECK(json_escape(NULL, 0, "a\"b") == 6, "size query");
    memset(buf, 'X', sizeof buf);
    CHECK(json_escape(buf, 4, "a\"b") == 6 && strcmp(buf, "\"a\\") == 0 && buf[4] == 'X', "truncated: %s", buf);
    CHECK(json_escape(buf, 1, "abc") == 5 && buf[0] == '\0', "buflen 1");
    /* appending */
    size_t len = 0;
    len += (size_t)snprintf(buf, sizeof buf, "{");
    len += (size_t)json_escape(buf + len, sizeof buf - len, "k\"");
    len += (size_t)snprintf(buf + len, sizeof buf - len, ":");
    len += (size_t)json_escape(buf + len, sizeof buf - len, "v\\");
    snprintf(buf + len, sizeof buf - len, "}");
    CHECK(strcmp(buf, "{\"k\\\"\":\"v\\\\\"}") == 0, "append: %s", buf);
    CHECK(json_get_string(buf, "k\"", buf + 100, 28) == 0 && strcmp(buf + 100, "v\\") == 0, "read back");
    /* every ASCII character survives escape -> parse */
    char all[128], lit[1024], obj[1100], back[256];
    for (int i = 1; i < 128; i++) all[i - 1] = (char)i;
    all[127] = '\0';
    n = json_escape(lit, sizeof lit, all);
    CHECK(n > 0 && (size_t)n < sizeof lit, "escape all");
    snprintf(obj, sizeof obj, "{\"all\":%s}", lit);
    CHECK(json_get_string(obj, "all", back, sizeof back) == 0 && strcmp(back, all) == 0, "all ASCII round trip");
}

static void test_json_utf8(void) {
    CHECK(json_utf8_valid("a\xc3\xa9\xf0\x9f\x98\x80", 7) == 1, "valid utf8");
    CHECK(json_utf8_valid("", 0) == 1, "empty");
    CHECK(json_utf8_valid("\xc0\xaf", 2) == 0, "overlong");
    CHECK(json_utf8_valid("\xed\xa0\x80", 3) == 0, "surrogate");
    CHECK(json_utf8_valid("\xc3", 1) == 0, "truncated sequence");
    CHECK(json_utf8_valid("\xf4\x90\x80\x80", 4) == 0, "past U+10FFFF");
    CHECK(json_utf8_valid("\xff", 1) == 0, "0xff");
    /* strings must be valid UTF-8 inside JSON too */
    char s[16];
    CHECK(json_get_string("{\"s\": \"\xc3\"}", "s", s, sizeof s) == -1, "invalid UTF-8 in a string");
}

/* A repeated key is refused wherever JSON is read: a lookup, a model config, a run's saved
   settings, a safetensors header (its metadata, or a tensor named twice). */
static void test_json_duplicate_keys(void) {
    double d;
    CHECK(json_get_number("{\"dim\": 1, \"dim\": 2}", "dim", &d) == -1, "a repeated key is refused");
    CHECK(json_get_number("{\"a\": 1, \"b\": {\"x\": 1, \"x\": 2}}", "a", &d) == -1,
          "a repeated key in a nested object is refused");
    CHECK(json_get_number("{\"a\": 1, \"b\": {\"x\": 1}, \"c\": {\"x\": 2}}", "a", &d) == 0 && d == 1,
          "the same key in two objects is fine");
    FlashConfig c = config_default();
    char err[256] = "";
    CHECK(config_from_json(&c, "{\"dim\": 64, \"depth\": 2, \"dim\": 128}", err, sizeof err) == -1,
          "a config with a repeated key was accepted");
    const char *p = "/tmp/flash_test_dupkeys.safetensors";
    const char *hdr = "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    unsigned char zeros[8] = {0};
    write_st(p, hdr, zeros, 4);
    StFile f;
    CHECK(st_load(&f, p, err, sizeof err) == -1 && strstr(err, "duplicate"), "metadata key twice: \"%s\"", err);
    unlink(p);
}

int main(int argc, char **argv) {
    if (argc > 1) fixture_dir = argv[1];
    RUN(test_roundtrip);
    RUN(test_roundtrip_empty);
    RUN(test_overwrite);
    RUN(test_writer_errors);
    RUN(test_fixtures);
    RUN(test_fixture_shapes);
    RUN(test_malformed);
    RUN(test_truncated_fixture);
    RUN(test_fuzz);
    RUN(test_json_get);
    RUN(test_json_strings);
    RUN(test_json_escape);
    RUN(test_json_utf8);
    RUN(test_json_duplicate_keys);
    TEST_MAIN_END();
}
