/* trainer/commands.h: the subcommands of ./train: each takes its own argv (argv[1] is its
 * name) and returns the exit code; a bad line or a failure exits with the message. */
#ifndef FLASH_COMMANDS_H
#define FLASH_COMMANDS_H

int cmd_eval(int argc, char **argv);     /* trainer/commands.c */
int cmd_sample(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_bench(int argc, char **argv);    /* trainer/bench.c: argv[0] is "bench" */
int cmd_compare(int argc, char **argv);  /* trainer/compare.c: runs' validation curves in one PNG */

#endif
