/*
 * test_uri.c - unit tests of c/uri.c (what the pool's connections open), printed as TAP for
 * prove(1).
 *
 * Plain paths; every memory form (":memory:", "", file::memory:, an empty path, mode=memory,
 * vfs=memdb, with SQLite's last-one-counts and %-decoding); cache=shared dropped without a
 * stray separator; nolock=<true> and vfs=unix-none refused with their messages; the readers'
 * mode=ro; parameters passed on in their own encoding; the authority; then hostile input
 * (truncated escapes, %00, NULLs, huge and random strings), checking for each random string
 * that a plan made from a plan's own strings gives the same strings back.
 *
 *   cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
 *      -Wmissing-prototypes -g -fsanitize=address,undefined -Ic c/uri.c c/test/test_uri.c \
 *      -o /tmp/test_uri && /tmp/test_uri
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pasyn.h"
#include "uri.h"
#include "tap.h"

static int str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* `database` must plan to `writer` and `reader` (both NULL: memory). */
static void expect(const char *database, const char *writer, const char *reader)
{
    uri_plan p;
    char *err = NULL;
    int rc = uri_plan_make(database, &p, &err);
    int memory = !writer && !reader;
    int good = rc == 0 && err == NULL && p.memory == memory && str_eq(p.writer, writer) &&
               str_eq(p.reader, reader);
    if (!ok(good, "%s -> %s", database, memory ? "memory" : writer))
        diag("rc %d memory %d writer [%s] reader [%s] err [%s]", rc, p.memory,
             p.writer ? p.writer : "NULL", p.reader ? p.reader : "NULL", err ? err : "");
    free(err);
    uri_plan_free(&p);
}

static void expect_memory(const char *database)
{
    expect(database, NULL, NULL);
}

/* `database` is passed on unchanged, to the writer and the readers alike. */
static void expect_same(const char *database)
{
    expect(database, database, database);
}

/* `database` must be refused with exactly `message`, leaving an empty plan. */
static void expect_refused(const char *database, const char *message)
{
    uri_plan p;
    char *err = NULL;
    int rc = uri_plan_make(database, &p, &err);
    int good = rc == PASYN_EPROGRAMMING && str_eq(err, message) && !p.memory && !p.writer &&
               !p.reader;
    if (!ok(good, "%s is refused", database))
        diag("rc %d err [%s] writer [%s]", rc, err ? err : "NULL", p.writer ? p.writer : "");
    free(err);
    uri_plan_free(&p);
}

#define NOLOCK_WHY "without locks the pool's own connections would corrupt the database"

static void test_plain(void)
{
    diag("plain paths");
    expect_memory(":memory:");
    expect_memory("");
    expect_same("data.db");
    expect_same("/tmp/some dir/a.db");
    expect_same("a.db?nolock=1&cache=shared&mode=rw"); /* not a URI: a file of that name */
    expect_same("FILE::memory:");                      /* "file:" is case-sensitive */
    expect_same(" :memory:");
    expect_same(":memory");
    expect_same("file");
    expect_same("%3Amemory%3A"); /* only URIs are decoded */
}

static void test_memory(void)
{
    diag("memory URIs");
    expect_memory("file::memory:");
    expect_memory("file::memory:?cache=shared");
    expect_memory("file::memory:?mode=ro&psow=1");
    expect_memory("file:");
    expect_memory("file:?");
    expect_memory("file:?mode=rwc");
    expect_memory("file:#frag");
    expect_memory("file://");
    expect_memory("file://localhost");
    expect_memory("file:%3Amemory%3A");
    expect_memory("file:%3amemory%3a");
    expect_memory("file::memory:%00junk"); /* %00 ends the path */
    expect_memory("file:%00/tmp/x.db");    /* ... so this path is empty */
    expect_memory("file:x.db?mode=memory");
    expect_memory("file:x.db?mode=memory&cache=shared");
    expect_memory("file:x.db?mode=m%65mory");
    expect_memory("file:x.db?m%6Fde=memory");
    expect_memory("file:x.db?mode=memory%00xyz");
    expect_memory("file:x.db?mode=rw&mode=memory");
    expect_memory("file:/shared-name?vfs=memdb");
    expect_memory("file:x.db?vfs=unix&vfs=memdb");
    expect_memory("file:x.db?vfs=m%65mdb");

    diag("not memory");
    expect("file:x.db?mode=memory&mode=rw", "file:x.db?mode=memory&mode=rw",
           "file:x.db?mode=memory&mode=ro"); /* the last mode= counts */
    expect_same("file:x.db?vfs=memdb&vfs=unix");
    expect_same("file:x.db?mode=MEMORY"); /* SQLite: "no such access mode" */
    expect_same("file:x.db?vfs=MEMDB");   /* SQLite: "no such vfs" */
    expect_same("file:x.db?modex=memory");
    expect_same("file:x.db?mode");
    expect_same("file:///:memory:"); /* a file named ":memory:" in / */
    expect_same("file:/:memory:");
    expect_same("file::memory:x");
    expect_same("file:x.db?a=:memory:");
    expect_same("file://elsewhere");     /* SQLite reports the authority */
    expect_same("file://localhost?x=1"); /* the authority runs to '/': "localhost?x=1" */
    expect_same("file://LOCALHOST");
    expect_same("file://host/x.db?mode=memory");
    expect("file:x.db#?mode=memory", "file:x.db", "file:x.db"); /* in the fragment */
}

static void test_shared_cache(void)
{
    diag("cache=shared is dropped, nothing dangles");
    expect("file:x.db?cache=shared", "file:x.db", "file:x.db");
    expect("file:x.db?cache=shared&a=1", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db?a=1&cache=shared", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db?a=1&cache=shared&b=2", "file:x.db?a=1&b=2", "file:x.db?a=1&b=2");
    expect("file:x.db?cache=shared&cache=shared", "file:x.db", "file:x.db");
    expect("file:x.db?c%61che=sh%61red&mode=rwc", "file:x.db?mode=rwc", "file:x.db?mode=ro");
    expect("file:x.db?cache=shared%00more", "file:x.db", "file:x.db");
    expect("file:x.db?cache=private&cache=shared", "file:x.db?cache=private",
           "file:x.db?cache=private");
    expect_same("file:x.db?cache=private");
    expect_same("file:x.db?cache=SHARED"); /* SQLite: "no such cache mode" */
    expect_same("file:x.db?cache=sharedx");
    expect_same("file:x.db?cache");
    expect_same("file:x.db?xcache=shared");
}

static void test_refused(void)
{
    diag("nolock=<true> and vfs=unix-none are refused");
    expect_refused("file:x.db?nolock=1",
                   "connect: the URI's nolock=1 is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?mode=rw&nolock=yes&a=b",
                   "connect: the URI's nolock=yes is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?vfs=unix-none",
                   "connect: the URI's vfs=unix-none is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?vfs=unix%2Dnone",
                   "connect: the URI's vfs=unix%2Dnone is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?vfs=unix-none&vfs=unix", /* any occurrence */
                   "connect: the URI's vfs=unix-none is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?nolock=0&nolock=1",
                   "connect: the URI's nolock=1 is not supported: " NOLOCK_WHY);
    expect_refused("file::memory:?nolock=1", /* refused whatever the database */
                   "connect: the URI's nolock=1 is not supported: " NOLOCK_WHY);
    expect_refused("file://elsewhere/x?nolock=on",
                   "connect: the URI's nolock=on is not supported: " NOLOCK_WHY);
    static const char *const truthy[] = {
        "1",    "2",          "10",  "007",   "1abc", "1.5",      "99999999999", "0x1",
        "0X1f", "0x00000001", "yes", "YES",   "Yes",  "true",     "TRUE",        "tRuE",
        "on",   "ON",         "%31", "y%65s", "%6fn", "1%00junk", "%301",
    };
    char uri[128], msg[256];
    for (size_t i = 0; i < sizeof truthy / sizeof *truthy; i++) {
        snprintf(uri, sizeof uri, "file:x.db?nolock=%s", truthy[i]);
        snprintf(msg, sizeof msg, "connect: the URI's nolock=%s is not supported: %s", truthy[i],
                 NOLOCK_WHY);
        expect_refused(uri, msg);
    }
    expect_refused("file:x.db?n%6Flock=1",
                   "connect: the URI's n%6Flock=1 is not supported: " NOLOCK_WHY);
    expect_refused("file:x.db?nolock%00zz=1",
                   "connect: the URI's nolock%00zz=1 is not supported: " NOLOCK_WHY);

    diag("false, or not nolock, is passed on");
    static const char *const falsy[] = {
        "0", "00", "0x0", "0x", "0xg",  "00x1", "no",   "off", "false",
        "",  "-1", "+1",  " 1", "full", "y",    "yess", "%00", "%30",
    };
    for (size_t i = 0; i < sizeof falsy / sizeof *falsy; i++) {
        snprintf(uri, sizeof uri, "file:x.db?nolock=%s", falsy[i]);
        expect_same(uri);
    }
    expect_same("file:x.db?nolock");
    expect_same("file:x.db?NOLOCK=1"); /* keys are case-sensitive: SQLite ignores it */
    expect_same("file:x.db?nolockx=1");
    expect_same("file:x.db?a=nolock=1");
    expect_same("file:x.db?vfs=unix-none2");
    expect_same("file:x.db?VFS=unix-none");
    expect_same("file:x.db?vfs=UNIX-NONE"); /* SQLite: "no such vfs" */
    expect_same("file:x.db?vfs=unix-excl");
    expect_same("file:x.db?vfs=unix-dotfile");
    expect("file:x.db#nolock=1", "file:x.db", "file:x.db");
    expect("file:x.db?a=1#&nolock=1", "file:x.db?a=1", "file:x.db?a=1");

    /* a long refused part is shortened in the message */
    char long_uri[400];
    strcpy(long_uri, "file:x.db?nolock=1");
    memset(long_uri + strlen(long_uri), '7', 200);
    long_uri[18 + 200] = '\0';
    uri_plan p;
    char *err = NULL;
    int rc = uri_plan_make(long_uri, &p, &err);
    ok(rc == PASYN_EPROGRAMMING && err && strstr(err, "...") && strlen(err) < 200,
       "a long refused part is shortened: %s", err ? err : "(no message)");
    free(err);
}

static void test_reader_mode(void)
{
    diag("readers ask mode=ro");
    expect("file:x.db?mode=rw", "file:x.db?mode=rw", "file:x.db?mode=ro");
    expect("file:x.db?mode=rwc", "file:x.db?mode=rwc", "file:x.db?mode=ro");
    expect_same("file:x.db?mode=ro");
    expect("file:x.db?a=1&mode=rwc&b=2", "file:x.db?a=1&mode=rwc&b=2", "file:x.db?a=1&mode=ro&b=2");
    expect("file:x.db?mode=r%77", "file:x.db?mode=r%77", "file:x.db?mode=ro");
    expect("file:x.db?m%6Fde=rw%63", "file:x.db?m%6Fde=rw%63", "file:x.db?m%6Fde=ro");
    expect("file:x.db?mode=rw&mode=rwc", "file:x.db?mode=rw&mode=rwc", "file:x.db?mode=ro&mode=ro");
    expect("file:x.db?mode=rw%00c", "file:x.db?mode=rw%00c", "file:x.db?mode=ro");
    expect_same("file:x.db?mode=RW"); /* SQLite: "no such access mode" */
    expect_same("file:x.db?mode=rwx");
    expect_same("file:x.db?model=rw");
    expect_same("file:x.db?a=mode=rw");
}

static void test_passed_on(void)
{
    diag("everything else passes unchanged, in its own encoding");
    expect_same("file:x.db");
    expect_same("file:/tmp/x.db");
    expect_same("file:///tmp/x.db");
    expect_same("file://localhost/tmp/x.db");
    expect_same("file:/tmp/with%20space.db?immutable=1&psow=0&modeof=/tmp/o.db");
    expect_same("file:x.db?vfs=myvfs&unknown=%41%42&flag&k=v=w");
    expect_same("file:x.db?a=%zz&b=%4&c=%");
    expect_same("file:x.db?readonly_shm=1");
    expect_same("file:x.db?cache=private&mode=ro&immutable=1");
    expect("file:x.db?psow=1&mode=rw&cache=shared&modeof=y", "file:x.db?psow=1&mode=rw&modeof=y",
           "file:x.db?psow=1&mode=ro&modeof=y");

    diag("empty parameters and the fragment are left out");
    expect("file:x.db?", "file:x.db", "file:x.db");
    expect("file:x.db?&&a=1&&", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db?=v&a=1", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db?%00=v&a=1", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db?a=1#frag", "file:x.db?a=1", "file:x.db?a=1");
    expect("file:x.db#frag?a=1", "file:x.db", "file:x.db");
    expect("file://localhost/x.db?#", "file://localhost/x.db", "file://localhost/x.db");
}

static void test_api(void)
{
    diag("the interface");
    uri_plan p = {1, (char *)"junk", (char *)"junk"};
    char *err = (char *)"junk";
    int rc = uri_plan_make(NULL, &p, &err);
    ok(rc == PASYN_EPROGRAMMING && err && strstr(err, "no database") && !p.memory && !p.writer &&
           !p.reader,
       "a NULL database is refused and leaves an empty plan: %s", err ? err : "");
    free(err);
    ok(uri_plan_make(NULL, &p, NULL) == PASYN_EPROGRAMMING, "errmsg may be NULL");
    ok(uri_plan_make("file:x?nolock=1", &p, NULL) == PASYN_EPROGRAMMING && !p.writer,
       "a refusal without errmsg");
    err = NULL;
    rc = uri_plan_make("x.db", NULL, &err);
    ok(rc == PASYN_EPROGRAMMING && err, "a NULL plan is refused");
    free(err);
    rc = uri_plan_make("file:x.db?mode=rw", &p, NULL);
    ok(rc == 0 && p.writer && p.reader && p.writer != p.reader,
       "writer and reader are two strings");
    uri_plan_free(&p);
    ok(!p.writer && !p.reader && !p.memory, "uri_plan_free zeroes the plan");
    uri_plan_free(&p);
    uri_plan_free(NULL);
    ok(1, "uri_plan_free twice, and of NULL");
}

/* ---- hostile input ----------------------------------------------------------------- */

/* The invariants of any successful plan: rebuilt strings never grow, keep "file:", have no
 * empty parameter or stray separator, and planning them again changes nothing. */
static int check_invariants(const char *in, const uri_plan *p, const char **why)
{
    *why = "memory with strings";
    if (p->memory)
        return !p->writer && !p->reader;
    *why = "missing string";
    if (!p->writer || !p->reader)
        return 0;
    int is_uri = strncmp(in, "file:", 5) == 0;
    *why = "plain path changed";
    if (!is_uri)
        return strcmp(in, p->writer) == 0 && strcmp(in, p->reader) == 0;
    const char *s[2] = {p->writer, p->reader};
    for (int i = 0; i < 2; i++) {
        *why = "grew or lost file:";
        if (strlen(s[i]) > strlen(in) || strncmp(s[i], "file:", 5) != 0)
            return 0;
        *why = "a fragment, or a stray or empty parameter";
        const char *rest = s[i] + 5; /* after the authority, which runs to '/' */
        if (rest[0] == '/' && rest[1] == '/')
            rest += 2 + strcspn(rest + 2, "/");
        if (strchr(rest, '#'))
            return 0;
        const char *q = strchr(rest, '?'); /* the path is literal up to it */
        if (q && (q[1] == '\0' || q[1] == '&' || strstr(q, "&&") || q[strlen(q) - 1] == '&' ||
                  strstr(q, "&=") || q[1] == '='))
            return 0;
        *why = "not stable when planned again";
        uri_plan again;
        char *err = NULL;
        int rc = uri_plan_make(s[i], &again, &err);
        int stable = rc == 0 && !again.memory && strcmp(again.writer, s[i]) == 0 &&
                     (i == 1 ? strcmp(again.reader, s[i]) == 0
                             : strcmp(again.reader, p->reader) == 0);
        free(err);
        uri_plan_free(&again);
        if (!stable)
            return 0;
    }
    return 1;
}

static void test_truncated(void)
{
    diag("truncated and odd escapes");
    static const char *const odd[] = {
        "%",
        "%4",
        "%zz",
        "%%",
        "file:%",
        "file:%4",
        "file:%z",
        "file:x?%",
        "file:x?%4",
        "file:x?nolock=%",
        "file:x?nolock=%3",
        "file:x?nolock=%3z",
        "file:x?mode=%7",
        "file:x?vfs=memdb%",
        "file:x?%%%%",
        "file:x?=",
        "file:x?==",
        "file:x?&",
        "file:?&=",
        "file://",
        "file:/",
        "file://%",
        "file:///%4",
        "file:x?a=\xff\xfe",
        "file:\xff?\x80=%",
        "file:x?cache=shared%",
        "file:x?mode=r%7",
    };
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        uri_plan p;
        char *err = NULL;
        const char *why = "";
        int rc = uri_plan_make(odd[i], &p, &err);
        int good = (rc == 0 && check_invariants(odd[i], &p, &why)) ||
                   (rc == PASYN_EPROGRAMMING && err);
        ok(good, "odd input \"%s\" -> rc %d%s%s", odd[i], rc, good ? "" : ": ", good ? "" : why);
        free(err);
        uri_plan_free(&p);
    }
    expect_same("file:x?a=%4");
    expect_same("file:x?nolock=%3");
    expect_same("file:x?nolock=%zz");
    expect_same("file:x?mode=r%7");
    expect("file:x?cache=shared%", "file:x?cache=shared%", "file:x?cache=shared%");
}

static void test_big(void)
{
    diag("big input");
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    memcpy(s, "file:x.db?", 10);
    for (size_t i = 10; i < n; i++)
        s[i] = (i % 2) ? '&' : 'a';
    s[n] = '\0';
    uri_plan p;
    char *err = NULL;
    const char *why = "";
    int rc = uri_plan_make(s, &p, &err);
    ok(rc == 0 && p.writer && strlen(p.writer) == n - 1 && check_invariants(s, &p, &why),
       "a megabyte of \"a&a&...\" plans (%s)", rc == 0 ? "ok" : "failed");
    uri_plan_free(&p);

    for (size_t i = 10; i < n; i++)
        s[i] = '&';
    rc = uri_plan_make(s, &p, &err);
    ok(rc == 0 && p.writer && strcmp(p.writer, "file:x.db") == 0,
       "a megabyte of '&' plans to file:x.db");
    uri_plan_free(&p);

    for (size_t i = 10; i + 9 <= n; i += 9)
        memcpy(s + i, "nolock=0&", 9);
    s[n - 9] = '&';
    memcpy(s + n - 8, "nolock=1", 8);
    rc = uri_plan_make(s, &p, &err);
    ok(rc == PASYN_EPROGRAMMING && err && strstr(err, "nolock=1"),
       "a nolock=1 after 100k nolock=0 is found");
    free(err);
    uri_plan_free(&p);
    free(s);
}

static uint64_t rng = 0x9E3779B97F4A7C15u;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void test_random(void)
{
    diag("random strings");
    static const char *const pieces[] = {
        "file:",
        "//",
        "localhost",
        "/",
        "?",
        "&",
        "=",
        "#",
        "%",
        "%0",
        "%00",
        "%3A",
        "%3a",
        "%26",
        "%3D",
        "%3F",
        "%23",
        "%2",
        "%zz",
        ":memory:",
        "mode",
        "rw",
        "rwc",
        "ro",
        "memory",
        "cache",
        "shared",
        "private",
        "vfs",
        "memdb",
        "unix",
        "unix-none",
        "unix-excl",
        "nolock",
        "1",
        "0",
        "0x",
        "yes",
        "on",
        "immutable",
        "psow",
        "x.db",
        "a",
        "\xff",
        " ",
        "m%6Fde",
        "sh%61red",
        "%31",
        "?nolock=1",
        "&nolock=0x1",
        "?mode=rw",
        "&mode=rwc",
        "&cache=shared",
        "?cache=shared",
        "&vfs=unix-none",
        "?mode=memory",
        "&vfs=memdb",
        "?nolock=off",
    };
    size_t npieces = sizeof pieces / sizeof *pieces;
    size_t runs = tap_scaled(200000, tap_scale(), 1000);
    size_t planned = 0, refused = 0, memory = 0, bad = 0;
    double t0 = now_s();
    char s[512];
    for (size_t r = 0; r < runs; r++) {
        size_t len = 0;
        if (rnd(4) != 0) {
            memcpy(s, "file:", 5);
            len = 5;
        }
        for (uint32_t k = rnd(16); k-- > 0;) {
            const char *piece = pieces[rnd((uint32_t)npieces)];
            size_t pl = strlen(piece);
            if (len + pl >= sizeof s)
                break;
            memcpy(s + len, piece, pl);
            len += pl;
        }
        s[len] = '\0';
        uri_plan p;
        char *err = NULL;
        const char *why = "";
        int rc = uri_plan_make(s, &p, &err);
        if (rc == 0 && check_invariants(s, &p, &why)) {
            planned++;
            memory += p.memory;
        } else if (rc == PASYN_EPROGRAMMING && err && strstr(err, "connect: the URI's ")) {
            refused++;
        } else if (bad++ < 5) {
            diag("bad plan for [%s]: rc %d %s writer [%s] reader [%s]", s, rc, why,
                 p.writer ? p.writer : "", p.reader ? p.reader : "");
        }
        free(err);
        uri_plan_free(&p);
    }
    ok(bad == 0, "%zu random strings: %zu planned (%zu memory), %zu refused, %zu bad", runs,
       planned, memory, refused, bad);
    diag("%.0f ns per plan, with the replanning checks", (now_s() - t0) * 1e9 / (double)runs);
}

int main(void)
{
    (void)sleep_ms; /* a tap.h helper this test has no use for */
    tap_start("Bail out! test_uri hung\n", 120);
    test_plain();
    test_memory();
    test_shared_cache();
    test_refused();
    test_reader_mode();
    test_passed_on();
    test_api();
    test_truncated();
    test_big();
    test_random();
    return tap_done();
}
