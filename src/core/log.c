/* Log lines to stderr, one write(2) per line so lines from several
 * threads or processes sharing a terminal do not interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fedc/core.h"

static int g_level = -1;

static int level_from_env(void)
{
    const char *v = getenv("FEDC_LOG");
    if (!v) return FEDC_LOG_INFO;
    if (!strcmp(v, "debug")) return FEDC_LOG_DEBUG;
    if (!strcmp(v, "info")) return FEDC_LOG_INFO;
    if (!strcmp(v, "warn")) return FEDC_LOG_WARN;
    if (!strcmp(v, "error")) return FEDC_LOG_ERROR;
    if (!strcmp(v, "off")) return FEDC_LOG_OFF;
    return FEDC_LOG_INFO;
}

void fedc_log_set_level(fedc_log_level level)
{
    g_level = (int)level;
}

fedc_log_level fedc_log_get_level(void)
{
    if (g_level < 0) g_level = level_from_env();
    return (fedc_log_level)g_level;
}

void fedc_log(fedc_log_level level, const char *component, const char *fmt, ...)
{
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < fedc_log_get_level() || level >= FEDC_LOG_OFF) return;

    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %-5s %s: ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], component ? component : "fedc");
    if (n < 0) return;
    /* A prefix that fills the buffer leaves no room for the text. */
    if ((size_t)n > sizeof line - 2) n = (int)(sizeof line - 2);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
