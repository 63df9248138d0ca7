/* autograd/cpu/attention.c: the mixed-chunk attention (quadratic inside a group, linear across groups)
 * and the output gate: forward and backward. */
#include "ops.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ================================ attention ======================================== */

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

real attn_phi(real x, int laplace) { return phi(x, laplace); }

int attn_block_rows = 64;
#define ATT_BLOCK attn_block_rows
/* rows in the block that starts at row i0 of a group of Cg rows (the last one is short) */
static inline int block_len(int Cg, int i0) { return Cg - i0 < ATT_BLOCK ? Cg - i0 : ATT_BLOCK; }

/* Rows of group g of sequence b: n0 = b*T + g*C, Cg of them (the last group is short;
   its padding rows would be zero queries/keys/values, masked, so they are never formed). */
#define GROUP_ROWS(a, task, n0, Cg)                                         \
    const int b_ = (task) / (a)->G, g_ = (task) % (a)->G;                   \
    const size_t n0 = (size_t)b_ * (a)->T + (size_t)g_ * (a)->C;            \
    const int Cg = (a)->T - g_ * (a)->C < (a)->C ? (a)->T - g_ * (a)->C : (a)->C

void attention_forward(real *att, real *sim, real *attn, real *kv, const real *qk4,
                       const real *v, int v_stride, const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T;
    const real inv_C = (real)1 / C, bias_scale = R_SQRT((real)s);
    const real *Qq = qk4, *Ql = qk4 + N * s, *Kq = qk4 + 2 * N * s, *Kl = qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();
    /* the bias depends on the distance i - j only: one table, not a log per pair */
    real *bias_dist = a->bias_dist;
    for (int k = 0; k < C; k++) bias_dist[k] = bias_scale * a->rel_bias[rel_pos_bucket(k)];

    /* quadratic part and each group's KV = lin_k^T v / C. Work items: per group, its KV
       product and each causal row block, the largest first, handed out dynamically: with 16
       threads and 16 groups, one item per group left every thread waiting for the slowest
       core. The row block [i0, i0+ib) needs keys [0, i0+ib) only, so its products stop at
       the diagonal block (with 64-row blocks and C = 256, 10/16 of the full square). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * (nblk + 1); item++) {
        const int rank = item / ntask, task = item % ntask;
        GROUP_ROWS(a, task, n0, Cg);
        const real *V = v + n0 * v_stride;
        if (rank == 0) {
            gemm(1, 0, s, e, Cg, inv_C, Kl + n0 * s, s, V, v_stride, 0, kv + (size_t)task * s * e, e);
            continue;
        }
        const int i0 = (nblk - rank) * ATT_BLOCK;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        real *S = sim + (size_t)task * C * C, *A = attn + (size_t)task * C * C;
        /* sim = quad_q quad_k^T / C + sqrt(s) bias[bucket(i-j)] */
        gemm(0, 1, ib, nk, s, inv_C, Qq + (n0 + i0) * s, s, Kq + n0 * s, s, 0, S + (size_t)i0 * C, C);
        for (int i = i0; i < i0 + ib; i++) {
            real *Si = S + (size_t)i * C, *Ai = A + (size_t)i * C;
            if (a->laplace) {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 1); }
            } else {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 0); }
            }
            for (int j = i + 1; j < nk; j++) Si[j] = Ai[j] = 0;   /* causal mask */
        }
        gemm(0, 0, ib, e, nk, 1, A + (size_t)i0 * C, C, V, v_stride, 0, att + (n0 + i0) * e, e);
    }
    /* exclusive prefix sum over groups: S_0 = 0, S_g = KV_0 + ... + KV_{g-1} */
    const size_t se = (size_t)s * e;
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * se; idx++) {
        size_t b = idx / se, k = idx % se;
        real run = 0;
        for (int g = 0; g < a->G; g++) {
            real *p = kv + ((size_t)b * a->G + g) * se + k;
            real here = *p;
            *p = run;
            run += here;
        }
    }
    /* lin_out = lin_q S_g, added to quad_out (per group: row blocks would pack S_g again
       for each block) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        GROUP_ROWS(a, task, n0, Cg);
        gemm(0, 0, Cg, e, s, 1, Ql + n0 * s, s, kv + (size_t)task * se, e, 1, att + n0 * e, e);
    }
    blas_serial_end(blas_saved);
}

void attention_backward(real *dv, int v_stride, real *d_qk4, real *d_rel_bias, const real *d_att,
                        const real *sim, const real *attn, const real *kv, const real *qk4,
                        const real *v, real *d_kv, real *d_rel_partial, real *dsim,
                        const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, se = (size_t)s * e;
    const real inv_C = (real)1 / C, bias_scale = R_SQRT((real)s);
    const real *Qq = qk4, *Ql = qk4 + N * s, *Kq = qk4 + 2 * N * s, *Kl = qk4 + 3 * N * s;
    real *dQq = d_qk4, *dQl = d_qk4 + N * s, *dKq = d_qk4 + 2 * N * s, *dKl = d_qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();

    /* lin_out_g = lin_q_g S_g:  dS_g = lin_q_g^T d_att_g */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        GROUP_ROWS(a, task, n0, Cg);
        gemm(1, 0, s, e, Cg, 1, Ql + n0 * s, s, d_att + n0 * e, e, 0, d_kv + (size_t)task * se, e);
    }
    /* S_g = sum_{g' < g} KV_g'  =>  dKV_g = sum_{g' > g} dS_g' (exclusive suffix sum) */
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * se; idx++) {
        size_t b = idx / se, k = idx % se;
        real run = 0;
        for (int g = a->G - 1; g >= 0; g--) {
            real *p = d_kv + ((size_t)b * a->G + g) * se + k;
            real here = *p;
            *p = run;
            run += here;
        }
    }
    /* Two passes of work items, handed out dynamically, largest first, so that no thread
       waits long for a slow one (with one item per group, every thread waits for the
       slowest core). Pass 1: each group's linear part (it writes dV first), and each query row block
       i of the quadratic part (its dsim rows, kept per group, and dQ). Pass 2: each key block
       j (dV, dK: sums over the query rows i >= j). The linear part stays per group: cut into
       row blocks, each would pack S_g and dKV again (slower: docs/performance-notes.md). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * (nblk + 1); item++) {
        const int rank = item / ntask, task = item % ntask;
        GROUP_ROWS(a, task, n0, Cg);
        const real *dO = d_att + n0 * e;
        if (rank == 0) {
            const real *Sg = kv + (size_t)task * se, *dKV = d_kv + (size_t)task * se;
            /* lin_out = lin_q S_g:  d lin_q = dO S_g^T */
            gemm(0, 1, Cg, s, e, 1, dO, e, Sg, e, 0, dQl + n0 * s, s);
            /* KV_g = lin_k^T V / C:  d lin_k = V dKV^T / C;  dV = lin_k dKV / C (+ pass 2) */
            gemm(0, 1, Cg, s, e, inv_C, v + n0 * v_stride, v_stride, dKV, e, 0, dKl + n0 * s, s);
            gemm(0, 0, Cg, e, s, inv_C, Kl + n0 * s, s, dKV, e, 0, dv + n0 * v_stride, v_stride);
            continue;
        }
        const int i0 = (nblk - rank) * ATT_BLOCK;
        real *dist = d_rel_partial + ((size_t)task * nblk + i0 / ATT_BLOCK) * C;  /* d sim per distance i - j */
        for (int k = 0; k < C; k++) dist[k] = 0;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        const real *S = sim + (size_t)task * C * C;
        real *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dA = dO V^T */
        gemm(0, 1, ib, nk, e, 1, dO + (size_t)i0 * e, e, v + n0 * v_stride, v_stride, 0, dS + (size_t)i0 * C, C);
        /* A = phi(sim) on j <= i:  dsim = dA phi'(sim);  d bias[bucket] += sqrt(s) dsim */
        for (int i = i0; i < i0 + ib; i++) {
            real *dSi = dS + (size_t)i * C;
            const real *Si = S + (size_t)i * C;
            if (a->laplace) {
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
        GROUP_ROWS(a, task, n0, Cg);
        if (j0 >= Cg) continue;
        const int jb = block_len(Cg, j0), below = Cg - j0;
        const real *A = attn + (size_t)task * C * C, *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dV_j += sum_{i >= j} A_ij^T dO_i (A is 0 above the diagonal) */
        gemm(1, 0, jb, e, below, 1, A + (size_t)j0 * C + j0, C, d_att + (n0 + j0) * e, e, 1,
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

/* ================================== gating ========================================= */

void gate_forward(real *out, const real *gate, int gate_stride, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++)
            out[(size_t)n * e + i] = gate[(size_t)n * gate_stride + i] * att[(size_t)n * e + i];
}

/* out = gate * att:  d gate = d_out att;  d att = d_out gate */
void gate_backward(real *d_gate, int gate_stride, real *d_att, const real *d_out,
                   const real *gate, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) {
            size_t k = (size_t)n * e + i, kg = (size_t)n * gate_stride + i;
            real g = gate[kg];
            d_gate[kg] = d_out[k] * att[k];
            d_att[k] = d_out[k] * g;
        }
}
