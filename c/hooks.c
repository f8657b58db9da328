/*
 * hooks.c - what the host's trace and on_change hooks are told. Collected on the worker that
 * runs the statements, in C memory, and attached to the task; the host reads it once the task
 * has completed (pasyn_task_traces, pasyn_task_changes). No host code runs on a worker.
 *
 * trace: sqlite3_trace_v2's SQLITE_TRACE_PROFILE on every connection while the pool's switch is
 * on (installed and removed between tasks, conn_arm), reporting the armed task's statement.
 *
 * on_change: the writer's update hook writes each row change into a log while a transaction
 * is open; the commit hook notes that a COMMIT is under way and, once the statement that ran
 * it returns with the connection back in autocommit, the log goes to that task; the rollback
 * hook empties it. Savepoints (ROLLBACK TO), statements that fail and undo their changes,
 * and executemany's own savepoint drop the part of the log they undid.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "hooks.h"

/* One row change in a log or a task: its names are an offset into the names block. */
typedef struct change_event {
    int64_t rowid;
    uint32_t names; /* offset of "db\0table\0" in the names block */
    int32_t op;     /* enum pasyn_change_op */
} change_event;

/* What a task carries for the hooks (task.events). */
typedef struct task_events {
    buf traces; /* per record: u64 ns, u32 length, the text and a NUL */
    size_t ntraces;
    buf changes; /* change_event, committed by this task */
    buf names;   /* a copy of the log's names block, which its changes point into */
    uint64_t dropped;
    /* the task's changes in the writer's log, inside a transaction (group commit) */
    size_t from, to;
    uint64_t dropped_from, dropped_to;
} task_events;

/* A savepoint open in the writer's transaction, and where the log stood when it began. */
typedef struct change_mark {
    char *name;
    size_t n;
    uint64_t dropped;
} change_mark;

/* The writer's log of the open transaction's changes. */
typedef struct change_log {
    buf events; /* change_event */
    size_t n;   /* events held */
    size_t max; /* the bound: beyond it events are only counted */
    uint64_t dropped;
    buf names;     /* "db\0table\0" entries, appended only (offsets stay valid) */
    uint32_t last; /* the entry the last event used */
    change_mark *marks;
    size_t nmarks, cap;
    size_t stmt_n; /* where the running statement began */
    uint64_t stmt_dropped;
    size_t task_n; /* where the running task began */
    uint64_t task_dropped;
    int commit_seen; /* the commit hook ran since the last check */
} change_log;

static task_events *events_of(pasyn_task *t)
{
    if (!t->events)
        t->events = calloc(1, sizeof(task_events));
    return t->events;
}

void hooks_task_free(pasyn_task *t)
{
    task_events *e = t->events;
    if (!e)
        return;
    buf_free(&e->traces);
    buf_free(&e->changes);
    buf_free(&e->names);
    free(e);
    t->events = NULL;
}

/* A task that runs again (a group commit rolled back): its changes are not committed. Its
 * trace stays: the statements did run. */
void hooks_task_reset(pasyn_task *t)
{
    task_events *e = t->events;
    if (e) {
        e->changes.len = 0;
        e->dropped = 0;
        e->from = e->to = 0;
        e->dropped_from = e->dropped_to = 0;
    }
}

/* ---- trace ------------------------------------------------------------------------------ */

/* SQLITE_TRACE_PROFILE (c3ref/c_trace.html): P is the statement, X its run time in ns. Only
 * the armed task's own statement is reported, not the pool's (schema lookups, savepoints). */
static int on_profile(unsigned type, void *arg, void *p, void *x)
{
    conn *c = arg;
    if (type != SQLITE_TRACE_PROFILE || !c->task || p != (void *)c->traced)
        return 0;
    task_events *e = events_of(c->task);
    if (!e)
        return 0;
    uint64_t ns = (uint64_t) * (sqlite3_int64 *)x;
    char *expanded = sqlite3_expanded_sql(p);
    const char *sql = expanded ? expanded : sqlite3_sql(p);
    if (!sql)
        sql = "";
    uint32_t len = (uint32_t)strlen(sql);
    if (buf_reserve(&e->traces, 12 + (size_t)len + 1) == 0) {
        buf_put(&e->traces, &ns, 8);
        buf_put(&e->traces, &len, 4);
        buf_put(&e->traces, sql, (size_t)len + 1);
        e->ntraces++;
    }
    sqlite3_free(expanded);
    return 0;
}

void hooks_arm(conn *c, pasyn_task *t)
{
    c->task = t;
    int want = c->setup && atomic_load_explicit(&c->setup->trace, memory_order_relaxed);
    if (want != c->tracing) {
        sqlite3_trace_v2(c->db, want ? SQLITE_TRACE_PROFILE : 0, want ? on_profile : NULL, c);
        c->tracing = want;
    }
}

void hooks_disarm(conn *c)
{
    c->task = NULL;
    c->traced = NULL;
}

void pasyn_set_trace(pasyn_pool *pool, int on)
{
    atomic_store(&pool->setup.trace, on != 0);
}

size_t pasyn_task_traces(const pasyn_task *t)
{
    return t->events ? t->events->ntraces : 0;
}

const unsigned char *pasyn_task_trace(const pasyn_task *t, const unsigned char *at,
                                      const char **sql, size_t *len, uint64_t *ns)
{
    const task_events *e = t->events;
    if (!e || !e->ntraces)
        return NULL;
    if (!at)
        at = e->traces.p;
    if (at >= e->traces.p + e->traces.len)
        return NULL;
    uint32_t n32;
    memcpy(ns, at, 8);
    memcpy(&n32, at + 8, 4);
    *sql = (const char *)at + 12;
    *len = n32;
    at += 12 + (size_t)n32 + 1;
    return at < e->traces.p + e->traces.len ? at : NULL;
}

/* ---- on_change: the writer's log ---------------------------------------------------------- */

static void log_clear(change_log *log)
{
    log->events.len = 0;
    log->n = 0;
    log->dropped = 0;
    for (size_t i = 0; i < log->nmarks; i++)
        free(log->marks[i].name);
    log->nmarks = 0;
    log->stmt_n = log->task_n = 0;
    log->stmt_dropped = log->task_dropped = 0;
    log->commit_seen = 0;
}

/* Back to where the log stood: what came since was undone. */
static void log_truncate(change_log *log, size_t n, uint64_t dropped)
{
    if (n < log->n) {
        log->n = n;
        log->events.len = n * sizeof(change_event);
    }
    if (dropped < log->dropped)
        log->dropped = dropped;
}

/* The offset of "db\0table\0" in the names block, added when new; UINT32_MAX when out of
 * memory. A transaction touches few tables: the last one first, then a scan. */
static uint32_t intern(change_log *log, const char *db, const char *table)
{
    const unsigned char *p = log->names.p;
    if (log->names.len) {
        const char *d = (const char *)p + log->last, *tb = d + strlen(d) + 1;
        if (strcmp(tb, table) == 0 && strcmp(d, db) == 0)
            return log->last;
    }
    for (size_t at = 0; at < log->names.len;) {
        const char *d = (const char *)p + at, *tb = d + strlen(d) + 1;
        if (strcmp(tb, table) == 0 && strcmp(d, db) == 0)
            return log->last = (uint32_t)at;
        at = (size_t)(tb - (const char *)p) + strlen(tb) + 1;
    }
    size_t at = log->names.len;
    if (buf_put(&log->names, db, strlen(db) + 1) != 0 ||
        buf_put(&log->names, table, strlen(table) + 1) != 0) {
        log->names.len = at;
        return UINT32_MAX;
    }
    return log->last = (uint32_t)at;
}

void hooks_note_change(conn *c, int op, const char *db, const char *table, sqlite3_int64 rowid)
{
    change_log *log = c->changes;
    if (log->n >= log->max) {
        log->dropped++;
        return;
    }
    change_event ev = {.rowid = rowid,
                       .op = op == SQLITE_INSERT   ? PASYN_INSERT
                             : op == SQLITE_DELETE ? PASYN_DELETE
                                                   : PASYN_UPDATE};
    ev.names = intern(log, db, table);
    if (ev.names == UINT32_MAX || buf_put(&log->events, &ev, sizeof ev) != 0) {
        log->dropped++; /* out of memory: counted, as beyond the bound */
        return;
    }
    log->n++;
}

/* The commit hook (c3ref/commit_hook.html): runs before the COMMIT, which may still fail; the
 * statement's return tells (take_committed). */
static int on_commit(void *arg)
{
    ((change_log *)arg)->commit_seen = 1;
    return 0;
}

/* The rollback hook: the whole transaction was undone (ROLLBACK, an error that ended it, a
 * failed COMMIT); not called for ROLLBACK TO. */
static void on_rollback(void *arg)
{
    log_clear(arg);
}

static void log_free(change_log *log)
{
    log_clear(log);
    buf_free(&log->events);
    buf_free(&log->names);
    free(log->marks);
    free(log);
}

void hooks_close(conn *c)
{
    if (c->changes) {
        sqlite3_commit_hook(c->db, NULL, NULL);
        sqlite3_rollback_hook(c->db, NULL, NULL);
        log_free(c->changes);
        c->changes = NULL;
        conn_hook_updates(c);
    }
}

void pasyn_set_on_change(pasyn_pool *pool, size_t max_events)
{
    atomic_store(&pool->on_change, max_events);
}

/* Appends log events [from, to) to the task's changes, with the names they use. */
static void give(change_log *log, pasyn_task *t, size_t from, size_t to, uint64_t dropped)
{
    if (from >= to && !dropped)
        return;
    task_events *e = events_of(t);
    if (!e)
        return;
    e->names.len = 0;
    if (buf_put(&e->names, log->names.p, log->names.len) != 0 ||
        buf_put(&e->changes, log->events.p + from * sizeof(change_event),
                (to - from) * sizeof(change_event)) != 0) {
        e->dropped += to - from; /* out of memory: counted */
    }
    e->dropped += dropped;
}

/* After a statement or a task: when a COMMIT ran and the connection is back in autocommit,
 * the transaction is durable and its changes go to `t`. The rollback hook has emptied the log
 * of a transaction undone. 1 when the transaction ended. */
static int take_committed(conn *c, pasyn_task *t)
{
    change_log *log = c->changes;
    if (!sqlite3_get_autocommit(c->db)) {
        log->commit_seen = 0; /* a COMMIT that failed (SQLITE_BUSY) leaves it open */
        return 0;
    }
    if (log->commit_seen)
        give(log, t, 0, log->n, log->dropped);
    log_clear(log); /* outside a transaction nothing is pending */
    return 1;
}

void hooks_follow(pasyn_pool *pool)
{
    conn *c = &pool->writer.conn;
    size_t want = atomic_load_explicit(&pool->on_change, memory_order_relaxed);
    if ((want != 0) != (c->changes != NULL) && sqlite3_get_autocommit(c->db)) {
        if (want) {
            c->changes = calloc(1, sizeof(change_log));
            if (c->changes) {
                sqlite3_commit_hook(c->db, on_commit, c->changes);
                sqlite3_rollback_hook(c->db, on_rollback, c->changes);
                conn_hook_updates(c);
            }
        } else {
            hooks_close(c);
        }
    }
    if (c->changes && want)
        c->changes->max = want;
}

void hooks_task_start(pasyn_pool *pool, pasyn_task *t)
{
    hooks_follow(pool);
    change_log *log = pool->writer.conn.changes;
    if (!log)
        return;
    log->task_n = log->n;
    log->task_dropped = log->dropped;
    if (t->events)
        t->events->from = t->events->to = 0;
}

void hooks_task_done(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->writer.conn;
    change_log *log = c->changes;
    if (!log || take_committed(c, t))
        return;
    if (log->n > log->task_n || log->dropped > log->task_dropped) {
        task_events *e = events_of(t); /* its part, for a group commit */
        if (e) {
            e->from = log->task_n;
            e->to = log->n;
            e->dropped_from = log->task_dropped;
            e->dropped_to = log->dropped;
        }
    }
}

int hooks_batch_full(pasyn_pool *pool)
{
    const change_log *log = pool->writer.conn.changes;
    return log && (log->dropped > 0 || log->n >= log->max);
}

int hooks_batch_overflowed(pasyn_pool *pool)
{
    const change_log *log = pool->writer.conn.changes;
    return log && log->task_n > 0 && log->dropped > log->task_dropped;
}

void hooks_batch_end(pasyn_pool *pool, pasyn_task **batch, int n, int committed)
{
    conn *c = &pool->writer.conn;
    change_log *log = c->changes;
    if (!log)
        return;
    if (committed && log->commit_seen && sqlite3_get_autocommit(c->db))
        for (int i = 0; i < n; i++) {
            task_events *e = batch[i]->events;
            if (e && e->to <= log->n)
                give(log, batch[i], e->from, e->to, e->dropped_to - e->dropped_from);
        }
    log_clear(log);
}

void hooks_stmt_start(conn *c)
{
    change_log *log = c->changes;
    if (log) {
        log->stmt_n = log->n;
        log->stmt_dropped = log->dropped;
    }
}

void hooks_stmt_undo(conn *c)
{
    if (c->changes)
        log_truncate(c->changes, c->changes->stmt_n, c->changes->stmt_dropped);
}

/* The most recent savepoint named `name` (names compare without case, as SQLite's do), or -1. */
static long find_mark(change_log *log, const char *name)
{
    for (size_t i = log->nmarks; i-- > 0;)
        if (strcasecmp(log->marks[i].name, name) == 0)
            return (long)i;
    return -1;
}

static void pop_marks(change_log *log, size_t keep)
{
    while (log->nmarks > keep)
        free(log->marks[--log->nmarks].name);
}

void hooks_stmt_end(conn *c, pasyn_task *t, int rc, int savepoint, const char *name)
{
    change_log *log = c->changes;
    if (!log)
        return;
    int ok = rc == SQLITE_DONE || rc == SQLITE_OK || rc == SQLITE_ROW;
    if (!ok && sqlite3_changes64(c->db) == 0)
        /* it failed and SQLite undid it (lang_conflict.html: ABORT, the default), also in
         * autocommit, where SQLite then commits what is left: nothing; OR FAIL keeps the rows
         * before the failing one, and changes() counts them */
        log_truncate(log, log->stmt_n, log->stmt_dropped);
    if (ok && savepoint != SAVEPOINT_NONE && name) {
        long i = find_mark(log, name);
        if (savepoint == SAVEPOINT_BEGIN) {
            if (log->nmarks == log->cap) {
                size_t cap = log->cap ? 2 * log->cap : 8;
                change_mark *m = realloc(log->marks, cap * sizeof *m);
                if (m) {
                    log->marks = m;
                    log->cap = cap;
                }
            }
            char *copy = log->nmarks < log->cap ? strdup(name) : NULL;
            if (copy)
                log->marks[log->nmarks++] = (change_mark){copy, log->stmt_n, log->stmt_dropped};
        } else if (savepoint == SAVEPOINT_RELEASE && i >= 0) {
            pop_marks(log, (size_t)i);
        } else if (savepoint == SAVEPOINT_ROLLBACK && i >= 0) {
            log_truncate(log, log->marks[i].n, log->marks[i].dropped);
            pop_marks(log, (size_t)i + 1);
        }
    }
    take_committed(c, t);
}

size_t pasyn_task_changes(const pasyn_task *t, uint64_t *dropped)
{
    const task_events *e = t->events;
    if (dropped)
        *dropped = e ? e->dropped : 0;
    return e ? e->changes.len / sizeof(change_event) : 0;
}

void pasyn_task_change(const pasyn_task *t, size_t i, pasyn_change *out)
{
    const task_events *e = t->events;
    change_event ev;
    memcpy(&ev, e->changes.p + i * sizeof ev, sizeof ev);
    const char *names = (const char *)e->names.p + ev.names;
    out->op = ev.op;
    out->db = names;
    out->table = names + strlen(names) + 1;
    out->rowid = ev.rowid;
}
