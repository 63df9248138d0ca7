/* trainer/runtime.h: seconds on a monotonic clock, for timing. (The process's compute setup
 * is the model's: model_process_init, and ModelOptions.threads.) */
#ifndef FLASH_RUNTIME_H
#define FLASH_RUNTIME_H

double now_s(void);

#endif
