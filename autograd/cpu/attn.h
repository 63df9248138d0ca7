/* autograd/cpu/attn.h: the causal attention's parts behind one interface, one room (file) per
 * part: attn_quad.c, the quadratic attention inside a group of C rows, and attn_linear.c, the
 * linear attention across groups. Each room holds its forward, its backward and its decoder
 * step, so another form of a part (a different linear attention, say) is one new room with
 * the same three pieces: attn_taylor.c is --linear-attn taylor's linear part, picked in place
 * of attn_linear.c by the caller from cfg.linear_attn. The parts are combined by their caller: FLASH's layer
 * (flash_layer.c) and decoder (cpu_decode.c) take att = quad_out + lin_out; a layer of
 * quadratic attention only (one group over the whole sequence) would call attn_quad alone.
 * docs/model.md, "Forward" 2.6, gives the computation.
 *
 * Inputs per row (N = B*T rows): qk4 (ops.h: quad_q, lin_q, quad_k, lin_k, N x s each) and
 * v, e wide at row stride v_stride (a column block of the projections' rows). */
#ifndef FLASH_ATTN_H
#define FLASH_ATTN_H
#include <stddef.h>
#include "config.h"
#include "real.h"

/* The batch as the attention sees it: B sequences of T rows, cut into G = ceil(T/C) groups
   of C (the last one may be short); s query/key width, e value width. The quadratic part
   also reads fn, rel_bias (the layer's 32 relative position biases) and bias_dist (scratch,
   C reals). */
typedef struct {
    int B, T, C, G, s, e;
    AttnFn fn;         /* phi: laplace function or relu^2 */
    const real *rel_bias;
    real *bias_dist;   /* scratch, C: bias_scale bias[bucket(k)] for each distance k */
    /* The scores' scales, set by the layer: FLASH's (real)1/C and R_SQRT((real)s) (computed
       so, FLASH's numerics are those of before); GAU's 1/T and sqrt(d)/T (one group of the
       whole sequence; GAU divides q.k + sqrt(d) bias by T before phi). */
    real qk_scale, bias_scale;
    int k_block;       /* the block of qk4 holding the keys: 2 (FLASH's quad_k), 1 (GAU's k) */
} AttnShape;

/* For the rooms: the rows of group g of sequence b, for a work item task = b*G + g:
   n0 = b*T + g*C, Cg of them (the last group is short; its padding rows would be zero
   queries/keys/values, masked, so they are never formed). */
#define ATTN_GROUP_ROWS(a, task, n0, Cg)                                    \
    const int b_ = (task) / (a)->G, g_ = (task) % (a)->G;                   \
    const size_t n0 = (size_t)b_ * (a)->T + (size_t)g_ * (a)->C;            \
    const int Cg = (a)->T - g_ * (a)->C < (a)->C ? (a)->T - g_ * (a)->C : (a)->C

/* ---- the quadratic part (attn_quad.c): inside each group, causal ------------------------
   quad_out_i = sum_{j <= i} phi(qk_scale quad_q_i . quad_k_j + bias_scale bias[bucket(i - j)]) v_j
   (FLASH: qk_scale 1/C, bias_scale sqrt(s); GAU over one group C = T: 1/T, sqrt(d)/T) */
/* Rows per block of the causal quadratic attention: the products of a block of query rows
   stop at its diagonal block. 64 by default; tests set small values so that the blocked
   path (several blocks, a short last one) runs on small groups. */
extern int attn_block_rows;
real attn_phi(real x, AttnFn fn);   /* the attention function: laplace or relu^2 */
/* WRITES out (N x e) = quad_out; saves sim and attn = phi(sim) (B*G x C x C, causal-masked)
   for the backward. */
void attn_quad_forward(real *out, real *sim, real *attn, const real *qk4, const real *v,
                       int v_stride, const AttnShape *a);
/* Writes d quad_q and d quad_k (their blocks of d_qk4), dv = beta * dv + the quadratic
   part's (beta 0 writes, 1 adds: FLASH's linear part writes dv first), d_rel_bias += .
   d_rel_partial (one C-vector per row block) and dsim are B*G x C x C scratch. */
void attn_quad_backward(real *dv, int v_stride, real dv_beta, real *d_qk4, real *d_rel_bias,
                        const real *d_out, const real *sim, const real *attn, const real *qk4,
                        const real *v, real *d_rel_partial, real *dsim, const AttnShape *a);
/* The decoder's step for one sequence at index j of its current group, whose quad_k and v
   rows 0..j are Gk (j+1 x s) and Gv (j+1 x e): WRITES out (e) = quad_out for the query q.
   sim: scratch, C. Products split into `blocks` (decode_gemm.h). */
void attn_quad_step(real *out, real *sim, const real *q, const real *Gk, const real *Gv, int j,
                    const AttnShape *a, int blocks);

/* ---- the linear part (attn_linear.c): across groups, causal ----------------------------
   KV_g = lin_k_g^T v_g / C; S_g = KV_0 + ... + KV_{g-1} (S_0 = 0); lin_out_i = lin_q_i S_g */
/* ADDS lin_out into out (N x e: the caller's quad_out, so that att = quad_out + lin_out is
   one product's accumulation); saves kv (B*G x s x e: the exclusive prefix sums S_g). */
void attn_linear_forward(real *out, real *kv, const real *qk4, const real *v, int v_stride,
                         const AttnShape *a);
/* WRITES d lin_q and d lin_k (their blocks of d_qk4) and dv (row stride v_stride: the linear
   part's share; the quadratic part adds its own). d_kv: B*G x s x e scratch. */
void attn_linear_backward(real *dv, int v_stride, real *d_qk4, const real *d_out, const real *kv,
                          const real *qk4, const real *v, real *d_kv, const AttnShape *a);
/* The decoder's state of one sequence is S (s x e), the sum over its finished groups.
   Query: out (e) += lin_q S. */
void attn_linear_query(real *out, const real *S, const real *lin_q, const AttnShape *a, int blocks);
/* A group done: S += Gk^T Gv / C over its C rows (lin_k rows Gk, C x s; values Gv, C x e). */
void attn_linear_fold(real *S, const real *Gk, const real *Gv, const AttnShape *a, int blocks);
/* S after the parallel forward's last (whole) group: its stored exclusive sum kv_last plus
   that group's own lin_k^T v / C (lin_k: C x s; v: C x e at row stride v_stride). */
void attn_linear_state_after(real *S, const real *kv_last, const real *lin_k, const real *v,
                             int v_stride, const AttnShape *a);

/* ---- the Taylor linear part (attn_taylor.c): across groups, causal; --linear-attn taylor ----
   fq = phi(lin_q / sqrt s), fk = phi(lin_k), phi(x) = [1, x, x_i x_j for i <= j (/ sqrt 2
   where i = j)] (F = taylor_feature_count(s), config.h: the symmetric form of the
   reference's [1, x, vec(x x^T) / sqrt 2], the same phi(q) . phi(k)); St_g = sum_{g' < g} fk^T [v | 1] (F x (e+1): [KV | Z]);
   [num | den] = fq St_g; lin_out = num / max(den, 1e-5). */
/* What it keeps (cpu_model.h, tay_*), and the same shapes for their gradients in the
   backward: fq, fk N x F; st B*G x F x (e+1); nd N x (e+1) ([num | den]). */
typedef struct { real *fq, *fk, *st, *nd; } TaylorBufs;
/* ADDS lin_out into out (N x e), as attn_linear_forward; saves t's four buffers. */
void attn_taylor_forward(real *out, const TaylorBufs *t, const real *qk4, const real *v, int v_stride,
                         const AttnShape *a);
/* WRITES d lin_q, d lin_k and dv, as attn_linear_backward; dt: scratch of t's shapes. */
void attn_taylor_backward(real *dv, int v_stride, real *d_qk4, const real *d_out, const TaylorBufs *t,
                          const real *qk4, const real *v, const TaylorBufs *dt, const AttnShape *a);
/* The decoder's state of one sequence is St (F x (e+1)) over its finished groups.
   Query: out (e) += lin_out for lin_q; scratch: F + e + 1 reals. */
void attn_taylor_query(real *out, const real *St, const real *lin_q, real *scratch, const AttnShape *a,
                       int blocks);
/* A group done: St += phi(Gk)^T [Gv | 1] over its C rows; scratch: C x F reals. */
void attn_taylor_fold(real *St, const real *Gk, const real *Gv, real *scratch, const AttnShape *a,
                      int blocks);
/* St after the parallel forward's last (whole) group: its stored exclusive st_last plus that
   group's fk_last^T [v | 1] (fk_last: C x F, the forward's; v: C x e at row stride v_stride). */
void attn_taylor_state_after(real *St, const real *st_last, const real *fk_last, const real *v,
                             int v_stride, const AttnShape *a);

#endif
