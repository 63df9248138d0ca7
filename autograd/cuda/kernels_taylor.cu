/* autograd/cuda/kernels_taylor.cu: the element work of the Taylor linear attention
 * (attn_taylor.cu; docs/model.md, "The Taylor linear attention"): the feature map
 * phi(x) = [1, x, vec(x x^T) / sqrt 2] of the linear queries and keys and its backward, and
 * the normalisation y = num / max(den, eps) and its backward. The products around them are
 * cuBLAS's. Every reduction runs in a fixed order (no atomics). */
#include "kernels.cuh"

#define RSQRT2 0.70710678118654752440f

/* out[n, f] = phi(scale * x_n)[f], f < F = 1 + s + s^2, and 0 for f in [F, Fp) (the row is
   Fp wide); x = the rows of one block of qk4 */
__global__ void taylor_features_kernel(float *out, bf16_t *twin, const float *x, const bf16_t *x16, int N, int s,
                                       int F, int Fp, float scale) {
    const int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= Fp) return;
    FOR_ROWS(n, N) {
        const size_t row = (size_t)n * s;
        float v;
        if (f >= F) v = 0.0f;
        else if (f == 0) v = 1.0f;
        else if (f <= s) v = scale * ld_act(x, x16, row + f - 1);
        else {
            const int k = f - 1 - s, i = k / s, j = k % s;
            v = scale * ld_act(x, x16, row + i) * (scale * ld_act(x, x16, row + j)) * RSQRT2;
        }
        const size_t at = (size_t)n * Fp + f;
        out[at] = v;
        put_twin(twin, at, v);
    }
}
void taylor_features_cuda(float *out, bf16_t *twin, const float *x, const bf16_t *x16, int N, int s, int F,
                          int Fp, float scale, cudaStream_t st) {
    taylor_features_kernel<<<grid_rows(N, Fp), 256, 0, st>>>(out, twin, x, x16, N, s, F, Fp, scale);
}

/* y = num / max(den, eps) per row of nd (ld columns: num in 0..e-1, den in column e); saves
   y and den; att = y, or att += y with add, in fp32 or into the bf16 att (rounded once, as a product's beta 1) */
__global__ void taylor_norm_forward_kernel(float *y, float *den_out, float *att, bf16_t *att16, const float *nd,
                                           int ld, int N, int e, float eps, int add) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= e) return;
    FOR_ROWS(n, N) {
        const float den = nd[(size_t)n * ld + e];
        const float v = nd[(size_t)n * ld + j] / fmaxf(den, eps);
        const size_t at = (size_t)n * e + j;
        y[at] = v;
        if (j == 0) den_out[n] = den;
        if (att16) {
            bf16 *a = reinterpret_cast<bf16 *>(att16);
            a[at] = __float2bfloat16(add ? __bfloat162float(a[at]) + v : v);
        } else {
            att[at] = add ? att[at] + v : v;
        }
    }
}
void taylor_norm_forward_cuda(float *y, float *den_out, float *att, bf16_t *att16, const float *nd, int ld, int N,
                              int e, float eps, int add, cudaStream_t st) {
    taylor_norm_forward_kernel<<<grid_rows(N, e), 256, 0, st>>>(y, den_out, att, att16, nd, ld, N, e, eps, add);
}

/* y = num / den', den' = max(den, eps):  d num = dy / den';  d den = -sum_j dy_j y_j / den'
   where den > eps (the clamp's gradient is 0 below it). One block of 256 a row, the sum in
   a fixed tree. out: ld columns, [d num | d den | 0 ...] (+ twin) */
__global__ void taylor_norm_backward_kernel(float *out, bf16_t *twin, const float *dy, const bf16_t *dy16,
                                            const float *y, const float *den, int ld, int N, int e, float eps) {
    __shared__ float part[8];
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const float dp = fmaxf(den[n], eps), inv = 1.0f / dp;
        float acc = 0;
        for (int j = threadIdx.x; j < ld; j += 256) {
            float v = 0;
            if (j < e) {
                const float g = ld_act(dy, dy16, (size_t)n * e + j);
                acc += g * y[(size_t)n * e + j];
                v = g * inv;
            }
            if (j != e) {
                out[(size_t)n * ld + j] = v;
                put_twin(twin, (size_t)n * ld + j, v);
            }
        }
        acc = warp_sum(acc);
        if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
        __syncthreads();
        if (threadIdx.x == 0) {
            float sum = 0;
            for (int w = 0; w < 8; w++) sum += part[w];
            const float dd = den[n] > eps ? -sum * inv : 0.0f;
            out[(size_t)n * ld + e] = dd;
            put_twin(twin, (size_t)n * ld + e, dd);
        }
        __syncthreads();
    }
}
void taylor_norm_backward_cuda(float *out, bf16_t *twin, const float *dy, const bf16_t *dy16, const float *y,
                               const float *den, int ld, int N, int e, float eps, cudaStream_t st) {
    const int blocks = N < 65535 ? N : 65535;
    taylor_norm_backward_kernel<<<blocks > 0 ? blocks : 1, 256, 0, st>>>(out, twin, dy, dy16, y, den, ld, N, e,
                                                                        eps);
}

/* The feature map's backward for x = scale * x_raw: with dphi = [d0, d1 (s), d2 (s x s)],
   d x_i = d1_i + (1/sqrt 2) sum_j (d2_ij + d2_ji) x_j, and d x_raw = scale d x. dphi is
   dfeat[n] plus, where extra is given, the row of its group's extra (the key's share of
   Z_g = sum phi(k): extra[(n / C) * extra_stride + f * extra_ld]). Writes d x_raw into out
   (fp32, or bf16 where out16 is given). */
__global__ void taylor_features_backward_kernel(float *out, bf16_t *out16, const float *dfeat, const float *extra,
                                                size_t extra_stride, int extra_ld, int C, const float *x,
                                                const bf16_t *x16, int N, int s, int Fp, float scale) {
    /* one thread per (row, feature i) of the N x s output (s <= 32: a thread per row would
       leave most of a block idle) */
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < (size_t)N * s;
         idx += (size_t)gridDim.x * blockDim.x) {
    const int n = (int)(idx / s), i = (int)(idx % s);
    const float *df = dfeat + (size_t)n * Fp;
    const float *ex = extra ? extra + (size_t)(n / C) * extra_stride : NULL;
#define DPHI(f) (df[f] + (ex ? ex[(size_t)(f) * extra_ld] : 0.0f))
    float acc = 0;
    for (int j = 0; j < s; j++) {
        const float xj = scale * ld_act(x, x16, (size_t)n * s + j);
        acc += (DPHI(1 + s + i * s + j) + DPHI(1 + s + j * s + i)) * xj;
    }
    const float dx = DPHI(1 + i) + RSQRT2 * acc;
#undef DPHI
    if (out16) reinterpret_cast<bf16 *>(out16)[idx] = __float2bfloat16(scale * dx);
    else out[idx] = scale * dx;
    }
}
void taylor_features_backward_cuda(float *out, bf16_t *out16, const float *dfeat, const float *extra,
                                   size_t extra_stride, int extra_ld, int C, const float *x, const bf16_t *x16,
                                   int N, int s, int Fp, float scale, cudaStream_t st) {
    taylor_features_backward_kernel<<<grid_for((size_t)N * s, 256), 256, 0, st>>>(out, out16, dfeat, extra,
                                                                                   extra_stride, extra_ld, C, x,
                                                                                   x16, N, s, Fp, scale);
}
