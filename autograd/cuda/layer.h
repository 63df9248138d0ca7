/* autograd/cuda/layer.h: a layer of the CUDA model as rooms, each a forward and a backward that
 * enqueue their kernels and cuBLAS products on the model's stream, in the order the layer
 * needs them:
 *   norm + token shift, the projections (to_hidden and to_qk, offset-scale, rotary) and the
 *   output (gate, to_out, residual): layer_rooms.cu;
 *   the attention's two parts behind one interface: the quadratic part inside a group
 *   (attn_quad.cu) and the linear part across groups (attn_linear.cu).
 * layer_flash.cu is the FLASH layer as a sequence of room calls; it combines the attention's
 * parts (att = quad_out + lin_out) through the parts' output beta. Another layer kind
 * (FLASH-Quad: the quadratic part alone; a different linear attention) takes the rooms it
 * shares with FLASH and adds its own, never a copy of the layer. docs/model.md, "Forward" 2,
 * gives the computation; autograd/cpu/flash_layer.h is the CPU's same cut.
 *
 * These are C++ functions (their names are mangled), so they do not clash with the CPU's C
 * functions of the same names. */
#ifndef FLASH_CUDA_LAYER_H
#define FLASH_CUDA_LAYER_H
#include "cuda_model.h"

/* The micro-batch as every room sees it: B sequences, each padded to Tp = G*C rows */
typedef struct {
    const FlashConfig *c;
    int B, T, Tp, N, G, BG;   /* N = B*Tp rows, G = Tp/C groups a sequence, BG = B*G */
    int d, e, s, r, C, H, L;  /* widths (docs/model.md, "Sizes"); H = 2e + s: v | gate | z */
    size_t Nm;                /* rows of a layer's slice of the arena (cm->Nmax) */
    size_t Ns;                /* N*s: one of the four blocks of qk4 */
    float inv_C;              /* 1 / C: the scores' and the linear state's scale */
    int keep_state;           /* forward: the linear part's scanned state kept in fp32 too
                                 (the decoder's prefill copies it) */
} CudaShape;
CudaShape cuda_shape(const CudaModel *cm, const FlashConfig *c, int B, int T, int Tp, int keep_state);   /* cuda_model.cu */

/* Layer l's parameters, gradients and slices of the arena: the activations its forward saves
   for the backward, in fp32 and as bf16 twins (NULL in fp32; in bf16 several fp32 slices are
   empty: layout() in cuda_model.cu says which). */
typedef struct {
    int l;
    const LayerParams *P;
    LayerParams *D;               /* the gradients, added into by the backward */
    const bf16 *Wh_h, *Wo_h;      /* the bf16 twins of [Wh; Wqk] and Wo (NULL in fp32) */
    float *h, *h_out;             /* the residual stream before and after: res[l], res[l + 1] */
    float *xs, *stat, *hid_u, *hid, *qk4, *sim, *attn, *kv, *att, *gated, *bias_dist;
    bf16 *xs_h, *hid_h, *hid_u_h, *qk4_h, *attn_h, *kv_h, *gated_h, *att_h;
    /* bf16: att = quad_out + lin_out is written by the parts' products in bf16 (the second
       adds to the first's rounded values) and kept as that only */
    void *att_out;
    cudaDataType_t att_type;
    /* the Taylor linear part (NULL otherwise): its state [KV | Z] per group, y and den */
    float *tkv, *ty, *tden;
    bf16 *tkv_h;
} LayerActs;
void layer_acts(CudaModel *cm, const CudaShape *sh, int l, LayerActs *a);

/* The backward's gradient buffers, one set shared by all layers (the arena's A_D_* and their
   twins), and the scratch of the column sums (col) and row reductions (row). */
typedef struct {
    float *col, *row;
    float *d_res, *d_xs, *d_hid, *d_qk4, *d_att, *d_gated, *d_kv, *dsim;
    bf16 *d_res_h, *d_att_h, *d_kv_h, *dsim_h, *d_hid_h, *d_gated_h, *d_qk4_h;
    /* bf16: these products write their outputs in bf16 only: d_gated, the four of d_qk4, dA,
       v's columns of d_hid (the second of its two products adds to the first's rounded
       values) */
    cudaDataType_t h_type;
    void *d_gated_out, *d_hid_out, *d_qk4_out, *dsim_out;
    size_t qk4_el;                /* bytes per entry of d_qk4_out */
} LayerGrads;
void layer_grads(CudaModel *cm, LayerGrads *g);

/* ---- the rooms other than the attention (layer_rooms.cu) --------------------------------
   Each records its own profile phases (MARK); the attention's one phase spans both its parts
   and is recorded by the layer. */
/* xs = shift(norm(h)) (+ its bf16 twin), stat; h_out = h + bo, to which to_out adds */
void norm_shift_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st);
/* d_res += the norm's input gradient (d_xs shifted back by the kernel) */
void norm_shift_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                         Marks *mk, cudaStream_t st);
/* hid_u = xs [Wh; Wqk]^T, hid = silu(hid_u + b) (v | gate | z); qk4 = rot(z gamma_k + beta_k) */
void project_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st);
/* d_hid holds dv (the attention's) and d gate (the gate's); writes dz, takes v's columns
   through silu', then d_xs and the weights' and biases' gradients */
void project_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                      Marks *mk, cudaStream_t st);
/* the two halves of the projections, for a layer that shares the first and not the second
   (GAU: its own two-head offset-scale, no rotary): hid = silu([Wh; Wqk] xs + b), then FLASH's
   four-head offset-scale + rotary; backward in the other order (project_qk_backward writes dz
   with z's silu', project_hidden_backward takes v's through silu' and does the products) */
void project_hidden_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st);
void project_qk_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st);
void project_qk_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, Marks *mk,
                         cudaStream_t st);
void project_hidden_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                             Marks *mk, cudaStream_t st);
/* gated = gate * att; h_out += gated Wo^T (h + bo written by the norm) */
void output_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, Marks *mk, cudaStream_t st);
/* from d_res (the residual stream's gradient, passed on unchanged): d_gated, dWo, dbo, then
   d gate (d_hid's gate columns) and d_att */
void output_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                     Marks *mk, cudaStream_t st);

/* ---- the attention's parts: the same interface for each ---------------------------------
   Forward: out = out_beta * out + the part's output, into a->att_out (a->att_type), from
   qk4's blocks and v = hid[:, 0:e]; saves what its backward reads. Backward: from d_att,
   writes its blocks of d_qk4 and dv = dv_beta * dv + the part's share (into g->d_hid_out's
   first e columns). The layer picks the betas: FLASH's forward runs quad (0) then linear (1),
   its backward linear (0) then quad (1). */
/* attn_quad.cu: quad_out_i = sum_{j <= i in the group} phi(quad_q_i . quad_k_j / C +
   sqrt(s) bias[bucket(i - j)]) v_j; saves bias_dist, sim, attn; D->rel_bias += */
void attn_quad_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st);
void attn_quad_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                        float dv_beta, cudaStream_t st);
/* attn_linear.cu: KV_g = lin_k_g^T v_g / C, S_g = KV_0 + ... + KV_{g-1}, lin_out_i = lin_q_i S_g;
   saves kv (the S_g: bf16 twin only unless sh->keep_state) */
void attn_linear_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st);
void attn_linear_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                          float dv_beta, cudaStream_t st);
/* attn_taylor.cu: the linear part through the Taylor feature map (docs/model.md): fq =
   phi(lin_q / sqrt(s)), fk = phi(lin_k); [KV | Z]_g = sum_{g' < g} fk^T [v | 1];
   lin_out = fq KV_g / max(fq . Z_g, 1e-5); saves the state, y and den */
void attn_taylor_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st);
void attn_taylor_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh,
                          float dv_beta, cudaStream_t st);

/* attn_full.cu: FLASH-Quad's attention over the whole sequence, in chunks of query rows:
   out_i = sum_{j <= i} phi((q_i . k_j + sqrt(d) bias[bucket(i - j)]) / T) v_j, q and k the
   two blocks of a->qk4 (fp32, twins for the products); backward: dq, dk into g->d_qk4 (fp32),
   dv = dv_beta dv + its share into d_hid's v columns (fp32; the bf16 twin copied after),
   D->rel_bias += */
void attn_full_forward(CudaModel *cm, const LayerActs *a, const CudaShape *sh, float out_beta, cudaStream_t st);
void attn_full_backward(CudaModel *cm, const LayerActs *a, const LayerGrads *g, const CudaShape *sh, float dv_beta,
                        cudaStream_t st);

/* ---- the GAU layer (gau_layer.cu), the same contract as the FLASH layer's below */
void gau_layer_forward(CudaModel *cm, const CudaShape *sh, int l, Marks *mk);
void gau_layer_backward(CudaModel *cm, const CudaShape *sh, const LayerGrads *g, int l, Marks *mk);

/* ---- the FLASH layer (layer_flash.cu): res[l] -> res[l + 1]; the backward takes g->d_res =
   dL/d res[l + 1] to dL/d res[l] in place, adding the layer's weight gradients */
void flash_layer_forward(CudaModel *cm, const CudaShape *sh, int l, Marks *mk);
void flash_layer_backward(CudaModel *cm, const CudaShape *sh, const LayerGrads *g, int l, Marks *mk);

#endif
