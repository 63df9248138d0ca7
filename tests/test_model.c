/* tests/test_model.c: the model's configuration, parameter table, initialisation and
 * safetensors import/export (model/config.c, params.c, cpu_model.c, state_io.c).
 *
 * Usage: test_model [FIXTURE_DIR [DATA]]   (default ../shared/fixtures, from the repo root)
 * Temporary files go to /tmp, named after the process id, and are removed at the end. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* getpid */
#endif
#include "config.h"
#include "cpu_model.h"
#include "model.h"
#include "ops.h"
#include "params.h"
#include "safetensors.h"
#include "state_io.h"
#include "test.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fixture_dir = "../shared/fixtures";

static const char *tmp_path(const char *tag) {
    static char bufs[4][256];
    static int slot;
    char *b = bufs[slot++ % 4];
    snprintf(b, 256, "/tmp/test_model_%ld_%s.safetensors", (long)getpid(), tag);
    return b;
}

/* The small model of the round trips: every option off its default. */
static FlashConfig small_config(void) {
    FlashConfig c = config_default();
    c.num_tokens = 40; c.dim = 12; c.depth = 2; c.group_size = 8; c.query_key_dim = 36;
    c.expansion_factor = 1.5; c.norm_type = NORM_LAYERNORM; c.shift_tokens = 0;
    c.attn_fn = ATTN_RELU2;
    return c;
}

static int same_config(const FlashConfig *a, const FlashConfig *b) {
    return a->num_tokens == b->num_tokens && a->dim == b->dim && a->depth == b->depth &&
           a->group_size == b->group_size && a->query_key_dim == b->query_key_dim &&
           a->expansion_factor == b->expansion_factor && a->norm_type == b->norm_type &&
           a->shift_tokens == b->shift_tokens && (a->attn_fn == ATTN_LAPLACE) == (b->attn_fn == ATTN_LAPLACE);
}

/* mean and standard deviation (biased) of n values */
static void stats(const real *x, size_t n, double *mean, double *std) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / n;
    for (size_t i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *std = sqrt(ss / n);
}

/* ============================== the parameter table ================================= */

static void check_entry(const ParamTable *t, const char *name, int ndim, int64_t s0, int64_t s1,
                        int trained, int decay) {
    const ParamInfo *p = params_find(t, name);
    CHECK(p != NULL, "no entry %s", name);
    if (!p) return;
    CHECK(p->ndim == ndim && p->shape[0] == s0 && (ndim < 2 || p->shape[1] == s1),
          "%s: shape ndim %d [%lld, %lld], expected ndim %d [%lld, %lld]", name, p->ndim,
          (long long)p->shape[0], (long long)p->shape[1], ndim, (long long)s0, (long long)s1);
    CHECK(p->numel == (size_t)(s0 * (ndim == 2 ? s1 : 1)), "%s: numel %zu", name, p->numel);
    CHECK(p->trained == trained && p->decay == decay, "%s: trained %d decay %d, expected %d %d",
          name, p->trained, p->decay, trained, decay);
}

static void test_default_table(void) {
    FlashConfig c = config_default();
    ParamTable t;
    CHECK(params_table_build(&t, &c) == 0, "params_table_build failed");
    CHECK(t.n_trained == 13400585, "trained elements %zu, expected 13,400,585", t.n_trained);
    CHECK(t.total == 13400585 + 256 + 8 * 16, "total elements %zu, expected %d", t.total,
          13400585 + 256 + 8 * 16);
    CHECK(t.n == 3 + 8 * 11 + 4, "%d entries, expected %d", t.n, 3 + 8 * 11 + 4);
    /* contiguous, in order, numel consistent, names unique */
    size_t off = 0, trained = 0;
    int ok = 1, uniq = 1;
    for (int i = 0; i < t.n; i++) {
        ok &= t.info[i].offset == off;
        off += t.info[i].numel;
        if (t.info[i].trained) trained += t.info[i].numel;
        for (int j = 0; j < i; j++) uniq &= strcmp(t.info[i].name, t.info[j].name) != 0;
    }
    CHECK(ok && off == t.total && trained == t.n_trained, "offsets not contiguous");
    CHECK(uniq, "duplicate names");
    CHECK(!strcmp(t.info[0].name, "token_emb.weight"), "first entry %s", t.info[0].name);
    check_entry(&t, "token_emb.weight", 2, 256, 512, 1, 1);
    check_entry(&t, "abs_pos_emb.scale", 1, 1, 0, 1, 0);
    check_entry(&t, "abs_pos_emb.inv_freq", 1, 256, 0, 0, 0);
    check_entry(&t, "layers.0.norm.g", 1, 1, 0, 1, 0);
    check_entry(&t, "layers.7.rel_pos_bias.relative_attention_bias.weight", 2, 32, 1, 1, 0);
    check_entry(&t, "layers.3.to_hidden.0.weight", 2, 2048, 512, 1, 1);
    check_entry(&t, "layers.3.to_hidden.0.bias", 1, 2048, 0, 1, 0);
    check_entry(&t, "layers.5.to_qk.0.weight", 2, 128, 512, 1, 1);
    check_entry(&t, "layers.5.to_qk.0.bias", 1, 128, 0, 1, 0);
    check_entry(&t, "layers.1.qk_offset_scale.gamma", 2, 4, 128, 1, 0);
    check_entry(&t, "layers.1.qk_offset_scale.beta", 2, 4, 128, 1, 0);
    check_entry(&t, "layers.6.to_out.weight", 2, 512, 1024, 1, 1);
    check_entry(&t, "layers.6.to_out.bias", 1, 512, 0, 1, 0);
    check_entry(&t, "layers.7.rotary_pos_emb.freqs", 1, 16, 0, 0, 0);
    check_entry(&t, "to_logits.0.weight", 1, 512, 0, 1, 0);
    check_entry(&t, "to_logits.0.bias", 1, 512, 0, 1, 0);
    check_entry(&t, "to_logits.1.weight", 2, 256, 512, 1, 1);
    check_entry(&t, "to_logits.1.bias", 1, 256, 0, 1, 0);
    CHECK(params_find(&t, "layers.0.norm.weight") == NULL, "scalenorm model has a layernorm weight");
    CHECK(params_find(&t, "layers.8.norm.g") == NULL, "layer 8 of 8 exists");
    params_table_free(&t);

    /* layernorm: weight and bias of d instead of g */
    c.norm_type = NORM_LAYERNORM;
    CHECK(params_table_build(&t, &c) == 0, "params_table_build (layernorm) failed");
    check_entry(&t, "layers.2.norm.weight", 1, 512, 0, 1, 0);
    check_entry(&t, "layers.2.norm.bias", 1, 512, 0, 1, 0);
    CHECK(params_find(&t, "layers.2.norm.g") == NULL, "layernorm model has a scalenorm gain");
    CHECK(t.n_trained == 13400585 - 8 + 8 * 2 * 512, "layernorm trained %zu", t.n_trained);
    params_table_free(&t);

    /* s < 32: r = s; s > 32: r = 32 */
    c = config_default();
    c.query_key_dim = 20;
    CHECK(config_rotary(&c) == 20, "r(20) = %d", config_rotary(&c));
    c.query_key_dim = 34;
    CHECK(config_rotary(&c) == 32, "r(34) = %d", config_rotary(&c));
    CHECK(config_hidden(&c) == 1024, "e = %d", config_hidden(&c));
}

/* The CpuModel's named pointers point at the table's offsets, in params and in grads. */
static void test_model_pointers(void) {
    FlashConfig c = small_config();
    CpuModel m;
    char err[256];
    CHECK(cpu_create(&m, &c, err, sizeof err) == 0, "model_create: %s", err);
    const ParamTable *t = &m.table;
#define AT(name) (m.params + params_find(t, name)->offset)
    CHECK(m.p.tok_emb == AT("token_emb.weight") && m.p.pos_scale == AT("abs_pos_emb.scale") &&
          m.p.inv_freq == AT("abs_pos_emb.inv_freq"), "embedding pointers");
    CHECK(m.p.layer[1].wqk == AT("layers.1.to_qk.0.weight") && m.p.layer[1].norm_w == AT("layers.1.norm.weight") &&
          m.p.layer[1].norm_g == NULL && m.p.layer[0].rot_freqs == AT("layers.0.rotary_pos_emb.freqs"),
          "layer pointers");
    CHECK(m.p.w_logits == AT("to_logits.1.weight") && m.p.lnf_b == AT("to_logits.0.bias"), "logits pointers");
    CHECK(m.g.layer[1].gamma - m.grads == m.p.layer[1].gamma - m.params, "grads do not share the layout");
#undef AT
    int zero = 1;
    for (size_t k = 0; k < t->total; k++) zero &= m.params[k] == 0 && m.grads[k] == 0;
    CHECK(zero, "params and grads are not zeroed at creation");
    cpu_destroy(&m);
}

/* ================================ configuration ===================================== */

static void expect_invalid(FlashConfig c, const char *field, const char *what) {
    char err[256] = "";
    int rc = config_validate(&c, err, sizeof err);
    CHECK(rc == -1, "%s: accepted", what);
    CHECK(strstr(err, field) != NULL, "%s: message \"%s\" does not name %s", what, err, field);
    CpuModel m;
    char err2[256] = "";
    CHECK(cpu_create(&m, &c, err2, sizeof err2) == -1 && strstr(err2, field), "%s: model_create: \"%s\"", what, err2);
}

static void test_config_validate(void) {
    char err[256];
    FlashConfig c = config_default();
    CHECK(config_validate(&c, err, sizeof err) == 0, "default refused: %s", err);
    c = small_config();
    CHECK(config_validate(&c, err, sizeof err) == 0, "small config refused: %s", err);
    c = config_default(); c.dim = 511;            expect_invalid(c, "dim", "odd dim");
    c = config_default(); c.dim = 0;              expect_invalid(c, "dim", "dim 0");
    c = config_default(); c.group_size = 0;       expect_invalid(c, "group_size", "group_size 0");
    c = config_default(); c.query_key_dim = 127;  expect_invalid(c, "query_key_dim", "odd query_key_dim");
    c = config_default(); c.dim = 8; c.expansion_factor = 0.1;
    expect_invalid(c, "expansion_factor", "expansion giving e = 0");
    c = config_default(); c.expansion_factor = 0;  expect_invalid(c, "expansion_factor", "expansion 0");
    c = config_default(); c.expansion_factor = -2; expect_invalid(c, "expansion_factor", "negative expansion");
    c = config_default(); c.depth = 0;            expect_invalid(c, "depth", "depth 0");
    c = config_default(); c.num_tokens = 1;       expect_invalid(c, "num_tokens", "one token");
    c = config_default(); c.norm_type = (NormType)7; expect_invalid(c, "norm_type", "bad norm_type");
}

static void test_config_json(void) {
    char json[1024], err[256];
    FlashConfig cases[3] = {config_default(), small_config(), small_config()};
    cases[2].expansion_factor = 1.2345678901234;   /* needs more than %g's 6 digits */
    cases[2].shift_tokens = 1;
    for (int i = 0; i < 3; i++) {
        int n = config_to_json(&cases[i], json, sizeof json);
        CHECK(n > 0 && (size_t)n < sizeof json, "config_to_json: %d", n);
        FlashConfig back = config_default();
        back.dim = 2; back.depth = 99; back.norm_type = NORM_SCALENORM; back.shift_tokens = 0;
        back.attn_fn = ATTN_LAPLACE; back.expansion_factor = 4;
        CHECK(config_from_json(&back, json, err, sizeof err) == 0, "case %d: %s (%s)", i, err, json);
        CHECK(same_config(&back, &cases[i]), "case %d does not round-trip: %s", i, json);
    }
    config_to_json(&cases[1], json, sizeof json);
    CHECK(strstr(json, "\"norm_type\": \"layernorm\"") && strstr(json, "\"causal\": true"), "json: %s", json);
    /* keys left out keep their values */
    FlashConfig c = small_config();
    CHECK(config_from_json(&c, "{\"dim\": 64}", err, sizeof err) == 0, "%s", err);
    FlashConfig want = small_config();
    want.dim = 64;
    CHECK(same_config(&c, &want), "partial JSON changed other fields");
    c = config_default();
    CHECK(config_from_json(&c, "{\"causal\": false}", err, sizeof err) == -1 && strstr(err, "causal"),
          "causal=false: \"%s\"", err);
    c = config_default();
    CHECK(config_from_json(&c, "{\"norm_type\": \"rmsnorm\"}", err, sizeof err) == -1 && strstr(err, "rmsnorm"),
          "unknown norm: \"%s\"", err);
    c = config_default();
    CHECK(config_from_json(&c, "{\"dim\": 7}", err, sizeof err) == -1 && strstr(err, "dim"),
          "invalid values are refused: \"%s\"", err);
    c = config_default();
    CHECK(config_from_json(&c, "{\"depth\": 2.5}", err, sizeof err) == -1 && strstr(err, "depth"),
          "non-integer depth: \"%s\"", err);
}

/* ================================ initialisation ==================================== */

static void test_init_statistics(void) {
    FlashConfig c = config_default();
    CpuModel m;
    char err[256];
    if (cpu_create(&m, &c, err, sizeof err)) { CHECK(0, "model_create: %s", err); return; }
    cpu_init_params(&m, 1);
    const int d = c.dim, e = config_hidden(&c), s = c.query_key_dim, V = c.num_tokens;
    double mean, std;

    stats(m.p.tok_emb, (size_t)V * d, &mean, &std);
    CHECK(fabs(mean) < 0.05 && fabs(std - 1) < 0.05, "token_emb mean %g std %g, want N(0, 1)", mean, std);
    CHECK(m.p.pos_scale[0] == 1, "abs_pos_emb.scale %g", m.p.pos_scale[0]);
    int exact = 1;
    for (int i = 0; i < d / 2; i++) exact &= m.p.inv_freq[i] == (real)pow(10000.0, -2.0 * i / d);
    CHECK(exact, "inv_freq is not 10000^(-2i/d)");
    CHECK(m.p.inv_freq[0] == 1 && fabs(m.p.inv_freq[d / 2 - 1] - pow(10000.0, -(d - 2.0) / d)) < 1e-9,
          "inv_freq ends %g %g", m.p.inv_freq[0], m.p.inv_freq[d / 2 - 1]);

    /* (tensor, n, fan_in) of the Linear layers: U(-1/sqrt(fan), 1/sqrt(fan)) */
    typedef struct { const char *what; const real *x; size_t n; int fan; } Lin;
    Lin lin[5 * 8 + 2];
    int nl = 0;
    for (int l = 0; l < c.depth; l++) {
        const LayerParams *P = &m.p.layer[l];
        lin[nl++] = (Lin){"to_hidden.0.weight", P->wh, (size_t)2 * e * d, d};
        lin[nl++] = (Lin){"to_hidden.0.bias", P->bh, (size_t)2 * e, d};
        lin[nl++] = (Lin){"to_qk.0.weight", P->wqk, (size_t)s * d, d};
        lin[nl++] = (Lin){"to_out.weight", P->wo, (size_t)d * e, e};
        lin[nl++] = (Lin){"to_out.bias", P->bo, (size_t)d, e};
    }
    lin[nl++] = (Lin){"to_logits.1.weight", m.p.w_logits, (size_t)V * d, d};
    lin[nl++] = (Lin){"to_logits.1.bias", m.p.b_logits, (size_t)V, d};
    for (int i = 0; i < nl; i++) {
        double bound = 1 / sqrt((double)lin[i].fan), mx = 0;
        for (size_t k = 0; k < lin[i].n; k++) if (fabs(lin[i].x[k]) > mx) mx = fabs(lin[i].x[k]);
        stats(lin[i].x, lin[i].n, &mean, &std);
        CHECK(mx <= bound, "%s: |w| %g above 1/sqrt(%d) = %g", lin[i].what, mx, lin[i].fan, bound);
        /* the weight matrices: enough samples for tight moments, and for the largest |w|
           to come within 20/n of the bound (it misses with probability e^-20) */
        if (lin[i].n >= 10000)
            CHECK(fabs(std / (bound / sqrt(3.0)) - 1) < 0.05 && fabs(mean) < 0.05 * bound &&
                  mx > (1 - 20.0 / lin[i].n) * bound, "%s: mean %g std %g max %g, want U(+-%g): std %g", lin[i].what,
                  mean, std, mx, bound, bound / sqrt(3.0));
    }

    /* gamma ~ N(0, 0.02^2), beta = 0, gains 1, rel bias ~ N(0, 1), rotary freqs exact */
    real *gam = malloc(sizeof(real) * 4 * s * c.depth), *rel = malloc(sizeof(real) * 32 * c.depth);
    int zeros = 1, ones = 1, rot = 1;
    for (int l = 0; l < c.depth; l++) {
        const LayerParams *P = &m.p.layer[l];
        memcpy(gam + (size_t)l * 4 * s, P->gamma, sizeof(real) * 4 * s);
        memcpy(rel + (size_t)l * 32, P->rel_bias, sizeof(real) * 32);
        for (int k = 0; k < 4 * s; k++) zeros &= P->beta[k] == 0;
        ones &= P->norm_g[0] == 1;
        for (int j = 0; j < 16; j++) rot &= P->rot_freqs[j] == (real)pow(10000.0, -2.0 * j / 32);
    }
    stats(gam, (size_t)4 * s * c.depth, &mean, &std);
    CHECK(fabs(std / 0.02 - 1) < 0.05 && fabs(mean) < 0.002, "gamma mean %g std %g, want N(0, 0.02^2)", mean, std);
    stats(rel, (size_t)32 * c.depth, &mean, &std);
    CHECK(fabs(mean) < 0.3 && fabs(std - 1) < 0.2, "rel_pos_bias mean %g std %g, want N(0, 1)", mean, std);
    CHECK(zeros, "qk_offset_scale.beta is not zero");
    CHECK(ones, "norm.g is not 1");
    CHECK(rot, "rotary freqs are not 10000^(-2j/32)");
    int lnf = 1;
    for (int i = 0; i < d; i++) lnf &= m.p.lnf_w[i] == 1 && m.p.lnf_b[i] == 0;
    CHECK(lnf, "to_logits.0 is not weight 1, bias 0");
    free(gam); free(rel);
    cpu_destroy(&m);

    /* layernorm layers: weight 1, bias 0 */
    c = small_config();
    if (cpu_create(&m, &c, err, sizeof err)) { CHECK(0, "model_create: %s", err); return; }
    cpu_init_params(&m, 1);
    int ln = 1;
    for (int l = 0; l < c.depth; l++)
        for (int i = 0; i < c.dim; i++) ln &= m.p.layer[l].norm_w[i] == 1 && m.p.layer[l].norm_b[i] == 0;
    CHECK(ln, "layernorm layers are not weight 1, bias 0");
    int rs = 1;   /* s = 36: r = 32 */
    for (int j = 0; j < 16; j++) rs &= m.p.layer[1].rot_freqs[j] == (real)pow(10000.0, -2.0 * j / 32);
    CHECK(rs, "rotary freqs for s = 36");
    cpu_destroy(&m);
}

static void test_init_seed(void) {
    FlashConfig c = small_config();
    CpuModel a, b;
    char err[256];
    CHECK(cpu_create(&a, &c, err, sizeof err) == 0 && cpu_create(&b, &c, err, sizeof err) == 0, "%s", err);
    const size_t bytes = a.table.total * sizeof(real);
    cpu_init_params(&a, 1234);
    cpu_init_params(&b, 1234);
    CHECK(!memcmp(a.params, b.params, bytes), "same seed, different parameters");
    cpu_init_params(&b, 1235);
    CHECK(memcmp(a.params, b.params, bytes) != 0, "different seeds, same parameters");
    /* every randomly initialised tensor differs; the constants and buffers do not */
    for (int i = 0; i < a.table.n; i++) {
        const ParamInfo *p = &a.table.info[i];
        int same = !memcmp(a.params + p->offset, b.params + p->offset, p->numel * sizeof(real));
        int random = strstr(p->name, "weight") && !strstr(p->name, "norm.weight") &&
                     strcmp(p->name, "to_logits.0.weight");
        random |= strstr(p->name, "gamma") || strstr(p->name, "to_hidden.0.bias") ||
                  strstr(p->name, "to_qk.0.bias") || strstr(p->name, "to_out.bias") ||
                  !strcmp(p->name, "to_logits.1.bias");
        CHECK(same == !random, "%s: %s across seeds", p->name, same ? "equal" : "different");
    }
    /* re-initialising overwrites whatever was there */
    for (size_t k = 0; k < a.table.total; k++) b.params[k] = 7;
    cpu_init_params(&b, 1234);
    CHECK(!memcmp(a.params, b.params, bytes), "init does not overwrite every element");
    cpu_destroy(&a);
    cpu_destroy(&b);
}

/* ================================== safetensors ===================================== */

static Model *open_cpu(const FlashConfig *c) {
    ModelOptions mo = {.device = DEVICE_CPU, .max_B = 1, .max_T = 8};
    char err[512];
    Model *m = model_open(c, &mo, err, sizeof err);
    CHECK(m, "model_open: %s", err);
    return m;
}

static Model *load_cpu(const char *path, const FlashConfig *base, char *err, size_t errlen) {
    ModelOptions mo = {.device = DEVICE_CPU, .max_B = 1, .max_T = 8};
    return model_load_safetensors(path, base, &mo, err, errlen);
}

/* the model's parameters as host floats (free them) */
static float *params_of(Model *m) {
    float *p = malloc(sizeof(float) * model_table(m)->total);
    char err[256];
    if (p && model_read(m, STATE_PARAMS, p, err, sizeof err)) { free(p); p = NULL; }
    return p;
}

static void test_export_load_roundtrip(void) {
    FlashConfig c = small_config();
    char err[256];
    Model *m = open_cpu(&c);
    if (!m) return;
    model_init_params(m, 99, err, sizeof err);
    float *mp = params_of(m);
    const ParamTable *mt = model_table(m);
    mp[params_find(mt, "abs_pos_emb.scale")->offset] = 0.123456789f;   /* a non-default value survives too */
    model_write(m, STATE_PARAMS, mp, err, sizeof err);
    const char *path = tmp_path("roundtrip");
    const char *keys[] = {"step", "note"}, *vals[] = {"1234", "hello \"world\""};
    CHECK(model_export(m, path, keys, vals, 2, err, sizeof err) == 0, "model_export: %s", err);

    Model *back = load_cpu(path, NULL, err, sizeof err);
    if (!back) {
        CHECK(0, "model_load_safetensors: %s", err);
    } else {
        CHECK(same_config(model_config(back), &c), "config does not round-trip");
        CHECK(model_table(back)->total == mt->total && model_table(back)->n == mt->n, "table differs");
        float *bp = params_of(back);
        CHECK(bp && !memcmp(bp, mp, mt->total * sizeof(float)), "parameters are not bit-exact");
        free(bp);
        model_close(back);
    }
    /* a base config is overridden by the file's metadata */
    FlashConfig base = config_default();
    if ((back = load_cpu(path, &base, err, sizeof err))) {
        CHECK(same_config(model_config(back), &c), "metadata does not override the base config");
        model_close(back);
    } else {
        CHECK(0, "model_load_safetensors with base: %s", err);
    }

    StFile f;
    if (st_load(&f, path, err, sizeof err)) { CHECK(0, "st_load: %s", err); model_close(m); free(mp); return; }
    CHECK(f.n_tensors == mt->n, "%d tensors in the file, %d in the table", f.n_tensors, mt->n);
    for (int i = 0; i < mt->n; i++) {
        const ParamInfo *p = &mt->info[i];
        const StTensor *t = st_find(&f, p->name);
        CHECK(t != NULL, "%s missing from the file", p->name);
        if (!t) continue;
        int shape = t->ndim == p->ndim && t->shape[0] == p->shape[0] && (p->ndim < 2 || t->shape[1] == p->shape[1]);
        CHECK(t->dtype == ST_F32 && shape, "%s: dtype %s ndim %d", p->name, t->dtype_str, t->ndim);
        const unsigned char *data = st_tensor_data(&f, t);
        int same = 1;
        for (size_t k = 0; k < p->numel && same; k++) {
            float v;
            memcpy(&v, data + 4 * k, 4);
            same = v == mp[p->offset + k];
        }
        CHECK(same, "%s: data differs", p->name);
    }
    CHECK(st_find(&f, "abs_pos_emb.inv_freq") && st_find(&f, "layers.0.rotary_pos_emb.freqs") &&
          st_find(&f, "layers.1.rotary_pos_emb.freqs"), "buffers missing from the file");
    const char *cfg = st_meta(&f, "config");
    char want[1024];
    config_to_json(&c, want, sizeof want);
    CHECK(cfg && !strcmp(cfg, want), "config metadata \"%s\", want \"%s\"", cfg ? cfg : "(none)", want);
    CHECK(st_meta(&f, "step") && !strcmp(st_meta(&f, "step"), "1234"), "extra metadata step");
    CHECK(st_meta(&f, "note") && !strcmp(st_meta(&f, "note"), vals[1]), "extra metadata note");
    st_free(&f);
    unlink(path);
    free(mp);
    model_close(m);
}

/* Writes the table's tensors of m, altered: `skip` left out, `extra` added, `bad_shape`
   written with shape `shape`, `bad_dtype` written as F64. NULL: no such change. */
static int write_variant(Model *m, const char *path, const char *skip, const char *extra,
                         const char *bad_shape, int bad_ndim, const int64_t *shape,
                         const char *bad_dtype) {
    const ParamTable *t = model_table(m);
    StWriter *w = st_writer_new();
    double *f64 = malloc(sizeof(double) * t->total);
    float *f32 = params_of(m);
    for (size_t k = 0; k < t->total; k++) f64[k] = f32[k];
    /* F64 first so it stays aligned */
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        if (bad_dtype && !strcmp(p->name, bad_dtype))
            st_writer_add(w, p->name, ST_F64, p->ndim, p->shape, f64 + p->offset);
    }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        if ((skip && !strcmp(p->name, skip)) || (bad_dtype && !strcmp(p->name, bad_dtype))) continue;
        if (bad_shape && !strcmp(p->name, bad_shape))
            st_writer_add(w, p->name, ST_F32, bad_ndim, shape, f32 + p->offset);
        else
            st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, f32 + p->offset);
    }
    if (extra) {
        int64_t one = 1;
        st_writer_add(w, extra, ST_F32, 1, &one, f32);
    }
    char json[1024], err[256];
    config_to_json(model_config(m), json, sizeof json);
    st_writer_meta(w, "config", json);
    int rc = st_writer_save(w, path, err, sizeof err);
    if (rc) fprintf(stderr, "  write_variant: %s\n", err);
    st_writer_free(w);
    free(f64);
    free(f32);
    return rc;
}

/* Both model_import into a fresh model and model_load_safetensors must refuse PATH with a
   message naming `name` (and `also`, if given). */
static void expect_refused(Model *src, const char *path, const char *name, const char *also,
                           const char *what) {
    char err[512] = "";
    StFile f;
    if (st_load(&f, path, err, sizeof err)) { CHECK(0, "%s: st_load: %s", what, err); return; }
    Model *m = open_cpu(model_config(src));
    if (!m) { st_free(&f); return; }
    err[0] = 0;
    int rc = model_import(m, &f, path, err, sizeof err);
    CHECK(rc == -1, "%s: model_import accepted the file", what);
    CHECK(strstr(err, name) && (!also || strstr(err, also)), "%s: message \"%s\" does not name \"%s\"%s%s",
          what, err, name, also ? " and " : "", also ? also : "");
    model_close(m);
    st_free(&f);
    err[0] = 0;
    Model *m2 = load_cpu(path, NULL, err, sizeof err);
    CHECK(!m2 && strstr(err, name), "%s: model_load_safetensors: %s \"%s\"", what, m2 ? "loaded" : "refused", err);
    model_close(m2);
    unlink(path);
}

static void test_import_refusals(void) {
    FlashConfig c = small_config();
    char err[256];
    Model *m = open_cpu(&c);
    if (!m) return;
    model_init_params(m, 5, err, sizeof err);
    const char *path = tmp_path("bad");
    /* the unaltered variant loads: the refusals below are due to the alteration */
    if (write_variant(m, path, NULL, NULL, NULL, 0, NULL, NULL) == 0) {
        Model *ok = load_cpu(path, NULL, err, sizeof err);
        if (ok) {
            float *a = params_of(ok), *b = params_of(m);
            CHECK(a && b && !memcmp(a, b, model_table(m)->total * sizeof(float)), "unaltered file differs");
            free(a); free(b);
            model_close(ok);
        } else {
            CHECK(0, "unaltered file refused: %s", err);
        }
        unlink(path);
    }
    if (write_variant(m, path, "layers.1.to_out.bias", NULL, NULL, 0, NULL, NULL) == 0)
        expect_refused(m, path, "layers.1.to_out.bias", "missing", "missing tensor");
    if (write_variant(m, path, "abs_pos_emb.inv_freq", NULL, NULL, 0, NULL, NULL) == 0)
        expect_refused(m, path, "abs_pos_emb.inv_freq", "missing", "missing buffer");
    if (write_variant(m, path, NULL, "layers.0.extra.weight", NULL, 0, NULL, NULL) == 0)
        expect_refused(m, path, "layers.0.extra.weight", NULL, "extra tensor");
    const int s = c.query_key_dim, d = c.dim;
    int64_t transposed[2] = {d, s};           /* same numel, (in, out) instead of (out, in) */
    if (write_variant(m, path, NULL, NULL, "layers.0.to_qk.0.weight", 2, transposed, NULL) == 0)
        expect_refused(m, path, "layers.0.to_qk.0.weight", "shape", "transposed shape");
    int64_t flat[1] = {(int64_t)s * d};       /* same numel, one dimension */
    if (write_variant(m, path, NULL, NULL, "layers.1.to_qk.0.weight", 1, flat, NULL) == 0)
        expect_refused(m, path, "layers.1.to_qk.0.weight", "shape", "flattened shape");
    int64_t shorter[1] = {d - 1};
    if (write_variant(m, path, NULL, NULL, "to_logits.0.bias", 1, shorter, NULL) == 0)
        expect_refused(m, path, "to_logits.0.bias", "shape", "shorter tensor");
    if (write_variant(m, path, NULL, NULL, NULL, 0, NULL, "layers.0.qk_offset_scale.gamma") == 0)
        expect_refused(m, path, "layers.0.qk_offset_scale.gamma", "F64", "wrong dtype");
    /* a file whose config metadata says another shape: refused, naming a tensor */
    FlashConfig other = c;
    other.dim = c.dim + 2;
    Model *o = open_cpu(&other);
    if (o) {
        model_init_params(o, 1, err, sizeof err);
        const char *p2 = tmp_path("other");
        CHECK(model_export(o, p2, NULL, NULL, 0, err, sizeof err) == 0, "export: %s", err);
        StFile f;
        if (st_load(&f, p2, err, sizeof err) == 0) {
            char e2[512] = "";
            CHECK(model_import(m, &f, p2, e2, sizeof e2) == -1 && strstr(e2, "token_emb.weight"),
                  "a model of another width imported: \"%s\"", e2);
            st_free(&f);
        }
        unlink(p2);
        model_close(o);
    }
    model_close(m);
}

static void test_fixture(void) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/flash_small.weights.safetensors", fixture_dir);
    Model *m = load_cpu(path, NULL, err, sizeof err);
    if (!m) { CHECK(0, "%s", err); return; }
    const FlashConfig *mc = model_config(m);
    const ParamTable *mt = model_table(m);
    CHECK(mc->dim == 64 && mc->depth == 2, "flash_small: dim %d depth %d, expected 64, 2", mc->dim, mc->depth);
    CHECK(mc->group_size == 16 && mc->query_key_dim == 32 && mc->norm_type == NORM_SCALENORM &&
          mc->shift_tokens && (mc->attn_fn == ATTN_LAPLACE),
          "flash_small: C %d s %d norm %d shift %d laplace %d", mc->group_size, mc->query_key_dim,
          mc->norm_type, mc->shift_tokens, (mc->attn_fn == ATTN_LAPLACE));
    /* the values are the file's */
    StFile f;
    float *mp = params_of(m);
    if (mp && st_load(&f, path, err, sizeof err) == 0) {
        int same = f.n_tensors == mt->n;
        for (int i = 0; i < mt->n && same; i++) {
            const ParamInfo *p = &mt->info[i];
            const StTensor *t = st_find(&f, p->name);
            same = t && (size_t)st_numel(t) == p->numel &&
                   !memcmp(st_tensor_data(&f, t), mp + p->offset, p->numel * 4);
        }
        CHECK(same, "flash_small: imported values differ from the file");
        st_free(&f);
    }
    free(mp);
    model_close(m);
    snprintf(path, sizeof path, "%s/flash_small_ln.weights.safetensors", fixture_dir);
    if (!(m = load_cpu(path, NULL, err, sizeof err))) { CHECK(0, "%s", err); return; }
    mc = model_config(m);
    CHECK(mc->norm_type == NORM_LAYERNORM && !mc->shift_tokens && (mc->attn_fn != ATTN_LAPLACE) &&
          mc->query_key_dim == 48 && config_rotary(mc) == 32,
          "flash_small_ln: norm %d shift %d laplace %d s %d", mc->norm_type, mc->shift_tokens,
          (mc->attn_fn == ATTN_LAPLACE), mc->query_key_dim);
    model_close(m);
}

/* The Linear layers' GEMM ways (autograd/cpu/gemm.c) agree with a double-precision product and
   write every element of C (poisoned with NaN when beta = 0); odd sizes make short edge
   tiles. Then linear_forward, at a thread count where it uses tiles, gives the same output
   on every call. */
static void test_gemm_ways(void) {
    const int shapes[][5] = {  /* ta, tb, M, N, K */
        {0, 1, 203, 157, 70}, {0, 0, 203, 157, 70}, {1, 0, 157, 203, 91}, {0, 1, 16, 300, 33},
        {0, 0, 300, 17, 64}, {1, 0, 64, 512, 128}, {1, 0, 47, 96, 200}, {0, 1, 33, 20, 333}};
    const int nshape = (int)(sizeof shapes / sizeof shapes[0]);
    const int saved_threads = omp_get_max_threads();
    for (int threads = 2; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        for (int sh = 0; sh < nshape; sh++) {
            const int ta = shapes[sh][0], tb = shapes[sh][1], M = shapes[sh][2], N = shapes[sh][3], K = shapes[sh][4];
            const int lda = ta ? M : K, ldb = tb ? K : N;
            float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
            float *C0 = malloc(sizeof(float) * M * N), *C1 = malloc(sizeof(float) * M * N), *Cin = malloc(sizeof(float) * M * N);
            unsigned x = 12345u + (unsigned)sh;
            for (int i = 0; i < M * K; i++) A[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / (1 << 24) - 0.5f;
            for (int i = 0; i < K * N; i++) B[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / (1 << 24) - 0.5f;
            for (int i = 0; i < M * N; i++) Cin[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / (1 << 24) - 0.5f;
            for (int beta1 = 0; beta1 <= 1; beta1++) {
                const float beta = (float)beta1;
                for (int i = 0; i < M * N; i++) C0[i] = beta1 ? Cin[i] : NAN;
                gemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, beta, C0, N);
                double worst = 0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double ref = beta1 ? Cin[i * N + j] : 0;
                        for (int k = 0; k < K; k++)
                            ref += 0.75 * (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                                   (double)(tb ? B[j * ldb + k] : B[k * ldb + j]);
                        double err = fabs(C0[i * N + j] - ref);
                        if (!(err <= worst)) worst = err;   /* NaN counts as worst */
                    }
                CHECK(worst < 1e-4, "threads %d shape %d beta %d: OpenBLAS vs double %g", threads, sh, beta1, worst);
                /* split K's partial sums: exactly the room its chunks need */
                GemmScratch ws = {NULL, (size_t)gemm_splitk_chunks(K, threads) * M * N};
                ws.buf = malloc(sizeof(float) * ws.floats);
                for (int way = GEMM_OPENBLAS; way <= GEMM_SPLITK; way++) {
                    for (int i = 0; i < M * N; i++) C1[i] = beta1 ? Cin[i] : NAN;
                    gemm_way(way, ta, tb, M, N, K, 0.75f, A, lda, B, ldb, beta, C1, N, threads, &ws);
                    double diff = 0;
                    for (int i = 0; i < M * N; i++) {
                        double d = fabs((double)C1[i] - C0[i]);
                        if (!(d <= diff)) diff = d;
                    }
                    CHECK(diff < 1e-4, "threads %d shape %d beta %d: way %d differs from one OpenBLAS call by %g",
                          threads, sh, beta1, way, diff);
                }
                free(ws.buf);
            }
            free(A); free(B); free(C0); free(C1); free(Cin);
        }
    }
    /* tiles through linear_forward: a product past the size threshold, at 8 threads */
    omp_set_num_threads(8);
    CHECK(gemm_way_for(8, 0) == GEMM_TILES, "8 threads should use tiles");
    const int N = 2048, in = 96, out = 160;
    float *x = malloc(sizeof(float) * N * in), *W = malloc(sizeof(float) * out * in), *b = malloc(sizeof(float) * out);
    float *y0 = malloc(sizeof(float) * N * out), *y = malloc(sizeof(float) * N * out);
    for (int i = 0; i < N * in; i++) x[i] = (float)((i * 37) % 101) / 101 - 0.5f;
    for (int i = 0; i < out * in; i++) W[i] = (float)((i * 53) % 97) / 97 - 0.5f;
    for (int i = 0; i < out; i++) b[i] = (float)i / out;
    linear_forward(y0, x, W, b, N, in, out);
    int same = 1;
    for (int call = 0; call < 3; call++) {
        linear_forward(y, x, W, b, N, in, out);
        same &= memcmp(y, y0, sizeof(float) * N * out) == 0;
    }
    CHECK(same, "linear_forward changed its output between calls");
    double worst = 0;
    for (int n = 0; n < N; n += 97)
        for (int o = 0; o < out; o++) {
            double ref = b[o];
            for (int i = 0; i < in; i++) ref += (double)x[n * in + i] * W[o * in + i];
            double err = fabs(y0[n * out + o] - ref);
            if (!(err <= worst)) worst = err;
        }
    CHECK(worst < 1e-4, "linear_forward with tiles vs double: %g", worst);
    free(x); free(W); free(b); free(y0); free(y);
    omp_set_num_threads(saved_threads);
}

/* The tiled GEMMs and the attention's work items are handed out dynamically, so which thread
   does what changes from run to run; the results must not. A model past the tiles' size
   threshold: forward and backward twice at 8 threads give the same loss and gradients bit
   for bit, and 2 threads (OpenBLAS's threading, other tile shapes) agree within float
   rounding. */
static void test_threads_reproducible(void) {
    FlashConfig c = config_default();
    c.dim = 64; c.depth = 2; c.group_size = 64; c.query_key_dim = 32;
    const int B = 2, T = 256;   /* to_hidden: 512 x 288 x 64, 18.9 MFLOP: tiles at 8 threads */
    CpuModel m;
    char err[256];
    /* activations sized at 8 threads, where the weight gradients split K (their partial
       sums are reserved for the thread count the model is sized at) */
    const int saved = omp_get_max_threads();
    omp_set_num_threads(8);
    if (cpu_create(&m, &c, err, sizeof err) || cpu_alloc_acts(&m, B, T, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    cpu_init_params(&m, 5);
    int *tok = malloc(sizeof(int) * B * (T + 1));
    for (int i = 0; i < B * (T + 1); i++) tok[i] = (i * 131 + i / 7) % 256;
    const size_t n = m.table.total;
    float *g[3];
    double loss[3];
    const int threads[3] = {8, 8, 2};
    for (int run = 0; run < 3; run++) {
        omp_set_num_threads(threads[run]);
        cpu_zero_grads(&m);
        loss[run] = cpu_forward(&m, tok, B, T);
        cpu_backward(&m, tok, 1);
        g[run] = malloc(sizeof(float) * n);
        memcpy(g[run], m.grads, sizeof(float) * n);
    }
    omp_set_num_threads(saved);
    CHECK(gemm_way_for(8, 0) == GEMM_TILES && gemm_way_for(8, 1) == GEMM_SPLITK,
          "8 threads should use tiles, and split K for the weight gradients");
    CHECK(loss[0] == loss[1] && memcmp(g[0], g[1], sizeof(float) * n) == 0,
          "two runs at 8 threads differ (loss %.9g vs %.9g)", loss[0], loss[1]);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double dlt = (double)g[2][i] - g[0][i];
        num += dlt * dlt;
        den += (double)g[0][i] * g[0][i];
    }
    CHECK(fabs(loss[2] - loss[0]) < 1e-5 * fabs(loss[0]) && sqrt(num / den) < 1e-5,
          "2 vs 8 threads: loss %.9g vs %.9g, gradients rel %.3g", loss[2], loss[0], sqrt(num / den));
    for (int run = 0; run < 3; run++) free(g[run]);
    free(tok);
    cpu_destroy(&m);
}

/* ============================ the interface (model.h) ================================ */

/* Which backend a --device asks for, and what the CPU refuses. */
static void test_device_choice(void) {
    char err[256] = "";
    ModelDevice got = DEVICE_CUDA;
    CHECK(model_resolve_device(DEVICE_CPU, &got, err, sizeof err) == 0 && got == DEVICE_CPU, "cpu: %s", err);
    CHECK(model_resolve_device(DEVICE_AUTO, &got, err, sizeof err) == 0 && (got == DEVICE_CPU || model_cuda_built()),
          "auto without CUDA must be the CPU");
    if (!model_cuda_built()) {
        CHECK(model_resolve_device(DEVICE_CUDA, &got, err, sizeof err) == -1 && strstr(err, "no CUDA support"),
              "cuda in a build without it: \"%s\"", err);
    }
    FlashConfig c = small_config();
    ModelOptions mo = {.device = DEVICE_CPU, .precision = PRECISION_BF16, .max_B = 1, .max_T = 8};
    Model *m = model_open(&c, &mo, err, sizeof err);
    CHECK(!m && strstr(err, "fp32 only"), "bf16 on the CPU: \"%s\"", err);
    model_close(m);
    mo.precision = PRECISION_DEFAULT;
    mo.max_T = 0;
    m = model_open(&c, &mo, err, sizeof err);
    CHECK(!m && strstr(err, "capacity"), "a capacity of 1 x 0: \"%s\"", err);
    model_close(m);
    c.dim = 7;
    mo.max_T = 8;
    m = model_open(&c, &mo, err, sizeof err);
    CHECK(!m && strstr(err, "dim"), "an invalid config: \"%s\"", err);
    model_close(m);
}

/* The CPU backend through model.h: each kind of state reads back what was written, the
   accumulated step equals the micro-batches' forward/backward done by hand on the CPU
   model, and a forward beyond the reserved capacity is refused (NaN), not run. */
static void test_interface_cpu(void) {
    FlashConfig c = small_config();
    const int B = 2, T = 8, A = 2;
    char err[256];
    ModelOptions mo = {.device = DEVICE_CPU, .threads = 2, .max_B = B, .max_T = T};
    Model *m = model_open(&c, &mo, err, sizeof err);
    if (!m) { CHECK(0, "model_open: %s", err); return; }
    ModelInfo info;
    model_info(m, &info);
    CHECK(!strncmp(info.device, "cpu", 3) && !strcmp(info.precision, sizeof(real) == 4 ? "fp32" : "fp64") &&
          info.threads == 2 && info.activation_bytes > 0, "info: %s, %s, %d threads", info.device, info.precision,
          info.threads);
    /* the decoder's path is named while one is open, and only then */
    CHECK(info.decoder[0] == 0, "decoder named before one is open: %s", info.decoder);
    CHECK(!model_decoder_open(m, 1, 1, err, sizeof err), "decoder_open: %s", err);
    model_info(m, &info);
    CHECK(!strncmp(info.decoder, "recurrent", 9), "open decoder: '%s'", info.decoder);
    model_decoder_close(m);
    model_info(m, &info);
    CHECK(info.decoder[0] == 0, "decoder named after close: %s", info.decoder);
    const size_t n = model_table(m)->total;
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    const StateKind kinds[4] = {STATE_PARAMS, STATE_GRADS, STATE_ADAM_M, STATE_ADAM_V};
    for (int k = 0; k < 4; k++) {
        for (size_t i = 0; i < n; i++) a[i] = (float)(k + 1) * 1e-3f * (float)(i % 97);
        CHECK(!model_write(m, kinds[k], a, err, sizeof err) && !model_read(m, kinds[k], b, err, sizeof err) &&
              !memcmp(a, b, sizeof(float) * n), "state kind %d does not read back", k);
    }
    model_init_params(m, 3, err, sizeof err);
    int *tok = malloc(sizeof(int) * A * B * (T + 1));
    for (int i = 0; i < A * B * (T + 1); i++) tok[i] = (i * 7 + 3) % c.num_tokens;
    const double loss = model_accumulate(m, tok, A * B, B, T, A);
    model_read(m, STATE_GRADS, a, err, sizeof err);
    size_t cnt, esz;
    int on_dev;
    CHECK(model_grad_buffer(m, &cnt, &esz, &on_dev) && cnt == n && esz == sizeof(real) && !on_dev, "grad buffer");
    /* by hand, on the CPU model of the same parameters */
    CpuModel cm;
    if (!cpu_create(&cm, &c, err, sizeof err) && !cpu_alloc_acts(&cm, B, T, err, sizeof err)) {
        float *p = malloc(sizeof(float) * n);
        model_read(m, STATE_PARAMS, p, err, sizeof err);
        for (size_t i = 0; i < n; i++) cm.params[i] = (real)p[i];
        cpu_params_changed(&cm);
        cpu_zero_grads(&cm);
        double want = 0;
        for (int k = 0; k < A; k++) {
            const int *t = tok + (size_t)k * B * (T + 1);
            want += cpu_forward(&cm, t, B, T) / A;
            cpu_backward(&cm, t, (real)(1.0 / A));
        }
        int same = 1;
        for (size_t i = 0; i < n; i++) same &= a[i] == (float)cm.grads[i];
        CHECK(loss == want && same, "model_accumulate differs from the forward/backward by hand (loss %.9g vs %.9g)",
              loss, want);
        free(p);
    }
    cpu_destroy(&cm);
    /* the update changes the parameters and returns the norm */
    OptConfig o = {.peak_lr = 1e-3, .min_lr = 1e-3, .warmup = 0, .total = 10, .beta1 = 0.9, .beta2 = 0.999,
                   .eps = 1e-8, .weight_decay = 0, .clip_mode = CLIP_NONE, .clip = 0};
    model_read(m, STATE_PARAMS, a, err, sizeof err);
    const double gn = model_update(m, &o, 1, 1e-3);
    model_read(m, STATE_PARAMS, b, err, sizeof err);
    CHECK(isfinite(gn) && gn > 0 && memcmp(a, b, sizeof(float) * n), "model_update: norm %g", gn);
    /* beyond the capacity: refused */
    CHECK(isnan(model_forward(m, tok, B + 1, T, NULL, NULL)) && isnan(model_forward(m, tok, 1, T + 1, NULL, NULL)),
          "a forward beyond the reserved 2 x 8 ran");
    CHECK(isnan(model_accumulate(m, tok, 3, B, T, 1)), "a row count that is not a multiple of B was accepted");
    free(a); free(b); free(tok);
    model_close(m);
}

int main(int argc, char **argv) {
    if (argc > 1) fixture_dir = argv[1];
    RUN(test_default_table);
    RUN(test_model_pointers);
    RUN(test_config_validate);
    RUN(test_config_json);
    RUN(test_init_statistics);
    RUN(test_init_seed);
    RUN(test_export_load_roundtrip);
    RUN(test_import_refusals);
    RUN(test_fixture);
    RUN(test_gemm_ways);
    RUN(test_threads_reproducible);
    RUN(test_device_choice);
    RUN(test_interface_cpu);
    TEST_MAIN_END();
}
