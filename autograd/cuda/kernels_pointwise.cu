/* autograd/cuda/kernels_pointwise.cu: the element-wise ops: bias + SiLU of the projections, bias add, the SiLU
 * backward, the gate (gated = gate * att) and its backward.
 * Each kernel says which CPU op it reproduces (autograd/cpu/); every reduction runs in a
 * fixed order (no atomics), so a run repeats bit for bit on the same GPU. */
#include "kernels.cuh"

/* eight bf16 as one 16-byte access (the widest a thread loads): the element kernels below
   take 8 columns a thread where the widths and pointers allow it, 2 or 1 otherwise */
__device__ __forceinline__ void load8(const bf16 *p, float *v) {
    const uint4 q = *reinterpret_cast<const uint4 *>(p);
    const unsigned w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&w[k]));
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}
__device__ __forceinline__ void store8(bf16 *p, const float *v) {
    unsigned w[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
        w[k] = *reinterpret_cast<const unsigned *>(&h);
    }
    *reinterpret_cast<uint4 *>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
static inline int aligned16(const void *a, const void *b, const void *c) {
    return (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 16) == 0;
}

__global__ void bias_silu_kernel(float *u, bf16_t *u16, float *y, const float *b, int N, int M, int ld,
                                 bf16_t *twin) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const float bj = b[j];
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        const float v = ld_act(u, u16, at) + bj;
        if (u16) reinterpret_cast<bf16 *>(u16)[at] = __float2bfloat16(v);
        else u[at] = v;
        const float s = silu_f(v);
        if (y) y[at] = s;
        put_twin(twin, at, s);
    }
}
/* bf16 only (u16 in, u16 and twin out), two columns per thread */
__global__ void bias_silu16x2_kernel(bf16_t *u16, const float *b, int N, int M2, int ld, bf16_t *twin) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= M2) return;
    const float b0 = b[2 * j2], b1 = b[2 * j2 + 1];
    __nv_bfloat162 *u2 = reinterpret_cast<__nv_bfloat162 *>(u16), *t2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = ((size_t)n * ld) / 2 + j2;
        const float2 uv = __bfloat1622float2(u2[at]);
        const float v0 = uv.x + b0, v1 = uv.y + b1;
        u2[at] = __floats2bfloat162_rn(v0, v1);
        t2[at] = __floats2bfloat162_rn(silu_f(v0), silu_f(v1));
    }
}
/* bf16 only: twin = silu(u + b) over v's columns [0, e) and z's [2e, 2e + s) in one launch, u
   left as the product wrote it (the backward adds b again: pre_bias); W columns per thread */
template <int W>
__global__ void bias_silu_vz_kernel(const bf16_t *u16, const float *b, int N, int e, int s, int ld, bf16_t *twin) {
    const int q = blockIdx.x * blockDim.x + threadIdx.x;   /* the q-th group of W columns of v | z */
    if (q * W >= e + s) return;
    const int j = q * W < e ? q * W : q * W + e;   /* skip the gate's columns */
    float bj[W];
#pragma unroll
    for (int w = 0; w < W; w++) bj[w] = b[j + w];
    const bf16 *u = reinterpret_cast<const bf16 *>(u16);
    bf16 *t = reinterpret_cast<bf16 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        if (W == 8) {
            float v[8];
            load8(u + at, v);
#pragma unroll
            for (int w = 0; w < 8; w++) v[w] = silu_f(v[w] + bj[w]);
            store8(t + at, v);
        } else if (W == 2) {
            const float2 uv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(u + at));
            *reinterpret_cast<__nv_bfloat162 *>(t + at) = __floats2bfloat162_rn(silu_f(uv.x + bj[0]), silu_f(uv.y + bj[W - 1]));
        } else {
            t[at] = __float2bfloat16(silu_f(__bfloat162float(u[at]) + bj[0]));
        }
    }
}
void bias_silu_vz_cuda(const bf16_t *u16, const float *b, int N, int e, int s, int ld, bf16_t *twin,
                       cudaStream_t st) {
    if (e % 8 == 0 && s % 8 == 0 && ld % 8 == 0 && aligned16(u16, twin, NULL))
        bias_silu_vz_kernel<8><<<grid_rows(N, (e + s) / 8), 256, 0, st>>>(u16, b, N, e, s, ld, twin);
    else if (e % 2 == 0 && s % 2 == 0 && ld % 2 == 0 && (uintptr_t)u16 % 4 == 0 && (uintptr_t)twin % 4 == 0)
        bias_silu_vz_kernel<2><<<grid_rows(N, (e + s) / 2), 256, 0, st>>>(u16, b, N, e, s, ld, twin);
    else
        bias_silu_vz_kernel<1><<<grid_rows(N, e + s), 256, 0, st>>>(u16, b, N, e, s, ld, twin);
}
void bias_silu_cuda(float *u, bf16_t *u16, float *y, const float *b, int N, int M, int ld,
                    bf16_t *twin, cudaStream_t st) {
    if (u16 && twin && !y && M % 2 == 0 && ld % 2 == 0 && ((uintptr_t)u16 % 4) == 0 && ((uintptr_t)twin % 4) == 0) {
        bias_silu16x2_kernel<<<grid_rows(N, M / 2), 256, 0, st>>>(u16, b, N, M / 2, ld, twin);
        return;
    }
    bias_silu_kernel<<<grid_rows(N, M), 256, 0, st>>>(u, u16, y, b, N, M, ld, twin);
}

__global__ void bias_add_kernel(float *y, const float *b, const float *res, int N, int M) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    const float bj = b[j];
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * M + j;
        y[at] = bj + (res ? res[at] : 0.0f);
    }
}
void bias_add_cuda(float *y, const float *b, const float *res, int N, int M, cudaStream_t st) {
    bias_add_kernel<<<grid_rows(N, M), 256, 0, st>>>(y, b, res, N, M);
}

__global__ void silu_backward_kernel(float *d, const float *u, const bf16_t *u16, int N, int M, int ld,
                                     bf16_t *twin, const float *pre_bias) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= M) return;
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + j;
        const float g = ld_act(d, twin, at) * silu_grad_f(ld_act(u, u16, at) + (pre_bias ? pre_bias[j] : 0.0f));
        if (d) d[at] = g;
        put_twin(twin, at, g);
    }
}
/* bf16 only, in place on the twin, two columns per thread */
__global__ void silu_backward16x2_kernel(const bf16_t *u16, int N, int M2, int ld, bf16_t *twin,
                                         const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= M2) return;
    const float b0 = pre_bias ? pre_bias[2 * j2] : 0.0f, b1 = pre_bias ? pre_bias[2 * j2 + 1] : 0.0f;
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    __nv_bfloat162 *d2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = ((size_t)n * ld) / 2 + j2;
        float2 u = __bfloat1622float2(u2[at]);
        const float2 dv = __bfloat1622float2(d2[at]);
        u.x += b0;
        u.y += b1;
        const float s0 = sigmoid_fast(u.x), s1 = sigmoid_fast(u.y);
        d2[at] = __floats2bfloat162_rn(dv.x * s0 * silu_grad_factor(u.x, s0), dv.y * s1 * silu_grad_factor(u.y, s1));
    }
}
/* the same, eight columns per thread (M, ld multiples of 8; 16-byte aligned) */
__global__ void silu_backward16x8_kernel(const bf16_t *u16, int N, int M8, int ld, bf16_t *twin,
                                         const float *pre_bias) {
    const int j8 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j8 >= M8) return;
    float b[8];
#pragma unroll
    for (int w = 0; w < 8; w++) b[w] = pre_bias ? pre_bias[8 * j8 + w] : 0.0f;
    const bf16 *u = reinterpret_cast<const bf16 *>(u16);
    bf16 *dd = reinterpret_cast<bf16 *>(twin);
    FOR_ROWS(n, N) {
        const size_t at = (size_t)n * ld + 8 * (size_t)j8;
        float uv[8], dv[8];
        load8(u + at, uv);
        load8(dd + at, dv);
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const float p = uv[w] + b[w], sg = sigmoid_fast(p);
            dv[w] = dv[w] * sg * silu_grad_factor(p, sg);
        }
        store8(dd + at, dv);
    }
}
void silu_backward_cuda(float *d, const float *u, const bf16_t *u16, int N, int M, int ld,
                        bf16_t *twin, const float *pre_bias, cudaStream_t st) {
    if (!d && u16 && twin && M % 8 == 0 && ld % 8 == 0 && aligned16(u16, twin, NULL)) {
        silu_backward16x8_kernel<<<grid_rows(N, M / 8), 256, 0, st>>>(u16, N, M / 8, ld, twin, pre_bias);
        return;
    }
    if (!d && u16 && twin && M % 2 == 0 && ld % 2 == 0 && (uintptr_t)u16 % 4 == 0 && (uintptr_t)twin % 4 == 0) {
        silu_backward16x2_kernel<<<grid_rows(N, M / 2), 256, 0, st>>>(u16, N, M / 2, ld, twin, pre_bias);
        return;
    }
    silu_backward_kernel<<<grid_rows(N, M), 256, 0, st>>>(d, u, u16, N, M, ld, twin, pre_bias);
}

__global__ void gate_forward_kernel(float *out, const float *gate, const bf16_t *gate16, int gate_stride,
                                    const float *att, const bf16_t *att16, int N, int e, bf16_t *twin,
                                    const float *pre_bias) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e + i;
        const float o = ld_silu(gate, gate16, pre_bias, (size_t)n * gate_stride + i, i) * ld_act(att, att16, k);
        if (out) out[k] = o;
        put_twin(twin, k, o);
    }
}
/* bf16 with pre_bias, two columns per thread: twin = silu(u + b) att */
__global__ void gate_forward16x2_kernel(const bf16_t *u16, int gate_stride, const bf16_t *att16, int N, int e2,
                                        bf16_t *twin, const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= e2) return;
    const float b0 = pre_bias[2 * j2], b1 = pre_bias[2 * j2 + 1];
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(att16);
    __nv_bfloat162 *o2 = reinterpret_cast<__nv_bfloat162 *>(twin);
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e2 + j2;
        const float2 u = __bfloat1622float2(u2[((size_t)n * gate_stride) / 2 + j2]), a = __bfloat1622float2(a2[k]);
        const float p0 = u.x + b0, p1 = u.y + b1;
        o2[k] = __floats2bfloat162_rn(p0 * sigmoid_fast(p0) * a.x, p1 * sigmoid_fast(p1) * a.y);
    }
}
/* the same, eight columns per thread (e, gate_stride multiples of 8; 16-byte aligned) */
__global__ void gate_forward16x8_kernel(const bf16_t *u16, int gate_stride, const bf16_t *att16, int N, int e8,
                                        bf16_t *twin, const float *pre_bias) {
    const int j8 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j8 >= e8) return;
    float b[8];
#pragma unroll
    for (int w = 0; w < 8; w++) b[w] = pre_bias[8 * j8 + w];
    const bf16 *u = reinterpret_cast<const bf16 *>(u16), *a = reinterpret_cast<const bf16 *>(att16);
    bf16 *o = reinterpret_cast<bf16 *>(twin);
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * 8 * e8 + 8 * (size_t)j8;
        float uv[8], av[8];
        load8(u + (size_t)n * gate_stride + 8 * (size_t)j8, uv);
        load8(a + k, av);
#pragma unroll
        for (int w = 0; w < 8; w++) {
            const float p = uv[w] + b[w];
            uv[w] = p * sigmoid_fast(p) * av[w];
        }
        store8(o + k, uv);
    }
}
void gate_forward_cuda(float *out, const float *gate, const bf16_t *gate16, int gate_stride,
                       const float *att, const bf16_t *att16, int N, int e, bf16_t *twin, const float *pre_bias,
                       cudaStream_t st) {
    if (pre_bias && !out && att16 && twin && e % 8 == 0 && gate_stride % 8 == 0 && aligned16(gate16, att16, twin)) {
        gate_forward16x8_kernel<<<grid_rows(N, e / 8), 256, 0, st>>>(gate16, gate_stride, att16, N, e / 8, twin,
                                                                     pre_bias);
        return;
    }
    if (pre_bias && !out && att16 && twin && e % 2 == 0 && gate_stride % 2 == 0 && (uintptr_t)gate16 % 4 == 0 &&
        (uintptr_t)att16 % 4 == 0 && (uintptr_t)twin % 4 == 0) {
        gate_forward16x2_kernel<<<grid_rows(N, e / 2), 256, 0, st>>>(gate16, gate_stride, att16, N, e / 2, twin,
                                                                     pre_bias);
        return;
    }
    gate_forward_kernel<<<grid_rows(N, e), 256, 0, st>>>(out, gate, gate16, gate_stride, att, att16, N, e, twin,
                                                         pre_bias);
}

/* out = gate * att: d gate = d_out att (times silu'(u) when u is given); d att = d_out gate */
__global__ void gate_backward_kernel(float *d_gate, int gate_stride, float *d_att, const float *d_out,
                                     const bf16_t *d_out16, const float *gate, const bf16_t *gate16,
                                     const float *att, const bf16_t *att16,
                                     const float *u, const bf16_t *u16, int N, int e, bf16_t *gate_twin,
                                     bf16_t *att_twin, const float *pre_bias) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= e) return;
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e + i, kg = (size_t)n * gate_stride + i;
        const float dout = ld_act(d_out, d_out16, k);
        float g, dg = dout * ld_act(att, att16, k);
        if (pre_bias) {
            const float pre = raw_pre(u16, pre_bias, kg, i);
            g = silu_f(pre);
            dg *= silu_grad_f(pre);
        } else {
            g = ld_act(gate, gate16, kg);
            if (u || u16) dg *= silu_grad_f(ld_act(u, u16, kg));
        }
        if (d_gate) d_gate[kg] = dg;
        put_twin(gate_twin, kg, dg);
        const float da = dout * g;
        if (d_att) d_att[k] = da;
        put_twin(att_twin, k, da);
    }
}
/* bf16 with pre_bias, two columns per thread: d_gate (twin, gate_stride) = d_out att silu'(p),
   d_att (twin) = d_out silu(p), p = u + b */
__global__ void gate_backward16x2_kernel(bf16_t *d_gate, int gate_stride, bf16_t *d_att, const bf16_t *d_out16,
                                         const bf16_t *att16, const bf16_t *u16, int N, int e2,
                                         const float *pre_bias) {
    const int j2 = blockIdx.x * blockDim.x + threadIdx.x;
    if (j2 >= e2) return;
    const float b0 = pre_bias[2 * j2], b1 = pre_bias[2 * j2 + 1];
    const __nv_bfloat162 *u2 = reinterpret_cast<const __nv_bfloat162 *>(u16);
    const __nv_bfloat162 *a2 = reinterpret_cast<const __nv_bfloat162 *>(att16);
    const __nv_bfloat162 *o2 = reinterpret_cast<const __nv_bfloat162 *>(d_out16);
    __nv_bfloat162 *dg2 = reinterpret_cast<__nv_bfloat162 *>(d_gate), *da2 = reinterpret_cast<__nv_bfloat162 *>(d_att);
    FOR_ROWS(n, N) {
        const size_t k = (size_t)n * e2 + j2, kg = ((size_t)n * gate_stride) / 2 + j2;
        const float2 u = __bfloat1622float2(u2[kg]), a = __bfloat1622float2(a2[k]), o = __bfloat1622float2(o2[k]);
        const float p0 = u.x + b0, p1 = u.y + b1;
        const float s0 = sigmoid_fast(p0), s1 = sigmoid_fast(p1);
        dg2[kg] = __floats2bfloat162_rn(o.x * a.x * s0 * silu_grad_factor(p0, s0),
                                        o.y * a.y * s1 * silu_grad_factor(p1, s1));
        da2[k] = __floats2bfloat162_rn(o.x * p0 * s0, o.y * p1 * s1);
    }
}
void gate_backward_cuda(float *d_gate, int gate_stride, float *d_att, const float *d_out, const bf16_t *d_out16,
                        const float *gate, const bf16_t *gate16, const float *att, const bf16_t *att16,
                        const float *u_gate,
                        const bf16_t *u_gate16, int N, int e, bf16_t *d_gate_twin, bf16_t *d_att_twin,
                        const float *pre_bias, cudaStream_t st) {
    if (pre_bias && !d_gate && !d_att && d_out16 && att16 && u_gate16 && d_gate_twin && d_att_twin && e % 2 == 0 &&
        gate_stride % 2 == 0 && (uintptr_t)u_gate16 % 4 == 0 && (uintptr_t)d_gate_twin % 4 == 0 &&
        (uintptr_t)d_att_twin % 4 == 0 && (uintptr_t)d_out16 % 4 == 0 && (uintptr_t)att16 % 4 == 0) {
        gate_backward16x2_kernel<<<grid_rows(N, e / 2), 256, 0, st>>>(d_gate_twin, gate_stride, d_att_twin, d_out16,
                                                                      att16, u_gate16, N, e / 2, pre_bias);
        return;
    }
    gate_backward_kernel<<<grid_rows(N, e), 256, 0, st>>>(d_gate, gate_stride, d_att, d_out, d_out16, gate,
                                                          gate16, att, att16, u_gate, u_gate16, N, e, d_gate_twin,
                                                          d_att_twin, pre_bias);
}
