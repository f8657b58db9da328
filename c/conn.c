/*
 * conn.c - one SQLite connection as a worker holds it: opening it with its hooks (the
 * authorizer of route.c, a progress handler that stops the running task at its deadline or on
 * an interrupt, a busy handler that waits on another process's lock until the task's deadline,
 * an update hook that tells whether a statement inserted a row) and closing it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* VM instructions between two looks at the running task's stop conditions: a few microseconds
 * of work. */
#define PROGRESS_OPS 1000

/* An inline run's first progress check (a read of PROGRESS_OPS steps or more: a point read,
 * done before one, reads no clock but now_ns()): what its budget counts from here on. With a
 * core spare at its start, the wall time: the thread waits for no core, so that is the time
 * it holds the thread. Else the time it holds the thread, its wall time less its wait for a
 * core, from the thread's run_delay, read now (a pread); where that cannot be read, its CPU
 * time. The time before this check counts as held: PROGRESS_OPS steps and the submit, some
 * microseconds; with no core spare, a quarter of the budget at most (the rest was the thread
 * waiting for a core, more likely than a read of the disk). */
static void budget_first_check(conn *c, uint64_t now)
{
    c->budget_at = now;
    c->budget_lead = now - c->budget_start;
    c->budget_by = BUDGET_WALL;
    if (!c->budget_loaded)
        return;
    if (c->budget_lead > c->budget_ns / 4)
        c->budget_lead = c->budget_ns / 4;
    if (cpu_run_delay(&c->sched, 1, &c->budget_base) == 0)
        c->budget_by = BUDGET_HELD;
    else if ((c->budget_base = cpu_thread_ns()) != 0)
        c->budget_by = BUDGET_CPU;
}

/* An inline run at its budget_deadline: 0 when it goes on (a new deadline set: the rest of
 * its budget, which the thread's wait for a core did not use), else 1 with over_budget set. */
static int budget_check(conn *c, uint64_t now)
{
    if (c->budget_by == BUDGET_WALL && !c->budget_loaded && !cpu_core_spare()) {
        /* A core was spare at the start and none is now: the run may have lost its core. From
         * here on it counts as one begun with no core spare (its time so far as held, a
         * quarter of the budget at most): a read of the disk meanwhile holds the thread for
         * about two budgets at most. */
        c->budget_loaded = 1;
        budget_first_check(c, now);
    }
    uint64_t left = 0, now_delay;
    int load = 0; /* the machine's load, not the read, may have taken the budget */
    if (c->budget_by == BUDGET_HELD) {
        if (cpu_run_delay(&c->sched, 0, &now_delay) == 0)
            left = cpu_held_left(c->budget_ns, c->budget_lead, now - c->budget_at,
                                 now_delay > c->budget_base ? now_delay - c->budget_base : 0);
    } else if (c->budget_by == BUDGET_CPU) {
        uint64_t cpu = cpu_thread_ns();
        uint64_t used = cpu ? c->budget_lead + (cpu - c->budget_base) : UINT64_MAX;
        left = cpu ? cpu_budget_left(c->budget_ns, used, now - c->budget_start) : 0;
        load = used < c->budget_ns; /* stopped at BUDGET_WALL_MAX with CPU left */
    }
    if (left) {
        c->budget_deadline = now + left;
        return 0;
    }
    c->over_budget = load ? 2 : 1;
    return 1;
}

/* The progress handler, installed for good: stops the running task once it is past its
 * deadline, or once the pool was interrupted after the task started, or an inline run once it
 * has held its thread for its budget. Between tasks (nothing armed) it lets everything run. */
static int stop_check(void *arg)
{
    conn *c = arg;
    if (!c->armed)
        return 0;
    if (c->interrupts &&
        atomic_load_explicit(c->interrupts, memory_order_relaxed) != c->interrupts_seen)
        return 1;
    if (c->deadline || c->budget_deadline) {
        uint64_t now = now_ns();
        if (c->deadline && now >= c->deadline) {
            c->timed_out = 1;
            return 1;
        }
        if (c->budget_deadline) {
            if (!c->budget_by)
                budget_first_check(c, now);
            if (now >= c->budget_deadline)
                return budget_check(c, now);
        }
    }
    return 0;
}

/* ---- locks held by other processes --------------------------------------------------- */

/* The pauses between two tries of a lock, in ms: SQLite's own (main.c,
 * sqliteDefaultBusyCallback), short at first, then 100 ms at most. */
static const unsigned char busy_pauses[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};
#define BUSY_PAUSES (sizeof busy_pauses / sizeof *busy_pauses)

/* The busy handler (c3ref/busy_handler.html): `count` tries of this lock failed so far. 1 to
 * try again after a pause, 0 to give up (the statement fails with SQLITE_BUSY). A task waits
 * until its deadline (conn_arm), no longer than its own timeout and not past an interrupt. */
static int busy_wait(void *arg, int count)
{
    conn *c = arg;
    uint64_t now = now_ns();
    if (count == 0)
        c->busy_since = now;
    uint64_t until = c->busy_deadline ? c->busy_deadline
                                      : c->busy_since + (uint64_t)c->busy_ms * 1000000u;
    if (c->armed && stop_check(c)) {
        c->busy_stopped = 1;
        c->gave_up = 1;
        return 0;
    }
    if (c->never_wait || now >= until) {
        c->gave_up = 1;
        return 0;
    }
    if (c->armed && c->deadline && c->deadline < until)
        until = c->deadline; /* then stop_check ends the wait */
    size_t step = (size_t)count < BUSY_PAUSES ? (size_t)count : BUSY_PAUSES - 1;
    uint64_t pause = (uint64_t)busy_pauses[step] * 1000000u;
    if (pause > until - now)
        pause = until - now;
    struct timespec ts = {(time_t)(pause / 1000000000u), (long)(pause % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 1;
}

/* The progress handler of a never_wait connection, called at once by any statement it runs:
 * the only ones are SQLite's own reads of the schema, which a prepare runs when the schema is
 * not loaded (or was found out of date). Refused unless a worker loads it (may_load). */
static int refuse_load(void *arg)
{
    conn *c = arg;
    if (c->may_load)
        return 0;
    c->gave_up = 1;
    return 1;
}

/* The busy_timeout the connection has now (SQLite's handler in place), or `otherwise`. */
static int busy_timeout_now(conn *c, int otherwise)
{
    unsigned seen = c->seen; /* the authorizer's notes of a statement being prepared */
    int setting = c->setting;
    sqlite3_stmt *st = NULL;
    int ms = otherwise;
    if (sqlite3_prepare_v2(c->db, "PRAGMA busy_timeout", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        ms = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    c->seen = seen;
    c->setting = setting;
    return ms;
}

void conn_busy_own(conn *c, int never_wait)
{
    c->busy_ms = busy_timeout_now(c, c->busy_ms);
    c->never_wait = never_wait;
    sqlite3_busy_handler(c->db, busy_wait, c);
    if (never_wait == NEVER_WAIT_CLASSIFY)
        sqlite3_progress_handler(c->db, 1, refuse_load, c);
}

void conn_refuse_loads(conn *c, int refuse)
{
    if (refuse)
        sqlite3_progress_handler(c->db, 1, refuse_load, c);
    else
        sqlite3_progress_handler(c->db, PROGRESS_OPS, stop_check, c);
}

uint64_t conn_busy_deadline(const conn *c, const pasyn_task *t)
{
    return t->submitted_ns ? t->submitted_ns + (uint64_t)c->busy_ms * 1000000u : 0;
}

void conn_busy_cap(conn *c, uint64_t deadline)
{
    c->busy_cap = deadline;
    if (!c->armed)
        c->busy_deadline = deadline;
}

void conn_busy_pragma_enter(conn *c)
{
    sqlite3_busy_timeout(c->db, c->busy_ms);
}

void conn_busy_pragma_leave(conn *c)
{
    conn_busy_own(c, c->never_wait);
}

/* ---- open and close ---------------------------------------------------------------- */

/* Loads the pool's extensions (c3ref/load_extension.html) through the C API: enabled for
 * that alone (c3ref/c_dbconfig_enable_fkey.html, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION), so
 * that SQL's load_extension() stays refused. SQLite's code, *errmsg naming the library. */
static int load_extensions(conn *c, char **errmsg)
{
    char *const *x = c->setup ? c->setup->extensions : NULL;
    if (!x || !*x)
        return SQLITE_OK;
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 1, (int *)NULL);
    int rc = SQLITE_OK;
    for (; *x && rc == SQLITE_OK; x += 2) {
        char *msg = NULL;
        rc = sqlite3_load_extension(c->db, x[0], x[1][0] ? x[1] : NULL, &msg);
        if (rc != SQLITE_OK) {
            size_t n = strlen(x[0]) + (msg ? strlen(msg) : 0) + 64;
            if ((*errmsg = malloc(n)) != NULL)
                snprintf(*errmsg, n, "cannot load extension '%s': %s", x[0],
                         msg ? msg : sqlite3_errstr(rc));
        }
        sqlite3_free(msg);
    }
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    return rc;
}

int conn_open(conn *c, const char *path, int flags, int busy_ms, int cache_capacity,
              const _Atomic uint64_t *interrupts, const conn_setup *setup, char **errmsg)
{
    memset(c, 0, sizeof *c);
    c->interrupts = interrupts;
    c->setup = setup;
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
    if ((rc = load_extensions(c, errmsg)) != SQLITE_OK) {
        conn_close(c);
        return rc;
    }
    c->busy_ms = busy_ms;
    sqlite3_busy_timeout(c->db, busy_ms); /* until conn_busy_own */
    sqlite3_set_authorizer(c->db, stmt_authorizer, c);
    sqlite3_progress_handler(c->db, PROGRESS_OPS, stop_check, c);
    return SQLITE_OK;
}

void conn_close(conn *c)
{
    cpu_sched_close(&c->sched);
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
    c->busy_stopped = 0;
    c->busy_deadline = conn_busy_deadline(c, t);
    if (c->busy_cap && (!c->busy_deadline || c->busy_cap < c->busy_deadline))
        c->busy_deadline = c->busy_cap;
    c->deadline = t->timeout_ns ? now_ns() + t->timeout_ns : 0;
    if (c->interrupts)
        c->interrupts_seen = atomic_load_explicit(c->interrupts, memory_order_relaxed);
    c->armed = 1;
    hooks_arm(c, (pasyn_task *)t); /* its trace records go to it */
}

void conn_disarm(conn *c, pasyn_task *t)
{
    c->armed = 0;
    hooks_disarm(c);
    c->busy_deadline = c->busy_cap;
    /* Stopped by the progress handler, or while waiting on a lock (then SQLite says busy). */
    int stopped = t->err == PASYN_ESQLITE &&
                  (t->code == SQLITE_INTERRUPT || (c->busy_stopped && t->code == SQLITE_BUSY));
    if (stopped && c->timed_out) {
        char msg[96];
        snprintf(msg, sizeof msg, "statement timed out after %.3g s", t->timeout_ns / 1e9);
        task_fail(t, PASYN_ESQLITE, SQLITE_INTERRUPT, SQLITE_INTERRUPT, msg);
    } else if (stopped && t->code == SQLITE_BUSY) {
        task_fail(t, PASYN_ESQLITE, SQLITE_INTERRUPT, SQLITE_INTERRUPT,
                  sqlite3_errstr(SQLITE_INTERRUPT));
    }
}

/* The update hook (c3ref/update_hook.html: not called for WITHOUT ROWID tables, whose inserts
 * set no rowid either), set from the first top-level INSERT on: while one runs, a row of the
 * statement's own table
 * inserted with the rowid that last_insert_rowid() already held; and while the writer's
 * on_change log is on, each change goes to it (hooks.c). */
static void on_update(void *arg, int op, const char *db, const char *table, sqlite3_int64 rowid)
{
    conn *c = arg;
    const cached_stmt *s = c->inserting;
    if (s && op == SQLITE_INSERT && rowid == c->rowid_before &&
        strcmp(table, s->insert_table) == 0 && strcmp(db, s->insert_db) == 0)
        c->reinserted = 1;
    if (c->changes)
        hooks_note_change(c, op, db, table, rowid);
}

void conn_hook_updates(conn *c)
{
    sqlite3_update_hook(c->db, c->watches_inserts || c->changes ? on_update : NULL, c);
}

void conn_watch_insert(conn *c, const cached_stmt *s)
{
    c->inserting = s->insert_table ? s : NULL;
    c->rowid_before = sqlite3_last_insert_rowid(c->db);
    c->reinserted = 0;
    /* Installed at the first INSERT and kept: between INSERTs it only looks at `inserting`,
     * which costs less than two calls to set it and take it away for each INSERT. */
    if (c->inserting && !c->watches_inserts) {
        c->watches_inserts = 1;
        conn_hook_updates(c);
    }
}

/* A trigger's INSERT sets last_insert_rowid() only while the trigger runs
 * (c3ref/last_insert_rowid), so a value that changed was set by the statement itself. */
int conn_inserted(conn *c, int64_t *rowid)
{
    const cached_stmt *s = c->inserting;
    c->inserting = NULL;
    *rowid = sqlite3_last_insert_rowid(c->db);
    return s && (*rowid != c->rowid_before || c->reinserted);
}
