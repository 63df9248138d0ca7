// What 16 cores deliver together for the step's GEMMs, measured as throughput: T threads
// each run R single-threaded GEMMs (a 256 x 2176 x 512 block of the to_hidden forward) at
// the same time, between two barriers; GFLOP/s = T R flops / wall time. Private operands
// per thread, then a shared B (the weight) as in the step. Against: one OpenBLAS call of the
// whole 4096 x 2176 x 512 product with T threads. T = 1 and 16, interleaved, three rounds.
// (mem_gemm.c took each thread's best repeat, not the wall time of all of them: an upper
// bound, since the threads did not all run at once.)
// Build: gcc -O2 -fopenmp -I$BLAS_INC scripts/probes/gemm_aggregate.c -L$BLAS_LIB -lopenblas
// (BLAS_INC, BLAS_LIB as in the Makefile); run with OPENBLAS_CORETYPE=SkylakeX.
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
extern void openblas_set_num_threads(int);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static float *filled(size_t n, int k) {
    float *p = malloc(4 * n);
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * k) % 13) - 6;
    return p;
}
enum { M = 256, N = 2176, K = 512, R = 16 };
static double aggregate(int T, int shared_b, const float *Bshared) {
    double wall = 0;
    openblas_set_num_threads(1);
#pragma omp parallel num_threads(T)
    {
        float *A = filled((size_t)M * K, 7), *B = shared_b ? NULL : filled((size_t)N * K, 5);
        float *C = filled((size_t)M * N, 3);
        const float *Bu = shared_b ? Bshared : B;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, A, K, Bu, K, 0.f, C, N);
#pragma omp barrier
        double t0 = now();
        for (int r = 0; r < R; r++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, A, K, Bu, K, 0.f, C, N);
#pragma omp barrier
#pragma omp master
        wall = now() - t0;
        free(A); free(B); free(C);
    }
    return 2.0 * M * N * K * R * T / wall / 1e9;
}
static double one_call(int T, const float *A, const float *B, float *C) {
    openblas_set_num_threads(T);
    double best = 1e9;
    for (int r = 0; r < 4; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 4096, N, K, 1.f, A, K, B, K, 0.f, C, N);
        double dt = now() - t0;
        if (r && dt < best) best = dt;
    }
    return 2.0 * 4096 * N * K / best / 1e9;
}
int main(void) {
    float *Bs = filled((size_t)N * K, 5), *A = filled((size_t)4096 * K, 7), *C = filled((size_t)4096 * N, 3);
    for (int round = 0; round < 3; round++) {
        double p1 = aggregate(1, 0, Bs), p16 = aggregate(16, 0, Bs);
        double s1 = aggregate(1, 1, Bs), s16 = aggregate(16, 1, Bs);
        double o1 = one_call(1, A, Bs, C), o16 = one_call(16, A, Bs, C);
        printf("round %d: independent private 1 thread %.1f, 16 threads %.1f GFLOP/s (scaling %.2f); "
               "shared B %.1f, %.1f (%.2f); one OpenBLAS call 4096x2176x512 %.1f, %.1f (%.2f)\n",
               round, p1, p16, p16 / (16 * p1), s1, s16, s16 / (16 * s1), o1, o16, o16 / (16 * o1));
    }
    return 0;
}
