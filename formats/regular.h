/* formats/regular.h: opening a file to read only when it is a regular file, without ever
 * blocking. fopen of a FIFO with no writer waits forever; a directory or a device is no
 * input file. Every reader of the program's inputs (data, checkpoints, safetensors, the run
 * directory's files) opens through this. */
#ifndef FLASH_REGULAR_H
#define FLASH_REGULAR_H
#include <stddef.h>
#include <stdio.h>

/* fopen(path, mode) for a regular file ("r" or "rb"): opened with O_NONBLOCK, checked with
   fstat on the descriptor itself (no race with a rename), then made blocking again. NULL
   with a message "cannot open: ..." or "not a regular file (a FIFO)" in err. */
FILE *fopen_regular(const char *path, const char *mode, char *err, size_t errlen);
/* The kind of a non-regular file for messages: "a FIFO", "a directory", "a device", ... */
const char *file_kind_name(unsigned mode);

#endif
