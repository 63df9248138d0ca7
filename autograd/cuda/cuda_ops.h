/* autograd/cuda/cuda_ops.h: the GPU twins of the CPU ops (autograd/), one launcher per kernel.
 *
 * Each launcher takes device pointers and a stream and returns at once. Names pair with
 * the CPU op they reproduce (scalenorm_forward -> scalenorm_forward_cuda), and
 * tests/test_cuda_ops.c holds every one of them to its CPU twin.
 *
 * Layout: the CUDA backend runs every sequence padded to Tp = G*C positions (a whole
 * number of groups). Positions t >= T ("dead rows") are computed like the others but
 * carry no loss; by causality they influence no real position, and their gradients are
 * exactly zero, so the spec's zero-padding of the last group is reproduced without any
 * per-group special case. Rows are n = b*Tp + t; N = B*Tp.
 *
 * bf16 twins: where a launcher takes `bf16 *twin`, it also writes its output rounded to
 * bfloat16 there (NULL: not written); the twins feed the bf16 matrix products. */
#ifndef FLASH_CUDA_OPS_H
#define FLASH_CUDA_OPS_H
#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint16_t bf16_t;  /* storage of a bfloat16 (the kernels use __nv_bfloat16) */

/* ---- reductions (deterministic: fixed order, no atomics) ----------------------------- */
/* dst[j] += sum_n A[n*lda + j] * (Bm ? Bm[n*ldb + j] : 1), j < M. scratch: 64*M floats. */
void colsum_add_cuda(float *dst, const float *A, int lda, const float *Bm, int ldb, int N, int M,
                     float *scratch, cudaStream_t st);
/* dst[j] += sum_n A[n*lda + j] over a bf16 matrix */
void colsum16_add_cuda(float *dst, const bf16_t *A, int lda, int N, int M, float *scratch,
                       cudaStream_t st);
/* scratch[slice*M + j] = the sum of A's column j over the rows of slice (64 slices in order),
   the first stage of colsum_add_cuda */
void colsum_slices_cuda(float *scratch, const float *A, int lda, int N, int M, cudaStream_t st);
/* *dst += scale * sum_n src[n] (one float, summed in double) */
void sum_add_cuda(float *dst, const float *src, int n, float scale, cudaStream_t st);

/* ---- embedding ------------------------------------------------------------------------ */
/* h[b,t] = tok_emb[tokens[b*tstride + t]] + scale * pos_table[t] for t < T; token 0 for
   the dead rows t in [T, Tp). */
void embed_forward_cuda(float *h, const int *tokens, int tstride, const float *tok_emb,
                        const float *pos_scale, const float *pos_table, int B, int T, int Tp, int d,
                        cudaStream_t st);
/* d_tok_emb[v] += sum of dh over the rows whose token is v: order[start[v] .. start[v+1])
   lists those rows (real rows only), so each sum runs in a fixed order.
   d_pos_scale += sum_n dh_n . pos_table[t]. row_scratch: N floats. */
void embed_backward_cuda(float *d_tok_emb, float *d_pos_scale, const float *dh, const int *order,
                         const int *start, int V, const float *pos_table, int N, int Tp, int d,
                         float *row_scratch, cudaStream_t st);

/* ---- norms (with the token shift fused: shift_T = Tp when on, 0 when off) ------------ */
/* The forwards also write res_out = x + res_bias (row-wise; NULL: not): the residual's
   start, h + the output bias, read once with the norm's own pass over x. */
void scalenorm_forward_cuda(float *y, float *stat, const float *x, const float *g, int N, int d,
                            int shift_T, bf16_t *twin, float *res_out, const float *res_bias, cudaStream_t st);
/* dx += ..., dy is the gradient of the (shifted) output; row_scratch: N floats */
void scalenorm_backward_cuda(float *dx, float *dg, const float *dy, const float *x,
                             const float *stat, const float *g, int N, int d, int shift_T,
                             float *row_scratch, bf16_t *dx_twin, cudaStream_t st);
void layernorm_forward_cuda(float *y, float *stat, const float *x, const float *w, const float *b,
                            int N, int d, int shift_T, bf16_t *twin, float *res_out, const float *res_bias,
                            cudaStream_t st);
/* dx += ...; dw, db += ...; xhat_scratch: 2 x N x d floats, col_scratch: 64*d floats */
void layernorm_backward_cuda(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const float *stat, const float *w, int N, int d, int shift_T,
                             float *xhat_scratch, float *col_scratch, bf16_t *dx_twin,
                             cudaStream_t st);

/* ---- element-wise --------------------------------------------------------------------- */
/* u[n, j] += b[j]; y[n, j] = silu(u[n, j]); rows of ld, M columns (y NULL: the twin only;
   u16 given: u is that bf16 matrix, updated in place) */
void bias_silu_cuda(float *u, bf16_t *u16, float *y, const float *b, int N, int M, int ld,
                    bf16_t *twin, cudaStream_t st);
/* bf16: twin[n, j] = silu(u16[n, j] + b[j]) over v's columns j < e and z's 2e <= j < 2e + s
   of the [v | gate | z] rows (ld apart); u16 is not changed (its readers add b: pre_bias) */
void bias_silu_vz_cuda(const bf16_t *u16, const float *b, int N, int e, int s, int ld, bf16_t *twin,
                       cudaStream_t st);
/* y[n, j] = b[j] + (res ? res[n, j] : 0), N x M contiguous (y may be res) */
void bias_add_cuda(float *y, const float *b, const float *res, int N, int M, cudaStream_t st);
/* d[n, j] *= silu'(u[n, j]) for j < M, rows of ld (d and u alike; u from u16 when given),
   the result to the twin too when one is given; d NULL: in place on the twin (bf16 keeps
   that gradient as the twin only); pre_bias (NULL: none): silu' at u + pre_bias[j] */
void silu_backward_cuda(float *d, const float *u, const bf16_t *u16, int N, int M, int ld,
                        bf16_t *twin, const float *pre_bias, cudaStream_t st);
/* out = gate * att (gate rows gate_stride apart; read from gate16 when given; out NULL:
   the twin only). Wherever a launcher takes both x and x16, x16 (bf16) is read if given.
   pre_bias (bf16): the gate's columns are the product's raw output, gate16 (and u_gate16)
   point at them, and the kernel takes silu(raw + pre_bias) and silu' of that itself. */
void gate_forward_cuda(float *out, const float *gate, const bf16_t *gate16, int gate_stride,
                       const float *att, const bf16_t *att16, int N, int e, bf16_t *twin, const float *pre_bias,
                       cudaStream_t st);
/* d_gate = d_out att, times silu'(u_gate) when u_gate (the gate's pre-activation, same
   stride) is given: the gate's silu backward folded in; d_att = d_out gate (d_gate, d_att
   NULL: their twins only) */
void gate_backward_cuda(float *d_gate, int gate_stride, float *d_att, const float *d_out, const bf16_t *d_out16,
                        const float *gate, const bf16_t *gate16, const float *att, const bf16_t *att16,
                        const float *u_gate,
                        const bf16_t *u_gate16, int N, int e, bf16_t *d_gate_twin, bf16_t *d_att_twin,
                        const float *pre_bias, cudaStream_t st);

/* ---- offset-scale + rotary ------------------------------------------------------------ */
/* qk4: 4 blocks of N x s (quad_q, lin_q, quad_k, lin_k); z rows z_stride apart;
   rot_cos/rot_sin: Tp x r/2. With a twin the outputs are written to the twin only (bf16
   keeps them so), without one to qk4. */
void offset_scale_rotary_forward_cuda(float *qk4, const float *z, const bf16_t *z16, int z_stride,
                                      const float *gamma, const float *beta, const float *rot_cos,
                                      const float *rot_sin, int N, int Tp, int s, int r, bf16_t *twin,
                                      cudaStream_t st);
/* d_qk4 (or its bf16 form d_qk4_16) is read, not changed; dz written (rows z_stride apart;
   NULL: the twin only), times silu'(u_z) when u_z (z's pre-activation, same stride) is
   given (u_bias: plus u_bias[j], the bias bf16 leaves out of u); dgamma, dbeta +=.
   part_scratch: OSR_SLICES x 8 x s floats. */
#define OSR_SLICES 256
void offset_scale_rotary_backward_cuda(float *dz, float *dgamma, float *dbeta, const float *d_qk4,
                                       const bf16_t *d_qk4_16, const float *z, const bf16_t *z16,
                                       int z_stride, const float *u_z, const bf16_t *u_z16,
                                       const float *gamma, const float *rot_cos, const float *rot_sin,
                                       int N, int Tp, int s, int r, float *part_scratch, bf16_t *dz_twin,
                                       const float *u_bias, cudaStream_t st);

/* ---- attention pieces (the products are cuBLAS calls in cuda_model.cu) --------------- */
/* the largest group whose floats fit 48 KB of shared memory: the bias gradient's kernel
   keeps C of them, the decoder's attention 4 s + C + 256; model and decoder refuse more */
#define CUDA_MAX_GROUP 12288
/* sim[task, i, j] += bias_dist[i - j]; attn = phi(sim) for j <= i, else 0 (and sim 0);
   ntask groups of C x C. bias_dist: C floats, sqrt(s) * rel_bias[bucket(k)]. With a twin
   attn is written to the twin only. */
void attn_phi_forward_cuda(float *sim, float *attn, const float *bias_dist, int ntask, int C,
                           int laplace, bf16_t *attn_twin, cudaStream_t st);
void attn_bias_dist_cuda(float *bias_dist, const float *rel_bias, int C, int s, cudaStream_t st);
/* dsim = dA * phi'(sim) on j <= i, 0 above; in place on dA, or with a twin in place on the
   twin (it holds dA in bf16 on entry, dA unused). dist_part (NULL: skipped)
   gets attn_dist_parts(ntask, C) partial sums of dsim per distance i - j, C each. */
int attn_dist_parts(int ntask, int C);
void attn_phi_backward_cuda(float *dA, const float *sim, int ntask, int C, int laplace,
                            bf16_t *twin, float *dist_part, cudaStream_t st);
/* d_rel_bias[bucket(k)] += sqrt(s) * (sum of the nparts partial sums at distance k).
   scratch: 64 x C floats. */
void attn_rel_bias_backward_cuda(float *d_rel_bias, const float *dist_part, int nparts, int C, int s,
                                 float *scratch, cudaStream_t st);
/* exclusive prefix sum over the G groups of each of B sequences, blocks of se floats,
   in place: S_0 = 0, S_g = KV_0 + ... + KV_{g-1}; reverse = 1: exclusive suffix sum.
   twin_only (with a twin): the sums are stored in the twin only, kv keeps the inputs. */
void group_scan_cuda(float *kv, int B, int G, size_t se, int reverse, bf16_t *twin, int twin_only,
                     cudaStream_t st);

/* ---- FLASH-Quad's GAU layer (kernels_gau.cu) -------------------------------------------- */
/* q, k = z gamma_h + beta_h into qk (2 x N x s fp32, + twin); z read as ld_silu does */
void gau_offset_scale_forward_cuda(float *qk, bf16_t *twin, const float *z, const bf16_t *z16, const float *pre_bias,
                                   int z_stride, const float *gamma, const float *beta, int N, int s,
                                   cudaStream_t st);
/* d u_z = (dq gamma_0 + dk gamma_1) silu'(u_z) into dz_out (fp32) or dz16; zs = silu(u_z) */
void gau_offset_scale_backward_cuda(float *dz_out, bf16_t *dz16, int dz_stride, float *zs, const float *dqk,
                                    const float *u, const bf16_t *u16, const float *pre_bias, int u_stride,
                                    const float *gamma, int N, int s, cudaStream_t st);
/* a chunk of tc query rows from r0 against keys < kc: S = (S + bias) / T in place, A = phi(S)
   under the causal mask (into A or its twin A16) */
void gau_scores_forward_cuda(float *S, float *A, bf16_t *A16, const float *rel_bias, int B, int tc, int kc, int r0,
                             int ld, size_t bstride, float bias_scale, float inv_T, int laplace, cudaStream_t st);
/* dZ (holding dA) = dA phi'(S) / T under the mask (+ twin) */
void gau_scores_backward_cuda(float *dZ, bf16_t *dZ16, const float *S, int B, int tc, int kc, int r0, int ld,
                              size_t bstride, float inv_T, int laplace, cudaStream_t st);
/* part[b * Tp + k] = the chunk's sum of dZ at distance k, per sequence b */
void gau_dist_partial_cuda(float *part, const float *dZ, int B, int tc, int r0, int Tp, int ld, size_t bstride,
                           cudaStream_t st);
/* d_rel_bias[bucket] += bias_scale * the parts' sums over the bucket's distances (total: Tp
   scratch) */
void gau_bias_grad_cuda(float *d_rel_bias, float *total, const float *part, int nparts, int Tp, float bias_scale,
                        cudaStream_t st);
/* twin = bf16(x) over N rows of M columns at stride ld */
void gau_to_twin_cuda(bf16_t *twin, const float *x, int N, int M, int ld, cudaStream_t st);

/* ---- the Taylor linear attention (kernels_taylor.cu) ----------------------------------- */
/* out (N x Fp; out and/or its twin, either may be NULL) = phi(scale x) per row of x (N x s,
   or its twin x16), zero after F: the symmetric map of kernels_taylor.cu's header,
   F = 1 + s + s(s+1)/2 */
void taylor_features_cuda(float *out, bf16_t *twin, const float *x, const bf16_t *x16, int N, int s, int F,
                          int Fp, float scale, cudaStream_t st);
/* per row of nd (ld columns, num in 0..e-1, den in column e): y = num / max(den, eps), saved
   with den; att = y, or att += y with add (fp32, or the bf16 att when att16 is given) */
void taylor_norm_forward_cuda(float *y, float *den_out, float *att, bf16_t *att16, const float *nd, int ld, int N,
                              int e, float eps, int add, cudaStream_t st);
/* out (N x ld, + twin) = [dy / den' | -sum(dy y) / den' where den > eps, else 0 | 0 ...] */
void taylor_norm_backward_cuda(float *out, bf16_t *twin, const float *dy, const bf16_t *dy16, const float *y,
                               const float *den, int ld, int N, int e, float eps, cudaStream_t st);
/* d x_raw (N x s, into out or bf16 out16) from dfeat (N x Fp) plus, when extra is given, the
   row of each row's group of C (extra + (n / C) * extra_stride, entries f * extra_ld) */
void taylor_features_backward_cuda(float *out, bf16_t *out16, const float *dfeat, const float *extra,
                                   size_t extra_stride, int extra_ld, int C, const float *x, const bf16_t *x16,
                                   int N, int s, int Fp, float scale, cudaStream_t st);

/* ---- cross-entropy -------------------------------------------------------------------- */
/* losses[n] for real rows (t < T), 0 for dead ones; targets = tokens + 1 (stride tstride).
   *loss_acc += (sum of losses / (B*T)) * weight, in double (loss_acc NULL: not summed). */
void crossentropy_forward_cuda(float *losses, double *loss_acc, const float *logits,
                               const int *tokens, int tstride, int B, int T, int Tp, int V,
                               double weight, cudaStream_t st);
/* dlogits = (softmax - onehot) * dloss / (B*T) on real rows, 0 on dead rows */
void crossentropy_backward_cuda(float *dlogits, const float *logits, const int *tokens,
                                int tstride, int B, int T, int Tp, int V, float dloss,
                                bf16_t *twin, cudaStream_t st);

/* ---- optimizer ------------------------------------------------------------------------ */
/* One entry per block of the update: tensor index, first element, element count. */
typedef struct { int tensor; size_t start, count; } OptChunk;
/* chunk_ss[c] = sum of squares of grads over chunk c (nchunks of them) */
void opt_sumsq_cuda(double *chunk_ss, const float *grads, const OptChunk *chunks, int nchunks,
                    cudaStream_t st);
/* Per tensor: ss = sum of its chunks' squares (in a fixed order, double) into tensor_ss
   (ntensor doubles); total norm N; clip factor per tensor (mode 0 none, 1 global, 2 local)
   into clip[]; *norm_out = N. */
void opt_clip_cuda(float *clip, double *norm_out, double *tensor_ss, const double *chunk_ss,
                   const int *tensor_first_chunk, int ntensor, int mode, double c, cudaStream_t st);
/* AdamW over the chunks (trained tensors only); nothing when *norm is not finite.
   decays[tensor]: weight decay applies (the weight is first multiplied by decay_val =
   1 - lr*wd). The bf16 twin of the weights (NULL: none) is refreshed. */
void opt_adamw_cuda(float *params, const float *grads, float *m, float *v, const OptChunk *chunks,
                    int nchunks, const float *clip, const int *decays, float decay_val,
                    const double *norm,
                    float b1, float b2, float c1, float c2, float step, float inv_bc2, float eps,
                    bf16_t *twin,
                    cudaStream_t st);

/* ---- sampling (kernels_sample.cu) ------------------------------------------------------ */
#define SAMPLE_MAX_V 8192   /* the logits a sequence the sampler takes (its shared memory) */
/* tok[q] = sample_topk_u (trainer/sample.c) of row q of logits (n x V), keeping the k
   largest (1 <= k <= 256), with the uniform u[s n + q], where s = pos[0] - pos[1] (the
   decoder's position and its position at the first of these steps; pos NULL: s = 0); hist
   (NULL: not written) gets the byte at s n + q too. -1 (nothing launched) when V or k is
   out of range. */
int sample_topk_cuda(int *tok, int *hist, const float *logits, const double *u, const int *pos, int n,
                     int V, int k, double temperature, cudaStream_t st);

/* ---- conversion ----------------------------------------------------------------------- */
void to_bf16_cuda(bf16_t *dst, const float *src, size_t n, cudaStream_t st);

#ifdef __cplusplus
}
#endif
#endif
