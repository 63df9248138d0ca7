/* autograd/cuda/cuda_model.h: the CUDA backend's own state, shared by its files (cuda_model.cu:
 * the model, the step and the update; layer.h: the layer's rooms; cuda_decode.cu and
 * decode_persistent.cu: the recurrent decoder, over decode.h). */
#ifndef FLASH_CUDA_MODEL_H
#define FLASH_CUDA_MODEL_H
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "backend.h"
#include "config.h"
#include "params.h"
}
#include "cuda_ops.h"

typedef __nv_bfloat16 bf16;

#define CHUNK_ELEMS 16384    /* optimizer: elements per block */
#define ALIGN_ELEMS 64       /* device tensors start at multiples of 256 bytes */

/* every buffer of the activation arena, named once */
enum {
    A_RES, A_NSTAT, A_XS, A_HID_U, A_HID, A_QK4, A_SIM, A_ATTN, A_KV, A_ATT, A_GATED,
    A_LNF_OUT, A_LNF_STAT, A_LOGITS, A_LOSSES, A_POS, A_ROT_COS, A_ROT_SIN, A_BIAS_DIST,
    A_D_RES, A_D_XS, A_D_HID, A_D_QK4, A_D_ATT, A_D_GATED, A_D_KV, A_DSIM, A_D_LOGITS, A_D_LNF,
    A_ROW_SCRATCH, A_COL_SCRATCH, A_XHAT_SCRATCH, A_DIST_SCRATCH,
    /* the Taylor linear part (empty otherwise): its feature maps (scratch), its state per
       layer and group [KV | Z], its output y and denominator per layer, the normalisation's
       [num | den] (scratch), the backward's scratch, and a column of ones (Z = fk^T 1) */
    A_TFQ, A_TFK, A_TKV, A_TY, A_TDEN, A_TNUM, A_TD_FQ, A_TD_FK, A_TD_KV, A_ONES,
    /* FLASH-Quad's attention over the whole sequence (empty otherwise): one chunk's scores,
       weights and their gradient, z for the gains' gradient, the bias's sums per distance */
    A_GS, A_GA, A_GDZ, A_GZ, A_GPART, A_GTOTAL,
    /* bf16 twins (bf16 precision only) */
    H_XS, H_HID, H_HID_U, H_QK4, H_ATTN, H_KV, H_GATED, H_LNF_OUT, H_D_LOGITS, H_D_RES, H_D_ATT, H_D_KV,
    H_DSIM, H_D_HID, H_ATT, H_D_GATED, H_D_QK4,
    H_TFQ, H_TFK, H_TKV, H_TNUM, H_TD_KV, H_ONES,
    H_GA, H_GDZ,
    A_COUNT
};

typedef struct {
    int dev;
    char name[256];
    int use_bf16;                     /* precision */
    cudaStream_t st;
    cublasHandle_t blas;
    void *blas_ws;
    /* state: params | grads | m | v, dtab.total floats each. dtab is the parameter table
       with every tensor's offset rounded up to ALIGN_ELEMS: cuBLAS takes its fast kernels
       only for 16-byte aligned operands, and the host table packs tensors back to back.
       host_dev stages a whole state in this layout for read/write. */
    ParamTable dtab;
    float *host_dev;
    float *state, *params, *grads, *adam_m, *adam_v;
    bf16 *params_h;                   /* bf16 twin of the parameters (bf16 only) */
    ModelParams p, g;                 /* named device pointers */
    /* optimizer tables */
    OptChunk *chunks;
    int nchunks, *first, *decays;
    float *clip;
    double *chunk_ss, *scalars;       /* scalars: [0] grad norm, [1] loss accumulator */
    /* capacity */
    int capB, capTp, cap_seqs;        /* rows per forward capB * capTp; sequences per step */
    size_t Nmax;
    void *arena;
    size_t arena_bytes, state_bytes;
    size_t off[A_COUNT], size[A_COUNT];
    /* host side: pinned staging for tokens and the embedding's row lists */
    int *h_stage, *d_stage;
    size_t stage_ints;
    float *h_pos, *h_rot;             /* host tables, uploaded when the buffers change */
    int micro_fixed;                  /* ModelOptions.micro_batch */
    /* the step as a CUDA graph, for the shape graph_key = (n_seq, B, T, divisor) */
    cudaGraphExec_t step_graph;
    int graph_ready, graph_off, graph_key[4];
    /* profiling */
    int prof;
    cudaEvent_t ev[64];
    double prof_s[32];               /* seconds per profile phase */
    /* the recurrent decoder's state (decode.h), NULL until opened; gau's sampler
       (gau_decode.cu) instead for --model gau */
    struct CudaDecoder *dec;
    struct CudaGauDecoder *gau_dec;
} CudaModel;

/* The Taylor part's widths: F features (the symmetric form, below) stored Fp wide (zero features after F), a state row
   of E1p >= e + 1 columns ([KV | Z | 0..]), SE entries per group's state. Fp and E1p are
   multiples of 8: bf16 products with leading dimensions off 8 leave the tensor cores */
typedef struct { int F, Fp, E1p; size_t SE; } TaylorDims;
static inline TaylorDims taylor_dims(const FlashConfig *c) {
    TaylorDims t;
    /* the GPU keeps each unordered pair of x x^T once (kernels_taylor.cu): 1 + s + s(s+1)/2
       features with the same phi(q) . phi(k) as the reference's 1 + s + s^2 */
    const int s = c->query_key_dim;
    t.F = config_taylor_width(c) ? 1 + s + s * (s + 1) / 2 : 0;
    t.Fp = (t.F + 7) / 8 * 8;
    t.E1p = (config_hidden(c) + 1 + 7) / 8 * 8;
    t.SE = (size_t)t.Fp * t.E1p;
    return t;
}

/* FLASH-Quad: a sequence is padded to a multiple of GAU_PAD_ROWS (FLASH: of the group
   size); its attention runs a chunk of query rows at a time against all earlier keys, so
   that its scratch grows linearly with T. The chunk's rows: 512 in bf16, 256 in fp32, the
   fastest of 64 to 512 at T = 1,024 on the H200 (docs/cuda-notes.md); FLASH_GAU_CHUNK_ROWS
   (a multiple of 64 up to 1,024) sets them for A/B runs, read at the first model's open */
#define GAU_PAD_ROWS 64
extern int gau_chunk_env;   /* FLASH_GAU_CHUNK_ROWS, or 0 (cuda_model.cu) */
static inline int cuda_pad_unit(const FlashConfig *c) {
    return c->model == MODEL_GAU ? GAU_PAD_ROWS : c->group_size;
}
static inline int gau_chunk_rows(int Tp, int bf16) {
    const int rows = gau_chunk_env > 0 ? gau_chunk_env : bf16 ? 512 : 256;
    return Tp < rows ? Tp : rows;
}

#define CM(m) ((CudaModel *)(m)->impl)
#define ACT(cm, k) ((float *)((char *)(cm)->arena + (cm)->off[k]))
#define TWIN(cm, k) ((cm)->use_bf16 ? (bf16 *)((char *)(cm)->arena + (cm)->off[k]) : (bf16 *)NULL)
#define TW(p) ((bf16_t *)(p))
/* the bf16 twin of parameter x (a pointer into cm->params), NULL in fp32 */
static inline const bf16 *param_twin(const CudaModel *cm, const float *x) {
    return cm->params_h ? cm->params_h + (x - cm->params) : NULL;
}

static inline int cuda_fail(cudaError_t e, const char *what, char *err, size_t errlen) {
    if (e == cudaSuccess) return 0;
    snprintf(err, errlen, "CUDA: %s: %s", what, cudaGetErrorString(e));
    return -1;
}


/* row-major C = alpha op(A) op(B) + beta C, batched with strides (cuda_model.cu) */
void cuda_gemm(CudaModel *cm, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               const bf16 *Ah, int lda, long long sA, const float *B, const bf16 *Bh, int ldb,
               long long sB, float beta, float *C, int ldc, long long sC, int batch);
/* the same with C of type ctype (CUDA_R_32F or CUDA_R_16BF: a product that writes its output
   in bf16 only) */
void cuda_gemm_typed(CudaModel *cm, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                     const bf16 *Ah, int lda, long long sA, const float *B, const bf16 *Bh, int ldb,
                     long long sB, float beta, void *C, cudaDataType_t ctype, int ldc, long long sC,
                     int batch);

/* profiling (cuda_model.cu): events recorded on the stream between the phases of a pass */
enum { P_EMBED, P_NORM, P_TO_HIDDEN, P_ROTARY, P_ATTENTION, P_GATE, P_TO_OUT, P_HEAD, P_OPT, P_PHASES };
/* forward phases, then the same phases of the backward (index + P_PHASES) */
typedef struct { int n; int phase[64]; } Marks;
/* records the end of a phase (-1: a start, no phase); with profiling off records nothing.
   Events are few (64): near the end it collects the times and starts again, so that one
   layer pass at a time is profiled */
void cuda_mark(CudaModel *cm, Marks *mk, int phase);
void cuda_marks_collect(CudaModel *cm, Marks *mk);   /* waits, adds the times to prof_s */
/* in a function with `CudaModel *cm` and `Marks *mk` */
#define MARK(ph) cuda_mark(cm, mk, (ph))
/* the forward over B sequences padded to Tp, tokens on the device (cuda_model.cu);
   keep_state: the linear attention's scanned state S kept in fp32 too (the decoder's prefill
   copies it; a training step reads only its bf16 twin) */
void cuda_forward_pass(Model *m, const int *d_tok, int tstride, int B, int T, int Tp,
                       double loss_weight, double *loss_acc, int keep_state);

/* decoder (cuda_decode.cu) */
int cuda_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen);
/* the forward over B sequences of T tokens (rows of T + 1 as accumulate takes them; the last
   column unused) and the logits of each one's last row (B x V, host) (cuda_model.cu) */
int cuda_forward_last(Model *m, const int *tokens, int B, int T, float *logits);
/* --model gau's sampler (gau_decode.cu), behind cuda_decoder_*: a forward per byte */
int gau_cuda_decoder_open(Model *m, int nseq, int max_prompt, char *err, size_t errlen);
int gau_cuda_decoder_prefill(Model *m, const int *prompt, int P, float *logits);
int gau_cuda_decoder_step(Model *m, const int *tokens, float *logits);
void gau_cuda_decoder_close(Model *m);
int cuda_decoder_prefill(Model *m, const int *prompt, int P, float *logits);
int cuda_decoder_step(Model *m, const int *tokens, float *logits);
/* model_decoder_sample (cuda_decode.cu): 1 (the host samples) for gau, the persistent path
   and under FLASH_CUDA_DECODE_SAMPLE=0 */
int cuda_decoder_sample(Model *m, int steps, int k, double temperature, const double *u, int *tokens);
void cuda_decoder_close(Model *m);
/* which of the decoder's paths an open decoder takes, for bench lines and tests ("" when none is open) */
const char *cuda_decoder_kind(const Model *m);

#endif
