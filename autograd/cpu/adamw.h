/* autograd/cpu/adamw.h: the CPU backend's update: clipping and AdamW over the parameter
 * table (the constants from model/optim.h). */
#ifndef FLASH_CPU_ADAMW_H
#define FLASH_CPU_ADAMW_H
#include "optim.h"
#include "params.h"

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
