/* trainer/inputs.c: see inputs.h. */
#include "inputs.h"
#include <stdio.h>
#include "parallel.h"
#include "runtime.h"

size_t load_data_split(const char *path, int T, uint8_t **bytes, DataSplit *sp) {
    char err[ERR_MAX];
    size_t n;
    if (data_load(path, bytes, &n, err, sizeof err)) die("error: %s", err);
    if (data_split(*bytes, n, (size_t)T + 1, sp, err, sizeof err))
        die("error: %s (use a shorter --seq-len or a longer file)", err);
    if (sp->proportional && par_is_root())
        fprintf(stderr, "notice: %s has %zu bytes, fewer than enwik8's 10^8: split 90/5/5 in "
                "proportion (%zu / %zu / %zu bytes)\n", path, n, sp->n_train, sp->n_val, sp->n_test);
    return n;
}

ModelOptions command_model_options(const Options *o, int B, int T) {
    ModelOptions mo = {.device = o->device, .precision = o->precision, .threads = o->threads,
                       .gpu = par_local_rank(), .max_B = B, .max_T = T,
                       .step_seqs = o->accum * o->batch};   /* a GPU may run a step as one micro-batch */
    return mo;
}

Model *open_checkpointed(const Options *o, const CkptState *cs, int B, int T, int moments) {
    char err[ERR_MAX];
    ModelOptions mo = command_model_options(o, B, T);
    Model *m = model_open(&o->model, &mo, err, sizeof err);
    if (!m) die("error: %s", err);
    if (checkpoint_apply(cs, m, moments, err, sizeof err)) die("error: %s", err);
    return m;
}

void load_command_checkpoint(const Options *cli, const char *arg, Options *o, TrainState *st,
                             CkptState *cs, char *path) {
    char err[ERR_MAX];
    if (checkpoint_load_arg(arg, o, st, cs, path, OPT_PATH_MAX, err, sizeof err)) die("error: %s", err);
    o->threads = cli->threads;
    o->device = cli->device;
    o->precision = cli->precision;
}
