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

/* DIR/ckpt-STEP.bin */
void checkpoint_path(char *buf, size_t n, const char *dir, uint64_t step);
/* Steps of the checkpoints in DIR, newest first; returns the count (at most max). */
int checkpoint_list(const char *dir, uint64_t *steps, int max);

#endif
