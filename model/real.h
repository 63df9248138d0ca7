/* model/real.h: the floating-point type of the model code.
 *
 * The model is written once against `real` and compiled twice: float for training
 * (the default) and double (-DFLASH_DOUBLE) for the finite-difference gradient checks,
 * where float32 rounding would drown the differences we want to see. The math functions
 * follow the type; the CPU backend's BLAS calls (autograd/cpu/gemm.h) do too. No BLAS here:
 * this header is part of the backend-neutral interface. */
#ifndef FLASH_REAL_H
#define FLASH_REAL_H
#include <math.h>

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

#endif
