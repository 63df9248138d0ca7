/* trainer/runtime.h: seconds on a monotonic clock, for timing, and the end of a command on
 * an error it cannot go on from. (The process's compute setup is the model's:
 * model_process_init, and ModelOptions.threads.) */
#ifndef FLASH_RUNTIME_H
#define FLASH_RUNTIME_H

double now_s(void);

/* Prints fmt (one %s: msg) and a newline on stderr and exits 1. Under mpirun the exit ends
   every rank (trainer/parallel.c). */
void die(const char *fmt, const char *msg) __attribute__((noreturn));

#endif
