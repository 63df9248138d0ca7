/* autograd/cuda/kernels.cuh: what every kernel file of the CUDA backend shares (the
 * kernels_*.cu and the decoder, cuda_decode.cu and decode_persistent.cu): the constants of
 * the ops, the launch grids, warp and block reductions, bf16 loads and stores, and the
 * element functions (SiLU, the attention's phi and its derivative, the relative-position
 * bucket), each written once. */
#ifndef FLASH_CUDA_KERNELS_CUH
#define FLASH_CUDA_KERNELS_CUH
#include "cuda_ops.h"
extern "C" {
#include "relpos.h"
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

/* The sum of a block of 256 threads' values in a fixed tree (every thread calls it, once per
   kernel; the total is returned to all). */
static __device__ __forceinline__ double block_sum_256(double s) {
    __shared__ double part[256];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = 128; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    return part[0];
}

/* silu'(u) = sig(u) (1 + u (1 - sig(u))) */
__device__ __forceinline__ float silu_grad_f(float u) {
    const float sg = sigmoid_f(u);
    return sg * (1.0f + u * (1.0f - sg));
}

/* the attention's phi: relu^2, or the Laplace function (docs/model.md, "Forward" 2.7) */
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

#endif
