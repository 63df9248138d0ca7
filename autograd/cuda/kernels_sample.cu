/* autograd/cuda/kernels_sample.cu: top-k sampling on the GPU, the twin of sample_topk_u
 * (trainer/sample.c), for the decoder's many sequences: a byte a sequence without the
 * logits' trip to the host.
 *
 * The host's sampler keeps the k largest logits in order (ties: the lower index first),
 * p_j = exp((v_j - v_0) / T) in double, sum = p_0 + p_1 + ... in that order, and returns the
 * first j where u sum - p_0 - ... - p_j < 0 (the last kept one if none). Here each logit's
 * place in that order is its rank, the number of logits before it (larger, or equal with a
 * lower index): the kept ones are those of rank < k, stored at their rank; the sums then run
 * on one thread in the host's order, so the byte is the host's for the same uniform. The one
 * difference the two can have is exp's last bit (CUDA's and glibc's exp are both within an
 * ulp, not always the same), which changes a byte only when a uniform falls within ~1e-16
 * of a boundary between two bytes. */
#include "cuda_ops.h"

#define SAMPLE_THREADS 256

/* one block a sequence (blockIdx.x); shared: V floats, k doubles and k ints */
__global__ void sample_topk_kernel(int *tok, int *hist, const float *logits, const double *u, const int *pos,
                                   int V, int k, double temperature) {
    extern __shared__ double sh_d[];
    double *val = sh_d;                                 /* k: the kept logits, in order */
    int *idx = reinterpret_cast<int *>(val + k);        /* k: their indices */
    float *lg = reinterpret_cast<float *>(idx + k);     /* V: this sequence's logits */
    const int q = blockIdx.x, n = gridDim.x, tid = threadIdx.x;
    const float *row = logits + (size_t)q * V;
    for (int i = tid; i < V; i += blockDim.x) lg[i] = row[i];
    __syncthreads();
    for (int i = tid; i < V; i += blockDim.x) {
        const float v = lg[i];
        int rank = 0;
        for (int j = 0; j < V; j++) {
            const float w = lg[j];
            rank += w > v || (w == v && j < i);
        }
        if (rank < k) { val[rank] = (double)v; idx[rank] = i; }
    }
    __syncthreads();
    if (tid != 0) return;
    const int kept = k < V ? k : V;
    const long at = (pos ? (long)(pos[0] - pos[1]) : 0) * n + q;
    double p[256], sum = 0;   /* k <= 256 (the launcher's check) */
    for (int j = 0; j < kept; j++) { p[j] = exp((val[j] - val[0]) / temperature); sum += p[j]; }
    double x = u[at] * sum;
    int b = idx[kept - 1];
    for (int j = 0; j < kept; j++) {
        x -= p[j];
        if (x < 0) { b = idx[j]; break; }
    }
    tok[q] = b;
    if (hist) hist[at] = b;
}

extern "C" int sample_topk_cuda(int *tok, int *hist, const float *logits, const double *u, const int *pos, int n,
                                int V, int k, double temperature, cudaStream_t st) {
    if (n < 1 || V < 1 || k < 1 || k > 256 || V > SAMPLE_MAX_V) return -1;
    const size_t sh = (sizeof(double) + sizeof(int)) * (size_t)k + sizeof(float) * (size_t)V;
    sample_topk_kernel<<<n, SAMPLE_THREADS, sh, st>>>(tok, hist, logits, u, pos, V, k, temperature);
    return 0;
}
