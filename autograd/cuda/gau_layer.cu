/* autograd/cuda/gau_layer.cu: FLASH-Quad's GAU layer of the CUDA model (layer.h), h_out =
 * h + layer(h), from the FLASH layer's rooms: the norm (GAU has no token shift), the
 * projections' first half (to_hidden and to_qk as one product, SiLU), its own two-head
 * offset-scale (q, k; no rotary), the attention over the whole sequence (attn_full.cu), the
 * output (gate, to_out, residual). docs/model.md, "FLASH-Quad", gives the computation. */
#include "layer.h"

static void offset_scale_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st) {
    const int e = sh->e;
    gau_offset_scale_forward_cuda(a->qk4, TW(a->qk4_h), a->hid + 2 * e, TW(a->hid_h ? a->hid_h + 2 * e : NULL), NULL,
                                  sh->H, a->P->gamma, a->P->beta, sh->N, sh->s, st);
    MARK(P_ROTARY);
}

/* q = z g_0 + b_0, k = z g_1 + b_1:  dz = dq g_0 + dk g_1 (then z's silu');
   d g_h = sum_n d(q|k)_n z_n,  d b_h = sum_n d(q|k)_n */
static void offset_scale_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                                  Marks *mk, cudaStream_t st) {
    const int N = sh->N, e = sh->e, s = sh->s, H = sh->H;
    const LayerParams *P = a->P;
    LayerParams *D = a->D;
    float *zs = ACT(cm, A_GZ);
    const float *dq = g->d_qk4, *dk = g->d_qk4 + sh->Ns;
    gau_offset_scale_backward_cuda(g->d_hid_h ? NULL : g->d_hid + 2 * e, TW(g->d_hid_h ? g->d_hid_h + 2 * e : NULL),
                                   H, zs, g->d_qk4, a->hid_u + 2 * e, TW(a->hid_u_h ? a->hid_u_h + 2 * e : NULL),
                                   a->hid_u_h ? P->bh + 2 * e : NULL, H, P->gamma, N, s, st);
    colsum_add_cuda(D->gamma, dq, s, zs, s, N, s, g->col, st);
    colsum_add_cuda(D->gamma + s, dk, s, zs, s, N, s, g->col, st);
    colsum_add_cuda(D->beta, dq, s, NULL, 0, N, s, g->col, st);
    colsum_add_cuda(D->beta + s, dk, s, NULL, 0, N, s, g->col, st);
    MARK(P_PHASES + P_ROTARY);
}

void gau_layer_forward(CudaModel *cm, const CudaShape *sh, int l, Marks *mk) {
    cudaStream_t st = cm->st;
    LayerActs a;
    layer_acts(cm, sh, l, &a);
    norm_shift_forward(cm, &a, sh, mk, st);
    project_hidden_forward(cm, &a, sh, mk, st);
    offset_scale_forward(cm, &a, sh, mk, st);
    attn_full_forward(cm, &a, sh, 0, st);
    MARK(P_ATTENTION);
    output_forward(cm, &a, sh, mk, st);
}

void gau_layer_backward(CudaModel *cm, const CudaShape *sh, const LayerGrads *g, int l, Marks *mk) {
    cudaStream_t st = cm->st;
    LayerActs a;
    layer_acts(cm, sh, l, &a);
    output_backward(cm, &a, g, sh, mk, st);
    attn_full_backward(cm, &a, g, sh, 0, st);
    MARK(P_PHASES + P_ATTENTION);
    offset_scale_backward(cm, &a, g, sh, mk, st);
    project_hidden_backward(cm, &a, g, sh, mk, st);
    norm_shift_backward(cm, &a, g, sh, mk, st);
}
