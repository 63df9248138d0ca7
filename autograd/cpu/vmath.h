/* autograd/cpu/vmath.h: vectorizable element-wise math and the fixed-order reductions shared by
 * the forward/backward pairs (internal to autograd/). */
#ifndef FLASH_VMATH_H
#define FLASH_VMATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "real.h"

/* exp for the element-wise loops. libm's expf is a call the compiler cannot vectorize
   (without -ffast-math), which made silu a visible part of a step. This is Cephes'
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

#define COL_BLOCK 16        /* columns per task when reducing over rows: one cache line */
/* Sums over rows are cut into this many fixed chunks, each summed in order and the chunks
   then added in order: the result does not depend on thread count or timing, which
   bit-exact resume needs (OpenMP's reduction clause combines in no fixed order). */
#define RED_CHUNKS 64
#define CHUNK_LO(c, n) ((size_t)(n) * (size_t)(c) / RED_CHUNKS)

#endif
