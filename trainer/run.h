/* trainer/run.h: one training run, as its parts share it. A run is either started afresh
 * (run_start.c: the settings checked, the data loaded, the model initialised or taken from
 * --init-from) or resumed from its newest valid checkpoint (run_resume.c); its directory
 * holds its files (run_dir.c: config.json, metrics.csv, samples.txt, the checkpoints); the
 * loop (train_loop.c) repeats the step (train_step.c) and, between steps, validates,
 * samples, logs and checkpoints. */
#ifndef FLASH_RUN_H
#define FLASH_RUN_H
#include <stdint.h>
#include <stdio.h>
#include "checkpoint.h"
#include "dataset.h"
#include "metrics.h"
#include "model.h"
#include "options.h"

#define SAMPLE_SEED_SALT 0x5a3c9e1f7b2d4608ULL   /* separates the sample stream from the data's */

typedef struct {
    Options o;            /* the run's settings: the command line's, or the checkpoint's */
    Model *m;
    TrainState st;
    uint8_t *bytes;       /* the data file, split in sp */
    DataSplit sp;
    int *tokens;          /* accum x B x (T+1): one step's micro-batches */
    uint8_t *sample_out;  /* sample_len bytes: the periodic sample's text */
    Metrics mt;
    FILE *samples;        /* samples.txt, appended to (rank 0) */
    int sample_prime;     /* bytes of validation text before each periodic sample */
    int resuming;         /* continued from a checkpoint */
    int root;             /* rank 0: writes the run directory and prints */
    int tty;              /* stdout is a terminal: progress rewritten in place */
    int lock_fd;          /* the run directory's lock (-1: not taken, or not rank 0) */
} Run;

/* A new run from the command line's settings: checked, its data loaded, its model
   initialised (or read from --init-from) and both generators seeded. Exits with the
   message when anything is wrong. */
void run_start_new(Run *r, const Options *cli);

/* The run of --resume DIR (or of a checkpoint file) from its newest valid checkpoint: its
   saved settings with the command line's device, precision and threads, its own data
   (checked by size and CRC-32), the model with both Adam moments. Exits with the message
   when the run cannot continue exactly. */
void run_resume(Run *r, const Options *cli);

/* The run directory (rank 0's). */
/* Exits when DIR's files' paths would not fit in a path. */
void run_dir_check_path(const char *dir);
/* DIR's lock (trainer/runlock.h), held until the process ends: its descriptor; exits with
   the holder's pid when another process has it. run_dir_lock: into r->lock_fd, once. */
int run_dir_take_lock(const char *dir);
void run_dir_lock(Run *r, const char *dir);
/* 1 when DIR holds a run's files (config.json, metrics.csv, samples.txt or checkpoints). */
int run_dir_holds_run(const char *dir);
/* A new run's --out must not hold another run (refused unless --overwrite); an existing
   --out is locked here. Reads only: nothing is replaced before run_dir_open. */
void run_dir_check_new(Run *r);
/* Exits when the model of the checkpoint at ckpt_path (config ck) is not the one DIR's
   config.json describes, naming the first setting that differs. */
void run_dir_check_model(const char *dir, const char *ckpt_path, const FlashConfig *ck);
/* Creates and locks DIR; for a new run with --overwrite, moves the old run aside (removed at
   the first checkpoint, moved back if the run ends before); writes config.json; opens
   metrics.csv (cut back to the checkpoint's step on a resume) and samples.txt. Exits with
   the message on failure. */
void run_dir_open(Run *r);
/* --help's paragraph on the run directory: the lock and what --overwrite does when. */
void run_dir_print_help(FILE *f);
/* Writes the checkpoint of the current step and prunes to --keep-ckpts: 0, or -1 after the
   message (a checkpoint that could not be written fails the run). */
int run_save_checkpoint(Run *r);
/* Closes the run directory's files; 0, or 1 after the message when a write failed (with
   report 0, a run that failed already, nothing is said). */
int run_dir_close(Run *r, int report);

/* One optimizer step's outcome. */
typedef struct {
    double loss;          /* the step's mean training loss (over every rank) */
    double lr, gnorm;     /* the learning rate applied; the gradient norm (NaN: no update) */
    double seconds;       /* the step's wall time */
    int signal;           /* under data parallelism: the stop signal every rank agreed on */
} StepResult;

/* The next step: its micro-batches drawn, forward and backward, the gradients (and the
   loss and signal_seen) summed over the ranks, clipping and AdamW. On success the step and
   token counters advance and 0 is returned; -1 when the loss or the gradient norm is not
   finite, with no update made (the same on every rank). Allocates nothing. */
int train_step(Run *r, int signal_seen, StepResult *res);

/* ./train [options] FILE and ./train --resume DIR: the whole run; its exit code. */
int run_train(const Options *cli);

#endif
