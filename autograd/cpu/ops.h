/* autograd/cpu/ops.h: the layers of FLASHTransformer as forward/backward pairs, one file per
 * family: embed.c, norm.c (and the token shift), linear.c (and SiLU), rotary.c (offset-scale
 * and rotary), gate.c, loss.c; the attention's parts, attn_quad.c and attn_linear.c, behind
 * attn.h (included here). flash_layer.c puts them together into a layer; docs/model.md
 * gives the computation.
 *
 * Shapes: B batch, T sequence length, N = B*T rows, d model width, e hidden width,
 * s query/key width, C group size, G = ceil(T/C) groups, V vocabulary. Activations are
 * row-major (N, features) so that every Linear is one GEMM over all positions.
 * Every backward ADDS into weight gradients (so micro-batches accumulate) and, unless
 * its comment says otherwise, WRITES the input gradient. */
#ifndef FLASH_OPS_H
#define FLASH_OPS_H
#include "attn.h"
#include "gemm.h"
#include "real.h"
#include "relpos.h"
#include <stddef.h>


/* ---- embedding: h = tok_emb[x] + scale * [sin(t w) | cos(t w)] ------------------- */
/* pos_table: T x d unscaled sinusoids, filled by pos_table_fill. */
void pos_table_fill(real *pos_table, const real *inv_freq, int T, int d);
void embed_forward(real *h, const int *tokens, int tok_stride, const real *tok_emb,
                   const real *pos_scale, const real *pos_table, int B, int T, int d);
void embed_backward(real *d_tok_emb, real *d_pos_scale, const real *dh, const int *tokens,
                    int tok_stride, const real *pos_table, int B, int T, int d);

/* ---- norms (per row over d) ---------------------------------------------------------- */
/* scalenorm: y = g * x / max(||x|| d^-1/2, eps); stat[n] = 1/max(...) */
void scalenorm_forward(real *y, real *stat, const real *x, const real *g, int N, int d);
/* dx += ...: the residual stream's gradient accumulates the norm's input gradient. */
void scalenorm_backward(real *dx, real *dg, const real *dy, const real *x, const real *stat,
                        const real *g, int N, int d);
/* layernorm: y = (x - mean) * rstd * w + b; stat[2n] = mean, stat[2n+1] = rstd */
void layernorm_forward(real *y, real *stat, const real *x, const real *w, const real *b,
                       int N, int d);
void layernorm_backward(real *dx, real *dw, real *db, const real *dy, const real *x,
                        const real *stat, const real *w, int N, int d);  /* dx += */

/* ---- token shift: first ceil(d/2) features come from position t-1 (0 at t=0) ------- */
void token_shift_forward(real *x, int B, int T, int d);   /* in place */
void token_shift_backward(real *dx, int B, int T, int d); /* in place */

/* ---- linear: y = x W^T + b, W (out x in) ---------------------------------------------- */
void linear_forward(real *y, const real *x, const real *W, const real *b, int N, int in, int out);
/* y = x W^T + b + res (res N x out, may not alias y) */
void linear_forward_add(real *y, const real *x, const real *W, const real *b, const real *res,
                        int N, int in, int out);
/* u = x W^T + b and y = silu(u) in one go (the Linear+SiLU of to_hidden and to_qk) */
void linear_silu_forward(real *u, real *y, const real *x, const real *W, const real *b, int N,
                         int in, int out);
/* dx = dy W (beta: 0 writes, 1 adds); dW += dy^T x; db += colsum(dy). dx may be NULL.
   ws: room for the weight gradient's split-K partial sums (may be NULL; see gemm_way). */
void linear_backward(real *dx, real dx_beta, real *dW, real *db, const real *dy, const real *x,
                     const real *W, int N, int in, int out, const GemmScratch *ws);

/* ---- silu ------------------------------------------------------------------------------ */
void silu_forward(real *y, const real *u, size_t n);
void silu_backward(real *du, const real *dy, const real *u, size_t n); /* du may alias dy */

/* ---- offset-scale + rotary: o_k = rot(z * gamma[k] + beta[k]), k = 0..3 --------------
   qk4 holds 4 blocks of N x s: quad_q, lin_q, quad_k, lin_k. rot_cos/rot_sin: T x r/2. */
void rotary_table_fill(real *rot_cos, real *rot_sin, const real *freqs, int T, int r);
void offset_scale_rotary_forward(real *qk4, const real *z, int z_stride, const real *gamma,
                                 const real *beta, const real *rot_cos, const real *rot_sin,
                                 int B, int T, int s, int r);
/* d_qk4 is rotated back in place, then dz written, dgamma/dbeta accumulated. z and dz rows
   are z_stride apart. */
void offset_scale_rotary_backward(real *dz, real *dgamma, real *dbeta, real *d_qk4,
                                  const real *z, int z_stride, const real *gamma,
                                  const real *rot_cos, const real *rot_sin, int B, int T, int s, int r);
/* The same for any number of heads: qk holds `heads` blocks of N x s (GAU: 2, q and k, with
   r = 0: no rotation, rot_cos/rot_sin unread). heads 4 is offset_scale_rotary_*'s computation. */
void offset_scale_heads_forward(real *qk, int heads, const real *z, int z_stride, const real *gamma,
                                const real *beta, const real *rot_cos, const real *rot_sin,
                                int B, int T, int s, int r);
void offset_scale_heads_backward(real *dz, real *dgamma, real *dbeta, real *d_qk, int heads,
                                 const real *z, int z_stride, const real *gamma,
                                 const real *rot_cos, const real *rot_sin, int B, int T, int s, int r);

/* ---- attention: its quadratic and linear parts are rooms of their own (attn.h) ---------- */

/* ---- gating: out = gate * att --------------------------------------------------------- */
void gate_forward(real *out, const real *gate, int gate_stride, const real *att, int N, int e);
void gate_backward(real *d_gate, int gate_stride, real *d_att, const real *d_out,
                   const real *gate, const real *att, int N, int e);

/* ---- cross-entropy: loss_n = logsumexp(logits_n) - logits_n[target] ------------------ */
/* Returns the mean loss; writes losses[n] per row. */
double crossentropy_forward(real *losses, const real *logits, const int *targets,
                            int tok_stride, int B, int T, int V);
/* dlogits = (softmax - onehot) * dloss / N */
void crossentropy_backward(real *dlogits, const real *logits, const int *targets,
                           int tok_stride, int B, int T, int V, real dloss);

#endif
