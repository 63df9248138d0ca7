/* autograd/cuda/kernels_attn.cu: the attention's element work: the relative-position bias per distance, phi
 * and the causal mask over a group's scores, their backward, the bias's gradient, and the
 * linear part's scan over a sequence's groups.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"


__global__ void attn_bias_dist_kernel(float *bias_dist, const float *rel_bias, int C, float scale) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < C) bias_dist[k] = scale * rel_bias[rel_pos_bucket(k)];
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
    int lo = 0, hi = C;   /* the first k with rel_pos_bucket(k) >= b */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (rel_pos_bucket(mid) >= b) hi = mid; else lo = mid + 1;
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
    colsum_slices_cuda(scratch, dist_part, C, nparts, C, st);
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
