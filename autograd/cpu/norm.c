/* autograd/cpu/norm.c: scalenorm, layernorm and the token shift: forward and backward. */
#include "ops.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define NORM_EPS 1e-5       /* ScaleNorm and LayerNorm eps (docs/model.md) */

/* ================================== norms ========================================== */

void scalenorm_forward(real *y, real *stat, const real *x, const real *g, int N, int d) {
    const real gain = g[0];
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        double norm = sqrt(ss / d);               /* ||x|| * d^-1/2 */
        real r = (real)(1.0 / (norm > NORM_EPS ? norm : NORM_EPS));
        stat[n] = r;
        for (int i = 0; i < d; i++) y[(size_t)n * d + i] = xr[i] * r * gain;
    }
}

/* y = g x r, r = 1/n, n = ||x||/sqrt(d):  dx = g r (dy - x (x.dy) r^2 / d)  (n > eps);
   dx = g r dy when the clamp is active;  dg = sum dy . x r */
void scalenorm_backward(real *dx, real *dg, const real *dy, const real *x, const real *stat,
                        const real *g, int N, int d) {
    const real gain = g[0];
    double part[RED_CHUNKS] = {0};
#pragma omp parallel for schedule(static)
    for (int c = 0; c < RED_CHUNKS; c++)
    for (size_t n = CHUNK_LO(c, N); n < CHUNK_LO(c + 1, N); n++) {
        const real *xr = x + (size_t)n * d, *dyr = dy + (size_t)n * d;
        real *dxr = dx + (size_t)n * d;
        const real r = stat[n];
        double ss = 0, xdy = 0;
        for (int i = 0; i < d; i++) { ss += (double)xr[i] * xr[i]; xdy += (double)xr[i] * dyr[i]; }
        part[c] += xdy * r;
        int clamped = sqrt(ss / d) < NORM_EPS;
        real cr = clamped ? 0 : (real)(xdy * r * r / d);
        for (int i = 0; i < d; i++) dxr[i] += gain * r * (dyr[i] - xr[i] * cr);
    }
    double dgain = 0;
    for (int c = 0; c < RED_CHUNKS; c++) dgain += part[c];
    dg[0] += (real)dgain;
}

void layernorm_forward(real *y, real *stat, const real *x, const real *w, const real *b,
                       int N, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d;
        double mean = 0, var = 0;
        for (int i = 0; i < d; i++) mean += xr[i];
        mean /= d;
        for (int i = 0; i < d; i++) { double c = xr[i] - mean; var += c * c; }
        var /= d;                                   /* biased, as nn.LayerNorm */
        real rstd = (real)(1.0 / sqrt(var + NORM_EPS));
        stat[2 * n] = (real)mean;
        stat[2 * n + 1] = rstd;
        for (int i = 0; i < d; i++)
            y[(size_t)n * d + i] = (xr[i] - (real)mean) * rstd * w[i] + b[i];
    }
}

/* xhat = (x - mean) rstd, y = xhat w + b, g = dy w:
   dx = rstd (g - mean(g) - xhat mean(g xhat));  dw = sum dy xhat;  db = sum dy */
void layernorm_backward(real *dx, real *dw, real *db, const real *dy, const real *x,
                        const real *stat, const real *w, int N, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d, *dyr = dy + (size_t)n * d;
        real *dxr = dx + (size_t)n * d;
        const real mean = stat[2 * n], rstd = stat[2 * n + 1];
        double gsum = 0, gxsum = 0;
        for (int i = 0; i < d; i++) {
            double gi = (double)dyr[i] * w[i], xh = (double)(xr[i] - mean) * rstd;
            gsum += gi;
            gxsum += gi * xh;
        }
        real gm = (real)(gsum / d), gxm = (real)(gxsum / d);
        for (int i = 0; i < d; i++) {
            real xh = (xr[i] - mean) * rstd;
            dxr[i] += rstd * (dyr[i] * w[i] - gm - xh * gxm);
        }
    }
    int nblk = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int n = 0; n < N; n++) {
            const real mean = stat[2 * n], rstd = stat[2 * n + 1];
            for (int j = j0; j < j1; j++) {
                real g = dy[(size_t)n * d + j];
                dw[j] += g * (x[(size_t)n * d + j] - mean) * rstd;
                db[j] += g;
            }
        }
    }
}

/* ================================ token shift ====================================== */

void token_shift_forward(real *x, int B, int T, int d) {
    const int half = (d + 1) / 2;                   /* chunk(2) puts ceil(d/2) first */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        real *xb = x + (size_t)b * T * d;
        for (int t = T - 1; t >= 1; t--)
            memcpy(xb + (size_t)t * d, xb + (size_t)(t - 1) * d, sizeof(real) * half);
        memset(xb, 0, sizeof(real) * half);
    }
}

/* y[t, :h] = x[t-1, :h]  =>  dx[t, :h] = dy[t+1, :h], dx[T-1, :h] = 0 */
void token_shift_backward(real *dx, int B, int T, int d) {
    const int half = (d + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        real *db = dx + (size_t)b * T * d;
        for (int t = 0; t + 1 < T; t++)
            memcpy(db + (size_t)t * d, db + (size_t)(t + 1) * d, sizeof(real) * half);
        memset(db + (size_t)(T - 1) * d, 0, sizeof(real) * half);
    }
}
