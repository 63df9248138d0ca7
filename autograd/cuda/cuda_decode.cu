/* autograd/cuda/cuda_decode.cu: the recurrent decoder on the GPU, the twin of autograd/cpu/cpu_decode.c.
 *
 * Per new byte and layer: the norm with the token shift against the previous position's
 * row, one product for to_hidden and to_qk, one kernel for offset-scale, rotary, the
 * quadratic attention over the current group's keys, the linear attention against the
 * prefix sum S of the finished groups and the gate, and one product for to_out. The
 * position lives in device memory and every launch reads it from there, so one step is
 * the same sequence of launches at every position: it is captured once as a CUDA graph
 * and replayed per byte (launching ~50 kernels one by one would cost more than they run).
 *
 * --linear-attn taylor keeps, per layer and sequence, St = sum phi(lin_k)^T [v | 1] over the
 * finished groups (F x (e+1)) in place of S; the attention kernel then leaves the linear
 * part and the gate to dec_taylor_read_kernel, and dec_taylor_fold_kernel adds a group to
 * St when it completes. A taylor prompt is fed byte by byte (no hand-over from the parallel
 * forward). --model gau samples through gau_decode.cu instead. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cooperative_groups.h>

#include "cuda_model.h"
#include "kernels.cuh"

namespace cg = cooperative_groups;

typedef struct CudaDecoder {
    int nseq, max_prompt;
    float *arena;
    float *kv, *gq, *gk, *gv, *prev;        /* state per layer and sequence */
    float *tst, *qlin;                      /* taylor: St per layer and sequence; this step's lin_q */
    float *h, *xs, *stat, *hid_u, *hid, *gated, *lnf, *logits;
    int *d_tok, *d_pos;
    int *h_tok;                             /* pinned: the step's tokens */
    float *h_logits;                        /* pinned: the step's logits */
    int *prompt_buf;                        /* host: a prompt's whole groups + a target */
    long pos;
    cudaGraphExec_t graph;
    int graph_ready, graph_failed;
    int fused;                              /* the three-kernel layer (few sequences) */
    int persistent;                         /* one cooperative kernel a byte (below) */
    int pk_blocks;                          /* its grid: one block an SM */
    size_t pk_smem;                         /* its dynamic shared memory, bytes */
    void *pk_layer;                         /* device: its PkLayer per layer */
    float *zpart;                           /* its partial dots: n x z-blocks x C */
    float *logits_mapped;                   /* h_logits as the device addresses it */
    unsigned long long *prof, *prof_dev;    /* FLASH_CUDA_DECODE_PROFILE=1: pinned phase times */
    double *prof_sum;                       /* their sums over the bytes: work, barrier per phase */
    long prof_bytes;
} CudaDecoder;

/* h = tok_emb[token] + scale * [sin(t w) | cos(t w)] at the current position */
__global__ void dec_embed_kernel(float *h, const int *tok, const int *pos, const float *tok_emb,
                                 const float *pos_scale, const float *inv_freq, int n, int d) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n * d) return;
    const int i = k / d, f = k % d, half = d / 2;
    const double t = (double)pos[0];
    float pe = 0;
    if (f < half) pe = (float)sin(t * (double)inv_freq[f]);
    else if (f < 2 * half) pe = (float)cos(t * (double)inv_freq[f - half]);
    h[k] = tok_emb[(size_t)tok[i] * d + f] + pos_scale[0] * pe;
}

/* xn = norm(h); xs = xn with its first ceil(d/2) features from prev (the previous
   position's xn, zeros at t = 0); prev = xn. One warp per sequence. */
__global__ void dec_norm_shift_kernel(float *xs, float *prev, const float *h, const float *g,
                                      const float *w, const float *b, int layernorm, int shift,
                                      int n, int d) {
    const int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (i >= n) return;
    const float *x = h + (size_t)i * d;
    float *xo = xs + (size_t)i * d, *pv = prev + (size_t)i * d;
    const int half = (d + 1) / 2;
    float a = 0, bb = 0;
    if (!layernorm) {
        float ss = 0;
        for (int k = lane; k < d; k += 32) ss += x[k] * x[k];
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        const float nrm = sqrtf(ss / d);
        a = 1.0f / (nrm > 1e-5f ? nrm : 1e-5f);
    } else {
        float s = 0;
        for (int k = lane; k < d; k += 32) s += x[k];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        const float mean = s / d;
        float v = 0;
        for (int k = lane; k < d; k += 32) { const float c = x[k] - mean; v += c * c; }
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        a = rsqrtf(v / d + 1e-5f);
        bb = mean;
    }
    for (int k = lane; k < d; k += 32) {
        const float xn = layernorm ? (x[k] - bb) * a * w[k] + b[k] : x[k] * a * g[0];
        if (shift && k < half) { xo[k] = pv[k]; pv[k] = xn; }
        else { xo[k] = xn; if (shift) pv[k] = xn; }
    }
}

/* One sequence (blockIdx.x) and DEC_F of the e value features (blockIdx.y) at position t,
   group index j = t mod C: offset-scale and rotary of z, the current row's keys and
   values into the group cache, a_k = phi(q . k_k / C + sqrt(s) bias[bucket(j - k)]) for
   k <= j, att = sum_k a_k v_k + lin_q S, gated = gate * att; when the group is complete,
   S += lin_k^T v / C. The 8 warps of a block share the keys (and S's rows) of its
   features and add their sums in a fixed order. Shared: the four rotated rows (4 s), the
   weights a (C) and the warps' partial sums. */
#define DEC_F 32
#define DEC_WARPS 8
__global__ void dec_attend_kernel(float *gated, float *kv, float *gq, float *gk, float *gv,
                                  const float *hid, const int *pos, const float *gamma,
                                  const float *beta, const float *freqs, const float *rel_bias,
                                  int e, int s, int r, int C, int H, int laplace, const float *xn,
                                  float *prev, int d, float *qlin) {
    extern __shared__ float sh[];
    float *q4 = sh, *a = sh + 4 * s, *part = a + C;   /* part: DEC_WARPS x DEC_F */
    const int i = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid % 32, warp = tid / 32;
    const long t = pos[0];
    const int j = (int)(t % C), pairs = r / 2, units = pairs + (s - 2 * pairs);
    const float *hrow = hid + (size_t)i * H, *z = hrow + 2 * e;
    /* the fused path: this position's norm output becomes prev (every reader of the old
       prev, the kernel before, has finished) */
    if (xn && blockIdx.y == 0)
        for (int k = tid; k < d; k += nt) prev[(size_t)i * d + k] = xn[(size_t)i * d + k];
    for (int u = tid; u < units; u += nt) {
        int f0, f1 = -1;
        if (u < pairs) { f0 = 2 * u; f1 = 2 * u + 1; } else f0 = 2 * pairs + (u - pairs);
        float c = 1, sn = 0;
        if (f1 >= 0) {
            const double ang = (double)t * (double)freqs[u];
            c = (float)cos(ang);
            sn = (float)sin(ang);
        }
        for (int k = 0; k < 4; k++) {
            const float o0 = z[f0] * gamma[k * s + f0] + beta[k * s + f0];
            if (f1 < 0) { q4[k * s + f0] = o0; continue; }
            const float o1 = z[f1] * gamma[k * s + f1] + beta[k * s + f1];
            q4[k * s + f0] = o0 * c - o1 * sn;
            q4[k * s + f1] = o1 * c + o0 * sn;
        }
    }
    __syncthreads();
    const float *qq = q4, *ql = q4 + s, *kq = q4 + 2 * s, *kl = q4 + 3 * s;
    float *Gq = gq + (size_t)i * C * s, *Gk = gk + (size_t)i * C * s, *Gv = gv + (size_t)i * C * e;
    float *S = kv + (size_t)i * s * e;
    if (blockIdx.y == 0)
        for (int f = tid; f < s; f += nt) {
            Gq[(size_t)j * s + f] = kq[f];
            Gk[(size_t)j * s + f] = kl[f];
            if (qlin) qlin[(size_t)i * s + f] = ql[f];   /* taylor: its read-out takes lin_q */
        }
    const float inv_C = 1.0f / C, bias_scale = sqrtf((float)s);
    /* four lanes per key, eight keys per warp at once (a warp per key left the block 32
       keys deep in a serial chain at the group's end): each lane a quarter of the s
       features, then two shuffles */
    const int sub = lane / 4, quarter = lane % 4;
    for (int k0 = warp * 8; k0 <= j; k0 += (nt / 32) * 8) {
        const int k = k0 + sub;
        const bool ok = k <= j;
        const float *key = k == j ? kq : Gq + (size_t)(ok ? k : 0) * s;
        float dot = 0;
        if (ok)
#pragma unroll 8
            for (int f = quarter; f < s; f += 4) dot += qq[f] * key[f];
        dot += __shfl_xor_sync(0xffffffffu, dot, 1);
        dot += __shfl_xor_sync(0xffffffffu, dot, 2);
        if (ok && quarter == 0) a[k] = phi_f(dot * inv_C + bias_scale * rel_bias[rel_pos_bucket(j - k)], laplace);
    }
    __syncthreads();
    const int f = blockIdx.y * DEC_F + lane;
    const int live = f < e;
    const float v = live ? hrow[f] : 0.0f;
    if (live && warp == 0) Gv[(size_t)j * e + f] = v;
    /* this warp's share: keys k = warp, warp + 8, ... and rows q of S likewise */
    float acc = 0;
    if (live) {
#pragma unroll 8
        for (int k = warp; k < j; k += DEC_WARPS) acc += a[k] * Gv[(size_t)k * e + f];
        if (warp == j % DEC_WARPS) acc += a[j] * v;
        if (!qlin)
#pragma unroll 8
            for (int q = warp; q < s; q += DEC_WARPS) acc += ql[q] * S[(size_t)q * e + f];
    }
    part[warp * DEC_F + lane] = acc;
    __syncthreads();
    if (warp == 0 && live) {
        float sum = 0;
        for (int w = 0; w < DEC_WARPS; w++) sum += part[w * DEC_F + lane];
        /* taylor: the quadratic part only; dec_taylor_read_kernel adds the linear one and gates */
        gated[(size_t)i * e + f] = qlin ? sum : hrow[e + f] * sum;
    }
    if (j == C - 1 && live && !qlin) {
        /* every warp has read S above (barrier): each now updates its own rows q */
        for (int q = warp; q < s; q += DEC_WARPS) {
            float sum = 0;
#pragma unroll 8
            for (int k = 0; k < j; k++) sum += Gk[(size_t)k * s + q] * Gv[(size_t)k * e + f];
            sum += kl[q] * v;   /* k = j: this row, not yet read back from the cache */
            S[(size_t)q * e + f] += inv_C * sum;
        }
    }
}

__global__ void dec_advance_kernel(int *pos) { pos[0] += 1; }

/* Feature k of x (width s, alpha already applied) in the symmetric form of
   kernels_taylor.cu: [1, x, x_i x_j for i <= j (1/sqrt 2 where i = j)], 1 + s + s(s+1)/2
   features with the reference's phi(q) . phi(k) */
static inline int dec_taylor_width(int s) { return 1 + s + s * (s + 1) / 2; }
__device__ __forceinline__ float dec_taylor_feature(const float *x, int k, int s) {
    if (k == 0) return 1.0f;
    if (k <= s) return x[k - 1];
    int q = k - 1 - s, i = 0;
    while (q >= s - i) { q -= s - i; i++; }
    const float v = x[i] * x[i + q];
    return q == 0 ? v * 0.70710678118654752f : v;
}

/* Taylor read-out, one sequence (blockIdx.x) and DEC_F value features (blockIdx.y):
   [num | den] = phi(lin_q / sqrt s) St, gated = gate * (att + num / max(den, 1e-5)), att
   being the quadratic part dec_attend_kernel left in gated. Shared: phi (F), the warps'
   partial sums and the den partials. */
__global__ void dec_taylor_read_kernel(float *gated, const float *hid, const float *qlin, const float *tst,
                                       int e, int s, int H) {
    extern __shared__ float sh[];
    const int F = 1 + s + s * (s + 1) / 2, E1 = e + 1;
    float *fq = sh, *part = sh + F, *dpart = part + DEC_WARPS * DEC_F;
    const int i = blockIdx.x, tid = threadIdx.x, nt = blockDim.x, lane = tid % 32, warp = tid / 32;
    const float *S = tst + (size_t)i * F * E1;
    if (tid < s) dpart[DEC_WARPS + tid] = qlin[(size_t)i * s + tid] * rsqrtf((float)s);
    __syncthreads();
    const float *y = dpart + DEC_WARPS;
    float den = 0;
    for (int k = tid; k < F; k += nt) {
        const float v = dec_taylor_feature(y, k, s);
        fq[k] = v;
        den += v * S[(size_t)k * E1 + e];
    }
    den = warp_sum(den);
    if (lane == 0) dpart[warp] = den;
    __syncthreads();
    const int f = blockIdx.y * DEC_F + lane;
    float acc = 0;
    if (f < e)
        for (int k = warp; k < F; k += DEC_WARPS) acc += fq[k] * S[(size_t)k * E1 + f];
    part[warp * DEC_F + lane] = acc;
    __syncthreads();
    if (warp == 0 && f < e) {
        float num = 0, dn = 0;
        for (int w = 0; w < DEC_WARPS; w++) { num += part[w * DEC_F + lane]; dn += dpart[w]; }
        dn = dn > 1e-5f ? dn : 1e-5f;
        const float *hrow = hid + (size_t)i * H;
        gated[(size_t)i * e + f] = hrow[e + f] * (gated[(size_t)i * e + f] + num / dn);
    }
}

/* When the position closes its group (t mod C = C - 1): St += phi(lin_k)^T [v | 1] over the
   group's cached rows. One thread per entry of St: sequence blockIdx.x, column blockIdx.y *
   32 + lane (column e is the normaliser's), feature blockIdx.z * DEC_WARPS + warp. */
__global__ void dec_taylor_fold_kernel(float *tst, const float *gk, const float *gv, const int *pos, int C,
                                       int e, int s) {
    if ((int)(pos[0] % C) != C - 1) return;
    const int F = 1 + s + s * (s + 1) / 2, E1 = e + 1;
    const int i = blockIdx.x, c = blockIdx.y * 32 + threadIdx.x % 32, k = blockIdx.z * DEC_WARPS + threadIdx.x / 32;
    if (c > e || k >= F) return;
    const float *Gk = gk + (size_t)i * C * s, *Gv = gv + (size_t)i * C * e;
    float sum = 0;
    for (int r = 0; r < C; r++)
        sum += dec_taylor_feature(Gk + (size_t)r * s, k, s) * (c < e ? Gv[(size_t)r * e + c] : 1.0f);
    tst[(size_t)i * F * E1 + (size_t)k * E1 + c] += sum;
}

/* ---- the fused step for a few sequences (n <= DEC_FUSED_SEQ) ----------------------------
   A byte costs as many graph nodes as it has launches, each a few microseconds with little
   work in it, so for one to eight sequences a layer is three kernels: norm + to_hidden
   product + bias + silu; the attention (above); to_out product + bias + residual. The
   products take one warp per output row (16-byte weight loads when the rows allow them,
   several loads in flight per lane); every block of the first kernel computes the norm of
   the n rows itself into shared memory. More sequences take the cuBLAS path below. */
#define DEC_FUSED_SEQ 8
#define DEC_ROW_WARPS 8

/* warp w < n: xs_sh row w = norm(h row w), shifted against prev as dec_norm_shift_kernel;
   xn_out (NULL: none) gets the unshifted norm output, written by block 0 only */
__device__ void dec_norm_rows(float *xs_sh, float *xn_out, const float *h, const float *prev,
                              const float *g, const float *w, const float *b, int layernorm, int shift,
                              int n, int d) {
    const int i = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (i >= n) return;
    const float *x = h + (size_t)i * d;
    const float *pv = prev ? prev + (size_t)i * d : NULL;
    float *xo = xs_sh + (size_t)i * d;
    const int half = (d + 1) / 2;
    float a = 0, bb = 0;
    if (!layernorm) {
        float ss = 0;
        for (int k = lane; k < d; k += 32) ss += x[k] * x[k];
        ss = warp_sum(ss);
        const float nrm = sqrtf(ss / d);
        a = 1.0f / (nrm > 1e-5f ? nrm : 1e-5f);
    } else {
        float s = 0;
        for (int k = lane; k < d; k += 32) s += x[k];
        s = warp_sum(s);
        const float mean = s / d;
        float v = 0;
        for (int k = lane; k < d; k += 32) { const float c = x[k] - mean; v += c * c; }
        v = warp_sum(v);
        a = rsqrtf(v / d + 1e-5f);
        bb = mean;
    }
    for (int k = lane; k < d; k += 32) {
        const float xn = layernorm ? (x[k] - bb) * a * w[k] + b[k] : x[k] * a * g[0];
        xo[k] = shift && k < half ? pv[k] : xn;
        if (xn_out && blockIdx.x == 0) xn_out[(size_t)i * d + k] = xn;
    }
}
/* Weights in fp32 or, in bf16 precision, their bf16 twin (what the bf16 forward's products
   read): four of them per load (16 or 8 bytes), converted where they are used. */
template <typename WT> struct W4;
template <> struct W4<float> {
    typedef float4 raw;
    static __device__ __forceinline__ raw load(const float *p) { return __ldg(reinterpret_cast<const float4 *>(p)); }
    static __device__ __forceinline__ float4 cvt(raw r) { return r; }
    static __device__ __forceinline__ raw zero() { return make_float4(0, 0, 0, 0); }
    static __device__ __forceinline__ float one(const float *p) { return __ldg(p); }
};
template <> struct W4<__nv_bfloat16> {
    typedef uint2 raw;
    static __device__ __forceinline__ raw load(const __nv_bfloat16 *p) { return __ldg(reinterpret_cast<const uint2 *>(p)); }
    static __device__ __forceinline__ float4 cvt(raw r) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.x));
        const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&r.y));
        return make_float4(a.x, a.y, b.x, b.y);
    }
    static __device__ __forceinline__ raw zero() { return make_uint2(0, 0); }
    static __device__ __forceinline__ float one(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
};
/* VEC 4: the lane's first DEC_PRE groups of four weights of row wr, loaded before the
   kernel's prologue (norm, copies, barrier) so that their latency overlaps it */
#define DEC_PRE 8
template <typename WT>
__device__ __forceinline__ void dec_prefetch(typename W4<WT>::raw pre[DEC_PRE], const WT *wr, int K, bool live) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int c = 0; c < DEC_PRE; c++) {
        const int k = lane * 4 + 128 * c;
        pre[c] = live && k < K ? W4<WT>::load(wr + k) : W4<WT>::zero();
    }
}
/* dot of weight row wr (K of them) with the n shared rows x (K apart), one warp: lane sums,
   then the butterfly; VEC 4 takes the prefetched part from pre */
template <int VEC, typename WT, int NQ = DEC_FUSED_SEQ>
__device__ __forceinline__ void dec_row_dots(float acc[DEC_FUSED_SEQ], const WT *wr, const float *x, int n,
                                             int K, const typename W4<WT>::raw *pre) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int q = 0; q < NQ; q++) acc[q] = 0;
    if (VEC == 4) {
#pragma unroll
        for (int c = 0; c < DEC_PRE; c++) {
            const int k = lane * 4 + 128 * c;
            if (k >= K) break;
            const float4 wv = W4<WT>::cvt(pre[c]);
#pragma unroll
            for (int q = 0; q < NQ; q++)
                if (q < n) {
                    const float4 xv = *reinterpret_cast<const float4 *>(x + (size_t)q * K + k);
                    acc[q] += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
                }
        }
#pragma unroll 4
        for (int k = lane * 4 + 128 * DEC_PRE; k < K; k += 128) {
            const float4 wv = W4<WT>::cvt(W4<WT>::load(wr + k));
#pragma unroll
            for (int q = 0; q < NQ; q++)
                if (q < n) {
                    const float4 xv = *reinterpret_cast<const float4 *>(x + (size_t)q * K + k);
                    acc[q] += wv.x * xv.x + wv.y * xv.y + wv.z * xv.z + wv.w * xv.w;
                }
        }
    } else {
#pragma unroll 4
        for (int k = lane; k < K; k += 32) {
            const float wv = W4<WT>::one(wr + k);
#pragma unroll
            for (int q = 0; q < NQ; q++)
                if (q < n) acc[q] += wv * x[(size_t)q * K + k];
        }
    }
#pragma unroll
    for (int q = 0; q < NQ; q++)
        if (q < n) acc[q] = warp_sum(acc[q]);
}
/* hid = silu(norm(h) Wh^T + bh), H outputs; shared: n x d (the normalized rows) */
template <int VEC, typename WT>
__global__ void dec_hidden_kernel(float *hid, float *xn_out, const float *h, const float *prev, const float *g,
                                  const float *nw, const float *nb, int layernorm, int shift, const WT *W,
                                  const float *bias, int n, int d, int H) {
    extern __shared__ float xs_sh[];
    const int row = blockIdx.x * DEC_ROW_WARPS + threadIdx.x / 32;
    typename W4<WT>::raw pre[DEC_PRE];
    if (VEC == 4) dec_prefetch<WT>(pre, W + (size_t)(row < H ? row : 0) * d, d, row < H);
    dec_norm_rows(xs_sh, xn_out, h, prev, g, nw, nb, layernorm, shift, n, d);
    __syncthreads();
    if (row >= H) return;
    float acc[DEC_FUSED_SEQ];
    dec_row_dots<VEC, WT>(acc, W + (size_t)row * d, xs_sh, n, d, pre);
    if (threadIdx.x % 32 == 0)
#pragma unroll
        for (int q = 0; q < DEC_FUSED_SEQ; q++)
            if (q < n) hid[(size_t)q * H + row] = silu_f(acc[q] + bias[row]);
}
/* h = bo + (h + gated Wo^T), d outputs of e inputs (the order of the cuBLAS path's two
   additions); shared: n x e (gated). Blocks of DEC_OUT_WARPS rows: d rows are few, so
   smaller blocks reach more of the SMs. */
#define DEC_OUT_WARPS 4
template <int VEC, typename WT>
__global__ void dec_out_kernel(float *h, const float *gated, const WT *W, const float *bo, int n, int d, int e) {
    extern __shared__ float g_sh[];
    const int row = blockIdx.x * DEC_OUT_WARPS + threadIdx.x / 32;
    typename W4<WT>::raw pre[DEC_PRE];
    if (VEC == 4) dec_prefetch<WT>(pre, W + (size_t)(row < d ? row : 0) * e, e, row < d);
    for (int k = threadIdx.x; k < n * e; k += blockDim.x) g_sh[k] = gated[k];
    __syncthreads();
    if (row >= d) return;
    float acc[DEC_FUSED_SEQ];
    dec_row_dots<VEC, WT>(acc, W + (size_t)row * e, g_sh, n, e, pre);
    if (threadIdx.x % 32 == 0)
#pragma unroll
        for (int q = 0; q < DEC_FUSED_SEQ; q++)
            if (q < n) h[(size_t)q * d + row] = bo[row] + (h[(size_t)q * d + row] + acc[q]);
}
/* logits = layernorm(h) Wl^T + b, V outputs; then the position advances (block 0, after
   its own reads; no other kernel of the step reads it after this one) */
template <int VEC, typename WT>
__global__ void dec_logits_kernel(float *logits, int *pos, const float *h, const float *lw, const float *lb,
                                  const WT *W, const float *bias, int n, int d, int V) {
    extern __shared__ float xs_sh[];
    const int row = blockIdx.x * DEC_ROW_WARPS + threadIdx.x / 32;
    typename W4<WT>::raw pre[DEC_PRE];
    if (VEC == 4) dec_prefetch<WT>(pre, W + (size_t)(row < V ? row : 0) * d, d, row < V);
    dec_norm_rows(xs_sh, NULL, h, NULL, NULL, lw, lb, 1, 0, n, d);
    __syncthreads();
    if (blockIdx.x == 0 && threadIdx.x == 0) pos[0] += 1;
    if (row >= V) return;
    float acc[DEC_FUSED_SEQ];
    dec_row_dots<VEC, WT>(acc, W + (size_t)row * d, xs_sh, n, d, pre);
    if (threadIdx.x % 32 == 0)
#pragma unroll
        for (int q = 0; q < DEC_FUSED_SEQ; q++)
            if (q < n) logits[(size_t)q * V + row] = acc[q] + bias[row];
}
/* the launches of the three fused products, on the fp32 weights or their bf16 twins */
template <typename WT>
static void dec_fused_hidden(CudaDecoder *dc, const WT *W, const LayerParams *P, float *prev, int layernorm,
                             int shift, int n, int d, int H, cudaStream_t st) {
    const unsigned blocks = (unsigned)((H + DEC_ROW_WARPS - 1) / DEC_ROW_WARPS);
    const size_t sh = sizeof(float) * (size_t)n * d;
    if (d % 4 == 0 && (uintptr_t)W % 16 == 0)
        dec_hidden_kernel<4, WT><<<blocks, 32 * DEC_ROW_WARPS, sh, st>>>(dc->hid, dc->xs, dc->h, prev, P->norm_g,
            P->norm_w, P->norm_b, layernorm, shift, W, P->bh, n, d, H);
    else
        dec_hidden_kernel<1, WT><<<blocks, 32 * DEC_ROW_WARPS, sh, st>>>(dc->hid, dc->xs, dc->h, prev, P->norm_g,
            P->norm_w, P->norm_b, layernorm, shift, W, P->bh, n, d, H);
}
template <typename WT>
static void dec_fused_out(CudaDecoder *dc, const WT *W, const float *bo, int n, int d, int e, cudaStream_t st) {
    const unsigned blocks = (unsigned)((d + DEC_OUT_WARPS - 1) / DEC_OUT_WARPS);
    const size_t sh = sizeof(float) * (size_t)n * e;
    if (e % 4 == 0 && (uintptr_t)W % 16 == 0)
        dec_out_kernel<4, WT><<<blocks, 32 * DEC_OUT_WARPS, sh, st>>>(dc->h, dc->gated, W, bo, n, d, e);
    else
        dec_out_kernel<1, WT><<<blocks, 32 * DEC_OUT_WARPS, sh, st>>>(dc->h, dc->gated, W, bo, n, d, e);
}
template <typename WT>
static void dec_fused_logits(CudaDecoder *dc, const WT *W, const ModelParams *p, int n, int d, int V, cudaStream_t st) {
    const unsigned blocks = (unsigned)((V + DEC_ROW_WARPS - 1) / DEC_ROW_WARPS);
    const size_t sh = sizeof(float) * (size_t)n * d;
    if (d % 4 == 0 && (uintptr_t)W % 16 == 0)
        dec_logits_kernel<4, WT><<<blocks, 32 * DEC_ROW_WARPS, sh, st>>>(dc->logits, dc->d_pos, dc->h, p->lnf_w,
                                                                         p->lnf_b, W, p->b_logits, n, d, V);
    else
        dec_logits_kernel<1, WT><<<blocks, 32 * DEC_ROW_WARPS, sh, st>>>(dc->logits, dc->d_pos, dc->h, p->lnf_w,
                                                                         p->lnf_b, W, p->b_logits, n, d, V);
}
/* the fused path fits: few sequences, the shared rows within the default 48 KB */
static int dec_fused_ok(int n, int d, int e) {
    return n <= DEC_FUSED_SEQ && (size_t)n * (d > e ? d : e) * sizeof(float) <= 48 * 1024;
}

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
    float *h, *hid, *gated, *xn, *zpart, *qlin, *logits;
    int *pos;
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

typedef struct { int tok[DEC_FUSED_SEQ]; } PkTokens;

/* floats of dynamic shared memory: the n rows (of d or e), the n rows of prev, the phases'
   scratch */
static size_t pk_shared_floats(int n, int d, int e, int C) {
    const size_t rows = (size_t)n * (d > e ? d : e), prev = (size_t)n * d;
    const size_t zb = (size_t)n * 5 * PK_ZF, att = (size_t)C + PK_SLICES * PK_COLS;
    return rows + prev + (zb > att ? zb : att);
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
   unshifted output from block 0 */
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
        const float nrm = sqrtf(tot / d);
        scale[q] = 1.0f / (nrm > 1e-5f ? nrm : 1e-5f);
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
            scale[q] = rsqrtf(tot / d + 1e-5f);
        }
    }
#pragma unroll
    for (int q = 0; q < NQ; q++)
        if (q < n)
            for (int k = tid; k < d; k += PK_THREADS) {
                const size_t i = (size_t)q * d + k;
                const float x = rows[i];
                const float xn = layernorm ? (x - mean[q]) * scale[q] * w[k] + b[k] : x * scale[q] * g[0];
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
    const long t = a.pos[0];   /* read by all before barrier A-B; block 0 writes t + 1 last */
    const int j = (int)(t % C), pairs = a.r / 2;
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
            if (zrot) {
                const double ang = (double)t * (double)P->rot_freqs[zfe / 2];
                rc = (float)cos(ang);
                rs = (float)sin(ang);
            }
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
            const int half = d / 2;
            for (int k = tid; k < n * d; k += PK_THREADS) {
                const int i = k / d, f = k % d;
                float pe = 0;
                if (f < half) pe = (float)sin(tt * (double)a.inv_freq[f]);
                else if (f < 2 * half) pe = (float)cos(tt * (double)a.inv_freq[f - half]);
                rows[k] = a.tok_emb[(size_t)tk.tok[i] * d + f] + a.pos_scale[0] * pe;
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
                    const float o = z * gb[k][0] + gb[k][1];
                    float v = o;
                    if (zrot) {
                        const float op = zp * gb[k][2] + gb[k][3];
                        v = (zfe & 1) ? o * rc + op * rs : o * rc - op * rs;
                    }
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
            if (q < n && lane == q) a.logits[(size_t)q * V + rr] = acc[q] + bq;
    }
    if (blockIdx.x == 0 && tid == 0) a.pos[0] = (int)(t + 1);
    PK_END(3 * a.L);
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
    a.qlin = dc->qlin; a.logits = dc->logits_mapped; a.pos = dc->d_pos;
    a.tok_emb = p->tok_emb; a.pos_scale = p->pos_scale; a.inv_freq = p->inv_freq;
    a.lnf_w = p->lnf_w; a.lnf_b = p->lnf_b; a.b_logits = p->b_logits;
    a.w_logits = wbase ? (const void *)(wbase + (p->w_logits - cm->params)) : (const void *)p->w_logits;
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
static int dec_persistent_open(Model *m, CudaDecoder *dc) {
    CudaModel *cm = (CudaModel *)m->impl;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim, C = c->group_size;
    const char *env = getenv("FLASH_CUDA_DECODE_PERSISTENT"), *fz = getenv("FLASH_CUDA_DECODE_FUSED");
    if ((env && strcmp(env, "0") == 0) || (fz && strcmp(fz, "0") == 0)) return 0;
    const int force = env && strcmp(env, "1") == 0;
    if (n > (force ? DEC_FUSED_SEQ : PK_AUTO_SEQ) || c->model != MODEL_FLASH || config_taylor_width(c) || d % 4 || e % 4)
        return 0;
    int coop = 0, sms = 0;
    cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, cm->dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, cm->dev);
    const int nzb = (s + PK_ZF - 1) / PK_ZF;
    if (!coop || sms <= nzb) return 0;
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    const void *fn = pk_kernel(wb != NULL, n);
    const size_t smem = sizeof(float) * pk_shared_floats(n, d, e, C);
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
#define PK_W(x) (wb ? (const void *)(wb + ((x) - cm->params)) : (const void *)(x))
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
        const size_t slots = 2 * (3 * (size_t)c->depth + 1) + 3 + 32;   /* + block 0's clocks, its end, the marks */
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
    if (dc->prof_dev) cudaMemsetAsync(dc->prof_dev, 0, sizeof *dc->prof * (2 * (3 * (size_t)m->cfg.depth + 1) + 3 + 32), cm->st);
    for (int i = 0; i < dc->nseq; i++) tk.tok[i] = tokens[i];
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    PkArgs a = wb ? pk_args<__nv_bfloat16>(m, wb) : pk_args<float>(m, (const float *)NULL);
    void *args[] = {&a, &tk};
    return cudaLaunchCooperativeKernel(pk_kernel(wb != NULL, dc->nseq), dc->pk_blocks, PK_THREADS, args, dc->pk_smem,
                                       cm->st);
}

const char *cuda_decoder_kind(const Model *m) {
    const CudaModel *cm = (const CudaModel *)m->impl;
    if (cm->gau_dec) return "gau: a forward per byte";
    if (!cm->dec) return "";
    if (cm->dec->persistent) return "one persistent kernel a byte (grid barriers, 3 a layer)";
    if (cm->dec->fused) return "fused kernels, 3 a layer, as a CUDA graph";
    return "cuBLAS products and kernels, as a CUDA graph";
}


/* the launches of one step (captured once into a graph) */
static void dec_launch_step(Model *m) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const int C = c->group_size, V = c->num_tokens, r = config_rotary(c), L = c->depth, H = 2 * e + s;
    cudaStream_t st = cm->st;
    const ModelParams *p = &cm->p;
    dec_embed_kernel<<<(n * d + 255) / 256, 256, 0, st>>>(dc->h, dc->d_tok, dc->d_pos, p->tok_emb,
                                                          p->pos_scale, p->inv_freq, n, d);
    const size_t shmem = sizeof(float) * (4 * (size_t)s + C + DEC_WARPS * DEC_F);
    const int fused = dc->fused, taylor = config_taylor_width(c) > 0, F = taylor ? dec_taylor_width(s) : 0;
    /* bf16 precision: the fused products read the weights' bf16 twin, as the forward does */
    const __nv_bfloat16 *wb = cm->use_bf16 && cm->params_h ? (const __nv_bfloat16 *)cm->params_h : NULL;
    for (int l = 0; l < L; l++) {
        const LayerParams *P = &p->layer[l];
        float *prev = dc->prev + (size_t)l * n * d;
        const int layernorm = c->norm_type == NORM_LAYERNORM;
        if (fused && wb) {
            dec_fused_hidden(dc, wb + (P->wh - cm->params), P, prev, layernorm, c->shift_tokens, n, d, H, st);
        } else if (fused) {
            dec_fused_hidden(dc, P->wh, P, prev, layernorm, c->shift_tokens, n, d, H, st);
        } else {
            dec_norm_shift_kernel<<<(n + 3) / 4, 128, 0, st>>>(dc->xs, prev, dc->h, P->norm_g, P->norm_w, P->norm_b,
                                                               layernorm, c->shift_tokens, n, d);
            cuda_gemm(cm, 0, 1, n, H, d, 1, dc->xs, NULL, d, 0, P->wh, NULL, d, 0, 0, dc->hid_u, H, 0, 1);
            bias_silu_cuda(dc->hid_u, NULL, dc->hid, P->bh, n, H, H, NULL, st);
        }
        dim3 grid(n, (e + DEC_F - 1) / DEC_F);
        dec_attend_kernel<<<grid, 32 * DEC_WARPS, shmem, st>>>(
            dc->gated, dc->kv + (size_t)l * n * s * e, dc->gq + (size_t)l * n * C * s,
            dc->gk + (size_t)l * n * C * s, dc->gv + (size_t)l * n * C * e, dc->hid, dc->d_pos, P->gamma,
            P->beta, P->rot_freqs, P->rel_bias, e, s, r, C, H, (c->attn_fn == ATTN_LAPLACE),
            fused && c->shift_tokens ? dc->xs : NULL, prev, d, taylor ? dc->qlin : NULL);
        if (taylor) {
            float *St = dc->tst + (size_t)l * n * F * (e + 1);
            dec_taylor_read_kernel<<<grid, 32 * DEC_WARPS, sizeof(float) * (F + DEC_WARPS * DEC_F + DEC_WARPS + s), st>>>(
                dc->gated, dc->hid, dc->qlin, St, e, s, H);
            dim3 fg(n, (e + 1 + 31) / 32, (F + DEC_WARPS - 1) / DEC_WARPS);
            dec_taylor_fold_kernel<<<fg, 32 * DEC_WARPS, 0, st>>>(St, dc->gk + (size_t)l * n * C * s,
                                                                   dc->gv + (size_t)l * n * C * e, dc->d_pos, C, e, s);
        }
        /* h += gated Wo^T + bo */
        if (fused && wb) {
            dec_fused_out(dc, wb + (P->wo - cm->params), P->bo, n, d, e, st);
        } else if (fused) {
            dec_fused_out(dc, P->wo, P->bo, n, d, e, st);
        } else {
            cuda_gemm(cm, 0, 1, n, d, e, 1, dc->gated, NULL, e, 0, P->wo, NULL, e, 0, 1, dc->h, d, 0, 1);
            bias_add_cuda(dc->h, P->bo, dc->h, n, d, st);
        }
    }
    if (fused && wb) {
        dec_fused_logits(dc, wb + (p->w_logits - cm->params), p, n, d, V, st);
    } else if (fused) {
        dec_fused_logits(dc, p->w_logits, p, n, d, V, st);
    } else {
        layernorm_forward_cuda(dc->lnf, dc->stat, dc->h, p->lnf_w, p->lnf_b, n, d, 0, NULL, NULL, NULL, st);
        bias_add_cuda(dc->logits, p->b_logits, NULL, n, V, st);
        cuda_gemm(cm, 0, 1, n, V, d, 1, dc->lnf, NULL, d, 0, p->w_logits, NULL, d, 0, 1, dc->logits, V, 0, 1);
        dec_advance_kernel<<<1, 1, 0, st>>>(dc->d_pos);
    }
    cudaMemcpyAsync(dc->h_logits, dc->logits, sizeof(float) * (size_t)n * V, cudaMemcpyDeviceToHost, st);
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

void cuda_decoder_close(Model *m) {
    CudaModel *cm = (CudaModel *)m->impl;
    if (cm && cm->gau_dec) gau_cuda_decoder_close(m);
    if (!cm || !cm->dec) return;
    CudaDecoder *dc = cm->dec;
    if (dc->graph_ready) cudaGraphExecDestroy(dc->graph);
    if (dc->pk_layer) cudaFree(dc->pk_layer);
    if (dc->prof) {
        if (dc->prof_bytes > 0) dec_profile_print(dc, m->cfg.depth);
        cudaFreeHost(dc->prof);
        cudaFree(dc->prof_dev);
        free(dc->prof_sum);
    }
    cudaFree(dc->arena);
    cudaFree(dc->d_tok);
    cudaFreeHost(dc->h_tok);
    cudaFreeHost(dc->h_logits);
    free(dc->prompt_buf);
    free(dc);
    cm->dec = NULL;
}

int cuda_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen) {
    CudaModel *cm = (CudaModel *)m->impl;
    const FlashConfig *c = &m->cfg;
    const size_t L = c->depth, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const size_t C = c->group_size, V = c->num_tokens, H = 2 * e + s, n = nseq;
    cuda_decoder_close(m);
    if (nseq < 1) { snprintf(err, errlen, "the decoder needs at least one sequence"); return -1; }
    if (c->model == MODEL_GAU) return gau_cuda_decoder_open(m, nseq, max_prompt, err, errlen);
    if (4 * s + C + DEC_WARPS * DEC_F > CUDA_MAX_GROUP) {   /* dec_attend_kernel's shared memory */
        snprintf(err, errlen, "the CUDA decoder holds 4 query_key_dim + group_size + %d floats in shared memory, "
                 "at most %d (here %zu); sample this model on the CPU", DEC_WARPS * DEC_F, CUDA_MAX_GROUP,
                 4 * s + C + DEC_WARPS * DEC_F);
        return -1;
    }
    const int P0 = max_prompt / (int)C * (int)C;
    if (P0 > cm->capTp) {
        snprintf(err, errlen, "internal error: a prompt of %d tokens exceeds the model's capacity of %d",
                 max_prompt, cm->capTp);
        return -1;
    }
    CudaDecoder *dc = (CudaDecoder *)calloc(1, sizeof *dc);
    if (!dc) { snprintf(err, errlen, "out of memory"); return -1; }
    cm->dec = dc;
    dc->nseq = nseq;
    dc->max_prompt = max_prompt;
    /* FLASH_CUDA_DECODE_FUSED=0 takes the cuBLAS path for any count (A/B runs, tests) */
    const char *fz = getenv("FLASH_CUDA_DECODE_FUSED");
    dc->fused = dec_fused_ok(nseq, (int)d, (int)e) && !(fz && strcmp(fz, "0") == 0);
    const size_t F = config_taylor_width(c) ? dec_taylor_width((int)s) : 0;
    const size_t nzb = (s + PK_ZF - 1) / PK_ZF;
    const size_t counts[] = {L * n * s * e, L * n * C * s, L * n * C * s, L * n * C * e, L * n * d,
                             n * d, n * d, n * 2, n * H, n * H, n * e, n * d, n * V, L * n * F * (e + 1), n * s,
                             n * nzb * C};
    float **ptrs[] = {&dc->kv, &dc->gq, &dc->gk, &dc->gv, &dc->prev, &dc->h, &dc->xs, &dc->stat,
                      &dc->hid_u, &dc->hid, &dc->gated, &dc->lnf, &dc->logits, &dc->tst, &dc->qlin,
                      &dc->zpart};
    size_t total = 0;
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) total += (counts[k] + 63) / 64 * 64;
    if (cuda_fail(cudaMalloc((void **)&dc->arena, total * sizeof(float)), "memory for the decoder", err, errlen) ||
        cuda_fail(cudaMalloc((void **)&dc->d_tok, sizeof(int) * (n + 1)), "memory", err, errlen) ||
        cuda_fail(cudaMallocHost((void **)&dc->h_tok, sizeof(int) * n), "pinned memory", err, errlen) ||
        cuda_fail(cudaMallocHost((void **)&dc->h_logits, sizeof(float) * n * V), "pinned memory", err, errlen)) {
        cuda_decoder_close(m);
        return -1;
    }
    cudaMemset(dc->arena, 0, total * sizeof(float));
    size_t at = 0;
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        *ptrs[k] = dc->arena + at;
        at += (counts[k] + 63) / 64 * 64;
    }
    dc->d_pos = dc->d_tok + n;
    dc->prompt_buf = (int *)malloc(sizeof(int) * ((size_t)(max_prompt > nseq ? max_prompt : nseq) + 2));
    if (!dc->prompt_buf) { snprintf(err, errlen, "out of memory"); cuda_decoder_close(m); return -1; }
    dc->persistent = dec_persistent_open(m, dc);
    return 0;
}

/* one step: tokens in, logits out; the graph is made at the first step */
static int dec_step(Model *m, const int *tokens, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    cudaStream_t st = cm->st;
    const int n = dc->nseq, V = m->cfg.num_tokens;
    if (dc->persistent) {
        cudaError_t e = dec_persistent_launch(m, tokens);
        if (e == cudaSuccess) e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
        memcpy(logits, dc->h_logits, sizeof(float) * (size_t)n * V);
        if (dc->prof_dev) {
            const int np = 3 * m->cfg.depth + 1;
            cudaMemcpy(dc->prof, dc->prof_dev, sizeof *dc->prof * (2 * np + 3 + 32), cudaMemcpyDeviceToHost);
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
    memcpy(dc->h_tok, tokens, sizeof(int) * n);
    cudaMemcpyAsync(dc->d_tok, dc->h_tok, sizeof(int) * n, cudaMemcpyHostToDevice, st);
    if (!dc->graph_ready && !dc->graph_failed) {
        cudaGraph_t g;
        if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            dec_launch_step(m);
            if (cudaStreamEndCapture(st, &g) == cudaSuccess &&
                cudaGraphInstantiate(&dc->graph, g, 0) == cudaSuccess)
                dc->graph_ready = 1;
            cudaGraphDestroy(g);
        }
        if (!dc->graph_ready) { dc->graph_failed = 1; cudaGetLastError(); }
    }
    if (dc->graph_ready) cudaGraphLaunch(dc->graph, st);
    else dec_launch_step(m);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
    memcpy(logits, dc->h_logits, sizeof(float) * (size_t)n * V);
    dc->pos++;
    return 0;
}

int cuda_decoder_step(Model *m, const int *tokens, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    if (cm->gau_dec) return gau_cuda_decoder_step(m, tokens, logits);
    if (!cm->dec) return -1;
    return dec_step(m, tokens, logits);
}

int cuda_decoder_prefill(Model *m, const int *prompt, int P, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    if (cm->gau_dec) return gau_cuda_decoder_prefill(m, prompt, P, logits);
    CudaDecoder *dc = cm->dec;
    if (!dc || P < 1 || P > dc->max_prompt) return -1;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const int C = c->group_size, V = c->num_tokens, L = c->depth, H = 2 * e + s;
    const size_t F = config_taylor_width(c) ? dec_taylor_width((int)s) : 0;
    /* taylor: the whole prompt byte by byte (the parallel forward hands over no St) */
    const int P0 = F ? 0 : P / C * C;
    cudaStream_t st = cm->st;
    /* reset: S = 0 (St = 0), prev = 0, position 0 */
    cudaMemsetAsync(dc->kv, 0, sizeof(float) * (size_t)L * n * s * e, st);
    if (F) cudaMemsetAsync(dc->tst, 0, sizeof(float) * (size_t)L * n * F * (e + 1), st);
    cudaMemsetAsync(dc->prev, 0, sizeof(float) * (size_t)L * n * d, st);
    int zero = 0;
    cudaMemcpyAsync(dc->d_pos, &zero, sizeof(int), cudaMemcpyHostToDevice, st);
    cudaStreamSynchronize(st);
    dc->pos = 0;
    if (P0 > 0) {
        /* whole groups through the parallel forward, then its state copied out */
        memcpy(dc->prompt_buf, prompt, sizeof(int) * P0);
        dc->prompt_buf[P0] = P > P0 ? prompt[P0] : 0;   /* a target for the last row; unused */
        m->be->forward(m, dc->prompt_buf, 1, P0, NULL, NULL);
        const size_t Nm = cm->Nmax, N = (size_t)P0;
        const int G = P0 / C;
        for (int l = 0; l < L; l++) {
            const LayerParams *Pl = &cm->p.layer[l];
            float *S = dc->kv + (size_t)l * n * s * e;
            /* S after all G groups = S_{G-1} (stored, exclusive) + lin_k^T v / C of group G-1 */
            const float *kv_last = ACT(cm, A_KV) + (size_t)l * (Nm / C) * s * e + (size_t)(G - 1) * s * e;
            cudaMemcpyAsync(S, kv_last, sizeof(float) * (size_t)s * e, cudaMemcpyDeviceToDevice, st);
            const float *lin_k = ACT(cm, A_QK4) + (size_t)l * 4 * Nm * s + 3 * N * s + (size_t)(G - 1) * C * s;
            const float *v = ACT(cm, A_HID) + (size_t)l * Nm * H + (size_t)(G - 1) * C * H;
            /* bf16 keeps v and lin_k as twins only: the product in bf16 then */
            const bf16 *lin_k_h = cm->use_bf16 ? TWIN(cm, H_QK4) + (lin_k - ACT(cm, A_QK4)) : NULL;
            const bf16 *v_h = cm->use_bf16 ? TWIN(cm, H_HID) + (v - ACT(cm, A_HID)) : NULL;
            cuda_gemm(cm, 1, 0, s, e, C, 1.0f / C, lin_k, lin_k_h, s, 0, v, v_h, H, 0, 1, S, e, 0, 1);
            /* the previous normalized row: the norm of the layer's input at P0 - 1 */
            const float *row = ACT(cm, A_RES) + ((size_t)l * Nm + P0 - 1) * d;
            float *prev = dc->prev + (size_t)l * n * d;
            if (c->norm_type == NORM_SCALENORM)
                scalenorm_forward_cuda(prev, dc->stat, row, Pl->norm_g, 1, d, 0, NULL, NULL, NULL, st);
            else
                layernorm_forward_cuda(prev, dc->stat, row, Pl->norm_w, Pl->norm_b, 1, d, 0, NULL, NULL, NULL, st);
            for (int i = 1; i < n; i++) {
                cudaMemcpyAsync(S + (size_t)i * s * e, S, sizeof(float) * (size_t)s * e, cudaMemcpyDeviceToDevice, st);
                cudaMemcpyAsync(prev + (size_t)i * d, prev, sizeof(float) * d, cudaMemcpyDeviceToDevice, st);
            }
        }
        if (P0 == P)
            for (int i = 0; i < n; i++)
                cudaMemcpyAsync(logits + (size_t)i * V, ACT(cm, A_LOGITS) + (size_t)(P0 - 1) * V,
                                sizeof(float) * V, cudaMemcpyDeviceToHost, st);
        cudaMemcpyAsync(dc->d_pos, &P0, sizeof(int), cudaMemcpyHostToDevice, st);
        cudaError_t err = cudaStreamSynchronize(st);
        if (err != cudaSuccess) { fprintf(stderr, "CUDA error in the prefill: %s\n", cudaGetErrorString(err)); return -1; }
        dc->pos = P0;
    }
    int *col = dc->prompt_buf;   /* free again after the forward */
    for (int t = P0; t < P; t++) {
        for (int i = 0; i < n; i++) col[i] = prompt[t];
        if (dec_step(m, col, logits)) return -1;
    }
    return 0;
}
