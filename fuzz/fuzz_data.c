/* fuzz/fuzz_data.c: the data loader (gzip members, trailing bytes, truncation, other
   formats' magic bytes, the 10^8-byte cap) and the split. The first input byte picks the
   name: odd, a ".gz" name (gzip promised). */
#include "dataset.h"
#include "draw.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1) return 0;
    const char *path = fuzz_file(data + 1, n - 1, data[0] & 1 ? ".gz" : ".raw");
    uint8_t *bytes;
    size_t len;
    char err[1024];
    if (data_load(path, &bytes, &len, err, sizeof err) == 0) {
        DataSplit sp;
        if (data_split(bytes, len, 2, &sp, err, sizeof err) == 0) {
            Rng r;
            rng_seed(&r, len);
            int32_t tok[2 * 2];
            data_sample_batch(sp.train, sp.n_train, 2, 1, &r, tok);
        }
        free(bytes);
    }
    return 0;
}
