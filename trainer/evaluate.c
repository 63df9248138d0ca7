/* trainer/evaluate.c: validation windows and whole-split evaluation. */
#include "evaluate.h"

double eval_windows(Model *m, const uint8_t *split, size_t n, int nwin, int B, int T, int *tokbuf) {
    double total = 0;
    const size_t span = n - (size_t)T - 1;
    for (int w0 = 0; w0 < nwin; w0 += B) {
        int nb = nwin - w0 < B ? nwin - w0 : B;
        for (int b = 0; b < nb; b++) {
            int w = w0 + b;
            size_t start = nwin > 1 ? span * (size_t)w / (size_t)(nwin - 1) : 0;
            for (int t = 0; t <= T; t++) tokbuf[b * (T + 1) + t] = split[start + t];
        }
        total += model_forward(m, tokbuf, nb, T, NULL, NULL) * nb;
    }
    return total / nwin;
}

double eval_split(Model *m, const uint8_t *split, size_t n, int B, int T, int *tokbuf,
                  size_t *count, void (*progress)(size_t done, size_t total)) {
    double nats = 0;
    size_t predicted = 0, total = n - 1;
    size_t nfull = (n - 1) / (size_t)T;          /* windows with all T predictions */
    for (size_t w0 = 0; w0 < nfull; w0 += (size_t)B) {
        int nb = nfull - w0 < (size_t)B ? (int)(nfull - w0) : B;
        for (int b = 0; b < nb; b++) {
            size_t start = (w0 + (size_t)b) * (size_t)T;
            for (int t = 0; t <= T; t++) tokbuf[b * (T + 1) + t] = split[start + t];
        }
        nats += model_forward(m, tokbuf, nb, T, NULL, NULL) * nb * T;
        predicted += (size_t)nb * T;
        if (progress) progress(predicted, total);
    }
    size_t start = nfull * (size_t)T;
    int rest = (int)(n - 1 - start);             /* the short last window */
    if (rest > 0) {
        for (int t = 0; t <= rest; t++) tokbuf[t] = split[start + t];
        nats += model_forward(m, tokbuf, 1, rest, NULL, NULL) * rest;
        predicted += (size_t)rest;
        if (progress) progress(predicted, total);
    }
    *count = predicted;
    return nats / (double)predicted;
}
