/* plot/plot.c: a small line-chart renderer (see plot.h) that writes an RGB PNG.
 *
 * Everything is drawn into an in-memory RGB image: text with the embedded 5x9 bitmap
 * font in font.h, curves as anti-aliased 2-px polylines (per-pixel coverage from the
 * distance to each segment), then the image goes through libpng to PATH, written
 * atomically (formats/atomic.h). */
#include "plot.h"
#include "atomic.h"
#include "font.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { unsigned char r, g, b; } Color;

typedef struct {
    int w, h;
    unsigned char *px;          /* w * h * 3 bytes, rows top to bottom */
} Image;

/* One axis: the data range shown and its ticks, which are multiples of step. */
typedef struct {
    double lo, hi;              /* range mapped onto the plot area's edges */
    double step;                /* tick spacing: 1, 2 or 5 x 10^k */
    double first_index;         /* first tick is first_index * step */
    int nticks;
    double div;                 /* tick labels show value / div followed by suffix */
    const char *suffix;
    int decimals;               /* digits after the point; -1: use %g with sig digits */
    int sig;
} Axis;

enum {
    MIN_W = 160, MIN_H = 120, MAX_SIDE = 8192,
    PAD = 8,                    /* space along the image border */
    TICK_LEN = 4,
    CHAR_ADV = FONT_W + 1,      /* horizontal advance of one character at scale 1 */
    CAP_H = 7,                  /* height of capitals and digits at scale 1 */
    LEGEND_ROW = 14,            /* legend row pitch */
    SWATCH_W = 18,
};

static const Color WHITE = {255, 255, 255};
static const Color TITLE_COLOR = {20, 20, 20};
static const Color TEXT_COLOR = {50, 50, 50};
static const Color FRAME_COLOR = {90, 90, 90};
static const Color GRID_COLOR = {226, 226, 226};
static const Color NODATA_COLOR = {130, 130, 130};
static const Color LEGEND_BORDER = {175, 175, 175};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------- pixels ---------- */

static void fill_rect(Image *im, int x, int y, int w, int h, Color c)
{
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > im->w ? im->w : x + w, y1 = y + h > im->h ? im->h : y + h;
    for (int j = y0; j < y1; j++) {
        for (int i = x0; i < x1; i++) {
            unsigned char *p = im->px + ((size_t)j * im->w + i) * 3;
            p[0] = c.r; p[1] = c.g; p[2] = c.b;
        }
    }
}

/* Mixes colour c over pixel (x, y) with opacity a in [0, 1]. */
static void blend(Image *im, int x, int y, Color c, double a)
{
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    unsigned char *p = im->px + ((size_t)y * im->w + x) * 3;
    p[0] = (unsigned char)lround(p[0] + (c.r - p[0]) * a);
    p[1] = (unsigned char)lround(p[1] + (c.g - p[1]) * a);
    p[2] = (unsigned char)lround(p[2] + (c.b - p[2]) * a);
}

static void stroke_rect(Image *im, int x, int y, int w, int h, Color c)
{
    fill_rect(im, x, y, w, 1, c);
    fill_rect(im, x, y + h - 1, w, 1, c);
    fill_rect(im, x, y, 1, h, c);
    fill_rect(im, x + w - 1, y, 1, h, c);
}

/* ---------- text ---------- */

static int text_width(const char *s, int scale)
{
    size_t n = s ? strlen(s) : 0;
    return n ? (int)(n * CHAR_ADV - 1) * scale : 0;
}

static const unsigned char *glyph(char ch)
{
    unsigned char c = (unsigned char)ch;
    if (c < FONT_FIRST || c > FONT_LAST) c = '?';
    return FONT_GLYPHS[c - FONT_FIRST];
}

/* Draws s with the top-left of its first capital at (x, y). */
static void draw_text(Image *im, int x, int y, const char *s, int scale, Color c)
{
    for (; s && *s; s++, x += CHAR_ADV * scale) {
        const unsigned char *g = glyph(*s);
        for (int row = 0; row < FONT_H; row++)
            for (int col = 0; col < FONT_W; col++)
                if (g[row] & (0x10 >> col))
                    fill_rect(im, x + col * scale, y + row * scale, scale, scale, c);
    }
}

/* Draws s rotated a quarter turn anticlockwise (reading upwards); the text starts at
   the bottom y and the tops of its capitals face the left edge x. */
static void draw_text_up(Image *im, int x, int y, const char *s, Color c)
{
    for (int u = 0; s && *s; s++, u += CHAR_ADV) {
        const unsigned char *g = glyph(*s);
        for (int row = 0; row < FONT_H; row++)
            for (int col = 0; col < FONT_W; col++)
                if (g[row] & (0x10 >> col))
                    fill_rect(im, x + row, y - (u + col), 1, 1, c);
    }
}

/* Copies s into buf, cut to at most max_w pixels wide at the given scale (ending in ".."
   when cut). */
static const char *fit_text(const char *s, int max_w, int scale, char *buf, size_t len)
{
    snprintf(buf, len, "%s", s);
    size_t n = strlen(buf);
    if (text_width(buf, scale) <= max_w) return buf;
    while (n > 2 && text_width(buf, scale) > max_w) {
        n--;
        buf[n] = '\0';
        buf[n - 1] = '.';
        buf[n - 2] = '.';
    }
    return buf;
}

/* ---------- axes and ticks ---------- */

/* Data range [mn, mx] widened by a fraction margin of its span on each side; a span
   too small to label (next to the values, or absolutely) becomes +-5% of the value, or
   +-1 around zero. */
static void axis_range(Axis *ax, double mn, double mx, double margin)
{
    double span = mx - mn, mag = fmax(fabs(mn), fabs(mx));
    if (span > mag * 1e-9 && span > 1e-200) {
        ax->lo = mn - margin * span;
        ax->hi = mx + margin * span;
    } else {
        double mid = mn + span / 2, half = fabs(mid) * 0.05;
        if (!(half > 1e-200)) half = 1;
        ax->lo = mid - half;
        ax->hi = mid + half;
    }
}

/* Number of multiples of step in [lo, hi] (capped at 1000), and the first one's index. */
static int count_ticks(double lo, double hi, double step, double *first_index)
{
    double a = ceil(lo / step - 1e-9), b = floor(hi / step + 1e-9);
    if (first_index) *first_index = a;
    if (b < a) return 0;
    return b - a < 999 ? (int)(b - a) + 1 : 1000;          /* also 1000 for NaN */
}

/* Picks the smallest step in 1, 2, 5 x 10^k that gives at most max_ticks ticks, then
   widens the range by a step at a time until there are at least 4. */
static void choose_ticks(Axis *ax, int max_ticks)
{
    static const double mult[3] = {1, 2, 5};
    double base = pow(10, floor(log10((ax->hi - ax->lo) / max_ticks)));
    double step = base;
    for (int k = 0; k < 60; k++) {
        step = base * mult[k % 3] * pow(10, k / 3);
        if (count_ticks(ax->lo, ax->hi, step, NULL) <= max_ticks) break;
    }
    for (int k = 0; count_ticks(ax->lo, ax->hi, step, NULL) < 4 && k < 8; k++) {
        double first;
        int n = count_ticks(ax->lo, ax->hi, step, &first);
        if (k % 2 == 0) ax->hi = (first + n) * step;         /* one more tick above */
        else ax->lo = (first - 1) * step;                    /* one more tick below */
    }
    ax->step = step;
    ax->nticks = count_ticks(ax->lo, ax->hi, step, &ax->first_index);

    /* Label format: 10000 and up as k, M, G where the step allows (20k, 1.5M); otherwise
       plain decimals, as many as the step needs. */
    double last = (ax->first_index + ax->nticks - 1) * step;
    double big = fmax(fabs(ax->first_index * step), fabs(last));
    ax->div = 1;
    ax->suffix = "";
    if (big >= 1e9 && step >= 1e8) { ax->div = 1e9; ax->suffix = "G"; }
    else if (big >= 1e6 && step >= 1e5) { ax->div = 1e6; ax->suffix = "M"; }
    else if (big >= 1e4 && step >= 1e3) { ax->div = 1e3; ax->suffix = "k"; }
    ax->decimals = (int)ceil(-log10(step / ax->div) - 1e-9);
    if (ax->decimals < 0) ax->decimals = 0;
    if (ax->decimals > 6 || big / ax->div >= 1e7) ax->decimals = -1;
    ax->sig = (int)(floor(log10(fmax(big, step))) - floor(log10(step))) + 1;
    ax->sig = ax->sig < 2 ? 2 : ax->sig > 17 ? 17 : ax->sig;
}

static double tick_value(const Axis *ax, int i)
{
    return (ax->first_index + i) * ax->step;
}

static void format_tick(const Axis *ax, int i, char *buf, size_t len)
{
    double v = tick_value(ax, i);
    if (fabs(v) < ax->step * 1e-6) snprintf(buf, len, "0");      /* not -0, 0k or 1e-17 */
    else if (ax->decimals < 0) snprintf(buf, len, "%.*g", ax->sig, v);
    else snprintf(buf, len, "%.*f%s", ax->decimals, v / ax->div, ax->suffix);
}

static int widest_tick_label(const Axis *ax)
{
    int w = 0;
    char buf[64];
    for (int i = 0; i < ax->nticks; i++) {
        format_tick(ax, i, buf, sizeof buf);
        int tw = text_width(buf, 1);
        if (tw > w) w = tw;
    }
    return w;
}

/* ---------- curves ---------- */

/* Raises coverage (0..255) of the pixels within radius r of segment p0-p1, in plot-area
   pixel coordinates where pixel (i, j) covers [i, i+1) x [j, j+1). */
static void cover_segment(unsigned char *cov, int pw, int ph,
                          double x0, double y0, double x1, double y1, double r)
{
    double reach = r + 1;
    double fx0 = fmax(fmin(x0, x1) - reach, 0), fx1 = fmin(fmax(x0, x1) + reach, pw - 1);
    double fy0 = fmax(fmin(y0, y1) - reach, 0), fy1 = fmin(fmax(y0, y1) + reach, ph - 1);
    if (fx0 > fx1 || fy0 > fy1) return;
    double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int j = (int)fy0; j <= (int)fy1; j++) {
        for (int i = (int)fx0; i <= (int)fx1; i++) {
            double px = i + 0.5 - x0, py = j + 0.5 - y0;
            double t = len2 > 0 ? (px * dx + py * dy) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double ex = px - t * dx, ey = py - t * dy;
            double a = r + 0.5 - sqrt(ex * ex + ey * ey);
            if (a <= 0) continue;
            unsigned char v = (unsigned char)lround((a > 1 ? 1 : a) * 255);
            if (v > cov[(size_t)j * pw + i]) cov[(size_t)j * pw + i] = v;
        }
    }
}

static int finite_point(const PlotSeries *s, int i)
{
    return i >= 0 && i < s->n && isfinite(s->x[i]) && isfinite(s->y[i]);
}

/* The plot area: interior pixels [left, left+w) x [top, top+h). */
typedef struct {
    int left, top, w, h;
    Axis x, y;
} Frame;

static double map_x(const Frame *f, double x) { return (x - f->x.lo) / (f->x.hi - f->x.lo) * f->w; }
static double map_y(const Frame *f, double y) { return (f->y.hi - y) / (f->y.hi - f->y.lo) * f->h; }

/* Draws one series: a 2-px polyline, broken at non-finite points; isolated points
   (and series that all fall on one spot) get 5-px dots, the points of sparse series
   (12+ px apart on average) 4-px dots. Marks the covered
   pixels in mask (used to place the legend). */
static void draw_series(Image *im, const Frame *f, const PlotSeries *s,
                        unsigned char *cov, unsigned char *mask)
{
    memset(cov, 0, (size_t)f->w * f->h);
    int nfinite = 0;
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int i = 0; i < s->n; i++) {
        if (!finite_point(s, i)) continue;
        nfinite++;
        xmin = fmin(xmin, s->x[i]);
        xmax = fmax(xmax, s->x[i]);
        ymin = fmin(ymin, s->y[i]);
        ymax = fmax(ymax, s->y[i]);
    }
    if (nfinite == 0) return;
    double span_x = map_x(f, xmax) - map_x(f, xmin), span_y = map_y(f, ymin) - map_y(f, ymax);
    int sparse = nfinite > 1 && span_x >= 12.0 * (nfinite - 1);
    int tiny = span_x < 2 && span_y < 2;        /* all points (nearly) on one spot */

    for (int i = 0; i < s->n; i++) {
        if (!finite_point(s, i)) continue;
        double px = map_x(f, s->x[i]), py = map_y(f, s->y[i]);
        int has_prev = finite_point(s, i - 1), has_next = finite_point(s, i + 1);
        if (has_next)
            cover_segment(cov, f->w, f->h, px, py,
                          map_x(f, s->x[i + 1]), map_y(f, s->y[i + 1]), 1.0);
        if ((!has_prev && !has_next) || tiny)
            cover_segment(cov, f->w, f->h, px, py, px, py, 2.5);
        else if (sparse)
            cover_segment(cov, f->w, f->h, px, py, px, py, 2.0);
    }

    Color c = {s->rgb[0], s->rgb[1], s->rgb[2]};
    for (int j = 0; j < f->h; j++) {
        for (int i = 0; i < f->w; i++) {
            unsigned char v = cov[(size_t)j * f->w + i];
            if (v == 0) continue;
            blend(im, f->left + i, f->top + j, c, v / 255.0);
            if (v >= 64) mask[(size_t)j * f->w + i] = 1;
        }
    }
}

/* ---------- legend ---------- */

static const char *series_label(const PlotSeries *s, int i, char *buf, size_t len)
{
    if (s->label && s->label[0]) return s->label;
    snprintf(buf, len, "series %d", i + 1);
    return buf;
}

/* Draws the legend in the corner of the plot area that hides the fewest curve pixels
   (preferring top right, then top left, bottom right, bottom left); labels too wide
   for the plot area are cut. */
static void draw_legend(Image *im, const Frame *f, const PlotSeries *series, int n_series,
                        const unsigned char *mask)
{
    char buf[32], fit[256];
    int inset = 8, extra_w = 8 + SWATCH_W + 6 + 8;        /* box width besides the labels */
    int max_label_w = f->w - 2 * inset - extra_w;         /* longer labels are cut */
    if (max_label_w < 3 * CHAR_ADV) return;               /* no room for a legend */
    int label_w = 0;
    for (int i = 0; i < n_series; i++) {
        const char *label = series_label(&series[i], i, buf, sizeof buf);
        int tw = text_width(fit_text(label, max_label_w, 1, fit, sizeof fit), 1);
        if (tw > label_w) label_w = tw;
    }
    int bw = extra_w + label_w;
    int bh = n_series * LEGEND_ROW + 6;
    int xs[2] = {f->left + f->w - inset - bw, f->left + inset};    /* right, left */
    int ys[2] = {f->top + inset, f->top + f->h - inset - bh};      /* top, bottom */
    int best_x = xs[0], best_y = ys[0];
    long best = -1;
    for (int k = 0; k < 4; k++) {
        int bx = xs[k % 2], by = ys[k / 2];
        long hidden = 0;
        for (int j = by; j < by + bh; j++)
            for (int i = bx; i < bx + bw; i++)
                if (i >= f->left && i < f->left + f->w && j >= f->top && j < f->top + f->h)
                    hidden += mask[(size_t)(j - f->top) * f->w + (i - f->left)];
        if (best < 0 || hidden < best) { best = hidden; best_x = bx; best_y = by; }
    }

    fill_rect(im, best_x, best_y, bw, bh, WHITE);
    stroke_rect(im, best_x, best_y, bw, bh, LEGEND_BORDER);
    for (int i = 0; i < n_series; i++) {
        const PlotSeries *s = &series[i];
        int ty = best_y + 6 + i * LEGEND_ROW;                        /* top of capitals */
        Color c = {s->rgb[0], s->rgb[1], s->rgb[2]};
        fill_rect(im, best_x + 8, ty + 2, SWATCH_W, 3, c);
        const char *label = series_label(s, i, buf, sizeof buf);
        draw_text(im, best_x + 8 + SWATCH_W + 6, ty,
                  fit_text(label, max_label_w, 1, fit, sizeof fit), 1, TEXT_COLOR);
    }
}

/* ---------- the whole chart ---------- */

/* Draws the chart into im (already white). Returns 0, or -1 with a message. */
static int render(Image *im, const char *title, const char *xlabel, const char *ylabel,
                  const PlotSeries *series, int n_series, char *err, size_t errlen)
{
    /* Extent of the finite data. */
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    long nfinite = 0;
    for (int k = 0; k < n_series; k++) {
        for (int i = 0; i < series[k].n; i++) {
            if (!finite_point(&series[k], i)) continue;
            nfinite++;
            xmin = fmin(xmin, series[k].x[i]);
            xmax = fmax(xmax, series[k].x[i]);
            ymin = fmin(ymin, series[k].y[i]);
            ymax = fmax(ymax, series[k].y[i]);
        }
    }
    int have_data = nfinite > 0;
    double biggest = fmax(fmax(fabs(xmin), fabs(xmax)), fmax(fabs(ymin), fabs(ymax)));
    if (have_data && biggest > 1e300) {                  /* the margins would overflow */
        set_err(err, errlen, "data values too large to plot (%g)", biggest);
        return -1;
    }

    /* Vertical layout: title, plot area, tick labels, x label. */
    int has_title = title && title[0], has_xlabel = xlabel && xlabel[0];
    int has_ylabel = ylabel && ylabel[0];
    int title_scale = has_title && text_width(title, 2) <= im->w - 2 * PAD ? 2 : 1;
    char title_buf[256], xlabel_buf[256], ylabel_buf[256];
    if (has_title)
        title = fit_text(title, im->w - 2 * PAD, title_scale, title_buf, sizeof title_buf);
    Frame f;
    memset(&f, 0, sizeof f);
    f.top = has_title ? PAD + FONT_H * title_scale + 8 : PAD + 6;
    int tick_label_gap = TICK_LEN + 4;                 /* frame to top of tick labels */
    int bottom = 1 + tick_label_gap + CAP_H + (has_xlabel ? 8 + FONT_H : 0) + PAD;
    f.h = im->h - f.top - 1 - bottom;

    /* The y ticks depend only on the height; their labels set the left margin. */
    int ytick_w = 0;
    if (have_data) {
        axis_range(&f.y, ymin, ymax, 0.06);
        int max_y = f.h / 40;
        choose_ticks(&f.y, max_y < 4 ? 4 : max_y > 8 ? 8 : max_y);
        ytick_w = widest_tick_label(&f.y);
    }
    f.left = PAD + (has_ylabel ? FONT_H + 8 : 0) + (have_data ? ytick_w + 4 + TICK_LEN : 0) + 1;

    /* x ticks: fewer when their labels would crowd; the right margin leaves room for
       half of the last label. */
    int right = 14;
    if (have_data) {
        for (int pass = 0; pass < 2; pass++) {
            f.w = im->w - f.left - 1 - right;
            for (int max_x = 8; max_x >= 4; max_x--) {
                axis_range(&f.x, xmin, xmax, 0.02);
                choose_ticks(&f.x, max_x);
                double spacing = f.x.step / (f.x.hi - f.x.lo) * f.w;
                if (spacing >= widest_tick_label(&f.x) + 16) break;
            }
            char buf[64];
            format_tick(&f.x, f.x.nticks - 1, buf, sizeof buf);
            int need = text_width(buf, 1) / 2 + 6;
            if (need <= right) break;
            right = need;
        }
    }
    f.w = im->w - f.left - 1 - right;
    if (f.w < 20 || f.h < 20) {
        set_err(err, errlen, "image %dx%d too small for its labels", im->w, im->h);
        return -1;
    }

    /* Title and axis labels (cut to the plot area's size). */
    if (has_title)
        draw_text(im, (im->w - text_width(title, title_scale)) / 2, PAD, title, title_scale,
                  TITLE_COLOR);
    int xtick_y = f.top + f.h + 1 + tick_label_gap;
    if (has_xlabel) {
        xlabel = fit_text(xlabel, f.w, 1, xlabel_buf, sizeof xlabel_buf);
        draw_text(im, f.left + (f.w - text_width(xlabel, 1)) / 2, xtick_y + CAP_H + 8, xlabel,
                  1, TEXT_COLOR);
    }
    if (has_ylabel) {
        ylabel = fit_text(ylabel, f.h, 1, ylabel_buf, sizeof ylabel_buf);
        draw_text_up(im, PAD, f.top + (f.h + text_width(ylabel, 1)) / 2, ylabel, TEXT_COLOR);
    }

    if (!have_data) {
        stroke_rect(im, f.left - 1, f.top - 1, f.w + 2, f.h + 2, FRAME_COLOR);
        const char *msg = "no data";
        int scale = text_width(msg, 2) < f.w - 8 ? 2 : 1;
        draw_text(im, f.left + (f.w - text_width(msg, scale)) / 2,
                  f.top + (f.h - CAP_H * scale) / 2, msg, scale, NODATA_COLOR);
        return 0;
    }

    /* Grid lines, tick marks and tick labels. */
    char buf[64];
    for (int i = 0; i < f.x.nticks; i++) {
        int px = f.left + (int)floor(map_x(&f, tick_value(&f.x, i)));
        if (px >= f.left + f.w) px = f.left + f.w - 1;
        fill_rect(im, px, f.top, 1, f.h, GRID_COLOR);
        fill_rect(im, px, f.top + f.h + 1, 1, TICK_LEN, FRAME_COLOR);
        format_tick(&f.x, i, buf, sizeof buf);
        draw_text(im, px - text_width(buf, 1) / 2, xtick_y, buf, 1, TEXT_COLOR);
    }
    for (int i = 0; i < f.y.nticks; i++) {
        int py = f.top + (int)floor(map_y(&f, tick_value(&f.y, i)));
        if (py >= f.top + f.h) py = f.top + f.h - 1;
        fill_rect(im, f.left, py, f.w, 1, GRID_COLOR);
        fill_rect(im, f.left - 1 - TICK_LEN, py, TICK_LEN, 1, FRAME_COLOR);
        format_tick(&f.y, i, buf, sizeof buf);
        draw_text(im, f.left - 1 - TICK_LEN - 4 - text_width(buf, 1), py - CAP_H / 2, buf, 1,
                  TEXT_COLOR);
    }

    /* Curves, then the frame over their edges, then the legend. */
    unsigned char *cov = malloc((size_t)f.w * f.h);
    unsigned char *mask = calloc((size_t)f.w * f.h, 1);
    if (!cov || !mask) {
        free(cov);
        free(mask);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    for (int k = 0; k < n_series; k++) draw_series(im, &f, &series[k], cov, mask);
    stroke_rect(im, f.left - 1, f.top - 1, f.w + 2, f.h + 2, FRAME_COLOR);
    if (n_series > 0) draw_legend(im, &f, series, n_series, mask);
    free(cov);
    free(mask);
    return 0;
}

/* ---------- PNG output ---------- */

static int write_png(FILE *fp, const char *path, const Image *im, char *err, size_t errlen)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        set_err(err, errlen, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {              /* libpng reports errors by longjmp */
        png_destroy_write_struct(&png, &info);
        set_err(err, errlen, "libpng failed writing %s", path);
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < im->h; y++) png_write_row(png, im->px + (size_t)y * im->w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int plot_png(const char *path, int width, int height, const char *title,
             const char *xlabel, const char *ylabel,
             const PlotSeries *series, int n_series, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!path || !path[0]) {
        set_err(err, errlen, "plot_png: no output path");
        return -1;
    }
    if (width < MIN_W || height < MIN_H || width > MAX_SIDE || height > MAX_SIDE) {
        set_err(err, errlen, "plot_png: size %dx%d outside %d..%d x %d..%d", width, height,
                MIN_W, MAX_SIDE, MIN_H, MAX_SIDE);
        return -1;
    }
    if (n_series < 0 || (n_series > 0 && !series)) {
        set_err(err, errlen, "plot_png: bad series list (%d series)", n_series);
        return -1;
    }
    for (int k = 0; k < n_series; k++) {
        if (series[k].n < 0 || (series[k].n > 0 && (!series[k].x || !series[k].y))) {
            set_err(err, errlen, "plot_png: series %d has n=%d but no x/y arrays", k,
                    series[k].n);
            return -1;
        }
    }

    Image im = {width, height, malloc((size_t)width * height * 3)};
    if (!im.px) {
        set_err(err, errlen, "plot_png: out of memory");
        return -1;
    }
    memset(im.px, 255, (size_t)width * height * 3);

    int rc = render(&im, title, xlabel, ylabel, series, n_series, err, errlen);
    if (rc == 0) {
        AtomicFile af;
        rc = afile_open(&af, path, err, errlen);
        if (rc == 0 && (rc = write_png(af.f, af.tmp, &im, err, errlen)) != 0) afile_abort(&af);
        else if (rc == 0) rc = afile_commit(&af, err, errlen);
    }
    free(im.px);
    return rc;
}
