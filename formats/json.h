/* formats/json.h: JSON for this project, read through jansson (libjansson-dev).
 *
 * jansson parses strictly (RFC 8259: no leading zeros, no trailing commas, no NaN, valid
 * UTF-8 and escapes) and, with JSON_REJECT_DUPLICATES, refuses an object that names a key
 * twice, so a file cannot say two things at once. The safetensors reader
 * (formats/safetensors.c) uses jansson directly; the settings and configs use the lookups
 * below. Writing stays ours (json_escape): the writers lay out their bytes exactly.
 */
#ifndef FLASH_JSON_H
#define FLASH_JSON_H
#include <stddef.h>
#include <stdint.h>

/* One top-level key of a JSON object held in a C string, e.g. the model config
   {"num_tokens": 256, "dim": 64, "norm_type": "layernorm"}. Each returns 0 if the key is
   found with the right type, 1 if it is absent, -1 if present with another type, or if
   the text is not a well-formed JSON object (a repeated key included). */
int json_get_number(const char *json, const char *key, double *out);
/* 0 when json is a well-formed JSON object (no repeated key); else -1 and what is wrong. */
int json_check_object(const char *json, char *err, size_t errlen);
/* A non-negative integer exactly (JSON integer, a decimal string for values above 2^63, or a
   whole number written as a real): 0 found, 1 absent, -1 not such a number. */
int json_get_u64(const char *json, const char *key, unsigned long long *out);
int json_get_bool(const char *json, const char *key, int *out); /* *out = 0 or 1 */
/* Also -1 when the string (plus its NUL) does not fit in outlen bytes (out is then ""). */
int json_get_string(const char *json, const char *key, char *out, size_t outlen);

/* Writes s as a JSON string literal (quotes included, escaped) at buf, snprintf-style:
   at most buflen-1 chars plus a NUL (buf may be NULL when buflen is 0), and returns the
   length the whole literal needs. So appending is `n += json_escape(buf+n, cap-n, s)`
   while n < cap. Escapes " \ and control characters like serde_json does (\n, \t,
   \u001f, ...); other bytes, UTF-8 included, are copied as they are. */
int json_escape(char *buf, size_t buflen, const char *s);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

#endif
