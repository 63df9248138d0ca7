/* autograd/cpu/loss.c: the cross-entropy of the logits against the next byte: forward and backward. */
#include "ops.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* =============================== cross-entropy ===================================== */

double crossentropy_forward(real *losses, const real *logits, const int *targets,
                            int tok_stride, int B, int T, int V) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *l = logits + ((size_t)b * T + t) * V;
            real mx = l[0];
            for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
            double sum = 0;
            for (int i = 0; i < V; i++) sum += exp((double)(l[i] - mx));
            double loss = log(sum) + mx - l[targets[b * tok_stride + t]];
            losses[(size_t)b * T + t] = (real)loss;
        }
    double total = 0;   /* in order, for run-to-run identical losses */
    for (size_t n = 0; n < (size_t)B * T; n++) total += losses[n];
    return total / ((double)B * T);
}

/* loss = logsumexp(l) - l[y]:  dl = (softmax(l) - onehot(y)) * dloss / N */
void crossentropy_backward(real *dlogits, const real *logits, const int *targets,
                           int tok_stride, int B, int T, int V, real dloss) {
    const real scale = dloss / ((real)B * T);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *l = logits + ((size_t)b * T + t) * V;
            real *dl = dlogits + ((size_t)b * T + t) * V;
            real mx = l[0];
            for (int i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
            real sum = 0;
            for (int i = 0; i < V; i++) { dl[i] = R_EXP(l[i] - mx); sum += dl[i]; }
            for (int i = 0; i < V; i++) dl[i] = dl[i] / sum * scale;
            dl[targets[b * tok_stride + t]] -= scale;
        }
}

