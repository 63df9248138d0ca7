/* autograd/cuda/decode.h: what the two files of the recurrent decoder on the GPU share.
 *
 * cuda_decode.cu holds the decoder's state, its cuBLAS and fused paths and the entry points
 * (open, prefill, step, close); decode_persistent.cu the persistent cooperative kernel and
 * its host side. Both need the decoder's struct, the weight loads and row dots of the fused
 * products (the persistent kernel runs the same products), and the formulas of a byte that
 * each path computes (the embedding, the rotary of z, the norm): written once here, so that
 * the paths cannot drift apart. Each helper keeps its callers' floating-point operations and
 * their order, so that sharing it changes no result to the bit. C++ (CUDA), for the
 * decoder's .cu files only. */
#ifndef FLASH_CUDA_DECODE_H
#define FLASH_CUDA_DECODE_H
#include <math.h>

#include "cuda_model.h"
#include "kernels.cuh"

typedef struct CudaDecoder {
    int nseq, max_prompt;
    float *arena;
    float *kv, *gq, *gk, *gv, *prev;        /* state per layer and sequence */
    float *tst, *qlin;                      /* taylor: St per layer and sequence; this step's lin_q */
    float *h, *xs, *stat, *hid_u, *hid, *gated, *lnf, *logits;
    float *scores;                          /* the cuBLAS path: q4 and a per sequence (dec_scores_kernel) */
    bf16 *xs_h, *lnf_h, *gated_h;           /* the cuBLAS path in bf16: its products' inputs (one allocation) */
    bf16 *gv_h, *kv_h;                      /* the cuBLAS path in bf16 (no taylor): the value cache in bf16
                                               (gv unused) and S's bf16 twin, what the attention reads
                                               (one allocation; NULL elsewhere) */
    int *d_tok, *d_pos;                     /* d_pos[0]: the position; d_pos[1]: the position at the
                                               first step of a model_decoder_sample call */
    int *h_tok;                             /* pinned: the step's tokens */
    float *h_logits;                        /* pinned: the step's logits */
    int *prompt_buf;                        /* host: a prompt's whole groups + a target */
    long pos;
    cudaGraphExec_t graph;
    int graph_ready, graph_failed;
    /* sampling on the device (cuda_decoder_sample): a graph of the sampler + the step
       without the logits' copy, launched once a byte; a call's uniforms and bytes, up to
       DEC_SAMPLE_STEPS steps at once, through pinned buffers */
    cudaGraphExec_t graph_sample;
    int sample_ready, sample_failed;
    int sample_k;                           /* the captured graph's k and temperature */
    double sample_temp;
    double *d_u, *h_u;
    int *d_hist, *h_hist;
    int fused;                              /* the three-kernel layer (few sequences) */
    int persistent;                         /* one cooperative kernel a byte (decode_persistent.cu) */
    int pk_blocks;                          /* its grid: one block an SM */
    size_t pk_smem;                         /* its dynamic shared memory, bytes */
    void *pk_layer;                         /* device: its PkLayer per layer */
    float *zpart;                           /* its partial dots: n x z-blocks x C */
    float *logits_mapped;                   /* h_logits as the device addresses it */
    unsigned long long *prof, *prof_dev;    /* FLASH_CUDA_DECODE_PROFILE=1: pinned phase times */
    double *prof_sum;                       /* their sums over the bytes: work, barrier per phase */
    long prof_bytes;
    /* FLASH_CUDA_DECODE_PROFILE=1 on the graph paths: a step's stream time (events around the
       token copy, the graph and the logits copy), its wall time in dec_step, and the wall time
       between steps (the caller's: sampling) */
    cudaEvent_t gprof_ev[2];
    int gprof;
    long gprof_steps;
    double gprof_gpu, gprof_wall, gprof_outside, gprof_last;
    long gprof_ssteps;                      /* the same for the steps sampled on the device */
    double gprof_sgpu, gprof_swall;
} CudaDecoder;

#define DEC_SAMPLE_STEPS 256   /* steps of device sampling between two trips to the host */

#define DEC_FUSED_SEQ 8   /* the fused and the persistent path: at most this many sequences */

/* the embedding of the token at tok, position t, feature f of d: tok_emb[*tok] + scale *
   [sin(t w) | cos(t w)] (an odd d's last feature without the position's); the token is read
   where the sum needs it */
__device__ __forceinline__ float dec_embed(const float *tok_emb, const int *tok, double t, const float *pos_scale,
                                          const float *inv_freq, int f, int d) {
    const int half = d / 2;
    float pe = 0;
    if (f < half) pe = (float)sin(t * (double)inv_freq[f]);
    else if (f < 2 * half) pe = (float)cos(t * (double)inv_freq[f - half]);
    return tok_emb[(size_t)*tok * d + f] + pos_scale[0] * pe;
}

/* the rotary angle of a pair at position t: its cosine and sine */
__device__ __forceinline__ void dec_rotary_cs(long t, float freq, float *c, float *sn) {
    const double ang = (double)t * (double)freq;
    *c = (float)cos(ang);
    *sn = (float)sin(ang);
}
/* a feature of one of the four offset-scaled rows of z: o = z gamma + beta; in a rotary pair,
   with its partner's o_p, rotated: o c - o_p sn for the pair's first feature, o c + o_p sn
   for its second (odd) */
__device__ __forceinline__ float dec_z_offset(float z, float g, float b) { return z * g + b; }
__device__ __forceinline__ float dec_z_rotate(float o, float op, float c, float sn, int odd) {
    return odd ? o * c + op * sn : o * c - op * sn;
}

/* The norm of a row: the scale from the row's sum (scalenorm: of squares; layernorm: of
   squared deviations from the mean), then the output feature. The paths reduce the sums in
   their own orders (a warp a row, or the whole block), so only these formulas are shared. */
__device__ __forceinline__ float dec_rms_scale(float ss, int d) {
    const float nrm = sqrtf(ss / d);
    return 1.0f / (nrm > 1e-5f ? nrm : 1e-5f);
}
__device__ __forceinline__ float dec_ln_scale(float v, int d) { return rsqrtf(v / d + 1e-5f); }
/* feature k of the output, x its input: layernorm (x - mean) a w + b, scalenorm x a g */
__device__ __forceinline__ float dec_norm_out(float x, float mean, float a, const float *g, const float *w,
                                             const float *b, int k, int layernorm) {
    return layernorm ? (x - mean) * a * w[k] + b[k] : x * a * g[0];
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

/* the persistent path (decode_persistent.cu), called by cuda_decode.cu */
/* floats of its partial dots (n x z-blocks x C), part of the decoder's arena */
size_t dec_persistent_zpart_floats(size_t n, size_t s, size_t C);
/* sets it up where it applies (FLASH_CUDA_DECODE_PERSISTENT); 1 when taken */
int dec_persistent_open(Model *m, CudaDecoder *dc);
/* whether the persistent path is asked for and the model's shape allows it (the device's
   own checks come in dec_persistent_open) */
int dec_persistent_wanted(const Model *m, int n);
/* one byte: tokens in, logits out; -1 on a CUDA error */
int dec_persistent_step(Model *m, const int *tokens, float *logits);
/* steps bytes sampled inside the persistent kernel (cuda_decoder_sample's contract) */
int dec_persistent_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens);
/* frees its device state; FLASH_CUDA_DECODE_PROFILE=1: prints the profile first */
void dec_persistent_close(CudaDecoder *dc, int L);

#endif
