/* autograd/cpu/cpu_model.c: the FLASHTransformer on the CPU: its parameters and activations, and
 * the model's forward and backward: embeddings, the layer loop (each layer is flash_layer.c's,
 * or gau_layer.c's for --model gau),
 * final norm, logits and loss (docs/model.md gives the computation). */
#include "cpu_model.h"
#include "flash_layer.h"
#include "gau_layer.h"
#include "ops.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const PROF_NAMES[PROF_PHASES] = {
    "embedding", "norm", "token shift", "to_hidden+to_qk", "silu", "offset-scale+rotary",
    "attention", "gate", "to_out+residual", "final norm+logits+loss"};

void prof_mark(const Prof *pf, int k) {
    if (!pf->acc) return;
    double t = omp_get_wtime();
    if (k >= 0) pf->acc[k] += t - *pf->t;
    *pf->t = t;
}

int cpu_create(CpuModel *m, const FlashConfig *cfg, char *err, size_t errlen) {
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
        cpu_destroy(m);
        return -1;
    }
    return 0;
}

static void acts_free(Acts *a) {
    free(a->base);
    memset(a, 0, sizeof *a);
}

void cpu_destroy(CpuModel *m) {
    acts_free(&m->acts);
    params_unpoint(&m->p);
    params_unpoint(&m->g);
    free(m->params);
    free(m->grads);
    params_table_free(&m->table);
    memset(m, 0, sizeof *m);
}

int cpu_init_params(CpuModel *m, uint64_t seed) {
    m->tables_stale = 1;
    return params_init(&m->table, &m->cfg, m->params, seed);
}

void cpu_zero_grads(CpuModel *m) { memset(m->grads, 0, m->table.total * sizeof(real)); }

/* The size table: each buffer's element count for a capacity of B x T at this many threads,
   in ACT_BUFFERS order. */
enum {
#define ACT_INDEX(name, count) ACT_##name,
    ACT_BUFFERS(ACT_INDEX)
#undef ACT_INDEX
    ACT_COUNT
};
#define ACT_ALIGN 16   /* elements: each buffer starts on a 64-byte boundary */

static void acts_sizes(const FlashConfig *c, int B, int T, int threads, size_t *count) {
    const size_t L = c->depth, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const size_t V = c->num_tokens, r = config_rotary(c);
    /* gau: one group of the whole sequence (C = T), q and k only, no linear part */
    const int gau = c->model == MODEL_GAU;
    const size_t C = gau ? (size_t)T : (size_t)c->group_size, Q = gau ? 2 : 4, LIN = !gau;
    const size_t G = ((size_t)T + C - 1) / C, N = (size_t)B * T, BG = (size_t)B * G;
    const size_t H = 2 * e + s;
    const size_t TF = config_taylor_width(c), TE = TF ? e + 1 : 0;   /* taylor's, else 0 */
    /* the weight gradients' partial sums at this thread count (autograd/cpu/gemm.c, split K):
       room for the largest weight */
    size_t SK = 0;
    if (gemm_way_for(threads, 1) == GEMM_SPLITK) {
        size_t biggest = H * d;
        if (d * e > biggest) biggest = d * e;
        if (V * d > biggest) biggest = V * d;
        SK = (size_t)gemm_splitk_chunks((int)N, threads) * biggest;
    }
    int i = 0;
#define ACT_COUNT_OF(name, n) count[i++] = (n);
    ACT_BUFFERS(ACT_COUNT_OF)
#undef ACT_COUNT_OF
}

static size_t acts_total(const size_t *count) {
    size_t total = 0;
    for (int i = 0; i < ACT_COUNT; i++) total += (count[i] + ACT_ALIGN - 1) / ACT_ALIGN * ACT_ALIGN;
    return total;
}

size_t cpu_acts_bytes(const FlashConfig *cfg, int B, int T, int threads) {
    size_t count[ACT_COUNT];
    acts_sizes(cfg, B, T, threads, count);
    return acts_total(count) * sizeof(real);
}

int cpu_alloc_acts(CpuModel *m, int B, int T, char *err, size_t errlen) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    if (m->acts_ready && a->B == B && a->T == T) return 0;
    acts_free(a);
    m->acts_ready = 0;
    size_t count[ACT_COUNT];
    acts_sizes(c, B, T, omp_get_max_threads(), count);
    const size_t total = acts_total(count);
    a->base = calloc(total ? total : 1, sizeof(real));
    if (!a->base) {
        snprintf(err, errlen, "out of memory for activations of batch %d x %d (%.1f GiB)", B, T,
                 total * sizeof(real) / 1073741824.0);
        return -1;
    }
    a->bytes = total * sizeof(real);
    a->B = B; a->T = T; a->G = c->model == MODEL_GAU ? 1 : (T + c->group_size - 1) / c->group_size;
    real *p = a->base;
#define ACT_POINT(name, n) a->name = p; p += (count[ACT_##name] + ACT_ALIGN - 1) / ACT_ALIGN * ACT_ALIGN;
    ACT_BUFFERS(ACT_POINT)
#undef ACT_POINT
    a->splitk_floats = count[ACT_splitk];
    m->acts_ready = 1;
    m->tables_stale = 1;
    return 0;
}

int cpu_fits(const CpuModel *m, int B, int T) {
    const Acts *a = &m->acts;
    const int C = m->cfg.group_size, G = m->cfg.model == MODEL_GAU ? 1 : (T + C - 1) / C;
    /* gau: B x T x T scores fit whenever B x T rows and T do */
    return m->acts_ready && B >= 1 && T >= 1 && T <= a->T && (long)B * T <= (long)a->B * a->T &&
           (long)B * G <= (long)a->B * a->G;
}

/* The position tables (sinusoids, rotary cos/sin) follow from the untrained buffers
   inv_freq and freqs and the position only: filled once for the activations' capacity
   and refilled only after something that may change those buffers (init, import, a new
   allocation), not on every forward. */
static void fill_tables(CpuModel *m) {
    const FlashConfig *c = &m->cfg;
    pos_table_fill(m->acts.pos_table, m->p.inv_freq, m->acts.T, c->dim);
    rotary_table_fill(m->acts.rot_cos, m->acts.rot_sin, m->p.layer[0].rot_freqs, m->acts.T,
                      config_rotary(c));
    m->tables_stale = 0;
}

double cpu_forward(CpuModel *m, const int *tokens, int B, int T) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    const int d = c->dim, V = c->num_tokens, L = c->depth;
    const int N = B * T, ts = T + 1;
    if (!cpu_fits(m, B, T)) return NAN;   /* the caller checks the capacity first */
    if (m->tables_stale) fill_tables(m);
    m->cur_B = B; m->cur_T = T;
    const LayerShape ls = layer_shape(c, B, T);
    const Prof pf = {m->prof, &m->prof_t};

    prof_mark(&pf, -1);
    embed_forward(a->res, tokens, ts, m->p.tok_emb, m->p.pos_scale, a->pos_table, B, T, d);
    prof_mark(&pf, PROF_EMBED);
    for (int l = 0; l < L; l++) {
        if (c->model == MODEL_GAU) gau_layer_forward(&ls, &m->p.layer[l], a, l, &pf);
        else flash_layer_forward(&ls, &m->p.layer[l], a, l, &pf);
    }
    const real *hL = a->res + (size_t)L * N * d;
    layernorm_forward(a->lnf_out, a->lnf_stat, hL, m->p.lnf_w, m->p.lnf_b, N, d);
    linear_forward(a->logits, a->lnf_out, m->p.w_logits, m->p.b_logits, N, d, V);
    double loss = crossentropy_forward(a->losses, a->logits, tokens + 1, ts, B, T, V);
    prof_mark(&pf, PROF_HEAD);
    return loss;
}

void cpu_backward(CpuModel *m, const int *tokens, real dloss) {
    Acts *a = &m->acts;
    const FlashConfig *c = &m->cfg;
    const int B = m->cur_B, T = m->cur_T, ts = T + 1;
    const int d = c->dim, V = c->num_tokens, L = c->depth;
    const int N = B * T;
    const LayerShape ls = layer_shape(c, B, T);
    const Prof pf = {m->prof, &m->prof_t};

    const int K = PROF_PHASES;   /* backward phases follow the forward's */
    const GemmScratch ws = {a->splitk, a->splitk_floats};
    prof_mark(&pf, -1);
    crossentropy_backward(a->d_logits, a->logits, tokens + 1, ts, B, T, V, dloss);
    linear_backward(a->d_lnf, 0, m->g.w_logits, m->g.b_logits, a->d_logits, a->lnf_out,
                    m->p.w_logits, N, d, V, &ws);
    memset(a->d_res, 0, sizeof(real) * (size_t)N * d);
    layernorm_backward(a->d_res, m->g.lnf_w, m->g.lnf_b, a->d_lnf, a->res + (size_t)L * N * d,
                       a->lnf_stat, m->p.lnf_w, N, d);
    prof_mark(&pf, K + PROF_HEAD);

    /* d_res holds dL/d res[l+1]; each layer turns it into dL/d res[l] in place: the
       residual passes it through unchanged and the norm's input gradient is added. */
    for (int l = L - 1; l >= 0; l--) {
        if (c->model == MODEL_GAU) gau_layer_backward(&ls, &m->p.layer[l], &m->g.layer[l], a, l, &ws, &pf);
        else flash_layer_backward(&ls, &m->p.layer[l], &m->g.layer[l], a, l, &ws, &pf);
    }
    embed_backward(m->g.tok_emb, m->g.pos_scale, a->d_res, tokens, ts, a->pos_table, B, T, d);
    prof_mark(&pf, K + PROF_EMBED);
}
