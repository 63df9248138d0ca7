/* trainer/run_resume.c: a run continued from its newest valid checkpoint (see run.h). The
 * checkpoint brings the settings, the counters and generators, the weights and both Adam
 * moments; the command line only says where the model runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "inputs.h"
#include "parallel.h"
#include "run.h"
#include "runtime.h"

/* --resume takes the saved settings whole: any other setting would be silently ignored */
static void refuse_other_flags(const Options *cli) {
    static const char *const allowed[] = {"--resume", "--threads", "--device", "--precision", NULL};
    const char *other = options_given_other(cli, allowed);
    if (!other) return;
    fprintf(stderr, "error: --resume continues a run with its saved settings, and %s would be "
            "ignored; only --threads, --device, --precision and the data FILE may be given with it\n", other);
    exit(1);
}

/* the run directory: DIR itself, or the directory of a checkpoint file */
static void run_dir_of(const char *arg, char *dir, size_t n) {
    snprintf(dir, n, "%s", arg);
    struct stat sb;
    if (!stat(arg, &sb) && !S_ISDIR(sb.st_mode)) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0; else snprintf(dir, n, ".");
    }
}

/* The command line's device, precision and threads; unless told otherwise, the run continues
   where it trained (bit-exact): its device when this machine has it, and its precision there. */
static void choose_device(Options *o, const Options *cli) {
    o->threads = cli->threads;
    o->device = cli->device;
    o->precision = cli->precision;
    const ModelDevice was = model_device_trained_on(o->trained_on);
    if (o->device == DEVICE_AUTO) {
        ModelDevice got;
        char e[256];
        o->device = model_resolve_device(was, &got, e, sizeof e) ? DEVICE_CPU : was;
    }
    if (o->precision == PRECISION_DEFAULT && o->device == was && was != DEVICE_CPU)
        o->precision = strstr(o->trained_on, "bf16") ? PRECISION_BF16 : PRECISION_FP32;
}

/* Another rank count than the checkpoint's: the same micro-batches per step from the same
   stream, shared differently, so only the sums' rounding moves. */
static void share_step_among_ranks(Options *o) {
    if (o->ranks == par_size()) return;
    const long per_step = (long)o->ranks * o->accum;
    if (per_step % par_size()) {
        fprintf(stderr, "error: the run trained %d rank%s x --accum %d = %ld micro-batches per step, "
                "which %d ranks cannot share evenly; resume with a rank count that divides %ld\n",
                o->ranks, o->ranks == 1 ? "" : "s", o->accum, per_step, par_size(), per_step);
        exit(1);
    }
    if (par_is_root())
        fprintf(stderr, "notice: the checkpoint was trained on %d rank%s with --accum %d and the run continues "
                "on %d with --accum %ld (the same micro-batches per step): the gradient sums may round "
                "differently, so it is no longer bit-identical to an uninterrupted run\n", o->ranks,
                o->ranks == 1 ? "" : "s", o->accum, par_size(), per_step / par_size());
    o->accum = (int)(per_step / par_size());
    o->ranks = par_size();
}

/* The data must be the run's: another file (or the same name holding other bytes) would
   continue on other examples, no longer the run the checkpoint belongs to. */
static void load_runs_data(Run *r) {
    Options *o = &r->o;
    size_t nd = load_data_split(o->data_path, o->seq_len, &r->bytes, &r->sp);
    const uint32_t crc = data_crc32(r->bytes, nd);
    if (o->data_bytes && (o->data_bytes != nd || o->data_crc32 != crc)) {
        fprintf(stderr, "error: %s is not the data this run trained on: %zu bytes with CRC-32 %08x "
                "where the checkpoint recorded %llu bytes with CRC-32 %08x; resume with the run's "
                "own data file (or start a new run on this one)\n", o->data_path, nd, crc,
                (unsigned long long)o->data_bytes, o->data_crc32);
        exit(1);
    }
    if (!o->data_bytes)
        fprintf(stderr, "notice: this checkpoint predates data identification; the data file is not checked\n");
    o->data_bytes = nd;
    o->data_crc32 = crc;
}

void run_resume(Run *r, const Options *cli) {
    char err[ERR_MAX], ckpt_path[OPT_PATH_MAX];
    CkptState cs = {0};
    run_dir_check_path(cli->resume_dir);
    refuse_other_flags(cli);
    /* the directory is locked before its checkpoints are read: another run writing them
       would be continued from a state it is about to replace */
    char dir[OPT_PATH_MAX];
    run_dir_of(cli->resume_dir, dir, sizeof dir);
    struct stat sb;
    if (par_is_root() && !stat(dir, &sb) && S_ISDIR(sb.st_mode)) run_dir_lock(r, dir);
    if (checkpoint_load_arg(cli->resume_dir, &r->o, &r->st, &cs, ckpt_path, sizeof ckpt_path, err, sizeof err))
        die("error: cannot resume: %s", err);
    snprintf(r->o.out_dir, sizeof r->o.out_dir, "%s", dir);
    run_dir_check_model(dir, ckpt_path, &r->o.model);
    choose_device(&r->o, cli);
    if (cli->data_path[0]) snprintf(r->o.data_path, sizeof r->o.data_path, "%s", cli->data_path);
    printf("resuming %s at step %llu\n", ckpt_path, (unsigned long long)r->st.step);
    if (!par_all_same_u64(r->st.step))
        die("error: %s", "the ranks loaded checkpoints of different steps: --resume needs the run "
            "directory on a filesystem every rank sees");
    share_step_among_ranks(&r->o);
    load_runs_data(r);
    r->m = open_checkpointed(&r->o, &cs, r->o.batch, r->o.seq_len, 1);
    checkpoint_state_free(&cs);
    r->resuming = 1;
}
