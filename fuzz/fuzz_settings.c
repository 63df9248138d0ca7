/* fuzz/fuzz_settings.c: the run settings' JSON reader (options_from_json: jansson, then every
   value through its flag's range) and the model config reader, on any bytes. */
#include "config.h"
#include "json.h"
#include "options.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    char *json = malloc(n + 1);
    if (!json) return 0;
    memcpy(json, data, n);
    json[n] = 0;
    Options o;
    char err[1024];
    if (options_from_json(&o, json, err, sizeof err) == 0) {
        /* what was accepted writes back and reads again to the same settings */
        static char buf[1 << 16];
        int k = options_to_json(&o, buf, sizeof buf);
        Options o2;
        if (k < 0 || options_from_json(&o2, buf, err, sizeof err)) abort();
        if (o2.seed != o.seed || o2.batch != o.batch || o2.opt.total != o.opt.total) abort();
    }
    FlashConfig c = config_default();
    config_from_json(&c, json, err, sizeof err);
    double v;
    json_get_number(json, "lr", &v);
    free(json);
    return 0;
}
