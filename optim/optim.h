/* optim/optim.h: the training recipe's arithmetic (flash-spec.md, "Training recipe
 * semantics"): learning-rate schedule, gradient clipping and AdamW, each one loop over
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

/* L2 norm over all trained gradients (accumulated in double). */
double grad_global_norm(const ParamTable *t, const real *grads);

/* global: scale all by min(1, c/(N + 1e-6)); local: each tensor with norm n > c by c/n. */
void clip_grads(const OptConfig *o, const ParamTable *t, real *grads, double global_norm);

/* One AdamW step (t is the 1-based step count for bias correction). m, v share the
   table's layout. Untrained entries are left alone. */
void adamw_step(const OptConfig *o, const ParamTable *t, real *params, const real *grads,
                real *m, real *v, long t_step, double lr);

/* The whole update of a training step in two passes over the gradients: each tensor's
   norm (the global norm is their sum), then AdamW with each tensor's clip factor applied
   to its gradient on the fly (the same arithmetic as clip_grads then adamw_step, without
   the pass that scales the gradients in memory). Returns the global norm before clipping;
   when it is not finite, nothing is updated. */
double optimizer_step(const OptConfig *o, const ParamTable *t, real *params, const real *grads,
                      real *m, real *v, long t_step, double lr);

#endif
