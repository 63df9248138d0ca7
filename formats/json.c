/* formats/json.c: JSON through jansson (strict RFC 8259 parsing, repeated keys refused), and
 * the string escaper our writers use (see json.h). */
#include "json.h"
#include <jansson.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The readers look up dozens of keys of one text in a row (a checkpoint's settings): the
   last text parsed is kept with its parse, so that they parse it once, not once per key.
   Lookups run on the main thread only. */
static char *g_last_text = NULL;
static json_t *g_last_root = NULL;

static json_t *parse_object(const char *json) {
    if (g_last_text && strcmp(g_last_text, json) == 0) return json_incref(g_last_root);
    json_error_t e;
    json_t *r = json_loads(json, JSON_REJECT_DUPLICATES, &e);
    if (!r || !json_is_object(r)) {
        json_decref(r);
        return NULL;
    }
    char *copy = strdup(json);
    if (copy) {
        json_decref(g_last_root);
        free(g_last_text);
        g_last_text = copy;
        g_last_root = json_incref(r);
    }
    return r;
}

/* The top-level value of `key` in the object `json`: 0 found, 1 absent, -1 when the text
   is not a JSON object (*root then NULL). The caller json_decref's *root. */
static int lookup(const char *json, const char *key, json_t **root, json_t **val) {
    *root = NULL;
    *val = NULL;
    if (!json || !key) return -1;
    json_t *r = parse_object(json);
    if (!r) return -1;
    *root = r;
    *val = json_object_get(r, key);
    return *val ? 0 : 1;
}

int json_check_object(const char *json, char *err, size_t errlen) {
    json_error_t e;
    json_t *r = json ? json_loads(json, JSON_REJECT_DUPLICATES, &e) : NULL;
    if (!r || !json_is_object(r)) {
        if (!json) snprintf(err, errlen, "no JSON text");
        else if (!r) snprintf(err, errlen, "malformed JSON (line %d, column %d: %s)", e.line, e.column, e.text);
        else snprintf(err, errlen, "the JSON is not an object");
        json_decref(r);
        return -1;
    }
    json_decref(r);
    return 0;
}

int json_get_number(const char *json, const char *key, double *out) {
    json_t *root, *v;
    int rc = lookup(json, key, &root, &v);
    if (rc == 0) {
        if (json_is_number(v)) *out = json_number_value(v);
        else rc = -1;
    }
    json_decref(root);
    return rc;
}

int json_get_u64(const char *json, const char *key, unsigned long long *out) {
    json_t *root, *v;
    int rc = lookup(json, key, &root, &v);
    if (rc == 0) {
        if (json_is_integer(v) && json_integer_value(v) >= 0) {
            *out = (unsigned long long)json_integer_value(v);
        } else if (json_is_string(v)) {   /* above 2^63: written as a decimal string */
            const char *t = json_string_value(v);
            char *end;
            errno = 0;
            unsigned long long x = strtoull(t, &end, 10);
            if (errno || end == t || *end || t[0] < '0' || t[0] > '9') rc = -1;
            else *out = x;
        } else if (json_is_real(v) && json_real_value(v) >= 0 && json_real_value(v) < 18446744073709551616.0 &&
                   json_real_value(v) == (double)(unsigned long long)json_real_value(v)) {
            *out = (unsigned long long)json_real_value(v);   /* older files: a whole double */
        } else {
            rc = -1;
        }
    }
    json_decref(root);
    return rc;
}

int json_get_bool(const char *json, const char *key, int *out) {
    json_t *root, *v;
    int rc = lookup(json, key, &root, &v);
    if (rc == 0) {
        if (json_is_boolean(v)) *out = json_is_true(v);
        else rc = -1;
    }
    json_decref(root);
    return rc;
}

int json_get_string(const char *json, const char *key, char *out, size_t outlen) {
    json_t *root, *v;
    if (outlen) out[0] = 0;
    int rc = lookup(json, key, &root, &v);
    if (rc == 0) {
        const size_t n = json_is_string(v) ? json_string_length(v) : 0;
        if (!json_is_string(v) || n + 1 > outlen) rc = -1;
        else memcpy(out, json_string_value(v), n + 1);
    }
    json_decref(root);
    return rc;
}

int json_utf8_valid(const char *s, size_t n) {
    json_t *v = json_stringn(s, n);   /* NULL when s[0..n) is not valid UTF-8 */
    json_decref(v);
    return v != NULL;
}

int json_escape(char *buf, size_t buflen, const char *s) {
    static const char hex[] = "0123456789abcdef";
    size_t n = 0; /* length of the full literal so far */
    char tmp[8];
/* Emits k bytes from tmp, keeping room for the NUL; counts them either way. */
#define EMIT(k)                                                \
    do {                                                       \
        for (size_t i_ = 0; i_ < (size_t)(k); i_++, n++)       \
            if (buflen > 0 && n < buflen - 1) buf[n] = tmp[i_]; \
    } while (0)
    tmp[0] = '"';
    EMIT(1);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        unsigned char c = *p;
        size_t k = 2;
        tmp[0] = '\\';
        switch (c) {
        case '"': tmp[1] = '"'; break;
        case '\\': tmp[1] = '\\'; break;
        case '\b': tmp[1] = 'b'; break;
        case '\f': tmp[1] = 'f'; break;
        case '\n': tmp[1] = 'n'; break;
        case '\r': tmp[1] = 'r'; break;
        case '\t': tmp[1] = 't'; break;
        default:
            if (c < 0x20) {
                memcpy(tmp + 1, "u00", 3);
                tmp[4] = hex[c >> 4];
                tmp[5] = hex[c & 15];
                k = 6;
            } else {
                tmp[0] = (char)c;
                k = 1;
            }
        }
        EMIT(k);
    }
    tmp[0] = '"';
    EMIT(1);
#undef EMIT
    if (buflen > 0) buf[n < buflen ? n : buflen - 1] = '\0';
    return (int)n;
}
