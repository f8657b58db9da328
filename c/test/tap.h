/* tap.h - header-only TAP mini-framework of the C unit tests: ok, diag, plan, watchdog. */
#ifndef PASYN_TEST_TAP_H
#define PASYN_TEST_TAP_H

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int ntests, nfailed;

/* One test line: "ok N - ..." or "not ok N - ..."; returns cond. */
static int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    ntests++;
    if (!cond)
        nfailed++;
    printf("%s %d - ", cond ? "ok" : "not ok", ntests);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

/* A "# ..." comment line. */
static void diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* The plan, printed last: "1..N" for the tests run so far. */
static void tap_plan(void)
{
    printf("1..%d\n", ntests);
}

/* Prints the plan (and a count of failures) and returns the exit status for main. */
static int tap_done(void)
{
    tap_plan();
    if (nfailed)
        diag("%d of %d tests failed", nfailed, ntests);
    return nfailed ? 1 : 0;
}

static const char *tap_bail_msg;
static size_t tap_bail_len;

static void tap_on_alarm(int sig)
{
    (void)sig;
    ssize_t r = write(1, tap_bail_msg, tap_bail_len);
    (void)r;
    _exit(2);
}

/* Line-buffers stdout and arms a watchdog: after `seconds` the test prints `bail` (a whole
 * "Bail out! ...\n" line) and exits with status 2. */
static void tap_start(const char *bail, unsigned seconds)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    tap_bail_msg = bail;
    tap_bail_len = strlen(bail);
    signal(SIGALRM, tap_on_alarm);
    alarm(seconds);
}

/* PASYN_TEST_SCALE from the environment: a positive factor, 1 when unset or not positive. */
static double tap_scale(void)
{
    double scale = 1.0;
    const char *e = getenv("PASYN_TEST_SCALE");
    if (e && *e) {
        scale = strtod(e, NULL);
        if (!(scale > 0))
            scale = 1.0;
    }
    return scale;
}

/* A count for a test to run: n times scale (from tap_scale), and at least `least`. */
static size_t tap_scaled(double n, double scale, size_t least)
{
    size_t v = (size_t)(n * scale);
    return v < least ? least : v;
}

/* Makes a fresh folder for a test's files, named `name` and a random suffix, and copies its path
 * into out: under $TMPDIR when set, else /dev/shm when writable (tmpfs: no disk, so fsync costs
 * nothing), else /tmp. 0, or -1. */
static int tap_scratch_dir(const char *name, char *out, size_t size)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    int n = snprintf(out, size, "%s/%s-XXXXXX", dir, name);
    return n > 0 && (size_t)n < size && mkdtemp(out) ? 0 : -1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
