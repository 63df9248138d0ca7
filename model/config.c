/* model/config.c: validation and JSON form of FlashConfig. */
#include "config.h"
#include "json.h"
#include <stdio.h>
#include <string.h>

/* Beyond these sizes the activation buffers' int indexing would need 64-bit counts
   everywhere; nothing in the spec comes close. */
#define CONFIG_MAX_WIDTH 65536

FlashConfig config_default(void) {
    FlashConfig c = {
        .num_tokens = 256, .dim = 512, .depth = 8, .group_size = 256,
        .query_key_dim = 128, .expansion_factor = 2.0, .norm_type = NORM_SCALENORM,
        .shift_tokens = 1, .attn_fn = ATTN_LAPLACE,
    };
    return c;
}

int config_hidden(const FlashConfig *c) { return (int)(c->expansion_factor * c->dim); }
int config_rotary(const FlashConfig *c) {
    if (c->model == MODEL_GAU) return 0;   /* GAU has no rotary embedding */
    return c->query_key_dim < 32 ? c->query_key_dim : 32;
}
int config_taylor_width(const FlashConfig *c) {
    return c->model == MODEL_FLASH && c->linear_attn == LINEAR_TAYLOR ? taylor_feature_count(c->query_key_dim) : 0;
}
const char *config_model_name(ModelKind k) { return k == MODEL_GAU ? "gau" : "flash"; }
const char *config_linear_name(LinearAttn k) { return k == LINEAR_TAYLOR ? "taylor" : "plain"; }

int config_validate(const FlashConfig *c, char *err, size_t errlen) {
#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)
    if (c->num_tokens < 2 || c->num_tokens > CONFIG_MAX_WIDTH)
        BAD("num_tokens must be in [2, %d], got %d", CONFIG_MAX_WIDTH, c->num_tokens);
    if (c->dim < 2 || c->dim > CONFIG_MAX_WIDTH || c->dim % 2)
        BAD("dim must be even and in [2, %d] (the sinusoidal position embedding takes "
            "dim/2 frequencies), got %d", CONFIG_MAX_WIDTH, c->dim);
    if (c->depth < 1 || c->depth > 1024) BAD("depth must be in [1, 1024], got %d", c->depth);
    if (c->group_size < 1 || c->group_size > CONFIG_MAX_WIDTH)
        BAD("group_size must be in [1, %d], got %d", CONFIG_MAX_WIDTH, c->group_size);
    if (c->query_key_dim < 2 || c->query_key_dim > CONFIG_MAX_WIDTH || c->query_key_dim % 2)
        BAD("query_key_dim must be even and in [2, %d] (rotary rotates feature pairs), "
            "got %d", CONFIG_MAX_WIDTH, c->query_key_dim);
    if (!(c->expansion_factor > 0) || c->expansion_factor * c->dim > CONFIG_MAX_WIDTH)
        BAD("expansion_factor must be positive with expansion_factor * dim <= %d, got %g",
            CONFIG_MAX_WIDTH, c->expansion_factor);
    if (config_hidden(c) < 1)
        BAD("expansion_factor %g gives a hidden width int(%g * %d) = 0",
            c->expansion_factor, c->expansion_factor, c->dim);
    if (c->norm_type != NORM_SCALENORM && c->norm_type != NORM_LAYERNORM)
        BAD("norm_type must be scalenorm or layernorm");
    if (c->model != MODEL_FLASH && c->model != MODEL_GAU) BAD("model must be flash or gau");
    if (c->linear_attn != LINEAR_PLAIN && c->linear_attn != LINEAR_TAYLOR)
        BAD("linear_attn must be plain or taylor");
    if (c->model == MODEL_GAU && c->shift_tokens)
        BAD("token shift does not apply to the gau model (FLASH-pytorch's GAU has none)");
    if (c->model == MODEL_GAU && c->linear_attn != LINEAR_PLAIN)
        BAD("linear_attn applies to the flash model only (gau has no linear attention)");
    if (c->linear_attn == LINEAR_TAYLOR && c->query_key_dim > TAYLOR_MAX_QK_DIM)
        BAD("linear_attn taylor needs query_key_dim <= %d: its feature map is 1 + s + s(s+1)/2 wide "
            "(s = %d would give %d features per key, and as many rows of state per layer and group); "
            "--qk-dim 16 gives %d", TAYLOR_MAX_QK_DIM, c->query_key_dim, taylor_feature_count(c->query_key_dim),
            taylor_feature_count(16));
    return 0;
#undef BAD
}

int config_to_json(const FlashConfig *c, char *buf, size_t buflen) {
    const char *norm = c->norm_type == NORM_LAYERNORM ? "layernorm" : "scalenorm";
    const char *laplace = c->attn_fn == ATTN_LAPLACE ? "true" : "false";
    /* GAU's keywords: no group_size or shift_tokens (they do not apply), "model" added */
    if (c->model == MODEL_GAU)
        return snprintf(buf, buflen,
                        "{\"num_tokens\": %d, \"dim\": %d, \"depth\": %d, \"query_key_dim\": %d, "
                        "\"expansion_factor\": %.17g, \"causal\": true, \"norm_type\": \"%s\", "
                        "\"laplace_attn_fn\": %s, \"model\": \"gau\"}",
                        c->num_tokens, c->dim, c->depth, c->query_key_dim, c->expansion_factor, norm, laplace);
    /* FLASH as FLASH-pytorch's FLASHTransformer keywords; "linear_attn" only when not plain,
       so that a plain FLASH file reads as before */
    return snprintf(buf, buflen,
                    "{\"num_tokens\": %d, \"dim\": %d, \"depth\": %d, \"group_size\": %d, "
                    "\"query_key_dim\": %d, \"expansion_factor\": %.17g, \"causal\": true, "
                    "\"norm_type\": \"%s\", \"shift_tokens\": %s, \"laplace_attn_fn\": %s%s}",
                    c->num_tokens, c->dim, c->depth, c->group_size, c->query_key_dim,
                    c->expansion_factor, norm, c->shift_tokens ? "true" : "false", laplace,
                    c->linear_attn == LINEAR_TAYLOR ? ", \"linear_attn\": \"taylor\"" : "");
}

static int get_int(const char *json, const char *key, int *out, char *err, size_t errlen) {
    double v;
    int r = json_get_number(json, key, &v);
    if (r == 1) return 0;
    /* the range in double before the cast (an out-of-range cast is undefined) */
    if (r < 0 || !(v >= -2147483648.0 && v <= 2147483647.0) || v != (double)(int)v) {
        snprintf(err, errlen, "config: \"%s\" must be an integer", key);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int get_bool(const char *json, const char *key, int *out, char *err, size_t errlen) {
    int r = json_get_bool(json, key, out);
    if (r < 0) { snprintf(err, errlen, "config: \"%s\" must be true or false", key); return -1; }
    return 0;
}

int config_from_json(FlashConfig *c, const char *json, char *err, size_t errlen) {
    /* the layer first: a GAU file has no shift_tokens (GAU has none) and no group_size */
    char kind[32];
    int r = json_get_string(json, "model", kind, sizeof kind);
    if (r < 0) { snprintf(err, errlen, "config: \"model\" must be a string"); return -1; }
    if (r == 0) {
        if (!strcmp(kind, "flash")) c->model = MODEL_FLASH;
        else if (!strcmp(kind, "gau")) { c->model = MODEL_GAU; c->shift_tokens = 0; }
        else { snprintf(err, errlen, "config: unknown model \"%s\" (flash or gau)", kind); return -1; }
    }
    r = json_get_string(json, "linear_attn", kind, sizeof kind);
    if (r < 0) { snprintf(err, errlen, "config: \"linear_attn\" must be a string"); return -1; }
    if (r == 0) {
        if (!strcmp(kind, "plain")) c->linear_attn = LINEAR_PLAIN;
        else if (!strcmp(kind, "taylor")) c->linear_attn = LINEAR_TAYLOR;
        else { snprintf(err, errlen, "config: unknown linear_attn \"%s\" (plain or taylor)", kind); return -1; }
    }
    if (get_int(json, "num_tokens", &c->num_tokens, err, errlen) ||
        get_int(json, "dim", &c->dim, err, errlen) ||
        get_int(json, "depth", &c->depth, err, errlen) ||
        get_int(json, "group_size", &c->group_size, err, errlen) ||
        get_int(json, "query_key_dim", &c->query_key_dim, err, errlen) ||
        get_bool(json, "shift_tokens", &c->shift_tokens, err, errlen))
        return -1;
    int laplace = c->attn_fn == ATTN_LAPLACE;
    if (get_bool(json, "laplace_attn_fn", &laplace, err, errlen)) return -1;
    c->attn_fn = laplace ? ATTN_LAPLACE : ATTN_RELU2;
    double ef;
    r = json_get_number(json, "expansion_factor", &ef);
    if (r < 0) { snprintf(err, errlen, "config: \"expansion_factor\" must be a number"); return -1; }
    if (r == 0) c->expansion_factor = ef;
    int causal = 1;
    if (get_bool(json, "causal", &causal, err, errlen)) return -1;
    if (!causal) {
        snprintf(err, errlen, "config: causal=false is not supported (the trainer is autoregressive)");
        return -1;
    }
    char norm[32];
    r = json_get_string(json, "norm_type", norm, sizeof norm);
    if (r < 0) { snprintf(err, errlen, "config: \"norm_type\" must be a string"); return -1; }
    if (r == 0) {
        if (!strcmp(norm, "scalenorm")) c->norm_type = NORM_SCALENORM;
        else if (!strcmp(norm, "layernorm")) c->norm_type = NORM_LAYERNORM;
        else { snprintf(err, errlen, "config: unknown norm_type \"%s\"", norm); return -1; }
    }
    return config_validate(c, err, errlen);
}
