/* autograd/cpu/cpu_decode.h: the CPU backend's incremental (recurrent) decoding of the causal FLASHTransformer.
 *
 * A causal FLASH layer needs, to process position t, only: the linear attention's prefix
 * sum S = sum over finished groups of lin_k^T v / C (s x e), the current group's quad_k,
 * lin_k and v rows (at most C), the previous position's normalized row (token shift), and
 * t. So each new byte costs the same work and memory at any position, where recomputing
 * the full forward per byte costs O(n) per byte. nseq sequences advance together and share
 * every pass over the weights (one GEMM of nseq rows instead of nseq matrix-vector products). */
#ifndef FLASH_CPU_DECODE_H
#define FLASH_CPU_DECODE_H
#include <stddef.h>
#include "cpu_model.h"

typedef struct {
    CpuModel *m;
    int nseq, max_prompt;
    int blocks;            /* output blocks of a product (the thread count at init) */
    long pos;              /* the next position to process */
    /* state, per layer l and sequence i */
    real *kv;              /* L x nseq x state: S over finished groups */
    size_t state;          /* its size per layer and sequence: s x e, or taylor's F x (e+1) */
    real *tay;             /* taylor's scratch, nseq x (C x F + F + e + 1) (else empty) */
    real *gq, *gk, *gv;    /* L x nseq x C x s (quad_k), x s (lin_k), x e (v): current group */
    real *prev;            /* L x nseq x d: previous position's normalized row */
    /* scratch for one position */
    real *h, *xn, *xs, *stat, *hid_u, *hid, *z_u, *z, *qk4, *att, *gated, *tmp, *lnf, *logits;
    real *pos_vec, *rot_cos, *rot_sin, *sim;
    int *tok;              /* max(max_prompt + 1, nseq): the prefill's tokens, a step's column */
    /* gau (gau_decode.c): every sequence's tokens so far and a forward of its own */
    int *hist;             /* nseq x (cap + 1): the tokens, packed for the forward at each step */
    int cap;               /* positions the window holds before it grows */
    CpuModel *fwd;         /* m's parameters over activations of nseq x cap */
} Decoder;

/* State for nseq sequences and prompts of up to max_prompt tokens; the model's activations
   must hold 1 x decoder_prefill_rows(m, max_prompt). 0, or -1 with a message. */
int decoder_init(Decoder *dc, CpuModel *m, int nseq, int max_prompt, char *err, size_t errlen);
void decoder_free(Decoder *dc);

/* Feeds token[i] to sequence i at position dc->pos; writes logits (nseq x V) for the next
   byte and advances pos. 0, or -1 when gau's window could not grow (out of memory). */
int decoder_step(Decoder *dc, const int *tokens, real *logits);

/* Starts every sequence from the same prompt of P >= 1 tokens: whole groups through the
   parallel forward (the model's activations must hold 1 x floor(P/C)*C; see
   decoder_prefill_rows), the rest step by step. logits: the next byte's (nseq x V).
   0, or -1 when P is not in [1, max_prompt]. */
int decoder_prefill(Decoder *dc, const int *prompt, int P, real *logits);
/* Positions of a P-token prompt that decoder_prefill runs through the parallel forward. */
int decoder_prefill_rows(const CpuModel *m, int P);

/* gau's decoder (gau_decode.c), which the four above call for a gau model */
int gau_decoder_init(Decoder *dc, char *err, size_t errlen);
void gau_decoder_free(Decoder *dc);
int gau_decoder_step(Decoder *dc, const int *tokens, real *logits);
int gau_decoder_prefill(Decoder *dc, const int *prompt, int P, real *logits);

#endif
