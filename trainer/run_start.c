/* trainer/run_start.c: a new run (see run.h): every check of its settings, data and model
 * comes before the run directory is written (or an old run in it moved aside). */
#include <stdio.h>
#include <string.h>
#include "inputs.h"
#include "parallel.h"
#include "run.h"
#include "runtime.h"
#include "state_io.h"

/* A trial run (--steps below the default warmup): the default warmup shrinks to a tenth of
   the steps, so `./train --steps 30 FILE` runs; a --warmup the user gave is never changed
   (longer than --steps stays an error). */
static void fit_default_warmup(Options *o, const Options *cli) {
    if (options_given(cli, "--warmup") || o->opt.warmup <= o->opt.total) return;
    long w = o->opt.total / 10;
    fprintf(stderr, "notice: the default warmup of %ld steps is longer than --steps %ld: warming up "
            "over %ld steps instead (give --warmup N to choose)\n", o->opt.warmup, o->opt.total, w);
    o->opt.warmup = w;
}

/* The model: --init-from's weights and config (over the command line's), or a fresh one
   initialised from the seed. */
static Model *open_initial_model(Options *o, const Options *cli) {
    char err[ERR_MAX];
    ModelOptions mo = command_model_options(o, o->batch, o->seq_len);
    if (!o->init_from[0]) {
        Model *m = model_open(&o->model, &mo, err, sizeof err);
        if (!m) die("error: %s", err);
        if (model_init_params(m, o->seed, err, sizeof err)) die("error: %s", err);
        return m;
    }
    Model *m = model_load_safetensors(o->init_from, &o->model, &mo, err, sizeof err);
    if (!m) die("error: --init-from: %s", err);
    const FlashConfig *fc = model_config(m);
    if (cli->model_flags_given && memcmp(fc, &o->model, sizeof o->model))
        fprintf(stderr, "notice: the model options come from %s's config, not the command line\n",
                o->init_from);
    o->model = *fc;
    return m;
}

void run_start_new(Run *r, const Options *cli) {
    char err[ERR_MAX];
    run_dir_check_path(cli->out_dir);
    r->o = *cli;
    fit_default_warmup(&r->o, cli);
    if (options_validate(&r->o, err, sizeof err)) die("error: %s", err);
    if (par_is_root()) run_dir_check_new(r);   /* rank 0 owns the run directory */
    r->o.ranks = par_size();
    size_t nd = load_data_split(r->o.data_path, r->o.seq_len, &r->bytes, &r->sp);   /* bad data fails first */
    r->o.data_bytes = nd;
    r->o.data_crc32 = data_crc32(r->bytes, nd);
    r->m = open_initial_model(&r->o, cli);
    rng_seed(&r->st.data_rng, r->o.seed);
    rng_seed(&r->st.sample_rng, r->o.seed ^ SAMPLE_SEED_SALT);
}
