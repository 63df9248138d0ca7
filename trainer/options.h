/* trainer/options.h: every setting of a training run, its flag, default and JSON form.
 * config.json and each checkpoint hold the JSON, so a resumed run has the same settings. */
#ifndef FLASH_OPTIONS_H
#define FLASH_OPTIONS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "config.h"
#include "model.h"
#include "optim.h"

#define OPT_PATH_MAX 1024
#define OPT_MAX_FLAGS 64

/* The commands of ./train; each flag of the one table says which of them take it. */
typedef enum { CMD_TRAIN = 1, CMD_EVAL = 2, CMD_SAMPLE = 4, CMD_EXPORT = 8, CMD_BENCH = 16 } Command;
#define CMD_ALL (CMD_TRAIN | CMD_EVAL | CMD_SAMPLE | CMD_EXPORT | CMD_BENCH)

typedef struct {
    FlashConfig model;
    OptConfig opt;            /* peak_lr, min_lr, warmup, total (= steps), betas, eps, wd, clip */
    char data_path[OPT_PATH_MAX];
    char out_dir[OPT_PATH_MAX];
    char resume_dir[OPT_PATH_MAX];
    char init_from[OPT_PATH_MAX];
    char preset[32];
    int preset_given;                  /* --preset on this command line (not saved) */
    char trained_on[32];               /* "cpu fp32", "cuda bf16": the last device that trained
                                          the run (saved; resuming elsewhere is not bit-exact) */
    uint64_t seed;
    int batch, accum, seq_len;         /* accum: micro-batches per step on each rank */
    int ranks;                         /* MPI ranks that train (saved; a step is batch x accum
                                          x ranks sequences); 1 until the run sets it */
    int eval_every, eval_windows;      /* validation: every N steps, over this many windows */
    int sample_every, sample_len, sample_prime;
    int ckpt_every, keep_ckpts;
    int log_every;                     /* plain progress lines when stdout is not a terminal */
    int threads;                       /* 0: OpenMP's default (all cores) */
    ModelDevice device;                /* --device: where the model runs (not saved) */
    ModelPrecision precision;          /* --precision (not saved) */
    int overwrite;                     /* --overwrite: a new run may replace the one in --out */
    uint64_t data_bytes;               /* the data as loaded (at most 10^8 bytes used) and its */
    uint32_t data_crc32;               /* CRC-32: saved, compared on --resume (0 bytes: unknown) */
    int model_flags_given;             /* a model option was on the command line */
    int recipe_flags_given;            /* a recipe or data option was on the command line */
    /* the subcommands' own settings (not saved) */
    char split[8];                     /* eval: "val" or "test" */
    const char *prompt;                /* sample: the text to continue (argv's, not owned) */
    int gen_len, num_samples, sample_bench;
    double temperature;
    const char *args[2];               /* the positional arguments (argv's), nargs of them */
    int nargs;
    unsigned char given[OPT_MAX_FLAGS];/* which flags of the table were on the command line */
} Options;

/* The default recipe: the paper's (AdamW, warmup + linear decay, wd 0.01, eps 1e-6, local
   clipping 0.1) on the train.py model. */
void options_default(Options *o);

/* Parses the command line of one command through the one table: `./train [options] FILE`
   for CMD_TRAIN (argv[0], the program, is skipped), `./train CMD [options] ARGS...` for
   the others (argv[0] = CMD). The positional arguments land in o->args: training's data
   FILE (none with --resume DIR, or one), eval's CHECKPOINT FILE, sample's CHECKPOINT,
   export's CHECKPOINT OUT, none for bench. Returns 0, 1 when --help was printed, -1 with a
   message. */
int options_parse(Options *o, Command cmd, int argc, char **argv, char *err, size_t errlen);
/* The command's help: usage, what it does, and each of its flags with its default. */
void options_print_help(FILE *f, Command cmd);
/* 1 when FLAG (e.g. "--steps") was on the command line. */
int options_given(const Options *o, const char *flag);
/* A preset's training budget: its steps and tokens per step (one rank). 0, or -1 for an
   unknown name. */
int options_preset_budget(const char *name, long *steps, long *tokens_per_step);
/* The first flag on the command line that is not in the NULL-terminated list, or NULL. */
const char *options_given_other(const Options *o, const char *const *allowed);
/* 0, or -1 with a message for values that cannot run. */
int options_validate(const Options *o, char *err, size_t errlen);

/* Flat JSON object of every setting (model keys as in FLASH-pytorch's config); its length,
   or -1 when it does not fit in buflen (nothing cut short is ever written). */
int options_to_json(const Options *o, char *buf, size_t buflen);
int options_from_json(Options *o, const char *json, char *err, size_t errlen);


#endif
