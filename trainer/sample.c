/* trainer/sample.c: top-k sampling and the reference full-forward generator. */
#include "sample.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sample_topk(const real *logits, int V, double temperature, Rng *rng) {
    int k = (int)((1 - SAMPLE_FILTER_THRES) * V);
    if (k < 1) k = 1;
    if (k > 256) k = 256;   /* the byte model; larger vocabularies keep the 256 best */
    int idx[256];
    double val[256];
    int n = 0;
    /* keep the k largest (ties: the lower index first, like a stable sort) */
    for (int i = 0; i < V; i++) {
        double v = logits[i];
        if (n < k) {
            int j = n++;
            while (j > 0 && val[j - 1] < v) { val[j] = val[j - 1]; idx[j] = idx[j - 1]; j--; }
            val[j] = v; idx[j] = i;
        } else if (v > val[k - 1]) {
            int j = k - 1;
            while (j > 0 && val[j - 1] < v) { val[j] = val[j - 1]; idx[j] = idx[j - 1]; j--; }
            val[j] = v; idx[j] = i;
        }
    }
    double p[256], sum = 0;
    for (int j = 0; j < n; j++) { p[j] = exp((val[j] - val[0]) / temperature); sum += p[j]; }
    double u = rng_uniform(rng) * sum;
    for (int j = 0; j < n; j++) {
        u -= p[j];
        if (u < 0) return idx[j];
    }
    return idx[n - 1];
}

void generate_full_forward(Model *m, const uint8_t *prompt, int plen, int n, int ctx,
                           double temperature, Rng *rng, uint8_t *out) {
    const int V = m->cfg.num_tokens;
    int total = plen + n;
    uint8_t *seq = malloc((size_t)total);
    int *tok = malloc(sizeof(int) * (size_t)(ctx + 1));
    memcpy(seq, prompt, (size_t)plen);
    for (int i = 0; i < n; i++) {
        int len = plen + i, T = len < ctx ? len : ctx;
        const uint8_t *w = seq + len - T;
        for (int t = 0; t < T; t++) tok[t] = w[t];
        tok[T] = 0;   /* the forward wants a target for every position; unused */
        model_forward(m, tok, 1, T);
        int next = sample_topk(m->acts.logits + (size_t)(T - 1) * V, V, temperature, rng);
        seq[len] = (uint8_t)next;
        out[i] = (uint8_t)next;
    }
    free(tok);
    free(seq);
}

void generate(Decoder *dc, const uint8_t *prompt, int plen, int n, double temperature,
              Rng *rng, uint8_t *out) {
    const int V = dc->m->cfg.num_tokens, ns = dc->nseq;
    int *tok = malloc(sizeof(int) * (size_t)(plen > ns ? plen : ns));
    real *logits = malloc(sizeof(real) * (size_t)ns * V);
    for (int t = 0; t < plen; t++) tok[t] = prompt[t];
    decoder_prefill(dc, tok, plen, logits);
    for (int i = 0; i < n; i++) {
        for (int q = 0; q < ns; q++) {
            tok[q] = sample_topk(logits + (size_t)q * V, V, temperature, rng);
            out[(size_t)q * n + i] = (uint8_t)tok[q];
        }
        if (i + 1 < n) decoder_step(dc, tok, logits);
    }
    free(logits);
    free(tok);
}

void print_bytes(FILE *f, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++) fputc(b[i] < 32 ? ' ' : b[i], f);
}
