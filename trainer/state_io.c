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
    const ParamTable *t = model_table(m);
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
    }
    float *host = malloc(t->total * sizeof(float));
    if (!host) { snprintf(err, errlen, "out of memory importing %s", path); return -1; }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        /* the data region need not be aligned: memcpy */
        memcpy(host + p->offset, st_tensor_data(f, st_find(f, p->name)), p->numel * sizeof(float));
    }
    int rc = model_write(m, STATE_PARAMS, host, err, errlen);
    free(host);
    return rc;
}

int model_read_safetensors(StFile *f, const char *path, const FlashConfig *base, FlashConfig *cfg,
                           char *err, size_t errlen) {
    if (st_load(f, path, err, errlen)) return -1;
    *cfg = base ? *base : config_default();
    const char *json = st_meta(f, "config");
    char cerr[256];
    if ((json && config_from_json(cfg, json, cerr, sizeof cerr)) ||
        (!json && config_validate(cfg, cerr, sizeof cerr))) {
        snprintf(err, errlen, "%s: %s", path, cerr);
        st_free(f);
        return -1;
    }
    return 0;
}

Model *model_load_safetensors(const char *path, const FlashConfig *base, const ModelOptions *opt,
                              char *err, size_t errlen) {
    StFile f;
    FlashConfig cfg;
    if (model_read_safetensors(&f, path, base, &cfg, err, errlen)) return NULL;
    char cerr[512];
    Model *m = model_open(&cfg, opt, cerr, sizeof cerr);
    if (!m) {
        snprintf(err, errlen, "%s: %s", path, cerr);
        st_free(&f);
        return NULL;
    }
    int rc = model_import(m, &f, path, err, errlen);
    st_free(&f);
    if (rc) { model_close(m); return NULL; }
    return m;
}

int model_export(Model *m, const char *path, const char *const *keys,
                 const char *const *vals, int n_extra, char *err, size_t errlen) {
    const ParamTable *t = model_table(m);
    float *copy = malloc(t->total * sizeof(float));
    StWriter *w = st_writer_new();
    if (!copy || !w) {
        free(copy);
        if (w) st_writer_free(w);
        snprintf(err, errlen, "out of memory exporting %s", path);
        return -1;
    }
    if (model_read(m, STATE_PARAMS, copy, err, errlen)) {
        free(copy);
        st_writer_free(w);
        return -1;
    }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->info[i];
        st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, copy + p->offset);
    }
    char json[1024];
    config_to_json(model_config(m), json, sizeof json);
    st_writer_meta(w, "config", json);
    for (int i = 0; i < n_extra; i++) st_writer_meta(w, keys[i], vals[i]);
    int rc = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    free(copy);
    return rc;
}
