/* autograd/cuda/kernels_norm.cu: ScaleNorm and LayerNorm, each fused with the token shift of its output, and
 * their backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

/* y NULL: the output as its bf16 twin only (bf16 precision, whose products read only the
   twin). Where feature i of norm output row n goes with the token shift: the first ceil(d/2)
   features move to row n+1 (dropped at the sequence's last position), and row t = 0 gets
   zeros there. */
__device__ __forceinline__ void shifted_store(float *y, bf16_t *twin, int n, int i, int d,
                                              int half, int shift_T, float val) {
    if (shift_T && i < half) {
        const int t = n % shift_T;
        if (t + 1 < shift_T) {
            if (y) y[(size_t)(n + 1) * d + i] = val;
            put_twin(twin, (size_t)(n + 1) * d + i, val);
        }
        if (t == 0) {
            if (y) y[(size_t)n * d + i] = 0;
            put_twin(twin, (size_t)n * d + i, 0);
        }
    } else {
        if (y) y[(size_t)n * d + i] = val;
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
/* The same two ops for a width d = 128 NV (NV <= 16): a warp per row holds it in registers
   (NV float4 a lane), so that each array is read once, in 16-byte loads. The lanes' partial
   sums cover other features than the kernels above, so the sums' rounding differs from
   theirs (in the last bits); the formula is the same. half = 64 NV is a multiple of 4: a
   float4 lies wholly on one side of the shift. */
__device__ __forceinline__ void store4(float *y, bf16_t *twin, size_t at, float4 v) {
    if (y) *reinterpret_cast<float4 *>(y + at) = v;
    if (twin) {
        __nv_bfloat162 *t = reinterpret_cast<__nv_bfloat162 *>(reinterpret_cast<bf16 *>(twin) + at);
        t[0] = __floats2bfloat162_rn(v.x, v.y);
        t[1] = __floats2bfloat162_rn(v.z, v.w);
    }
}
template <int NV>
__global__ void scalenorm_forward_vec_kernel(float *y, float *stat, const float *x, const float *g, int N,
                                             int shift_T, bf16_t *twin, float *res_out, const float *res_bias) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    constexpr int d = 128 * NV, half = d / 2;
    const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)n * d);
    float4 v[NV];
    float ss = 0;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        v[k] = xr[lane + 32 * k];
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    ss = warp_sum(ss);
    const float norm = sqrtf(ss / d);
    const float r = 1.0f / (norm > NORM_EPS ? norm : NORM_EPS), gain = g[0];
    if (lane == 0) stat[n] = r;
    const int t = shift_T ? n % shift_T : 0;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int i = 4 * (lane + 32 * k);
        const float4 o = make_float4(v[k].x * r * gain, v[k].y * r * gain, v[k].z * r * gain, v[k].w * r * gain);
        if (shift_T && i < half) {
            if (t + 1 < shift_T) store4(y, twin, (size_t)(n + 1) * d + i, o);
            if (t == 0) store4(y, twin, (size_t)n * d + i, make_float4(0, 0, 0, 0));
        } else {
            store4(y, twin, (size_t)n * d + i, o);
        }
        if (res_out) {
            const float4 b = reinterpret_cast<const float4 *>(res_bias)[lane + 32 * k];
            reinterpret_cast<float4 *>(res_out + (size_t)n * d)[lane + 32 * k] =
                make_float4(b.x + v[k].x, b.y + v[k].y, b.z + v[k].z, b.w + v[k].w);
        }
    }
}
/* the width's float4s a lane when the register kernels take it (0: the general kernels) */
static int norm_vec_width(int d, const void *a, const void *b, const void *c, const void *e, const void *twin) {
    if (d % 128 || d > 128 * 16) return 0;
    if (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)e) % 16 || (uintptr_t)twin % 4) return 0;
    return d / 128;
}
#define NORM_VEC_CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16)
void scalenorm_forward_cuda(float *y, float *stat, const float *x, const float *g, int N, int d,
                            int shift_T, bf16_t *twin, float *res_out, const float *res_bias, cudaStream_t st) {
    const unsigned blocks = (unsigned)((N + 3) / 4);
    switch (norm_vec_width(d, x, y, res_out, res_out ? res_bias : NULL, twin)) {
#define X(NV) case NV: scalenorm_forward_vec_kernel<NV><<<blocks, 128, 0, st>>>(y, stat, x, g, N, shift_T, twin, res_out, res_bias); return;
        NORM_VEC_CASES(X)
#undef X
    default: break;
    }
    scalenorm_forward_kernel<<<blocks, 128, 0, st>>>(y, stat, x, g, N, d, shift_T, twin, res_out, res_bias);
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
/* the backward for d = 128 NV (see scalenorm_forward_vec_kernel) */
template <int NV>
__global__ void scalenorm_backward_vec_kernel(float *dx, float *row_out, const float *dys, const float *x,
                                              const float *stat, const float *g, int N, int shift_T,
                                              bf16_t *twin) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    constexpr int d = 128 * NV, half = d / 2;
    const float4 *xr = reinterpret_cast<const float4 *>(x + (size_t)n * d);
    const int t = shift_T ? n % shift_T : 0;
    float4 v[NV], dy[NV];
    float ss = 0, xdy = 0;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int i = 4 * (lane + 32 * k);
        v[k] = xr[lane + 32 * k];
        /* dy[t, :half] = dys[t + 1, :half], 0 at the last position */
        if (shift_T && i < half)
            dy[k] = t + 1 < shift_T ? *reinterpret_cast<const float4 *>(dys + (size_t)(n + 1) * d + i)
                                    : make_float4(0, 0, 0, 0);
        else
            dy[k] = *reinterpret_cast<const float4 *>(dys + (size_t)n * d + i);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
        xdy += v[k].x * dy[k].x + v[k].y * dy[k].y + v[k].z * dy[k].z + v[k].w * dy[k].w;
    }
    ss = warp_sum(ss);
    xdy = warp_sum(xdy);
    const float r = stat[n], gain = g[0], gr = gain * r;
    if (lane == 0) row_out[n] = xdy * r;
    const int clamped = sqrtf(ss / d) < NORM_EPS;
    const float cr = clamped ? 0.0f : xdy * r * r / d;
    float4 *dxr = reinterpret_cast<float4 *>(dx + (size_t)n * d);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const float4 o = dxr[lane + 32 * k];
        const float4 nv = make_float4(o.x + gr * (dy[k].x - v[k].x * cr), o.y + gr * (dy[k].y - v[k].y * cr),
                                      o.z + gr * (dy[k].z - v[k].z * cr), o.w + gr * (dy[k].w - v[k].w * cr));
        store4(dx, twin, (size_t)n * d + 4 * (lane + 32 * k), nv);
    }
}
void scalenorm_backward_cuda(float *dx, float *dg, const float *dy, const float *x,
                             const float *stat, const float *g, int N, int d, int shift_T,
                             float *row_scratch, bf16_t *dx_twin, cudaStream_t st) {
    const unsigned blocks = (unsigned)((N + 3) / 4);
    switch (norm_vec_width(d, dx, dy, x, NULL, dx_twin)) {
#define X(NV) case NV: scalenorm_backward_vec_kernel<NV><<<blocks, 128, 0, st>>>(dx, row_scratch, dy, x, stat, g, N, shift_T, dx_twin); break;
        NORM_VEC_CASES(X)
#undef X
    default:
        scalenorm_backward_kernel<<<blocks, 128, 0, st>>>(dx, row_scratch, dy, x, stat, g, N, d, shift_T, dx_twin);
    }
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
