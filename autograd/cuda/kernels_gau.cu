/* autograd/cuda/kernels_gau.cu: the element work of FLASH-Quad's GAU layer (attn_full.cu,
 * gau_layer.cu; docs/model.md, "FLASH-Quad"): the two-head offset-scale and its backward, the
 * scores of one chunk of query rows against every earlier key (bias, phi, causal mask) and
 * their backward with the bias's gradient per distance, and the copy of dv into its bf16 twin.
 * The products around them are cuBLAS's. Every reduction runs in a fixed order. */
#include "kernels.cuh"

/* q = z gamma_0 + beta_0, k = z gamma_1 + beta_1 (z = silu(u_z): the stored silu, or in bf16
   silu(u16 + b) where pre_bias is given) into qk (2 blocks of N x s, fp32) and its twin */
__global__ void gau_offset_scale_forward_kernel(float *qk, bf16_t *twin, const float *z, const bf16_t *z16,
                                                const float *pre_bias, int z_stride, const float *gamma,
                                                const float *beta, int N, int s) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= s) return;
    const float g0 = gamma[j], g1 = gamma[s + j], b0 = beta[j], b1 = beta[s + j];
    FOR_ROWS(n, N) {
        const float zv = ld_silu(z, z16, pre_bias, (size_t)n * z_stride + j, j);
        const size_t q = (size_t)n * s + j, k = (size_t)N * s + q;
        qk[q] = zv * g0 + b0;
        qk[k] = zv * g1 + b1;
        put_twin(twin, q, qk[q]);
        put_twin(twin, k, qk[k]);
    }
}
void gau_offset_scale_forward_cuda(float *qk, bf16_t *twin, const float *z, const bf16_t *z16, const float *pre_bias,
                                   int z_stride, const float *gamma, const float *beta, int N, int s,
                                   cudaStream_t st) {
    gau_offset_scale_forward_kernel<<<grid_rows(N, s), 256, 0, st>>>(qk, twin, z, z16, pre_bias, z_stride, gamma,
                                                                     beta, N, s);
}

/* dz = dq gamma_0 + dk gamma_1, through silu' into the pre-activation's gradient (dz_out:
   fp32 at stride dz_stride, or the bf16 twin dz16), and z itself into zs (N x s, for the
   gains' gradient sums: d gamma_h = sum_n d(q|k) z). u: the stored pre-activation (fp32,
   bias included) or u16 + pre_bias in bf16 */
__global__ void gau_offset_scale_backward_kernel(float *dz_out, bf16_t *dz16, int dz_stride, float *zs,
                                                 const float *dqk, const float *u, const bf16_t *u16,
                                                 const float *pre_bias, int u_stride, const float *gamma, int N,
                                                 int s) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= s) return;
    const float g0 = gamma[j], g1 = gamma[s + j];
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * u_stride + j;
        const float uv = pre_bias ? raw_pre(u16, pre_bias, at, j) : ld_act(u, u16, at);
        const float sg = sigmoid_f(uv);
        const size_t q = (size_t)n * s + j;
        const float dz = dqk[q] * g0 + dqk[(size_t)N * s + q] * g1;
        zs[q] = uv * sg;   /* silu(u) */
        const float d = dz * sg * silu_grad_factor(uv, sg);
        const size_t o = (size_t)n * dz_stride + j;
        if (dz16) reinterpret_cast<bf16 *>(dz16)[o] = __float2bfloat16(d);
        else dz_out[o] = d;
    }
}
void gau_offset_scale_backward_cuda(float *dz_out, bf16_t *dz16, int dz_stride, float *zs, const float *dqk,
                                    const float *u, const bf16_t *u16, const float *pre_bias, int u_stride,
                                    const float *gamma, int N, int s, cudaStream_t st) {
    gau_offset_scale_backward_kernel<<<grid_rows(N, s), 256, 0, st>>>(dz_out, dz16, dz_stride, zs, dqk, u, u16,
                                                                      pre_bias, u_stride, gamma, N, s);
}

/* One chunk of tc query rows (global rows r0 + i) of each of B sequences against keys
   j < kc: S holds q_i . k_j (ld = ld, batch stride bstride). In place: S = (S + bias_scale
   rel_bias[bucket(r0 + i - j)]) / T; A = phi(S) for j <= r0 + i, else 0 (into A, or its
   twin A16) */
__global__ void gau_scores_forward_kernel(float *S, float *A, bf16_t *A16, const float *rel_bias, int B, int tc,
                                          int kc, int r0, int ld, size_t bstride, float bias_scale, float inv_T,
                                          int laplace) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= kc) return;
    FOR_ROWS(row, B * tc) {
        const int b = row / tc, i = row % tc, gi = r0 + i;
        const size_t at = (size_t)b * bstride + (size_t)i * ld + j;
        float a = 0;
        if (j <= gi) {
            const float sv = (S[at] + bias_scale * rel_bias[rel_pos_bucket(gi - j)]) * inv_T;
            S[at] = sv;
            a = phi_f(sv, laplace);
        } else {
            S[at] = 0;
        }
        if (A16) reinterpret_cast<bf16 *>(A16)[at] = __float2bfloat16(a);
        else A[at] = a;
    }
}
void gau_scores_forward_cuda(float *S, float *A, bf16_t *A16, const float *rel_bias, int B, int tc, int kc, int r0,
                             int ld, size_t bstride, float bias_scale, float inv_T, int laplace, cudaStream_t st) {
    gau_scores_forward_kernel<<<grid_rows(B * tc, kc), 256, 0, st>>>(S, A, A16, rel_bias, B, tc, kc, r0, ld,
                                                                     bstride, bias_scale, inv_T, laplace);
}

/* With S the chunk's scores after the forward kernel and dA = dO v^T in place of them in
   dZ: dZ = dA phi'(S) / T on j <= r0 + i (0 above), the gradient of the raw q . k (and its
   twin) */
__global__ void gau_scores_backward_kernel(float *dZ, bf16_t *dZ16, const float *S, int B, int tc, int kc, int r0,
                                           int ld, size_t bstride, float inv_T, int laplace) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= kc) return;
    FOR_ROWS(row, B * tc) {
        const int b = row / tc, i = row % tc, gi = r0 + i;
        const size_t at = (size_t)b * bstride + (size_t)i * ld + j;
        const float v = j <= gi ? dZ[at] * phi_grad_f(S[at], laplace) * inv_T : 0.0f;
        dZ[at] = v;
        put_twin(dZ16, at, v);
    }
}
void gau_scores_backward_cuda(float *dZ, bf16_t *dZ16, const float *S, int B, int tc, int kc, int r0, int ld,
                              size_t bstride, float inv_T, int laplace, cudaStream_t st) {
    gau_scores_backward_kernel<<<grid_rows(B * tc, kc), 256, 0, st>>>(dZ, dZ16, S, B, tc, kc, r0, ld, bstride,
                                                                      inv_T, laplace);
}

/* part[b * Tp + k] = sum_i dZ[b][i][r0 + i - k] over the chunk's rows (distance k = i - j),
   rows in order: the chunk's share of the bias's gradient per distance */
__global__ void gau_dist_partial_kernel(float *part, const float *dZ, int B, int tc, int r0, int Tp, int ld,
                                        size_t bstride) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (k >= Tp || b >= B) return;
    float acc = 0;
    for (int i = 0; i < tc; i++) {
        const int j = r0 + i - k;
        if (j >= 0) acc += dZ[(size_t)b * bstride + (size_t)i * ld + j];
    }
    part[(size_t)b * Tp + k] = acc;
}
void gau_dist_partial_cuda(float *part, const float *dZ, int B, int tc, int r0, int Tp, int ld, size_t bstride,
                           cudaStream_t st) {
    dim3 grid((unsigned)((Tp + 255) / 256), (unsigned)B);
    gau_dist_partial_kernel<<<grid, 256, 0, st>>>(part, dZ, B, tc, r0, Tp, ld, bstride);
}

/* d rel_bias[bucket] += bias_scale * (the sum over the parts, in order, of the bucket's
   distances): first each distance's total over the parts (one thread a distance, into
   total), then one thread a bucket over its distances (every distance from 128 on is bucket
   31: T5's buckets grow with the distance and end there) */
__global__ void gau_dist_total_kernel(float *total, const float *part, int nparts, int Tp) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= Tp) return;
    float acc = 0;
    for (int p = 0; p < nparts; p++) acc += part[(size_t)p * Tp + k];
    total[k] = acc;
}
__global__ void gau_bias_grad_kernel(float *d_rel_bias, const float *total, int Tp, float bias_scale) {
    const int bkt = threadIdx.x;
    if (bkt >= REL_POS_BUCKETS) return;
    float acc = 0;
    const int near = Tp < 128 ? Tp : 128;
    for (int k = 0; k < near; k++)
        if (rel_pos_bucket(k) == bkt) acc += total[k];
    if (bkt == REL_POS_BUCKETS - 1)
        for (int k = near; k < Tp; k++) acc += total[k];
    d_rel_bias[bkt] += bias_scale * acc;
}
void gau_bias_grad_cuda(float *d_rel_bias, float *total, const float *part, int nparts, int Tp, float bias_scale,
                        cudaStream_t st) {
    gau_dist_total_kernel<<<(Tp + 255) / 256, 256, 0, st>>>(total, part, nparts, Tp);
    gau_bias_grad_kernel<<<1, 32, 0, st>>>(d_rel_bias, total, Tp, bias_scale);
}

/* twin[n * ld + j] = bf16(x[n * ld + j]) for j < M: the fp32 sum of dv into the bf16 twin
   that the projections' backward reads */
__global__ void gau_to_twin_kernel(bf16_t *twin, const float *x, int N, int M, int ld) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        reinterpret_cast<bf16 *>(twin)[at] = __float2bfloat16(x[at]);
    }
}
void gau_to_twin_cuda(bf16_t *twin, const float *x, int N, int M, int ld, cudaStream_t st) {
    gau_to_twin_kernel<<<grid_rows(N, M), 256, 0, st>>>(twin, x, N, M, ld);
}
