/* autograd/cuda/layer_rooms.cu: the rooms of a layer other than the attention (layer.h):
 * norm + token shift, the projections (to_hidden and to_qk as one product, bias + SiLU,
 * offset-scale + rotary) and the output (gate, to_out, residual), each a forward and its
 * backward. docs/model.md, "Forward" 2 and "Backward", gives the computation. */
#include "layer.h"

/* ---- norm + token shift ---------------------------------------------------------------- */
void norm_shift_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    const LayerParams *P = a->P;
    const int shift = sh->c->shift_tokens ? sh->Tp : 0;
    /* the kernel also writes h_out = h + bo, to which to_out's product adds */
    if (sh->c->norm_type == NORM_SCALENORM)
        scalenorm_forward_cuda(a->xs, a->stat, a->h, P->norm_g, sh->N, sh->d, shift, TW(a->xs_h), a->h_out,
                               P->bo, st);
    else
        layernorm_forward_cuda(a->xs, a->stat, a->h, P->norm_w, P->norm_b, sh->N, sh->d, shift, TW(a->xs_h),
                               a->h_out, P->bo, st);
    MARK(P_NORM);
}

void norm_shift_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, Marks *mk,
                         cudaStream_t st) {
    const LayerParams *P = a->P;
    LayerParams *D = a->D;
    const int shift = sh->c->shift_tokens ? sh->Tp : 0;
    if (sh->c->norm_type == NORM_SCALENORM)
        scalenorm_backward_cuda(g->d_res, D->norm_g, g->d_xs, a->h, a->stat, P->norm_g, sh->N, sh->d, shift,
                                g->row, TW(g->d_res_h), st);
    else
        layernorm_backward_cuda(g->d_res, D->norm_w, D->norm_b, g->d_xs, a->h, a->stat, P->norm_w, sh->N, sh->d,
                                shift, ACT(cm, A_XHAT_SCRATCH), g->col, TW(g->d_res_h), st);
    MARK(P_PHASES + P_NORM);
}

/* ---- the projections: [to_hidden; to_qk], bias + SiLU, offset-scale + rotary ---------------- */
void project_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    project_hidden_forward(cm, a, sh, mk, st);
    project_qk_forward(cm, a, sh, mk, st);
}

void project_hidden_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    const LayerParams *P = a->P;
    const int N = sh->N, d = sh->d, e = sh->e, s = sh->s, H = sh->H;
    /* [to_hidden; to_qk]: one (2e + s) x d product, then bias and silu */
    /* bf16 keeps the pre-activation u and v | gate | z in bf16 only */
    if (a->hid_u_h)
        cuda_gemm_typed(cm, 0, 1, N, H, d, 1, a->xs, a->xs_h, d, 0, P->wh, a->Wh_h, d, 0, 0, a->hid_u_h,
                        CUDA_R_16BF, H, 0, 1);
    else
        cuda_gemm(cm, 0, 1, N, H, d, 1, a->xs, a->xs_h, d, 0, P->wh, a->Wh_h, d, 0, 0, a->hid_u, H, 0, 1);
    /* bf16: u stays the raw product; silu(u + b) of v's and z's columns into the twin in one
       launch; the gate's kernels take silu(u + b) from the raw product themselves, and every
       backward adds b to u again (pre_bias) */
    if (a->hid_h) bias_silu_vz_cuda(TW(a->hid_u_h), P->bh, N, e, s, H, TW(a->hid_h), st);
    else bias_silu_cuda(a->hid_u, NULL, a->hid, P->bh, N, H, H, NULL, st);
    MARK(P_TO_HIDDEN);
}

void project_qk_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    const LayerParams *P = a->P;
    const int N = sh->N, e = sh->e, s = sh->s, H = sh->H;
    offset_scale_rotary_forward_cuda(a->qk4, a->hid + 2 * e, TW(a->hid_h ? a->hid_h + 2 * e : NULL), H, P->gamma,
                                     P->beta, ACT(cm, A_ROT_COS), ACT(cm, A_ROT_SIN), N, sh->Tp, s, sh->r,
                                     TW(a->qk4_h), st);
    MARK(P_ROTARY);
}

void project_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, Marks *mk,
                      cudaStream_t st) {
    project_qk_backward(cm, a, g, sh, mk, st);
    project_hidden_backward(cm, a, g, sh, mk, st);
}

void project_qk_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, Marks *mk,
                         cudaStream_t st) {
    const LayerParams *P = a->P;
    LayerParams *D = a->D;
    const int N = sh->N, e = sh->e, s = sh->s, H = sh->H;
    float *d_hid = g->d_hid;
    bf16 *d_hid_h = g->d_hid_h;
    const bf16 *hid_h = a->hid_h, *hid_u_h = a->hid_u_h;
    /* dz from the four blocks of d_qk4 (offset-scale and rotary backward), with z's silu' */
    offset_scale_rotary_backward_cuda(d_hid_h ? NULL : d_hid + 2 * e, D->gamma, D->beta, g->d_qk4, TW(g->d_qk4_h),
                                      a->hid + 2 * e, TW(hid_h ? hid_h + 2 * e : NULL), H, a->hid_u + 2 * e,
                                      TW(hid_u_h ? hid_u_h + 2 * e : NULL), P->gamma, ACT(cm, A_ROT_COS),
                                      ACT(cm, A_ROT_SIN), N, sh->Tp, s, sh->r, g->col,
                                      TW(d_hid_h ? d_hid_h + 2 * e : NULL), hid_u_h ? P->bh + 2 * e : NULL, st);
    MARK(P_PHASES + P_ROTARY);
}

void project_hidden_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                             Marks *mk, cudaStream_t st) {
    const LayerParams *P = a->P;
    LayerParams *D = a->D;
    const int N = sh->N, d = sh->d, e = sh->e, H = sh->H;
    float *d_hid = g->d_hid;
    bf16 *d_hid_h = g->d_hid_h;
    const bf16 *hid_u_h = a->hid_u_h;
    silu_backward_cuda(d_hid_h ? NULL : d_hid, a->hid_u, TW(hid_u_h), N, e, H, TW(d_hid_h),
                       hid_u_h ? P->bh : NULL, st);   /* v's columns */
    /* one product gives both inputs' gradient sum, one the fused weight block's */
    /* d_xs stays fp32: the norms' backward read it faster than bf16 (docs/cuda-notes.md) */
    cuda_gemm(cm, 0, 0, N, d, H, 1, d_hid, d_hid_h, H, 0, P->wh, a->Wh_h, d, 0, 0, g->d_xs, d, 0, 1);
    cuda_gemm(cm, 1, 0, H, d, N, 1, d_hid, d_hid_h, H, 0, a->xs, a->xs_h, d, 0, 1, D->wh, d, 0, 1);
    if (d_hid_h) colsum16_add_cuda(D->bh, TW(d_hid_h), H, N, H, g->col, st);
    else colsum_add_cuda(D->bh, d_hid, H, NULL, 0, N, H, g->col, st);
    MARK(P_PHASES + P_TO_HIDDEN);
}

/* ---- the output: gated = gate * att, h_out += gated Wo^T -------------------------------- */
void output_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    const LayerParams *P = a->P;
    const int N = sh->N, d = sh->d, e = sh->e, H = sh->H;
    const float *pre_gate = a->hid_h ? P->bh + e : NULL;
    gate_forward_cuda(a->gated_h ? NULL : a->gated, a->hid + e, TW(a->hid_h ? a->hid_u_h + e : NULL), H,
                      a->att_h ? NULL : a->att, TW(a->att_h), N, e, TW(a->gated_h), pre_gate, st);
    MARK(P_GATE);
    /* h_out = h + bo + gated Wo^T (h + bo written by the norm) */
    cuda_gemm(cm, 0, 1, N, d, e, 1, a->gated, a->gated_h, e, 0, P->wo, a->Wo_h, e, 0, 1, a->h_out, d, 0, 1);
    MARK(P_TO_OUT);
}

void output_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, Marks *mk,
                     cudaStream_t st) {
    const LayerParams *P = a->P;
    LayerParams *D = a->D;
    const int N = sh->N, d = sh->d, e = sh->e, H = sh->H;
    const bf16 *hid_h = a->hid_h, *hid_u_h = a->hid_u_h;
    /* to_out: d_gated = d_res Wo;  dWo += d_res^T gated;  dbo += colsum(d_res) */
    cuda_gemm_typed(cm, 0, 0, N, e, d, 1, g->d_res, g->d_res_h, d, 0, P->wo, a->Wo_h, e, 0, 0, g->d_gated_out,
                    g->h_type, e, 0, 1);
    cuda_gemm(cm, 1, 0, d, e, N, 1, g->d_res, g->d_res_h, d, 0, a->gated, a->gated_h, e, 0, 1, D->wo, e, 0, 1);
    colsum_add_cuda(D->bo, g->d_res, d, NULL, 0, N, d, g->col, st);
    MARK(P_PHASES + P_TO_OUT);
    /* the gate's and z's silu backward are folded into their kernels; v's is the
       projections' */
    /* bf16: d_hid's gate and z columns as the twin only (the bias gradient sums the twin) */
    gate_backward_cuda(g->d_hid_h ? NULL : g->d_hid + e, H, g->d_att_h ? NULL : g->d_att,
                       g->d_gated_h ? NULL : g->d_gated, TW(g->d_gated_h), a->hid + e,
                       TW(hid_h ? hid_u_h + e : NULL), a->att_h ? NULL : a->att, TW(a->att_h), a->hid_u + e,
                       TW(hid_u_h ? hid_u_h + e : NULL), N, e, TW(g->d_hid_h ? g->d_hid_h + e : NULL),
                       TW(g->d_att_h), hid_h ? P->bh + e : NULL, st);
    MARK(P_PHASES + P_GATE);
}
