/* model/model.c: the backend-neutral half of model/model.h: the options a backend receives,
 * the parameter table, and one dispatcher per call into the backend's table of functions
 * (backend.h). Which backends exist, and choosing one, is model/registry.c's. */
#include "backend.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every backend's process setup, in the registry's order (today the CPU's alone). */
void model_process_init(char **argv) {
    const BackendEntry *e;
    for (int d = DEVICE_AUTO + 1; (e = backend_entry((ModelDevice)d)); d++)
        if (e->process_init) e->process_init(argv);
}

/* The options as a backend receives them: device concrete, precision and threads settled. */
static int resolve_options(const ModelOptions *in, ModelOptions *out, char *err, size_t errlen) {
    *out = *in;
    if (model_resolve_device(in->device, &out->device, err, errlen)) return -1;
    if (in->max_B < 1 || in->max_T < 1) {
        snprintf(err, errlen, "the activations' capacity must be at least 1 x 1 (got %d x %d)",
                 in->max_B, in->max_T);
        return -1;
    }
    const BackendEntry *e = backend_entry(out->device);
    return e->settle ? e->settle(out, err, errlen) : 0;
}

/* the model's layer and options on this backend, or why not */
static int check_supported(const FlashConfig *cfg, ModelDevice d, char *err, size_t errlen) {
    const BackendEntry *e = backend_entry(d);
    char why[256];
    if (!e->supports || e->supports(cfg, why, sizeof why)) return 0;
    snprintf(err, errlen, "the %s backend cannot run this model: %s", e->name, why);
    return -1;
}

Model *model_open(const FlashConfig *cfg, const ModelOptions *opt, char *err, size_t errlen) {
    ModelOptions o;
    if (config_validate(cfg, err, errlen) || resolve_options(opt, &o, err, errlen) ||
        check_supported(cfg, o.device, err, errlen))
        return NULL;
    Model *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err, errlen, "out of memory"); return NULL; }
    m->cfg = *cfg;
    m->opt = o;
    if (params_table_build(&m->table, cfg)) {
        snprintf(err, errlen, "out of memory for the parameter table");
        free(m);
        return NULL;
    }
    if (backend_entry(o.device)->open(m, err, errlen)) {
        params_table_free(&m->table);
        free(m);
        return NULL;
    }
    return m;
}

void model_close(Model *m) {
    if (!m) return;
    if (m->be) m->be->close(m);
    params_table_free(&m->table);
    free(m);
}

const FlashConfig *model_config(const Model *m) { return &m->cfg; }
const ParamTable *model_table(const Model *m) { return &m->table; }
void model_info(const Model *m, ModelInfo *info) {
    memset(info, 0, sizeof *info);
    m->be->info(m, info);
    const BackendEntry *e = backend_entry(m->opt.device);
    snprintf(info->backend, sizeof info->backend, "%s", e->name);
    snprintf(info->blas, sizeof info->blas, "%s", e->blas);
}

size_t model_activation_bytes(const FlashConfig *cfg, const ModelOptions *opt) {
    ModelOptions o;
    char err[256];
    if (config_validate(cfg, err, sizeof err) || resolve_options(opt, &o, err, sizeof err)) return 0;
    const BackendEntry *e = backend_entry(o.device);
    return e->activation_bytes ? e->activation_bytes(cfg, &o) : 0;   /* else model_info, once open */
}

int model_init_params(Model *m, uint64_t seed, char *err, size_t errlen) {
    return m->be->init_params(m, seed, err, errlen);
}
int model_read(Model *m, StateKind kind, float *host, char *err, size_t errlen) {
    return m->be->read(m, kind, host, err, errlen);
}
int model_write(Model *m, StateKind kind, const float *host, char *err, size_t errlen) {
    return m->be->write(m, kind, host, err, errlen);
}
double model_accumulate(Model *m, const int *tokens, int n_seq, int B, int T, int divisor) {
    return m->be->accumulate(m, tokens, n_seq, B, T, divisor);
}
void *model_grad_buffer(Model *m, size_t *count, size_t *elem_size, int *on_device) {
    return m->be->grad_buffer(m, count, elem_size, on_device);
}
double model_update(Model *m, const OptConfig *o, long t_step, double lr) {
    return m->be->update(m, o, t_step, lr);
}
double model_forward(Model *m, const int *tokens, int B, int T, float *losses, float *logits) {
    return m->be->forward(m, tokens, B, T, losses, logits);
}
int model_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen) {
    return m->be->decoder_open(m, nseq, max_prompt, err, errlen);
}
int model_decoder_prefill(Model *m, const int *prompt, int P, float *logits) {
    return m->be->decoder_prefill(m, prompt, P, logits);
}
int model_decoder_step(Model *m, const int *tokens, float *logits) {
    return m->be->decoder_step(m, tokens, logits);
}
int model_decoder_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens) {
    return m->be->decoder_sample ? m->be->decoder_sample(m, steps, k, temperature, u, tokens) : 1;
}
void model_decoder_close(Model *m) { m->be->decoder_close(m); }
void model_profile(Model *m, int on) { m->be->profile(m, on); }
int model_profile_read(Model *m, const char **names, double *seconds, int max) {
    return m->be->profile_read(m, names, seconds, max);
}
double model_gemm_rate(Model *m, int M, int N, int K) { return m->be->gemm_rate(m, M, N, K); }
