/* autograd/cpu/gemm.h: the BLAS and threading policy of the CPU backend: the process's BLAS
 * kernels and thread count, and how the Linear layers' large products use the threads
 * (autograd/cpu/gemm.c). Every choice depends on the thread count and the shape only, never on
 * timing: the ways round differently, and a resumed run must choose as the run it continues. */
#ifndef FLASH_GEMM_H
#define FLASH_GEMM_H
#include <stddef.h>
#include <cblas.h>
#include "real.h"

/* OpenBLAS's threading hooks (declared by most builds' cblas.h; repeated for the others) */
int openblas_get_parallel(void);     /* 0 sequential, 1 pthreads, 2 OpenMP */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);

/* Our OpenMP loops over attention groups call small GEMMs from every thread. The OpenMP
   build of OpenBLAS then runs each on its calling thread; the pthreads build would hand
   each to its own pool of all cores, oversubscribing them many times over (the cost is in
   docs/performance-notes.md, "Figures behind the code"). So around such loops the pthreads
   build is set to one thread.
   (The OpenMP build must not be touched: its set_num_threads sets OpenMP's own count.) */
static inline int blas_serial_begin(void) {
    if (openblas_get_parallel() != 1) return 0;
    int n = openblas_get_num_threads();
    openblas_set_num_threads(1);
    return n;
}
static inline void blas_serial_end(int saved) {
    if (saved > 0) openblas_set_num_threads(saved);
}

/* Row-major C = alpha * op(A) op(B) + beta * C; op(A) is M x K, op(B) is K x N. */
static inline void gemm(int trans_a, int trans_b, int M, int N, int K, real alpha,
                        const real *A, int lda, const real *B, int ldb, real beta,
                        real *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef FLASH_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                beta, C, ldc);
#endif
}

/* y = alpha * op(A) x + beta * y, A row-major M x N */
static inline void gemv(int trans_a, int M, int N, real alpha, const real *A, int lda,
                        const real *x, real beta, real *y) {
#ifdef FLASH_DOUBLE
    cblas_dgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, M, N, alpha, A, lda, x, 1, beta, y, 1);
#else
    cblas_sgemv(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, M, N, alpha, A, lda, x, 1, beta, y, 1);
#endif
}

/* At process start, before any BLAS call: on a CPU with AVX-512 whose OpenBLAS kernels are
   not AVX-512 ones (detected, or pinned by OPENBLAS_CORETYPE), re-executes the program with
   OPENBLAS_CORETYPE=SkylakeX (FLASH_BLAS_CORE=env keeps the environment's choice); then
   flush-to-zero and denormals-are-zero for this thread and those it creates. */
void blas_process_init(char **argv);
const char *blas_core_note(void);   /* why these kernels, for the logs */
const char *blas_core_name(void);   /* openblas_get_corename() */

/* OpenMP's and OpenBLAS's threads for the whole process (n >= 1); FLASH_GEMM (every large
   product) and FLASH_GEMM_WGRAD (the weight gradients) may force a way: openblas, tiles or
   splitk. */
void blas_set_threads(int n);

/* The ways: one OpenBLAS call (its own threading), tiles of C handed out to the threads
   (each a single-threaded GEMM), or (weight gradients) K split into per-thread partial
   sums. By default the thread count and the shape pick; FLASH_GEMM / FLASH_GEMM_WGRAD force
   one way (blas_set_threads reads them). */
enum { GEMM_OPENBLAS, GEMM_TILES, GEMM_SPLITK };
#define GEMM_AUTO (-1)
int gemm_way_for(int threads, int trans_a);   /* the way used at this many threads */

/* Room for the split-K partial sums, owned by the caller (the CPU model keeps it among its
   activations, sized by gemm_splitk_chunks at its thread count, so a step allocates
   nothing). A product whose partial sums do not fit (or ws NULL) is one OpenBLAS call. */
typedef struct { real *buf; size_t floats; } GemmScratch;
int gemm_splitk_chunks(int K, int threads);   /* chunks of a K-long product at this many threads */

/* C = alpha op(A) op(B) + beta C (row-major, as gemm() in real.h) one given way, with this
   many threads (tests compare the ways). */
void gemm_way(int way, int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
              const real *B, int ldb, real beta, real *C, int ldc, int threads,
              const GemmScratch *ws);
/* The way for a product of this shape now (the thread count, inside a parallel region or
   not, its size), and the product done that way. */
int gemm_big_way(int ta, int M, int N, int K);
void gemm_big(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
              const real *B, int ldb, real beta, real *C, int ldc, const GemmScratch *ws);

/* Work done on each tile of C right after its product, while the tile is in cache: rows
   m0..m1, columns n0..n1. */
typedef struct {
    void (*fn)(void *ctx, int m0, int m1, int n0, int n1);
    void *ctx;
} TileEpilogue;
#define TILES_PER_THREAD 4
/* The tiles way with an epilogue (about `tiles` tiles). */
void gemm_tiles(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                const real *B, int ldb, real beta, real *C, int ldc, int tiles,
                const TileEpilogue *epi);

#endif
