/* trainer/runtime.c: the process's compute setup: BLAS kernels and thread count. */
#include "runtime.h"
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* OpenBLAS's own hooks (declared by its cblas.h in most builds; repeated for others) */
char *openblas_get_corename(void);
void openblas_set_num_threads(int);

/* BLAS kernels. Debian's OpenBLAS 0.3.21 does not know recent AMD CPUs and falls back to
   its AVX2 (Haswell/Zen) kernels on CPUs that run its AVX-512 (SkylakeX) kernels nearly
   twice as fast (docs/performance.md); some machine images also pin
   OPENBLAS_CORETYPE=Haswell. The choice is read when the library loads, so the program
   re-executes itself once with OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512 and the
   kernels in use are the AVX2 ones. FLASH_BLAS_CORE=env keeps whatever the environment and
   OpenBLAS chose. */
static char g_core_note[160] = "detected by OpenBLAS";

void choose_blas_core(char **argv) {
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
    if (avx512 && core && (!strcasecmp(core, "haswell") || !strncasecmp(core, "zen", 3))) {
        char was[64];
        snprintf(was, sizeof was, "%s%s", env ? "OPENBLAS_CORETYPE=" : "", env ? env : "");
        setenv("FLASH_CORE_CHOSEN", was, 1);
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        execv("/proc/self/exe", argv);
        /* exec failed: carry on with the kernels already loaded */
        unsetenv("FLASH_CORE_CHOSEN");
    }
}

void set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

const char *blas_core_note(void) { return g_core_note; }
const char *blas_core_name(void) { return openblas_get_corename(); }
