/* model/optim.h: the training recipe as every backend reads it (docs/model.md, "Optimizer"):
 * the settings, the learning-rate schedule, the clipping epsilon and AdamW's per-step
 * constants. The update itself is each backend's (autograd/cpu/adamw.c, the CUDA optimizer
 * kernels). */
#ifndef FLASH_OPTIM_H
#define FLASH_OPTIM_H

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

/* torch.nn.utils.clip_grad_norm_ adds it to the norm: global clipping scales by
   min(1, c / (N + CLIP_NORM_EPS)). Every backend's clipping uses this one constant. */
#define CLIP_NORM_EPS 1e-6

/* AdamW's per-step constants, formed once in double for every backend (each casts them to
   its own arithmetic's type at use): m = b1 m + c1 g; v = b2 v + c2 g^2;
   p = p decay - step m / (sqrt(v inv_bc2) + eps), decay applying to decayed tensors only. */
typedef struct {
    double b1, b2, c1, c2;   /* beta1, beta2, 1 - beta1, 1 - beta2 */
    double step;             /* lr / (1 - beta1^t) */
    double inv_bc2;          /* 1 / (1 - beta2^t) */
    double eps;
    double decay;            /* 1 - lr weight_decay */
} AdamConstants;
AdamConstants adam_constants(const OptConfig *o, long t_step, double lr);

#endif
