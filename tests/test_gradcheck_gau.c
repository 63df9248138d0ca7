/* tests/test_gradcheck_gau.c: FLASH-Quad (--model gau) against central finite differences
 * (tests/gradcheck.h), in double precision: the GAU layer alone (dL/d its input and every
 * parameter of the layer), then the whole model, with odd T, both norms and both attention
 * functions. As tests/test_gradcheck.c: L = sum(w * y) for a fixed random w, relative L2
 * tolerance 1e-6 per tensor, relu^2 scores kept at least 1e-3 off the kink.
 *
 * Usage: test_gradcheck_gau [FIXTURE_DIR [DATA]]   (arguments unused: the inputs are random) */
#include "cpu_model.h"
#include "gau_layer.h"
#include "gradcheck.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#ifndef FLASH_DOUBLE
#error "test_gradcheck_gau needs the double-precision build (-DFLASH_DOUBLE)"
#endif

#define TOL 1e-6
#define K_LAYER 60    /* entries checked per layer tensor */
#define K_MODEL 12    /* entries checked per model tensor */

static Rng rng;
static double worst_layer, worst_model;

static void fill(real *x, size_t n, double offset, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(offset + scale * rng_normal(&rng));
}
static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}
static void check(const char *op, const char *what, gc_loss_fn f, void *ctx, real *x, size_t n,
                  const real *grad, int k, double *worst) {
    GcResult r = gc_check(f, ctx, x, n, grad, k, 42);
    char msg[256];
    gc_describe(&r, msg, sizeof msg);
    if (!(r.rel_err <= *worst)) *worst = r.rel_err;
    CHECK(r.rel_err <= TOL, "%s: d/d %s: %s", op, what, msg);
    CHECK(r.num_norm > 0, "%s: d/d %s: the numerical gradient is zero on every checked entry", op, what);
}

/* Off the constants PyTorch initialises to (as the fixtures do), with the scores where phi
   matters: GAU's sim = (q.k + sqrt(d) bias) / T, so the bias is drawn at the scale T / sqrt(d)
   and the gains large enough that q.k / T is not negligible. */
static void perturb(CpuModel *m, int T) {
    const double bias_unit = T / sqrt((double)m->cfg.dim);
    for (int i = 0; i < m->table.n; i++) {
        const ParamInfo *p = &m->table.info[i];
        real *x = m->params + p->offset;
        const char *nm = p->name;
        if (ends_with(nm, "norm.g") || ends_with(nm, "norm.weight") ||
            !strcmp(nm, "to_logits.0.weight") || !strcmp(nm, "abs_pos_emb.scale"))
            fill(x, p->numel, 1, 0.3);
        else if (ends_with(nm, "norm.bias") || !strcmp(nm, "to_logits.0.bias") || ends_with(nm, "offsetscale.beta"))
            fill(x, p->numel, 0, 0.3);
        else if (ends_with(nm, "offsetscale.gamma"))
            fill(x, p->numel, 0, 1.5);
        else if (ends_with(nm, "relative_attention_bias.weight"))
            fill(x, p->numel, (m->cfg.attn_fn == ATTN_LAPLACE ? 0.6 : 0) * bias_unit, 0.4 * bias_unit);
    }
}

/* smallest |sim| over the causal scores of layers 0..L-1 of the last forward (B x T x T each);
   *few: the smallest count of positive or of negative scores in a layer */
static double min_abs_sim(const CpuModel *m, int L, int B, int T, int *few) {
    double mn = INFINITY;
    *few = 1 << 30;
    for (int l = 0; l < L; l++) {
        int pos = 0, neg = 0;
        for (int b = 0; b < B; b++) {
            const real *S = m->acts.sim + ((size_t)l * B + b) * T * T;
            for (int i = 0; i < T; i++)
                for (int j = 0; j <= i; j++) {
                    double v = S[(size_t)i * T + j];
                    if (fabs(v) < mn) mn = fabs(v);
                    if (v > 0) pos++; else neg++;
                }
        }
        if (pos < *few) *few = pos;
        if (neg < *few) *few = neg;
    }
    return mn;
}

static FlashConfig gau_cfg(int layernorm, int laplace, int d, int s, double expansion, int depth) {
    FlashConfig c = config_default();
    c.model = MODEL_GAU; c.shift_tokens = 0;
    c.dim = d; c.depth = depth; c.query_key_dim = s; c.expansion_factor = expansion;
    c.norm_type = layernorm ? NORM_LAYERNORM : NORM_SCALENORM;
    c.attn_fn = laplace ? ATTN_LAPLACE : ATTN_RELU2;
    return c;
}

/* ------------------------------------------------------------------ the layer ---- */

typedef struct { CpuModel *m; LayerShape ls; real *w; } LayerCtx;
static double layer_loss(void *p) {
    LayerCtx *c = p;
    const Prof pf = {NULL, NULL};
    gau_layer_forward(&c->ls, &c->m->p.layer[0], &c->m->acts, 0, &pf);
    const size_t n = (size_t)c->ls.N * c->ls.d;
    const real *y = c->m->acts.res + n;   /* res[1] */
    double l = 0;
    for (size_t i = 0; i < n; i++) l += (double)c->w[i] * y[i];
    return l;
}

static void layer_case(const char *tag, int layernorm, int laplace, int B, int T) {
    FlashConfig cfg = gau_cfg(layernorm, laplace, 10, 6, 1.5, 1);
    CpuModel m;
    char err[256], op[64];
    snprintf(op, sizeof op, "gau layer %s", tag);
    if (cpu_create(&m, &cfg, err, sizeof err) || cpu_alloc_acts(&m, B, T, err, sizeof err)) {
        CHECK(0, "%s: %s", op, err);
        return;
    }
    const size_t nd = (size_t)B * T * cfg.dim;
    LayerCtx c = {&m, layer_shape(&cfg, B, T), malloc(nd * sizeof(real))};
    double margin = INFINITY;
    int few = 1 << 30, tries = 0;
    do {
        cpu_init_params(&m, 11 + (uint64_t)tries);
        perturb(&m, T);
        fill(m.acts.res, nd, 0, 1);
        fill(c.w, nd, 0, 1);
        layer_loss(&c);
        if (!laplace) margin = min_abs_sim(&m, 1, B, T, &few);
    } while ((margin < 1e-3 || few < 3) && ++tries < 100);
    CHECK(margin >= 1e-3 && few >= 3, "%s: min |sim| %g, %d scores of one sign", op, margin, few);

    /* backward with d res[1] = w: d_res becomes dL/d res[0] */
    cpu_zero_grads(&m);
    memcpy(m.acts.d_res, c.w, nd * sizeof(real));
    const GemmScratch ws = {m.acts.splitk, m.acts.splitk_floats};
    const Prof pf = {NULL, NULL};
    gau_layer_backward(&c.ls, &m.p.layer[0], &m.g.layer[0], &m.acts, 0, &ws, &pf);
    real *dh = malloc(nd * sizeof(real));
    memcpy(dh, m.acts.d_res, nd * sizeof(real));
    check(op, "h", layer_loss, &c, m.acts.res, nd, dh, K_LAYER, &worst_layer);
    int n_checked = 0, n_layer = 0;
    for (int i = 0; i < m.table.n; i++) {
        const ParamInfo *p = &m.table.info[i];
        if (strncmp(p->name, "layers.0.", 9)) continue;
        n_layer++;
        /* rel_bias has gradient only in the buckets of distances below T: all 32 checked */
        check(op, p->name, layer_loss, &c, m.params + p->offset, p->numel, m.grads + p->offset,
              p->numel <= 32 ? 32 : K_LAYER, &worst_layer);
        n_checked++;
    }
    CHECK(n_checked == n_layer && n_layer >= 8, "%s: checked %d of the layer's %d tensors", op, n_checked, n_layer);
    free(dh); free(c.w);
    cpu_destroy(&m);
}

/* scalenorm + relu^2 and layernorm + laplace (the fixtures' pairs), and the crossed pairs;
   odd T, several query row blocks of the attention (3-row blocks over T = 11) */
static void test_gau_layer_scalenorm_relu2(void) { layer_case("scalenorm relu^2", 0, 0, 2, 11); }
static void test_gau_layer_layernorm_laplace(void) { layer_case("layernorm laplace", 1, 1, 2, 9); }
static void test_gau_layer_scalenorm_laplace(void) { layer_case("scalenorm laplace", 0, 1, 3, 7); }
static void test_gau_layer_layernorm_relu2(void) { layer_case("layernorm relu^2", 1, 0, 1, 13); }
static void test_gau_layer_blocked(void) {
    const int saved = attn_block_rows;
    attn_block_rows = 3;
    layer_case("blocked", 0, 1, 2, 11);
    attn_block_rows = saved;
}

/* ------------------------------------------------------------------ the model ---- */

typedef struct { CpuModel *m; const int *tokens; int B, T; } ModelCtx;
static double model_loss(void *p) {
    ModelCtx *c = p;
    return cpu_forward(c->m, c->tokens, c->B, c->T);
}

static void model_case(const char *tag, const FlashConfig *cfg, int B, int T) {
    CpuModel m;
    char err[256], op[64];
    snprintf(op, sizeof op, "gau model %s", tag);
    if (cpu_create(&m, cfg, err, sizeof err) || cpu_alloc_acts(&m, B, T, err, sizeof err)) {
        CHECK(0, "%s: %s", op, err);
        return;
    }
    const int V = cfg->num_tokens;
    int *tokens = malloc((size_t)B * (T + 1) * sizeof *tokens);
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int)rng_below(&rng, V);
    ModelCtx c = {&m, tokens, B, T};
    double loss, margin = INFINITY;
    int few = 1 << 30, tries = 0;
    do {
        cpu_init_params(&m, 7 + (uint64_t)tries);
        perturb(&m, T);
        loss = model_loss(&c);
        if (cfg->attn_fn != ATTN_LAPLACE) margin = min_abs_sim(&m, cfg->depth, B, T, &few);
    } while ((margin < 1e-3 || few < 3) && ++tries < 100);
    CHECK(margin >= 1e-3 && few >= 3, "%s: min |sim| %g, %d scores of one sign", op, margin, few);
    CHECK(isfinite(loss) && loss > 0, "%s: loss %g", op, loss);
    cpu_zero_grads(&m);
    cpu_backward(&m, tokens, 1);
    const size_t tot = m.table.total;
    real *g = malloc(tot * sizeof(real));
    memcpy(g, m.grads, tot * sizeof(real));
    int n_checked = 0, n_trained = 0;
    for (int i = 0; i < m.table.n; i++) {
        const ParamInfo *p = &m.table.info[i];
        if (!p->trained) continue;
        n_trained++;
        real *x = m.params + p->offset;
        if (!strcmp(p->name, "token_emb.weight")) {
            /* the rows of input tokens (the others get no gradient) */
            size_t idx[K_MODEL];
            const int d = cfg->dim;
            for (int k = 0; k < K_MODEL; k++)
                idx[k] = (size_t)tokens[(k * 7) % T] * d + (size_t)rng_below(&rng, d);
            GcResult r = gc_check_idx(model_loss, &c, x, g + p->offset, idx, K_MODEL, 0);
            char msg[256];
            gc_describe(&r, msg, sizeof msg);
            if (!(r.rel_err <= worst_model)) worst_model = r.rel_err;
            CHECK(r.rel_err <= TOL && r.num_norm > 0, "%s: d/d %s: %s", op, p->name, msg);
        } else {
            check(op, p->name, model_loss, &c, x, p->numel, g + p->offset, p->numel <= 32 ? 32 : K_MODEL,
                  &worst_model);
        }
        n_checked++;
    }
    CHECK(n_checked == n_trained && n_trained > 0, "%s: checked %d of %d tensors", op, n_checked, n_trained);
    free(g); free(tokens);
    cpu_destroy(&m);
}

static void test_gau_model_scalenorm_relu2(void) {
    FlashConfig c = gau_cfg(0, 0, 8, 6, 2, 2);
    model_case("scalenorm relu^2", &c, 2, 9);
}
static void test_gau_model_layernorm_laplace(void) {
    FlashConfig c = gau_cfg(1, 1, 8, 4, 1.5, 2);
    model_case("layernorm laplace", &c, 2, 11);
}

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    rng_seed(&rng, 20261203);
    RUN(test_gau_layer_scalenorm_relu2);
    RUN(test_gau_layer_layernorm_laplace);
    RUN(test_gau_layer_scalenorm_laplace);
    RUN(test_gau_layer_layernorm_relu2);
    RUN(test_gau_layer_blocked);
    RUN(test_gau_model_scalenorm_relu2);
    RUN(test_gau_model_layernorm_laplace);
    printf("worst relative L2 error (tolerance %g): gau layer %.2e, gau model %.2e\n", TOL, worst_layer,
           worst_model);
    TEST_MAIN_END();
}
