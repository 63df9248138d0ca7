/* model/backend.h: what a backend implements behind model/model.h (for backends only;
 * the trainer includes model.h). model/model.c owns struct Model, builds the config's
 * parameter table, and dispatches each call to the backend's table of functions. */
#ifndef FLASH_MODEL_BACKEND_H
#define FLASH_MODEL_BACKEND_H
#include "model.h"

typedef struct ModelBackend {
    const char *name;  /* "cpu", "cuda" */
    void (*close)(Model *m);
    void (*info)(const Model *m, ModelInfo *info);
    int (*init_params)(Model *m, uint64_t seed, char *err, size_t errlen);
    int (*read)(Model *m, StateKind kind, float *host, char *err, size_t errlen);
    int (*write)(Model *m, StateKind kind, const float *host, char *err, size_t errlen);
    double (*accumulate)(Model *m, const int *tokens, int n_seq, int B, int T, int divisor);
    void *(*grad_buffer)(Model *m, size_t *count, size_t *elem_size, int *on_device);
    double (*update)(Model *m, const OptConfig *o, long t_step, double lr);
    double (*forward)(Model *m, const int *tokens, int B, int T, float *losses, float *logits);
    int (*decoder_open)(Model *m, int nseq, int max_prompt, char *err, size_t errlen);
    int (*decoder_prefill)(Model *m, const int *prompt, int P, float *logits);
    int (*decoder_step)(Model *m, const int *tokens, float *logits);
    void (*decoder_close)(Model *m);
    void (*profile)(Model *m, int on);
    int (*profile_read)(Model *m, const char **names, double *seconds, int max);
    double (*gemm_rate)(Model *m, int M, int N, int K);
} ModelBackend;

struct Model {
    const ModelBackend *be;
    FlashConfig cfg;
    ParamTable table;     /* built by model.c before the backend opens */
    ModelOptions opt;     /* as resolved (device concrete) */
    void *impl;           /* the backend's own state */
};

/* Each backend's constructor: fills m->be and m->impl (m->cfg, m->table, m->opt are set).
   0, or -1 with a message (m->impl left NULL). */
int cpu_model_open(Model *m, char *err, size_t errlen);
/* The CPU's process setup (model_process_init): BLAS kernels, denormals. */
void cpu_process_init(char **argv);
/* What cpu_model_open would reserve for activations and scratch (opt resolved: threads > 0). */
size_t cpu_activation_bytes(const FlashConfig *cfg, const ModelOptions *opt);
#ifdef FLASH_CUDA
int cuda_model_open(Model *m, char *err, size_t errlen);
/* CUDA devices visible (0 when none or no driver); name of device `ordinal`. */
int cuda_device_count(void);
#endif

#endif
