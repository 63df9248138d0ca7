/* model/state_io.c: safetensors import and export of the parameter table. */
#include "state_io.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

int model_import(Model *m, const StFile *f, const char *path, char *err, size_t errlen) {
    const ParamTable *t = &m->table;
    for (int i = 0; i < f->n_tensors; i++)
        if (!params_find(t, f->tensors[i].name)) {
            snprintf(err, errlen, "%s: unexpected tensor \"%s\" (not a parameter of this model)",
                     path, f->tensors[i].name);
            return -1;
        }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        const StTensor *st = st_find(f, p->name);
        char want[64], got[64];
        shape_str(want, sizeof want, p->ndim, p->shape);
        if (!st) {
            snprintf(err, errlen, "%s: tensor \"%s\" %s is missing", path, p->name, want);
            return -1;
        }
        if (st->dtype != ST_F32) {
            snprintf(err, errlen, "%s: tensor \"%s\" has dtype %s, expected F32", path, p->name,
                     st->dtype_str);
            return -1;
        }
        int same = st->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = st->shape[k] == p->shape[k];
        if (!same) {
            shape_str(got, sizeof got, st->ndim, st->shape);
            snprintf(err, errlen, "%s: tensor \"%s\" has shape %s, expected %s", path, p->name,
                     got, want);
            return -1;
        }
        const float *src = st_tensor_data(f, st);
        real *dst = m->params + p->offset;
        for (size_t k = 0; k < p->numel; k++) {
            float v;
            memcpy(&v, src + k, sizeof v);   /* the data region need not be aligned */
            dst[k] = (real)v;
        }
    }
    model_params_changed(m);
    return 0;
}

int model_load_safetensors(Model *m, const char *path, const FlashConfig *base,
                           char *err, size_t errlen) {
    StFile f;
    if (st_load(&f, path, err, errlen)) return -1;
    FlashConfig cfg = base ? *base : config_default();
    const char *json = st_meta(&f, "config");
    char cerr[256];
    if (json && config_from_json(&cfg, json, cerr, sizeof cerr)) {
        snprintf(err, errlen, "%s: %s", path, cerr);
        st_free(&f);
        return -1;
    }
    if (model_create(m, &cfg, cerr, sizeof cerr)) {
        snprintf(err, errlen, "%s: %s", path, cerr);
        st_free(&f);
        return -1;
    }
    int rc = model_import(m, &f, path, err, errlen);
    st_free(&f);
    if (rc) model_destroy(m);
    return rc;
}

int model_export(const Model *m, const char *path, const char *const *keys,
                 const char *const *vals, int n_extra, char *err, size_t errlen) {
    const ParamTable *t = &m->table;
    float *copy = malloc(t->total * sizeof(float));
    StWriter *w = st_writer_new();
    if (!copy || !w) {
        free(copy);
        if (w) st_writer_free(w);
        snprintf(err, errlen, "out of memory exporting %s", path);
        return -1;
    }
    for (size_t k = 0; k < t->total; k++) copy[k] = (float)m->params[k];
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, copy + p->offset);
    }
    char json[1024];
    config_to_json(&m->cfg, json, sizeof json);
    st_writer_meta(w, "config", json);
    for (int i = 0; i < n_extra; i++) st_writer_meta(w, keys[i], vals[i]);
    int rc = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    free(copy);
    return rc;
}
