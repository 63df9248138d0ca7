/* autograd/cpu/flash_layer.c: one FLASH layer of the CPU model as four rooms, each a forward and
 * its backward, and the layer as their sequence (flash_layer.h). The rooms call the
 * forward/backward pairs of ops.h and attn.h; each keeps the order of their calls that the
 * numerics rest on. */
#include "flash_layer.h"

LayerShape layer_shape(const FlashConfig *c, int B, int T) {
    LayerShape ls;
    ls.c = c;
    ls.d = c->dim; ls.e = config_hidden(c); ls.s = c->query_key_dim;
    ls.r = config_rotary(c); ls.C = c->group_size;
    ls.heads = 4;
    /* GAU: one group of the whole sequence, two offset-scale heads (q, k), no rotary (r 0) */
    if (c->model == MODEL_GAU) { ls.C = T; ls.heads = 2; }
    ls.B = B; ls.T = T; ls.N = B * T; ls.G = (T + ls.C - 1) / ls.C;
    ls.H = 2 * ls.e + ls.s;
    return ls;
}

/* ============================ (a) norm + token shift =============================== */

void norm_shift_forward(real *xs, real *stat, const real *h, const LayerParams *P,
                        const LayerShape *ls, const Prof *pf) {
    const FlashConfig *c = ls->c;
    if (c->norm_type == NORM_SCALENORM) scalenorm_forward(xs, stat, h, P->norm_g, ls->N, ls->d);
    else layernorm_forward(xs, stat, h, P->norm_w, P->norm_b, ls->N, ls->d);
    prof_mark(pf, PROF_NORM);
    if (c->shift_tokens) token_shift_forward(xs, ls->B, ls->T, ls->d);
    prof_mark(pf, PROF_SHIFT);
}

/* xs = shift(norm(h)):  d norm = shift^T d_xs;  d_h += norm^T d norm */
void norm_shift_backward(real *d_h, LayerParams *D, real *d_xs, const real *h, const real *stat,
                         const LayerParams *P, const LayerShape *ls, const Prof *pf) {
    const FlashConfig *c = ls->c;
    const int K = PROF_PHASES;   /* backward phases follow the forward's */
    if (c->shift_tokens) token_shift_backward(d_xs, ls->B, ls->T, ls->d);
    prof_mark(pf, K + PROF_SHIFT);
    if (c->norm_type == NORM_SCALENORM)
        scalenorm_backward(d_h, D->norm_g, d_xs, h, stat, P->norm_g, ls->N, ls->d);
    else
        layernorm_backward(d_h, D->norm_w, D->norm_b, d_xs, h, stat, P->norm_w, ls->N, ls->d);
    prof_mark(pf, K + PROF_NORM);
}

/* ================================ (b) projections ================================== */

void project_forward(real *hid_u, real *hid, real *qk4, const real *xs, const LayerParams *P,
                     const real *rot_cos, const real *rot_sin, const LayerShape *ls, const Prof *pf) {
    const int e = ls->e, H = ls->H;
    /* to_hidden and to_qk in one GEMM: [W_hidden; W_qk] is one (2e + s) x d block */
    /* (the forward's silu is done tile by tile inside this product: its time is
       counted here, and the profile's silu line is the backward's) */
    linear_silu_forward(hid_u, hid, xs, P->wh, P->bh, ls->N, ls->d, H);
    prof_mark(pf, PROF_TO_HIDDEN);
    offset_scale_heads_forward(qk4, ls->heads, hid + 2 * e, H, P->gamma, P->beta, rot_cos, rot_sin,
                               ls->B, ls->T, ls->s, ls->r);
    prof_mark(pf, PROF_ROTARY);
}

/* qk4 = rot(z gamma + beta), z = silu(u_z):  dz from d_qk4 (rotary.c), then du = silu'(u) d hid
   over the whole row;  hid_u = xs W^T + b:  d_xs = du W,  dW += du^T xs */
void project_backward(real *d_xs, LayerParams *D, real *d_hid, real *d_qk4, const real *xs,
                      const real *hid_u, const real *hid, const LayerParams *P,
                      const real *rot_cos, const real *rot_sin, const LayerShape *ls,
                      const GemmScratch *ws, const Prof *pf) {
    const int e = ls->e, H = ls->H, N = ls->N;
    const int K = PROF_PHASES;
    offset_scale_heads_backward(d_hid + 2 * e, D->gamma, D->beta, d_qk4, ls->heads, hid + 2 * e, H,
                                P->gamma, rot_cos, rot_sin, ls->B, ls->T, ls->s, ls->r);
    prof_mark(pf, K + PROF_ROTARY);
    silu_backward(d_hid, d_hid, hid_u, (size_t)N * H);
    prof_mark(pf, K + PROF_SILU);
    /* to_hidden and to_qk read the same xs: one GEMM gives the sum of their input
       gradients, one the gradient of the fused weight block */
    linear_backward(d_xs, 0, D->wh, D->bh, d_hid, xs, P->wh, N, ls->d, H, ws);
    prof_mark(pf, K + PROF_TO_HIDDEN);
}

/* ================================= (c) attention =================================== */

static AttnShape attn_shape(const LayerShape *ls, const LayerParams *P, real *bias_dist) {
    AttnShape as = {ls->B, ls->T, ls->C, ls->G, ls->s, ls->e, ls->c->attn_fn, P->rel_bias, bias_dist,
                    (real)1 / ls->C, R_SQRT((real)ls->s), 2};
    return as;
}

/* FLASH's mixed-chunk attention: the quadratic part writes att, the linear part (plain or
   taylor, by cfg.linear_attn) adds its lin_out to it */
void mixed_attention_forward(real *att, real *sim, real *attn, real *kv, const TaylorBufs *tay,
                             const real *qk4, const real *hid, const LayerParams *P, real *bias_dist,
                             const LayerShape *ls, const Prof *pf) {
    const AttnShape as = attn_shape(ls, P, bias_dist);
    attn_quad_forward(att, sim, attn, qk4, hid, ls->H, &as);
    if (ls->c->linear_attn == LINEAR_TAYLOR) attn_taylor_forward(att, tay, qk4, hid, ls->H, &as);
    else attn_linear_forward(att, kv, qk4, hid, ls->H, &as);
    prof_mark(pf, PROF_ATTENTION);
}

/* att = quad_out + lin_out:  both parts get d_att; dv = the linear part's (written) + the
   quadratic part's (added) */
void mixed_attention_backward(real *d_hid, real *d_qk4, LayerParams *D, const real *d_att,
                              const real *sim, const real *attn, const real *kv,
                              const TaylorBufs *tay, const real *qk4, const real *hid,
                              const LayerParams *P, real *d_kv, const TaylorBufs *d_tay,
                              real *d_rel_partial, real *dsim, real *bias_dist,
                              const LayerShape *ls, const Prof *pf) {
    const AttnShape as = attn_shape(ls, P, bias_dist);
    if (ls->c->linear_attn == LINEAR_TAYLOR)
        attn_taylor_backward(d_hid, ls->H, d_qk4, d_att, tay, qk4, hid, d_tay, &as);
    else
        attn_linear_backward(d_hid, ls->H, d_qk4, d_att, kv, qk4, hid, d_kv, &as);
    attn_quad_backward(d_hid, ls->H, 1, d_qk4, D->rel_bias, d_att, sim, attn, qk4, hid,
                       d_rel_partial, dsim, &as);
    prof_mark(pf, PROF_PHASES + PROF_ATTENTION);
}

/* =========================== (d) gate, output, residual ============================ */

void output_forward(real *h_out, real *gated, const real *hid, const real *att, const real *h,
                    const LayerParams *P, const LayerShape *ls, const Prof *pf) {
    const int e = ls->e;
    gate_forward(gated, hid + e, ls->H, att, ls->N, e);
    prof_mark(pf, PROF_GATE);
    /* h_out = h + gated Wo^T + bo */
    linear_forward_add(h_out, gated, P->wo, P->bo, h, ls->N, e, ls->d);
    prof_mark(pf, PROF_TO_OUT);
}

/* h_out = h + gated Wo^T + bo:  d_gated = d_h_out Wo,  dWo += d_h_out^T gated;
   gated = gate * att (gate.c) */
void output_backward(real *d_hid, real *d_att, real *d_gated, LayerParams *D, const real *d_h_out,
                     const real *gated, const real *hid, const real *att, const LayerParams *P,
                     const LayerShape *ls, const GemmScratch *ws, const Prof *pf) {
    const int e = ls->e, K = PROF_PHASES;
    linear_backward(d_gated, 0, D->wo, D->bo, d_h_out, gated, P->wo, ls->N, e, ls->d, ws);
    prof_mark(pf, K + PROF_TO_OUT);
    gate_backward(d_hid + e, ls->H, d_att, d_gated, hid + e, att, ls->N, e);
    prof_mark(pf, K + PROF_GATE);
}

/* ==================================== the layer ==================================== */

/* Layer l's blocks of the activations (cpu_model.h), laid out for this forward's B x T */
typedef struct {
    real *h, *h_out, *xs, *stat, *hid_u, *hid, *qk4, *sim, *attn, *kv, *att, *gated;
    TaylorBufs tay;   /* --linear-attn taylor's (zero-sized for plain) */
} LayerActs;

static LayerActs layer_acts(const Acts *a, const LayerShape *ls, int l) {
    const size_t N = ls->N, d = ls->d, e = ls->e, s = ls->s, H = ls->H;
    const size_t BG = (size_t)ls->B * ls->G, CC = (size_t)ls->C * ls->C;
    LayerActs x;
    x.h = a->res + (size_t)l * N * d;
    x.h_out = a->res + (size_t)(l + 1) * N * d;
    x.xs = a->xs + (size_t)l * N * d;
    x.stat = a->nstat + (size_t)l * N * 2;
    x.hid_u = a->hid_u + (size_t)l * N * H;   /* one row per position: v (e) | gate (e) | z (s) */
    x.hid = a->hid + (size_t)l * N * H;
    x.qk4 = a->qk4 + (size_t)l * 4 * N * s;
    x.sim = a->sim + (size_t)l * BG * CC;
    x.attn = a->attn + (size_t)l * BG * CC;
    x.kv = a->kv + (size_t)l * BG * s * e;
    x.att = a->att + (size_t)l * N * e;
    x.gated = a->gated + (size_t)l * N * e;
    const size_t TF = config_taylor_width(ls->c), TE = TF ? e + 1 : 0;
    x.tay.fq = a->tay_f + (size_t)l * 2 * N * TF;
    x.tay.fk = x.tay.fq + N * TF;
    x.tay.st = a->tay_st + (size_t)l * BG * TF * TE;
    x.tay.nd = a->tay_nd + (size_t)l * N * TE;
    return x;
}

void flash_layer_forward(const LayerShape *ls, const LayerParams *P, Acts *a, int l, const Prof *pf) {
    const LayerActs x = layer_acts(a, ls, l);
    norm_shift_forward(x.xs, x.stat, x.h, P, ls, pf);
    project_forward(x.hid_u, x.hid, x.qk4, x.xs, P, a->rot_cos, a->rot_sin, ls, pf);
    mixed_attention_forward(x.att, x.sim, x.attn, x.kv, &x.tay, x.qk4, x.hid, P, a->bias_dist, ls, pf);
    output_forward(x.h_out, x.gated, x.hid, x.att, x.h, P, ls, pf);
}

/* The residual passes d_res through unchanged and the norm's input gradient is added to it */
void flash_layer_backward(const LayerShape *ls, const LayerParams *P, LayerParams *D, Acts *a, int l,
                          const GemmScratch *ws, const Prof *pf) {
    const LayerActs x = layer_acts(a, ls, l);
    output_backward(a->d_hid, a->d_att, a->d_gated, D, a->d_res, x.gated, x.hid, x.att, P, ls, ws, pf);
    const size_t N = ls->N, TF = config_taylor_width(ls->c);
    const TaylorBufs d_tay = {a->d_tay_f, a->d_tay_f + N * TF, a->d_tay_st, a->d_tay_nd};
    mixed_attention_backward(a->d_hid, a->d_qk4, D, a->d_att, x.sim, x.attn, x.kv, &x.tay, x.qk4,
                             x.hid, P, a->d_kv, &d_tay, a->d_rel_partial, a->dsim, a->bias_dist,
                             ls, pf);
    project_backward(a->d_xs, D, a->d_hid, a->d_qk4, x.xs, x.hid_u, x.hid, P, a->rot_cos, a->rot_sin,
                     ls, ws, pf);
    norm_shift_backward(a->d_res, D, a->d_xs, x.h, x.stat, P, ls, pf);
}
