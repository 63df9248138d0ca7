/* autograd/cuda/kernels_reduce.cu: the reductions: column sums of a matrix (fp32 and bf16, in a fixed order of row slices), a
 * sum of a vector into one float.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

/* stage 1: partial[slice][j] = sum over the slice's rows (8 row lanes, combined in order) */
__global__ void colsum_partial_kernel(float *partial, const float *A, int lda, const float *Bm,
                                      int ldb, int N, int M) {
    __shared__ float acc[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    float s = 0;
    if (j < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) {
            float a = A[(size_t)n * lda + j];
            s += Bm ? a * Bm[(size_t)n * ldb + j] : a;
        }
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < M) {
        float t = 0;
        for (int y = 0; y < 8; y++) t += acc[y][threadIdx.x];
        partial[(size_t)slice * M + j] = t;
    }
}
__global__ void colsum_final_kernel(float *dst, const float *partial, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    float t = 0;
    for (int sl = 0; sl < RED_SLICES; sl++) t += partial[(size_t)sl * M + j];
    dst[j] += t;
}
/* the same over a bf16 matrix */
__global__ void colsum16_partial_kernel(float *partial, const bf16_t *A, int lda, int N, int M) {
    __shared__ float acc[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    const bf16 *a16 = reinterpret_cast<const bf16 *>(A);
    float s = 0;
    if (j < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) s += __bfloat162float(a16[(size_t)n * lda + j]);
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < M) {
        float t = 0;
        for (int y = 0; y < 8; y++) t += acc[y][threadIdx.x];
        partial[(size_t)slice * M + j] = t;
    }
}
/* the same, two columns per thread (4-byte loads; each column's sum in the same order) */
__global__ void colsum16x2_partial_kernel(float *partial, const bf16_t *A, int lda, int N, int M) {
    __shared__ float acc[8][65];
    const int j2 = blockIdx.x * 32 + threadIdx.x, slice = blockIdx.y;
    const int lo = (int)((long)N * slice / RED_SLICES), hi = (int)((long)N * (slice + 1) / RED_SLICES);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(A);
    float s0 = 0, s1 = 0;
    if (2 * j2 < M)
        for (int n = lo + threadIdx.y; n < hi; n += 8) {
            const float2 v = __bfloat1622float2(a2[((size_t)n * lda) / 2 + j2]);
            s0 += v.x;
            s1 += v.y;
        }
    acc[threadIdx.y][2 * threadIdx.x] = s0;
    acc[threadIdx.y][2 * threadIdx.x + 1] = s1;
    __syncthreads();
    if (threadIdx.y < 2) {   /* row y of the block's first two: column 2 x + y */
        const int c = 2 * threadIdx.x + threadIdx.y, j = 2 * blockIdx.x * 32 + c;
        if (j < M) {
            float t = 0;
            for (int y = 0; y < 8; y++) t += acc[y][c];
            partial[(size_t)slice * M + j] = t;
        }
    }
}
void colsum16_add_cuda(float *dst, const bf16_t *A, int lda, int N, int M, float *scratch,
                       cudaStream_t st) {
    if (M <= 0) return;
    if (M % 2 == 0 && lda % 2 == 0 && (uintptr_t)A % 4 == 0) {
        dim3 grid((M + 63) / 64, RED_SLICES), block(32, 8);
        colsum16x2_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, N, M);
    } else {
        dim3 grid((M + 31) / 32, RED_SLICES), block(32, 8);
        colsum16_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, N, M);
    }
    colsum_final_kernel<<<(M + 255) / 256, 256, 0, st>>>(dst, scratch, M);
}
void colsum_add_cuda(float *dst, const float *A, int lda, const float *Bm, int ldb, int N, int M,
                     float *scratch, cudaStream_t st) {
    if (M <= 0) return;
    dim3 grid((M + 31) / 32, RED_SLICES), block(32, 8);
    colsum_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, Bm, ldb, N, M);
    colsum_final_kernel<<<(M + 255) / 256, 256, 0, st>>>(dst, scratch, M);
}

/* one block of 256 threads: strided partial sums, then the tree */
__global__ void sum_add_kernel(float *dst, const float *src, int n, float scale) {
    double s = 0;
    for (int i = threadIdx.x; i < n; i += 256) s += src[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) dst[0] += (float)(scale * s);
}
void sum_add_cuda(float *dst, const float *src, int n, float scale, cudaStream_t st) {
    sum_add_kernel<<<1, 256, 0, st>>>(dst, src, n, scale);
}

/* stage 1 alone (the attention's bias gradient sums its own slices): scratch = the
   RED_SLICES x M partial column sums of A */
void colsum_slices_cuda(float *scratch, const float *A, int lda, int N, int M, cudaStream_t st) {
    dim3 grid((M + 31) / 32, RED_SLICES), block(32, 8);
    colsum_partial_kernel<<<grid, block, 0, st>>>(scratch, A, lda, NULL, 0, N, M);
}
