/* autograd/cuda/cuda_model.cu: the CUDA backend behind model/model.h.
 *
 * The model's whole state lives on the GPU: parameters, gradients and both Adam moments in
 * one buffer (the parameter table's layout, four times), the activations in one arena cut
 * by a size table at model_open. A training step sends the step's tokens (and, for the
 * embedding's backward, the rows of each token) in one copy, runs every micro-batch's
 * forward and backward, and brings back the loss; the update brings back the gradient
 * norm. Nothing is allocated after model_open.
 *
 * Products go through cuBLAS (row-major calls mapped onto its column-major API); the rest
 * are the kernels of kernels_*.cu (launchers in cuda_ops.h), called by the layer's rooms
 * (layer.h). Sequences run padded to whole groups (see cuda_ops.h).
 * Precision: fp32 (no TF32) or bf16 (bf16 operands for every product, fp32 accumulation,
 * fp32 master weights, moments, losses and norms): in bf16 each producer of a product's
 * operand also writes a bf16 twin of it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_model.h"
#include "layer.h"

/* The registry's supports slot: the layers and attention forms the CUDA rooms compute */
extern "C" int cuda_supports(const FlashConfig *c, char *why, size_t whylen) {
    (void)c; (void)why; (void)whylen;
    return 1;   /* FLASH (plain or taylor) and FLASH-Quad */
}

extern "C" int cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

/* ---- products: row-major C = alpha op(A) op(B) + beta C, batched with strides --------- */
/* cuBLAS is column-major: a row-major matrix is its transpose there, so C^T = op(B)^T op(A)^T
   is the same call with the operands swapped. In bf16 the twins Ah, Bh are the operands. */
void cuda_gemm_typed(CudaModel *cm, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     const bf16 *Ah, int lda, long long sA, const float *B, const bf16 *Bh, int ldb,
                     long long sB, float beta, void *C, cudaDataType_t ctype, int ldc, long long sC,
                     int batch) {
    if (M <= 0 || N <= 0) return;
    const cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const void *a = A, *b = B;
    cudaDataType_t type = CUDA_R_32F;
    if (cm->use_bf16 && Ah && Bh) { a = Ah; b = Bh; type = CUDA_R_16BF; }
    cublasGemmStridedBatchedEx(cm->blas, opB, opA, N, M, K, &alpha, b, type, ldb, sB, a, type, lda, sA,
                               &beta, C, ctype, ldc, sC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}
void cuda_gemm(CudaModel *cm, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               const bf16 *Ah, int lda, long long sA, const float *B, const bf16 *Bh, int ldb,
               long long sB, float beta, float *C, int ldc, long long sC, int batch) {
    cuda_gemm_typed(cm, ta, tb, M, N, K, alpha, A, Ah, lda, sA, B, Bh, ldb, sB, beta, C, CUDA_R_32F, ldc,
                    sC, batch);
}

/* ---- profiling: events between phases -------------------------------------------------- */
/* the phases of cuda_model.h's enum, forward then backward */
static const char *const P_NAMES[2 * P_PHASES] = {
    "embedding", "norm+shift", "to_hidden+to_qk+silu", "offset-scale+rotary", "attention",
    "gate", "to_out+residual", "final norm+logits+loss", "optimizer",
    "backward embedding", "backward norm+shift", "backward to_hidden+to_qk+silu",
    "backward offset-scale+rotary", "backward attention", "backward gate",
    "backward to_out+residual", "backward final norm+logits+loss", "backward optimizer"};
/* The profile times each phase by events; a run with profiling off records none. */
static void mark(CudaModel *cm, Marks *mk, int phase) {
    if (!cm->prof || mk->n >= 63) return;
    cudaEventRecord(cm->ev[mk->n], cm->st);
    mk->phase[mk->n] = phase;
    mk->n++;
}
void cuda_marks_collect(CudaModel *cm, Marks *mk) {
    if (!cm->prof || mk->n < 2) { mk->n = 0; return; }
    cudaEventSynchronize(cm->ev[mk->n - 1]);
    for (int i = 1; i < mk->n; i++) {
        float ms = 0;
        cudaEventElapsedTime(&ms, cm->ev[i - 1], cm->ev[i]);
        if (mk->phase[i] >= 0) cm->prof_s[mk->phase[i]] += ms * 1e-3;
    }
    mk->n = 0;
}
/* Events are few (64): profile one layer pass at a time by collecting often. */
void cuda_mark(CudaModel *cm, Marks *mk, int phase) {
    mark(cm, mk, phase);
    if (mk->n >= 60) { cuda_marks_collect(cm, mk); mark(cm, mk, -1); }
}

/* the micro-batch's sizes, as the layers' rooms read them (layer.h) */
CudaShape cuda_shape(const CudaModel *cm, const FlashConfig *c, int B, int T, int Tp, int keep_state) {
    CudaShape sh;
    sh.c = c;
    sh.B = B; sh.T = T; sh.Tp = Tp;
    sh.d = c->dim; sh.e = config_hidden(c); sh.s = c->query_key_dim;
    sh.C = c->group_size; sh.r = config_rotary(c); sh.L = c->depth; sh.H = 2 * sh.e + sh.s;
    sh.N = B * Tp; sh.G = Tp / sh.C; sh.BG = B * sh.G;
    sh.Nm = cm->Nmax;
    sh.Ns = (size_t)sh.N * sh.s;
    sh.inv_C = 1.0f / sh.C;
    sh.keep_state = keep_state;
    return sh;
}

/* ---- the forward over B sequences padded to Tp; tokens on the device -------------------- */
void cuda_forward_pass(Model *m, const int *d_tok, int tstride, int B, int T, int Tp,
                         double loss_weight, double *loss_acc, int keep_state) {
    CudaModel *cm = CM(m);
    const FlashConfig *c = &m->cfg;
    const int d = c->dim, V = c->num_tokens, L = c->depth;
    const int N = B * Tp;
    const size_t Nm = cm->Nmax;
    const CudaShape sh = cuda_shape(cm, c, B, T, Tp, keep_state);
    cudaStream_t st = cm->st;
    Marks marks = {0, {0}}, *mk = &marks;
    MARK(-1);
    float *res = ACT(cm, A_RES);
    embed_forward_cuda(res, d_tok, tstride, cm->p.tok_emb, cm->p.pos_scale, ACT(cm, A_POS), B, T, Tp,
                       d, st);
    MARK(P_EMBED);
    for (int l = 0; l < L; l++) {
        if (c->model == MODEL_GAU) gau_layer_forward(cm, &sh, l, mk);
        else flash_layer_forward(cm, &sh, l, mk);
    }
    const float *hL = res + (size_t)L * Nm * d;
    float *lnf_out = ACT(cm, A_LNF_OUT), *logits = ACT(cm, A_LOGITS);
    bf16 *lnf_h = TWIN(cm, H_LNF_OUT);
    const bf16 *Wl_h = param_twin(cm, cm->p.w_logits);
    layernorm_forward_cuda(lnf_out, ACT(cm, A_LNF_STAT), hL, cm->p.lnf_w, cm->p.lnf_b, N, d, 0,
                           TW(lnf_h), NULL, NULL, st);
    bias_add_cuda(logits, cm->p.b_logits, NULL, N, V, st);
    cuda_gemm(cm, 0, 1, N, V, d, 1, lnf_out, lnf_h, d, 0, cm->p.w_logits, Wl_h, d, 0, 1, logits, V, 0, 1);
    crossentropy_forward_cuda(ACT(cm, A_LOSSES), loss_acc, logits, d_tok, tstride, B, T, Tp, V,
                              loss_weight, st);
    MARK(P_HEAD);
    cuda_marks_collect(cm, mk);
}

/* ---- the backward of the forward just run; adds into the gradients ---------------------- */
static void backward_pass(Model *m, const int *d_tok, int tstride, int B, int T, int Tp, float dloss,
                          const int *d_order, const int *d_start) {
    CudaModel *cm = CM(m);
    const FlashConfig *c = &m->cfg;
    const int d = c->dim, V = c->num_tokens, L = c->depth;
    const int N = B * Tp;
    const size_t Nm = cm->Nmax;
    const CudaShape sh = cuda_shape(cm, c, B, T, Tp, 0);
    cudaStream_t st = cm->st;
    LayerGrads g;
    layer_grads(cm, &g);
    float *col = g.col, *row = g.row, *d_res = g.d_res;
    float *d_logits = ACT(cm, A_D_LOGITS), *d_lnf = ACT(cm, A_D_LNF);
    bf16 *d_res_h = g.d_res_h, *d_logits_h = TWIN(cm, H_D_LOGITS);
    Marks marks = {0, {0}}, *mk = &marks;
    MARK(-1);

    const float *logits = ACT(cm, A_LOGITS), *lnf_out = ACT(cm, A_LNF_OUT);
    const bf16 *Wl_h = param_twin(cm, cm->p.w_logits);
    crossentropy_backward_cuda(d_logits, logits, d_tok, tstride, B, T, Tp, V, dloss, TW(d_logits_h), st);
    /* logits = x W^T + b:  dx = dl W;  dW += dl^T x;  db += colsum(dl) */
    cuda_gemm(cm, 0, 0, N, d, V, 1, d_logits, d_logits_h, V, 0, cm->p.w_logits, Wl_h, d, 0, 0, d_lnf, d, 0, 1);
    cuda_gemm(cm, 1, 0, V, d, N, 1, d_logits, d_logits_h, V, 0, lnf_out, TWIN(cm, H_LNF_OUT), d, 0, 1,
         cm->g.w_logits, d, 0, 1);
    colsum_add_cuda(cm->g.b_logits, d_logits, V, NULL, 0, N, V, col, st);
    cudaMemsetAsync(d_res, 0, sizeof(float) * (size_t)N * d, st);
    layernorm_backward_cuda(d_res, cm->g.lnf_w, cm->g.lnf_b, d_lnf, ACT(cm, A_RES) + (size_t)L * Nm * d,
                            ACT(cm, A_LNF_STAT), cm->p.lnf_w, N, d, 0, ACT(cm, A_XHAT_SCRATCH), col,
                            TW(d_res_h), st);
    MARK(P_PHASES + P_HEAD);

    for (int l = L - 1; l >= 0; l--) {
        if (c->model == MODEL_GAU) gau_layer_backward(cm, &sh, &g, l, mk);
        else flash_layer_backward(cm, &sh, &g, l, mk);
    }
    embed_backward_cuda(cm->g.tok_emb, cm->g.pos_scale, d_res, d_order, d_start, V, ACT(cm, A_POS), N,
                        Tp, d, row, st);
    MARK(P_PHASES + P_EMBED);
    cuda_marks_collect(cm, mk);
}

/* ---- tables, sizes ------------------------------------------------------------------------ */

/* The position tables follow from the untrained buffers (inv_freq, rotary freqs), computed
   in double on the host as the CPU does, and uploaded. */
static int upload_tables(Model *m, const float *host_params, char *err, size_t errlen) {
    CudaModel *cm = CM(m);
    const FlashConfig *c = &m->cfg;
    const int d = c->dim, r = config_rotary(c), half = d / 2, rh = r / 2, Tp = cm->capTp;
    const ParamInfo *pi = params_find(&m->table, "abs_pos_emb.inv_freq");
    const ParamInfo *pr = params_find(&m->table, "layers.0.rotary_pos_emb.freqs");
    /* GAU has no rotary (r = 0): no rotary frequencies in its table */
    if (!pi || (rh > 0 && !pr)) { snprintf(err, errlen, "internal error: position buffers missing"); return -1; }
    const float *inv_freq = host_params + pi->offset, *freqs = pr ? host_params + pr->offset : NULL;
    for (int t = 0; t < Tp; t++) {
        for (int i = 0; i < half; i++) {
            double a = (double)t * (double)inv_freq[i];
            cm->h_pos[(size_t)t * d + i] = (float)sin(a);
            cm->h_pos[(size_t)t * d + half + i] = (float)cos(a);
        }
        for (int j = 0; j < rh; j++) {
            double a = (double)t * (double)freqs[j];
            cm->h_rot[(size_t)t * rh + j] = (float)cos(a);
            cm->h_rot[(size_t)Tp * rh + (size_t)t * rh + j] = (float)sin(a);
        }
    }
    if (cuda_fail(cudaMemcpy(ACT(cm, A_POS), cm->h_pos, sizeof(float) * (size_t)Tp * d, cudaMemcpyHostToDevice), "upload", err, errlen) ||
        cuda_fail(cudaMemcpy(ACT(cm, A_ROT_COS), cm->h_rot, sizeof(float) * (size_t)Tp * rh, cudaMemcpyHostToDevice), "upload", err, errlen) ||
        cuda_fail(cudaMemcpy(ACT(cm, A_ROT_SIN), cm->h_rot + (size_t)Tp * rh, sizeof(float) * (size_t)Tp * rh, cudaMemcpyHostToDevice), "upload", err, errlen))
        return -1;
    return 0;
}

/* the arena's size table for rows Nm = capB * capTp */
static size_t layout(const FlashConfig *c, int capB, int capTp, int bf16, size_t *off, size_t *size) {
    const size_t L = c->depth, d = c->dim, e = config_hidden(c), s = c->query_key_dim;
    const size_t C = c->group_size, V = c->num_tokens, r = config_rotary(c), H = 2 * e + s;
    const size_t Nm = (size_t)capB * capTp, BG = Nm / C;
    const size_t colmax = H > V ? H : V;
    size_t n[A_COUNT] = {0}, el[A_COUNT];
    for (int k = 0; k < A_COUNT; k++) el[k] = 4;
    n[A_RES] = (L + 1) * Nm * d;      n[A_NSTAT] = L * Nm * 2;       n[A_XS] = L * Nm * d;
    n[A_HID_U] = L * Nm * H;          n[A_HID] = L * Nm * H;         n[A_QK4] = L * 4 * Nm * s;
    n[A_SIM] = L * Nm * C;            n[A_ATTN] = L * Nm * C;        n[A_KV] = L * BG * s * e;
    n[A_ATT] = L * Nm * e;            n[A_GATED] = L * Nm * e;       n[A_LNF_OUT] = Nm * d;
    n[A_LNF_STAT] = Nm * 2;           n[A_LOGITS] = Nm * V;          n[A_LOSSES] = Nm;
    n[A_POS] = (size_t)capTp * d;     n[A_ROT_COS] = (size_t)capTp * (r / 2);
    n[A_ROT_SIN] = (size_t)capTp * (r / 2);                          n[A_BIAS_DIST] = L * C;
    n[A_D_RES] = Nm * d;              n[A_D_XS] = Nm * d;            n[A_D_HID] = Nm * H;
    n[A_D_QK4] = 4 * Nm * s;          n[A_D_ATT] = Nm * e;           n[A_D_GATED] = Nm * e;
    n[A_D_KV] = BG * s * e;           n[A_DSIM] = Nm * C;            n[A_D_LOGITS] = Nm * V;
    n[A_D_LNF] = Nm * d;              n[A_ROW_SCRATCH] = Nm;         n[A_COL_SCRATCH] = 64 * colmax > OSR_SLICES * 8 * s ? 64 * colmax : OSR_SLICES * 8 * s;
    n[A_XHAT_SCRATCH] = 2 * Nm * d;   /* the final LayerNorm's backward needs it in every config */
    n[A_DIST_SCRATCH] = BG * ((C + 31) / 32) * C + 65 * C;   /* attn_dist_parts(BG, C) x C, + the 64 slices of their column sum (one row spare) */
    if (config_taylor_width(c)) {
        const TaylorDims t = taylor_dims(c);
        n[A_TFQ] = Nm * t.Fp;         n[A_TFK] = Nm * t.Fp;          n[A_TKV] = L * BG * t.SE;
        n[A_TY] = L * Nm * e;         n[A_TDEN] = L * Nm;            n[A_TNUM] = Nm * t.E1p;
        n[A_TD_FQ] = Nm * t.Fp;       n[A_TD_FK] = Nm * t.Fp;        n[A_TD_KV] = BG * t.SE;
        n[A_ONES] = C;
        if (bf16) {
            n[H_TFQ] = n[A_TFQ]; n[H_TFK] = n[A_TFK]; n[H_TKV] = n[A_TKV];
            n[H_TNUM] = n[A_TNUM]; n[H_TD_KV] = n[A_TD_KV]; n[H_ONES] = n[A_ONES];
        }
    }
    if (bf16) {
        n[H_XS] = n[A_XS];      n[H_HID] = n[A_HID];      n[H_HID_U] = n[A_HID_U];
        n[H_QK4] = n[A_QK4];    n[H_ATTN] = n[A_ATTN];    n[H_KV] = n[A_KV];
        n[H_GATED] = n[A_GATED];      n[H_LNF_OUT] = n[A_LNF_OUT];  n[H_D_LOGITS] = n[A_D_LOGITS];
        n[H_D_RES] = n[A_D_RES];      n[H_D_ATT] = n[A_D_ATT];      n[H_D_KV] = n[A_D_KV];
        n[H_DSIM] = n[A_DSIM];        n[H_D_HID] = n[A_D_HID];      n[H_ATT] = n[A_ATT];
        n[H_D_GATED] = n[A_D_GATED];  n[H_D_QK4] = n[A_D_QK4];
        for (int k = H_XS; k < A_COUNT; k++) el[k] = 2;
        /* kept as twins only: the norm's output xs, u, v | gate | z, the four of q and k,
           the attention weights, gated, att, and the gradients d_gated, d_qk4, dsim (their fp32 buffers
           are never read) */
        n[A_HID_U] = 0;         n[A_HID] = 0;             n[A_GATED] = 0;         n[A_XS] = 0;
        n[A_ATT] = 0;           n[A_D_GATED] = 0;         n[A_QK4] = 0;
        n[A_ATTN] = 0;          n[A_D_QK4] = 0;           n[A_DSIM] = 0;
    }
    if (c->model == MODEL_GAU) {
        /* no groups: the within-group scores, the linear state and the distances' scratch go;
           q and k are two blocks kept in fp32 (the attention's kernels and its gradient sums
           read them) with twins for the products; their gradient fp32 only */
        n[A_SIM] = n[A_ATTN] = n[A_KV] = n[A_D_KV] = n[A_DSIM] = n[A_DIST_SCRATCH] = n[A_BIAS_DIST] = 0;
        n[H_ATTN] = n[H_KV] = n[H_D_KV] = n[H_DSIM] = n[H_D_QK4] = 0;
        n[A_QK4] = L * 2 * Nm * s;    n[H_QK4] = bf16 ? n[A_QK4] : 0;  n[A_D_QK4] = 2 * Nm * s;
        const size_t tc = (size_t)gau_chunk_rows(capTp, bf16), chunks = (capTp + tc - 1) / tc;
        const size_t sc = (size_t)capB * tc * capTp;   /* one chunk's scores, all sequences */
        n[A_GS] = sc;                 n[A_GA] = bf16 ? 0 : sc;       n[H_GA] = bf16 ? sc : 0;
        n[A_GDZ] = sc;                n[H_GDZ] = bf16 ? sc : 0;      n[A_GZ] = Nm * s;
        n[A_GPART] = chunks * capB * capTp;                          n[A_GTOTAL] = capTp;
    }
    size_t at = 0;
    for (int k = 0; k < A_COUNT; k++) {
        const size_t bytes = (n[k] * el[k] + 255) / 256 * 256;   /* 256-byte aligned */
        if (off) off[k] = at;
        if (size) size[k] = bytes;
        at += bytes;
    }
    return at;
}

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* ---- the vtable --------------------------------------------------------------------------- */

static void cu_close(Model *m) {
    CudaModel *cm = CM(m);
    if (!cm) return;
    cudaSetDevice(cm->dev);
    if (cm->st) cudaStreamSynchronize(cm->st);
    cuda_decoder_close(m);
    if (cm->graph_ready) cudaGraphExecDestroy(cm->step_graph);
    for (int i = 0; i < 64; i++) if (cm->ev[i]) cudaEventDestroy(cm->ev[i]);
    if (cm->blas) cublasDestroy(cm->blas);
    cudaFree(cm->blas_ws);
    cudaFree(cm->state);
    cudaFree(cm->params_h);
    cudaFree(cm->arena);
    cudaFree(cm->chunks); cudaFree(cm->first); cudaFree(cm->decays); cudaFree(cm->clip);
    cudaFree(cm->chunk_ss); cudaFree(cm->scalars);
    cudaFree(cm->d_stage);
    cudaFreeHost(cm->h_stage);
    free(cm->h_pos); free(cm->h_rot);
    params_unpoint(&cm->p);
    params_unpoint(&cm->g);
    free(cm->dtab.info);
    free(cm->host_dev);
    if (cm->st) cudaStreamDestroy(cm->st);
    free(cm);
    m->impl = NULL;
}

static void cu_info(const Model *m, ModelInfo *info) {
    const CudaModel *cm = CM(m);
    memset(info, 0, sizeof *info);
    snprintf(info->device, sizeof info->device, "cuda:%d %.100s", cm->dev, cm->name);
    snprintf(info->precision, sizeof info->precision, "%s",
             cm->use_bf16 ? "bf16 (fp32 master weights)" : "fp32 (no TF32)");
    info->state_bytes = cm->state_bytes;
    info->activation_bytes = cm->arena_bytes;
    info->micro_batch = cm->capB;
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) info->device_bytes = total_b - free_b;
    snprintf(info->detail, sizeof info->detail, "a step of up to %d sequences runs as micro-batches of %d%s",
             cm->cap_seqs, cm->capB, cm->graph_off ? "" : ", replayed as a CUDA graph");
    snprintf(info->decoder, sizeof info->decoder, "%s", cuda_decoder_kind(m));
}

static void refresh_twin(CudaModel *cm) {
    if (cm->params_h) to_bf16_cuda((bf16_t *)cm->params_h, cm->params, cm->dtab.total, cm->st);
}

/* the host table's order <-> the device's aligned layout */
static void to_device_layout(const Model *m, float *dev_layout, const float *host) {
    const CudaModel *cm = CM(m);
    for (int i = 0; i < m->table.n; i++)
        memcpy(dev_layout + cm->dtab.info[i].offset, host + m->table.info[i].offset,
               m->table.info[i].numel * sizeof(float));
}
static void from_device_layout(const Model *m, float *host, const float *dev_layout) {
    const CudaModel *cm = CM(m);
    for (int i = 0; i < m->table.n; i++)
        memcpy(host + m->table.info[i].offset, dev_layout + cm->dtab.info[i].offset,
               m->table.info[i].numel * sizeof(float));
}

static int cu_write(Model *m, StateKind kind, const float *host, char *err, size_t errlen) {
    CudaModel *cm = CM(m);
    const size_t n = cm->dtab.total;
    float *dst = kind == STATE_PARAMS ? cm->params : kind == STATE_GRADS ? cm->grads
               : kind == STATE_ADAM_M ? cm->adam_m : cm->adam_v;
    to_device_layout(m, cm->host_dev, host);
    if (cuda_fail(cudaMemcpy(dst, cm->host_dev, n * sizeof(float), cudaMemcpyHostToDevice), "copy to the GPU", err, errlen))
        return -1;
    if (kind == STATE_PARAMS) {
        if (upload_tables(m, host, err, errlen)) return -1;
        refresh_twin(cm);
        if (cuda_fail(cudaStreamSynchronize(cm->st), "bf16 weights", err, errlen)) return -1;
    }
    return 0;
}

static int cu_read(Model *m, StateKind kind, float *host, char *err, size_t errlen) {
    CudaModel *cm = CM(m);
    const float *src = kind == STATE_PARAMS ? cm->params : kind == STATE_GRADS ? cm->grads
                     : kind == STATE_ADAM_M ? cm->adam_m : cm->adam_v;
    if (cuda_fail(cudaStreamSynchronize(cm->st), "step", err, errlen) ||
        cuda_fail(cudaMemcpy(cm->host_dev, src, cm->dtab.total * sizeof(float), cudaMemcpyDeviceToHost),
                  "copy from the GPU", err, errlen))
        return -1;
    from_device_layout(m, host, cm->host_dev);
    return 0;
}

static int cu_init_params(Model *m, uint64_t seed, char *err, size_t errlen) {
    float *host = (float *)malloc(m->table.total * sizeof(float));
    if (!host) { snprintf(err, errlen, "out of memory"); return -1; }
    params_init(&m->table, &m->cfg, host, seed);
    int rc = cu_write(m, STATE_PARAMS, host, err, errlen);
    free(host);
    return rc;
}

/* Rows n = b*Tp + t (t < T) of each token, listed token by token in row order: the
   embedding's backward sums each token's rows in this fixed order. */
static void rows_by_token(const int *tokens, int tstride, int B, int T, int Tp, int V, int *order,
                          int *start) {
    for (int v = 0; v <= V; v++) start[v] = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) start[tokens[(size_t)b * tstride + t] + 1]++;
    for (int v = 0; v < V; v++) start[v + 1] += start[v];
    int fill[4096];
    int *pos = V <= 4096 ? fill : (int *)malloc(sizeof(int) * (size_t)V);
    for (int v = 0; v < V; v++) pos[v] = start[v];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) order[pos[tokens[(size_t)b * tstride + t]]++] = b * Tp + t;
    if (pos != fill) free(pos);
}

/* The micro-batch that model_accumulate runs: the fixed one if set, else the largest
   divisor of n_seq that fits the capacity. */
static int micro_for(const CudaModel *cm, int n_seq, int B) {
    int mb = cm->micro_fixed > 0 ? cm->micro_fixed : cm->capB;
    if (mb > n_seq) mb = n_seq;
    while (mb > 1 && (n_seq % mb || mb > cm->capB)) mb--;
    (void)B;
    return mb < 1 ? 1 : mb;
}

/* the launches of one step after its tokens are on the device */
static void step_launches(Model *m, int n_seq, int B, int T, int divisor) {
    CudaModel *cm = CM(m);
    const int V = m->cfg.num_tokens, Tp = round_up(T, cuda_pad_unit(&m->cfg));
    const int mb = micro_for(cm, n_seq, B), chunks = n_seq / mb;
    const size_t ntok = (size_t)n_seq * (T + 1), per_chunk = (size_t)mb * T + V + 1;
    cudaStream_t st = cm->st;
    cudaMemsetAsync(cm->grads, 0, cm->dtab.total * sizeof(float), st);
    cudaMemsetAsync(cm->scalars + 1, 0, sizeof(double), st);
    /* a micro-batch of k of the caller's micro-batches: its mean loss times k / divisor */
    const double weight = (double)mb / B / divisor;
    for (int q = 0; q < chunks; q++) {
        const int *d_tok = cm->d_stage + (size_t)q * mb * (T + 1);
        const int *d_order = cm->d_stage + ntok + q * per_chunk;
        cuda_forward_pass(m, d_tok, T + 1, mb, T, Tp, weight, cm->scalars + 1, 0);
        backward_pass(m, d_tok, T + 1, mb, T, Tp, (float)weight, d_order, d_order + (size_t)mb * T);
    }
}

static double cu_accumulate(Model *m, const int *tokens, int n_seq, int B, int T, int divisor) {
    CudaModel *cm = CM(m);
    const int V = m->cfg.num_tokens, Tp = round_up(T, cuda_pad_unit(&m->cfg));
    const int mb = micro_for(cm, n_seq, B), chunks = n_seq / mb;
    const size_t ntok = (size_t)n_seq * (T + 1);
    const size_t per_chunk = (size_t)mb * T + V + 1;
    if (Tp > cm->capTp || n_seq > cm->cap_seqs || ntok + chunks * per_chunk > cm->stage_ints) {
        fprintf(stderr, "internal error: a step of %d x %d exceeds the CUDA model's capacity\n", n_seq, T);
        return NAN;
    }
    memcpy(cm->h_stage, tokens, ntok * sizeof(int));
    for (int q = 0; q < chunks; q++) {
        int *order = cm->h_stage + ntok + q * per_chunk;
        rows_by_token(tokens + (size_t)q * mb * (T + 1), T + 1, mb, T, Tp, V, order, order + (size_t)mb * T);
    }
    cudaStream_t st = cm->st;
    cudaMemcpyAsync(cm->d_stage, cm->h_stage, (ntok + chunks * per_chunk) * sizeof(int),
                    cudaMemcpyHostToDevice, st);
    /* The step's launches depend on its shape only (the data is in the staging buffer):
       they are captured once per shape as a CUDA graph and replayed, which removes the
       launch gaps between several hundred short kernels. Profiling runs them directly. */
    const int key[4] = {n_seq, B, T, divisor};
    const int use_graph = !cm->prof && !cm->graph_off;
    if (use_graph && (!cm->graph_ready || memcmp(key, cm->graph_key, sizeof key))) {
        if (cm->graph_ready) { cudaGraphExecDestroy(cm->step_graph); cm->graph_ready = 0; }
        cudaGraph_t g;
        if (cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            step_launches(m, n_seq, B, T, divisor);
            if (cudaStreamEndCapture(st, &g) == cudaSuccess) {
                if (cudaGraphInstantiate(&cm->step_graph, g, 0) == cudaSuccess) {
                    cm->graph_ready = 1;
                    memcpy(cm->graph_key, key, sizeof key);
                }
                cudaGraphDestroy(g);
            }
        }
        if (!cm->graph_ready) { cm->graph_off = 1; cudaGetLastError(); }
    }
    if (use_graph && cm->graph_ready) cudaGraphLaunch(cm->step_graph, st);
    else step_launches(m, n_seq, B, T, divisor);
    double loss = NAN;
    cudaMemcpyAsync(&loss, cm->scalars + 1, sizeof(double), cudaMemcpyDeviceToHost, st);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the step: %s\n", cudaGetErrorString(e)); return NAN; }
    return isfinite(loss) ? loss : NAN;
}

static void *cu_grad_buffer(Model *m, size_t *count, size_t *elem_size, int *on_device) {
    *count = CM(m)->dtab.total;   /* the aligned layout, padding included (zeros) */
    *elem_size = sizeof(float);
    *on_device = 1;
    cudaStreamSynchronize(CM(m)->st);
    return CM(m)->grads;
}

static double cu_update(Model *m, const OptConfig *o, long t_step, double lr) {
    CudaModel *cm = CM(m);
    cudaStream_t st = cm->st;
    Marks marks = {0, {0}}, *mk = &marks;
    MARK(-1);
    opt_sumsq_cuda(cm->chunk_ss, cm->grads, cm->chunks, cm->nchunks, st);
    opt_clip_cuda(cm->clip, cm->scalars, cm->chunk_ss + cm->nchunks, cm->chunk_ss, cm->first, m->table.n,
                  o->clip_mode == CLIP_GLOBAL ? 1 : o->clip_mode == CLIP_LOCAL ? 2 : 0, o->clip, st);
    const AdamConstants k = adam_constants(o, t_step, lr);   /* the CPU's, cast to float */
    opt_adamw_cuda(cm->params, cm->grads, cm->adam_m, cm->adam_v, cm->chunks, cm->nchunks, cm->clip,
                   cm->decays, (float)k.decay, cm->scalars, (float)k.b1, (float)k.b2, (float)k.c1,
                   (float)k.c2, (float)k.step, (float)k.inv_bc2, (float)k.eps, (bf16_t *)cm->params_h, st);
    MARK(P_OPT);
    cuda_marks_collect(cm, mk);
    double norm = NAN;
    cudaMemcpyAsync(&norm, cm->scalars, sizeof(double), cudaMemcpyDeviceToHost, st);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the update: %s\n", cudaGetErrorString(e)); return NAN; }
    return norm;
}

static double cu_forward(Model *m, const int *tokens, int B, int T, float *losses, float *logits) {
    CudaModel *cm = CM(m);
    const int V = m->cfg.num_tokens, Tp = round_up(T, cuda_pad_unit(&m->cfg));
    const size_t ntok = (size_t)B * (T + 1);
    if (Tp > cm->capTp || B > cm->capB || ntok > cm->stage_ints) {
        fprintf(stderr, "internal error: a forward of %d x %d exceeds the CUDA model's capacity\n", B, T);
        return NAN;
    }
    cudaStream_t st = cm->st;
    memcpy(cm->h_stage, tokens, ntok * sizeof(int));
    cudaMemcpyAsync(cm->d_stage, cm->h_stage, ntok * sizeof(int), cudaMemcpyHostToDevice, st);
    cudaMemsetAsync(cm->scalars + 1, 0, sizeof(double), st);
    cuda_forward_pass(m, cm->d_stage, T + 1, B, T, Tp, 1.0, cm->scalars + 1, 1);
    double loss = NAN;
    cudaMemcpyAsync(&loss, cm->scalars + 1, sizeof(double), cudaMemcpyDeviceToHost, st);
    /* padded rows t >= T are left out */
    if (losses)
        cudaMemcpy2DAsync(losses, sizeof(float) * T, ACT(cm, A_LOSSES), sizeof(float) * Tp,
                          sizeof(float) * T, B, cudaMemcpyDeviceToHost, st);
    if (logits)
        cudaMemcpy2DAsync(logits, sizeof(float) * (size_t)T * V, ACT(cm, A_LOGITS),
                          sizeof(float) * (size_t)Tp * V, sizeof(float) * (size_t)T * V, B,
                          cudaMemcpyDeviceToHost, st);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the forward: %s\n", cudaGetErrorString(e)); return NAN; }
    return loss;
}

int cuda_forward_last(Model *m, const int *tokens, int B, int T, float *logits) {
    CudaModel *cm = CM(m);
    const int V = m->cfg.num_tokens, Tp = round_up(T, cuda_pad_unit(&m->cfg));
    const size_t ntok = (size_t)B * (T + 1);
    if (T < 1 || Tp > cm->capTp || B > cm->capB || ntok > cm->stage_ints) {
        fprintf(stderr, "internal error: a forward of %d x %d exceeds the CUDA model's capacity\n", B, T);
        return -1;
    }
    cudaStream_t st = cm->st;
    memcpy(cm->h_stage, tokens, ntok * sizeof(int));
    cudaMemcpyAsync(cm->d_stage, cm->h_stage, ntok * sizeof(int), cudaMemcpyHostToDevice, st);
    cuda_forward_pass(m, cm->d_stage, T + 1, B, T, Tp, 1.0, cm->scalars + 1, 1);
    cudaMemcpy2DAsync(logits, sizeof(float) * V, ACT(cm, A_LOGITS) + (size_t)(T - 1) * V,
                      sizeof(float) * (size_t)Tp * V, sizeof(float) * V, B, cudaMemcpyDeviceToHost, st);
    cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error in the forward: %s\n", cudaGetErrorString(e)); return -1; }
    return 0;
}

/* cuBLAS's rate at C = A B^T (M x N x K) in the model's precision: bf16 operands and fp32
   output as the step's products, or fp32 without TF32; best of three trials >= 0.2 s */
static double cu_gemm_rate(Model *m, int M, int N, int K) {
    CudaModel *cm = CM(m);
    const size_t el = cm->use_bf16 ? 2 : 4;
    void *A = NULL, *B = NULL;
    float *Cm = NULL;
    if (cudaMalloc(&A, el * (size_t)M * K) != cudaSuccess || cudaMalloc(&B, el * (size_t)N * K) != cudaSuccess ||
        cudaMalloc((void **)&Cm, sizeof(float) * (size_t)M * N) != cudaSuccess) {
        cudaFree(A); cudaFree(B); cudaFree(Cm); cudaGetLastError();
        return 0;
    }
    cudaMemset(A, 0, el * (size_t)M * K);   /* the rate does not depend on the values */
    cudaMemset(B, 0, el * (size_t)N * K);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double best = 0;
    for (int trial = -1; trial < 3; trial++) {   /* trial -1 warms up */
        int reps = 0;
        float ms = 0;
        cudaEventRecord(e0, cm->st);
        do {
            for (int r = 0; r < 10; r++)
                cuda_gemm_typed(cm, 0, 1, M, N, K, 1, (const float *)A, (const bf16 *)A, K, 0, (const float *)B,
                                (const bf16 *)B, K, 0, 0, Cm, CUDA_R_32F, N, 0, 1);
            reps += 10;
            cudaEventRecord(e1, cm->st);
            cudaEventSynchronize(e1);
            cudaEventElapsedTime(&ms, e0, e1);
        } while (ms < 200 && trial >= 0);
        const double rate = 2.0 * M * N * K * reps / (ms * 1e-3) / 1e9;
        if (trial >= 0 && rate > best) best = rate;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(A); cudaFree(B); cudaFree(Cm);
    return best;
}

static void cu_profile(Model *m, int on) {
    CudaModel *cm = CM(m);
    cm->prof = on;
    memset(cm->prof_s, 0, sizeof cm->prof_s);
}
static int cu_profile_read(Model *m, const char **names, double *seconds, int max) {
    CudaModel *cm = CM(m);
    int n = 2 * P_PHASES - 1 < max ? 2 * P_PHASES - 1 : max;   /* no "backward optimizer" */
    for (int i = 0; i < n; i++) { names[i] = P_NAMES[i]; seconds[i] = cm->prof_s[i]; }
    return n;
}


static const ModelBackend CUDA_BACKEND = {
    "cuda", cu_close, cu_info, cu_init_params, cu_read, cu_write, cu_accumulate, cu_grad_buffer,
    cu_update, cu_forward, cuda_decoder_open, cuda_decoder_prefill, cuda_decoder_step,
    cuda_decoder_close, cu_profile, cu_profile_read, cu_gemm_rate, cuda_decoder_sample};

int gau_chunk_env = -1;

extern "C" int cuda_model_open(Model *m, char *err, size_t errlen) {
    if (gau_chunk_env < 0) {   /* once per process: every model's arena and attention agree */
        const char *gc = getenv("FLASH_GAU_CHUNK_ROWS");
        const int v = gc ? atoi(gc) : 0;
        gau_chunk_env = v >= 64 && v <= 1024 && v % 64 == 0 ? v : 0;
    }
    const FlashConfig *c = &m->cfg;
    const ModelOptions *o = &m->opt;
    CudaModel *cm = (CudaModel *)calloc(1, sizeof *cm);
    if (!cm) { snprintf(err, errlen, "out of memory"); return -1; }
    m->impl = cm;
    m->be = &CUDA_BACKEND;
    cm->dev = o->gpu;
    {
        const char *g = getenv("FLASH_CUDA_GRAPHS");   /* 0: launch one by one (for A/B runs) */
        cm->graph_off = g && !strcmp(g, "0");
    }
    /* bf16 unless fp32 is asked for: on the H200 it trains 4x faster than fp32 with the
       same loss curve (docs/cuda-notes.md) */
    cm->use_bf16 = o->precision != PRECISION_FP32;
    int ndev = cuda_device_count();
    if (ndev <= 0) { snprintf(err, errlen, "no CUDA GPU is visible"); goto fail; }
    if (cm->dev < 0 || cm->dev >= ndev) {
        /* the ordinal is the process's local MPI rank: more ranks on this host than GPUs */
        snprintf(err, errlen,
                 "this process would train on GPU %d, but this host has %d visible: more MPI ranks run on "
                 "the host than it has GPUs (one rank per GPU: mpirun -np %d, or fewer per host; "
                 "--device cpu trains on the CPU)",
                 cm->dev, ndev, ndev);
        goto fail;
    }
    {
        cudaDeviceProp prop;
        if (cuda_fail(cudaSetDevice(cm->dev), "select the GPU", err, errlen) ||
            cuda_fail(cudaGetDeviceProperties(&prop, cm->dev), "device properties", err, errlen))
            goto fail;
        snprintf(cm->name, sizeof cm->name, "%s", prop.name);
    }
    if (cuda_fail(cudaStreamCreateWithFlags(&cm->st, cudaStreamNonBlocking), "stream", err, errlen)) goto fail;
    if (cublasCreate(&cm->blas) != CUBLAS_STATUS_SUCCESS) { snprintf(err, errlen, "cuBLAS could not start"); goto fail; }
    cublasSetStream(cm->blas, cm->st);
    /* a workspace of our own, fixed: the products then repeat bit for bit */
    if (cuda_fail(cudaMalloc(&cm->blas_ws, 32u << 20), "cuBLAS workspace", err, errlen)) goto fail;
    cublasSetWorkspace(cm->blas, cm->blas_ws, 32u << 20);
    cublasSetMathMode(cm->blas, CUBLAS_DEFAULT_MATH);   /* no TF32 */
    for (int i = 0; i < 64; i++) cudaEventCreate(&cm->ev[i]);
    {
        /* state, in the aligned layout */
        cm->dtab = m->table;
        cm->dtab.info = (ParamInfo *)malloc(sizeof(ParamInfo) * (m->table.n ? m->table.n : 1));
        if (!cm->dtab.info) { snprintf(err, errlen, "out of memory"); goto fail; }
        size_t at = 0;
        for (int i = 0; i < m->table.n; i++) {
            cm->dtab.info[i] = m->table.info[i];
            cm->dtab.info[i].offset = at;
            at += m->table.info[i].numel;
            /* to_qk follows to_hidden directly (one fused product reads both) */
            const char *nm = m->table.info[i].name;
            const size_t ln = strlen(nm);
            const int fused = (ln > 18 && !strcmp(nm + ln - 18, "to_hidden.0.weight")) ||
                              (ln > 16 && !strcmp(nm + ln - 16, "to_hidden.0.bias"));
            if (!fused) at = (at + ALIGN_ELEMS - 1) / ALIGN_ELEMS * ALIGN_ELEMS;
        }
        cm->dtab.total = at;
        cm->host_dev = (float *)calloc(at ? at : 1, sizeof(float));
        if (!cm->host_dev) { snprintf(err, errlen, "out of memory"); goto fail; }
        const size_t n = cm->dtab.total;
        cm->state_bytes = 4 * n * sizeof(float);
        if (cuda_fail(cudaMalloc((void **)&cm->state, cm->state_bytes), "memory for the parameters", err, errlen))
            goto fail;
        cudaMemset(cm->state, 0, cm->state_bytes);
        cm->params = cm->state; cm->grads = cm->state + n; cm->adam_m = cm->state + 2 * n;
        cm->adam_v = cm->state + 3 * n;
        if (cm->use_bf16) {
            if (cuda_fail(cudaMalloc((void **)&cm->params_h, n * sizeof(bf16)), "memory for the bf16 weights", err, errlen))
                goto fail;
            cm->state_bytes += n * sizeof(bf16);
        }
        if (params_point(&cm->p, &cm->dtab, c, cm->params) || params_point(&cm->g, &cm->dtab, c, cm->grads)) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        /* optimizer chunks: trained tensors cut into blocks of CHUNK_ELEMS */
        const ParamTable *t = &cm->dtab;
        int nch = 0;
        for (int i = 0; i < t->n; i++)
            if (t->info[i].trained) nch += (int)((t->info[i].numel + CHUNK_ELEMS - 1) / CHUNK_ELEMS);
        OptChunk *hc = (OptChunk *)calloc(nch ? nch : 1, sizeof *hc);
        int *hf = (int *)calloc(t->n + 1, sizeof(int)), *hd = (int *)calloc(t->n, sizeof(int));
        if (!hc || !hf || !hd) { free(hc); free(hf); free(hd); snprintf(err, errlen, "out of memory"); goto fail; }
        int q = 0;
        for (int i = 0; i < t->n; i++) {
            hf[i] = q;
            hd[i] = t->info[i].decay;
            if (!t->info[i].trained) continue;
            for (size_t s0 = 0; s0 < t->info[i].numel; s0 += CHUNK_ELEMS, q++) {
                hc[q].tensor = i;
                hc[q].start = t->info[i].offset + s0;
                hc[q].count = t->info[i].numel - s0 < CHUNK_ELEMS ? t->info[i].numel - s0 : CHUNK_ELEMS;
            }
        }
        hf[t->n] = q;
        cm->nchunks = nch;
        int bad = cuda_fail(cudaMalloc((void **)&cm->chunks, sizeof(OptChunk) * (nch ? nch : 1)), "memory", err, errlen) ||
                  cuda_fail(cudaMalloc((void **)&cm->first, sizeof(int) * (t->n + 1)), "memory", err, errlen) ||
                  cuda_fail(cudaMalloc((void **)&cm->decays, sizeof(int) * t->n), "memory", err, errlen) ||
                  cuda_fail(cudaMalloc((void **)&cm->clip, sizeof(float) * t->n), "memory", err, errlen) ||
                  cuda_fail(cudaMalloc((void **)&cm->chunk_ss, sizeof(double) * (nch + t->n + 1)), "memory", err, errlen)   /* + the tensors' sums */ ||
                  cuda_fail(cudaMalloc((void **)&cm->scalars, sizeof(double) * 4), "memory", err, errlen);
        if (!bad) {
            cudaMemcpy(cm->chunks, hc, sizeof(OptChunk) * nch, cudaMemcpyHostToDevice);
            cudaMemcpy(cm->first, hf, sizeof(int) * (t->n + 1), cudaMemcpyHostToDevice);
            cudaMemcpy(cm->decays, hd, sizeof(int) * t->n, cudaMemcpyHostToDevice);
            cudaMemset(cm->scalars, 0, sizeof(double) * 4);
        }
        free(hc); free(hf); free(hd);
        if (bad) goto fail;
    }
    {
        /* capacity: a step's sequences in micro-batches of up to capB, each padded to Tp */
        const int C = cuda_pad_unit(c);
        if (c->model == MODEL_FLASH && C > CUDA_MAX_GROUP) {   /* the bias gradient's kernel keeps a group's distances in shared memory */
            snprintf(err, errlen, "group_size %d is beyond the CUDA backend's %d; train this model on the CPU",
                     C, CUDA_MAX_GROUP);
            goto fail;
        }
        const int maxB = o->max_B > 0 ? o->max_B : 1, maxT = o->max_T > 0 ? o->max_T : C;
        const int seqs = o->step_seqs > maxB ? o->step_seqs : maxB;
        cm->micro_fixed = o->micro_batch;
        cm->capTp = round_up(maxT, C);
        /* by default the whole step in one micro-batch (measured fastest: docs/) */
        cm->capB = o->micro_batch > 0 ? o->micro_batch : seqs;
        if (cm->capB < maxB) cm->capB = maxB;
        cm->cap_seqs = seqs > cm->capB ? seqs : cm->capB;
        cm->Nmax = (size_t)cm->capB * cm->capTp;
        cm->arena_bytes = layout(c, cm->capB, cm->capTp, cm->use_bf16, cm->off, cm->size);
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        if (cm->arena_bytes > free_b) {
            snprintf(err, errlen, "the activations of %d x %d tokens need %.1f GiB; the GPU has %.1f GiB free "
                     "(use a smaller --batch or --seq-len, or --micro-batch)", cm->capB, cm->capTp,
                     cm->arena_bytes / 1073741824.0, free_b / 1073741824.0);
            goto fail;
        }
        if (cuda_fail(cudaMalloc(&cm->arena, cm->arena_bytes), "memory for the activations", err, errlen)) goto fail;
        cudaMemset(cm->arena, 0, cm->arena_bytes);
        if (config_taylor_width(c)) {   /* the column of ones of Z = fk^T 1, and its twin */
            const int C = c->group_size;
            float *ones = (float *)malloc(sizeof(float) * C);
            uint16_t *ones_h = (uint16_t *)malloc(sizeof(uint16_t) * C);
            if (!ones || !ones_h) { free(ones); free(ones_h); snprintf(err, errlen, "out of memory"); goto fail; }
            for (int k = 0; k < C; k++) { ones[k] = 1.0f; ones_h[k] = 0x3f80; }   /* bf16 1.0 */
            cudaError_t ce = cudaMemcpy(ACT(cm, A_ONES), ones, sizeof(float) * C, cudaMemcpyHostToDevice);
            if (ce == cudaSuccess && cm->use_bf16)
                ce = cudaMemcpy(TWIN(cm, H_ONES), ones_h, sizeof(uint16_t) * C, cudaMemcpyHostToDevice);
            free(ones);
            free(ones_h);
            if (cuda_fail(ce, "upload", err, errlen)) goto fail;
        }
        const int V = c->num_tokens;
        const size_t chunks = (size_t)cm->cap_seqs;   /* at most one chunk per sequence */
        cm->stage_ints = (size_t)cm->cap_seqs * (cm->capTp + 1) + (size_t)cm->cap_seqs * cm->capTp + chunks * (V + 1);
        if (cuda_fail(cudaMallocHost((void **)&cm->h_stage, cm->stage_ints * sizeof(int)), "pinned memory", err, errlen) ||
            cuda_fail(cudaMalloc((void **)&cm->d_stage, cm->stage_ints * sizeof(int)), "memory", err, errlen))
            goto fail;
        const int r = config_rotary(c);
        cm->h_pos = (float *)malloc(sizeof(float) * (size_t)cm->capTp * c->dim);
        cm->h_rot = (float *)malloc(sizeof(float) * (size_t)cm->capTp * (r / 2 ? r / 2 : 1) * 2);
        if (!cm->h_pos || !cm->h_rot) { snprintf(err, errlen, "out of memory"); goto fail; }
    }
    return 0;
fail:
    cu_close(m);
    m->be = NULL;
    return -1;
}
