/* model/config.h: the shape and options of a FLASHTransformer (docs/model.md, "Sizes"). */
#ifndef FLASH_CONFIG_H
#define FLASH_CONFIG_H
#include <stddef.h>

typedef enum { NORM_SCALENORM = 0, NORM_LAYERNORM = 1 } NormType;
/* The attention function phi of the scores (FLASH-pytorch's laplace_attn_fn: true or false). */
typedef enum { ATTN_RELU2 = 0, ATTN_LAPLACE = 1 } AttnFn;
/* The layer: FLASH (grouped quadratic + linear attention) or FLASH-Quad's GAU (quadratic
   attention over the whole sequence; no groups, token shift or rotary). JSON "model". */
typedef enum { MODEL_FLASH = 0, MODEL_GAU = 1 } ModelKind;
/* FLASH's linear part across groups: plain (lin_q S_g) or the second-order Taylor feature
   map, normalised (docs/model.md, "The Taylor linear attention"). JSON "linear_attn". */
typedef enum { LINEAR_PLAIN = 0, LINEAR_TAYLOR = 1 } LinearAttn;
/* taylor's feature map has 1 + s + s(s+1)/2 distinct features (the reference's
   1 + s + s^2 holds each pair of x x^T twice): at most s = 32 (561 features) */
#define TAYLOR_MAX_QK_DIM 32
/* that count at qk-dim s: the one formula (config_taylor_width, the CPU's attention and its
   messages take it from here) */
static inline int taylor_feature_count(int s) { return 1 + s + s * (s + 1) / 2; }

typedef struct {
    int num_tokens;          /* V: vocabulary, 256 for bytes */
    int dim;                 /* d: model width */
    int depth;               /* L: layers */
    int group_size;          /* C: local attention group (chunk) size */
    int query_key_dim;       /* s: query/key width */
    double expansion_factor; /* hidden width e = int(expansion_factor * d) */
    NormType norm_type;
    int shift_tokens;        /* bool */
    AttnFn attn_fn;
    ModelKind model;         /* gau: group_size and shift_tokens unused (shift_tokens 0) */
    LinearAttn linear_attn;  /* FLASH only */
} FlashConfig;

/* The train.py model: d 512, L 8, C 256, s 128, expansion 2, scalenorm, shift, laplace. */
FlashConfig config_default(void);

int config_hidden(const FlashConfig *c);  /* e */
int config_rotary(const FlashConfig *c);  /* r = min(32, s); 0 for gau */
/* F = 1 + s + s(s+1)/2 with taylor (the symmetric form, docs/model.md), else 0 */
int config_taylor_width(const FlashConfig *c);
const char *config_model_name(ModelKind k);      /* "flash", "gau" */
const char *config_linear_name(LinearAttn k);    /* "plain", "taylor" */

/* 0 when the configuration can be built, else -1 with a message naming the bad field. */
int config_validate(const FlashConfig *c, char *err, size_t errlen);

/* The FLASHTransformer keyword arguments as JSON, in the fixtures' form. */
int config_to_json(const FlashConfig *c, char *buf, size_t buflen);

/* Parses config_to_json's output (or the fixtures' `config` metadata). Keys left out
   keep the values already in *c. 0, or -1 with a message. */
int config_from_json(FlashConfig *c, const char *json, char *err, size_t errlen);

#endif
