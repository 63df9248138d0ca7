/* trainer/run_dir.c: the run directory's files (see run.h): config.json, metrics.csv (and
 * loss.png through trainer/metrics.c), samples.txt and the checkpoints with their pruning.
 * Rank 0 alone writes them, holding the directory's lock (trainer/runlock.h) for the run's
 * life. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "atomic.h"
#include "config.h"
#include "regular.h"
#include "inputs.h"
#include "run.h"
#include "runlock.h"
#include "runtime.h"

#define RUN_FILE_MAX 32   /* "/ckpt-" + up to 13 digits + ".bin.tmp", with room */

void run_dir_check_path(const char *dir) {
    /* every file of the run directory is DIR/NAME; the longest, a checkpoint's temporary
       file, must fit in a path (else --resume DIR could not find what the run wrote) */
    if (strlen(dir) + RUN_FILE_MAX >= OPT_PATH_MAX)
        die("error: %s", "the run directory's path is too long: its files' paths would exceed "
            "the path limit (keep it under 990 bytes)");
}

static int mkdir_p(const char *dir, char *err, size_t errlen) {
    char buf[OPT_PATH_MAX + 1];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) goto fail;
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) goto fail;
    struct stat st;
    if (stat(buf, &st) || !S_ISDIR(st.st_mode)) { errno = ENOTDIR; goto fail; }
    return 0;
fail:
    snprintf(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
    return -1;
}

/* The files of a run besides its checkpoints (loss.png: trainer/metrics.c). */
static const char *const RUN_FILES[] = {"config.json", "metrics.csv", "samples.txt", "loss.png"};
#define N_RUN_FILES ((int)(sizeof RUN_FILES / sizeof RUN_FILES[0]))

/* What of a run DIR holds: the first of its files found (NULL: none) and its checkpoints. */
static const char *run_found(const char *dir, int *n_ckpts) {
    char path[OPT_PATH_MAX + 32];
    const char *found = NULL;
    for (int i = 0; i < 3 && !found; i++) {   /* loss.png alone is no run */
        snprintf(path, sizeof path, "%s/%s", dir, RUN_FILES[i]);
        if (!access(path, F_OK)) found = RUN_FILES[i];
    }
    uint64_t *steps;
    int n = checkpoint_list_all(dir, &steps);
    if (n < 0) die("error: out of memory listing %s", dir);
    if (n > 0) free(steps);
    if (!found && n > 0) found = "checkpoints";
    *n_ckpts = n;
    return found;
}

int run_dir_take_lock(const char *dir) {
    char err[ERR_MAX];
    int fd = runlock_take(dir, err, sizeof err);
    if (fd < 0) die("error: %s", err);
    return fd;
}

void run_dir_lock(Run *r, const char *dir) {
    if (r->lock_fd < 0) r->lock_fd = run_dir_take_lock(dir);
}

int run_dir_holds_run(const char *dir) {
    int n;
    return run_found(dir, &n) != NULL;
}

/* A new run's --out must not hold another run: its metrics, samples and same-step
   checkpoints would be overwritten and its later checkpoints kept, so that a --resume would
   continue the old model with the new run's metrics. Refused unless --overwrite; and even
   then nothing is touched here: the old run is moved aside only once every check of the new
   run has passed (run_dir_open). Where DIR exists it is locked first, so that what is found
   stays so. */
void run_dir_check_new(Run *r) {
    const Options *o = &r->o;
    struct stat sb;
    if (stat(o->out_dir, &sb) || !S_ISDIR(sb.st_mode)) return;   /* nothing there yet */
    run_dir_lock(r, o->out_dir);
    int n;
    const char *found = run_found(o->out_dir, &n);
    if (found && !o->overwrite) {
        fprintf(stderr, "error: %s already holds a run (%s); continue it with ./train --resume %s, choose "
                "another directory with --out DIR, or replace it with --overwrite\n", o->out_dir, found, o->out_dir);
        exit(1);
    }
}

/* ---- --overwrite: the old run moved aside into DIR/REPLACED_DIR until the new run's first
   checkpoint, moved back if the new run ends before it (an error, a failed write). A run
   killed outright leaves it there: the next --overwrite keeps it (or drops it when the run
   after it did write a checkpoint), and it can be moved back by hand. */
#define REPLACED_DIR "replaced-run"

static struct {
    int pending;                        /* moved aside, no checkpoint of the new run yet */
    char dir[OPT_PATH_MAX];
} g_replaced;

/* Renames DIR/NAME to DIR/REPLACED_DIR/NAME (to = 1) or back; a missing file is no error. */
static int move_file(const char *dir, const char *name, int to) {
    char a[2 * OPT_PATH_MAX], b[2 * OPT_PATH_MAX];
    snprintf(a, sizeof a, "%s/%s", dir, name);
    snprintf(b, sizeof b, "%s/" REPLACED_DIR "/%s", dir, name);
    if (rename(to ? a : b, to ? b : a) && errno != ENOENT) return -1;
    return 0;
}

/* every file of a run in DIR: RUN_FILES and the checkpoints; unlinked (mode 0), moved aside
   (1) or moved back (2). 0, or -1 with errno. */
static int each_run_file(const char *dir, int mode) {
    char sub[OPT_PATH_MAX + 32], path[2 * OPT_PATH_MAX], name[64];
    snprintf(sub, sizeof sub, "%s/" REPLACED_DIR, dir);
    uint64_t *steps;
    int n = checkpoint_list_all(mode == 2 ? sub : dir, &steps);
    if (n < 0) { errno = ENOMEM; return -1; }
    int rc = 0;
    for (int i = 0; i < n + N_RUN_FILES && !rc; i++) {
        if (i < n) {
            checkpoint_path(name, sizeof name, ".", steps[i]);   /* "./ckpt-....bin" */
            memmove(name, name + 2, strlen(name + 2) + 1);
        } else snprintf(name, sizeof name, "%s", RUN_FILES[i - n]);
        if (mode == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, name);
            if (unlink(path) && errno != ENOENT) rc = -1;
        } else rc = move_file(dir, name, mode == 1);
    }
    if (n > 0) free(steps);
    return rc;
}

/* DIR/REPLACED_DIR and the run in it, removed: only a run's files, then the folder (left,
   with a warning, if it holds anything else). */
static void drop_replaced(const char *dir) {
    char sub[OPT_PATH_MAX + 32];
    snprintf(sub, sizeof sub, "%s/" REPLACED_DIR, dir);
    if (each_run_file(sub, 0) || rmdir(sub))
        fprintf(stderr, "warning: could not remove the replaced run in %s: %s\n", sub, strerror(errno));
}

/* atexit: a new run that ends before its first checkpoint gives the directory back to the
   run it was to replace */
static void restore_replaced(void) {
    if (!g_replaced.pending) return;
    g_replaced.pending = 0;
    const char *dir = g_replaced.dir;
    char sub[OPT_PATH_MAX + 32];
    snprintf(sub, sizeof sub, "%s/" REPLACED_DIR, dir);
    if (each_run_file(dir, 0) || each_run_file(dir, 2) || rmdir(sub))
        fprintf(stderr, "warning: the run this one was to replace is in %s: %s\n", sub, strerror(errno));
    else
        fprintf(stderr, "notice: the new run ended before its first checkpoint: the run it was to replace "
                "is back in %s\n", dir);
}

/* Under the lock, after every check of the new run: the old run (if any) moved aside. */
static void replace_old_run(Run *r) {
    const char *dir = r->o.out_dir;
    int n;
    const char *found = run_found(dir, &n);
    if (!found) return;
    if (!r->o.overwrite)   /* a run appeared between the first look and the lock */
        die("error: %s now holds a run; choose another --out, or replace it with --overwrite", dir);
    char sub[OPT_PATH_MAX + 32];
    snprintf(sub, sizeof sub, "%s/" REPLACED_DIR, dir);
    struct stat sb;
    if (!stat(sub, &sb)) {
        /* left by a run killed before it could finish the replacement: with checkpoints in
           DIR that run got far enough and the folder is obsolete; without, DIR holds only
           that run's first files and the folder the run worth keeping */
        if (n > 0) drop_replaced(dir);
        else {
            if (each_run_file(dir, 0)) die("error: cannot remove the files of the run in %s", dir);
            fprintf(stderr, "notice: --overwrite: %s holds the run set aside by an earlier --overwrite that "
                    "never reached its first checkpoint; it stays there until this run writes its first\n", sub);
            goto pending;
        }
    }
    if (mkdir(sub, 0777)) die("error: cannot create %s", sub);
    if (each_run_file(dir, 1)) {
        const int e = errno;
        each_run_file(dir, 2);
        rmdir(sub);
        die("error: --overwrite: cannot move the old run aside: %s", strerror(e));
    }
    fprintf(stderr, "notice: --overwrite: the run in %s (%d checkpoint%s) is moved to %s; it is removed when "
            "this run writes its first checkpoint, and moved back if this run ends before\n", dir, n,
            n == 1 ? "" : "s", sub);
pending:
    snprintf(g_replaced.dir, sizeof g_replaced.dir, "%s", dir);
    if (!g_replaced.pending) atexit(restore_replaced);
    g_replaced.pending = 1;
}

/* samples.txt as the run continues it: empty for a new run; on a resume without the samples
   made after the checkpoint (a run killed after its last checkpoint made them; the resumed
   run makes them again). Written atomically, then appended to. */
static int start_samples(const char *path, int resuming, uint64_t step, char *err, size_t errlen) {
    AtomicFile af;
    if (afile_open(&af, path, err, errlen)) return -1;
    FILE *in = resuming ? fopen(path, "r") : NULL;
    if (in) {
        char line[4096];
        while (fgets(line, sizeof line, in)) {
            unsigned long long s;
            if (sscanf(line, "=== step %llu ===", &s) == 1 && s > step) break;
            fputs(line, af.f);
        }
        fclose(in);
    }
    return afile_commit(&af, err, errlen);
}

void run_dir_open(Run *r) {
    const Options *o = &r->o;
    char err[ERR_MAX];
    if (mkdir_p(o->out_dir, err, sizeof err)) die("error: %s", err);
    run_dir_lock(r, o->out_dir);
    if (!r->resuming) replace_old_run(r);
    const size_t json_cap = 1 << 16;
    char *json = malloc(json_cap);
    if (!json) die("error: %s", "out of memory");
    int jn = options_to_json(o, json, json_cap);
    if (jn < 0) die("error: %s", "the run's settings do not fit in their JSON buffer");
    char cfg_path[OPT_PATH_MAX + 32], samples_path[OPT_PATH_MAX + 32];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->out_dir);
    if (afile_write(cfg_path, json, (size_t)jn, err, sizeof err)) die("error: %s", err);
    free(json);
    if (metrics_open(&r->mt, o->out_dir, r->resuming ? (long)r->st.step : -1, o->opt.total + 1, err, sizeof err))
        die("error: %s", err);
    snprintf(samples_path, sizeof samples_path, "%s/samples.txt", o->out_dir);
    if (start_samples(samples_path, r->resuming, r->st.step, err, sizeof err)) die("error: %s", err);
    r->samples = fopen(samples_path, "a");
    if (!r->samples) die("error: cannot write samples.txt: %s", strerror(errno));
}

int run_save_checkpoint(Run *r) {
    char path[OPT_PATH_MAX + 32], err[ERR_MAX];
    checkpoint_path(path, sizeof path, r->o.out_dir, r->st.step);
    if (checkpoint_save(path, &r->o, &r->st, r->m, err, sizeof err)) {
        fprintf(stderr, "\nerror: %s\n", err);
        return -1;
    }
    /* keep the newest K at or before this step (the one just written among them); a file
       of a later step can only be one that a resume skipped as damaged: left alone. Only
       files named exactly as checkpoints are named, and holding the checkpoint magic. */
    uint64_t *steps;
    int n = checkpoint_list_all(r->o.out_dir, &steps), kept = 0;
    for (int i = 0; i < n; i++) {
        if (steps[i] > r->st.step || kept++ < r->o.keep_ckpts || steps[i] == r->st.step) continue;
        checkpoint_path(path, sizeof path, r->o.out_dir, steps[i]);
        if (checkpoint_has_magic(path)) unlink(path);
    }
    if (n > 0) free(steps);
    /* the run this one replaced is no longer needed: this run can be resumed */
    if (g_replaced.pending) {
        g_replaced.pending = 0;
        drop_replaced(r->o.out_dir);
    }
    return 0;
}

int run_dir_close(Run *r, int report) {
    int failed = !report;   /* a run that failed already said why: its first error stands */
    if (r->samples && fclose(r->samples) && !failed) {
        fprintf(stderr, "error: cannot write samples.txt in %s: %s\n", r->o.out_dir, strerror(errno));
        failed = 1;
    }
    r->samples = NULL;
    if (r->mt.csv && (fflush(r->mt.csv) || ferror(r->mt.csv)) && !failed) {
        fprintf(stderr, "error: cannot write %s: %s\n", r->mt.csv_path, strerror(errno ? errno : EIO));
        failed = 1;
    }
    metrics_close(&r->mt);
    return report && failed;
}

/* The model settings the run directory's config.json gives (0), or -1 when it has none that
   can be read (a directory without config.json: nothing to compare). */
static int dir_model_config(const char *dir, FlashConfig *c) {
    char path[OPT_PATH_MAX + 32], why[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen_regular(path, "r", why, sizeof why);
    if (!f) return -1;
    const size_t cap = 1 << 16;
    char *json = malloc(cap);
    size_t n = json ? fread(json, 1, cap - 1, f) : 0;
    fclose(f);
    if (!json) return -1;
    json[n] = 0;
    *c = config_default();
    int rc = config_from_json(c, json, why, sizeof why);
    free(json);
    return rc;
}

void run_dir_check_model(const char *dir, const char *ckpt_path, const FlashConfig *ck) {
    FlashConfig cf;
    if (dir_model_config(dir, &cf)) return;
    char a[64] = "", b[64] = "";
    const char *key = NULL;
#define DIFF_INT(field, name) \
    if (!key && ck->field != cf.field) { key = name; snprintf(a, sizeof a, "%d", (int)ck->field); \
                                         snprintf(b, sizeof b, "%d", (int)cf.field); }
    DIFF_INT(num_tokens, "num_tokens")
    DIFF_INT(dim, "dim")
    DIFF_INT(depth, "depth")
    DIFF_INT(group_size, "group_size")
    DIFF_INT(query_key_dim, "query_key_dim")
    if (!key && ck->expansion_factor != cf.expansion_factor) {
        key = "expansion_factor";
        snprintf(a, sizeof a, "%.17g", ck->expansion_factor);
        snprintf(b, sizeof b, "%.17g", cf.expansion_factor);
    }
    if (!key && ck->norm_type != cf.norm_type) {
        key = "norm_type";
        snprintf(a, sizeof a, "%s", ck->norm_type == NORM_LAYERNORM ? "layernorm" : "scalenorm");
        snprintf(b, sizeof b, "%s", cf.norm_type == NORM_LAYERNORM ? "layernorm" : "scalenorm");
    }
    if (!key && ck->shift_tokens != cf.shift_tokens) {
        key = "shift_tokens";
        snprintf(a, sizeof a, "%s", ck->shift_tokens ? "true" : "false");
        snprintf(b, sizeof b, "%s", cf.shift_tokens ? "true" : "false");
    }
    if (!key && ck->attn_fn != cf.attn_fn) {
        key = "laplace_attn_fn";
        snprintf(a, sizeof a, "%s", ck->attn_fn == ATTN_LAPLACE ? "true" : "false");
        snprintf(b, sizeof b, "%s", cf.attn_fn == ATTN_LAPLACE ? "true" : "false");
    }
#undef DIFF_INT
    if (!key) return;
    fprintf(stderr, "error: %s is not a checkpoint of the run in %s: its model has %s %s where the run's "
            "config.json has %s %s; resume from the run's own checkpoints (or start a new run with "
            "--init-from on an export of this one)\n", ckpt_path, dir, key, a, key, b);
    exit(1);
}

void run_dir_print_help(FILE *f) {
    fprintf(f, "\nRun directory: one process at a time trains, resumes or exports into it (a lock on\n"
               "DIR/.lock, dropped when the process ends, however it ends); a second is refused with the\n"
               "holder's pid. --overwrite touches nothing until every check of the new run has passed\n"
               "(data, --init-from, memory, --seq-len against the splits); then the old run's files move\n"
               "into DIR/" REPLACED_DIR "/, removed when the new run writes its first checkpoint and moved\n"
               "back if it ends before (a run killed outright leaves them there, to move back by hand).\n");
}
