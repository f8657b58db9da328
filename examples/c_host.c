/* c_host.c - a C program that embeds Lua 5.4 and runs its own event loop (poll) with a 5 ms
 * timer, while Lua coroutines query SQLite through pasyn_sqlite: a query yields, the loop keeps
 * serving its timer, and the loop resumes the coroutine when the result is there. It is the
 * worked example of the "any other loop" protocol (README, "Host event loops"):
 *   Lua side (c_host.lua): sqlite.set_host{}; then queries in coroutines yield;
 *   C side (here):         poll sqlite.fd() with the host's own descriptors; when it is
 *                          readable, call sqlite.dispatch(), which resumes those coroutines.
 * It checks that the timer kept firing during a long query, and prints TAP (make test runs it).
 *   make build/lua5.4/c_host && build/lua5.4/c_host [script.lua]    (from the repository root)
 * The module is looked up in lua/ and beside this program (build/lua5.4/pasyn_sqlite/core.so),
 * then where LUA_PATH / LUA_CPATH say. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define PERIOD 0.005 /* the timer's period, in seconds */

/* TAP output, for prove: "ok N - ..." / "not ok N - ...", then the plan "1..N". */
static int ntests, nfailed;

static void ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", cond ? "ok" : "not ok", ++ntests);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    nfailed += !cond;
}

static int tap_done(void)
{
    printf("1..%d\n", ntests);
    return nfailed ? 1 : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What the timer records: when each tick ran, and how late. */
static double *tick_at;
static long ticks, tick_cap;
static double late_max, late_sum;

/* host.now(), for the script to time its long query on the timer's clock. */
static int host_now(lua_State *L)
{
    lua_pushnumber(L, now_s());
    return 1;
}

/* The timer's callback. `expired` counts the periods that have elapsed since `t0` (what
 * timerfd's read adds up); the oldest of them not served yet was due at t0 + (expired+1)
 * periods, and the time since then is how late this tick is: a loop blocked for 300 ms
 * shows up here as one tick 300 ms late. */
static void on_timer(int tfd, double t0, uint64_t *expired)
{
    uint64_t n;
    if (read(tfd, &n, sizeof n) != (ssize_t)sizeof n)
        return; /* EAGAIN: nothing expired after all */
    double now = now_s(), late = now - (t0 + (double)(*expired + 1) * PERIOD);
    *expired += n;
    if (ticks == tick_cap) {
        tick_cap = tick_cap ? 2 * tick_cap : 1024;
        tick_at = realloc(tick_at, (size_t)tick_cap * sizeof *tick_at);
        if (!tick_at)
            abort();
    }
    tick_at[ticks++] = now;
    late_sum += late;
    if (late > late_max)
        late_max = late;
}

/* Puts lua/ first in package.path, and the folder of this program first in package.cpath. */
static void set_paths(lua_State *L, const char *argv0)
{
    char buf[4096];
    const char *slash = strrchr(argv0, '/');
    int dirlen = slash ? (int)(slash - argv0) : 1;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    snprintf(buf, sizeof buf, "lua/?.lua;%s", lua_tostring(L, -1));
    lua_pushstring(L, buf);
    lua_setfield(L, -3, "path");
    lua_getfield(L, -2, "cpath");
    snprintf(buf, sizeof buf, "%.*s/?.so;%s", dirlen, slash ? argv0 : ".", lua_tostring(L, -1));
    lua_pushstring(L, buf);
    lua_setfield(L, -4, "cpath");
    lua_pop(L, 3);
}

/* A field of the table at `t`, as a number (0 when absent). */
static double num(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reports a failed pcall (its error, a string or an error object, on the stack) and pops it. */
static void failed(lua_State *L, const char *what)
{
    ok(0, "%s: %s", what, luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
}

int main(int argc, char **argv)
{
    const char *script = argc > 1 ? argv[1] : "examples/c_host.lua";
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(300); /* a watchdog: a hang kills the program (SIGALRM), and prove reports it */

    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    set_paths(L, argv[0]);

    /* The module table stays at stack slot `sqlite`, for sqlite.dispatch. */
    lua_getglobal(L, "require");
    lua_pushstring(L, "pasyn_sqlite");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        failed(L, "require \"pasyn_sqlite\"");
        lua_close(L);
        return tap_done();
    }
    int sqlite = lua_gettop(L);

    /* The script: called with the `host` table, it calls set_host{}, starts its coroutines
     * (each up to its first query, which yields) and returns `app`, kept at slot `app`. */
    if (luaL_loadfile(L, script) != LUA_OK) {
        failed(L, "load the script");
        lua_close(L);
        return tap_done();
    }
    luaL_newlib(L, ((const luaL_Reg[]){{"now", host_now}, {NULL, NULL}}));
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        failed(L, "run the script");
        lua_close(L);
        return tap_done();
    }
    int app = lua_gettop(L);
    ok(1, "the script ran; %.0f coroutines wait for the database", num(L, app, "running"));

    /* The two descriptors of the loop: pasyn_sqlite's completions, and the periodic timer. */
    lua_getfield(L, sqlite, "fd");
    lua_call(L, 0, 1);
    int sfd = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {{0, (long)(PERIOD * 1e9)}, {0, 0}};
    clock_gettime(CLOCK_MONOTONIC, &its.it_value);
    double t0 = (double)its.it_value.tv_sec + (double)its.it_value.tv_nsec / 1e9;
    its.it_value.tv_nsec += its.it_interval.tv_nsec; /* first expiry: t0 + PERIOD */
    if (its.it_value.tv_nsec >= 1000000000L) {
        its.it_value.tv_sec++;
        its.it_value.tv_nsec -= 1000000000L;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    uint64_t expired = 0;

    /* The loop, until the script says every coroutine is done (or one failed). */
    long wakes = 0, resumed = 0;
    int error = 0;
    while (!error && num(L, app, "running") > 0) {
        struct pollfd fds[2] = {{sfd, POLLIN, 0}, {tfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("poll");
            break;
        }
        if (fds[1].revents & POLLIN)
            on_timer(tfd, t0, &expired);
        if (fds[0].revents & POLLIN) {
            /* Completions are pending (or it was a spurious wake-up, and dispatch returns 0):
             * dispatch resumes each coroutine whose result is in, until its next query
             * yields or it ends. An error one of them raised comes out of dispatch, once every
             * completion was delivered. */
            wakes++;
            lua_getfield(L, sqlite, "dispatch");
            if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
                failed(L, "sqlite.dispatch()");
                error = 1;
                break;
            }
            resumed += (long)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    }
    close(tfd);
    if (!error)
        ok(1, "every coroutine finished (%ld wake-ups, %ld resumes)", wakes, resumed);

    /* app.close() reads the row count and closes the connection; from the main thread, it
     * blocks (the loop is not running any more). */
    lua_getfield(L, app, "close");
    if (lua_pcall(L, 0, 0, 0) != LUA_OK)
        failed(L, "app.close()");

    ok(lua_getfield(L, app, "long_ok") && lua_toboolean(L, -1), "the long query's count is right");
    lua_pop(L, 1);
    double points = num(L, app, "points"), rows = num(L, app, "rows");
    ok(points == num(L, app, "points_expected") && rows == points,
       "%.0f point writes read back as written, %.0f rows in the table", points, rows);

    /* The point of it all: ticks kept coming while the long query ran. Loose bounds, as the
     * machine may be loaded, or run this under valgrind (whose threads take turns): at least
     * 5 ticks, and the loop never went a third of the query's time without one. A loop that
     * the query blocked has none. */
    double q0 = num(L, app, "long_t0"), q1 = num(L, app, "long_t1"), last = q0, gap = 0;
    long during = 0;
    for (long i = 0; i < ticks; i++) {
        if (tick_at[i] < q0 || tick_at[i] > q1)
            continue;
        during++;
        gap = tick_at[i] - last > gap ? tick_at[i] - last : gap;
        last = tick_at[i];
    }
    gap = q1 - last > gap ? q1 - last : gap;
    if (q1 <= 0) /* a coroutine failed before the long query ended */
        ok(0, "the timer kept firing during the long query, which did not finish");
    else
        ok(during >= 5 && gap < (q1 - q0) / 3,
           "the timer kept firing during the long query: "
           "%ld ticks in %.0f ms (%.0f expected), at most %.1f ms apart",
           during, (q1 - q0) * 1e3, (q1 - q0) / PERIOD, gap * 1e3);
    printf("# timer: %ld ticks, lateness max %.2f ms, mean %.3f ms\n", ticks, late_max * 1e3,
           ticks ? late_sum / (double)ticks * 1e3 : 0.0);
    printf("# point queries done while the long query ran: %.0f of %.0f\n",
           num(L, app, "points_at_long_end"), num(L, app, "points_expected"));

    lua_close(L);
    free(tick_at);
    return tap_done();
}
