/* autograd/cuda/kernels_taylor.cu: the element work of the Taylor linear attention
 * (attn_taylor.cu; docs/model.md, "The Taylor linear attention"): the feature map of the
 * linear queries and keys and its backward, and the normalisation y = num / max(den, eps)
 * and its backward. The products around them are cuBLAS's. Every reduction runs in a fixed
 * order (no atomics).
 *
 * The feature map in its symmetric form: the reference's phi(x) = [1, x, vec(x x^T) / sqrt 2]
 * has s^2 quadratic features, each unordered pair {i, j} twice, so
 *   phi(q) . phi(k) = 1 + q.k + (1/2) sum_ij q_i q_j k_i k_j
 *                   = 1 + q.k + sum_i (q_i^2 / sqrt 2)(k_i^2 / sqrt 2) + sum_{i<j} (q_i q_j)(k_i k_j).
 * The GPU keeps psi(x) = [1, x, x_i x_j for i <= j, scaled by 1/sqrt 2 where i = j]:
 * 1 + s + s(s+1)/2 features (153 at s = 16, not 273) with the same dot product, so every
 * product, state and scan of the linear part is 44% narrower. Pair (i, j), i <= j, is
 * feature 1 + s + i (2s - i + 1) / 2 + (j - i). Its backward: d x_m = d1_m + sum_j c_mj x_j
 * d2_{min(m,j) max(m,j)}, with c = sqrt 2 on the diagonal (d (x_m^2 / sqrt 2) = sqrt 2 x_m)
 * and 1 off it. */
#include "kernels.cuh"

#define RSQRT2 0.70710678118654752440f
#define SQRT2 1.41421356237309504880f

/* feature index of pair (i, j), i <= j, among the quadratic ones */
__device__ __forceinline__ int pair_index(int i, int j, int s) { return i * (2 * s - i + 1) / 2 + (j - i); }
/* the pair of quadratic feature q (0 <= q < s(s+1)/2) */
__device__ __forceinline__ void pair_of(int q, int s, int *i, int *j) {
    int a = 0;
    while (q >= s - a) { q -= s - a; a++; }
    *i = a;
    *j = a + q;
}

/* out[n, f] = psi(scale * x_n)[f], f < F = 1 + s + s(s+1)/2, and 0 for f in [F, Fp) (the row is
   Fp wide), into out and/or its twin (either may be NULL); x = the rows of one block of qk4 */
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
            int i, j;
            pair_of(f - 1 - s, s, &i, &j);
            v = scale * ld_act(x, x16, row + i) * (scale * ld_act(x, x16, row + j));
            if (i == j) v *= RSQRT2;
        }
        const size_t at = (size_t)n * Fp + f;
        if (out) out[at] = v;
        put_twin(twin, at, v);
    }
}
/* the same two features at a time (Fp even): one thread per pair of the N x Fp/2 pairs, so
   that no block sits mostly idle past a row's last feature (Fp = 280 left 232 of the second
   block's 256 threads without work) and the twin takes 4-byte stores */
__device__ __forceinline__ float taylor_feature(const float *x, const bf16_t *x16, size_t row, int f, int s,
                                                int F, float scale) {
    if (f >= F) return 0.0f;
    if (f == 0) return 1.0f;
    if (f <= s) return scale * ld_act(x, x16, row + f - 1);
    int i, j;
    pair_of(f - 1 - s, s, &i, &j);
    const float v = scale * ld_act(x, x16, row + i) * (scale * ld_act(x, x16, row + j));
    return i == j ? v * RSQRT2 : v;
}
__global__ void taylor_features2_kernel(float *out, bf16_t *twin, const float *x, const bf16_t *x16, int N, int s,
                                        int F, int Fp, float scale) {
    const int half = Fp / 2;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < (size_t)N * half;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int n = (int)(idx / half), f = 2 * (int)(idx % half);
        const size_t row = (size_t)n * s, at = (size_t)n * Fp + f;
        const float v0 = taylor_feature(x, x16, row, f, s, F, scale), v1 = taylor_feature(x, x16, row, f + 1, s, F, scale);
        if (out) *reinterpret_cast<float2 *>(out + at) = make_float2(v0, v1);
        if (twin) *reinterpret_cast<__nv_bfloat162 *>(reinterpret_cast<bf16 *>(twin) + at) = __floats2bfloat162_rn(v0, v1);
    }
}
void taylor_features_cuda(float *out, bf16_t *twin, const float *x, const bf16_t *x16, int N, int s, int F,
                          int Fp, float scale, cudaStream_t st) {
    if (Fp % 2 == 0 && (uintptr_t)out % 8 == 0 && (uintptr_t)twin % 4 == 0)
        taylor_features2_kernel<<<grid_for((size_t)N * (Fp / 2), 256), 256, 0, st>>>(out, twin, x, x16, N, s, F, Fp,
                                                                                       scale);
    else
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
/* the same, a block per row and four columns a thread (e and ld multiples of 4, rows 16-byte
   aligned): the row's den is read once per thread from one address, the rest in 16-byte loads */
__global__ void taylor_norm_forward4_kernel(float *y, float *den_out, float *att, bf16_t *att16, const float *nd,
                                            int ld, int N, int e, float eps, int add) {
    const int c = 4 * threadIdx.x;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const float den = nd[(size_t)n * ld + e], dd = fmaxf(den, eps);
        if (threadIdx.x == 0) den_out[n] = den;
        if (c >= e) continue;
        const float4 u = *reinterpret_cast<const float4 *>(nd + (size_t)n * ld + c);
        const float4 v = make_float4(u.x / dd, u.y / dd, u.z / dd, u.w / dd);
        const size_t at = (size_t)n * e + c;
        *reinterpret_cast<float4 *>(y + at) = v;
        if (att16) {
            __nv_bfloat162 *a = reinterpret_cast<__nv_bfloat162 *>(reinterpret_cast<bf16 *>(att16) + at);
            float2 lo = make_float2(v.x, v.y), hi = make_float2(v.z, v.w);
            if (add) {
                const float2 a0 = __bfloat1622float2(a[0]), a1 = __bfloat1622float2(a[1]);
                lo = make_float2(a0.x + v.x, a0.y + v.y);
                hi = make_float2(a1.x + v.z, a1.y + v.w);
            }
            a[0] = __floats2bfloat162_rn(lo.x, lo.y);
            a[1] = __floats2bfloat162_rn(hi.x, hi.y);
        } else {
            float4 *a = reinterpret_cast<float4 *>(att + at);
            if (add) {
                const float4 o = *a;
                *a = make_float4(o.x + v.x, o.y + v.y, o.z + v.z, o.w + v.w);
            } else {
                *a = v;
            }
        }
    }
}
static int aligned16(const void *p) { return (uintptr_t)p % 16 == 0; }
void taylor_norm_forward_cuda(float *y, float *den_out, float *att, bf16_t *att16, const float *nd, int ld, int N,
                              int e, float eps, int add, cudaStream_t st) {
    const int threads = (e / 4 + 31) / 32 * 32;
    if (e % 4 == 0 && ld % 4 == 0 && threads <= 1024 && aligned16(y) && aligned16(nd) &&
        (att16 ? (uintptr_t)att16 % 8 == 0 : aligned16(att))) {
        const int blocks = N < 65535 * 4 ? N : 65535 * 4;
        taylor_norm_forward4_kernel<<<blocks > 0 ? blocks : 1, threads, 0, st>>>(y, den_out, att, att16, nd, ld, N, e,
                                                                                eps, add);
    } else {
        taylor_norm_forward_kernel<<<grid_rows(N, e), 256, 0, st>>>(y, den_out, att, att16, nd, ld, N, e, eps, add);
    }
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
/* the same, four columns a thread (e and ld multiples of 4, 16-byte aligned rows): the block
   holds ld / 4 threads (rounded up to whole warps), one pass over the row; the sum of dy y
   in a fixed tree (each thread's four, the warps', then warp 0 over the warps) */
__global__ void taylor_norm_backward4_kernel(float *out, bf16_t *twin, const float *dy, const bf16_t *dy16,
                                             const float *y, const float *den, int ld, int N, int e, float eps) {
    __shared__ float part[32];
    const int c = 4 * threadIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        const float inv = 1.0f / fmaxf(den[n], eps);
        float acc = 0;
        float4 o = make_float4(0, 0, 0, 0);
        if (c < e) {
            const size_t at = (size_t)n * e + c;
            float4 g;
            if (dy16) {
                const __nv_bfloat162 *p = reinterpret_cast<const __nv_bfloat162 *>(reinterpret_cast<const bf16 *>(dy16) + at);
                const float2 g0 = __bfloat1622float2(p[0]), g1 = __bfloat1622float2(p[1]);
                g = make_float4(g0.x, g0.y, g1.x, g1.y);
            } else {
                g = *reinterpret_cast<const float4 *>(dy + at);
            }
            const float4 yv = *reinterpret_cast<const float4 *>(y + at);
            acc = g.x * yv.x + g.y * yv.y + g.z * yv.z + g.w * yv.w;
            o = make_float4(g.x * inv, g.y * inv, g.z * inv, g.w * inv);
        }
        acc = warp_sum(acc);
        if (lane == 0) part[warp] = acc;
        __syncthreads();
        if (c == e) {   /* the column of d den (e % 4 == 0: the first of its four) */
            float sum = 0;
            for (int w = 0; w < nw; w++) sum += part[w];
            o.x = den[n] > eps ? -sum * inv : 0.0f;
        }
        if (c < ld) {
            const size_t at = (size_t)n * ld + c;
            *reinterpret_cast<float4 *>(out + at) = o;
            if (twin) {
                __nv_bfloat162 *t = reinterpret_cast<__nv_bfloat162 *>(reinterpret_cast<bf16 *>(twin) + at);
                t[0] = __floats2bfloat162_rn(o.x, o.y);
                t[1] = __floats2bfloat162_rn(o.z, o.w);
            }
        }
        __syncthreads();
    }
}
void taylor_norm_backward_cuda(float *out, bf16_t *twin, const float *dy, const bf16_t *dy16, const float *y,
                               const float *den, int ld, int N, int e, float eps, cudaStream_t st) {
    const int threads = (ld / 4 + 31) / 32 * 32;
    if (e % 4 == 0 && ld % 4 == 0 && ld > e && threads <= 1024 && aligned16(out) && aligned16(y) &&
        (dy16 ? (uintptr_t)dy16 % 8 == 0 : aligned16(dy)) && (uintptr_t)twin % 8 == 0) {
        const int blocks = N < 65535 * 4 ? N : 65535 * 4;
        taylor_norm_backward4_kernel<<<blocks > 0 ? blocks : 1, threads, 0, st>>>(out, twin, dy, dy16, y, den, ld, N,
                                                                                 e, eps);
        return;
    }
    const int blocks = N < 65535 ? N : 65535;
    taylor_norm_backward_kernel<<<blocks > 0 ? blocks : 1, 256, 0, st>>>(out, twin, dy, dy16, y, den, ld, N, e,
                                                                        eps);
}

/* The feature map's backward for x = scale * x_raw: with dphi = [d0, d1 (s), d2 (the pairs)],
   d x_i = d1_i + sum_j c_ij x_j d2_{pair(i, j)} (the header's), and d x_raw = scale d x. dphi is
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
        const float d2 = DPHI(1 + s + (i <= j ? pair_index(i, j, s) : pair_index(j, i, s)));
        acc += (j == i ? SQRT2 * d2 : d2) * xj;
    }
    const float dx = DPHI(1 + i) + acc;
#undef DPHI
    if (out16) reinterpret_cast<bf16 *>(out16)[idx] = __float2bfloat16(scale * dx);
    else out[idx] = scale * dx;
    }
}
/* the same with R = blockDim.x / s rows at a time staged in shared memory (dphi = dfeat +
   extra, read once and in order; the thread per (row, i) reads the pairs of i, scattered
   over the row); the arithmetic is the kernel's above */
__global__ void taylor_features_backward_sh_kernel(float *out, bf16_t *out16, const float *dfeat, const float *extra,
                                                   size_t extra_stride, int extra_ld, int C, const float *x,
                                                   const bf16_t *x16, int N, int s, int Fp, float scale) {
    extern __shared__ float dsh[];
    const int R = blockDim.x / s, tid = threadIdx.x, r = tid / s, i = tid % s;
    for (int row0 = blockIdx.x * R; row0 < N; row0 += gridDim.x * R) {
        const int rows = N - row0 < R ? N - row0 : R;
        for (int k = tid; k < rows * Fp; k += blockDim.x) {
            const int n = row0 + k / Fp, f = k % Fp;
            dsh[k] = dfeat[(size_t)row0 * Fp + k] + (extra ? extra[(size_t)(n / C) * extra_stride + (size_t)f * extra_ld] : 0.0f);
        }
        __syncthreads();
        if (r < rows) {
            const int n = row0 + r;
            const float *d = dsh + (size_t)r * Fp;
            float acc = 0;
            for (int j = 0; j < s; j++) {
                const float xj = scale * ld_act(x, x16, (size_t)n * s + j);
                const float d2 = d[1 + s + (i <= j ? pair_index(i, j, s) : pair_index(j, i, s))];
                acc += (j == i ? SQRT2 * d2 : d2) * xj;
            }
            const float dx = d[1 + i] + acc;
            const size_t idx = (size_t)n * s + i;
            if (out16) reinterpret_cast<bf16 *>(out16)[idx] = __float2bfloat16(scale * dx);
            else out[idx] = scale * dx;
        }
        __syncthreads();
    }
}
void taylor_features_backward_cuda(float *out, bf16_t *out16, const float *dfeat, const float *extra,
                                   size_t extra_stride, int extra_ld, int C, const float *x, const bf16_t *x16,
                                   int N, int s, int Fp, float scale, cudaStream_t st) {
    const int R = 256 / s;
    const size_t sh = sizeof(float) * (size_t)R * Fp;
    if (R >= 1 && sh <= 48 * 1024) {
        const int groups = (N + R - 1) / R, blocks = groups < 65535 * 4 ? groups : 65535 * 4;
        taylor_features_backward_sh_kernel<<<blocks > 0 ? blocks : 1, R * s, sh, st>>>(
            out, out16, dfeat, extra, extra_stride, extra_ld, C, x, x16, N, s, Fp, scale);
        return;
    }
    taylor_features_backward_kernel<<<grid_for((size_t)N * s, 256), 256, 0, st>>>(out, out16, dfeat, extra,
                                                                                   extra_stride, extra_ld, C, x,
                                                                                   x16, N, s, Fp, scale);
}
