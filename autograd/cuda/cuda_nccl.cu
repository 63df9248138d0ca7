/* autograd/cuda/cuda_nccl.cu: the CUDA backend's gradient sum across processes (its
 * registry entry's grad_sum, model/registry.c): NCCL between GPUs, one per local rank, the
 * gradient buffer summed in place on the GPU. Built only with NCCL (FLASH_NCCL: the
 * Makefile's NCCL=1, which needs MPI and CUDA); the MPI part, broadcasting the
 * communicator's id, is the caller's (ModelRanks.broadcast, trainer/parallel.c). */
#ifdef FLASH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>

extern "C" {
#include "backend.h"
}

/* The communicator is made at the first sum (every rank reaches it at the same step), its
   id broadcast from rank 0. Run on one GPU with one rank (FLASH_ALLREDUCE_ONE_RANK,
   tests/run_cuda.sh); never on several GPUs. */
static ncclComm_t g_nccl;
static cudaStream_t g_nccl_stream;
static int g_nccl_ready = 0;

extern "C" int cuda_nccl_grad_sum(void *buf, size_t count, size_t elem_size, const ModelRanks *ranks, char *err,
                                  size_t errlen) {
    if (elem_size != sizeof(float)) {
        snprintf(err, errlen, "the NCCL gradient sum takes fp32 gradients (got %zu-byte elements)", elem_size);
        return -1;
    }
    if (!g_nccl_ready) {
        ncclUniqueId id;
        if (ranks->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
            snprintf(err, errlen, "ncclGetUniqueId failed");
            return -1;
        }
        if (ranks->broadcast(&id, sizeof id, "NCCL id", err, errlen)) return -1;
        int dev_now = 0;
        cudaGetDevice(&dev_now);   /* the model's device (ModelOptions.gpu = local rank) */
        if (cudaStreamCreateWithFlags(&g_nccl_stream, cudaStreamNonBlocking) != cudaSuccess) {
            snprintf(err, errlen, "cudaStreamCreate failed on GPU %d", dev_now);
            return -1;
        }
        ncclResult_t r = ncclCommInitRank(&g_nccl, ranks->size, id, ranks->rank);
        if (r != ncclSuccess) {
            snprintf(err, errlen, "ncclCommInitRank: %s", ncclGetErrorString(r));
            return -1;
        }
        g_nccl_ready = 1;
        int v = 0;
        ncclGetVersion(&v);
        if (ranks->rank == 0)
            printf("nccl: communicator of %d rank%s ready (NCCL %d), this rank on GPU %d\n", ranks->size,
                   ranks->size == 1 ? "" : "s", v, dev_now);
    }
    /* NCCL's ring and tree sums are deterministic for a fixed rank count, topology and size */
    float *dev = (float *)buf;
    ncclResult_t r = ncclAllReduce(dev, dev, count, ncclFloat, ncclSum, g_nccl, g_nccl_stream);
    if (r != ncclSuccess) { snprintf(err, errlen, "ncclAllReduce: %s", ncclGetErrorString(r)); return -1; }
    cudaError_t e = cudaStreamSynchronize(g_nccl_stream);
    if (e != cudaSuccess) { snprintf(err, errlen, "NCCL all-reduce: %s", cudaGetErrorString(e)); return -1; }
    return 0;
}
#endif
