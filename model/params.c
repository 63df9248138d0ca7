/* model/params.c: the parameter table, pointer setup and initialisation. */
#include "params.h"
#include "rng.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { INIT_NORMAL1, INIT_ONES, INIT_ZEROS, INIT_LINEAR, INIT_GAMMA,
               INIT_INV_FREQ, INIT_ROT_FREQ } InitKind;

/* The table in one place: name, shape, trained, decay, init, fan-in for Linear. The
   order here is the buffer order. */
typedef struct { char name[PARAM_NAME_MAX]; int ndim; int64_t s0, s1; int trained, decay;
                 InitKind init; int fan_in; } Spec;

static int build_specs(const FlashConfig *c, Spec *out) {
    const int d = c->dim, e = config_hidden(c), s = c->query_key_dim, V = c->num_tokens;
    const int r = config_rotary(c);
    int n = 0;
#define ADD(nd, a, b, tr, dc, ini, fan, ...)                                         \
    do {                                                                             \
        if (out) {                                                                   \
            Spec *sp = &out[n];                                                      \
            snprintf(sp->name, PARAM_NAME_MAX, __VA_ARGS__);                         \
            sp->ndim = nd; sp->s0 = a; sp->s1 = b; sp->trained = tr; sp->decay = dc; \
            sp->init = ini; sp->fan_in = fan;                                        \
        }                                                                            \
        n++;                                                                         \
    } while (0)
    ADD(2, V, d, 1, 1, INIT_NORMAL1, 0, "token_emb.weight");
    ADD(1, 1, 0, 1, 0, INIT_ONES, 0, "abs_pos_emb.scale");
    ADD(1, d / 2, 0, 0, 0, INIT_INV_FREQ, 0, "abs_pos_emb.inv_freq");
    for (int l = 0; l < c->depth; l++) {
        if (c->norm_type == NORM_SCALENORM) {
            ADD(1, 1, 0, 1, 0, INIT_ONES, 0, "layers.%d.norm.g", l);
        } else {
            ADD(1, d, 0, 1, 0, INIT_ONES, 0, "layers.%d.norm.weight", l);
            ADD(1, d, 0, 1, 0, INIT_ZEROS, 0, "layers.%d.norm.bias", l);
        }
        ADD(2, REL_POS_BUCKETS, 1, 1, 0, INIT_NORMAL1, 0,
            "layers.%d.rel_pos_bias.relative_attention_bias.weight", l);
        /* to_qk right after to_hidden, weights and biases each: both read the same input,
           so [W_hidden; W_qk] is one (2e + s) x d matrix and one GEMM (see cpu_model.c) */
        ADD(2, 2 * e, d, 1, 1, INIT_LINEAR, d, "layers.%d.to_hidden.0.weight", l);
        ADD(2, s, d, 1, 1, INIT_LINEAR, d, "layers.%d.to_qk.0.weight", l);
        ADD(1, 2 * e, 0, 1, 0, INIT_LINEAR, d, "layers.%d.to_hidden.0.bias", l);
        ADD(1, s, 0, 1, 0, INIT_LINEAR, d, "layers.%d.to_qk.0.bias", l);
        if (c->model == MODEL_GAU) {
            /* GAU: OffsetScale(heads = 2) gives q and k; to_out is a Sequential (Linear,
               Dropout); no rotary */
            ADD(2, 2, s, 1, 0, INIT_GAMMA, 0, "layers.%d.offsetscale.gamma", l);
            ADD(2, 2, s, 1, 0, INIT_ZEROS, 0, "layers.%d.offsetscale.beta", l);
            ADD(2, d, e, 1, 1, INIT_LINEAR, e, "layers.%d.to_out.0.weight", l);
            ADD(1, d, 0, 1, 0, INIT_LINEAR, e, "layers.%d.to_out.0.bias", l);
            continue;
        }
        ADD(2, 4, s, 1, 0, INIT_GAMMA, 0, "layers.%d.qk_offset_scale.gamma", l);
        ADD(2, 4, s, 1, 0, INIT_ZEROS, 0, "layers.%d.qk_offset_scale.beta", l);
        ADD(2, d, e, 1, 1, INIT_LINEAR, e, "layers.%d.to_out.weight", l);
        ADD(1, d, 0, 1, 0, INIT_LINEAR, e, "layers.%d.to_out.bias", l);
        ADD(1, r / 2, 0, 0, 0, INIT_ROT_FREQ, 0, "layers.%d.rotary_pos_emb.freqs", l);
    }
    ADD(1, d, 0, 1, 0, INIT_ONES, 0, "to_logits.0.weight");
    ADD(1, d, 0, 1, 0, INIT_ZEROS, 0, "to_logits.0.bias");
    ADD(2, V, d, 1, 1, INIT_LINEAR, d, "to_logits.1.weight");
    ADD(1, V, 0, 1, 0, INIT_LINEAR, d, "to_logits.1.bias");
#undef ADD
    return n;
}

int params_table_build(ParamTable *t, const FlashConfig *c) {
    memset(t, 0, sizeof *t);
    int n = build_specs(c, NULL);
    Spec *specs = calloc((size_t)n, sizeof *specs);
    t->info = calloc((size_t)n, sizeof *t->info);
    if (!specs || !t->info) { free(specs); free(t->info); t->info = NULL; return -1; }
    build_specs(c, specs);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        ParamInfo *p = &t->info[i];
        memcpy(p->name, specs[i].name, PARAM_NAME_MAX);
        p->ndim = specs[i].ndim;
        p->shape[0] = specs[i].s0;
        p->shape[1] = specs[i].s1;
        p->numel = (size_t)specs[i].s0 * (size_t)(specs[i].ndim == 2 ? specs[i].s1 : 1);
        p->offset = off;
        p->trained = specs[i].trained;
        p->decay = specs[i].decay;
        off += p->numel;
        if (p->trained) t->n_trained += p->numel;
    }
    t->n = n;
    t->total = off;
    free(specs);
    return 0;
}

void params_table_free(ParamTable *t) { free(t->info); memset(t, 0, sizeof *t); }

const ParamInfo *params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->info[i].name, name)) return &t->info[i];
    return NULL;
}

static real *at(const ParamTable *t, real *buf, const char *name) {
    const ParamInfo *p = params_find(t, name);
    return p ? buf + p->offset : NULL;
}

int params_point(ModelParams *p, const ParamTable *t, const FlashConfig *c, real *buf) {
    memset(p, 0, sizeof *p);
    p->layer = calloc((size_t)c->depth, sizeof *p->layer);
    if (!p->layer) return -1;
    char nm[PARAM_NAME_MAX];
    p->tok_emb = at(t, buf, "token_emb.weight");
    p->pos_scale = at(t, buf, "abs_pos_emb.scale");
    p->inv_freq = at(t, buf, "abs_pos_emb.inv_freq");
    for (int l = 0; l < c->depth; l++) {
        LayerParams *L = &p->layer[l];
#define P(field, suffix) \
        (snprintf(nm, sizeof nm, "layers.%d.%s", l, suffix), L->field = at(t, buf, nm))
        P(norm_g, "norm.g");
        P(norm_w, "norm.weight");
        P(norm_b, "norm.bias");
        P(rel_bias, "rel_pos_bias.relative_attention_bias.weight");
        P(wh, "to_hidden.0.weight");
        P(bh, "to_hidden.0.bias");
        P(wqk, "to_qk.0.weight");
        P(bqk, "to_qk.0.bias");
        const int gau = c->model == MODEL_GAU;   /* GAU's names (params_table_build) */
        P(gamma, gau ? "offsetscale.gamma" : "qk_offset_scale.gamma");
        P(beta, gau ? "offsetscale.beta" : "qk_offset_scale.beta");
        P(wo, gau ? "to_out.0.weight" : "to_out.weight");
        P(bo, gau ? "to_out.0.bias" : "to_out.bias");
        P(rot_freqs, "rotary_pos_emb.freqs");   /* NULL for GAU */
#undef P
    }
    for (int l = 0; l < c->depth; l++) {   /* the fused layout cpu_model.c relies on */
        const LayerParams *L = &p->layer[l];
        const size_t e = config_hidden(c);
        if (L->wqk != L->wh + 2 * e * c->dim || L->bqk != L->bh + 2 * e) {
            params_unpoint(p);
            return -1;
        }
    }
    p->lnf_w = at(t, buf, "to_logits.0.weight");
    p->lnf_b = at(t, buf, "to_logits.0.bias");
    p->w_logits = at(t, buf, "to_logits.1.weight");
    p->b_logits = at(t, buf, "to_logits.1.bias");
    return 0;
}

void params_unpoint(ModelParams *p) { free(p->layer); p->layer = NULL; }

int params_init(const ParamTable *t, const FlashConfig *c, real *buf, uint64_t seed) {
    Spec *specs = calloc((size_t)t->n, sizeof *specs);
    if (!specs) return -1;
    build_specs(c, specs);
    Rng rng;
    rng_seed(&rng, seed);
    for (int i = 0; i < t->n; i++) {
        real *w = buf + t->info[i].offset;
        size_t n = t->info[i].numel;
        switch (specs[i].init) {
        case INIT_NORMAL1: for (size_t k = 0; k < n; k++) w[k] = (real)rng_normal(&rng); break;
        case INIT_ONES: for (size_t k = 0; k < n; k++) w[k] = 1; break;
        case INIT_ZEROS: for (size_t k = 0; k < n; k++) w[k] = 0; break;
        case INIT_GAMMA: /* nn.init.normal_(gamma, std=0.02) */
            for (size_t k = 0; k < n; k++) w[k] = (real)(0.02 * rng_normal(&rng));
            break;
        case INIT_LINEAR: { /* nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
            double bound = 1.0 / sqrt((double)specs[i].fan_in);
            for (size_t k = 0; k < n; k++)
                w[k] = (real)((2.0 * rng_uniform(&rng) - 1.0) * bound);
            break;
        }
        case INIT_INV_FREQ: /* 10000^(-2i/d) */
            for (size_t k = 0; k < n; k++) w[k] = (real)pow(10000.0, -2.0 * (double)k / c->dim);
            break;
        case INIT_ROT_FREQ: /* 10000^(-2j/r) */
            for (size_t k = 0; k < n; k++)
                w[k] = (real)pow(10000.0, -2.0 * (double)k / config_rotary(c));
            break;
        }
    }
    free(specs);
    return 0;
}
