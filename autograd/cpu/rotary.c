/* autograd/cpu/rotary.c: the offset-scale of the shared z into four query/key vectors, and the rotary
 * position rotation: forward and backward. */
#include "ops.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ============================ offset-scale + rotary ================================ */

void rotary_table_fill(real *rot_cos, real *rot_sin, const real *freqs, int T, int r) {
    int half = r / 2;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            double a = (double)t * (double)freqs[j];
            rot_cos[(size_t)t * half + j] = (real)cos(a);
            rot_sin[(size_t)t * half + j] = (real)sin(a);
        }
}

/* One body for any head count, inlined into each public entry point so that FLASH's
   (heads 4, a constant) compiles as before. r = 0 (GAU) rotates nothing and reads no table
   (rot_cos/rot_sin may be NULL: no pointer is formed from them). */
static inline void osr_forward(real *qk4, int heads, const real *z, int z_stride, const real *gamma,
                               const real *beta, const real *rot_cos, const real *rot_sin,
                               int B, int T, int s, int r) {
    const size_t N = (size_t)B * T;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const int t = (int)(n % (size_t)T);
        const real *zr = z + n * z_stride;
        const real *c = r ? rot_cos + (size_t)t * (r / 2) : NULL, *sn = r ? rot_sin + (size_t)t * (r / 2) : NULL;
        for (int k = 0; k < heads; k++) {
            real *o = qk4 + (size_t)k * N * s + n * s;
            for (int f = 0; f < s; f++) o[f] = zr[f] * gamma[k * s + f] + beta[k * s + f];
            /* interleaved pairs (2j, 2j+1): (u, w) -> (u cos - w sin, w cos + u sin) */
            for (int j = 0; j < r / 2; j++) {
                real u = o[2 * j], w = o[2 * j + 1];
                o[2 * j] = u * c[j] - w * sn[j];
                o[2 * j + 1] = w * c[j] + u * sn[j];
            }
        }
    }
}

void offset_scale_rotary_forward(real *qk4, const real *z, int z_stride, const real *gamma,
                                 const real *beta, const real *rot_cos, const real *rot_sin,
                                 int B, int T, int s, int r) {
    osr_forward(qk4, 4, z, z_stride, gamma, beta, rot_cos, rot_sin, B, T, s, r);
}

void offset_scale_heads_forward(real *qk, int heads, const real *z, int z_stride, const real *gamma,
                                const real *beta, const real *rot_cos, const real *rot_sin,
                                int B, int T, int s, int r) {
    if (heads == 4) osr_forward(qk, 4, z, z_stride, gamma, beta, rot_cos, rot_sin, B, T, s, r);
    else osr_forward(qk, heads, z, z_stride, gamma, beta, rot_cos, rot_sin, B, T, s, r);
}

/* rotation back (transpose): du = dy1 cos + dy2 sin, dw = dy2 cos - dy1 sin;
   o_k = z gamma_k + beta_k:  dz = sum_k do_k gamma_k;  dgamma_k += sum_n do_k z;  dbeta_k += sum_n do_k */
static inline void osr_backward(real *dz, real *dgamma, real *dbeta, real *d_qk4, int heads,
                                const real *z, int z_stride, const real *gamma,
                                const real *rot_cos, const real *rot_sin, int B, int T, int s, int r) {
    const size_t N = (size_t)B * T;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const int t = (int)(n % (size_t)T);
        const real *c = r ? rot_cos + (size_t)t * (r / 2) : NULL, *sn = r ? rot_sin + (size_t)t * (r / 2) : NULL;
        real *dzr = dz + n * z_stride;
        for (int f = 0; f < s; f++) dzr[f] = 0;
        for (int k = 0; k < heads; k++) {
            real *g = d_qk4 + (size_t)k * N * s + n * s;
            for (int j = 0; j < r / 2; j++) {
                real g1 = g[2 * j], g2 = g[2 * j + 1];
                g[2 * j] = g1 * c[j] + g2 * sn[j];
                g[2 * j + 1] = g2 * c[j] - g1 * sn[j];
            }
            for (int f = 0; f < s; f++) dzr[f] += g[f] * gamma[k * s + f];
        }
    }
    int nblk = (s + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int k = 0; k < heads; k++)
        for (int blk = 0; blk < nblk; blk++) {
            int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < s ? j0 + COL_BLOCK : s;
            real ag[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            const real *g = d_qk4 + (size_t)k * N * s;
            for (size_t n = 0; n < N; n++)
                for (int j = j0; j < j1; j++) {
                    ag[j - j0] += g[n * s + j] * z[n * z_stride + j];
                    ab[j - j0] += g[n * s + j];
                }
            for (int j = j0; j < j1; j++) { dgamma[k * s + j] += ag[j - j0]; dbeta[k * s + j] += ab[j - j0]; }
        }
}

void offset_scale_rotary_backward(real *dz, real *dgamma, real *dbeta, real *d_qk4,
                                  const real *z, int z_stride, const real *gamma,
                                  const real *rot_cos, const real *rot_sin, int B, int T, int s, int r) {
    osr_backward(dz, dgamma, dbeta, d_qk4, 4, z, z_stride, gamma, rot_cos, rot_sin, B, T, s, r);
}

void offset_scale_heads_backward(real *dz, real *dgamma, real *dbeta, real *d_qk, int heads,
                                 const real *z, int z_stride, const real *gamma,
                                 const real *rot_cos, const real *rot_sin, int B, int T, int s, int r) {
    if (heads == 4) osr_backward(dz, dgamma, dbeta, d_qk, 4, z, z_stride, gamma, rot_cos, rot_sin, B, T, s, r);
    else osr_backward(dz, dgamma, dbeta, d_qk, heads, z, z_stride, gamma, rot_cos, rot_sin, B, T, s, r);
}
