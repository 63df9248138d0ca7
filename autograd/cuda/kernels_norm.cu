/* autograd/cuda/kernels_norm.cu: ScaleNorm and LayerNorm, each fused with the token shift of its output, and
 * their backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

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
