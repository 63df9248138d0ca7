/* trainer/runtime.c: the process's compute setup (BLAS kernels, denormals) and its clock. */
#include "runtime.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <xmmintrin.h>
#include <pmmintrin.h>

/* OpenBLAS's own hooks (declared by its cblas.h in most builds; repeated for others) */
char *openblas_get_corename(void);

/* BLAS kernels. Debian's OpenBLAS 0.3.21 does not know recent CPUs and falls back to
   older kernels (Haswell/Zen on Zen 5, Prescott on a virtualised Sapphire Rapids) on CPUs that run its AVX-512 (SkylakeX) kernels nearly
   twice as fast (docs/performance.md); some machine images also pin
   OPENBLAS_CORETYPE=Haswell. The choice is read when the library loads, so the program
   re-executes itself once with OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512 and the
   kernels in use are not AVX-512 ones. FLASH_BLAS_CORE=env keeps whatever the environment and
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

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void flush_denormals(void) {
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
}

const char *blas_core_note(void) { return g_core_note; }
const char *blas_core_name(void) { return openblas_get_corename(); }
