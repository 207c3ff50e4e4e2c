/* SPDX-License-Identifier: Apache-2.0 */
/* tide-bench's SVG chart (report.h). */
#include "report.h"

#include <errno.h>
#include <stdio.h>

#define W 800
#define H 360
#define X0 70 /* plot area */
#define X1 730
#define Y0 40
#define Y1 300

static double nice_max(double v)
{
    double m = 1e-3;

    while (m < v)
        m *= 10;
    if (m / 5 >= v)
        return m / 5;
    if (m / 2 >= v)
        return m / 2;
    return m;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

/* One polyline of field `which` (0 points/s, 1 ack p99, 2 query p99). */
static void line(FILE *f, const struct tide_sample *s, size_t n, int which,
                 double tmax, double ymax, const char *color)
{
    fprintf(f,
            "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
            "points=\"",
            color);
    for (size_t i = 0; i < n; i++) {
        double v = which == 0   ? s[i].points_per_s
                   : which == 1 ? s[i].ack_p99_ms
                                : s[i].query_p99_ms;
        double x = X0 + (X1 - X0) * (tmax > 0 ? s[i].t_s / tmax : 0);
        double y = Y1 - (Y1 - Y0) * (ymax > 0 ? v / ymax : 0);

        fprintf(f, "%.1f,%.1f ", x, y);
    }
    fputs("\"/>\n", f);
}

int tide__report_svg(const char *path, const char *title,
                     const struct tide_sample *s, size_t n)
{
    double tmax = 0, pmax = 0, lmax = 0;
    int has_ack = 0, has_q = 0, rc = 0;
    FILE *f;

    if (!n)
        return -EINVAL;
    f = fopen(path, "w");
    if (!f)
        return -errno;
    for (size_t i = 0; i < n; i++) {
        tmax = s[i].t_s > tmax ? s[i].t_s : tmax;
        pmax = s[i].points_per_s > pmax ? s[i].points_per_s : pmax;
        lmax = s[i].ack_p99_ms > lmax ? s[i].ack_p99_ms : lmax;
        lmax = s[i].query_p99_ms > lmax ? s[i].query_p99_ms : lmax;
        has_ack |= s[i].ack_p99_ms > 0;
        has_q |= s[i].query_p99_ms > 0;
    }
    pmax = nice_max(pmax);
    lmax = nice_max(lmax);
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
            "height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"20\" font-size=\"14\">",
            W, H, X0);
    xml_text(f, title);
    fputs("</text>\n", f);
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
            "fill=\"none\" stroke=\"#888\"/>\n",
            X0, Y0, X1 - X0, Y1 - Y0);
    for (int k = 0; k <= 4; k++) {
        double y = Y1 - (Y1 - Y0) * k / 4.0;

        fprintf(f,
                "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" "
                "stroke=\"#ddd\"/>\n"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" "
                "fill=\"#1f77b4\">%.3g M</text>\n"
                "<text x=\"%d\" y=\"%.1f\" fill=\"#d62728\">%.3g ms</text>\n",
                X0, X1, y, y, X0 - 4, y + 4, pmax * k / 4 / 1e6, X1 + 4, y + 4,
                lmax * k / 4);
    }
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">seconds "
            "(0 .. %.0f)</text>\n",
            (X0 + X1) / 2, Y1 + 20, tmax);
    line(f, s, n, 0, tmax, pmax, "#1f77b4");
    if (has_ack)
        line(f, s, n, 1, tmax, lmax, "#d62728");
    if (has_q)
        line(f, s, n, 2, tmax, lmax, "#ff7f0e");
    fprintf(f,
            "<text x=\"%d\" y=\"%d\" fill=\"#1f77b4\">points/s "
            "(left)</text>\n"
            "<text x=\"%d\" y=\"%d\" fill=\"#d62728\">ack p99 (right)</text>\n"
            "<text x=\"%d\" y=\"%d\" fill=\"#ff7f0e\">query p99 "
            "(right)</text>\n</svg>\n",
            X0, H - 15, X0 + 200, H - 15, X0 + 400, H - 15);
    if (ferror(f))
        rc = -EIO;
    if (fclose(f) && !rc)
        rc = -errno;
    return rc;
}
