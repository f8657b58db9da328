/*
 * conn.c - one SQLite connection as a worker holds it: opening it with its hooks (the
 * authorizer of route.c, a progress handler that stops the running task at its deadline or on
 * an interrupt, an update hook that tells whether a statement inserted a row) and closing it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* VM instructions between two looks at the running task's stop conditions: a few microseconds
 * of work. */
#define PROGRESS_OPS 1000

/* The progress handler, installed for good: stops the running task once it is past its
 * deadline, or once the pool was interrupted after the task started. Between tasks (nothing
 * armed) it lets everything run. */
static int stop_check(void *arg)
{
    conn *c = arg;
    if (!c->armed)
        return 0;
    if (c->interrupts &&
        atomic_load_explicit(c->interrupts, memory_order_relaxed) != c->interrupts_seen)
        return 1;
    if (c->deadline && now_ns() >= c->deadline) {
        c->timed_out = 1;
        return 1;
    }
    return 0;
}

int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              const _Atomic uint64_t *interrupts, char **errmsg)
{
    memset(c, 0, sizeof *c);
    c->interrupts = interrupts;
    if (stmt_cache_init(c, cache_capacity) != 0) {
        *errmsg = strdup("out of memory");
        return SQLITE_NOMEM;
    }
    /* A private cache whatever sqlite3_enable_shared_cache() the host set: shared-cache
     * locking fails with SQLITE_LOCKED, which busy_timeout does not retry. */
    flags |= SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI | SQLITE_OPEN_PRIVATECACHE;
    int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        *errmsg = strdup(c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        if (c->db)
            rc = sqlite3_extended_errcode(c->db);
        conn_close(c);
        return rc;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, busy_ms);
    sqlite3_set_authorizer(c->db, stmt_authorizer, c);
    sqlite3_progress_handler(c->db, PROGRESS_OPS, stop_check, c);
    return SQLITE_OK;
}

void conn_close(conn *c)
{
    stmt_cache_free(c);
    buf_free(&c->insert_names);
    if (c->db)
        sqlite3_close_v2(c->db);
    c->db = NULL;
}

int conn_exec(conn *c, const char *sql)
{
    return sqlite3_exec(c->db, sql, NULL, NULL, NULL);
}

void conn_rollback_open(conn *c)
{
    if (c->db && !sqlite3_get_autocommit(c->db))
        conn_exec(c, "ROLLBACK");
}

void conn_arm(conn *c, const pasyn_task *t)
{
    c->timed_out = 0;
    c->deadline = t->timeout_ns ? now_ns() + t->timeout_ns : 0;
    if (c->interrupts)
        c->interrupts_seen = atomic_load_explicit(c->interrupts, memory_order_relaxed);
    c->armed = 1;
}

void conn_disarm(conn *c, pasyn_task *t)
{
    c->armed = 0;
    if (c->timed_out && t->err == PASYN_ESQLITE && t->code == SQLITE_INTERRUPT) {
        char msg[96];
        snprintf(msg, sizeof msg, "statement timed out after %.3g s", t->timeout_ns / 1e9);
        task_fail(t, PASYN_ESQLITE, SQLITE_INTERRUPT, SQLITE_INTERRUPT, msg);
    }
}

/* The update hook, set while a top-level INSERT runs: a row of the statement's own table
 * inserted with the rowid that last_insert_rowid() already held (sqlite3_update_hook: not
 * called for WITHOUT ROWID tables, whose inserts set no rowid either). */
static void note_insert(void *arg, int op, const char *db, const char *table, sqlite3_int64 rowid)
{
    conn *c = arg;
    const cached_stmt *s = c->inserting;
    if (op == SQLITE_INSERT && rowid == c->rowid_before && strcmp(table, s->insert_table) == 0 &&
        strcmp(db, s->insert_db) == 0)
        c->reinserted = 1;
}

void conn_watch_insert(conn *c, const cached_stmt *s)
{
    c->inserting = s->insert_table ? s : NULL;
    c->rowid_before = sqlite3_last_insert_rowid(c->db);
    c->reinserted = 0;
    if (c->inserting)
        sqlite3_update_hook(c->db, note_insert, c);
}

/* A trigger's INSERT sets last_insert_rowid() only while the trigger runs
 * (c3ref/last_insert_rowid), so a value that changed was set by the statement itself. */
int conn_inserted(conn *c, int64_t *rowid)
{
    const cached_stmt *s = c->inserting;
    c->inserting = NULL;
    if (s)
        sqlite3_update_hook(c->db, NULL, NULL);
    *rowid = sqlite3_last_insert_rowid(c->db);
    return s && (*rowid != c->rowid_before || c->reinserted);
}
