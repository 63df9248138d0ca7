/* trainer/metrics.h: metrics.csv (one row per step) and loss.png (redrawn as the run goes). */
#ifndef FLASH_METRICS_H
#define FLASH_METRICS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_HEADER "step,tokens,lr,train_loss,val_loss,val_bpc,grad_norm,tok_per_s,elapsed_s"

typedef struct {
    char csv_path[1100], png_path[1100];
    FILE *csv;
    double *tr_step, *tr_loss, *va_step, *va_loss;   /* history for the plot */
    long n_tr, n_va, cap;
} Metrics;

/* Opens DIR/metrics.csv. With keep_upto >= 0 (a resume) the rows of steps <= keep_upto are
   kept and the rest dropped (the run continues from there); otherwise the file starts
   afresh. cap: the most rows the run can add. 0, or -1 with a message. */
int metrics_open(Metrics *mt, const char *dir, long keep_upto, long cap, char *err, size_t errlen);
/* NaN for a value not measured at this step (written as an empty field). 0, or the errno of
   a failed write (the file then ends in a partial row: the caller stops the run). */
int metrics_row(Metrics *mt, uint64_t step, uint64_t tokens, double lr, double train_loss,
                 double val_loss, double grad_norm, double tok_per_s, double elapsed_s);
int metrics_plot(const Metrics *mt, const char *title, char *err, size_t errlen);
void metrics_close(Metrics *mt);

/* The validation rows of DIR/metrics.csv (a regular file): n of them, each its step, the
   run's elapsed seconds and the validation loss in bits per byte, in malloc'd arrays the
   caller frees. 0, or -1 with a message (no file, a row that is not one, no validation). */
int metrics_read_val(const char *dir, double **step, double **elapsed, double **bpc, int *n, char *err,
                     size_t errlen);

#endif
