/* trainer/runtime.h: BLAS kernel choice and the floating-point environment, set once at
 * start (the thread count is the model's: ModelOptions.threads), and the clock. */
#ifndef FLASH_RUNTIME_H
#define FLASH_RUNTIME_H

/* On a CPU with AVX-512 whose OpenBLAS kernels are not AVX-512 ones (detected, or pinned by
   OPENBLAS_CORETYPE), re-executes the program with OPENBLAS_CORETYPE=SkylakeX; returns
   otherwise. FLASH_BLAS_CORE=env disables it. Call first thing in main. */
void choose_blas_core(char **argv);
const char *blas_core_note(void);   /* why these kernels, for the logs */
const char *blas_core_name(void);   /* openblas_get_corename() */

/* Flush-to-zero and denormals-are-zero for this thread and the threads it creates later
   (they inherit the floating-point environment): values below 1e-38 become 0 instead of
   costing a microcode assist per operation on Intel CPUs. Call in main before any thread. */
void flush_denormals(void);

/* Seconds on a monotonic clock, for timing. */
double now_s(void);

#endif
