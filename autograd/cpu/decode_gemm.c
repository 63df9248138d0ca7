/* autograd/cpu/decode_gemm.c: the decoder's products split into fixed blocks of outputs
 * (decode_gemm.h). */
#include "decode_gemm.h"
#include "gemm.h"
#include <omp.h>

/* The decoder's products split into a number of blocks of outputs fixed when the decoder
   opens (the thread count then), a thread a block (or several), BLAS serial inside. One
   sequence's thread count changes from byte to byte (autograd/cpu/cpu_backend.c, DecodeThreads),
   and OpenBLAS's own split of a matrix-vector product over its threads changes the rounding
   of some outputs with the count (seen with its Haswell and Zen kernels: tests/test_decode.c);
   with the blocks fixed every output comes from the same call whatever the count. Inside a
   parallel region (several sequences) the loop runs on the calling thread. */
#define DEC_MIN_WIDTH 16         /* outputs of a block at least */
static int dec_block_width(int out, int blocks) {
    const int w = (out + blocks - 1) / blocks;
    return w > DEC_MIN_WIDTH ? w : DEC_MIN_WIDTH;
}
void gemv_split(int blocks, int trans, int M, int N, real alpha, const real *A, int lda, const real *x,
                real beta, real *y) {
    const int out = trans ? N : M, width = dec_block_width(out, blocks), nb = (out + width - 1) / width;
    const int saved = blas_serial_begin();
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        const int o0 = b * width, w = out - o0 < width ? out - o0 : width;
        if (trans) gemv(1, M, w, alpha, A + o0, lda, x, beta, y + o0);
        else gemv(0, w, N, alpha, A + (size_t)o0 * lda, lda, x, beta, y + o0);
    }
    blas_serial_end(saved);
}
void gemm_tn_split(int blocks, int M, int N, int K, real alpha, const real *A, int lda, const real *B,
                   int ldb, real *C, int ldc) {
    const int width = dec_block_width(N, blocks), nb = (N + width - 1) / width;
    const int saved = blas_serial_begin();
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        const int c0 = b * width, w = N - c0 < width ? N - c0 : width;
        gemm(1, 0, M, w, K, alpha, A, lda, B + c0, ldb, 1, C + c0, ldc);
    }
    blas_serial_end(saved);
}
