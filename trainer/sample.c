/* trainer/sample.c: top-k sampling and the reference full-forward generator. */
#include "sample.h"
#include "progress.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the byte for the uniform u01 in [0, 1) */
static int sample_topk_u(const float *logits, int V, double temperature, double u01) {
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
    double u = u01 * sum;
    for (int j = 0; j < n; j++) {
        u -= p[j];
        if (u < 0) return idx[j];
    }
    return idx[n - 1];
}

int sample_topk(const float *logits, int V, double temperature, Rng *rng) {
    return sample_topk_u(logits, V, temperature, rng_uniform(rng));
}

/* Below this many sequences one thread samples them all (a thread team costs more than the
   few microseconds a sequence takes); above it, about this many a thread. */
#define SAMPLE_SEQ_PER_THREAD 8
void sample_topk_many(const float *logits, int n, int V, double temperature, Rng *rng, int *tok) {
    double u[SAMPLE_SEQ_PER_THREAD * 8];
    for (int q0 = 0; q0 < n; q0 += SAMPLE_SEQ_PER_THREAD * 8) {
        const int m = n - q0 < SAMPLE_SEQ_PER_THREAD * 8 ? n - q0 : SAMPLE_SEQ_PER_THREAD * 8;
        for (int q = 0; q < m; q++) u[q] = rng_uniform(rng);
        const int threads = (m + SAMPLE_SEQ_PER_THREAD - 1) / SAMPLE_SEQ_PER_THREAD;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int q = 0; q < m; q++)
            tok[q0 + q] = sample_topk_u(logits + (size_t)(q0 + q) * V, V, temperature, u[q]);
    }
}

int generate_full_forward(Model *m, const uint8_t *prompt, int plen, int n, int ctx,
                          double temperature, Rng *rng, uint8_t *out, char *err, size_t errlen) {
    const int V = model_config(m)->num_tokens;
    int total = plen + n;
    uint8_t *seq = malloc((size_t)total);
    int *tok = malloc(sizeof(int) * (size_t)(ctx + 1));
    float *logits = malloc(sizeof(float) * (size_t)ctx * V);
    int rc = 0;
    if (!seq || !tok || !logits) { snprintf(err, errlen, "out of memory"); rc = -1; }
    if (!rc) memcpy(seq, prompt, (size_t)plen);
    for (int i = 0; i < n && !rc; i++) {
        int len = plen + i, T = len < ctx ? len : ctx;
        const uint8_t *w = seq + len - T;
        for (int t = 0; t < T; t++) tok[t] = w[t];
        tok[T] = 0;   /* the forward wants a target for every position; unused */
        model_forward(m, tok, 1, T, NULL, logits);
        int next = sample_topk(logits + (size_t)(T - 1) * V, V, temperature, rng);
        seq[len] = (uint8_t)next;
        out[i] = (uint8_t)next;
    }
    free(logits);
    free(tok);
    free(seq);
    return rc;
}

static FILE *g_progress;
void generate_progress(FILE *f) { g_progress = f; }

int generate(Model *m, int ns, const uint8_t *prompt, int plen, int n, double temperature,
             Rng *rng, uint8_t *out, char *err, size_t errlen) {
    const int V = model_config(m)->num_tokens;
    int *tok = malloc(sizeof(int) * (size_t)(plen > ns ? plen : ns));
    float *logits = malloc(sizeof(float) * (size_t)ns * V);
    int rc = 0;
    if (!tok || !logits) { snprintf(err, errlen, "out of memory"); rc = -1; }
    if (!rc) {
        for (int t = 0; t < plen; t++) tok[t] = prompt[t];
        if (model_decoder_prefill(m, tok, plen, logits)) {
            snprintf(err, errlen, "the decoder cannot take a prompt of %d bytes", plen);
            rc = -1;
        }
    }
    Progress pr;
    progress_start(&pr, g_progress, "sample", "bytes", (double)n * ns);
    for (int i = 0; i < n && !rc; i++) {
        progress_tick(&pr, (double)i * ns);
        sample_topk_many(logits, ns, V, temperature, rng, tok);
        for (int q = 0; q < ns; q++) out[(size_t)q * n + i] = (uint8_t)tok[q];
        if (i + 1 < n && model_decoder_step(m, tok, logits)) {
            snprintf(err, errlen, "decoder step failed");
            rc = -1;
        }
    }
    progress_end(&pr);
    free(logits);
    free(tok);
    return rc;
}

void print_bytes(FILE *f, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++) fputc(b[i] < 32 ? ' ' : b[i], f);
}
