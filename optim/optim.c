/* optim/optim.c: schedule, clipping, AdamW. */
#include "optim.h"
#include <math.h>

#define CLIP_NORM_EPS 1e-6   /* torch.nn.utils.clip_grad_norm_ adds it to the norm */

double lr_at(const OptConfig *o, long s) {
    if (s < o->warmup) return o->peak_lr * (double)(s + 1) / (double)o->warmup;
    long span = o->total - o->warmup;
    if (span < 1) span = 1;
    return o->peak_lr - (o->peak_lr - o->min_lr) * (double)(s - o->warmup) / (double)span;
}

/* Fixed chunks summed in order, so the norm (and so clipping) is the same bit for bit
   in every run, whatever the thread count: resume must reproduce a run exactly. */
#define RED_CHUNKS 64
static double tensor_sumsq(const real *g, size_t n) {
    double part[RED_CHUNKS] = {0};
#pragma omp parallel for schedule(static)
    for (int c = 0; c < RED_CHUNKS; c++)
        for (size_t k = n * c / RED_CHUNKS; k < n * (c + 1) / RED_CHUNKS; k++)
            part[c] += (double)g[k] * g[k];
    double ss = 0;
    for (int c = 0; c < RED_CHUNKS; c++) ss += part[c];
    return ss;
}

double grad_global_norm(const ParamTable *t, const real *grads) {
    double ss = 0;
    for (int i = 0; i < t->n; i++)
        if (t->info[i].trained) ss += tensor_sumsq(grads + t->info[i].offset, t->info[i].numel);
    return sqrt(ss);
}

static void scale_tensor(real *g, size_t n, double c) {
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) g[k] = (real)(g[k] * c);
}

void clip_grads(const OptConfig *o, const ParamTable *t, real *grads, double global_norm) {
    if (o->clip_mode == CLIP_GLOBAL) {
        double c = o->clip / (global_norm + CLIP_NORM_EPS);
        if (c < 1)
            for (int i = 0; i < t->n; i++)
                if (t->info[i].trained) scale_tensor(grads + t->info[i].offset, t->info[i].numel, c);
    } else if (o->clip_mode == CLIP_LOCAL) {
        for (int i = 0; i < t->n; i++) {
            const ParamInfo *p = &t->info[i];
            if (!p->trained) continue;
            double n = sqrt(tensor_sumsq(grads + p->offset, p->numel));
            if (n > o->clip) scale_tensor(grads + p->offset, p->numel, o->clip / n);
        }
    }
}

/* p -= lr wd p (decayed tensors);  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
   p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). Arithmetic in double, stored in real. */
void adamw_step(const OptConfig *o, const ParamTable *t, real *params, const real *grads,
                real *m, real *v, long t_step, double lr) {
    const double b1 = o->beta1, b2 = o->beta2;
    const double bc1 = 1 - pow(b1, (double)t_step), bc2 = 1 - pow(b2, (double)t_step);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        if (!p->trained) continue;
        const double decay = p->decay ? 1 - lr * o->weight_decay : 1;
        real *w = params + p->offset, *mm = m + p->offset, *vv = v + p->offset;
        const real *g = grads + p->offset;
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < p->numel; k++) {
            double gk = g[k];
            double mk = b1 * mm[k] + (1 - b1) * gk;
            double vk = b2 * vv[k] + (1 - b2) * gk * gk;
            mm[k] = (real)mk;
            vv[k] = (real)vk;
            w[k] = (real)(w[k] * decay - lr * (mk / bc1) / (sqrt(vk / bc2) + o->eps));
        }
    }
}
