/* autograd/cuda/gau_decode.cu: sampling from a --model gau model on the GPU, the twin of
 * autograd/cpu/gau_decode.c.
 *
 * GAU divides every layer's scores by the current sequence length, so appending a byte
 * changes every earlier position's output from the first layer on and no cache of keys and
 * values can reproduce the full forward (docs/model.md, "Sampling from FLASH-Quad"). As
 * FLASH-pytorch's generate does, each byte is the full forward over the sequence so far and
 * the logits of its last row. The forward runs in a CUDA model of its own (the sampled
 * sequences' activations; the training model's stay as training sized them), opened at the
 * decoder's open and reopened at twice the positions when a sequence outgrows it; at each
 * prefill (a sampling starts) it takes the training model's current parameters. */
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"

typedef struct CudaGauDecoder {
    int nseq, cap;     /* sequences; positions the forward model holds */
    Model *fwd;        /* the forward's own CUDA model, nseq x cap */
    int *hist;         /* host: each sequence's tokens, rows of cap + 1 */
    int *pack;         /* host: the forward's rows of pos + 1 */
    long pos;
} CudaGauDecoder;

/* the training model's parameters into the forward's model (its bf16 twin and tables too) */
static int gau_sync_params(Model *m, CudaGauDecoder *g, char *err, size_t errlen) {
    float *host = (float *)malloc(sizeof(float) * (m->table.total ? m->table.total : 1));
    if (!host) { snprintf(err, errlen, "out of memory"); return -1; }
    int rc = model_read(m, STATE_PARAMS, host, err, errlen);
    if (!rc) rc = model_write(g->fwd, STATE_PARAMS, host, err, errlen);
    free(host);
    return rc;
}

/* room for `need` positions of every sequence: a larger forward model, the history kept */
static int gau_grow(Model *m, CudaGauDecoder *g, int need, char *err, size_t errlen) {
    if (need <= g->cap && g->fwd) return 0;
    int cap = g->cap > 0 ? g->cap : 64;
    while (cap < need) cap *= 2;
    const size_t n = (size_t)g->nseq * (cap + 1);
    int *hist = (int *)calloc(n, sizeof(int)), *pack = (int *)calloc(n, sizeof(int));
    if (!hist || !pack) {
        free(hist); free(pack);
        snprintf(err, errlen, "out of memory for a gau window of %d positions", cap);
        return -1;
    }
    if (g->fwd) model_close(g->fwd);
    ModelOptions mo = m->opt;
    mo.max_B = g->nseq;
    mo.max_T = cap;
    mo.step_seqs = g->nseq;
    mo.micro_batch = 0;
    g->fwd = model_open(&m->cfg, &mo, err, errlen);
    if (!g->fwd || gau_sync_params(m, g, err, errlen)) { free(hist); free(pack); return -1; }
    for (int i = 0; i < g->nseq && g->hist; i++)
        memcpy(hist + (size_t)i * (cap + 1), g->hist + (size_t)i * (g->cap + 1), sizeof(int) * g->pos);
    free(g->hist);
    free(g->pack);
    g->hist = hist;
    g->pack = pack;
    g->cap = cap;
    return 0;
}

void gau_cuda_decoder_close(Model *m) {
    CudaModel *cm = CM(m);
    CudaGauDecoder *g = cm ? cm->gau_dec : NULL;
    if (!g) return;
    if (g->fwd) model_close(g->fwd);
    free(g->hist);
    free(g->pack);
    free(g);
    cm->gau_dec = NULL;
}

int gau_cuda_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen) {
    CudaModel *cm = CM(m);
    gau_cuda_decoder_close(m);
    if (nseq < 1) { snprintf(err, errlen, "the decoder needs at least one sequence"); return -1; }
    CudaGauDecoder *g = (CudaGauDecoder *)calloc(1, sizeof *g);
    if (!g) { snprintf(err, errlen, "out of memory"); return -1; }
    cm->gau_dec = g;
    g->nseq = nseq;
    if (gau_grow(m, g, max_prompt > 1 ? max_prompt : 1, err, errlen)) { gau_cuda_decoder_close(m); return -1; }
    return 0;
}

/* the forward over the pos tokens of each sequence; logits: each one's last row */
static int gau_forward_last(CudaGauDecoder *g, float *logits) {
    const int n = g->nseq, T = (int)g->pos;
    for (int i = 0; i < n; i++) {
        memcpy(g->pack + (size_t)i * (T + 1), g->hist + (size_t)i * (g->cap + 1), sizeof(int) * T);
        g->pack[(size_t)i * (T + 1) + T] = 0;
    }
    return cuda_forward_last(g->fwd, g->pack, n, T, logits);
}

int gau_cuda_decoder_step(Model *m, const int *tokens, float *logits) {
    CudaGauDecoder *g = CM(m)->gau_dec;
    char err[256];
    if (!g || g->pos < 1 || g->pos >= (1L << 30)) return -1;
    if (gau_grow(m, g, (int)g->pos + 1, err, sizeof err)) { fprintf(stderr, "error: %s\n", err); return -1; }
    for (int i = 0; i < g->nseq; i++) g->hist[(size_t)i * (g->cap + 1) + g->pos] = tokens[i];
    g->pos++;
    return gau_forward_last(g, logits);
}

int gau_cuda_decoder_prefill(Model *m, const int *prompt, int P, float *logits) {
    CudaGauDecoder *g = CM(m)->gau_dec;
    char err[256];
    if (!g || P < 1) return -1;
    g->pos = 0;
    /* a sampling starts: the training model's parameters as they are now */
    if (gau_grow(m, g, P, err, sizeof err) || gau_sync_params(m, g, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    for (int i = 0; i < g->nseq; i++) memcpy(g->hist + (size_t)i * (g->cap + 1), prompt, sizeof(int) * P);
    g->pos = P;
    return gau_forward_last(g, logits);
}
