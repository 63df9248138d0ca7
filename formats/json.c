/* data/json.c: see json.h. A hand-written recursive-descent reader: every function
 * checks against `end` before reading a byte, so truncated or hostile text can make it
 * fail but never read out of bounds. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

const char *json_skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at p (p[0..4) must lie before end). */
static long read_hex4(const char *p, const char *end) {
    long v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Encodes code point cp as UTF-8 at out; returns the number of bytes (1..4). */
static size_t utf8_encode(unsigned long cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int json_parse_string(const char **pp, const char *end, char **out, size_t *len) {
    const char *p = *pp;
    *out = NULL;
    if (p >= end || *p != '"') return -1;
    p++;
    /* First find the closing quote, so one allocation of the raw length suffices:
       every escape decodes to no more bytes than it takes in the source. */
    const char *q = p;
    while (q < end && *q != '"') {
        if (*q == '\\' && end - q < 2) return -1; /* backslash as the last byte */
        q += (*q == '\\') ? 2 : 1;
    }
    if (q >= end) return -1;
    char *s = malloc((size_t)(q - p) + 1);
    if (!s) return -1;
    size_t n = 0;
    while (p < q) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20) goto fail; /* raw control characters are not allowed in JSON */
        if (c != '\\') {
            s[n++] = (char)c;
            p++;
            continue;
        }
        p++; /* p < q here: the scan above never stops right after a backslash */
        switch (*p++) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            long cp = read_hex4(p, q);
            if (cp < 0) goto fail;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* high surrogate: a low one must follow */
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u') goto fail;
                long lo = read_hex4(p + 2, q);
                if (lo < 0xDC00 || lo > 0xDFFF) goto fail;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                goto fail; /* lone low surrogate */
            } else if (cp == 0) {
                goto fail; /* would end the C string early */
            }
            n += utf8_encode((unsigned long)cp, s + n);
            break;
        }
        default: goto fail;
        }
    }
    s[n] = '\0';
    *out = s;
    if (len) *len = n;
    *pp = q + 1;
    return 0;
fail:
    free(s);
    return -1;
}

/* Returns the end of the JSON number starting at p, or NULL if there is none.
   Grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *scan_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return NULL;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    return p;
}

int json_parse_uint(const char **pp, const char *end, uint64_t *out) {
    const char *p = *pp;
    const char *e = scan_number(p, end);
    if (!e || *p == '-') return -1;
    uint64_t v = 0;
    for (; p < e; p++) {
        if (*p < '0' || *p > '9') return -1; /* fraction or exponent */
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -1; /* overflow */
        v = v * 10 + d;
    }
    *out = v;
    *pp = e;
    return 0;
}

static int match_literal(const char **pp, const char *end, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(end - *pp) < n || memcmp(*pp, lit, n) != 0) return -1;
    *pp += n;
    return 0;
}

static int skip_value_depth(const char **pp, const char *end, int depth) {
    const char *p = json_skip_ws(*pp, end);
    if (p >= end || depth > JSON_MAX_DEPTH) return -1;
    if (*p == '"') {
        char *s;
        if (json_parse_string(&p, end, &s, NULL) != 0) return -1;
        free(s);
    } else if (*p == '{' || *p == '[') {
        char close = (*p == '{') ? '}' : ']';
        int is_object = (*p == '{');
        p = json_skip_ws(p + 1, end);
        if (p < end && *p == close) {
            *pp = p + 1;
            return 0;
        }
        for (;;) {
            if (is_object) {
                char *key;
                p = json_skip_ws(p, end);
                if (json_parse_string(&p, end, &key, NULL) != 0) return -1;
                free(key);
                p = json_skip_ws(p, end);
                if (p >= end || *p != ':') return -1;
                p++;
            }
            if (skip_value_depth(&p, end, depth + 1) != 0) return -1;
            p = json_skip_ws(p, end);
            if (p >= end) return -1;
            if (*p == close) break;
            if (*p != ',') return -1;
            p++;
        }
        p++;
    } else if (*p == 't') {
        if (match_literal(&p, end, "true") != 0) return -1;
    } else if (*p == 'f') {
        if (match_literal(&p, end, "false") != 0) return -1;
    } else if (*p == 'n') {
        if (match_literal(&p, end, "null") != 0) return -1;
    } else {
        p = scan_number(p, end);
        if (!p) return -1;
    }
    *pp = p;
    return 0;
}

int json_skip_value(const char **pp, const char *end) { return skip_value_depth(pp, end, 0); }

int json_object_open(JsonObject *o, const char **pp, const char *end) {
    const char *p = json_skip_ws(*pp, end);
    if (p >= end || *p != '{') return -1;
    *pp = p + 1;
    o->members = 0;
    return 0;
}

int json_object_next(JsonObject *o, const char **pp, const char *end, char **key) {
    const char *p = json_skip_ws(*pp, end);
    *key = NULL;
    if (p < end && *p == '}') {          /* the end, after the last member or at once */
        *pp = p + 1;
        return 0;
    }
    if (o->members > 0) {                /* after a value: a comma, then the next key */
        if (p >= end || *p != ',') {
            *pp = p;
            return JSON_BAD_SEPARATOR;
        }
        p = json_skip_ws(p + 1, end);
    }
    const char *at = p;
    if (json_parse_string(&p, end, key, NULL) != 0) {
        *pp = at;
        return JSON_BAD_KEY;
    }
    p = json_skip_ws(p, end);
    if (p >= end || *p != ':') {
        *pp = p;
        return JSON_BAD_COLON;
    }
    *pp = json_skip_ws(p + 1, end);
    o->members++;
    return 1;
}

int json_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *e = p + n;
    while (p < e) {
        unsigned c = *p;
        size_t need;
        unsigned long cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, cp = c & 0x07;
        } else {
            return 0; /* continuation byte or 0xC0/0xC1/0xF5+ as a lead byte */
        }
        if ((size_t)(e - p) <= need) return 0;
        for (size_t i = 1; i <= need; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000)) return 0; /* overlong */
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
        p += need + 1;
    }
    return 1;
}

/* Walks the whole top-level object of json (so malformed text is reported even when the
   key comes early) and leaves *val at the last value whose key equals key.
   Returns 0 if found, 1 if absent, -1 if json is not a well-formed object. */
static int find_member(const char *json, const char *key, const char **val) {
    if (!json || !key) return -1;
    const char *end = json + strlen(json), *p = json;
    *val = NULL;
    JsonObject o;
    char *k;
    int rc;
    if (json_object_open(&o, &p, end) != 0) return -1;
    while ((rc = json_object_next(&o, &p, end, &k)) == 1) {
        if (strcmp(k, key) == 0) *val = p;
        free(k);
        if (json_skip_value(&p, end) != 0) return -1;
    }
    free(k);   /* set only by JSON_BAD_COLON */
    if (rc < 0) return -1;
    if (json_skip_ws(p, end) != end) return -1; /* trailing garbage */
    return *val ? 0 : 1;
}

int json_get_number(const char *json, const char *key, double *out) {
    const char *v;
    int rc = find_member(json, key, &v);
    if (rc != 0) return rc;
    const char *e = scan_number(v, v + strlen(v));
    if (!e) return -1; /* present but not a number */
    /* strtod accepts more than JSON (hex, "inf"), hence the scan above; it then gets a
       NUL-terminated copy of exactly the scanned text. */
    size_t n = (size_t)(e - v);
    char *tmp = malloc(n + 1);
    if (!tmp) return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    *out = strtod(tmp, NULL);
    free(tmp);
    return 0;
}

int json_get_bool(const char *json, const char *key, int *out) {
    const char *v;
    int rc = find_member(json, key, &v);
    if (rc != 0) return rc;
    if (strncmp(v, "true", 4) == 0) {
        *out = 1;
        return 0;
    }
    if (strncmp(v, "false", 5) == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

int json_get_string(const char *json, const char *key, char *out, size_t outlen) {
    const char *v;
    if (out && outlen > 0) out[0] = '\0';
    int rc = find_member(json, key, &v);
    if (rc != 0) return rc;
    if (*v != '"') return -1;
    char *s;
    size_t n;
    if (json_parse_string(&v, v + strlen(v), &s, &n) != 0) return -1;
    if (!out || n + 1 > outlen) {
        free(s);
        return -1;
    }
    memcpy(out, s, n + 1);
    free(s);
    return 0;
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
