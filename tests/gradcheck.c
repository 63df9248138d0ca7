/* tests/gradcheck.c: finite-difference gradient checks (see gradcheck.h). */
#include "gradcheck.h"
#include "rng.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int gc_sample(size_t *idx, size_t n, int k, uint64_t seed) {
    if (k <= 0 || n == 0) return 0;
    if (n <= (size_t)k) {
        for (size_t i = 0; i < n; i++) idx[i] = i;
        return (int)n;
    }
    int m = 0;
    idx[m++] = 0;
    if (k >= 2) idx[m++] = n - 1;
    Rng rng;
    rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)n));
    while (m < k) {           /* n > k, so a fresh index always exists */
        size_t c = (size_t)rng_below(&rng, n);
        int dup = 0;
        for (int j = 0; j < m && !dup; j++) dup = idx[j] == c;
        if (!dup) idx[m++] = c;
    }
    return m;
}

GcResult gc_check_idx(gc_loss_fn loss, void *ctx, real *x, const real *grad,
                      const size_t *idx, int nidx, double step) {
    GcResult r = {0};
    if (step <= 0) step = GC_STEP;
    double err2 = 0, num2 = 0, ana2 = 0, worst = -1;
    for (int j = 0; j < nidx; j++) {
        size_t i = idx[j];
        const real x0 = x[i];
        const double h = step * (fabs((double)x0) > 1 ? fabs((double)x0) : 1);
        const real xp2 = (real)(x0 + 2 * h), xm2 = (real)(x0 - 2 * h);
        x[i] = (real)(x0 + h);
        double lp = loss(ctx);
        x[i] = (real)(x0 - h);
        double lm = loss(ctx);
        x[i] = xp2;
        double lp2 = loss(ctx);
        x[i] = xm2;
        double lm2 = loss(ctx);
        x[i] = x0;
        /* the step actually taken, after rounding x0 +- 2h to `real` */
        double he = ((double)xp2 - (double)xm2) / 4;
        double num = (8 * (lp - lm) - (lp2 - lm2)) / (12 * he);
        double ana = (double)grad[i], dlt = num - ana;
        err2 += dlt * dlt;
        num2 += num * num;
        ana2 += ana * ana;
        /* a NaN anywhere makes this entry the worst */
        if (!(fabs(dlt) <= worst)) { worst = isnan(dlt) ? INFINITY : fabs(dlt); r.worst = i; r.worst_num = num; r.worst_ana = ana; }
    }
    r.n_checked = nidx;
    r.num_norm = sqrt(num2);
    r.ana_norm = sqrt(ana2);
    r.rel_err = sqrt(err2) / (r.num_norm > GC_TINY ? r.num_norm : GC_TINY);
    if (err2 == 0) r.rel_err = 0;   /* both zero on every entry */
    if (isnan(err2)) r.rel_err = INFINITY;
    return r;
}

GcResult gc_check(gc_loss_fn loss, void *ctx, real *x, size_t n, const real *grad, int k,
                  uint64_t seed) {
    if (k < 2) k = 2;
    size_t *idx = malloc((size_t)k * sizeof *idx);
    if (!idx) { GcResult bad = {0}; bad.rel_err = INFINITY; return bad; }
    int m = gc_sample(idx, n, k, seed);
    GcResult r = gc_check_idx(loss, ctx, x, grad, idx, m, 0);
    free(idx);
    return r;
}

void gc_describe(const GcResult *r, char *buf, size_t buflen) {
    snprintf(buf, buflen, "err %.3g over %d entries (|num| %.3g, |ana| %.3g), worst [%zu] num %.9g ana %.9g",
             r->rel_err, r->n_checked, r->num_norm, r->ana_norm, r->worst, r->worst_num,
             r->worst_ana);
}
