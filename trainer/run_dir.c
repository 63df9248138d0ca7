/* trainer/run_dir.c: the run directory's files (see run.h): config.json, metrics.csv (and
 * loss.png through trainer/metrics.c), samples.txt and the checkpoints with their pruning.
 * Rank 0 alone writes them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "atomic.h"
#include "inputs.h"
#include "run.h"
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

/* A new run's --out must not hold another run: its metrics, samples and same-step
   checkpoints would be overwritten and its later checkpoints kept, so that a --resume would
   continue the old model with the new run's metrics. Refused unless --overwrite, which
   removes the old run's checkpoints first. */
void run_dir_check_new(const Options *o) {
    static const char *const files[] = {"config.json", "metrics.csv", "samples.txt"};
    char path[OPT_PATH_MAX + 32];
    const char *found = NULL;
    for (int i = 0; i < 3 && !found; i++) {
        snprintf(path, sizeof path, "%s/%s", o->out_dir, files[i]);
        if (!access(path, F_OK)) found = files[i];
    }
    uint64_t *steps;
    int n = checkpoint_list_all(o->out_dir, &steps);
    if (n < 0) die("error: out of memory listing %s", o->out_dir);
    if (!found && n > 0) found = "checkpoints";
    if (found && !o->overwrite) {
        free(steps);
        fprintf(stderr, "error: %s already holds a run (%s); continue it with ./train --resume %s, choose "
                "another directory with --out DIR, or replace it with --overwrite\n", o->out_dir, found, o->out_dir);
        exit(1);
    }
    if (found) {
        fprintf(stderr, "notice: --overwrite: replacing the run in %s (%d checkpoint%s removed)\n", o->out_dir,
                n, n == 1 ? "" : "s");
        for (int i = 0; i < n; i++) {
            checkpoint_path(path, sizeof path, o->out_dir, steps[i]);
            if (unlink(path) && errno != ENOENT) die("error: cannot remove the old checkpoints: %s", strerror(errno));
        }
    }
    free(steps);
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
