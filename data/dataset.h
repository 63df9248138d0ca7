/* data/dataset.h: loading enwik8 (raw or gzip), the train/val/test split and the data's
 * identity. (The training batches drawn from a split: data/draw.h.) */
#ifndef FLASH_DATASET_H
#define FLASH_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Reads the whole file into memory. Gzip data (magic 1f 8b) is inflated with zlib,
   streaming in chunks (inflate with windowBits 15+32 or gz* API; handle concatenated members);
   any other content is taken as raw bytes, EXCEPT that a file whose name ends in ".gz" but
   does not start with the gzip magic is an error ("not gzip data"). Errors, each with a message
   that names the file and says which: missing/unreadable (strerror), empty (0 bytes), not gzip,
   corrupt (zlib data/CRC error), truncated (stream ends before the gzip trailer), empty after
   decompression. Returns 0, or -1 with the message in err. *out is malloc'ed. */
int data_load(const char *path, uint8_t **out, size_t *n, char *err, size_t errlen);

typedef struct {
    const uint8_t *train, *val, *test;
    size_t n_train, n_val, n_test;
    int proportional;   /* 1 when the file was shorter than 10^8 bytes and split 90/5/5 in proportion */
} DataSplit;

/* enwik8 standard split: n >= 100,000,000: train [0, 90e6), val [90e6, 95e6), test [95e6, 100e6)
   (bytes past 10^8 ignored). Shorter: n_train = n*9/10, n_val = n/20, n_test = n - n_train - n_val
   (for 4,154,064 bytes: 3,738,657 / 207,703 / 207,704). Returns 0, or -1 with message if any split
   is shorter than min_len bytes (the caller passes T+1): say which split and how long. */
int data_split(const uint8_t *bytes, size_t n, size_t min_len, DataSplit *s, char *err, size_t errlen);

/* CRC-32 of the n bytes a run uses: with their count, the data's identity in its checkpoints
   (a resume on other bytes is refused). */
uint32_t data_crc32(const uint8_t *p, size_t n);

#endif
