/* model/real.h: the floating-point type of the model code.
 *
 * The model is written once against `real` and compiled twice: float for training
 * (the default) and double (-DFLASH_DOUBLE) for the finite-difference gradient checks,
 * where float32 rounding would drown the differences we want to see. The GEMM wrapper
 * and the math functions follow the type. */
#ifndef FLASH_REAL_H
#define FLASH_REAL_H
#include <math.h>
#include <cblas.h>

#ifdef FLASH_DOUBLE
typedef double real;
#define R_EXP exp
#define R_LOG log
#define R_SQRT sqrt
#define R_ERF erf
#define R_SIN sin
#define R_COS cos
#define R_FABS fabs
#define R_NAME "f64"
#else
typedef float real;
#define R_EXP expf
#define R_LOG logf
#define R_SQRT sqrtf
#define R_ERF erff
#define R_SIN sinf
#define R_COS cosf
#define R_FABS fabsf
#define R_NAME "f32"
#endif

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

#endif
