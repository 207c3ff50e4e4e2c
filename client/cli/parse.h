/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Input parsing of the tide CLI, kept free of I/O so the unit tests link
 * it: time expressions, durations, value type inference, CSV records and
 * the line format (docs/cli.md, "tide write").
 */
#ifndef TIDE_CLIENT_CLI_PARSE_H
#define TIDE_CLIENT_CLI_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "tide/client.h"

/* One parsed point; strings point into the parsed line. */
struct tide__cli_point {
    const char *device;
    const char *field;
    int64_t ts_ns;
    enum tide_value_type type;
    double f64;
    int64_t i64;
    int b;
    const char *str;
};

/* Duration "500ms", "10s", "5m", "1h", "2d", "100us", "7ns" (a bare number
 * is ns). Returns 0 or -EINVAL. */
int tide__cli_parse_duration(const char *s, int64_t *out_ns);

/* Time expression: "now", "now-1h", "-1h", "+5m", RFC3339
 * ("2024-05-01T12:00:00Z", fraction and +hh:mm offset allowed), or integer
 * ns since the epoch. `now_ns` anchors relative forms. 0 or -EINVAL. */
int tide__cli_parse_time(const char *s, int64_t now_ns, int64_t *out_ns);

/* Infer a value's type: an integer with an 'i' suffix ("42i") is i64, any
 * other decimal number f64, then true/false, else string. */
void tide__cli_infer_value(const char *s, struct tide__cli_point *p);

/* Parse one CSV record "device,field,timestamp,value" in place (`line` is
 * modified; a trailing newline is ignored). The value may be quoted with
 * '"' ("" escapes a quote); a quoted value is always a string. Returns 0,
 * 1 for a blank line or a '#' comment, or -EINVAL. */
int tide__cli_parse_csv(char *line, int64_t now_ns, struct tide__cli_point *p);

/* Parse one line of the line format "device field=value[ field=value...]
 * [timestamp]" in place into up to `max` points sharing a timestamp (now
 * when absent). Quoted values are strings. Returns 0 with *n set, 1 for a
 * blank line or comment, or -EINVAL. */
int tide__cli_parse_line(char *line, int64_t now_ns,
                         struct tide__cli_point *pts, size_t max, size_t *n);

#endif /* TIDE_CLIENT_CLI_PARSE_H */
