/* autograd/cpu/linear.c: the Linear layers (y = x W^T + b, alone, with a residual, with SiLU) and SiLU: forward
 * and backward. How their products use the threads is autograd/cpu/gemm.c. */
#include "ops.h"
#include "vmath.h"
#include "gemm.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* dst[j] += sum_n src[n*ld + j] for j < M, as dst += src^T 1 through BLAS's transposed
   matrix-vector product, a block of rows at a time. (Columns summed by our own loops walk
   the rows a row's width apart, a new page for nearly every read.) Like every BLAS call here, it gives the same bits on every run with the same
   thread count, which bit-exact resume needs. */
#define ONES_ROWS 4096
static real ones_rows[ONES_ROWS];
static void colsum_add(real *dst, const real *src, int N, int M, int ld) {
    if (ones_rows[0] != 1)
        for (int i = 0; i < ONES_ROWS; i++) ones_rows[i] = 1;
    for (int n0 = 0; n0 < N; n0 += ONES_ROWS) {
        int rows = N - n0 < ONES_ROWS ? N - n0 : ONES_ROWS;
        gemv(1, rows, M, 1, src + (size_t)n0 * ld, ld, ones_rows, 1, dst);
    }
}


/* y = x W^T + b (+ res): y starts as b (+ res), one pass, and the product adds to it */
void linear_forward_add(real *y, const real *x, const real *W, const real *b, const real *res,
                        int N, int in, int out) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        real *yn = y + (size_t)n * out;
        if (!res) {
            memcpy(yn, b, sizeof(real) * out);
            continue;
        }
        const real *rn = res + (size_t)n * out;
#pragma omp simd
        for (int j = 0; j < out; j++) yn[j] = rn[j] + b[j];
    }
    gemm_big(0, 1, N, out, in, 1, x, in, W, in, 1, y, out, NULL);
}

void linear_forward(real *y, const real *x, const real *W, const real *b, int N, int in, int out) {
    linear_forward_add(y, x, W, b, NULL, N, in, out);
}

/* u = x W^T + b, y = silu(u). On the tiles way the bias and silu are done on each tile
   right after its product, while it is in cache, instead of a bias pass before the product
   and a silu pass reading u back after it. (With beta = 0 OpenBLAS first zeroes C, but only
   the tile, in cache.) With OpenBLAS's threading nothing is saved: its zeroing of all of C
   replaces the bias pass, and one pass after the product does bias and silu. The same
   arithmetic on every element either way: the bits depend only on the product's. */
typedef struct {
    real *u, *y;
    const real *b;
    int ld;
} BiasSilu;

static void bias_silu_tile(void *ctx, int m0, int m1, int n0, int n1) {
    const BiasSilu *t = ctx;
    for (int i = m0; i < m1; i++) {
        real *u = t->u + (size_t)i * t->ld, *y = t->y + (size_t)i * t->ld;
#pragma omp simd
        for (int j = n0; j < n1; j++) {
            const real v = u[j] + t->b[j];
            u[j] = v;
            y[j] = silu(v);
        }
    }
}

void linear_silu_forward(real *u, real *y, const real *x, const real *W, const real *b, int N,
                         int in, int out) {
    BiasSilu t = {u, y, b, out};
    const int way = gemm_big_way(0, N, out, in);
    if (way == GEMM_TILES) {
        TileEpilogue epi = {bias_silu_tile, &t};
        gemm_tiles(0, 1, N, out, in, 1, x, in, W, in, 0, u, out,
                   TILES_PER_THREAD * omp_get_max_threads(), &epi);
        return;
    }
    gemm_way(way, 0, 1, N, out, in, 1, x, in, W, in, 0, u, out, omp_get_max_threads(), NULL);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) bias_silu_tile(&t, n, n + 1, 0, out);
}

/* y = x W^T + b:  dx = dy W;  dW += dy^T x;  db += colsum(dy) */
void linear_backward(real *dx, real dx_beta, real *dW, real *db, const real *dy, const real *x,
                     const real *W, int N, int in, int out, const GemmScratch *ws) {
    if (dx) gemm_big(0, 0, N, in, out, 1, dy, out, W, in, dx_beta, dx, in, NULL);
    gemm_big(1, 0, out, in, N, 1, dy, out, x, in, 1, dW, in, ws);
    colsum_add(db, dy, N, out, out);
}

/* =================================== silu ========================================== */

void silu_forward(real *y, const real *u, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = silu(u[i]);
}

/* silu'(u) = sig(u) (1 + u (1 - sig(u))) */
void silu_backward(real *du, const real *dy, const real *u, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        real sg = sigmoid(u[i]);
        du[i] = dy[i] * sg * (1 + u[i] * (1 - sg));
    }
}
