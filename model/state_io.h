/* model/state_io.h: the model's state_dict as a safetensors file, with the PyTorch names,
 * the two untrained buffers included and the config JSON in the metadata, so that
 * FLASH-pytorch loads it with load_state_dict(strict=True) and we load its files. */
#ifndef FLASH_STATE_IO_H
#define FLASH_STATE_IO_H
#include <stddef.h>
#include "flash.h"
#include "safetensors.h"

/* Copies every tensor of the table from f into m->params. The file must hold exactly the
   table's names, each F32 with the table's shape; anything else is refused with a message
   naming the tensor. */
int model_import(Model *m, const StFile *f, const char *path, char *err, size_t errlen);

/* Reads PATH: config from its `config` metadata (keys it lacks keep *base's values; base
   may be NULL for the defaults), creates *m, imports the tensors. */
int model_load_safetensors(Model *m, const char *path, const FlashConfig *base,
                           char *err, size_t errlen);

/* Writes m->params (all table entries, F32) and the config JSON plus the optional extra
   metadata pairs (keys[i], vals[i]) to PATH atomically. */
int model_export(const Model *m, const char *path, const char *const *keys,
                 const char *const *vals, int n_extra, char *err, size_t errlen);

#endif
