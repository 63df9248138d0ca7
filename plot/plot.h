/* plot/plot.h: a small line-chart renderer that writes an RGB PNG (through libpng).
 *
 * Used to draw the training and validation loss curves of a run; the trainer calls
 * plot_png again whenever there is new data, and the file is replaced atomically. */
#ifndef FLASH_PLOT_H
#define FLASH_PLOT_H

#include <stddef.h>

typedef struct {
    const char *label;          /* legend text */
    const double *x, *y;        /* n points; NaN or inf y values are skipped (gap) */
    int n;
    unsigned char rgb[3];
} PlotSeries;

/* Renders the series into a width x height RGB PNG at path: white background, title
   centred on top, a framed plot area, x and y axes with 4-8 "nice" tick values (1, 2, 5 x 10^k)
   and their labels, axis labels (xlabel below, ylabel at the left, rotated), light grid lines,
   each series as a 2-px anti-aliased polyline (a single point still visible as a small dot),
   and a legend box with a colour swatch and label per series. Autoscale both axes over the
   finite data with a small margin; handles all-equal values, a single point, empty series,
   and no finite data (then draws the empty frame with "no data"). Writes PATH.tmp then
   rename() so a reader never sees a half-written file. title, xlabel, ylabel and labels may
   be NULL. Sizes must lie in 160..8192 x 120..8192. Returns 0 or -1 with a message in err. */
int plot_png(const char *path, int width, int height, const char *title,
             const char *xlabel, const char *ylabel,
             const PlotSeries *series, int n_series, char *err, size_t errlen);

#endif
