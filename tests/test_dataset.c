/* tests/test_dataset.c: data loading (raw, gzip, and every refusal), the enwik8 split,
 * the rng, and batch sampling.
 *
 * Usage: test_dataset [path/to/enwik8-head.gz]   (default ../shared/data/enwik8-head.gz,
 * relative to the repository root). Scratch files go to /tmp with the pid in their names
 * so parallel runs do not collide; gzip files are made here with zlib, not shell tools. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "dataset.h"
#include "draw.h"
#include "rng.h"
#include "test.h"

static const char *g_head_path = "../shared/data/enwik8-head.gz";

/* ---------- helpers ---------- */

static void tmp_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "/tmp/test_dataset_%ld_%s", (long)getpid(), name);
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* gzip -9 of data into a malloc'ed buffer (deflate with windowBits 31 = gzip wrapper). */
static uint8_t *gzip_mem(const uint8_t *data, size_t n, size_t *nout) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&zs, (uLong)n) + 64;
    uint8_t *out = malloc(cap);
    if (!out) { deflateEnd(&zs); return NULL; }
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int ret = deflate(&zs, Z_FINISH);
    *nout = cap - zs.avail_out;
    deflateEnd(&zs);
    if (ret != Z_STREAM_END) { free(out); return NULL; }
    return out;
}

/* Text-like data that deflate compresses with both literals and matches (so a flipped
 * byte lands in real Huffman-coded data), reproducible from the seed. */
static uint8_t *make_text(size_t n, uint64_t seed) {
    static const char *words[] = {"the ", "of ", "and ", "wiki", "[[link]] ", "page ",
                                  "<text>", "1998 ", "revision ", "\n"};
    uint8_t *buf = malloc(n);
    Rng r;
    rng_seed(&r, seed);
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng_below(&r, 10)];
        for (size_t k = 0; w[k] && i < n; k++) buf[i++] = (uint8_t)w[k];
        if (rng_below(&r, 4) == 0 && i < n) buf[i++] = (uint8_t)('a' + rng_below(&r, 26));
    }
    return buf;
}

/* make_text(n, seed), gzipped; NULL if zlib failed. */
static uint8_t *gzip_text(size_t n, uint64_t seed, size_t *nz) {
    uint8_t *data = make_text(n, seed);
    uint8_t *gz = gzip_mem(data, n, nz);
    free(data);
    return gz;
}

/* Loads path expecting failure; checks the message names the file and contains `want`. */
static void expect_load_error(const char *path, const char *want) {
    uint8_t *bytes = (uint8_t *)1;   /* must be reset to NULL on failure */
    size_t n = 123;
    char err[512] = "";
    int rc = data_load(path, &bytes, &n, err, sizeof err);
    CHECK(rc == -1, "load of %s should fail with '%s', rc=%d n=%zu", path, want, rc, n);
    CHECK(strstr(err, path) != NULL, "message does not name the file: '%s'", err);
    CHECK(strstr(err, want) != NULL, "message lacks '%s': '%s'", want, err);
    if (rc == 0) free(bytes);
    else CHECK(bytes == NULL && n == 0, "outputs not cleared on failure");
}

/* ---------- the real file ---------- */

static void test_enwik8_head(void) {
    uint8_t *bytes = NULL;
    size_t n = 0;
    char err[512] = "";
    int rc = data_load(g_head_path, &bytes, &n, err, sizeof err);
    CHECK(rc == 0, "load %s: %s", g_head_path, err);
    if (rc != 0) return;
    CHECK(n == 4154064, "n=%zu, want 4154064", n);
    CHECK(memcmp(bytes, "<mediawiki", 10) == 0, "does not start with <mediawiki");
    /* The README says the cut is at the end of the last complete page. */
    CHECK(n >= 8 && memcmp(bytes + n - 8, "</page>\n", 8) == 0, "does not end with </page>\\n");

    DataSplit s;
    rc = data_split(bytes, n, 1025, &s, err, sizeof err);
    CHECK(rc == 0, "split: %s", err);
    CHECK(s.n_train == 3738657 && s.n_val == 207703 && s.n_test == 207704,
          "split %zu/%zu/%zu", s.n_train, s.n_val, s.n_test);
    CHECK(s.proportional == 1, "should be proportional");
    CHECK(s.train == bytes && s.val == bytes + 3738657 && s.test == bytes + 3738657 + 207703,
          "split pointers wrong");
    free(bytes);
}

/* ---------- accepted inputs ---------- */

static void test_raw_file_accepted(void) {
    char path[256];
    tmp_path(path, sizeof path, "raw.txt");
    size_t n = 3000;
    uint8_t *data = make_text(n, 7);
    data[0] = 0x1f;   /* one magic byte alone is not gzip: still raw */
    CHECK(write_file(path, data, n) == 0, "cannot write %s", path);
    uint8_t *bytes = NULL;
    size_t got = 0;
    char err[512] = "";
    int rc = data_load(path, &bytes, &got, err, sizeof err);
    CHECK(rc == 0, "raw load: %s", err);
    CHECK(got == n && bytes && memcmp(bytes, data, n) == 0, "raw content differs (n=%zu)", got);
    free(bytes);
    free(data);
    remove(path);
}

/* Detection is by content: gzip data in a file not named .gz is still inflated. */
static void test_gzip_detected_by_content(void) {
    char path[256];
    tmp_path(path, sizeof path, "data.bin");
    size_t n = 50000, nz = 0;
    uint8_t *data = make_text(n, 11);
    uint8_t *gz = gzip_mem(data, n, &nz);
    CHECK(gz != NULL, "gzip_mem failed");
    if (!gz) { free(data); return; }
    CHECK(write_file(path, gz, nz) == 0, "cannot write %s", path);
    uint8_t *bytes = NULL;
    size_t got = 0;
    char err[512] = "";
    int rc = data_load(path, &bytes, &got, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    CHECK(got == n && bytes && memcmp(bytes, data, n) == 0, "inflated content differs (n=%zu)", got);
    free(bytes);
    free(gz);
    free(data);
    remove(path);
}

/* Two gzip members back to back (cat a.gz b.gz) decode to both contents in order,
 * and trailing zero padding is ignored as gzip does. */
static void test_gzip_concatenated_members(void) {
    char path[256];
    tmp_path(path, sizeof path, "cat.gz");
    size_t na = 20000, nb = 30000, nza = 0, nzb = 0;
    uint8_t *a = make_text(na, 1), *b = make_text(nb, 2);
    uint8_t *za = gzip_mem(a, na, &nza), *zb = gzip_mem(b, nb, &nzb);
    CHECK(za && zb, "gzip_mem failed");
    if (!za || !zb) { free(a); free(b); free(za); free(zb); return; }
    size_t nz = nza + nzb + 16;
    uint8_t *z = calloc(nz, 1);
    memcpy(z, za, nza);
    memcpy(z + nza, zb, nzb);
    CHECK(write_file(path, z, nz) == 0, "cannot write %s", path);
    uint8_t *bytes = NULL;
    size_t got = 0;
    char err[512] = "";
    int rc = data_load(path, &bytes, &got, err, sizeof err);
    CHECK(rc == 0, "load: %s", err);
    CHECK(got == na + nb, "n=%zu, want %zu", got, na + nb);
    if (rc == 0 && got == na + nb)
        CHECK(memcmp(bytes, a, na) == 0 && memcmp(bytes + na, b, nb) == 0, "content differs");
    free(bytes);
    free(z); free(za); free(zb); free(a); free(b);
    remove(path);
}

/* ---------- refusals ---------- */

static void test_missing_file(void) {
    char path[256];
    tmp_path(path, sizeof path, "does_not_exist.gz");
    remove(path);
    expect_load_error(path, "No such file");
}

static void test_unreadable_directory(void) {
    /* refused before any read: only a regular file is data (issue 11: a FIFO blocked) */
    expect_load_error("/tmp", "not a regular file (a directory)");
}

static void test_fifo_refused(void) {
    char path[256];
    tmp_path(path, sizeof path, "fifo");
    unlink(path);
    CHECK(mkfifo(path, 0600) == 0, "mkfifo %s", path);
    expect_load_error(path, "not a regular file (a FIFO)");   /* at once: no open, no block */
    unlink(path);
}

static void test_other_formats_refused(void) {
    static const struct { const char *magic; size_t n; const char *want; } c[] = {
        {"PK\x03\x04", 4, "zip data"}, {"\xfd" "7zXZ\0", 6, "xz data"}, {"BZh9", 4, "bzip2 data"},
        {"\x28\xb5\x2f\xfd", 4, "zstd data"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char path[256], buf[64];
        tmp_path(path, sizeof path, "enwik8.other");
        memset(buf, 'a', sizeof buf);
        memcpy(buf, c[i].magic, c[i].n);
        CHECK(write_file(path, buf, sizeof buf) == 0, "cannot write %s", path);
        expect_load_error(path, c[i].want);
    }
}

static void test_empty_file(void) {
    char path[256];
    tmp_path(path, sizeof path, "empty.txt");
    CHECK(write_file(path, "", 0) == 0, "cannot write %s", path);
    expect_load_error(path, "empty (0 bytes)");
    remove(path);
}

static void test_gz_name_not_gzip(void) {
    char path[256];
    tmp_path(path, sizeof path, "fake.gz");
    const char *text = "<mediawiki> this is plain text in a .gz file\n";
    CHECK(write_file(path, text, strlen(text)) == 0, "cannot write %s", path);
    expect_load_error(path, "not gzip");
    remove(path);
}

static void test_gzip_corrupt_body(void) {
    char path[256];
    tmp_path(path, sizeof path, "corrupt.gz");
    size_t n = 200000, nz = 0;
    uint8_t *gz = gzip_text(n, 3, &nz);
    CHECK(gz != NULL && nz > 100, "gzip_mem failed");
    if (!gz) return;
    gz[nz / 2] ^= 0x55;   /* well inside the deflate body (header 10 bytes, trailer 8) */
    CHECK(write_file(path, gz, nz) == 0, "cannot write %s", path);
    expect_load_error(path, "corrupt");
    free(gz);
    remove(path);
}

/* Deflate data intact but the CRC in the trailer wrong: caught as corrupt, not accepted. */
static void test_gzip_bad_crc(void) {
    char path[256];
    tmp_path(path, sizeof path, "badcrc.gz");
    size_t n = 10000, nz = 0;
    uint8_t *gz = gzip_text(n, 4, &nz);
    CHECK(gz != NULL, "gzip_mem failed");
    if (!gz) return;
    gz[nz - 8] ^= 0x01;   /* first byte of the CRC32 */
    CHECK(write_file(path, gz, nz) == 0, "cannot write %s", path);
    expect_load_error(path, "corrupt");
    free(gz);
    remove(path);
}

static void test_gzip_truncated(void) {
    char path[256];
    tmp_path(path, sizeof path, "half.gz");
    size_t n = 200000, nz = 0;
    uint8_t *gz = gzip_text(n, 5, &nz);
    CHECK(gz != NULL, "gzip_mem failed");
    if (!gz) return;
    CHECK(write_file(path, gz, nz / 2) == 0, "cannot write %s", path);
    expect_load_error(path, "truncated");
    /* Cut inside the 8-byte trailer: all data decodes, the trailer is incomplete. */
    CHECK(write_file(path, gz, nz - 3) == 0, "cannot write %s", path);
    expect_load_error(path, "truncated");
    /* Only the magic. */
    CHECK(write_file(path, gz, 2) == 0, "cannot write %s", path);
    expect_load_error(path, "truncated");
    free(gz);
    remove(path);
}

static void test_gzip_empty_payload(void) {
    char path[256];
    tmp_path(path, sizeof path, "nothing.gz");
    size_t nz = 0;
    uint8_t *gz = gzip_mem((const uint8_t *)"", 0, &nz);
    CHECK(gz != NULL, "gzip_mem failed");
    if (!gz) return;
    CHECK(write_file(path, gz, nz) == 0, "cannot write %s", path);
    expect_load_error(path, "empty after decompression");
    free(gz);
    remove(path);
}

/* Non-gzip bytes after a complete member are refused rather than silently dropped. */
static void test_gzip_trailing_garbage(void) {
    char path[256];
    tmp_path(path, sizeof path, "garbage.gz");
    size_t n = 5000, nz = 0;
    uint8_t *gz = gzip_text(n, 6, &nz);
    CHECK(gz != NULL, "gzip_mem failed");
    if (!gz) return;
    uint8_t *z = malloc(nz + 5);
    memcpy(z, gz, nz);
    memcpy(z + nz, "junk!", 5);
    CHECK(write_file(path, z, nz + 5) == 0, "cannot write %s", path);
    expect_load_error(path, "corrupt");
    free(z);
    free(gz);
    remove(path);
}

/* ---------- split ---------- */

static void test_split_standard(void) {
    /* Pointer arithmetic only; calloc maps the zero pages lazily so this is cheap. */
    size_t n = 100000000 + 77;
    uint8_t *bytes = calloc(n, 1);
    CHECK(bytes != NULL, "calloc 100 MB failed");
    if (!bytes) return;
    DataSplit s;
    char err[256] = "";
    int rc = data_split(bytes, n, 2049, &s, err, sizeof err);
    CHECK(rc == 0, "split: %s", err);
    CHECK(s.n_train == 90000000 && s.n_val == 5000000 && s.n_test == 5000000,
          "split %zu/%zu/%zu", s.n_train, s.n_val, s.n_test);
    CHECK(s.proportional == 0, "10^8+ bytes should use the standard split");
    CHECK(s.val == bytes + 90000000 && s.test == bytes + 95000000, "pointers wrong");
    free(bytes);
}

static void test_split_too_short(void) {
    uint8_t bytes[1000];
    memset(bytes, 'x', sizeof bytes);
    DataSplit s;
    char err[256] = "";
    /* 1000 bytes: 900 / 50 / 50; T+1 = 65 fits train but not val. */
    int rc = data_split(bytes, sizeof bytes, 65, &s, err, sizeof err);
    CHECK(rc == -1, "split should fail");
    CHECK(strstr(err, "val split") != NULL, "message should name the val split: '%s'", err);
    CHECK(strstr(err, "50 bytes") != NULL, "message should give its length: '%s'", err);
    CHECK(strstr(err, "65") != NULL, "message should give min_len: '%s'", err);
    /* Train too short is reported as train. */
    err[0] = 0;
    rc = data_split(bytes, sizeof bytes, 901, &s, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "train split is 900 bytes") != NULL, "got '%s'", err);
    /* Exactly min_len is enough. */
    rc = data_split(bytes, sizeof bytes, 50, &s, err, sizeof err);
    CHECK(rc == 0, "50-byte splits should satisfy min_len 50: %s", err);
    /* Rounding: the slack goes to test. */
    rc = data_split(bytes, 999, 1, &s, err, sizeof err);
    CHECK(rc == 0 && s.n_train == 899 && s.n_val == 49 && s.n_test == 51,
          "999 -> %zu/%zu/%zu", s.n_train, s.n_val, s.n_test);
}

/* ---------- rng ---------- */

static void test_rng_reference(void) {
    /* splitmix64 from seed 0 starts e220a8397b1dcdaf 6e789e6aa1b965f4 ... (Vigna's
     * reference); pinning it keeps seeds meaning the same thing across versions. */
    Rng r;
    rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafULL && r.s[1] == 0x6e789e6aa1b965f4ULL,
          "splitmix64 seeding differs: %016llx %016llx",
          (unsigned long long)r.s[0], (unsigned long long)r.s[1]);
}

static void test_rng_determinism(void) {
    Rng a, b, c;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    rng_seed(&c, 43);
    int same = 1, differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_u64(&a), y = rng_u64(&b), z = rng_u64(&c);
        same &= (x == y);
        differs |= (x != z);
    }
    CHECK(same, "same seed gave different sequences");
    CHECK(differs, "seeds 42 and 43 gave the same sequence");

    /* A checkpoint is a struct copy: resuming from it replays exactly. */
    Rng saved = a;
    uint64_t first[64];
    float fn[8];
    double fu[8];
    for (int i = 0; i < 64; i++) first[i] = rng_u64(&a);
    for (int i = 0; i < 8; i++) { fn[i] = rng_normal(&a); fu[i] = rng_uniform(&a); }
    Rng resumed;
    memcpy(&resumed, &saved, sizeof resumed);
    int ok = 1;
    for (int i = 0; i < 64; i++) ok &= (rng_u64(&resumed) == first[i]);
    for (int i = 0; i < 8; i++) { ok &= (rng_normal(&resumed) == fn[i]); ok &= (rng_uniform(&resumed) == fu[i]); }
    CHECK(ok, "resumed state diverged");
    CHECK(memcmp(&resumed, &a, sizeof a) == 0, "states differ after the same draws");
}

static void test_rng_below(void) {
    Rng r;
    rng_seed(&r, 7);
    CHECK(rng_below(&r, 1) == 0, "below(1) must be 0");
    /* Range, including a bound near 2^64 where rejection matters most. */
    const uint64_t bounds[] = {2, 3, 7, 1000, 4154064, (1ULL << 63) + 12345, UINT64_MAX};
    int in_range = 1;
    for (size_t k = 0; k < sizeof bounds / sizeof bounds[0]; k++)
        for (int i = 0; i < 2000; i++) in_range &= rng_below(&r, bounds[k]) < bounds[k];
    CHECK(in_range, "rng_below out of range");

    /* Rough uniformity: chi-square over 10 bins, 100k draws; df=9, p=1e-4 critical ~33.7. */
    enum { BINS = 10, DRAWS = 100000 };
    long count[BINS] = {0};
    for (int i = 0; i < DRAWS; i++) count[rng_below(&r, BINS)]++;
    double chi2 = 0, expect = (double)DRAWS / BINS;
    for (int i = 0; i < BINS; i++) chi2 += (count[i] - expect) * (count[i] - expect) / expect;
    CHECK(chi2 < 33.7, "chi-square %.2f too large for uniform", chi2);

    /* n = ~2/3 of 2^64: a plain x % n (no rejection) maps the top third of 2^64 onto
     * [0, n/2) again and puts ~2/3 of the draws below n/2. Unbiased: about half. */
    uint64_t big = 0xAAAAAAAAAAAAAAABULL;
    int low = 0;
    for (int i = 0; i < 20000; i++) low += rng_below(&r, big) < big / 2;
    CHECK(low > 9500 && low < 10500, "below(2/3 * 2^64): %d of 20000 under half, want ~10000", low);
}

static void test_rng_uniform_normal(void) {
    Rng r;
    rng_seed(&r, 123);
    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(&r);
        sum += u;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    CHECK(lo >= 0.0 && hi < 1.0, "uniform out of [0,1): %g %g", lo, hi);
    CHECK(fabs(sum / 100000 - 0.5) < 0.01, "uniform mean %g", sum / 100000);

    double s1 = 0, s2 = 0;
    int finite = 1;
    for (int i = 0; i < 100000; i++) {
        float z = rng_normal(&r);
        finite &= isfinite(z);
        s1 += z;
        s2 += (double)z * z;
    }
    double mean = s1 / 100000, var = s2 / 100000 - mean * mean;
    CHECK(finite, "normal produced a non-finite value");
    CHECK(fabs(mean) < 0.02 && fabs(var - 1) < 0.03, "normal mean %g var %g", mean, var);
}

/* ---------- batches ---------- */

static void test_sample_batch(void) {
    /* A split whose bytes are a non-repeating pattern over the window, so any
     * misplaced or out-of-order byte shows up. */
    size_t n = 5000;
    uint8_t *split = malloc(n);
    for (size_t i = 0; i < n; i++) split[i] = (uint8_t)((i * 131 + (i >> 8)) & 0xff);
    const int B = 16, T = 63;
    const size_t row = (size_t)T + 1;
    int32_t *tok = malloc(sizeof(int32_t) * B * row);
    int32_t *tok2 = malloc(sizeof(int32_t) * B * row);

    Rng r, r2, replay;
    rng_seed(&r, 2024);
    replay = r;
    data_sample_batch(split, n, B, T, &r, tok);

    /* Each row is split[off .. off+T] with off the next rng_below(n - T) draw. */
    int ok = 1;
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)rng_below(&replay, (uint64_t)(n - row + 1));
        ok &= off + row <= n;
        for (size_t t = 0; t < row && off + t < n; t++) ok &= tok[b * row + t] == split[off + t];
    }
    CHECK(ok, "rows are not the consecutive bytes at the drawn offsets");
    CHECK(memcmp(&replay, &r, sizeof r) == 0, "batch consumed a different number of draws");

    /* Same seed, same batch. */
    rng_seed(&r2, 2024);
    data_sample_batch(split, n, B, T, &r2, tok2);
    CHECK(memcmp(tok, tok2, sizeof(int32_t) * B * row) == 0, "same seed gave a different batch");
    /* Next batch differs (the rng moved on). */
    data_sample_batch(split, n, B, T, &r2, tok2);
    CHECK(memcmp(tok, tok2, sizeof(int32_t) * B * row) != 0, "consecutive batches identical");

    /* Every offset 0..n-(T+1) is reachable, the last one included, and no other. */
    size_t small = row + 3;
    int seen[4] = {0}, bad = 0;
    for (int k = 0; k < 200; k++) {
        data_sample_batch(split, small, 1, T, &r, tok);
        int found = -1;
        for (int off = 0; off < 4; off++)
            if (tok[0] == split[off] && tok[T] == split[off + T]) found = off;
        if (found < 0) bad = 1; else seen[found] = 1;
    }
    CHECK(!bad && seen[0] && seen[1] && seen[2] && seen[3],
          "offsets seen %d%d%d%d bad=%d", seen[0], seen[1], seen[2], seen[3], bad);

    /* n == T+1: the only example is the whole split. */
    data_sample_batch(split, row, 2, T, &r, tok);
    ok = 1;
    for (int b = 0; b < 2; b++)
        for (size_t t = 0; t < row; t++) ok &= tok[b * row + t] == split[t];
    CHECK(ok, "n == T+1 should give the whole split");

    free(tok); free(tok2); free(split);
}

int main(int argc, char **argv) {
    /* tests/run.sh passes FIXTURES_DIR DATA_FILE */
    if (argc > 2) g_head_path = argv[2];
    RUN(test_enwik8_head);
    RUN(test_raw_file_accepted);
    RUN(test_gzip_detected_by_content);
    RUN(test_gzip_concatenated_members);
    RUN(test_missing_file);
    RUN(test_unreadable_directory);
    RUN(test_fifo_refused);
    RUN(test_other_formats_refused);
    RUN(test_empty_file);
    RUN(test_gz_name_not_gzip);
    RUN(test_gzip_corrupt_body);
    RUN(test_gzip_bad_crc);
    RUN(test_gzip_truncated);
    RUN(test_gzip_empty_payload);
    RUN(test_gzip_trailing_garbage);
    RUN(test_split_standard);
    RUN(test_split_too_short);
    RUN(test_rng_reference);
    RUN(test_rng_determinism);
    RUN(test_rng_below);
    RUN(test_rng_uniform_normal);
    RUN(test_sample_batch);
    TEST_MAIN_END();
}
