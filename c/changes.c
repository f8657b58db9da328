/*
 * changes.c - SQL's changes() and total_changes() on the writer, as one connection running the
 * writes one by one would answer them: a group commit that was rolled back, and whose statements
 * then ran again alone, must not count twice. The writer registers these in place of SQLite's.
 */
#include "pool.h"

/* What changes() answers now: SQLite's count, except that until a statement (or a trigger's,
 * which SQLite counts the same way) completes after such a group commit, it is what it was
 * when the group commit began. */
int64_t changes_now(pasyn_pool *pool)
{
    change_counts *cc = &pool->changes;
    sqlite3 *db = pool->writer.conn.db;
    if (cc->stale && sqlite3_changes64(db) == cc->stale_changes &&
        sqlite3_total_changes64(db) == cc->stale_total)
        return cc->before;
    cc->stale = 0;
    return sqlite3_changes64(db);
}

int64_t changes_total_now(pasyn_pool *pool)
{
    return sqlite3_total_changes64(pool->writer.conn.db) - pool->changes.uncounted;
}

void changes_fresh(pasyn_pool *pool)
{
    pool->changes.stale = 0;
}

void changes_batch_undone(pasyn_pool *pool, int64_t total_before, int64_t changes_before)
{
    change_counts *cc = &pool->changes;
    sqlite3 *db = pool->writer.conn.db;
    cc->uncounted += sqlite3_total_changes64(db) - total_before;
    cc->before = changes_before;
    cc->stale_changes = sqlite3_changes64(db);
    cc->stale_total = sqlite3_total_changes64(db);
    cc->stale = 1;
}

static void sql_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, changes_now(sqlite3_user_data(ctx)));
}

static void sql_total_changes(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    sqlite3_result_int64(ctx, changes_total_now(sqlite3_user_data(ctx)));
}

/* SQLite's code. */
int changes_register(pasyn_pool *pool)
{
    /* Innocuous, as SQLite's own are: trusted_schema = OFF allows them in views and triggers
     * (c3ref/c_deterministic.html). */
    int fn_flags = SQLITE_UTF8 | SQLITE_INNOCUOUS;
    sqlite3 *db = pool->writer.conn.db;
    int rc = sqlite3_create_function_v2(db, "total_changes", 0, fn_flags, pool, sql_total_changes,
                                        NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_function_v2(db, "changes", 0, fn_flags, pool, sql_changes, NULL, NULL,
                                        NULL);
    return rc;
}
