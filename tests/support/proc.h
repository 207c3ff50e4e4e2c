/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test support: a monotonic clock, and the memory of a process as Linux
 * reports it in /proc/<pid>/status (its resident set and the peak of it).
 * Plain libc and Criterion: linked into every test binary.
 */
#ifndef TIDE_TESTS_SUPPORT_PROC_H
#define TIDE_TESTS_SUPPORT_PROC_H

#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC in milliseconds and in microseconds. */
double proc_now_ms(void);
int64_t proc_now_us(void);

/* A "kB" field of /proc/<pid>/status, such as "VmRSS" (resident now) or
 * "VmHWM" (the peak), in KiB; -1 when it cannot be read. */
long proc_status_kib(pid_t pid, const char *field);

/* Reset the VmHWM of `pid` to its current RSS (/proc/<pid>/clear_refs),
 * so that the next VmHWM is the peak of what follows. Asserts that it
 * worked. */
void proc_peak_reset(pid_t pid);

#endif /* TIDE_TESTS_SUPPORT_PROC_H */
