/* model/relpos.h: T5RelativePositionBias's causal bucket of a distance, written once for
 * every backend (the CPU ops, the CUDA kernels and decoders include it). */
#ifndef FLASH_RELPOS_H
#define FLASH_RELPOS_H
#include <math.h>

#ifdef __CUDACC__
#define FLASH_HOST_DEVICE __host__ __device__
#else
#define FLASH_HOST_DEVICE
#endif

#define REL_POS_BUCKETS 32      /* T5RelativePositionBias num_buckets */

/* 32 buckets, max distance 128: exact below 16, then logarithmic, computed in float32 as
   the reference does (docs/model.md, "Forward" 2.6). n = i - j; a negative n is bucket 0. */
static inline FLASH_HOST_DEVICE int rel_pos_bucket(int n) {
    if (n < 0) n = 0;
    if (n < 16) return n;
    int b = 16 + (int)(logf((float)n / 16.0f) / 2.0794415f * 16.0f);
    return b < 31 ? b : 31;
}

#endif
