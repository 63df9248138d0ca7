/* autograd/cuda/kernels_loss.cu: the cross-entropy of the logits (per row and its mean) and its backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

/* loss_n = logsumexp(l) - l[y], one warp per row */
__global__ void ce_forward_kernel(float *losses, const float *logits, const int *tokens, int tstride,
                                  int B, int T, int Tp, int V) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= B * Tp) return;
    const int b = n / Tp, t = n % Tp;
    if (t >= T) { if (lane == 0) losses[n] = 0; return; }
    const float *l = logits + (size_t)n * V;
    float mx = -INFINITY;
    for (int i = lane; i < V; i += 32) mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    double s = 0;
    for (int i = lane; i < V; i += 32) s += exp((double)(l[i] - mx));
    s = warp_sum_d(s);
    if (lane == 0) {
        const int y = tokens[(size_t)b * tstride + t + 1];
        losses[n] = (float)(log(s) + mx - l[y]);
    }
}
__global__ void loss_mean_kernel(double *acc, const float *losses, int N, double count, double weight) {
    double s = 0;
    for (int i = threadIdx.x; i < N; i += 256) s += losses[i];
    s = block_sum_256(s);
    if (threadIdx.x == 0) acc[0] += s / count * weight;
}
void crossentropy_forward_cuda(float *losses, double *loss_acc, const float *logits,
                               const int *tokens, int tstride, int B, int T, int Tp, int V,
                               double weight, cudaStream_t st) {
    const int N = B * Tp;
    ce_forward_kernel<<<(N + 3) / 4, 128, 0, st>>>(losses, logits, tokens, tstride, B, T, Tp, V);
    if (loss_acc) loss_mean_kernel<<<1, 256, 0, st>>>(loss_acc, losses, N, (double)B * T, weight);
}

/* dl = (softmax(l) - onehot(y)) * dloss / (B*T) */
__global__ void ce_backward_kernel(float *dlogits, const float *logits, const int *tokens, int tstride,
                                   int B, int T, int Tp, int V, float scale, bf16_t *twin) {
    const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= B * Tp) return;
    const int b = n / Tp, t = n % Tp;
    float *dl = dlogits + (size_t)n * V;
    if (t >= T) {
        for (int i = lane; i < V; i += 32) { dl[i] = 0; put_twin(twin, (size_t)n * V + i, 0); }
        return;
    }
    const float *l = logits + (size_t)n * V;
    float mx = -INFINITY;
    for (int i = lane; i < V; i += 32) mx = fmaxf(mx, l[i]);
    mx = warp_max(mx);
    float s = 0;
    for (int i = lane; i < V; i += 32) s += expf(l[i] - mx);
    s = warp_sum(s);
    const int y = tokens[(size_t)b * tstride + t + 1];
    for (int i = lane; i < V; i += 32) {
        float g = expf(l[i] - mx) / s * scale;
        if (i == y) g -= scale;
        dl[i] = g;
        put_twin(twin, (size_t)n * V + i, g);
    }
}
void crossentropy_backward_cuda(float *dlogits, const float *logits, const int *tokens,
                                int tstride, int B, int T, int Tp, int V, float dloss,
                                bf16_t *twin, cudaStream_t st) {
    const int N = B * Tp;
    const float scale = dloss / ((float)B * T);
    ce_backward_kernel<<<(N + 3) / 4, 128, 0, st>>>(dlogits, logits, tokens, tstride, B, T, Tp, V,
                                                    scale, twin);
}
