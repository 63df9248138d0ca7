/* autograd/cpu/gau_layer.c: the FLASH-Quad (GAU) layer as calls to the FLASH layer's rooms and
 * the quadratic attention's room (gau_layer.h). Nothing here computes on its own: what is
 * GAU's is the shape (one group of the whole sequence, two heads, no rotary, no linear part)
 * and the scales. */
#include "gau_layer.h"

AttnShape gau_attn_shape(const LayerShape *ls, const LayerParams *P, real *bias_dist) {
    /* GAU divides sim = q.k + sqrt(d) bias by the sequence length T before phi: the room's
       two scales carry the division (sqrt(d): T5RelativePositionBias(scale = dim ** 0.5)) */
    const real inv_T = (real)1 / ls->T;
    AttnShape as = {ls->B, ls->T, ls->T, 1, ls->s, ls->e, ls->c->attn_fn, P->rel_bias, bias_dist,
                    inv_T, R_SQRT((real)ls->d) * inv_T, 1};
    return as;
}

/* Layer l's blocks of the activations (cpu_model.h) for this forward's B x T: qk holds q and
   k (2 blocks of N x s); sim and attn are B x T x T */
typedef struct {
    real *h, *h_out, *xs, *stat, *hid_u, *hid, *qk, *sim, *attn, *att, *gated;
} GauActs;

static GauActs gau_acts(const Acts *a, const LayerShape *ls, int l) {
    const size_t N = ls->N, d = ls->d, e = ls->e, s = ls->s, H = ls->H;
    const size_t TT = (size_t)ls->B * ls->T * ls->T;
    GauActs x;
    x.h = a->res + (size_t)l * N * d;
    x.h_out = a->res + (size_t)(l + 1) * N * d;
    x.xs = a->xs + (size_t)l * N * d;
    x.stat = a->nstat + (size_t)l * N * 2;
    x.hid_u = a->hid_u + (size_t)l * N * H;   /* v (e) | gate (e) | z (s) per row */
    x.hid = a->hid + (size_t)l * N * H;
    x.qk = a->qk4 + (size_t)l * 2 * N * s;
    x.sim = a->sim + (size_t)l * TT;
    x.attn = a->attn + (size_t)l * TT;
    x.att = a->att + (size_t)l * N * e;
    x.gated = a->gated + (size_t)l * N * e;
    return x;
}

void gau_layer_forward(const LayerShape *ls, const LayerParams *P, Acts *a, int l, const Prof *pf) {
    const GauActs x = gau_acts(a, ls, l);
    const AttnShape as = gau_attn_shape(ls, P, a->bias_dist);
    norm_shift_forward(x.xs, x.stat, x.h, P, ls, pf);               /* x_n = norm(h): no shift */
    /* v | gate | z = silu(x_n [Wh; Wqk]^T + b); q = z gamma_0 + beta_0, k = z gamma_1 + beta_1 */
    project_forward(x.hid_u, x.hid, x.qk, x.xs, P, a->rot_cos, a->rot_sin, ls, pf);
    attn_quad_forward(x.att, x.sim, x.attn, x.qk, x.hid, ls->H, &as);   /* att = A v */
    prof_mark(pf, PROF_ATTENTION);
    output_forward(x.h_out, x.gated, x.hid, x.att, x.h, P, ls, pf);  /* h + (gate att) Wo^T + bo */
}

/* The rooms' backwards in reverse. The attention's (attn_quad_backward, derived there) with
   S = q k^T / T + sqrt(d)/T bias[bucket(i - j)] and A = phi(S) on j <= i:
     dA = d_att v^T,  dS = dA phi'(S),  dq = dS k / T,  dk = dS^T q / T,  dv = A^T d_att,
     d bias[b] += sqrt(d)/T sum over i - j in bucket b of dS_ij.
   GAU has no linear part, so the quadratic part WRITES dv (beta 0) where FLASH's adds to the
   linear part's. The residual passes d_res through; the norm's input gradient is added. */
void gau_layer_backward(const LayerShape *ls, const LayerParams *P, LayerParams *D, Acts *a, int l,
                        const GemmScratch *ws, const Prof *pf) {
    const GauActs x = gau_acts(a, ls, l);
    const AttnShape as = gau_attn_shape(ls, P, a->bias_dist);
    output_backward(a->d_hid, a->d_att, a->d_gated, D, a->d_res, x.gated, x.hid, x.att, P, ls, ws, pf);
    attn_quad_backward(a->d_hid, ls->H, 0, a->d_qk4, D->rel_bias, a->d_att, x.sim, x.attn, x.qk, x.hid,
                       a->d_rel_partial, a->dsim, &as);
    prof_mark(pf, PROF_PHASES + PROF_ATTENTION);
    project_backward(a->d_xs, D, a->d_hid, a->d_qk4, x.xs, x.hid_u, x.hid, P, a->rot_cos, a->rot_sin,
                     ls, ws, pf);
    norm_shift_backward(a->d_res, D, a->d_xs, x.h, x.stat, P, ls, pf);
}
