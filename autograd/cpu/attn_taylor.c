/* autograd/cpu/attn_taylor.c: the Taylor linear part of the attention (--linear-attn taylor),
 * across groups, causal, in place of attn_linear.c's plain one: forward, backward and the
 * decoder's query, fold and hand-over from the parallel forward (attn.h). docs/model.md,
 * "The Taylor linear attention", gives the computation:
 *
 *   phi(x) = [1, x, x_i x_j for i <= j, / sqrt 2 where i = j]   (F = 1 + s + s(s+1)/2)
 *   fq = phi(lin_q / sqrt s), fk = phi(lin_k)
 *   St_g = sum_{g' < g} fk_g'^T [v_g' | 1]          (F x (e+1): [KV | Z], exclusive prefix)
 *   [num | den]_i = fq_i St_g                       (one product gives both)
 *   lin_out_i = num_i / max(den_i, 1e-5)            (no 1/C: the plain part's is not there)
 *
 * phi is the reference's [1, x, vec(x x^T) / sqrt 2] with each unordered pair of x x^T kept
 * once: the reference's pair (i, j) and (j, i) give (1/2) q_i q_j k_i k_j each, here one
 * feature x_i x_j gives the sum, and the diagonal x_i^2 / sqrt 2 is unchanged; phi(q) . phi(k)
 * is the same 1 + q.k + (q.k)^2 / 2 with 153 features at s = 16 for 273. Pair (i, j), i <= j,
 * is feature 1 + s + i (2s - i + 1) / 2 + (j - i), row by row.
 *
 * The [KV | Z] block keeps the value and normaliser sums in one matrix so that the read-out
 * is one GEMM per group, and so is its backward. A short last group's padding rows would be
 * phi(0) = [1, 0, ...] keys with zero values; they only enter that group's own sum, which no
 * group reads (the prefix is exclusive), so they are never formed. */
#include "attn.h"
#include "decode_gemm.h"
#include "gemm.h"
#include <math.h>
#include <omp.h>
#include <string.h>

#define TAYLOR_EPS ((real)1e-5)   /* taylor-series-linear-attention's clamp of den */

/* the index of pair (i, j), i <= j, among the quadratic features */
static inline int pair_at(int i, int j, int s) { return i * (2 * s - i + 1) / 2 + (j - i); }

/* out (F) = phi(alpha x), x of width s */
static void taylor_phi(real *out, const real *x, real alpha, int s) {
    const real r2 = (real)sqrt(0.5);
    real y[TAYLOR_MAX_QK_DIM];
    out[0] = 1;
    for (int i = 0; i < s; i++) out[1 + i] = y[i] = x[i] * alpha;
    real *o2 = out + 1 + s;
    for (int i = 0; i < s; i++) {
        *o2++ = y[i] * y[i] * r2;
        for (int j = i + 1; j < s; j++) *o2++ = y[i] * y[j];
    }
}

/* phi's backward at y = alpha x: dy_m = d1_m + sum_j c_mj y_j d2_pair(m, j), c = sqrt 2 on
   the diagonal (d (y_m^2 / sqrt 2) / d y_m = sqrt 2 y_m) and 1 off it (d (y_m y_j) / d y_m =
   y_j); dx = alpha dy. WRITES dx. */
static void taylor_phi_backward(real *dx, const real *dphi, const real *x, real alpha, int s) {
    const real sq2 = (real)sqrt(2.0);
    const real *d1 = dphi + 1, *d2 = dphi + 1 + s;
    for (int m = 0; m < s; m++) {
        real acc = 0;
        for (int j = 0; j < s; j++) {
            const real d = d2[m <= j ? pair_at(m, j, s) : pair_at(j, m, s)];
            acc += (j == m ? sq2 * d : d) * (x[j] * alpha);
        }
        dx[m] = (d1[m] + acc) * alpha;
    }
}

/* St (F x (e+1)) = beta St + fk^T [v | 1] over Cg rows (fk row stride F, v row stride vs) */
static void taylor_sum(real *St, real beta, const real *fk, const real *v, int vs, int Cg, int F, int e) {
    const int E1 = e + 1;
    gemm(1, 0, F, e, Cg, 1, fk, F, v, vs, beta, St, E1);
    for (int f = 0; f < F; f++) {   /* Z: the column sums of fk, rows in order */
        real z = beta == 0 ? 0 : St[(size_t)f * E1 + e];
        for (int r = 0; r < Cg; r++) z += fk[(size_t)r * F + f];
        St[(size_t)f * E1 + e] = z;
    }
}

void attn_taylor_forward(real *out, const TaylorBufs *t, const real *qk4, const real *v, int v_stride,
                         const AttnShape *a) {
    const int s = a->s, e = a->e, E1 = e + 1, F = taylor_feature_count(s), ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, SE = (size_t)F * E1;
    const real *Ql = qk4 + N * s, *Kl = qk4 + 3 * N * s;
    const real qscale = (real)(1.0 / sqrt((double)s));
    const int blas_saved = blas_serial_begin();
    /* the feature maps of every row */
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        taylor_phi(t->fq + n * F, Ql + n * s, qscale, s);
        taylor_phi(t->fk + n * F, Kl + n * s, 1, s);
    }
    /* each group's own fk^T [v | 1]; the last group's is read by no one */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        if (g_ == a->G - 1) continue;
        taylor_sum(t->st + (size_t)task * SE, 0, t->fk + n0 * F, v + n0 * v_stride, v_stride, Cg, F, e);
    }
    /* exclusive prefix sum over groups: St_0 = 0, St_g = sum of the groups before g */
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * SE; idx++) {
        size_t b = idx / SE, k = idx % SE;
        real run = 0;
        for (int g = 0; g < a->G; g++) {
            real *p = t->st + ((size_t)b * a->G + g) * SE + k;
            real here = g < a->G - 1 ? *p : 0;
            *p = run;
            run += here;
        }
    }
    /* [num | den] = fq St_g, then lin_out = num / max(den, eps) added to out */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        real *nd = t->nd + n0 * E1;
        gemm(0, 0, Cg, E1, F, 1, t->fq + n0 * F, F, t->st + (size_t)task * SE, E1, 0, nd, E1);
        for (int r = 0; r < Cg; r++) {
            const real *row = nd + (size_t)r * E1;
            const real den = row[e] > TAYLOR_EPS ? row[e] : TAYLOR_EPS;
            real *o = out + (n0 + r) * e;
            for (int c = 0; c < e; c++) o[c] += row[c] / den;
        }
    }
    blas_serial_end(blas_saved);
}

void attn_taylor_backward(real *dv, int v_stride, real *d_qk4, const real *d_out, const TaylorBufs *t,
                          const real *qk4, const real *v, const TaylorBufs *dt, const AttnShape *a) {
    const int s = a->s, e = a->e, E1 = e + 1, F = taylor_feature_count(s), ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, SE = (size_t)F * E1;
    const real *Ql = qk4 + N * s, *Kl = qk4 + 3 * N * s;
    real *dQl = d_qk4 + N * s, *dKl = d_qk4 + 3 * N * s;
    const real qscale = (real)(1.0 / sqrt((double)s));
    const int blas_saved = blas_serial_begin();

    /* y = num / den', den' = max(den, eps):  d num = dy / den';
       d den = -sum_c dy_c y_c / den' where den > eps, else 0 (the clamp is flat there) */
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const real *row = t->nd + n * E1, *dy = d_out + n * e;
        real *drow = dt->nd + n * E1;
        const real den = row[e] > TAYLOR_EPS ? row[e] : TAYLOR_EPS;
        real acc = 0;
        for (int c = 0; c < e; c++) {
            drow[c] = dy[c] / den;
            acc += dy[c] * (row[c] / den);
        }
        drow[e] = row[e] > TAYLOR_EPS ? -acc / den : 0;
    }
    /* [num | den] = fq St_g:  d fq = d[num | den] St_g^T;  dSt_g = fq^T d[num | den] */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        const real *dnd = dt->nd + n0 * E1, *Sg = t->st + (size_t)task * SE;
        gemm(0, 1, Cg, F, E1, 1, dnd, E1, Sg, E1, 0, dt->fq + n0 * F, F);
        gemm(1, 0, F, E1, Cg, 1, t->fq + n0 * F, F, dnd, E1, 0, dt->st + (size_t)task * SE, E1);
    }
    /* St_g = sum_{g' < g} S_g'  =>  dS_g = sum_{g' > g} dSt_g' (exclusive suffix sum) */
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * SE; idx++) {
        size_t b = idx / SE, k = idx % SE;
        real run = 0;
        for (int g = a->G - 1; g >= 0; g--) {
            real *p = dt->st + ((size_t)b * a->G + g) * SE + k;
            real here = *p;
            *p = run;
            run += here;
        }
    }
    /* S_g = fk^T [v | 1]:  d fk = [v | 1] dS_g^T = v dKV^T + dZ^T (on every row);
       dv = fk dKV (written: the quadratic part adds its own) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        ATTN_GROUP_ROWS(a, task, n0, Cg);
        const real *dS = dt->st + (size_t)task * SE;
        real *dfk = dt->fk + n0 * F;
        gemm(0, 1, Cg, F, e, 1, v + n0 * v_stride, v_stride, dS, E1, 0, dfk, F);
        for (int r = 0; r < Cg; r++)
            for (int f = 0; f < F; f++) dfk[(size_t)r * F + f] += dS[(size_t)f * E1 + e];
        gemm(0, 0, Cg, e, F, 1, t->fk + n0 * F, F, dS, E1, 0, dv + n0 * v_stride, v_stride);
    }
    /* fq = phi(lin_q / sqrt s), fk = phi(lin_k): through phi's backward */
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        taylor_phi_backward(dQl + n * s, dt->fq + n * F, Ql + n * s, qscale, s);
        taylor_phi_backward(dKl + n * s, dt->fk + n * F, Kl + n * s, 1, s);
    }
    blas_serial_end(blas_saved);
}

/* lin_out = num / max(den, eps), [num | den] = phi(lin_q / sqrt s) St */
void attn_taylor_query(real *out, const real *St, const real *lin_q, real *scratch, const AttnShape *a,
                       int blocks) {
    const int s = a->s, e = a->e, F = taylor_feature_count(s);
    real *fq = scratch, *nd = scratch + F;
    taylor_phi(fq, lin_q, (real)(1.0 / sqrt((double)s)), s);
    gemv_split(blocks, 1, F, e + 1, 1, St, e + 1, fq, 0, nd);
    const real den = nd[e] > TAYLOR_EPS ? nd[e] : TAYLOR_EPS;
    for (int c = 0; c < e; c++) out[c] += nd[c] / den;
}

/* the group's phi(lin_k)^T [v | 1] joins St */
void attn_taylor_fold(real *St, const real *Gk, const real *Gv, real *scratch, const AttnShape *a,
                      int blocks) {
    const int s = a->s, e = a->e, C = a->C, F = taylor_feature_count(s);
    real *fk = scratch;
    for (int r = 0; r < C; r++) taylor_phi(fk + (size_t)r * F, Gk + (size_t)r * s, 1, s);
    gemm_tn_split(blocks, F, e, C, 1, fk, F, Gv, e, St, e + 1);
    for (int f = 0; f < F; f++) {
        real z = St[(size_t)f * (e + 1) + e];
        for (int r = 0; r < C; r++) z += fk[(size_t)r * F + f];
        St[(size_t)f * (e + 1) + e] = z;
    }
}

/* St after all G groups = St_{G-1} (stored, exclusive) + the last group's fk^T [v | 1] */
void attn_taylor_state_after(real *St, const real *st_last, const real *fk_last, const real *v,
                             int v_stride, const AttnShape *a) {
    const int s = a->s, e = a->e, F = taylor_feature_count(s);
    memcpy(St, st_last, sizeof(real) * F * (e + 1));
    taylor_sum(St, 1, fk_last, v, v_stride, a->C, F, e);
}
