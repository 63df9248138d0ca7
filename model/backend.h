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
    /* model_decoder_sample; NULL: the host samples (model.c answers 1) */
    int (*decoder_sample)(Model *m, int steps, int k, double temperature, const double *u, int *tokens);
} ModelBackend;

struct Model {
    const ModelBackend *be;
    FlashConfig cfg;
    ParamTable table;     /* built by model.c before the backend opens */
    ModelOptions opt;     /* as resolved (device concrete) */
    void *impl;           /* the backend's own state */
};

/* One backend of the registry (model/registry.c, indexed by ModelDevice): how the trainer
   chooses, sizes and opens it. Adding a backend is an enum value in model.h, its entry
   there, and its functions here. A backend left out of the build keeps its entry (its name
   still parses) with open NULL and available() saying why. */
typedef struct BackendEntry {
    const char *name;   /* --device's name, trained_on's first word: "cpu", "cuda" */
    const char *blas;   /* the library of its products, for bench lines: "OpenBLAS", "cuBLAS" */
    /* 1 when built in and a device is visible; 0 with the reason in why (why may be NULL) */
    int (*available)(char *why, size_t whylen);
    /* the constructor: fills m->be and m->impl (m->cfg, m->table, m->opt are set). 0, or -1
       with a message (m->impl left NULL). NULL: not in this build */
    int (*open)(Model *m, char *err, size_t errlen);
    /* 1 when the backend computes this model (its layer and attention options); 0 with
       the reason in why. NULL: every valid config */
    int (*supports)(const FlashConfig *c, char *why, size_t whylen);
    /* the options as the backend takes them (device already concrete): its own defaults
       (precision, threads) in place, or -1 refusing one. NULL: taken as given */
    int (*settle)(ModelOptions *o, char *err, size_t errlen);
    /* what open would reserve for activations (o settled); NULL: known only once open */
    size_t (*activation_bytes)(const FlashConfig *cfg, const ModelOptions *o);
    /* process setup, from model_process_init before any thread starts; NULL: none */
    void (*process_init)(char **argv);
    /* the gradient sum across processes on the backend's memory; NULL: the caller's own
       sum on the host (trainer/parallel.c: MPI in a fixed order) */
    ModelGradSum grad_sum;
} BackendEntry;

/* The registry's entry of a device (NULL for DEVICE_AUTO and for values past the table). */
const BackendEntry *backend_entry(ModelDevice d);

/* The CPU: constructor, process setup (BLAS kernels, denormals), its settling of the
   options (fp32 only, threads 0 = every core), what cpu_model_open would reserve for
   activations and scratch (opt settled: threads > 0). */
int cpu_model_open(Model *m, char *err, size_t errlen);
void cpu_process_init(char **argv);
int cpu_settle_options(ModelOptions *o, char *err, size_t errlen);
int cpu_supports(const FlashConfig *c, char *why, size_t whylen);
size_t cpu_activation_bytes(const FlashConfig *cfg, const ModelOptions *opt);
#ifdef FLASH_CUDA
int cuda_model_open(Model *m, char *err, size_t errlen);
/* CUDA devices visible (0 when none or no driver); name of device `ordinal`. */
int cuda_device_count(void);
int cuda_supports(const FlashConfig *c, char *why, size_t whylen);
#ifdef FLASH_NCCL
/* The CUDA backend's grad_sum (autograd/cuda/cuda_nccl.cu): NCCL's all-reduce of the fp32
   gradients in place, its communicator made at the first call. */
int cuda_nccl_grad_sum(void *buf, size_t count, size_t elem_size, const ModelRanks *ranks, char *err,
                       size_t errlen);
#endif
#endif

#endif
