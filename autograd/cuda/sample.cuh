/* autograd/cuda/sample.cuh: top-k sampling by one block, the twin of sample_topk_u
 * (trainer/sample.c), shared by the sampling kernel (kernels_sample.cu) and the persistent
 * decoder (decode_persistent.cu), which samples inside its kernel between bytes.
 *
 * The host's sampler keeps the k largest logits in order (ties: the lower index first),
 * p_j = exp((v_j - v_0) / T) in double, sum = p_0 + p_1 + ... in that order, and returns the
 * first j where u sum - p_0 - ... - p_j < 0 (the last kept one if none). Here each logit's
 * place in that order is its rank, the number of logits before it (larger, or equal with a
 * lower index): the kept ones are those of rank < k, stored at their rank; the p_j are
 * computed a thread each and summed on one thread in the host's order, so the byte is the
 * host's for the same uniform. The one difference the two can have is exp's last bit
 * (CUDA's and glibc's exp are both within an ulp, not always the same), which changes a
 * byte only when a uniform falls within ~1e-16 of a boundary between two bytes. */
#ifndef FLASH_CUDA_SAMPLE_CUH
#define FLASH_CUDA_SAMPLE_CUH

/* shared memory sample_topk_block needs, in bytes: val, p (k doubles each), idx (k ints),
   the logits (V floats) */
#define SAMPLE_SHARED_BYTES(V, k) ((sizeof(double) * 2 + sizeof(int)) * (size_t)(k) + sizeof(float) * (size_t)(V))

/* the byte for uniform u from row (V logits, global memory), keeping k <= 256 of them;
   every thread of the block calls it and gets the byte. sh: SAMPLE_SHARED_BYTES(V, k),
   8-byte aligned. Ends with a block barrier (sh may be reused after it). */
__device__ __forceinline__ int sample_topk_block(const float *row, int V, int k, double temperature, double u,
                                                 double *sh) {
    __shared__ int chosen;
    double *val = sh, *p = sh + k;
    int *idx = reinterpret_cast<int *>(p + k);
    float *lg = reinterpret_cast<float *>(idx + k);
    const int tid = threadIdx.x, nt = blockDim.x, kept = k < V ? k : V;
    for (int i = tid; i < V; i += nt) lg[i] = row[i];
    __syncthreads();
    for (int i = tid; i < V; i += nt) {
        const float v = lg[i];
        int rank = 0;
        for (int j = 0; j < V; j++) {
            const float w = lg[j];
            rank += w > v || (w == v && j < i);
        }
        if (rank < k) { val[rank] = (double)v; idx[rank] = i; }
    }
    __syncthreads();
    for (int j = tid; j < kept; j += nt) p[j] = exp((val[j] - val[0]) / temperature);
    __syncthreads();
    if (tid == 0) {
        double sum = 0;
        for (int j = 0; j < kept; j++) sum += p[j];
        double x = u * sum;
        int b = idx[kept - 1];
        for (int j = 0; j < kept; j++) {
            x -= p[j];
            if (x < 0) { b = idx[j]; break; }
        }
        chosen = b;
    }
    __syncthreads();
    const int b = chosen;
    __syncthreads();   /* every thread has read it before a next call writes it */
    return b;
}

#endif
