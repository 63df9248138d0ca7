/* data/draw.h: the training examples drawn from a split: one micro-batch, and one step's
 * micro-batches shared among the ranks of a data-parallel run. Every draw comes from the one
 * seeded generator, so a step's examples depend only on its state, never on the rank count. */
#ifndef FLASH_DRAW_H
#define FLASH_DRAW_H

#include <stddef.h>
#include <stdint.h>
#include "rng.h"

/* B training examples of T+1 consecutive bytes, each at an offset drawn uniformly from
   [0, n - (T+1)] with rng_below; tokens is B*(T+1) int32 row-major. n >= T+1 required.
   Exactly one rng_below(rng, n - T) per row, rows in order, so the batch (and the rng state
   after it) follows from the rng state before it. */
void data_sample_batch(const uint8_t *split, size_t n, int B, int T, Rng *rng, int32_t *tokens);

/* One step of a run on `ranks` processes: ranks x A micro-batches of B x (T+1) are drawn in
   order from rng (every rank draws them all, so the stream is the same for any rank count),
   and rank `rank` keeps micro-batches rank*A .. rank*A+A-1 in tokens (A x B x (T+1)); the
   others' are only stepped over in the generator. With one rank it is A micro-batches in a
   row, exactly. Allocates nothing (it runs inside the training step). */
void data_draw_step(const uint8_t *split, size_t n, int A, int B, int T, int rank, int ranks,
                    Rng *rng, int32_t *tokens);

#endif
