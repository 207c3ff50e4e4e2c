/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tided's log: one line per event on stderr, "pid:L dd Mon yyyy hh:mm:ss.mmm
 * message", the format of Redis's serverLogRaw, with L one of D I W E.
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

int tided_log_level = LOG_INFO;

static void vlog(int level, const char *fmt, va_list ap)
{
    static const char marks[] = "DIWE";
    char when[64], msg[1024];
    struct timeval tv;
    struct tm tm;
    size_t off;

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    off = strftime(when, sizeof(when), "%d %b %Y %H:%M:%S", &tm);
    snprintf(when + off, sizeof(when) - off, ".%03d", (int)(tv.tv_usec / 1000));
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "%d:%c %s %s\n", (int)getpid(),
            marks[level < 0   ? 0
                  : level > 3 ? 3
                              : level],
            when, msg);
}

void tided_log_raw(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void tided_engine_log(void *ctx, enum tide_log_level level, const char *msg)
{
    int l = level == TIDE_LOG_ERROR  ? LOG_ERROR
            : level == TIDE_LOG_WARN ? LOG_WARN
            : level == TIDE_LOG_INFO ? LOG_INFO
                                     : LOG_DEBUG;

    (void)ctx;
    tide_log(l, "engine: %s", msg);
}

int64_t tided_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
