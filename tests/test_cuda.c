/* tests/test_cuda.c: the CUDA backend held to the CPU.
 *
 * 1. Each kernel against its CPU op (autograd/) on random inputs of odd shapes, with the
 *    output buffers poisoned with NaN before the call.
 * 2. The whole CUDA model against the CPU model through model/model.h, on configurations
 *    that cover every option of the spec (both norms, shift on and off, laplace and relu^2,
 *    partial rotary, a padded last group, odd widths): logits, loss, every gradient after
 *    an accumulated step, the parameters and moments after AdamW with global, local and no
 *    clipping.
 * 3. The recurrent decoder against the full forward on the GPU; determinism (two runs
 *    bit-identical); bf16 logits within 2e-2 of fp32; a short bf16 training run's losses
 *    within 0.02 nats of fp32's.
 * Without a GPU (or without CUDA in the build) every test is reported as skipped. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "sample.h"
#include "test.h"
#ifdef FLASH_CUDA
#include <cuda_runtime.h>
#include "cuda_ops.h"
#include "ops.h"
#endif

static int test_skipped_;

/* ---- helpers ---------------------------------------------------------------------------- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double urand(void) {   /* splitmix64 -> [0, 1) */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}
static double rel_err(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - ref[i];
        if (!isfinite(x[i])) return INFINITY;
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double max_abs_diff(const float *x, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)x[i] - ref[i]);
        if (!(d <= m)) m = d;   /* NaN counts as the worst */
    }
    return m;
}

#ifdef FLASH_CUDA
static void fill(float *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
}

/* ---- device buffers ---------------------------------------------------------------------- */
static float *dev_from(const float *h, size_t n) {
    float *d = NULL;
    cudaMalloc((void **)&d, n * sizeof(float) + 4);
    if (h) cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    return d;
}
static float *dev_nan(size_t n) {   /* poisoned output buffer */
    float *h = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = dev_from(h, n);
    free(h);
    return d;
}
static int *dev_ints(const int *h, size_t n) {
    int *d = NULL;
    cudaMalloc((void **)&d, n * sizeof(int) + 4);
    cudaMemcpy(d, h, n * sizeof(int), cudaMemcpyHostToDevice);
    return d;
}
static void to_host(float *h, const float *d, size_t n) {
    cudaDeviceSynchronize();
    cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost);
}
static float *host_copy(const float *d, size_t n) {
    float *h = malloc(n * sizeof(float) + 4);
    to_host(h, d, n);
    return h;
}

#define KTOL 2e-6   /* relative L2: float32 rounding of differently ordered sums */

/* ---- the bf16-only element kernels --------------------------------------------------- */
static uint16_t bf16_bits(float x) {   /* round to nearest even, as __float2bfloat16 */
    uint32_t b;
    memcpy(&b, &x, 4);
    b += 0x7fffu + ((b >> 16) & 1u);
    return (uint16_t)(b >> 16);
}
static float bf16_value(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float x;
    memcpy(&x, &b, 4);
    return x;
}
/* n floats rounded to bf16 in place; their bits uploaded; out NaN-poisoned (0x7fc0) */
static bf16_t *dev_bf16(float *x, size_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) {
        h[i] = x ? bf16_bits(x[i]) : 0x7fc0;
        if (x) x[i] = bf16_value(h[i]);
    }
    bf16_t *d = NULL;
    cudaMalloc((void **)&d, sizeof(uint16_t) * n + 4);
    cudaMemcpy(d, h, sizeof(uint16_t) * n, cudaMemcpyHostToDevice);
    free(h);
    return d;
}
static float *host_bf16(const bf16_t *d, size_t n) {
    uint16_t *h = malloc(sizeof(uint16_t) * n);
    float *x = malloc(sizeof(float) * n);
    cudaDeviceSynchronize();
    cudaMemcpy(h, d, sizeof(uint16_t) * n, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < n; i++) x[i] = bf16_value(h[i]);
    free(h);
    return x;
}

/* ---- 1. kernels against the CPU ops ------------------------------------------------------- */

static void test_colsum(void) {
    const int N = 1237, M = 70, ld = 75;
    float *A = malloc(sizeof(float) * N * ld), *Bm = malloc(sizeof(float) * N * ld);
    fill(A, (size_t)N * ld, -1, 1); fill(Bm, (size_t)N * ld, -1, 1);
    float ref[70], ref2[70], got[70];
    for (int j = 0; j < M; j++) {
        double s = 0.5, s2 = -0.25;
        for (int n = 0; n < N; n++) { s += A[n * ld + j]; s2 += (double)A[n * ld + j] * Bm[n * ld + j]; }
        ref[j] = (float)s; ref2[j] = (float)s2;
    }
    float *dA = dev_from(A, (size_t)N * ld), *dB = dev_from(Bm, (size_t)N * ld), *scr = dev_nan(64 * M);
    float init[70], init2[70];
    for (int j = 0; j < M; j++) { init[j] = 0.5f; init2[j] = -0.25f; }
    float *dst = dev_from(init, M), *dst2 = dev_from(init2, M);
    colsum_add_cuda(dst, dA, ld, NULL, 0, N, M, scr, 0);
    colsum_add_cuda(dst2, dA, ld, dB, ld, N, M, scr, 0);
    to_host(got, dst, M);
    CHECK(rel_err(got, ref, M) < 1e-6, "colsum rel %g", rel_err(got, ref, M));
    to_host(got, dst2, M);
    CHECK(rel_err(got, ref2, M) < 1e-6, "colsum of products rel %g", rel_err(got, ref2, M));
    /* over a bf16 matrix: an even width and stride (two columns per thread), then odd */
    for (int par = 0; par < 2; par++) {
        const int M16 = par ? 69 : 70, ld16 = par ? 75 : 74;
        float *A16 = malloc(sizeof(float) * N * ld16);
        fill(A16, (size_t)N * ld16, -1, 1);
        bf16_t *dA16 = dev_bf16(A16, (size_t)N * ld16);   /* A16 rounded */
        for (int j = 0; j < M16; j++) {
            double s = 0.5;
            for (int n = 0; n < N; n++) s += A16[n * ld16 + j];
            ref[j] = (float)s;
        }
        float *dst3 = dev_from(init, M16);
        colsum16_add_cuda(dst3, dA16, ld16, N, M16, scr, 0);
        to_host(got, dst3, M16);
        CHECK(rel_err(got, ref, M16) < 1e-6, "colsum of bf16 (width %d) rel %g", M16, rel_err(got, ref, M16));
        free(A16); cudaFree(dA16); cudaFree(dst3);
    }
    cudaFree(dA); cudaFree(dB); cudaFree(scr); cudaFree(dst); cudaFree(dst2);
    free(A); free(Bm);
}

static void test_embed(void) {
    const int B = 3, T = 37, d = 22, V = 29;
    int tok[3 * 38];
    for (int i = 0; i < B * (T + 1); i++) tok[i] = (int)(urand() * V);
    float *emb = malloc(sizeof(float) * V * d), *pos = malloc(sizeof(float) * T * d), scale = 0.7f;
    fill(emb, (size_t)V * d, -1, 1);
    float inv[11];
    for (int i = 0; i < d / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / d);
    pos_table_fill(pos, inv, T, d);
    float *h_ref = malloc(sizeof(float) * B * T * d);
    embed_forward(h_ref, tok, T + 1, emb, &scale, pos, B, T, d);
    float *d_h = dev_nan((size_t)B * T * d), *d_emb = dev_from(emb, (size_t)V * d), *d_pos = dev_from(pos, (size_t)T * d);
    float *d_scale = dev_from(&scale, 1);
    int *d_tok = dev_ints(tok, (size_t)B * (T + 1));
    embed_forward_cuda(d_h, d_tok, T + 1, d_emb, d_scale, d_pos, B, T, T, d, 0);
    float *h = host_copy(d_h, (size_t)B * T * d);
    CHECK(rel_err(h, h_ref, (size_t)B * T * d) < KTOL, "embed forward rel %g", rel_err(h, h_ref, (size_t)B * T * d));
    /* backward: rows listed per token, as the backend makes them */
    float *dh = malloc(sizeof(float) * B * T * d);
    fill(dh, (size_t)B * T * d, -1, 1);
    float *demb_ref = calloc((size_t)V * d, sizeof(float)), dscale_ref = 0;
    embed_backward(demb_ref, &dscale_ref, dh, tok, T + 1, pos, B, T, d);
    int *order = malloc(sizeof(int) * B * T), start[30] = {0};
    for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) start[tok[b * (T + 1) + t] + 1]++;
    for (int v = 0; v < V; v++) start[v + 1] += start[v];
    int fillp[29];
    memcpy(fillp, start, sizeof fillp);
    for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) order[fillp[tok[b * (T + 1) + t]]++] = b * T + t;
    float *zeros = calloc((size_t)V * d, sizeof(float)), zero = 0;
    float *d_demb = dev_from(zeros, (size_t)V * d), *d_dscale = dev_from(&zero, 1), *d_dh = dev_from(dh, (size_t)B * T * d);
    float *row = dev_nan((size_t)B * T);
    int *d_order = dev_ints(order, (size_t)B * T), *d_start = dev_ints(start, V + 1);
    embed_backward_cuda(d_demb, d_dscale, d_dh, d_order, d_start, V, d_pos, B * T, T, d, row, 0);
    float *demb = host_copy(d_demb, (size_t)V * d), dscale;
    to_host(&dscale, d_dscale, 1);
    CHECK(rel_err(demb, demb_ref, (size_t)V * d) < KTOL, "d tok_emb rel %g", rel_err(demb, demb_ref, (size_t)V * d));
    CHECK(fabs(dscale - dscale_ref) < 1e-5 * (1 + fabs(dscale_ref)), "d scale %g vs %g", dscale, dscale_ref);
    free(emb); free(pos); free(h_ref); free(h); free(dh); free(demb_ref); free(order); free(zeros); free(demb);
    cudaFree(d_h); cudaFree(d_emb); cudaFree(d_pos); cudaFree(d_scale); cudaFree(d_tok); cudaFree(d_demb);
    cudaFree(d_dscale); cudaFree(d_dh); cudaFree(row); cudaFree(d_order); cudaFree(d_start);
}

/* one norm (scalenorm or layernorm), shift on or off, forward and backward, at width d (45:
   the general kernels; a multiple of 128: scalenorm's register kernels, whose bf16 twins are
   checked too, the forward's written without the fp32 output as bf16 precision runs it) */
#define NORM_DMAX 256
static void norm_case(int layernorm, int shift, int d) {
    const int B = 2, T = 19, N = B * T;
    float *x = malloc(sizeof(float) * N * d), *dy = malloc(sizeof(float) * N * d);
    fill(x, (size_t)N * d, -2, 2); fill(dy, (size_t)N * d, -1, 1);
    for (int i = 0; i < d; i++) x[5 * d + i] = 1e-7f * (i % 3);   /* a clamped scalenorm row */
    float g = 1.3f, w[NORM_DMAX], b[NORM_DMAX];
    fill(w, d, 0.5, 1.5); fill(b, d, -0.5, 0.5);
    float *y_ref = malloc(sizeof(float) * N * d), *st_ref = malloc(sizeof(float) * N * 2);
    if (layernorm) layernorm_forward(y_ref, st_ref, x, w, b, N, d);
    else scalenorm_forward(y_ref, st_ref, x, &g, N, d);
    if (shift) token_shift_forward(y_ref, B, T, d);
    float *dx_ref = malloc(sizeof(float) * N * d), dg_ref = 0, dw_ref[NORM_DMAX] = {0}, db_ref[NORM_DMAX] = {0};
    fill(dx_ref, (size_t)N * d, -1, 1);
    float *dx0 = malloc(sizeof(float) * N * d);
    memcpy(dx0, dx_ref, sizeof(float) * N * d);
    float *dys = malloc(sizeof(float) * N * d);
    memcpy(dys, dy, sizeof(float) * N * d);
    if (shift) token_shift_backward(dys, B, T, d);
    if (layernorm) layernorm_backward(dx_ref, dw_ref, db_ref, dys, x, st_ref, w, N, d);
    else scalenorm_backward(dx_ref, &dg_ref, dys, x, st_ref, &g, N, d);

    float *d_x = dev_from(x, (size_t)N * d), *d_y = dev_nan((size_t)N * d), *d_st = dev_nan((size_t)N * 2);
    float *d_g = dev_from(&g, 1), *d_w = dev_from(w, d), *d_b = dev_from(b, d);
    /* with the residual's start written beside: res = x + b, as bias_add_cuda would */
    float *d_res = dev_nan((size_t)N * d), *res_ref = malloc(sizeof(float) * N * d);
    for (int n = 0; n < N; n++) for (int i = 0; i < d; i++) res_ref[n * d + i] = b[i] + x[n * d + i];
    if (layernorm) layernorm_forward_cuda(d_y, d_st, d_x, d_w, d_b, N, d, shift ? T : 0, NULL, d_res, d_b, 0);
    else scalenorm_forward_cuda(d_y, d_st, d_x, d_g, N, d, shift ? T : 0, NULL, d_res, d_b, 0);
    float *y = host_copy(d_y, (size_t)N * d), *res = host_copy(d_res, (size_t)N * d);
    CHECK(rel_err(y, y_ref, (size_t)N * d) < KTOL, "%s%s forward rel %g", layernorm ? "layernorm" : "scalenorm",
          shift ? "+shift" : "", rel_err(y, y_ref, (size_t)N * d));
    CHECK(memcmp(res, res_ref, sizeof(float) * N * d) == 0, "the residual's start x + b differs");
    if (!layernorm && d % 128 == 0) {
        /* bf16's call: the twin alone, no fp32 output */
        bf16_t *d_tw = dev_bf16(NULL, (size_t)N * d);
        scalenorm_forward_cuda(NULL, d_st, d_x, d_g, N, d, shift ? T : 0, d_tw, d_res, d_b, 0);
        float *tw = host_bf16(d_tw, (size_t)N * d);
        CHECK(rel_err(tw, y_ref, (size_t)N * d) < 8e-3, "scalenorm twin-only forward rel %g", rel_err(tw, y_ref, (size_t)N * d));
        free(tw); cudaFree(d_tw);
    }
    free(res); free(res_ref); cudaFree(d_res);
    float *d_dx = dev_from(dx0, (size_t)N * d), *d_dy = dev_from(dy, (size_t)N * d);
    float zero = 0, zeros[NORM_DMAX] = {0};
    float *d_dg = dev_from(&zero, 1), *d_dw = dev_from(zeros, d), *d_db = dev_from(zeros, d);
    float *row = dev_nan(N), *xh = dev_nan((size_t)2 * N * d), *col = dev_nan(64 * d);
    if (layernorm) layernorm_backward_cuda(d_dx, d_dw, d_db, d_dy, d_x, d_st, d_w, N, d, shift ? T : 0, xh, col, NULL, 0);
    else scalenorm_backward_cuda(d_dx, d_dg, d_dy, d_x, d_st, d_g, N, d, shift ? T : 0, row, NULL, 0);
    float *dx = host_copy(d_dx, (size_t)N * d);
    CHECK(rel_err(dx, dx_ref, (size_t)N * d) < KTOL, "backward dx rel %g", rel_err(dx, dx_ref, (size_t)N * d));
    if (!layernorm && d % 128 == 0) {
        /* the twin of dx beside it */
        bf16_t *d_tw = dev_bf16(NULL, (size_t)N * d);
        cudaMemcpy(d_dx, dx0, sizeof(float) * N * d, cudaMemcpyHostToDevice);
        cudaMemcpy(d_dg, &zero, sizeof(float), cudaMemcpyHostToDevice);
        scalenorm_backward_cuda(d_dx, d_dg, d_dy, d_x, d_st, d_g, N, d, shift ? T : 0, row, d_tw, 0);
        float *tw = host_bf16(d_tw, (size_t)N * d);
        CHECK(rel_err(tw, dx_ref, (size_t)N * d) < 8e-3, "scalenorm backward twin rel %g", rel_err(tw, dx_ref, (size_t)N * d));
        free(tw); cudaFree(d_tw);
    }
    if (layernorm) {
        float dw[NORM_DMAX], db[NORM_DMAX];
        to_host(dw, d_dw, d); to_host(db, d_db, d);
        CHECK(rel_err(dw, dw_ref, d) < KTOL && rel_err(db, db_ref, d) < KTOL, "dw %g db %g",
              rel_err(dw, dw_ref, d), rel_err(db, db_ref, d));
    } else {
        float dg;
        to_host(&dg, d_dg, 1);
        CHECK(fabs(dg - dg_ref) < 1e-5 * (1 + fabs(dg_ref)), "dg %g vs %g", dg, dg_ref);
    }
    free(x); free(dy); free(y_ref); free(st_ref); free(dx_ref); free(dx0); free(dys); free(y); free(dx);
    cudaFree(d_x); cudaFree(d_y); cudaFree(d_st); cudaFree(d_g); cudaFree(d_w); cudaFree(d_b);
    cudaFree(d_dx); cudaFree(d_dy); cudaFree(d_dg); cudaFree(d_dw); cudaFree(d_db); cudaFree(row);
    cudaFree(xh); cudaFree(col);
}
static void test_scalenorm(void) { norm_case(0, 0, 45); norm_case(0, 1, 45); norm_case(0, 0, 256); norm_case(0, 1, 256); }
static void test_layernorm(void) { norm_case(1, 0, 45); norm_case(1, 1, 45); }

static void test_silu_gate(void) {
    const int N = 33, M = 71, e = 29, stride = 71;
    float *u = malloc(sizeof(float) * N * M), b[71], *dy = malloc(sizeof(float) * N * M);
    fill(u, (size_t)N * M, -6, 6); fill(b, M, -1, 1); fill(dy, (size_t)N * M, -1, 1);
    float *uref = malloc(sizeof(float) * N * M), *yref = malloc(sizeof(float) * N * M);
    for (int n = 0; n < N; n++) for (int j = 0; j < M; j++) uref[n * M + j] = u[n * M + j] + b[j];
    silu_forward(yref, uref, (size_t)N * M);
    float *d_u = dev_from(u, (size_t)N * M), *d_y = dev_nan((size_t)N * M), *d_b = dev_from(b, M);
    bias_silu_cuda(d_u, NULL, d_y, d_b, N, M, M, NULL, 0);
    float *y = host_copy(d_y, (size_t)N * M), *ug = host_copy(d_u, (size_t)N * M);
    CHECK(rel_err(y, yref, (size_t)N * M) < KTOL && rel_err(ug, uref, (size_t)N * M) < KTOL, "bias+silu rel %g",
          rel_err(y, yref, (size_t)N * M));
    /* the bf16 path: u and the output in bf16 (even widths: two columns per thread) */
    {
        const int M2 = 70;   /* even */
        float *u2 = malloc(sizeof(float) * N * M2), *ref2 = malloc(sizeof(float) * N * M2);
        fill(u2, (size_t)N * M2, -6, 6);
        for (int n = 0; n < N; n++) for (int j = 0; j < M2; j++) ref2[n * M2 + j] = u2[n * M2 + j] + b[j];
        silu_forward(ref2, ref2, (size_t)N * M2);
        float *d_u2 = dev_from(u2, (size_t)N * M2);
        bf16_t *d_u16 = NULL, *d_t16 = NULL;
        cudaMalloc((void **)&d_u16, sizeof(bf16_t) * N * M2);
        cudaMalloc((void **)&d_t16, sizeof(bf16_t) * N * M2);
        to_bf16_cuda(d_u16, d_u2, (size_t)N * M2, 0);
        bias_silu_cuda(NULL, d_u16, NULL, d_b, N, M2, M2, d_t16, 0);
        uint16_t *h16 = malloc(sizeof(uint16_t) * N * M2);
        cudaDeviceSynchronize();
        cudaMemcpy(h16, d_t16, sizeof(uint16_t) * N * M2, cudaMemcpyDeviceToHost);
        float *got2 = malloc(sizeof(float) * N * M2);
        for (int q = 0; q < N * M2; q++) { uint32_t bits = (uint32_t)h16[q] << 16; memcpy(&got2[q], &bits, 4); }
        CHECK(rel_err(got2, ref2, (size_t)N * M2) < 1e-2, "bf16 bias+silu rel %g", rel_err(got2, ref2, (size_t)N * M2));
        free(u2); free(ref2); free(h16); free(got2);
        cudaFree(d_u2); cudaFree(d_u16); cudaFree(d_t16);
    }
    /* bf16, v's and z's columns of [v | gate | z] in one launch, u left as it was: e and s
       even (two columns per thread), odd (one), multiples of 8 (eight) */
    for (int par = 0; par < 3; par++) {
        const int ev = par == 2 ? 16 : par ? 9 : 10, sz = par == 2 ? 8 : par ? 5 : 6;
        const int ld = 2 * ev + sz + (par == 2 ? 8 : par ? 1 : 2);
        float *uu = malloc(sizeof(float) * N * ld), *ref3 = malloc(sizeof(float) * N * ld);
        fill(uu, (size_t)N * ld, -6, 6);
        bf16_t *d_uu = dev_bf16(uu, (size_t)N * ld), *d_tw = dev_bf16(NULL, (size_t)N * ld);
        for (int n = 0; n < N; n++) for (int j = 0; j < ld; j++) ref3[n * ld + j] = uu[n * ld + j] + b[j];
        silu_forward(ref3, ref3, (size_t)N * ld);
        bias_silu_vz_cuda(d_uu, d_b, N, ev, sz, ld, d_tw, 0);
        float *tw = host_bf16(d_tw, (size_t)N * ld), *u_after = host_bf16(d_uu, (size_t)N * ld);
        double worst = 0;
        int wrong_cols = 0;
        for (int n = 0; n < N; n++) for (int j = 0; j < ld; j++) {
            const int live = j < ev || (j >= 2 * ev && j < 2 * ev + sz);
            if (live) { double dd = fabs(tw[n * ld + j] - ref3[n * ld + j]) / (1 + fabs(ref3[n * ld + j])); if (dd > worst) worst = dd; }
            else wrong_cols += !isnan(tw[n * ld + j]);
        }
        CHECK(worst < 1e-2, "bf16 bias+silu of v and z (e %d s %d): worst %g", ev, sz, worst);
        CHECK(wrong_cols == 0, "bf16 bias+silu of v and z: %d entries of the gate's or later columns written", wrong_cols);
        CHECK(memcmp(u_after, uu, sizeof(float) * N * ld) == 0, "bf16 bias+silu of v and z changed u");
        free(uu); free(ref3); free(tw); free(u_after); cudaFree(d_uu); cudaFree(d_tw);
    }
    float *duref = malloc(sizeof(float) * N * M);
    silu_backward(duref, dy, uref, (size_t)N * M);
    float *d_du = dev_from(dy, (size_t)N * M);   /* in place */
    silu_backward_cuda(d_du, d_u, NULL, N, M, M, NULL, NULL, 0);
    float *du = host_copy(d_du, (size_t)N * M);
    CHECK(rel_err(du, duref, (size_t)N * M) < KTOL, "silu backward rel %g", rel_err(du, duref, (size_t)N * M));
    /* gate: gate rows inside a wider buffer */
    float *att = malloc(sizeof(float) * N * e), *outref = malloc(sizeof(float) * N * e);
    fill(att, (size_t)N * e, -1, 1);
    gate_forward(outref, u + 3, stride, att, N, e);
    float *d_att = dev_from(att, (size_t)N * e), *d_out = dev_nan((size_t)N * e);
    gate_forward_cuda(d_out, d_u + 3, NULL, stride, d_att, NULL, N, e, NULL, NULL, 0);
    /* the device u holds u + b: compare against the same */
    gate_forward(outref, ug + 3, stride, att, N, e);
    float *out = host_copy(d_out, (size_t)N * e);
    CHECK(rel_err(out, outref, (size_t)N * e) < KTOL, "gate forward rel %g", rel_err(out, outref, (size_t)N * e));
    float *dout = malloc(sizeof(float) * N * e), *dgate_ref = malloc(sizeof(float) * N * stride),
          *datt_ref = malloc(sizeof(float) * N * e);
    fill(dout, (size_t)N * e, -1, 1);
    for (size_t i = 0; i < (size_t)N * stride; i++) dgate_ref[i] = 7;
    gate_backward(dgate_ref + 3, stride, datt_ref, dout, ug + 3, att, N, e);
    float *d_dout = dev_from(dout, (size_t)N * e), *d_dgate = dev_nan((size_t)N * stride), *d_datt = dev_nan((size_t)N * e);
    gate_backward_cuda(d_dgate + 3, stride, d_datt, d_dout, NULL, d_u + 3, NULL, d_att, NULL, NULL, NULL, N, e, NULL, NULL, NULL, 0);
    float *dgate = host_copy(d_dgate, (size_t)N * stride), *datt = host_copy(d_datt, (size_t)N * e);
    double worst = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) {
            double dd = fabs(dgate[n * stride + 3 + i] - dgate_ref[n * stride + 3 + i]);
            if (!(dd <= worst)) worst = dd;
        }
    CHECK(worst < 1e-6, "d gate max diff %g", worst);
    /* with the gate's silu backward folded in: d gate * silu'(u), u the pre-activation */
    float *uu = malloc(sizeof(float) * N * stride);
    fill(uu, (size_t)N * stride, -4, 4);
    float *d_uu = dev_from(uu, (size_t)N * stride);
    gate_backward_cuda(d_dgate + 3, stride, d_datt, d_dout, NULL, d_u + 3, NULL, d_att, NULL, d_uu + 3, NULL, N, e, NULL, NULL, NULL, 0);
    free(dgate);
    dgate = host_copy(d_dgate, (size_t)N * stride);
    float *sg_ref = malloc(sizeof(float) * N * stride);
    memcpy(sg_ref, dgate_ref, sizeof(float) * N * stride);
    silu_backward(sg_ref, dgate_ref, uu, (size_t)N * stride);
    worst = 0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) {
            double dd = fabs(dgate[n * stride + 3 + i] - sg_ref[n * stride + 3 + i]);
            if (!(dd <= worst)) worst = dd;
        }
    CHECK(worst < 1e-6, "d gate with silu' max diff %g", worst);
    free(uu); free(sg_ref); cudaFree(d_uu);
    CHECK(rel_err(datt, datt_ref, (size_t)N * e) < KTOL, "d att rel %g", rel_err(datt, datt_ref, (size_t)N * e));
    free(u); free(dy); free(uref); free(yref); free(y); free(ug); free(duref); free(du); free(att); free(outref);
    free(out); free(dout); free(dgate_ref); free(datt_ref); free(dgate); free(datt);
    cudaFree(d_u); cudaFree(d_y); cudaFree(d_b); cudaFree(d_du); cudaFree(d_att); cudaFree(d_out);
    cudaFree(d_dout); cudaFree(d_dgate); cudaFree(d_datt);
}

static void osr_case(int s, int r) {
    const int B = 2, T = 13, N = B * T, zs = s + 5;
    float *z = malloc(sizeof(float) * N * zs), *gamma = malloc(sizeof(float) * 4 * s),
          *beta = malloc(sizeof(float) * 4 * s);
    fill(z, (size_t)N * zs, -1, 1); fill(gamma, 4 * (size_t)s, -1, 1); fill(beta, 4 * (size_t)s, -0.5, 0.5);
    float freqs[16], *cs = malloc(sizeof(float) * T * (r / 2 + 1)), *sn = malloc(sizeof(float) * T * (r / 2 + 1));
    for (int j = 0; j < r / 2; j++) freqs[j] = (float)pow(10000.0, -2.0 * j / r);
    rotary_table_fill(cs, sn, freqs, T, r);
    float *ref = malloc(sizeof(float) * 4 * N * s);
    offset_scale_rotary_forward(ref, z, zs, gamma, beta, cs, sn, B, T, s, r);
    float *d_z = dev_from(z, (size_t)N * zs), *d_g = dev_from(gamma, 4 * (size_t)s), *d_b = dev_from(beta, 4 * (size_t)s);
    float *d_cs = dev_from(cs, (size_t)T * (r / 2)), *d_sn = dev_from(sn, (size_t)T * (r / 2));
    float *d_q = dev_nan((size_t)4 * N * s);
    offset_scale_rotary_forward_cuda(d_q, d_z, NULL, zs, d_g, d_b, d_cs, d_sn, N, T, s, r, NULL, 0);
    float *q = host_copy(d_q, (size_t)4 * N * s);
    CHECK(rel_err(q, ref, (size_t)4 * N * s) < KTOL, "s %d r %d forward rel %g", s, r, rel_err(q, ref, (size_t)4 * N * s));
    float *dq = malloc(sizeof(float) * 4 * N * s), *dz_ref = malloc(sizeof(float) * N * zs);
    fill(dq, (size_t)4 * N * s, -1, 1);
    float *dg_ref = calloc(4 * (size_t)s, sizeof(float)), *db_ref = calloc(4 * (size_t)s, sizeof(float));
    float *d_dq = dev_from(dq, (size_t)4 * N * s), *dq0 = malloc(sizeof(float) * 4 * N * s);
    memcpy(dq0, dq, sizeof(float) * 4 * N * s);
    offset_scale_rotary_backward(dz_ref, dg_ref, db_ref, dq, z, zs, gamma, cs, sn, B, T, s, r);
    float *zeros = calloc(4 * (size_t)s, sizeof(float));
    float *d_dz = dev_nan((size_t)N * zs), *d_dg = dev_from(zeros, 4 * (size_t)s), *d_db = dev_from(zeros, 4 * (size_t)s);
    float *col = dev_nan((size_t)OSR_SLICES * 8 * s);
    offset_scale_rotary_backward_cuda(d_dz, d_dg, d_db, d_dq, NULL, d_z, NULL, zs, NULL, NULL, d_g, d_cs, d_sn, N, T, s, r, col, NULL, NULL, 0);
    float *dz = host_copy(d_dz, (size_t)N * zs), *dgm = host_copy(d_dg, 4 * (size_t)s), *dbt = host_copy(d_db, 4 * (size_t)s);
    double worst = 0;
    for (int n = 0; n < N; n++) for (int f = 0; f < s; f++) {
        double dd = fabs(dz[n * zs + f] - dz_ref[n * zs + f]);
        if (!(dd <= worst)) worst = dd;
    }
    CHECK(worst < 1e-5, "dz max diff %g", worst);
    CHECK(rel_err(dgm, dg_ref, 4 * (size_t)s) < KTOL && rel_err(dbt, db_ref, 4 * (size_t)s) < KTOL,
          "dgamma %g dbeta %g", rel_err(dgm, dg_ref, 4 * (size_t)s), rel_err(dbt, db_ref, 4 * (size_t)s));
    float *dqb = host_copy(d_dq, (size_t)4 * N * s);
    CHECK(memcmp(dqb, dq0, sizeof(float) * 4 * N * s) == 0, "the backward changed its input d_qk4");
    /* with z's silu backward folded in (u: the pre-activation, z's stride) */
    float *uz = malloc(sizeof(float) * N * zs), *dz2_ref = malloc(sizeof(float) * N * zs);
    fill(uz, (size_t)N * zs, -4, 4);
    silu_backward(dz2_ref, dz_ref, uz, (size_t)N * zs);
    float *d_uz = dev_from(uz, (size_t)N * zs);
    cudaMemcpy(d_dq, dq0, sizeof(float) * 4 * N * s, cudaMemcpyHostToDevice);
    offset_scale_rotary_backward_cuda(d_dz, d_dg, d_db, d_dq, NULL, d_z, NULL, zs, d_uz, NULL, d_g, d_cs, d_sn, N, T, s, r, col, NULL, NULL, 0);
    free(dz);
    dz = host_copy(d_dz, (size_t)N * zs);
    worst = 0;
    for (int n = 0; n < N; n++) for (int f = 0; f < s; f++) {
        double dd = fabs(dz[n * zs + f] - dz2_ref[n * zs + f]);
        if (!(dd <= worst)) worst = dd;
    }
    CHECK(worst < 1e-5, "dz with silu' max diff %g", worst);
    free(uz); free(dz2_ref); free(dq0); cudaFree(d_uz);
    free(z); free(gamma); free(beta); free(cs); free(sn); free(ref); free(q); free(dq); free(dz_ref); free(dg_ref);
    free(db_ref); free(zeros); free(dz); free(dgm); free(dbt); free(dqb);
    cudaFree(d_z); cudaFree(d_g); cudaFree(d_b); cudaFree(d_cs); cudaFree(d_sn); cudaFree(d_q); cudaFree(d_dq);
    cudaFree(d_dz); cudaFree(d_dg); cudaFree(d_db); cudaFree(col);
}
static void test_offset_scale_rotary(void) { osr_case(32, 32); osr_case(48, 32); osr_case(21, 21); }

static void test_crossentropy(void) {
    const int B = 3, T = 17, V = 41, N = B * T;
    int tok[3 * 18];
    for (int i = 0; i < B * (T + 1); i++) tok[i] = (int)(urand() * V);
    float *lg = malloc(sizeof(float) * N * V);
    fill(lg, (size_t)N * V, -5, 5);
    float *losses_ref = malloc(sizeof(float) * N), *dl_ref = malloc(sizeof(float) * N * V);
    double mean_ref = crossentropy_forward(losses_ref, lg, tok + 1, T + 1, B, T, V);
    crossentropy_backward(dl_ref, lg, tok + 1, T + 1, B, T, V, 0.5f);
    float *d_lg = dev_from(lg, (size_t)N * V), *d_losses = dev_nan(N), *d_dl = dev_nan((size_t)N * V);
    int *d_tok = dev_ints(tok, (size_t)B * (T + 1));
    double *d_acc = NULL, zero = 0, acc;
    cudaMalloc((void **)&d_acc, sizeof(double));
    cudaMemcpy(d_acc, &zero, sizeof zero, cudaMemcpyHostToDevice);
    crossentropy_forward_cuda(d_losses, d_acc, d_lg, d_tok, T + 1, B, T, T, V, 1.0, 0);
    crossentropy_backward_cuda(d_dl, d_lg, d_tok, T + 1, B, T, T, V, 0.5f, NULL, 0);
    cudaDeviceSynchronize();
    cudaMemcpy(&acc, d_acc, sizeof acc, cudaMemcpyDeviceToHost);
    float *losses = host_copy(d_losses, N), *dl = host_copy(d_dl, (size_t)N * V);
    CHECK(fabs(acc - mean_ref) < 1e-6 * mean_ref, "mean loss %.9g vs %.9g", acc, mean_ref);
    CHECK(rel_err(losses, losses_ref, N) < KTOL, "losses rel %g", rel_err(losses, losses_ref, N));
    CHECK(rel_err(dl, dl_ref, (size_t)N * V) < KTOL, "dlogits rel %g", rel_err(dl, dl_ref, (size_t)N * V));
    free(lg); free(losses_ref); free(dl_ref); free(losses); free(dl);
    cudaFree(d_lg); cudaFree(d_losses); cudaFree(d_dl); cudaFree(d_tok); cudaFree(d_acc);
}


/* The gate's kernels given pre_bias (the gate's columns are the raw product u, the kernels
   take silu(u + b)), all operands bf16, against the CPU ops on the same bf16 values; v's
   silu backward in place on the bf16 gradient. Widths of multiples of 8 take the eight-column
   kernels (the gate's backward the two-column one), even widths the two-column kernels, odd
   ones the one-column kernels. The outputs are bf16: 1e-2 relative. */
static void bf16_gate_case(int e, int off, int stride) {
    const int N = 37;
    float *u = malloc(sizeof(float) * N * stride), *b = malloc(sizeof(float) * e);
    float *att = malloc(sizeof(float) * N * e), *dout = malloc(sizeof(float) * N * e);
    fill(u, (size_t)N * stride, -4, 4);
    fill(b, (size_t)e, -1, 1);
    fill(att, (size_t)N * e, -1, 1);
    fill(dout, (size_t)N * e, -1, 1);
    bf16_t *d_u = dev_bf16(u, (size_t)N * stride), *d_att = dev_bf16(att, (size_t)N * e);
    bf16_t *d_dout = dev_bf16(dout, (size_t)N * e);
    float *d_b = dev_from(b, (size_t)e);
    /* the CPU's values: gate = silu(u + b) over the gate's columns, packed N x e */
    float *pre = malloc(sizeof(float) * N * e), *gate = malloc(sizeof(float) * N * e);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) pre[n * e + i] = u[n * stride + off + i] + b[i];
    silu_forward(gate, pre, (size_t)N * e);
    float *out_ref = malloc(sizeof(float) * N * e), *datt_ref = malloc(sizeof(float) * N * e);
    float *dg_ref = malloc(sizeof(float) * N * e);
    gate_forward(out_ref, gate, e, att, N, e);
    gate_backward(dg_ref, e, datt_ref, dout, gate, att, N, e);   /* d gate before silu' */
    silu_backward(dg_ref, dg_ref, pre, (size_t)N * e);

    bf16_t *d_out = dev_bf16(NULL, (size_t)N * e);
    gate_forward_cuda(NULL, NULL, d_u + off, stride, NULL, d_att, N, e, d_out, d_b, 0);
    float *out = host_bf16(d_out, (size_t)N * e);
    CHECK(rel_err(out, out_ref, (size_t)N * e) < 1e-2, "e %d: bf16 gate forward rel %g", e,
          rel_err(out, out_ref, (size_t)N * e));

    bf16_t *d_dg = dev_bf16(NULL, (size_t)N * stride), *d_da = dev_bf16(NULL, (size_t)N * e);
    gate_backward_cuda(NULL, stride, NULL, NULL, d_dout, NULL, d_u + off, NULL, d_att, NULL, d_u + off, N, e,
                       d_dg + off, d_da, d_b, 0);
    float *dg_all = host_bf16(d_dg, (size_t)N * stride), *da = host_bf16(d_da, (size_t)N * e);
    float *dg = malloc(sizeof(float) * N * e);
    int outside = 0;   /* columns outside the gate's stay poisoned */
    for (int n = 0; n < N; n++)
        for (int j = 0; j < stride; j++) {
            const float v = dg_all[n * stride + j];
            if (j >= off && j < off + e) dg[n * e + j - off] = v;
            else outside += !isnan(v);
        }
    CHECK(rel_err(dg, dg_ref, (size_t)N * e) < 1e-2, "e %d: bf16 d gate rel %g", e, rel_err(dg, dg_ref, (size_t)N * e));
    CHECK(rel_err(da, datt_ref, (size_t)N * e) < 1e-2, "e %d: bf16 d att rel %g", e, rel_err(da, datt_ref, (size_t)N * e));
    CHECK(outside == 0, "e %d: %d entries outside the gate's columns written", e, outside);

    /* v's silu backward in place on the bf16 gradient: d = d silu'(u + b), u the raw product */
    float *dv = malloc(sizeof(float) * N * stride), *dv_ref = malloc(sizeof(float) * N * stride);
    fill(dv, (size_t)N * stride, -1, 1);
    bf16_t *d_dv = dev_bf16(dv, (size_t)N * stride);
    float *upb = malloc(sizeof(float) * N * stride);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < stride; j++) upb[n * stride + j] = u[n * stride + j] + (j < e ? b[j] : 0.0f);
    silu_backward(dv_ref, dv, upb, (size_t)N * stride);
    free(upb);
    silu_backward_cuda(NULL, NULL, d_u, N, e, stride, d_dv, d_b, 0);
    float *dv_got = host_bf16(d_dv, (size_t)N * stride);
    float *a = malloc(sizeof(float) * N * e), *r = malloc(sizeof(float) * N * e);
    int touched = 0;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < stride; j++) {
            if (j < e) { a[n * e + j] = dv_got[n * stride + j]; r[n * e + j] = dv_ref[n * stride + j]; }
            else touched += dv_got[n * stride + j] != dv[n * stride + j];
        }
    CHECK(rel_err(a, r, (size_t)N * e) < 1e-2, "e %d: bf16 silu backward rel %g", e, rel_err(a, r, (size_t)N * e));
    CHECK(touched == 0, "e %d: %d entries past the first e columns changed", e, touched);

    free(u); free(b); free(att); free(dout); free(pre); free(gate); free(out_ref); free(datt_ref);
    free(dg_ref); free(out); free(dg_all); free(da); free(dg); free(dv); free(dv_ref); free(dv_got);
    free(a); free(r);
    cudaFree(d_u); cudaFree(d_att); cudaFree(d_dout); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dg);
    cudaFree(d_da); cudaFree(d_dv);
}
static void test_bf16_gate_kernels(void) {
    bf16_gate_case(72, 8, 88);   /* multiples of 8, 16-byte aligned: eight columns per thread */
    bf16_gate_case(70, 4, 78);   /* even: two columns per thread */
    bf16_gate_case(33, 3, 41);   /* odd: one column per thread */
}

/* bf16 forms of the offset-scale+rotary and attention kernels, as the bf16 step calls them,
   against the CPU ops on the same bf16 values: outputs to the twin only (the fp32 buffers
   stay poisoned), inputs from bf16. bf16 outputs: 1e-2 relative; the fp32 sums (dgamma,
   dbeta, the bias gradient) of the same bf16 inputs: float32 rounding. */
static double phi_grad_ref(double x, int lap) {   /* phi' of the forward's definition */
    if (lap) return exp(-(x - sqrt(0.5)) * (x - sqrt(0.5)) / (2 * (1 / (4 * M_PI)))) / (sqrt(1 / (4 * M_PI)) * sqrt(2 * M_PI));
    return x > 0 ? 2 * x : 0;
}
static int all_nan(const float *d, size_t n) {
    float *h = host_copy(d, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isnan(h[i]);
    free(h);
    return bad == 0;
}
/* zs - s extra columns: z's stride a multiple of 4 with s / 4 dividing 256 takes the
   four-feature kernels, any other the one-feature ones */
static void bf16_osr_case(int s, int r, int extra) {
    const int B = 2, T = 13, N = B * T, zs = s + extra;
    float *z = malloc(sizeof(float) * N * zs), *uz = malloc(sizeof(float) * N * zs);
    float *gamma = malloc(sizeof(float) * 4 * s), *beta = malloc(sizeof(float) * 4 * s);
    fill(z, (size_t)N * zs, -1, 1); fill(uz, (size_t)N * zs, -4, 4);
    fill(gamma, 4 * (size_t)s, -1, 1); fill(beta, 4 * (size_t)s, -0.5, 0.5);
    float freqs[16], *cs = malloc(sizeof(float) * T * (r / 2 + 1)), *sn = malloc(sizeof(float) * T * (r / 2 + 1));
    for (int j = 0; j < r / 2; j++) freqs[j] = (float)pow(10000.0, -2.0 * j / r);
    rotary_table_fill(cs, sn, freqs, T, r);
    bf16_t *z16 = dev_bf16(z, (size_t)N * zs), *u16 = dev_bf16(uz, (size_t)N * zs);   /* z, uz rounded */
    float *d_g = dev_from(gamma, 4 * (size_t)s), *d_b = dev_from(beta, 4 * (size_t)s);
    float *d_cs = dev_from(cs, (size_t)T * (r / 2)), *d_sn = dev_from(sn, (size_t)T * (r / 2));
    float *ref = malloc(sizeof(float) * 4 * N * s);
    offset_scale_rotary_forward(ref, z, zs, gamma, beta, cs, sn, B, T, s, r);
    float *d_q = dev_nan((size_t)4 * N * s);
    bf16_t *q16 = dev_bf16(NULL, (size_t)4 * N * s);
    offset_scale_rotary_forward_cuda(d_q, NULL, z16, zs, d_g, d_b, d_cs, d_sn, N, T, s, r, q16, 0);
    float *q = host_bf16(q16, (size_t)4 * N * s);
    CHECK(rel_err(q, ref, (size_t)4 * N * s) < 1e-2, "s %d r %d: bf16 forward rel %g", s, r,
          rel_err(q, ref, (size_t)4 * N * s));
    CHECK(all_nan(d_q, (size_t)4 * N * s), "s %d r %d: the fp32 output was written beside the twin", s, r);

    float *dq = malloc(sizeof(float) * 4 * N * s);
    fill(dq, (size_t)4 * N * s, -1, 1);
    bf16_t *dq16 = dev_bf16(dq, (size_t)4 * N * s);   /* dq rounded */
    float *dz_ref = malloc(sizeof(float) * N * zs), *dg_ref = calloc(4 * (size_t)s, sizeof(float));
    float *db_ref = calloc(4 * (size_t)s, sizeof(float)), *zeros = calloc(4 * (size_t)s, sizeof(float));
    offset_scale_rotary_backward(dz_ref, dg_ref, db_ref, dq, z, zs, gamma, cs, sn, B, T, s, r);
    /* u is z's raw product, its bias u_bias added by the kernel: silu'(u + u_bias) */
    float *ub = malloc(sizeof(float) * s), *upre = malloc(sizeof(float) * N * zs);
    fill(ub, (size_t)s, -1, 1);
    for (int n = 0; n < N; n++) for (int f = 0; f < zs; f++) upre[n * zs + f] = uz[n * zs + f] + (f < s ? ub[f] : 0.0f);
    silu_backward(dz_ref, dz_ref, upre, (size_t)N * zs);
    float *d_ub = dev_from(ub, (size_t)s);
    free(upre);
    float *d_dg = dev_from(zeros, 4 * (size_t)s), *d_db = dev_from(zeros, 4 * (size_t)s);
    float *col = dev_nan((size_t)OSR_SLICES * 8 * s);
    bf16_t *dz16 = dev_bf16(NULL, (size_t)N * zs);
    offset_scale_rotary_backward_cuda(NULL, d_dg, d_db, NULL, dq16, NULL, z16, zs, NULL, u16, d_g, d_cs, d_sn,
                                      N, T, s, r, col, dz16, d_ub, 0);
    free(ub); cudaFree(d_ub);
    float *dz_all = host_bf16(dz16, (size_t)N * zs), *dz = malloc(sizeof(float) * N * s), *dzr = malloc(sizeof(float) * N * s);
    int outside = 0;
    for (int n = 0; n < N; n++)
        for (int f = 0; f < zs; f++) {
            if (f < s) { dz[n * s + f] = dz_all[n * zs + f]; dzr[n * s + f] = dz_ref[n * zs + f]; }
            else outside += !isnan(dz_all[n * zs + f]);
        }
    CHECK(rel_err(dz, dzr, (size_t)N * s) < 1e-2, "s %d r %d: bf16 dz rel %g", s, r, rel_err(dz, dzr, (size_t)N * s));
    CHECK(outside == 0, "s %d r %d: %d entries past z's s columns written", s, r, outside);
    float *dgm = host_copy(d_dg, 4 * (size_t)s), *dbt = host_copy(d_db, 4 * (size_t)s);
    CHECK(rel_err(dgm, dg_ref, 4 * (size_t)s) < 1e-5 && rel_err(dbt, db_ref, 4 * (size_t)s) < 1e-5,
          "s %d r %d: dgamma %g dbeta %g from bf16 inputs", s, r, rel_err(dgm, dg_ref, 4 * (size_t)s),
          rel_err(dbt, db_ref, 4 * (size_t)s));
    free(z); free(uz); free(gamma); free(beta); free(cs); free(sn); free(ref); free(q); free(dq);
    free(dz_ref); free(dg_ref); free(db_ref); free(zeros); free(dz_all); free(dz); free(dzr); free(dgm); free(dbt);
    cudaFree(z16); cudaFree(u16); cudaFree(d_g); cudaFree(d_b); cudaFree(d_cs); cudaFree(d_sn); cudaFree(d_q);
    cudaFree(q16); cudaFree(dq16); cudaFree(d_dg); cudaFree(d_db); cudaFree(col); cudaFree(dz16);
}
static void bf16_attention_case(int lap) {
    const int ntask = 5, C = 23, s = 17, n = ntask * C * C;
    float bias[32], bd[23];
    fill(bias, 32, -1, 1);
    for (int k = 0; k < C; k++) bd[k] = sqrtf((float)s) * bias[rel_pos_bucket(k)];
    float *sim0 = malloc(sizeof(float) * n), *sim_ref = malloc(sizeof(float) * n), *attn_ref = malloc(sizeof(float) * n);
    fill(sim0, (size_t)n, -1.5, 1.5);
    for (int q = 0; q < n; q++) {
        const int j = q % C, i = q / C % C;
        sim_ref[q] = j <= i ? sim0[q] + bd[i - j] : 0;
        attn_ref[q] = j <= i ? attn_phi(sim_ref[q], lap) : 0;
    }
    float *d_bd = dev_from(bd, C), *d_sim = dev_from(sim0, (size_t)n), *d_attn = dev_nan((size_t)n);
    bf16_t *attn16 = dev_bf16(NULL, (size_t)n);
    attn_phi_forward_cuda(d_sim, d_attn, d_bd, ntask, C, lap, attn16, 0);
    float *attn = host_bf16(attn16, (size_t)n);
    CHECK(rel_err(attn, attn_ref, (size_t)n) < 1e-2, "phi %d: bf16 attn rel %g", lap, rel_err(attn, attn_ref, (size_t)n));
    CHECK(all_nan(d_attn, (size_t)n), "phi %d: the fp32 attn was written beside the twin", lap);
    float *simg = host_copy(d_sim, (size_t)n);
    CHECK(rel_err(simg, sim_ref, (size_t)n) < KTOL, "phi %d: sim rel %g", lap, rel_err(simg, sim_ref, (size_t)n));
    /* the backward in place on the bf16 dA */
    float *dA = malloc(sizeof(float) * n), *ds_ref = malloc(sizeof(float) * n);
    fill(dA, (size_t)n, -1, 1);
    bf16_t *dA16 = dev_bf16(dA, (size_t)n);   /* dA rounded */
    float *dsim = malloc(sizeof(float) * n);
    for (int q = 0; q < n; q++) {
        const int j = q % C, i = q / C % C;
        ds_ref[q] = j <= i ? (float)(dA[q] * phi_grad_ref(simg[q], lap)) : 0;
    }
    float *dist = dev_nan((size_t)attn_dist_parts(ntask, C) * C), *d_unused = dev_nan((size_t)n);
    attn_phi_backward_cuda(d_unused, d_sim, ntask, C, lap, dA16, dist, 0);
    float *ds = host_bf16(dA16, (size_t)n);
    CHECK(rel_err(ds, ds_ref, (size_t)n) < 1e-2, "phi' %d: bf16 dsim rel %g", lap, rel_err(ds, ds_ref, (size_t)n));
    CHECK(all_nan(d_unused, (size_t)n), "phi' %d: the fp32 dA was written beside the twin", lap);
    float rb_ref[32], rbz[32] = {0}, rb[32];
    for (int k = 0; k < 32; k++) rb_ref[k] = 0;
    for (int k = 0; k < C; k++) {
        double sum = 0;
        for (int t = 0; t < ntask; t++) for (int i = k; i < C; i++) sum += ds_ref[(t * C + i) * C + i - k];
        rb_ref[rel_pos_bucket(k)] += sqrtf((float)s) * (float)sum;
    }
    float *d_rb = dev_from(rbz, 32), *scr = dev_nan(64 * (size_t)C);
    attn_rel_bias_backward_cuda(d_rb, dist, attn_dist_parts(ntask, C), C, s, scr, 0);
    to_host(rb, d_rb, 32);
    CHECK(rel_err(rb, rb_ref, 32) < 1e-5, "phi' %d: d rel bias from bf16 dA rel %g", lap, rel_err(rb, rb_ref, 32));
    (void)dsim;
    free(sim0); free(sim_ref); free(attn_ref); free(attn); free(simg); free(dA); free(ds_ref); free(dsim); free(ds);
    cudaFree(d_bd); cudaFree(d_sim); cudaFree(d_attn); cudaFree(attn16); cudaFree(dA16); cudaFree(dist);
    cudaFree(d_unused); cudaFree(d_rb); cudaFree(scr);
}
static void test_bf16_attention_kernels(void) {
    bf16_osr_case(32, 32, 8);     /* four features per thread */
    bf16_osr_case(128, 32, 16);   /* the train.py shape's kernel: a row per warp */
    bf16_osr_case(64, 18, 4);     /* an odd number of rotary pairs: one group of four half rotated */
    bf16_osr_case(48, 32, 8);     /* 12 threads a row do not divide a block: one feature per thread */
    bf16_osr_case(21, 21, 5);
    bf16_attention_case(0);
    bf16_attention_case(1);
}

/* the attention's own pieces, against their definitions (the CPU op fuses them) */
static void test_attention_pieces(void) {
    const int ntask = 5, C = 23, s = 17, B = 2, G = 3;
    const int laplace_cases[2] = {0, 1};
    float *sim0 = malloc(sizeof(float) * ntask * C * C), bias[32], bd[23];
    fill(bias, 32, -1, 1);
    for (int k = 0; k < C; k++) bd[k] = sqrtf((float)s) * bias[rel_pos_bucket(k)];
    float *d_bias = dev_from(bias, 32), *d_bd = dev_nan(C);
    attn_bias_dist_cuda(d_bd, d_bias, C, s, 0);
    float bdg[23];
    to_host(bdg, d_bd, C);
    CHECK(rel_err(bdg, bd, C) < KTOL, "bias by distance rel %g", rel_err(bdg, bd, C));
    for (int li = 0; li < 2; li++) {
        const int lap = laplace_cases[li];
        fill(sim0, (size_t)ntask * C * C, -1.5, 1.5);
        float *sim_ref = malloc(sizeof(float) * ntask * C * C), *attn_ref = malloc(sizeof(float) * ntask * C * C);
        for (int q = 0; q < ntask * C * C; q++) {
            int j = q % C, i = q / C % C;
            sim_ref[q] = j <= i ? sim0[q] + bd[i - j] : 0;
            attn_ref[q] = j <= i ? attn_phi(sim_ref[q], lap) : 0;
        }
        float *d_sim = dev_from(sim0, (size_t)ntask * C * C), *d_attn = dev_nan((size_t)ntask * C * C);
        attn_phi_forward_cuda(d_sim, d_attn, d_bd, ntask, C, lap, NULL, 0);
        float *simg = host_copy(d_sim, (size_t)ntask * C * C), *attng = host_copy(d_attn, (size_t)ntask * C * C);
        CHECK(rel_err(simg, sim_ref, (size_t)ntask * C * C) < KTOL && rel_err(attng, attn_ref, (size_t)ntask * C * C) < 1e-6,
              "phi %d: sim %g attn %g", lap, rel_err(simg, sim_ref, (size_t)ntask * C * C),
              rel_err(attng, attn_ref, (size_t)ntask * C * C));
        /* phi' by central differences in double of the forward definition */
        float *dA = malloc(sizeof(float) * ntask * C * C), *ds_ref = malloc(sizeof(float) * ntask * C * C);
        fill(dA, (size_t)ntask * C * C, -1, 1);
        for (int q = 0; q < ntask * C * C; q++) {
            int j = q % C, i = q / C % C;
            double x = sim_ref[q], hstep = 1e-3, dphi;
            if (lap) dphi = exp(-(x - sqrt(0.5)) * (x - sqrt(0.5)) / (2 * (1 / (4 * M_PI)))) / (sqrt(1 / (4 * M_PI)) * sqrt(2 * M_PI));
            else dphi = x > 0 ? 2 * x : 0;
            (void)hstep;
            ds_ref[q] = j <= i ? (float)(dA[q] * dphi) : 0;
        }
        float *d_dA = dev_from(dA, (size_t)ntask * C * C);
        float *dist = dev_nan((size_t)attn_dist_parts(ntask, C) * C);
        attn_phi_backward_cuda(d_dA, d_sim, ntask, C, lap, NULL, dist, 0);
        float *dsg = host_copy(d_dA, (size_t)ntask * C * C);
        CHECK(rel_err(dsg, ds_ref, (size_t)ntask * C * C) < 1e-5, "phi' %d rel %g", lap, rel_err(dsg, ds_ref, (size_t)ntask * C * C));
        /* the bias gradient: sum over the pairs of each distance, into its bucket */
        float rb_ref[32], rbz[32] = {0};
        for (int k = 0; k < 32; k++) rb_ref[k] = 0;
        for (int k = 0; k < C; k++) {
            double sum = 0;
            for (int t = 0; t < ntask; t++) for (int i = k; i < C; i++) sum += ds_ref[(t * C + i) * C + i - k];
            rb_ref[rel_pos_bucket(k)] += sqrtf((float)s) * (float)sum;
        }
        float *d_rb = dev_from(rbz, 32), rb[32];
        float *scr = dev_nan(65 * (size_t)C);
        attn_rel_bias_backward_cuda(d_rb, dist, attn_dist_parts(ntask, C), C, s, scr, 0);
        cudaFree(scr);
        to_host(rb, d_rb, 32);
        CHECK(rel_err(rb, rb_ref, 32) < 1e-5, "d rel bias rel %g", rel_err(rb, rb_ref, 32));
        free(sim_ref); free(attn_ref); free(simg); free(attng); free(dA); free(ds_ref); free(dsg);
        cudaFree(d_sim); cudaFree(d_attn); cudaFree(d_dA); cudaFree(d_rb); cudaFree(dist);
    }
    /* exclusive prefix and suffix sums over groups */
    const size_t se = 37;
    float *kv = malloc(sizeof(float) * B * G * se), *pre = malloc(sizeof(float) * B * G * se), *suf = malloc(sizeof(float) * B * G * se);
    fill(kv, (size_t)B * G * se, -1, 1);
    for (int b = 0; b < B; b++) for (size_t k = 0; k < se; k++) {
        float run = 0, run2 = 0;
        for (int g = 0; g < G; g++) { pre[(b * G + g) * se + k] = run; run += kv[(b * G + g) * se + k]; }
        for (int g = G - 1; g >= 0; g--) { suf[(b * G + g) * se + k] = run2; run2 += kv[(b * G + g) * se + k]; }
    }
    float *d_kv = dev_from(kv, (size_t)B * G * se), *d_kv2 = dev_from(kv, (size_t)B * G * se);
    group_scan_cuda(d_kv, B, G, se, 0, NULL, 0, 0);
    group_scan_cuda(d_kv2, B, G, se, 1, NULL, 0, 0);
    float *g1 = host_copy(d_kv, (size_t)B * G * se), *g2 = host_copy(d_kv2, (size_t)B * G * se);
    CHECK(max_abs_diff(g1, pre, (size_t)B * G * se) == 0 && max_abs_diff(g2, suf, (size_t)B * G * se) == 0,
          "group scans differ: %g %g", max_abs_diff(g1, pre, (size_t)B * G * se), max_abs_diff(g2, suf, (size_t)B * G * se));
    free(sim0); free(kv); free(pre); free(suf); free(g1); free(g2);
    cudaFree(d_bias); cudaFree(d_bd); cudaFree(d_kv); cudaFree(d_kv2);
}

/* The device's top-k sampler against sample_topk_u (trainer/sample.c): logits with many
   ties (values on a grid of 0.5) and without, V 256 (k 25), 97 (k 9) and 300 (k 30), two
   temperatures, uniforms at random and at the ends of [0, 1); then the decoder's indexing:
   pos = (5, 3) takes the uniforms of step 2 and writes its bytes to the history there. */
static void test_sample_kernel(void) {
    const int n = 37, Vs[3] = {256, 97, 300};
    for (int vi = 0; vi < 3; vi++)
        for (int ties = 0; ties < 2; ties++)
            for (int ti = 0; ti < 2; ti++) {
                const int V = Vs[vi], k = sample_keep(V);
                const double temp = ti ? 0.7 : 1.0;
                float *lg = malloc(sizeof(float) * n * V);
                double u[3 * 37];
                for (int i = 0; i < n * V; i++)
                    lg[i] = ties ? (float)(0.5 * (int)(urand() * 12) - 3) : (float)(6 * urand() - 3);
                for (int i = 0; i < 3 * n; i++) u[i] = i % 11 == 0 ? 0.0 : i % 13 == 0 ? 1 - 1e-12 : urand();
                float *dl = dev_from(lg, (size_t)n * V);
                double *du = NULL;
                int *dt = NULL, *dh = NULL, pos[2] = {5, 3};
                cudaMalloc((void **)&du, sizeof u);
                cudaMemcpy(du, u, sizeof u, cudaMemcpyHostToDevice);
                cudaMalloc((void **)&dt, sizeof(int) * n);
                cudaMalloc((void **)&dh, sizeof(int) * 3 * n);
                cudaMemset(dh, 0xff, sizeof(int) * 3 * n);
                int *dp = dev_ints(pos, 2), got[37], hist[3 * 37], bad = 0, badh = 0;
                CHECK(sample_topk_cuda(dt, NULL, dl, du, NULL, n, V, k, temp, 0) == 0, "sample_topk_cuda refused");
                cudaDeviceSynchronize();
                cudaMemcpy(got, dt, sizeof got, cudaMemcpyDeviceToHost);
                for (int q = 0; q < n; q++) bad += got[q] != sample_topk_u(lg + (size_t)q * V, V, temp, u[q]);
                sample_topk_cuda(dt, dh, dl, du, dp, n, V, k, temp, 0);
                cudaDeviceSynchronize();
                cudaMemcpy(got, dt, sizeof got, cudaMemcpyDeviceToHost);
                cudaMemcpy(hist, dh, sizeof hist, cudaMemcpyDeviceToHost);
                for (int q = 0; q < n; q++) {
                    const int want = sample_topk_u(lg + (size_t)q * V, V, temp, u[2 * n + q]);
                    bad += got[q] != want;
                    badh += hist[2 * n + q] != want || hist[q] != -1 || hist[n + q] != -1;
                }
                CHECK(bad == 0 && badh == 0, "V %d, %s, temperature %.1f: %d bytes differ from the host's, %d in "
                      "the history", V, ties ? "ties" : "no ties", temp, bad, badh);
                cudaFree(dl); cudaFree(du); cudaFree(dt); cudaFree(dh); cudaFree(dp);
                free(lg);
            }
    CHECK(sample_topk_cuda(NULL, NULL, NULL, NULL, NULL, 1, SAMPLE_MAX_V + 1, 25, 1.0, 0) == -1,
          "a vocabulary past SAMPLE_MAX_V accepted");
}
#endif /* FLASH_CUDA */

/* ---- 2. the model through model.h: CUDA against the CPU ----------------------------------- */

typedef struct { const char *name; FlashConfig cfg; int B, T; } Case;

static Case cases[8];
static int nmodel_cases;  /* the FLASH cases (0-3), then the variants (taylor, gau) */
static void make_cases(void) {
    FlashConfig a = config_default();
    a.num_tokens = 256; a.dim = 32; a.depth = 2; a.group_size = 16; a.query_key_dim = 32;
    a.expansion_factor = 2; a.norm_type = NORM_SCALENORM; a.shift_tokens = 1; a.attn_fn = ATTN_LAPLACE;
    cases[0] = (Case){"scalenorm+shift+laplace, T 45 C 16 (padded group)", a, 3, 45};
    FlashConfig b = a;
    b.norm_type = NORM_LAYERNORM; b.shift_tokens = 0; b.attn_fn = ATTN_RELU2; b.query_key_dim = 48;
    cases[1] = (Case){"layernorm, relu^2, s 48 r 32 (partial rotary), T 64", b, 2, 64};
    FlashConfig c = a;
    c.dim = 26; c.expansion_factor = 1.5; c.group_size = 8; c.query_key_dim = 20; c.depth = 3;
    c.num_tokens = 97;
    cases[2] = (Case){"odd widths: d 26, e 39, s 20, C 8, V 97, T 21", c, 2, 21};
    FlashConfig d = a;
    d.norm_type = NORM_LAYERNORM; d.shift_tokens = 1; d.attn_fn = ATTN_RELU2;
    cases[3] = (Case){"layernorm+shift, relu^2, T 16 = one group", d, 4, 16};
    FlashConfig e = a;   /* the taylor fixtures' shapes */
    e.linear_attn = LINEAR_TAYLOR; e.query_key_dim = 8;
    cases[4] = (Case){"taylor: scalenorm+shift+laplace, s 8 (F 73), C 16, T 45", e, 3, 45};
    FlashConfig f = e;
    f.norm_type = NORM_LAYERNORM; f.shift_tokens = 0; f.attn_fn = ATTN_RELU2; f.query_key_dim = 12;
    f.group_size = 8; f.dim = 24;
    cases[5] = (Case){"taylor: layernorm, relu^2, s 12 (F 157), C 8, T 30", f, 2, 30};
    FlashConfig g = a;   /* the gau fixtures' shapes; T beyond one chunk of query rows too */
    g.model = MODEL_GAU; g.shift_tokens = 0; g.attn_fn = ATTN_RELU2; g.query_key_dim = 16;
    cases[6] = (Case){"gau: scalenorm, relu^2, s 16, T 37", g, 2, 37};
    FlashConfig h = g;
    h.norm_type = NORM_LAYERNORM; h.attn_fn = ATTN_LAPLACE; h.dim = 24; h.query_key_dim = 20;
    h.expansion_factor = 1.5;
    cases[7] = (Case){"gau: layernorm, laplace, d 24, s 20, T 300 (two chunks of query rows)", h, 2, 300};
    nmodel_cases = 8;
}

static int have_gpu(void) {
    if (!model_cuda_built()) return 0;
    ModelDevice got;
    char err[256];
    return model_resolve_device(DEVICE_CUDA, &got, err, sizeof err) == 0;
}

static Model *open_on(const FlashConfig *c, ModelDevice dev, ModelPrecision prec, int B, int T, int seqs) {
    ModelOptions mo = {.device = dev, .precision = prec, .threads = 2, .max_B = B, .max_T = T, .step_seqs = seqs};
    char err[512];
    Model *m = model_open(c, &mo, err, sizeof err);
    if (!m) fprintf(stderr, "  model_open: %s\n", err);
    return m;
}

static void random_tokens(int *tok, size_t n, int V) {
    for (size_t i = 0; i < n; i++) tok[i] = (int)(urand() * V);
}

/* Perturbs the constants (norm gains, offsets, position scale) so every gradient is exercised. */
static void perturb(Model *m) {
    const ParamTable *t = model_table(m);
    float *p = malloc(sizeof(float) * t->total);
    char err[256];
    model_read(m, STATE_PARAMS, p, err, sizeof err);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        if (!pi->trained || pi->decay) continue;
        for (size_t k = 0; k < pi->numel; k++) p[pi->offset + k] += (float)(0.2 * (urand() - 0.5));
    }
    model_write(m, STATE_PARAMS, p, err, sizeof err);
    free(p);
}

static void test_model_matches_cpu(void) {
    char err[512];
    for (int ci = 0; ci < nmodel_cases; ci++) {
        const Case *k = &cases[ci];
        const int A = 2, B = k->B, T = k->T, V = k->cfg.num_tokens;
        Model *cpu = open_on(&k->cfg, DEVICE_CPU, PRECISION_FP32, B, T, A * B);
        Model *gpu = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, B, T, A * B);
        CHECK(cpu && gpu, "%s: open", k->name);
        if (!cpu || !gpu) { model_close(cpu); model_close(gpu); continue; }
        const size_t n = model_table(cpu)->total;
        model_init_params(cpu, 11 + ci, err, sizeof err);
        perturb(cpu);
        float *p = malloc(sizeof(float) * n), *g1 = malloc(sizeof(float) * n), *g2 = malloc(sizeof(float) * n);
        model_read(cpu, STATE_PARAMS, p, err, sizeof err);
        CHECK(model_write(gpu, STATE_PARAMS, p, err, sizeof err) == 0, "write: %s", err);
        int *tok = malloc(sizeof(int) * A * B * (T + 1));
        random_tokens(tok, (size_t)A * B * (T + 1), V);
        /* forward */
        float *lc = malloc(sizeof(float) * B * T * V), *lg = malloc(sizeof(float) * B * T * V);
        float *lsc = malloc(sizeof(float) * B * T), *lsg = malloc(sizeof(float) * B * T);
        for (size_t i = 0; i < (size_t)B * T * V; i++) lg[i] = NAN;
        double fc = model_forward(cpu, tok, B, T, lsc, lc), fg = model_forward(gpu, tok, B, T, lsg, lg);
        CHECK(fabs(fc - fg) < 1e-5 * fc, "%s: loss %.8g vs %.8g", k->name, fg, fc);
        CHECK(rel_err(lg, lc, (size_t)B * T * V) < 1e-5, "%s: logits rel %g", k->name, rel_err(lg, lc, (size_t)B * T * V));
        CHECK(rel_err(lsg, lsc, (size_t)B * T) < 1e-5, "%s: losses rel %g", k->name, rel_err(lsg, lsc, (size_t)B * T));
        /* an accumulated step's gradients, tensor by tensor */
        double ac = model_accumulate(cpu, tok, A * B, B, T, A), ag = model_accumulate(gpu, tok, A * B, B, T, A);
        CHECK(fabs(ac - ag) < 1e-5 * ac, "%s: step loss %.8g vs %.8g", k->name, ag, ac);
        model_read(cpu, STATE_GRADS, g1, err, sizeof err);
        model_read(gpu, STATE_GRADS, g2, err, sizeof err);
        const ParamTable *t = model_table(cpu);
        double worst = 0;
        const char *wname = "";
        for (int i = 0; i < t->n; i++) {
            if (!t->info[i].trained) continue;
            double e = rel_err(g2 + t->info[i].offset, g1 + t->info[i].offset, t->info[i].numel);
            if (!(e <= worst)) { worst = e; wname = t->info[i].name; }
        }
        CHECK(worst < 1e-4, "%s: worst gradient %s rel %g", k->name, wname, worst);
        /* three updates, one per clip mode, then parameters and moments */
        OptConfig o = {.peak_lr = 1e-2, .min_lr = 0, .warmup = 2, .total = 10, .beta1 = 0.9, .beta2 = 0.99,
                       .eps = 1e-6, .weight_decay = 0.1, .clip_mode = CLIP_GLOBAL, .clip = 0.5};
        const ClipMode modes[3] = {CLIP_GLOBAL, CLIP_LOCAL, CLIP_NONE};
        for (int s = 0; s < 3; s++) {
            o.clip_mode = modes[s];
            o.clip = modes[s] == CLIP_LOCAL ? 0.05 : 0.5;
            if (s > 0) {
                random_tokens(tok, (size_t)A * B * (T + 1), V);
                model_accumulate(cpu, tok, A * B, B, T, A);
                model_accumulate(gpu, tok, A * B, B, T, A);
            }
            double nc = model_update(cpu, &o, s + 1, lr_at(&o, s)), ng = model_update(gpu, &o, s + 1, lr_at(&o, s));
            CHECK(fabs(nc - ng) < 1e-4 * nc, "%s: grad norm %.8g vs %.8g (clip mode %d)", k->name, ng, nc, s);
        }
        float *p2 = malloc(sizeof(float) * n);
        model_read(cpu, STATE_PARAMS, p, err, sizeof err);
        model_read(gpu, STATE_PARAMS, p2, err, sizeof err);
        /* Adam divides by sqrt(v): a gradient known to float rounding moves its weight by
           up to lr times that rounding, so 3 steps at lr 1e-2 allow a few 1e-5 */
        CHECK(max_abs_diff(p2, p, n) < 5e-5, "%s: parameters after 3 updates differ by %g", k->name, max_abs_diff(p2, p, n));
        model_read(cpu, STATE_ADAM_V, g1, err, sizeof err);
        model_read(gpu, STATE_ADAM_V, g2, err, sizeof err);
        CHECK(rel_err(g2, g1, n) < 1e-4, "%s: second moments rel %g", k->name, rel_err(g2, g1, n));
        free(p); free(p2); free(g1); free(g2); free(tok); free(lc); free(lg); free(lsc); free(lsg);
        model_close(cpu);
        model_close(gpu);
    }
}

/* A step as one micro-batch of A*B sequences or as A of B: the same up to rounding. */
static void test_micro_batch_split(void) {
    const Case *k = &cases[0];
    const int A = 4, B = 2, T = k->T, V = k->cfg.num_tokens;
    char err[256];
    Model *one = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, B, T, A * B);   /* one micro-batch of 8 */
    ModelOptions mo = {.device = DEVICE_CUDA, .max_B = B, .max_T = T, .step_seqs = A * B, .micro_batch = B};
    Model *split = model_open(&k->cfg, &mo, err, sizeof err);
    CHECK(one && split, "open: %s", err);
    if (!one || !split) { model_close(one); model_close(split); return; }
    ModelInfo i1, i2;
    model_info(one, &i1);
    model_info(split, &i2);
    CHECK(i1.micro_batch == A * B && i2.micro_batch == B, "micro-batches %d and %d", i1.micro_batch, i2.micro_batch);
    model_init_params(one, 3, err, sizeof err);
    model_init_params(split, 3, err, sizeof err);
    int *tok = malloc(sizeof(int) * A * B * (T + 1));
    random_tokens(tok, (size_t)A * B * (T + 1), V);
    double l1 = model_accumulate(one, tok, A * B, B, T, A), l2 = model_accumulate(split, tok, A * B, B, T, A);
    const size_t n = model_table(one)->total;
    float *g1 = malloc(sizeof(float) * n), *g2 = malloc(sizeof(float) * n);
    model_read(one, STATE_GRADS, g1, err, sizeof err);
    model_read(split, STATE_GRADS, g2, err, sizeof err);
    CHECK(fabs(l1 - l2) < 1e-6 * l1, "loss %.9g vs %.9g", l1, l2);
    CHECK(rel_err(g1, g2, n) < 1e-5, "gradients rel %g", rel_err(g1, g2, n));
    free(tok); free(g1); free(g2);
    model_close(one);
    model_close(split);
}

/* The recurrent decoder's logits equal the full forward's at every position: the three
   paths of the GPU decoder, the persistent kernel (where it applies: FLASH without taylor,
   widths a multiple of 4; asserted to be the one taken there), the fused kernels (a few
   sequences) and cuBLAS, on every case (taylor's
   St folded at each group's end; gau's sampler, a forward per byte, past its first window of
   64 positions, so that it grows once) */
static void test_decoder_matches_forward(void) {
    for (int run = 0; run < 3 * nmodel_cases; run++) {
        const int ci = run % nmodel_cases, path = run / nmodel_cases;
        const Case *k = &cases[ci];
        unsetenv("FLASH_CUDA_DECODE_FUSED");
        unsetenv("FLASH_CUDA_DECODE_PERSISTENT");
        if (path == 1) setenv("FLASH_CUDA_DECODE_PERSISTENT", "0", 1);
        if (path == 2) setenv("FLASH_CUDA_DECODE_FUSED", "0", 1);
        const int V = k->cfg.num_tokens, C = k->cfg.group_size, nseq = 2, gau = k->cfg.model == MODEL_GAU;
        const int persistent = path == 0 && k->cfg.model == MODEL_FLASH && k->cfg.linear_attn != LINEAR_TAYLOR &&
                               k->cfg.dim % 4 == 0 && config_hidden(&k->cfg) % 4 == 0;
        if (gau && path > 0) continue;   /* one path: the forward's */
        const int P = gau ? 40 : C + 3, steps = gau ? 40 : 2 * C + 5, T = P + steps;
        char err[256];
        Model *m = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, 1, T, 1);
        if (!m) { CHECK(0, "open"); continue; }
        model_init_params(m, 5 + ci, err, sizeof err);
        perturb(m);
        int *tok = malloc(sizeof(int) * (T + 1));
        random_tokens(tok, (size_t)T + 1, V);
        float *full = malloc(sizeof(float) * T * V), *lg = malloc(sizeof(float) * nseq * V);
        model_forward(m, tok, 1, T, NULL, full);
        CHECK(model_decoder_open(m, nseq, P, err, sizeof err) == 0, "decoder_open: %s", err);
        ModelInfo di;
        model_info(m, &di);
        const char *kind = path == 2 ? "cuBLAS" : path == 1 ? "fused" : di.decoder;
        if (persistent)
            CHECK(strncmp(di.decoder, "one persistent", 14) == 0, "%s: the persistent path was not taken (%s)",
                  k->name, di.decoder);
        double worst = 0;
        /* the reference row of position t: the forward over all T tokens; for gau, whose
           layers divide by the length, the forward over the t + 1 tokens so far */
        if (gau) model_forward(m, tok, 1, P, NULL, full);
        model_decoder_prefill(m, tok, P, lg);
        for (int q = 0; q < nseq; q++) {
            double e = rel_err(lg + (size_t)q * V, full + (size_t)(P - 1) * V, V);
            if (!(e <= worst)) worst = e;
        }
        int col[2];
        for (int t = P; t < T; t++) {
            col[0] = col[1] = tok[t];
            model_decoder_step(m, col, lg);
            if (gau) model_forward(m, tok, 1, t + 1, NULL, full);
            for (int q = 0; q < nseq; q++) {
                double e = rel_err(lg + (size_t)q * V, full + (size_t)t * V, V);
                if (!(e <= worst)) worst = e;
            }
        }
        CHECK(worst < 1e-4, "%s (%s): decoder against forward rel %g", k->name, kind, worst);
        if (path == 0) printf("  %s: %s, rel %.3g\n", k->name, di.decoder, worst);
        model_decoder_close(m);
        free(tok); free(full); free(lg);
        model_close(m);
    }
    unsetenv("FLASH_CUDA_DECODE_FUSED");
    unsetenv("FLASH_CUDA_DECODE_PERSISTENT");
}

/* The persistent decoder at the widths where its work is spread over the grid: eight
   sequences (FLASH_CUDA_DECODE_PERSISTENT=1; several tiles of value columns a block), d 256, s 64 (8 z-blocks), partial
   rotary, layernorm + shift, two groups and a bit; the sequences share the prompt and then
   part, each against its own row of a batched forward. */
static void test_decoder_persistent_wide(void) {
    FlashConfig c = cases[1].cfg;
    c.dim = 256; c.query_key_dim = 64; c.group_size = 32; c.depth = 2; c.shift_tokens = 1;
    const int n = 8, V = c.num_tokens, C = c.group_size, P = C + 5, T = 3 * C + 3;
    char err[256];
    Model *m = open_on(&c, DEVICE_CUDA, PRECISION_FP32, n, T, n);
    if (!m) { CHECK(0, "open"); return; }
    setenv("FLASH_CUDA_DECODE_PERSISTENT", "1", 1);   /* past the sequences it takes by default */
    model_init_params(m, 11, err, sizeof err);
    perturb(m);
    int *tok = malloc(sizeof(int) * n * (T + 1));
    random_tokens(tok, (size_t)n * (T + 1), V);
    for (int q = 1; q < n; q++) memcpy(tok + (size_t)q * (T + 1), tok, sizeof(int) * P);
    float *full = malloc(sizeof(float) * n * T * V), *lg = malloc(sizeof(float) * n * V);
    model_forward(m, tok, n, T, NULL, full);
    CHECK(model_decoder_open(m, n, P, err, sizeof err) == 0, "decoder_open: %s", err);
    ModelInfo di;
    model_info(m, &di);
    unsetenv("FLASH_CUDA_DECODE_PERSISTENT");
    CHECK(strncmp(di.decoder, "one persistent", 14) == 0, "path: %s", di.decoder);
    model_decoder_prefill(m, tok, P, lg);
    double worst = 0;
    int col[8];
    for (int t = P - 1; t < T; t++) {
        if (t >= P) {
            for (int q = 0; q < n; q++) col[q] = tok[(size_t)q * (T + 1) + t];
            model_decoder_step(m, col, lg);
        }
        for (int q = 0; q < n; q++) {
            double e = rel_err(lg + (size_t)q * V, full + ((size_t)q * T + t) * V, V);
            if (!(e <= worst)) worst = e;
        }
    }
    CHECK(worst < 1e-4, "persistent decoder, 8 sequences, d 256: rel %g", worst);
    printf("  persistent decoder, 8 sequences, d 256 s 64: rel %.3g\n", worst);
    model_decoder_close(m);
    free(tok); free(full); free(lg);
    model_close(m);
}

#ifdef FLASH_CUDA
/* Group sizes past what the attention kernels hold in shared memory are refused with a
   message (a launch beyond it would fail without one and leave a gradient unwritten). */
static void test_group_size_limits(void) {
    FlashConfig c = cases[0].cfg;
    char err[512];
    c.group_size = CUDA_MAX_GROUP + 1;
    ModelOptions mo = {.device = DEVICE_CUDA, .precision = PRECISION_FP32, .threads = 2, .max_B = 1,
                       .max_T = c.group_size, .step_seqs = 1};
    Model *m = model_open(&c, &mo, err, sizeof err);
    CHECK(m == NULL && strstr(err, "group_size") != NULL, "group_size %d: open gave %s", c.group_size,
          m ? "a model" : err);
    if (m) model_close(m);
    /* the largest the training kernels take, then the decoder's own limit (4 s + C + 256) */
    c.group_size = CUDA_MAX_GROUP;
    c.depth = 1;
    mo.max_T = c.group_size;
    m = model_open(&c, &mo, err, sizeof err);
    CHECK(m != NULL, "group_size %d: %s", c.group_size, err);
    if (m) {
        CHECK(model_decoder_open(m, 1, 1, err, sizeof err) != 0 && strstr(err, "shared memory") != NULL,
              "decoder at group_size %d: %s", c.group_size, err);
        model_close(m);
    }
}
#endif

/* Two runs from the same seed and data give the same bits. */
static void run_steps(Model *m, int steps, int A, int B, int T, int V, uint64_t seed, double *losses, float *params) {
    char err[256];
    model_init_params(m, 7, err, sizeof err);
    OptConfig o = {.peak_lr = 3e-3, .min_lr = 1e-4, .warmup = 3, .total = steps, .beta1 = 0.9, .beta2 = 0.999,
                   .eps = 1e-8, .weight_decay = 0.01, .clip_mode = CLIP_LOCAL, .clip = 0.1};
    int *tok = malloc(sizeof(int) * A * B * (T + 1));
    rng_state = seed;
    for (int s = 0; s < steps; s++) {
        random_tokens(tok, (size_t)A * B * (T + 1), V);
        for (size_t i = 0; i < (size_t)A * B * (T + 1); i++) tok[i] = tok[i] % 16;   /* learnable */
        losses[s] = model_accumulate(m, tok, A * B, B, T, A);
        model_update(m, &o, s + 1, lr_at(&o, s));
    }
    if (params) model_read(m, STATE_PARAMS, params, err, sizeof err);
    free(tok);
}

/* Sampling on the device (model_decoder_sample, through sample_decode) gives the bytes of
   sampling on the host (FLASH_CUDA_DECODE_SAMPLE=0) from the same decoder: the persistent
   kernel (1 and 2 sequences: sampled inside it), the fused path (3 sequences) and the cuBLAS
   path (12), each in fp32 and bf16, a prompt of whole groups (its
   logits from the parallel forward) and one that is not, 300 steps (two of the device's
   batches of steps), the temperature changed half-way (the graph captured again). */
static void test_decoder_sample_matches_host(void) {
    const int runs[8][3] = {{3, 0, 0}, {12, 0, 1}, {12, 1, 0}, {3, 1, 1},   /* nseq, bf16, whole groups */
                            {1, 0, 1}, {1, 1, 0}, {2, 0, 0}, {2, 1, 1}};
    for (int r = 0; r < 8; r++) {
        const Case *k = &cases[r % 2];
        const int ns = runs[r][0], V = k->cfg.num_tokens, C = k->cfg.group_size, steps = 150;
        const int P = runs[r][2] ? C : C + 3;
        char err[256];
        Model *m = open_on(&k->cfg, DEVICE_CUDA, runs[r][1] ? PRECISION_BF16 : PRECISION_FP32, 1, P + 1, 1);
        if (!m) { CHECK(0, "open"); continue; }
        model_init_params(m, 11 + r, err, sizeof err);
        perturb(m);
        int prompt[32], *tok[2];
        random_tokens(prompt, (size_t)P, V);
        float *lg = malloc(sizeof(float) * ns * V);
        double *u = malloc(sizeof(double) * ns * steps);
        int where[2][2];
        for (int dev = 0; dev < 2; dev++) {
            if (dev) unsetenv("FLASH_CUDA_DECODE_SAMPLE");
            else setenv("FLASH_CUDA_DECODE_SAMPLE", "0", 1);
            tok[dev] = malloc(sizeof(int) * ns * 2 * steps);
            CHECK(model_decoder_open(m, ns, P, err, sizeof err) == 0, "decoder_open: %s", err);
            ModelInfo di;
            model_info(m, &di);
            const char *want = ns <= 2 ? "one persistent" : ns <= 8 ? "fused kernels" : "cuBLAS";
            CHECK(strncmp(di.decoder, want, strlen(want)) == 0, "%d sequences: decoder path %s", ns, di.decoder);
            model_decoder_prefill(m, prompt, P, lg);
            Rng rng;
            rng_seed(&rng, 99);
            where[dev][0] = sample_decode(m, ns, steps, 1.0, &rng, lg, tok[dev], u);
            where[dev][1] = sample_decode(m, ns, steps, 0.6, &rng, lg, tok[dev] + (size_t)ns * steps, u);
            model_decoder_close(m);
        }
        unsetenv("FLASH_CUDA_DECODE_SAMPLE");
        int diff = 0;
        for (int i = 0; i < ns * 2 * steps; i++) diff += tok[0][i] != tok[1][i];
        CHECK(where[0][0] == 0 && where[0][1] == 0 && where[1][0] == 1 && where[1][1] == 1,
              "%d sequences: sampled on the host %d %d, on the device %d %d (want 0 0 1 1)", ns, where[0][0],
              where[0][1], where[1][0], where[1][1]);
        CHECK(diff == 0, "%s, %d sequences, %s, prompt %d: %d of %d bytes differ between the device's and the "
              "host's sampling", k->name, ns, runs[r][1] ? "bf16" : "fp32", P, diff, ns * 2 * steps);
        free(tok[0]); free(tok[1]); free(lg); free(u);
        model_close(m);
    }
}

static void test_deterministic(void) {
    const Case *k = &cases[0];
    const int steps = 5, A = 2, B = 2, T = k->T;
    Model *a = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, B, T, A * B);
    Model *b = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, B, T, A * B);
    if (!a || !b) { CHECK(0, "open"); model_close(a); model_close(b); return; }
    const size_t n = model_table(a)->total;
    double la[5], lb[5];
    float *pa = malloc(sizeof(float) * n), *pb = malloc(sizeof(float) * n);
    run_steps(a, steps, A, B, T, k->cfg.num_tokens, 42, la, pa);
    run_steps(b, steps, A, B, T, k->cfg.num_tokens, 42, lb, pb);
    CHECK(memcmp(la, lb, sizeof la) == 0, "losses differ between two runs");
    CHECK(memcmp(pa, pb, sizeof(float) * n) == 0, "parameters differ between two runs");
    free(pa); free(pb);
    model_close(a);
    model_close(b);
}

/* bf16: logits within 2e-2 of fp32; a short training run within 0.02 nats */
static void test_bf16(void) {
    const Case *k = &cases[0];
    const int B = 3, T = k->T, V = k->cfg.num_tokens;
    char err[256];
    Model *f = open_on(&k->cfg, DEVICE_CUDA, PRECISION_FP32, B, T, B);
    Model *h = open_on(&k->cfg, DEVICE_CUDA, PRECISION_BF16, B, T, B);
    if (!f || !h) { CHECK(0, "open"); model_close(f); model_close(h); return; }
    ModelInfo info;
    model_info(h, &info);
    CHECK(strstr(info.precision, "bf16") != NULL, "precision says %s", info.precision);
    model_init_params(f, 9, err, sizeof err);
    model_init_params(h, 9, err, sizeof err);
    int *tok = malloc(sizeof(int) * B * (T + 1));
    random_tokens(tok, (size_t)B * (T + 1), V);
    float *l1 = malloc(sizeof(float) * B * T * V), *l2 = malloc(sizeof(float) * B * T * V);
    model_forward(f, tok, B, T, NULL, l1);
    model_forward(h, tok, B, T, NULL, l2);
    double e = rel_err(l2, l1, (size_t)B * T * V);
    CHECK(e < 2e-2 && e > 0, "bf16 logits rel %g (0 would mean bf16 is not in use)", e);
    printf("  bf16 logits rel err %.3g\n", e);
    /* the decoder of a bf16 model against its forward (the parallel forward's prefill, then
       the steps): the persistent kernel (one sequence's default), then the cuBLAS path (many
       sequences' path, forced here), whose products take the bf16 twins */
    for (int path = 0; path < 2; path++) {
        if (path == 1) { setenv("FLASH_CUDA_DECODE_FUSED", "0", 1); setenv("FLASH_CUDA_DECODE_PERSISTENT", "0", 1); }
        const int C = k->cfg.group_size, P = C + 2, Td = 2 * C + 3;
        float *full = malloc(sizeof(float) * Td * V), *lg = malloc(sizeof(float) * V);
        int *seq = malloc(sizeof(int) * (Td + 1));
        random_tokens(seq, (size_t)Td + 1, V);
        Model *hd = open_on(&k->cfg, DEVICE_CUDA, PRECISION_BF16, 1, Td, 1);
        CHECK(hd != NULL, "open");
        if (hd) {
            model_init_params(hd, 9, err, sizeof err);
            model_forward(hd, seq, 1, Td, NULL, full);
            CHECK(model_decoder_open(hd, 1, P, err, sizeof err) == 0, "decoder: %s", err);
            ModelInfo di;
            model_info(hd, &di);
            const char *want = path ? "cuBLAS" : "one persistent";
            CHECK(strncmp(di.decoder, want, strlen(want)) == 0, "bf16 decoder path: %s", di.decoder);
            /* the cuBLAS path of bf16 holds the value cache and reads S in bf16 */
            if (path == 1) CHECK(strstr(di.decoder, "bf16 value cache") != NULL, "bf16 cache: %s", di.decoder);
            model_decoder_prefill(hd, seq, P, lg);
            double w = rel_err(lg, full + (size_t)(P - 1) * V, V);
            for (int t = P; t < Td; t++) {
                model_decoder_step(hd, seq + t, lg);
                double e2 = rel_err(lg, full + (size_t)t * V, V);
                if (!(e2 <= w)) w = e2;
            }
            CHECK(w < 3e-2, "bf16 decoder (%s) against the bf16 forward rel %g", want, w);
            printf("  bf16 decoder (%s) against the bf16 forward: rel err %.3g\n", want, w);
            model_close(hd);
        }
        free(full); free(lg); free(seq);
        unsetenv("FLASH_CUDA_DECODE_FUSED");
        unsetenv("FLASH_CUDA_DECODE_PERSISTENT");
    }
    double lf[30], lh[30];
    run_steps(f, 30, 1, B, T, V, 5, lf, NULL);
    run_steps(h, 30, 1, B, T, V, 5, lh, NULL);
    double worst = 0;
    for (int s = 0; s < 30; s++) if (!(fabs(lf[s] - lh[s]) <= worst)) worst = fabs(lf[s] - lh[s]);
    CHECK(worst < 0.02, "bf16 loss curve off by %g nats", worst);
    printf("  bf16 loss curve: worst difference %.4f nats over 30 steps (fp32 %.4f -> %.4f)\n", worst, lf[0], lf[29]);
    free(tok); free(l1); free(l2);
    model_close(f);
    model_close(h);
}

#define RUN_GPU(fn)                                                          \
    do {                                                                     \
        if (gpu) RUN(fn);                                                    \
        else { test_skipped_++; printf("skip %s (%s)\n", #fn, why); }       \
    } while (0)

int main(void) {
    make_cases();
    int gpu = have_gpu();
    const char *why = !model_cuda_built() ? "this build has no CUDA" : "no CUDA GPU is visible";
#ifdef FLASH_CUDA
    RUN_GPU(test_colsum);
    RUN_GPU(test_embed);
    RUN_GPU(test_scalenorm);
    RUN_GPU(test_layernorm);
    RUN_GPU(test_silu_gate);
    RUN_GPU(test_offset_scale_rotary);
    RUN_GPU(test_crossentropy);
    RUN_GPU(test_attention_pieces);
    RUN_GPU(test_bf16_gate_kernels);
    RUN_GPU(test_bf16_attention_kernels);
    RUN_GPU(test_group_size_limits);
    RUN_GPU(test_sample_kernel);
#else
    const char *kernel_tests[] = {"test_colsum", "test_embed", "test_scalenorm", "test_layernorm",
                                  "test_silu_gate", "test_offset_scale_rotary", "test_crossentropy",
                                  "test_attention_pieces", "test_bf16_gate_kernels",
                                  "test_bf16_attention_kernels", "test_group_size_limits", "test_sample_kernel"};
    for (size_t i = 0; i < sizeof kernel_tests / sizeof kernel_tests[0]; i++) {
        test_skipped_++;
        printf("skip %s (%s)\n", kernel_tests[i], why);
    }
#endif
    RUN_GPU(test_model_matches_cpu);
    RUN_GPU(test_micro_batch_split);
    RUN_GPU(test_decoder_matches_forward);
    RUN_GPU(test_decoder_persistent_wide);
    RUN_GPU(test_decoder_sample_matches_host);
    RUN_GPU(test_deterministic);
    RUN_GPU(test_bf16);
    printf("RESULT passed=%d failed=%d skipped=%d\n", test_passed_, test_failed_, test_skipped_);
    return test_failed_ ? 1 : 0;
}
