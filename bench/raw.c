/*
 * raw.c - the "raw C" competitor of bench/suite.lua: the SQLite C API on one thread, every
 * statement prepared once (sqlite3_prepare_v2) and then bound, stepped and reset per query.
 * It prints one line: the elapsed seconds of the timed part, then a check value that the suite
 * compares with what the Lua competitors computed.
 *
 *   bench-raw point   <db> <n> <seed> <rows>   n point SELECTs by LCG ids; check = sum of ages
 *   bench-raw groupby <db> <n> [sql]           the heavy read n times; check = result digest
 *   bench-raw insert  <db> <n>                 n INSERTs into a fresh table t in one
 *                                              transaction (WAL, synchronous=NORMAL); check = n
 *   bench-raw version                          prints 0 and the linked SQLite's version
 *
 * The ids come from the same LCG as bench/lib.lua (lib.lcg): state = state * 6364136223846793005
 * + 1442695040888963407 (mod 2^64), id = (state >> 33) % rows + 1, starting from state = seed.
 * The digest of a result (lib.digest): rows, the wrapping sum of its INTEGER values, the total
 * length of its TEXT values, "rows/intsum/textlen".
 *
 * Build: cc -O2 -Wall -Wextra bench/raw.c -lsqlite3 -o build/bench-raw
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The suite passes its query; this is the same as its GROUPBY. */
#define DEFAULT_GROUPBY                                                                        \
    "SELECT age % 10 AS k, count(*), sum(length(name)), "                                      \
    "CAST(avg(length(email)) * 1000 AS INTEGER), max(length(city)), min(city) "                \
    "FROM users GROUP BY k ORDER BY k"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(sqlite3 *db, const char *what)
{
    fprintf(stderr, "bench-raw: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static long long number(const char *s, const char *what)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "bench-raw: %s must be a whole number >= 0, got '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        die(db, "open");
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        die(db, sql);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        die(db, sql);
    return st;
}

static int point(const char *path, long long n, uint64_t seed, long long rows)
{
    if (rows <= 0) {
        fprintf(stderr, "bench-raw: rows must be above 0\n");
        return 2;
    }
    sqlite3 *db = open_db(path);
    sqlite3_stmt *st = prepare(db, "SELECT * FROM users WHERE id = ?");
    uint64_t state = seed;
    int64_t check = 0;
    double t0 = now();
    for (long long i = 0; i < n; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t id = (int64_t)((state >> 33) % (uint64_t)rows) + 1;
        sqlite3_bind_int64(st, 1, id);
        if (sqlite3_step(st) != SQLITE_ROW)
            die(db, "point: no row");
        if (sqlite3_column_int64(st, 0) != id) {
            fprintf(stderr, "bench-raw: asked for id %" PRId64 ", got %lld\n", id,
                    (long long)sqlite3_column_int64(st, 0));
            return 1;
        }
        check += sqlite3_column_int64(st, 3);
        sqlite3_reset(st);
    }
    double dt = now() - t0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    printf("%.6f %" PRId64 "\n", dt, check);
    return 0;
}

static int groupby(const char *path, long long n, const char *sql)
{
    sqlite3 *db = open_db(path);
    sqlite3_stmt *st = prepare(db, sql);
    char digest[96] = "";
    double t0 = now();
    for (long long i = 0; i < n; i++) {
        long long nrows = 0;
        uint64_t isum = 0, tlen = 0;
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            nrows++;
            int cols = sqlite3_column_count(st);
            for (int c = 0; c < cols; c++) {
                switch (sqlite3_column_type(st, c)) {
                case SQLITE_INTEGER:
                    isum += (uint64_t)sqlite3_column_int64(st, c);
                    break;
                case SQLITE_TEXT:
                    tlen += (uint64_t)sqlite3_column_bytes(st, c);
                    break;
                default:
                    break;
                }
            }
        }
        if (rc != SQLITE_DONE)
            die(db, "groupby");
        sqlite3_reset(st);
        char d[96];
        snprintf(d, sizeof d, "%lld/%" PRId64 "/%" PRIu64, nrows, (int64_t)isum, tlen);
        if (i > 0 && strcmp(d, digest) != 0) {
            fprintf(stderr, "bench-raw: groupby gave %s, then %s\n", digest, d);
            return 1;
        }
        memcpy(digest, d, sizeof d);
    }
    double dt = now() - t0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    printf("%.6f %s\n", dt, digest);
    return 0;
}

static int insert(const char *path, long long n)
{
    sqlite3 *db = open_db(path);
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    exec(db, "CREATE TABLE t (a INTEGER, b INTEGER, c TEXT)");
    sqlite3_stmt *st = prepare(db, "INSERT INTO t VALUES (?, ?, ?)");
    char text[32];
    double t0 = now();
    exec(db, "BEGIN IMMEDIATE");
    for (long long i = 1; i <= n; i++) {
        int len = snprintf(text, sizeof text, "row %lld", i);
        sqlite3_bind_int64(st, 1, i);
        sqlite3_bind_int64(st, 2, i % 1000);
        sqlite3_bind_text(st, 3, text, len, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
            die(db, "insert");
        sqlite3_reset(st);
    }
    exec(db, "COMMIT");
    double dt = now() - t0;
    sqlite3_finalize(st);
    st = prepare(db, "SELECT count(*) FROM t");
    long long count = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    printf("%.6f %lld\n", dt, count);
    return count == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "point") == 0)
        return point(argv[2], number(argv[3], "n"), (uint64_t)number(argv[4], "seed"),
                     number(argv[5], "rows"));
    if ((argc == 4 || argc == 5) && strcmp(argv[1], "groupby") == 0)
        return groupby(argv[2], number(argv[3], "n"), argc == 5 ? argv[4] : DEFAULT_GROUPBY);
    if (argc == 4 && strcmp(argv[1], "insert") == 0)
        return insert(argv[2], number(argv[3], "n"));
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        printf("0 %s\n", sqlite3_libversion());
        return 0;
    }
    fprintf(stderr, "usage: %s point <db> <n> <seed> <rows>\n"
                    "       %s groupby <db> <n> [sql]\n"
                    "       %s insert <db> <n>\n"
                    "       %s version\n",
            argv[0], argv[0], argv[0], argv[0]);
    return 2;
}
