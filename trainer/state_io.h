/* model/state_io.h: the model's state_dict as a safetensors file, with the PyTorch names,
 * the two untrained buffers included and the config JSON in the metadata, so that
 * FLASH-pytorch loads it with load_state_dict(strict=True) and we load its files. Through
 * model/model.h only: the parameters go in and out as host floats (model_read/model_write). */
#ifndef FLASH_STATE_IO_H
#define FLASH_STATE_IO_H
#include <stddef.h>
#include "model.h"
#include "safetensors.h"

/* Copies every tensor of the table from f into m's parameters. The file must hold exactly the
   table's names, each F32 with the table's shape; anything else is refused with a message
   naming the tensor. */
int model_import(Model *m, const StFile *f, const char *path, char *err, size_t errlen);

/* The model config PATH describes: its `config` metadata over *base (keys it lacks keep
   base's values; base may be NULL for the defaults). f receives the open file (st_free it). */
int model_read_safetensors(StFile *f, const char *path, const FlashConfig *base, FlashConfig *cfg,
                           char *err, size_t errlen);

/* Reads PATH, opens a model of its config with opt and imports the tensors: the model, or
   NULL with a message. */
Model *model_load_safetensors(const char *path, const FlashConfig *base, const ModelOptions *opt,
                              char *err, size_t errlen);

/* Writes m's parameters (all table entries, F32) and the config JSON plus the optional extra
   metadata pairs (keys[i], vals[i]) to PATH atomically. */
int model_export(Model *m, const char *path, const char *const *keys, const char *const *vals,
                 int n_extra, char *err, size_t errlen);

#endif
