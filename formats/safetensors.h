/* formats/safetensors.h: read and write the safetensors format.
 *
 * A file is an 8-byte little-endian u64 N, N bytes of JSON header, then the data region.
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets into the data region) and may hold "__metadata__", a string->string object.
 *
 * st_load applies the same rules as Python's `safetensors` library, so a file it accepts
 * loads there and the other way round: the tensors' byte ranges, sorted, must tile the
 * data region exactly (no hole, no overlap, nothing left over), each range's size must
 * equal numel * dtype size, names are unique, the header is valid UTF-8 JSON.
 * st_writer_save writes files that satisfy the same rules.
 *
 * Data is read and written as the host's bytes, so both refuse to run on a big-endian
 * host rather than silently swap nothing.
 */
#ifndef FLASH_SAFETENSORS_H
#define FLASH_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

/* ST_OTHER: any other dtype safetensors knows (BF16, F16, U8, BOOL, ...): loaded with its
   byte range checked and its name kept in dtype_str, but not interpreted here. */
typedef enum { ST_F32, ST_F64, ST_I64, ST_I32, ST_OTHER } StDtype;

typedef struct {
    char name[256];
    StDtype dtype;
    char dtype_str[16];      /* as in the file, e.g. "F32", "BF16" */
    int ndim;                /* 0..8 */
    int64_t shape[8];
    size_t offset, nbytes;   /* into the data region */
} StTensor;

typedef struct {
    unsigned char *buf;      /* whole file contents */
    size_t size;
    const unsigned char *data; /* start of the data region */
    StTensor *tensors; int n_tensors;   /* in header order */
    char **meta_keys; char **meta_vals; int n_meta;
    void *alloc_;            /* private: the block st_free releases (buf lies inside it) */
} StFile;

/* Reads the whole file into memory and checks it. Returns 0, or -1 with a message in err
   naming the file and what is wrong; f is then empty and st_free(f) is harmless.
   Never crashes on malformed input.
   The data region always starts 64-byte aligned in memory, so each tensor is aligned
   for its dtype whenever its offset is a multiple of its dtype size (true of files
   written by Python's safetensors, which orders tensors by dtype size, and of files
   from st_writer_save when larger dtypes are added first). */
int st_load(StFile *f, const char *path, char *err, size_t errlen);
const StTensor *st_find(const StFile *f, const char *name);   /* NULL if absent */
const void *st_tensor_data(const StFile *f, const StTensor *t);
int64_t st_numel(const StTensor *t);                          /* 1 for a 0-dim tensor */
const char *st_meta(const StFile *f, const char *key);        /* NULL if absent */
void st_free(StFile *f);
size_t st_dtype_size(StDtype d);                              /* 0 for ST_OTHER */

typedef struct StWriter StWriter;
StWriter *st_writer_new(void);                                /* NULL if out of memory */
/* data is NOT copied: it must stay valid until st_writer_save returns. Tensors are
   written contiguously in the order added. A bad call (ST_OTHER dtype, ndim outside
   0..8, negative dim, duplicate name, NULL data for a non-empty tensor) is remembered
   and makes st_writer_save fail with a message saying which. */
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data);
/* key and value are copied; setting a key again replaces its value. */
void st_writer_meta(StWriter *w, const char *key, const char *value);
/* Writes PATH.tmp, fflush + fsync, then rename() to PATH, so a crash never leaves a half
   file at PATH. Returns 0 or -1 with message (the .tmp file is removed on failure).
   The header is padded with spaces to a multiple of 8 bytes; "__metadata__" is written
   only when some metadata was set. */
int st_writer_save(StWriter *w, const char *path, char *err, size_t errlen);
void st_writer_free(StWriter *w);

#endif
