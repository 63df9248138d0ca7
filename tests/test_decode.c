/* tests/test_decode.c: the incremental decoder's logits equal the full forward's at every
 * position, across group boundaries, for prompts of any length (1 token, shorter than a
 * group, exactly whole groups, longer than one group), one or several sequences. */
#include <stdlib.h>
#include <string.h>
#include "cpu_decode.h"
#include "cpu_model.h"
#include "gemm.h"
#include "ops.h"
#include "rng.h"
#include "sample.h"
#include "test.h"

#define TOL 1e-5

static double row_rel_err(const real *x, const real *ref, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double dlt = (double)x[i] - ref[i];
        num += dlt * dlt;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Every position's logits of the full forward over T tokens vs prefill(P) + steps. */
static double worst_error(const FlashConfig *cfg, int T, int P, int nseq) {
    CpuModel m;
    char err[256];
    if (cpu_create(&m, cfg, err, sizeof err) || cpu_alloc_acts(&m, 1, T, err, sizeof err)) {
        printf("  %s\n", err);
        return 1e9;
    }
    cpu_init_params(&m, 7);
    Rng rng;
    rng_seed(&rng, 11);
    /* move the constant-initialised parameters off their defaults so they all matter */
    for (int i = 0; i < m.table.n; i++) {
        const ParamInfo *p = &m.table.info[i];
        if (!p->trained) continue;
        if (strstr(p->name, "norm") || strstr(p->name, "beta") || strstr(p->name, "scale"))
            for (size_t k = 0; k < p->numel; k++) m.params[p->offset + k] += (real)(0.1 * rng_normal(&rng));
        if (strstr(p->name, "gamma"))  /* larger q/k so the attention is not flat */
            for (size_t k = 0; k < p->numel; k++) m.params[p->offset + k] *= 20;
    }
    int *tok = malloc(sizeof(int) * (T + 1));
    for (int t = 0; t <= T; t++) tok[t] = (int)rng_below(&rng, 256);
    cpu_forward(&m, tok, 1, T);
    const int V = cfg->num_tokens;
    real *full = malloc(sizeof(real) * (size_t)T * V);
    memcpy(full, m.acts.logits, sizeof(real) * (size_t)T * V);

    Decoder dc;
    if (decoder_init(&dc, &m, nseq, P, err, sizeof err)) { printf("  %s\n", err); return 1e9; }
    real *logits = malloc(sizeof(real) * (size_t)nseq * V);
    decoder_prefill(&dc, tok, P, logits);
    double worst = 0;
    int *col = malloc(sizeof(int) * nseq);
    for (int t = P - 1; t < T; t++) {
        if (t >= P) {
            for (int i = 0; i < nseq; i++) col[i] = tok[t];
            decoder_step(&dc, col, logits);
        }
        for (int i = 0; i < nseq; i++) {
            double e = row_rel_err(logits + (size_t)i * V, full + (size_t)t * V, V);
            if (e > worst || e != e) worst = e;
        }
    }
    free(col); free(logits); free(full); free(tok);
    decoder_free(&dc);
    cpu_destroy(&m);
    return worst;
}

static FlashConfig small_cfg(int scalenorm, int shift, int laplace, int s) {
    FlashConfig c = config_default();
    c.dim = 32; c.depth = 2; c.group_size = 8; c.query_key_dim = s;
    c.norm_type = scalenorm ? NORM_SCALENORM : NORM_LAYERNORM;
    c.shift_tokens = shift; c.attn_fn = laplace ? ATTN_LAPLACE : ATTN_RELU2;
    return c;
}

static void check_prompts(const FlashConfig *c, int nseq) {
    const int T = 45;   /* 5 full groups of 8 and a short one */
    const int prompts[] = {1, 5, 8, 13, 16, 40};
    for (size_t k = 0; k < sizeof prompts / sizeof prompts[0]; k++) {
        double e = worst_error(c, T, prompts[k], nseq);
        CHECK(e <= TOL, "prompt %d, %d sequence(s): worst logits rel error %.3e > %.0e", prompts[k], nseq, e, TOL);
    }
}

static void test_decode_scalenorm_shift_laplace(void) {
    FlashConfig c = small_cfg(1, 1, 1, 16);
    check_prompts(&c, 1);
}

static void test_decode_layernorm_relu2_partial_rotary(void) {
    FlashConfig c = small_cfg(0, 0, 0, 36);   /* s 36 > r 32: partial rotary */
    check_prompts(&c, 1);
}

/* the full forward's blocked causal attention (3-row blocks over groups of 8) */
static void test_decode_blocked_attention(void) {
    int saved = attn_block_rows;
    attn_block_rows = 3;
    FlashConfig c = small_cfg(1, 1, 1, 16);
    check_prompts(&c, 1);
    attn_block_rows = saved;
}

static void test_decode_several_sequences(void) {
    FlashConfig c = small_cfg(1, 1, 1, 16);
    check_prompts(&c, 3);
}

/* --linear-attn taylor: its state [KV | Z] (attn_taylor.c) folded group by group and handed
   over from the parallel forward; both norms, one and several sequences */
static void check_taylor(FlashConfig c, int nseq) {
    c.linear_attn = LINEAR_TAYLOR;
    const int T = 45, prompts[] = {1, 5, 8, 13, 16, 40};
    double worst = 0;
    for (size_t k = 0; k < sizeof prompts / sizeof prompts[0]; k++) {
        double e = worst_error(&c, T, prompts[k], nseq);
        CHECK(e <= TOL, "taylor, prompt %d, %d sequence(s): worst logits rel error %.3e > %.0e", prompts[k], nseq,
              e, TOL);
        if (e > worst || e != e) worst = e;
    }
    printf("  taylor (%s, %d sequence(s)): worst logits rel error %.2e\n",
           c.norm_type == NORM_SCALENORM ? "scalenorm" : "layernorm", nseq, worst);
}
static void test_decode_taylor(void) {
    check_taylor(small_cfg(1, 1, 1, 16), 1);
    check_taylor(small_cfg(1, 1, 1, 16), 3);
    check_taylor(small_cfg(0, 0, 0, 12), 1);
}

/* the check itself can fail: a decoder fed a different token must disagree */
static void test_decode_detects_difference(void) {
    FlashConfig c = small_cfg(1, 1, 1, 16);
    CpuModel m;
    char err[256];
    CHECK(!cpu_create(&m, &c, err, sizeof err) && !cpu_alloc_acts(&m, 1, 12, err, sizeof err), "%s", err);
    cpu_init_params(&m, 3);
    int tok[13] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 0};
    cpu_forward(&m, tok, 1, 12);
    Decoder dc;
    real logits[256];
    decoder_init(&dc, &m, 1, 11, err, sizeof err);
    decoder_prefill(&dc, tok, 11, logits);
    int other = 7;
    decoder_step(&dc, &other, logits);
    double e = row_rel_err(logits, m.acts.logits + 11 * 256, 256);
    CHECK(e > 1e-3, "a different last token should change the logits (error %.3e)", e);
    decoder_free(&dc);
    cpu_destroy(&m);
}

/* The CPU backend changes a one-sequence decoder's thread count while it runs
   (autograd/cpu/cpu_backend.c, DecodeThreads): its logits must not depend on the count. Wide
   enough that OpenBLAS splits the matrix-vector products across the threads. */
static void test_decode_threads_bit_identical(void) {
    FlashConfig c = config_default();
    c.dim = 256; c.depth = 2; c.group_size = 16; c.query_key_dim = 64;
    CpuModel m;
    char err[256];
    CHECK(!cpu_create(&m, &c, err, sizeof err) && !cpu_alloc_acts(&m, 1, 64, err, sizeof err), "%s", err);
    cpu_init_params(&m, 5);
    const int V = c.num_tokens, steps = 60;
    real *ref = malloc(sizeof(real) * (size_t)steps * V), *got = malloc(sizeof(real) * (size_t)steps * V);
    int prompt[5] = {72, 101, 108, 108, 111};
    for (int pass = 0; pass < 2; pass++) {
        real *out = pass ? got : ref;
        Decoder dc;
        blas_set_threads(4);   /* opened at the run's count, as the CPU backend does */
        CHECK(!decoder_init(&dc, &m, 1, 5, err, sizeof err), "%s", err);
        if (pass) blas_set_threads(1);
        decoder_prefill(&dc, prompt, 5, out);
        for (int t = 1; t < steps; t++) {
            if (pass) blas_set_threads(t % 3 == 0 ? 4 : t % 3 == 1 ? 1 : 2);   /* switching every byte */
            int tok = (t * 37) % 256;
            decoder_step(&dc, &tok, out + (size_t)t * V);
        }
        decoder_free(&dc);
    }
    blas_set_threads(1);
    size_t diff = 0;
    for (size_t k = 0; k < (size_t)steps * V; k++) diff += memcmp(&ref[k], &got[k], sizeof(real)) != 0;
    CHECK(diff == 0, "%zu of %d logits differ between 4 threads and a count changing every byte", diff, steps * V);
    free(ref); free(got);
    cpu_destroy(&m);
}

/* gau (FLASH-Quad): the decoder's logits at 0-based position t must be the last row of the
   full forward over the t + 1 tokens so far (scores divided by t + 1), as FLASH-pytorch's
   generate computes them; for prompts of 1, 5 and 13 tokens and one or three sequences. */
static double gau_worst_error(const FlashConfig *cfg, int T, int P, int nseq, double *vs_long) {
    CpuModel m;
    char err[256];
    if (cpu_create(&m, cfg, err, sizeof err) || cpu_alloc_acts(&m, 1, T, err, sizeof err)) {
        printf("  %s\n", err);
        return 1e9;
    }
    cpu_init_params(&m, 7);
    Rng rng;
    rng_seed(&rng, 13);
    for (int i = 0; i < m.table.n; i++) {   /* off the constants; q/k large enough to matter */
        const ParamInfo *p = &m.table.info[i];
        if (!p->trained) continue;
        if (strstr(p->name, "norm") || strstr(p->name, "beta") || strstr(p->name, "scale"))
            for (size_t k = 0; k < p->numel; k++) m.params[p->offset + k] += (real)(0.1 * rng_normal(&rng));
        if (strstr(p->name, "gamma") || strstr(p->name, "relative_attention_bias"))
            for (size_t k = 0; k < p->numel; k++) m.params[p->offset + k] *= 20;
    }
    const int V = cfg->num_tokens;
    int *tok = malloc(sizeof(int) * (T + 1));
    for (int t = 0; t <= T; t++) tok[t] = (int)rng_below(&rng, 256);
    /* the reference: row t of a forward over t + 1 tokens, for every t; and the rows of the
       one forward over all T tokens, which the decoder must NOT reproduce (other lengths) */
    real *ref = malloc(sizeof(real) * (size_t)T * V), *full = malloc(sizeof(real) * (size_t)T * V);
    int *pre = malloc(sizeof(int) * (T + 1));
    for (int t = 0; t < T; t++) {
        memcpy(pre, tok, sizeof(int) * (t + 1));
        pre[t + 1] = 0;
        cpu_forward(&m, pre, 1, t + 1);
        memcpy(ref + (size_t)t * V, m.acts.logits + (size_t)t * V, sizeof(real) * V);
    }
    cpu_forward(&m, tok, 1, T);
    memcpy(full, m.acts.logits, sizeof(real) * (size_t)T * V);

    Decoder dc;
    if (decoder_init(&dc, &m, nseq, P, err, sizeof err)) { printf("  %s\n", err); return 1e9; }
    real *logits = malloc(sizeof(real) * (size_t)nseq * V);
    double worst = decoder_prefill(&dc, tok, P, logits) ? 1e9 : 0;
    *vs_long = 0;
    int *col = malloc(sizeof(int) * nseq);
    for (int t = P - 1; t < T; t++) {
        if (t >= P) {
            for (int i = 0; i < nseq; i++) col[i] = tok[t];
            if (decoder_step(&dc, col, logits)) worst = 1e9;
        }
        for (int i = 0; i < nseq; i++) {
            double e = row_rel_err(logits + (size_t)i * V, ref + (size_t)t * V, V);
            if (e > worst || e != e) worst = e;
        }
        if (t < T - 1) {
            double e = row_rel_err(logits, full + (size_t)t * V, V);
            if (e > *vs_long) *vs_long = e;
        }
    }
    free(col); free(logits); free(full); free(ref); free(pre); free(tok);
    decoder_free(&dc);
    cpu_destroy(&m);
    return worst;
}

static void gau_check(int layernorm, int laplace, int nseq) {
    FlashConfig c = config_default();
    c.model = MODEL_GAU; c.shift_tokens = 0;
    c.dim = 32; c.depth = 2; c.query_key_dim = 16;
    c.norm_type = layernorm ? NORM_LAYERNORM : NORM_SCALENORM;
    c.attn_fn = laplace ? ATTN_LAPLACE : ATTN_RELU2;
    const int T = 70;   /* past the window's first 64 positions: it grows once */
    const int prompts[] = {1, 5, 13};
    double worst_all = 0, long_all = 0;
    for (size_t k = 0; k < sizeof prompts / sizeof prompts[0]; k++) {
        double vs_long = 0, e = gau_worst_error(&c, T, prompts[k], nseq, &vs_long);
        if (e > worst_all) worst_all = e;
        if (vs_long > long_all) long_all = vs_long;
        CHECK(e <= TOL, "gau prompt %d, %d sequence(s): worst logits rel error %.3e > %.0e", prompts[k], nseq, e, TOL);
        CHECK(vs_long > 1e-2, "gau prompt %d: the logits at a shorter length should differ from the "
              "T-long forward's rows (largest rel diff %.3e)", prompts[k], vs_long);
    }
    printf("  gau decoder (%s, %s, %d seq): worst logits rel error %.2e (against the T-long forward's rows: "
           "up to %.2e)\n", layernorm ? "layernorm" : "scalenorm", laplace ? "laplace" : "relu^2", nseq, worst_all,
           long_all);
}
static void test_decode_gau_scalenorm_relu2(void) { gau_check(0, 0, 1); }
static void test_decode_gau_layernorm_laplace_several(void) { gau_check(1, 1, 3); }

/* sample_topk_many (several threads past a few sequences) gives the bytes of sample_topk
   called for each sequence in turn, and leaves the random stream where they leave it: for
   counts around its thresholds (one thread, a team, more than one chunk of draws), logits
   with ties and a sharp and a flat temperature */
static void test_sample_many_matches_sequential(void) {
    const int V = 256, counts[] = {1, 7, 8, 9, 63, 64, 65, 200};
    float *logits = malloc(sizeof(float) * V * 200);
    int *a = malloc(sizeof(int) * 200), *b = malloc(sizeof(int) * 200);
    Rng g;
    rng_seed(&g, 11);
    for (int k = 0; k < V * 200; k++) logits[k] = (float)(rng_below(&g, 12)) * 0.5f;   /* many ties */
    int differ = 0;
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
        for (int tq = 0; tq < 2; tq++) {
            const int n = counts[c];
            const double temp = tq ? 0.3 : 3.0;
            Rng r1, r2;
            rng_seed(&r1, 5 + (uint64_t)c);
            rng_seed(&r2, 5 + (uint64_t)c);
            for (int q = 0; q < n; q++) a[q] = sample_topk(logits + (size_t)q * V, V, temp, &r1);
            sample_topk_many(logits, n, V, temp, &r2, b);
            CHECK(memcmp(a, b, sizeof(int) * n) == 0, "%d sequences: bytes differ", n);
            CHECK(rng_u64(&r1) == rng_u64(&r2), "%d sequences: the random stream moved differently", n);
            for (int q = 1; q < n; q++) differ += a[q] != a[0];
        }
    CHECK(differ > 0, "every sequence drew the same byte: the test would not see a mix-up");
    free(logits); free(a); free(b);
}

int main(void) {
    RUN(test_sample_many_matches_sequential);
    RUN(test_decode_gau_scalenorm_relu2);
    RUN(test_decode_gau_layernorm_laplace_several);
    RUN(test_decode_threads_bit_identical);
    RUN(test_decode_scalenorm_shift_laplace);
    RUN(test_decode_layernorm_relu2_partial_rotary);
    RUN(test_decode_several_sequences);
    RUN(test_decode_blocked_attention);
    RUN(test_decode_taylor);
    RUN(test_decode_detects_difference);
    TEST_MAIN_END();
}
