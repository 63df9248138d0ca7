/* autograd/cuda/kernels_sample.cu: top-k sampling on the GPU for the decoder's graph paths
 * (many sequences): a byte a sequence without the logits' trip to the host, one block a
 * sequence running sample_topk_block (sample.cuh: how it matches the host's sampler). */
#include "cuda_ops.h"
#include "sample.cuh"

#define SAMPLE_THREADS 256

__global__ void sample_topk_kernel(int *tok, int *hist, const float *logits, const double *u, const int *pos,
                                   int V, int k, double temperature) {
    extern __shared__ double sh_d[];
    const int q = blockIdx.x, n = gridDim.x;
    const long at = (pos ? (long)(pos[0] - pos[1]) : 0) * n + q;
    const int b = sample_topk_block(logits + (size_t)q * V, V, k, temperature, u[at], sh_d);
    if (threadIdx.x == 0) {
        tok[q] = b;
        if (hist) hist[at] = b;
    }
}

extern "C" int sample_topk_cuda(int *tok, int *hist, const float *logits, const double *u, const int *pos, int n,
                                int V, int k, double temperature, cudaStream_t st) {
    if (n < 1 || V < 1 || k < 1 || k > 256 || V > SAMPLE_MAX_V) return -1;
    sample_topk_kernel<<<n, SAMPLE_THREADS, SAMPLE_SHARED_BYTES(V, k), st>>>(tok, hist, logits, u, pos, V, k,
                                                                             temperature);
    return 0;
}
