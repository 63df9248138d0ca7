/* autograd/cuda/cuda_ops.cu: the GPU twins of the CPU ops (see cuda_ops.h). Each kernel says which
 * CPU op it reproduces; the derivations are beside the CPU ops (autograd/) and are the
 * same here. Every reduction runs in a fixed order (no atomics), so a run repeats bit for
 * bit on the same GPU. */
#include "cuda_ops.h"
extern "C" {
#include "optim.h"
}
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#define NORM_EPS 1e-5f
#define LAPLACE_MU 0.70710678118654752440f
#define LAPLACE_SIGMA 0.28209479177387814347f
#define RED_SLICES 64        /* row slices of a column sum (scratch: 64 x M) */

typedef __nv_bfloat16 bf16;

static inline unsigned grid_for(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)(g > 65535u * 32u ? 65535u * 32u : (g ? g : 1));
}

/* Row-wise element kernels: x over the columns (256 per block), y over the rows (grid-
   stride), so that no thread divides a 64-bit index (slow on the GPU). */
#define ROW_BLOCKS 2048   /* at most this many blocks down the rows: each thread takes several */
static inline dim3 grid_rows(int rows, int cols) {
    return dim3((unsigned)((cols + 255) / 256), (unsigned)(rows < ROW_BLOCKS ? (rows > 0 ? rows : 1) : ROW_BLOCKS));
}
#define FOR_ROWS(n, rows) for (int n = blockIdx.y; n < (rows); n += gridDim.y)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ void put_twin(bf16_t *twin, size_t k, float v) {
    if (twin) reinterpret_cast<bf16 *>(twin)[k] = __float2bfloat16(v);
}
/* x[i] from its bf16 twin when one is given (bf16 precision keeps no fp32 copy) */
__device__ __forceinline__ float ld_act(const float *x, const bf16_t *x16, size_t i) {
    return x16 ? __bfloat162float(reinterpret_cast<const bf16 *>(x16)[i]) : x[i];
}
__device__ __forceinline__ float silu_f(float u) { return u / (1.0f + expf(-u)); }
/* bf16 only: the fast exponential (a few ulp of fp32, far below bf16's rounding) */
__device__ __forceinline__ float sigmoid_fast(float u) { return __frcp_rn(1.0f + __expf(-u)); }
/* silu'(p) = s (1 + p (1 - s)) with s = sigmoid(p): the second factor, the kernels multiply
   by s themselves (s is also silu's own factor) */
__device__ __forceinline__ float silu_grad_factor(float p, float s) { return 1.0f + p * (1.0f - s); }
/* bf16 keeps the gate's columns only as the product's raw output u16 (no bias, no silu: one
   pass over them fewer); the gate's kernels are given the bias (pre_bias) and take
   silu(u16 + b) themselves. Without pre_bias ld_silu reads the stored silu. */
__device__ __forceinline__ float raw_pre(const bf16_t *u16, const float *pre_bias, size_t i, int j) {
    return __bfloat162float(reinterpret_cast<const bf16 *>(u16)[i]) + pre_bias[j];
}
__device__ __forceinline__ float ld_silu(const float *x, const bf16_t *x16, const float *pre_bias, size_t i, int j) {
    return pre_bias ? silu_f(raw_pre(x16, pre_bias, i, j)) : ld_act(x, x16, i);
}
__device__ __forceinline__ float sigmoid_f(float u) { return 1.0f / (1.0f + expf(-u)); }

/* ================================ reductions ======================================= */

/* stage 1: partial[slice][j] = sum over the slice's rows (8 row lanes, combined in order) */
__global__ void colsum_partial_kernel(float *partial, const float *A, int lda, const float *Bm,
                                      int ldb, int N, int M) {
    __shared__ float acc[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    float s = 0;
    if (j < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) {
            float a = A[(size_t)n * lda + j];
            s += Bm ? a * Bm[(size_t)n * ldb + j] : a;
        }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < M) {
        float t = 0;
        for (int y = 0; y < 8; y++) t += acc[y][threadIdx.x];
        partial[(size_t)slice * M + j] = t;
    }
}
__global__ void colsum_final_kernel(float *dst, const float *partial, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    float t = 0;
    for (int sl = 0; sl < RED_SLICES; sl++) t += partial[(size_t)sl * M + j];
    dst[j] += t;
}
/* the same over a bf16 matrix */
__global__ void colsum16_partial_kernel(float *partial, const bf16_t *A, int lda, int N, int M) {
    __shared__ float acc[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    const bf16 *a16 = reinterpret_cast<const bf16 *>(A);
    float s = 0;
    if (j < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) s += __bfloat162float(a16[(size_t)n * lda + j]);
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < M) {
        float t = 0;
        for (int y = 0; y < 8; y++) t += acc[y][threadIdx.x];
        partial[(size_t)slice * M + j] = t;
    }
}
/* the same, two columns per thread (4-byte loads; each column's sum in the same order) */
__global__ void colsum16x2_partial_kernel(float *partial, const bf16_t *A, int lda, int N, int M) {
    __shared__ float acc[8][65];
    const int j2 = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(A);
    float s0 = 0, s1 = 0;
    if (2 * j2 < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) {
            const float2 v = __bfloat1622float2(a2[((size_t)n * lda) / 2 + j2]);
            s0 += v.x;
            s1 += v.y;
        }
    acc[threadIdx.y][2 * threadIdx.x] = s0;
    acc[threadIdx.y][2 * threadIdx.x + 1] = s1;
    __syncthreads();
    if (threadIdx.y < 2) {   /* row y of the block's first two: column 2 x + y */
        const int c = 2 * threadIdx.x + threadIdx.y, j = 2 * blockIdx.x * 32 + c;
        if (j < M) {
            float t = 0;
            for (int y = 0; y < 8; y++) t += acc[y][c];
            partial[(size_t)slice * M + j] = t;
        }
    }
}
void colsum16_add_cuda(float *dst, const bf16_t *A, int lda, int N, int M, float *scratch,
                       cudaStream_t st) {
    if (M <= 0) return;
    if (M % 2 == 0 && lda % 2 == 0 && (uintptr_t)A % 4 == 0) {
        dim3 grid((M + 63) / 64, RED_SLICES), block(32, 8);
        colsum16x2_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, N, M);
    } else {
        dim3 grid((M + 31) / 32, RED_SLICES), block(32, 8);
        colsum16_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, N, M);
    }
    colsum_final_kernel<<<(M + 255) / 256, 256, 0, st>>>(dst, scratch, M);
}
void colsum_add_cuda(float *dst, const float *A, int lda, const float *Bm, int ldb, int N, int M,
                     float *scratch, cudaStream_t st) {
    if (M <= 0) return;
    dim3 grid((M + 31) / 32, RED_SLICES), block(32, 8);
    colsum_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, Bm, ldb, N, M);
    colsum_final_kernel<<<(M + 255) / 256, 256, 0, st>>>(dst, scratch, M);
}

/* The sum of a block of 256 threads' values in a fixed tree (every thread calls it, once per
   kernel; the total is returned to all). */
__device__ double block_sum_256(double s) {
    __shared__ double part[256];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    return part[0];
}
/* one block of 256 threads: strided partial sums, then the tree */
__global__ void sum_add_kernel(float *dst, const float *src, int n, float scale) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += 256) s += src[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) dst[0] += (float)(scale * s);
}
void sum_add_cuda(float *dst, const float *src, int n, float scale, cudaStream_t st) {
    sum_add_kernel<<<1, 256, 0, st>>>(dst, src, n, scale);
}

/* ================================ embedding ======================================== */

__global__ void embed_forward_kernel(float *h, const int *tokens, int tstride, const float *tok_emb,
                                     const float *pos_scale, const float *pos_table, int B, int T,
                                     int Tp, int d) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    const float scale = pos_scale[0];
    FOR_ROWS(n, B * Tp) {
        const int t = n % Tp, b = n / Tp;
        const int tok = t < T ? tokens[(size_t)b * tstride + t] : 0;
        h[(size_t)n * d + i] = tok_emb[(size_t)tok * d + i] + scale * pos_table[(size_t)t * d + i];
    }
}
void embed_forward_cuda(float *h, const int *tokens, int tstride, const float *tok_emb,
                        const float *pos_scale, const float *pos_table, int B, int T, int Tp, int d,
                        cudaStream_t st) {
    embed_forward_kernel<<<grid_rows(B * Tp, d), 256, 0, st>>>(h, tokens, tstride, tok_emb, pos_scale,
                                                                pos_table, B, T, Tp, d);
}

/* d tok_emb[v] += sum of dh over v's rows, in the listed order */
__global__ void embed_tok_backward_kernel(float *d_tok_emb, const float *dh, const int *order,
                                          const int *start, int d) {
    const int v = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = 0;
    for (int p = start[v]; p < start[v + 1]; p++) s += dh[(size_t)order[p] * d + j];
    d_tok_emb[(size_t)v * d + j] += s;
}
/* row_out[n] = dh_n . pos_table[t] (one warp per row) */
__global__ void row_dot_pos_kernel(float *row_out, const float *dh, const float *pos_table, int N,
                                   int Tp, int d) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *g = dh + (size_t)n * d, *p = pos_table + (size_t)(n % Tp) * d;
    float s = 0;
    for (int i = lane; i < d; i += 32) s += g[i] * p[i];
    s = warp_sum(s);
    if (lane == 0) row_out[n] = s;
}
void embed_backward_cuda(float *d_tok_emb, float *d_pos_scale, const float *dh, const int *order,
                         const int *start, int V, const float *pos_table, int N, int Tp, int d,
                         float *row_scratch, cudaStream_t st) {
    dim3 grid(V, (d + 127) / 128);
    embed_tok_backward_kernel<<<grid, 128, 0, st>>>(d_tok_emb, dh, order, start, d);
    row_dot_pos_kernel<<<(N + 3) / 4, 128, 0, st>>>(row_scratch, dh, pos_table, N, Tp, d);
    sum_add_cuda(d_pos_scale, row_scratch, N, 1.0f, st);
}

/* ================================== norms ========================================== */

/* Where feature i of norm output row n goes with the token shift: the first ceil(d/2)
   features move to row n+1 (dropped at the sequence's last position), and row t = 0 gets
   zeros there. */
__device__ __forceinline__ void shifted_store(float *y, bf16_t *twin, int n, int i, int d,
                                              int half, int shift_T, float val) {
    if (shift_T && i < half) {
        const int t = n % shift_T;
        if (t + 1 < shift_T) {
            y[(size_t)(n + 1) * d + i] = val;
            put_twin(twin, (size_t)(n + 1) * d + i, val);
        }
        if (t == 0) {
            y[(size_t)n * d + i] = 0;
            put_twin(twin, (size_t)n * d + i, 0);
        }
    } else {
        y[(size_t)n * d + i] = val;
        put_twin(twin, (size_t)n * d + i, val);
    }
}
/* The gradient of the norm's own output at (n, i), from the gradient of the shifted one:
   dy[t, :h] = dys[t+1, :h], 0 at the last position. */
__device__ __forceinline__ float unshifted_grad(const float *dys, int n, int i, int d, int half,
                                                int shift_T) {
    if (shift_T && i < half) {
        const int t = n % shift_T;
        return t + 1 < shift_T ? dys[(size_t)(n + 1) * d + i] : 0.0f;
    }
    return dys[(size_t)n * d + i];
}

/* scalenorm_forward: y = g x r, r = 1/max(||x|| d^-1/2, eps); one warp per row */
__global__ void scalenorm_forward_kernel(float *y, float *stat, const float *x, const float *g,
                                         int N, int d, int shift_T, bf16_t *twin, float *res_out,
                                         const float *res_bias) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *xr = x + (size_t)n * d;
    float ss = 0;
    for (int i = lane; i < d; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const float norm = sqrtf(ss / d);
    const float r = 1.0f / (norm > NORM_EPS ? norm : NORM_EPS), gain = g[0];
    if (lane == 0) stat[n] = r;
    const int half = (d + 1) / 2;
    for (int i = lane; i < d; i += 32) shifted_store(y, twin, n, i, d, half, shift_T, xr[i] * r * gain);
    if (res_out)
        for (int i = lane; i < d; i += 32) res_out[(size_t)n * d + i] = res_bias[i] + xr[i];
}
void scalenorm_forward_cuda(float *y, float *stat, const float *x, const float *g, int N, int d,
                            int shift_T, bf16_t *twin, float *res_out, const float *res_bias, cudaStream_t st) {
    scalenorm_forward_kernel<<<(N + 3) / 4, 128, 0, st>>>(y, stat, x, g, N, d, shift_T, twin, res_out, res_bias);
}

/* scalenorm_backward: dx += g r (dy - x (x.dy) r^2 / d), or g r dy when clamped;
   row_out[n] = (x.dy) r for dg */
__global__ void scalenorm_backward_kernel(float *dx, float *row_out, const float *dys,
                                          const float *x, const float *stat, const float *g, int N,
                                          int d, int shift_T, bf16_t *twin) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *xr = x + (size_t)n * d;
    const int half = (d + 1) / 2;
    float ss = 0, xdy = 0;
    for (int i = lane; i < d; i += 32) {
        const float dy = unshifted_grad(dys, n, i, d, half, shift_T);
        ss += xr[i] * xr[i];
        xdy += xr[i] * dy;
    }
    ss = warp_sum(ss);
    xdy = warp_sum(xdy);
    const float r = stat[n], gain = g[0];
    if (lane == 0) row_out[n] = xdy * r;
    const int clamped = sqrtf(ss / d) < NORM_EPS;
    const float cr = clamped ? 0.0f : xdy * r * r / d;
    for (int i = lane; i < d; i += 32) {
        const float dy = unshifted_grad(dys, n, i, d, half, shift_T);
        const float nv = dx[(size_t)n * d + i] + gain * r * (dy - xr[i] * cr);
        dx[(size_t)n * d + i] = nv;
        put_twin(twin, (size_t)n * d + i, nv);
    }
}
void scalenorm_backward_cuda(float *dx, float *dg, const float *dy, const float *x,
                             const float *stat, const float *g, int N, int d, int shift_T,
                             float *row_scratch, bf16_t *dx_twin, cudaStream_t st) {
    scalenorm_backward_kernel<<<(N + 3) / 4, 128, 0, st>>>(dx, row_scratch, dy, x, stat, g, N, d,
                                                           shift_T, dx_twin);
    sum_add_cuda(dg, row_scratch, N, 1.0f, st);
}

/* layernorm_forward: y = (x - mean) rstd w + b; stat = (mean, rstd) */
__global__ void layernorm_forward_kernel(float *y, float *stat, const float *x, const float *w,
                                         const float *b, int N, int d, int shift_T, bf16_t *twin,
                                         float *res_out, const float *res_bias) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *xr = x + (size_t)n * d;
    float s = 0;
    for (int i = lane; i < d; i += 32) s += xr[i];
    const float mean = warp_sum(s) / d;
    float v = 0;
    for (int i = lane; i < d; i += 32) { const float c = xr[i] - mean; v += c * c; }
    const float var = warp_sum(v) / d;
    const float rstd = rsqrtf(var + NORM_EPS);
    if (lane == 0) { stat[2 * n] = mean; stat[2 * n + 1] = rstd; }
    const int half = (d + 1) / 2;
    for (int i = lane; i < d; i += 32)
        shifted_store(y, twin, n, i, d, half, shift_T, (xr[i] - mean) * rstd * w[i] + b[i]);
    if (res_out)
        for (int i = lane; i < d; i += 32) res_out[(size_t)n * d + i] = res_bias[i] + xr[i];
}
void layernorm_forward_cuda(float *y, float *stat, const float *x, const float *w, const float *b,
                            int N, int d, int shift_T, bf16_t *twin, float *res_out, const float *res_bias,
                            cudaStream_t st) {
    layernorm_forward_kernel<<<(N + 3) / 4, 128, 0, st>>>(y, stat, x, w, b, N, d, shift_T, twin, res_out, res_bias);
}

/* layernorm_backward: g = dy w: dx += rstd (g - mean(g) - xhat mean(g xhat)); writes
   dy xhat and dy (unshifted) for the dw, db column sums */
__global__ void layernorm_backward_kernel(float *dx, float *p_dyxh, float *p_dy, const float *dys,
                                          const float *x, const float *stat, const float *w, int N,
                                          int d, int shift_T, bf16_t *twin) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *xr = x + (size_t)n * d;
    const float mean = stat[2 * n], rstd = stat[2 * n + 1];
    const int half = (d + 1) / 2;
    float gs = 0, gxs = 0;
    for (int i = lane; i < d; i += 32) {
        const float dy = unshifted_grad(dys, n, i, d, half, shift_T);
        const float gi = dy * w[i], xh = (xr[i] - mean) * rstd;
        gs += gi;
        gxs += gi * xh;
        p_dyxh[(size_t)n * d + i] = dy * xh;
        p_dy[(size_t)n * d + i] = dy;
    }
    const float gm = warp_sum(gs) / d, gxm = warp_sum(gxs) / d;
    for (int i = lane; i < d; i += 32) {
        const float dy = p_dy[(size_t)n * d + i];
        const float xh = (xr[i] - mean) * rstd;
        const float nv = dx[(size_t)n * d + i] + rstd * (dy * w[i] - gm - xh * gxm);
        dx[(size_t)n * d + i] = nv;
        put_twin(twin, (size_t)n * d + i, nv);
    }
}
void layernorm_backward_cuda(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const float *stat, const float *w, int N, int d, int shift_T,
                             float *xhat_scratch, float *col_scratch, bf16_t *dx_twin,
                             cudaStream_t st) {
    float *p_dyxh = xhat_scratch, *p_dy = xhat_scratch + (size_t)N * d;
    layernorm_backward_kernel<<<(N + 3) / 4, 128, 0, st>>>(dx, p_dyxh, p_dy, dy, x, stat, w, N, d,
                                                           shift_T, dx_twin);
    colsum_add_cuda(dw, p_dyxh, d, NULL, 0, N, d, col_scratch, st);
    colsum_add_cuda(db, p_dy, d, NULL, 0, N, d, col_scratch, st);
}

/* =============================== element-wise ====================================== */

__global__ void bias_silu_kernel(float *u, bf16_t *u16, float *y, const float *b, int N, int M, int ld,
                                 bf16_t *twin) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const float bj = b[j];
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        const float v = ld_act(u, u16, at) + bj;
        if (u16) reinterpret_cast<bf16 *>(u16)[at] = __float2bfloat16(v);
        else u[at] = v;
        const float s = silu_f(v);
        if (y) y[at] = s;
        put_twin(twin, at, s);
    }
}
/* bf16 only (u16 in, u16 and twin out), two columns per thread */
__global__ void bias_silu16x2_kernel(bf16_t *u16, const float *b, int N, int M2, int ld, bf16_t *twin) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= M2) return;
    const float b0 = b[2 * j2], b1 = b[2 * j2 + 1];
    __nv_bfloat162 *u2 = reinterpret_cast<__nv_bfloat162 *>(u16), *t2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = ((size_t)n * ld) / 2 + j2;
        const float2 uv = __bfloat1622float2(u2[at]);
        const float v0 = uv.x + b0, v1 = uv.y + b1;
        u2[at] = __floats2bfloat162_rn(v0, v1);
        t2[at] = __floats2bfloat162_rn(silu_f(v0), silu_f(v1));
    }
}
/* bf16 only: twin = silu(u + b) over v's columns [0, e) and z's [2e, 2e + s) in one launch, u
   left as the product wrote it (the backward adds b again: pre_bias); W columns per thread */
template <int W>
__global__ void bias_silu_vz_kernel(const bf16_t *u16, const float *b, int N, int e, int s, int ld, bf16_t *twin) {
    const int q = blockIdx.x * blockDim.x + threadIdx.x;   /* the q-th group of W columns of v | z */
    if (q * W >= e + s) return;
    const int j = q * W < e ? q * W : q * W + e;   /* skip the gate's columns */
    float bj[W];
#pragma unroll
    for (int w = 0; w < W; w++) bj[w] = b[j + w];
    const bf16 *u = reinterpret_cast<const bf16 *>(u16);
    bf16 *t = reinterpret_cast<bf16 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        if (W == 2) {
            const float2 uv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(u + at));
            *reinterpret_cast<__nv_bfloat162 *>(t + at) = __floats2bfloat162_rn(silu_f(uv.x + bj[0]), silu_f(uv.y + bj[W - 1]));
        } else {
            t[at] = __float2bfloat16(silu_f(__bfloat162float(u[at]) + bj[0]));
        }
    }
}
void bias_silu_vz_cuda(const bf16_t *u16, const float *b, int N, int e, int s, int ld, bf16_t *twin,
                       cudaStream_t st) {
    if (e % 2 == 0 && s % 2 == 0 && ld % 2 == 0 && (uintptr_t)u16 % 4 == 0 && (uintptr_t)twin % 4 == 0)
        bias_silu_vz_kernel<2><<<grid_rows(N, (e + s) / 2), 256, 0, st>>>(u16, b, N, e, s, ld, twin);
    else
        bias_silu_vz_kernel<1><<<grid_rows(N, e + s), 256, 0, st>>>(u16, b, N, e, s, ld, twin);
}
void bias_silu_cuda(float *u, bf16_t *u16, float *y, const float *b, int N, int M, int ld,
                    bf16_t *twin, cudaStream_t st) {
    if (u16 && twin && !y && M % 2 == 0 && ld % 2 == 0 && ((uintptr_t)u16 % 4) == 0 && ((uintptr_t)twin % 4) == 0) {
        bias_silu16x2_kernel<<<grid_rows(N, M / 2), 256, 0, st>>>(u16, b, N, M / 2, ld, twin);
        return;
    }
    bias_silu_kernel<<<grid_rows(N, M), 256, 0, st>>>(u, u16, y, b, N, M, ld, twin);
}

__global__ void bias_add_kernel(float *y, const float *b, const float *res, int N, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const float bj = b[j];
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * M + j;
        y[at] = bj + (res ? res[at] : 0.0f);
    }
}
void bias_add_cuda(float *y, const float *b, const float *res, int N, int M, cudaStream_t st) {
    bias_add_kernel<<<grid_rows(N, M), 256, 0, st>>>(y, b, res, N, M);
}

/* silu'(u) = sig(u) (1 + u (1 - sig(u))) */
__device__ __forceinline__ float silu_grad_f(float u) {
    const float sg = sigmoid_f(u);
    return sg * (1.0f + u * (1.0f - sg));
}
__global__ void silu_backward_kernel(float *d, const float *u, const bf16_t *u16, int N, int M, int ld,
                                     bf16_t *twin, const float *pre_bias) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        const float g = ld_act(d, twin, at) * silu_grad_f(ld_act(u, u16, at) + (pre_bias ? pre_bias[j] : 0.0f));
        if (d) d[at] = g;
        put_twin(twin, at, g);
    }
}
/* bf16 only, in place on the twin, two columns per thread */
__global__ void silu_backward16x2_kernel(const bf16_t *u16, int N, int M2, int ld, bf16_t *twin,
                                         const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= M2) return;
    const float b0 = pre_bias ? pre_bias[2 * j2] : 0.0f, b1 = pre_bias ? pre_bias[2 * j2 + 1] : 0.0f;
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    __nv_bfloat162 *d2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = ((size_t)n * ld) / 2 + j2;
        float2 u = __bfloat1622float2(u2[at]);
        const float2 dv = __bfloat1622float2(d2[at]);
        u.x += b0;
        u.y += b1;
        const float s0 = sigmoid_fast(u.x), s1 = sigmoid_fast(u.y);
        d2[at] = __floats2bfloat162_rn(dv.x * s0 * silu_grad_factor(u.x, s0), dv.y * s1 * silu_grad_factor(u.y, s1));
    }
}
void silu_backward_cuda(float *d, const float *u, const bf16_t *u16, int N, int M, int ld,
                        bf16_t *twin, const float *pre_bias, cudaStream_t st) {
    if (!d && u16 && twin && M % 2 == 0 && ld % 2 == 0 && (uintptr_t)u16 % 4 == 0 && (uintptr_t)twin % 4 == 0) {
        silu_backward16x2_kernel<<<grid_rows(N, M / 2), 256, 0, st>>>(u16, N, M / 2, ld, twin, pre_bias);
        return;
    }
    silu_backward_kernel<<<grid_rows(N, M), 256, 0, st>>>(d, u, u16, N, M, ld, twin, pre_bias);
}

__global__ void gate_forward_kernel(float *out, const float *gate, const bf16_t *gate16, int gate_stride,
                                    const float *att, const bf16_t *att16, int N, int e, bf16_t *twin,
                                    const float *pre_bias) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e + i;
        const float o = ld_silu(gate, gate16, pre_bias, (size_t)n * gate_stride + i, i) * ld_act(att, att16, k);
        if (out) out[k] = o;
        put_twin(twin, k, o);
    }
}
/* bf16 with pre_bias, two columns per thread: twin = silu(u + b) att */
__global__ void gate_forward16x2_kernel(const bf16_t *u16, int gate_stride, const bf16_t *att16, int N, int e2,
                                        bf16_t *twin, const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= e2) return;
    const float b0 = pre_bias[2 * j2], b1 = pre_bias[2 * j2 + 1];
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(att16);
    __nv_bfloat162 *o2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e2 + j2;
        const float2 u = __bfloat1622float2(u2[((size_t)n * gate_stride) / 2 + j2]), a = __bfloat1622float2(a2[k]);
        const float p0 = u.x + b0, p1 = u.y + b1;
        o2[k] = __floats2bfloat162_rn(p0 * sigmoid_fast(p0) * a.x, p1 * sigmoid_fast(p1) * a.y);
    }
}
void gate_forward_cuda(float *out, const float *gate, const bf16_t *gate16, int gate_stride,
                       const float *att, const bf16_t *att16, int N, int e, bf16_t *twin, const float *pre_bias,
                       cudaStream_t st) {
    if (pre_bias && !out && att16 && twin && e % 2 == 0 && gate_stride % 2 == 0 && (uintptr_t)gate16 % 4 == 0 &&
        (uintptr_t)att16 % 4 == 0 && (uintptr_t)twin % 4 == 0) {
        gate_forward16x2_kernel<<<grid_rows(N, e / 2), 256, 0, st>>>(gate16, gate_stride, att16, N, e / 2, twin,
                                                                     pre_bias);
        return;
    }
    gate_forward_kernel<<<grid_rows(N, e), 256, 0, st>>>(out, gate, gate16, gate_stride, att, att16, N, e, twin,
                                                         pre_bias);
}

/* out = gate * att: d gate = d_out att (times silu'(u) when u is given); d att = d_out gate */
__global__ void gate_backward_kernel(float *d_gate, int gate_stride, float *d_att, const float *d_out,
                                     const bf16_t *d_out16, const float *gate, const bf16_t *gate16,
                                     const float *att, const bf16_t *att16,
                                     const float *u, const bf16_t *u16, int N, int e, bf16_t *gate_twin,
                                     bf16_t *att_twin, const float *pre_bias) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e + i, kg = (size_t)n * gate_stride + i;
        const float dout = ld_act(d_out, d_out16, k);
        float g, dg = dout * ld_act(att, att16, k);
        if (pre_bias) {
            const float pre = raw_pre(u16, pre_bias, kg, i);
            g = silu_f(pre);
            dg *= silu_grad_f(pre);
        } else {
            g = ld_act(gate, gate16, kg);
            if (u || u16) dg *= silu_grad_f(ld_act(u, u16, kg));
        }
        if (d_gate) d_gate[kg] = dg;
        put_twin(gate_twin, kg, dg);
        const float da = dout * g;
        if (d_att) d_att[k] = da;
        put_twin(att_twin, k, da);
    }
}
/* bf16 with pre_bias, two columns per thread: d_gate (twin, gate_stride) = d_out att silu'(p),
   d_att (twin) = d_out silu(p), p = u + b */
__global__ void gate_backward16x2_kernel(bf16_t *d_gate, int gate_stride, bf16_t *d_att, const bf16_t *d_out16,
                                         const bf16_t *att16, const bf16_t *u16, int N, int e2,
                                         const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= e2) return;
    const float b0 = pre_bias[2 * j2], b1 = pre_bias[2 * j2 + 1];
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(att16);
    const __nv_bfloat162 *o2 = reinterpret_cast<const __nv_bfloat162 *>(d_out16);
    __nv_bfloat162 *dg2 = reinterpret_cast<__nv_bfloat162 *>(d_gate), *da2 = reinterpret_cast<__nv_bfloat162 *>(d_att);
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e2 + j2, kg = ((size_t)n * gate_stride) / 2 + j2;
        const float2 u = __bfloat1622float2(u2[kg]), a = __bfloat1622float2(a2[k]), o = __bfloat1622float2(o2[k]);
        const float p0 = u.x + b0, p1 = u.y + b1;
        const float s0 = sigmoid_fast(p0), s1 = sigmoid_fast(p1);
        dg2[kg] = __floats2bfloat162_rn(o.x * a.x * s0 * silu_grad_factor(p0, s0),
                                        o.y * a.y * s1 * silu_grad_factor(p1, s1));
        da2[k] = __floats2bfloat162_rn(o.x * p0 * s0, o.y * p1 * s1);
    }
}
void gate_backward_cuda(float *d_gate, int gate_stride, float *d_att, const float *d_out, const bf16_t *d_out16,
                        const float *gate, const bf16_t *gate16, const float *att, const bf16_t *att16,
                        const float *u_gate,
                        const bf16_t *u_gate16, int N, int e, bf16_t *d_gate_twin, bf16_t *d_att_twin,
                        const float *pre_bias, cudaStream_t st) {
    if (pre_bias && !d_gate && !d_att && d_out16 && att16 && u_gate16 && d_gate_twin && d_att_twin && e % 2 == 0 &&
        gate_stride % 2 == 0 && (uintptr_t)u_gate16 % 4 == 0 && (uintptr_t)d_gate_twin % 4 == 0 &&
        (uintptr_t)d_att_twin % 4 == 0 && (uintptr_t)d_out16 % 4 == 0 && (uintptr_t)att16 % 4 == 0) {
        gate_backward16x2_kernel<<<grid_rows(N, e / 2), 256, 0, st>>>(d_gate_twin, gate_stride, d_att_twin, d_out16,
                                                                      att16, u_gate16, N, e / 2, pre_bias);
        return;
    }
    gate_backward_kernel<<<grid_rows(N, e), 256, 0, st>>>(d_gate, gate_stride, d_att, d_out, d_out16, gate,
                                                          gate16, att, att16, u_gate, u_gate16, N, e, d_gate_twin,
                                                          d_att_twin, pre_bias);
}

/* ============================ offset-scale + rotary ================================ */

/* One thread per feature j, blocks of whole warps across a row's features and several rows
   (threadIdx.y). A rotary pair (2u, 2u+1), u < r/2, lies in two neighbouring lanes, which
   trade values by a shuffle; features past the pairs are not rotated. Every lane of a warp
   takes part in the shuffles (its row is the warp's), a lane past s only does not store. */
static inline dim3 osr_block(int s) {
    const int bx = s < 128 ? (s + 31) / 32 * 32 : 128;
    return dim3((unsigned)bx, (unsigned)(256 / bx));
}

/* o_k = z gamma_k + beta_k, then (a, b) -> (a cos - b sin, b cos + a sin) */
__global__ void osr_forward_kernel(float *qk4, const float *z, const bf16_t *z16, int z_stride, const float *gamma,
                                   const float *beta, const float *rot_cos, const float *rot_sin,
                                   int N, int Tp, int s, int r, bf16_t *twin) {
    const int pairs = r / 2, j = blockIdx.x * blockDim.x + threadIdx.x;
    const bool live = j < s, rot = j < 2 * pairs;
    const int jc = live ? j : s - 1;
    float gk[4], bk[4];
#pragma unroll
    for (int k = 0; k < 4; k++) { gk[k] = gamma[k * s + jc]; bk[k] = beta[k * s + jc]; }
    const size_t Ns = (size_t)N * s;
    for (int n = blockIdx.y * blockDim.y + threadIdx.y; n < N; n += gridDim.y * blockDim.y) {
        float c = 1, sn = 0;
        if (rot) {
            const size_t q = (size_t)(n % Tp) * pairs + j / 2;
            c = rot_cos[q];
            sn = j & 1 ? rot_sin[q] : -rot_sin[q];   /* even: a c - b sin, odd: b c + a sin */
        }
        const float zj = ld_act(z, z16, (size_t)n * z_stride + jc);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float a = zj * gk[k] + bk[k];
            const float partner = __shfl_xor_sync(0xffffffffu, a, 1);
            const float o = rot ? a * c + partner * sn : a;
            const size_t at = k * Ns + (size_t)n * s + j;
            if (!live) continue;
            if (twin) put_twin(twin, at, o);
            else qk4[at] = o;
        }
    }
}
/* bf16 only: four features (two rotary pairs) per thread with 8-byte loads and stores
   (scalar 2-byte accesses left these kernels instruction-bound); s / 4 threads per row,
   256 / (s / 4) rows per block of 256 threads. Needs s / 4 to divide 256 and 8-byte
   aligned rows: osr_vec_ok. */
__device__ __forceinline__ void ld4_bf16(const bf16 *p, float v[4]) {
    const uint2 w = *reinterpret_cast<const uint2 *>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w.y));
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}
__device__ __forceinline__ void st4_bf16(bf16 *p, const float v[4]) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]), b = __floats2bfloat162_rn(v[2], v[3]);
    uint2 w;
    w.x = *reinterpret_cast<const unsigned *>(&a);
    w.y = *reinterpret_cast<const unsigned *>(&b);
    *reinterpret_cast<uint2 *>(p) = w;
}
static int osr_vec_ok(int s, int z_stride, const void *a, const void *b, const void *c, const void *d) {
    const int tpr = s / 4;
    const uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d;
    return s % 4 == 0 && tpr > 0 && 256 % tpr == 0 && z_stride % 4 == 0 && bits % 8 == 0;
}
/* the rotation of features f..f+3 (f a multiple of 4) at position t: cos, sin of the two
   pairs; pairs past r/2 are not rotated (c = 1, sn = 0) */
__device__ __forceinline__ void osr_rot2(const float *rot_cos, const float *rot_sin, int t, int pairs, int f,
                                         float c[2], float sn[2]) {
#pragma unroll
    for (int p = 0; p < 2; p++) {
        const int u = f / 2 + p;
        c[p] = u < pairs ? rot_cos[(size_t)t * pairs + u] : 1.0f;
        sn[p] = u < pairs ? rot_sin[(size_t)t * pairs + u] : 0.0f;
    }
}
__global__ void __launch_bounds__(256) osr_forward16x4_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ z16,
                                                              int z_stride, const float *gamma, const float *beta,
                                                              const float *rot_cos, const float *rot_sin, int N,
                                                              int Tp, int s, int r) {
    const int tpr = s / 4, R = 256 / tpr, f = (threadIdx.x % tpr) * 4, pairs = r / 2;
    float gk[4][4], bk[4][4];
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int i = 0; i < 4; i++) { gk[k][i] = gamma[k * s + f + i]; bk[k][i] = beta[k * s + f + i]; }
    const size_t Ns = (size_t)N * s;
    for (int n = blockIdx.x * R + threadIdx.x / tpr; n < N; n += gridDim.x * R) {
        float zv[4], c[2], sn[2];
        ld4_bf16(z16 + (size_t)n * z_stride + f, zv);
        osr_rot2(rot_cos, rot_sin, n % Tp, pairs, f, c, sn);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float a[4], o[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = zv[i] * gk[k][i] + bk[k][i];
#pragma unroll
            for (int p = 0; p < 2; p++) {   /* (a, b) -> (a cos - b sin, b cos + a sin) */
                o[2 * p] = a[2 * p] * c[p] - a[2 * p + 1] * sn[p];
                o[2 * p + 1] = a[2 * p + 1] * c[p] + a[2 * p] * sn[p];
            }
            st4_bf16(out + k * Ns + (size_t)n * s + f, o);
        }
    }
}
/* the backward and the parameters' partial sums as osr_backward_kernel: each thread sums
   its rows in order, the block's R rows are combined in row order, slices by the final
   kernel */
__global__ void __launch_bounds__(256) osr_backward16x4_kernel(
    bf16 *__restrict__ dz16, const bf16 *__restrict__ dq16, const bf16 *__restrict__ z16,
    const bf16 *__restrict__ u16, const float *gamma, const float *rot_cos, const float *rot_sin, int z_stride,
    int N, int Tp, int s, int r, float *__restrict__ partial, const float *u_bias) {
    __shared__ float red[8 * 256 * 4];   /* [R][8][s]: R * s = 1,024 */
    const int tpr = s / 4, R = 256 / tpr, row = threadIdx.x / tpr, f = (threadIdx.x % tpr) * 4;
    const int pairs = r / 2, slice = blockIdx.x;
    const int lo = (int)((long)N * slice / OSR_SLICES), hi = (int)((long)N * (slice + 1) / OSR_SLICES);
    float gk[4][4], ag[4][4], ab[4][4], ub[4];
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int i = 0; i < 4; i++) { gk[k][i] = gamma[k * s + f + i]; ag[k][i] = 0; ab[k][i] = 0; }
#pragma unroll
    for (int i = 0; i < 4; i++) ub[i] = u_bias ? u_bias[f + i] : 0.0f;
    const size_t Ns = (size_t)N * s;
#pragma unroll 2
    for (int n = lo + row; n < hi; n += R) {
        const size_t zr = (size_t)n * z_stride + f;
        float zv[4], uv[4] = {0, 0, 0, 0}, c[2], sn[2], dz[4] = {0, 0, 0, 0};
        ld4_bf16(z16 + zr, zv);
        if (u16) ld4_bf16(u16 + zr, uv);
        osr_rot2(rot_cos, rot_sin, n % Tp, pairs, f, c, sn);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float g[4], b[4];
            ld4_bf16(dq16 + k * Ns + (size_t)n * s + f, g);
#pragma unroll
            for (int p = 0; p < 2; p++) {   /* back: (g1 cos + g2 sin, g2 cos - g1 sin) */
                b[2 * p] = g[2 * p] * c[p] + g[2 * p + 1] * sn[p];
                b[2 * p + 1] = g[2 * p + 1] * c[p] - g[2 * p] * sn[p];
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                dz[i] += b[i] * gk[k][i];
                ag[k][i] += b[i] * zv[i];
                ab[k][i] += b[i];
            }
        }
        if (u16)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = uv[i] + ub[i], sg = sigmoid_fast(p);
                dz[i] *= sg * silu_grad_factor(p, sg);
            }
        st4_bf16(dz16 + zr, dz);
    }
#pragma unroll
    for (int k = 0; k < 4; k++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            red[(row * 8 + k) * s + f + i] = ag[k][i];
            red[(row * 8 + 4 + k) * s + f + i] = ab[k][i];
        }
    __syncthreads();
    for (int q = threadIdx.x; q < 8 * s; q += blockDim.x) {
        float t = 0;
        for (int y = 0; y < R; y++) t += red[y * 8 * s + q];
        partial[(size_t)slice * 8 * s + q] = t;
    }
}
void offset_scale_rotary_forward_cuda(float *qk4, const float *z, const bf16_t *z16, int z_stride,
                                      const float *gamma, const float *beta, const float *rot_cos,
                                      const float *rot_sin, int N, int Tp, int s, int r, bf16_t *twin,
                                      cudaStream_t st) {
    if (N <= 0 || s <= 0) return;
    if (z16 && twin && osr_vec_ok(s, z_stride, z16, twin, NULL, NULL)) {
        const int R = 256 / (s / 4), blocks = (N + R - 1) / R;
        osr_forward16x4_kernel<<<blocks < 16384 ? blocks : 16384, 256, 0, st>>>(
            reinterpret_cast<bf16 *>(twin), reinterpret_cast<const bf16 *>(z16), z_stride, gamma, beta, rot_cos,
            rot_sin, N, Tp, s, r);
        return;
    }
    const dim3 block = osr_block(s);
    const int rows = (N + (int)block.y - 1) / (int)block.y;
    const dim3 grid((unsigned)((s + block.x - 1) / block.x), (unsigned)(rows < 16384 ? rows : 16384));
    osr_forward_kernel<<<grid, block, 0, st>>>(qk4, z, z16, z_stride, gamma, beta, rot_cos, rot_sin, N, Tp, s,
                                              r, twin);
}

/* The backward and the parameters' sums in one pass. Rotation back of g = d o_k:
   even j: b = g_j cos + g_{j+1} sin, odd j: b = g_j cos - g_{j-1} sin; then
   dz = sum_k b_k gamma_k (times silu'(u) when u is given), dgamma_k += b_k z, dbeta_k += b_k.
   blockIdx.y is a slice of rows; each thread sums its rows in order, the block's rows
   are combined in threadIdx.y order, and the slices in slice order by the final kernel. */
__global__ void osr_backward_kernel(float *dz, const float *d_qk4, const bf16_t *d_qk4_16, const float *z,
                                    const bf16_t *z16, const float *u, const bf16_t *u16, const float *gamma,
                                    const float *rot_cos, const float *rot_sin, int z_stride, int N,
                                    int Tp, int s, int r, bf16_t *dz_twin, float *partial, const float *u_bias) {
    extern __shared__ float red[];   /* [blockDim.y][8][blockDim.x] */
    const int pairs = r / 2, j = blockIdx.x * blockDim.x + threadIdx.x, slice = blockIdx.y;
    const bool live = j < s, rot = j < 2 * pairs, has_u = u || u16;
    const int jc = live ? j : s - 1;
    const int lo = (int)((long)N * slice / OSR_SLICES), hi = (int)((long)N * (slice + 1) / OSR_SLICES);
    float gk[4], ag[4] = {0, 0, 0, 0}, ab[4] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k < 4; k++) gk[k] = gamma[k * s + jc];
    const size_t Ns = (size_t)N * s;
    for (int n = lo + threadIdx.y; n < hi; n += blockDim.y) {
        float c = 1, sn = 0;
        if (rot) {
            const size_t q = (size_t)(n % Tp) * pairs + j / 2;
            c = rot_cos[q];
            sn = j & 1 ? -rot_sin[q] : rot_sin[q];
        }
        const size_t zr = (size_t)n * z_stride + jc;
        const float zj = ld_act(z, z16, zr);
        float dzj = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const float g = ld_act(d_qk4, d_qk4_16, k * Ns + (size_t)n * s + jc);
            const float partner = __shfl_xor_sync(0xffffffffu, g, 1);
            const float b = rot ? g * c + partner * sn : g;
            dzj += b * gk[k];
            ag[k] += b * zj;
            ab[k] += b;
        }
        if (has_u) dzj *= silu_grad_f(ld_act(u, u16, zr) + (u_bias ? u_bias[jc] : 0.0f));
        if (live) {
            if (dz) dz[zr] = dzj;
            put_twin(dz_twin, zr, dzj);
        }
    }
    const int bx = blockDim.x, y = threadIdx.y, x = threadIdx.x;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        red[(y * 8 + k) * bx + x] = ag[k];
        red[(y * 8 + 4 + k) * bx + x] = ab[k];
    }
    __syncthreads();
    if (y == 0 && live)
        for (int q = 0; q < 8; q++) {
            float t = 0;
            for (int yy = 0; yy < (int)blockDim.y; yy++) t += red[(yy * 8 + q) * bx + x];
            partial[(size_t)slice * 8 * s + q * s + j] = t;   /* q < 4: gamma_q, else beta_{q-4} */
        }
}
/* dgamma, dbeta (4 x s each) += the slices' sums: a block takes 32 of the 8s sums, its
   warp w the slices w, w + 8, ... in order, then the 8 warps' sums in warp order */
__global__ void osr_param_final_kernel(float *dgamma, float *dbeta, const float *part, int s) {
    __shared__ float acc[8][32];
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, q = blockIdx.x * 32 + lane;
    float t = 0;
    if (q < 8 * s)
        for (int sl = w; sl < OSR_SLICES; sl += 8) t += part[(size_t)sl * 8 * s + q];
    acc[w][lane] = t;
    __syncthreads();
    if (w == 0 && q < 8 * s) {
        float u = 0;
        for (int y = 0; y < 8; y++) u += acc[y][lane];
        if (q < 4 * s) dgamma[q] += u;
        else dbeta[q - 4 * s] += u;
    }
}
void offset_scale_rotary_backward_cuda(float *dz, float *dgamma, float *dbeta, const float *d_qk4,
                                       const bf16_t *d_qk4_16, const float *z, const bf16_t *z16,
                                       int z_stride, const float *u_z, const bf16_t *u_z16,
                                       const float *gamma, const float *rot_cos, const float *rot_sin,
                                       int N, int Tp, int s, int r, float *part_scratch, bf16_t *dz_twin,
                                       const float *u_bias, cudaStream_t st) {
    if (N <= 0 || s <= 0) return;
    if (!dz && dz_twin && d_qk4_16 && z16 && (u_z16 || !u_z) &&
        osr_vec_ok(s, z_stride, dz_twin, d_qk4_16, z16, u_z16)) {
        osr_backward16x4_kernel<<<OSR_SLICES, 256, 0, st>>>(
            reinterpret_cast<bf16 *>(dz_twin), reinterpret_cast<const bf16 *>(d_qk4_16),
            reinterpret_cast<const bf16 *>(z16), reinterpret_cast<const bf16 *>(u_z16), gamma, rot_cos, rot_sin,
            z_stride, N, Tp, s, r, part_scratch, u_bias);
    } else {
        const dim3 block = osr_block(s), grid((unsigned)((s + block.x - 1) / block.x), OSR_SLICES);
        osr_backward_kernel<<<grid, block, sizeof(float) * 8 * block.x * block.y, st>>>(
            dz, d_qk4, d_qk4_16, z, z16, u_z, u_z16, gamma, rot_cos, rot_sin, z_stride, N, Tp, s, r, dz_twin,
            part_scratch, u_bias);
    }
    osr_param_final_kernel<<<(8 * s + 31) / 32, 256, 0, st>>>(dgamma, dbeta, part_scratch, s);
}

/* ================================ attention ======================================== */

__device__ __forceinline__ int rel_bucket(int n) {
    if (n < 0) n = 0;
    if (n < 16) return n;
    int b = 16 + (int)(logf((float)n / 16.0f) / 2.0794415f * 16.0f);
    return b < 31 ? b : 31;
}
__device__ __forceinline__ float phi_f(float x, int laplace) {
    if (laplace) return 0.5f * (1.0f + erff((x - LAPLACE_MU) / (LAPLACE_SIGMA * 1.41421356237309504880f)));
    return x > 0 ? x * x : 0.0f;
}
__device__ __forceinline__ float phi_grad_f(float x, int laplace) {
    if (laplace) {
        const float u = x - LAPLACE_MU;
        return expf(-u * u / (2 * LAPLACE_SIGMA * LAPLACE_SIGMA)) / (LAPLACE_SIGMA * 2.50662827463100050242f);
    }
    return x > 0 ? 2 * x : 0.0f;
}

__global__ void attn_bias_dist_kernel(float *bias_dist, const float *rel_bias, int C, float scale) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < C) bias_dist[k] = scale * rel_bias[rel_bucket(k)];
}
void attn_bias_dist_cuda(float *bias_dist, const float *rel_bias, int C, int s, cudaStream_t st) {
    attn_bias_dist_kernel<<<(C + 255) / 256, 256, 0, st>>>(bias_dist, rel_bias, C, sqrtf((float)s));
}

__global__ void attn_phi_forward_kernel(float *sim, float *attn, const float *bias_dist, int ntask,
                                        int C, int laplace, bf16_t *twin) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= C) return;
    FOR_ROWS(row, ntask * C) {
        const int i = row % C;
        const size_t k = (size_t)row * C + j;
        float a = 0;
        if (j <= i) {
            const float sv = sim[k] + bias_dist[i - j];
            sim[k] = sv;
            a = phi_f(sv, laplace);
        } else {
            sim[k] = 0;
        }
        if (twin) put_twin(twin, k, a);
        else attn[k] = a;
    }
}
void attn_phi_forward_cuda(float *sim, float *attn, const float *bias_dist, int ntask, int C,
                           int laplace, bf16_t *attn_twin, cudaStream_t st) {
    attn_phi_forward_kernel<<<grid_rows(ntask * C, C), 256, 0, st>>>(sim, attn, bias_dist, ntask, C,
                                                                     laplace, attn_twin);
}

/* dsim = dA phi'(sim) on j <= i, 0 above. A block takes ATT_ROWS rows of one group; its
   thread for distance k takes, in each row i, the entry (i, i - k) when k <= i (and adds it
   to its distance's sum, rows in order) or else the entry (i, k) above the diagonal (a
   zero): each row's C entries once, both runs of addresses contiguous across the threads.
   Eight rows' loads are issued before any store (the stores go to the buffer read). */
#define ATT_ROWS 32
__global__ void attn_phi_backward_kernel(float *dA, const float *sim, int C, int laplace,
                                         bf16_t *twin, float *dist_part) {
    const int chunks = (C + ATT_ROWS - 1) / ATT_ROWS;
    const int task = blockIdx.x / chunks, i0 = (blockIdx.x % chunks) * ATT_ROWS;
    const int i1 = i0 + ATT_ROWS < C ? i0 + ATT_ROWS : C;
    for (int k = threadIdx.x; k < C; k += blockDim.x) {
        float dist = 0;
        for (int i = i0; i < i1; i += 8) {
            float a[8], sv[8];
            size_t at[8];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                const int ii = i + q;
                const size_t row = ((size_t)task * C + ii) * C;
                a[q] = 0;
                sv[q] = 0;
                at[q] = row + (k <= ii ? ii - k : k);
                if (ii < i1 && k <= ii) {
                    a[q] = ld_act(dA, twin, at[q]);
                    sv[q] = sim[at[q]];
                }
            }
#pragma unroll
            for (int q = 0; q < 8; q++) {
                const int ii = i + q;
                if (ii >= i1) break;
                float g = 0;
                if (k <= ii) {
                    g = a[q] * phi_grad_f(sv[q], laplace);
                    dist += g;
                }
                if (twin) put_twin(twin, at[q], g);
                else dA[at[q]] = g;
            }
        }
        if (dist_part) dist_part[(size_t)blockIdx.x * C + k] = dist;
    }
}
int attn_dist_parts(int ntask, int C) { return ntask * ((C + ATT_ROWS - 1) / ATT_ROWS); }
void attn_phi_backward_cuda(float *dA, const float *sim, int ntask, int C, int laplace,
                            bf16_t *twin, float *dist_part, cudaStream_t st) {
    const int blocks = attn_dist_parts(ntask, C), threads = C < 256 ? (C + 31) / 32 * 32 : 256;
    attn_phi_backward_kernel<<<blocks, threads, 0, st>>>(twin ? NULL : dA, sim, C, laplace, twin, dist_part);
}

/* The bucket of distance k never decreases with k, so bucket b holds one range of
   distances: the 16 exact ones, then [16 * 2^((b-16)/2), ...) found by a binary search. */
__device__ int first_distance_of(int b, int C) {
    int lo = 0, hi = C;   /* the first k with rel_bucket(k) >= b */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (rel_bucket(mid) >= b) hi = mid; else lo = mid + 1;
    }
    return lo;
}
/* One block: the slices' sums per distance in slice order (shared, C floats), then warp b
   sums bucket b's distances (lanes strided, then the fixed butterfly). 32 warps, 32
   buckets. (Four runs of slices per distance measured no faster: 8.3 against 8.4 us.) */
__global__ void attn_rel_bias_kernel(float *d_rel_bias, const float *slices, int C, float scale) {
    extern __shared__ float dist[];
    for (int k = threadIdx.x; k < C; k += blockDim.x) {
        float t = 0;
        for (int sl = 0; sl < RED_SLICES; sl++) t += slices[(size_t)sl * C + k];
        dist[k] = t;
    }
    __syncthreads();
    const int b = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int k0 = first_distance_of(b, C), k1 = first_distance_of(b + 1, C);
    float acc = 0;
    for (int k = k0 + lane; k < k1; k += 32) acc += scale * dist[k];
    acc = warp_sum(acc);
    if (lane == 0 && k0 < k1) d_rel_bias[b] += acc;
}
void attn_rel_bias_backward_cuda(float *d_rel_bias, const float *dist_part, int nparts, int C, int s,
                                 float *scratch, cudaStream_t st) {
    /* the parts' column sums in RED_SLICES slices, then the buckets */
    dim3 grid((C + 31) / 32, RED_SLICES), block(32, 8);
    colsum_partial_kernel<<<grid, block, 0, st>>>(scratch, dist_part, C, NULL, 0, nparts, C);
    attn_rel_bias_kernel<<<1, 1024, sizeof(float) * C, st>>>(d_rel_bias, scratch, C, sqrtf((float)s));
}

/* x over the s*e entries of a block (4 per thread), y over the sequences. The groups'
   values are loaded 8 at a time before any is stored, so the loads overlap. */
template <int W>
__global__ void group_scan_kernel(float *kv, int B, int G, size_t se, int reverse, bf16_t *twin, int store32) {
    const size_t k = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) * W;
    if (k >= se) return;
    for (int b = blockIdx.y; b < B; b += gridDim.y) {
        float run[W];
#pragma unroll
        for (int w = 0; w < W; w++) run[w] = 0;
        for (int q0 = 0; q0 < G; q0 += 8) {
            float here[8][W];
            const int nq = G - q0 < 8 ? G - q0 : 8;
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (u < nq) {
                    const int g = reverse ? G - 1 - (q0 + u) : q0 + u;
                    const float *src = kv + ((size_t)b * G + g) * se + k;
                    float4 v;
                    if (W == 4) v = *reinterpret_cast<const float4 *>(src);
                    else v.x = src[0];
                    const float lane[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int w = 0; w < W; w++) here[u][w] = lane[w];
                }
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (u < nq) {
                    const int g = reverse ? G - 1 - (q0 + u) : q0 + u;
                    const size_t at = ((size_t)b * G + g) * se + k;
                    if (W == 4) {
                        if (store32)
                            *reinterpret_cast<float4 *>(kv + at) = make_float4(run[0], run[W > 1 ? 1 : 0], run[W > 2 ? 2 : 0], run[W > 3 ? 3 : 0]);
                        if (twin) {
                            __nv_bfloat162 lo2 = __floats2bfloat162_rn(run[0], run[W > 1 ? 1 : 0]);
                            __nv_bfloat162 hi2 = __floats2bfloat162_rn(run[W > 2 ? 2 : 0], run[W > 3 ? 3 : 0]);
                            uint2 pk;
                            pk.x = *reinterpret_cast<unsigned *>(&lo2);
                            pk.y = *reinterpret_cast<unsigned *>(&hi2);
                            *reinterpret_cast<uint2 *>(reinterpret_cast<bf16 *>(twin) + at) = pk;
                        }
                    } else {
                        if (store32) kv[at] = run[0];
                        put_twin(twin, at, run[0]);
                    }
#pragma unroll
                    for (int w = 0; w < W; w++) run[w] += here[u][w];
                }
        }
    }
}
void group_scan_cuda(float *kv, int B, int G, size_t se, int reverse, bf16_t *twin, int twin_only,
                     cudaStream_t st) {
    const int vec = se % 4 == 0 && ((uintptr_t)kv % 16) == 0 && ((uintptr_t)twin % 8) == 0;
    const size_t threads = vec ? se / 4 : se;
    dim3 grid((unsigned)((threads + 255) / 256), (unsigned)(B < 65535 ? B : 65535));
    const int store32 = !(twin && twin_only);
    if (vec) group_scan_kernel<4><<<grid, 256, 0, st>>>(kv, B, G, se, reverse, twin, store32);
    else group_scan_kernel<1><<<grid, 256, 0, st>>>(kv, B, G, se, reverse, twin, store32);
}

/* =============================== cross-entropy ===================================== */

/* loss_n = logsumexp(l) - l[y], one warp per row */
__global__ void ce_forward_kernel(float *losses, const float *logits, const int *tokens, int tstride,
                                  int B, int T, int Tp, int V) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= B * Tp) return;
    const int b = n / Tp, t = n % Tp;
    if (t >= T) { if (lane == 0) losses[n] = 0; return; }
    const float *l = logits + (size_t)n * V;
    float mx = -INFINITY;
    for (int i = lane; i < V; i += 32) mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    double s = 0;
    for (int i = lane; i < V; i += 32) s += exp((double)(l[i] - mx));
    s = warp_sum_d(s);
    if (lane == 0) {
        const int y = tokens[(size_t)b * tstride + t + 1];
        losses[n] = (float)(log(s) + mx - l[y]);
    }
}
__global__ void loss_mean_kernel(double *acc, const float *losses, int N, double count, double weight) {
    double s = 0;
    for (int i = threadIdx.x; i < N; i += 256) s += losses[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) acc[0] += s / count * weight;
}
void crossentropy_forward_cuda(float *losses, double *loss_acc, const float *logits,
                               const int *tokens, int tstride, int B, int T, int Tp, int V,
                               double weight, cudaStream_t st) {
    const int N = B * Tp;
    ce_forward_kernel<<<(N + 3) / 4, 128, 0, st>>>(losses, logits, tokens, tstride, B, T, Tp, V);
    if (loss_acc) loss_mean_kernel<<<1, 256, 0, st>>>(loss_acc, losses, N, (double)B * T, weight);
}

/* dl = (softmax(l) - onehot(y)) * dloss / (B*T) */
__global__ void ce_backward_kernel(float *dlogits, const float *logits, const int *tokens, int tstride,
                                   int B, int T, int Tp, int V, float scale, bf16_t *twin) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= B * Tp) return;
    const int b = n / Tp, t = n % Tp;
    float *dl = dlogits + (size_t)n * V;
    if (t >= T) {
        for (int i = lane; i < V; i += 32) { dl[i] = 0; put_twin(twin, (size_t)n * V + i, 0); }
        return;
    }
    const float *l = logits + (size_t)n * V;
    float mx = -INFINITY;
    for (int i = lane; i < V; i += 32) mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    float s = 0;
    for (int i = lane; i < V; i += 32) s += expf(l[i] - mx);
    s = warp_sum(s);
    const int y = tokens[(size_t)b * tstride + t + 1];
    for (int i = lane; i < V; i += 32) {
        float g = expf(l[i] - mx) / s * scale;
        if (i == y) g -= scale;
        dl[i] = g;
        put_twin(twin, (size_t)n * V + i, g);
    }
}
void crossentropy_backward_cuda(float *dlogits, const float *logits, const int *tokens,
                                int tstride, int B, int T, int Tp, int V, float dloss,
                                bf16_t *twin, cudaStream_t st) {
    const int N = B * Tp;
    const float scale = dloss / ((float)B * T);
    ce_backward_kernel<<<(N + 3) / 4, 128, 0, st>>>(dlogits, logits, tokens, tstride, B, T, Tp, V,
                                                    scale, twin);
}

/* ================================ optimizer ======================================== */

__global__ void opt_sumsq_kernel(double *chunk_ss, const float *grads, const OptChunk *chunks) {
    const OptChunk c = chunks[blockIdx.x];
    double s = 0;
    for (size_t k = threadIdx.x; k < c.count; k += 256) {
        const double g = grads[c.start + k];
        s += g * g;
    }
    s = block_sum_256(s);
    if (threadIdx.x == 0) chunk_ss[blockIdx.x] = s;
}
void opt_sumsq_cuda(double *chunk_ss, const float *grads, const OptChunk *chunks, int nchunks,
                    cudaStream_t st) {
    if (nchunks > 0) opt_sumsq_kernel<<<nchunks, 256, 0, st>>>(chunk_ss, grads, chunks);
}

/* global: min(1, c / (N + 1e-6)); local: c / n for a tensor whose norm n > c. One block of
   32 warps: warp w takes tensors w, w + 32, ..., its lanes summing the tensor's chunks
   (strided, then the fixed butterfly); then warp 0 sums the tensors the same way. */
__global__ void opt_clip_kernel(float *clip, double *norm_out, double *tensor_ss, const double *chunk_ss,
                                const int *first, int ntensor, int mode, double c) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    for (int i = w; i < ntensor; i += warps) {
        double ss = 0;
        for (int q = first[i] + lane; q < first[i + 1]; q += 32) ss += chunk_ss[q];
        ss = warp_sum_d(ss);
        if (lane == 0) tensor_ss[i] = ss;
    }
    __syncthreads();
    __shared__ double total_sh;
    if (w == 0) {
        double total = 0;
        for (int i = lane; i < ntensor; i += 32) total += tensor_ss[i];
        total = warp_sum_d(total);
        if (lane == 0) { total_sh = total; norm_out[0] = sqrt(total); }
    }
    __syncthreads();
    const double norm = sqrt(total_sh);
    for (int i = threadIdx.x; i < ntensor; i += blockDim.x) {
        double f = 1;
        if (mode == 1) { const double g = c / (norm + CLIP_NORM_EPS); f = g < 1 ? g : 1; }
        if (mode == 2) { const double nrm = sqrt(tensor_ss[i]); if (nrm > c) f = c / nrm; }
        clip[i] = (float)f;
    }
}
void opt_clip_cuda(float *clip, double *norm_out, double *tensor_ss, const double *chunk_ss,
                   const int *tensor_first_chunk, int ntensor, int mode, double c, cudaStream_t st) {
    opt_clip_kernel<<<1, 1024, 0, st>>>(clip, norm_out, tensor_ss, chunk_ss, tensor_first_chunk, ntensor, mode, c);
}

/* m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p = p decay - step m / (sqrt(v / bc2) + eps) */
__global__ void opt_adamw_kernel(float *params, const float *grads, float *m, float *v,
                                 const OptChunk *chunks, const float *clip, const int *decays,
                                 float decay_val, const double *norm, float b1, float b2, float c1,
                                 float c2, float step, float inv_bc2, float eps, bf16_t *twin) {
    if (!isfinite(norm[0])) return;
    const OptChunk c = chunks[blockIdx.x];
    const float cl = clip[c.tensor], decay = decays[c.tensor] ? decay_val : 1.0f;
    for (size_t q = threadIdx.x; q < c.count; q += blockDim.x) {
        const size_t k = c.start + q;
        const float gk = grads[k] * cl;
        const float mk = b1 * m[k] + c1 * gk;
        const float vk = b2 * v[k] + c2 * gk * gk;
        m[k] = mk;
        v[k] = vk;
        const float w = params[k] * decay - step * mk / (sqrtf(vk * inv_bc2) + eps);
        params[k] = w;
        put_twin(twin, k, w);
    }
}
void opt_adamw_cuda(float *params, const float *grads, float *m, float *v, const OptChunk *chunks,
                    int nchunks, const float *clip, const int *decays, float decay_val,
                    const double *norm, float b1, float b2, float c1, float c2, float step,
                    float inv_bc2, float eps, bf16_t *twin, cudaStream_t st) {
    if (nchunks > 0)
        opt_adamw_kernel<<<nchunks, 256, 0, st>>>(params, grads, m, v, chunks, clip, decays, decay_val,
                                                  norm, b1, b2, c1, c2, step, inv_bc2, eps, twin);
}

/* ================================ conversion ======================================= */

__global__ void to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x)
        dst[k] = __float2bfloat16(src[k]);
}
void to_bf16_cuda(bf16_t *dst, const float *src, size_t n, cudaStream_t st) {
    to_bf16_kernel<<<grid_for(n, 256), 256, 0, st>>>(reinterpret_cast<bf16 *>(dst), src, n);
}
