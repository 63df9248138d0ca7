/* model/optim.c: the schedule and AdamW's per-step constants, shared by the backends. */
#include "optim.h"
#include <math.h>

double lr_at(const OptConfig *o, long s) {
    if (s < o->warmup) return o->peak_lr * (double)(s + 1) / (double)o->warmup;
    long span = o->total - o->warmup;
    if (span < 1) span = 1;
    return o->peak_lr - (o->peak_lr - o->min_lr) * (double)(s - o->warmup) / (double)span;
}

AdamConstants adam_constants(const OptConfig *o, long t_step, double lr) {
    const double bc1 = 1 - pow(o->beta1, (double)t_step), bc2 = 1 - pow(o->beta2, (double)t_step);
    AdamConstants k = {o->beta1, o->beta2, 1 - o->beta1, 1 - o->beta2, lr / bc1, 1 / bc2, o->eps,
                       1 - lr * o->weight_decay};
    return k;
}
