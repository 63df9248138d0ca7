/* fuzz/fuzz_checkpoint.c: the checkpoint reader (header, lengths, CRC, settings JSON, RNG
   state, finiteness). Inputs whose CRC field is wrong stop at the checksum; the harness
   fixes the CRC of every input first so that the fuzzer reaches what lies behind it. */
#include "checkpoint.h"
#include "fuzz_common.h"
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    uint8_t *b = malloc(n ? n : 1);
    if (!b) return 0;
    memcpy(b, data, n);
    if (n >= 32) {
        uint32_t c = (uint32_t)crc32(0, b + 32, (uInt)(n - 32));
        for (int i = 0; i < 4; i++) b[24 + i] = (uint8_t)(c >> (8 * i));
    }
    const char *path = fuzz_file(b, n, ".bin");
    free(b);
    Options o;
    TrainState st;
    CkptState cs;
    char err[4096];
    if (checkpoint_load(path, &o, &st, &cs, err, sizeof err) == 0) checkpoint_state_free(&cs);
    return 0;
}
