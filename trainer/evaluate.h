/* trainer/evaluate.h: losses over held-out text, in nats and bits per byte, by one process
 * or shared among the ranks of a data-parallel run. */
#ifndef FLASH_EVALUATE_H
#define FLASH_EVALUATE_H
#include <stddef.h>
#include <stdint.h>
#include "model.h"
#include "progress.h"

#define LN2 0.69314718055994530942

/* Which windows this process forwards: rank `rank` of `ranks` takes a contiguous share of
   them, and sum (collective: every rank calls it) adds the k partial sums over the ranks in
   rank order, the same on every rank. One process: {0, 1, NULL}. The windows, and with one
   rank the result, are the same for any share. */
typedef struct {
    int rank, ranks;
    void (*sum)(double *v, int k);
} EvalShare;
#define EVAL_ALONE ((EvalShare){0, 1, NULL})

/* Validation during training: nwin windows of T+1 bytes, evenly spaced over the split
   (start_i = i (n - T - 1) / (nwin - 1)), the same every time; B at a time. tokbuf holds
   B*(T+1) ints. Mean loss in nats. */
double eval_windows(Model *m, const uint8_t *split, size_t n, int nwin, int B, int T, int *tokbuf,
                    EvalShare share);

/* The whole split: consecutive windows of T+1 bytes that overlap by one byte, so every byte
   but the first is predicted exactly once, with the context from its window's start
   (the last window is shorter: the last rank's). Returns total nats / predicted bytes;
   *count (may be NULL) gets the number of predicted bytes. progress (may be NULL, else
   started by the caller over n - 1 bytes) is told this process's predicted bytes after
   each batch. */
double eval_split(Model *m, const uint8_t *split, size_t n, int B, int T, int *tokbuf,
                  EvalShare share, Progress *progress, size_t *count);

#endif
