/* autograd/cpu/cpu_backend.c: the CPU implementation of model/model.h. The model of cpu_model.c
 * (parameters, gradients, activations), the decoder of cpu_decode.c and both Adam moments,
 * all in host memory. The thread count is fixed first, then every buffer is sized for it,
 * so no step allocates or changes how a product is split (resume is bit for bit). */
#include "backend.h"
#include "adamw.h"
#include "cpu_decode.h"
#include "cpu_model.h"
#include "ops.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The decoder's thread count under contention (issue 11). One sequence's byte is a few
   dozen short parallel products, each ending when its slowest thread does: when another
   process holds one of the cores, every product waits for the thread that lost its core,
   and all the threads together run slower than half of them (docs/issue11.md). So a
   one-sequence decoder keeps measuring: in every window of DT_WINDOW bytes it runs the first
   DT_PROBE with the count it is not using (all the threads, or half of them) and keeps the
   faster of the two. Those products give each output to one thread, so the logits do not
   depend on the count (test_decode_threads_bit_identical); several sequences use the
   blocked products, whose sums do, and keep the count fixed. */
#define DT_WINDOW 128
#define DT_PROBE 8
typedef struct {
    int full, half;      /* the two counts; full == half: nothing to choose */
    int best;            /* the count in use */
    long k;              /* bytes decoded since the decoder opened */
    double probe_s, run_s;
    int probe_n, run_n;
} DecodeThreads;

typedef struct {
    CpuModel cm;
    real *adam_m, *adam_v;             /* table.total each */
    Decoder dec;
    int dec_open;
    real *dec_logits;                  /* the decoder's output in `real` (double build only) */
    double prof[2 * PROF_PHASES];
    const char *prof_names[2 * PROF_PHASES];
    char bwd_names[PROF_PHASES][48];
    DecodeThreads dt;
} CpuImpl;

#define IMPL(m) ((CpuImpl *)(m)->impl)

size_t cpu_activation_bytes(const FlashConfig *cfg, const ModelOptions *opt) {
    return cpu_acts_bytes(cfg, opt->max_B, opt->max_T, opt->threads);
}

void cpu_process_init(char **argv) { blas_process_init(argv); }

/* The registry's settle slot: fp32 (the default there) or a refusal, and the thread count
   fixed here, before any buffer is sized for it */
int cpu_settle_options(ModelOptions *o, char *err, size_t errlen) {
    if (o->precision == PRECISION_BF16) {
        snprintf(err, errlen, "the CPU backend computes in fp32 only (--precision bf16 needs --device cuda)");
        return -1;
    }
    o->precision = PRECISION_FP32;
    if (o->threads <= 0) o->threads = omp_get_num_procs();
    return 0;
}

/* The registry's supports slot: the layers and attention forms the CPU's rooms compute */
int cpu_supports(const FlashConfig *c, char *why, size_t whylen) {
    (void)c; (void)why; (void)whylen;
    return 1;   /* FLASH (plain or taylor) and FLASH-Quad */
}

static void cpu_close(Model *m) {
    CpuImpl *c = IMPL(m);
    if (!c) return;
    if (c->dec_open) decoder_free(&c->dec);
    cpu_destroy(&c->cm);
    free(c->adam_m);
    free(c->adam_v);
    free(c->dec_logits);
    free(c);
    m->impl = NULL;
}

static void cpu_info(const Model *m, ModelInfo *info) {
    const CpuImpl *c = IMPL(m);
    static const char *const way_names[] = {"OpenBLAS threading", "4 tiles per thread",
                                            "K split into one chunk per thread"};
    const int t = m->opt.threads;
    snprintf(info->device, sizeof info->device, "cpu: %d threads, OpenBLAS core %s", t, blas_core_name());
    snprintf(info->kernels, sizeof info->kernels, "%s", blas_core_name());
    snprintf(info->detail, sizeof info->detail, "BLAS kernels %s; Linear GEMMs: %s; weight gradients: %s",
             blas_core_note(), way_names[gemm_way_for(t, 0)], way_names[gemm_way_for(t, 1)]);
    snprintf(info->precision, sizeof info->precision, "%s", sizeof(real) == 4 ? "fp32" : "fp64");
    info->state_bytes = 4 * m->table.total * sizeof(real);
    info->activation_bytes = c->cm.acts.bytes;
    info->micro_batch = 0;
    info->threads = t;
    if (c->dec_open)
        snprintf(info->decoder, sizeof info->decoder, "recurrent, products in %d fixed blocks of outputs",
                 c->dec.blocks);
}

static int cpu_init(Model *m, uint64_t seed, char *err, size_t errlen) {
    if (cpu_init_params(&IMPL(m)->cm, seed) == 0) return 0;
    snprintf(err, errlen, "out of memory initialising the parameters");
    return -1;
}

static real *state_array(Model *m, StateKind kind) {
    CpuImpl *c = IMPL(m);
    switch (kind) {
    case STATE_PARAMS: return c->cm.params;
    case STATE_GRADS: return c->cm.grads;
    case STATE_ADAM_M: return c->adam_m;
    case STATE_ADAM_V: return c->adam_v;
    }
    return NULL;
}

static int cpu_read(Model *m, StateKind kind, float *host, char *err, size_t errlen) {
    const real *src = state_array(m, kind);
    if (!src) { snprintf(err, errlen, "unknown state kind %d", (int)kind); return -1; }
    for (size_t k = 0; k < m->table.total; k++) host[k] = (float)src[k];
    return 0;
}

static int cpu_write(Model *m, StateKind kind, const float *host, char *err, size_t errlen) {
    real *dst = state_array(m, kind);
    if (!dst) { snprintf(err, errlen, "unknown state kind %d", (int)kind); return -1; }
    for (size_t k = 0; k < m->table.total; k++) dst[k] = (real)host[k];
    if (kind == STATE_PARAMS) cpu_params_changed(&IMPL(m)->cm);
    return 0;
}

/* Zero the gradients, then each micro-batch's forward and backward with the loss scaled by
   1 / divisor, in order. */
static double cpu_accumulate(Model *m, const int *tokens, int n_seq, int B, int T, int divisor) {
    CpuModel *cm = &IMPL(m)->cm;
    if (B < 1 || n_seq % B || !cpu_fits(cm, B, T) || divisor < 1) return NAN;
    cpu_zero_grads(cm);
    double loss = 0;
    for (int a = 0; a < n_seq / B; a++) {
        const int *tok = tokens + (size_t)a * B * (T + 1);
        loss += cpu_forward(cm, tok, B, T) / divisor;
        cpu_backward(cm, tok, (real)(1.0 / divisor));
    }
    return loss;
}

static void *cpu_grad_buffer(Model *m, size_t *count, size_t *elem_size, int *on_device) {
    *count = m->table.total;
    *elem_size = sizeof(real);
    *on_device = 0;
    return IMPL(m)->cm.grads;
}

static double cpu_update(Model *m, const OptConfig *o, long t_step, double lr) {
    CpuImpl *c = IMPL(m);
    return optimizer_step(o, &m->table, c->cm.params, c->cm.grads, c->adam_m, c->adam_v, t_step, lr);
}

static double cpu_fwd(Model *m, const int *tokens, int B, int T, float *losses, float *logits) {
    CpuModel *cm = &IMPL(m)->cm;
    if (!cpu_fits(cm, B, T)) return NAN;
    double loss = cpu_forward(cm, tokens, B, T);
    const size_t N = (size_t)B * T, V = (size_t)m->cfg.num_tokens;
    if (losses) for (size_t k = 0; k < N; k++) losses[k] = (float)cm->acts.losses[k];
    if (logits) for (size_t k = 0; k < N * V; k++) logits[k] = (float)cm->acts.logits[k];
    return loss;
}

static void cpu_dec_close(Model *m) {
    CpuImpl *c = IMPL(m);
    if (c->dec_open) decoder_free(&c->dec);
    c->dec_open = 0;
    free(c->dec_logits);
    c->dec_logits = NULL;
}

static void dt_reset(DecodeThreads *dt, int threads, int nseq) {
    memset(dt, 0, sizeof *dt);
    dt->full = threads;
    dt->half = nseq == 1 ? (threads + 1) / 2 : threads;
    dt->best = threads;
}

/* the count for the next byte: the other one for the window's first DT_PROBE bytes */
static int dt_count(const DecodeThreads *dt) {
    const int other = dt->best == dt->full ? dt->half : dt->full;
    return dt->k % DT_WINDOW < DT_PROBE ? other : dt->best;
}

/* The first byte of each part runs after the switch (cold caches on the new threads) and is
   not counted; at the window's end the other count wins if its bytes were 5% faster. */
static void dt_record(DecodeThreads *dt, double seconds) {
    const long pos = dt->k % DT_WINDOW;
    if (pos > 0 && pos < DT_PROBE) { dt->probe_s += seconds; dt->probe_n++; }
    else if (pos > DT_PROBE) { dt->run_s += seconds; dt->run_n++; }
    if (pos == DT_WINDOW - 1) {
        if (dt->probe_n && dt->run_n && dt->probe_s / dt->probe_n < 0.95 * dt->run_s / dt->run_n)
            dt->best = dt->best == dt->full ? dt->half : dt->full;
        dt->probe_s = dt->run_s = 0;
        dt->probe_n = dt->run_n = 0;
    }
    dt->k++;
}

static int cpu_dec_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen) {
    CpuImpl *c = IMPL(m);
    cpu_dec_close(m);
    /* the prefill runs a prompt's whole groups through the parallel forward, in the model's
       activations: they grow to hold them if they do not */
    const int rows = max_prompt > 0 ? decoder_prefill_rows(&c->cm, max_prompt) : 0;
    if (rows > 0 && !cpu_fits(&c->cm, 1, rows) &&
        cpu_alloc_acts(&c->cm, c->cm.acts.B, rows > c->cm.acts.T ? rows : c->cm.acts.T, err, errlen))
        return -1;
    if (decoder_init(&c->dec, &c->cm, nseq, max_prompt, err, errlen)) return -1;
    c->dec_open = 1;
    dt_reset(&c->dt, m->opt.threads, nseq);
    /* gau samples through the parallel forward, whose blocked products need not give the
       same bits at another count: its count stays fixed */
    if (m->cfg.model == MODEL_GAU) c->dt.half = c->dt.full;
    if (sizeof(real) != sizeof(float)) {
        c->dec_logits = malloc(sizeof(real) * (size_t)nseq * m->cfg.num_tokens);
        if (!c->dec_logits) {
            snprintf(err, errlen, "out of memory for the decoder's logits");
            cpu_dec_close(m);
            return -1;
        }
    }
    return 0;
}

/* The decoder writes `real` logits: straight into the caller's floats in the float build. */
static real *dec_out(CpuImpl *c, float *logits) {
    return sizeof(real) == sizeof(float) ? (real *)(void *)logits : c->dec_logits;
}
static void dec_copy(CpuImpl *c, float *logits) {
    if (sizeof(real) == sizeof(float)) return;
    const size_t n = (size_t)c->dec.nseq * c->cm.cfg.num_tokens;
    for (size_t k = 0; k < n; k++) logits[k] = (float)c->dec_logits[k];
}

static int cpu_dec_prefill(Model *m, const int *prompt, int P, float *logits) {
    CpuImpl *c = IMPL(m);
    if (!c->dec_open || decoder_prefill(&c->dec, prompt, P, dec_out(c, logits))) return -1;
    dec_copy(c, logits);
    return 0;
}

static int cpu_dec_step(Model *m, const int *tokens, float *logits) {
    CpuImpl *c = IMPL(m);
    if (!c->dec_open) return -1;
    DecodeThreads *dt = &c->dt;
    int rc;
    if (dt->full == dt->half) {
        rc = decoder_step(&c->dec, tokens, dec_out(c, logits));
    } else {
        const int n = dt_count(dt);
        blas_set_threads(n);
        const double t0 = omp_get_wtime();
        rc = decoder_step(&c->dec, tokens, dec_out(c, logits));
        dt_record(dt, omp_get_wtime() - t0);
        blas_set_threads(m->opt.threads);
    }
    if (rc) return -1;   /* gau's window could not grow */
    dec_copy(c, logits);
    return 0;
}

static void cpu_profile(Model *m, int on) {
    CpuImpl *c = IMPL(m);
    memset(c->prof, 0, sizeof c->prof);
    c->cm.prof = on ? c->prof : NULL;
}

/* the forward's phases, then the backward's as "backward NAME" */
static int cpu_profile_read(Model *m, const char **names, double *seconds, int max) {
    CpuImpl *c = IMPL(m);
    int n = 0;
    for (int k = 0; k < 2 * PROF_PHASES && n < max; k++, n++) {
        names[n] = c->prof_names[k];
        seconds[n] = c->prof[k];
    }
    return n;
}

/* GFLOP/s of C = A B^T at M x N x K (the to_hidden forward shape): the best of three
   trials of >= 0.3 s each, so that a moment of load elsewhere does not lower the bar. */
static double cpu_gemm_rate(Model *m, int M, int N, int K) {
    (void)m;
    float *A = malloc(sizeof(float) * (size_t)M * K), *B = malloc(sizeof(float) * (size_t)N * K);
    float *C = malloc(sizeof(float) * (size_t)M * N);
    if (!A || !B || !C) { free(A); free(B); free(C); return 0; }   /* "0 GFLOP/s": not measured */
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(i % 5) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
    double best = 0;
    for (int trial = 0; trial < 3; trial++) {
        int reps = 0;
        double t0 = omp_get_wtime(), t;
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
            reps++;
            t = omp_get_wtime() - t0;
        } while (t < 0.3 || reps < 2);
        double rate = 2.0 * M * N * K * reps / t / 1e9;
        if (rate > best) best = rate;
    }
    free(A); free(B); free(C);
    return best;
}

static const ModelBackend CPU_BACKEND = {
    .name = "cpu",
    .close = cpu_close,
    .info = cpu_info,
    .init_params = cpu_init,
    .read = cpu_read,
    .write = cpu_write,
    .accumulate = cpu_accumulate,
    .grad_buffer = cpu_grad_buffer,
    .update = cpu_update,
    .forward = cpu_fwd,
    .decoder_open = cpu_dec_open,
    .decoder_prefill = cpu_dec_prefill,
    .decoder_step = cpu_dec_step,
    .decoder_close = cpu_dec_close,
    .profile = cpu_profile,
    .profile_read = cpu_profile_read,
    .gemm_rate = cpu_gemm_rate,
};

/* Memory the system can give without swapping: MemAvailable (Linux), else free pages. */
static double available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    if (kb >= 0) return kb * 1024;
    long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * psz : -1;
}

int cpu_model_open(Model *m, char *err, size_t errlen) {
    m->impl = NULL;
    m->be = &CPU_BACKEND;
    blas_set_threads(m->opt.threads);   /* first: the split-K buffer is sized by the thread count */
    {
        /* estimated before allocating: with overcommit a too-large calloc succeeds and the
           OOM killer ends the run later without a word */
        const double acts = (double)cpu_acts_bytes(&m->cfg, m->opt.max_B, m->opt.max_T, omp_get_max_threads());
        const double state = 4.0 * (double)m->table.total * sizeof(real);   /* params, grads, m, v */
        const double avail = available_bytes();
        if (avail > 0 && acts + state > avail) {
            snprintf(err, errlen, "not enough memory: batch %d x %d needs %.2f GiB (activations %.2f GiB, "
                     "parameters, gradients and moments %.2f GiB) and %.2f GiB are available; use a smaller "
                     "--batch, --seq-len or model", m->opt.max_B, m->opt.max_T, (acts + state) / 1073741824.0,
                     acts / 1073741824.0, state / 1073741824.0, avail / 1073741824.0);
            return -1;
        }
    }
    CpuImpl *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return -1; }
    if (cpu_create(&c->cm, &m->cfg, err, errlen)) { free(c); return -1; }
    m->impl = c;
    c->adam_m = calloc(m->table.total, sizeof(real));
    c->adam_v = calloc(m->table.total, sizeof(real));
    if (!c->adam_m || !c->adam_v) {
        snprintf(err, errlen, "out of memory for the optimizer state (%zu parameters)", m->table.total);
        cpu_close(m);
        return -1;
    }
    if (cpu_alloc_acts(&c->cm, m->opt.max_B, m->opt.max_T, err, errlen)) {
        cpu_close(m);
        return -1;
    }
    for (int k = 0; k < PROF_PHASES; k++) {
        snprintf(c->bwd_names[k], sizeof c->bwd_names[k], "backward %s", PROF_NAMES[k]);
        c->prof_names[k] = PROF_NAMES[k];
        c->prof_names[PROF_PHASES + k] = c->bwd_names[k];
    }
    return 0;
}
