/* autograd/cpu/adamw.c: clipping and AdamW on the CPU. */
#include "adamw.h"
#include <math.h>

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

/* One tensor's AdamW update with its gradient multiplied by clip (see optimizer_step). */
static void adamw_tensor(const AdamConstants *k, const ParamInfo *p, real *params, const real *grads,
                         real *m, real *v, double clip) {
    /* float arithmetic (16 lanes per AVX-512 instruction, twice double's): the
       per-step constants are formed in double, the update itself agrees with the double
       reference to float rounding (parity: final weights within 1e-6) */
    const real b1 = (real)k->b1, b2 = (real)k->b2, c1 = (real)k->c1, c2 = (real)k->c2;
    const real decay = (real)(p->decay ? k->decay : 1);
    const real step = (real)k->step, inv_bc2 = (real)k->inv_bc2, eps = (real)k->eps, cl = (real)clip;
    real *w = params + p->offset, *mm = m + p->offset, *vv = v + p->offset;
    const real *g = grads + p->offset;
#pragma omp parallel for simd schedule(static)
    for (size_t q = 0; q < p->numel; q++) {
        real gk = g[q] * cl;
        real mk = b1 * mm[q] + c1 * gk;
        real vk = b2 * vv[q] + c2 * gk * gk;
        mm[q] = mk;
        vv[q] = vk;
        w[q] = w[q] * decay - step * mk / (R_SQRT(vk * inv_bc2) + eps);
    }
}

double optimizer_step(const OptConfig *o, const ParamTable *t, real *params, const real *grads,
                      real *m, real *v, long t_step, double lr) {
    double ss[t->n];   /* per-tensor sums of squares: a few thousand at most */
    double total = 0;
    for (int i = 0; i < t->n; i++) {
        ss[i] = t->info[i].trained ? tensor_sumsq(grads + t->info[i].offset, t->info[i].numel) : 0;
        total += ss[i];
    }
    const double norm = sqrt(total);
    if (!isfinite(norm)) return norm;   /* no update from a NaN or infinite gradient */
    const AdamConstants k = adam_constants(o, t_step, lr);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        if (!p->trained) continue;
        double clip = 1;
        if (o->clip_mode == CLIP_GLOBAL) {
            double c = o->clip / (norm + CLIP_NORM_EPS);
            if (c < 1) clip = c;
        } else if (o->clip_mode == CLIP_LOCAL) {
            double n = sqrt(ss[i]);
            if (n > o->clip) clip = o->clip / n;
        }
        adamw_tensor(&k, p, params, grads, m, v, clip);
    }
    return norm;
}
