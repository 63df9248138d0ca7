/* trainer/progress.h: a progress line on stderr for long work outside training (sampling,
 * evaluation): what is done of the total, the rate and an ETA, at most every few seconds and
 * only once the work has run for two seconds (short commands print nothing extra). */
#ifndef FLASH_PROGRESS_H
#define FLASH_PROGRESS_H
#include <stdio.h>

typedef struct {
    FILE *f;              /* NULL: silent */
    const char *what, *unit;
    double total, t0, last;
    int printed;
} Progress;

void progress_start(Progress *p, FILE *f, const char *what, const char *unit, double total);
void progress_tick(Progress *p, double done);
/* Ends the line it printed, if any. */
void progress_end(Progress *p);

#endif
