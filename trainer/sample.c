/* trainer/sample.c: top-k sampling and the reference full-forward generator. */
#include "sample.h"
#include "progress.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sample_keep(int V) {
    int k = (int)((1 - SAMPLE_FILTER_THRES) * V);
    if (k < 1) k = 1;
    return k > 256 ? 256 : k;   /* the byte model; larger vocabularies keep the 256 best */
}

int sample_topk_u(const float *logits, int V, double temperature, double u01) {
    const int k = sample_keep(V);
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
   few microseconds a sequence takes); above it, about this many a thread, at most 8 threads. */
#define SAMPLE_SEQ_PER_THREAD 8
#define SAMPLE_THREADS_MAX 8
void sample_topk_many_u(const float *logits, int n, int V, double temperature, const double *u, int *tok) {
    int threads = (n + SAMPLE_SEQ_PER_THREAD - 1) / SAMPLE_SEQ_PER_THREAD;
    if (threads > SAMPLE_THREADS_MAX) threads = SAMPLE_THREADS_MAX;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int q = 0; q < n; q++) tok[q] = sample_topk_u(logits + (size_t)q * V, V, temperature, u[q]);
}

void sample_topk_many(const float *logits, int n, int V, double temperature, Rng *rng, int *tok) {
    double u[SAMPLE_SEQ_PER_THREAD * SAMPLE_THREADS_MAX];
    for (int q0 = 0; q0 < n; q0 += SAMPLE_SEQ_PER_THREAD * SAMPLE_THREADS_MAX) {
        const int m = n - q0 < SAMPLE_SEQ_PER_THREAD * SAMPLE_THREADS_MAX ? n - q0 : SAMPLE_SEQ_PER_THREAD * SAMPLE_THREADS_MAX;
        for (int q = 0; q < m; q++) u[q] = rng_uniform(rng);
        sample_topk_many_u(logits + (size_t)q0 * V, m, V, temperature, u, tok + q0);
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

/* generate's bytes a sequence per call of sample_decode (a progress tick each) */
#define SAMPLE_DEVICE_STEPS 256

int sample_decode(Model *m, int ns, int steps, double temperature, Rng *rng, float *logits, int *tok,
                  double *u) {
    const int V = model_config(m)->num_tokens;
    for (int i = 0; i < steps * ns; i++) u[i] = rng_uniform(rng);
    const int rc = model_decoder_sample(m, steps, sample_keep(V), temperature, u, tok);
    if (rc == 0) return 1;   /* sampled on the device */
    if (rc < 0) return -1;
    for (int i = 0; i < steps; i++) {
        sample_topk_many_u(logits, ns, V, temperature, u + (size_t)i * ns, tok + (size_t)i * ns);
        if (model_decoder_step(m, tok + (size_t)i * ns, logits)) return -1;
    }
    return 0;
}

static FILE *g_progress;
void generate_progress(FILE *f) { g_progress = f; }

int generate(Model *m, int ns, const uint8_t *prompt, int plen, int n, double temperature,
             Rng *rng, uint8_t *out, char *err, size_t errlen) {
    const int V = model_config(m)->num_tokens, chunk = n < SAMPLE_DEVICE_STEPS ? n : SAMPLE_DEVICE_STEPS;
    int *tok = malloc(sizeof(int) * (size_t)(plen > ns * chunk ? plen : ns * chunk));
    float *logits = malloc(sizeof(float) * (size_t)ns * V);
    double *u = malloc(sizeof(double) * (size_t)ns * chunk);
    int rc = 0;
    if (!tok || !logits || !u) { snprintf(err, errlen, "out of memory"); rc = -1; }
    if (!rc) {
        for (int t = 0; t < plen; t++) tok[t] = prompt[t];
        if (model_decoder_prefill(m, tok, plen, logits)) {
            snprintf(err, errlen, "the decoder cannot take a prompt of %d bytes", plen);
            rc = -1;
        }
    }
    Progress pr;
    progress_start(&pr, g_progress, "sample", "bytes", (double)n * ns);
    for (int i0 = 0; i0 < n && !rc; i0 += chunk) {
        progress_tick(&pr, (double)i0 * ns);
        const int steps = n - i0 < chunk ? n - i0 : chunk;
        if (sample_decode(m, ns, steps, temperature, rng, logits, tok, u) < 0) {
            snprintf(err, errlen, "decoder step failed");
            rc = -1;
        }
        for (int i = 0; i < steps && !rc; i++)
            for (int q = 0; q < ns; q++) out[(size_t)q * n + i0 + i] = (uint8_t)tok[(size_t)i * ns + q];
    }
    progress_end(&pr);
    free(u);
    free(logits);
    free(tok);
    return rc;
}

void print_bytes(FILE *f, const uint8_t *b, int n) {
    for (int i = 0; i < n; i++) fputc(b[i] < 32 ? ' ' : b[i], f);
}
