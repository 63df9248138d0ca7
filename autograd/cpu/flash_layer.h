/* autograd/cpu/flash_layer.h: one FLASH layer of the CPU model, h_out = h + layer(h), as four
 * rooms, each a forward/backward pair: (a) norm + token shift, (b) the projections (to_hidden
 * and to_qk, offset-scale, rotary), (c) the attention (its quadratic and linear parts, attn.h),
 * (d) gate, output projection and residual. The layer (flash_layer_forward/backward) is the
 * sequence of the four; another layer kind takes the rooms it shares with this one and adds
 * its own. docs/model.md, "Forward" 2, gives the computation. */
#ifndef FLASH_FLASH_LAYER_H
#define FLASH_FLASH_LAYER_H
#include "cpu_model.h"
#include "gemm.h"
#include "ops.h"

/* The sizes every room reads, for a forward of B x T */
typedef struct {
    const FlashConfig *c;
    int B, T, N, G;        /* N = B*T rows, G = ceil(T/C) groups */
    int d, e, s, r, C;     /* widths (docs/model.md, "Sizes") */
    int H;                 /* 2e + s: a projected row, v | gate | z */
    int heads;             /* offset-scale heads: 4 (FLASH's quad_q, lin_q, quad_k, lin_k), 2 (GAU's q, k) */
} LayerShape;
/* For gau: C = T and G = 1 (one group of the whole sequence), heads 2, r 0 */
LayerShape layer_shape(const FlashConfig *c, int B, int T);

/* (a) xs = shift(norm(h)); stat: the norm's per-row statistics (cpu_model.h, nstat) */
void norm_shift_forward(real *xs, real *stat, const real *h, const LayerParams *P,
                        const LayerShape *ls, const Prof *pf);
/* d_xs is shifted back in place; d_h += the norm's input gradient */
void norm_shift_backward(real *d_h, LayerParams *D, real *d_xs, const real *h, const real *stat,
                         const LayerParams *P, const LayerShape *ls, const Prof *pf);

/* (b) hid = silu(hid_u), hid_u = xs [Wh; Wqk]^T + b: rows v | gate | z (H wide);
   qk4 = rot(z gamma_k + beta_k), k = quad_q, lin_q, quad_k, lin_k (GAU: q, k, no rotation) */
void project_forward(real *hid_u, real *hid, real *qk4, const real *xs, const LayerParams *P,
                     const real *rot_cos, const real *rot_sin, const LayerShape *ls, const Prof *pf);
/* d_hid holds dv | d gate (the attention's and the gate's); its dz block is written here,
   then the whole row is taken through silu' in place. d_qk4 is rotated back in place; d_xs
   written. */
void project_backward(real *d_xs, LayerParams *D, real *d_hid, real *d_qk4, const real *xs,
                      const real *hid_u, const real *hid, const LayerParams *P,
                      const real *rot_cos, const real *rot_sin, const LayerShape *ls,
                      const GemmScratch *ws, const Prof *pf);

/* (c) att = quad_out + lin_out over qk4 and v = hid[:, 0:e]; saves sim, attn and the linear
   part's kv (plain) or tay (taylor) (cpu_model.h). bias_dist: scratch, C. */
void mixed_attention_forward(real *att, real *sim, real *attn, real *kv, const TaylorBufs *tay,
                             const real *qk4, const real *hid, const LayerParams *P, real *bias_dist,
                             const LayerShape *ls, const Prof *pf);
/* Writes dv (d_hid[:, 0:e]) and d_qk4; D->rel_bias += . d_kv or d_tay (the linear part's),
   d_rel_partial, dsim, bias_dist: scratch (cpu_model.h). */
void mixed_attention_backward(real *d_hid, real *d_qk4, LayerParams *D, const real *d_att,
                              const real *sim, const real *attn, const real *kv,
                              const TaylorBufs *tay, const real *qk4, const real *hid,
                              const LayerParams *P, real *d_kv, const TaylorBufs *d_tay,
                              real *d_rel_partial, real *dsim, real *bias_dist,
                              const LayerShape *ls, const Prof *pf);

/* (d) gated = gate * att (gate = hid[:, e:2e]); h_out = h + gated Wo^T + bo */
void output_forward(real *h_out, real *gated, const real *hid, const real *att, const real *h,
                    const LayerParams *P, const LayerShape *ls, const Prof *pf);
/* d_h_out: the residual stream's gradient (it passes to h unchanged: the caller keeps it).
   Writes d gate (d_hid[:, e:2e]), d_att and d_gated (scratch). */
void output_backward(real *d_hid, real *d_att, real *d_gated, LayerParams *D, const real *d_h_out,
                     const real *gated, const real *hid, const real *att, const LayerParams *P,
                     const LayerShape *ls, const GemmScratch *ws, const Prof *pf);

/* The layer l over the activations a (cpu_model.h): forward res[l] -> res[l+1], keeping
   what the backward reads; backward: a->d_res holds dL/d res[l+1] and becomes dL/d res[l]
   (in place), the layer's weight gradients added into D. */
void flash_layer_forward(const LayerShape *ls, const LayerParams *P, Acts *a, int l, const Prof *pf);
void flash_layer_backward(const LayerShape *ls, const LayerParams *P, LayerParams *D, Acts *a, int l,
                          const GemmScratch *ws, const Prof *pf);

#endif
