/* trainer/bench.c: ./train bench. In one process: the machine's GEMM rate now, on the
 * step's largest matrix product; then warm-up and timed full training steps (forward,
 * backward, clipping, AdamW); the step's FLOP rate by the FLOP model of
 * docs/model.md and its ratio to the GEMM rate. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include "model.h"
#include "optim.h"
#include "options.h"
#include "parallel.h"
#include "rng.h"
#include "runtime.h"



/* Matrix-multiply FLOPs per token of one forward, counting the quadratic attention's full
   C x C blocks (docs/model.md, "The FLOP model"): per layer to_hidden 2*d*2e, to_qk 2*d*s,
   scores 2*C*s, values 2*C*e, linear KV 2*s*e and read-out 2*s*e, to_out 2*e*d; logits 2*d*V. */
static double flops_per_token_forward(const FlashConfig *c, int T) {
    double d = c->dim, e = config_hidden(c), s = c->query_key_dim, C = c->group_size, V = c->num_tokens;
    /* the linear part: plain KV and read-out 2 s e each; taylor's [KV | Z] sums 2 F e and
       read-out [num | den] 2 F (e + 1) (docs/model.md) */
    const double F = config_taylor_width(c), lin = F ? 2 * F * e + 2 * F * (e + 1) : 4 * s * e;
    double layer = 2 * d * 2 * e + 2 * d * s + 2 * C * s + 2 * C * e + lin + 2 * e * d;
    /* gau: the quadratic attention over the whole sequence (T x T, full square counted), no
       linear part */
    if (c->model == MODEL_GAU) layer = 2 * d * 2 * e + 2 * d * s + 2.0 * T * s + 2.0 * T * e + 2 * e * d;
    return c->depth * layer + 2 * d * V;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void cpu_name(char *buf, size_t n) {
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) { p += 2; p[strcspn(p, "\n")] = 0; snprintf(buf, n, "%s", p); }
            break;
        }
    fclose(f);
}

#define BENCH_MAX_STEPS 1000000   /* the timed steps are counted in an int */

int cmd_bench(int argc, char **argv) {
    Options o;
    char err[1024];
    int rc = options_parse(&o, CMD_BENCH, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    o.opt.warmup = 0;
    if (o.opt.total > BENCH_MAX_STEPS) {
        fprintf(stderr, "error: bench --steps must be in [1, %d], got %ld\n", BENCH_MAX_STEPS, o.opt.total);
        return 2;
    }
    if (o.opt.total < 1 || options_validate(&o, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    const int B = o.batch, T = o.seq_len, A = o.accum, steps = (int)o.opt.total, R = par_size();
    double c0 = 0, w0 = 0;   /* the collectives' seconds before the timed steps */
    par_timing_split(1);
    const FlashConfig *c = &o.model;
    ModelOptions mo = {.device = o.device, .precision = o.precision, .threads = o.threads,
                       .gpu = par_local_rank(), .max_B = B, .max_T = T, .step_seqs = A * B};
    Model *m = model_open(c, &mo, err, sizeof err);   /* fixes the threads first */
    if (!m || model_init_params(m, o.seed, err, sizeof err) || par_grads_prepare(m, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        model_close(m);
        return 1;
    }
    ModelInfo info;
    model_info(m, &info);
    struct utsname un;
    uname(&un);
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    printf("machine: %s, %d cores visible, %s %s\n", cpu, omp_get_num_procs(), un.sysname, un.machine);
    printf("device: %s, %s%s%s\n", info.device, info.precision, info.detail[0] ? "; " : "", info.detail);

    const int M = B * T, N = 2 * config_hidden(c), K = c->dim;
    double gemm = model_gemm_rate(m, M, N, K);
    printf("gemm: %d x %d x %d (A B^T), %s, %s: %.1f GFLOP/s\n", M, N, K,
           info.blas, info.precision, gemm);
    /* the device's peak as this call measures it: a large square product in the model's
       precision (bf16 operands on the GPU in bf16), the denominator of the MFU below */
    const int gpu = info.device_bytes > 0;
    const int PK = gpu ? 8192 : 1024;
    double peak = model_gemm_rate(m, PK, PK, PK);
    if (peak < gemm) peak = gemm;   /* the step's own product may run faster still */
    printf("peak: %d x %d x %d (A B^T), %s, %s: %.1f GFLOP/s (the MFU's denominator)\n", PK, PK, PK,
           info.blas, info.precision, peak);

    /* the same B sequences in each of the A micro-batches */
    int *tok = malloc(sizeof(int) * (size_t)A * B * (T + 1));
    double *step_s = malloc(sizeof(double) * (size_t)steps);
    if (!tok || !step_s) { fprintf(stderr, "error: out of memory\n"); model_close(m); return 1; }
    Rng rng;
    rng_seed(&rng, o.seed);
    for (int i = 0; i < B * (T + 1); i++) tok[i] = (int)rng_below(&rng, (uint64_t)c->num_tokens);
    for (int a = 1; a < A; a++) memcpy(tok + (size_t)a * B * (T + 1), tok, sizeof(int) * (size_t)B * (T + 1));
    char shape[96];
    if (c->model == MODEL_GAU) snprintf(shape, sizeof shape, "gau (attention over the whole sequence)");
    else snprintf(shape, sizeof shape, "C %d%s", c->group_size,
                  c->linear_attn == LINEAR_TAYLOR ? ", taylor linear attention" : "");
    printf("model: %zu trained parameters, d %d, L %d, e %d, s %d, %s; batch %d x %d x %d tokens; "
           "activations %.0f MiB\n", model_table(m)->n_trained, c->dim, c->depth, config_hidden(c),
           c->query_key_dim, shape, A, B, T, info.activation_bytes / 1048576.0);
    double t_run = 0, loss = 0, t_opt = 0;
    /* On the GPU the timed steps run unprofiled (profiling events would break the step's
       graph apart), and the breakdown comes from as many profiled steps after them; on the
       CPU profiling costs nothing measurable and the timed steps are profiled. */
    for (int s = -2; s < steps; s++) {     /* two warm-up steps, then the timed ones */
        if (s == 0 && !gpu) model_profile(m, 1);
        double t0 = now_s();
        loss = model_accumulate(m, tok, A * B, B, T, R * A);
        if (par_summing()) {   /* data parallel: wait for the slowest rank, then the sums of a step */
            if (s == 0) { c0 = par_comm_seconds(); w0 = par_wait_seconds(); }
            int sig = 0;
            par_step_scalars(&loss, &sig);
            if (par_allreduce_grads(m, err, sizeof err)) { fprintf(stderr, "error: %s\n", err); par_abort(1); return 1; }
        }
        double t1 = now_s();
        model_update(m, &o.opt, s + 3, lr_at(&o.opt, s < 0 ? 0 : s));
        if (s >= 0) { step_s[s] = now_s() - t0; t_run += step_s[s]; t_opt += now_s() - t1; }
    }
    double t_prof = t_run;
    if (gpu) {
        model_profile(m, 1);
        t_prof = 0;
        for (int s = 0; s < steps; s++) {
            double t0 = now_s();
            model_accumulate(m, tok, A * B, B, T, A);
            model_update(m, &o.opt, steps + s + 3, lr_at(&o.opt, s));
            t_prof += now_s() - t0;
        }
    }
    /* the median step: a moment of load elsewhere on a shared machine moves the mean */
    qsort(step_s, (size_t)steps, sizeof(double), cmp_double);
    double median = steps % 2 ? step_s[steps / 2] : 0.5 * (step_s[steps / 2 - 1] + step_s[steps / 2]);
    double tps = (double)A * B * T / median;
    double step_gflops = 3 * flops_per_token_forward(c, T) * tps / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("steps: %d timed in %.2f s (mean %.3f s, median %.3f s, min %.3f, max %.3f), last loss %.4f\n",
           steps, t_run, t_run / steps, median, step_s[0], step_s[steps - 1], loss);
    printf("throughput (median step): %.0f tokens/s; %.1f GFLOP/s by the FLOP model (%.1f MFLOP per token, fwd+bwd = 3x fwd)\n",
           tps, step_gflops, 3 * flops_per_token_forward(c, T) / 1e6);
    printf("ratio to the GEMM rate measured above: %.3f; model FLOP utilisation (MFU) against the peak "
           "measured above: %.3f\n", step_gflops / gemm, step_gflops / peak);
    long p_steps = 0, p_tokens = 0;
    if (o.preset_given && !options_preset_budget(o.preset, &p_steps, &p_tokens)) {
        const double total = (double)p_steps * p_tokens, hours = total / (tps * R) / 3600;
        printf("projected: --preset %s's %ld steps of %ld tokens (%.2fG tokens) at this rate (%.0f tokens/s%s): "
               "%.1f hours (%.1f days)\n", o.preset, p_steps, p_tokens, total / 1e9, tps * R,
               R > 1 ? ", all ranks" : "", hours, hours / 24);
    }
    printf("where a step's time goes (ms per step, forward / backward):\n");
    const char *names[64];
    double secs[64];
    const int np = model_profile_read(m, names, secs, 64);
    for (int k = 0; k < np; k++) {
        if (!strncmp(names[k], "backward ", 9)) continue;   /* printed beside its forward */
        double bwd = NAN;
        for (int j = 0; j < np; j++)
            if (!strncmp(names[j], "backward ", 9) && !strcmp(names[j] + 9, names[k])) bwd = secs[j];
        const double both = secs[k] + (isnan(bwd) ? 0 : bwd);
        printf("  %-24s %8.1f %8.1f  (%4.1f%%)\n", names[k], 1e3 * secs[k] / steps,
               1e3 * (isnan(bwd) ? 0 : bwd) / steps, 100 * both / t_prof);
    }
    printf("  %-24s %8.1f           (%4.1f%%)\n", "clip + AdamW", 1e3 * t_opt / steps, 100 * t_opt / t_run);
    if (par_summing()) {
        const double wait = par_wait_seconds() - w0, comm = par_comm_seconds() - c0;
        printf("  %-24s %8.1f           (%4.1f%%)\n", "wait for slowest rank", 1e3 * wait / steps, 100 * wait / t_run);
        printf("  %-24s %8.1f           (%4.1f%%)\n", "all-reduce (comm)", 1e3 * comm / steps, 100 * comm / t_run);
        char par[256];
        par_describe(par, sizeof par, m);
        printf("data parallel: %s; per rank %d x %d x %d tokens, global %.0f tokens/s\n", par, A, B, T, tps * R);
        printf("bench-parallel: ranks=%d comm_ms=%.3f wait_ms=%.3f step_ms=%.3f comm_share=%.4f\n", R,
               1e3 * comm / steps, 1e3 * wait / steps, 1e3 * t_run / steps, comm / t_run);
    }
    printf("peak resident memory: %.0f MiB\n", ru.ru_maxrss / 1024.0);
    if (gpu) {
        model_info(m, &info);   /* device memory now: every buffer is allocated at open */
        printf("device memory in use: %.0f MiB (state %.0f MiB, activations %.0f MiB, micro-batch %d sequences)\n",
               info.device_bytes / 1048576.0, info.state_bytes / 1048576.0, info.activation_bytes / 1048576.0,
               info.micro_batch);
    }
    printf("bench: tok_per_s=%.1f step_gflops=%.1f gemm_gflops=%.1f ratio=%.3f peak_gflops=%.1f mfu=%.3f "
           "threads=%d core=%s\n", tps, step_gflops, gemm, step_gflops / gemm, peak, step_gflops / peak,
           info.threads, info.kernels[0] ? info.kernels : "none");
    free(tok); free(step_s);
    model_close(m);
    return 0;
}
