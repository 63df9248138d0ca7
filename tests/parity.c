/* tests/parity.c: our model against the reference implementation's golden fixtures.
 *
 *   parity FIXTURES_DIR OUT_DIR
 *
 * For every NAME.expected.safetensors in FIXTURES_DIR (with NAME.weights.safetensors):
 * - forward/backward fixtures (key `tokens`): logits, loss and every parameter gradient;
 * - optimizer fixtures (key `batches`): the recipe of the metadata run for `steps` steps,
 *   then per-step loss, lr, grad_norm and every final state_dict entry.
 * Writes OUT_DIR/NAME.computed.safetensors with the keys of the expected file, prints the
 * worst errors, and exits non-zero if any fixture misses its tolerance:
 * relative L2 1e-5 (logits, loss, lr), 1e-4 (each gradient, grad_norm), absolute 1e-5
 * (final weights). Prints the test harness's lines so tests/run.sh counts one test per
 * fixture. */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"
#include "optim.h"
#include "safetensors.h"
#include "state_io.h"
#include "test.h"

static ModelDevice parity_device = DEVICE_CPU;   /* FLASH_DEVICE=cuda: the GPU backend */

#define TOL_LOGITS 1e-5
#define TOL_GRAD 1e-4
#define TOL_FINAL_ABS 1e-5

typedef struct {
    double worst_grad; char worst_grad_name[128];
    int ok;
} Report;

static double rel_l2(const float *x, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double dlt = (double)x[i] - ref[i];
        num += dlt * dlt;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return sqrt(num);
    return sqrt(num / den);
}

static double max_abs(const float *x, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double dlt = fabs((double)x[i] - ref[i]);
        if (dlt > m || isnan(dlt)) m = dlt;
    }
    return m;
}

/* Expected tensor as float (copied: the data region need not be aligned). */
static float *expected_f32(const StFile *f, const char *name, size_t *n) {
    const StTensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F32) return NULL;
    *n = (size_t)st_numel(t);
    float *out = malloc(*n * sizeof(float) + 1);
    memcpy(out, st_tensor_data(f, t), *n * sizeof(float));
    return out;
}

static int *expected_tokens(const StFile *f, const char *name, size_t *n, const StTensor **tp) {
    const StTensor *t = st_find(f, name);
    if (!t || t->dtype != ST_I64) return NULL;
    *tp = t;
    *n = (size_t)st_numel(t);
    int *out = malloc(*n * sizeof(int) + 1);
    const unsigned char *src = st_tensor_data(f, t);
    for (size_t i = 0; i < *n; i++) {
        int64_t v;
        memcpy(&v, src + i * 8, 8);
        out[i] = (int)v;
    }
    return out;
}

/* Compares one computed tensor with the expected one and records it for the output. */
static void compare(const char *fixture, const char *key, const float *got, const StFile *exp,
                    int absolute, double tol, Report *r) {
    size_t n;
    float *ref = expected_f32(exp, key, &n);
    if (!ref) { printf("  %s: expected file lacks %s\n", fixture, key); r->ok = 0; return; }
    double err = absolute ? max_abs(got, ref, n) : rel_l2(got, ref, n);
    if (!(err <= tol)) {
        printf("  %s: %-60s %s error %.3e > %.0e\n", fixture, key, absolute ? "max abs" : "rel L2", err, tol);
        r->ok = 0;
    }
    if (err > r->worst_grad || isnan(err)) { r->worst_grad = err; snprintf(r->worst_grad_name, sizeof r->worst_grad_name, "%s", key); }
    free(ref);
}

static double meta_num(const StFile *f, const char *key, int *ok) {
    const char *v = st_meta(f, key);
    if (!v) { *ok = 0; return 0; }
    return atof(v);
}

/* The worst error per group of keys, for the summary line. */
typedef struct { double logits, loss, grad, lr, gnorm, final_abs; char grad_name[128]; } Worst;

static void track(double *slot, double v) { if (v > *slot || isnan(v)) *slot = v; }

static int run_fixture(const char *dir, const char *name, const char *outdir) {
    char wpath[1024], epath[1024], opath[1024], err[512];
    snprintf(wpath, sizeof wpath, "%s/%s.weights.safetensors", dir, name);
    snprintf(epath, sizeof epath, "%s/%s.expected.safetensors", dir, name);
    snprintf(opath, sizeof opath, "%s/%s.computed.safetensors", outdir, name);
    StFile exp, wf;
    FlashConfig cfg;
    if (st_load(&exp, epath, err, sizeof err)) { printf("  %s: %s\n", name, err); return 0; }
    if (model_read_safetensors(&wf, wpath, NULL, &cfg, err, sizeof err)) {
        printf("  %s: %s\n", name, err);
        st_free(&exp);
        return 0;
    }
    /* the model, on the device FLASH_DEVICE names, with activations for the fixture's batches */
    const StTensor *tt = NULL;
    size_t ntok;
    int *tokens = expected_tokens(&exp, "tokens", &ntok, &tt);
    const int is_fwd = tokens != NULL;
    int *batches = is_fwd ? NULL : expected_tokens(&exp, "batches", &ntok, &tt);
    ModelOptions mo = {.device = parity_device, .max_B = 1, .max_T = 1};
    if (tt && (tt->ndim == 2 || tt->ndim == 4)) {
        mo.max_B = (int)tt->shape[tt->ndim - 2];
        mo.max_T = (int)tt->shape[tt->ndim - 1] - 1;
        mo.step_seqs = tt->ndim == 4 ? (int)(tt->shape[1] * tt->shape[2]) : mo.max_B;
    }
    Model *m = model_open(&cfg, &mo, err, sizeof err);
    if (!m || model_import(m, &wf, wpath, err, sizeof err)) {
        printf("  %s: %s\n", name, err);
        st_free(&wf); st_free(&exp); free(tokens); free(batches); model_close(m);
        return 0;
    }
    st_free(&wf);
    Report rep = {0, "", 1};
    Worst w = {0, 0, 0, 0, 0, 0, ""};
    StWriter *out = st_writer_new();
    const ParamTable *t = model_table(m);
    const int V = cfg.num_tokens;
    float *grads = malloc(t->total * sizeof(float));
    /* keeps computed tensors alive until the writer saves */
    float **keep = calloc((size_t)t->n + 8, sizeof *keep);
    int nkeep = 0;
    char (*keys)[160] = calloc((size_t)t->n + 8, sizeof *keys);
    if (!grads) { printf("  %s: out of memory\n", name); rep.ok = 0; goto done; }

    if (is_fwd) {
        const int B = (int)tt->shape[0], T = (int)tt->shape[1] - 1;
        size_t nl = (size_t)B * T * V;
        float *logits = keep[nkeep++] = malloc(nl * sizeof(float));
        /* the logits of a forward; the loss and gradients of one step of one micro-batch */
        model_forward(m, tokens, B, T, NULL, logits);
        float loss = (float)model_accumulate(m, tokens, B, B, T, 1);
        if (model_read(m, STATE_GRADS, grads, err, sizeof err)) { printf("  %s: %s\n", name, err); rep.ok = 0; goto done; }
        float *lossp = keep[nkeep++] = malloc(sizeof(float));
        *lossp = loss;
        compare(name, "logits", logits, &exp, 0, TOL_LOGITS, &rep);
        w.logits = rep.worst_grad; rep.worst_grad = 0;
        compare(name, "loss", lossp, &exp, 0, TOL_LOGITS, &rep);
        w.loss = rep.worst_grad; rep.worst_grad = 0;
        int64_t lshape[3] = {B, T, V}, one = 1;
        st_writer_add(out, "tokens", ST_I64, 2, tt->shape, st_tensor_data(&exp, tt));
        st_writer_add(out, "logits", ST_F32, 3, lshape, logits);
        st_writer_add(out, "loss", ST_F32, 1, &one, lossp);
        for (int i = 0; i < t->n; i++) {
            const ParamInfo *p = &t->info[i];
            if (!p->trained) continue;
            float *g = keep[nkeep++] = malloc(p->numel * sizeof(float));
            memcpy(g, grads + p->offset, p->numel * sizeof(float));
            snprintf(keys[i], sizeof keys[i], "grad.%s", p->name);
            compare(name, keys[i], g, &exp, 0, TOL_GRAD, &rep);
            st_writer_add(out, keys[i], ST_F32, p->ndim, p->shape, g);
        }
        w.grad = rep.worst_grad;
        snprintf(w.grad_name, sizeof w.grad_name, "%s", rep.worst_grad_name);
    } else {
        if (!batches || tt->ndim != 4) { printf("  %s: neither `tokens` nor `batches` (steps, accum, B, T+1)\n", name); rep.ok = 0; goto done; }
        const int steps = (int)tt->shape[0], accum = (int)tt->shape[1], B = (int)tt->shape[2];
        const int T = (int)tt->shape[3] - 1;
        int ok = 1;
        OptConfig o;
        o.peak_lr = meta_num(&exp, "peak_lr", &ok);
        o.min_lr = meta_num(&exp, "min_lr", &ok);
        o.warmup = (long)meta_num(&exp, "warmup", &ok);
        o.total = (long)meta_num(&exp, "total", &ok);
        o.beta1 = meta_num(&exp, "beta1", &ok);
        o.beta2 = meta_num(&exp, "beta2", &ok);
        o.eps = meta_num(&exp, "eps", &ok);
        o.weight_decay = meta_num(&exp, "weight_decay", &ok);
        o.clip = meta_num(&exp, "clip", &ok);
        const char *mode = st_meta(&exp, "clip_mode");
        o.clip_mode = !mode ? CLIP_NONE : !strcmp(mode, "local") ? CLIP_LOCAL
                    : !strcmp(mode, "global") ? CLIP_GLOBAL : CLIP_NONE;
        if (!ok || !mode) { printf("  %s: recipe metadata incomplete\n", name); rep.ok = 0; goto done; }
        float *losses = keep[nkeep++] = malloc(steps * sizeof(float));
        float *lrs = keep[nkeep++] = malloc(steps * sizeof(float));
        float *gnorms = keep[nkeep++] = malloc(steps * sizeof(float));
        for (int s = 0; s < steps; s++) {
            const int *bt = batches + (size_t)s * accum * B * (T + 1);
            double loss = model_accumulate(m, bt, accum * B, B, T, accum);
            double lr = lr_at(&o, s);
            double gn = model_update(m, &o, s + 1, lr);
            losses[s] = (float)loss; lrs[s] = (float)lr; gnorms[s] = (float)gn;
        }
        int64_t sh = steps;
        if (model_read(m, STATE_PARAMS, grads, err, sizeof err)) { printf("  %s: %s\n", name, err); rep.ok = 0; goto done; }
        compare(name, "loss", losses, &exp, 0, TOL_LOGITS, &rep); track(&w.loss, rep.worst_grad); rep.worst_grad = 0;
        compare(name, "lr", lrs, &exp, 0, TOL_LOGITS, &rep); track(&w.lr, rep.worst_grad); rep.worst_grad = 0;
        compare(name, "grad_norm", gnorms, &exp, 0, TOL_GRAD, &rep); track(&w.gnorm, rep.worst_grad); rep.worst_grad = 0;
        st_writer_add(out, "loss", ST_F32, 1, &sh, losses);
        st_writer_add(out, "lr", ST_F32, 1, &sh, lrs);
        st_writer_add(out, "grad_norm", ST_F32, 1, &sh, gnorms);
        for (int i = 0; i < t->n; i++) {
            const ParamInfo *p = &t->info[i];
            float *f = keep[nkeep++] = malloc(p->numel * sizeof(float));
            memcpy(f, grads + p->offset, p->numel * sizeof(float));   /* the final parameters */
            snprintf(keys[i], sizeof keys[i], "final.%s", p->name);
            compare(name, keys[i], f, &exp, 1, TOL_FINAL_ABS, &rep);
            st_writer_add(out, keys[i], ST_F32, p->ndim, p->shape, f);
        }
        w.final_abs = rep.worst_grad;
        snprintf(w.grad_name, sizeof w.grad_name, "%s", rep.worst_grad_name);
    }
    for (int i = 0; i < exp.n_meta; i++) st_writer_meta(out, exp.meta_keys[i], exp.meta_vals[i]);
    if (st_writer_save(out, opath, err, sizeof err)) { printf("  %s: %s\n", name, err); rep.ok = 0; }
    if (is_fwd)
        printf("  %-16s logits %.2e  loss %.2e  worst grad %.2e (%s)  -> %s\n", name, w.logits,
               w.loss, w.grad, w.grad_name, rep.ok ? "ok" : "MISS");
    else
        printf("  %-16s loss %.2e  lr %.2e  grad_norm %.2e  worst final |diff| %.2e (%s)  -> %s\n",
               name, w.loss, w.lr, w.gnorm, w.final_abs, w.grad_name, rep.ok ? "ok" : "MISS");
done:
    for (int i = 0; i < nkeep; i++) free(keep[i]);
    free(keep); free(keys); free(tokens); free(batches); free(grads);
    st_writer_free(out);
    st_free(&exp);
    model_close(m);
    return rep.ok;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: [FLASH_DEVICE=cpu|cuda] parity FIXTURES_DIR OUT_DIR\n"); return 2; }
    const char *dev = getenv("FLASH_DEVICE");
    if (dev && *dev && strcmp(dev, "cpu")) {
        if (strcmp(dev, "cuda")) { fprintf(stderr, "parity: FLASH_DEVICE must be cpu or cuda, not %s\n", dev); return 2; }
        parity_device = DEVICE_CUDA;
    }
    printf("parity on the %s\n", parity_device == DEVICE_CUDA ? "GPU (fp32, no TF32)" : "CPU");
    const char *dir = argv[1], *outdir = argv[2];
    if (mkdir(outdir, 0777) && errno != EEXIST) { perror(outdir); return 2; }
    DIR *dp = opendir(dir);
    if (!dp) { perror(dir); return 2; }
    char *names[256];
    int n = 0;
    const char *suffix = ".expected.safetensors";
    struct dirent *de;
    while ((de = readdir(dp)) && n < 256) {
        size_t len = strlen(de->d_name), sl = strlen(suffix);
        if (len > sl && !strcmp(de->d_name + len - sl, suffix)) {
            names[n] = strdup(de->d_name);
            names[n][len - sl] = 0;
            n++;
        }
    }
    closedir(dp);
    qsort(names, n, sizeof names[0], cmp_str);
    if (n == 0) { fprintf(stderr, "parity: no *.expected.safetensors in %s\n", dir); return 2; }
    printf("parity: %d fixture(s) in %s (model in %s)\n", n, dir, R_NAME);
    for (int i = 0; i < n; i++) {
        test_case_failed_ = !run_fixture(dir, names[i], outdir);
        if (test_case_failed_) { test_failed_++; printf("FAIL parity_%s\n", names[i]); }
        else { test_passed_++; printf("ok   parity_%s\n", names[i]); }
        free(names[i]);
    }
    TEST_MAIN_END();
}
