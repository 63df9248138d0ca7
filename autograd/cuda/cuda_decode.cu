/* autograd/cuda/cuda_decode.cu: the recurrent decoder on the GPU, the twin of autograd/cpu/cpu_decode.c.
 *
 * Per new byte and layer: the norm with the token shift against the previous position's
 * row, one product for to_hidden and to_qk, one kernel for offset-scale, rotary, the
 * quadratic attention over the current group's keys, the linear attention against the
 * prefix sum S of the finished groups and the gate, and one product for to_out (the cuBLAS
 * path, for many sequences, computes the rotary and the scores in a kernel of their own,
 * once per sequence, and in bf16 runs its products on bf16 twins of their inputs). The
 * position lives in device memory and every launch reads it from there, so one step is
 * the same sequence of launches at every position: it is captured once as a CUDA graph
 * and replayed per byte (launching ~50 kernels one by one would cost more than they run).
 *
 * --linear-attn taylor keeps, per layer and sequence, St = sum phi(lin_k)^T [v | 1] over the
 * finished groups (F x (e+1)) in place of S; the attention kernel then leaves the linear
 * part and the gate to dec_taylor_read_kernel, and dec_taylor_fold_kernel adds a group to
 * St when it completes. A taylor prompt is fed byte by byte (no hand-over from the parallel
 * forward). --model gau samples through gau_decode.cu instead.
 *
 * This file: the decoder's state (open, prefill, step, close), the graph of the cuBLAS path
 * (many sequences) and of the fused path (three kernels a layer, a few sequences), and the
 * kernels of both. The persistent path (one cooperative kernel a byte) lives in
 * decode_persistent.cu; what the two files share, in decode.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode.h"

/* h = tok_emb[token] + scale * [sin(t w) | cos(t w)] at the current position */
__global__ void dec_embed_kernel(float *h, const int *tok, const int *pos, const float *tok_emb,
                                 const float *pos_scale, const float *inv_freq, int n, int d) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n * d) return;
    const int i = k / d, f = k % d;
    h[k] = dec_embed(tok_emb, tok + i, (double)pos[0], pos_scale, inv_freq, f, d);
}

/* the norm's statistics of row x (d features), one warp (lane: the caller's): the scale a
   and (layernorm) the mean bb, the lanes' strided sums added in the butterfly */
__device__ __forceinline__ void dec_warp_norm_stats(const float *x, int lane, int layernorm, int d, float *a,
                                                    float *bb) {
    if (!layernorm) {
        float ss = 0;
        for (int k = lane; k < d; k += 32) ss += x[k] * x[k];
        ss = warp_sum(ss);
        *a = dec_rms_scale(ss, d);
    } else {
        float s = 0;
        for (int k = lane; k < d; k += 32) s += x[k];
        s = warp_sum(s);
        const float mean = s / d;
        float v = 0;
        for (int k = lane; k < d; k += 32) { const float c = x[k] - mean; v += c * c; }
        v = warp_sum(v);
        *a = dec_ln_scale(v, d);
        *bb = mean;
    }
}

/* The cuBLAS path's norm: xn = norm(h + res_bias); xs = xn with its first ceil(d/2) features
   from prev (the previous position's xn, zeros at t = 0), and its bf16 twin xs_h when given;
   prev = xn. One warp per sequence. res_bias (NULL at layer 0) is the previous layer's bo:
   h + bo is written back into h (the residual stream), the pass the previous to_out's bias
   kernel made before (h + bo and bo + h are the same float). A lane's loads go out
   DEC_NORM_NB at a time: one at a time, each waited on an L2 trip (the stores to xs and prev
   might have aliased the next load). The sums take the terms of dec_warp_norm_stats in its
   order, so the results are the same to the bit. */
#define DEC_NORM_NB 8
__device__ __forceinline__ void dec_norm_load(float v[DEC_NORM_NB], const float *x, const float *res_bias, int k0,
                                              int lane, int d) {
#pragma unroll
    for (int u = 0; u < DEC_NORM_NB; u++) {
        const int k = k0 + lane + 32 * u;
        v[u] = k < d ? (res_bias ? x[k] + res_bias[k] : x[k]) : 0.0f;
    }
}
__global__ void dec_norm_shift_kernel(float *__restrict__ xs, float *__restrict__ prev, float *__restrict__ h,
                                      const float *__restrict__ res_bias, const float *g, const float *w,
                                      const float *b, int layernorm, int shift, int n, int d,
                                      bf16_t *__restrict__ xs_h) {
    const int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (i >= n) return;
    float *x = h + (size_t)i * d;
    float *xo = xs + (size_t)i * d, *pv = prev + (size_t)i * d;
    const int half = (d + 1) / 2, chunk = 32 * DEC_NORM_NB;
    float a = 0, bb = 0, sum = 0;
    for (int k0 = 0; k0 < d; k0 += chunk) {
        float v[DEC_NORM_NB];
        dec_norm_load(v, x, res_bias, k0, lane, d);
#pragma unroll
        for (int u = 0; u < DEC_NORM_NB; u++)
            if (k0 + lane + 32 * u < d) {
                if (layernorm) sum += v[u];
                else sum += v[u] * v[u];
            }
    }
    sum = warp_sum(sum);
    if (!layernorm) a = dec_rms_scale(sum, d);
    else {
        const float mean = sum / d;
        float var = 0;
        for (int k0 = 0; k0 < d; k0 += chunk) {
            float v[DEC_NORM_NB];
            dec_norm_load(v, x, res_bias, k0, lane, d);
#pragma unroll
            for (int u = 0; u < DEC_NORM_NB; u++)
                if (k0 + lane + 32 * u < d) { const float c = v[u] - mean; var += c * c; }
        }
        var = warp_sum(var);
        a = dec_ln_scale(var, d);
        bb = mean;
    }
    for (int k0 = 0; k0 < d; k0 += chunk) {
        float v[DEC_NORM_NB], p[DEC_NORM_NB];
        dec_norm_load(v, x, res_bias, k0, lane, d);
#pragma unroll
        for (int u = 0; u < DEC_NORM_NB; u++) {
            const int k = k0 + lane + 32 * u;
            p[u] = shift && k < half ? pv[k] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < DEC_NORM_NB; u++) {
            const int k = k0 + lane + 32 * u;
            if (k >= d) continue;
            if (res_bias) x[k] = v[u];
            const float xn = dec_norm_out(v[u], bb, a, g, w, b, k, layernorm);
            const float o = shift && k < half ? p[u] : xn;
            xo[k] = o;
            if (shift) pv[k] = xn;
            put_twin(xs_h, (size_t)i * d + k, o);
        }
    }
}

#define DEC_F 32
#define DEC_WARPS 8
/* Block-wide, for sequence i at position t (group index j = t mod C): q4 = the four
   offset-scaled and rotated rows of z (4 s), the current row's keys into the group cache
   (and lin_q for taylor's read-out), and the weights a_k = phi(q . k_k / C + sqrt(s)
   bias[bucket(j - k)]) for k <= j. q4 is the caller's shared memory, a shared or global; the
   caller synchronises after. zbias (NULL: hid holds silu already): z = silu(hid + zbias),
   bias_silu_kernel's formula. Keys in rounds of 8 a warp; the block takes rounds kpart,
   kpart + nkpart, ... (several blocks share a sequence's keys: dec_scores_kernel). */
__device__ void dec_rotate_and_score(float *q4, float *a, int i, long t, const float *hid, const float *zbias,
                                     float *gq, float *gk, const float *gamma, const float *beta,
                                     const float *freqs, const float *rel_bias, int e, int s, int r, int C, int H,
                                     int laplace, float *qlin, int write_cache, int kpart, int nkpart) {
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid % 32, warp = tid / 32;
    const int j = (int)(t % C), pairs = r / 2, units = pairs + (s - 2 * pairs);
    const float *z = hid + (size_t)i * H + 2 * e, *zb = zbias ? zbias + 2 * e : NULL;
    for (int u = tid; u < units; u += nt) {
        int f0, f1 = -1;
        if (u < pairs) { f0 = 2 * u; f1 = 2 * u + 1; } else f0 = 2 * pairs + (u - pairs);
        float c = 1, sn = 0;
        if (f1 >= 0) dec_rotary_cs(t, freqs[u], &c, &sn);
        const float z0 = zb ? silu_f(z[f0] + zb[f0]) : z[f0];
        const float z1 = f1 < 0 ? 0.0f : zb ? silu_f(z[f1] + zb[f1]) : z[f1];
        for (int k = 0; k < 4; k++) {
            const float o0 = dec_z_offset(z0, gamma[k * s + f0], beta[k * s + f0]);
            if (f1 < 0) { q4[k * s + f0] = o0; continue; }
            const float o1 = dec_z_offset(z1, gamma[k * s + f1], beta[k * s + f1]);
            q4[k * s + f0] = dec_z_rotate(o0, o1, c, sn, 0);
            q4[k * s + f1] = dec_z_rotate(o1, o0, c, sn, 1);
        }
    }
    __syncthreads();
    const float *qq = q4, *ql = q4 + s, *kq = q4 + 2 * s, *kl = q4 + 3 * s;
    float *Gq = gq + (size_t)i * C * s, *Gk = gk + (size_t)i * C * s;
    if (write_cache)
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
    for (int k0 = (kpart * (nt / 32) + warp) * 8; k0 <= j; k0 += nkpart * (nt / 32) * 8) {
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
}

/* Many sequences: the rows q4 and the weights a once per sequence (blockIdx.x) into scores
   (n x (4 s + C)), which the attention's DEC_F-feature blocks then read instead of each
   computing them again. DEC_SCORE_PARTS blocks share a sequence's keys (one block a
   sequence was a chain of rounds of 64 keys at the group's end); each writes the weights of
   its keys straight into scores, block 0 the rows q4 and the cache. */
#define DEC_SCORE_PARTS 4
__global__ void dec_scores_kernel(float *scores, float *gq, float *gk, const float *hid, const float *zbias,
                                  const int *pos, const float *gamma, const float *beta, const float *freqs,
                                  const float *rel_bias, int e, int s, int r, int C, int H, int laplace, float *qlin) {
    extern __shared__ float sh[];
    const int i = blockIdx.x;
    const long t = pos[0];
    float *row = scores + (size_t)i * (4 * s + C);
    dec_rotate_and_score(sh, row + 4 * s, i, t, hid, zbias, gq, gk, gamma, beta, freqs, rel_bias, e, s, r, C, H,
                         laplace, qlin, blockIdx.y == 0, blockIdx.y, gridDim.y);
    if (blockIdx.y == 0)
        for (int k = threadIdx.x; k < 4 * s; k += blockDim.x) row[k] = sh[k];
}

/* dec_attend_kernel's shared floats: q4, a and the warps' partial sums */
static inline size_t dec_attend_shared(size_t s, size_t C, int VF) { return 4 * s + C + (size_t)DEC_WARPS * DEC_F * VF; }
/* VF adjacent values of the cache (fp32, or bf16 in the many-sequence path of bf16 precision)
   as floats: VF 4 one 16-byte (fp32) or 8-byte (bf16) load, the address then aligned */
template <int VF>
__device__ __forceinline__ void dec_load_vf(float *g, const float *p) {
    if (VF == 4) {
        const float4 q = *reinterpret_cast<const float4 *>(p);
        g[0] = q.x; g[VF > 1 ? 1 : 0] = q.y; g[VF > 2 ? 2 : 0] = q.z; g[VF > 3 ? 3 : 0] = q.w;
    } else {
#pragma unroll
        for (int u = 0; u < VF; u++) g[u] = p[u];
    }
}
template <int VF>
__device__ __forceinline__ void dec_load_vf(float *g, const bf16 *p) {
    if (VF == 4) {
        const float4 q = W4<bf16>::cvt(*reinterpret_cast<const uint2 *>(p));
        g[0] = q.x; g[VF > 1 ? 1 : 0] = q.y; g[VF > 2 ? 2 : 0] = q.z; g[VF > 3 ? 3 : 0] = q.w;
    } else {
#pragma unroll
        for (int u = 0; u < VF; u++) g[u] = __bfloat162float(p[u]);
    }
}
/* a value as the cache of type CT holds it */
__device__ __forceinline__ float dec_cached(float v, float *) { return v; }
__device__ __forceinline__ float dec_cached(float v, bf16 *) { return __bfloat162float(__float2bfloat16(v)); }
__device__ __forceinline__ void dec_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void dec_store(bf16 *p, float v) { *p = __float2bfloat16(v); }
/* One sequence (blockIdx.x) and DEC_F of the e value features (blockIdx.y) at position t,
   group index j = t mod C: q4 and a (dec_rotate_and_score, or read from scores when the
   scores kernel ran before), the current row's values into the group cache, att = sum_k
   a_k v_k + lin_q S, gated = gate * att (and its bf16 twin gated_h when given); when the
   group is complete, S += lin_k^T v / C. The 8 warps of a block share the keys (and S's
   rows) of its features and add their sums in a fixed order. Shared: the four rotated rows
   (4 s), the weights a (C) and the warps' partial sums.
   hbias (NULL: hid holds silu already): v and the gate are silu(hid + hbias), the bias pass
   folded in. CT bf16 (the many-sequence path in bf16 precision): the value cache holds bf16
   and S is read from its bf16 twin S_h (the forward's products read v and S as bf16 too);
   the current row's v enters the sums as the cache holds it, and S stays fp32, its twin
   written where S is. */
template <int VF, typename CT>
__global__ void dec_attend_kernel(float *gated, float *kv, const CT *S_read, bf16 *S_h, float *gq, float *gk, CT *gv,
                                  const float *hid, const float *hbias, const int *pos, const float *gamma,
                                  const float *beta, const float *freqs, const float *rel_bias,
                                  int e, int s, int r, int C, int H, int laplace, const float *xn,
                                  float *prev, int d, float *qlin, const float *scores, bf16_t *gated_h) {
    extern __shared__ float sh[];
    float *q4 = sh, *a = sh + 4 * s, *part = a + C;   /* part: DEC_WARPS x DEC_F VF */
    const int i = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid % 32, warp = tid / 32;
    const long t = pos[0];
    const int j = (int)(t % C);
    const float *hrow = hid + (size_t)i * H;
    /* the fused path: this position's norm output becomes prev (every reader of the old
       prev, the kernel before, has finished) */
    if (xn && blockIdx.y == 0)
        for (int k = tid; k < d; k += nt) prev[(size_t)i * d + k] = xn[(size_t)i * d + k];
    if (scores)
        for (int k = tid; k < 4 * s + j + 1; k += nt) sh[k] = scores[(size_t)i * (4 * s + C) + k];
    else
        dec_rotate_and_score(q4, a, i, t, hid, hbias, gq, gk, gamma, beta, freqs, rel_bias, e, s, r, C, H, laplace,
                             qlin, blockIdx.y == 0, 0, 1);
    __syncthreads();
    const float *ql = q4 + s, *kl = q4 + 3 * s;
    float *Gk = gk + (size_t)i * C * s;
    CT *Gv = gv + (size_t)i * C * e;
    float *S = kv + (size_t)i * s * e;
    const CT *Sr = S_read + (size_t)i * s * e;
    bf16 *Sh = S_h ? S_h + (size_t)i * s * e : NULL;
    const float inv_C = 1.0f / C;
    /* lane's VF adjacent features f0 .. f0 + VF - 1 (VF 4: 16-byte loads); each feature's
       sums take the same terms in the same order whatever VF */
    const int f0 = (blockIdx.y * DEC_F + lane) * VF;
    const int live = f0 < e;
    float v[VF], acc[VF];
#pragma unroll
    for (int u = 0; u < VF; u++) {
        const float raw = live ? hrow[f0 + u] : 0.0f;
        v[u] = dec_cached(live && hbias ? silu_f(raw + hbias[f0 + u]) : raw, gv);
        acc[u] = 0;
    }
    if (live && warp == 0)
#pragma unroll
        for (int u = 0; u < VF; u++) dec_store(Gv + (size_t)j * e + f0 + u, v[u]);
    /* this warp's share: keys k = warp, warp + 8, ... and rows q of S likewise */
    if (live) {
#pragma unroll 8
        for (int k = warp; k < j; k += DEC_WARPS) {
            float g[VF];
            dec_load_vf<VF>(g, Gv + (size_t)k * e + f0);
#pragma unroll
            for (int u = 0; u < VF; u++) acc[u] += a[k] * g[u];
        }
        if (warp == j % DEC_WARPS)
#pragma unroll
            for (int u = 0; u < VF; u++) acc[u] += a[j] * v[u];
        if (!qlin)
#pragma unroll 8
            for (int q = warp; q < s; q += DEC_WARPS) {
                float g[VF];
                dec_load_vf<VF>(g, Sr + (size_t)q * e + f0);
#pragma unroll
                for (int u = 0; u < VF; u++) acc[u] += ql[q] * g[u];
            }
    }
#pragma unroll
    for (int u = 0; u < VF; u++) part[(warp * DEC_F + lane) * VF + u] = acc[u];
    __syncthreads();
    if (warp == 0 && live)
#pragma unroll
        for (int u = 0; u < VF; u++) {
            float sum = 0;
            for (int w = 0; w < DEC_WARPS; w++) sum += part[(w * DEC_F + lane) * VF + u];
            /* taylor: the quadratic part only; dec_taylor_read_kernel adds the linear one and gates */
            const float graw = hrow[e + f0 + u];
            const float gate = hbias ? silu_f(graw + hbias[e + f0 + u]) : graw;
            const float o = qlin ? sum : gate * sum;
            gated[(size_t)i * e + f0 + u] = o;
            if (!qlin) put_twin(gated_h, (size_t)i * e + f0 + u, o);
        }
    if (j == C - 1 && live && !qlin) {
        /* every warp has read S above (barrier): each now updates its own rows q */
        for (int q = warp; q < s; q += DEC_WARPS) {
            float sum[VF];
#pragma unroll
            for (int u = 0; u < VF; u++) sum[u] = 0;
#pragma unroll 8
            for (int k = 0; k < j; k++) {
                float g[VF];
                dec_load_vf<VF>(g, Gv + (size_t)k * e + f0);
                const float gk = Gk[(size_t)k * s + q];
#pragma unroll
                for (int u = 0; u < VF; u++) sum[u] += gk * g[u];
            }
#pragma unroll
            for (int u = 0; u < VF; u++) {
                sum[u] += kl[q] * v[u];   /* k = j: this row, not yet read back from the cache */
                const size_t at = (size_t)q * e + f0 + u;
                S[at] += inv_C * sum[u];
                if (Sh) Sh[at] = __float2bfloat16(S[at]);
            }
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
   [num | den] = phi(lin_q / sqrt s) St, gated = gate * (att + num / max(den, 1e-5)) (and
   its twin gated_h when given), att being the quadratic part dec_attend_kernel left in
   gated. Shared: phi (F), the warps'
   partial sums and the den partials. */
__global__ void dec_taylor_read_kernel(float *gated, const float *hid, const float *qlin, const float *tst,
                                       int e, int s, int H, bf16_t *gated_h) {
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
        const float o = hrow[e + f] * (gated[(size_t)i * e + f] + num / dn);
        gated[(size_t)i * e + f] = o;
        put_twin(gated_h, (size_t)i * e + f, o);
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
    dec_warp_norm_stats(x, lane, layernorm, d, &a, &bb);
    for (int k = lane; k < d; k += 32) {
        const float xn = dec_norm_out(x[k], bb, a, g, w, b, k, layernorm);
        xo[k] = shift && k < half ? pv[k] : xn;
        if (xn_out && blockIdx.x == 0) xn_out[(size_t)i * d + k] = xn;
    }
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

const char *cuda_decoder_kind(const Model *m) {
    const CudaModel *cm = (const CudaModel *)m->impl;
    if (cm->gau_dec) return "gau: a forward per byte";
    if (!cm->dec) return "";
    if (cm->dec->persistent) return "one persistent kernel a byte (grid barriers, 3 a layer)";
    if (cm->dec->fused) return "fused kernels, 3 a layer, as a CUDA graph";
    if (cm->dec->gv_h) return "cuBLAS products and kernels, bf16 value cache, as a CUDA graph";
    return "cuBLAS products and kernels, as a CUDA graph";
}

/* the launches of one step (captured once into a graph); copy_logits: the logits to the
   host's pinned buffer at the end (not when the device samples) */
static void dec_launch_step(Model *m, int copy_logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const int C = c->group_size, V = c->num_tokens, r = config_rotary(c), L = c->depth, H = 2 * e + s;
    cudaStream_t st = cm->st;
    const ModelParams *p = &cm->p;
    dec_embed_kernel<<<(n * d + 255) / 256, 256, 0, st>>>(dc->h, dc->d_tok, dc->d_pos, p->tok_emb,
                                                          p->pos_scale, p->inv_freq, n, d);
    const int fused = dc->fused, taylor = config_taylor_width(c) > 0, F = taylor ? dec_taylor_width(s) : 0;
    /* bf16 precision: the products read the weights' bf16 twins (param_twin), as the forward's do */
    const int wb = cm->params_h != NULL;
    for (int l = 0; l < L; l++) {
        const LayerParams *P = &p->layer[l];
        float *prev = dc->prev + (size_t)l * n * d;
        const int layernorm = c->norm_type == NORM_LAYERNORM;
        if (fused && wb) {
            dec_fused_hidden(dc, param_twin(cm, P->wh), P, prev, layernorm, c->shift_tokens, n, d, H, st);
        } else if (fused) {
            dec_fused_hidden(dc, P->wh, P, prev, layernorm, c->shift_tokens, n, d, H, st);
        } else {
            /* bf16: the products on the twins of their inputs and weights, as the forward's.
               The previous layer's output bias is added by this norm, and (no taylor) the
               bias + silu of to_hidden by the kernels that read its columns: two passes
               fewer a layer */
            dec_norm_shift_kernel<<<(n + 3) / 4, 128, 0, st>>>(dc->xs, prev, dc->h, l ? p->layer[l - 1].bo : NULL,
                                                               P->norm_g, P->norm_w, P->norm_b, layernorm,
                                                               c->shift_tokens, n, d, TW(dc->xs_h));
            cuda_gemm(cm, 0, 1, n, H, d, 1, dc->xs, dc->xs_h, d, 0, P->wh, param_twin(cm, P->wh), d, 0,
                      0, dc->hid_u, H, 0, 1);
            if (taylor) bias_silu_cuda(dc->hid_u, NULL, dc->hid, P->bh, n, H, H, NULL, st);
            dec_scores_kernel<<<dim3(n, DEC_SCORE_PARTS), 32 * DEC_WARPS, sizeof(float) * 4 * (size_t)s, st>>>(
                dc->scores, dc->gq + (size_t)l * n * C * s, dc->gk + (size_t)l * n * C * s,
                taylor ? dc->hid : dc->hid_u, taylor ? NULL : P->bh, dc->d_pos, P->gamma, P->beta, P->rot_freqs,
                P->rel_bias, e, s, r, C, H, (c->attn_fn == ATTN_LAPLACE), taylor ? dc->qlin : NULL);
        }
        dim3 grid(n, (e + DEC_F - 1) / DEC_F);
        /* many sequences: four adjacent features a lane (a quarter of the blocks, 16-byte
           loads of the cached values and of S) */
        const int vf4 = !fused && e % 4 == 0 && H % 4 == 0 && dec_attend_shared(s, C, 4) <= CUDA_MAX_GROUP;
        dim3 agrid(n, vf4 ? (e + 4 * DEC_F - 1) / (4 * DEC_F) : grid.y);
        const size_t ash = sizeof(float) * dec_attend_shared(s, C, vf4 ? 4 : 1);
        float *S = dc->kv + (size_t)l * n * s * e, *Gq = dc->gq + (size_t)l * n * C * s;
        float *Gk = dc->gk + (size_t)l * n * C * s;
        const float *hid = fused || taylor ? dc->hid : dc->hid_u, *hb = fused || taylor ? NULL : P->bh;
        const float *xn = fused && c->shift_tokens ? dc->xs : NULL, *scores = fused ? NULL : dc->scores;
        const int lap = c->attn_fn == ATTN_LAPLACE;
        if (dc->gv_h) {
            /* the many-sequence path in bf16: the value cache and S read as bf16 (decode.h) */
            bf16 *Sh = dc->kv_h + (size_t)l * n * s * e;
            dec_attend_kernel<4, bf16><<<agrid, 32 * DEC_WARPS, ash, st>>>(
                dc->gated, S, Sh, Sh, Gq, Gk, dc->gv_h + (size_t)l * n * C * e, hid, hb, dc->d_pos, P->gamma, P->beta,
                P->rot_freqs, P->rel_bias, e, s, r, C, H, lap, xn, prev, d, NULL, scores, TW(dc->gated_h));
        } else {
            auto attend = vf4 ? dec_attend_kernel<4, float> : dec_attend_kernel<1, float>;
            attend<<<agrid, 32 * DEC_WARPS, ash, st>>>(dc->gated, S, S, NULL, Gq, Gk, dc->gv + (size_t)l * n * C * e,
                                                     hid, hb, dc->d_pos, P->gamma, P->beta, P->rot_freqs,
                                                     P->rel_bias, e, s, r, C, H, lap, xn, prev, d,
                                                     taylor ? dc->qlin : NULL, scores,
                                                     fused ? NULL : TW(dc->gated_h));
        }
        if (taylor) {
            float *St = dc->tst + (size_t)l * n * F * (e + 1);
            dec_taylor_read_kernel<<<grid, 32 * DEC_WARPS, sizeof(float) * (F + DEC_WARPS * DEC_F + DEC_WARPS + s), st>>>(
                dc->gated, dc->hid, dc->qlin, St, e, s, H, fused ? NULL : TW(dc->gated_h));
            dim3 fg(n, (e + 1 + 31) / 32, (F + DEC_WARPS - 1) / DEC_WARPS);
            dec_taylor_fold_kernel<<<fg, 32 * DEC_WARPS, 0, st>>>(St, dc->gk + (size_t)l * n * C * s,
                                                                   dc->gv + (size_t)l * n * C * e, dc->d_pos, C, e, s);
        }
        /* h += gated Wo^T + bo */
        if (fused && wb) {
            dec_fused_out(dc, param_twin(cm, P->wo), P->bo, n, d, e, st);
        } else if (fused) {
            dec_fused_out(dc, P->wo, P->bo, n, d, e, st);
        } else {
            cuda_gemm(cm, 0, 1, n, d, e, 1, dc->gated, dc->gated_h, e, 0, P->wo, param_twin(cm, P->wo), e,
                      0, 1, dc->h, d, 0, 1);
            if (l == L - 1) bias_add_cuda(dc->h, P->bo, dc->h, n, d, st);   /* else the next norm adds it */
        }
    }
    if (fused && wb) {
        dec_fused_logits(dc, param_twin(cm, p->w_logits), p, n, d, V, st);
    } else if (fused) {
        dec_fused_logits(dc, p->w_logits, p, n, d, V, st);
    } else {
        layernorm_forward_cuda(dc->lnf, dc->stat, dc->h, p->lnf_w, p->lnf_b, n, d, 0, TW(dc->lnf_h), NULL, NULL, st);
        bias_add_cuda(dc->logits, p->b_logits, NULL, n, V, st);
        cuda_gemm(cm, 0, 1, n, V, d, 1, dc->lnf, dc->lnf_h, d, 0, p->w_logits,
                  param_twin(cm, p->w_logits), d, 0, 1, dc->logits, V, 0, 1);
        dec_advance_kernel<<<1, 1, 0, st>>>(dc->d_pos);
    }
    if (copy_logits)
        cudaMemcpyAsync(dc->h_logits, dc->logits, sizeof(float) * (size_t)n * V, cudaMemcpyDeviceToHost, st);
}

void cuda_decoder_close(Model *m) {
    CudaModel *cm = (CudaModel *)m->impl;
    if (cm && cm->gau_dec) gau_cuda_decoder_close(m);
    if (!cm || !cm->dec) return;
    CudaDecoder *dc = cm->dec;
    if (dc->gprof) {
        if (dc->gprof_steps > 0) {
            const double k = 1e6 / (double)dc->gprof_steps;
            fprintf(stderr, "decoder profile, %s, %d sequences, %ld steps: a step's stream (token copy, graph, "
                    "logits copy) %.1f us, dec_step's wall %.1f us, between steps (the caller: sampling) %.1f us\n",
                    cuda_decoder_kind(m), dc->nseq, dc->gprof_steps, dc->gprof_gpu * k, dc->gprof_wall * k,
                    dc->gprof_steps > 1 ? dc->gprof_outside * 1e6 / (double)(dc->gprof_steps - 1) : 0.0);
        }
        if (dc->gprof_ssteps > 0)
            fprintf(stderr, "decoder profile, %s, %d sequences, %ld steps sampled on the device: a step's stream "
                    "(sampler + step) %.1f us, the host's wall %.1f us\n", cuda_decoder_kind(m), dc->nseq,
                    dc->gprof_ssteps, dc->gprof_sgpu * 1e6 / (double)dc->gprof_ssteps,
                    dc->gprof_swall * 1e6 / (double)dc->gprof_ssteps);
        cudaEventDestroy(dc->gprof_ev[0]);
        cudaEventDestroy(dc->gprof_ev[1]);
    }
    if (dc->graph_ready) cudaGraphExecDestroy(dc->graph);
    if (dc->sample_ready) cudaGraphExecDestroy(dc->graph_sample);
    cudaFree(dc->d_u);
    cudaFree(dc->d_hist);
    cudaFreeHost(dc->h_u);
    cudaFreeHost(dc->h_hist);
    dec_persistent_close(dc, m->cfg.depth);
    cudaFree(dc->arena);
    cudaFree(dc->xs_h);
    cudaFree(dc->gv_h);
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
    if (dec_attend_shared(s, C, 1) > CUDA_MAX_GROUP) {   /* dec_attend_kernel's shared memory */
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
    /* the cuBLAS path in bf16 (the attention kernel's 4-feature form): a bf16 value cache in
       place of gv, and S's twin */
    const int bf16_cache = cm->use_bf16 && cm->params_h && !dc->fused && !F && !dec_persistent_wanted(m, nseq) &&
                           e % 4 == 0 && H % 4 == 0 && dec_attend_shared(s, C, 4) <= CUDA_MAX_GROUP;
    const size_t counts[] = {L * n * s * e, L * n * C * s, L * n * C * s, bf16_cache ? 0 : L * n * C * e, L * n * d,
                             n * d, n * d, n * 2, n * H, n * H, n * e, n * d, n * V, L * n * F * (e + 1), n * s,
                             dec_persistent_zpart_floats(n, s, C), n * (4 * s + C)};
    float **ptrs[] = {&dc->kv, &dc->gq, &dc->gk, &dc->gv, &dc->prev, &dc->h, &dc->xs, &dc->stat,
                      &dc->hid_u, &dc->hid, &dc->gated, &dc->lnf, &dc->logits, &dc->tst, &dc->qlin,
                      &dc->zpart, &dc->scores};
    size_t total = 0;
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) total += (counts[k] + 63) / 64 * 64;
    if (cuda_fail(cudaMalloc((void **)&dc->arena, total * sizeof(float)), "memory for the decoder", err, errlen) ||
        cuda_fail(cudaMalloc((void **)&dc->d_tok, sizeof(int) * (n + 2)), "memory", err, errlen) ||
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
    if (bf16_cache) dc->gv = NULL;   /* its count was 0: the pointer aliases the next buffer */
    if (cm->use_bf16 && cm->params_h) {
        /* the cuBLAS path's bf16 products read these twins of their inputs */
        bf16 *tw = NULL;
        if (cuda_fail(cudaMalloc((void **)&tw, sizeof(bf16) * n * (2 * d + e)), "memory for the decoder", err, errlen)) {
            cuda_decoder_close(m);
            return -1;
        }
        dc->xs_h = tw; dc->lnf_h = tw + n * d; dc->gated_h = tw + 2 * n * d;
    }
    if (bf16_cache) {
        if (cuda_fail(cudaMalloc((void **)&dc->gv_h, sizeof(bf16) * L * n * (C + s) * e), "memory for the decoder",
                      err, errlen)) {
            cuda_decoder_close(m);
            return -1;
        }
        dc->kv_h = dc->gv_h + L * n * C * e;
        cudaMemset(dc->gv_h, 0, sizeof(bf16) * L * n * (C + s) * e);
    }
    dc->prompt_buf = (int *)malloc(sizeof(int) * ((size_t)(max_prompt > nseq ? max_prompt : nseq) + 2));
    if (!dc->prompt_buf) { snprintf(err, errlen, "out of memory"); cuda_decoder_close(m); return -1; }
    dc->persistent = dec_persistent_open(m, dc);
    if (cuda_fail(cudaMalloc((void **)&dc->d_u, sizeof(double) * n * DEC_SAMPLE_STEPS), "memory", err, errlen) ||
        cuda_fail(cudaMalloc((void **)&dc->d_hist, sizeof(int) * n * DEC_SAMPLE_STEPS), "memory", err, errlen) ||
        cuda_fail(cudaMallocHost((void **)&dc->h_u, sizeof(double) * n * DEC_SAMPLE_STEPS), "pinned memory", err,
                  errlen) ||
        cuda_fail(cudaMallocHost((void **)&dc->h_hist, sizeof(int) * n * DEC_SAMPLE_STEPS), "pinned memory", err,
                  errlen)) {
        cuda_decoder_close(m);
        return -1;
    }
    const char *pf = getenv("FLASH_CUDA_DECODE_PROFILE");
    if (!dc->persistent && pf && strcmp(pf, "1") == 0 && cudaEventCreate(&dc->gprof_ev[0]) == cudaSuccess) {
        if (cudaEventCreate(&dc->gprof_ev[1]) == cudaSuccess) dc->gprof = 1;
        else cudaEventDestroy(dc->gprof_ev[0]);
    }
    return 0;
}

static double cuda_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* one step: tokens in, logits out; the graph is made at the first step */
static int dec_step(Model *m, const int *tokens, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    cudaStream_t st = cm->st;
    const int n = dc->nseq, V = m->cfg.num_tokens;
    if (dc->persistent) return dec_persistent_step(m, tokens, logits);
    const double t_in = dc->gprof ? cuda_now_s() : 0;
    if (dc->gprof) cudaEventRecord(dc->gprof_ev[0], st);
    memcpy(dc->h_tok, tokens, sizeof(int) * n);
    cudaMemcpyAsync(dc->d_tok, dc->h_tok, sizeof(int) * n, cudaMemcpyHostToDevice, st);
    if (!dc->graph_ready && !dc->graph_failed) {
        cudaGraph_t g;
        if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            dec_launch_step(m, 1);
            if (cudaStreamEndCapture(st, &g) == cudaSuccess &&
                cudaGraphInstantiate(&dc->graph, g, 0) == cudaSuccess)
                dc->graph_ready = 1;
            cudaGraphDestroy(g);
        }
        if (!dc->graph_ready) { dc->graph_failed = 1; cudaGetLastError(); }
    }
    if (dc->graph_ready) cudaGraphLaunch(dc->graph, st);
    else dec_launch_step(m, 1);
    if (dc->gprof) cudaEventRecord(dc->gprof_ev[1], st);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
    memcpy(logits, dc->h_logits, sizeof(float) * (size_t)n * V);
    dc->pos++;
    if (dc->gprof && dc->graph_ready) {   /* the first step (the graph's capture) is left out */
        float ms = 0;
        cudaEventElapsedTime(&ms, dc->gprof_ev[0], dc->gprof_ev[1]);
        const double t_out = cuda_now_s();
        if (dc->gprof_steps > 0) dc->gprof_outside += t_in - dc->gprof_last;
        if (dc->gprof_last > 0) { dc->gprof_gpu += ms * 1e-3; dc->gprof_wall += t_out - t_in; dc->gprof_steps++; }
        dc->gprof_last = t_out;
    }
    return 0;
}

int cuda_decoder_step(Model *m, const int *tokens, float *logits) {
    CudaModel *cm = (CudaModel *)m->impl;
    if (cm->gau_dec) return gau_cuda_decoder_step(m, tokens, logits);
    if (!cm->dec) return -1;
    return dec_step(m, tokens, logits);
}

/* the sampler then the step, reading the sampler's tokens (captured once into a graph) */
static int dec_launch_sample_step(Model *m, int k, double temperature) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    if (sample_topk_cuda(dc->d_tok, dc->d_hist, dc->logits, dc->d_u, dc->d_pos, dc->nseq, m->cfg.num_tokens, k,
                         temperature, cm->st))
        return -1;
    dec_launch_step(m, 0);
    return 0;
}

/* model_decoder_sample on the graph paths: DEC_SAMPLE_STEPS steps at a time, the uniforms
   up and the bytes back once per batch of steps, the host waiting only at its end. The
   graph is captured for one k and temperature: another pair captures it again. */
int cuda_decoder_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens) {
    CudaModel *cm = (CudaModel *)m->impl;
    CudaDecoder *dc = cm->dec;
    const char *env = getenv("FLASH_CUDA_DECODE_SAMPLE");
    if (cm->gau_dec || !dc || (env && strcmp(env, "0") == 0) || m->cfg.num_tokens > SAMPLE_MAX_V || k < 1 ||
        k > 256)
        return 1;   /* the host samples */
    if (dc->persistent) return dec_persistent_sample(m, steps, k, temperature, u, tokens);
    cudaStream_t st = cm->st;
    const int n = dc->nseq;
    if (dc->sample_ready && (k != dc->sample_k || temperature != dc->sample_temp)) {
        cudaGraphExecDestroy(dc->graph_sample);
        dc->sample_ready = 0;
    }
    for (int s0 = 0; s0 < steps; s0 += DEC_SAMPLE_STEPS) {
        const int ms = steps - s0 < DEC_SAMPLE_STEPS ? steps - s0 : DEC_SAMPLE_STEPS;
        const double t_in = dc->gprof ? cuda_now_s() : 0;
        memcpy(dc->h_u, u + (size_t)s0 * n, sizeof(double) * (size_t)ms * n);
        cudaMemcpyAsync(dc->d_u, dc->h_u, sizeof(double) * (size_t)ms * n, cudaMemcpyHostToDevice, st);
        cudaMemcpyAsync(dc->d_pos + 1, dc->d_pos, sizeof(int), cudaMemcpyDeviceToDevice, st);
        if (dc->gprof) cudaEventRecord(dc->gprof_ev[0], st);
        if (!dc->sample_ready && !dc->sample_failed) {
            cudaGraph_t g;
            if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
                const int bad = dec_launch_sample_step(m, k, temperature);
                if (cudaStreamEndCapture(st, &g) == cudaSuccess && !bad &&
                    cudaGraphInstantiate(&dc->graph_sample, g, 0) == cudaSuccess) {
                    dc->sample_ready = 1;
                    dc->sample_k = k;
                    dc->sample_temp = temperature;
                }
                cudaGraphDestroy(g);
            }
            if (!dc->sample_ready) { dc->sample_failed = 1; cudaGetLastError(); }
        }
        for (int i = 0; i < ms; i++)
            if (dc->sample_ready) cudaGraphLaunch(dc->graph_sample, st);
            else if (dec_launch_sample_step(m, k, temperature)) return -1;
        if (dc->gprof) cudaEventRecord(dc->gprof_ev[1], st);
        cudaMemcpyAsync(dc->h_hist, dc->d_hist, sizeof(int) * (size_t)ms * n, cudaMemcpyDeviceToHost, st);
        cudaError_t e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the decoder: %s\n", cudaGetErrorString(e)); return -1; }
        memcpy(tokens + (size_t)s0 * n, dc->h_hist, sizeof(int) * (size_t)ms * n);
        dc->pos += ms;
        if (dc->gprof) {
            float msec = 0;
            cudaEventElapsedTime(&msec, dc->gprof_ev[0], dc->gprof_ev[1]);
            dc->gprof_sgpu += msec * 1e-3;
            dc->gprof_swall += cuda_now_s() - t_in;
            dc->gprof_ssteps += ms;
        }
    }
    return 0;
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
    if (dc->kv_h) cudaMemsetAsync(dc->kv_h, 0, sizeof(bf16) * (size_t)L * n * s * e, st);
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
        if (dc->kv_h) to_bf16_cuda(TW(dc->kv_h), dc->kv, (size_t)L * n * s * e, st);   /* S's twin */
        if (P0 == P)
            for (int i = 0; i < n; i++) {
                cudaMemcpyAsync(logits + (size_t)i * V, ACT(cm, A_LOGITS) + (size_t)(P0 - 1) * V,
                                sizeof(float) * V, cudaMemcpyDeviceToHost, st);
                /* and where the device's sampler reads them */
                cudaMemcpyAsync(dc->logits + (size_t)i * V, ACT(cm, A_LOGITS) + (size_t)(P0 - 1) * V,
                                sizeof(float) * V, cudaMemcpyDeviceToDevice, st);
            }
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
