/*
 * functions_raw.c - the in-thread baseline of bench/functions.lua: SELECT sum(f(x)) FROM t over
 * `rows` rows with f(x) = x + 1 defined through sqlite3_create_function, called by SQLite on the
 * thread that steps the statement (as lsqlite3 and Python's sqlite3 call theirs). Prints the
 * elapsed seconds of the best of `runs` runs, then the sum.
 *
 *   bench-functions-raw <rows> <runs>
 *
 * Build: cc -O2 -Wall -Wextra bench/functions_raw.c -lsqlite3 -o build/bench-functions-raw
 */
#define _POSIX_C_SOURCE 200809L
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void plus_one(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int64(ctx, sqlite3_value_int64(argv[0]) + 1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 100000, runs = argc > 2 ? atoi(argv[2]) : 5;
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        return 1;
    sqlite3_exec(db, "CREATE TABLE t(x INTEGER)", NULL, NULL, NULL);
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?)", -1, &st, NULL);
    for (int i = 1; i <= rows; i++) {
        sqlite3_bind_int(st, 1, i);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_create_function(db, "f", 1, SQLITE_UTF8, NULL, plus_one, NULL, NULL);
    sqlite3_prepare_v2(db, "SELECT sum(f(x)) FROM t", -1, &st, NULL);
    double best = 1e9;
    long long sum = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        if (sqlite3_step(st) == SQLITE_ROW)
            sum = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        double took = now() - t0;
        if (took < best)
            best = took;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    printf("%.6f %lld\n", best, sum);
    return 0;
}
