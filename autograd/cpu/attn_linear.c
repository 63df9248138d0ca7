/* autograd/cpu/attn_linear.c: the linear part of the attention, across groups (causal: a group
 * reads the sum of the earlier groups' lin_k^T v / C): forward, backward and the decoder's
 * state query, fold and hand-over from the parallel forward (attn.h). */
#include "attn.h"
#include "decode_gemm.h"
#include "gemm.h"
#include <omp.h>
#include <string.h>

void attn_linear_forward(real *out, real *kv, const real *qk4, const real *v, int v_stride,
                         const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, se = (size_t)s * e;
    const real inv_C = (real)1 / C;
    const real *Ql = qk4 + N * s, *Kl = qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();
    /* each group's KV = lin_k^T v / C */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        gemm(1, 0, s, e, Cg, inv_C, Kl + n0 * s, s, v + n0 * v_stride, v_stride, 0, kv + (size_t)task * se, e);
    }
    /* exclusive prefix sum over groups: S_0 = 0, S_g = KV_0 + ... + KV_{g-1} */
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
    /* lin_out = lin_q S_g, added to out (per group: row blocks would pack S_g again for
       each block) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        gemm(0, 0, Cg, e, s, 1, Ql + n0 * s, s, kv + (size_t)task * se, e, 1, out + n0 * e, e);
    }
    blas_serial_end(blas_saved);
}

void attn_linear_backward(real *dv, int v_stride, real *d_qk4, const real *d_out, const real *kv,
                          const real *qk4, const real *v, real *d_kv, const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, se = (size_t)s * e;
    const real inv_C = (real)1 / C;
    const real *Ql = qk4 + N * s, *Kl = qk4 + 3 * N * s;
    real *dQl = d_qk4 + N * s, *dKl = d_qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();

    /* lin_out_g = lin_q_g S_g:  dS_g = lin_q_g^T d_out_g */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        gemm(1, 0, s, e, Cg, 1, Ql + n0 * s, s, d_out + n0 * e, e, 0, d_kv + (size_t)task * se, e);
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
    /* per group: cut into row blocks, each would pack S_g and dKV again (slower:
       docs/performance-notes.md) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        const real *dO = d_out + n0 * e;
        const real *Sg = kv + (size_t)task * se, *dKV = d_kv + (size_t)task * se;
        /* lin_out = lin_q S_g:  d lin_q = dO S_g^T */
        gemm(0, 1, Cg, s, e, 1, dO, e, Sg, e, 0, dQl + n0 * s, s);
        /* KV_g = lin_k^T V / C:  d lin_k = V dKV^T / C;  dV = lin_k dKV / C */
        gemm(0, 1, Cg, s, e, inv_C, v + n0 * v_stride, v_stride, dKV, e, 0, dKl + n0 * s, s);
        gemm(0, 0, Cg, e, s, inv_C, Kl + n0 * s, s, dKV, e, 0, dv + n0 * v_stride, v_stride);
    }
    blas_serial_end(blas_saved);
}

/* lin_out = lin_q S */
void attn_linear_query(real *out, const real *S, const real *lin_q, const AttnShape *a, int blocks) {
    gemv_split(blocks, 1, a->s, a->e, 1, S, a->e, lin_q, 1, out);
}

/* the group's KV = lin_k^T v / C joins S */
void attn_linear_fold(real *S, const real *Gk, const real *Gv, const AttnShape *a, int blocks) {
    gemm_tn_split(blocks, a->s, a->e, a->C, (real)1 / a->C, Gk, a->s, Gv, a->e, S, a->e);
}

/* S after all G groups = S_{G-1} (stored, exclusive) + KV_{G-1} */
void attn_linear_state_after(real *S, const real *kv_last, const real *lin_k, const real *v,
                             int v_stride, const AttnShape *a) {
    const int s = a->s, e = a->e, C = a->C;
    memcpy(S, kv_last, sizeof(real) * s * e);
    gemm(1, 0, s, e, C, (real)1 / C, lin_k, s, v, v_stride, 1, S, e);
}
