/* autograd/cpu/cpu_decode.c: the recurrent form of the causal FLASH layer (see cpu_decode.h). Each
 * step mirrors a room of flash_layer.c's parallel forward for one position t; the attention's
 * are the parts' own decoder steps (attn_quad.c, attn_linear.c). */
#include "cpu_decode.h"
#include "decode_gemm.h"
#include "ops.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int decoder_init(Decoder *dc, CpuModel *m, int nseq, int max_prompt, char *err, size_t errlen) {
    memset(dc, 0, sizeof *dc);
    const FlashConfig *c = &m->cfg;
    const size_t L = c->depth, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const size_t C = c->group_size, V = c->num_tokens, r = config_rotary(c), n = nseq;
    dc->m = m;
    dc->nseq = nseq;
    dc->max_prompt = max_prompt;
    dc->blocks = omp_get_max_threads();   /* fixed for the decoder's life: see gemv_split */
    int fail = 0;
    if (nseq < 1 || max_prompt < 1) {
        snprintf(err, errlen, "the decoder needs at least one sequence and a prompt of at least one token");
        return -1;
    }
    if (decoder_prefill_rows(m, max_prompt) > 0 && !cpu_fits(m, 1, decoder_prefill_rows(m, max_prompt))) {
        snprintf(err, errlen, "a prompt of %d tokens does not fit the activations (%d x %d)",
                 max_prompt, m->acts.B, m->acts.T);
        return -1;
    }
    if (c->model == MODEL_GAU) return gau_decoder_init(dc, err, errlen);
    dc->tok = malloc(sizeof(int) * (size_t)(max_prompt + 1 > nseq ? max_prompt + 1 : nseq));
    if (!dc->tok) fail = 1;
#define ALLOC(p, count) do { size_t k_ = (count); (p) = calloc(k_ ? k_ : 1, sizeof(real)); if (!(p)) fail = 1; } while (0)
    /* the linear part's state: plain S (s x e), or taylor's [KV | Z] (F x (e+1)) and its
       scratch (a group's phi(lin_k) for the fold, then phi(lin_q) and [num | den]) */
    const size_t F = config_taylor_width(c);
    dc->state = F ? F * (e + 1) : s * e;
    ALLOC(dc->kv, L * n * dc->state);
    ALLOC(dc->tay, F ? n * (C * F + F + e + 1) : 0);
    ALLOC(dc->gq, L * n * C * s);
    ALLOC(dc->gk, L * n * C * s);
    ALLOC(dc->gv, L * n * C * e);
    ALLOC(dc->prev, L * n * d);
    ALLOC(dc->h, n * d);
    ALLOC(dc->xn, n * d);
    ALLOC(dc->xs, n * d);
    ALLOC(dc->stat, n * 2);
    ALLOC(dc->hid_u, n * 2 * e);
    ALLOC(dc->hid, n * 2 * e);
    ALLOC(dc->z_u, n * s);
    ALLOC(dc->z, n * s);
    ALLOC(dc->qk4, 4 * n * s);
    ALLOC(dc->att, n * e);
    ALLOC(dc->gated, n * e);
    ALLOC(dc->tmp, n * d);
    ALLOC(dc->lnf, n * d);
    ALLOC(dc->logits, n * V);
    ALLOC(dc->pos_vec, d);
    ALLOC(dc->rot_cos, r / 2 + 1);
    ALLOC(dc->rot_sin, r / 2 + 1);
    ALLOC(dc->sim, n * C);
#undef ALLOC
    if (fail) {
        snprintf(err, errlen, "out of memory for the decoder state of %d sequences", nseq);
        decoder_free(dc);
        return -1;
    }
    return 0;
}

void decoder_free(Decoder *dc) {
    real **bufs[] = {&dc->kv, &dc->gq, &dc->gk, &dc->gv, &dc->prev, &dc->h, &dc->xn, &dc->xs,
                     &dc->stat, &dc->hid_u, &dc->hid, &dc->z_u, &dc->z, &dc->qk4, &dc->att,
                     &dc->gated, &dc->tmp, &dc->lnf, &dc->logits, &dc->pos_vec, &dc->rot_cos,
                     &dc->rot_sin, &dc->sim, &dc->tay};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) { free(*bufs[i]); *bufs[i] = NULL; }
    free(dc->tok);
    dc->tok = NULL;
    gau_decoder_free(dc);
}

static void decoder_reset(Decoder *dc) {
    const FlashConfig *c = &dc->m->cfg;
    const size_t L = c->depth, n = dc->nseq;
    memset(dc->kv, 0, sizeof(real) * L * n * dc->state);
    memset(dc->prev, 0, sizeof(real) * L * n * c->dim);
    dc->pos = 0;
}

/* y (M x out) = x W^T + b; a matrix-vector product for one row */
static void rows_linear(const Decoder *dc, real *y, const real *x, const real *W, const real *b, int M, int in,
                        int out) {
    if (M == 1) {
        memcpy(y, b, sizeof(real) * out);
        gemv_split(dc->blocks, 0, out, in, 1, W, in, x, 1, y);
    } else {
        linear_forward(y, x, W, b, M, in, out);
    }
}

/* Position t = group index j of sequence i, layer l: stores its keys and values in the
   group cache, writes att = quad_out + lin_out, and folds a finished group into S. */
static void attend(Decoder *dc, int l, int i, int j) {
    const CpuModel *m = dc->m;
    const FlashConfig *c = &m->cfg;
    const LayerParams *P = &m->p.layer[l];
    const int n = dc->nseq, e = config_hidden(c), s = c->query_key_dim, C = c->group_size;
    /* one sequence, one group: B = T = G = 1 are not read by the steps */
    const AttnShape as = {1, 1, C, 1, s, e, c->attn_fn, P->rel_bias, NULL, (real)1 / C, R_SQRT((real)s), 2};
    real *kv = dc->kv + (size_t)l * n * dc->state;
    real *gq = dc->gq + (size_t)l * n * C * s, *gk = dc->gk + (size_t)l * n * C * s;
    real *gv = dc->gv + (size_t)l * n * C * e;
    const real *qq = dc->qk4 + (size_t)i * s, *ql = dc->qk4 + ((size_t)n + i) * s;
    const real *kq = dc->qk4 + (2 * (size_t)n + i) * s, *kl = dc->qk4 + (3 * (size_t)n + i) * s;
    const real *v = dc->hid + (size_t)i * 2 * e;
    real *Gq = gq + (size_t)i * C * s, *Gk = gk + (size_t)i * C * s, *Gv = gv + (size_t)i * C * e;
    real *S = kv + (size_t)i * dc->state, *att = dc->att + (size_t)i * e;
    memcpy(Gq + (size_t)j * s, kq, sizeof(real) * s);
    memcpy(Gk + (size_t)j * s, kl, sizeof(real) * s);
    memcpy(Gv + (size_t)j * e, v, sizeof(real) * e);
    attn_quad_step(att, dc->sim + (size_t)i * C, qq, Gq, Gv, j, &as, dc->blocks);  /* quad_out */
    if (c->linear_attn == LINEAR_TAYLOR) {
        const size_t F = config_taylor_width(c);
        real *scratch = dc->tay + (size_t)i * (C * F + F + e + 1);
        attn_taylor_query(att, S, ql, scratch, &as, dc->blocks);                /* + lin_out */
        if (j == C - 1) attn_taylor_fold(S, Gk, Gv, scratch, &as, dc->blocks);  /* group done */
        return;
    }
    attn_linear_query(att, S, ql, &as, dc->blocks);                            /* + lin_out */
    if (j == C - 1) attn_linear_fold(S, Gk, Gv, &as, dc->blocks);              /* group done */
}

/* The layer's rooms (flash_layer.h) for one position of each sequence: dc->h in, dc->h out. */

/* (a) xs = shift(norm(h)); the token shift takes the first ceil(d/2) features from position
   t-1 (zeros at t = 0), kept in prev */
static void step_norm_shift(Decoder *dc, const LayerParams *P, real *prev) {
    const FlashConfig *c = &dc->m->cfg;
    const int n = dc->nseq, d = c->dim;
    if (c->norm_type == NORM_SCALENORM) scalenorm_forward(dc->xn, dc->stat, dc->h, P->norm_g, n, d);
    else layernorm_forward(dc->xn, dc->stat, dc->h, P->norm_w, P->norm_b, n, d);
    memcpy(dc->xs, dc->xn, sizeof(real) * n * d);
    if (c->shift_tokens) {
        const int half = (d + 1) / 2;
        for (int i = 0; i < n; i++) {
            memcpy(dc->xs + (size_t)i * d, prev + (size_t)i * d, sizeof(real) * half);
            memcpy(prev + (size_t)i * d, dc->xn + (size_t)i * d, sizeof(real) * d);
        }
    }
}

/* (b) v | gate = silu(to_hidden(xs)), z = silu(to_qk(xs)), qk4 = rot(z gamma + beta) */
static void step_project(Decoder *dc, const LayerParams *P) {
    const FlashConfig *c = &dc->m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim, r = config_rotary(c);
    rows_linear(dc, dc->hid_u, dc->xs, P->wh, P->bh, n, d, 2 * e);
    silu_forward(dc->hid, dc->hid_u, (size_t)n * 2 * e);
    rows_linear(dc, dc->z_u, dc->xs, P->wqk, P->bqk, n, d, s);
    silu_forward(dc->z, dc->z_u, (size_t)n * s);
    /* one "sequence" of length 1 per row, rotated at position t by the tables of decoder_step */
    offset_scale_rotary_forward(dc->qk4, dc->z, s, P->gamma, P->beta, dc->rot_cos, dc->rot_sin, n, 1, s, r);
}

/* (c) att = quad_out + lin_out, each sequence's attention on its own thread; one sequence:
   BLAS's threads instead (even an inactive parallel region makes OpenBLAS run
   single-threaded) */
static void step_attention(Decoder *dc, int l, int j) {
    const int n = dc->nseq;
    if (n == 1) {
        attend(dc, l, 0, j);
    } else {
        const int blas_saved = blas_serial_begin();
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) attend(dc, l, i, j);
        blas_serial_end(blas_saved);
    }
}

/* (d) h += (gate * att) Wo^T + bo */
static void step_output(Decoder *dc, const LayerParams *P) {
    const FlashConfig *c = &dc->m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c);
    gate_forward(dc->gated, dc->hid + e, 2 * e, dc->att, n, e);
    rows_linear(dc, dc->tmp, dc->gated, P->wo, P->bo, n, e, d);
    for (size_t k = 0; k < (size_t)n * d; k++) dc->h[k] += dc->tmp[k];
}

/* layer l at index j of the current group */
static void decode_layer(Decoder *dc, int l, int j) {
    const LayerParams *P = &dc->m->p.layer[l];
    step_norm_shift(dc, P, dc->prev + (size_t)l * dc->nseq * dc->m->cfg.dim);
    step_project(dc, P);
    step_attention(dc, l, j);
    step_output(dc, P);
}

int decoder_step(Decoder *dc, const int *tokens, real *logits) {
    CpuModel *m = dc->m;
    const FlashConfig *c = &m->cfg;
    if (c->model == MODEL_GAU) return gau_decoder_step(dc, tokens, logits);
    const int n = dc->nseq, d = c->dim;
    const int C = c->group_size, V = c->num_tokens, r = config_rotary(c), L = c->depth;
    const long t = dc->pos;
    const int j = (int)(t % C);                 /* index in the current group */

    /* position features at t (as pos_table_fill / rotary_table_fill for one row) */
    for (int i = 0; i < d / 2; i++) {
        double a = (double)t * (double)m->p.inv_freq[i];
        dc->pos_vec[i] = (real)sin(a);
        dc->pos_vec[d / 2 + i] = (real)cos(a);
    }
    for (int q = 0; q < r / 2; q++) {
        double a = (double)t * (double)m->p.layer[0].rot_freqs[q];
        dc->rot_cos[q] = (real)cos(a);
        dc->rot_sin[q] = (real)sin(a);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < d; k++)
            dc->h[(size_t)i * d + k] = m->p.tok_emb[(size_t)tokens[i] * d + k] + m->p.pos_scale[0] * dc->pos_vec[k];

    for (int l = 0; l < L; l++) decode_layer(dc, l, j);
    layernorm_forward(dc->lnf, dc->stat, dc->h, m->p.lnf_w, m->p.lnf_b, n, d);
    rows_linear(dc, logits, dc->lnf, m->p.w_logits, m->p.b_logits, n, d, V);
    dc->pos++;
    return 0;
}

int decoder_prefill_rows(const CpuModel *m, int P) {
    if (m->cfg.model == MODEL_GAU) return 0;   /* gau's forward has activations of its own */
    const int C = m->cfg.group_size;
    return (P / C) * C;
}

int decoder_prefill(Decoder *dc, const int *prompt, int P, real *logits) {
    CpuModel *m = dc->m;
    const FlashConfig *c = &m->cfg;
    const int n = dc->nseq, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const int C = c->group_size, V = c->num_tokens, L = c->depth;
    const int P0 = decoder_prefill_rows(m, P);
    if (P < 1 || P > dc->max_prompt) return -1;
    if (c->model == MODEL_GAU) return gau_decoder_prefill(dc, prompt, P, logits);
    decoder_reset(dc);
    if (P0 > 0) {
        /* the parallel forward over the whole groups, then its state copied out */
        int *tok = dc->tok;
        memcpy(tok, prompt, sizeof(int) * P0);
        tok[P0] = P > P0 ? prompt[P0] : 0;   /* a target for the last row; unused */
        cpu_forward(m, tok, 1, P0);
        const Acts *a = &m->acts;
        const int G = P0 / C;
        real *row = dc->tmp, *xn = dc->xn;
        for (int l = 0; l < L; l++) {
            const LayerParams *Pl = &m->p.layer[l];
            /* S after all G groups: the linear part's state after the last group */
            real *S = dc->kv + (size_t)l * n * dc->state;
            /* layer blocks are laid out for this forward's shape: 1 x G groups */
            const real *kv_last = a->kv + ((size_t)l * G + (G - 1)) * s * e;
            const real *lin_k = a->qk4 + ((size_t)l * 4 + 3) * P0 * s + (size_t)(G - 1) * C * s;
            const int H = 2 * e + s;   /* the forward's rows: v | gate | z */
            const real *v = a->hid + (size_t)l * P0 * H + (size_t)(G - 1) * C * H;
            const AttnShape as = {1, P0, C, G, s, e, c->attn_fn, Pl->rel_bias, NULL, (real)1 / C, R_SQRT((real)s), 2};
            if (c->linear_attn == LINEAR_TAYLOR) {   /* its stored [KV | Z] and phi(lin_k) */
                const size_t F = config_taylor_width(c);
                const real *st_last = a->tay_st + ((size_t)l * G + (G - 1)) * F * (e + 1);
                const real *fk_last = a->tay_f + ((size_t)l * 2 + 1) * P0 * F + (size_t)(G - 1) * C * F;
                attn_taylor_state_after(S, st_last, fk_last, v, H, &as);
            } else {
                attn_linear_state_after(S, kv_last, lin_k, v, H, &as);
            }
            /* previous normalized row: the norm of the layer's input at P0 - 1 */
            memcpy(row, a->res + ((size_t)l * P0 + P0 - 1) * d, sizeof(real) * d);
            if (c->norm_type == NORM_SCALENORM) scalenorm_forward(xn, dc->stat, row, Pl->norm_g, 1, d);
            else layernorm_forward(xn, dc->stat, row, Pl->norm_w, Pl->norm_b, 1, d);
            for (int i = 0; i < n; i++) {
                memcpy(dc->kv + ((size_t)l * n + i) * dc->state, S, sizeof(real) * dc->state);
                memcpy(dc->prev + ((size_t)l * n + i) * d, xn, sizeof(real) * d);
            }
        }
        if (P0 == P)
            for (int i = 0; i < n; i++)
                memcpy(logits + (size_t)i * V, a->logits + (size_t)(P0 - 1) * V, sizeof(real) * V);
        dc->pos = P0;
    }
    int *col = dc->tok;
    for (int t = P0; t < P; t++) {
        for (int i = 0; i < n; i++) col[i] = prompt[t];
        if (decoder_step(dc, col, logits)) return -1;
    }
    return 0;
}
