/* autograd/cpu/cpu_model.h: the CPU backend's model: parameters, gradients, activations, forward
 * and backward over a batch of B sequences of T tokens (docs/model.md); its layers are
 * flash_layer.c's (gau_layer.c's for --model gau). Only the CPU backend
 * (autograd/cpu/cpu_backend.c), its decoder and the tests of the CPU code use this header; everything
 * else goes through model/model.h. */
#ifndef FLASH_CPU_MODEL_H
#define FLASH_CPU_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "params.h"
#include "real.h"

/* What the forward keeps for the backward, one block per layer (index l) where noted.
   Every buffer is named once, in ACT_BUFFERS with its element count; all of them live in
   one allocation (base), each at a 64-byte aligned offset, sized once for (B, T) by
   cpu_alloc_acts: nothing is allocated during a step.
   Symbols: N = B*T rows, BG = B*G groups, H = 2e+s (v | gate | z per row), r rotary width,
   SK the split-K partial sums (0 unless the weight gradients split K at this thread count),
   TF taylor's feature width F = 1 + s + s(s+1)/2 and TE = e + 1 (both 0 for the plain linear part);
   Q the query/key blocks per row (4; gau 2: q, k), LIN 1 with a linear part (gau 0). For gau
   C = T and G = 1 (one group: sim and attn are B x T x T per layer) and r = 0. */
#define ACT_BUFFERS(X)                                                                      \
    X(res, (L + 1) * N * d)    /* residual stream; res[l] enters layer l */                 \
    X(nstat, L * N * 2)        /* scalenorm 1/norm; layernorm mean, rstd */                 \
    X(xs, L * N * d)           /* normalized, shifted layer input */                        \
    X(hid_u, L * N * H)        /* to_hidden|to_qk pre-activation */                         \
    X(hid, L * N * H)          /* silu of it: v | gate | z per row */                       \
    X(qk4, L * Q * N * s)      /* quad_q, lin_q, quad_k, lin_k (rotated); gau q, k */       \
    X(sim, L * BG * C * C)     /* scores, causal-masked */                                  \
    X(attn, L * BG * C * C)    /* phi(scores) */                                            \
    X(kv, LIN * L * BG * s * e) /* exclusive prefix sums S_g */                             \
    X(tay_f, L * 2 * N * TF)   /* taylor: phi(lin_q / sqrt s), phi(lin_k) (attn_taylor.c) */ \
    X(tay_st, L * BG * TF * TE) /* taylor: exclusive prefix sums [KV | Z] per group */      \
    X(tay_nd, L * N * TE)      /* taylor: [num | den] per row */                            \
    X(att, L * N * e)          /* quad_out + lin_out */                                     \
    X(gated, L * N * e)        /* gate * att, input of to_out */                            \
    X(lnf_out, N * d)          /* final LayerNorm */                                        \
    X(lnf_stat, N * 2)                                                                      \
    X(logits, N * V)                                                                        \
    X(losses, N)               /* per-position loss */                                      \
    X(pos_table, T * d)        /* unscaled sinusoids */                                     \
    X(rot_cos, T * (r / 2))                                                                 \
    X(rot_sin, T * (r / 2))                                                                 \
    /* backward scratch, reused by every layer */                                           \
    X(d_res, N * d)                                                                         \
    X(d_xs, N * d)                                                                          \
    X(d_hid, N * H)                                                                         \
    X(d_qk4, Q * N * s)                                                                     \
    X(d_att, N * e)                                                                         \
    X(d_gated, N * e)                                                                       \
    X(d_kv, LIN * BG * s * e)                                                               \
    X(d_tay_f, 2 * N * TF)     /* taylor's backward: the shapes of tay_* for one layer */   \
    X(d_tay_st, BG * TF * TE)                                                               \
    X(d_tay_nd, N * TE)                                                                     \
    X(d_rel_partial, BG * C * C) /* one C-vector per row block: at most C blocks */         \
    X(bias_dist, C)                                                                         \
    X(dsim, BG * C * C)                                                                     \
    X(d_logits, N * V)                                                                      \
    X(d_lnf, N * d)                                                                         \
    X(splitk, SK)              /* the weight gradients' partial sums */

#define ACT_FIELD(name, count) real *name;
typedef struct {
    int B, T, G;               /* capacity: batch, sequence length, groups ceil(T/C) */
    ACT_BUFFERS(ACT_FIELD)
    size_t splitk_floats;      /* room in splitk */
    real *base;                /* the one allocation */
    size_t bytes;              /* its size, for reporting */
} Acts;
#undef ACT_FIELD

/* Where a step's time goes, when Model.prof is set (bench): seconds per phase, forward
   phases first, then the same phases of the backward (index + PROF_PHASES). */
enum { PROF_EMBED, PROF_NORM, PROF_SHIFT, PROF_TO_HIDDEN, PROF_SILU, PROF_ROTARY,
       PROF_ATTENTION, PROF_GATE, PROF_TO_OUT, PROF_HEAD, PROF_PHASES };
extern const char *const PROF_NAMES[PROF_PHASES];
/* The profile's clock as the model hands it to the layer's rooms: acc is CpuModel.prof (NULL:
   not profiling), t its time of the last mark. */
typedef struct { double *acc; double *t; } Prof;
/* Adds the time since the previous mark to phase k (k < 0: only sets the mark). */
void prof_mark(const Prof *pf, int k);

typedef struct {
    FlashConfig cfg;
    ParamTable table;
    real *params, *grads;      /* table.total elements each, same layout */
    ModelParams p, g;          /* named pointers into params and grads */
    Acts acts;
    int acts_ready;
    int cur_B, cur_T;          /* shape of the last forward (the backward's) */
    int tables_stale;          /* position tables to refill before the next forward */
    double *prof;              /* NULL, or 2 * PROF_PHASES accumulators (seconds) */
    double prof_t;             /* time of the last mark */
} CpuModel;

/* Builds the table and allocates params and grads (zeroed). 0, or -1 with a message. */
int cpu_create(CpuModel *m, const FlashConfig *cfg, char *err, size_t errlen);
void cpu_destroy(CpuModel *m);
int cpu_init_params(CpuModel *m, uint64_t seed);   /* 0, or -1 when out of memory */
/* Code that writes m->params itself (imports, checkpoints) calls this afterwards: the
   position tables derive from the untrained buffers among them. */
static inline void cpu_params_changed(CpuModel *m) { m->tables_stale = 1; }
/* Bytes of the activations (and split-K partial sums) for batches up to B x T at this many
   threads, as cpu_alloc_acts reserves them. */
size_t cpu_acts_bytes(const FlashConfig *cfg, int B, int T, int threads);
/* Activation buffers for batches up to B x T, at the current OpenMP thread count (fix it
   before: the split-K buffer is sized by it). 0, or -1 with a message. */
int cpu_alloc_acts(CpuModel *m, int B, int T, char *err, size_t errlen);
/* 1 when a forward of B x T fits the activations. */
int cpu_fits(const CpuModel *m, int B, int T);

/* tokens: B x (T+1) row-major; input tokens[:, :T], targets tokens[:, 1:]. Values must be
   < num_tokens (the caller checks), and B x T must fit (cpu_fits; else NaN is returned).
   Returns the mean cross-entropy (nats). */
double cpu_forward(CpuModel *m, const int *tokens, int B, int T);
/* Adds d(dloss * loss)/d params into m->grads (so micro-batches accumulate). tokens: the
   batch of the forward just before (the same B, T). */
void cpu_backward(CpuModel *m, const int *tokens, real dloss);
void cpu_zero_grads(CpuModel *m);

#endif
