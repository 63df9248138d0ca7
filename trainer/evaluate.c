/* trainer/evaluate.c: validation windows and whole-split evaluation, each one loop over a
 * share of the windows (all of them for one process). */
#include "evaluate.h"

/* [lo, hi) of count items: share.rank's contiguous part */
static void share_range(EvalShare share, size_t count, size_t *lo, size_t *hi) {
    *lo = count * (size_t)share.rank / (size_t)share.ranks;
    *hi = count * (size_t)(share.rank + 1) / (size_t)share.ranks;
}

double eval_windows(Model *m, const uint8_t *split, size_t n, int nwin, int B, int T, int *tokbuf,
                    EvalShare share) {
    double total = 0;
    const size_t span = n - (size_t)T - 1;
    size_t lo, hi;
    share_range(share, (size_t)nwin, &lo, &hi);
    for (size_t w0 = lo; w0 < hi; w0 += (size_t)B) {
        int nb = hi - w0 < (size_t)B ? (int)(hi - w0) : B;
        for (int b = 0; b < nb; b++) {
            size_t w = w0 + (size_t)b;
            size_t start = nwin > 1 ? span * w / (size_t)(nwin - 1) : 0;
            for (int t = 0; t <= T; t++) tokbuf[b * (T + 1) + t] = split[start + t];
        }
        total += model_forward(m, tokbuf, nb, T, NULL, NULL) * nb;
    }
    if (share.sum) share.sum(&total, 1);
    return total / nwin;
}

double eval_split(Model *m, const uint8_t *split, size_t n, int B, int T, int *tokbuf,
                  EvalShare share, Progress *progress, size_t *count) {
    /* nats, predicted bytes: doubles, to be summed over the ranks (the byte count is exact) */
    double v[2] = {0, 0};
    const size_t nfull = (n - 1) / (size_t)T;    /* windows with all T predictions */
    size_t lo, hi;
    share_range(share, nfull, &lo, &hi);
    for (size_t w0 = lo; w0 < hi; w0 += (size_t)B) {
        int nb = hi - w0 < (size_t)B ? (int)(hi - w0) : B;
        for (int b = 0; b < nb; b++) {
            size_t start = (w0 + (size_t)b) * (size_t)T;
            for (int t = 0; t <= T; t++) tokbuf[b * (T + 1) + t] = split[start + t];
        }
        v[0] += model_forward(m, tokbuf, nb, T, NULL, NULL) * nb * T;
        v[1] += (double)nb * T;
        if (progress) progress_tick(progress, v[1]);
    }
    size_t start = nfull * (size_t)T;
    int rest = (int)(n - 1 - start);             /* the short last window */
    if (rest > 0 && share.rank == share.ranks - 1) {
        for (int t = 0; t <= rest; t++) tokbuf[t] = split[start + t];
        v[0] += model_forward(m, tokbuf, 1, rest, NULL, NULL) * rest;
        v[1] += rest;
        if (progress) progress_tick(progress, v[1]);
    }
    if (share.sum) share.sum(v, 2);
    if (count) *count = (size_t)v[1];
    return v[0] / v[1];
}
