/* trainer/metrics.c: the CSV log and the loss plot. */
#include "metrics.h"
#include "evaluate.h"
#include "plot.h"
#include "atomic.h"
#include "regular.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void field(FILE *f, double v, const char *fmt) {
    fputc(',', f);
    if (!isnan(v)) fprintf(f, fmt, v);
}

static void push(Metrics *mt, double step, double tl, double vl) {
    if (!isnan(tl) && mt->n_tr < mt->cap) { mt->tr_step[mt->n_tr] = step; mt->tr_loss[mt->n_tr++] = tl; }
    if (!isnan(vl) && mt->n_va < mt->cap) { mt->va_step[mt->n_va] = step; mt->va_loss[mt->n_va++] = vl; }
}

/* Splits a CSV line into numbers; an empty field is NaN. Returns the field count. */
static int parse_row(char *line, double *v, int max) {
    int n = 0;
    char *p = line;
    while (n < max) {
        char *end = strchr(p, ',');
        if (end) *end = 0;
        char *q;
        double x = strtod(p, &q);
        v[n++] = q == p ? NAN : x;
        if (!end) break;
        p = end + 1;
    }
    return n;
}

int metrics_open(Metrics *mt, const char *dir, long keep_upto, long cap, char *err, size_t errlen) {
    memset(mt, 0, sizeof *mt);
    snprintf(mt->csv_path, sizeof mt->csv_path, "%s/metrics.csv", dir);
    snprintf(mt->png_path, sizeof mt->png_path, "%s/loss.png", dir);
    mt->cap = cap + keep_upto + 2;
    mt->tr_step = calloc((size_t)mt->cap, sizeof(double));
    mt->tr_loss = calloc((size_t)mt->cap, sizeof(double));
    mt->va_step = calloc((size_t)mt->cap, sizeof(double));
    mt->va_loss = calloc((size_t)mt->cap, sizeof(double));
    if (!mt->tr_step || !mt->tr_loss || !mt->va_step || !mt->va_loss) {
        snprintf(err, errlen, "out of memory for the metrics history");
        return -1;
    }
    /* the file as it should start, written atomically; then rows are appended */
    AtomicFile af;
    if (afile_open(&af, mt->csv_path, err, errlen)) return -1;
    FILE *out = af.f;
    fprintf(out, "%s\n", METRICS_HEADER);
    if (keep_upto >= 0) {
        char why[256];
        FILE *in = fopen_regular(mt->csv_path, "r", why, sizeof why);
        char line[1024];
        if (!in && errno != ENOENT) {   /* a FIFO or a directory in its place: never block on it */
            snprintf(err, errlen, "%s: %s", mt->csv_path, why);
            afile_abort(&af);
            return -1;
        }
        if (in) {
            if (!fgets(line, sizeof line, in)) line[0] = 0;   /* header */
            while (fgets(line, sizeof line, in)) {
                char copy[1024];
                snprintf(copy, sizeof copy, "%s", line);
                double v[9];
                if (parse_row(copy, v, 9) < 9 || isnan(v[0]) || v[0] > keep_upto) continue;
                fputs(line, out);
                push(mt, v[0], v[3], v[4]);
            }
            fclose(in);
        }
    }
    if (afile_commit(&af, err, errlen)) return -1;
    mt->csv = fopen(mt->csv_path, "a");
    if (!mt->csv) { snprintf(err, errlen, "cannot append to %s: %s", mt->csv_path, strerror(errno)); return -1; }
    return 0;
}

int metrics_row(Metrics *mt, uint64_t step, uint64_t tokens, double lr, double train_loss,
                 double val_loss, double grad_norm, double tok_per_s, double elapsed_s) {
    FILE *f = mt->csv;
    fprintf(f, "%llu,%llu", (unsigned long long)step, (unsigned long long)tokens);
    field(f, lr, "%.9g");
    field(f, train_loss, "%.9g");   /* 9 significant digits round-trip a float32 */
    field(f, val_loss, "%.9g");
    field(f, isnan(val_loss) ? NAN : val_loss / LN2, "%.9g");
    field(f, grad_norm, "%.9g");
    field(f, tok_per_s, "%.1f");
    field(f, elapsed_s, "%.3f");
    fputc('\n', f);
    push(mt, (double)step, train_loss, val_loss);
    errno = 0;
    if (fflush(f) || ferror(f)) return errno ? errno : EIO;
    return 0;
}

int metrics_plot(const Metrics *mt, const char *title, char *err, size_t errlen) {
    PlotSeries s[2] = {
        {"train loss", mt->tr_step, mt->tr_loss, (int)mt->n_tr, {70, 130, 200}},
        {"validation loss", mt->va_step, mt->va_loss, (int)mt->n_va, {220, 90, 40}},
    };
    return plot_png(mt->png_path, 800, 500, title, "step", "loss (nats per byte)", s, 2, err, errlen);
}

void metrics_close(Metrics *mt) {
    if (mt->csv) fclose(mt->csv);
    free(mt->tr_step); free(mt->tr_loss); free(mt->va_step); free(mt->va_loss);
    memset(mt, 0, sizeof *mt);
}

int metrics_read_val(const char *dir, double **step, double **elapsed, double **bpc, int *n, char *err,
                     size_t errlen) {
    char path[2048], line[1024];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    *step = *elapsed = *bpc = NULL;
    *n = 0;
    char why[256];
    FILE *in = fopen_regular(path, "r", why, sizeof why);
    if (!in) { snprintf(err, errlen, "%s: %s", path, why); return -1; }
    size_t cap = 0;
    int rc = 0, lineno = 1;
    if (!fgets(line, sizeof line, in) || strncmp(line, "step,tokens,lr,train_loss,val_loss,val_bpc", 42)) {
        snprintf(err, errlen, "%s: not a flash.c metrics.csv (its header differs)", path);
        rc = -1;
    }
    while (!rc && fgets(line, sizeof line, in)) {
        double v[9];
        lineno++;
        if (parse_row(line, v, 9) < 9 || isnan(v[0])) {
            snprintf(err, errlen, "%s:%d: not a row of 9 fields", path, lineno);
            rc = -1;
            break;
        }
        if (isnan(v[5])) continue;   /* no validation at this step */
        if ((size_t)*n == cap) {
            cap = cap ? 2 * cap : 64;
            double *a = realloc(*step, cap * sizeof **step), *b = a ? realloc(*elapsed, cap * sizeof **elapsed) : NULL,
                   *c = b ? realloc(*bpc, cap * sizeof **bpc) : NULL;
            if (a) *step = a;
            if (b) *elapsed = b;
            if (c) *bpc = c;
            if (!a || !b || !c) { snprintf(err, errlen, "out of memory reading %s", path); rc = -1; break; }
        }
        (*step)[*n] = v[0];
        (*elapsed)[*n] = isnan(v[8]) ? 0 : v[8];
        (*bpc)[*n] = v[5];
        (*n)++;
    }
    fclose(in);
    if (!rc && *n == 0) { snprintf(err, errlen, "%s has no validation rows", path); rc = -1; }
    if (rc) { free(*step); free(*elapsed); free(*bpc); *step = *elapsed = *bpc = NULL; *n = 0; }
    return rc;
}

