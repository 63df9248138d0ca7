/* autograd/cpu/gemm.c: the BLAS and threading policy of the CPU's large products: how the
 * Linear layers' GEMMs use the threads (one OpenBLAS call, tiles, split K), chosen by the
 * thread count alone. */
#include "gemm.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <xmmintrin.h>
#include <pmmintrin.h>

/* ================================ BLAS kernels ===================================== */

/* OpenBLAS's own hooks (declared by its cblas.h in most builds; repeated for others) */
char *openblas_get_corename(void);

/* BLAS kernels. Debian's OpenBLAS 0.3.21 does not know recent CPUs and falls back to
   older kernels (Haswell/Zen on Zen 5, Prescott on a virtualised Sapphire Rapids) on CPUs that run its AVX-512 (SkylakeX) kernels nearly
   faster (docs/performance-notes.md); some machine images also pin
   OPENBLAS_CORETYPE=Haswell. The choice is read when the library loads, so the program
   re-executes itself once with OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512 and the
   kernels in use are not AVX-512 ones. FLASH_BLAS_CORE=env keeps whatever the environment and
   OpenBLAS chose. */
static char g_core_note[160] = "detected by OpenBLAS";

static void choose_blas_core(char **argv) {
    const char *chosen = getenv("FLASH_CORE_CHOSEN"), *mode = getenv("FLASH_BLAS_CORE");
    if (chosen) {
        snprintf(g_core_note, sizeof g_core_note, "chosen by flash.c: the CPU has AVX-512%s%s",
                 *chosen ? "; the environment had " : "", chosen);
        return;
    }
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (env) snprintf(g_core_note, sizeof g_core_note, "OPENBLAS_CORETYPE=%s in the environment", env);
    if (mode && !strcmp(mode, "env")) return;
    const char *core = openblas_get_corename();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    /* any kernels short of AVX-512 on a CPU that has it: older OpenBLAS releases fall back
       to Haswell, Zen or even Prescott (SSE3) kernels on CPUs they do not know */
    int has_avx512_kernels = core && (!strcasecmp(core, "skylakex") || !strcasecmp(core, "cooperlake") ||
                                      !strcasecmp(core, "sapphirerapids") || !strncasecmp(core, "zen4", 4) ||
                                      !strncasecmp(core, "zen5", 4));
    if (avx512 && core && !has_avx512_kernels) {
        char was[64];
        snprintf(was, sizeof was, "%s%s", env ? "OPENBLAS_CORETYPE=" : "", env ? env : "");
        setenv("FLASH_CORE_CHOSEN", was, 1);
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        execv("/proc/self/exe", argv);
        /* exec failed: carry on with the kernels already loaded */
        unsetenv("FLASH_CORE_CHOSEN");
    }
}

void blas_process_init(char **argv) {
    choose_blas_core(argv);
    /* values below 1e-38 become 0 instead of costing a microcode assist per operation on
       Intel CPUs; threads created later inherit the floating-point environment */
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
}

const char *blas_core_note(void) { return g_core_note; }
const char *blas_core_name(void) { return openblas_get_corename(); }

/* ================================== threads ======================================== */

static int gemm_partition = GEMM_AUTO;         /* FLASH_GEMM */
static int gemm_partition_wgrad = GEMM_AUTO;   /* FLASH_GEMM_WGRAD */

static int gemm_way_named(const char *name) {
    if (!name) return GEMM_AUTO;
    if (!strcmp(name, "openblas")) return GEMM_OPENBLAS;
    if (!strcmp(name, "tiles")) return GEMM_TILES;
    if (!strcmp(name, "splitk")) return GEMM_SPLITK;
    return GEMM_AUTO;
}

void blas_set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    /* for experiments (docs/performance-notes.md) */
    gemm_partition = gemm_way_named(getenv("FLASH_GEMM"));
    gemm_partition_wgrad = gemm_way_named(getenv("FLASH_GEMM_WGRAD"));
}

/* ============================ the Linear layers' GEMMs ============================= */


/* The Linear layers' products, two ways.

   OPENBLAS: one call, OpenBLAS's own threading. Its threads share one packed copy of each
   operand panel and wait for one another at every panel.
   TILES: C cut into a grid of about 4 tiles per thread, handed out dynamically, each tile a
   single-threaded GEMM. Every tile packs its own rows of op(A) and columns of op(B) (more
   copying), but no thread waits for another until the end, and a core that runs slowly
   (another tenant on it) takes fewer tiles instead of holding everyone up.

   Tiles win at many threads and lose at few (the figures are in docs/performance-notes.md,
   "Figures behind the code"). So: tiles from TILES_MIN_THREADS up, except for the weight
   gradients (op(A) = dy^T, K = all B*T rows): each of their tiles packs K-long panels of both
   operands, and OpenBLAS's threading ran them faster; they split K instead (SPLITK below).
   The number of tiles per thread made no measurable difference. The choice depends on the thread count only, never on timing: the two ways can round
   differently (OpenBLAS uses other kernels for small tiles), and a resumed run must make the
   same choice as the run it continues. */
#define TILE_ROW_UNIT 16          /* AVX-512 sgemm tile height: tiles are whole multiples */
#define TILE_COL_UNIT 16
#define TILES_MIN_THREADS 8
#define TILES_MIN_FLOP (1 << 24)  /* smaller products (decoding) just call OpenBLAS */

/* the grid: pm x pn >= want tiles, with the least packing (pn M + pm N) */
static void tile_grid(int M, int N, int want, int *pm_out, int *pn_out) {
    const int um = (M + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT, un = (N + TILE_COL_UNIT - 1) / TILE_COL_UNIT;
    int best_pm = 1, best_pn = 1;
    double best_cost = -1;
    for (int pm = 1; pm <= um && pm <= want; pm++) {
        int pn = (want + pm - 1) / pm;
        if (pn > un) continue;
        double cost = (double)pn * M + (double)pm * N;
        if (best_cost < 0 || cost < best_cost) best_cost = cost, best_pm = pm, best_pn = pn;
    }
    if (best_cost < 0) best_pm = um < want ? um : want, best_pn = 1;  /* too few columns */
    *pm_out = best_pm;
    *pn_out = best_pn;
}

void gemm_tiles(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                       const real *B, int ldb, real beta, real *C, int ldc, int tiles,
                       const TileEpilogue *epi) {
    int pm, pn;
    tile_grid(M, N, tiles, &pm, &pn);
    const int um = (M + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT, un = (N + TILE_COL_UNIT - 1) / TILE_COL_UNIT;
    const int blas_saved = blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int tile = 0; tile < pm * pn; tile++) {
        const int i = tile / pn, j = tile % pn;
        int m0 = (int)((long)um * i / pm) * TILE_ROW_UNIT, m1 = (int)((long)um * (i + 1) / pm) * TILE_ROW_UNIT;
        int n0 = (int)((long)un * j / pn) * TILE_COL_UNIT, n1 = (int)((long)un * (j + 1) / pn) * TILE_COL_UNIT;
        if (m1 > M) m1 = M;
        if (n1 > N) n1 = N;
        /* rows m0.. of op(A) are rows of A, or its columns when transposed; likewise the
           columns n0.. of op(B) */
        const real *Ab = ta ? A + m0 : A + (size_t)m0 * lda;
        const real *Bb = tb ? B + (size_t)n0 * ldb : B + n0;
        gemm(ta, tb, m1 - m0, n1 - n0, K, alpha, Ab, lda, Bb, ldb, beta,
             C + (size_t)m0 * ldc + n0, ldc);
        if (epi) epi->fn(epi->ctx, m0, m1, n0, n1);
    }
    blas_serial_end(blas_saved);
}

/* SPLITK, for the weight gradients (op(A) = dy^T, K = all B*T rows): K cut into one chunk per
   thread, each chunk's product a single-threaded GEMM into its own partial C; the partials are
   then added to C in chunk order, so the result depends on the thread count but not on which
   thread ran what. Each product is then short in K and needs no other thread, at the price
   of one pass over threads x M x N partial sums. The items are (chunk, half of C's rows),
   handed out dynamically, so that a slow core takes fewer. It beats OpenBLAS's threading at
   many threads and loses at 2 (docs/performance-notes.md), so it too starts at
   TILES_MIN_THREADS. */
#define SPLITK_MIN_ROWS 64        /* no chunk shorter than this: fewer chunks instead */
int gemm_splitk_chunks(int K, int threads) {
    int chunks = K / SPLITK_MIN_ROWS;
    if (chunks > threads) chunks = threads;
    return chunks < 1 ? 1 : chunks;
}

static void gemm_splitk(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                        const real *B, int ldb, real beta, real *C, int ldc, int threads,
                        const GemmScratch *ws) {
    const int chunks = gemm_splitk_chunks(K, threads);
    const size_t MN = (size_t)M * N;
    /* the partial sums go to the caller's buffer; without room, one OpenBLAS call instead
       (the same sum, other rounding) */
    if (!ws || ws->floats < chunks * MN) {
        gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    real *splitk_partial = ws->buf;
    const int halves = M >= 2 * TILE_ROW_UNIT ? 2 : 1;
    const int mid = halves == 2 ? (M / 2 + TILE_ROW_UNIT - 1) / TILE_ROW_UNIT * TILE_ROW_UNIT : M;
    const int blas_saved = blas_serial_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int item = 0; item < chunks * halves; item++) {
        const int c = item / halves, h = item % halves;
        const int k0 = (int)((long)K * c / chunks), k1 = (int)((long)K * (c + 1) / chunks);
        const int m0 = h ? mid : 0, m1 = h || halves == 1 ? M : mid;
        /* op(A) rows m0..m1, columns k0..k1; op(B) rows k0..k1 */
        const real *Ab = ta ? A + (size_t)k0 * lda + m0 : A + (size_t)m0 * lda + k0;
        const real *Bb = tb ? B + k0 : B + (size_t)k0 * ldb;
        gemm(ta, tb, m1 - m0, N, k1 - k0, alpha, Ab, lda, Bb, ldb, 0,
             splitk_partial + c * MN + (size_t)m0 * N, N);
    }
    blas_serial_end(blas_saved);
    /* C = beta C + partial_0 + partial_1 + ..., in that order for every element */
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        real *c = C + (size_t)i * ldc;
        const real *p = splitk_partial + (size_t)i * N;
        if (beta == 0) memcpy(c, p, sizeof(real) * N);
        else {
#pragma omp simd
            for (int j = 0; j < N; j++) c[j] = beta * c[j] + p[j];
        }
        for (int ch = 1; ch < chunks; ch++) {
            const real *q = p + ch * MN;
#pragma omp simd
            for (int j = 0; j < N; j++) c[j] += q[j];
        }
    }
}

void gemm_way(int way, int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
              const real *B, int ldb, real beta, real *C, int ldc, int T, const GemmScratch *ws) {
    if (way == GEMM_OPENBLAS) gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else if (way == GEMM_SPLITK) gemm_splitk(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, T, ws);
    else gemm_tiles(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, TILES_PER_THREAD * T, NULL);
}

int gemm_way_for(int threads, int trans_a) {
    if (trans_a && gemm_partition_wgrad != GEMM_AUTO) return gemm_partition_wgrad;
    if (gemm_partition != GEMM_AUTO) return gemm_partition;
    if (threads < TILES_MIN_THREADS) return GEMM_OPENBLAS;
    return trans_a ? GEMM_SPLITK : GEMM_TILES;
}

int gemm_big_way(int ta, int M, int N, int K) {
    const int T = omp_get_max_threads();
    return T < 2 || omp_in_parallel() || 2.0 * M * N * K < TILES_MIN_FLOP ? GEMM_OPENBLAS
                                                                           : gemm_way_for(T, ta);
}

void gemm_big(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda,
                     const real *B, int ldb, real beta, real *C, int ldc, const GemmScratch *ws) {
    gemm_way(gemm_big_way(ta, M, N, K), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
             omp_get_max_threads(), ws);
}
