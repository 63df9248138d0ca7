/* autograd/cuda/kernels_optim.cu: the optimizer (sums of squares per tensor, clipping factors, AdamW) and the
 * fp32 -> bf16 conversion of the parameters.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"
extern "C" {
#include "optim.h"
}


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
