/* autograd/cpu/attn_quad.c: the quadratic part of the attention, inside each group of C rows
 * (causal, with the relative position bias): forward, backward and the decoder's step
 * (attn.h). */
#include "attn.h"
#include "decode_gemm.h"
#include "gemm.h"
#include "relpos.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Laplace attention function: mu = sqrt(1/2), sigma = sqrt(1/(4 pi)). */
#define LAPLACE_MU 0.70710678118654752440
#define LAPLACE_SIGMA 0.28209479177387814347
static inline real phi(real x, int laplace) {
    if (laplace) return (real)0.5 * (1 + VERF((x - (real)LAPLACE_MU) / (real)(LAPLACE_SIGMA * 1.41421356237309504880)));
    return x > 0 ? x * x : 0;
}
/* laplace: phi' = exp(-(x-mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi));  relu^2: phi' = 2 relu(x) */
static inline real phi_grad(real x, int laplace) {
    if (laplace) {
        real u = x - (real)LAPLACE_MU;
        return VEXP(-u * u / (real)(2 * LAPLACE_SIGMA * LAPLACE_SIGMA)) /
               (real)(LAPLACE_SIGMA * 2.50662827463100050242);
    }
    return x > 0 ? 2 * x : 0;
}

real attn_phi(real x, AttnFn fn) { return phi(x, fn == ATTN_LAPLACE); }

int attn_block_rows = 64;
#define ATT_BLOCK attn_block_rows
/* rows in the block that starts at row i0 of a group of Cg rows (the last one is short) */
static inline int block_len(int Cg, int i0) { return Cg - i0 < ATT_BLOCK ? Cg - i0 : ATT_BLOCK; }

void attn_quad_forward(real *out, real *sim, real *attn, const real *qk4, const real *v,
                       int v_stride, const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T;
    const real inv_C = a->qk_scale, bias_scale = a->bias_scale;   /* FLASH: 1/C, sqrt(s) */
    const real *Qq = qk4, *Kq = qk4 + a->k_block * N * s;
    const int laplace = a->fn == ATTN_LAPLACE;
    const int blas_saved = blas_serial_begin();
    /* the bias depends on the distance i - j only: one table, not a log per pair */
    real *bias_dist = a->bias_dist;
    for (int k = 0; k < C; k++) bias_dist[k] = bias_scale * a->rel_bias[rel_pos_bucket(k)];

    /* Work items: each causal row block of each group, the largest first, handed out
       dynamically: with 16 threads and 16 groups, one item per group left every thread
       waiting for the slowest core. The row block [i0, i0+ib) needs keys [0, i0+ib) only,
       so its products stop at the diagonal block (with 64-row blocks and C = 256, 10/16 of
       the full square). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * nblk; item++) {
        const int rank = item / ntask + 1, task = item % ntask;
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        const real *V = v + n0 * v_stride;
        const int i0 = (nblk - rank) * ATT_BLOCK;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        real *S = sim + (size_t)task * C * C, *A = attn + (size_t)task * C * C;
        /* sim = quad_q quad_k^T / C + sqrt(s) bias[bucket(i-j)] (the scales: attn.h) */
        gemm(0, 1, ib, nk, s, inv_C, Qq + (n0 + i0) * s, s, Kq + n0 * s, s, 0, S + (size_t)i0 * C, C);
        for (int i = i0; i < i0 + ib; i++) {
            real *Si = S + (size_t)i * C, *Ai = A + (size_t)i * C;
            if (laplace) {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 1); }
            } else {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 0); }
            }
            for (int j = i + 1; j < nk; j++) Si[j] = Ai[j] = 0;   /* causal mask */
        }
        /* quad_out = A V */
        gemm(0, 0, ib, e, nk, 1, A + (size_t)i0 * C, C, V, v_stride, 0, out + (n0 + i0) * e, e);
    }
    blas_serial_end(blas_saved);
}

void attn_quad_backward(real *dv, int v_stride, real dv_beta, real *d_qk4, real *d_rel_bias,
                        const real *d_out, const real *sim, const real *attn, const real *qk4,
                        const real *v, real *d_rel_partial, real *dsim, const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T;
    const real inv_C = a->qk_scale, bias_scale = a->bias_scale;   /* FLASH: 1/C, sqrt(s) */
    const real *Qq = qk4, *Kq = qk4 + a->k_block * N * s;
    real *dQq = d_qk4, *dKq = d_qk4 + a->k_block * N * s;
    const int laplace = a->fn == ATTN_LAPLACE;
    const int blas_saved = blas_serial_begin();

    /* Two passes of work items, handed out dynamically, largest first, so that no thread
       waits long for a slow one (with one item per group, every thread waits for the
       slowest core). Pass 1: each query row block i (its dsim rows, kept per group, and
       dQ). Pass 2: each key block j (dV, dK: sums over the query rows i >= j). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * nblk; item++) {
        const int rank = item / ntask + 1, task = item % ntask;
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        const real *dO = d_out + n0 * e;
        const int i0 = (nblk - rank) * ATT_BLOCK;
        real *dist = d_rel_partial + ((size_t)task * nblk + i0 / ATT_BLOCK) * C;  /* d sim per distance i - j */
        for (int k = 0; k < C; k++) dist[k] = 0;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        const real *S = sim + (size_t)task * C * C;
        real *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dA = dO V^T */
        gemm(0, 1, ib, nk, e, 1, dO + (size_t)i0 * e, e, v + n0 * v_stride, v_stride, 0, dS + (size_t)i0 * C, C);
        /* A = phi(sim) on j <= i:  dsim = dA phi'(sim);  d bias[bucket] += bias_scale dsim */
        for (int i = i0; i < i0 + ib; i++) {
            real *dSi = dS + (size_t)i * C;
            const real *Si = S + (size_t)i * C;
            if (laplace) {
#pragma omp simd
                for (int j = 0; j <= i; j++) { dSi[j] *= phi_grad(Si[j], 1); dist[i - j] += dSi[j]; }
            } else {
#pragma omp simd
                for (int j = 0; j <= i; j++) { dSi[j] *= phi_grad(Si[j], 0); dist[i - j] += dSi[j]; }
            }
            for (int j = i + 1; j < nk; j++) dSi[j] = 0;
        }
        /* sim = Q K^T / C:  dQ = dsim K / C */
        gemm(0, 0, ib, s, nk, inv_C, dS + (size_t)i0 * C, C, Kq + n0 * s, s, 0, dQq + (n0 + i0) * s, s);
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * nblk; item++) {
        const int rank = item / ntask, task = item % ntask, j0 = rank * ATT_BLOCK;
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        if (j0 >= Cg) continue;
        const int jb = block_len(Cg, j0), below = Cg - j0;
        const real *A = attn + (size_t)task * C * C, *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dV_j (+)= sum_{i >= j} A_ij^T dO_i (A is 0 above the diagonal) */
        gemm(1, 0, jb, e, below, 1, A + (size_t)j0 * C + j0, C, d_out + (n0 + j0) * e, e, dv_beta,
             dv + (n0 + j0) * v_stride, v_stride);
        /* sim = Q K^T / C:  dK_j = sum_{i >= j} dsim_ij^T Q_i / C */
        gemm(1, 0, jb, s, below, inv_C, dS + (size_t)j0 * C + j0, C, Qq + (n0 + j0) * s, s, 0,
             dKq + (n0 + j0) * s, s);
    }
    blas_serial_end(blas_saved);
    for (int k = 0; k < C; k++) {
        real sum = 0;
        for (int part = 0; part < ntask * nblk; part++) sum += d_rel_partial[(size_t)part * C + k];
        d_rel_bias[rel_pos_bucket(k)] += bias_scale * sum;
    }
}

/* quadratic: a_k = phi(q . k_k / C + sqrt(s) bias[bucket(j - k)]) for k <= j (the scales:
   attn.h); quad_out = sum_k a_k v_k */
void attn_quad_step(real *out, real *sim, const real *q, const real *Gk, const real *Gv, int j,
                    const AttnShape *a, int blocks) {
    const int s = a->s, e = a->e;
    const real inv_C = a->qk_scale, bias_scale = a->bias_scale;
    gemv_split(blocks, 0, j + 1, s, inv_C, Gk, s, q, 0, sim);
    for (int k = 0; k <= j; k++)
        sim[k] = attn_phi(sim[k] + bias_scale * a->rel_bias[rel_pos_bucket(j - k)], a->fn);
    gemv_split(blocks, 1, j + 1, e, 1, Gv, e, sim, 0, out);
}
