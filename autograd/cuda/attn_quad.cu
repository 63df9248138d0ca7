/* autograd/cuda/attn_quad.cu: the attention's quadratic part (layer.h), inside each group of C
 * rows: sim = quad_q quad_k^T / C + sqrt(s) bias[bucket(i - j)], A = phi(sim) under the causal
 * mask, quad_out = A v; and its backward. The products run batched over the B*G groups. */
#include "layer.h"

void attn_quad_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st) {
    const int C = sh->C, s = sh->s, e = sh->e, H = sh->H, BG = sh->BG;
    const float *Qq = a->qk4, *Kq = a->qk4 + 2 * sh->Ns;
    const bf16 *Qq_h = a->qk4_h, *Kq_h = a->qk4_h ? a->qk4_h + 2 * sh->Ns : NULL;
    const long long Cs = (long long)C * s, CC = (long long)C * C, CH = (long long)C * H, Ce = (long long)C * e;
    attn_bias_dist_cuda(a->bias_dist, a->P->rel_bias, C, s, st);
    /* sim = quad_q quad_k^T / C (+ bias, phi, causal mask in the kernel) */
    cuda_gemm(cm, 0, 1, C, C, s, sh->inv_C, Qq, Qq_h, s, Cs, Kq, Kq_h, s, Cs, 0, a->sim, C, CC, BG);
    attn_phi_forward_cuda(a->sim, a->attn, a->bias_dist, BG, C, (sh->c->attn_fn == ATTN_LAPLACE), TW(a->attn_h),
                          st);
    /* quad_out = A v */
    cuda_gemm_typed(cm, 0, 0, C, e, C, 1, a->attn, a->attn_h, C, CC, a->hid, a->hid_h, H, CH, out_beta, a->att_out,
                    a->att_type, e, Ce, BG);
}

void attn_quad_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, float dv_beta,
                        cudaStream_t st) {
    const int C = sh->C, s = sh->s, e = sh->e, H = sh->H, BG = sh->BG;
    const size_t Ns = sh->Ns;
    const float *Qq = a->qk4, *Kq = a->qk4 + 2 * Ns;
    const bf16 *Qq_h = a->qk4_h, *Kq_h = a->qk4_h ? a->qk4_h + 2 * Ns : NULL;
    char *dQ4 = (char *)g->d_qk4_out;
    void *dQq = dQ4, *dKq = dQ4 + 2 * g->qk4_el * Ns;
    const long long Cs = (long long)C * s, CC = (long long)C * C, CH = (long long)C * H, Ce = (long long)C * e;
    float *dist = ACT(cm, A_DIST_SCRATCH);
    /* quad_out = A v:  dA = dO v^T;  dsim = dA phi'(sim) (causal) */
    cuda_gemm_typed(cm, 0, 1, C, C, e, 1, g->d_att, g->d_att_h, e, Ce, a->hid, a->hid_h, H, CH, 0, g->dsim_out,
                    g->h_type, C, CC, BG);
    attn_phi_backward_cuda(g->dsim, a->sim, BG, C, (sh->c->attn_fn == ATTN_LAPLACE), TW(g->dsim_h), dist, st);
    attn_rel_bias_backward_cuda(a->D->rel_bias, dist, attn_dist_parts(BG, C), C, s,
                                dist + (size_t)attn_dist_parts(BG, C) * C, st);
    /* sim = Q K^T / C:  dQ = dsim K / C;  dK = dsim^T Q / C;  dv = dv_beta dv + A^T dO */
    cuda_gemm_typed(cm, 0, 0, C, s, C, sh->inv_C, g->dsim, g->dsim_h, C, CC, Kq, Kq_h, s, Cs, 0, dQq, g->h_type, s,
                    Cs, BG);
    cuda_gemm_typed(cm, 1, 0, C, s, C, sh->inv_C, g->dsim, g->dsim_h, C, CC, Qq, Qq_h, s, Cs, 0, dKq, g->h_type, s,
                    Cs, BG);
    cuda_gemm_typed(cm, 1, 0, C, e, C, 1, a->attn, a->attn_h, C, CC, g->d_att, g->d_att_h, e, Ce, dv_beta,
                    g->d_hid_out, g->h_type, H, CH, BG);
}
