/* trainer/compare.c: ./train compare: the validation curves of several runs in one PNG,
 * against the step or against the run's elapsed time (the two ways to say which of two
 * models is better: at equal steps, at equal time). Reads each run's metrics.csv. */
#include "commands.h"
#include "metrics.h"
#include "plot.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPARE_MAX_RUNS 8

static const char *const USAGE =
    "usage: ./train compare OUT.png [--x step|time] [--title TEXT] LABEL=RUN_DIR...\n"
    "\n"
    "Draws the validation loss (bits per byte) of each run directory's metrics.csv in one\n"
    "PNG (800 x 500), one curve per run, labelled LABEL, against the step (--x step, the\n"
    "default) or the run's elapsed seconds (--x time). 1 to 8 runs. A run without\n"
    "validation rows, a missing or malformed metrics.csv, or a bad argument is refused\n"
    "(exit 2); OUT.png is written atomically.\n";

int cmd_compare(int argc, char **argv) {
    const char *out = NULL, *title = NULL;
    int by_time = 0, nruns = 0;
    char labels[COMPARE_MAX_RUNS][128];
    const char *dirs[COMPARE_MAX_RUNS];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(USAGE, stdout); return 0; }
        if (!strcmp(a, "--x") || !strcmp(a, "--title")) {
            if (i + 1 >= argc) { fprintf(stderr, "error: %s needs a value\n%s", a, USAGE); return 2; }
            const char *v = argv[++i];
            if (!strcmp(a, "--title")) title = v;
            else if (!strcmp(v, "step")) by_time = 0;
            else if (!strcmp(v, "time")) by_time = 1;
            else { fprintf(stderr, "error: --x: expected step or time, got \"%s\"\n", v); return 2; }
            continue;
        }
        if (!strncmp(a, "--", 2)) { fprintf(stderr, "error: unknown compare option %s\n%s", a, USAGE); return 2; }
        if (!out) { out = a; continue; }
        const char *eq = strchr(a, '=');
        if (!eq || eq == a || !eq[1]) {
            fprintf(stderr, "error: \"%s\": a run is LABEL=RUN_DIR\n", a);
            return 2;
        }
        if (nruns == COMPARE_MAX_RUNS) { fprintf(stderr, "error: at most %d runs\n", COMPARE_MAX_RUNS); return 2; }
        if ((size_t)(eq - a) >= sizeof labels[0]) { fprintf(stderr, "error: label too long in \"%s\"\n", a); return 2; }
        memcpy(labels[nruns], a, (size_t)(eq - a));
        labels[nruns][eq - a] = 0;
        dirs[nruns++] = eq + 1;
    }
    if (!out || !nruns) { fprintf(stderr, "error: compare needs OUT.png and at least one LABEL=RUN_DIR\n%s", USAGE); return 2; }
    static const unsigned char colours[COMPARE_MAX_RUNS][3] = {
        {70, 130, 200}, {220, 90, 40}, {60, 160, 80}, {150, 80, 180},
        {200, 170, 40}, {90, 90, 90}, {30, 180, 180}, {200, 60, 120}};
    PlotSeries s[COMPARE_MAX_RUNS];
    double *step[COMPARE_MAX_RUNS] = {0}, *time_s[COMPARE_MAX_RUNS] = {0}, *bpc[COMPARE_MAX_RUNS] = {0};
    char err[512];
    int rc = 0;
    for (int r = 0; r < nruns && !rc; r++) {
        int n = 0;
        if (metrics_read_val(dirs[r], &step[r], &time_s[r], &bpc[r], &n, err, sizeof err)) {
            fprintf(stderr, "error: %s\n", err);
            rc = 2;
            break;
        }
        s[r] = (PlotSeries){labels[r], by_time ? time_s[r] : step[r], bpc[r], n,
                            {colours[r][0], colours[r][1], colours[r][2]}};
        printf("%s: %d validation points, last at step %.0f (%.1f s): %.4f bpc\n", labels[r], n, step[r][n - 1],
               time_s[r][n - 1], bpc[r][n - 1]);
    }
    if (!rc && plot_png(out, 800, 500, title ? title : "validation loss", by_time ? "elapsed seconds" : "step",
                        "validation loss (bits per byte)", s, nruns, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        rc = 2;
    }
    if (!rc) printf("wrote %s\n", out);
    for (int r = 0; r < nruns; r++) { free(step[r]); free(time_s[r]); free(bpc[r]); }
    return rc;
}
