/* model/registry.c: the backends this program knows, one entry each, indexed by ModelDevice
 * (backend.h), and the questions the trainer asks about them by device: names, whether one
 * is usable here, its gradient sum. The only place that knows which backends the build has
 * (FLASH_CUDA, FLASH_NCCL). */
#include "backend.h"
#include <stdio.h>
#include <string.h>

static int cpu_available(char *why, size_t whylen) {
    (void)why; (void)whylen;
    return 1;
}

static int cuda_available(char *why, size_t whylen) {
#ifdef FLASH_CUDA
    if (cuda_device_count() > 0) return 1;
    if (why) snprintf(why, whylen, "no CUDA GPU is visible");
#else
    if (why) snprintf(why, whylen, "this build has no CUDA support (rebuild with nvcc and cuBLAS installed)");
#endif
    return 0;
}

/* auto's slot holds only its name (for parsing and printing); the order after the CPU is
   auto's order of preference */
static const BackendEntry REGISTRY[] = {
    [DEVICE_AUTO] = {.name = "auto"},
    [DEVICE_CPU] = {
        .name = "cpu",
        .blas = "OpenBLAS",
        .available = cpu_available,
        .open = cpu_model_open,
        .supports = cpu_supports,
        .settle = cpu_settle_options,
        .activation_bytes = cpu_activation_bytes,
        .process_init = cpu_process_init,
        .grad_sum = NULL,   /* host memory: trainer/parallel.c's fixed-order MPI sum */
    },
    [DEVICE_CUDA] = {
        .name = "cuda",
        .blas = "cuBLAS",
        .available = cuda_available,
#ifdef FLASH_CUDA
        .open = cuda_model_open,
        .supports = cuda_supports,
#endif
        /* precision stays as asked (PRECISION_DEFAULT: bf16, the backend's choice); the
           activations' size is known once open (model_info) */
#ifdef FLASH_NCCL
        .grad_sum = cuda_nccl_grad_sum,
#endif
        /* without NCCL: NULL, and the trainer sums the gradients through host memory */
    },
};
#define N_ENTRIES ((int)(sizeof REGISTRY / sizeof REGISTRY[0]))

const BackendEntry *backend_entry(ModelDevice d) {
    return (int)d > (int)DEVICE_AUTO && (int)d < N_ENTRIES ? &REGISTRY[d] : NULL;
}

int model_cuda_built(void) { return REGISTRY[DEVICE_CUDA].open != NULL; }

int model_resolve_device(ModelDevice want, ModelDevice *got, char *err, size_t errlen) {
    if (want == DEVICE_AUTO) {
        *got = DEVICE_CPU;
        for (int d = 0; d < N_ENTRIES; d++)
            if (d != DEVICE_AUTO && d != DEVICE_CPU && REGISTRY[d].available(NULL, 0)) {
                *got = (ModelDevice)d;
                break;
            }
        return 0;
    }
    const BackendEntry *e = backend_entry(want);
    if (!e) {
        snprintf(err, errlen, "unknown device %d", (int)want);
        return -1;
    }
    if (!e->available(err, errlen)) return -1;
    *got = want;
    return 0;
}

const char *model_device_name(ModelDevice d) {
    return (int)d >= 0 && (int)d < N_ENTRIES ? REGISTRY[d].name : "unknown";
}

int model_device_parse(const char *name, ModelDevice *d) {
    for (int i = 0; i < N_ENTRIES; i++)
        if (!strcmp(name, REGISTRY[i].name)) {
            *d = (ModelDevice)i;
            return 0;
        }
    return -1;
}

void model_device_names(char *buf, size_t n) {
    size_t at = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < N_ENTRIES && at < n; i++) {
        const char *sep = i == 0 ? "" : i == N_ENTRIES - 1 ? " or " : ", ";
        int w = snprintf(buf + at, n - at, "%s%s", sep, REGISTRY[i].name);
        if (w < 0) break;
        at += (size_t)w;
    }
}

ModelDevice model_device_trained_on(const char *trained_on) {
    const size_t len = strcspn(trained_on, " ");
    for (int i = 0; i < N_ENTRIES; i++)
        if (i != DEVICE_AUTO && strlen(REGISTRY[i].name) == len && !strncmp(trained_on, REGISTRY[i].name, len))
            return (ModelDevice)i;
    return DEVICE_CPU;
}

ModelGradSum model_grad_sum(const Model *m) {
    const BackendEntry *e = backend_entry(m->opt.device);
    return e ? e->grad_sum : NULL;
}

int model_grad_sum_built(void) {
    for (int i = 0; i < N_ENTRIES; i++)
        if (REGISTRY[i].grad_sum) return 1;
    return 0;
}
