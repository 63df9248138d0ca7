/* model/flash.h: the FLASHTransformer: parameters, gradients, activations, forward and
 * backward over a batch of B sequences of T tokens (flash-spec.md, "Forward"). */
#ifndef FLASH_MODEL_H
#define FLASH_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "params.h"
#include "real.h"

/* What the forward keeps for the backward, one block per layer (index l) where noted.
   Sized once for (B, T) by model_alloc_acts; nothing is allocated during a step. */
typedef struct {
    int B, T, G;               /* capacity: batch, sequence length, groups ceil(T/C) */
    real *res;                 /* (L+1) x N x d: residual stream; res[l] enters layer l */
    real *nstat;               /* L x N x 2: scalenorm 1/norm; layernorm mean, rstd */
    real *xs;                  /* L x N x d: normalized, shifted layer input */
    real *hid_u, *hid;         /* L x N x (2e+s): to_hidden|to_qk pre-activation, silu of it:
                                  v | gate | z per row */
    real *qk4;                 /* L x 4 x N x s: quad_q, lin_q, quad_k, lin_k (rotated) */
    real *sim, *attn;          /* L x B*G x C x C: scores and phi(scores), causal-masked */
    real *kv;                  /* L x B*G x s x e: exclusive prefix sums S_g */
    real *att;                 /* L x N x e: quad_out + lin_out */
    real *gated;               /* L x N x e: gate * att, input of to_out */
    real *lnf_out, *lnf_stat;  /* N x d, N x 2: final LayerNorm */
    real *logits;              /* N x V */
    real *losses;              /* N: per-position loss */
    real *pos_table;           /* T x d: unscaled sinusoids */
    real *rot_cos, *rot_sin;   /* T x r/2 */
    /* backward scratch, reused by every layer */
    real *d_res, *d_xs, *d_hid, *d_qk4, *d_att, *d_gated, *d_kv;
    real *d_rel_partial, *dsim, *d_logits, *d_lnf, *bias_dist;
    size_t bytes;              /* total allocated, for reporting */
} Acts;

/* Where a step's time goes, when Model.prof is set (bench): seconds per phase, forward
   phases first, then the same phases of the backward (index + PROF_PHASES). */
enum { PROF_EMBED, PROF_NORM, PROF_SHIFT, PROF_TO_HIDDEN, PROF_SILU, PROF_ROTARY,
       PROF_ATTENTION, PROF_GATE, PROF_TO_OUT, PROF_HEAD, PROF_PHASES };
extern const char *const PROF_NAMES[PROF_PHASES];

typedef struct {
    FlashConfig cfg;
    ParamTable table;
    real *params, *grads;      /* table.total elements each, same layout */
    ModelParams p, g;          /* named pointers into params and grads */
    Acts acts;
    int acts_ready;
    int cur_B, cur_T;          /* shape of the last forward */
    const int *cur_tokens;     /* tokens of the last forward (B x (T+1)), not owned */
    int tables_stale;          /* position tables to refill before the next forward */
    double *prof;              /* NULL, or 2 * PROF_PHASES accumulators (seconds) */
    double prof_t;             /* time of the last mark */
} Model;

/* Builds the table and allocates params and grads (zeroed). 0, or -1 with a message. */
int model_create(Model *m, const FlashConfig *cfg, char *err, size_t errlen);
void model_destroy(Model *m);
void model_init_params(Model *m, uint64_t seed);
/* Code that writes m->params itself (imports, checkpoints) calls this afterwards: the
   position tables derive from the untrained buffers among them. */
static inline void model_params_changed(Model *m) { m->tables_stale = 1; }
/* Activation buffers for batches up to B x T. 0, or -1 with a message. */
int model_alloc_acts(Model *m, int B, int T, char *err, size_t errlen);

/* tokens: B x (T+1) row-major; input tokens[:, :T], targets tokens[:, 1:]. Values must be
   < num_tokens (the caller checks). Returns the mean cross-entropy (nats). */
double model_forward(Model *m, const int *tokens, int B, int T);
/* Adds d(dloss * loss)/d params into m->grads (so micro-batches accumulate). Requires the
   forward of the same batch just before. */
void model_backward(Model *m, real dloss);
void model_zero_grads(Model *m);

#endif
