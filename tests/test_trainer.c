/* tests/test_trainer.c: the ./train program end to end, run as a separate process.
 *
 * Usage: test_trainer [FIXTURE_DIR] [DATA_FILE]   (DATA_FILE default ../shared/data/enwik8-head.gz)
 * The binary is $FLASH_TRAIN_BIN, else ./train (the runner's cwd is the repository root);
 * a private copy of it is run, so a rebuild during the test does not disturb it.
 * Every run goes into a mkdtemp directory under /tmp, removed at the end.
 * FLASH_TEST_SMALL=1 (the sanitizer suite) shortens the runs.
 *
 * Checked: an interrupted run (SIGINT, SIGTERM, SIGKILL) resumes bit for bit like an
 * uninterrupted one; damaged checkpoints are refused with the reason, and --resume falls back
 * to an older valid one; pruning to --keep-ckpts keeps a valid checkpoint after such a
 * fallback; loss.png and metrics.csv; bad arguments of every subcommand; the loss falls on
 * real text; sample, export (read back with st_load, loaded again with --init-from) and
 * eval; a non-finite loss stops the run; the data loader's errors.
 *
 * Children get OMP_WAIT_POLICY=passive unless the environment sets it: with 2 threads on a
 * busy machine, spinning OpenMP barriers make a step many times slower, which
 * changes no result, only the test's run time. */
#include "checkpoint.h"
#include "metrics.h"
#include "safetensors.h"
#include "test.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------------------------ */
/* globals and small utilities */

static const char *g_bin = "./train";
static const char *g_data = "../shared/data/enwik8-head.gz";
static char g_tmp[256];          /* mkdtemp root; everything below it is removed at the end */
static int g_small;              /* FLASH_TEST_SMALL */
static int g_seq;                /* unique names */

/* the small model of most runs: 30691 parameters, a few milliseconds a step */
#define SMALL_MODEL "--dim 32 --depth 2 --group-size 16 --qk-dim 16 --seq-len 64 --batch 4 --accum 2 --threads 2"
#define HDR_BYTES 32
#define STATE_BYTES 88

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

/* a fresh path under g_tmp: g_tmp/SEQ-NAME, so NAME's suffix stays (kept until the end of main) */
static char *g_paths[4096];
static const char *tpath(const char *name) {
    char b[512];
    snprintf(b, sizeof b, "%s/%d-%s", g_tmp, g_seq, name);
    if (g_seq >= 4096) { fprintf(stderr, "too many temporary paths\n"); exit(3); }
    g_paths[g_seq] = strdup(b);
    if (!g_paths[g_seq]) { perror("strdup"); exit(3); }
    return g_paths[g_seq++];
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) { perror("strdup"); exit(3); }
    return d;
}

/* a new directory under g_tmp; returned string is malloc'ed */
static char *new_dir(const char *name) {
    char *d = xstrdup(tpath(name));
    if (mkdir(d, 0700)) { perror(d); exit(3); }
    return d;
}

static unsigned char *read_all(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *b = malloc(cap + 1);
    for (;;) {
        if (len == cap) { cap *= 2; b = realloc(b, cap + 1); }
        size_t got = fread(b + len, 1, cap - len, f);
        len += got;
        if (!got) break;
    }
    fclose(f);
    b[len] = 0;   /* also usable as text */
    *n = len;
    return b;
}

static char *read_text(const char *path) {
    size_t n;
    return (char *)read_all(path, &n);
}

static int write_all(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int copy_file(const char *from, const char *to) {
    size_t n;
    unsigned char *b = read_all(from, &n);
    if (!b) return -1;
    int rc = write_all(to, b, n);
    free(b);
    return rc;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st)) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *de;
            while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
                char sub[1024];
                snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
                rm_rf(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static uint32_t get_u32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
static void put_u32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }

/* ------------------------------------------------------------------------------------ */
/* running ./train */

typedef struct {
    int exited, code, sig, timed_out;   /* how it ended */
    char *out, *err;                    /* its stdout and stderr */
    double secs;
} Res;

static void res_free(Res *r) { free(r->out); free(r->err); memset(r, 0, sizeof *r); }

/* ends the text of an outcome for messages, e.g. "exit 2" or "signal 11" */
static const char *how(const Res *r) {
    static char b[64];
    if (r->timed_out) snprintf(b, sizeof b, "timed out (killed)");
    else if (r->exited) snprintf(b, sizeof b, "exit %d", r->code);
    else snprintf(b, sizeof b, "signal %d", r->sig);
    return b;
}

/* last ~600 bytes of a text, for failure messages */
static const char *tail(const char *s) {
    if (!s) return "(none)";
    size_t n = strlen(s);
    return n > 600 ? s + n - 600 : s;
}

typedef struct { char *v[160]; int n; } Args;

static void a_add(Args *a, const char *s) {
    if (a->n >= 158) { fprintf(stderr, "too many arguments\n"); exit(3); }
    a->v[a->n++] = xstrdup(s);
    a->v[a->n] = NULL;
}

/* adds the space-separated words of a printf-formatted string; the word @DATA stands for
   the data file (whose path may hold spaces) */
static void a_words(Args *a, const char *fmt, va_list ap) {
    char buf[8192];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = strtok(buf, " "); p; p = strtok(NULL, " "))
        a_add(a, !strcmp(p, "@DATA") ? g_data : p);
}

static void a_free(Args *a) { for (int i = 0; i < a->n; i++) free(a->v[i]); a->n = 0; }

/* starts g_bin with the words of args (argv[0] added); stdout, stderr to the given files */
static pid_t spawn(Args *args, const char *out_path, const char *err_path, long as_limit_mb) {
    char *argv[162];
    argv[0] = (char *)g_bin;
    for (int i = 0; i <= args->n; i++) argv[i + 1] = args->v[i];
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(3); }
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || o < 0 || e < 0) _exit(125);
        dup2(in, 0); dup2(o, 1); dup2(e, 2);
        close(in); close(o); close(e);
        if (as_limit_mb > 0) {
            struct rlimit rl = {(rlim_t)as_limit_mb << 20, (rlim_t)as_limit_mb << 20};
            setrlimit(RLIMIT_AS, &rl);
        }
        execv(g_bin, argv);
        fprintf(stderr, "test_trainer: cannot exec %s: %s\n", g_bin, strerror(errno));
        _exit(126);
    }
    return pid;
}

/* waits for pid up to timeout_s (then SIGKILL); fills the outcome fields of r */
static void wait_child(pid_t pid, double timeout_s, Res *r) {
    double t0 = now_s();
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno != EINTR) { perror("waitpid"); exit(3); }
        if (now_s() - t0 > timeout_s) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            r->timed_out = 1;
            break;
        }
        sleep_ms(2);
    }
    r->secs = now_s() - t0;
    r->exited = WIFEXITED(status);
    r->code = r->exited ? WEXITSTATUS(status) : -1;
    r->sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static Res run_args(Args *a, long as_limit_mb) {
    Res r;
    memset(&r, 0, sizeof r);
    char out[600], err[600];
    snprintf(out, sizeof out, "%s/stdout.txt", g_tmp);
    snprintf(err, sizeof err, "%s/stderr.txt", g_tmp);
    pid_t pid = spawn(a, out, err, as_limit_mb);
    wait_child(pid, g_small ? 600 : 180, &r);
    r.out = read_text(out);
    r.err = read_text(err);
    if (!r.out) r.out = xstrdup("");
    if (!r.err) r.err = xstrdup("");
    return r;
}

/* ./train with the words of a printf-formatted string (see a_words) */
static Res train(const char *fmt, ...) {
    Args a = {0};
    va_list ap;
    va_start(ap, fmt);
    a_words(&a, fmt, ap);
    va_end(ap);
    Res r = run_args(&a, 0);
    a_free(&a);
    return r;
}

static int ok_exit(const Res *r) { return r->exited && r->code == 0; }

/* stdout holds a training progress line ("step N/M ..." or "step N: val ...") */
static int has_step_lines(const char *out) {
    for (const char *p = out; p && *p;) {
        if (!strncmp(p, "step ", 5) && isdigit((unsigned char)p[5])) return 1;
        const char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : NULL;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* checkpoints */

typedef struct {
    unsigned char *b;
    size_t n;
    uint32_t jlen;
    uint64_t np;
    size_t state_off, params_off;
} Ckpt;

/* reads and checks the layout of trainer/checkpoint.h (including the crc); 0 or -1 */
static int ckpt_read(const char *path, Ckpt *c, char *why, size_t wn) {
    memset(c, 0, sizeof *c);
    c->b = read_all(path, &c->n);
    if (!c->b) { snprintf(why, wn, "cannot read %s", path); return -1; }
    if (c->n < HDR_BYTES || memcmp(c->b, "FLASHCKP", 8)) { snprintf(why, wn, "%s: no FLASHCKP header", path); return -1; }
    if (get_u32(c->b + 8) != CKPT_VERSION) { snprintf(why, wn, "%s: version %u", path, get_u32(c->b + 8)); return -1; }
    c->jlen = get_u32(c->b + 12);
    c->np = get_u64(c->b + 16);
    c->state_off = HDR_BYTES + c->jlen;
    c->params_off = c->state_off + STATE_BYTES;
    if (c->params_off + 3 * c->np * 4 != c->n) {
        snprintf(why, wn, "%s: %zu bytes, layout says %zu", path, c->n, (size_t)(c->params_off + 3 * c->np * 4));
        return -1;
    }
    uint32_t crc = (uint32_t)crc32(crc32(0, Z_NULL, 0), c->b + HDR_BYTES, (uInt)(c->n - HDR_BYTES));
    if (crc != get_u32(c->b + 24)) { snprintf(why, wn, "%s: crc32 %08x, header says %08x", path, crc, get_u32(c->b + 24)); return -1; }
    return 0;
}

static void ckpt_free(Ckpt *c) { free(c->b); memset(c, 0, sizeof *c); }

/* the training state (step, tokens, both generators; not the elapsed time) and the
   params, Adam m and Adam v of two checkpoints are the same bytes */
static int ckpt_same(const char *pa, const char *pb, char *why, size_t wn) {
    Ckpt a, b;
    char w[512];
    int rc = -1;
    if (ckpt_read(pa, &a, w, sizeof w)) { snprintf(why, wn, "%s", w); return -1; }
    if (ckpt_read(pb, &b, w, sizeof w)) { snprintf(why, wn, "%s", w); ckpt_free(&a); return -1; }
    if (a.np != b.np) { snprintf(why, wn, "n_params %llu vs %llu", (unsigned long long)a.np, (unsigned long long)b.np); goto done; }
    if (memcmp(a.b + a.state_off, b.b + b.state_off, 16) ||
        memcmp(a.b + a.state_off + 24, b.b + b.state_off + 24, STATE_BYTES - 24)) {
        snprintf(why, wn, "training state (step %llu vs %llu, tokens, generator states) differs",
                 (unsigned long long)get_u64(a.b + a.state_off), (unsigned long long)get_u64(b.b + b.state_off));
        goto done;
    }
    const char *sect[3] = {"params", "Adam m", "Adam v"};
    for (int s = 0; s < 3; s++) {
        const unsigned char *x = a.b + a.params_off + (size_t)s * a.np * 4, *y = b.b + b.params_off + (size_t)s * b.np * 4;
        for (uint64_t k = 0; k < a.np; k++)
            if (memcmp(x + k * 4, y + k * 4, 4)) {
                float fx, fy;
                memcpy(&fx, x + k * 4, 4);
                memcpy(&fy, y + k * 4, 4);
                snprintf(why, wn, "%s[%llu] differs: %.9g vs %.9g", sect[s], (unsigned long long)k, fx, fy);
                goto done;
            }
    }
    rc = 0;
done:
    ckpt_free(&a);
    ckpt_free(&b);
    return rc;
}

static char *ckpt_file(const char *dir, int step) {
    char b[1024];
    snprintf(b, sizeof b, "%s/ckpt-%08d.bin", dir, step);
    return xstrdup(b);
}

/* ------------------------------------------------------------------------------------ */
/* metrics.csv */

typedef struct {
    int n;
    char *line[4096];   /* data rows, without the newline */
    char *header;
} Csv;

static int csv_read(const char *dir, Csv *c) {
    memset(c, 0, sizeof *c);
    char path[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    char *t = read_text(path);
    if (!t) return -1;
    char *save = NULL;
    for (char *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (!c->header) c->header = xstrdup(l);
        else if (c->n < 4096) c->line[c->n++] = xstrdup(l);
    }
    free(t);
    return c->header ? 0 : -1;
}

static void csv_free(Csv *c) {
    for (int i = 0; i < c->n; i++) free(c->line[i]);
    free(c->header);
    memset(c, 0, sizeof *c);
}

/* splits a row into at most max fields (empty fields kept as ""); returns the count.
   The fields point into buf. */
static int csv_fields(const char *row, char *buf, size_t bn, char **f, int max) {
    snprintf(buf, bn, "%s", row);
    int n = 0;
    char *p = buf;
    while (n < max) {
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return n;
}

/* the deterministic part of a row: step,tokens,lr,train_loss,val_loss,val_bpc,grad_norm
   (tok_per_s and elapsed_s are timings) */
static void csv_det(const char *row, char *out, size_t n) {
    char buf[1024], *f[16];
    int k = csv_fields(row, buf, sizeof buf, f, 16);
    out[0] = 0;
    for (int i = 0; i < 7 && i < k; i++) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s%s", i ? "," : "", f[i]);
    }
}

/* the deterministic columns of two metrics.csv files are the same text, row for row */
static int csv_same(const char *da, const char *db, char *why, size_t wn) {
    Csv a, b;
    if (csv_read(da, &a)) { snprintf(why, wn, "no metrics.csv in %s", da); return -1; }
    if (csv_read(db, &b)) { snprintf(why, wn, "no metrics.csv in %s", db); csv_free(&a); return -1; }
    int rc = 0;
    if (a.n != b.n) { snprintf(why, wn, "%d rows vs %d rows", a.n, b.n); rc = -1; }
    for (int i = 0; !rc && i < a.n; i++) {
        char x[1024], y[1024];
        csv_det(a.line[i], x, sizeof x);
        csv_det(b.line[i], y, sizeof y);
        if (strcmp(x, y)) { snprintf(why, wn, "row %d: \"%s\" vs \"%s\"", i + 1, x, y); rc = -1; }
    }
    csv_free(&a);
    csv_free(&b);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* data files for the loader's error cases */

static int write_gzip(const char *path, const void *data, size_t n) {
    gzFile g = gzopen(path, "wb9");
    if (!g) return -1;
    int ok = n == 0 || gzwrite(g, data, (unsigned)n) == (int)n;
    return gzclose(g) == Z_OK && ok ? 0 : -1;
}

/* n bytes of printable pseudo-text */
static unsigned char *some_text(size_t n) {
    unsigned char *b = malloc(n);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        b[i] = (unsigned char)(x % 9 == 0 ? ' ' : 'a' + x % 26);
    }
    return b;
}

/* ------------------------------------------------------------------------------------ */
/* the base run: 8 steps of the small model with validation, samples and checkpoints at
   steps 4 and 8; several tests read it */

static char *g_base;          /* its directory */
static int g_base_ok;

static void make_base_run(void) {
    g_base = new_dir("base");
    Res r = train(SMALL_MODEL " --steps 8 --warmup 2 --lr 2e-3 --eval-every 4 --ckpt-every 4 "
                  "--sample-every 4 --sample-len 16 --sample-prime 8 --out %s @DATA", g_base);
    g_base_ok = ok_exit(&r);
    if (!g_base_ok)
        fprintf(stderr, "  base run failed (%s): %s\n%s\n", how(&r), tail(r.out), tail(r.err));
    res_free(&r);
}

/* ====================================================================================== */
/* 1. resume is bit-identical */

/* the newest step among DIR/ckpt-*.bin (.tmp files excluded), or -1 */
static int newest_ckpt(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int best = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        int st;
        char rest[16];
        if (sscanf(de->d_name, "ckpt-%d%15s", &st, rest) == 2 && !strcmp(rest, ".bin") && st > best) best = st;
    }
    closedir(d);
    return best;
}

/* Starts the recipe in dir (with --ckpt-every 4 and the extra words), and once
   ckpt-00000004.bin exists (it is renamed into place whole) sends sig. SIGINT and SIGTERM
   must stop it with a checkpoint of the step reached and exit 128 + sig; SIGKILL leaves the
   periodic checkpoints. Returns the step the newest checkpoint holds, or -1. */
static int interrupt_run(const char *recipe, const char *extra, const char *dir, int sig, int total) {
    char out[1024], err[1024], ck4[1024];
    snprintf(out, sizeof out, "%s.out", dir);
    snprintf(err, sizeof err, "%s.err", dir);
    snprintf(ck4, sizeof ck4, "%s/ckpt-00000004.bin", dir);
    Args a = {0};
    char words[4096];
    snprintf(words, sizeof words, "%s --ckpt-every 4 %s --out %s @DATA", recipe, extra, dir);
    for (char *p = strtok(words, " "); p; p = strtok(NULL, " ")) a_add(&a, !strcmp(p, "@DATA") ? g_data : p);
    pid_t pid = spawn(&a, out, err, 0);
    a_free(&a);
    double t0 = now_s();
    int seen = 0, early_exit = 0;
    Res r;
    memset(&r, 0, sizeof r);
    while (now_s() - t0 < 120) {
        if (exists(ck4)) { seen = 1; break; }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            early_exit = 1;
            r.exited = WIFEXITED(status);
            r.code = r.exited ? WEXITSTATUS(status) : -1;
            r.sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
            break;
        }
        sleep_ms(0.5);
    }
    if (!early_exit) {
        kill(pid, sig);
        wait_child(pid, 120, &r);
    }
    r.out = read_text(out);
    r.err = read_text(err);
    int stopped = -1;
    const char *sname = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGKILL";
    CHECK(seen, "ckpt-00000004.bin never appeared (%s): %s", how(&r), tail(r.err));
    if (sig == SIGKILL) {
        CHECK(!r.exited && r.sig == SIGKILL, "the run should have been killed, got %s: %s", how(&r), tail(r.err));
        stopped = newest_ckpt(dir);
        CHECK(stopped >= 4 && stopped % 4 == 0 && stopped < total, "after SIGKILL the newest checkpoint is of step %d", stopped);
    } else {
        int want = 128 + sig;
        CHECK(r.exited && r.code == want, "a run stopped by %s should exit %d, got %s: %s", sname, want, how(&r), tail(r.err));
        const char *m = r.out ? strstr(r.out, "stopped by ") : NULL;
        CHECK(m && !strncmp(m + 11, sname, strlen(sname)), "stdout should say \"stopped by %s\": %s", sname, tail(r.out));
        if (m) {
            const char *at = strstr(m, " at step ");
            if (at) stopped = atoi(at + 9);
        }
        CHECK(stopped >= 4 && stopped < total, "stopped at step %d: the signal should stop it after step 4 and "
              "before the end (%d)", stopped, total);
        CHECK(newest_ckpt(dir) == stopped, "the newest checkpoint is of step %d, the run stopped at %d", newest_ckpt(dir), stopped);
        Csv csv;
        if (csv_read(dir, &csv) == 0 && csv.n > 0)
            CHECK(atoi(csv.line[csv.n - 1]) == stopped, "metrics.csv of the stopped run ends at step %d, not %d",
                  atoi(csv.line[csv.n - 1]), stopped);
        csv_free(&csv);
    }
    if (stopped >= 4 && stopped < total) {
        char *ck = ckpt_file(dir, stopped);
        char why[512];
        Ckpt c;
        CHECK(ckpt_read(ck, &c, why, sizeof why) == 0, "the newest checkpoint after %s: %s", sname, why);
        if (c.b) CHECK(get_u64(c.b + c.state_off) == (uint64_t)stopped, "ckpt of step %d holds step %llu",
                       stopped, (unsigned long long)get_u64(c.b + c.state_off));
        ckpt_free(&c);
        free(ck);
    }
    res_free(&r);
    return stopped >= 4 && stopped < total ? stopped : -1;
}

/* --resume dir (with --threads threads) to the end, expecting to start at step from */
static void resume_to_end(const char *dir, int from, int total, int threads) {
    Res q = train("--resume %s --threads %d", dir, threads);
    CHECK(ok_exit(&q), "--resume %s: %s: %s", dir, how(&q), tail(q.err));
    char want_line[1200];
    snprintf(want_line, sizeof want_line, "resuming %s/ckpt-%08d.bin at step %d", dir, from, from);
    CHECK(strstr(q.out, want_line), "stdout should hold \"%s\": %s", want_line, tail(q.out));
    char done[64];
    snprintf(done, sizeof done, "done: %d steps", total);
    CHECK(strstr(q.out, done), "the resumed run should finish all %d steps: %s", total, tail(q.out));
    res_free(&q);
}

static void test_resume_bit_identical(void) {
    int N = g_small ? 32 : 48;
    char recipe[1024];
    snprintf(recipe, sizeof recipe, SMALL_MODEL " --steps %d --warmup 3 --lr 2e-3 --eval-every 10 "
             "--sample-every 10 --sample-len 16 --sample-prime 8 --seed 7", N);
    char *A = new_dir("resumeA"), *B = new_dir("resumeB"), *C = new_dir("resumeC"), *K = new_dir("resumeK");
    Res r = train("%s --ckpt-every 0 --out %s @DATA", recipe, A);
    CHECK(ok_exit(&r), "uninterrupted run: %s: %s", how(&r), tail(r.err));
    res_free(&r);
    char *ckA = ckpt_file(A, N);
    CHECK(exists(ckA), "--ckpt-every 0 should still write the final checkpoint %s", ckA);

    /* SIGINT, resumed with the same thread count */
    int kB = interrupt_run(recipe, "", B, SIGINT, N);
    if (kB >= 0) resume_to_end(B, kB, N, 2);
    /* SIGTERM, resumed with the same thread count. (Bit-identity holds for the same
       threads: OpenBLAS may split a product differently at another thread count, which
       changes the last bits.) */
    int kC = interrupt_run(recipe, "", C, SIGTERM, N);
    if (kC >= 0) resume_to_end(C, kC, N, 2);
    /* SIGKILL: no checkpoint on the way out; the newest periodic one continues the run, and
       the metrics rows after it are dropped */
    int kK = interrupt_run(recipe, "", K, SIGKILL, N);
    if (kK >= 0) resume_to_end(K, kK, N, 2);

    printf("  (resume: SIGINT stopped the run at step %d, SIGTERM at step %d, SIGKILL after step %d, of %d)\n",
           kB, kC, kK, N);
    const char *dirs[3] = {B, C, K};
    const char *names[3] = {"SIGINT", "SIGTERM", "SIGKILL"};
    int ks[3] = {kB, kC, kK};
    for (int i = 0; i < 3; i++) {
        if (ks[i] < 0) continue;
        char why[600];
        CHECK(csv_same(A, dirs[i], why, sizeof why) == 0, "metrics.csv after %s at step %d and resume differs "
              "from the uninterrupted run: %s", names[i], ks[i], why);
        char *ck = ckpt_file(dirs[i], N);
        CHECK(ckpt_same(ckA, ck, why, sizeof why) == 0, "final checkpoint after %s at step %d and resume differs "
              "from the uninterrupted run's: %s", names[i], ks[i], why);
        free(ck);
        char pa[1024], pb[1024];
        snprintf(pa, sizeof pa, "%s/samples.txt", A);
        snprintf(pb, sizeof pb, "%s/samples.txt", dirs[i]);
        char *sa = read_text(pa), *sb = read_text(pb);
        /* (after SIGKILL, samples.txt may repeat a sample made after the last checkpoint: it
           is a log, appended to; not compared) */
        if (ks[i] >= 0 && i < 2) CHECK(sa && sb && strlen(sa) > 0 && !strcmp(sa, sb), "samples.txt after %s and resume differs from the "
              "uninterrupted run's:\n%s\n---- vs ----\n%s", names[i], sa ? sa : "", sb ? sb : "");
        free(sa); free(sb);
    }
    /* the train_loss column spelled out, as the brief asks (csv_same covers it too) */
    if (kB >= 0) {
        Csv a, b;
        if (!csv_read(A, &a) && !csv_read(B, &b)) {
            int rows = 0;
            for (int i = 0; i < a.n && i < b.n; i++) {
                char ba[1024], bb[1024], *fa[16], *fb[16];
                csv_fields(a.line[i], ba, sizeof ba, fa, 16);
                csv_fields(b.line[i], bb, sizeof bb, fb, 16);
                if (atoi(fa[0]) < 1) continue;
                rows++;
                CHECK(!strcmp(fa[3], fb[3]) && fa[3][0], "train_loss at step %s: %s vs %s", fa[0], fa[3], fb[3]);
            }
            CHECK(rows == N, "%d training rows compared, expected %d", rows, N);
        }
        csv_free(&a);
        csv_free(&b);
    }
    free(ckA);
    free(A); free(B); free(C); free(K);
}

/* ====================================================================================== */
/* 2. damaged checkpoints are refused */

/* runs eval, export and (for a file named as a checkpoint in its own directory) --resume on
   path; each must fail with a message holding every one of the words */
static void expect_refused(const char *label, const char *path, const char *w1, const char *w2) {
    char *dir = new_dir("refuse");
    char ck[1024];
    snprintf(ck, sizeof ck, "%s/ckpt-00000008.bin", dir);
    CHECK(copy_file(path, ck) == 0, "copy %s", path);
    const char *outst = tpath("out.safetensors");
    Res r[3];
    r[0] = train("eval %s @DATA --split val --threads 2", ck);
    r[1] = train("export %s %s", ck, outst);
    r[2] = train("--resume %s --threads 2", dir);
    const char *what[3] = {"eval", "export", "--resume"};
    for (int i = 0; i < 3; i++) {
        CHECK(r[i].exited && r[i].code != 0 && r[i].code < 128, "%s of a %s checkpoint: %s, expected a refusal",
              what[i], label, how(&r[i]));
        CHECK(strstr(r[i].err, w1) && (!w2 || strstr(r[i].err, w2)), "%s of a %s checkpoint: stderr should "
              "mention \"%s\"%s%s: %s", what[i], label, w1, w2 ? " and " : "", w2 ? w2 : "", tail(r[i].err));
        CHECK(!has_step_lines(r[i].out), "%s of a %s checkpoint trained anyway: %s", what[i], label, tail(r[i].out));
        res_free(&r[i]);
    }
    CHECK(!exists(outst), "export of a %s checkpoint wrote %s", label, outst);
    char ck9[1024];
    snprintf(ck9, sizeof ck9, "%s/ckpt-00000009.bin", dir);
    CHECK(!exists(ck9), "--resume of a %s checkpoint wrote a new checkpoint", label);
    rm_rf(dir);
    free(dir);
}

static void test_damaged_checkpoints(void) {
    CHECK(g_base_ok, "the base run failed");
    if (!g_base_ok) return;
    char *ck8 = ckpt_file(g_base, 8), *ck4 = ckpt_file(g_base, 4);
    Ckpt c;
    char why[512];
    CHECK(ckpt_read(ck8, &c, why, sizeof why) == 0, "base checkpoint: %s", why);
    if (!c.b) { free(ck8); free(ck4); return; }
    const char *p = tpath("damaged.bin");
    unsigned char *d = malloc(c.n);

    /* one flipped byte in the middle of the params */
    memcpy(d, c.b, c.n);
    d[c.params_off + (c.np / 2) * 4 + 1] ^= 0x40;
    write_all(p, d, c.n);
    expect_refused("one-byte-flipped (params)", p, "corrupt", "checksum");
    /* ... in the JSON settings, and in the last byte (Adam v) */
    memcpy(d, c.b, c.n);
    d[HDR_BYTES + c.jlen / 2] ^= 0x01;
    write_all(p, d, c.n);
    expect_refused("one-byte-flipped (settings)", p, "corrupt", "checksum");
    memcpy(d, c.b, c.n);
    d[c.n - 1] ^= 0x80;
    write_all(p, d, c.n);
    expect_refused("one-byte-flipped (Adam v)", p, "corrupt", "checksum");
    /* truncated: in the middle of the params, and inside the header */
    write_all(p, c.b, c.params_off + c.np * 2);
    expect_refused("truncated", p, "truncated", NULL);
    write_all(p, c.b, 20);
    expect_refused("truncated-in-header", p, "truncated", NULL);
    /* an unknown format version (bytes 8..11) */
    memcpy(d, c.b, c.n);
    put_u32(d + 8, CKPT_VERSION + 1);
    write_all(p, d, c.n);
    expect_refused("version-changed", p, "version", NULL);
    /* not a checkpoint at all; an empty file */
    const char *txt = "step,tokens\n1,2\n this is not a checkpoint, but it is long enough to hold a header\n";
    write_all(p, txt, strlen(txt));
    expect_refused("text-file", p, "not a flash.c checkpoint", NULL);
    write_all(p, "", 0);
    expect_refused("empty", p, "not a flash.c checkpoint", NULL);

    /* --resume DIR: the newest checkpoint corrupt, an older one valid -> resumes from the
       older one with a warning, and ends exactly where the base run ended */
    char *R = new_dir("fallback");
    char *r4 = ckpt_file(R, 4), *r8 = ckpt_file(R, 8), src[1024], dst[1024];
    copy_file(ck4, r4);
    memcpy(d, c.b, c.n);
    d[c.params_off + (c.np / 2) * 4 + 1] ^= 0x40;
    write_all(r8, d, c.n);
    snprintf(src, sizeof src, "%s/metrics.csv", g_base);
    snprintf(dst, sizeof dst, "%s/metrics.csv", R);
    copy_file(src, dst);
    Res r = train("--resume %s --threads 2", R);
    CHECK(ok_exit(&r), "--resume with a corrupt newest and a valid older checkpoint: %s: %s", how(&r), tail(r.err));
    CHECK(strstr(r.err, "warning") && strstr(r.err, "ckpt-00000008.bin") && strstr(r.err, "checksum"),
          "stderr should warn that ckpt-00000008.bin is skipped (checksum): %s", tail(r.err));
    char want[1200];
    snprintf(want, sizeof want, "resuming %s at step 4", r4);
    CHECK(strstr(r.out, want), "stdout should hold \"%s\": %s", want, tail(r.out));
    res_free(&r);
    CHECK(ckpt_same(ck8, r8, why, sizeof why) == 0, "the run resumed from step 4 ends differently from the "
          "base run: %s", why);
    CHECK(csv_same(g_base, R, why, sizeof why) == 0, "metrics after the fallback resume: %s", why);
    /* eval/export of the directory use the newest valid checkpoint too */
    free(r8);
    r8 = ckpt_file(R, 8);
    write_all(r8, d, c.n);   /* corrupt again */
    const char *outst = tpath("fallback.safetensors");
    r = train("export %s %s", R, outst);
    CHECK(ok_exit(&r) && strstr(r.out, "step 4"), "export of a directory whose newest checkpoint is corrupt "
          "should use step 4: %s: %s %s", how(&r), tail(r.out), tail(r.err));
    res_free(&r);

    free(d);
    ckpt_free(&c);
    free(r4); free(r8); free(R); free(ck8); free(ck4);
}

/* After a fallback resume, checkpoints newer than the resumed step are left from the
   abandoned run (the corrupt one that was skipped). Pruning to --keep-ckpts must not count
   them in place of the valid checkpoints the resumed run writes: with --keep-ckpts 1 the
   run must end with a valid checkpoint of its last step. */
static void test_keep_ckpts_after_fallback(void) {
    int N = 40;
    char recipe[512];
    snprintf(recipe, sizeof recipe, SMALL_MODEL " --steps %d --warmup 0 --eval-every 0 --sample-every 0", N);
    char *D = new_dir("keep1");
    int k = interrupt_run(recipe, "--keep-ckpts 1", D, SIGKILL, N);
    if (k < 0) { rm_rf(D); free(D); return; }
    char junk[1024];
    snprintf(junk, sizeof junk, "%s/ckpt-00000999.bin", D);   /* a damaged newer checkpoint */
    write_all(junk, "FLASHCKP garbage", 16);
    Res r = train("--resume %s --threads 2", D);
    CHECK(ok_exit(&r) && strstr(r.err, "warning"), "--resume past a damaged newer checkpoint: %s: %s", how(&r), tail(r.err));
    res_free(&r);
    char *last = ckpt_file(D, N), why[512];
    Ckpt c;
    CHECK(ckpt_read(last, &c, why, sizeof why) == 0, "the finished run has no valid final checkpoint (%s); "
          "newest file in the directory: step %d", why, newest_ckpt(D));
    ckpt_free(&c);
    Res e = train("export %s %s", D, tpath("keep1.safetensors"));
    CHECK(ok_exit(&e), "export of the finished run's directory: %s: %s", how(&e), tail(e.err));
    res_free(&e);
    free(last);
    rm_rf(D);
    free(D);
}

/* ====================================================================================== */
/* 3. loss.png */

static void test_loss_png(void) {
    CHECK(g_base_ok, "the base run failed");
    if (!g_base_ok) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/loss.png", g_base);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    CHECK(png_image_begin_read_from_file(&im, path), "libpng cannot read %s: %s", path, im.message);
    if (im.warning_or_error & PNG_IMAGE_ERROR) return;
    CHECK(im.width == 800 && im.height == 500, "loss.png is %ux%u, expected 800x500", im.width, im.height);
    CHECK(im.format & PNG_FORMAT_FLAG_COLOR, "loss.png is not RGB(A) (format 0x%x)", im.format);
    im.format = PNG_FORMAT_RGB;
    size_t sz = PNG_IMAGE_SIZE(im);
    unsigned char *px = malloc(sz);
    CHECK(png_image_finish_read(&im, NULL, px, 0, NULL), "libpng: %s", im.message);
    const int col[2][3] = {{70, 130, 200}, {220, 90, 40}};
    long cnt[2] = {0, 0}, white = 0, colored = 0;
    unsigned xmin[2] = {99999, 99999}, xmax[2] = {0, 0};
    for (unsigned y = 0; y < im.height; y++)
        for (unsigned x = 0; x < im.width; x++) {
            const unsigned char *q = px + ((size_t)y * im.width + x) * 3;
            if (q[0] > 245 && q[1] > 245 && q[2] > 245) white++;
            int mx = q[0] > q[1] ? (q[0] > q[2] ? q[0] : q[2]) : (q[1] > q[2] ? q[1] : q[2]);
            int mn = q[0] < q[1] ? (q[0] < q[2] ? q[0] : q[2]) : (q[1] < q[2] ? q[1] : q[2]);
            if (mx - mn > 40) colored++;
            for (int s = 0; s < 2; s++)
                if (abs(q[0] - col[s][0]) < 25 && abs(q[1] - col[s][1]) < 25 && abs(q[2] - col[s][2]) < 25) {
                    cnt[s]++;
                    if (x < xmin[s]) xmin[s] = x;
                    if (x > xmax[s]) xmax[s] = x;
                }
        }
    long total = (long)im.width * im.height;
    if (getenv("TEST_TRAINER_VERBOSE"))
        printf("  (loss.png: white %ld, coloured %ld, train %ld px x %u..%u, val %ld px x %u..%u)\n", white, colored,
               cnt[0], xmin[0], xmax[0], cnt[1], xmin[1], xmax[1]);
    CHECK(white > total / 2, "loss.png should be mostly white background: %ld of %ld pixels", white, total);
    CHECK(colored > 500, "loss.png has only %ld coloured pixels", colored);
    CHECK(cnt[0] > 300, "train-loss colour (70,130,200): %ld pixels", cnt[0]);
    CHECK(cnt[1] > 100, "validation-loss colour (220,90,40): %ld pixels", cnt[1]);
    /* the train curve (steps 1..8) and the validation curve (0, 4, 8) run across the plot */
    CHECK(cnt[0] && xmax[0] - xmin[0] > 300, "the train curve spans x %u..%u only", xmin[0], xmax[0]);
    CHECK(cnt[1] && xmax[1] - xmin[1] > 300, "the validation curve spans x %u..%u only", xmin[1], xmax[1]);
    free(px);
    png_image_free(&im);
}

/* ====================================================================================== */
/* 4. metrics.csv */

static void test_metrics_csv(void) {
    CHECK(g_base_ok, "the base run failed");
    if (!g_base_ok) return;
    Csv c;
    CHECK(csv_read(g_base, &c) == 0, "cannot read %s/metrics.csv", g_base);
    if (!c.header) return;
    /* the columns this test (and any reader) relies on, spelled out as well as the macro */
    const char *want = "step,tokens,lr,train_loss,val_loss,val_bpc,grad_norm,tok_per_s,elapsed_s";
    CHECK(!strcmp(c.header, METRICS_HEADER) && !strcmp(c.header, want), "header \"%s\", expected \"%s\"", c.header, want);
    CHECK(c.n == 9, "%d rows, expected 9 (a step-0 validation row and steps 1..8)", c.n);
    const double peak = 2e-3, min_lr = 5e-5;
    const int warm = 2, total = 8;
    double prev_elapsed = -1;
    for (int i = 0; i < c.n; i++) {
        char buf[1024], *f[16];
        int k = csv_fields(c.line[i], buf, sizeof buf, f, 16);
        CHECK(k == 9, "row %d has %d fields: %s", i + 1, k, c.line[i]);
        if (k != 9) continue;
        char *e;
        long step = strtol(f[0], &e, 10);
        CHECK(*e == 0 && step == i, "row %d: step \"%s\", expected %d", i + 1, f[0], i);
        long tokens = strtol(f[1], &e, 10);
        CHECK(*e == 0 && tokens == step * 2 * 4 * 64, "step %ld: tokens %s, expected %ld", step, f[1], step * 512);
        int has_val = step % 4 == 0;
        if (step == 0) {
            CHECK(!f[2][0] && !f[3][0] && !f[6][0], "the step-0 row should hold only the validation loss: %s", c.line[i]);
        } else {
            double lr = strtod(f[2], &e);
            CHECK(*e == 0 && f[2][0], "step %ld: lr \"%s\" does not parse", step, f[2]);
            /* linear warmup to the peak, then linear decay towards min-lr (optim's lr_at) */
            long s = step - 1;
            double want = s < warm ? peak * (s + 1) / warm : peak - (peak - min_lr) * (double)(s - warm) / (total - warm);
            CHECK(fabs(lr - want) <= 1e-8 * peak, "step %ld: lr %.9g, the schedule gives %.9g", step, lr, want);
            double tl = strtod(f[3], &e);
            CHECK(*e == 0 && f[3][0] && isfinite(tl) && tl > 0 && tl < 10, "step %ld: train_loss \"%s\"", step, f[3]);
            double gn = strtod(f[6], &e);
            CHECK(*e == 0 && f[6][0] && isfinite(gn) && gn > 0, "step %ld: grad_norm \"%s\"", step, f[6]);
            double tps = strtod(f[7], &e);
            CHECK(*e == 0 && f[7][0] && tps > 0, "step %ld: tok_per_s \"%s\"", step, f[7]);
        }
        if (has_val) {
            double vl = strtod(f[4], &e);
            CHECK(*e == 0 && f[4][0] && isfinite(vl) && vl > 0 && vl < 10, "step %ld: val_loss \"%s\"", step, f[4]);
            double bpc = strtod(f[5], &e);
            CHECK(*e == 0 && f[5][0] && fabs(bpc - vl / log(2.0)) <= 1e-7 * bpc, "step %ld: val_bpc %s, val_loss/ln2 = %.9g",
                  step, f[5], vl / log(2.0));
        } else {
            CHECK(!f[4][0] && !f[5][0], "step %ld: no validation was due, yet val fields \"%s\",\"%s\"", step, f[4], f[5]);
        }
        double el = strtod(f[8], &e);
        CHECK(*e == 0 && f[8][0] && el >= prev_elapsed, "step %ld: elapsed_s \"%s\" (previous %.3f)", step, f[8], prev_elapsed);
        prev_elapsed = el;
    }
    /* the step-0 validation loss of a byte model starts near ln 256 = 5.545 */
    if (c.n > 0) {
        char buf[1024], *f[16];
        if (csv_fields(c.line[0], buf, sizeof buf, f, 16) == 9) {
            double v0 = atof(f[4]);
            CHECK(fabs(v0 - log(256.0)) < 0.5, "step-0 val_loss %.4f, expected about ln 256 = 5.545", v0);
        }
    }
    csv_free(&c);
    /* config.json holds the run's settings */
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", g_base);
    char *cfg = read_text(path);
    CHECK(cfg && strstr(cfg, "\"dim\": 32") && strstr(cfg, "\"steps\": 8") && strstr(cfg, "\"seq_len\": 64"),
          "config.json lacks the run's settings: %s", cfg ? cfg : "(missing)");
    free(cfg);
}

/* ====================================================================================== */
/* 5. bad arguments: an error on stderr and a non-zero exit, never a crash */

static void test_bad_arguments(void) {
    char *E = new_dir("emptydir");
    const char *nofile = tpath("does-not-exist.gz");
    const char *empty = tpath("empty.txt");
    write_all(empty, "", 0);
    const char *tiny = tpath("tiny.txt");
    unsigned char *t = some_text(1000);
    write_all(tiny, t, 1000);
    free(t);
    const char *textfile = tpath("notckpt.bin");
    write_all(textfile, "hello\n", 6);
    char ck[1024] = "", run[1024] = "";
    if (g_base_ok) {
        snprintf(ck, sizeof ck, "%s/ckpt-00000008.bin", g_base);
        snprintf(run, sizeof run, "%s", g_base);
    } else {
        CHECK(0, "the base run failed; cases needing a checkpoint use a missing one");
        snprintf(ck, sizeof ck, "%s", nofile);
        snprintf(run, sizeof run, "%s", nofile);
    }
    const char *out = tpath("out");   /* never created */
    const char *M = "--dim 32 --depth 1 --group-size 16 --qk-dim 16 --seq-len 64 --batch 2 --accum 1 --steps 2 --warmup 0 --threads 2";
    static struct { char args[4096]; const char *want; } cs[128];
    int n = 0;
#define CASE(want_, ...) do { if (n >= 128) { fprintf(stderr, "too many cases\n"); exit(3); } snprintf(cs[n].args, sizeof cs[n].args, __VA_ARGS__); cs[n].want = want_; n++; } while (0)
    /* training */
    CASE("unknown option", "%s --out %s --bogus @DATA", M, out);
    CASE("unknown option", "%s --out %s -x @DATA", M, out);
    CASE("needs a value", "%s @DATA --out", M);
    CASE("needs a value", "@DATA %s --out %s --steps", M, out);
    CASE("--steps", "%s --out %s --steps abc @DATA", M, out);
    CASE("--steps", "%s --out %s --steps 1.5 @DATA", M, out);
    CASE("--steps", "%s --out %s --steps 0 @DATA", M, out);
    CASE("--steps", "%s --out %s --steps -3 @DATA", M, out);
    CASE("--lr", "%s --out %s --lr -1 @DATA", M, out);
    CASE("--lr", "%s --out %s --lr nan @DATA", M, out);
    CASE("--lr", "%s --out %s --lr inf @DATA", M, out);
    CASE("--lr", "%s --out %s --lr 1e-3x @DATA", M, out);
    CASE("--seq-len", "%s --out %s --seq-len 0 @DATA", M, out);
    CASE("--batch", "%s --out %s --batch 0 @DATA", M, out);
    CASE("--accum", "%s --out %s --accum -1 @DATA", M, out);
    CASE("--threads", "%s --out %s --threads -1 @DATA", M, out);
    CASE("--seed", "%s --out %s --seed -1 @DATA", M, out);
    CASE("--seed", "%s --out %s --seed abc @DATA", M, out);
    CASE("--norm", "%s --out %s --norm foo @DATA", M, out);
    CASE("--clip-mode", "%s --out %s --clip-mode foo @DATA", M, out);
    CASE("--attn-fn", "%s --out %s --attn-fn foo @DATA", M, out);
    CASE("preset", "%s --out %s --preset foo @DATA", M, out);
    CASE("needs a value", "%s --out %s @DATA --preset", M, out);
    CASE("takes no value", "%s --out %s --shift-tokens=1 @DATA", M, out);
    CASE("--dim", "%s --out %s --dim 1 @DATA", M, out);
    CASE("dim", "%s --out %s --dim 33 @DATA", M, out);
    CASE("query_key_dim", "%s --out %s --qk-dim 15 @DATA", M, out);
    CASE("expansion", "%s --out %s --expansion 0 @DATA", M, out);
    CASE("expansion", "%s --out %s --expansion 0.001 @DATA", M, out);
    CASE("--depth", "%s --out %s --depth 0 @DATA", M, out);
    CASE("--warmup", "%s --out %s --warmup 5 @DATA", M, out);
    CASE("--min-lr", "%s --out %s --lr 1e-4 --min-lr 1e-3 @DATA", M, out);
    CASE("--clip", "%s --out %s --clip 0 --clip-mode local @DATA", M, out);
    CASE("--eval-windows", "%s --out %s --eval-windows -1 @DATA", M, out);
    CASE("--keep-ckpts", "%s --out %s --keep-ckpts 0 @DATA", M, out);
    CASE("--device", "%s --out %s --device tpu @DATA", M, out);
    CASE("--precision", "%s --out %s --precision fp8 @DATA", M, out);
    CASE("fp32 only", "%s --out %s --device cpu --precision bf16 @DATA", M, out);
    CASE("non-empty", "%s --out= @DATA", M);
    CASE("no data FILE", "%s --out %s", M, out);
    CASE("one data FILE", "%s --out %s @DATA @DATA", M, out);
    CASE("cannot open", "%s --out %s %s", M, out, nofile);
    CASE("empty", "%s --out %s %s", M, out, empty);
    CASE("--seq-len", "%s --out %s --seq-len 200 %s", M, out, tiny);            /* splits of 900/50/50 bytes */
    CASE("--seq-len", "%s --out %s --seq-len 300000 @DATA", M, out);           /* longer than the val split */
    CASE("init-from", "%s --out %s --init-from %s @DATA", M, out, nofile);
    CASE("init-from", "%s --out %s --init-from %s @DATA", M, out, textfile);
    /* --resume */
    CASE("--resume", "--resume %s --dim 64", run);
    CASE("--resume", "--resume %s --steps 100", run);
    CASE("--resume", "--resume %s --lr 0.1", run);
    CASE("--resume", "--resume %s --init-from %s", run, textfile);
    CASE("no checkpoint", "--resume %s", E);
    CASE("cannot open", "--resume %s", nofile);
    CASE("cannot open", "--resume %s %s", run, nofile);
    CASE("needs a value", "--resume");
    /* eval */
    CASE("needs CHECKPOINT and FILE", "eval");
    CASE("needs CHECKPOINT and FILE", "eval %s", ck);
    CASE("--split", "eval %s @DATA --split train", ck);
    CASE("needs a value", "eval %s @DATA --split", ck);
    CASE("--seq-len", "eval %s @DATA --seq-len 0", ck);
    CASE("--batch", "eval %s @DATA --batch x", ck);
    CASE("unknown eval option", "eval %s @DATA --bogus", ck);
    CASE("--device", "eval %s @DATA --device tpu", ck);
    CASE("unexpected argument", "eval %s @DATA extra", ck);
    CASE("cannot open", "eval %s @DATA", nofile);
    CASE("no checkpoint", "eval %s @DATA", E);
    CASE("not a flash.c checkpoint", "eval %s @DATA", textfile);
    CASE("cannot open", "eval %s %s", ck, nofile);
    CASE("empty", "eval %s %s", ck, empty);
    /* sample */
    CASE("needs a CHECKPOINT", "sample");
    CASE("--temperature", "sample %s --temperature 0", ck);
    CASE("--temperature", "sample %s --temperature -1", ck);
    CASE("--temperature", "sample %s --temperature abc", ck);
    CASE("--temperature", "sample %s --temperature nan", ck);
    CASE("--len", "sample %s --len 0", ck);
    CASE("--len", "sample %s --len -5", ck);
    CASE("needs a value", "sample %s --len", ck);
    CASE("--seed", "sample %s --seed -1", ck);
    CASE("--num-samples", "sample %s --num-samples 0", ck);
    CASE("--num-samples", "sample %s --num-samples x", ck);
    CASE("unknown sample option", "sample %s --bogus", ck);
    CASE("fp32 only", "sample %s --device cpu --precision bf16", ck);
    CASE("unexpected argument", "sample %s %s", ck, ck);
    CASE("cannot open", "sample %s", nofile);
    CASE("no checkpoint", "sample %s", E);
    /* export */
    CASE("usage", "export");
    CASE("usage", "export %s", ck);
    CASE("usage", "export %s a.safetensors b.safetensors", ck);
    CASE("cannot open", "export %s %s", nofile, tpath("x.safetensors"));
    CASE("error", "export %s %s/no/such/dir/x.safetensors", ck, g_tmp);
    CASE("--device", "export %s %s --device tpu", ck, tpath("y.safetensors"));
    CASE("unknown export option", "export %s %s --steps 3", ck, tpath("y.safetensors"));
    /* bench */
    CASE("unknown option", "bench --bogus");
    CASE("--steps", "bench --steps abc");
    CASE("--steps", "bench --steps 0");
    CASE("unexpected argument", "bench somefile");
    CASE("--norm", "bench --norm foo");
    CASE("--threads", "bench --threads -2");
#undef CASE
    for (int i = 0; i < n; i++) {
        Res r = train("%s", cs[i].args);
        if (getenv("TEST_TRAINER_VERBOSE")) {
            const char *e = strstr(r.err, "error");
            printf("  [%s] -> %s: %.*s\n", cs[i].args, how(&r), e ? (int)strcspn(e, "\n") : 0, e ? e : "");
        }
        int crash = !r.exited || r.timed_out;
        CHECK(!crash, "./train %s: %s (a crash)\n%s", cs[i].args, how(&r), tail(r.err));
        CHECK(r.exited && r.code != 0 && r.code < 128, "./train %s: %s, expected a non-zero exit below 128", cs[i].args, how(&r));
        CHECK(strstr(r.err, "error") && strstr(r.err, cs[i].want), "./train %s: stderr should hold \"error\" and \"%s\": %s",
              cs[i].args, cs[i].want, tail(r.err));
        CHECK(!has_step_lines(r.out), "./train %s: training output on a bad command: %s", cs[i].args, tail(r.out));
        res_free(&r);
    }
    CHECK(!exists(out), "a refused run created its --out directory %s", out);
    /* a model too large for memory is refused, not killed (2 GiB address space). Not in the
       sanitizer pass: AddressSanitizer maps terabytes of shadow memory, which an
       address-space limit forbids before our code runs. */
    if (!getenv("FLASH_TEST_SANITIZED")) {
        Args a = {0};
        a_add(&a, "--dim"); a_add(&a, "8192"); a_add(&a, "--depth"); a_add(&a, "64"); a_add(&a, "--seq-len");
        a_add(&a, "64"); a_add(&a, "--steps"); a_add(&a, "2"); a_add(&a, "--warmup"); a_add(&a, "0");
        a_add(&a, "--threads"); a_add(&a, "2"); a_add(&a, "--out"); a_add(&a, out); a_add(&a, g_data);
        Res r = run_args(&a, 2048);
        a_free(&a);
        CHECK(r.exited && r.code != 0 && r.code < 128 && strstr(r.err, "error"), "a 3e10-parameter model under a "
              "2 GiB limit: %s: %s", how(&r), tail(r.err));
        res_free(&r);
    }
    /* no arguments: the help on stderr, exit 2 */
    {
        Args a = {0};
        Res r = run_args(&a, 0);
        CHECK(r.exited && r.code == 2 && strstr(r.err, "usage"), "./train without arguments: %s: %s", how(&r), tail(r.err));
        res_free(&r);
    }
    /* --help: exit 0, every flag listed */
    Res h = train("--help");
    CHECK(ok_exit(&h), "./train --help: %s", how(&h));
    const char *flags[] = {"--out", "--resume", "--preset", "--steps", "--seed", "--batch", "--accum", "--seq-len",
                           "--lr", "--warmup", "--min-lr", "--weight-decay", "--clip", "--clip-mode", "--eval-every",
                           "--sample-every", "--ckpt-every", "--threads", "--init-from", "--dim", "--depth",
                           "--group-size", "--qk-dim", "--expansion", "--norm", "--shift-tokens",
                           "--no-shift-tokens", "--attn-fn"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        /* as a whole word: followed by a space, a newline or ',' */
        int found = 0;
        for (const char *p = h.out; (p = strstr(p, flags[i])); p++) {
            char nx = p[strlen(flags[i])], pv = p == h.out ? ' ' : p[-1];
            if ((nx == ' ' || nx == '\n' || nx == ',') && (pv == ' ' || pv == '\n' || pv == '(')) { found = 1; break; }
        }
        CHECK(found, "./train --help does not mention %s", flags[i]);
    }
    res_free(&h);
    const char *subs[] = {"eval", "sample", "export", "bench"};
    for (int i = 0; i < 4; i++) {
        Res r = train("%s --help", subs[i]);
        CHECK(ok_exit(&r) && strstr(r.out, "usage: ./train") && strstr(r.out, subs[i]), "./train %s --help: %s: %s",
              subs[i], how(&r), tail(r.out));
        res_free(&r);
    }
    rm_rf(E);
    free(E);
}

/* ====================================================================================== */
/* 6. the model learns on real text */

static double val_at(const Csv *c, long step) {
    for (int i = 0; i < c->n; i++) {
        char buf[1024], *f[16];
        if (csv_fields(c->line[i], buf, sizeof buf, f, 16) == 9 && atol(f[0]) == step && f[4][0]) return atof(f[4]);
    }
    return NAN;
}

static void test_learns(void) {
    int steps = g_small ? 30 : 60, every = steps / 2;
    double bound = g_small ? 0.80 : 0.75;
    char *D = new_dir("learn");
    Res r = train("--dim 64 --depth 2 --group-size 64 --qk-dim 32 --seq-len 128 --batch 8 --accum 1 --threads 2 "
                  "--steps %d --warmup 10 --lr 2e-3 --eval-every %d --sample-every 0 --ckpt-every 0 --out %s @DATA",
                  steps, every, D);
    CHECK(ok_exit(&r), "training run: %s: %s", how(&r), tail(r.err));
    double secs = r.secs;
    res_free(&r);
    Csv c;
    CHECK(csv_read(D, &c) == 0, "no metrics.csv");
    double v0 = val_at(&c, 0), vm = val_at(&c, every), v1 = val_at(&c, steps);
    printf("  (learning run: %d steps in %.1f s; val_loss %.3f -> %.3f -> %.3f)\n", steps, secs, v0, vm, v1);
    CHECK(isfinite(v0) && fabs(v0 - log(256.0)) < 0.5, "step-0 val_loss %.4f, expected about ln 256", v0);
    CHECK(isfinite(vm) && vm < v0, "val_loss at step %d: %.4f, not below step 0's %.4f", every, vm, v0);
    CHECK(isfinite(v1) && v1 < bound * v0, "final val_loss %.4f is not below %.2f x the step-0 %.4f = %.4f", v1, bound, v0, bound * v0);
    /* the training loss falls too: mean of the last 10 steps below the first step's */
    double first = NAN, last10 = 0;
    int nl = 0;
    for (int i = 0; i < c.n; i++) {
        char buf[1024], *f[16];
        if (csv_fields(c.line[i], buf, sizeof buf, f, 16) != 9 || !f[3][0]) continue;
        long s = atol(f[0]);
        if (s == 1) first = atof(f[3]);
        if (s > steps - 10) { last10 += atof(f[3]); nl++; }
    }
    CHECK(nl == 10 && last10 / nl < 0.8 * first, "train loss: first %.4f, mean of the last 10 %.4f", first, nl ? last10 / nl : NAN);
    csv_free(&c);
    rm_rf(D);
    free(D);
}

/* ====================================================================================== */
/* 7. sample, export, eval */

static void test_sample_export_eval(void) {
    CHECK(g_base_ok, "the base run failed");
    if (!g_base_ok) return;
    /* sample: deterministic per seed */
    Res a = train("sample %s --len 50 --seed 3 --threads 2", g_base);
    Res b = train("sample %s --len 50 --seed 3 --threads 1", g_base);
    char *ck8 = ckpt_file(g_base, 8);
    Res b2 = train("sample %s --len 50 --seed 3", ck8);
    Res c = train("sample %s --len 50 --seed 4", g_base);
    Res p = train("sample %s --len 20 --seed 3 --prompt [[Anarchism", g_base);
    CHECK(ok_exit(&a) && ok_exit(&b) && ok_exit(&b2) && ok_exit(&c) && ok_exit(&p), "sample: %s %s %s %s %s: %s",
          how(&a), how(&b), how(&b2), how(&c), how(&p), tail(a.err));
    CHECK(strlen(a.out) == 52, "sample --len 50 printed %zu bytes, expected 52 (prompt \"\\n\" as a space, 50, "
          "newline): \"%s\"", strlen(a.out), a.out);
    CHECK(!strcmp(a.out, b.out), "the same seed gave different samples:\n%s\n%s", a.out, b.out);
    CHECK(!strcmp(a.out, b2.out), "the run directory and its newest checkpoint sampled differently:\n%s\n%s", a.out, b2.out);
    CHECK(strcmp(a.out, c.out), "seeds 3 and 4 gave the same sample: %s", a.out);
    CHECK(!strncmp(p.out, "[[Anarchism", 11) && strlen(p.out) == 11 + 20 + 1, "sample --prompt: \"%s\"", p.out);
    for (const char *q = a.out; *q && q < a.out + 51; q++)
        CHECK((unsigned char)*q >= 32, "sample printed byte %d below 32", *q);
    res_free(&a); res_free(&b); res_free(&b2); res_free(&c); res_free(&p);
    /* longer than the training context (64), and several sequences at once */
    Res l = train("sample %s --len 300 --seed 5", g_base);
    CHECK(ok_exit(&l) && strlen(l.out) == 302, "sample --len 300 past the 64-byte training context: %s, %zu bytes: %s",
          how(&l), strlen(l.out), tail(l.err));
    res_free(&l);
    Res ns = train("sample %s --len 30 --seed 5 --num-samples 3", g_base);
    CHECK(ok_exit(&ns) && strstr(ns.out, "sample 1") && strstr(ns.out, "sample 3") && !strstr(ns.out, "sample 4"),
          "sample --num-samples 3: %s: %s", how(&ns), tail(ns.out));
    res_free(&ns);

    /* export: a safetensors file st_load opens, with token_emb.weight [256, dim] equal to
       the checkpoint's parameters */
    const char *st = tpath("model.safetensors");
    Res e = train("export %s %s", g_base, st);
    CHECK(ok_exit(&e), "export: %s: %s", how(&e), tail(e.err));
    res_free(&e);
    StFile f;
    char err[512];
    CHECK(st_load(&f, st, err, sizeof err) == 0, "st_load: %s", err);
    const StTensor *t = f.tensors ? st_find(&f, "token_emb.weight") : NULL;
    CHECK(t != NULL, "no token_emb.weight in the export");
    if (t) {
        CHECK(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 256 && t->shape[1] == 32,
              "token_emb.weight: %s ndim %d shape [%lld, %lld], expected F32 [256, 32]", t->dtype_str, t->ndim,
              (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : -1));
        const float *w = st_tensor_data(&f, t);
        int finite = 1;
        double ss = 0;
        for (int64_t i = 0; i < st_numel(t); i++) { finite &= isfinite(w[i]) != 0; ss += (double)w[i] * w[i]; }
        CHECK(finite && ss > 0, "token_emb.weight: finite %d, sum of squares %g", finite, ss);
        Ckpt ck;
        char why[512];
        if (ckpt_read(ck8, &ck, why, sizeof why) == 0) {
            /* the exported tensor is a run of the checkpoint's parameter section */
            const unsigned char *ps = ck.b + ck.params_off;
            int found = 0;
            for (uint64_t k = 0; k + (uint64_t)t->nbytes / 4 <= ck.np && !found; k++)
                found = !memcmp(ps + k * 4, w, t->nbytes);
            CHECK(found, "token_emb.weight's values are not among the checkpoint's parameters");
        }
        ckpt_free(&ck);
    }
    const char *step = f.tensors ? st_meta(&f, "step") : NULL;
    CHECK(step && !strcmp(step, "8"), "export metadata step: %s", step ? step : "(none)");
    const char *cfg = f.tensors ? st_meta(&f, "config") : NULL;
    CHECK(cfg && strstr(cfg, "\"dim\": 32"), "export metadata config: %s", cfg ? cfg : "(none)");
    st_free(&f);

    /* --init-from the export with a zero learning rate: the step-0 validation loss equals the
       base run's at step 8 (same weights, same windows) */
    char *ID = new_dir("initfrom");
    Res in = train("--init-from %s --seq-len 64 --batch 4 --accum 2 --threads 2 --steps 1 --warmup 0 --lr 0 --min-lr 0 "
                   "--eval-every 1 --sample-every 0 --out %s @DATA", st, ID);
    CHECK(ok_exit(&in), "--init-from the export: %s: %s", how(&in), tail(in.err));
    res_free(&in);
    Csv cb, ci;
    if (!csv_read(g_base, &cb) && !csv_read(ID, &ci) && cb.n == 9 && ci.n >= 1) {
        char x[1024], y[1024], *fx[16], *fy[16];
        csv_fields(cb.line[8], x, sizeof x, fx, 16);
        csv_fields(ci.line[0], y, sizeof y, fy, 16);
        CHECK(fx[4][0] && !strcmp(fx[4], fy[4]), "val_loss of the base run at step 8 %s, of its export at step 0 %s",
              fx[4], fy[4]);
    } else {
        CHECK(0, "metrics of the base or the --init-from run missing");
    }
    csv_free(&cb);
    csv_free(&ci);
    rm_rf(ID);
    free(ID);

    /* eval */
    Res v = train("eval %s @DATA --split val --threads 2", g_base);
    CHECK(ok_exit(&v), "eval: %s: %s", how(&v), tail(v.err));
    const char *line = strstr(v.out, "eval: split=val ");
    CHECK(line && (line == v.out || line[-1] == '\n'), "no line starting \"eval: split=val\": %s", tail(v.out));
    if (line) {
        double loss = NAN, bpc = NAN;
        unsigned long long bytes = 0;
        int got = sscanf(line, "eval: split=val loss_nats=%lf bpc=%lf bytes=%llu", &loss, &bpc, &bytes);
        CHECK(got == 3, "cannot parse \"%.120s\"", line);
        CHECK(isfinite(bpc) && bpc > 0 && bpc < 9, "bpc %g", bpc);
        CHECK(fabs(bpc - loss / log(2.0)) < 1e-5, "bpc %.6f != loss %.6f / ln 2", bpc, loss);
        /* 4,154,064 bytes split 90/5/5: validation 207,703 bytes, all but the first predicted */
        if (strstr(g_data, "enwik8-head.gz"))
            CHECK(bytes == 207702, "val bytes predicted %llu, expected 207702", bytes);
    }
    res_free(&v);
    /* bench runs and ends with its machine-readable line */
    Res bn = train("bench --dim 32 --depth 1 --group-size 16 --qk-dim 16 --seq-len 64 --batch 2 --steps 2 --threads 2");
    const char *bl = strstr(bn.out, "\nbench: tok_per_s=");
    CHECK(ok_exit(&bn) && bl && atof(bl + 19) > 0, "bench: %s: %s %s", how(&bn), tail(bn.out), tail(bn.err));
    res_free(&bn);
    Res v2 = train("eval %s @DATA --split test --threads 2", ck8);
    CHECK(ok_exit(&v2) && strstr(v2.out, "eval: split=test "), "eval --split test: %s: %s", how(&v2), tail(v2.out));
    res_free(&v2);
    free(ck8);
}

/* ====================================================================================== */
/* 8. a non-finite loss stops the run */

static void test_nonfinite_stops(void) {
    /* (a) divergence: lr 1000 without clipping; checkpoints after every step */
    char *D = new_dir("diverge");
    Res r = train(SMALL_MODEL " --steps 30 --warmup 0 --lr 1000 --clip-mode none --ckpt-every 1 --keep-ckpts 100 "
                  "--eval-every 0 --sample-every 0 --out %s @DATA", D);
    CHECK(r.exited && r.code != 0 && r.code < 128, "a diverging run should stop with a non-zero exit: %s", how(&r));
    const char *m = strstr(r.err, " at step ");
    int k = m ? atoi(m + 9) : -1;
    CHECK(m && (strstr(r.err, "NaN") || strstr(r.err, "infinite")) && strstr(r.err, "loss"),
          "stderr should say the loss is NaN or infinite at a step: %s", tail(r.err));
    CHECK(k >= 2 && k <= 30, "stopped at step %d", k);
    if (k >= 2 && k <= 30) {
        char *good = ckpt_file(D, k - 1), *bad = ckpt_file(D, k), why[512];
        CHECK(strstr(r.err, good), "stderr should name the last good checkpoint %s: %s", good, tail(r.err));
        CHECK(!exists(bad), "a checkpoint was written for the failed step %d", k);
        Ckpt c;
        CHECK(ckpt_read(good, &c, why, sizeof why) == 0, "the last good checkpoint: %s", why);
        if (c.b) {
            CHECK(get_u64(c.b + c.state_off) == (uint64_t)(k - 1), "it holds step %llu", (unsigned long long)get_u64(c.b + c.state_off));
            int finite = 1;
            for (uint64_t i = 0; i < c.np; i++) { float v; memcpy(&v, c.b + c.params_off + i * 4, 4); finite &= isfinite(v) != 0; }
            CHECK(finite, "the last good checkpoint holds non-finite parameters");
        }
        ckpt_free(&c);
        Res x = train("export %s %s", good, tpath("good.safetensors"));
        CHECK(ok_exit(&x), "export of the last good checkpoint: %s: %s", how(&x), tail(x.err));
        res_free(&x);
        Csv csv;
        if (csv_read(D, &csv) == 0)
            CHECK(csv.n == k - 1 && csv.n > 0 && atoi(csv.line[csv.n - 1]) == k - 1, "metrics.csv should end at step %d "
                  "(%d rows)", k - 1, csv.n);
        csv_free(&csv);
        free(good); free(bad);
    }
    res_free(&r);
    rm_rf(D);
    free(D);

    /* (b) --init-from weights holding inf: the loss is non-finite at step 1 */
    CHECK(g_base_ok, "the base run failed");
    if (!g_base_ok) return;
    const char *good = tpath("src.safetensors"), *bad = tpath("inf.safetensors");
    Res e = train("export %s %s", g_base, good);
    CHECK(ok_exit(&e), "export: %s", how(&e));
    res_free(&e);
    StFile f;
    char err[512];
    if (st_load(&f, good, err, sizeof err)) { CHECK(0, "st_load: %s", err); return; }
    StWriter *w = st_writer_new();
    float *infs = NULL;
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        const void *data = st_tensor_data(&f, t);
        if (!strcmp(t->name, "token_emb.weight")) {
            infs = malloc(t->nbytes);
            for (size_t j = 0; j < t->nbytes / 4; j++) infs[j] = INFINITY;
            data = infs;
        }
        st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data);
    }
    for (int i = 0; i < f.n_meta; i++) st_writer_meta(w, f.meta_keys[i], f.meta_vals[i]);
    CHECK(infs && st_writer_save(w, bad, err, sizeof err) == 0, "writing the inf weights: %s", err);
    st_writer_free(w);
    free(infs);
    st_free(&f);
    char *D2 = new_dir("infinit");
    r = train("--init-from %s --seq-len 64 --batch 4 --accum 1 --threads 2 --steps 5 --warmup 0 --eval-every 0 "
              "--sample-every 0 --ckpt-every 1 --out %s @DATA", bad, D2);
    CHECK(r.exited && r.code != 0 && r.code < 128, "training from inf weights: %s, expected a non-zero exit", how(&r));
    CHECK(strstr(r.err, "at step 1") && (strstr(r.err, "NaN") || strstr(r.err, "infinite")),
          "stderr should say the loss is not finite at step 1: %s", tail(r.err));
    char *c1 = ckpt_file(D2, 1);
    CHECK(!exists(c1), "a checkpoint was written after a non-finite step 1");
    free(c1);
    res_free(&r);
    rm_rf(D2);
    free(D2);
}

/* ====================================================================================== */
/* 9. the data loader's errors, before any training output */

static void test_data_errors(void) {
    size_t n = 200000;
    unsigned char *text = some_text(n);
    const char *gz = tpath("good.gz");
    CHECK(write_gzip(gz, text, n) == 0, "cannot write %s", gz);
    size_t gn;
    unsigned char *g = read_all(gz, &gn);
    CHECK(g && gn > 100, "gzip of %zu bytes", gn);
    if (!g) { free(text); return; }

    const char *missing = tpath("missing.gz");
    const char *empty = tpath("empty.gz");
    write_all(empty, "", 0);
    const char *notgz = tpath("plain.gz");
    write_all(notgz, text, 5000);
    const char *corrupt = tpath("badcrc.gz");       /* the trailer's CRC-32 changed */
    unsigned char *cb = malloc(gn);
    memcpy(cb, g, gn);
    cb[gn - 8] ^= 0xff;
    write_all(corrupt, cb, gn);
    const char *corrupt2 = tpath("baddeflate.gz");  /* a bad deflate block type (11) at the start */
    memcpy(cb, g, gn);
    cb[10] |= 0x06;
    write_all(corrupt2, cb, gn);
    const char *trunc = tpath("trunc.gz");
    write_all(trunc, g, gn / 2);
    const char *zero = tpath("zero.gz");
    write_gzip(zero, "", 0);
    const char *garbage = tpath("garbage.gz");      /* a valid member, then junk */
    unsigned char *gb = malloc(gn + 16);
    memcpy(gb, g, gn);
    memcpy(gb + gn, "junk after gzip!", 16);
    write_all(garbage, gb, gn + 16);
    free(gb);
    free(cb);

    /* eval and --resume read a copy of the base run's last checkpoint (a resume that went
       wrong must not touch the base run) */
    char *R = new_dir("resumecopy");
    if (g_base_ok) {
        char *src = ckpt_file(g_base, 8), *dst = ckpt_file(R, 8);
        copy_file(src, dst);
        free(src); free(dst);
    }
    struct { const char *path, *word; } cs[] = {
        {missing, "cannot open"}, {empty, "empty"}, {notgz, "not gzip"}, {corrupt, "corrupt"},
        {corrupt2, "corrupt"}, {trunc, "truncated"}, {zero, "empty after decompression"}, {garbage, "corrupt"},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        const char *out = tpath("never");
        Res r = train(SMALL_MODEL " --steps 4 --warmup 0 --out %s %s", out, cs[i].path);
        CHECK(r.exited && r.code != 0 && r.code < 128, "training on %s: %s", cs[i].path, how(&r));
        CHECK(strstr(r.err, "error") && strstr(r.err, cs[i].word) && strstr(r.err, cs[i].path),
              "training on %s: stderr should name the file and say \"%s\": %s", cs[i].path, cs[i].word, tail(r.err));
        CHECK(!has_step_lines(r.out) && !strstr(r.out, "model:"), "training on %s printed training output: %s",
              cs[i].path, tail(r.out));
        CHECK(!exists(out), "training on %s created the run directory", cs[i].path);
        res_free(&r);
        if (g_base_ok) {
            Res e = train("eval %s %s --split val", R, cs[i].path);
            CHECK(e.exited && e.code != 0 && e.code < 128 && strstr(e.err, cs[i].word) && !strstr(e.out, "eval:"),
                  "eval on %s: %s: %s", cs[i].path, how(&e), tail(e.err));
            res_free(&e);
            Res q = train("--resume %s %s", R, cs[i].path);
            CHECK(q.exited && q.code != 0 && q.code < 128 && strstr(q.err, cs[i].word) && !has_step_lines(q.out),
                  "--resume with data %s: %s: %s", cs[i].path, how(&q), tail(q.err));
            res_free(&q);
        }
    }
    /* control: the intact gzip trains (so the errors above come from the damage) */
    char *D = new_dir("gzok");
    Res r = train(SMALL_MODEL " --steps 2 --warmup 0 --eval-every 0 --sample-every 0 --out %s %s", D, gz);
    CHECK(ok_exit(&r) && has_step_lines(r.out), "training on the intact %s: %s: %s", gz, how(&r), tail(r.err));
    res_free(&r);
    rm_rf(D);
    free(D);
    rm_rf(R);
    free(R);
    free(g);
    free(text);
}

/* ====================================================================================== */

int main(int argc, char **argv) {
    if (argc > 2) g_data = argv[2];
    const char *b = getenv("FLASH_TRAIN_BIN");
    if (b && *b) g_bin = b;
    const char *s = getenv("FLASH_TEST_SMALL");
    g_small = s && *s && strcmp(s, "0");
    setenv("OMP_WAIT_POLICY", "passive", 0);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/test_trainer_XXXXXX");
    if (!mkdtemp(g_tmp)) { perror("mkdtemp"); return 3; }
    if (access(g_bin, X_OK)) {
        fprintf(stderr, "test_trainer: %s is not executable (build it: make train)\n", g_bin);
        rm_rf(g_tmp);
        printf("RESULT passed=0 failed=1\n");
        return 1;
    }
    /* run a private copy: other work may rebuild ./train while this program runs */
    char copy[512];
    snprintf(copy, sizeof copy, "%s/train", g_tmp);
    if (copy_file(g_bin, copy) == 0 && chmod(copy, 0700) == 0) g_bin = copy;
    double t0 = now_s();
    make_base_run();
    RUN(test_resume_bit_identical);
    RUN(test_damaged_checkpoints);
    RUN(test_keep_ckpts_after_fallback);
    RUN(test_loss_png);
    RUN(test_metrics_csv);
    RUN(test_bad_arguments);
    RUN(test_learns);
    RUN(test_sample_export_eval);
    RUN(test_nonfinite_stops);
    RUN(test_data_errors);
    printf("  (test_trainer: %.1f s)\n", now_s() - t0);
    rm_rf(g_tmp);
    free(g_base);
    for (int i = 0; i < g_seq; i++) free(g_paths[i]);
    TEST_MAIN_END();
}
