/* autograd/cpu/gate.c: the output gate of a FLASH layer, out = gate * att: forward and
 * backward. */
#include "ops.h"

void gate_forward(real *out, const real *gate, int gate_stride, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++)
            out[(size_t)n * e + i] = gate[(size_t)n * gate_stride + i] * att[(size_t)n * e + i];
}

/* out = gate * att:  d gate = d_out att;  d att = d_out gate */
void gate_backward(real *d_gate, int gate_stride, real *d_att, const real *d_out,
                   const real *gate, const real *att, int N, int e) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < e; i++) {
            size_t k = (size_t)n * e + i, kg = (size_t)n * gate_stride + i;
            real g = gate[kg];
            d_gate[kg] = d_out[k] * att[k];
            d_att[k] = d_out[k] * g;
        }
}
