/* tests/test_gradcheck.c: every backward of autograd/cpu/ops.h, and the whole model, against
 * central finite differences (tests/gradcheck.h), in double precision.
 *
 * Usage: test_gradcheck [FIXTURE_DIR [DATA]]   (arguments unused: the inputs are random)
 * FLASH_GC_VERBOSE=1 prints the error of every tensor checked.
 *
 * Each op is checked with the scalar L = sum(w * y) for a fixed random w, so that its
 * backward runs with dy = w; the gradient of every input and every parameter is checked
 * separately against a relative L2 tolerance of 1e-6 per tensor (a factor of 2, a sign
 * or a missing term gives an error of order 1). The ops.h conventions are checked on the
 * way: buffers that a backward ADDS into are pre-filled with random values and the
 * analytic gradient is what it added; buffers it WRITES are pre-filled with garbage;
 * columns outside a strided view must stay untouched. */
#include "cpu_model.h"
#include "gradcheck.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#ifndef FLASH_DOUBLE
#error "test_gradcheck needs the double-precision build (-DFLASH_DOUBLE)"
#endif

#define TOL 1e-6           /* relative L2 error per tensor */
#define K_OP 400           /* entries checked per op tensor (all of them in practice) */
#define K_MODEL 12         /* entries checked per model tensor (of more than 32) */
#define SENTINEL 12345.25  /* value of columns a strided backward must not touch */

static Rng rng;
static int verbose;   /* FLASH_GC_VERBOSE=1 prints every check */

/* ---------------------------------------------------------------- small helpers ---- */

static real *alloc_n(size_t n) {
    real *p = calloc(n ? n : 1, sizeof(real));
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}
/* offset + scale * N(0, 1) */
static void fill(real *x, size_t n, double offset, double scale) {
    for (size_t i = 0; i < n; i++) x[i] = (real)(offset + scale * rng_normal(&rng));
}
static real *rand_n(size_t n, double offset, double scale) {
    real *p = alloc_n(n);
    fill(p, n, offset, scale);
    return p;
}
static real *copy_n(const real *x, size_t n) {
    real *p = alloc_n(n);
    memcpy(p, x, n * sizeof(real));
    return p;
}
static double dot(const real *a, const real *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
/* after - before: what a backward added into a buffer pre-filled with `before` */
static real *added(const real *after, const real *before, size_t n) {
    real *p = alloc_n(n);
    for (size_t i = 0; i < n; i++) p[i] = after[i] - before[i];
    return p;
}
static double rel_diff(const real *a, const real *b, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) { double d = (double)a[i] - b[i]; e += d * d; r += (double)b[i] * b[i]; }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}
static int all_equal(const real *x, size_t n, size_t stride, size_t off, size_t width, real v) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < width; j++)
            if (x[i * stride + off + j] != v) return 0;
    return 1;
}

/* Worst error seen per op, printed at the end. */
static struct { char op[48]; double worst; int n; } stats[32];
static int n_stats;
static void record(const char *op, double err) {
    int i = 0;
    while (i < n_stats && strcmp(stats[i].op, op)) i++;
    if (i == n_stats) {
        if (n_stats == 32) return;
        snprintf(stats[n_stats].op, sizeof stats[n_stats].op, "%s", op);
        stats[n_stats].worst = 0;
        stats[n_stats++].n = 0;
    }
    if (!(err <= stats[i].worst)) stats[i].worst = err;
    stats[i].n++;
}

/* Checks one tensor; the numerical gradient must not be all zero (a vacuous check). */
static void check_result(const char *op, const char *what, const GcResult *r) {
    char msg[256];
    gc_describe(r, msg, sizeof msg);
    record(op, r->rel_err);
    if (verbose) printf("    %s: d/d %s: %s\n", op, what, msg);
    CHECK(r->rel_err <= TOL, "%s: d/d %s: %s", op, what, msg);
    CHECK(r->num_norm > 0, "%s: d/d %s: the numerical gradient is zero on every checked entry",
          op, what);
}
static void check_grad(const char *op, const char *what, gc_loss_fn f, void *ctx, real *x,
                       size_t n, const real *grad, int k) {
    GcResult r = gc_check(f, ctx, x, n, grad, k, 42);
    check_result(op, what, &r);
}
static void check_grad_idx(const char *op, const char *what, gc_loss_fn f, void *ctx, real *x,
                           const real *grad, const size_t *idx, int nidx, double step) {
    GcResult r = gc_check_idx(f, ctx, x, grad, idx, nidx, step);
    check_result(op, what, &r);
}

/* ============================== the checker itself ================================== */

typedef struct { real *x, *w; size_t n; } ToyCtx;
/* L = sum w_i sin(x_i) + (sum x)^2 / 2:  dL/dx_i = w_i cos(x_i) + sum x */
static double toy_loss(void *p) {
    ToyCtx *c = p;
    double s = 0, l = 0;
    for (size_t i = 0; i < c->n; i++) { l += c->w[i] * sin(c->x[i]); s += c->x[i]; }
    return l + 0.5 * s * s;
}

static void test_checker_can_fail(void) {
    const size_t n = 30;
    ToyCtx c = {rand_n(n, 0, 1), rand_n(n, 0, 1), n};
    real *g = alloc_n(n), *bad = alloc_n(n);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += c.x[i];
    for (size_t i = 0; i < n; i++) g[i] = c.w[i] * cos(c.x[i]) + s;

    GcResult r = gc_check(toy_loss, &c, c.x, n, g, 100, 1);
    CHECK(r.rel_err < 1e-8 && r.n_checked == (int)n, "correct gradient: err %g over %d", r.rel_err, r.n_checked);
    for (size_t i = 0; i < n; i++) bad[i] = 2 * g[i];
    r = gc_check(toy_loss, &c, c.x, n, bad, 100, 1);
    CHECK(fabs(r.rel_err - 1) < 1e-6, "gradient x2 must give error 1, got %g", r.rel_err);
    for (size_t i = 0; i < n; i++) bad[i] = -g[i];
    r = gc_check(toy_loss, &c, c.x, n, bad, 100, 1);
    CHECK(fabs(r.rel_err - 2) < 1e-6, "sign-flipped gradient must give error 2, got %g", r.rel_err);
    for (size_t i = 0; i < n; i++) bad[i] = c.w[i] * cos(c.x[i]);     /* missing term */
    r = gc_check(toy_loss, &c, c.x, n, bad, 100, 1);
    CHECK(r.rel_err > 0.1, "missing term must fail, got %g", r.rel_err);
    memcpy(bad, g, n * sizeof(real));
    bad[17] += 1e-3 * fabs(g[17]) + 1e-3;                               /* one entry off */
    r = gc_check(toy_loss, &c, c.x, n, bad, 100, 1);
    CHECK(r.rel_err > TOL && r.worst == 17, "one wrong entry: err %g, worst %zu", r.rel_err, r.worst);
    bad[17] = NAN;
    r = gc_check(toy_loss, &c, c.x, n, bad, 100, 1);
    CHECK(!(r.rel_err <= TOL) && r.worst == 17, "a NaN must fail: err %g, worst %zu", r.rel_err, r.worst);
    /* sampled: 10 of 30, including the first and the last, the same every time */
    size_t i1[10], i2[10];
    int m1 = gc_sample(i1, n, 10, 7), m2 = gc_sample(i2, n, 10, 7);
    CHECK(m1 == 10 && m2 == 10 && !memcmp(i1, i2, sizeof i1), "sample not deterministic");
    CHECK(i1[0] == 0 && i1[1] == n - 1, "sample lacks first/last: %zu %zu", i1[0], i1[1]);
    int distinct = 1;
    for (int a = 0; a < m1; a++)
        for (int b = a + 1; b < m1; b++) distinct &= i1[a] != i1[b] && i1[a] < n;
    CHECK(distinct, "sample has repeated or out-of-range indices");
    for (size_t i = 0; i < n; i++) bad[i] = 2 * g[i];
    r = gc_check(toy_loss, &c, c.x, n, bad, 10, 3);
    CHECK(r.n_checked == 10 && fabs(r.rel_err - 1) < 1e-6, "sampled x2: err %g over %d", r.rel_err, r.n_checked);
    /* x is restored exactly after the check */
    real *x0 = copy_n(c.x, n);
    gc_check(toy_loss, &c, c.x, n, g, 100, 1);
    CHECK(!memcmp(x0, c.x, n * sizeof(real)), "x not restored");
    free(x0); free(c.x); free(c.w); free(g); free(bad);
}

/* ================================== embedding ======================================== */

typedef struct { int B, T, d; int *tokens; real *tok_emb, *scale, *pos_table, *h, *w; } EmbedCtx;
static double embed_loss(void *p) {
    EmbedCtx *c = p;
    embed_forward(c->h, c->tokens, c->T + 1, c->tok_emb, c->scale, c->pos_table, c->B, c->T, c->d);
    return dot(c->w, c->h, (size_t)c->B * c->T * c->d);
}

static void test_embed(void) {
    const int B = 2, T = 5, d = 6, V = 7;
    const size_t N = (size_t)B * T;
    int tokens[2 * 6];
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int)rng_below(&rng, V);
    real inv_freq[3];
    for (int i = 0; i < d / 2; i++) inv_freq[i] = pow(10000.0, -2.0 * i / d);
    real scale = 0.7;
    EmbedCtx c = {B, T, d, tokens, rand_n((size_t)V * d, 0, 1), &scale, alloc_n((size_t)T * d),
                  alloc_n(N * d), rand_n(N * d, 0, 1)};
    pos_table_fill(c.pos_table, inv_freq, T, d);
    real *dtok = rand_n((size_t)V * d, 0, 1), *dtok0 = copy_n(dtok, (size_t)V * d);
    real dscale = 0.3, dscale0 = dscale;
    embed_backward(dtok, &dscale, c.w, tokens, T + 1, c.pos_table, B, T, d);
    real *gtok = added(dtok, dtok0, (size_t)V * d), gscale = dscale - dscale0;
    check_grad("embed", "tok_emb", embed_loss, &c, c.tok_emb, (size_t)V * d, gtok, K_OP);
    check_grad("embed", "pos_scale", embed_loss, &c, c.scale, 1, &gscale, K_OP);
    free(c.tok_emb); free(c.pos_table); free(c.h); free(c.w); free(dtok); free(dtok0); free(gtok);
}

/* ==================================== norms ========================================== */

typedef struct { int N, d, layer; real *x, *g, *b, *y, *stat, *w; } NormCtx;
static double norm_loss(void *p) {
    NormCtx *c = p;
    if (c->layer) layernorm_forward(c->y, c->stat, c->x, c->g, c->b, c->N, c->d);
    else scalenorm_forward(c->y, c->stat, c->x, c->g, c->N, c->d);
    return dot(c->w, c->y, (size_t)c->N * c->d);
}

static void test_scalenorm(void) {
    const int N = 6, d = 8, tiny_row = 4;
    const size_t nd = (size_t)N * d;
    real g = 1.3;
    NormCtx c = {N, d, 0, rand_n(nd, 0.2, 1), &g, NULL, alloc_n(nd), alloc_n(N), rand_n(nd, 0, 1)};
    for (int i = 0; i < d; i++) c.x[tiny_row * d + i] *= 1e-7;   /* ||x|| d^-1/2 << eps */
    norm_loss(&c);
    CHECK(fabs(c.stat[tiny_row] - 1e5) < 1e-6, "tiny row not clamped: 1/norm = %g", c.stat[tiny_row]);
    CHECK(c.stat[0] < 1e3, "row 0 clamped: 1/norm = %g", c.stat[0]);
    real *dx = rand_n(nd, 0, 1), *dx0 = copy_n(dx, nd), dg = 0.5, dg0 = dg;
    scalenorm_backward(dx, &dg, c.w, c.x, c.stat, &g, N, d);      /* dx += */
    real *gx = added(dx, dx0, nd), gg = dg - dg0;
    size_t idx[64];
    int ni = 0;
    for (int i = 0; i < N * d; i++) if (i / d != tiny_row) idx[ni++] = (size_t)i;
    check_grad_idx("scalenorm", "x", norm_loss, &c, c.x, gx, idx, ni, 0);
    /* the clamped row on its own: its gradient (g/eps scale) would drown the others */
    for (ni = 0; ni < d; ni++) idx[ni] = (size_t)(tiny_row * d + ni);
    /* steps of 1e-9 keep the row's norm below eps (the function is linear there) */
    check_grad_idx("scalenorm", "x (clamped row)", norm_loss, &c, c.x, gx, idx, ni, 1e-9);
    check_grad("scalenorm", "g", norm_loss, &c, &g, 1, &gg, K_OP);
    free(c.x); free(c.y); free(c.stat); free(c.w); free(dx); free(dx0); free(gx);
}

static void test_layernorm(void) {
    const int N = 6, d = 7;
    const size_t nd = (size_t)N * d;
    NormCtx c = {N, d, 1, rand_n(nd, 0.5, 2), rand_n(d, 1, 0.3), rand_n(d, 0, 0.3),
                 alloc_n(nd), alloc_n(2 * N), rand_n(nd, 0, 1)};
    norm_loss(&c);
    real *dx = rand_n(nd, 0, 1), *dx0 = copy_n(dx, nd);
    real *dw = rand_n(d, 0, 1), *dw0 = copy_n(dw, d), *db = rand_n(d, 0, 1), *db0 = copy_n(db, d);
    layernorm_backward(dx, dw, db, c.w, c.x, c.stat, c.g, N, d);   /* all += */
    real *gx = added(dx, dx0, nd), *gw = added(dw, dw0, d), *gb = added(db, db0, d);
    check_grad("layernorm", "x", norm_loss, &c, c.x, nd, gx, K_OP);
    check_grad("layernorm", "weight", norm_loss, &c, c.g, d, gw, K_OP);
    check_grad("layernorm", "bias", norm_loss, &c, c.b, d, gb, K_OP);
    free(c.x); free(c.g); free(c.b); free(c.y); free(c.stat); free(c.w);
    free(dx); free(dx0); free(dw); free(dw0); free(db); free(db0); free(gx); free(gw); free(gb);
}

/* ================================= token shift ======================================= */

typedef struct { int B, T, d; real *x, *y, *w; } ShiftCtx;
static double shift_loss(void *p) {
    ShiftCtx *c = p;
    size_t n = (size_t)c->B * c->T * c->d;
    memcpy(c->y, c->x, n * sizeof(real));
    token_shift_forward(c->y, c->B, c->T, c->d);
    return dot(c->w, c->y, n);
}

static void test_token_shift(void) {
    for (int d = 5; d <= 6; d++) {               /* odd d: the first ceil(d/2) = 3 shift */
        const int B = 2, T = 4;
        const size_t n = (size_t)B * T * d;
        ShiftCtx c = {B, T, d, rand_n(n, 0, 1), alloc_n(n), rand_n(n, 0, 1)};
        shift_loss(&c);
        int ok = 1;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                for (int i = 0; i < d; i++) {
                    real want = i < (d + 1) / 2 ? (t ? c.x[((size_t)b * T + t - 1) * d + i] : 0)
                                                : c.x[((size_t)b * T + t) * d + i];
                    ok &= c.y[((size_t)b * T + t) * d + i] == want;
                }
        CHECK(ok, "d=%d: forward is not the shift of the first ceil(d/2) features", d);
        real *dx = copy_n(c.w, n);
        token_shift_backward(dx, B, T, d);        /* in place */
        check_grad("token_shift", d % 2 ? "x (odd d)" : "x (even d)", shift_loss, &c, c.x, n, dx, K_OP);
        free(c.x); free(c.y); free(c.w); free(dx);
    }
}

/* =================================== linear ========================================== */

typedef struct { int N, in, out; real *x, *W, *b, *y, *w; } LinCtx;
static double linear_loss(void *p) {
    LinCtx *c = p;
    linear_forward(c->y, c->x, c->W, c->b, c->N, c->in, c->out);
    return dot(c->w, c->y, (size_t)c->N * c->out);
}

static void test_linear(void) {
    const int N = 5, in = 4, out = 3;
    const size_t nx = (size_t)N * in, nw = (size_t)out * in, ny = (size_t)N * out;
    LinCtx c = {N, in, out, rand_n(nx, 0, 1), rand_n(nw, 0, 1), rand_n(out, 0, 1), alloc_n(ny),
                rand_n(ny, 0, 1)};
    real *dx = rand_n(nx, 0, 100);                                 /* written: garbage */
    real *dW = rand_n(nw, 0, 1), *dW0 = copy_n(dW, nw), *db = rand_n(out, 0, 1), *db0 = copy_n(db, out);
    linear_backward(dx, 0, dW, db, c.w, c.x, c.W, N, in, out, NULL);
    real *gW = added(dW, dW0, nw), *gb = added(db, db0, out);
    check_grad("linear", "x", linear_loss, &c, c.x, nx, dx, K_OP);
    check_grad("linear", "W", linear_loss, &c, c.W, nw, gW, K_OP);
    check_grad("linear", "b", linear_loss, &c, c.b, out, gb, K_OP);
    /* dx_beta = 1 adds into dx */
    real *dx1 = rand_n(nx, 0, 1), *dx10 = copy_n(dx1, nx);
    linear_backward(dx1, 1, dW, db, c.w, c.x, c.W, N, in, out, NULL);
    real *gx1 = added(dx1, dx10, nx);
    check_grad("linear", "x (dx_beta = 1)", linear_loss, &c, c.x, nx, gx1, K_OP);
    /* dx NULL: weight gradients only, same values */
    real *dW2 = calloc(nw, sizeof(real)), *db2 = calloc(out, sizeof(real));
    linear_backward(NULL, 0, dW2, db2, c.w, c.x, c.W, N, in, out, NULL);
    CHECK(rel_diff(dW2, gW, nw) < 1e-14 && rel_diff(db2, gb, out) < 1e-14, "dx = NULL changes dW/db");
    free(c.x); free(c.W); free(c.b); free(c.y); free(c.w); free(dx); free(dW); free(dW0);
    free(db); free(db0); free(gW); free(gb); free(dx1); free(dx10); free(gx1); free(dW2); free(db2);
}

/* ==================================== silu =========================================== */

typedef struct { size_t n; real *u, *y, *w; } SiluCtx;
static double silu_loss(void *p) {
    SiluCtx *c = p;
    silu_forward(c->y, c->u, c->n);
    return dot(c->w, c->y, c->n);
}

static void test_silu(void) {
    const size_t n = 40;
    SiluCtx c = {n, rand_n(n, 0, 3), alloc_n(n), rand_n(n, 0, 1)};
    real *du = rand_n(n, 0, 100);
    silu_backward(du, c.w, c.u, n);
    check_grad("silu", "u", silu_loss, &c, c.u, n, du, K_OP);
    real *alias = copy_n(c.w, n);                 /* du aliasing dy, as the model calls it */
    silu_backward(alias, alias, c.u, n);
    CHECK(rel_diff(alias, du, n) == 0, "aliased du = dy differs: %g", rel_diff(alias, du, n));
    free(c.u); free(c.y); free(c.w); free(du); free(alias);
}

/* ============================ offset-scale + rotary ================================== */

typedef struct { int B, T, s, r; real *z, *gamma, *beta, *cs, *sn, *qk4, *w; } RotCtx;
static double rot_loss(void *p) {
    RotCtx *c = p;
    offset_scale_rotary_forward(c->qk4, c->z, c->s, c->gamma, c->beta, c->cs, c->sn, c->B, c->T, c->s, c->r);
    return dot(c->w, c->qk4, (size_t)4 * c->B * c->T * c->s);
}

static void test_offset_scale_rotary(void) {
    const int cases[2][2] = {{8, 8}, {36, 32}};   /* s = r (full), s > r (partial) */
    for (int ci = 0; ci < 2; ci++) {
        const int B = 2, T = 5, s = cases[ci][0], r = cases[ci][1];
        const size_t N = (size_t)B * T, nz = N * s, n4 = 4 * nz;
        real freqs[16];
        for (int j = 0; j < r / 2; j++) freqs[j] = pow(10000.0, -2.0 * j / r);
        RotCtx c = {B, T, s, r, rand_n(nz, 0, 1), rand_n(4 * (size_t)s, 0, 0.5),
                    rand_n(4 * (size_t)s, 0, 0.5), alloc_n((size_t)T * r / 2),
                    alloc_n((size_t)T * r / 2), alloc_n(n4), rand_n(n4, 0, 1)};
        rotary_table_fill(c.cs, c.sn, freqs, T, r);
        rot_loss(&c);
        real *dq = copy_n(c.w, n4), *dz = rand_n(nz, 0, 100);
        real *dgm = rand_n(4 * (size_t)s, 0, 1), *dgm0 = copy_n(dgm, 4 * (size_t)s);
        real *dbt = rand_n(4 * (size_t)s, 0, 1), *dbt0 = copy_n(dbt, 4 * (size_t)s);
        offset_scale_rotary_backward(dz, dgm, dbt, dq, c.z, s, c.gamma, c.cs, c.sn, B, T, s, r);
        real *ggm = added(dgm, dgm0, 4 * (size_t)s), *gbt = added(dbt, dbt0, 4 * (size_t)s);
        const char *tag = ci ? "partial" : "full";
        char wz[48], wg[48], wb[48];
        snprintf(wz, sizeof wz, "z (%s rotary)", tag);
        snprintf(wg, sizeof wg, "gamma (%s rotary)", tag);
        snprintf(wb, sizeof wb, "beta (%s rotary)", tag);
        check_grad("offset_scale_rotary", wz, rot_loss, &c, c.z, nz, dz, K_OP);
        check_grad("offset_scale_rotary", wg, rot_loss, &c, c.gamma, 4 * (size_t)s, ggm, K_OP);
        check_grad("offset_scale_rotary", wb, rot_loss, &c, c.beta, 4 * (size_t)s, gbt, K_OP);
        free(c.z); free(c.gamma); free(c.beta); free(c.cs); free(c.sn); free(c.qk4); free(c.w);
        free(dq); free(dz); free(dgm); free(dgm0); free(dbt); free(dbt0); free(ggm); free(gbt);
    }
}

/* ================================== attention ======================================== */

typedef struct {
    AttnShape as;
    real *qk4, *hid, *rel, *sim, *attn, *kv, *att, *w;
} AttnCtx;
static double attn_loss(void *p) {
    AttnCtx *c = p;
    /* FLASH's combination: the quadratic part writes att, the linear part adds to it */
    attn_quad_forward(c->att, c->sim, c->attn, c->qk4, c->hid, 2 * c->as.e, &c->as);
    attn_linear_forward(c->att, c->kv, c->qk4, c->hid, 2 * c->as.e, &c->as);
    return dot(c->w, c->att, (size_t)c->as.B * c->as.T * c->as.e);
}

/* smallest |sim| over the causal, unpadded entries (relu^2 must stay off its kink) */
static double min_abs_sim(const AttnCtx *c, int *n_pos, int *n_neg) {
    const AttnShape *a = &c->as;
    double mn = INFINITY;
    *n_pos = *n_neg = 0;
    for (int task = 0; task < a->B * a->G; task++) {
        int g = task % a->G, Cg = a->T - g * a->C < a->C ? a->T - g * a->C : a->C;
        for (int i = 0; i < Cg; i++)
            for (int j = 0; j <= i; j++) {
                double v = c->sim[(size_t)task * a->C * a->C + (size_t)i * a->C + j];
                if (fabs(v) < mn) mn = fabs(v);
                if (v > 0) (*n_pos)++; else (*n_neg)++;
            }
    }
    return mn;
}

static void attention_case(int B, int T, int C, int s, int e, int laplace, double qk_scale) {
    const int G = (T + C - 1) / C;
    const size_t N = (size_t)B * T, n4 = 4 * N * s, nh = N * 2 * e, BG = (size_t)B * G;
    char op[64];
    snprintf(op, sizeof op, "attention %s", laplace ? "laplace" : "relu^2");
    AttnCtx c = {{B, T, C, G, s, e, laplace, NULL, alloc_n(C), (real)1 / C, R_SQRT((real)s), 2}, alloc_n(n4), alloc_n(nh), alloc_n(32),
                 alloc_n(BG * C * C), alloc_n(BG * C * C), alloc_n(BG * s * e), alloc_n(N * e),
                 alloc_n(N * e)};
    c.as.rel_bias = c.rel;
    /* laplace: sim around mu = 0.71 where phi is steep; relu^2: both signs, off the kink */
    int tries = 0, n_pos = 0, n_neg = 0;
    double margin = 0;
    do {
        fill(c.qk4, n4, 0, qk_scale);
        fill(c.hid, nh, 0, 1);
        fill(c.w, N * e, 0, 1);
        fill(c.rel, 32, laplace ? 0.7 / sqrt(s) : 0, 0.25 / sqrt(s));
        attn_loss(&c);
        margin = min_abs_sim(&c, &n_pos, &n_neg);
    } while (!laplace && margin < 1e-3 && ++tries < 100);
    if (!laplace) CHECK(margin >= 1e-3 && n_pos > 0 && n_neg > 0,
                        "relu^2 inputs: min |sim| %g, %d positive, %d negative", margin, n_pos, n_neg);

    real *dhid = rand_n(nh, 0, 100), *dq = rand_n(n4, 0, 100);
    for (size_t n = 0; n < N; n++)
        for (int j = e; j < 2 * e; j++) dhid[n * 2 * e + j] = SENTINEL;
    real *drel = rand_n(32, 0, 1), *drel0 = copy_n(drel, 32);
    real *d_kv = rand_n(BG * s * e, 0, 100), *d_part = rand_n((size_t)BG * C * C, 0, 100);
    real *dsim = rand_n((size_t)BG * C * C, 0, 100);
    attn_linear_backward(dhid, 2 * e, dq, c.w, c.kv, c.qk4, c.hid, d_kv, &c.as);
    attn_quad_backward(dhid, 2 * e, 1, dq, drel, c.w, c.sim, c.attn, c.qk4, c.hid, d_part, dsim, &c.as);
    real *grel = added(drel, drel0, 32);
    CHECK(all_equal(dhid, N, 2 * (size_t)e, e, e, SENTINEL), "%s: dv wrote outside v's columns", op);

    static const char *blk[4] = {"quad_q", "lin_q", "quad_k", "lin_k"};
    for (int k = 0; k < 4; k++)
        check_grad(op, blk[k], attn_loss, &c, c.qk4 + k * N * s, N * s, dq + k * N * s, K_OP);
    size_t *idx = malloc(N * e * sizeof *idx);
    for (size_t n = 0; n < N; n++)
        for (int j = 0; j < e; j++) idx[n * e + j] = n * 2 * e + j;
    if (N * e > K_OP) {              /* sample K_OP of the v entries, first and last kept */
        size_t *pick = malloc(K_OP * sizeof *pick);
        int m = gc_sample(pick, N * e, K_OP, 5);
        for (int i = 0; i < m; i++) pick[i] = idx[pick[i]];
        check_grad_idx(op, "v", attn_loss, &c, c.hid, dhid, pick, m, 0);
        free(pick);
    } else {
        check_grad_idx(op, "v", attn_loss, &c, c.hid, dhid, idx, (int)(N * e), 0);
    }
    check_grad(op, "rel_bias", attn_loss, &c, c.rel, 32, grel, K_OP);
    /* buckets beyond the largest distance C-1 get no gradient */
    int top = rel_pos_bucket(C - 1), zero = 1;
    for (int k = top + 1; k < 32; k++) zero &= grel[k] == 0;
    CHECK(zero, "%s: rel_bias buckets above %d got a gradient", op, top);
    free(idx); free(c.as.bias_dist); free(c.qk4); free(c.hid); free(c.rel); free(c.sim); free(c.attn); free(c.kv);
    free(c.att); free(c.w); free(dhid); free(dq); free(drel); free(drel0); free(grel); free(d_kv);
    free(d_part); free(dsim);
}

/* T = 11, C = 4: three groups, the last one short (3 rows) */
static void test_attention_laplace(void) { attention_case(2, 11, 4, 6, 5, 1, 1.0); }
static void test_attention_relu2(void) { attention_case(2, 11, 4, 6, 5, 0, 1.0); }
/* C = 24 > 16: distances 16..23 use the logarithmic buckets; T = 53: groups 24, 24, 5 */
static void test_attention_log_buckets(void) {
    attention_case(1, 53, 24, 4, 3, 1, 3.0);
    attention_case(1, 53, 24, 4, 3, 0, 3.0);
}

/* the causal row-block path: blocks of 3 rows over groups of 4 and 24 (short last blocks) */
static void test_attention_blocked(void) {
    int saved = attn_block_rows;
    attn_block_rows = 3;
    attention_case(2, 11, 4, 6, 5, 1, 1.0);
    attention_case(2, 11, 4, 6, 5, 0, 1.0);
    attention_case(1, 53, 24, 4, 3, 1, 1.0);
    attn_block_rows = saved;
}

/* the Taylor linear part alone (attn_taylor.c): lin_q, lin_k and v through the feature map,
   the group sums, the read-out and the normalisation (den below eps in group 0, above it
   after) */
typedef struct { AttnShape as; TaylorBufs t; real *qk4, *hid, *att, *w; } TaylorCtx;
static double taylor_loss(void *p) {
    TaylorCtx *c = p;
    const size_t Ne = (size_t)c->as.B * c->as.T * c->as.e;
    memset(c->att, 0, Ne * sizeof(real));   /* the room adds lin_out */
    attn_taylor_forward(c->att, &c->t, c->qk4, c->hid, 2 * c->as.e, &c->as);
    return dot(c->w, c->att, Ne);
}

static void taylor_case(int B, int T, int C, int s, int e) {
    const int G = (T + C - 1) / C, F = taylor_feature_count(s);
    const size_t N = (size_t)B * T, n4 = 4 * N * s, nh = N * 2 * e, BG = (size_t)B * G;
    const size_t nf = 2 * N * F, nst = BG * F * (e + 1), nnd = N * (e + 1);
    real *tf = alloc_n(nf), *dtf = rand_n(nf, 0, 100);
    TaylorCtx c = {{B, T, C, G, s, e, ATTN_LAPLACE, NULL, NULL, (real)1 / C, R_SQRT((real)s), 2},
                   {tf, tf + N * F, alloc_n(nst), alloc_n(nnd)},
                   rand_n(n4, 0, 1), rand_n(nh, 0, 1), alloc_n(N * e), rand_n(N * e, 0, 1)};
    TaylorBufs dt = {dtf, dtf + N * F, rand_n(nst, 0, 100), rand_n(nnd, 0, 100)};
    taylor_loss(&c);
    real *dhid = rand_n(nh, 0, 100), *dq = rand_n(n4, 0, 100);
    for (size_t n = 0; n < N; n++)
        for (int j = e; j < 2 * e; j++) dhid[n * 2 * e + j] = SENTINEL;
    attn_taylor_backward(dhid, 2 * e, dq, c.w, &c.t, c.qk4, c.hid, &dt, &c.as);
    const char *op = "attention taylor";
    CHECK(all_equal(dhid, N, 2 * (size_t)e, e, e, SENTINEL), "%s: dv wrote outside v's columns", op);
    check_grad(op, "lin_q", taylor_loss, &c, c.qk4 + N * s, N * s, dq + N * s, K_OP);
    check_grad(op, "lin_k", taylor_loss, &c, c.qk4 + 3 * N * s, N * s, dq + 3 * N * s, K_OP);
    size_t *idx = malloc(N * e * sizeof *idx);
    for (size_t n = 0; n < N; n++)
        for (int j = 0; j < e; j++) idx[n * e + j] = n * 2 * e + j;
    check_grad_idx(op, "v", taylor_loss, &c, c.hid, dhid, idx, (int)(N * e), 0);
    free(idx); free(tf); free(dtf); free(c.t.st); free(c.t.nd); free(dt.st); free(dt.nd);
    free(c.qk4); free(c.hid); free(c.att); free(c.w); free(dhid); free(dq);
}
/* T = 11, C = 4: groups 4, 4, 3 (the last short); T = 13, C = 5 with one sequence */
static void test_attention_taylor(void) {
    taylor_case(2, 11, 4, 6, 5);
    taylor_case(1, 13, 5, 3, 7);
}

static void test_rel_pos_bucket(void) {
    int ok = 1;
    for (int n = 0; n < 16; n++) ok &= rel_pos_bucket(n) == n;
    CHECK(ok, "buckets below 16 must be exact");
    CHECK(rel_pos_bucket(-3) == 0, "negative distance: %d", rel_pos_bucket(-3));
    CHECK(rel_pos_bucket(16) == 16 && rel_pos_bucket(23) == 18 && rel_pos_bucket(32) == 21,
          "log buckets: 16->%d 23->%d 32->%d", rel_pos_bucket(16), rel_pos_bucket(23), rel_pos_bucket(32));
    CHECK(rel_pos_bucket(127) == 31 && rel_pos_bucket(128) == 31 && rel_pos_bucket(5000) == 31,
          "far buckets: %d %d %d", rel_pos_bucket(127), rel_pos_bucket(128), rel_pos_bucket(5000));
}

/* ==================================== gate =========================================== */

typedef struct { int N, e; real *gbuf, *att, *out, *w; } GateCtx;
static double gate_loss(void *p) {
    GateCtx *c = p;
    gate_forward(c->out, c->gbuf + c->e, 2 * c->e, c->att, c->N, c->e);
    return dot(c->w, c->out, (size_t)c->N * c->e);
}

static void test_gate(void) {
    const int N = 6, e = 5;
    const size_t ne = (size_t)N * e, nb = 2 * ne;
    GateCtx c = {N, e, rand_n(nb, 0, 1), rand_n(ne, 0, 1), alloc_n(ne), rand_n(ne, 0, 1)};
    real *dbuf = rand_n(nb, 0, 100), *datt = rand_n(ne, 0, 100);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < e; j++) dbuf[(size_t)n * 2 * e + j] = SENTINEL;
    gate_backward(dbuf + e, 2 * e, datt, c.w, c.gbuf + e, c.att, N, e);
    CHECK(all_equal(dbuf, N, 2 * (size_t)e, 0, e, SENTINEL), "d_gate wrote outside the gate columns");
    size_t idx[64];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < e; j++) idx[n * e + j] = (size_t)n * 2 * e + e + j;
    check_grad_idx("gate", "gate", gate_loss, &c, c.gbuf, dbuf, idx, (int)ne, 0);
    check_grad("gate", "att", gate_loss, &c, c.att, ne, datt, K_OP);
    free(c.gbuf); free(c.att); free(c.out); free(c.w); free(dbuf); free(datt);
}

/* ================================ cross-entropy ====================================== */

typedef struct { int B, T, V; int *tokens; real *logits, *losses; double dloss; } CeCtx;
static double ce_loss(void *p) {
    CeCtx *c = p;
    return c->dloss * crossentropy_forward(c->losses, c->logits, c->tokens + 1, c->T + 1, c->B, c->T, c->V);
}

static void test_crossentropy(void) {
    const int B = 2, T = 3, V = 7;
    const size_t N = (size_t)B * T;
    int tokens[2 * 4];
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int)rng_below(&rng, V);
    CeCtx c = {B, T, V, tokens, rand_n(N * V, 0, 2), alloc_n(N), 0.7};
    real *dl = rand_n(N * V, 0, 100);
    crossentropy_backward(dl, c.logits, tokens + 1, T + 1, B, T, V, (real)c.dloss);
    check_grad("crossentropy", "logits", ce_loss, &c, c.logits, N * V, dl, K_OP);
    /* the mean is the mean of the per-row losses, each logsumexp - logit[target] */
    double mean = crossentropy_forward(c.losses, c.logits, tokens + 1, T + 1, B, T, V), s = 0, worst = 0;
    for (size_t n = 0; n < N; n++) {
        const real *l = c.logits + n * V;
        double z = 0;
        for (int i = 0; i < V; i++) z += exp(l[i]);
        double want = log(z) - l[tokens[(n / T) * (T + 1) + n % T + 1]];
        if (fabs(want - c.losses[n]) > worst) worst = fabs(want - c.losses[n]);
        s += c.losses[n];
    }
    CHECK(worst < 1e-12, "per-row loss off by %g", worst);
    CHECK(fabs(s / N - mean) < 1e-12, "mean %g vs mean of rows %g", mean, s / N);
    free(c.logits); free(c.losses); free(dl);
}

/* ================================== whole model ====================================== */

typedef struct { CpuModel *m; const int *tokens; int B, T; } ModelCtx;
static double model_loss(void *p) {
    ModelCtx *c = p;
    return cpu_forward(c->m, c->tokens, c->B, c->T);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* The constant-initialised parameters get random values so every gradient is exercised
   (as the reference fixtures do); the relative bias is scaled so that sim falls where
   the laplace function is steep rather than saturated. */
static void perturb_params(CpuModel *m) {
    const int s = m->cfg.query_key_dim;
    for (int i = 0; i < m->table.n; i++) {
        const ParamInfo *p = &m->table.info[i];
        real *x = m->params + p->offset;
        const char *nm = p->name;
        if (ends_with(nm, "norm.g") || ends_with(nm, "norm.weight") ||
            !strcmp(nm, "to_logits.0.weight") || !strcmp(nm, "abs_pos_emb.scale"))
            fill(x, p->numel, 1, 0.3);
        else if (ends_with(nm, "norm.bias") || !strcmp(nm, "to_logits.0.bias") ||
                 ends_with(nm, "qk_offset_scale.beta"))
            fill(x, p->numel, 0, 0.3);
        else if (ends_with(nm, "qk_offset_scale.gamma"))
            fill(x, p->numel, 0, 0.5);
        else if (ends_with(nm, "relative_attention_bias.weight"))
            fill(x, p->numel, ((m->cfg.attn_fn == ATTN_LAPLACE) ? 0.5 : 0.15) / sqrt(s), 0.3 / sqrt(s));
    }
}

/* smallest |sim| over every layer's causal, unpadded scores of the last forward; *few
   gets the smallest count, over layers, of positive or of negative scores */
static double model_min_abs_sim(const CpuModel *m, int *few) {
    const int B = m->cur_B, T = m->cur_T, C = m->cfg.group_size, G = (T + C - 1) / C;
    double mn = INFINITY;
    *few = 1 << 30;
    for (int l = 0; l < m->cfg.depth; l++) {
        int pos = 0, neg = 0;
        for (int task = 0; task < B * G; task++) {
            int g = task % G, Cg = T - g * C < C ? T - g * C : C;
            const real *S = m->acts.sim + ((size_t)l * B * G + task) * C * C;
            for (int i = 0; i < Cg; i++)
                for (int j = 0; j <= i; j++) {
                    if (fabs(S[i * C + j]) < mn) mn = fabs(S[i * C + j]);
                    if (S[i * C + j] > 0) pos++; else neg++;
                }
        }
        if (pos < *few) *few = pos;
        if (neg < *few) *few = neg;
    }
    return mn;
}

static void model_case(const char *tag, const FlashConfig *cfg, int B, int T) {
    CpuModel m;
    char err[256];
    /* the case's own draws (tokens, perturbation), seeded from its tag: what the tests
       before it drew (their sizes follow the layout, e.g. taylor's feature width) does not
       change the instance checked here */
    uint64_t seed = 1469598103934665603ull;
    for (const char *q = tag; *q; q++) seed = (seed ^ (unsigned char)*q) * 1099511628211ull;
    rng_seed(&rng, seed);
    if (cpu_create(&m, cfg, err, sizeof err)) { CHECK(0, "%s: model_create: %s", tag, err); return; }
    if (cpu_alloc_acts(&m, B, T, err, sizeof err)) {
        CHECK(0, "%s: model_alloc_acts: %s", tag, err);
        cpu_destroy(&m);
        return;
    }
    const int V = cfg->num_tokens;
    int *tokens = malloc((size_t)B * (T + 1) * sizeof *tokens);
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int)rng_below(&rng, V);
    ModelCtx c = {&m, tokens, B, T};
    const size_t tot = m.table.total;

    /* relu^2: draw until every score is at least 1e-3 away from the kink and each layer
       has at least 3 positive and 3 negative scores */
    double loss, margin = INFINITY;
    int tries = 0, few = 1 << 30;
    do {
        cpu_init_params(&m, 7 + (uint64_t)tries);
        perturb_params(&m);
        loss = model_loss(&c);
        if ((cfg->attn_fn != ATTN_LAPLACE)) margin = model_min_abs_sim(&m, &few);
    } while ((margin < 1e-3 || few < 3) && ++tries < 100);
    CHECK(margin >= 1e-3 && few >= 3, "%s: min |sim| %g, %d scores of one sign", tag, margin, few);
    cpu_zero_grads(&m);
    CHECK(isfinite(loss) && loss > 0, "%s: loss %g", tag, loss);
    cpu_backward(&m, tokens, 1);
    real *g1 = copy_n(m.grads, tot);

    char op[64];
    snprintf(op, sizeof op, "model %s", tag);
    int n_checked = 0;
    for (int i = 0; i < m.table.n; i++) {
        const ParamInfo *p = &m.table.info[i];
        if (!p->trained) {
            CHECK(all_equal(g1 + p->offset, p->numel, 1, 0, 1, 0),
                  "%s: untrained %s got a gradient", tag, p->name);
            continue;
        }
        real *x = m.params + p->offset;
        const real *g = g1 + p->offset;
        if (!strcmp(p->name, "token_emb.weight")) {
            /* rows of the input tokens (the rest get no gradient), plus one unused row */
            size_t idx[K_MODEL];
            int *used = calloc((size_t)V, sizeof *used), nidx = 0, d = cfg->dim;
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) used[tokens[b * (T + 1) + t]] = 1;
            while (nidx < K_MODEL - 2) {
                int tok = tokens[rng_below(&rng, (uint64_t)B * (T + 1))];
                if (used[tok]) idx[nidx++] = (size_t)tok * d + rng_below(&rng, d);
            }
            for (int v = 0; v < V && nidx < K_MODEL; v++)
                if (!used[v]) { idx[nidx++] = (size_t)v * d; if (nidx < K_MODEL) idx[nidx++] = (size_t)v * d + d - 1; }
            check_grad_idx(op, p->name, model_loss, &c, x, g, idx, nidx, 0);
            free(used);
        } else {
            /* small tensors whole: rel_bias has gradient only in the buckets below C */
            check_grad(op, p->name, model_loss, &c, x, p->numel, g, p->numel <= 32 ? 32 : K_MODEL);
        }
        n_checked++;
    }
    int n_trained = 0;
    for (int i = 0; i < m.table.n; i++) n_trained += m.table.info[i].trained;
    CHECK(n_checked == n_trained && n_trained > 0, "%s: checked %d of %d tensors", tag, n_checked, n_trained);

    /* dloss scales the gradient; two backwards accumulate */
    real *want = alloc_n(tot);
    cpu_zero_grads(&m);
    cpu_forward(&m, tokens, B, T);
    cpu_backward(&m, tokens, 0.5);
    for (size_t k = 0; k < tot; k++) want[k] = 0.5 * g1[k];
    double e_half = rel_diff(m.grads, want, tot);
    CHECK(e_half < 1e-12, "%s: backward(0.5) is not half the gradient: %g", tag, e_half);
    cpu_zero_grads(&m);
    for (int rep = 0; rep < 2; rep++) {
        cpu_forward(&m, tokens, B, T);
        cpu_backward(&m, tokens, 1);
    }
    for (size_t k = 0; k < tot; k++) want[k] = 2 * g1[k];
    double e_two = rel_diff(m.grads, want, tot);
    CHECK(e_two < 1e-12, "%s: two backwards do not accumulate: %g", tag, e_two);
    free(want); free(g1); free(tokens);
    cpu_destroy(&m);
}

/* (a) scalenorm, token shift, laplace; T = 10, C = 4: groups 4, 4, 2 */
static void test_model_scalenorm_shift_laplace(void) {
    FlashConfig c = config_default();
    c.dim = 8; c.depth = 2; c.group_size = 4; c.query_key_dim = 6; c.expansion_factor = 2;
    c.norm_type = NORM_SCALENORM; c.shift_tokens = 1; c.attn_fn = ATTN_LAPLACE;
    model_case("a", &c, 2, 10);
}

/* (b) layernorm, no shift, relu^2, s = 34 > r = 32; T = 9, C = 4: groups 4, 4, 1 */
static void test_model_layernorm_relu2_partial_rotary(void) {
    FlashConfig c = config_default();
    c.dim = 8; c.depth = 2; c.group_size = 4; c.query_key_dim = 34; c.expansion_factor = 2;
    c.norm_type = NORM_LAYERNORM; c.shift_tokens = 0; c.attn_fn = ATTN_RELU2;
    model_case("b", &c, 2, 9);
}

/* (c), (d): (a) and (b) with --linear-attn taylor, odd T */
static void test_model_taylor(void) {
    FlashConfig c = config_default();
    c.dim = 8; c.depth = 2; c.group_size = 4; c.query_key_dim = 6; c.expansion_factor = 2;
    c.norm_type = NORM_SCALENORM; c.shift_tokens = 1; c.attn_fn = ATTN_LAPLACE;
    c.linear_attn = LINEAR_TAYLOR;
    model_case("c taylor", &c, 2, 11);
    c.query_key_dim = 8; c.norm_type = NORM_LAYERNORM; c.shift_tokens = 0; c.attn_fn = ATTN_RELU2;
    model_case("d taylor", &c, 2, 9);
}

int main(int argc, char **argv) {
    (void)argc; (void)argv;
    const char *vb = getenv("FLASH_GC_VERBOSE");
    verbose = vb && *vb && strcmp(vb, "0");
    rng_seed(&rng, 20240611);
    RUN(test_checker_can_fail);
    RUN(test_embed);
    RUN(test_scalenorm);
    RUN(test_layernorm);
    RUN(test_token_shift);
    RUN(test_linear);
    RUN(test_silu);
    RUN(test_offset_scale_rotary);
    RUN(test_rel_pos_bucket);
    RUN(test_attention_laplace);
    RUN(test_attention_relu2);
    RUN(test_attention_log_buckets);
    RUN(test_attention_blocked);
    RUN(test_attention_taylor);
    RUN(test_gate);
    RUN(test_crossentropy);
    RUN(test_model_scalenorm_shift_laplace);
    RUN(test_model_layernorm_relu2_partial_rotary);
    RUN(test_model_taylor);
    printf("worst relative L2 error per op (tolerance %g):\n", TOL);
    for (int i = 0; i < n_stats; i++)
        printf("  %-26s %.2e over %d tensors\n", stats[i].op, stats[i].worst, stats[i].n);
    TEST_MAIN_END();
}
