/* autograd/cuda/attn_linear.cu: the attention's linear part (layer.h), across groups: each
 * group's state KV_g = lin_k_g^T v_g / C, the exclusive scan S_g = KV_0 + ... + KV_{g-1} along
 * a sequence's groups, lin_out_i = lin_q_i S_g; and its backward (the scan reversed). */
#include "layer.h"

void attn_linear_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st) {
    const int C = sh->C, s = sh->s, e = sh->e, H = sh->H, BG = sh->BG;
    const size_t Ns = sh->Ns;
    const float *Ql = a->qk4 + Ns, *Kl = a->qk4 + 3 * Ns;
    const bf16 *Ql_h = a->qk4_h ? a->qk4_h + Ns : NULL, *Kl_h = a->qk4_h ? a->qk4_h + 3 * Ns : NULL;
    const long long Cs = (long long)C * s, CH = (long long)C * H, Ce = (long long)C * e, se = (long long)s * e;
    /* KV_g = lin_k^T v / C, then S_g = KV_0 + ... + KV_{g-1} */
    cuda_gemm(cm, 1, 0, s, e, C, sh->inv_C, Kl, Kl_h, s, Cs, a->hid, a->hid_h, H, CH, 0, a->kv, e, se, BG);
    group_scan_cuda(a->kv, sh->B, sh->G, (size_t)se, 0, TW(a->kv_h), !sh->keep_state, st);
    /* lin_out = lin_q S_g, into out (out_beta 1: added to the quadratic part's) */
    cuda_gemm_typed(cm, 0, 0, C, e, s, 1, Ql, Ql_h, s, Cs, a->kv, a->kv_h, e, se, out_beta, a->att_out,
                    a->att_type, e, Ce, BG);
}

void attn_linear_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                          float dv_beta, cudaStream_t st) {
    const int C = sh->C, s = sh->s, e = sh->e, H = sh->H, BG = sh->BG;
    const size_t Ns = sh->Ns;
    const float *Ql = a->qk4 + Ns, *Kl = a->qk4 + 3 * Ns;
    const bf16 *Ql_h = a->qk4_h ? a->qk4_h + Ns : NULL, *Kl_h = a->qk4_h ? a->qk4_h + 3 * Ns : NULL;
    char *dQ4 = (char *)g->d_qk4_out;
    void *dQl = dQ4 + g->qk4_el * Ns, *dKl = dQ4 + 3 * g->qk4_el * Ns;
    const long long Cs = (long long)C * s, CH = (long long)C * H, Ce = (long long)C * e, se = (long long)s * e;
    /* lin_out = lin_q S_g:  dS_g = lin_q^T dO, then dKV_g = sum_{g' > g} dS_g' */
    cuda_gemm(cm, 1, 0, s, e, C, 1, Ql, Ql_h, s, Cs, g->d_att, g->d_att_h, e, Ce, 0, g->d_kv, e, se, BG);
    group_scan_cuda(g->d_kv, sh->B, sh->G, (size_t)se, 1, TW(g->d_kv_h), 1, st);   /* bf16: read as the twin only */
    /* d lin_q = dO S_g^T;  d lin_k = v dKV^T / C;  dv = dv_beta dv + lin_k dKV / C */
    cuda_gemm_typed(cm, 0, 1, C, s, e, 1, g->d_att, g->d_att_h, e, Ce, a->kv, a->kv_h, e, se, 0, dQl, g->h_type, s,
                    Cs, BG);
    cuda_gemm_typed(cm, 0, 1, C, s, e, sh->inv_C, a->hid, a->hid_h, H, CH, g->d_kv, g->d_kv_h, e, se, 0, dKl,
                    g->h_type, s, Cs, BG);
    cuda_gemm_typed(cm, 0, 0, C, e, s, sh->inv_C, Kl, Kl_h, s, Cs, g->d_kv, g->d_kv_h, e, se, dv_beta, g->d_hid_out,
                    g->h_type, H, CH, BG);
}
