/* autograd/cuda/kernels_rotary.cu: offset-scale into the four q/k blocks with rotary on the first r
 * features, and its backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

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
