/* trainer/options.c: flags, defaults, presets and the JSON form of Options. */
#include "options.h"
#include "json.h"
#include "parallel.h"
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void options_default(Options *o) {
    memset(o, 0, sizeof *o);
    o->model = config_default();
    o->opt = (OptConfig){
        .peak_lr = 5e-4, .min_lr = 5e-5, .warmup = 1000, .total = 100000,
        .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.01,
        .clip_mode = CLIP_LOCAL, .clip = 0.1,
    };
    snprintf(o->out_dir, sizeof o->out_dir, "runs/flash");
    snprintf(o->preset, sizeof o->preset, "paper");
    o->seed = 1337;
    o->batch = 4;
    o->accum = 4;
    o->seq_len = 1024;
    o->eval_every = 100;
    o->eval_windows = 16;
    o->sample_every = 500;
    o->sample_len = 512;
    o->sample_prime = 256;
    o->ckpt_every = 500;
    o->keep_ckpts = 3;
    o->log_every = 10;
    o->ranks = 1;
    /* what a saved file without "trained_on" means: files from before the GPU backend were
       all written on the CPU in fp32 (a run sets its own) */
    snprintf(o->trained_on, sizeof o->trained_on, "cpu fp32");
    o->threads = 0;
    o->device = DEVICE_AUTO;
    o->precision = PRECISION_DEFAULT;
    snprintf(o->split, sizeof o->split, "test");
    o->prompt = "\n";
    o->gen_len = 512;
    o->num_samples = 1;
    o->temperature = 1.0;
}

/* What differs from the training defaults in a subcommand. */
static void command_defaults(Options *o, Command cmd) {
    if (cmd == CMD_SAMPLE) o->seed = 1;
    if (cmd == CMD_BENCH) { o->opt.total = 20; o->accum = 1; }
}

/* Applies a named preset over *o: "paper" (the default) or "flash-pytorch". 0 or -1. */
static int options_preset(Options *o, const char *name, char *err, size_t errlen) {
    if (!strcmp(name, "paper")) {
        Options d;
        options_default(&d);
        o->model = d.model;
        o->opt = d.opt;
        o->batch = d.batch; o->accum = d.accum; o->seq_len = d.seq_len;
        o->eval_every = d.eval_every; o->sample_every = d.sample_every; o->sample_len = d.sample_len;
        o->sample_prime = d.sample_prime;
    } else if (!strcmp(name, "flash-pytorch")) {
        /* FLASH-pytorch's train.py: its model, Adam 2e-4 constant, eps 1e-8, global
           clipping 0.5, 4 x 4 x 1024 tokens, 100k steps, validate every 100, sample 512
           bytes every 500. */
        o->model = config_default();
        o->opt = (OptConfig){
            .peak_lr = 2e-4, .min_lr = 2e-4, .warmup = 0, .total = 100000,
            .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0,
            .clip_mode = CLIP_GLOBAL, .clip = 0.5,
        };
        o->batch = 4; o->accum = 4; o->seq_len = 1024;
        o->eval_every = 100; o->sample_every = 500; o->sample_len = 512;
        o->sample_prime = 1024;   /* train.py primes with a whole validation sequence */
    } else if (!strcmp(name, "enwik8-12l")) {
        /* a literature-size enwik8 run: 12 layers of d 768 (44M trained parameters, the
           size of Transformer-XL's 12-layer 41M model) for Transformer-XL's budget of about
           4.5G training bytes (400k steps of 22 x 512), here 275k steps of 16 x 1,024; the
           paper recipe, its warmup scaled to the longer run */
        Options d;
        options_default(&d);
        o->model = config_default();
        o->model.dim = 768;
        o->model.depth = 12;
        o->opt = d.opt;
        o->opt.warmup = 10000;
        o->opt.total = 275000;
        o->batch = 16; o->accum = 1; o->seq_len = 1024;
        o->eval_every = 1000; o->sample_every = 10000; o->sample_len = 512; o->sample_prime = 256;
    } else {
        snprintf(err, errlen, "unknown preset \"%s\" (known: paper, flash-pytorch, enwik8-12l)", name);
        return -1;
    }
    snprintf(o->preset, sizeof o->preset, "%s", name);
    return 0;
}

int options_preset_budget(const char *name, long *steps, long *tokens_per_step) {
    Options o;
    char err[128];
    options_default(&o);
    if (options_preset(&o, name, err, sizeof err)) return -1;
    *steps = o.opt.total;
    *tokens_per_step = (long)o.batch * o.accum * o.seq_len;
    return 0;
}

/* ------------------------------------------------------------------------------------ */

/* A number as the command line writes it (1e5 as well as 100000): 0, or -1. */
static int parse_number(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

typedef enum { K_INT, K_LONG, K_U64, K_U32, K_DBL, K_STR, K_PRESET, K_ON, K_OFF, K_NORM, K_ATTN, K_MODEL, K_LINEAR, K_CLIP,
               K_DEVICE, K_PREC, K_TEXT, K_SPLIT } Kind;
typedef enum { G_CMD, G_RUN, G_DATA, G_RECIPE, G_MODEL } Group;
/* One row per setting: its flag's parsing and --help line, and its key in the saved JSON
   (config.json, each checkpoint), written from the row and read back through the same
   checks as the flag (read_saved). flag NULL: saved only; key NULL: not saved. The model's
   keys are model/config.c's (FLASH-pytorch's config names), so the G_MODEL rows have none. */
typedef struct {
    const char *flag;
    const char *key;
    Kind kind;
    size_t off;
    double lo, hi;            /* the range of a number; for K_STR and K_PRESET, hi is the
                                 buffer's size */
    Group group;
    const char *meta, *help;  /* help NULL: no line of its own in --help */
    unsigned cmds;            /* the commands that take it (CMD_* bits) */
} Flag;

#define OFF(field) offsetof(Options, field)
#define SIZE(field) sizeof ((Options *)0)->field
static const Flag FLAGS[] = {
    {"--split", NULL, K_SPLIT, OFF(split), 0, 0, G_CMD, "val|test", "the split to evaluate", CMD_EVAL},
    {"--prompt", NULL, K_TEXT, OFF(prompt), 0, 0, G_CMD, "TEXT", "the text to continue (empty: a newline)", CMD_SAMPLE},
    {"--len", NULL, K_INT, OFF(gen_len), 1, 1 << 24, G_CMD, "N", "bytes to generate", CMD_SAMPLE},
    {"--temperature", NULL, K_DBL, OFF(temperature), 1e-300, 1e6, G_CMD, "X", "softmax temperature (positive)", CMD_SAMPLE},
    {"--num-samples", NULL, K_INT, OFF(num_samples), 1, 4096, G_CMD, "N", "sequences generated together", CMD_SAMPLE},
    {"--bench", NULL, K_ON, OFF(sample_bench), 0, 0, G_CMD, NULL, "time the decoder instead of printing text", CMD_SAMPLE},
    {"--out", NULL, K_STR, OFF(out_dir), 0, SIZE(out_dir), G_RUN, "DIR", "run directory: config, metrics, plot, samples, checkpoints", CMD_TRAIN},
    {"--resume", NULL, K_STR, OFF(resume_dir), 0, SIZE(resume_dir), G_RUN, "DIR", "continue the run in DIR from its newest valid checkpoint, with its saved settings, on the device and precision that trained it (bit-exact) unless --device or --precision say otherwise", CMD_TRAIN},
    {"--overwrite", NULL, K_ON, OFF(overwrite), 0, 0, G_RUN, NULL, "start a new run in an --out directory that holds another run (its checkpoints, metrics and samples are replaced); without it that is refused", CMD_TRAIN},
    {"--init-from", "init_from", K_STR, OFF(init_from), 0, SIZE(init_from), G_RUN, "FILE", "start from the weights of a .safetensors file (its config sets the model)", CMD_TRAIN},
    {"--seed", "seed", K_U64, OFF(seed), 0, 0, G_RUN, "N", "seed of initialisation, data order and samples", CMD_TRAIN | CMD_BENCH | CMD_SAMPLE},
    {"--device", NULL, K_DEVICE, OFF(device), 0, 0, G_RUN, "auto|cpu|cuda", "where the model runs (auto: a CUDA GPU when this build has CUDA and one is visible, else the CPU)", CMD_ALL},
    {"--precision", NULL, K_PREC, OFF(precision), 0, 0, G_RUN, "fp32|bf16", "arithmetic: the CPU computes in fp32 only; CUDA defaults to bf16 (bf16 products and activations, fp32 master weights, moments and reductions: 5.6x fp32's speed on an H200 with the same loss curve); fp32 there means no TF32", CMD_ALL},
    {"--threads", NULL, K_INT, OFF(threads), 0, 4096, G_RUN, "N", "threads (0: all cores)", CMD_ALL},
    {"--eval-every", "eval_every", K_INT, OFF(eval_every), 0, 1e9, G_RUN, "N", "validate every N steps (0: never)", CMD_TRAIN},
    {"--eval-windows", "eval_windows", K_INT, OFF(eval_windows), 0, 1e6, G_RUN, "N", "validation windows of seq-len bytes, evenly spaced, the same every time (0: the whole validation split, as ./train eval)", CMD_TRAIN},
    {"--sample-every", "sample_every", K_INT, OFF(sample_every), 0, 1e9, G_RUN, "N", "print and save a sample every N steps (0: never)", CMD_TRAIN},
    {"--sample-len", "sample_len", K_INT, OFF(sample_len), 1, 1e7, G_RUN, "N", "bytes generated per sample", CMD_TRAIN},
    {"--sample-prime", "sample_prime", K_INT, OFF(sample_prime), 1, 1e7, G_RUN, "N", "bytes of validation text that prime each sample", CMD_TRAIN},
    {"--ckpt-every", "ckpt_every", K_INT, OFF(ckpt_every), 0, 1e9, G_RUN, "N", "checkpoint every N steps (0: only at the end and on a signal)", CMD_TRAIN},
    {"--keep-ckpts", "keep_ckpts", K_INT, OFF(keep_ckpts), 1, 1e6, G_RUN, "K", "keep the newest K checkpoints", CMD_TRAIN},
    {"--log-every", "log_every", K_INT, OFF(log_every), 1, 1e9, G_RUN, "N", "progress line every N steps when the output is not a terminal", CMD_TRAIN},
    {"--steps", "steps", K_LONG, OFF(opt.total), 1, 1e12, G_RECIPE, "N", "optimizer steps (the schedule's length)", CMD_TRAIN | CMD_BENCH},
    {"--batch", "batch", K_INT, OFF(batch), 1, 1e6, G_RECIPE, "B", "sequences per micro-batch", CMD_TRAIN | CMD_BENCH | CMD_EVAL},
    {"--accum", "accum", K_INT, OFF(accum), 1, 1e6, G_RECIPE, "N", "micro-batches per optimizer step on each rank (their gradients averaged; under mpirun -np R a step is batch x accum x R sequences)", CMD_TRAIN | CMD_BENCH},
    {"--seq-len", "seq_len", K_INT, OFF(seq_len), 1, 1 << 24, G_RECIPE, "T", "tokens per sequence", CMD_TRAIN | CMD_BENCH | CMD_EVAL},
    {"--lr", "lr", K_DBL, OFF(opt.peak_lr), 0, 1e3, G_RECIPE, "X", "peak learning rate", CMD_TRAIN | CMD_BENCH},
    {"--warmup", "warmup", K_LONG, OFF(opt.warmup), 0, 1e12, G_RECIPE, "N", "linear warmup steps", CMD_TRAIN | CMD_BENCH},
    {"--min-lr", "min_lr", K_DBL, OFF(opt.min_lr), 0, 1e3, G_RECIPE, "X", "learning rate at the end of the linear decay", CMD_TRAIN | CMD_BENCH},
    {"--weight-decay", "weight_decay", K_DBL, OFF(opt.weight_decay), 0, 1e3, G_RECIPE, "X", "decoupled weight decay (Linear weights, token embedding)", CMD_TRAIN | CMD_BENCH},
    {"--beta1", "beta1", K_DBL, OFF(opt.beta1), 0, 0.999999, G_RECIPE, "X", "Adam beta1", CMD_TRAIN | CMD_BENCH},
    {"--beta2", "beta2", K_DBL, OFF(opt.beta2), 0, 0.999999999, G_RECIPE, "X", "Adam beta2", CMD_TRAIN | CMD_BENCH},
    {"--eps", "eps", K_DBL, OFF(opt.eps), 1e-30, 1, G_RECIPE, "X", "Adam epsilon (at least 1e-30: 0 divides 0 by 0 on the first update, and a float32 eps must not underflow)", CMD_TRAIN | CMD_BENCH},
    {"--clip", "clip", K_DBL, OFF(opt.clip), 0, 1e12, G_RECIPE, "X", "gradient clipping threshold", CMD_TRAIN | CMD_BENCH},
    {"--clip-mode", "clip_mode", K_CLIP, OFF(opt.clip_mode), 0, 0, G_RECIPE, "local|global|none", "local: each tensor's norm; global: all together", CMD_TRAIN | CMD_BENCH},
    {"--dim", NULL, K_INT, OFF(model.dim), 2, 65536, G_MODEL, "D", "model width", CMD_TRAIN | CMD_BENCH},
    {"--depth", NULL, K_INT, OFF(model.depth), 1, 1024, G_MODEL, "L", "layers", CMD_TRAIN | CMD_BENCH},
    {"--group-size", NULL, K_INT, OFF(model.group_size), 1, 65536, G_MODEL, "C", "local attention group size", CMD_TRAIN | CMD_BENCH},
    {"--qk-dim", NULL, K_INT, OFF(model.query_key_dim), 2, 65536, G_MODEL, "S", "query/key width", CMD_TRAIN | CMD_BENCH},
    {"--expansion", NULL, K_DBL, OFF(model.expansion_factor), 0, 65536, G_MODEL, "X", "hidden width = int(X * dim)", CMD_TRAIN | CMD_BENCH},
    {"--norm", NULL, K_NORM, OFF(model.norm_type), 0, 0, G_MODEL, "scalenorm|layernorm", "normalization", CMD_TRAIN | CMD_BENCH},
    {"--shift-tokens", NULL, K_ON, OFF(model.shift_tokens), 0, 0, G_MODEL, NULL, "token shift on", CMD_TRAIN | CMD_BENCH},
    {"--no-shift-tokens", NULL, K_OFF, OFF(model.shift_tokens), 0, 0, G_MODEL, NULL, "token shift off", CMD_TRAIN | CMD_BENCH},
    {"--attn-fn", NULL, K_ATTN, OFF(model.attn_fn), 0, 0, G_MODEL, "laplace|relu2", "attention function", CMD_TRAIN | CMD_BENCH},
    {"--model", NULL, K_MODEL, OFF(model.model), 0, 0, G_MODEL, "flash|gau", "the layer: flash (FLASH: grouped quadratic + linear attention) or gau (FLASH-Quad: FLASH-pytorch's GAU, quadratic attention over the whole sequence; --group-size and token shift do not apply)", CMD_TRAIN | CMD_BENCH},
    {"--linear-attn", NULL, K_LINEAR, OFF(model.linear_attn), 0, 0, G_MODEL, "plain|taylor", "FLASH's linear attention across groups: plain, or the second-order Taylor feature map [1, q, q q^T / sqrt 2], normalised (needs --qk-dim <= 32; 16 gives 153 features)", CMD_TRAIN | CMD_BENCH},
    /* options_parse applies a preset before the other flags, and the command's text
       explains it; the row saves the name and checks it on read */
    {"--preset", "preset", K_PRESET, OFF(preset), 0, SIZE(preset), G_RECIPE, "NAME", NULL, CMD_TRAIN | CMD_BENCH},
    /* saved only: the data FILE (a positional argument), its identity, the device and the
       ranks that trained the run (set by train.c) */
    {.key = "data", .kind = K_STR, .off = OFF(data_path), .hi = SIZE(data_path), .group = G_DATA},
    {.key = "data_bytes", .kind = K_U64, .off = OFF(data_bytes), .group = G_DATA},
    {.key = "data_crc32", .kind = K_U32, .off = OFF(data_crc32), .group = G_DATA},
    {.key = "trained_on", .kind = K_STR, .off = OFF(trained_on), .hi = SIZE(trained_on), .group = G_RUN},
    {.key = "ranks", .kind = K_INT, .off = OFF(ranks), .lo = 1, .hi = 1e6, .group = G_RUN},
};
#define N_FLAGS ((int)(sizeof FLAGS / sizeof FLAGS[0]))

static void value_str(const Options *o, const Flag *f, char *buf, size_t n) {
    const char *p = (const char *)o + f->off;
    switch (f->kind) {
    case K_INT: snprintf(buf, n, "%d", *(const int *)p); break;
    case K_LONG: snprintf(buf, n, "%ld", *(const long *)p); break;
    case K_U64: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case K_U32: snprintf(buf, n, "%lu", (unsigned long)*(const uint32_t *)p); break;
    case K_DBL: snprintf(buf, n, "%g", *(const double *)p); break;
    case K_STR: snprintf(buf, n, "%s", *p ? p : "none"); break;
    case K_SPLIT:
    case K_PRESET: snprintf(buf, n, "%s", p); break;
    case K_TEXT: {
        const char *t = *(const char *const *)p;
        snprintf(buf, n, "%s", !t || !strcmp(t, "\n") ? "a newline" : t);
        break;
    }
    case K_ON: snprintf(buf, n, "%s", *(const int *)p ? "on" : "off"); break;
    case K_OFF: buf[0] = 0; break;
    case K_NORM: snprintf(buf, n, "%s", *(const NormType *)p == NORM_LAYERNORM ? "layernorm" : "scalenorm"); break;
    case K_ATTN: snprintf(buf, n, "%s", *(const AttnFn *)p == ATTN_LAPLACE ? "laplace" : "relu2"); break;
    case K_MODEL: snprintf(buf, n, "%s", config_model_name(*(const ModelKind *)p)); break;
    case K_LINEAR: snprintf(buf, n, "%s", config_linear_name(*(const LinearAttn *)p)); break;
    case K_DEVICE: {
        snprintf(buf, n, "%s", model_device_name(*(const ModelDevice *)p));
        break;
    }
    case K_PREC: {
        ModelPrecision v = *(const ModelPrecision *)p;
        snprintf(buf, n, "%s", v == PRECISION_FP32 ? "fp32" : v == PRECISION_BF16 ? "bf16" : "the device's");
        break;
    }
    case K_CLIP: {
        ClipMode m = *(const ClipMode *)p;
        snprintf(buf, n, "%s", m == CLIP_LOCAL ? "local" : m == CLIP_GLOBAL ? "global" : "none");
        break;
    }
    }
}

#define N_FLAGS_CHECK (N_FLAGS <= OPT_MAX_FLAGS ? 1 : -1)
typedef char flags_fit_in_given[N_FLAGS_CHECK];   /* Options.given has a slot per flag */

static const struct {
    Command cmd;
    const char *name, *usage, *about;
} COMMANDS[] = {
    {CMD_TRAIN, "", "./train [options] FILE\n       ./train --resume DIR [FILE] [--threads N] [--device D] [--precision P]",
     "Trains FLASH-pytorch's FLASHTransformer (Hua et al. 2022) on FILE (enwik8, gzip or raw),\n"
     "byte level. --resume continues the run in DIR exactly where its newest valid checkpoint\n"
     "left it (FILE: if the data moved).\n\n"
     "Data: the first 90,000,000 bytes train, the next 5,000,000 validate, the last 5,000,000\n"
     "test; a file shorter than 10^8 bytes is split 90/5/5 in proportion.\n\n"
     "Subcommands: ./train eval | sample | export | bench | compare ... (each has its own --help).\n\n"
     "  --preset NAME        sets the model, the optimizer and schedule, --steps, --batch,\n"
     "                       --accum, --seq-len, --eval-every and --sample-every/-len/-prime:\n"
     "                       paper (default): AdamW, linear warmup then linear decay, weight\n"
     "                       decay 0.01, eps 1e-6, local clipping 0.1, the train.py model;\n"
     "                       flash-pytorch: FLASH-pytorch's train.py (Adam 2e-4 constant, eps\n"
     "                       1e-8, global clipping 0.5, 4 x 4 x 1,024 tokens, samples primed\n"
     "                       with 1,024 bytes); enwik8-12l: a literature-size run, 12 layers\n"
     "                       of d 768 (44M parameters) for 275,000 steps of 16 x 1,024 tokens\n"
     "                       (4.5G bytes, Transformer-XL's budget), the paper recipe with\n"
     "                       warmup 10,000 (./train bench --preset enwik8-12l projects its time\n"
     "                       on this machine). Presets apply first, in their order (the last\n"
     "                       wins), wherever they stand; every other flag given overrides them.\n"
     "                       bench keeps its own --steps 20 and --accum 1 under a preset.\n\n"
     "A --steps shorter than the default --warmup (a trial run such as --steps 30) gets a\n"
     "warmup of a tenth of its steps, with a notice; a --warmup given on the command line\n"
     "is never changed (longer than --steps is refused).\n"},
    {CMD_EVAL, "eval", "./train eval CHECKPOINT FILE [options]",
     "Bits per byte of the checkpoint's model over the whole validation or test split of FILE\n"
     "(enwik8: the 5,000,000 bytes after the first 95,000,000 for test). Protocol: the split is\n"
     "cut into consecutive windows of T+1 bytes overlapping by one byte, so every byte except the\n"
     "split's first is predicted exactly once, from the context since its window's start (the\n"
     "last window is shorter). bpc = total cross-entropy in nats / predicted bytes / ln 2.\n"
     "CHECKPOINT is a ckpt-*.bin file or a run directory (its newest valid checkpoint).\n"
     "--seq-len and --batch default to the training run's.\n"},
    {CMD_SAMPLE, "sample", "./train sample CHECKPOINT [options]",
     "Generates --len bytes after --prompt with FLASH-pytorch's sampling: the 25 most likely\n"
     "bytes (filter_thres 0.9), softmax of logits / temperature. The same seed gives the same\n"
     "text. Bytes below 32 print as spaces. Decoding is recurrent: the prompt's whole groups go\n"
     "through the parallel forward, then each byte costs the same at any position (a cached\n"
     "state per layer), and --num-samples sequences share each pass over the weights.\n"
     "One sequence on the CPU keeps trying all of --threads and half of them, and uses the\n"
     "faster (half is faster when another busy process shares the cores); the text is the same.\n"
     "--bench: instead of printing text, times the decoder's bytes per second at positions\n"
     "1,000 to 5,000 for --num-samples sequences decoded together (default one) and, side by\n"
     "side, one sequence recomputing the full forward per byte at a 1,024-byte context\n"
     "(FLASH-pytorch's way); speedup is one sequence's share of the decoder's rate over it.\n"},
    {CMD_EXPORT, "export", "./train export CHECKPOINT OUT.safetensors",
     "Writes the model's state_dict (FLASH-pytorch names, buffers included, F32) with its\n"
     "config JSON in the metadata; FLASHTransformer(**config).load_state_dict(\n"
     "safetensors.torch.load_file(OUT), strict=True) loads it.\n"},
    {CMD_BENCH, "bench", "./train bench [model and batch options]",
     "Measures, in one process: the GEMM rate of the step's largest product (B*T x 2e x d) and\n"
     "of a large square one (8192^3 on a GPU, 1024^3 on the CPU: the peak); then 2 warm-up and\n"
     "--steps (default 20) timed training steps (forward, backward, clipping, AdamW) of the\n"
     "configuration (default: the train.py model, 4 x 1024 tokens, --accum 1).\n"
     "Prints tokens per second, the step's GFLOP/s by the FLOP model, its ratio to the GEMM rate\n"
     "and to the peak (the model FLOP utilisation, MFU), under a --preset that preset's whole\n"
     "run projected at this rate, where the step's time goes, peak resident memory, the device\n"
     "and how the Linear GEMMs use the threads (from 8 threads up: tiles, and the weight\n"
     "gradients split along the rows). \"activations\" includes that split's partial sums.\n"
     "The profile's silu line is the backward's: the forward's silu runs inside to_hidden.\n"
     "The last line is machine-readable.\n"},
};
#define N_COMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

static int command_index(Command cmd) {
    for (int i = 0; i < N_COMMANDS; i++)
        if (COMMANDS[i].cmd == cmd) return i;
    return 0;
}

void options_print_help(FILE *f, Command cmd) {
    Options d;
    options_default(&d);
    command_defaults(&d, cmd);
    const int ci = command_index(cmd);
    fprintf(f, "usage: %s\n\n%s", COMMANDS[ci].usage, COMMANDS[ci].about);
    const char *titles[] = {cmd == CMD_TRAIN ? "" : COMMANDS[ci].name, "run", "data", "recipe",
                            "model (train.py's FLASHTransformer by default)"};
    for (int g = G_CMD; g <= G_MODEL; g++) {
        int any = 0;
        for (int i = 0; i < N_FLAGS; i++) {
            const Flag *fl = &FLAGS[i];
            if ((int)fl->group != g || !(fl->cmds & cmd) || !fl->help) continue;
            if (!any) fprintf(f, "\n%s:\n", g == G_RUN && cmd != CMD_TRAIN ? "options" : titles[g]);
            any = 1;
            char left[64], def[64];
            snprintf(left, sizeof left, "%s%s%s", fl->flag, fl->meta ? " " : "", fl->meta ? fl->meta : "");
            value_str(&d, fl, def, sizeof def);
            if (cmd == CMD_EVAL && fl->group == G_RECIPE) snprintf(def, sizeof def, "the training run's");
            if (fl->kind == K_OFF || (fl->kind == K_ON && fl->group == G_CMD)) fprintf(f, "  %-28s %s\n", left, fl->help);
            else fprintf(f, "  %-28s %s (default %s)\n", left, fl->help, def);
        }
    }
    if (cmd == CMD_TRAIN || cmd == CMD_BENCH)
        fprintf(f, "\nEnvironment: on a CPU with AVX-512, OpenBLAS's AVX-512 (SkylakeX) kernels are used even\n"
                   "where OpenBLAS or OPENBLAS_CORETYPE would pick its slower AVX2 ones; FLASH_BLAS_CORE=env\n"
                   "keeps the environment's choice. OMP_NUM_THREADS is overridden by --threads.\n");
    if (cmd == CMD_TRAIN || cmd == CMD_BENCH) par_print_help(f, cmd == CMD_BENCH);
}

int options_given(const Options *o, const char *flag) {
    for (int i = 0; i < N_FLAGS; i++)
        if (FLAGS[i].flag && !strcmp(FLAGS[i].flag, flag)) return o->given[i];
    return 0;
}

const char *options_given_other(const Options *o, const char *const *allowed) {
    for (int i = 0; i < N_FLAGS; i++) {
        if (!o->given[i]) continue;
        int ok = 0;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, FLAGS[i].flag);
        if (!ok) return FLAGS[i].flag;
    }
    return NULL;
}

/* The range of a number, the command line's and a saved file's alike: in [lo, hi], and
   whole for the integer kinds. Checked in double before any cast (casting an out-of-range
   double is undefined); NaN fails every comparison. */
static int in_range(const Flag *f, double v) {
    return v >= f->lo && v <= f->hi && (f->kind == K_DBL || v == floor(v));
}

/* Stores a number that passed in_range. */
static void set_number(Options *o, const Flag *f, double v) {
    char *p = (char *)o + f->off;
    if (f->kind == K_INT) *(int *)p = (int)v;
    else if (f->kind == K_LONG) *(long *)p = (long)v;
    else *(double *)p = v;
}

/* Sets the row's field from the command line's text (or a saved string value: K_CLIP,
   K_PRESET). 0, or -1 with a message. */
static int set_flag(Options *o, const Flag *f, const char *val, char *err, size_t errlen) {
    char *p = (char *)o + f->off;
    double dv;
    switch (f->kind) {
    case K_INT:
    case K_LONG:
        if (parse_number(val, &dv) || !in_range(f, dv)) {
            snprintf(err, errlen, "%s: expected an integer in [%.0f, %.0f], got \"%.64s\"", f->flag, f->lo, f->hi, val);
            return -1;
        }
        set_number(o, f, dv);
        return 0;
    case K_U64: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        if (errno || end == val || *end || val[0] == '-') {
            snprintf(err, errlen, "%s: expected a non-negative integer, got \"%s\"", f->flag, val);
            return -1;
        }
        *(uint64_t *)p = v;
        return 0;
    }
    case K_DBL:
        if (parse_number(val, &dv) || !in_range(f, dv)) {
            snprintf(err, errlen, "%s: expected a number in [%.10g, %.10g], got \"%.64s\"", f->flag, f->lo, f->hi, val);
            return -1;
        }
        set_number(o, f, dv);
        return 0;
    case K_STR:
        if (strlen(val) >= (size_t)f->hi || !*val) {
            snprintf(err, errlen, "%s: expected a non-empty path shorter than %.0f bytes", f->flag, f->hi);
            return -1;
        }
        snprintf(p, (size_t)f->hi, "%s", val);
        return 0;
    case K_PRESET: {   /* the name only: options_parse applied the preset's values first */
        Options scratch;
        if (options_preset(&scratch, val, err, errlen)) return -1;
        snprintf(p, (size_t)f->hi, "%s", val);
        return 0;
    }
    case K_U32: break;   /* saved only (data_crc32): read by read_saved */
    case K_NORM:
        if (!strcmp(val, "scalenorm")) *(NormType *)p = NORM_SCALENORM;
        else if (!strcmp(val, "layernorm")) *(NormType *)p = NORM_LAYERNORM;
        else { snprintf(err, errlen, "%s: expected scalenorm or layernorm, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_ATTN:
        if (!strcmp(val, "laplace")) *(AttnFn *)p = ATTN_LAPLACE;
        else if (!strcmp(val, "relu2")) *(AttnFn *)p = ATTN_RELU2;
        else { snprintf(err, errlen, "%s: expected laplace or relu2, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_MODEL:
        if (!strcmp(val, "flash")) *(ModelKind *)p = MODEL_FLASH;
        else if (!strcmp(val, "gau")) *(ModelKind *)p = MODEL_GAU;
        else { snprintf(err, errlen, "%s: expected flash or gau, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_LINEAR:
        if (!strcmp(val, "plain")) *(LinearAttn *)p = LINEAR_PLAIN;
        else if (!strcmp(val, "taylor")) *(LinearAttn *)p = LINEAR_TAYLOR;
        else { snprintf(err, errlen, "%s: expected plain or taylor, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_CLIP:
        if (!strcmp(val, "local")) *(ClipMode *)p = CLIP_LOCAL;
        else if (!strcmp(val, "global")) *(ClipMode *)p = CLIP_GLOBAL;
        else if (!strcmp(val, "none")) *(ClipMode *)p = CLIP_NONE;
        else { snprintf(err, errlen, "%s: expected local, global or none, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_DEVICE:
        if (model_device_parse(val, (ModelDevice *)p)) {
            char names[128];
            model_device_names(names, sizeof names);
            snprintf(err, errlen, "%s: expected %s, got \"%s\"", f->flag, names, val);
            return -1;
        }
        return 0;
    case K_PREC:
        if (!strcmp(val, "fp32")) *(ModelPrecision *)p = PRECISION_FP32;
        else if (!strcmp(val, "bf16")) *(ModelPrecision *)p = PRECISION_BF16;
        else { snprintf(err, errlen, "%s: expected fp32 or bf16, got \"%s\"", f->flag, val); return -1; }
        return 0;
    case K_SPLIT:
        if (strcmp(val, "val") && strcmp(val, "test")) {
            snprintf(err, errlen, "%s must be val or test, got \"%s\"", f->flag, val);
            return -1;
        }
        snprintf(p, 8, "%s", val);
        return 0;
    case K_TEXT: *(const char **)p = *val ? val : "\n"; return 0;
    case K_ON: *(int *)p = 1; return 0;
    case K_OFF: *(int *)p = 0; return 0;
    }
    return -1;
}

int options_parse(Options *o, Command cmd, int argc, char **argv, char *err, size_t errlen) {
    options_default(o);
    command_defaults(o, cmd);
    const int ci = command_index(cmd);
    const char *name = COMMANDS[ci].name;
    /* "unknown eval option", "unknown option": as each command has always said it */
    const char *label = cmd == CMD_EVAL || cmd == CMD_SAMPLE || cmd == CMD_EXPORT ? name : "";
    char help[48];
    snprintf(help, sizeof help, "./train %s%s--help", name, *name ? " " : "");
    const int takes_preset = cmd == CMD_TRAIN || cmd == CMD_BENCH;
    /* a preset applies first wherever it stands, so that the other flags override it */
    for (int i = 1; i < argc && takes_preset; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strncmp(a, "--preset=", 9)) v = a + 9;
        else if (!strcmp(a, "--preset")) {
            if (i + 1 >= argc) { snprintf(err, errlen, "--preset needs a value"); return -1; }
            v = argv[++i];
        }
        if (v && options_preset(o, v, err, errlen)) return -1;
        if (v) { command_defaults(o, cmd); o->preset_given = 1; }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { options_print_help(stdout, cmd); return 1; }
        if (takes_preset && !strcmp(a, "--preset")) { i++; continue; }
        if (takes_preset && !strncmp(a, "--preset=", 9)) continue;
        if (a[0] == '-' && a[1] == '-') {
            char nm[64];
            const char *eq = strchr(a, '='), *val = NULL;
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            if (len >= sizeof nm) len = sizeof nm - 1;
            memcpy(nm, a, len);
            nm[len] = 0;
            int k = 0;
            while (k < N_FLAGS && (!FLAGS[k].flag || strcmp(FLAGS[k].flag, nm) || !(FLAGS[k].cmds & cmd))) k++;
            if (k == N_FLAGS) {
                snprintf(err, errlen, "unknown %s%soption %s (see %s)", label, *label ? " " : "", nm, help);
                return -1;
            }
            const Flag *f = &FLAGS[k];
            if (f->kind == K_ON || f->kind == K_OFF) {
                if (eq) { snprintf(err, errlen, "%s takes no value", nm); return -1; }
            } else if (eq) {
                val = eq + 1;
            } else {
                if (i + 1 >= argc) { snprintf(err, errlen, "%s needs a value (%s)", nm, f->meta); return -1; }
                val = argv[++i];
            }
            if (set_flag(o, f, val, err, errlen)) return -1;
            o->given[k] = 1;
            if (f->group == G_MODEL) o->model_flags_given = 1;
            if (f->group == G_RECIPE || f->group == G_DATA) o->recipe_flags_given = 1;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            snprintf(err, errlen, "unknown %s%soption %s (see %s)", label, *label ? " " : "", a, help);
            return -1;
        }
        const int max_args = cmd == CMD_EVAL || cmd == CMD_EXPORT ? 2 : cmd == CMD_BENCH ? 0 : 1;
        if (o->nargs >= max_args) {
            if (cmd == CMD_EXPORT) snprintf(err, errlen, "usage: %s", COMMANDS[ci].usage);
            else snprintf(err, errlen, "unexpected argument \"%s\"%s", a, cmd == CMD_TRAIN ? ": one data FILE only" : "");
            return -1;
        }
        if (cmd == CMD_TRAIN && strlen(a) >= OPT_PATH_MAX) { snprintf(err, errlen, "data path too long"); return -1; }
        o->args[o->nargs++] = a;
    }
    if (cmd == CMD_TRAIN) {
        if (o->nargs) snprintf(o->data_path, sizeof o->data_path, "%s", o->args[0]);
        if (!o->nargs && !o->resume_dir[0]) {
            snprintf(err, errlen, "no data FILE given (e.g. ./train enwik8.gz; see ./train --help)");
            return -1;
        }
    }
    if (cmd == CMD_EVAL && o->nargs < 2) { snprintf(err, errlen, "eval needs CHECKPOINT and FILE (see %s)", help); return -1; }
    if (cmd == CMD_SAMPLE && o->nargs < 1) { snprintf(err, errlen, "sample needs a CHECKPOINT (see %s)", help); return -1; }
    if (cmd == CMD_EXPORT && o->nargs < 2) { snprintf(err, errlen, "usage: %s", COMMANDS[ci].usage); return -1; }
    if (o->model.model == MODEL_GAU) {
        /* GAU has no groups and no token shift: a flag that sets them is refused, not ignored;
           a preset's values for them are dropped */
        static const char *const not_gau[] = {"--group-size", "--shift-tokens", "--no-shift-tokens"};
        for (size_t k = 0; k < sizeof not_gau / sizeof not_gau[0]; k++)
            if (options_given(o, not_gau[k])) {
                snprintf(err, errlen, "%s does not apply to --model gau (FLASH-pytorch's GAU attends over the "
                         "whole sequence, with no groups and no token shift)", not_gau[k]);
                return -1;
            }
        o->model.shift_tokens = 0;
        if (options_given(o, "--linear-attn") && o->model.linear_attn != LINEAR_PLAIN) {
            snprintf(err, errlen, "--linear-attn taylor does not apply to --model gau (GAU has no linear attention)");
            return -1;
        }
    }
    return 0;
}

int options_validate(const Options *o, char *err, size_t errlen) {
    if (config_validate(&o->model, err, errlen)) return -1;
    ModelDevice dev;
    char e[256];
    if (model_resolve_device(o->device, &dev, e, sizeof e)) {
        snprintf(err, errlen, "--device: %s", e);
        return -1;
    }
    if (dev == DEVICE_CPU && o->precision == PRECISION_BF16) {
        snprintf(err, errlen, "--precision bf16: the CPU backend computes in fp32 only (bf16 needs --device cuda)");
        return -1;
    }
    const OptConfig *p = &o->opt;
    if (p->warmup > p->total) {
        snprintf(err, errlen, "--warmup %ld is longer than --steps %ld", p->warmup, p->total);
        return -1;
    }
    if (p->min_lr > p->peak_lr) {
        snprintf(err, errlen, "--min-lr %g is above the peak --lr %g", p->min_lr, p->peak_lr);
        return -1;
    }
    if (p->clip_mode != CLIP_NONE && !(p->clip > 0)) {
        snprintf(err, errlen, "--clip must be positive with --clip-mode local or global");
        return -1;
    }
    if ((double)o->batch * o->seq_len > 1e9) {
        snprintf(err, errlen, "--batch x --seq-len = %.0f tokens per micro-batch is too large",
                 (double)o->batch * o->seq_len);
        return -1;
    }
    return 0;
}

/* Where each saved key stands, so that the bytes stay those of the files written so far
   (config.json and checkpoints are compared byte for byte by tests/golden.sh): a line break
   after each '\n'. A key not named here (one added later) is written at the end. */
static const char JSON_LAYOUT[] =
    "preset data init_from seed\n"
    "data_bytes data_crc32\n"
    "steps batch accum seq_len\n"
    "lr warmup min_lr weight_decay\n"
    "beta1 beta2 eps clip_mode clip\n"
    "eval_every eval_windows sample_every sample_len\n"
    "sample_prime ckpt_every keep_ckpts log_every\n"
    "trained_on ranks";

static int row_keyed(const char *key, size_t len) {
    for (int i = 0; i < N_FLAGS; i++)
        if (FLAGS[i].key && strlen(FLAGS[i].key) == len && !strncmp(FLAGS[i].key, key, len)) return i;
    return -1;
}

/* snprintf at buf + *n, *n advanced by the whole length even when it does not fit */
static void put(char *buf, size_t cap, size_t *n, const char *fmt, const char *s) {
    *n += (size_t)snprintf(*n < cap ? buf + *n : NULL, *n < cap ? cap - *n : 0, fmt, s);
}

/* One saved value in its JSON form. */
static void put_value(const Options *o, const Flag *f, char *buf, size_t cap, size_t *n) {
    const char *p = (const char *)o + f->off;
    char v[64];
    switch (f->kind) {
    case K_DBL: snprintf(v, sizeof v, "%.17g", *(const double *)p); put(buf, cap, n, "%s", v); return;
    case K_U64:   /* above 2^63 as a string (jansson's integers are signed 64-bit); none goes
                     through a double (2^53) */
        value_str(o, f, v, sizeof v);
        put(buf, cap, n, *(const uint64_t *)p > (uint64_t)INT64_MAX ? "\"%s\"" : "%s", v);
        return;
    case K_INT:
    case K_LONG:
    case K_U32: value_str(o, f, v, sizeof v); put(buf, cap, n, "%s", v); return;
    case K_STR:
    case K_PRESET: break;
    default: value_str(o, f, v, sizeof v); p = v; break;   /* an enum's name: clip_mode */
    }
    /* every string through the escaper, read from a file too: a name read back from a
       crafted checkpoint may hold any byte (the settings fuzzer found a raw \r) */
    *n += (size_t)json_escape(*n < cap ? buf + *n : NULL, *n < cap ? cap - *n : 0, p);
}

/* ", KEY: VALUE", after a line break when *newline; the data's size and CRC-32 only when
   known (0 bytes: a run that predates them). */
static void put_setting(const Options *o, const Flag *f, int *newline, char *buf, size_t cap, size_t *n) {
    if (!o->data_bytes && (f->off == OFF(data_bytes) || f->off == OFF(data_crc32))) return;
    put(buf, cap, n, *newline ? ",\n \"%s\": " : ", \"%s\": ", f->key);
    put_value(o, f, buf, cap, n);
    *newline = 0;
}

int options_to_json(const Options *o, char *buf, size_t buflen) {
    char model[1024];
    config_to_json(&o->model, model, sizeof model);
    model[strlen(model) - 1] = 0;   /* drop '}' to continue the same flat object */
    size_t n = 0;
    put(buf, buflen, &n, "%s", model);
    unsigned char done[N_FLAGS] = {0};
    int newline = 1;   /* the model's keys end a line */
    for (const char *t = JSON_LAYOUT; *t;) {
        const size_t len = strcspn(t, " \n");
        const int i = row_keyed(t, len);
        if (i < 0) return -1;   /* a layout key that no row has */
        put_setting(o, &FLAGS[i], &newline, buf, buflen, &n);
        done[i] = 1;
        t += len;
        if (*t) newline |= *t++ == '\n';
    }
    for (int i = 0; i < N_FLAGS; i++)   /* then the keys that the layout does not name */
        if (FLAGS[i].key && !done[i]) put_setting(o, &FLAGS[i], &newline, buf, buflen, &n);
    put(buf, buflen, &n, "%s", "}\n");
    return n < buflen ? (int)n : -1;   /* -1: it did not fit (never a cut JSON) */
}

/* One saved key into its row's field, through the flag's checks: 0, or -1 with a message
   naming the key. A key with a flag must be there (every file since the first has them);
   one without (data, and those added later: data_bytes, data_crc32, trained_on, ranks) may
   be missing and then keeps options_default's value, what older files meant. */
static int read_saved(Options *o, const Flag *f, const char *json, char *err, size_t errlen) {
    char *p = (char *)o + f->off;
    char s[OPT_PATH_MAX], e[512];
    double v = 0;
    unsigned long long u = 0;
    int r;
    if (f->kind == K_INT || f->kind == K_LONG || f->kind == K_DBL) r = json_get_number(json, f->key, &v);
    else if (f->kind == K_U64 || f->kind == K_U32) r = json_get_u64(json, f->key, &u);
    else r = json_get_string(json, f->key, s, f->kind == K_STR || f->kind == K_PRESET ? (size_t)f->hi : sizeof s);
    if (r == 1) {
        if (!f->flag) return 0;
        snprintf(err, errlen, "saved settings lack \"%s\"", f->key);
        return -1;
    }
    switch (f->kind) {
    case K_INT:
    case K_LONG:
    case K_DBL:
        if (r < 0 || !in_range(f, v)) {
            const int integral = f->kind != K_DBL;
            snprintf(err, errlen, "saved settings: \"%s\" must be %s in [%.10g, %.10g]%s%s%s, got %s", f->key,
                     integral ? "an integer" : "a number", f->lo, f->hi, f->flag ? " (as " : "",
                     f->flag ? f->flag : "", f->flag ? ")" : "", r < 0 ? "another type" : "an out-of-range value");
            if (r == 0 && isfinite(v)) {
                size_t k = strlen(err);
                snprintf(err + k, errlen > k ? errlen - k : 0, " (%.17g)", v);
            }
            return -1;
        }
        set_number(o, f, v);
        return 0;
    case K_U64:
    case K_U32:
        if (r < 0 || (f->kind == K_U32 && u > 0xffffffffULL)) {
            snprintf(err, errlen, "saved settings: \"%s\" must be a non-negative %sinteger", f->key,
                     f->kind == K_U32 ? "32-bit " : "");
            return -1;
        }
        if (f->kind == K_U32) *(uint32_t *)p = (uint32_t)u; else *(uint64_t *)p = u;
        return 0;
    case K_STR:
        if (r < 0) {
            snprintf(err, errlen, "saved settings: \"%s\" must be a string shorter than %.0f bytes", f->key, f->hi);
            return -1;
        }
        snprintf(p, (size_t)f->hi, "%s", s);   /* "" (init_from): none */
        return 0;
    default:   /* a name (clip_mode, preset): the command line's parser */
        if (r < 0) snprintf(e, sizeof e, "expected a string of at most %zu bytes",
                            (f->kind == K_PRESET ? (size_t)f->hi : sizeof s) - 1);
        if (r < 0 || set_flag(o, f, s, e, sizeof e)) {
            snprintf(err, errlen, "saved settings: \"%s\": %s", f->key, e);
            return -1;
        }
        return 0;
    }
}

int options_from_json(Options *o, const char *json, char *err, size_t errlen) {
    options_default(o);
    char e[512];
    if (json_check_object(json, e, sizeof e)) { snprintf(err, errlen, "saved settings: %s", e); return -1; }
    if (config_from_json(&o->model, json, err, errlen)) return -1;
    for (int i = 0; i < N_FLAGS; i++)
        if (FLAGS[i].key && read_saved(o, &FLAGS[i], json, err, errlen)) return -1;
    /* the data's size and CRC-32 come together (written together, or neither) */
    double v;
    if ((json_get_number(json, "data_bytes", &v) == 1) != (json_get_number(json, "data_crc32", &v) == 1)) {
        snprintf(err, errlen, "saved settings: \"data_bytes\" and \"data_crc32\" go together");
        return -1;
    }
    return options_validate(o, err, errlen);
}
