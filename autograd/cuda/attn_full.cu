/* autograd/cuda/attn_full.cu: FLASH-Quad's attention over the whole sequence (layer.h):
 * out_i = sum_{j <= i} phi((q_i . k_j + sqrt(d) bias[bucket(i - j)]) / T) v_j, with T the
 * sequence's length, and its backward. It runs a chunk of query rows at a time (all
 * sequences of the micro-batch together) against the keys up to the chunk's last row, so the
 * scores of one chunk exist at a time: memory linear in T, the products cuBLAS's tensor-core
 * GEMMs. The backward recomputes each chunk's scores and takes the chunks last to first, so
 * that the first one it takes (which reaches every key) writes dK and dv and the others add
 * to them, in a fixed order. */
#include "layer.h"

void attn_full_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st) {
    const int B = sh->B, Tp = sh->Tp, s = sh->s, e = sh->e, H = sh->H, tcmax = gau_chunk_rows(Tp, cm->use_bf16);
    const long long sQ = (long long)Tp * s, sV = (long long)Tp * H, sO = (long long)Tp * e;
    const size_t bstride = (size_t)tcmax * Tp;
    const float *q = a->qk4, *k = a->qk4 + sh->Ns;
    const bf16 *q_h = a->qk4_h, *k_h = a->qk4_h ? a->qk4_h + sh->Ns : NULL;
    float *S = ACT(cm, A_GS), *A = ACT(cm, A_GA);
    bf16 *A_h = TWIN(cm, H_GA);
    const float bias_scale = sqrtf((float)sh->d), inv_T = 1.0f / sh->T;
    const int laplace = sh->c->attn_fn == ATTN_LAPLACE;
    const size_t el = a->att_type == CUDA_R_16BF ? 2 : 4;
    for (int r0 = 0; r0 < Tp; r0 += tcmax) {
        const int tc = Tp - r0 < tcmax ? Tp - r0 : tcmax, kc = r0 + tc;
        /* S = q_chunk k^T over the keys up to the chunk's end */
        cuda_gemm(cm, 0, 1, tc, kc, s, 1, q + (size_t)r0 * s, q_h ? q_h + (size_t)r0 * s : NULL, s, sQ, k, k_h, s,
                  sQ, 0, S, Tp, (long long)bstride, B);
        gau_scores_forward_cuda(S, A_h ? NULL : A, TW(A_h), a->P->rel_bias, B, tc, kc, r0, Tp, bstride, bias_scale,
                                inv_T, laplace, st);
        /* out_chunk = A v */
        cuda_gemm_typed(cm, 0, 0, tc, e, kc, 1, A, A_h, Tp, (long long)bstride, a->hid, a->hid_h, H, sV, out_beta,
                        (char *)a->att_out + (size_t)r0 * e * el, a->att_type, e, sO, B);
    }
}

void attn_full_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, float dv_beta,
                        cudaStream_t st) {
    const int B = sh->B, Tp = sh->Tp, s = sh->s, e = sh->e, H = sh->H, tcmax = gau_chunk_rows(Tp, cm->use_bf16);
    const int nchunks = (Tp + tcmax - 1) / tcmax;
    const long long sQ = (long long)Tp * s, sV = (long long)Tp * H, sO = (long long)Tp * e;
    const size_t bstride = (size_t)tcmax * Tp;
    const float *q = a->qk4, *k = a->qk4 + sh->Ns;
    const bf16 *q_h = a->qk4_h, *k_h = a->qk4_h ? a->qk4_h + sh->Ns : NULL;
    float *S = ACT(cm, A_GS), *A = ACT(cm, A_GA), *dZ = ACT(cm, A_GDZ), *part = ACT(cm, A_GPART);
    bf16 *A_h = TWIN(cm, H_GA), *dZ_h = TWIN(cm, H_GDZ);
    float *dq = g->d_qk4, *dk = g->d_qk4 + sh->Ns;   /* fp32 in both precisions */
    /* dv in fp32: d_hid's v columns (bf16: copied into the twin after the last chunk) */
    float *dv = g->d_hid;
    const float bias_scale = sqrtf((float)sh->d), inv_T = 1.0f / sh->T;
    const int laplace = sh->c->attn_fn == ATTN_LAPLACE;
    for (int c = nchunks - 1; c >= 0; c--) {
        const int r0 = c * tcmax, tc = Tp - r0 < tcmax ? Tp - r0 : tcmax, kc = r0 + tc;
        const int first = c == nchunks - 1;   /* reaches every key: writes dK and dv */
        const float *dO = g->d_att + (size_t)r0 * e;
        const bf16 *dO_h = g->d_att_h ? g->d_att_h + (size_t)r0 * e : NULL;
        const float *qc = q + (size_t)r0 * s;
        const bf16 *qc_h = q_h ? q_h + (size_t)r0 * s : NULL;
        /* the chunk's scores and weights again */
        cuda_gemm(cm, 0, 1, tc, kc, s, 1, qc, qc_h, s, sQ, k, k_h, s, sQ, 0, S, Tp, (long long)bstride, B);
        gau_scores_forward_cuda(S, A_h ? NULL : A, TW(A_h), a->P->rel_bias, B, tc, kc, r0, Tp, bstride, bias_scale,
                                inv_T, laplace, st);
        /* out = A v:  dA = dO v^T;  dZ = dA phi'(S) / T, the gradient of q . k */
        cuda_gemm(cm, 0, 1, tc, kc, e, 1, dO, dO_h, e, sO, a->hid, a->hid_h, H, sV, 0, dZ, Tp, (long long)bstride,
                  B);
        gau_scores_backward_cuda(dZ, TW(dZ_h), S, B, tc, kc, r0, Tp, bstride, inv_T, laplace, st);
        /* the bias: d bias[bucket(i - j)] += sqrt(d) dZ_ij, summed per distance here */
        gau_dist_partial_cuda(part + (size_t)c * B * Tp, dZ, B, tc, r0, Tp, Tp, bstride, st);
        /* S = q k^T:  dq_chunk = dZ k;  dk (+)= dZ^T q_chunk */
        cuda_gemm(cm, 0, 0, tc, s, kc, 1, dZ, dZ_h, Tp, (long long)bstride, k, k_h, s, sQ, 0, dq + (size_t)r0 * s,
                  s, sQ, B);
        cuda_gemm(cm, 1, 0, kc, s, tc, 1, dZ, dZ_h, Tp, (long long)bstride, qc, qc_h, s, sQ, first ? 0 : 1, dk, s,
                  sQ, B);
        /* out = A v:  dv (+)= A^T dO */
        cuda_gemm(cm, 1, 0, kc, e, tc, 1, A, A_h, Tp, (long long)bstride, dO, dO_h, e, sO, first ? dv_beta : 1, dv,
                  H, sV, B);
    }
    gau_bias_grad_cuda(a->D->rel_bias, ACT(cm, A_GTOTAL), part, nchunks * B, Tp, bias_scale, st);
    if (g->d_hid_h) gau_to_twin_cuda(TW(g->d_hid_h), dv, sh->N, e, H, st);
}
