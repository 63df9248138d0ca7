/* trainer/progress.c: see progress.h. */
#include "progress.h"
#include <time.h>
#include <unistd.h>

#define PROGRESS_FIRST_S 2.0   /* nothing for work shorter than this */
#define PROGRESS_EVERY_S 5.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e9) { snprintf(buf, n, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh %02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm %02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

void progress_start(Progress *p, FILE *f, const char *what, const char *unit, double total) {
    p->f = f; p->what = what; p->unit = unit; p->total = total;
    p->t0 = now_s();
    p->last = p->t0 - PROGRESS_EVERY_S + PROGRESS_FIRST_S;
    p->printed = 0;
}

void progress_tick(Progress *p, double done) {
    if (!p->f) return;
    const double t = now_s();
    if (t - p->last < PROGRESS_EVERY_S) return;
    p->last = t;
    const double rate = done / (t - p->t0 > 0 ? t - p->t0 : 1e-9);
    char eta[32];
    fmt_eta(eta, sizeof eta, rate > 0 ? (p->total - done) / rate : -1);
    /* a terminal gets one line rewritten in place, a log one line per report */
    const int tty = isatty(fileno(p->f));
    fprintf(p->f, "%s%s: %.0f/%.0f %s (%.0f%%), %.0f %s/s, ETA %s%s", tty ? "\r" : "", p->what, done,
            p->total, p->unit, p->total > 0 ? 100 * done / p->total : 100, rate, p->unit, eta, tty ? "" : "\n");
    fflush(p->f);
    p->printed = tty;
}

void progress_end(Progress *p) {
    if (p->f && p->printed) fprintf(p->f, "\n");
    p->printed = 0;
}
