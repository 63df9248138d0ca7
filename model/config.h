/* model/config.h: the shape and options of a FLASHTransformer (docs/model.md, "Sizes"). */
#ifndef FLASH_CONFIG_H
#define FLASH_CONFIG_H
#include <stddef.h>

typedef enum { NORM_SCALENORM = 0, NORM_LAYERNORM = 1 } NormType;
/* The attention function phi of the scores (FLASH-pytorch's laplace_attn_fn: true or false). */
typedef enum { ATTN_RELU2 = 0, ATTN_LAPLACE = 1 } AttnFn;

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
} FlashConfig;

/* The train.py model: d 512, L 8, C 256, s 128, expansion 2, scalenorm, shift, laplace. */
FlashConfig config_default(void);

int config_hidden(const FlashConfig *c);  /* e */
int config_rotary(const FlashConfig *c);  /* r = min(32, s) */

/* 0 when the configuration can be built, else -1 with a message naming the bad field. */
int config_validate(const FlashConfig *c, char *err, size_t errlen);

/* The FLASHTransformer keyword arguments as JSON, in the fixtures' form. */
int config_to_json(const FlashConfig *c, char *buf, size_t buflen);

/* Parses config_to_json's output (or the fixtures' `config` metadata). Keys left out
   keep the values already in *c. 0, or -1 with a message. */
int config_from_json(FlashConfig *c, const char *json, char *err, size_t errlen);

#endif
