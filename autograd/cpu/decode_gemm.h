/* autograd/cpu/decode_gemm.h: the recurrent decoder's products (cpu_decode.c and the attention
 * rooms' decoder steps), split into a number of blocks of outputs fixed when the decoder
 * opens, so that their rounding does not depend on the thread count of the moment. */
#ifndef FLASH_DECODE_GEMM_H
#define FLASH_DECODE_GEMM_H
#include "real.h"

/* y = alpha op(A) x + beta y (A row-major M x N), its outputs in blocks of at least 16 */
void gemv_split(int blocks, int trans, int M, int N, real alpha, const real *A, int lda, const real *x,
                real beta, real *y);
/* C (M x N) += alpha A^T B (A: K x M, B: K x N), split over N as gemv_split */
void gemm_tn_split(int blocks, int M, int N, int K, real alpha, const real *A, int lda, const real *B,
                   int ldb, real *C, int ldc);

#endif
