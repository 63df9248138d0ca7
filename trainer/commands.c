/* trainer/commands.c: ./train eval, sample and export, each on a checkpoint (a file or a run
 * directory's newest valid one). (./train bench: trainer/bench.c.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "commands.h"
#include "evaluate.h"
#include "inputs.h"
#include "progress.h"
#include "run.h"
#include "runlock.h"
#include "runtime.h"
#include "sample.h"
#include "state_io.h"

/* What --help adds to the flag table's text (trainer/options.c) about this file's behaviour. */
static void print_help_notes(Command cmd) {
    if (cmd == CMD_EVAL)
        printf("\nProgress: an evaluation that runs longer than 2 s reports the bytes predicted so far,\n"
               "the rate and an ETA on stderr every 5 s; stdout holds only the result.\n");
    if (cmd == CMD_EXPORT)
        printf("\nWhen OUT's directory holds a training run, the export takes that run directory's lock:\n"
               "it is refused while a run (training, or another export) is writing there, with the\n"
               "process that holds it.\n");
}

/* Parses a subcommand's line (argv[1] is its name); exits 0 after --help, 2 on a bad line. */
static void parse_command(Options *o, Command cmd, int argc, char **argv) {
    char err[ERR_MAX];
    int rc = options_parse(o, cmd, argc - 1, argv + 1, err, sizeof err);
    if (rc == 1) { print_help_notes(cmd); exit(0); }
    if (rc < 0) { fprintf(stderr, "error: %s\n", err); exit(2); }
}

int cmd_eval(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_EVAL, argc, argv);
    const char *ckpt = cli.args[0], *file = cli.args[1], *split = cli.split;
    TrainState st;
    CkptState cs;
    char path[OPT_PATH_MAX];
    load_command_checkpoint(&cli, ckpt, &o, &st, &cs, path);
    int T = options_given(&cli, "--seq-len") ? cli.seq_len : o.seq_len;
    int B = options_given(&cli, "--batch") ? cli.batch : o.batch;
    uint8_t *bytes;
    DataSplit sp;
    load_data_split(file, 1, &bytes, &sp);
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
    Progress progress;   /* on stderr: stdout keeps the result alone */
    progress_start(&progress, stderr, "eval", "bytes", (double)(n - 1));
    double nats = eval_split(m, data, n, B, T, tok, EVAL_ALONE, &progress, &count);
    progress_end(&progress);
    double dt = now_s() - t0;
    printf("%s: step %llu, %s split of %s: %zu bytes predicted in windows of %d, %.0f s\n",
           path, (unsigned long long)st.step, split, file, count, T, dt);
    printf("eval: split=%s loss_nats=%.6f bpc=%.6f bytes=%zu\n", split, nats, nats / LN2, count);
    free(tok); free(bytes);
    model_close(m);
    return 0;
}

/* Bytes per second of the decoder over positions [1000, 5000) in blocks of 1000, for nseq
   sequences decoded together (bytes = sequences x positions), and of full-forward
   recomputation at a 1024-byte context for one sequence (the model's activations hold
   1 x 1024). */
#define FULL_FORWARD_CTX 1024
static void sample_bench(Model *m, int nseq, double temp, uint64_t seed) {
    char err[ERR_MAX];
    if (model_decoder_open(m, nseq, 1, err, sizeof err)) die("error: %s", err);
    Rng rng;
    rng_seed(&rng, seed);
    const int V = model_config(m)->num_tokens, total = 5000, block = 1000;
    float *logits = malloc(sizeof(float) * V * (size_t)nseq);
    int *tok = malloc(sizeof(int) * (size_t)nseq * block);
    double *u = malloc(sizeof(double) * (size_t)nseq * block);
    if (!logits || !tok || !u) die("error: %s", "out of memory");
    int nl = '\n';
    if (model_decoder_prefill(m, &nl, 1, logits)) die("error: %s", "decoder prefill failed");
    /* blocks of positions [b block, (b + 1) block), the first from position 1 (the prefill's) */
    double rate[5] = {0}, t_timed = 0;
    int on_device = 0;
    for (int b = 0; b < total / block; b++) {
        const int steps = b == 0 ? block - 1 : block;
        const double t0 = now_s();
        on_device = sample_decode(m, nseq, steps, temp, &rng, logits, tok, u);
        if (on_device < 0) die("error: %s", "decoder step failed");
        const double t = now_s() - t0;
        rate[b] = (double)nseq * steps / t;
        if (b > 0) t_timed += t;
    }
    double lo = 1e30, hi = 0;
    ModelInfo dinfo;
    model_info(m, &dinfo);
    char count[48] = "one sequence";
    if (nseq > 1) snprintf(count, sizeof count, "%d sequences together", nseq);
    printf("decoder, %s%s%s, sampled on the %s:\n", count, dinfo.decoder[0] ? ", " : "", dinfo.decoder,
           on_device ? "device" : "host");
    for (int b = 1; b < 5; b++) {
        printf("  positions %d-%d: %.0f bytes/s\n", b * block, (b + 1) * block, rate[b]);
        if (rate[b] < lo) lo = rate[b];
        if (rate[b] > hi) hi = rate[b];
    }
    double dec_rate = (double)nseq * 4 * block / t_timed;   /* positions 1,000 to 5,000 */
    model_decoder_close(m);
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
    printf("full forward per byte at a %d-byte context, one sequence: %.1f bytes/s\n", ctx, ff_rate);
    /* speedup: a sequence's bytes per second against one sequence's full forwards (like with like) */
    printf("sample-bench: decoder_bytes_per_s=%.0f flatness=%.3f full_forward_bytes_per_s=%.2f speedup=%.0f threads=%d sequences=%d\n",
           dec_rate, hi / lo - 1, ff_rate, dec_rate / nseq / ff_rate, info.threads, nseq);
    free(prompt); free(logits); free(tok); free(u);
}

#define SAMPLE_MAX_BYTES (1 << 26)   /* 64 MiB of generated text per command */
int cmd_sample(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_SAMPLE, argc, argv);
    const char *prompt = cli.prompt;
    const int len = cli.gen_len, nsamples = cli.num_samples;
    TrainState st;
    CkptState cs;
    char err[ERR_MAX], path[OPT_PATH_MAX];
    load_command_checkpoint(&cli, cli.args[0], &o, &st, &cs, path);
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
    if (cli.sample_bench) { sample_bench(m, nsamples, cli.temperature, cli.seed); model_close(m); return 0; }
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

int cmd_export(int argc, char **argv) {
    Options cli, o;
    parse_command(&cli, CMD_EXPORT, argc, argv);
    TrainState st;
    CkptState cs;
    char err[ERR_MAX], path[OPT_PATH_MAX], stepbuf[32];
    /* into a run directory: one writer at a time (a training run there could be replacing
       or pruning what the export reads, or writing the same name) */
    char out_dir[OPT_PATH_MAX];
    snprintf(out_dir, sizeof out_dir, "%s", cli.args[1]);
    char *slash = strrchr(out_dir, '/');
    if (slash) *slash = 0; else snprintf(out_dir, sizeof out_dir, ".");
    const int lock_fd = run_dir_holds_run(out_dir) ? run_dir_take_lock(out_dir) : -1;
    load_command_checkpoint(&cli, cli.args[0], &o, &st, &cs, path);
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
    runlock_release(lock_fd);
    return 0;
}
