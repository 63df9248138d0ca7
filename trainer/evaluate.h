/* trainer/evaluate.h: losses over held-out text, in nats and bits per byte. */
#ifndef FLASH_EVALUATE_H
#define FLASH_EVALUATE_H
#include <stddef.h>
#include <stdint.h>
#include "model.h"

#define LN2 0.69314718055994530942

/* Validation during training: nwin windows of T+1 bytes, evenly spaced over the split
   (start_i = i (n - T - 1) / (nwin - 1)), the same every time; B at a time. tokbuf holds
   B*(T+1) ints. Mean loss in nats. */
double eval_windows(Model *m, const uint8_t *split, size_t n, int nwin, int B, int T, int *tokbuf);

/* The whole split: consecutive windows of T+1 bytes that overlap by one byte, so every byte
   but the first is predicted exactly once, with the context from its window's start
   (the last window is shorter). Returns total nats / predicted bytes; *count gets the
   number of predicted bytes. progress (may be NULL) is called after each batch. */
double eval_split(Model *m, const uint8_t *split, size_t n, int B, int T, int *tokbuf,
                  size_t *count, void (*progress)(size_t done, size_t total));

#endif
