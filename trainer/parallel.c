/* trainer/parallel.c: data parallelism across processes: MPI on the CPU, NCCL between GPUs
 * (see parallel.h). Without FLASH_MPI everything here is the one-rank identity. */
#include "parallel.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "runtime.h"

#ifdef FLASH_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1;
#ifdef FLASH_MPI
static int g_joined = 0;   /* MPI_Init done, MPI_Finalize not yet */
#endif
static double g_comm_s = 0, g_wait_s = 0;
static int g_split_timing = 0;
/* FLASH_ALLREDUCE_ONE_RANK=1 under mpirun -np 1: run the gradient sum although there is
   nothing to add, so that one GPU proves the NCCL path (and one CPU the MPI one) */
static int g_sum_one_rank = 0;
/* The gradient sum's buffers, allocated once by par_grads_prepare before the first step (no
   allocation inside the training step): the chunk counts and offsets, every rank's copy of
   this rank's chunk, and a GPU's gradients through the host where there is no NCCL. */
static int *g_counts = NULL;       /* 4 x size: send counts, offsets; receive counts, offsets */
static void *g_recv = NULL;
static size_t g_recv_bytes = 0;
static float *g_host_grads = NULL;
static size_t g_host_grads_n = 0;

int par_rank(void) { return g_rank; }
int par_size(void) { return g_size; }
int par_local_rank(void) { return g_local_rank; }
int par_summing(void) { return g_size > 1 || g_sum_one_rank; }
int par_is_root(void) { return g_rank == 0; }
double par_comm_seconds(void) { return g_comm_s; }
double par_wait_seconds(void) { return g_wait_s; }
void par_timing_split(int on) { g_split_timing = on; }

int par_built(void) {
#ifdef FLASH_MPI
    return 1;
#else
    return 0;
#endif
}

/* the only device sum a backend has is CUDA's NCCL (the model registry's grad_sum) */
int par_nccl_built(void) { return model_grad_sum_built(); }

#ifdef FLASH_MPI
/* Started by a launcher: OpenMPI's mpirun, or a PMI launcher (MPICH's hydra, Slurm). A
   program run by hand is one rank and never calls MPI_Init. */
static int launched_by_mpi(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}
#endif

#ifdef FLASH_MPI
/* exit() on any rank (an error: die(), a refused setting) ends the whole job at once, where
   the other ranks would otherwise wait in their next collective; par_finish comes first on
   a normal return from main */
static void exit_without_finish(void) {
    if (!g_joined || g_size == 1) return;
    g_joined = 0;
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}
#endif

void par_init(int *argc, char ***argv) {
#ifdef FLASH_MPI
    if (!launched_by_mpi()) return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "error: MPI_Init failed\n");
        exit(1);
    }
    g_joined = 1;
    atexit(exit_without_finish);
    /* errors of the collectives are returned and reported by us, then the job is aborted */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &g_local_rank);
    MPI_Comm_size(local, &g_local_size);
    MPI_Comm_free(&local);
    if (g_rank != 0 && !freopen("/dev/null", "w", stdout)) { /* printing is rank 0's */ }
    const char *one = getenv("FLASH_ALLREDUCE_ONE_RANK");
    g_sum_one_rank = g_size == 1 && one && strcmp(one, "1") == 0;
#else
    (void)argc; (void)argv;
#endif
}

int par_finish(int rc) {
#ifdef FLASH_MPI
    if (g_joined) {
        fflush(stdout);
        fflush(stderr);
        MPI_Finalize();
        g_joined = 0;
    }
#endif
    free(g_counts); g_counts = NULL;
    free(g_recv); g_recv = NULL; g_recv_bytes = 0;
    free(g_host_grads); g_host_grads = NULL; g_host_grads_n = 0;
    return rc;
}

void par_abort(int code) {
#ifdef FLASH_MPI
    if (g_joined && g_size > 1) {
        g_joined = 0;
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    }
#else
    (void)code;
#endif
}

/* MPI failed inside a collective: there is no consistent state to go on from */
#ifdef FLASH_MPI
static void mpi_check(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "error: rank %d: %s failed: %s\n", g_rank, what, msg);
    par_abort(1);
    exit(1);
}
#endif

#ifdef FLASH_MPI
/* The fixed-order sum over ranks of a host array of count elements (float or double):
   rank r owns elements [lo(r), lo(r+1)); MPI_Alltoallv brings it every rank's copy of its
   chunk, it adds them in rank order 0, 1, ..., N-1, and MPI_Allgatherv hands every chunk to
   every rank. Only copies go through MPI: the bits do not depend on its algorithms. */
static int fixed_order_prepare(size_t count, size_t elem, char *err, size_t errlen) {
    const int N = g_size;
    if (count > (size_t)0x7fffffff) { snprintf(err, errlen, "gradient buffer too large for MPI counts"); return -1; }
    if (!g_counts) g_counts = calloc(4 * (size_t)N, sizeof(int));
    if (!g_counts) { snprintf(err, errlen, "out of memory for the gradient sum"); return -1; }
    int *sc = g_counts, *sd = sc + N, *rc = sd + N, *rd = rc + N;
    for (int j = 0; j < N; j++) {
        size_t lo = count * (size_t)j / N, hi = count * (size_t)(j + 1) / N;
        sc[j] = (int)(hi - lo);
        sd[j] = (int)lo;
    }
    const int mine = sc[g_rank];
    for (int j = 0; j < N; j++) { rc[j] = mine; rd[j] = j * mine; }
    const size_t bytes = (size_t)N * (size_t)mine * elem + 1;
    if (g_recv_bytes < bytes) {
        free(g_recv);
        g_recv = malloc(bytes);
        g_recv_bytes = g_recv ? bytes : 0;
        if (!g_recv) { snprintf(err, errlen, "out of memory for the gradient sum"); return -1; }
    }
    return 0;
}

/* the sum itself, over the buffers fixed_order_prepare made for this count and elem */
static int fixed_order_sum(void *buf, size_t elem) {
    const int N = g_size;
    int *sc = g_counts, *sd = sc + N, *rc = sd + N, *rd = rc + N;
    const int mine = sc[g_rank];
    char *recv = g_recv;
    MPI_Datatype t = elem == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE;
    mpi_check(MPI_Alltoallv(buf, sc, sd, t, recv, rc, rd, t, MPI_COMM_WORLD), "MPI_Alltoallv (gradients)");
    if (elem == sizeof(float)) {
        float *out = (float *)buf + sd[g_rank];
        const float *in = (const float *)recv;
        for (int i = 0; i < mine; i++) {
            float s = in[i];
            for (int j = 1; j < N; j++) s += in[(size_t)j * mine + i];
            out[i] = s;
        }
    } else {
        double *out = (double *)buf + sd[g_rank];
        const double *in = (const double *)recv;
        for (int i = 0; i < mine; i++) {
            double s = in[i];
            for (int j = 1; j < N; j++) s += in[(size_t)j * mine + i];
            out[i] = s;
        }
    }
    mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, t, buf, sc, sd, t, MPI_COMM_WORLD), "MPI_Allgatherv (gradients)");
    return 0;
}
#endif

#ifdef FLASH_MPI
/* ModelRanks.broadcast: a backend's own gradient sum sets up its communicator (NCCL's id)
   through MPI; a failure ends the job as every collective's does */
static int broadcast_root(void *buf, size_t bytes, const char *what, char *err, size_t errlen) {
    (void)err; (void)errlen;
    char label[96];
    snprintf(label, sizeof label, "MPI_Bcast (%s)", what);
    mpi_check(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD), label);
    return 0;
}
#endif

int par_grads_prepare(Model *m, char *err, size_t errlen) {
    if (!par_summing()) return 0;
#ifdef FLASH_MPI
    size_t count, elem;
    int on_device;
    (void)model_grad_buffer(m, &count, &elem, &on_device);
    if (model_grad_sum(m)) return 0;   /* the backend's own sum (NCCL) holds its buffers */
    if (!on_device) return fixed_order_prepare(count, elem, err, errlen);
    /* a GPU without NCCL: through host memory, in the parameter table's order */
    const size_t n = model_table(m)->total;
    if (g_host_grads_n < n) {
        free(g_host_grads);
        g_host_grads = malloc(sizeof(float) * n);
        g_host_grads_n = g_host_grads ? n : 0;
        if (!g_host_grads) { snprintf(err, errlen, "out of memory for the gradient copy"); return -1; }
    }
    return fixed_order_prepare(n, sizeof(float), err, errlen);
#else
    (void)m; (void)err; (void)errlen;
    return 0;
#endif
}

int par_allreduce_grads(Model *m, char *err, size_t errlen) {
    if (!par_summing()) return 0;
#ifdef FLASH_MPI
    if (g_split_timing) {
        double t = now_s();
        mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        g_wait_s += now_s() - t;
    }
    double t0 = now_s();
    size_t count, elem;
    int on_device, rc = 0;
    void *g = model_grad_buffer(m, &count, &elem, &on_device);
    const ModelGradSum device_sum = model_grad_sum(m);   /* CUDA with NCCL */
    if (!device_sum && !g_counts) {
        snprintf(err, errlen, "the gradient sum was not prepared (par_grads_prepare)");
        return -1;
    }
    if (device_sum) {
        const ModelRanks ranks = {g_rank, g_size, broadcast_root};
        rc = device_sum(g, count, elem, &ranks, err, errlen);
    } else if (!on_device) {
        rc = fixed_order_sum(g, elem);
    } else {
        /* a GPU without NCCL: through host memory, in the parameter table's order */
        rc = model_read(m, STATE_GRADS, g_host_grads, err, errlen);
        if (!rc) rc = fixed_order_sum(g_host_grads, sizeof(float));
        if (!rc) rc = model_write(m, STATE_GRADS, g_host_grads, err, errlen);
    }
    g_comm_s += now_s() - t0;
    return rc;
#else
    (void)m; (void)err; (void)errlen;
    return 0;
#endif
}

void par_step_scalars(double *loss, int *sig) {
    if (g_size == 1) return;
#ifdef FLASH_MPI
    double t0 = now_s();
    double mine[2] = {*loss, (double)*sig}, all[2 * g_size];
    mpi_check(MPI_Allgather(mine, 2, MPI_DOUBLE, all, 2, MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather (loss)");
    double s = all[0];
    int first = (int)all[1];
    for (int j = 1; j < g_size; j++) {
        s += all[2 * j];
        if (!first) first = (int)all[2 * j + 1];
    }
    *loss = s;
    *sig = first;
    g_comm_s += now_s() - t0;
#else
    (void)loss; (void)sig;
#endif
}

int par_all_same_u64(uint64_t v) {
    if (g_size == 1) return 1;
#ifdef FLASH_MPI
    uint64_t lo = v, hi = v;
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
    return lo == hi;
#else
    (void)v;
    return 1;
#endif
}

void par_sum_doubles(double *v, int k) {
#ifdef FLASH_MPI
    if (g_size == 1) return;
    double t0 = now_s();
    double all[(size_t)k * (size_t)g_size];   /* a few doubles per rank: on the stack */
    mpi_check(MPI_Allgather(v, k, MPI_DOUBLE, all, k, MPI_DOUBLE, MPI_COMM_WORLD), "MPI_Allgather");
    for (int i = 0; i < k; i++) {
        double s = all[i];
        for (int j = 1; j < g_size; j++) s += all[(size_t)j * k + i];
        v[i] = s;
    }
    g_comm_s += now_s() - t0;
#else
    (void)v; (void)k;
#endif
}

void par_describe(char *buf, size_t n, Model *m) {
    if (!par_summing()) {
        snprintf(buf, n, "one process%s", par_built() ? " (MPI built in: mpirun -np N ./train for N ranks)" : "");
        return;
    }
    size_t count, elem;
    int on_device = 0;
    if (m) model_grad_buffer(m, &count, &elem, &on_device);
    int hosts = 1;
#ifdef FLASH_MPI
    int leaders = g_local_rank == 0, sum = 0;
    MPI_Allreduce(&leaders, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    hosts = sum;
#endif
    snprintf(buf, n, "MPI, %d rank%s on %d host%s (%d here)%s; gradients summed %s", g_size, g_size == 1 ? "" : "s", hosts,
             hosts == 1 ? "" : "s", g_local_size, g_sum_one_rank ? " (FLASH_ALLREDUCE_ONE_RANK: summing anyway)" : "",
             !on_device ? "in a fixed order through MPI on the host"
             : par_nccl_built() ? "by NCCL on the GPUs"
             : "through host memory in a fixed order (no NCCL in this build)");
}

void par_print_help(FILE *f, int bench) {
    if (bench) {
        fprintf(f, "\nData parallel: under mpirun -np R every rank times its own steps and the gradients are\n"
                   "summed across the ranks after each backward (as training does); the breakdown adds the\n"
                   "time spent waiting for the slowest rank and in the sum itself, and its share of a step.\n"
                   "%s\n", par_built() ? "This build has MPI." : "This build has no MPI (make with mpicc installed).");
        return;
    }
    fprintf(f, "\nData parallel: mpirun -np R ./train [options] FILE trains one model on R processes\n"
               "(ranks). A step is batch x accum x R sequences: every rank draws the whole step's\n"
               "accum x R micro-batches from the one seeded stream and runs its own accum of them, so R\n"
               "ranks with --accum A see exactly the micro-batches of one process with --accum R*A;\n"
               "the gradients are summed in a fixed order (each rank adds one chunk of every rank's\n"
               "buffer in rank order, then all gather it), so the same R gives bit-identical runs, and\n"
               "the averaged gradient equals the single process's up to float32 rounding of the sum.\n"
               "Token counts in the logs and metrics.csv are global. Rank 0 alone prints and writes\n"
               "the run directory; validation is split across the ranks; an error on any rank stops\n"
               "them all. Give each rank its share of the cores (--threads; mpirun binds each rank to\n"
               "a core by default: --bind-to none or --map-by slot:pe=K for more). --resume with the\n"
               "same R is bit-exact; with another R it keeps the step's micro-batches (accum becomes\n"
               "R_saved x accum_saved / R, which must divide) and says the rounding may differ. Every\n"
               "rank reads the data file and, on --resume, the checkpoint (a shared filesystem across\n"
               "hosts). SIGINT to mpirun reaches the ranks as SIGTERM: they checkpoint at the end of\n"
               "the step, but OpenMPI kills them 1 s later: where a step is longer, run mpirun with\n"
               "--mca odls_base_sigkill_timeout 60. On GPUs each rank takes the GPU of its local rank and the gradients are summed\n"
               "by NCCL when built in (run with one rank on one GPU so far, not yet on several). %s\n",
            par_built() ? (par_nccl_built() ? "This build has MPI and NCCL." : "This build has MPI (no NCCL).")
                        : "This build has no MPI: one process only (make with mpicc installed).");
}
