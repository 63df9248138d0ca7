/* autograd/cuda/decode_persistent.cu: the decoder's persistent path, one cooperative kernel a
 * byte (dec_persistent_kernel<WT, NQ>) for a few sequences of the plain FLASH model: its
 * arguments, its instantiation per count of sequences, its set-up (dec_persistent_open,
 * FLASH_CUDA_DECODE_PERSISTENT), its launch and step, and the profile of its phases
 * (FLASH_CUDA_DECODE_PROFILE=1). It has a file of its own because it is the decoder's largest
 * piece and shares with the graph paths of cuda_decode.cu only the decoder's state and the
 * device helpers of decode.h (the row dots, the embedding, the rotary, the norm's formulas). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>

#include "decode.h"
#include "sample.cuh"

namespace cg = cooperative_groups;

/* ---- the persistent step (issue 21): one cooperative kernel a byte ----------------------
   For a few sequences of the plain FLASH model (no taylor) the whole byte is one launch:
   the kernel boundaries of the fused path become grid-wide barriers (cg grid.sync, far
   cheaper than a graph node: docs/cuda-notes.md), three a layer:
     A  every block: the norm + shift of the n rows into shared memory (layer 0: the
        embedding, computed by every block; each writes the rows of h it owns in C).
        Blocks 0 .. nzb - 1 (the z-blocks) own PK_ZF features of z each, rotary pairs
        never split: one to_qk row a warp, offset-scale and rotary of their features, the
        current row's keys into the group cache, and the partial dots of the query with
        the group's keys over their features (zpart). The other blocks: the value and
        gate rows of to_hidden, two a warp loaded before the barrier, any further ones
        after it.
     B  tiles of PK_COLS value columns of a sequence: a_k = phi(sum_b zpart_b[k] / C +
        sqrt(s) bias[bucket(j - k)]) (the z-blocks' partials added in a fixed order),
        att = sum_k a_k v_k + lin_q S, gated = gate att; at the group's end S += lin_k^T v / C
        (each thread updates the entries of S it read). Block 0 moves this position's norm
        output into prev (every block has read the old one before barrier A-B).
     C  to_out: h = bo + (h + gated Wo^T), one warp a row of h.
   then the final layernorm and the logits, written to mapped host memory (no copy).
   Each block owns the same rows and columns at every layer and byte, so a value a block
   reads back (h's rows in C, S's entries in B) is one it wrote itself. Buffers written
   inside the kernel are read with plain loads (never __ldg): grid.sync orders them. */
#define PK_WARPS 8
#define PK_THREADS (32 * PK_WARPS)
#define PK_ZF 8                           /* z features of a z-block: one row a warp (PK_ZF <= PK_WARPS) */
#define PK_COLS 8                         /* value columns of a tile in phase B */
#define PK_SLICES (PK_THREADS / PK_COLS)  /* key slices a column's sums are split into */

typedef struct {
    const float *norm_g, *norm_w, *norm_b, *bh, *gamma, *beta, *rot_freqs, *rel_bias, *bo;
    const void *wh, *wo;                  /* fp32 weights or their bf16 twins */
    float *S, *gq, *gk, *gv, *prev;       /* this layer's state, n sequences */
} PkLayer;

typedef struct {
    const PkLayer *layer;
    float *h, *hid, *gated, *xn, *zpart, *qlin;
    float *logits;              /* mapped host memory (NULL when the device samples) */
    float *logits_dev;          /* the same in device memory, what the device's sampler reads */
    int *pos;
    /* bytes a launch: 1 (the tokens from the kernel's argument), or when the device samples
       (u not NULL) each byte's tokens sampled from logits_dev first, with the uniforms
       u[b n + q], into hist[b n + q] */
    int nbytes, samp_k;
    double temp;
    const double *u;
    int *hist;
    const float *tok_emb, *pos_scale, *inv_freq, *lnf_w, *lnf_b, *b_logits;
    const void *w_logits;
    int L, n, d, e, s, r, C, V, layernorm, shift, laplace, nzb;
    unsigned long long *prof;   /* FLASH_CUDA_DECODE_PROFILE=1: the phases' times (else NULL) */
} PkArgs;

/* The profile of a byte (FLASH_CUDA_DECODE_PROFILE=1), in ns of %globaltimer: phase p (A, B
   and C of each layer, 3 l + 0..2, then the head, 3 L) starts when block 0 leaves the barrier
   before it (slot 2 p + 1) and its work ends when the last block is done (slot 2 p, the
   maximum over blocks); the gap to the next start is the barrier's own cost. */
__device__ __forceinline__ unsigned long long pk_now() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#define PK_START(p) \
    if (a.prof && tid == 0 && blockIdx.x == 0) a.prof[2 * (p) + 1] = pk_now();
/* sub-steps of layer 1 in blocks 0 (a z-block) and nb - 1, after a block barrier */
#define PK_MARK(i)                                                                                     \
    if (a.prof && l == 1 && (blockIdx.x == 0 || blockIdx.x == nb - 1)) {                               \
        __syncthreads();                                                                               \
        if (tid == 0) a.prof[2 * (3 * a.L + 1) + 3 + (blockIdx.x == 0 ? 0 : 16) + (i)] = pk_now();  \
    }
#define PK_END(p)                                             \
    if (a.prof) {                                             \
        __syncthreads();                                      \
        if (tid == 0) atomicMax(a.prof + 2 * (p), pk_now()); \
    }

/* the profile's slots: start and end of the 3 L + 1 phases, block 0's clocks and its end,
   the 32 sub-step marks */
static size_t pk_prof_slots(int L) { return 2 * (3 * (size_t)L + 1) + 3 + 32; }

typedef struct { int tok[DEC_FUSED_SEQ]; } PkTokens;

/* floats of dynamic shared memory: the n rows (of d or e), the n rows of prev, the phases'
   scratch; or, at a byte's start, the sampler's (which reuses them) */
static size_t pk_shared_floats(int n, int d, int e, int C, int V) {
    const size_t rows = (size_t)n * (d > e ? d : e), prev = (size_t)n * d;
    const size_t zb = (size_t)n * 5 * PK_ZF, att = (size_t)C + PK_SLICES * PK_COLS;
    const size_t layer = rows + prev + (zb > att ? zb : att);
    const size_t samp = V <= SAMPLE_MAX_V ? SAMPLE_SHARED_BYTES(V, 256) / sizeof(float) + 1 : 0;
    return layer > samp ? layer : samp;
}

/* dst = src (count floats) and dst2 = src2 (count2, src2 NULL: none) into shared memory,
   each thread issuing all its loads before its first store: one trip to L2, not one per
   element (the loop's loads would otherwise wait on its stores) */
#define PK_STAGE 4
__device__ __forceinline__ void pk_stage(float *dst, const float *src, int count, float *dst2, const float *src2,
                                         int count2) {
    for (int k0 = threadIdx.x; k0 < count || (src2 && k0 < count2); k0 += PK_STAGE * PK_THREADS) {
        float v[PK_STAGE], v2[PK_STAGE];
#pragma unroll
        for (int u = 0; u < PK_STAGE; u++) {
            const int k = k0 + u * PK_THREADS;
            v[u] = k < count ? src[k] : 0.0f;
            v2[u] = src2 && k < count2 ? src2[k] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < PK_STAGE; u++) {
            const int k = k0 + u * PK_THREADS;
            if (k < count) dst[k] = v[u];
            if (src2 && k < count2) dst2[k] = v2[u];
        }
    }
}

/* rows (n x d, shared, in place) = norm(rows), shifted against prev_sh (shared) as
   dec_norm_rows does; the whole block takes each sum (one warp a row leaves a single warp
   in a serial chain of shared loads); xn_out (NULL: none) gets the
   unshifted output from block 0. The block's sums add in another order than
   dec_norm_rows' warp sums, so only the scale and output formulas are shared (decode.h). */
template <int NQ>
__device__ void pk_norm_rows(float *rows, float *xn_out, const float *prev_sh, const float *g, const float *w,
                             const float *b, int layernorm, int shift, int n, int d) {
    __shared__ float red[2][PK_WARPS][NQ];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, half = (d + 1) / 2;
    float s1[NQ], mean[NQ], scale[NQ];
#pragma unroll
    for (int q = 0; q < NQ; q++) {
        s1[q] = 0;
        if (q < n)
            for (int k = tid; k < d; k += PK_THREADS) {
                const float x = rows[(size_t)q * d + k];
                s1[q] += layernorm ? x : x * x;
            }
        s1[q] = warp_sum(s1[q]);
        if (lane == 0) red[0][warp][q] = s1[q];
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < NQ; q++) {
        float tot = 0;
        for (int v = 0; v < PK_WARPS; v++) tot += red[0][v][q];
        mean[q] = layernorm ? tot / d : 0.0f;
        scale[q] = dec_rms_scale(tot, d);
    }
    if (layernorm) {
#pragma unroll
        for (int q = 0; q < NQ; q++) {
            float v2 = 0;
            if (q < n)
                for (int k = tid; k < d; k += PK_THREADS) {
                    const float c = rows[(size_t)q * d + k] - mean[q];
                    v2 += c * c;
                }
            v2 = warp_sum(v2);
            if (lane == 0) red[1][warp][q] = v2;
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < NQ; q++) {
            float tot = 0;
            for (int v = 0; v < PK_WARPS; v++) tot += red[1][v][q];
            scale[q] = dec_ln_scale(tot, d);
        }
    }
#pragma unroll
    for (int q = 0; q < NQ; q++)
        if (q < n)
            for (int k = tid; k < d; k += PK_THREADS) {
                const size_t i = (size_t)q * d + k;
                const float x = rows[i];
                const float xn = dec_norm_out(x, mean[q], scale[q], g, w, b, k, layernorm);
                rows[i] = shift && k < half ? prev_sh[i] : xn;
                if (xn_out && blockIdx.x == 0) xn_out[i] = xn;
            }
}

template <typename WT, int NQ>
__global__ void __launch_bounds__(PK_THREADS, 1) dec_persistent_kernel(PkArgs a, PkTokens tk) {
    cg::grid_group grid = cg::this_grid();
    extern __shared__ float sm[];
    const int n = a.n, d = a.d, e = a.e, s = a.s, C = a.C, H = 2 * e + s, V = a.V;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    if (a.prof && blockIdx.x == 0 && tid == 0) a.prof[2 * (3 * a.L + 1)] = (unsigned long long)clock64();
    const int nb = gridDim.x, gw = blockIdx.x * PK_WARPS + warp, W = nb * PK_WARPS;
    const int zblock = blockIdx.x < a.nzb;
    const long t0 = a.pos[0];   /* read by all before barrier A-B; block 0 writes it last */
    const int pairs = a.r / 2;
    const float inv_C = 1.0f / C, bias_scale = sqrtf((float)s);
    float *rows = sm, *prev_sh = sm + (size_t)n * (d > e ? d : e), *scr = prev_sh + (size_t)n * d;
    typename W4<WT>::raw pre[DEC_PRE];
    float acc[DEC_FUSED_SEQ];
    /* phase A's rows: warp w < PK_ZF of a z-block takes z feature b PK_ZF + w; every other
       warp value/gate rows vi, vi + vstep, ... (the first loaded before the barrier) */
    const int zf = blockIdx.x * PK_ZF + warp, zwarp = zblock && warp < PK_ZF;
    const int vi = zblock ? blockIdx.x * (PK_WARPS - PK_ZF) + (warp - PK_ZF)
                          : a.nzb * (PK_WARPS - PK_ZF) + (blockIdx.x - a.nzb) * PK_WARPS + warp;
    const int vstep = W - a.nzb * PK_ZF;
    const int row_a = zwarp ? (zf < s ? 2 * e + zf : -1) : (vi < 2 * e ? vi : -1);
    const int row_b = !zwarp && row_a >= 0 && row_a + vstep < 2 * e ? row_a + vstep : -1;   /* also prefetched */
    typename W4<WT>::raw pre2[DEC_PRE];
    /* the z-block thread's rotary item (sequence q, feature f0 + w) and partial-dot item */
    const int zq = tid / PK_ZF, zw = tid % PK_ZF, zfe = blockIdx.x * PK_ZF + zw;
    const int zitem = zblock && zq < n && zfe < s;
    const int nf = zblock ? (s - blockIdx.x * PK_ZF < PK_ZF ? s - blockIdx.x * PK_ZF : PK_ZF) : 0;
    __shared__ int samp_tok[DEC_FUSED_SEQ];
    const int *toks = a.u ? samp_tok : tk.tok;
    for (int bi = 0; bi < a.nbytes; bi++) {
        const long t = t0 + bi;
        const int j = (int)(t % C);
        if (a.u) {
            /* every block samples the byte itself from the logits (the same ones, so the same
               bytes): no barrier after it; the one before orders the last byte's logits */
            if (bi > 0) grid.sync();
            for (int q = 0; q < n; q++) {
                const long at = (long)bi * n + q;
                const int b = sample_topk_block(a.logits_dev + (size_t)q * V, V, a.samp_k, a.temp, a.u[at],
                                                reinterpret_cast<double *>(sm));
                if (tid == 0) {
                    samp_tok[q] = b;
                    if (blockIdx.x == 0) a.hist[at] = b;
                }
            }
            __syncthreads();
        }
        for (int l = 0; l < a.L; l++) {
            const PkLayer *P = a.layer + l;
            const WT *Wh = (const WT *)P->wh, *Wo = (const WT *)P->wo;
            /* ---- loads that do not depend on this layer's input, issued before the barrier ---- */
            dec_prefetch<WT>(pre, Wh + (size_t)(row_a >= 0 ? row_a : 0) * d, d, row_a >= 0);
            dec_prefetch<WT>(pre2, Wh + (size_t)(row_b >= 0 ? row_b : 0) * d, d, row_b >= 0);
            const float bias_a = row_a >= 0 ? P->bh[row_a] : 0.0f, bias_b = row_b >= 0 ? P->bh[row_b] : 0.0f;
            float gb[4][4], rc = 1, rs = 0;   /* gamma, beta of f and of its rotary partner; cos, sin */
            const int zrot = zfe < 2 * pairs;
            if (zitem) {
                const int fp = zrot ? zfe ^ 1 : zfe;
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    gb[k][0] = P->gamma[k * s + zfe]; gb[k][1] = P->beta[k * s + zfe];
                    gb[k][2] = P->gamma[k * s + fp]; gb[k][3] = P->beta[k * s + fp];
                }
                if (zrot) dec_rotary_cs(t, P->rot_freqs[zfe / 2], &rc, &rs);
            }
            /* the group's earlier keys over this z-block's features, first item of the thread */
            float key0[PK_ZF];
            const int kq0 = zblock ? tid / (j + 1) : n, kk0 = zblock ? tid % (j + 1) : 0;
            const int key_pre = zblock && kq0 < n && kk0 < j;
#pragma unroll
            for (int w = 0; w < PK_ZF; w++)
                key0[w] = key_pre && w < nf ? P->gq[((size_t)kq0 * C + kk0) * s + blockIdx.x * PK_ZF + w] : 0.0f;
            if (l > 0) {
                PK_END(3 * l - 1);
                grid.sync();   /* C-A: h complete */
            }
            PK_START(3 * l);
            PK_MARK(0);
            /* ---- A ---- */
            if (l == 0) {
                const double tt = (double)t;
                for (int k = tid; k < n * d; k += PK_THREADS) {
                    const int i = k / d, f = k % d;
                    rows[k] = dec_embed(a.tok_emb, toks + i, tt, a.pos_scale, a.inv_freq, f, d);
                }
                if (a.shift) pk_stage(prev_sh, P->prev, n * d, NULL, NULL, 0);
                __syncthreads();
                if (lane < n)
                    for (int rr = gw; rr < d; rr += W) a.h[(size_t)lane * d + rr] = rows[(size_t)lane * d + rr];
            } else {
                pk_stage(rows, a.h, n * d, prev_sh, a.shift ? P->prev : NULL, n * d);
            }
            __syncthreads();
            PK_MARK(1);
            /* the norm in place: each lane reads its features before writing them */
            pk_norm_rows<NQ>(rows, a.shift ? a.xn : NULL, prev_sh, P->norm_g, P->norm_w, P->norm_b, a.layernorm, a.shift, n,
                         d);
            __syncthreads();
            PK_MARK(2);
            float *zs = scr, *q4 = scr + n * PK_ZF;   /* z-blocks: zs n x PK_ZF, q4 n x 4 x PK_ZF */
            if (row_a >= 0) {
                dec_row_dots<4, WT, NQ>(acc, Wh + (size_t)row_a * d, rows, n, d, pre);
                if (lane == 0)
#pragma unroll
                    for (int q = 0; q < NQ; q++)
                        if (q < n) {
                            const float hv = silu_f(acc[q] + bias_a);
                            if (zwarp) zs[q * PK_ZF + warp] = hv;
                            else a.hid[(size_t)q * H + row_a] = hv;
                        }
            }
            if (row_b >= 0) {
                dec_row_dots<4, WT, NQ>(acc, Wh + (size_t)row_b * d, rows, n, d, pre2);
                if (lane == 0)
#pragma unroll
                    for (int q = 0; q < NQ; q++)
                        if (q < n) a.hid[(size_t)q * H + row_b] = silu_f(acc[q] + bias_b);
                for (int rr = row_b + vstep; rr < 2 * e; rr += vstep) {
                    dec_prefetch<WT>(pre, Wh + (size_t)rr * d, d, true);
                    dec_row_dots<4, WT, NQ>(acc, Wh + (size_t)rr * d, rows, n, d, pre);
                    if (lane == 0)
#pragma unroll
                        for (int q = 0; q < NQ; q++)
                            if (q < n) a.hid[(size_t)q * H + rr] = silu_f(acc[q] + P->bh[rr]);
                }
            }
            PK_MARK(3);
            if (zblock) {
                __syncthreads();
                if (zitem) {
                    const float z = zs[zq * PK_ZF + zw], zp = zrot ? zs[zq * PK_ZF + (zw ^ 1)] : 0.0f;
#pragma unroll
                    for (int k = 0; k < 4; k++) {
                        const float o = dec_z_offset(z, gb[k][0], gb[k][1]);
                        float v = o;
                        if (zrot) v = dec_z_rotate(o, dec_z_offset(zp, gb[k][2], gb[k][3]), rc, rs, zfe & 1);
                        q4[(zq * 4 + k) * PK_ZF + zw] = v;
                    }
                    P->gq[((size_t)zq * C + j) * s + zfe] = q4[(zq * 4 + 2) * PK_ZF + zw];
                    P->gk[((size_t)zq * C + j) * s + zfe] = q4[(zq * 4 + 3) * PK_ZF + zw];
                    a.qlin[(size_t)zq * s + zfe] = q4[(zq * 4 + 1) * PK_ZF + zw];
                }
                __syncthreads();
                if (a.prof && l == 1 && blockIdx.x == 0 && tid == 0) a.prof[2 * (3 * a.L + 1) + 3 + 4] = pk_now();
                /* the query's dots with the group's keys k <= j over this block's features */
                const int f0 = blockIdx.x * PK_ZF;
                for (int idx = tid; idx < n * (j + 1); idx += PK_THREADS) {
                    const int q = idx / (j + 1), k = idx % (j + 1);
                    const float *qq = q4 + (q * 4 + 0) * PK_ZF;
                    float key[PK_ZF];
#pragma unroll
                    for (int w = 0; w < PK_ZF; w++) {
                        const float *kr = k == j ? q4 + (q * 4 + 2) * PK_ZF : P->gq + ((size_t)q * C + k) * s + f0;
                        key[w] = w >= nf ? 0.0f : idx == tid && key_pre ? key0[w] : kr[w];
                    }
                    float dot = 0;
#pragma unroll
                    for (int w = 0; w < PK_ZF; w++)
                        if (w < nf) dot += qq[w] * key[w];
                    a.zpart[((size_t)q * a.nzb + blockIdx.x) * C + k] = dot;
                }
            }
            PK_MARK(5);
            /* C's first row of to_out, its bias and h's entries, loaded across the barriers */
            dec_prefetch<WT>(pre, Wo + (size_t)(gw < d ? gw : 0) * e, e, gw < d);
            const float bo_c = gw < d ? P->bo[gw] : 0.0f;
            const float h_c = gw < d && lane < n ? a.h[(size_t)lane * d + gw] : 0.0f;
            PK_MARK(6);
            PK_END(3 * l);
            grid.sync();   /* A-B */
            PK_START(3 * l + 1);
            /* ---- B ---- */
            if (a.shift && blockIdx.x == 0)
                for (int k = tid; k < n * d; k += PK_THREADS) P->prev[k] = a.xn[k];
            const int tiles_per_seq = (e + PK_COLS - 1) / PK_COLS;
            float *wa = scr, *part = scr + C;
            for (int tile = blockIdx.x; tile < n * tiles_per_seq; tile += nb) {
                const int q = tile / tiles_per_seq, f = (tile % tiles_per_seq) * PK_COLS + tid % PK_COLS;
                const int sl = tid / PK_COLS, live = f < e;
                const float *Gk = P->gk + (size_t)q * C * s, *ql = a.qlin + (size_t)q * s;
                float *Gv = P->gv + (size_t)q * C * e, *S = P->S + (size_t)q * s * e;
                /* every load of the tile first: the value and gate, this thread's keys' values,
                   its rows of S and of lin_q, the partial dots of its key */
                const float v = live ? a.hid[(size_t)q * H + f] : 0.0f, gate = live ? a.hid[(size_t)q * H + e + f] : 0.0f;
                const int kd = tid <= j ? tid : -1;
                const float rb = kd >= 0 ? P->rel_bias[rel_pos_bucket(j - kd)] : 0.0f;
                float dsum = 0;
                if (kd >= 0)
#pragma unroll 8
                    for (int b = 0; b < a.nzb; b++) dsum += a.zpart[((size_t)q * a.nzb + b) * C + kd];
                for (int k = tid + PK_THREADS; k <= j; k += PK_THREADS) {   /* groups longer than the block */
                    float dt = 0;
                    for (int b = 0; b < a.nzb; b++) dt += a.zpart[((size_t)q * a.nzb + b) * C + k];
                    wa[k] = phi_f(dt * inv_C + bias_scale * P->rel_bias[rel_pos_bucket(j - k)], a.laplace);
                }
                if (kd >= 0) wa[kd] = phi_f(dsum * inv_C + bias_scale * rb, a.laplace);
                __syncthreads();
                float att = 0;
                if (live) {
#pragma unroll 4
                    for (int k = sl; k < j; k += PK_SLICES) att += wa[k] * Gv[(size_t)k * e + f];
                    if (sl == j % PK_SLICES) att += wa[j] * v;
#pragma unroll 4
                    for (int u = sl; u < s; u += PK_SLICES) att += ql[u] * S[(size_t)u * e + f];
                }
                part[sl * PK_COLS + tid % PK_COLS] = att;
                __syncthreads();
                if (sl == 0 && live) {
                    float tot = 0;
                    for (int b = 0; b < PK_SLICES; b++) tot += part[b * PK_COLS + tid % PK_COLS];
                    a.gated[(size_t)q * e + f] = gate * tot;
                    Gv[(size_t)j * e + f] = v;
                }
                if (j == C - 1 && live)
                    for (int u = sl; u < s; u += PK_SLICES) {   /* the entries of S this thread read */
                        float g = 0;
                        for (int k = 0; k < j; k++) g += Gk[(size_t)k * s + u] * Gv[(size_t)k * e + f];
                        g += Gk[(size_t)j * s + u] * v;
                        S[(size_t)u * e + f] += inv_C * g;
                    }
                __syncthreads();   /* wa and part are the next tile's */
            }
            PK_END(3 * l + 1);
            grid.sync();   /* B-C */
            PK_START(3 * l + 2);
            PK_MARK(7);
            /* ---- C ---- */
            pk_stage(rows, a.gated, n * e, NULL, NULL, 0);
            __syncthreads();
            PK_MARK(8);
            for (int rr = gw; rr < d; rr += W) {
                if (rr != gw) dec_prefetch<WT>(pre, Wo + (size_t)rr * e, e, true);
                dec_row_dots<4, WT, NQ>(acc, Wo + (size_t)rr * e, rows, n, e, pre);
                const float hq = rr == gw ? h_c : lane < n ? a.h[(size_t)lane * d + rr] : 0.0f;
                const float bq = rr == gw ? bo_c : P->bo[rr];
#pragma unroll
                for (int q = 0; q < NQ; q++)
                    if (q < n && lane == q) a.h[(size_t)q * d + rr] = bq + (hq + acc[q]);
            }
            PK_MARK(9);
        }
        /* ---- the head ---- */
        const WT *Wl = (const WT *)a.w_logits;
        dec_prefetch<WT>(pre, Wl + (size_t)(gw < V ? gw : 0) * d, d, gw < V);
        const float bl = gw < V ? a.b_logits[gw] : 0.0f;
        PK_END(3 * a.L - 1);
        grid.sync();   /* h complete */
        PK_START(3 * a.L);
        pk_stage(rows, a.h, n * d, NULL, NULL, 0);
        __syncthreads();
        pk_norm_rows<NQ>(rows, NULL, NULL, NULL, a.lnf_w, a.lnf_b, 1, 0, n, d);
        __syncthreads();
        for (int rr = gw; rr < V; rr += W) {
            if (rr != gw) dec_prefetch<WT>(pre, Wl + (size_t)rr * d, d, true);
            dec_row_dots<4, WT, NQ>(acc, Wl + (size_t)rr * d, rows, n, d, pre);
            const float bq = rr == gw ? bl : a.b_logits[rr];
#pragma unroll
            for (int q = 0; q < NQ; q++)
                if (q < n && lane == q) {
                    if (a.logits) a.logits[(size_t)q * V + rr] = acc[q] + bq;
                    a.logits_dev[(size_t)q * V + rr] = acc[q] + bq;
                }
        }
        PK_END(3 * a.L);
    }   /* the bytes */
    if (blockIdx.x == 0 && tid == 0) a.pos[0] = (int)(t0 + a.nbytes);
    if (a.prof && blockIdx.x == 0 && tid == 0) {   /* block 0's clock against the timer: its SM's MHz */
        a.prof[2 * (3 * a.L + 1) + 1] = (unsigned long long)clock64();
        a.prof[2 * (3 * a.L + 1) + 2] = pk_now();
    }
}

/* the kernel for n sequences: instantiated for at most 1, 2, 4 and 8 of them, so that
   the code a byte runs through stays small (with the loops over 8 sequences unrolled it
   outgrew the instruction cache, and the byte slowed: docs/cuda-notes.md) */
static int pk_nq(int n) { return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8; }
static const void *pk_kernel(int bf16, int n) {
    switch (pk_nq(n) * 2 + (bf16 ? 1 : 0)) {
    case 2: return (const void *)dec_persistent_kernel<float, 1>;
    case 3: return (const void *)dec_persistent_kernel<__nv_bfloat16, 1>;
    case 4: return (const void *)dec_persistent_kernel<float, 2>;
    case 5: return (const void *)dec_persistent_kernel<__nv_bfloat16, 2>;
    case 8: return (const void *)dec_persistent_kernel<float, 4>;
    case 9: return (const void *)dec_persistent_kernel<__nv_bfloat16, 4>;
    case 16: return (const void *)dec_persistent_kernel<float, 8>;
    default: return (const void *)dec_persistent_kernel<__nv_bfloat16, 8>;
    }
}

template <typename WT>
static PkArgs pk_args(Model *m, const WT *wbase) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    const FlashConfig *c = &m->cfg;
    const ModelParams *p = &cm->p;
    PkArgs a;
    memset(&a, 0, sizeof a);
    a.layer = (const PkLayer *)dc->pk_layer;
    a.h = dc->h; a.hid = dc->hid; a.gated = dc->gated; a.xn = dc->xs; a.zpart = dc->zpart;
    a.qlin = dc->qlin; a.logits = dc->logits_mapped; a.logits_dev = dc->logits; a.pos = dc->d_pos;
    a.nbytes = 1;
    a.tok_emb = p->tok_emb; a.pos_scale = p->pos_scale; a.inv_freq = p->inv_freq;
    a.lnf_w = p->lnf_w; a.lnf_b = p->lnf_b; a.b_logits = p->b_logits;
    a.w_logits = wbase ? (const void *)param_twin(cm, p->w_logits) : (const void *)p->w_logits;
    a.L = c->depth; a.n = dc->nseq; a.d = c->dim; a.e = config_hidden(c); a.s = c->query_key_dim;
    a.r = config_rotary(c); a.C = c->group_size; a.V = c->num_tokens;
    a.layernorm = c->norm_type == NORM_LAYERNORM; a.shift = c->shift_tokens; a.laplace = c->attn_fn == ATTN_LAPLACE;
    a.nzb = (a.s + PK_ZF - 1) / PK_ZF;
    a.prof = dc->prof_dev;
    return a;
}

/* The persistent step is taken where it applies: the plain FLASH model (taylor keeps the
   fused path), at most PK_AUTO_SEQ sequences (past them the fused kernels were as fast or
   faster on the H200: docs/cuda-notes.md), widths d and e that are multiples of 4 (16-byte
   weight loads), a device with cooperative launch and more SMs than z-blocks, and pinned
   logits the device can address. FLASH_CUDA_DECODE_PERSISTENT=0 turns it off, =1 takes it
   up to DEC_FUSED_SEQ sequences (A/B runs, tests). Returns 1 when set up. */
#define PK_AUTO_SEQ 2
int dec_persistent_wanted(const Model *m, int n) {
    const FlashConfig *c = &m->cfg;
    const char *env = getenv("FLASH_CUDA_DECODE_PERSISTENT"), *fz = getenv("FLASH_CUDA_DECODE_FUSED");
    if ((env && strcmp(env, "0") == 0) || (fz && strcmp(fz, "0") == 0)) return 0;
    const int force = env && strcmp(env, "1") == 0;
    return !(n > (force ? DEC_FUSED_SEQ : PK_AUTO_SEQ) || c->model != MODEL_FLASH || config_taylor_width(c) ||
             c->dim % 4 || config_hidden(c) % 4);
}

int dec_persistent_open(Model *m, CudaDecoder *dc) {
    CudaModel *cm = (CudaModel *)m->impl;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim, C = c->group_size;
    if (!dec_persistent_wanted(m, n)) return 0;
    int coop = 0, sms = 0;
    cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, cm->dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, cm->dev);
    const int nzb = (s + PK_ZF - 1) / PK_ZF;
    if (!coop || sms <= nzb) return 0;
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    const void *fn = pk_kernel(wb != NULL, n);
    const size_t smem = sizeof(float) * pk_shared_floats(n, d, e, C, c->num_tokens);
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, PK_THREADS, smem) != cudaSuccess || per_sm < 1) {
        cudaGetLastError();
        return 0;
    }
    void *mapped = NULL;
    if (cudaHostGetDevicePointer(&mapped, dc->h_logits, 0) != cudaSuccess) { cudaGetLastError(); return 0; }
    PkLayer *hl = (PkLayer *)calloc((size_t)c->depth, sizeof *hl);
    if (!hl) return 0;
    const ModelParams *p = &cm->p;
    /* the weights' addresses, fp32 or in the bf16 twin */
#define PK_W(x) (wb ? (const void *)param_twin(cm, (x)) : (const void *)(x))
    int aligned = (uintptr_t)PK_W(p->w_logits) % 16 == 0;
    for (int l = 0; l < c->depth; l++) {
        const LayerParams *P = &p->layer[l];
        PkLayer *q = &hl[l];
        q->norm_g = P->norm_g; q->norm_w = P->norm_w; q->norm_b = P->norm_b; q->bh = P->bh;
        q->gamma = P->gamma; q->beta = P->beta; q->rot_freqs = P->rot_freqs; q->rel_bias = P->rel_bias; q->bo = P->bo;
        q->wh = PK_W(P->wh);
        q->wo = PK_W(P->wo);
        aligned &= (uintptr_t)q->wh % 16 == 0 && (uintptr_t)q->wo % 16 == 0;
        q->S = dc->kv + (size_t)l * n * s * e;
        q->gq = dc->gq + (size_t)l * n * C * s;
        q->gk = dc->gk + (size_t)l * n * C * s;
        q->gv = dc->gv + (size_t)l * n * C * e;
        q->prev = dc->prev + (size_t)l * n * d;
    }
#undef PK_W
    int ok = aligned && cudaMalloc(&dc->pk_layer, sizeof *hl * c->depth) == cudaSuccess &&
             cudaMemcpy(dc->pk_layer, hl, sizeof *hl * c->depth, cudaMemcpyHostToDevice) == cudaSuccess;
    free(hl);
    if (!ok) {
        cudaGetLastError();
        if (dc->pk_layer) cudaFree(dc->pk_layer);
        dc->pk_layer = NULL;
        return 0;
    }
    dc->logits_mapped = (float *)mapped;
    const char *pf = getenv("FLASH_CUDA_DECODE_PROFILE");
    if (pf && strcmp(pf, "1") == 0) {
        const size_t slots = pk_prof_slots(c->depth);
        /* in device memory: atomics on mapped host memory cross the bus (milliseconds a byte) */
        if (cudaMallocHost((void **)&dc->prof, sizeof *dc->prof * slots) == cudaSuccess &&
            cudaMalloc((void **)&dc->prof_dev, sizeof *dc->prof * slots) == cudaSuccess &&
            (dc->prof_sum = (double *)calloc(slots, sizeof(double))) != NULL) {
        } else {
            cudaGetLastError();
            if (dc->prof) cudaFreeHost(dc->prof);
            if (dc->prof_dev) cudaFree(dc->prof_dev);
            dc->prof = NULL;
            dc->prof_dev = NULL;
        }
    }
    dc->pk_blocks = sms;
    dc->pk_smem = smem;
    return 1;
}

/* one byte through the persistent kernel: the tokens travel as its argument, the logits
   come back in h_logits */
static cudaError_t dec_persistent_launch(Model *m, const int *tokens) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    PkTokens tk;
    memset(&tk, 0, sizeof tk);
    if (dc->prof_dev) cudaMemsetAsync(dc->prof_dev, 0, sizeof *dc->prof * pk_prof_slots(m->cfg.depth), cm->st);
    for (int i = 0; i < dc->nseq; i++) tk.tok[i] = tokens[i];
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    PkArgs a = wb ? pk_args<__nv_bfloat16>(m, wb) : pk_args<float>(m, (const float *)NULL);
    void *args[] = {&a, &tk};
    return cudaLaunchCooperativeKernel(pk_kernel(wb != NULL, dc->nseq), dc->pk_blocks, PK_THREADS, args, dc->pk_smem,
                                       cm->st);
}

/* FLASH_CUDA_DECODE_PROFILE=1: the persistent kernel's phases, us a byte, on stderr */
static void dec_profile_print(const CudaDecoder *dc, int L) {
    double w[3] = {0, 0, 0}, b[3] = {0, 0, 0};
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 3; k++) {
            w[k] += dc->prof_sum[2 * (3 * l + k)];
            b[k] += dc->prof_sum[2 * (3 * l + k) + 1];
        }
    const double u = 1e-3 / dc->prof_bytes, head = dc->prof_sum[2 * 3 * L] * u;
    fprintf(stderr, "decoder profile (%ld bytes, us a byte, all %d layers): A (norm, to_hidden, z) %.2f, barrier A-B %.2f, "
            "B (attention) %.2f, barrier B-C %.2f, C (to_out) %.2f, barrier C-next %.2f, head %.2f; kernel %.2f\n",
            dc->prof_bytes, L, w[0] * u, b[0] * u, w[1] * u, b[1] * u, w[2] * u, b[2] * u, head,
            (w[0] + b[0] + w[1] + b[1] + w[2] + b[2]) * u + head);
    const int np = 3 * L + 1;
    fprintf(stderr, "decoder profile: block 0's SM at %.0f MHz (its cycles over the timer's ns)\n",
            1e3 * dc->prof_sum[2 * np] / dc->prof_sum[2 * np + 1]);
    for (int b = 0; b < 2; b++) {
        fprintf(stderr, "decoder profile, layer 1, block %s, us after A's start (1-6: staged, normed, rows, rotary, dots, "
                "prefetch) and C's (8-9: staged, rows):", b ? "nb - 1" : "0");
        for (int i = 1; i < 10; i++) fprintf(stderr, " %d:%.2f", i, dc->prof_sum[2 * np + 3 + 16 * b + i] * u);
        fprintf(stderr, "\n");
    }
}

/* the entry points cuda_decode.cu calls (decode.h) */
size_t dec_persistent_zpart_floats(size_t n, size_t s, size_t C) {
    const size_t nzb = (s + PK_ZF - 1) / PK_ZF;
    return n * nzb * C;
}

int dec_persistent_step(Model *m, const int *tokens, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    cudaStream_t st = cm->st;
    const int n = dc->nseq, V = m->cfg.num_tokens;
    cudaError_t e = dec_persistent_launch(m, tokens);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
    memcpy(logits, dc->h_logits, sizeof(float) * (size_t)n * V);
    if (dc->prof_dev) {
        const int np = 3 * m->cfg.depth + 1;
        cudaMemcpy(dc->prof, dc->prof_dev, sizeof *dc->prof * pk_prof_slots(m->cfg.depth), cudaMemcpyDeviceToHost);
        for (int b = 0; b < 2; b++)
            for (int i = 1; i < 10; i++) {
                const unsigned long long *mk = dc->prof + 2 * np + 3 + 16 * b;
                if (mk[i] && mk[i < 7 ? 0 : 7]) dc->prof_sum[2 * np + 3 + 16 * b + i] += (double)(mk[i] - mk[i < 7 ? 0 : 7]);
            }
        dc->prof_sum[2 * np] += (double)(dc->prof[2 * np + 1] - dc->prof[2 * np]);   /* cycles */
        dc->prof_sum[2 * np + 1] += (double)(dc->prof[2 * np + 2] - dc->prof[1]);  /* ns */
        for (int q = 0; q < np; q++) {
            dc->prof_sum[2 * q] += (double)(dc->prof[2 * q] - dc->prof[2 * q + 1]);
            if (q + 1 < np) dc->prof_sum[2 * q + 1] += (double)(dc->prof[2 * q + 3] - dc->prof[2 * q]);
        }
        dc->prof_bytes++;
    }
    dc->pos++;
    return 0;
}

/* model_decoder_sample on the persistent path: DEC_SAMPLE_STEPS bytes a launch, each sampled
   inside the kernel from the last byte's logits (sample_topk_block, every block the same
   bytes) and fed to the next; the uniforms go up and the bytes come back once a launch */
int dec_persistent_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    cudaStream_t st = cm->st;
    const int n = dc->nseq;
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    PkTokens tk;
    memset(&tk, 0, sizeof tk);
    for (int s0 = 0; s0 < steps; s0 += DEC_SAMPLE_STEPS) {
        const int ms = steps - s0 < DEC_SAMPLE_STEPS ? steps - s0 : DEC_SAMPLE_STEPS;
        memcpy(dc->h_u, u + (size_t)s0 * n, sizeof(double) * (size_t)ms * n);
        cudaMemcpyAsync(dc->d_u, dc->h_u, sizeof(double) * (size_t)ms * n, cudaMemcpyHostToDevice, st);
        PkArgs a = wb ? pk_args<__nv_bfloat16>(m, wb) : pk_args<float>(m, (const float *)NULL);
        a.logits = NULL;
        a.prof = NULL;
        a.nbytes = ms;
        a.u = dc->d_u;
        a.hist = dc->d_hist;
        a.samp_k = k;
        a.temp = temperature;
        void *args[] = {&a, &tk};
        cudaError_t e = cudaLaunchCooperativeKernel(pk_kernel(wb != NULL, n), dc->pk_blocks, PK_THREADS, args,
                                                    dc->pk_smem, st);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync(dc->h_hist, dc->d_hist, sizeof(int) * (size_t)ms * n, cudaMemcpyDeviceToHost, st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
        memcpy(tokens + (size_t)s0 * n, dc->h_hist, sizeof(int) * (size_t)ms * n);
        dc->pos += ms;
    }
    return 0;
}

void dec_persistent_close(CudaDecoder *dc, int L) {
    if (dc->pk_layer) cudaFree(dc->pk_layer);
    if (dc->prof) {
        if (dc->prof_bytes > 0) dec_profile_print(dc, L);
        cudaFreeHost(dc->prof);
        cudaFree(dc->prof_dev);
        free(dc->prof_sum);
    }
}
