/* trainer/checkpoint.h: everything a run needs to continue exactly, in one file.
 *
 * Layout (little-endian):
 *   "FLASHCKP"  u32 version  u32 json_len  u64 n_params  u32 crc32  u32 zero
 *   json_len bytes: the run's settings (options_to_json)
 *   TrainState (step, tokens, elapsed, both generators' states)
 *   params, Adam m, Adam v: n_params float32 each, in the parameter table's order
 * crc32 covers every byte after the header. Written atomically (formats/atomic.h). */
#ifndef FLASH_CHECKPOINT_H
#define FLASH_CHECKPOINT_H
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "options.h"
#include "rng.h"

#define CKPT_VERSION 2   /* 2: to_qk follows to_hidden in the table (fused GEMM) */

typedef struct {
    uint64_t step;            /* optimizer steps completed */
    uint64_t tokens;          /* training tokens consumed */
    double elapsed_s;         /* training wall time so far */
    Rng data_rng;             /* training-example offsets */
    Rng sample_rng;           /* periodic samples */
} TrainState;

/* Writes the settings, *st and the model's parameters and both moments (model_read). */
int checkpoint_save(const char *path, const Options *o, const TrainState *st, Model *m,
                    char *err, size_t errlen);

/* A verified checkpoint's state, in host memory until it goes into a model. */
typedef struct {
    size_t n;                 /* parameters (the table's total) */
    float *values;            /* params, Adam m, Adam v: n each */
} CkptState;

/* Reads and verifies PATH (magic, version, length, checksum, model shape), then fills *o,
   *st and *cs. 0, or -1 with a message that says what is wrong. */
int checkpoint_load(const char *path, Options *o, TrainState *st, CkptState *cs,
                    char *err, size_t errlen);
/* Writes the parameters (and with moments, both Adam moments) into m, a model of the
   checkpoint's config. */
int checkpoint_apply(const CkptState *cs, Model *m, int moments, char *err, size_t errlen);
void checkpoint_state_free(CkptState *cs);
/* A checkpoint argument of a command: a checkpoint file, or a run directory, whose newest
   valid checkpoint is loaded (damaged ones newer than it skipped with a warning on stderr).
   path_out gets the file read. 0, or -1 with a message. */
int checkpoint_load_arg(const char *arg, Options *o, TrainState *st, CkptState *cs,
                        char *path_out, size_t path_len, char *err, size_t errlen);

/* DIR/ckpt-STEP.bin */
void checkpoint_path(char *buf, size_t n, const char *dir, uint64_t step);
/* Steps of the checkpoints in DIR (files named exactly as checkpoint_path names them), the
   newest `max` of however many there are, newest first; returns the count (at most max). */
int checkpoint_list(const char *dir, uint64_t *steps, int max);
/* All of them, newest first, in a malloc'ed *steps; the count, or -1 out of memory. */
int checkpoint_list_all(const char *dir, uint64_t **steps);
/* 0 and *step when NAME is exactly "ckpt-%08llu.bin" of some step, else -1. */
int checkpoint_name_step(const char *name, uint64_t *step);
/* 1 when PATH starts with the checkpoint magic. */
int checkpoint_has_magic(const char *path);

#endif
