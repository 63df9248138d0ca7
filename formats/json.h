/* data/json.h: just enough JSON for this project.
 *
 * Two layers:
 *  - json_get_*: look up one top-level key of a flat JSON object held in a C string,
 *    e.g. the model config {"num_tokens": 256, "dim": 64, "norm_type": "layernorm"}.
 *    Nested values are skipped correctly but never searched.
 *  - json_skip_ws / json_parse_* / json_skip_value: a cursor over bytes [p, end) that
 *    need not be NUL-terminated, used by data/safetensors.c to walk a file header.
 *
 * Strings are decoded to UTF-8 (escapes \" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs
 * included). "\u0000" is refused: a C string cannot hold it. Numbers are read with
 * strtod, which assumes the "C" locale (the default unless the program calls setlocale).
 */
#ifndef FLASH_JSON_H
#define FLASH_JSON_H
#include <stddef.h>
#include <stdint.h>

/* Each returns 0 if the key is found with the right type, 1 if the key is absent, -1 if
   present but of the wrong type, or if the text is not a well-formed JSON object.
   A key given twice counts once, with its last value (as in Python's json). */
int json_get_number(const char *json, const char *key, double *out);
int json_get_bool(const char *json, const char *key, int *out); /* *out = 0 or 1 */
/* Also -1 when the decoded string (plus its NUL) does not fit in outlen bytes. */
int json_get_string(const char *json, const char *key, char *out, size_t outlen);

/* Writes s as a JSON string literal (quotes included, escaped) at buf, snprintf-style:
   at most buflen-1 chars plus a NUL (buf may be NULL when buflen is 0), and returns the
   length the whole literal needs. So appending is `n += json_escape(buf+n, cap-n, s)`
   while n < cap. Escapes " \ and control characters like serde_json does (\n, \t,
   \u001f, ...); other bytes, UTF-8 included, are copied as they are. */
int json_escape(char *buf, size_t buflen, const char *s);

/* ---- cursor layer: each function reads at *p (no further than end), returns 0 and
   moves *p past what it read, or returns -1 on malformed input (*p then undefined). ---- */

/* Returns the first byte at or after p that is not JSON whitespace (or end). */
const char *json_skip_ws(const char *p, const char *end);
/* A string literal starting at *p == '"'; *out gets a malloc'd decoded copy (caller
   frees) and, if len is not NULL, its length. */
int json_parse_string(const char **p, const char *end, char **out, size_t *len);
/* A non-negative integer without fraction or exponent (what safetensors calls usize). */
int json_parse_uint(const char **p, const char *end, uint64_t *out);
/* Any JSON value; nesting deeper than JSON_MAX_DEPTH is refused so hostile input
   cannot exhaust the stack. */
#define JSON_MAX_DEPTH 128
int json_skip_value(const char **p, const char *end);
/* An object's members, one at a time:

       JsonObject o;
       char *key;
       int rc;
       if (json_object_open(&o, &p, end) != 0) ...not an object...
       while ((rc = json_object_next(&o, &p, end, &key)) == 1) {
           ...the member's value is at p: read or skip it, moving p past it...
           free(key);
       }
       if (rc < 0) ...malformed: JSON_BAD_KEY, JSON_BAD_COLON or JSON_BAD_SEPARATOR...

   open reads the '{' (after any whitespace). next returns 1 with *key (a malloc'd decoded
   copy, the caller frees it) and p at the value; 0 after the closing '}', p past it; or a
   negative code with p where the error is (*key is then NULL, except for JSON_BAD_COLON,
   where it holds the key, for messages; the caller frees it). */
typedef struct {
    int members;   /* read so far */
} JsonObject;
enum { JSON_BAD_KEY = -1, JSON_BAD_COLON = -2, JSON_BAD_SEPARATOR = -3 };
int json_object_open(JsonObject *o, const char **p, const char *end);
int json_object_next(JsonObject *o, const char **p, const char *end, char **key);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

#endif
