/* data/rng.h: a small, seeded, checkpointable random number generator.
 *
 * xoshiro256** (Blackman & Vigna) seeded through splitmix64. The whole state is the
 * four words in Rng, plain data: copying the struct (or writing it to a checkpoint
 * and reading it back) resumes the exact same sequence. Nothing here keeps hidden
 * state (rng_normal does not cache its second Box-Muller value for that reason), and
 * nothing depends on the platform's rand() or libm rounding beyond log/sqrt/cos,
 * so a run is reproducible from its seed. */
#ifndef FLASH_RNG_H
#define FLASH_RNG_H

#include <stdint.h>
#include <math.h>

typedef struct { uint64_t s[4]; } Rng;

static inline uint64_t rng_rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* splitmix64 step: spreads any seed (even 0) over the 256-bit state, which
 * xoshiro needs to be non-zero; splitmix64 never yields four zero words in a row. */
static inline uint64_t rng_splitmix64_(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline void rng_seed(Rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64_(&x);
}

/* xoshiro256**: 64 good bits per call. */
static inline uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rng_rotl_(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl_(s[3], 45);
    return result;
}

/* Uniform in [0, n) without modulo bias: draws below `threshold` (= 2^64 mod n) are
 * rejected so that the accepted range [threshold, 2^64) is a whole multiple of n.
 * At most half the draws are rejected (n just above 2^63), usually almost none.
 * n == 0 has no valid answer; it returns 0 rather than looping or dividing by zero. */
static inline uint64_t rng_below(Rng *r, uint64_t n) {
    if (n == 0) return 0;
    uint64_t threshold = (0 - n) % n;   /* (2^64 - n) mod n == 2^64 mod n */
    for (;;) {
        uint64_t x = rng_u64(r);
        if (x >= threshold) return x % n;
    }
}

/* [0, 1) with 53 random bits: the top 53 bits scaled by 2^-53, exact in a double. */
static inline double rng_uniform(Rng *r) {
    return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal by Box-Muller, one value per call (the sine partner is dropped so the
 * state stays the four words above). u1 is taken in (0, 1] so log(u1) is finite. */
static inline float rng_normal(Rng *r) {
    double u1 = 1.0 - rng_uniform(r);
    double u2 = rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2));
}

#endif
