/* model/params.h: every tensor of the state_dict, by its PyTorch name, in one buffer.
 *
 * The table is built once from the config. The same table lays out the parameters, the
 * gradients and both Adam moments (same offsets in four buffers), drives safetensors
 * import/export and checkpoints, and tells the optimizer what is trained and what decays.
 * The two buffers PyTorch keeps in its state_dict but does not train
 * (abs_pos_emb.inv_freq, rotary_pos_emb.freqs) live in the table too, marked untrained. */
#ifndef FLASH_PARAMS_H
#define FLASH_PARAMS_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "real.h"
#include "relpos.h"

#define PARAM_NAME_MAX 96

typedef struct {
    char name[PARAM_NAME_MAX];
    int ndim;
    int64_t shape[2];
    size_t offset, numel;       /* in elements, into the buffer */
    int trained;                /* 0 for the buffers inv_freq and rotary freqs */
    int decay;                  /* weight decay applies (Linear weights, token embedding) */
} ParamInfo;

typedef struct {
    ParamInfo *info;
    int n;
    size_t total;               /* elements in the buffer */
    size_t n_trained;           /* elements that the optimizer updates */
} ParamTable;

/* Pointers into one buffer, one struct per layer; fields not used by the config's norm
   type are NULL. Shapes are (out, in) for Linear weights, row-major. */
typedef struct {
    real *norm_g;               /* scalenorm: 1 */
    real *norm_w, *norm_b;      /* layernorm: d, d */
    real *rel_bias;             /* 32 (x 1) */
    real *wh, *bh;              /* to_hidden.0: 2e x d, 2e; to_qk.0 follows each directly, */
    real *wqk, *bqk;            /* to_qk.0: s x d, s;        so wh/bh start (2e+s) x d, 2e+s */
    real *gamma, *beta;         /* qk_offset_scale: 4 x s (GAU's offsetscale: 2 x s) */
    real *wo, *bo;              /* to_out: d x e, d */
    real *rot_freqs;            /* rotary_pos_emb.freqs: r/2 (buffer; NULL for GAU) */
} LayerParams;

typedef struct {
    real *tok_emb;              /* V x d */
    real *pos_scale;            /* 1 */
    real *inv_freq;             /* d/2 (buffer) */
    LayerParams *layer;         /* depth of them (owned) */
    real *lnf_w, *lnf_b;        /* to_logits.0: d, d */
    real *w_logits, *b_logits;  /* to_logits.1: V x d, V */
} ModelParams;

/* Builds the table for a valid config. Returns 0, -1 on allocation failure. */
int params_table_build(ParamTable *t, const FlashConfig *c);
void params_table_free(ParamTable *t);
const ParamInfo *params_find(const ParamTable *t, const char *name);

/* Points p's fields into buf (t->total elements) following the table. -1 when out of
   memory, or when to_qk does not follow to_hidden (the fused product relies on it). */
int params_point(ModelParams *p, const ParamTable *t, const FlashConfig *c, real *buf);
void params_unpoint(ModelParams *p);

/* Initialises buf with PyTorch's default distributions (docs/model.md) from a seed, and the
   buffers to their fixed values. 0, or -1 when out of memory. */
int params_init(const ParamTable *t, const FlashConfig *c, real *buf, uint64_t seed);

#endif
