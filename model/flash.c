/* model/flash.c: FLASHTransformer forward and backward built from the ops of ops.h. */
#include "flash.h"
#include "ops.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const PROF_NAMES[PROF_PHASES] = {
    "embedding", "norm", "token shift", "to_hidden+to_qk", "silu", "offset-scale+rotary",
    "attention", "gate", "to_out+residual", "final norm+logits+loss"};

/* Adds the time since the previous mark to phase k (no-op unless profiling). */
static void mark(Model *m, int k) {
    if (!m->prof) return;
    double t = omp_get_wtime();
    if (k >= 0) m->prof[k] += t - m->prof_t;
    m->prof_t = t;
}

int model_create(Model *m, const FlashConfig *cfg, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (config_validate(cfg, err, errlen)) return -1;
    m->cfg = *cfg;
    if (params_table_build(&m->table, cfg)) { snprintf(err, errlen, "out of memory"); return -1; }
    m->params = calloc(m->table.total, sizeof(real));
    m->grads = calloc(m->table.total, sizeof(real));
    if (!m->params || !m->grads ||
        params_point(&m->p, &m->table, cfg, m->params) ||
        params_point(&m->g, &m->table, cfg, m->grads)) {
        snprintf(err, errlen, "out of memory for %zu parameters", m->table.total);
        model_destroy(m);
        return -1;
    }
    return 0;
}

static void acts_free(Acts *a) {
    real **bufs[] = {&a->res, &a->nstat, &a->xs, &a->hid_u, &a->hid, &a->qk4,
                     &a->sim, &a->attn, &a->kv, &a->att, &a->gated, &a->lnf_out, &a->lnf_stat,
                     &a->logits, &a->losses, &a->pos_table, &a->rot_cos, &a->rot_sin,
                     &a->d_res, &a->d_xs, &a->d_hid, &a->d_qk4, &a->d_att, &a->d_gated,
                     &a->d_kv, &a->d_rel_partial, &a->dsim, &a->d_logits, &a->d_lnf,
                     &a->bias_dist};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) { free(*bufs[i]); *bufs[i] = NULL; }
    a->bytes = 0;
}

void model_destroy(Model *m) {
    acts_free(&m->acts);
    params_unpoint(&m->p);
    params_unpoint(&m->g);
    free(m->params);
    free(m->grads);
    params_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

void model_init_params(Model *m, uint64_t seed) {
    params_init(&m->table, &m->cfg, m->params, seed);
    m->tables_stale = 1;
}

void model_zero_grads(Model *m) { memset(m->grads, 0, m->table.total * sizeof(real)); }

int model_alloc_acts(Model *m, int B, int T, char *err, size_t errlen) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    if (m->acts_ready && a->B == B && a->T == T) return 0;
    acts_free(a);
    m->acts_ready = 0;
    const size_t L = c->depth, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const size_t C = c->group_size, V = c->num_tokens, r = config_rotary(c);
    const size_t G = ((size_t)T + C - 1) / C, N = (size_t)B * T, BG = (size_t)B * G;
    a->B = B; a->T = T; a->G = (int)G;
    int fail = 0;
#define ALLOC(ptr, count)                                                     \
    do {                                                                      \
        size_t n_ = (count);                                                  \
        (ptr) = calloc(n_ ? n_ : 1, sizeof(real));                            \
        a->bytes += n_ * sizeof(real);                                        \
        if (!(ptr)) fail = 1;                                                 \
    } while (0)
    ALLOC(a->res, (L + 1) * N * d);
    ALLOC(a->nstat, L * N * 2);
    ALLOC(a->xs, L * N * d);
    ALLOC(a->hid_u, L * N * (2 * e + s));
    ALLOC(a->hid, L * N * (2 * e + s));
    ALLOC(a->qk4, L * 4 * N * s);
    ALLOC(a->sim, L * BG * C * C);
    ALLOC(a->attn, L * BG * C * C);
    ALLOC(a->kv, L * BG * s * e);
    ALLOC(a->att, L * N * e);
    ALLOC(a->gated, L * N * e);
    ALLOC(a->lnf_out, N * d);
    ALLOC(a->lnf_stat, N * 2);
    ALLOC(a->logits, N * V);
    ALLOC(a->losses, N);
    ALLOC(a->pos_table, (size_t)T * d);
    ALLOC(a->rot_cos, (size_t)T * (r / 2));
    ALLOC(a->rot_sin, (size_t)T * (r / 2));
    ALLOC(a->d_res, N * d);
    ALLOC(a->d_xs, N * d);
    ALLOC(a->d_hid, N * (2 * e + s));
    ALLOC(a->d_qk4, 4 * N * s);
    ALLOC(a->d_att, N * e);
    ALLOC(a->d_gated, N * e);
    ALLOC(a->d_kv, BG * s * e);
    ALLOC(a->d_rel_partial, BG * C * C);   /* one C-vector per row block: at most C blocks */
    ALLOC(a->bias_dist, C);
    ALLOC(a->dsim, BG * C * C);
    ALLOC(a->d_logits, N * V);
    ALLOC(a->d_lnf, N * d);
#undef ALLOC
    /* the weight gradients' partial sums at this thread count (model/ops.c, SPLITK) */
    const int threads = omp_get_max_threads();
    if (!fail && gemm_way_for(threads, 1) == GEMM_SPLITK) {
        size_t biggest = (2 * e + s) * d;
        if (d * e > biggest) biggest = d * e;
        if (V * d > biggest) biggest = V * d;
        const size_t floats = (size_t)gemm_splitk_chunks((int)N, threads) * biggest;
        if (gemm_reserve(floats)) fail = 1;
        else a->bytes += floats * sizeof(real);
    }
    if (fail) {
        snprintf(err, errlen, "out of memory for activations of batch %d x %d (%.1f GiB)", B, T,
                 a->bytes / 1073741824.0);
        acts_free(a);
        return -1;
    }
    m->acts_ready = 1;
    m->tables_stale = 1;
    return 0;
}

/* The position tables (sinusoids, rotary cos/sin) follow from the untrained buffers
   inv_freq and freqs and the position only: filled once for the activations' capacity
   and refilled only after something that may change those buffers (init, import, a new
   allocation), not on every forward. */
static void fill_tables(Model *m) {
    const FlashConfig *c = &m->cfg;
    pos_table_fill(m->acts.pos_table, m->p.inv_freq, m->acts.T, c->dim);
    rotary_table_fill(m->acts.rot_cos, m->acts.rot_sin, m->p.layer[0].rot_freqs, m->acts.T,
                      config_rotary(c));
    m->tables_stale = 0;
}

double model_forward(Model *m, const int *tokens, int B, int T) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    const int d = c->dim, e = config_hidden(c), s = c->query_key_dim, V = c->num_tokens;
    const int C = c->group_size, r = config_rotary(c), L = c->depth;
    const int G = (T + C - 1) / C, N = B * T, ts = T + 1, H = 2 * e + s;
    if (!m->acts_ready || T > a->T || N > a->B * a->T || B * G > a->B * a->G) {
        fprintf(stderr, "internal error: forward of %d x %d exceeds the activations' %d x %d\n",
                B, T, a->B, a->T);
        abort();
    }
    if (m->tables_stale) fill_tables(m);
    m->cur_B = B; m->cur_T = T; m->cur_tokens = tokens;

    mark(m, -1);
    embed_forward(a->res, tokens, ts, m->p.tok_emb, m->p.pos_scale, a->pos_table, B, T, d);
    mark(m, PROF_EMBED);
    for (int l = 0; l < L; l++) {
        const LayerParams *P = &m->p.layer[l];
        const real *h = a->res + (size_t)l * N * d;
        real *h_out = a->res + (size_t)(l + 1) * N * d;
        real *xs = a->xs + (size_t)l * N * d, *st = a->nstat + (size_t)l * N * 2;
        /* one row per position: v (e) | gate (e) | z (s), H = 2e + s wide */
        real *hid_u = a->hid_u + (size_t)l * N * H, *hid = a->hid + (size_t)l * N * H;
        real *qk4 = a->qk4 + (size_t)l * 4 * N * s;
        real *att = a->att + (size_t)l * N * e, *gated = a->gated + (size_t)l * N * e;
        const size_t BGCC = (size_t)B * G * C * C;

        if (c->norm_type == NORM_SCALENORM) scalenorm_forward(xs, st, h, P->norm_g, N, d);
        else layernorm_forward(xs, st, h, P->norm_w, P->norm_b, N, d);
        mark(m, PROF_NORM);
        if (c->shift_tokens) token_shift_forward(xs, B, T, d);
        mark(m, PROF_SHIFT);
        /* to_hidden and to_qk in one GEMM: [W_hidden; W_qk] is one (2e + s) x d block */
        /* (the forward's silu is done tile by tile inside this product: its time is
           counted here, and the profile's silu line is the backward's) */
        linear_silu_forward(hid_u, hid, xs, P->wh, P->bh, N, d, H);
        mark(m, PROF_TO_HIDDEN);
        offset_scale_rotary_forward(qk4, hid + 2 * e, H, P->gamma, P->beta, a->rot_cos, a->rot_sin,
                                    B, T, s, r);
        mark(m, PROF_ROTARY);
        AttnShape as = {B, T, C, G, s, e, c->laplace_attn_fn, P->rel_bias, a->bias_dist};
        attention_forward(att, a->sim + l * BGCC, a->attn + l * BGCC,
                          a->kv + (size_t)l * B * G * s * e, qk4, hid, H, &as);
        mark(m, PROF_ATTENTION);
        gate_forward(gated, hid + e, H, att, N, e);
        mark(m, PROF_GATE);
        /* h_out = h + gated Wo^T + bo */
        linear_forward_add(h_out, gated, P->wo, P->bo, h, N, e, d);
        mark(m, PROF_TO_OUT);
    }
    const real *hL = a->res + (size_t)L * N * d;
    layernorm_forward(a->lnf_out, a->lnf_stat, hL, m->p.lnf_w, m->p.lnf_b, N, d);
    linear_forward(a->logits, a->lnf_out, m->p.w_logits, m->p.b_logits, N, d, V);
    double loss = crossentropy_forward(a->losses, a->logits, tokens + 1, ts, B, T, V);
    mark(m, PROF_HEAD);
    return loss;
}

void model_backward(Model *m, real dloss) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    const int B = m->cur_B, T = m->cur_T, ts = T + 1;
    const int *tokens = m->cur_tokens;
    const int d = c->dim, e = config_hidden(c), s = c->query_key_dim, V = c->num_tokens;
    const int C = c->group_size, r = config_rotary(c), L = c->depth;
    const int G = (T + C - 1) / C, N = B * T, H = 2 * e + s;
    const size_t BGCC = (size_t)B * G * C * C;

    const int K = PROF_PHASES;   /* backward phases follow the forward's */
    mark(m, -1);
    crossentropy_backward(a->d_logits, a->logits, tokens + 1, ts, B, T, V, dloss);
    linear_backward(a->d_lnf, 0, m->g.w_logits, m->g.b_logits, a->d_logits, a->lnf_out,
                    m->p.w_logits, N, d, V);
    memset(a->d_res, 0, sizeof(real) * (size_t)N * d);
    layernorm_backward(a->d_res, m->g.lnf_w, m->g.lnf_b, a->d_lnf, a->res + (size_t)L * N * d,
                       a->lnf_stat, m->p.lnf_w, N, d);
    mark(m, K + PROF_HEAD);

    /* d_res holds dL/d res[l+1]; each layer turns it into dL/d res[l] in place: the
       residual passes it through unchanged and the norm's input gradient is added. */
    for (int l = L - 1; l >= 0; l--) {
        const LayerParams *P = &m->p.layer[l];
        LayerParams *D = &m->g.layer[l];
        const real *h = a->res + (size_t)l * N * d;
        const real *xs = a->xs + (size_t)l * N * d, *st = a->nstat + (size_t)l * N * 2;
        real *hid_u = a->hid_u + (size_t)l * N * H, *hid = a->hid + (size_t)l * N * H;
        real *qk4 = a->qk4 + (size_t)l * 4 * N * s;
        real *att = a->att + (size_t)l * N * e, *gated = a->gated + (size_t)l * N * e;

        linear_backward(a->d_gated, 0, D->wo, D->bo, a->d_res, gated, P->wo, N, e, d);
        mark(m, K + PROF_TO_OUT);
        gate_backward(a->d_hid + e, H, a->d_att, a->d_gated, hid + e, att, N, e);
        mark(m, K + PROF_GATE);
        AttnShape as = {B, T, C, G, s, e, c->laplace_attn_fn, P->rel_bias, a->bias_dist};
        attention_backward(a->d_hid, H, a->d_qk4, D->rel_bias, a->d_att, a->sim + l * BGCC,
                           a->attn + l * BGCC, a->kv + (size_t)l * B * G * s * e, qk4, hid,
                           a->d_kv, a->d_rel_partial, a->dsim, &as);
        mark(m, K + PROF_ATTENTION);
        offset_scale_rotary_backward(a->d_hid + 2 * e, D->gamma, D->beta, a->d_qk4, hid + 2 * e, H,
                                     P->gamma, a->rot_cos, a->rot_sin, B, T, s, r);
        mark(m, K + PROF_ROTARY);
        silu_backward(a->d_hid, a->d_hid, hid_u, (size_t)N * H);
        mark(m, K + PROF_SILU);
        /* to_hidden and to_qk read the same xs: one GEMM gives the sum of their input
           gradients, one the gradient of the fused weight block */
        linear_backward(a->d_xs, 0, D->wh, D->bh, a->d_hid, xs, P->wh, N, d, H);
        mark(m, K + PROF_TO_HIDDEN);
        if (c->shift_tokens) token_shift_backward(a->d_xs, B, T, d);
        mark(m, K + PROF_SHIFT);
        if (c->norm_type == NORM_SCALENORM)
            scalenorm_backward(a->d_res, D->norm_g, a->d_xs, h, st, P->norm_g, N, d);
        else
            layernorm_backward(a->d_res, D->norm_w, D->norm_b, a->d_xs, h, st, P->norm_w, N, d);
        mark(m, K + PROF_NORM);
    }
    embed_backward(m->g.tok_emb, m->g.pos_scale, a->d_res, tokens, ts, a->pos_table, B, T, d);
    mark(m, K + PROF_EMBED);
}
