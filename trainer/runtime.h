/* trainer/runtime.h: BLAS kernel choice and threads, set once at start. */
#ifndef FLASH_RUNTIME_H
#define FLASH_RUNTIME_H

/* On a CPU with AVX-512 whose OpenBLAS kernels are not AVX-512 ones (detected, or pinned by
   OPENBLAS_CORETYPE), re-executes the program with OPENBLAS_CORETYPE=SkylakeX; returns
   otherwise. FLASH_BLAS_CORE=env disables it. Call first thing in main. */
void choose_blas_core(char **argv);
const char *blas_core_note(void);   /* why these kernels, for the logs */
const char *blas_core_name(void);   /* openblas_get_corename() */

/* OpenMP and OpenBLAS threads; n <= 0: all cores. */
void set_threads(int n);

#endif
