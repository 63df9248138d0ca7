/* tests/test_plot.c: plot_png renders readable PNGs and survives degenerate input.
 *
 * Each test renders into /tmp, reads the file back with libpng and checks pixels:
 * the size and colour type, the series colours inside the image, dark title text,
 * a mostly white background. */
#include "plot.h"
#include "test.h"

#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int w, h, color_type, bit_depth;
    unsigned char *rgb;         /* w * h * 3, NULL unless the file is 8-bit RGB */
} Png;

/* Reads path with libpng; returns 0 on success. */
static int read_png(const char *path, Png *out)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(fp);
        return -1;
    }
    png_init_io(png, fp);
    png_read_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    out->w = (int)png_get_image_width(png, info);
    out->h = (int)png_get_image_height(png, info);
    out->color_type = png_get_color_type(png, info);
    out->bit_depth = png_get_bit_depth(png, info);
    if (out->color_type == PNG_COLOR_TYPE_RGB && out->bit_depth == 8) {
        png_bytepp rows = png_get_rows(png, info);
        out->rgb = malloc((size_t)out->w * out->h * 3);
        for (int y = 0; y < out->h; y++)
            memcpy(out->rgb + (size_t)y * out->w * 3, rows[y], (size_t)out->w * 3);
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    return 0;
}

static const unsigned char *pixel(const Png *p, int x, int y)
{
    return p->rgb + ((size_t)y * p->w + x) * 3;
}

/* Pixels in [x0,x1) x [y0,y1) exactly of colour rgb. */
static int count_color(const Png *p, int x0, int y0, int x1, int y1, const unsigned char rgb[3])
{
    int n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            if (memcmp(pixel(p, x, y), rgb, 3) == 0) n++;
    return n;
}

/* Pixels in [x0,x1) x [y0,y1) whose channels are all below limit. */
static int count_dark(const Png *p, int x0, int y0, int x1, int y1, int limit)
{
    int n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            const unsigned char *c = pixel(p, x, y);
            if (c[0] < limit && c[1] < limit && c[2] < limit) n++;
        }
    return n;
}

static double white_fraction(const Png *p)
{
    static const unsigned char white[3] = {255, 255, 255};
    return (double)count_color(p, 0, 0, p->w, p->h, white) / ((double)p->w * p->h);
}

static char g_path[256];

static const char *tmp_png(const char *name)
{
    snprintf(g_path, sizeof g_path, "/tmp/test_plot_%ld_%s.png", (long)getpid(), name);
    return g_path;
}

static const unsigned char BLUE[3] = {31, 119, 180}, ORANGE[3] = {255, 127, 14};
enum { SWATCH_PIXELS = 18 * 3 };    /* legend swatch drawn in each series colour */

/* A training-like run: loss falling from ~5.6 to ~1.3 over 2000 steps with noise,
   validation every 100 steps. */
enum { NTRAIN = 2000, NVAL = 20 };
static double tx[NTRAIN], ty[NTRAIN], vx[NVAL], vy[NVAL];

static void make_run(void)
{
    unsigned s = 12345;
    for (int i = 0; i < NTRAIN; i++) {
        s = s * 1664525u + 1013904223u;
        double noise = ((s >> 8) / 16777216.0 - 0.5) * 0.3;
        tx[i] = i + 1;
        ty[i] = 1.3 + 4.3 * exp(-i / 350.0) + noise;
    }
    for (int i = 0; i < NVAL; i++) {
        vx[i] = (i + 1) * 100;
        vy[i] = 1.45 + 4.2 * exp(-(i + 1) * 100 / 350.0);
    }
}

static PlotSeries series(const char *label, const double *x, const double *y, int n,
                         const unsigned char rgb[3])
{
    PlotSeries s = {label, x, y, n, {rgb[0], rgb[1], rgb[2]}};
    return s;
}

static void test_two_series(void)
{
    make_run();
    PlotSeries s[2] = {series("train", tx, ty, NTRAIN, BLUE), series("val", vx, vy, NVAL, ORANGE)};
    const char *path = tmp_png("two");
    char err[256], tmp[300];
    int rc = plot_png(path, 640, 400, "FLASH training loss", "step", "loss", s, 2, err,
                      sizeof err);
    CHECK(rc == 0, "plot_png failed: %s", err);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);

    Png p;
    CHECK(read_png(path, &p) == 0, "cannot read back %s", path);
    CHECK(p.w == 640 && p.h == 400, "size %dx%d", p.w, p.h);
    CHECK(p.color_type == PNG_COLOR_TYPE_RGB && p.bit_depth == 8, "colour type %d depth %d",
          p.color_type, p.bit_depth);
    if (!p.rgb) return;

    /* Both curves drawn inside the image body, well beyond the legend swatches. */
    int nblue = count_color(&p, 0, 30, p.w, p.h - 20, BLUE);
    int norange = count_color(&p, 0, 30, p.w, p.h - 20, ORANGE);
    CHECK(nblue > SWATCH_PIXELS + 400, "train colour pixels: %d", nblue);
    CHECK(norange > SWATCH_PIXELS + 200, "val colour pixels: %d", norange);

    /* The loss falls: train pixels sit higher (smaller row) on the left than on the right. */
    double row_sum[2] = {0, 0};
    int row_n[2] = {0, 0};
    for (int y = 30; y < p.h - 20; y++)
        for (int x = 0; x < p.w; x++)
            if (memcmp(pixel(&p, x, y), BLUE, 3) == 0 && (x < p.w / 4 || x >= p.w * 3 / 4)) {
                int side = x >= p.w * 3 / 4;
                row_sum[side] += y;
                row_n[side]++;
            }
    CHECK(row_n[0] > 0 && row_n[1] > 0, "curve pixels on both sides: %d %d", row_n[0], row_n[1]);
    if (row_n[0] > 0 && row_n[1] > 0)
        CHECK(row_sum[0] / row_n[0] < row_sum[1] / row_n[1] - 50,
              "falling curve should be higher on the left: mean rows %.0f vs %.0f",
              row_sum[0] / row_n[0], row_sum[1] / row_n[1]);

    /* Dark title text at the top centre; the rest of the chart uses lighter greys. */
    int dark = count_dark(&p, p.w / 4, 0, p.w * 3 / 4, 28, 40);
    CHECK(dark > 50, "dark title pixels: %d", dark);
    /* Axis text and frame: dark-ish pixels along the left and bottom margins. */
    CHECK(count_dark(&p, 0, 0, 60, p.h, 60) > 50, "no y tick labels / y label");
    CHECK(count_dark(&p, 0, p.h - 40, p.w, p.h, 60) > 50, "no x tick labels / x label");
    double white = white_fraction(&p);
    CHECK(white > 0.6, "white fraction %.2f", white);
    free(p.rgb);
    remove(path);
}

static void test_no_title(void)
{
    make_run();
    PlotSeries s = series("train", tx, ty, NTRAIN, BLUE);
    const char *path = tmp_png("notitle");
    char err[256];
    CHECK(plot_png(path, 400, 300, NULL, NULL, NULL, &s, 1, err, sizeof err) == 0, "%s", err);
    Png p;
    CHECK(read_png(path, &p) == 0 && p.rgb, "cannot read back");
    if (!p.rgb) return;
    CHECK(count_dark(&p, p.w / 4, 0, p.w * 3 / 4, 28, 40) == 0, "title pixels without a title");
    CHECK(count_color(&p, 0, 0, p.w, p.h, BLUE) > SWATCH_PIXELS + 200, "curve missing");
    free(p.rgb);
    remove(path);
}

/* Renders series to a 400x300 PNG, checks it reads back, returns pixels of colour rgb
   (-1 on failure). */
static int render_count(const char *name, const PlotSeries *s, int n, const unsigned char rgb[3])
{
    const char *path = tmp_png(name);
    char err[256];
    int rc = plot_png(path, 400, 300, "degenerate", "x", "y", s, n, err, sizeof err);
    CHECK(rc == 0, "%s: %s", name, err);
    Png p;
    int ok = read_png(path, &p) == 0 && p.rgb && p.w == 400 && p.h == 300;
    CHECK(ok, "%s: bad PNG", name);
    if (!ok) { free(p.rgb); return -1; }
    CHECK(white_fraction(&p) > 0.6, "%s: white fraction %.2f", name, white_fraction(&p));
    int count = count_color(&p, 0, 0, p.w, p.h, rgb);
    free(p.rgb);
    remove(path);
    return count;
}

static void test_single_point(void)
{
    /* The orange point keeps the chart (and its legend) the same with and without the
       blue one, so the difference in blue pixels is the dot. */
    double x[1] = {5}, y[1] = {2.5}, x2[1] = {6}, y2[1] = {3};
    PlotSeries s[3] = {series("one", x, y, 1, BLUE), series("none", NULL, NULL, 0, ORANGE),
                       series("other", x2, y2, 1, ORANGE)};
    int with_point = render_count("single", s, 3, BLUE);
    s[0].n = 0;
    int without = render_count("single0", s, 3, BLUE);
    CHECK(with_point - without >= 9, "single point dot not visible: %d vs %d pixels", with_point,
          without);
}

static void test_constant(void)
{
    double x[50], y[50];
    for (int i = 0; i < 50; i++) { x[i] = i * 10; y[i] = 3.0; }
    PlotSeries s = series("flat", x, y, 50, BLUE);
    int n = render_count("const", &s, 1, BLUE);
    CHECK(n > SWATCH_PIXELS + 150, "flat line pixels: %d", n);
    /* All x equal too. */
    for (int i = 0; i < 50; i++) x[i] = 7;
    n = render_count("const2", &s, 1, BLUE);
    CHECK(n > SWATCH_PIXELS, "same-point pixels: %d", n);
}

static void test_nan_gaps(void)
{
    /* Two finite points with a NaN between: two dots, no line across the plot. */
    double x[3] = {0, 1, 2}, y[3] = {1, NAN, 3};
    PlotSeries s = series("gappy", x, y, 3, BLUE);
    int n = render_count("gap", &s, 1, BLUE);
    CHECK(n >= SWATCH_PIXELS + 18 && n < SWATCH_PIXELS + 80, "two dots expected, got %d pixels", n);

    /* Noise with NaN and inf scattered in: still drawn. */
    double x2[100], y2[100];
    for (int i = 0; i < 100; i++) {
        x2[i] = i;
        y2[i] = i % 17 == 3 ? NAN : i % 23 == 5 ? INFINITY : i % 29 == 7 ? -INFINITY : 4.0 - i * 0.02;
    }
    PlotSeries s2 = series("nan", x2, y2, 100, ORANGE);
    n = render_count("nan", &s2, 1, ORANGE);
    CHECK(n > SWATCH_PIXELS + 150, "curve with NaNs: %d pixels", n);
}

static void test_no_data(void)
{
    static const unsigned char nodata_grey[3] = {130, 130, 130};
    double x[4] = {0, 1, 2, 3}, y[4] = {NAN, NAN, INFINITY, NAN};
    PlotSeries s[2] = {series("train", x, y, 4, BLUE), series("val", NULL, NULL, 0, ORANGE)};
    int n = render_count("nodata", s, 2, nodata_grey);
    CHECK(n > 20, "'no data' text pixels: %d", n);
    n = render_count("zero", NULL, 0, nodata_grey);
    CHECK(n > 20, "zero series: 'no data' text pixels: %d", n);
}

static void test_large_steps(void)
{
    double x[200], y[200];
    for (int i = 0; i < 200; i++) { x[i] = i * 1000.0; y[i] = 10.0 / (1 + i); }
    PlotSeries s = series("train", x, y, 200, BLUE);
    CHECK(render_count("large", &s, 1, BLUE) > SWATCH_PIXELS + 150, "large x curve");
}

static void test_errors(void)
{
    char err[256];
    double x[2] = {0, 1}, y[2] = {1, 2};
    PlotSeries s = series("a", x, y, 2, BLUE);
    const char *bad = "/tmp/no_such_dir_test_plot/x/loss.png";
    err[0] = '\0';
    CHECK(plot_png(bad, 400, 300, "t", "x", "y", &s, 1, err, sizeof err) == -1,
          "missing directory accepted");
    CHECK(strlen(err) > 0, "no error message");
    CHECK(strstr(err, "no_such_dir_test_plot") != NULL, "message lacks the path: %s", err);
    CHECK(access(bad, F_OK) != 0, "file created");

    err[0] = '\0';
    CHECK(plot_png(tmp_png("tiny"), 10, 10, "t", "x", "y", &s, 1, err, sizeof err) == -1,
          "10x10 accepted");
    CHECK(strlen(err) > 0, "no error message for bad size");
    CHECK(plot_png(NULL, 400, 300, "t", "x", "y", &s, 1, err, sizeof err) == -1, "NULL path");
    PlotSeries broken = series("b", NULL, y, 2, BLUE);
    CHECK(plot_png(tmp_png("broken"), 400, 300, "t", "x", "y", &broken, 1, err, sizeof err) == -1,
          "n=2 with NULL x accepted");
    double huge[2] = {0, 1e305};
    PlotSeries h = series("h", x, huge, 2, BLUE);
    err[0] = '\0';
    CHECK(plot_png(tmp_png("huge"), 400, 300, "t", "x", "y", &h, 1, err, sizeof err) == -1,
          "1e305 accepted");
    CHECK(strlen(err) > 0, "no error message for huge values");
    /* A NULL err buffer is allowed. */
    CHECK(plot_png(bad, 400, 300, "t", "x", "y", &s, 1, NULL, 0) == -1, "NULL err");
}

static void test_overwrite(void)
{
    make_run();
    const char *path = tmp_png("redraw");
    char err[256];
    /* The trainer redraws the same file as the run goes. */
    for (int n = 10; n <= NTRAIN; n *= 10) {
        PlotSeries s = series("train", tx, ty, n, BLUE);
        CHECK(plot_png(path, 320, 240, "run", "step", "loss", &s, 1, err, sizeof err) == 0,
              "redraw with %d points: %s", n, err);
        Png p;
        CHECK(read_png(path, &p) == 0 && p.w == 320 && p.h == 240, "bad redraw at %d", n);
        free(p.rgb);
    }
    remove(path);
}

int main(void)
{
    RUN(test_two_series);
    RUN(test_no_title);
    RUN(test_single_point);
    RUN(test_constant);
    RUN(test_nan_gaps);
    RUN(test_no_data);
    RUN(test_large_steps);
    RUN(test_errors);
    RUN(test_overwrite);
    TEST_MAIN_END();
}
