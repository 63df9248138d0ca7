/* model/model.h: the one interface between the trainer and a model backend.
 *
 * Everything above the model (train.c, trainer/, the subcommands, the tests of the
 * trainer) goes through these functions and nothing else. A backend (the CPU in
 * model/cpu_*.c, CUDA in cuda/) owns all the model's state in its own memory: parameters,
 * gradients, both Adam moments, activations, position tables, scratch. The host sees that
 * state only as float arrays in the parameter table's order (model_read / model_write),
 * which is what checkpoints, safetensors import/export and the parity tests use.
 *
 * Granularity: one training step is model_accumulate (all of the step's micro-batches:
 * only tokens go in, only the loss comes out) and model_update (clipping + AdamW on the
 * device: only the gradient norm comes out). Between the two the gradients can be summed
 * across processes (model_grad_buffer), which is where data parallelism plugs in.
 *
 * Choosing a backend: ModelDevice, from the command line's --device auto|cpu|cuda
 * (model_resolve_device turns auto into a concrete device). ModelDevice indexes the
 * registry of backends (model/registry.c): their names, whether each is usable here, how
 * each opens; nothing above the model compares a device's name or knows which backends
 * the build has. Every function returns 0 or a value as documented, or -1 with a message
 * in err; none exits the program. */
#ifndef FLASH_MODEL_INTERFACE_H
#define FLASH_MODEL_INTERFACE_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "optim.h"
#include "params.h"

typedef enum { DEVICE_AUTO = 0, DEVICE_CPU = 1, DEVICE_CUDA = 2 } ModelDevice;
typedef enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1, PRECISION_DEFAULT = 2 } ModelPrecision;

/* The whole state in the parameter table's order (same offsets in every kind). */
typedef enum { STATE_PARAMS = 0, STATE_GRADS = 1, STATE_ADAM_M = 2, STATE_ADAM_V = 3 } StateKind;

typedef struct {
    ModelDevice device;        /* DEVICE_AUTO is resolved by model_open */
    ModelPrecision precision;  /* CPU: fp32 only (PRECISION_DEFAULT means fp32 there) */
    int threads;               /* CPU: OpenMP threads, fixed before any buffer is sized; 0 = all */
    int gpu;                   /* CUDA: device ordinal (data parallel: the local rank) */
    /* Capacity of the training/eval activations: batches of up to max_B sequences of up
       to max_T tokens per forward. The backend may split a larger request into pieces
       (model_accumulate) but never allocates inside a step. */
    int max_B, max_T;
    /* Sequences per optimizer step (accumulation x batch), 0 = max_B. A GPU backend may
       reserve for that many and run a step as fewer, larger micro-batches. */
    int step_seqs;
    /* GPU: sequences per micro-batch model_accumulate uses; 0 = the fastest that fits. */
    int micro_batch;
} ModelOptions;

typedef struct Model Model;    /* opaque: each backend defines its own */

/* What a backend says about itself, for start-up lines and bench. */
typedef struct {
    char device[128];          /* "cpu: 16 threads, OpenBLAS SkylakeX" / "cuda: NVIDIA H200" */
    char precision[32];        /* "fp32", "fp32 (no TF32)", "bf16 (fp32 master weights)" */
    size_t state_bytes;        /* parameters, gradients, moments */
    size_t activation_bytes;   /* activations and scratch at the reserved capacity */
    int micro_batch;           /* sequences per forward that model_accumulate uses (0: as given) */
    int threads;               /* CPU: OpenMP threads (0 for a device backend) */
    char kernels[64];          /* CPU: the OpenBLAS core ("SkylakeX"); "" elsewhere */
    char detail[256];          /* more for the logs: why these kernels, how products use threads */
    size_t device_bytes;       /* GPU: device memory in use by this process (0 on the CPU) */
    char backend[16];          /* the registry's name of the backend: "cpu", "cuda" */
    char blas[16];             /* the library of its products, for bench lines: "OpenBLAS", "cuBLAS" */
    char decoder[96];          /* the open decoder's path (sample --bench prints it); "" when none is open */
} ModelInfo;

/* Call first in main, before any thread or BLAS call: the backends' process setup (the
   CPU: the BLAS kernels for this CPU, which may re-execute the program once, and
   flush-to-zero for denormals). */
void model_process_init(char **argv);
/* DEVICE_AUTO: the first backend after the CPU in the registry that is usable here (CUDA
   when built in and a GPU is visible), else the CPU. Asking for a backend that is not
   usable is an error naming why (CUDA: no support in the build, or no GPU visible). */
int model_resolve_device(ModelDevice want, ModelDevice *got, char *err, size_t errlen);
/* 1 when this build has the CUDA backend. */
int model_cuda_built(void);
/* The device's name as --device takes it: "auto", "cpu", "cuda" ("unknown" for no device). */
const char *model_device_name(ModelDevice d);
/* The device named name, exactly ("auto" included): 0, or -1 when none has that name. */
int model_device_parse(const char *name, ModelDevice *d);
/* The names model_device_parse takes, for messages: "auto, cpu or cuda". */
void model_device_names(char *buf, size_t n);
/* The backend a checkpoint's trained_on names by its first word ("cuda bf16": CUDA); the
   CPU when the word names no backend. */
ModelDevice model_device_trained_on(const char *trained_on);

/* What a backend's own gradient sum across processes needs of them (trainer/parallel.c
   gives it): this rank, the rank count, and a collective broadcast of bytes from rank 0
   to every rank (a communicator's id; `what` names it in the error). 0, or -1 with a
   message. */
typedef struct {
    int rank, size;
    int (*broadcast)(void *buf, size_t bytes, const char *what, char *err, size_t errlen);
} ModelRanks;
/* Sums the gradient buffer of model_grad_buffer (count elements of elem_size bytes) over
   the ranks in place, in the backend's memory. 0, or -1 with a message. */
typedef int (*ModelGradSum)(void *buf, size_t count, size_t elem_size, const ModelRanks *ranks,
                            char *err, size_t errlen);

/* Creates a model of this config on the device, parameters zero, moments zero,
   activations reserved for opt->max_B x opt->max_T. */
Model *model_open(const FlashConfig *cfg, const ModelOptions *opt, char *err, size_t errlen);
void model_close(Model *m);

const FlashConfig *model_config(const Model *m);
const ParamTable *model_table(const Model *m);
void model_info(const Model *m, ModelInfo *info);
/* Bytes of activations model_open would reserve for this capacity (checked before
   allocating, so that a run that cannot fit is refused with a message). */
size_t model_activation_bytes(const FlashConfig *cfg, const ModelOptions *opt);

/* Parameters from the spec's distributions (PyTorch defaults) for this seed; the two
   untrained buffers to their fixed values. Moments are left as they are. */
int model_init_params(Model *m, uint64_t seed, char *err, size_t errlen);
/* Copy one kind of state to or from a host array of model_table(m)->total floats. */
int model_read(Model *m, StateKind kind, float *host, char *err, size_t errlen);
int model_write(Model *m, StateKind kind, const float *host, char *err, size_t errlen);

/* One step's forward and backward. tokens: n_seq rows of T+1 (row-major), as
   micro-batches of B rows each (n_seq a multiple of B): the gradients are zeroed, then
   each micro-batch's gradient of loss / divisor is added, and the sum over micro-batches
   of (micro-batch mean loss) / divisor is returned. One process with accumulation A
   calls it with n_seq = A*B and divisor = A. A backend may run the rows as other
   micro-batch sizes where that is exact up to rounding (the GPU); the CPU runs them as
   given. Returns a non-finite value (NaN, or an infinity on the CPU) when the loss is not
   finite (the gradients are then undefined). */
double model_accumulate(Model *m, const int *tokens, int n_seq, int B, int T, int divisor);
/* The gradient buffer in the backend's memory (host or device, *on_device says which),
   table->total elements of *elem_size bytes, to be summed across processes in place
   between model_accumulate and model_update. */
void *model_grad_buffer(Model *m, size_t *count, size_t *elem_size, int *on_device);
/* The model's backend's own sum of that buffer across processes (CUDA with NCCL: on the
   GPUs), or NULL where the caller sums on the host (the CPU; CUDA without NCCL). */
ModelGradSum model_grad_sum(const Model *m);
/* 1 when some backend of this build has its own gradient sum (CUDA built with NCCL). */
int model_grad_sum_built(void);
/* Clipping (global or local, as o says), AdamW at the 1-based step t_step with learning
   rate lr. Returns the global gradient norm before clipping; when it is not finite,
   nothing is updated. */
double model_update(Model *m, const OptConfig *o, long t_step, double lr);

/* Forward only (evaluation, sampling by full forward): B rows of T+1 tokens. Returns the
   mean loss; losses (B*T) and logits (B*T*V) are filled on the host when not NULL. B and
   T must fit the reserved capacity. */
double model_forward(Model *m, const int *tokens, int B, int T, float *losses, float *logits);

/* The recurrent decoder (one per model): nseq sequences advance together. Open reserves
   everything for prompts of up to max_prompt tokens; prefill starts every sequence from
   the same prompt of P >= 1 tokens; step feeds token[i] to sequence i. Both write the next
   byte's logits, nseq x V floats, on the host. */
int model_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen);
int model_decoder_prefill(Model *m, const int *prompt, int P, float *logits);
int model_decoder_step(Model *m, const int *tokens, float *logits);
/* `steps` bytes a sequence sampled where the logits are (the GPU), each fed through the
   decoder before the next: from the logits of the last prefill or step, byte i of sequence
   q is sample_topk_u (trainer/sample.h) of its logits keeping the k largest, with the
   uniform u[i nseq + q], into tokens[i nseq + q]. The host's logits are not written. 0;
   -1 on an error; 1 when this decoder does not sample on its device (the caller samples
   on the host, from model_decoder_step's logits). */
int model_decoder_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens);
void model_decoder_close(Model *m);

/* Where a step's time goes (bench): profiling on or off; read gives up to max phases as
   (name, seconds summed since profiling was turned on), returns their count. */
void model_profile(Model *m, int on);
int model_profile_read(Model *m, const char **names, double *seconds, int max);
/* GFLOP/s of the backend's own product C = A B^T at M x N x K, in the model's precision
   (OpenBLAS's threads on the CPU, cuBLAS on the GPU): the best of three trials, bench's
   reference rate. 0 when it could not be measured (out of memory). */
double model_gemm_rate(Model *m, int M, int N, int K);

#endif
