/* optim/optim.h: the training recipe's arithmetic (docs/model.md, "Optimizer"):
 * learning-rate schedule, gradient clipping and AdamW, each one loop over
 * the parameter table. */
#ifndef FLASH_OPTIM_H
#define FLASH_OPTIM_H
#include "params.h"

typedef enum { CLIP_NONE = 0, CLIP_GLOBAL = 1, CLIP_LOCAL = 2 } ClipMode;

typedef struct {
    double peak_lr, min_lr;
    long warmup, total;          /* steps */
    double beta1, beta2, eps, weight_decay;
    ClipMode clip_mode;
    double clip;
} OptConfig;

/* lr at 0-based step s: P (s+1)/W while s < W, then P - (P - m)(s - W)/max(1, S - W). */
double lr_at(const OptConfig *o, long step);

/* The whole update of a training step, in two passes over the gradients:
   1. each tensor's norm; the global norm N is their root sum of squares;
   2. AdamW on each tensor, its gradient scaled on the fly by the clip factor:
      global: min(1, c/(N + 1e-6)); local: c/n for a tensor whose norm n > c.
   AdamW: p -= lr wd p (decayed tensors); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
   p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps); t is the 1-based step. m and v
   share the table's layout; untrained entries are left alone. Returns N before clipping;
   when N is not finite, nothing is updated. */
double optimizer_step(const OptConfig *o, const ParamTable *t, real *params, const real *grads,
                      real *m, real *v, long t_step, double lr);

#endif
