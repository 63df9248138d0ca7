/* autograd/cpu/embed.c: the token and absolute position embedding: forward and backward. */
#include "ops.h"
#include "vmath.h"
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ================================ embedding ======================================== */

void pos_table_fill(real *pos_table, const real *inv_freq, int T, int d) {
    int half = d / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            /* angle in double: the reference computes t * w in its own precision; a double
               angle keeps float32 results within rounding of it for any t we train on. */
            double a = (double)t * (double)inv_freq[i];
            pos_table[(size_t)t * d + i] = (real)sin(a);
            pos_table[(size_t)t * d + half + i] = (real)cos(a);
        }
}

void embed_forward(real *h, const int *tokens, int tok_stride, const real *tok_emb,
                   const real *pos_scale, const real *pos_table, int B, int T, int d) {
    const real scale = pos_scale[0];
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const real *e = tok_emb + (size_t)tokens[b * tok_stride + t] * d;
            const real *p = pos_table + (size_t)t * d;
            real *o = h + ((size_t)b * T + t) * d;
            for (int i = 0; i < d; i++) o[i] = e[i] + scale * p[i];
        }
}

/* d tok_emb[x_n] += dh_n;  d scale = sum_n dh_n . sinusoid_t */
void embed_backward(real *d_tok_emb, real *d_pos_scale, const real *dh, const int *tokens,
                    int tok_stride, const real *pos_table, int B, int T, int d) {
    int nblk = (d + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < d ? j0 + COL_BLOCK : d;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const real *g = dh + ((size_t)b * T + t) * d;
                real *e = d_tok_emb + (size_t)tokens[b * tok_stride + t] * d;
                for (int j = j0; j < j1; j++) e[j] += g[j];
            }
    }
    const size_t N = (size_t)B * T;
    double part[RED_CHUNKS] = {0};
#pragma omp parallel for schedule(static)
    for (int c = 0; c < RED_CHUNKS; c++)
        for (size_t n = CHUNK_LO(c, N); n < CHUNK_LO(c + 1, N); n++) {
            const real *g = dh + n * d, *p = pos_table + (n % (size_t)T) * d;
            for (int j = 0; j < d; j++) part[c] += (double)g[j] * p[j];
        }
    double dscale = 0;
    for (int c = 0; c < RED_CHUNKS; c++) dscale += part[c];
    d_pos_scale[0] += (real)dscale;
}
