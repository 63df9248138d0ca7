/* data/draw.c: see draw.h. */
#include "draw.h"

void data_sample_batch(const uint8_t *split, size_t n, int B, int T, Rng *rng, int32_t *tokens) {
    size_t row = (size_t)T + 1;
    /* Offsets 0 .. n-row inclusive: n-row+1 = n-T choices. */
    uint64_t choices = (uint64_t)(n - row) + 1;
    for (int b = 0; b < B; b++) {
        size_t off = (size_t)rng_below(rng, choices);
        const uint8_t *src = split + off;
        int32_t *dst = tokens + (size_t)b * row;
        for (size_t t = 0; t < row; t++) dst[t] = src[t];
    }
}

/* Another rank's micro-batch: the same draws as data_sample_batch (one rng_below per row,
   over the same choices), its bytes not copied, so the generator ends where it would. */
static void skip_batch(size_t n, int B, int T, Rng *rng) {
    const uint64_t choices = (uint64_t)(n - ((size_t)T + 1)) + 1;
    for (int b = 0; b < B; b++) (void)rng_below(rng, choices);
}

void data_draw_step(const uint8_t *split, size_t n, int A, int B, int T, int rank, int ranks,
                    Rng *rng, int32_t *tokens) {
    const size_t mb = (size_t)B * (T + 1);
    const int first = rank * A, total = ranks * A;
    for (int a = 0; a < total; a++) {
        if (a >= first && a < first + A) data_sample_batch(split, n, B, T, rng, tokens + (size_t)(a - first) * mb);
        else skip_batch(n, B, T, rng);
    }
}
