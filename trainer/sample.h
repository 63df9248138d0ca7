/* trainer/sample.h: FLASH-pytorch's AutoregressiveWrapper sampling: top-k with
 * filter_thres 0.9 (k = int((1 - 0.9) V), 25 of 256), softmax of logits / temperature over
 * those, one draw. */
#ifndef FLASH_SAMPLE_H
#define FLASH_SAMPLE_H
#include <stdint.h>
#include <stdio.h>
#include "model.h"
#include "rng.h"

#define SAMPLE_FILTER_THRES 0.9

/* the logits top-k keeps of V: int((1 - SAMPLE_FILTER_THRES) V), at least 1, at most 256 */
int sample_keep(int V);
/* the byte for the uniform u01 in [0, 1): the sample_keep(V) largest logits in order (ties:
   the lower index first), softmax of logit / temperature over them in double, the first
   whose running sum passes u01 times their sum */
int sample_topk_u(const float *logits, int V, double temperature, double u01);
/* sample_topk_u with one uniform drawn from rng */
int sample_topk(const float *logits, int V, double temperature, Rng *rng);

/* One byte for each of n sequences (logits n x V, tokens into tok): the same bytes as
   sample_topk called for q = 0 .. n - 1 in turn (each draws one uniform: they are drawn in
   that order first), the sequences then sampled on several threads when n is large. */
void sample_topk_many(const float *logits, int n, int V, double temperature, Rng *rng, int *tok);
/* the same with the uniforms given: tok[q] = sample_topk_u(row q, u[q]) */
void sample_topk_many_u(const float *logits, int n, int V, double temperature, const double *u, int *tok);

/* `steps` bytes for each of the decoder's ns sequences, each fed through the decoder before
   the next is sampled: tok[i ns + q] is step i's byte of sequence q, sampled with the
   uniform u[i ns + q], drawn from rng in that order (the stream of sample_topk_many once a
   step). On the backend's device when it samples there (model_decoder_sample: the logits
   stay on it), else on the host from logits (ns x V: the current logits on entry, the
   next on return). Either way the same bytes for the same logits (kernels_sample.cu says
   how exactly). u: room for steps x ns. 1 (sampled on the device), 0 (on the host), or -1
   when a step failed. */
int sample_decode(Model *m, int ns, int steps, double temperature, Rng *rng, float *logits, int *tok,
                  double *u);

/* Reference generator: one full forward over the last `ctx` bytes for every new byte
   (FLASH-pytorch's way; O(n^2)). The model's activations must hold B=1 x ctx.
   0, or -1 with a message. */
int generate_full_forward(Model *m, const uint8_t *prompt, int plen, int n, int ctx,
                          double temperature, Rng *rng, uint8_t *out, char *err, size_t errlen);

/* The fast path: prefill the prompt (plen >= 1) into the model's decoder (open, for nseq
   sequences and prompts of at least plen), then n bytes per sequence, each from the
   decoder's cached state. out: nseq x n. 0, or -1 with a message. */
int generate(Model *m, int nseq, const uint8_t *prompt, int plen, int n, double temperature,
             Rng *rng, uint8_t *out, char *err, size_t errlen);

/* generate() reports its progress on f (NULL, the default: silent), for ./train sample. */
void generate_progress(FILE *f);

/* Bytes as text, values below 32 shown as a space (as the reference's decode_token). */
void print_bytes(FILE *f, const uint8_t *b, int n);

#endif
