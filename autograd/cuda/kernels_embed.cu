/* autograd/cuda/kernels_embed.cu: the embedding: token rows plus the scaled sinusoidal position, and its backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

__global__ void embed_forward_kernel(float *h, const int *tokens, int tstride, const float *tok_emb,
                                     const float *pos_scale, const float *pos_table, int B, int T,
                                     int Tp, int d) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= d) return;
    const float scale = pos_scale[0];
    FOR_ROWS(n, B * Tp) {
        const int t = n % Tp, b = n / Tp;
        const int tok = t < T ? tokens[(size_t)b * tstride + t] : 0;
        h[(size_t)n * d + i] = tok_emb[(size_t)tok * d + i] + scale * pos_table[(size_t)t * d + i];
    }
}
void embed_forward_cuda(float *h, const int *tokens, int tstride, const float *tok_emb,
                        const float *pos_scale, const float *pos_table, int B, int T, int Tp, int d,
                        cudaStream_t st) {
    embed_forward_kernel<<<grid_rows(B * Tp, d), 256, 0, st>>>(h, tokens, tstride, tok_emb, pos_scale,
                                                                pos_table, B, T, Tp, d);
}

/* d tok_emb[v] += sum of dh over v's rows, in the listed order */
__global__ void embed_tok_backward_kernel(float *d_tok_emb, const float *dh, const int *order,
                                          const int *start, int d) {
    const int v = blockIdx.x, j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= d) return;
    float s = 0;
    for (int p = start[v]; p < start[v + 1]; p++) s += dh[(size_t)order[p] * d + j];
    d_tok_emb[(size_t)v * d + j] += s;
}
/* row_out[n] = dh_n . pos_table[t] (one warp per row) */
__global__ void row_dot_pos_kernel(float *row_out, const float *dh, const float *pos_table, int N,
                                   int Tp, int d) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *g = dh + (size_t)n * d, *p = pos_table + (size_t)(n % Tp) * d;
    float s = 0;
    for (int i = lane; i < d; i += 32) s += g[i] * p[i];
    s = warp_sum(s);
    if (lane == 0) row_out[n] = s;
}
void embed_backward_cuda(float *d_tok_emb, float *d_pos_scale, const float *dh, const int *order,
                         const int *start, int V, const float *pos_table, int N, int Tp, int d,
                         float *row_scratch, cudaStream_t st) {
    dim3 grid(V, (d + 127) / 128);
    embed_tok_backward_kernel<<<grid, 128, 0, st>>>(d_tok_emb, dh, order, start, d);
    row_dot_pos_kernel<<<(N + 3) / 4, 128, 0, st>>>(row_scratch, dh, pos_table, N, Tp, d);
    sum_add_cuda(d_pos_scale, row_scratch, N, 1.0f, st);
}
