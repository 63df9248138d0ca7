/* train.c: flash.c's command line. Trains FLASH-pytorch's FLASHTransformer on enwik8,
 * byte level, and evaluates, samples from and exports its checkpoints.
 *
 *   ./train [options] enwik8.gz      the recipe: data -> model -> (step, eval, sample,
 *                                    checkpoint)* ; see ./train --help
 *   ./train eval | sample | export | bench | compare ...
 *
 * Here: the process's setup and the choice of command. The run: trainer/run.h; the
 * subcommands: trainer/commands.h. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "inputs.h"
#include "model.h"
#include "options.h"
#include "parallel.h"
#include "run.h"

static int run_command(int argc, char **argv) {
    const int one = argc >= 2 && (!strcmp(argv[1], "eval") || !strcmp(argv[1], "sample") || !strcmp(argv[1], "export"));
    if (one && !par_is_root()) return 0;   /* under mpirun these run once, on rank 0 */
    if (argc >= 2 && !strcmp(argv[1], "eval")) return cmd_eval(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "sample")) return cmd_sample(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "export")) return cmd_export(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "bench")) return cmd_bench(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "compare")) return par_is_root() ? cmd_compare(argc - 1, argv + 1) : 0;
    if (argc < 2) { options_print_help(stderr, CMD_TRAIN); return 2; }
    Options o;
    char err[ERR_MAX];
    int rc = options_parse(&o, CMD_TRAIN, argc, argv, err, sizeof err);
    if (rc == 1) { run_dir_print_help(stdout); return 0; }
    if (rc < 0) { fprintf(stderr, "error: %s\n", err); return 2; }
    return run_train(&o);
}

int main(int argc, char **argv) {
    model_process_init(argv);
    par_init(&argc, &argv);   /* under mpirun: this process's rank (trainer/parallel.h) */
    setvbuf(stdout, NULL, _IOLBF, 0);
    return par_finish(run_command(argc, argv));
}
