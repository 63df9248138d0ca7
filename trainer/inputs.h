/* trainer/inputs.h: what the commands read before they work: the data file split for a
 * window length, a command's checkpoint, and a model opened on the command's device. Each
 * exits with its message on failure: no command goes on without its inputs. */
#ifndef FLASH_INPUTS_H
#define FLASH_INPUTS_H
#include <stddef.h>
#include <stdint.h>
#include "checkpoint.h"
#include "dataset.h"
#include "model.h"
#include "options.h"

#define ERR_MAX 4096   /* messages quote paths of up to OPT_PATH_MAX bytes */

/* Loads FILE and splits it; every split must hold one window of T+1 bytes. The byte count
   (the bytes are the caller's to free). */
size_t load_data_split(const char *path, int T, uint8_t **bytes, DataSplit *sp);

/* The model options of a command: its device, precision and threads, activations for
   batches of up to B x T. */
ModelOptions command_model_options(const Options *o, int B, int T);

/* Opens a model of the checkpoint's config on the command's device and loads its state
   (with moments: both Adam moments too). */
Model *open_checkpointed(const Options *o, const CkptState *cs, int B, int T, int moments);

/* The checkpoint of a subcommand (a file or a run directory) into *o, *st, *cs, with the
   command line's device, precision and threads; path gets the file read (OPT_PATH_MAX). */
void load_command_checkpoint(const Options *cli, const char *arg, Options *o, TrainState *st,
                             CkptState *cs, char *path);

#endif
