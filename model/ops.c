/* model/ops.c: forward/backward pairs of every FLASHTransformer layer (see ops.h).
 * Each backward's key line of derivation sits beside the code that implements it. */
#include "ops.h"
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp for the element-wise loops. libm's expf is a call the compiler cannot vectorize
   (without -ffast-math), and silu alone made 13% of a training step. This is Cephes'
   single-precision exp: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 polynomial,
   2^n by the exponent bits; relative error about 1e-7 (1 ulp). Inline and branch-free,
   so the loops below become AVX-512 code. The double build (gradient checks) uses exp. */
#ifdef FLASH_DOUBLE
#define VEXP(x) exp(x)
#else
static inline float fast_expf(float x) {
    /* below -87 the result is exactly 0, as libm's expf gives from -104 on: a clamped
       1e-38 would make the products that use it denormal, which costs Intel CPUs a
       microcode assist per operation */
    const int underflow = x < -87.0f;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* n = round(x / ln2): adding and removing 1.5 * 2^23 rounds to the nearest integer
       (a floorf call would stop the loop from vectorizing) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* NaN input: the exponent is taken as 0 (a NaN-to-int conversion is undefined) and the
       polynomial, NaN already, carries the NaN out */
    n = n == n ? n : 0.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return underflow ? 0.0f : p * scale;
}
#define VEXP(x) fast_expf(x)
#endif

/* silu and the logistic sigmoid, vectorizable */
static inline real silu(real u) { return u / (1 + VEXP(-u)); }
static inline real sigmoid(real u) { return 1 / (1 + VEXP(-u)); }

/* erf for the laplace attention function, vectorizable: Abramowitz & Stegun 7.1.26,
   absolute error below 1.5e-7 (float32 rounding near 1 is 6e-8). Double build: libm. */
#ifdef FLASH_DOUBLE
#define VERF(x) erf(x)
#else
static inline float fast_erff(float x) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t +
               0.254829592f) * t;
    float r = 1.0f - y * fast_expf(-ax * ax);
    return x < 0 ? -r : r;
}
#define VERF(x) fast_erff(x)
#endif

#define NORM_EPS 1e-5       /* ScaleNorm and LayerNorm eps (flash-spec.md) */
#define COL_BLOCK 16        /* columns per task when reducing over rows: one cache line */
/* Sums over rows are cut into this many fixed chunks, each summed in order and the chunks
   then added in order: the result does not depend on thread count or timing, which
   bit-exact resume needs (OpenMP's reduction clause combines in no fixed order). */
#define RED_CHUNKS 64
#define CHUNK_LO(c, n) ((size_t)(n) * (size_t)(c) / RED_CHUNKS)

/* dst[j] += sum_n src[n*ld + j] for j < M, as dst += src^T 1 through BLAS's transposed
   matrix-vector product, a block of rows at a time. (Columns summed by our own loops walked
   the rows 8 KB apart, a new page for nearly every read, and cost ~10% of the to_hidden
   backward.) Like every BLAS call here, it gives the same bits on every run with the same
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

/* ================================ embedding ======================================== */

void pos_table_fill(real *pos_table, const real *inv_freq, int T, int d) {
    int half = d / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            /* angle in double: the reference computes t * w in its own precision; a double
               angle keeps float32 results within rounding of it for any t we train on. */
            double a = (double)t * (double)inv_freq[i];
            pos_table[(size_t)t * d + i] = (real)sin(a);
            pos_table[(size_t)t * d + half + i] = (real)cos(a);
        }
}

void embed_forward(real *h, const int *tokens, int tok_stride, const real *tok_emb,
                   const real *pos_scale, const real *pos_table, int B, int T, int d) {
    const real scale = pos_scale[0];
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *e = tok_emb + (size_t)tokens[b * tok_stride + t] * d;
            const real *p = pos_table + (size_t)t * d;
            real *o = h + ((size_t)b * T + t) * d;
            for (int i = 0; i < d; i++) o[i] = e[i] + scale * p[i];
        }
}

/* d tok_emb[x_n] += dh_n;  d scale = sum_n dh_n . sinusoid_t */
void embed_backward(real *d_tok_emb, real *d_pos_scale, const real *dh, const int *tokens,
                    int tok_stride, const real *pos_table, int B, int T, int d) {
    int nblk = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const real *g = dh + ((size_t)b * T + t) * d;
                real *e = d_tok_emb + (size_t)tokens[b * tok_stride + t] * d;
                for (int j = j0; j < j1; j++) e[j] += g[j];
            }
    }
    const size_t N = (size_t)B * T;
    double part[RED_CHUNKS] = {0};
#pragma omp parallel for schedule(static)
    for (int c = 0; c < RED_CHUNKS; c++)
        for (size_t n = CHUNK_LO(c, N); n < CHUNK_LO(c + 1, N); n++) {
            const real *g = dh + n * d, *p = pos_table + (n % (size_t)T) * d;
            for (int j = 0; j < d; j++) part[c] += (double)g[j] * p[j];
        }
    double dscale = 0;
    for (int c = 0; c < RED_CHUNKS; c++) dscale += part[c];
    d_pos_scale[0] += (real)dscale;
}

/* ================================== norms ========================================== */

void scalenorm_forward(real *y, real *stat, const real *x, const real *g, int N, int d) {
    const real gain = g[0];
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d;
        double ss = 0;
        for (int i = 0; i < d; i++) ss += (double)xr[i] * xr[i];
        double norm = sqrt(ss / d);               /* ||x|| * d^-1/2 */
        real r = (real)(1.0 / (norm > NORM_EPS ? norm : NORM_EPS));
        stat[n] = r;
        for (int i = 0; i < d; i++) y[(size_t)n * d + i] = xr[i] * r * gain;
    }
}

/* y = g x r, r = 1/n, n = ||x||/sqrt(d):  dx = g r (dy - x (x.dy) r^2 / d)  (n > eps);
   dx = g r dy when the clamp is active;  dg = sum dy . x r */
void scalenorm_backward(real *dx, real *dg, const real *dy, const real *x, const real *stat,
                        const real *g, int N, int d) {
    const real gain = g[0];
    double part[RED_CHUNKS] = {0};
#pragma omp parallel for schedule(static)
    for (int c = 0; c < RED_CHUNKS; c++)
    for (size_t n = CHUNK_LO(c, N); n < CHUNK_LO(c + 1, N); n++) {
        const real *xr = x + (size_t)n * d, *dyr = dy + (size_t)n * d;
        real *dxr = dx + (size_t)n * d;
        const real r = stat[n];
        double ss = 0, xdy = 0;
        for (int i = 0; i < d; i++) { ss += (double)xr[i] * xr[i]; xdy += (double)xr[i] * dyr[i]; }
        part[c] += xdy * r;
        int clamped = sqrt(ss / d) < NORM_EPS;
        real cr = clamped ? 0 : (real)(xdy * r * r / d);
        for (int i = 0; i < d; i++) dxr[i] += gain * r * (dyr[i] - xr[i] * cr);
    }
    double dgain = 0;
    for (int c = 0; c < RED_CHUNKS; c++) dgain += part[c];
    dg[0] += (real)dgain;
}

void layernorm_forward(real *y, real *stat, const real *x, const real *w, const real *b,
                       int N, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d;
        double mean = 0, var = 0;
        for (int i = 0; i < d; i++) mean += xr[i];
        mean /= d;
        for (int i = 0; i < d; i++) { double c = xr[i] - mean; var += c * c; }
        var /= d;                                   /* biased, as nn.LayerNorm */
        real rstd = (real)(1.0 / sqrt(var + NORM_EPS));
        stat[2 * n] = (real)mean;
        stat[2 * n + 1] = rstd;
        for (int i = 0; i < d; i++)
            y[(size_t)n * d + i] = (xr[i] - (real)mean) * rstd * w[i] + b[i];
    }
}

/* xhat = (x - mean) rstd, y = xhat w + b, g = dy w:
   dx = rstd (g - mean(g) - xhat mean(g xhat));  dw = sum dy xhat;  db = sum dy */
void layernorm_backward(real *dx, real *dw, real *db, const real *dy, const real *x,
                        const real *stat, const real *w, int N, int d) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const real *xr = x + (size_t)n * d, *dyr = dy + (size_t)n * d;
        real *dxr = dx + (size_t)n * d;
        const real mean = stat[2 * n], rstd = stat[2 * n + 1];
        double gsum = 0, gxsum = 0;
        for (int i = 0; i < d; i++) {
            double gi = (double)dyr[i] * w[i], xh = (double)(xr[i] - mean) * rstd;
            gsum += gi;
            gxsum += gi * xh;
        }
        real gm = (real)(gsum / d), gxm = (real)(gxsum / d);
        for (int i = 0; i < d; i++) {
            real xh = (xr[i] - mean) * rstd;
            dxr[i] += rstd * (dyr[i] * w[i] - gm - xh * gxm);
        }
    }
    int nblk = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int n = 0; n < N; n++) {
            const real mean = stat[2 * n], rstd = stat[2 * n + 1];
            for (int j = j0; j < j1; j++) {
                real g = dy[(size_t)n * d + j];
                dw[j] += g * (x[(size_t)n * d + j] - mean) * rstd;
                db[j] += g;
            }
        }
    }
}

/* ================================ token shift ====================================== */

void token_shift_forward(real *x, int B, int T, int d) {
    const int half = (d + 1) / 2;                   /* chunk(2) puts ceil(d/2) first */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        real *xb = x + (size_t)b * T * d;
        for (int t = T - 1; t >= 1; t--)
            memcpy(xb + (size_t)t * d, xb + (size_t)(t - 1) * d, sizeof(real) * half);
        memset(xb, 0, sizeof(real) * half);
    }
}

/* y[t, :h] = x[t-1, :h]  =>  dx[t, :h] = dy[t+1, :h], dx[T-1, :h] = 0 */
void token_shift_backward(real *dx, int B, int T, int d) {
    const int half = (d + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        real *db = dx + (size_t)b * T * d;
        for (int t = 0; t + 1 < T; t++)
            memcpy(db + (size_t)t * d, db + (size_t)(t + 1) * d, sizeof(real) * half);
        memset(db + (size_t)(T - 1) * d, 0, sizeof(real) * half);
    }
}

/* ================================== linear ========================================= */

/* The Linear layers' products, two ways.

   OPENBLAS: one call, OpenBLAS's own threading. Its threads share one packed copy of each
   operand panel and wait for one another at every panel.
   TILES: C cut into a grid of about 4 tiles per thread, handed out dynamically, each tile a
   single-threaded GEMM. Every tile packs its own rows of op(A) and columns of op(B) (more
   copying), but no thread waits for another until the end, and a core that runs slowly
   (another tenant on it) takes fewer tiles instead of holding everyone up.

   Measured on the device's 16-core Xeon (docs/performance-notes.md): at 16 threads the tiles
   ran the step's big shapes at 1,095-1,376 GFLOP/s where OpenBLAS's threading reached
   950-1,154, and the step went from 7,380-7,680 to 7,918-9,113 tokens/s in the same run; at
   2 and 4 threads OpenBLAS's way was as fast or faster. So: tiles from TILES_MIN_THREADS up,
   except for the weight gradients (op(A) = dy^T, K = all B*T rows): each of their tiles
   packs K-long panels of both operands, and OpenBLAS's threading ran them faster (16
   threads: step median 8,790 against 8,381 tokens/s with them as tiles, 3 rounds each).
   They now split K instead (SPLITK below), faster than both.
   Tiles per thread: 2, 4 and 8 gave 8,428, 8,381 and 8,395 (the same within noise).
   The choice depends on the thread count only, never on timing: the two ways can round
   differently (OpenBLAS uses other kernels for small tiles), and a resumed run must make the
   same choice as the run it continues. */
#define TILE_ROW_UNIT 16          /* AVX-512 sgemm tile height: tiles are whole multiples */
#define TILE_COL_UNIT 16
#define TILES_PER_THREAD 4
#define TILES_MIN_THREADS 8
#define TILES_MIN_FLOP (1 << 24)  /* smaller products (decoding) just call OpenBLAS */
int gemm_partition = GEMM_AUTO;

/* the grid: pm x pn >= want tiles, with the least packing (pn M + pm N) */
static void tile_grid(int M, int N, int want, int *pm_out, int *pn_out) {
    const int um = (M + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT, un = (N + TILE_COL_UNIT - 1) / TILE_COL_UNIT;
    int best_pm = 1, best_pn = 1;
    double best_cost = -1;
    for (int pm = 1; pm <= um && pm <= want; pm++) {
        int pn = (want + pm - 1) / pm;
        if (pn > un) continue;
        double cost = (double)pn * M + (double)pm * N;
        if (best_cost < 0 || cost < best_cost) best_cost = cost, best_pm = pm, best_pn = pn;
    }
    if (best_cost < 0) best_pm = um < want ? um : want, best_pn = 1;  /* too few columns */
    *pm_out = best_pm;
    *pn_out = best_pn;
}

/* Work done on each tile of C right after its product, while the tile is in cache:
   rows m0..m1, columns n0..n1. */
typedef struct {
    void (*fn)(void *ctx, int m0, int m1, int n0, int n1);
    void *ctx;
} TileEpilogue;

static void gemm_tiles(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                       const real *B, int ldb, real beta, real *C, int ldc, int tiles,
                       const TileEpilogue *epi) {
    int pm, pn;
    tile_grid(M, N, tiles, &pm, &pn);
    const int um = (M + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT, un = (N + TILE_COL_UNIT - 1) / TILE_COL_UNIT;
    const int blas_saved = blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int tile = 0; tile < pm * pn; tile++) {
        const int i = tile / pn, j = tile % pn;
        int m0 = (int)((long)um * i / pm) * TILE_ROW_UNIT, m1 = (int)((long)um * (i + 1) / pm) * TILE_ROW_UNIT;
        int n0 = (int)((long)un * j / pn) * TILE_COL_UNIT, n1 = (int)((long)un * (j + 1) / pn) * TILE_COL_UNIT;
        if (m1 > M) m1 = M;
        if (n1 > N) n1 = N;
        /* rows m0.. of op(A) are rows of A, or its columns when transposed; likewise the
           columns n0.. of op(B) */
        const real *Ab = ta ? A + m0 : A + (size_t)m0 * lda;
        const real *Bb = tb ? B + (size_t)n0 * ldb : B + n0;
        gemm(ta, tb, m1 - m0, n1 - n0, K, alpha, Ab, lda, Bb, ldb, beta,
             C + (size_t)m0 * ldc + n0, ldc);
        if (epi) epi->fn(epi->ctx, m0, m1, n0, n1);
    }
    blas_serial_end(blas_saved);
}

/* SPLITK, for the weight gradients (op(A) = dy^T, K = all B*T rows): K cut into one chunk per
   thread, each chunk's product a single-threaded GEMM into its own partial C; the partials are
   then added to C in chunk order, so the result depends on the thread count but not on which
   thread ran what. Each product is then short in K and needs no other thread, at the price
   of one pass over threads x M x N partial sums. The items are (chunk, half of C's rows),
   handed out dynamically, so that a slow core takes fewer. On the Xeon at 16 threads the
   step went from 8,544 to 9,190 tokens/s (medians of 3, same run) against OpenBLAS's
   threading; at 2 threads it was slower there, so it too starts at TILES_MIN_THREADS. */
#define SPLITK_MIN_ROWS 64        /* no chunk shorter than this: fewer chunks instead */
int gemm_splitk_chunks(int K, int threads) {
    int chunks = K / SPLITK_MIN_ROWS;
    if (chunks > threads) chunks = threads;
    return chunks < 1 ? 1 : chunks;
}

static void gemm_splitk(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                        const real *B, int ldb, real beta, real *C, int ldc, int threads,
                        const GemmScratch *ws) {
    const int chunks = gemm_splitk_chunks(K, threads);
    const size_t MN = (size_t)M * N;
    /* the partial sums go to the caller's buffer; without room, one OpenBLAS call instead
       (the same sum, other rounding) */
    if (!ws || ws->floats < chunks * MN) {
        gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    real *splitk_partial = ws->buf;
    const int halves = M >= 2 * TILE_ROW_UNIT ? 2 : 1;
    const int mid = halves == 2 ? (M / 2 + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT * TILE_ROW_UNIT : M;
    const int blas_saved = blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < chunks * halves; item++) {
        const int c = item / halves, h = item % halves;
        const int k0 = (int)((long)K * c / chunks), k1 = (int)((long)K * (c + 1) / chunks);
        const int m0 = h ? mid : 0, m1 = h || halves == 1 ? M : mid;
        /* op(A) rows m0..m1, columns k0..k1; op(B) rows k0..k1 */
        const real *Ab = ta ? A + (size_t)k0 * lda + m0 : A + (size_t)m0 * lda + k0;
        const real *Bb = tb ? B + k0 : B + (size_t)k0 * ldb;
        gemm(ta, tb, m1 - m0, N, k1 - k0, alpha, Ab, lda, Bb, ldb, 0,
             splitk_partial + c * MN + (size_t)m0 * N, N);
    }
    blas_serial_end(blas_saved);
    /* C = beta C + partial_0 + partial_1 + ..., in that order for every element */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        real *c = C + (size_t)i * ldc;
        const real *p = splitk_partial + (size_t)i * N;
        if (beta == 0) memcpy(c, p, sizeof(real) * N);
        else {
#pragma omp simd
            for (int j = 0; j < N; j++) c[j] = beta * c[j] + p[j];
        }
        for (int ch = 1; ch < chunks; ch++) {
            const real *q = p + ch * MN;
#pragma omp simd
            for (int j = 0; j < N; j++) c[j] += q[j];
        }
    }
}

void gemm_way(int way, int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
              const real *B, int ldb, real beta, real *C, int ldc, int T, const GemmScratch *ws) {
    if (way == GEMM_OPENBLAS) gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (way == GEMM_SPLITK) gemm_splitk(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, T, ws);
    else gemm_tiles(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, TILES_PER_THREAD * T, NULL);
}

int gemm_partition_wgrad = GEMM_AUTO;

int gemm_way_for(int threads, int trans_a) {
    if (trans_a && gemm_partition_wgrad != GEMM_AUTO) return gemm_partition_wgrad;
    if (gemm_partition != GEMM_AUTO) return gemm_partition;
    if (threads < TILES_MIN_THREADS) return GEMM_OPENBLAS;
    return trans_a ? GEMM_SPLITK : GEMM_TILES;
}

static int gemm_big_way(int ta, int M, int N, int K) {
    const int T = omp_get_max_threads();
    return T < 2 || omp_in_parallel() || 2.0 * M * N * K < TILES_MIN_FLOP ? GEMM_OPENBLAS
                                                                           : gemm_way_for(T, ta);
}

static void gemm_big(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                     const real *B, int ldb, real beta, real *C, int ldc, const GemmScratch *ws) {
    gemm_way(gemm_big_way(ta, M, N, K), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
             omp_get_max_threads(), ws);
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

/* ============================ offset-scale + rotary ================================ */

void rotary_table_fill(real *rot_cos, real *rot_sin, const real *freqs, int T, int r) {
    int half = r / 2;
    for (int t = 0; t < T; t++)
        for (int j = 0; j < half; j++) {
            double a = (double)t * (double)freqs[j];
            rot_cos[(size_t)t * half + j] = (real)cos(a);
            rot_sin[(size_t)t * half + j] = (real)sin(a);
        }
}

void offset_scale_rotary_forward(real *qk4, const real *z, int z_stride, const real *gamma,
                                 const real *beta, const real *rot_cos, const real *rot_sin,
                                 int B, int T, int s, int r) {
    const size_t N = (size_t)B * T;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const int t = (int)(n % (size_t)T);
        const real *zr = z + n * z_stride, *c = rot_cos + (size_t)t * (r / 2), *sn = rot_sin + (size_t)t * (r / 2);
        for (int k = 0; k < 4; k++) {
            real *o = qk4 + (size_t)k * N * s + n * s;
            for (int f = 0; f < s; f++) o[f] = zr[f] * gamma[k * s + f] + beta[k * s + f];
            /* interleaved pairs (2j, 2j+1): (u, w) -> (u cos - w sin, w cos + u sin) */
            for (int j = 0; j < r / 2; j++) {
                real u = o[2 * j], w = o[2 * j + 1];
                o[2 * j] = u * c[j] - w * sn[j];
                o[2 * j + 1] = w * c[j] + u * sn[j];
            }
        }
    }
}

/* rotation back (transpose): du = dy1 cos + dy2 sin, dw = dy2 cos - dy1 sin;
   o_k = z gamma_k + beta_k:  dz = sum_k do_k gamma_k;  dgamma_k += sum_n do_k z;  dbeta_k += sum_n do_k */
void offset_scale_rotary_backward(real *dz, real *dgamma, real *dbeta, real *d_qk4,
                                  const real *z, int z_stride, const real *gamma,
                                  const real *rot_cos, const real *rot_sin, int B, int T, int s, int r) {
    const size_t N = (size_t)B * T;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const int t = (int)(n % (size_t)T);
        const real *c = rot_cos + (size_t)t * (r / 2), *sn = rot_sin + (size_t)t * (r / 2);
        real *dzr = dz + n * z_stride;
        for (int f = 0; f < s; f++) dzr[f] = 0;
        for (int k = 0; k < 4; k++) {
            real *g = d_qk4 + (size_t)k * N * s + n * s;
            for (int j = 0; j < r / 2; j++) {
                real g1 = g[2 * j], g2 = g[2 * j + 1];
                g[2 * j] = g1 * c[j] + g2 * sn[j];
                g[2 * j + 1] = g2 * c[j] - g1 * sn[j];
            }
            for (int f = 0; f < s; f++) dzr[f] += g[f] * gamma[k * s + f];
        }
    }
    int nblk = (s + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for collapse(2) schedule(static)
    for (int k = 0; k < 4; k++)
        for (int blk = 0; blk < nblk; blk++) {
            int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < s ? j0 + COL_BLOCK : s;
            real ag[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            const real *g = d_qk4 + (size_t)k * N * s;
            for (size_t n = 0; n < N; n++)
                for (int j = j0; j < j1; j++) {
                    ag[j - j0] += g[n * s + j] * z[n * z_stride + j];
                    ab[j - j0] += g[n * s + j];
                }
            for (int j = j0; j < j1; j++) { dgamma[k * s + j] += ag[j - j0]; dbeta[k * s + j] += ab[j - j0]; }
        }
}

/* ================================ attention ======================================== */

/* T5RelativePositionBias, causal, 32 buckets, max distance 128: exact below 16, then
   logarithmic, computed in float32 as the reference does (flash-spec.md step h). */
int rel_pos_bucket(int n) {
    if (n < 0) n = 0;
    if (n < 16) return n;
    int b = 16 + (int)(logf((float)n / 16.0f) / 2.0794415f * 16.0f);
    return b < 31 ? b : 31;
}

/* Laplace attention function: mu = sqrt(1/2), sigma = sqrt(1/(4 pi)). */
#define LAPLACE_MU 0.70710678118654752440
#define LAPLACE_SIGMA 0.28209479177387814347
static inline real phi(real x, int laplace) {
    if (laplace) return (real)0.5 * (1 + VERF((x - (real)LAPLACE_MU) / (real)(LAPLACE_SIGMA * 1.41421356237309504880)));
    return x > 0 ? x * x : 0;
}
/* laplace: phi' = exp(-(x-mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi));  relu^2: phi' = 2 relu(x) */
static inline real phi_grad(real x, int laplace) {
    if (laplace) {
        real u = x - (real)LAPLACE_MU;
        return VEXP(-u * u / (real)(2 * LAPLACE_SIGMA * LAPLACE_SIGMA)) /
               (real)(LAPLACE_SIGMA * 2.50662827463100050242);
    }
    return x > 0 ? 2 * x : 0;
}

real attn_phi(real x, int laplace) { return phi(x, laplace); }

int attn_block_rows = 64;
#define ATT_BLOCK attn_block_rows
/* rows in the block that starts at row i0 of a group of Cg rows (the last one is short) */
static inline int block_len(int Cg, int i0) { return Cg - i0 < ATT_BLOCK ? Cg - i0 : ATT_BLOCK; }

/* Rows of group g of sequence b: n0 = b*T + g*C, Cg of them (the last group is short;
   its padding rows would be zero queries/keys/values, masked, so they are never formed). */
#define GROUP_ROWS(a, task, n0, Cg)                                         \
    const int b_ = (task) / (a)->G, g_ = (task) % (a)->G;                   \
    const size_t n0 = (size_t)b_ * (a)->T + (size_t)g_ * (a)->C;            \
    const int Cg = (a)->T - g_ * (a)->C < (a)->C ? (a)->T - g_ * (a)->C : (a)->C

void attention_forward(real *att, real *sim, real *attn, real *kv, const real *qk4,
                       const real *v, int v_stride, const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T;
    const real inv_C = (real)1 / C, bias_scale = R_SQRT((real)s);
    const real *Qq = qk4, *Ql = qk4 + N * s, *Kq = qk4 + 2 * N * s, *Kl = qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();
    /* the bias depends on the distance i - j only: one table, not a log per pair */
    real *bias_dist = a->bias_dist;
    for (int k = 0; k < C; k++) bias_dist[k] = bias_scale * a->rel_bias[rel_pos_bucket(k)];

    /* quadratic part and each group's KV = lin_k^T v / C. Work items: per group, its KV
       product and each causal row block, the largest first, handed out dynamically: with 16
       threads and 16 groups, one item per group left every thread waiting for the slowest
       core. The row block [i0, i0+ib) needs keys [0, i0+ib) only, so its products stop at
       the diagonal block (with 64-row blocks and C = 256, 10/16 of the full square). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * (nblk + 1); item++) {
        const int rank = item / ntask, task = item % ntask;
        GROUP_ROWS(a, task, n0, Cg);
        const real *V = v + n0 * v_stride;
        if (rank == 0) {
            gemm(1, 0, s, e, Cg, inv_C, Kl + n0 * s, s, V, v_stride, 0, kv + (size_t)task * s * e, e);
            continue;
        }
        const int i0 = (nblk - rank) * ATT_BLOCK;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        real *S = sim + (size_t)task * C * C, *A = attn + (size_t)task * C * C;
        /* sim = quad_q quad_k^T / C + sqrt(s) bias[bucket(i-j)] */
        gemm(0, 1, ib, nk, s, inv_C, Qq + (n0 + i0) * s, s, Kq + n0 * s, s, 0, S + (size_t)i0 * C, C);
        for (int i = i0; i < i0 + ib; i++) {
            real *Si = S + (size_t)i * C, *Ai = A + (size_t)i * C;
            if (a->laplace) {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 1); }
            } else {
#pragma omp simd
                for (int j = 0; j <= i; j++) { Si[j] += bias_dist[i - j]; Ai[j] = phi(Si[j], 0); }
            }
            for (int j = i + 1; j < nk; j++) Si[j] = Ai[j] = 0;   /* causal mask */
        }
        gemm(0, 0, ib, e, nk, 1, A + (size_t)i0 * C, C, V, v_stride, 0, att + (n0 + i0) * e, e);
    }
    /* exclusive prefix sum over groups: S_0 = 0, S_g = KV_0 + ... + KV_{g-1} */
    const size_t se = (size_t)s * e;
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * se; idx++) {
        size_t b = idx / se, k = idx % se;
        real run = 0;
        for (int g = 0; g < a->G; g++) {
            real *p = kv + ((size_t)b * a->G + g) * se + k;
            real here = *p;
            *p = run;
            run += here;
        }
    }
    /* lin_out = lin_q S_g, added to quad_out (per group: row blocks would pack S_g again
       for each block) */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        GROUP_ROWS(a, task, n0, Cg);
        gemm(0, 0, Cg, e, s, 1, Ql + n0 * s, s, kv + (size_t)task * se, e, 1, att + n0 * e, e);
    }
    blas_serial_end(blas_saved);
}

void attention_backward(real *dv, int v_stride, real *d_qk4, real *d_rel_bias, const real *d_att,
                        const real *sim, const real *attn, const real *kv, const real *qk4,
                        const real *v, real *d_kv, real *d_rel_partial, real *dsim,
                        const AttnShape *a) {
    const int C = a->C, s = a->s, e = a->e, ntask = a->B * a->G;
    const size_t N = (size_t)a->B * a->T, se = (size_t)s * e;
    const real inv_C = (real)1 / C, bias_scale = R_SQRT((real)s);
    const real *Qq = qk4, *Ql = qk4 + N * s, *Kq = qk4 + 2 * N * s, *Kl = qk4 + 3 * N * s;
    real *dQq = d_qk4, *dQl = d_qk4 + N * s, *dKq = d_qk4 + 2 * N * s, *dKl = d_qk4 + 3 * N * s;
    const int blas_saved = blas_serial_begin();

    /* lin_out_g = lin_q_g S_g:  dS_g = lin_q_g^T d_att_g */
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < ntask; task++) {
        GROUP_ROWS(a, task, n0, Cg);
        gemm(1, 0, s, e, Cg, 1, Ql + n0 * s, s, d_att + n0 * e, e, 0, d_kv + (size_t)task * se, e);
    }
    /* S_g = sum_{g' < g} KV_g'  =>  dKV_g = sum_{g' > g} dS_g' (exclusive suffix sum) */
#pragma omp parallel for schedule(static)
    for (size_t idx = 0; idx < (size_t)a->B * se; idx++) {
        size_t b = idx / se, k = idx % se;
        real run = 0;
        for (int g = a->G - 1; g >= 0; g--) {
            real *p = d_kv + ((size_t)b * a->G + g) * se + k;
            real here = *p;
            *p = run;
            run += here;
        }
    }
    /* Two passes of work items, handed out dynamically, largest first, so that no thread
       waits long for a slow one (one item per group left 16 threads waiting on the slowest
       core). Pass 1: each group's linear part (it writes dV first), and each query row block
       i of the quadratic part (its dsim rows, kept per group, and dQ). Pass 2: each key block
       j (dV, dK: sums over the query rows i >= j). The linear part stays per group: cut into
       row blocks, each would pack S_g and dKV again (measured slower on 2 cores). */
    const int nblk = (C + ATT_BLOCK - 1) / ATT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * (nblk + 1); item++) {
        const int rank = item / ntask, task = item % ntask;
        GROUP_ROWS(a, task, n0, Cg);
        const real *dO = d_att + n0 * e;
        if (rank == 0) {
            const real *Sg = kv + (size_t)task * se, *dKV = d_kv + (size_t)task * se;
            /* lin_out = lin_q S_g:  d lin_q = dO S_g^T */
            gemm(0, 1, Cg, s, e, 1, dO, e, Sg, e, 0, dQl + n0 * s, s);
            /* KV_g = lin_k^T V / C:  d lin_k = V dKV^T / C;  dV = lin_k dKV / C (+ pass 2) */
            gemm(0, 1, Cg, s, e, inv_C, v + n0 * v_stride, v_stride, dKV, e, 0, dKl + n0 * s, s);
            gemm(0, 0, Cg, e, s, inv_C, Kl + n0 * s, s, dKV, e, 0, dv + n0 * v_stride, v_stride);
            continue;
        }
        const int i0 = (nblk - rank) * ATT_BLOCK;
        real *dist = d_rel_partial + ((size_t)task * nblk + i0 / ATT_BLOCK) * C;  /* d sim per distance i - j */
        for (int k = 0; k < C; k++) dist[k] = 0;
        if (i0 >= Cg) continue;
        const int ib = block_len(Cg, i0), nk = i0 + ib;
        const real *S = sim + (size_t)task * C * C;
        real *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dA = dO V^T */
        gemm(0, 1, ib, nk, e, 1, dO + (size_t)i0 * e, e, v + n0 * v_stride, v_stride, 0, dS + (size_t)i0 * C, C);
        /* A = phi(sim) on j <= i:  dsim = dA phi'(sim);  d bias[bucket] += sqrt(s) dsim */
        for (int i = i0; i < i0 + ib; i++) {
            real *dSi = dS + (size_t)i * C;
            const real *Si = S + (size_t)i * C;
            if (a->laplace) {
#pragma omp simd
                for (int j = 0; j <= i; j++) { dSi[j] *= phi_grad(Si[j], 1); dist[i - j] += dSi[j]; }
            } else {
#pragma omp simd
                for (int j = 0; j <= i; j++) { dSi[j] *= phi_grad(Si[j], 0); dist[i - j] += dSi[j]; }
            }
            for (int j = i + 1; j < nk; j++) dSi[j] = 0;
        }
        /* sim = Q K^T / C:  dQ = dsim K / C */
        gemm(0, 0, ib, s, nk, inv_C, dS + (size_t)i0 * C, C, Kq + n0 * s, s, 0, dQq + (n0 + i0) * s, s);
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < ntask * nblk; item++) {
        const int rank = item / ntask, task = item % ntask, j0 = rank * ATT_BLOCK;
        GROUP_ROWS(a, task, n0, Cg);
        if (j0 >= Cg) continue;
        const int jb = block_len(Cg, j0), below = Cg - j0;
        const real *A = attn + (size_t)task * C * C, *dS = dsim + (size_t)task * C * C;
        /* quad_out = A V:  dV_j += sum_{i >= j} A_ij^T dO_i (A is 0 above the diagonal) */
        gemm(1, 0, jb, e, below, 1, A + (size_t)j0 * C + j0, C, d_att + (n0 + j0) * e, e, 1,
             dv + (n0 + j0) * v_stride, v_stride);
        /* sim = Q K^T / C:  dK_j = sum_{i >= j} dsim_ij^T Q_i / C */
        gemm(1, 0, jb, s, below, inv_C, dS + (size_t)j0 * C + j0, C, Qq + (n0 + j0) * s, s, 0,
             dKq + (n0 + j0) * s, s);
    }
    blas_serial_end(blas_saved);
    for (int k = 0; k < C; k++) {
        real sum = 0;
        for (int part = 0; part < ntask * nblk; part++) sum += d_rel_partial[(size_t)part * C + k];
        d_rel_bias[rel_pos_bucket(k)] += bias_scale * sum;
    }
}

/* ================================== gating ========================================= */

void gate_forward(real *out, const real *gate, int gate_stride, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++)
            out[(size_t)n * e + i] = gate[(size_t)n * gate_stride + i] * att[(size_t)n * e + i];
}

/* out = gate * att:  d gate = d_out att;  d att = d_out gate */
void gate_backward(real *d_gate, int gate_stride, real *d_att, const real *d_out,
                   const real *gate, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) {
            size_t k = (size_t)n * e + i, kg = (size_t)n * gate_stride + i;
            real g = gate[kg];
            d_gate[kg] = d_out[k] * att[k];
            d_att[k] = d_out[k] * g;
        }
}

/* =============================== cross-entropy ===================================== */

double crossentropy_forward(real *losses, const real *logits, const int *targets,
                            int tok_stride, int B, int T, int V) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *l = logits + ((size_t)b * T + t) * V;
            real mx = l[0];
            for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
            double sum = 0;
            for (int i = 0; i < V; i++) sum += exp((double)(l[i] - mx));
            double loss = log(sum) + mx - l[targets[b * tok_stride + t]];
            losses[(size_t)b * T + t] = (real)loss;
        }
    double total = 0;   /* in order, for run-to-run identical losses */
    for (size_t n = 0; n < (size_t)B * T; n++) total += losses[n];
    return total / ((double)B * T);
}

/* loss = logsumexp(l) - l[y]:  dl = (softmax(l) - onehot(y)) * dloss / N */
void crossentropy_backward(real *dlogits, const real *logits, const int *targets,
                           int tok_stride, int B, int T, int V, real dloss) {
    const real scale = dloss / ((real)B * T);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *l = logits + ((size_t)b * T + t) * V;
            real *dl = dlogits + ((size_t)b * T + t) * V;
            real mx = l[0];
            for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
            real sum = 0;
            for (int i = 0; i < V; i++) { dl[i] = R_EXP(l[i] - mx); sum += dl[i]; }
            for (int i = 0; i < V; i++) dl[i] = dl[i] / sum * scale;
            dl[targets[b * tok_stride + t]] -= scale;
        }
}
