/* trainer/parallel.h: data parallelism across processes (issue 13).
 *
 * `mpirun -np N ./train ...` trains one model on N ranks. Every rank draws the whole
 * step's N x accum micro-batches from the shared seeded stream and keeps its own accum of
 * them (data/draw.h, data_draw_step), so N ranks with --accum A see exactly what one
 * process with --accum N*A sees;
 * each rank's model_accumulate divides by N*A, and the gradient buffers are summed in a
 * fixed order (each rank owns a fixed chunk and adds the ranks' copies of it in rank
 * order, then every rank gathers every chunk: no reduction whose order depends on the MPI
 * algorithm or on timing), so every rank holds the same bits and clipping and AdamW keep
 * the parameters identical. Between GPUs the sum goes through NCCL (FLASH_NCCL), set up
 * through MPI.
 *
 * Built with MPI when the Makefile finds mpicc (FLASH_MPI); without it, or when the
 * program is not started by mpirun, there is one rank and every function here is a
 * no-op or the identity: ./train is exactly the single process it always was. */
#ifndef FLASH_PARALLEL_H
#define FLASH_PARALLEL_H
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "model.h"

/* After model_process_init (which may re-execute the program), before anything else:
   joins the MPI job when started by mpirun (or another launcher that sets the
   OMPI_COMM_WORLD_/PMI_ variables). The other ranks' stdout goes to /dev/null: rank 0
   alone prints progress; errors on any rank still reach stderr. */
void par_init(int *argc, char ***argv);
/* MPI_Finalize (when joined); returns rc. Every rank must reach it (a consistent exit). */
int par_finish(int rc);
/* An error on this rank: stops every rank of the job (MPI_Abort) with the exit code; the
   message is printed first by the caller. Does nothing with one rank. */
void par_abort(int code);

int par_rank(void);          /* 0 .. par_size()-1 */
int par_size(void);          /* 1 without mpirun */
/* 1 when the step's gradients are summed across ranks: more than one rank, or mpirun -np 1
   with FLASH_ALLREDUCE_ONE_RANK=1 (sums anyway: proves the path on one GPU or CPU) */
int par_summing(void);
int par_local_rank(void);    /* the rank among those on this host: its GPU */
int par_is_root(void);       /* rank 0: writes the run directory and prints */
int par_built(void);         /* 1 when this build has MPI */
int par_nccl_built(void);    /* 1 when this build has NCCL (GPU all-reduce) */

/* The gradient sum's buffers for model m, allocated once before the first step, so that the
   step itself allocates nothing (a no-op when nothing is summed). 0, or -1 with a message. */
int par_grads_prepare(Model *m, char *err, size_t errlen);
/* Sums the model's gradient buffer over the ranks in place, in the fixed order described
   above (NCCL when the buffer is on a GPU and NCCL is built in; otherwise through host
   memory), in the buffers par_grads_prepare made. 0, or -1 with a message. */
int par_allreduce_grads(Model *m, char *err, size_t errlen);
/* The step's scalars: *loss becomes the sum over ranks (in rank order), *sig the first
   non-zero signal number in rank order (0: none), so every rank stops at the same step. */
void par_step_scalars(double *loss, int *sig);
/* 1 when every rank passes the same v (e.g. the checkpoint step each rank loaded). */
int par_all_same_u64(uint64_t v);

/* k doubles summed over the ranks in rank order, the same on every rank (collective; a
   no-op with one rank): the evaluation's shares (trainer/evaluate.h, EvalShare.sum). */
void par_sum_doubles(double *v, int k);

/* Seconds spent in the collectives above since the start (waiting for slower ranks
   included), and in their barrier-free transfer part only when par_timing_split(1) asked
   for a barrier before each gradient sum (bench: wait and transfer apart). */
double par_comm_seconds(void);
double par_wait_seconds(void);
void par_timing_split(int on);
/* The --help paragraph on ranks (train's, or bench's). */
void par_print_help(FILE *f, int bench);
/* "MPI, 2 ranks on 1 host (2 here); gradients summed in a fixed order ..." (collective: every
   rank calls it) */
void par_describe(char *buf, size_t n, Model *m);

#endif
