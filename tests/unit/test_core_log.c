/*
 * Log lines: the "HH:MM:SS.mmm LEVEL component: text" layout, one line per
 * call, the level filter and the FEDC_LOG variable, and over-long input
 * truncated to one line. stderr is redirected to a file while a case runs;
 * cases that depend on process state run in a child process.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fedc/core.h"
#include "test_util.h"

static char g_path[512];

/* Points stderr at a fresh capture file; returns the saved descriptor. */
static int capture_begin(void)
{
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(g_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    return saved;
}

/* Restores stderr and returns what was written (caller frees). */
static char *capture_end(int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *f = fopen(g_path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    (void)n;
    fclose(f);
    return buf;
}

/* "HH:MM:SS.mmm " then the rest; returns a pointer after the time stamp
 * or NULL when the layout is wrong. */
static const char *after_timestamp(const char *line)
{
    static const char pat[] = "dd:dd:dd.ddd ";
    for (size_t i = 0; i < sizeof pat - 1; i++) {
        if (pat[i] == 'd' ? !isdigit((unsigned char)line[i]) : line[i] != pat[i]) return NULL;
    }
    return line + sizeof pat - 1;
}

static void test_layout(void)
{
    fedc_log_set_level(FEDC_LOG_DEBUG);
    int saved = capture_begin();
    fedc_log(FEDC_LOG_INFO, "server", "round %d of %d", 3, 10);
    fedc_log(FEDC_LOG_DEBUG, "client", "d");
    fedc_log(FEDC_LOG_WARN, NULL, "w");
    fedc_log(FEDC_LOG_ERROR, "net", "e %s", "x");
    char *out = capture_end(saved);
    CHECK(out != NULL, "captured stderr");
    if (!out) return;
    const char *want[4] = {"INFO  server: round 3 of 10", "DEBUG client: d", "WARN  fedc: w",
                           "ERROR net: e x"};
    char *line = out;
    for (int i = 0; i < 4; i++) {
        char *nl = line ? strchr(line, '\n') : NULL;
        CHECK(nl != NULL, "line %d ends with a newline", i + 1);
        if (!nl) break;
        *nl = '\0';
        const char *rest = after_timestamp(line);
        CHECK(rest != NULL, "line %d starts with HH:MM:SS.mmm: '%s'", i + 1, line);
        CHECK(rest && !strcmp(rest, want[i]), "line %d is '%s', want '<time> %s'", i + 1, line, want[i]);
        line = nl + 1;
    }
    CHECK(line && *line == '\0', "exactly four lines");
    free(out);
}

static void test_filter(void)
{
    fedc_log_set_level(FEDC_LOG_WARN);
    CHECK(fedc_log_get_level() == FEDC_LOG_WARN, "get_level returns what was set");
    int saved = capture_begin();
    fedc_log(FEDC_LOG_DEBUG, "t", "no");
    fedc_log(FEDC_LOG_INFO, "t", "no");
    fedc_log(FEDC_LOG_WARN, "t", "yes1");
    fedc_log(FEDC_LOG_ERROR, "t", "yes2");
    fedc_log(FEDC_LOG_OFF, "t", "never a level of its own");
    char *out = capture_end(saved);
    CHECK(out && strstr(out, "yes1") && strstr(out, "yes2") && !strstr(out, "no\n") && !strstr(out, "never"),
          "WARN passes WARN and ERROR only: '%s'", out ? out : "(null)");
    free(out);

    fedc_log_set_level(FEDC_LOG_OFF);
    saved = capture_begin();
    fedc_log(FEDC_LOG_ERROR, "t", "silenced");
    out = capture_end(saved);
    CHECK(out && out[0] == '\0', "OFF prints nothing: '%s'", out ? out : "(null)");
    free(out);
}

static void test_long_message(void)
{
    fedc_log_set_level(FEDC_LOG_INFO);
    char *msg = malloc(5001);
    if (!msg) return;
    memset(msg, 'm', 5000);
    msg[5000] = '\0';
    int saved = capture_begin();
    fedc_log(FEDC_LOG_INFO, "t", "%s", msg);
    char *out = capture_end(saved);
    size_t len = out ? strlen(out) : 0;
    CHECK(out && len > 1000 && len <= 2047 && out[len - 1] == '\n' && !memchr(out, '\n', len - 1),
          "a 5000-byte message becomes one line of at most 2047 bytes (%zu)", len);
    free(out);
    free(msg);
}

/* Runs fn in a child with stderr captured; returns the exit status
 * (-1 when it died from a signal) and the output in *out. */
static int run_child(int (*fn)(void *), void *arg, char **out)
{
    fflush(stdout);
    int saved = capture_begin();
    pid_t pid = fork();
    if (pid == 0) _exit(fn(arg));
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) status = -1;
    *out = capture_end(saved);
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

static int env_level(void *value)
{
    if (value)
        setenv("FEDC_LOG", value, 1);
    else
        unsetenv("FEDC_LOG");
    return (int)fedc_log_get_level();
}

static void test_env(void)
{
    static const struct {
        const char *v;
        int want;
    } cases[] = {{"debug", FEDC_LOG_DEBUG}, {"info", FEDC_LOG_INFO}, {"warn", FEDC_LOG_WARN},
                 {"error", FEDC_LOG_ERROR}, {"off", FEDC_LOG_OFF},   {"loud", FEDC_LOG_INFO},
                 {"", FEDC_LOG_INFO},       {NULL, FEDC_LOG_INFO}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out = NULL;
        int got = run_child(env_level, (void *)cases[i].v, &out);
        CHECK(got == cases[i].want, "FEDC_LOG=%s gives level %d, want %d",
              cases[i].v ? cases[i].v : "(unset)", got, cases[i].want);
        free(out);
    }
}

static int long_component(void *arg)
{
    size_t n = *(const size_t *)arg;
    char *comp = malloc(n + 1);
    if (!comp) return 2;
    memset(comp, 'c', n);
    comp[n] = '\0';
    fedc_log_set_level(FEDC_LOG_INFO);
    fedc_log(FEDC_LOG_INFO, comp, "tail %d", 42);
    free(comp);
    return 0;
}

/* The time stamp, level and component are formatted into a 2048-byte line
 * first; the message goes after them. A component that fills the line
 * (2027 bytes make the prefix exactly 2048) must still give one truncated
 * line and no write past the buffer. Run under AddressSanitizer, a write
 * past the line aborts the child. */
static void test_long_component(void)
{
    const size_t lens[] = {2000, 2026, 2027, 2030, 2100, 3000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        char *out = NULL;
        int rc = run_child(long_component, (void *)&lens[i], &out);
        size_t len = out ? strlen(out) : 0;
        CHECK(rc == 0, "fedc_log with a %zu-byte component returns normally (child status %d)", lens[i], rc);
        CHECK(rc == 0 && len > 0 && len <= 2047 && out[len - 1] == '\n' && !memchr(out, '\n', len - 1),
              "a %zu-byte component gives one line of at most 2047 bytes (%zu)", lens[i], len);
        if (rc != 0 && out) {
            const char *rep = strstr(out, "ERROR: AddressSanitizer");
            printf("child output: %.200s\n", rep ? rep : out);
        }
        free(out);
    }
}

int main(int argc, char **argv)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_path, sizeof g_path, "%s/fedc-log-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(g_path);
    if (fd < 0) {
        printf("cannot create a temporary file: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    close(fd);
    if (test_selected(argc, argv, "main")) {
        /* Before anything sets the level in this process. */
        test_env();
        test_layout();
        test_filter();
        test_long_message();
    }
    if (test_selected(argc, argv, "long-component")) test_long_component();
    unlink(g_path);
    return test_summary();
}
