/* tests/gradcheck.h: finite-difference gradient checks.
 *
 * The caller supplies a scalar loss of the current inputs, `double loss(void *ctx)`, an
 * input array x (n entries, read and written in place: each checked entry is perturbed
 * and restored exactly) and the analytic gradient dL/dx. Each checked entry i gets the
 * fourth-order central difference, h = step * max(1, |x_i|),
 *     num_i = (8 (L(x + h e_i) - L(x - h e_i)) - (L(x + 2h e_i) - L(x - 2h e_i))) / 12h
 * (truncation error O(h^4): with h = 1e-4 it is as small as a plain central difference
 * with h = 1e-8, while the rounding error of L is divided by 1e-4, not 1e-8; a plain
 * central difference with h = 1e-6 leaves ~1e-9 absolute noise on a model loss, which is
 * 1e-6 relative on gradients of 1e-3). The result is the relative L2 error
 * ||num - ana|| / max(||num||, GC_TINY) over the checked entries, with the entry of the
 * largest |num_i - ana_i| for messages. A NaN gives an infinite error; when numerical and
 * analytic gradients are both zero on every checked entry the error is 0. */
#ifndef FLASH_GRADCHECK_H
#define FLASH_GRADCHECK_H
#include <stddef.h>
#include <stdint.h>
#include "real.h"

#define GC_STEP 1e-4      /* default h, relative to max(1, |x_i|) */
#define GC_TINY 1e-30     /* floor of the denominator of the relative error */

typedef double (*gc_loss_fn)(void *ctx);

typedef struct {
    double rel_err;             /* ||num - ana|| / max(||num||, GC_TINY) */
    double num_norm, ana_norm;  /* L2 norms over the checked entries */
    size_t worst;               /* index (into x) of the largest |num - ana| */
    double worst_num, worst_ana;
    int n_checked;
} GcResult;

/* Chooses up to k distinct indices of [0, n) into idx (room for k): all of them in order
   when n <= k, else 0, n - 1 and k - 2 others drawn from a generator seeded by `seed`
   (deterministic). Returns how many. */
int gc_sample(size_t *idx, size_t n, int k, uint64_t seed);

/* Checks the entries idx[0..nidx) of x. step <= 0 means GC_STEP; a smaller step is for
   functions that change form within 2h of x (a clamp, a kink). */
GcResult gc_check_idx(gc_loss_fn loss, void *ctx, real *x, const real *grad,
                      const size_t *idx, int nidx, double step);

/* Checks all n entries when n <= k, else a gc_sample of k of them (k >= 2). */
GcResult gc_check(gc_loss_fn loss, void *ctx, real *x, size_t n, const real *grad, int k,
                  uint64_t seed);

/* One line for messages: "err 1.2e-09 over 12 entries, worst [5] num 0.1 ana 0.1". */
void gc_describe(const GcResult *r, char *buf, size_t buflen);

#endif
