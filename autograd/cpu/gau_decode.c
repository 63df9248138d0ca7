/* autograd/cpu/gau_decode.c: sampling from a gau model (cpu_decode.h's decoder for --model gau).
 *
 * Why not a cache of keys and values, as FLASH's decoder keeps: GAU divides every layer's
 * scores by the CURRENT sequence length T (attn = phi(sim / T)), so when a byte is appended
 * every earlier position's output changes, in the first layer and therefore in the inputs,
 * keys and values of every later one. FLASH-pytorch's generate runs the full forward over
 * the whole sequence for each new byte; a cache of layer l's keys and values from earlier
 * steps would hold them at the lengths they were made at and, from the second layer on, give
 * logits that are neither generate's nor the parallel forward's. So the decoder does what
 * generate does: at position t (0-based) the forward over the t + 1 tokens so far, divided by
 * t + 1, and the logits of its last row; O(t^2) attention and O(t) of everything else per
 * byte. The forward runs in activations of its own (the model's stay as training sized
 * them), which grow by doubling as the sequences do: outside any training step. */
#include "cpu_decode.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for `need` positions of every sequence: the token history (nseq x (cap + 1), kept)
   and the forward's activations (nseq x cap). */
static int gau_grow(Decoder *dc, int need, char *err, size_t errlen) {
    if (need <= dc->cap) return 0;
    int cap = dc->cap > 0 ? dc->cap : 64;
    while (cap < need) cap *= 2;
    const size_t n = (size_t)dc->nseq * (cap + 1);
    int *hist = calloc(n, sizeof(int)), *pack = calloc(n, sizeof(int));
    if (!hist || !pack) {
        free(hist); free(pack);
        snprintf(err, errlen, "out of memory for a gau window of %d positions", cap);
        return -1;
    }
    if (cpu_alloc_acts(dc->fwd, dc->nseq, cap, err, errlen)) { free(hist); free(pack); return -1; }
    for (int i = 0; i < dc->nseq && dc->hist; i++)
        memcpy(hist + (size_t)i * (cap + 1), dc->hist + (size_t)i * (dc->cap + 1), sizeof(int) * dc->pos);
    free(dc->hist);
    free(dc->tok);
    dc->hist = hist;
    dc->tok = pack;
    dc->cap = cap;
    return 0;
}

int gau_decoder_init(Decoder *dc, char *err, size_t errlen) {
    dc->fwd = malloc(sizeof *dc->fwd);
    if (!dc->fwd) { snprintf(err, errlen, "out of memory for the gau decoder"); return -1; }
    /* the model's parameters, position tables and settings; activations of its own */
    *dc->fwd = *dc->m;
    memset(&dc->fwd->acts, 0, sizeof dc->fwd->acts);
    dc->fwd->acts_ready = 0;
    dc->fwd->prof = NULL;
    if (gau_grow(dc, dc->max_prompt, err, errlen)) { gau_decoder_free(dc); return -1; }
    return 0;
}

void gau_decoder_free(Decoder *dc) {
    if (dc->fwd) free(dc->fwd->acts.base);   /* the parameters are the model's */
    free(dc->fwd);
    free(dc->hist);
    dc->fwd = NULL;
    dc->hist = NULL;
    dc->cap = 0;
}

/* The forward over the pos tokens of each sequence (packed as cpu_forward reads them: rows of
   T + 1, the last a target that is not used); logits: the last row's. */
static void gau_forward_last(Decoder *dc, real *logits) {
    const int n = dc->nseq, T = (int)dc->pos, V = dc->m->cfg.num_tokens;
    int *pack = dc->tok;
    for (int i = 0; i < n; i++) {
        memcpy(pack + (size_t)i * (T + 1), dc->hist + (size_t)i * (dc->cap + 1), sizeof(int) * T);
        pack[(size_t)i * (T + 1) + T] = 0;
    }
    cpu_forward(dc->fwd, pack, n, T);
    for (int i = 0; i < n; i++)
        memcpy(logits + (size_t)i * V, dc->fwd->acts.logits + ((size_t)i * T + T - 1) * V, sizeof(real) * V);
}

int gau_decoder_step(Decoder *dc, const int *tokens, real *logits) {
    char err[256];
    if (dc->pos >= (1L << 30) || gau_grow(dc, (int)dc->pos + 1, err, sizeof err)) return -1;
    for (int i = 0; i < dc->nseq; i++) dc->hist[(size_t)i * (dc->cap + 1) + dc->pos] = tokens[i];
    dc->pos++;
    gau_forward_last(dc, logits);
    return 0;
}

int gau_decoder_prefill(Decoder *dc, const int *prompt, int P, real *logits) {
    char err[256];
    dc->pos = 0;
    if (gau_grow(dc, P, err, sizeof err)) return -1;
    for (int i = 0; i < dc->nseq; i++) memcpy(dc->hist + (size_t)i * (dc->cap + 1), prompt, sizeof(int) * P);
    dc->pos = P;
    gau_forward_last(dc, logits);
    return 0;
}
