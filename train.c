/* train.c: flash.c's command line. Trains FLASH-pytorch's FLASHTransformer on enwik8,
 * byte level, and evaluates, samples from and exports its checkpoints.
 *
 *   ./train [options] enwik8.gz      the recipe: data -> model -> (step, eval, sample,
 *                                    checkpoint)* ; see ./train --help
 *   ./train eval | sample | export | bench ...
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "atomic.h"
#include "checkpoint.h"
#include "dataset.h"
#include "evaluate.h"
#include "metrics.h"
#include "model.h"
#include "options.h"
#include "runtime.h"
#include "optim.h"
#include "parallel.h"
#include "sample.h"
#include "state_io.h"


#define ERR_MAX 4096   /* messages quote paths of up to OPT_PATH_MAX bytes */
#define SAMPLE_SEED_SALT 0x5a3c9e1f7b2d4608ULL   /* separates the sample stream from the data's */

/* The first SIGINT/SIGTERM/SIGHUP (a closed terminal) asks for a checkpoint at the end of the current step. A second
   one leaves at once, unless it comes within 2 s of the first: tools such as timeout(1)
   deliver the same signal twice (to the process and to its group), and Ctrl-C twice in a
   row is a user who means it only when the presses are apart. */
static volatile sig_atomic_t g_signal = 0;
static struct timespec g_signal_time;
static void on_signal(int sig) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);   /* async-signal-safe */
    if (g_signal) {
        double dt = (now.tv_sec - g_signal_time.tv_sec) + (now.tv_nsec - g_signal_time.tv_nsec) * 1e-9;
        if (dt > 2.0) _exit(128 + sig);
        return;
    }
    g_signal_time = now;
    g_signal = sig;
}


static void die(const char *fmt, const char *msg) {
    fprintf(stderr, fmt, msg);
    fputc('\n', stderr);
    exit(1);
}

/* ---------------------------------------------------------------------------------- */
static void fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) { snprintf(buf, n, "?"); return; }
    long t = (long)s;
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
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

/* Loads FILE and splits it; every split must hold one window of T+1 bytes. */
static size_t load_data(const char *path, int T, uint8_t **bytes, DataSplit *sp) {
    char err[ERR_MAX];
    size_t n;
    if (data_load(path, bytes, &n, err, sizeof err)) die("error: %s", err);
    if (data_split(*bytes, n, (size_t)T + 1, sp, err, sizeof err))
        die("error: %s (use a shorter --seq-len or a longer file)", err);
    if (sp->proportional && par_is_root())
        fprintf(stderr, "notice: %s has %zu bytes, fewer than enwik8's 10^8: split 90/5/5 in "
                "proportion (%zu / %zu / %zu bytes)\n", path, n, sp->n_train, sp->n_val, sp->n_test);
    return n;
}

/* CRC-32 of the bytes a run uses: with their count, the data's identity in its checkpoints */
static uint32_t data_crc(const uint8_t *p, size_t n) {
    uLong c = crc32(0, Z_NULL, 0);
    for (size_t k = 0; k < n; k += 1u << 30)
        c = crc32(c, p + k, (uInt)(n - k < (1u << 30) ? n - k : (1u << 30)));
    return (uint32_t)c;
}

/* A checkpoint argument may be a file or a run directory (its newest valid checkpoint). */
static int load_checkpoint_arg(const char *arg, Options *o, TrainState *st, CkptState *cs,
                               char *path_out, char *err, size_t errlen) {
    struct stat sb;
    if (stat(arg, &sb)) { snprintf(err, errlen, "cannot open %s: %s", arg, strerror(errno)); return -1; }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(path_out, OPT_PATH_MAX, "%s", arg);
        return checkpoint_load(arg, o, st, cs, err, errlen);
    }
    uint64_t *steps;
    int n = checkpoint_list_all(arg, &steps);
    if (n < 0) { snprintf(err, errlen, "out of memory listing %s", arg); return -1; }
    if (!n) { snprintf(err, errlen, "no checkpoint (ckpt-*.bin) in %s", arg); return -1; }
    for (int i = 0; i < n; i++) {
        checkpoint_path(path_out, OPT_PATH_MAX, arg, steps[i]);
        char e[ERR_MAX / 2];
        if (!checkpoint_load(path_out, o, st, cs, e, sizeof e)) { free(steps); return 0; }
        fprintf(stderr, "warning: skipping %s\n", e);
        snprintf(err, errlen, "no valid checkpoint in %s (newest problem: %s)", arg, e);
    }
    free(steps);
    return -1;
}

/* The model options of a command: its device, precision and threads, activations for
   batches of up to B x T. */
static ModelOptions model_options(const Options *o, int B, int T) {
    ModelOptions mo = {.device = o->device, .precision = o->precision, .threads = o->threads,
                       .gpu = par_local_rank(), .max_B = B, .max_T = T,
                       .step_seqs = o->accum * o->batch};   /* a GPU may run a step as one micro-batch */
    return mo;
}

/* Opens a model of the checkpoint's config on the command's device and loads its state
   (with moments: both Adam moments too); exits with the message on failure. */
static Model *open_checkpointed(const Options *o, const CkptState *cs, int B, int T, int moments) {
    char err[ERR_MAX];
    ModelOptions mo = model_options(o, B, T);
    Model *m = model_open(&o->model, &mo, err, sizeof err);
    if (!m) die("error: %s", err);
    if (checkpoint_apply(cs, m, moments, err, sizeof err)) die("error: %s", err);
    return m;
}

/* ================================== training ======================================= */

typedef struct {
    Options o;
    Model *m;
    TrainState st;
    uint8_t *bytes;
    DataSplit sp;
    int *tokens;          /* accum x B x (T+1): one step's micro-batches */
    Metrics mt;
    int sample_prime;     /* bytes of validation text before each periodic sample */
    int tty;
} Run;

/* 0, or -1 after the message: a checkpoint that could not be written fails the run. */
static int save_checkpoint(Run *r) {
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

/* 0, or -1 when samples.txt could not be written (the sample itself may fail with a warning). */
static int do_sample(Run *r, FILE *samples) {
    const Options *o = &r->o;
    const int prime = r->sample_prime;
    size_t start = rng_below(&r->st.sample_rng, r->sp.n_val - (size_t)prime + 1);
    const uint8_t *p = r->sp.val + start;
    uint8_t *out = malloc((size_t)o->sample_len);
    char err[ERR_MAX];
    double t0 = now_s();
    if (!out || generate(r->m, 1, p, prime, o->sample_len, 1.0, &r->st.sample_rng, out, err, sizeof err)) {
        fprintf(stderr, "%swarning: no sample at step %llu: %s\n", r->tty ? "\n" : "",
                (unsigned long long)r->st.step, out ? err : "out of memory");
        free(out);
        return 0;
    }
    double dt = now_s() - t0;
    if (r->tty) printf("\r\033[K");
    printf("--- sample at step %llu (%d bytes in %.1f s; primed with %d bytes of validation text) ---\n",
           (unsigned long long)r->st.step, o->sample_len, dt, prime);
    print_bytes(stdout, p, prime);
    printf("\n--- generated ---\n");
    print_bytes(stdout, out, o->sample_len);
    printf("\n---\n");
    fflush(stdout);
    fprintf(samples, "=== step %llu ===\n--- prime ---\n", (unsigned long long)r->st.step);
    print_bytes(samples, p, prime);
    fprintf(samples, "\n--- generated ---\n");
    print_bytes(samples, out, o->sample_len);
    fprintf(samples, "\n\n");
    free(out);
    if (fflush(samples) || ferror(samples)) {
        fprintf(stderr, "%serror: cannot write samples.txt in %s: %s\n", r->tty ? "\n" : "",
                o->out_dir, strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

static double do_eval(Run *r) {
    const Options *o = &r->o;
    int *tok = r->tokens;   /* the step's token buffer is free between steps */
    if (par_size() > 1)   /* the windows split across the ranks, the sums combined */
        return o->eval_windows == 0 ? par_eval_split(r->m, r->sp.val, r->sp.n_val, o->batch, o->seq_len, tok)
             : par_eval_windows(r->m, r->sp.val, r->sp.n_val, o->eval_windows, o->batch, o->seq_len, tok);
    if (o->eval_windows == 0) {   /* the whole split, as ./train eval does */
        size_t count;
        return eval_split(r->m, r->sp.val, r->sp.n_val, o->batch, o->seq_len, tok, &count, NULL);
    }
    return eval_windows(r->m, r->sp.val, r->sp.n_val, o->eval_windows, o->batch, o->seq_len, tok);
}

static void plot(Run *r) {
    char title[256], err[512];
    snprintf(title, sizeof title, "FLASH d%d L%d on %.200s", r->o.model.dim, r->o.model.depth,
             strrchr(r->o.data_path, '/') ? strrchr(r->o.data_path, '/') + 1 : r->o.data_path);
    if (metrics_plot(&r->mt, title, err, sizeof err)) fprintf(stderr, "\nwarning: %s\n", err);
}

#define RUN_FILE_MAX 32   /* "/ckpt-" + up to 13 digits + ".bin.tmp", with room */

/* A new run's --out must not hold another run: its metrics, samples and same-step
   checkpoints would be overwritten and its later checkpoints kept, so that a --resume would
   continue the old model with the new run's metrics. Refused unless --overwrite, which
   removes the old run's checkpoints first. */
static void check_run_dir(const Options *o) {
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

static int run_train(Options *cli) {
    Run r;
    memset(&r, 0, sizeof r);
    char err[ERR_MAX], ckpt_path[OPT_PATH_MAX];
    int resuming = cli->resume_dir[0] != 0;
    r.tty = isatty(STDOUT_FILENO) && par_size() == 1;   /* mpirun gives ranks a pty of its own */

    CkptState cs = {0};
    /* every file of the run directory is DIR/NAME; the longest, a checkpoint's temporary
       file, must fit in a path (else --resume DIR could not find what the run wrote) */
    const char *dir_arg = resuming ? cli->resume_dir : cli->out_dir;
    if (strlen(dir_arg) + RUN_FILE_MAX >= OPT_PATH_MAX)
        die("error: %s", "the run directory's path is too long: its files' paths would exceed "
            "the path limit (keep it under 990 bytes)");
    if (resuming) {
        static const char *const allowed[] = {"--resume", "--threads", "--device", "--precision", NULL};
        const char *other = options_given_other(cli, allowed);
        if (other) {
            fprintf(stderr, "error: --resume continues a run with its saved settings, and %s would be "
                    "ignored; only --threads, --device, --precision and the data FILE may be given with it\n", other);
            exit(1);
        }
        if (load_checkpoint_arg(cli->resume_dir, &r.o, &r.st, &cs, ckpt_path, err, sizeof err))
            die("error: cannot resume: %s", err);
        /* the run directory: DIR itself, or the directory of a checkpoint file */
        snprintf(r.o.out_dir, sizeof r.o.out_dir, "%s", cli->resume_dir);
        struct stat sb;
        if (!stat(cli->resume_dir, &sb) && !S_ISDIR(sb.st_mode)) {
            char *slash = strrchr(r.o.out_dir, '/');
            if (slash) *slash = 0; else snprintf(r.o.out_dir, sizeof r.o.out_dir, ".");
        }
        r.o.threads = cli->threads;
        r.o.device = cli->device;
        r.o.precision = cli->precision;
        /* unless told otherwise, continue where the run trained (bit-exact): its device when
           this machine has it, and its precision there */
        const ModelDevice was = model_device_trained_on(r.o.trained_on);
        if (r.o.device == DEVICE_AUTO) {
            ModelDevice got;
            char e[256];
            r.o.device = model_resolve_device(was, &got, e, sizeof e) ? DEVICE_CPU : was;
        }
        if (r.o.precision == PRECISION_DEFAULT && r.o.device == was && was != DEVICE_CPU)
            r.o.precision = strstr(r.o.trained_on, "bf16") ? PRECISION_BF16 : PRECISION_FP32;
        if (cli->data_path[0]) snprintf(r.o.data_path, sizeof r.o.data_path, "%s", cli->data_path);
        printf("resuming %s at step %llu\n", ckpt_path, (unsigned long long)r.st.step);
        if (!par_all_same_u64(r.st.step))
            die("error: %s", "the ranks loaded checkpoints of different steps: --resume needs the run "
                "directory on a filesystem every rank sees");
        if (r.o.ranks != par_size()) {
            /* the same micro-batches per step from the same stream: only the sums' rounding moves */
            const long per_step = (long)r.o.ranks * r.o.accum;
            if (per_step % par_size()) {
                fprintf(stderr, "error: the run trained %d rank%s x --accum %d = %ld micro-batches per step, "
                        "which %d ranks cannot share evenly; resume with a rank count that divides %ld\n",
                        r.o.ranks, r.o.ranks == 1 ? "" : "s", r.o.accum, per_step, par_size(), per_step);
                exit(1);
            }
            if (par_is_root())
                fprintf(stderr, "notice: the checkpoint was trained on %d rank%s with --accum %d and the run continues "
                        "on %d with --accum %ld (the same micro-batches per step): the gradient sums may round "
                        "differently, so it is no longer bit-identical to an uninterrupted run\n", r.o.ranks,
                        r.o.ranks == 1 ? "" : "s", r.o.accum, par_size(), per_step / par_size());
            r.o.accum = (int)(per_step / par_size());
            r.o.ranks = par_size();
        }
        size_t nd = load_data(r.o.data_path, r.o.seq_len, &r.bytes, &r.sp);
        /* the data must be the run's: another file (or the same name holding other bytes)
           would continue on other examples, no longer the run the checkpoint belongs to */
        const uint32_t crc = data_crc(r.bytes, nd);
        if (r.o.data_bytes && (r.o.data_bytes != nd || r.o.data_crc32 != crc)) {
            fprintf(stderr, "error: %s is not the data this run trained on: %zu bytes with CRC-32 %08x "
                    "where the checkpoint recorded %llu bytes with CRC-32 %08x; resume with the run's "
                    "own data file (or start a new run on this one)\n", r.o.data_path, nd, crc,
                    (unsigned long long)r.o.data_bytes, r.o.data_crc32);
            exit(1);
        }
        if (!r.o.data_bytes)
            fprintf(stderr, "notice: this checkpoint predates data identification; the data file is not checked\n");
        r.o.data_bytes = nd;
        r.o.data_crc32 = crc;
        r.m = open_checkpointed(&r.o, &cs, r.o.batch, r.o.seq_len, 1);
        checkpoint_state_free(&cs);
    } else {
        r.o = *cli;
        /* a trial run (--steps below the default warmup): the default warmup shrinks to a
           tenth of the steps, so `./train --steps 30 FILE` runs; a --warmup the user gave is
           never changed (longer than --steps stays an error) */
        if (!options_given(cli, "--warmup") && r.o.opt.warmup > r.o.opt.total) {
            long w = r.o.opt.total / 10;
            fprintf(stderr, "notice: the default warmup of %ld steps is longer than --steps %ld: warming up "
                    "over %ld steps instead (give --warmup N to choose)\n", r.o.opt.warmup, r.o.opt.total, w);
            r.o.opt.warmup = w;
        }
        if (options_validate(&r.o, err, sizeof err)) die("error: %s", err);
        if (par_is_root()) check_run_dir(&r.o);   /* rank 0 owns the run directory */
        r.o.ranks = par_size();
        size_t nd = load_data(r.o.data_path, r.o.seq_len, &r.bytes, &r.sp);   /* bad data fails first */
        r.o.data_bytes = nd;
        r.o.data_crc32 = data_crc(r.bytes, nd);
        ModelOptions mo = model_options(&r.o, r.o.batch, r.o.seq_len);
        if (r.o.init_from[0]) {
            r.m = model_load_safetensors(r.o.init_from, &r.o.model, &mo, err, sizeof err);
            if (!r.m) die("error: --init-from: %s", err);
            const FlashConfig *fc = model_config(r.m);
            if (cli->model_flags_given && memcmp(fc, &r.o.model, sizeof r.o.model))
                fprintf(stderr, "notice: the model options come from %s's config, not the command line\n",
                        r.o.init_from);
            r.o.model = *fc;
        } else {
            r.m = model_open(&r.o.model, &mo, err, sizeof err);
            if (!r.m) die("error: %s", err);
            if (model_init_params(r.m, r.o.seed, err, sizeof err)) die("error: %s", err);
        }
        rng_seed(&r.st.data_rng, r.o.seed);
        rng_seed(&r.st.sample_rng, r.o.seed ^ SAMPLE_SEED_SALT);
    }
    Options *o = &r.o;
    const int root = par_is_root();   /* rank 0 alone writes the run directory and prints */
    if (root && mkdir_p(o->out_dir, err, sizeof err)) die("error: %s", err);
    const int B = o->batch, T = o->seq_len, A = o->accum;
    r.tokens = malloc(sizeof(int) * (size_t)A * B * (T + 1));
    if (!r.tokens) die("error: %s", "out of memory");
    r.sample_prime = o->sample_prime < (int)r.sp.n_val ? o->sample_prime : (int)r.sp.n_val;
    if (r.sample_prime > o->seq_len) r.sample_prime = o->seq_len;
    if (root && o->sample_every > 0 && model_decoder_open(r.m, 1, r.sample_prime, err, sizeof err))
        die("error: %s", err);
    ModelInfo info;
    model_info(r.m, &info);
    {
        /* which device and precision train from here on; a resumed run that moves says so */
        char now[sizeof o->trained_on];
        snprintf(now, sizeof now, "%s %s", info.backend,
                 strstr(info.precision, "bf16") ? "bf16" : "fp32");
        if (resuming && strcmp(now, o->trained_on))
            fprintf(stderr, "notice: the checkpoint was trained on %s and the run continues on %s: it is "
                    "no longer bit-identical to an uninterrupted run\n", o->trained_on, now);
        snprintf(o->trained_on, sizeof o->trained_on, "%s", now);
    }

    const size_t json_cap = 1 << 16;
    char *json = malloc(json_cap);
    if (!json) die("error: %s", "out of memory");
    int jn = options_to_json(o, json, json_cap);
    if (jn < 0) die("error: %s", "the run's settings do not fit in their JSON buffer");
    char cfg_path[OPT_PATH_MAX + 32], samples_path[OPT_PATH_MAX + 32];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", o->out_dir);
    if (root && afile_write(cfg_path, json, (size_t)jn, err, sizeof err)) die("error: %s", err);
    free(json);
    long total = o->opt.total;
    if (root && metrics_open(&r.mt, o->out_dir, resuming ? (long)r.st.step : -1, total + 1, err, sizeof err))
        die("error: %s", err);
    snprintf(samples_path, sizeof samples_path, "%s/samples.txt", o->out_dir);
    if (root && start_samples(samples_path, resuming, r.st.step, err, sizeof err)) die("error: %s", err);
    FILE *samples = root ? fopen(samples_path, "a") : NULL;
    if (root && !samples) die("error: cannot write samples.txt: %s", strerror(errno));

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    const int R = par_size();
    const uint64_t step_tokens = (uint64_t)R * A * B * T;   /* the global step */
    printf("model: %zu trained parameters (d %d, L %d, e %d, s %d, C %d, %s%s, %s); "
           "activations %.0f MiB\n", model_table(r.m)->n_trained, o->model.dim, o->model.depth,
           config_hidden(&o->model), o->model.query_key_dim, o->model.group_size,
           o->model.norm_type == NORM_LAYERNORM ? "layernorm" : "scalenorm",
           o->model.shift_tokens ? ", token shift" : "", (o->model.attn_fn == ATTN_LAPLACE) ? "laplace" : "relu^2",
           info.activation_bytes / 1048576.0);
    char ranks[32] = "";
    if (R > 1) snprintf(ranks, sizeof ranks, "%d ranks x ", R);
    printf("recipe: %ld steps of %s%d x %d x %d = %llu tokens, lr %g (warmup %ld, linear to %g), "
           "wd %g, eps %g, clip %s %g\n",
           total, ranks, A, B, T, (unsigned long long)step_tokens, o->opt.peak_lr, o->opt.warmup,
           o->opt.min_lr, o->opt.weight_decay, o->opt.eps,
           o->opt.clip_mode == CLIP_LOCAL ? "local" : o->opt.clip_mode == CLIP_GLOBAL ? "global" : "none",
           o->opt.clip);
    printf("device: %s, %s%s%s\n", info.device, info.precision, info.detail[0] ? "; " : "", info.detail);
    if (par_summing()) {
        char par[256];
        par_describe(par, sizeof par, r.m);
        printf("data parallel: %s; each rank runs %d of the step's %d micro-batches\n", par, A, R * A);
    }
    printf("run directory: %s\n", o->out_dir);
    fflush(stdout);

    if (!resuming && o->eval_every > 0) {
        double vl = do_eval(&r);
        printf("step 0: val loss %.4f nats, %.4f bpc\n", vl, vl / LN2);
        if (root && metrics_row(&r.mt, 0, 0, NAN, NAN, vl, NAN, NAN, 0))
            die("error: cannot write metrics.csv: %s", strerror(errno ? errno : EIO));
        if (root) plot(&r);
    }
    const double t_start = now_s(), elapsed0 = r.st.elapsed_s;
    const uint64_t step0 = r.st.step;
    int exit_code = 0, agreed_stop = 0, rank_sig = 0;   /* rank_sig: the signal all ranks agreed on */
    while (r.st.step < (uint64_t)total) {
        const long s = (long)r.st.step;
        double t0 = now_s();
        /* the whole step's R x A micro-batches are drawn (the one stream), this rank's A kept */
        if (par_draw_step(r.sp.train, r.sp.n_train, A, B, T, &r.st.data_rng, r.tokens)) die("error: %s", "out of memory");
        double loss = model_accumulate(r.m, r.tokens, A * B, B, T, R * A);
        if (par_summing()) {
            /* the loss summed over the ranks with their signals (every rank stops at the same
               step), then the gradients, in a fixed order: the same bits on every rank */
            rank_sig = g_signal;
            par_step_scalars(&loss, &rank_sig);
            if (isfinite(loss) && par_allreduce_grads(r.m, err, sizeof err)) die("error: %s", err);
        }
        /* a non-finite loss stops before the update; a non-finite gradient norm stops
           without one (model_update leaves everything as it was) */
        double lr = lr_at(&o->opt, s), gnorm = NAN;
        if (isfinite(loss)) gnorm = model_update(r.m, &o->opt, s + 1, lr);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            agreed_stop = 1;   /* the same loss and norm on every rank */
            uint64_t steps[1];
            char last[OPT_PATH_MAX + 32] = "none";
            if (checkpoint_list(o->out_dir, steps, 1)) checkpoint_path(last, sizeof last, o->out_dir, steps[0]);
            if (root) fprintf(stderr, "%serror: the %s is %s at step %ld; stopping without an update. "
                    "Last good checkpoint: %s\n", r.tty ? "\n" : "", isfinite(loss) ? "gradient norm" : "loss",
                    isnan(isfinite(loss) ? gnorm : loss) ? "NaN" : "infinite", s + 1, last);
            exit_code = 1;
            break;
        }
        r.st.step++;
        r.st.tokens += step_tokens;
        double dt = now_s() - t0, tps = step_tokens / dt;
        r.st.elapsed_s = elapsed0 + (now_s() - t_start);

        double vl = NAN;
        int last = r.st.step == (uint64_t)total;
        if (o->eval_every > 0 && (r.st.step % (uint64_t)o->eval_every == 0 || last)) vl = do_eval(&r);
        int werr = !root ? 0 : metrics_row(&r.mt, r.st.step, r.st.tokens, lr, loss, vl, gnorm, tps, r.st.elapsed_s);
        if (werr) {
            fprintf(stderr, "%serror: cannot write %s at step %llu: %s; stopping\n", r.tty ? "\n" : "",
                    r.mt.csv_path, (unsigned long long)r.st.step, strerror(werr));
            exit_code = 1;
            break;
        }

        double per_step = (now_s() - t_start) / (double)(r.st.step - step0);
        char eta[32], el[32];
        fmt_duration(eta, sizeof eta, per_step * (double)(total - (long)r.st.step));
        fmt_duration(el, sizeof el, r.st.elapsed_s);
        if (r.tty || r.st.step % (uint64_t)o->log_every == 0 || last || !isnan(vl)) {
            printf("%sstep %llu/%ld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s%s",
                   r.tty ? "\r\033[K" : "", (unsigned long long)r.st.step, total, loss, lr, gnorm,
                   tps, el, eta, r.tty ? "" : "\n");
            fflush(stdout);
        }
        if (!isnan(vl)) {
            printf("%sstep %llu: val loss %.4f nats, %.4f bpc\n", r.tty ? "\n" : "",
                   (unsigned long long)r.st.step, vl, vl / LN2);
            if (root) plot(&r);
        }
        if (root && o->sample_every > 0 && r.st.step % (uint64_t)o->sample_every == 0 && do_sample(&r, samples)) {
            exit_code = 1;
            break;
        }
        const int sig = R > 1 ? rank_sig : g_signal;
        if (root && ((o->ckpt_every > 0 && r.st.step % (uint64_t)o->ckpt_every == 0) || last || sig)) {
            if (save_checkpoint(&r)) {
                uint64_t prev[1];
                char older[OPT_PATH_MAX + 32] = "none";
                if (checkpoint_list(o->out_dir, prev, 1)) checkpoint_path(older, sizeof older, o->out_dir, prev[0]);
                fprintf(stderr, "error: the checkpoint of step %llu was not written; stopping%s (newest "
                        "checkpoint: %s)\n", (unsigned long long)r.st.step,
                        sig ? (sig == SIGINT ? " on SIGINT" : sig == SIGHUP ? " on SIGHUP" : " on SIGTERM") : "",
                        older);
                exit_code = 1;
                break;
            }
        }
        if (sig) {
            printf("%sstopped by %s at step %llu; checkpoint written. Continue with: ./train --resume %s\n",
                   r.tty ? "\n" : "", sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM",
                   (unsigned long long)r.st.step, o->out_dir);
            exit_code = 128 + sig;
            agreed_stop = 1;
            break;
        }
    }
    /* a stop that only this rank saw (rank 0 could not write the run directory) ends the
       job: the other ranks would wait for its next step */
    if (exit_code && !agreed_stop) par_abort(exit_code);
    if (r.tty) printf("\n");
    if (!exit_code && r.st.step == (uint64_t)total) {
        if (root) plot(&r);
        if (R > 1 && r.st.step > step0)
            printf("data parallel: %d ranks; the gradient and loss sums took %.1f ms per step on rank 0 "
                   "(waiting for the slowest rank included), %.1f%% of the run's time\n", R,
                   1e3 * par_comm_seconds() / (double)(r.st.step - step0),
                   100 * par_comm_seconds() / (now_s() - t_start));
        printf("done: %llu steps, %llu tokens in %.0f s; outputs in %s\n",
               (unsigned long long)r.st.step, (unsigned long long)r.st.tokens, r.st.elapsed_s, o->out_dir);
    }
    if (samples && fclose(samples) && !exit_code) {
        fprintf(stderr, "error: cannot write samples.txt in %s: %s\n", o->out_dir, strerror(errno));
        exit_code = 1;
    }
    if (r.mt.csv && (fflush(r.mt.csv) || ferror(r.mt.csv)) && !exit_code) {
        fprintf(stderr, "error: cannot write %s: %s\n", r.mt.csv_path, strerror(errno ? errno : EIO));
        exit_code = 1;
    }
    metrics_close(&r.mt);
    free(r.tokens); free(r.bytes);
    model_close(r.m);
    return exit_code;
}

/* ================================== subcommands ==================================== */

/* Parses a subcommand's line (argv[1] is its name); exits 0 after --help, 2 on a bad line. */
static void parse_command(Options *o, Command cmd, int argc, char **argv) {
    char err[ERR_MAX];
    int rc = options_parse(o, cmd, argc - 1, argv + 1, err, sizeof err);
    if (rc == 1) exit(0);
    if (rc < 0) { fprintf(stderr, "error: %s\n", err); exit(2); }
}

/* The checkpoint of a subcommand, with the command line's device, precision and threads. */
static void load_for_command(const Options *cli, const char *arg, Options *o, TrainState *st,
                             CkptState *cs, char *path) {
    char err[ERR_MAX];
    if (load_checkpoint_arg(arg, o, st, cs, path, err, sizeof err)) die("error: %s", err);
    o->threads = cli->threads;
    o->device = cli->device;
    o->precision = cli->precision;
}

static int cmd_eval(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_EVAL, argc, argv);
    const char *ckpt = cli.args[0], *file = cli.args[1], *split = cli.split;
    TrainState st;
    CkptState cs;
    char path[OPT_PATH_MAX];
    load_for_command(&cli, ckpt, &o, &st, &cs, path);
    int T = options_given(&cli, "--seq-len") ? cli.seq_len : o.seq_len;
    int B = options_given(&cli, "--batch") ? cli.batch : o.batch;
    uint8_t *bytes;
    DataSplit sp;
    load_data(file, 1, &bytes, &sp);
    const uint8_t *data = strcmp(split, "val") ? sp.test : sp.val;
    size_t n = strcmp(split, "val") ? sp.n_test : sp.n_val;
    if (n < 2) die("error: the %s split is too short", split);
    if ((size_t)T > n - 1) T = (int)(n - 1);
    Model *m = open_checkpointed(&o, &cs, B, T, 0);
    checkpoint_state_free(&cs);
    int *tok = malloc(sizeof(int) * (size_t)B * (T + 1));
    if (!tok) die("error: %s", "out of memory");
    size_t count;
    double t0 = now_s();
    double nats = eval_split(m, data, n, B, T, tok, &count, NULL);
    double dt = now_s() - t0;
    printf("%s: step %llu, %s split of %s: %zu bytes predicted in windows of %d, %.0f s\n",
           path, (unsigned long long)st.step, split, file, count, T, dt);
    printf("eval: split=%s loss_nats=%.6f bpc=%.6f bytes=%zu\n", split, nats, nats / LN2, count);
    free(tok); free(bytes);
    model_close(m);
    return 0;
}

/* Bytes per second of the decoder over positions [1000, 5000) in blocks of 1000, and of
   full-forward recomputation at a 1024-byte context (the model's activations hold 1 x 1024). */
#define FULL_FORWARD_CTX 1024
static void sample_bench(Model *m, double temp, uint64_t seed) {
    char err[ERR_MAX];
    if (model_decoder_open(m, 1, 1, err, sizeof err)) die("error: %s", err);
    Rng rng;
    rng_seed(&rng, seed);
    const int V = model_config(m)->num_tokens, total = 5000, block = 1000;
    float *logits = malloc(sizeof(float) * V);
    if (!logits) die("error: %s", "out of memory");
    int tok = '\n';
    if (model_decoder_prefill(m, &tok, 1, logits)) die("error: %s", "decoder prefill failed");
    double t_block = now_s(), rate[5] = {0}, t_timed = 0;
    for (int pos = 1; pos < total; pos++) {
        tok = sample_topk(logits, V, temp, &rng);
        model_decoder_step(m, &tok, logits);
        if ((pos + 1) % block == 0) {
            double t = now_s();
            rate[(pos + 1) / block - 1] = block / (t - t_block);
            if (pos + 1 > block) t_timed += t - t_block;
            t_block = t;
        }
    }
    double lo = 1e30, hi = 0;
    printf("decoder, one sequence:\n");
    for (int b = 1; b < 5; b++) {
        printf("  positions %d-%d: %.0f bytes/s\n", b * block, (b + 1) * block, rate[b]);
        if (rate[b] < lo) lo = rate[b];
        if (rate[b] > hi) hi = rate[b];
    }
    double dec_rate = 4 * block / t_timed;   /* positions 1,000 to 5,000 */
    /* FLASH-pytorch's way at a 1,024-byte context: a full forward for every new byte */
    const int ctx = FULL_FORWARD_CTX, reps = 5;
    uint8_t *prompt = malloc(ctx), out[reps];
    if (!prompt) die("error: %s", "out of memory");
    for (int t = 0; t < ctx; t++) prompt[t] = (uint8_t)rng_below(&rng, 256);
    /* a warm-up, then the timed bytes */
    if (generate_full_forward(m, prompt, ctx, 1, ctx, temp, &rng, out, err, sizeof err)) die("error: %s", err);
    double t0 = now_s();
    if (generate_full_forward(m, prompt, ctx, reps, ctx, temp, &rng, out, err, sizeof err)) die("error: %s", err);
    double ff_rate = reps / (now_s() - t0);
    ModelInfo info;
    model_info(m, &info);
    printf("full forward per byte at a %d-byte context: %.1f bytes/s\n", ctx, ff_rate);
    printf("sample-bench: decoder_bytes_per_s=%.0f flatness=%.3f full_forward_bytes_per_s=%.2f speedup=%.0f threads=%d\n",
           dec_rate, hi / lo - 1, ff_rate, dec_rate / ff_rate, info.threads);
    free(prompt); free(logits);
    model_decoder_close(m);
}

#define SAMPLE_MAX_BYTES (1 << 26)   /* 64 MiB of generated text per command */
static int cmd_sample(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_SAMPLE, argc, argv);
    const char *prompt = cli.prompt;
    const int len = cli.gen_len, nsamples = cli.num_samples;
    TrainState st;
    CkptState cs;
    char err[ERR_MAX], path[OPT_PATH_MAX];
    load_for_command(&cli, cli.args[0], &o, &st, &cs, path);
    const int plen = (int)strlen(prompt);
    /* the text is held whole before it prints: a bound on it, not a 64 GiB malloc */
    if ((double)len * nsamples > SAMPLE_MAX_BYTES) {
        fprintf(stderr, "error: --len %d x --num-samples %d = %.0f bytes; at most %d bytes in all\n", len, nsamples,
                (double)len * nsamples, SAMPLE_MAX_BYTES);
        return 2;
    }
    /* activations for the full forwards of --bench; the decoder reserves its own */
    Model *m = open_checkpointed(&o, &cs, 1, cli.sample_bench ? FULL_FORWARD_CTX : 1, 0);
    checkpoint_state_free(&cs);
    if (cli.sample_bench) { sample_bench(m, cli.temperature, cli.seed); model_close(m); return 0; }
    if (model_decoder_open(m, nsamples, plen, err, sizeof err)) die("error: %s", err);
    uint8_t *out = malloc((size_t)len * nsamples);
    if (!out) die("error: %s", "out of memory");
    Rng rng;
    rng_seed(&rng, cli.seed);
    generate_progress(stderr);
    if (generate(m, nsamples, (const uint8_t *)prompt, plen, len, cli.temperature, &rng, out, err, sizeof err))
        die("error: %s", err);
    for (int q = 0; q < nsamples; q++) {
        if (nsamples > 1) printf("--- sample %d ---\n", q + 1);
        print_bytes(stdout, (const uint8_t *)prompt, plen);
        print_bytes(stdout, out + (size_t)q * len, len);
        printf("\n");
    }
    free(out);
    model_close(m);
    return 0;
}

static int cmd_export(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_EXPORT, argc, argv);
    TrainState st;
    CkptState cs;
    char err[ERR_MAX], path[OPT_PATH_MAX], stepbuf[32];
    load_for_command(&cli, cli.args[0], &o, &st, &cs, path);
    /* the output must not be the checkpoint itself (nor another name of it) */
    struct stat sa, sb;
    if (!strcmp(cli.args[1], path) ||
        (!stat(path, &sa) && !stat(cli.args[1], &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino))
        die("error: export would overwrite the checkpoint %s it reads; give another OUT path", path);
    Model *m = open_checkpointed(&o, &cs, 1, 1, 0);   /* the state only passes through */
    checkpoint_state_free(&cs);
    snprintf(stepbuf, sizeof stepbuf, "%llu", (unsigned long long)st.step);
    const char *keys[] = {"step"}, *vals[] = {stepbuf};
    if (model_export(m, cli.args[1], keys, vals, 1, err, sizeof err)) die("error: %s", err);
    printf("wrote %s (%d tensors, step %llu)\n", cli.args[1], model_table(m)->n, (unsigned long long)st.step);
    model_close(m);
    return 0;
}

int cmd_bench(int argc, char **argv);   /* trainer/bench.c */

static int run_command(int argc, char **argv) {
    const int one = argc >= 2 && (!strcmp(argv[1], "eval") || !strcmp(argv[1], "sample") || !strcmp(argv[1], "export"));
    if (one && !par_is_root()) return 0;   /* under mpirun these run once, on rank 0 */
    if (argc >= 2 && !strcmp(argv[1], "eval")) return cmd_eval(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "sample")) return cmd_sample(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "export")) return cmd_export(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
    if (argc < 2) { options_print_help(stderr, CMD_TRAIN); return 2; }
    Options o;
    char err[ERR_MAX];
    int rc = options_parse(&o, CMD_TRAIN, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc < 0) { fprintf(stderr, "error: %s\n", err); return 2; }
    return run_train(&o);
}

int main(int argc, char **argv) {
    model_process_init(argv);
    par_init(&argc, &argv);   /* under mpirun: this process's rank (trainer/parallel.h) */
    setvbuf(stdout, NULL, _IOLBF, 0);
    return par_finish(run_command(argc, argv));
}
