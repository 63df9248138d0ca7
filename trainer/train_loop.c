/* trainer/train_loop.c: a training run from start (or resume) to its last step (see run.h):
 * the steps, and between them validation, samples, the log line, metrics and checkpoints;
 * the stop on a signal with a checkpoint. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "evaluate.h"
#include "inputs.h"
#include "parallel.h"
#include "run.h"
#include "runtime.h"
#include "sample.h"

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

static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static const char *signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP" : "SIGTERM";
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) { snprintf(buf, n, "?"); return; }
    long t = (long)s;
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

/* The periodic sample, printed and appended to samples.txt: 0, or -1 when samples.txt could
   not be written (the sample itself may fail with a warning). */
static int periodic_sample(Run *r) {
    const Options *o = &r->o;
    const int prime = r->sample_prime;
    size_t start = rng_below(&r->st.sample_rng, r->sp.n_val - (size_t)prime + 1);
    const uint8_t *p = r->sp.val + start;
    uint8_t *out = r->sample_out;
    char err[ERR_MAX];
    double t0 = now_s();
    if (generate(r->m, 1, p, prime, o->sample_len, 1.0, &r->st.sample_rng, out, err, sizeof err)) {
        fprintf(stderr, "%swarning: no sample at step %llu: %s\n", r->tty ? "\n" : "",
                (unsigned long long)r->st.step, err);
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
    FILE *samples = r->samples;
    fprintf(samples, "=== step %llu ===\n--- prime ---\n", (unsigned long long)r->st.step);
    print_bytes(samples, p, prime);
    fprintf(samples, "\n--- generated ---\n");
    print_bytes(samples, out, o->sample_len);
    fprintf(samples, "\n\n");
    if (fflush(samples) || ferror(samples)) {
        fprintf(stderr, "%serror: cannot write samples.txt in %s: %s\n", r->tty ? "\n" : "",
                o->out_dir, strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

/* The validation loss: --eval-windows windows, or the whole split (0), shared among the
   ranks (every rank calls it) */
static double validate(Run *r) {
    const Options *o = &r->o;
    const EvalShare share = {par_rank(), par_size(), par_sum_doubles};
    int *tok = r->tokens;   /* the step's token buffer is free between steps */
    if (o->eval_windows == 0)   /* the whole split, as ./train eval does */
        return eval_split(r->m, r->sp.val, r->sp.n_val, o->batch, o->seq_len, tok, share, NULL, NULL);
    return eval_windows(r->m, r->sp.val, r->sp.n_val, o->eval_windows, o->batch, o->seq_len, tok, share);
}

static void plot(Run *r) {
    char title[256], err[512];
    snprintf(title, sizeof title, "FLASH d%d L%d on %.200s", r->o.model.dim, r->o.model.depth,
             strrchr(r->o.data_path, '/') ? strrchr(r->o.data_path, '/') + 1 : r->o.data_path);
    if (metrics_plot(&r->mt, title, err, sizeof err)) fprintf(stderr, "\nwarning: %s\n", err);
}

/* Everything the steps and the work between them use, allocated before the first step, and
   the device that trains from here on (a resumed run that moves says so). */
static void prepare_steps(Run *r) {
    Options *o = &r->o;
    char err[ERR_MAX];
    const int B = o->batch, T = o->seq_len, A = o->accum;
    r->tokens = malloc(sizeof(int) * (size_t)A * B * (T + 1));
    r->sample_out = malloc((size_t)(o->sample_len > 0 ? o->sample_len : 1));
    if (!r->tokens || !r->sample_out) die("error: %s", "out of memory");
    r->sample_prime = o->sample_prime < (int)r->sp.n_val ? o->sample_prime : (int)r->sp.n_val;
    if (r->sample_prime > o->seq_len) r->sample_prime = o->seq_len;
    if (r->root && o->sample_every > 0 && model_decoder_open(r->m, 1, r->sample_prime, err, sizeof err))
        die("error: %s", err);
    if (par_grads_prepare(r->m, err, sizeof err)) die("error: %s", err);
    ModelInfo info;
    model_info(r->m, &info);
    char now[sizeof o->trained_on];
    snprintf(now, sizeof now, "%s %s", info.backend, strstr(info.precision, "bf16") ? "bf16" : "fp32");
    if (r->resuming && strcmp(now, o->trained_on))
        fprintf(stderr, "notice: the checkpoint was trained on %s and the run continues on %s: it is "
                "no longer bit-identical to an uninterrupted run\n", o->trained_on, now);
    snprintf(o->trained_on, sizeof o->trained_on, "%s", now);
}

/* model, recipe, device, ranks and run directory, before the first step */
static void print_run_header(const Run *r) {
    const Options *o = &r->o;
    const int R = par_size(), A = o->accum, B = o->batch, T = o->seq_len;
    const uint64_t step_tokens = (uint64_t)R * A * B * T;   /* the global step */
    ModelInfo info;
    model_info(r->m, &info);
    printf("model: %zu trained parameters (d %d, L %d, e %d, s %d, C %d, %s%s, %s); "
           "activations %.0f MiB\n", model_table(r->m)->n_trained, o->model.dim, o->model.depth,
           config_hidden(&o->model), o->model.query_key_dim, o->model.group_size,
           o->model.norm_type == NORM_LAYERNORM ? "layernorm" : "scalenorm",
           o->model.shift_tokens ? ", token shift" : "", (o->model.attn_fn == ATTN_LAPLACE) ? "laplace" : "relu^2",
           info.activation_bytes / 1048576.0);
    char ranks[32] = "";
    if (R > 1) snprintf(ranks, sizeof ranks, "%d ranks x ", R);
    printf("recipe: %ld steps of %s%d x %d x %d = %llu tokens, lr %g (warmup %ld, linear to %g), "
           "wd %g, eps %g, clip %s %g\n",
           o->opt.total, ranks, A, B, T, (unsigned long long)step_tokens, o->opt.peak_lr, o->opt.warmup,
           o->opt.min_lr, o->opt.weight_decay, o->opt.eps,
           o->opt.clip_mode == CLIP_LOCAL ? "local" : o->opt.clip_mode == CLIP_GLOBAL ? "global" : "none",
           o->opt.clip);
    printf("device: %s, %s%s%s\n", info.device, info.precision, info.detail[0] ? "; " : "", info.detail);
    if (par_summing()) {
        char par[256];
        par_describe(par, sizeof par, r->m);
        printf("data parallel: %s; each rank runs %d of the step's %d micro-batches\n", par, A, R * A);
    }
    printf("run directory: %s\n", o->out_dir);
    fflush(stdout);
}

/* the newest checkpoint in the run directory, for the messages of a stop ("none") */
static void newest_checkpoint(const Run *r, char *buf, size_t n) {
    uint64_t steps[1];
    snprintf(buf, n, "none");
    if (checkpoint_list(r->o.out_dir, steps, 1)) checkpoint_path(buf, n, r->o.out_dir, steps[0]);
}

/* The steps from the current one to the last, with the work between them. The exit code;
   *agreed: every rank stops here together (else a stop of this rank alone ends the job). */
static int train_steps(Run *r, int *agreed) {
    const Options *o = &r->o;
    const int root = r->root, R = par_size();
    const long total = o->opt.total;
    const double t_start = now_s(), elapsed0 = r->st.elapsed_s;
    const uint64_t step0 = r->st.step;
    const uint64_t step_tokens = (uint64_t)R * o->accum * o->batch * o->seq_len;
    *agreed = 0;
    while (r->st.step < (uint64_t)total) {
        StepResult res;
        if (train_step(r, g_signal, &res)) {
            *agreed = 1;   /* the same loss and norm on every rank */
            char last[OPT_PATH_MAX + 32];
            newest_checkpoint(r, last, sizeof last);
            const int bad_loss = !isfinite(res.loss);
            if (root) fprintf(stderr, "%serror: the %s is %s at step %llu; stopping without an update. "
                    "Last good checkpoint: %s\n", r->tty ? "\n" : "", bad_loss ? "loss" : "gradient norm",
                    isnan(bad_loss ? res.loss : res.gnorm) ? "NaN" : "infinite",
                    (unsigned long long)r->st.step + 1, last);
            return 1;
        }
        const double tps = step_tokens / res.seconds;
        r->st.elapsed_s = elapsed0 + (now_s() - t_start);

        double vl = NAN;
        const int last = r->st.step == (uint64_t)total;
        if (o->eval_every > 0 && (r->st.step % (uint64_t)o->eval_every == 0 || last)) vl = validate(r);
        int werr = !root ? 0 : metrics_row(&r->mt, r->st.step, r->st.tokens, res.lr, res.loss, vl, res.gnorm,
                                           tps, r->st.elapsed_s);
        if (werr) {
            fprintf(stderr, "%serror: cannot write %s at step %llu: %s; stopping\n", r->tty ? "\n" : "",
                    r->mt.csv_path, (unsigned long long)r->st.step, strerror(werr));
            return 1;
        }

        double per_step = (now_s() - t_start) / (double)(r->st.step - step0);
        char eta[32], el[32];
        fmt_duration(eta, sizeof eta, per_step * (double)(total - (long)r->st.step));
        fmt_duration(el, sizeof el, r->st.elapsed_s);
        if (r->tty || r->st.step % (uint64_t)o->log_every == 0 || last || !isnan(vl)) {
            printf("%sstep %llu/%ld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  elapsed %s  ETA %s%s",
                   r->tty ? "\r\033[K" : "", (unsigned long long)r->st.step, total, res.loss, res.lr, res.gnorm,
                   tps, el, eta, r->tty ? "" : "\n");
            fflush(stdout);
        }
        if (!isnan(vl)) {
            printf("%sstep %llu: val loss %.4f nats, %.4f bpc\n", r->tty ? "\n" : "",
                   (unsigned long long)r->st.step, vl, vl / LN2);
            if (root) plot(r);
        }
        if (root && o->sample_every > 0 && r->st.step % (uint64_t)o->sample_every == 0 && periodic_sample(r))
            return 1;
        const int sig = R > 1 ? res.signal : g_signal;
        if (root && ((o->ckpt_every > 0 && r->st.step % (uint64_t)o->ckpt_every == 0) || last || sig)) {
            if (run_save_checkpoint(r)) {
                char older[OPT_PATH_MAX + 32];
                newest_checkpoint(r, older, sizeof older);
                fprintf(stderr, "error: the checkpoint of step %llu was not written; stopping%s%s (newest "
                        "checkpoint: %s)\n", (unsigned long long)r->st.step, sig ? " on " : "",
                        sig ? signal_name(sig) : "", older);
                return 1;
            }
        }
        if (sig) {
            printf("%sstopped by %s at step %llu; checkpoint written. Continue with: ./train --resume %s\n",
                   r->tty ? "\n" : "", signal_name(sig), (unsigned long long)r->st.step, o->out_dir);
            *agreed = 1;
            return 128 + sig;
        }
    }
    return 0;
}

int run_train(const Options *cli) {
    Run r;
    memset(&r, 0, sizeof r);
    r.tty = isatty(STDOUT_FILENO) && par_size() == 1;   /* mpirun gives ranks a pty of its own */
    r.root = par_is_root();   /* rank 0 alone writes the run directory and prints */
    r.lock_fd = -1;
    if (cli->resume_dir[0]) run_resume(&r, cli);
    else run_start_new(&r, cli);
    prepare_steps(&r);
    if (r.root) run_dir_open(&r);
    catch_stop_signals();
    print_run_header(&r);

    if (!r.resuming && r.o.eval_every > 0) {
        double vl = validate(&r);
        printf("step 0: val loss %.4f nats, %.4f bpc\n", vl, vl / LN2);
        if (r.root && metrics_row(&r.mt, 0, 0, NAN, NAN, vl, NAN, NAN, 0))
            die("error: cannot write metrics.csv: %s", strerror(errno ? errno : EIO));
        if (r.root) plot(&r);
    }
    const double t_start = now_s();
    const uint64_t step0 = r.st.step;
    int agreed;
    int exit_code = train_steps(&r, &agreed);
    /* a stop that only this rank saw (rank 0 could not write the run directory) ends the
       job: the other ranks would wait for its next step */
    if (exit_code && !agreed) par_abort(exit_code);
    if (r.tty) printf("\n");
    const int R = par_size();
    if (!exit_code && r.st.step == (uint64_t)r.o.opt.total) {
        if (r.root) plot(&r);
        if (R > 1 && r.st.step > step0)
            printf("data parallel: %d ranks; the gradient and loss sums took %.1f ms per step on rank 0 "
                   "(waiting for the slowest rank included), %.1f%% of the run's time\n", R,
                   1e3 * par_comm_seconds() / (double)(r.st.step - step0),
                   100 * par_comm_seconds() / (now_s() - t_start));
        printf("done: %llu steps, %llu tokens in %.0f s; outputs in %s\n",
               (unsigned long long)r.st.step, (unsigned long long)r.st.tokens, r.st.elapsed_s, r.o.out_dir);
    }
    if (run_dir_close(&r, !exit_code)) exit_code = 1;
    free(r.tokens); free(r.bytes); free(r.sample_out);
    model_close(r.m);
    /* r.lock_fd stays open: the lock is the process's until it ends, so that an --overwrite
       that moves the old run back at exit (trainer/run_dir.c) still holds the directory */
    return exit_code;
}
