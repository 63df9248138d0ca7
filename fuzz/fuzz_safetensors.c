/* fuzz/fuzz_safetensors.c: the safetensors reader (header JSON, offsets, dtypes, shapes). */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const char *path = fuzz_file(data, n, ".safetensors");
    StFile f;
    char err[1024];
    if (st_load(&f, path, err, sizeof err) == 0) {
        volatile unsigned char sum = 0;   /* touch every tensor's bytes */
        for (int i = 0; i < f.n_tensors; i++) {
            const unsigned char *p = st_tensor_data(&f, &f.tensors[i]);
            for (size_t k = 0; k < f.tensors[i].nbytes; k++) sum ^= p[k];
        }
        st_free(&f);
    }
    return 0;
}
