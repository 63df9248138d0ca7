/* autograd/cuda/attn_taylor.cu: the linear part of the attention through the second-order
 * Taylor feature map (layer.h; docs/model.md, "The Taylor linear attention"), the same
 * interface as attn_linear.cu. Per group g of C rows: fq = phi(lin_q / sqrt(s)), fk = phi(lin_k)
 * (F = 1 + s + s^2 features), the group's [KV | Z] = fk^T [v | 1] (F x (e + 1): two products,
 * v's and the ones column's, into one state row of E1p columns), the exclusive scan over a
 * sequence's groups, [num | den] = fq [KV | Z]_g in one product, lin_out = num / max(den, 1e-5).
 * The feature maps are recomputed by the backward (scratch shared by the layers); the state,
 * y and den are kept per layer. */
#include "layer.h"

#define TAYLOR_EPS 1e-5f   /* the reference's clamp of the denominator */

static void features(CudaModel *cm, const LayerActs *a, const CudaShape *sh, const TaylorDims *t, cudaStream_t st) {
    const size_t Ns = sh->Ns;
    const int s = sh->s;
    const float *Ql = a->qk4 + Ns, *Kl = a->qk4 + 3 * Ns;
    const bf16 *Ql_h = a->qk4_h ? a->qk4_h + Ns : NULL, *Kl_h = a->qk4_h ? a->qk4_h + 3 * Ns : NULL;
    /* bf16: the products read the features' twins only, so the fp32 rows are not written */
    const int bf = cm->use_bf16;
    taylor_features_cuda(bf ? NULL : ACT(cm, A_TFQ), TW(TWIN(cm, H_TFQ)), Ql, TW(Ql_h), sh->N, s, t->F, t->Fp,
                         1.0f / sqrtf((float)s), st);
    taylor_features_cuda(bf ? NULL : ACT(cm, A_TFK), TW(TWIN(cm, H_TFK)), Kl, TW(Kl_h), sh->N, s, t->F, t->Fp, 1.0f,
                         st);
}

void attn_taylor_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st) {
    const TaylorDims t = taylor_dims(sh->c);
    const int C = sh->C, e = sh->e, H = sh->H, BG = sh->BG, F = t.Fp, E1p = t.E1p;   /* F: the stored width */
    const long long CF = (long long)C * F, CH = (long long)C * H, CE = (long long)C * E1p, SE = (long long)t.SE;
    features(cm, a, sh, &t, st);
    const float *fq = ACT(cm, A_TFQ), *fk = ACT(cm, A_TFK), *ones = ACT(cm, A_ONES);
    const bf16 *fq_h = TWIN(cm, H_TFQ), *fk_h = TWIN(cm, H_TFK), *ones_h = TWIN(cm, H_ONES);
    float *nd = ACT(cm, A_TNUM);
    /* each group's KV = fk^T v (columns 0..e-1 of its state rows) and Z = fk^T 1 (column e) */
    cuda_gemm(cm, 1, 0, F, e, C, 1, fk, fk_h, F, CF, a->hid, a->hid_h, H, CH, 0, a->tkv, E1p, SE, BG);
    cuda_gemm(cm, 1, 0, F, 1, C, 1, fk, fk_h, F, CF, ones, ones_h, 1, 0, 0, a->tkv + e, E1p, SE, BG);
    /* S_g = the sum over groups before g (the padding columns stay 0); bf16: into the twin
       only, which is all that the products after it read */
    group_scan_cuda(a->tkv, sh->B, sh->G, t.SE, 0, TW(a->tkv_h), a->tkv_h != NULL, st);
    /* [num | den] = fq S_g, then lin_out = num / max(den, eps) into out */
    cuda_gemm(cm, 0, 0, C, E1p, F, 1, fq, fq_h, F, CF, a->tkv, a->tkv_h, E1p, SE, 0, nd, E1p, CE, BG);
    taylor_norm_forward_cuda(a->ty, a->tden, a->att_h ? NULL : a->att, TW(a->att_h), nd, E1p, sh->N, e, TAYLOR_EPS,
                             out_beta != 0, st);
}

void attn_taylor_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                          float dv_beta, cudaStream_t st) {
    const TaylorDims t = taylor_dims(sh->c);
    const int C = sh->C, s = sh->s, e = sh->e, H = sh->H, BG = sh->BG, F = t.Fp, E1p = t.E1p;
    const size_t Ns = sh->Ns;
    const long long CF = (long long)C * F, CH = (long long)C * H, CE = (long long)C * E1p, SE = (long long)t.SE;
    features(cm, a, sh, &t, st);
    const float *fq = ACT(cm, A_TFQ), *fk = ACT(cm, A_TFK);
    const bf16 *fq_h = TWIN(cm, H_TFQ), *fk_h = TWIN(cm, H_TFK);
    float *dnd = ACT(cm, A_TNUM), *dfq = ACT(cm, A_TD_FQ), *dfk = ACT(cm, A_TD_FK), *dS = ACT(cm, A_TD_KV);
    bf16 *dnd_h = TWIN(cm, H_TNUM), *dS_h = TWIN(cm, H_TD_KV);
    /* y = num / den':  [d num | d den] per row */
    taylor_norm_backward_cuda(dnd, TW(dnd_h), g->d_att, TW(g->d_att_h), a->ty, a->tden, E1p, sh->N, e, TAYLOR_EPS,
                              st);
    /* [num | den] = fq S_g:  d fq = [d num | d den] S_g^T;  dS_g = fq^T [d num | d den] */
    cuda_gemm(cm, 0, 1, C, F, E1p, 1, dnd, dnd_h, E1p, CE, a->tkv, a->tkv_h, E1p, SE, 0, dfq, F, CF, BG);
    cuda_gemm(cm, 1, 0, F, E1p, C, 1, fq, fq_h, F, CF, dnd, dnd_h, E1p, CE, 0, dS, E1p, SE, BG);
    /* S_g = sum_{g' < g} [KV | Z]_g'  =>  d[KV | Z]_g = sum_{g' > g} dS_g' */
    group_scan_cuda(dS, sh->B, sh->G, t.SE, 1, TW(dS_h), 0, st);
    /* [KV | Z] = fk^T [v | 1]:  d fk = v dKV^T + 1 dZ^T (the dZ row is added by the feature
       map's backward);  dv = dv_beta dv + fk dKV */
    cuda_gemm(cm, 0, 1, C, F, e, 1, a->hid, a->hid_h, H, CH, dS, dS_h, E1p, SE, 0, dfk, F, CF, BG);
    cuda_gemm_typed(cm, 0, 0, C, e, F, 1, fk, fk_h, F, CF, dS, dS_h, E1p, SE, dv_beta, g->d_hid_out, g->h_type, H,
                    CH, BG);
    /* the feature maps' backward into d lin_q, d lin_k (blocks 1 and 3 of d_qk4) */
    const float *Ql = a->qk4 + Ns, *Kl = a->qk4 + 3 * Ns;
    const bf16 *Ql_h = a->qk4_h ? a->qk4_h + Ns : NULL, *Kl_h = a->qk4_h ? a->qk4_h + 3 * Ns : NULL;
    char *dQ4 = (char *)g->d_qk4_out;
    const int half = g->qk4_el == 2;
    void *dQl = dQ4 + g->qk4_el * Ns, *dKl = dQ4 + 3 * g->qk4_el * Ns;
    taylor_features_backward_cuda(half ? NULL : (float *)dQl, half ? (bf16_t *)dQl : NULL, dfq, NULL, 0, 0, C, Ql,
                                  TW(Ql_h), sh->N, s, F, 1.0f / sqrtf((float)s), st);
    taylor_features_backward_cuda(half ? NULL : (float *)dKl, half ? (bf16_t *)dKl : NULL, dfk, dS + e, t.SE, E1p, C,
                                  Kl, TW(Kl_h), sh->N, s, F, 1.0f, st);
}
