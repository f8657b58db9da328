/*
 * writer.c - the writer thread: its FIFO, the loop that takes a task (only the transaction
 * owner's while a transaction is open), runs it on the writer's connection and completes it, and
 * what the pool learns from it (who owns the writer now, TEMP names, read settings). The close
 * task ends the loop. Batches of plain writes are in group_commit.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hooks.h"

/* ---- the queue ---------------------------------------------------------------------- */

void writer_push(pasyn_pool *pool, pasyn_task *t)
{
    writer *w = &pool->writer;
    pthread_mutex_lock(&w->mu);
    t->next = &w->queue;
    t->prev = w->queue.prev;
    w->queue.prev->next = t;
    w->queue.prev = t;
    w->queued++;
    atomic_fetch_add_explicit(&w->pushed, 1, memory_order_release);
    pthread_mutex_unlock(&w->mu);
    /* After the lock: the writer woken may preempt this thread, and would block on it. It
     * waits only after seeing `pushed` unchanged under the lock, so it misses no push. */
    pthread_cond_signal(&w->cv);
}

/* Unlinks a task from the FIFO. Under w->mu. */
static pasyn_task *writer_unlink(writer *w, pasyn_task *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
    w->queued--;
    return t;
}

/* The oldest task the writer may run now: while a transaction is open, only its owner's (and
 * the close task, which comes round again until nothing is left: writer_close_reached); the
 * others keep their order. A task that would rather fail than wait behind another owner's
 * transaction (pasyn_task_set_no_owner_wait) is failed and completed on the way. NULL when
 * none. Under w->mu. */
static pasyn_task *writer_next_runnable(writer *w)
{
    uint64_t owner = atomic_load(&w->txn_owner);
    for (pasyn_task *t = w->queue.next, *next; t != &w->queue; t = next) {
        next = t->next;
        if (owner == 0 || t->owner == owner || t->kind == PASYN_CLOSE)
            return t;
        if (!t->no_owner_wait)
            continue; /* held back behind the transaction, in order */
        writer_unlink(w, t);
        /* (The hub's lock, which completing takes, is never held while taking w->mu.) */
        task_fail(t, PASYN_ESQLITE, SQLITE_BUSY, SQLITE_BUSY,
                  "the writer is held by another owner's transaction, which cannot end "
                  "while this call blocks its thread (make the call from a coroutine "
                  "that can yield, or end the transaction first)");
        task_complete(t);
    }
    return NULL;
}

pasyn_task *writer_take_head(pasyn_pool *pool)
{
    writer *w = &pool->writer;
    pasyn_task *t = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->queue.next != &w->queue && atomic_load(&w->txn_owner) == 0)
        t = writer_unlink(w, w->queue.next);
    pthread_mutex_unlock(&w->mu);
    return t;
}

int writer_queued(pasyn_pool *pool)
{
    writer *w = &pool->writer;
    pthread_mutex_lock(&w->mu);
    int n = (int)w->queued;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static int pushed_since(pasyn_pool *pool, void *seen)
{
    return atomic_load_explicit(&pool->writer.pushed, memory_order_acquire) != *(uint64_t *)seen;
}

int writer_spin(pasyn_pool *pool, uint64_t seen, uint64_t ns)
{
    return pool_spin(pool, ns, NULL, pushed_since, &seen);
}

/* The next task the writer may run, waiting for one (watching for a while, then parked);
 * *more says whether others are left in the queue. */
static pasyn_task *writer_take(pasyn_pool *pool, int *more)
{
    writer *w = &pool->writer;
    pasyn_task *t;
    pthread_mutex_lock(&w->mu);
    while ((t = writer_next_runnable(w)) == NULL) {
        uint64_t seen = atomic_load_explicit(&w->pushed, memory_order_relaxed);
        pthread_mutex_unlock(&w->mu);
        int found = writer_spin(pool, seen, SPIN_NS);
        pthread_mutex_lock(&w->mu);
        if (!found && atomic_load(&w->pushed) == seen) {
            cpu_worker_awake(-1);
            pthread_cond_wait(&w->cv, &w->mu);
            cpu_worker_awake(1);
        }
    }
    writer_unlink(w, t);
    *more = w->queued > 0;
    pthread_mutex_unlock(&w->mu);
    return t;
}

/* ---- what the pool learns from a task ----------------------------------------------- */

/* 1 when the first value `sql` gives on the connection reads `value` (as text). */
static int answers(sqlite3 *db, const char *sql, const char *value)
{
    sqlite3_stmt *st = NULL;
    int is = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *got = sqlite3_column_text(st, 0);
        is = got && strcmp((const char *)got, value) == 0;
    }
    sqlite3_finalize(st);
    return is;
}

/* After a statement changed a schema: the TEMP names whose reads belong to the writer, and
 * every route learned before is learned again (a name may be a TEMP table's now; the
 * classifier knows the names). A reader's statement that SQLite re-prepares after a change of
 * main's schema is classified again where it runs (reader.c, reader_run_read). */
static void schema_changed(pasyn_pool *pool)
{
    if (!pool->readers.used)
        return;
    writer *w = &pool->writer;
    sqlite3 *db = w->conn.db;
    /* Inside a transaction the change may be undone (ROLLBACK, ROLLBACK TO, an error that ends
     * it), and other coroutines must not see it before the COMMIT: the names known before are
     * kept too (their reads then go to the writer, which serves them once the transaction has
     * ended), and the exact names are taken after each task until it has (writer_settle). */
    w->schema_in_txn = !sqlite3_get_autocommit(db);
    atomic_store(&pool->routes.classifier_stale, 1); /* it reads the new schema next */
    atomic_store(&pool->inliner.stale, 1);           /* and so does the inline connection */
    temp_names_refresh(&pool->temp_names, db, w->schema_in_txn);
    atomic_store(&w->has_local,
                 atomic_load(&pool->temp_names.count) > 0 ||
                     answers(db,
                             "SELECT count(*) > 0 FROM pragma_database_list WHERE name NOT IN "
                             "('main', 'temp')",
                             "1")); /* ATTACHed databases */
    routes_forget(pool);
}

/* After a statement ran on the writer: what the rest of the pool must learn of it, a read
 * setting it set (`setting`, 1 + its index) or a schema it changed. `sql` is its text. */
static void writer_ran(pasyn_pool *pool, int setting, int changes_schema, const char *sql,
                       size_t len)
{
    if (setting && pool->readers.used)
        settings_note(pool, setting, sql, len);
    if (changes_schema)
        schema_changed(pool);
}

/* The classifier (submit.c, route_of) is used by the submitting thread, which must not load a
 * schema from disk: its connection refuses to (conn_busy_own, never_wait), and the writer loads
 * it instead, here: at open, and after a task that changed the schema or that a submitter could
 * not classify (another process changed the schema, or held a lock), before that task
 * completes, so that its caller's next statements find the classifier ready. Reading
 * sqlite_schema checks the schema cookie and loads the schema again when it moved. Not waiting
 * on a lock either: when another process holds one, the classifier stays marked and is loaded
 * after a later task. Writer thread. */
static void classifier_load(pasyn_pool *pool)
{
    routes *rs = &pool->routes;
    if (!pool->readers.used || !atomic_exchange(&rs->classifier_stale, 0))
        return;
    pthread_mutex_lock(&rs->classifier_mu); /* a submitter holds it only to prepare a statement */
    conn *c = &rs->classifier;
    sqlite3_stmt *st = NULL;
    c->may_load = 1;
    int rc = sqlite3_prepare_v2(c->db, "SELECT 1 FROM sqlite_schema LIMIT 1", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    c->may_load = 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        atomic_store(&rs->classifier_stale, 1);
    pthread_mutex_unlock(&rs->classifier_mu);
}

void writer_settle(pasyn_pool *pool, uint64_t owner)
{
    writer *w = &pool->writer;
    int open = !sqlite3_get_autocommit(w->conn.db) && !w->orphan_txn;
    atomic_store(&w->txn_owner, open ? (owner ? owner : 1) : 0);
    atomic_store(&w->total_changes, changes_total_now(pool));
    if (w->schema_in_txn)
        schema_changed(pool);
    classifier_load(pool);
    inline_load(pool);
}

/* ---- running one task --------------------------------------------------------------- */

static void writer_run_exec(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->writer.conn;
    cached_stmt *s = stmt_acquire(c, t);
    if (!s)
        return;
    if (stmt_bind(c, s, t, 0, t->params.len) == 0) {
        conn_watch_insert(c, s);
        if (s->busy_pragma) /* pragma_busy_timeout reads it as it runs */
            conn_busy_pragma_enter(c);
        hooks_stmt_start(c);
        int rc = stmt_step_rows(c, s, t, 0, 1);
        hooks_stmt_end(c, t, rc, s->savepoint, s->sp_name);
        if (s->busy_pragma)
            conn_busy_pragma_leave(c);
        int64_t rowid;
        int inserted = conn_inserted(c, &rowid);
        if (s->kind == STMT_DML)
            changes_fresh(pool); /* SQLite's changes() is this statement's now */
        if (rc == SQLITE_DONE) {
            if (s->kind == STMT_DML)
                t->rowcount = sqlite3_changes64(c->db);
            t->rowid = rowid;
            t->has_rowid = inserted;
            writer_ran(pool, s->setting, s->changes_schema, t->sql, t->sql_len);
        }
    }
    if (!t->route_known && pool->readers.used) /* e.g. TEMP objects the classifier lacks */
        route_put(pool, t->sql, t->sql_len, s->kind == STMT_READ ? ROUTE_READ : ROUTE_WRITE,
                  ROUTE_ANY_GEN);
    stmt_release(c, s);
}

static void writer_run_many(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->writer.conn;
    cached_stmt *s = stmt_acquire(c, t);
    if (!s)
        return;
    if (s->kind != STMT_DML) {
        task_fail_programming(t, "executemany takes an INSERT, UPDATE, DELETE or REPLACE "
                                 "statement");
        stmt_release(c, s);
        return;
    }
    /* All or nothing: a savepoint begins a transaction of its own outside one, and inside
     * the caller's it undoes just this call's rows. */
    int own = sqlite3_get_autocommit(c->db);
    int rc = conn_exec(c, "SAVEPOINT pasyn_executemany");
    if (rc != SQLITE_OK) {
        task_fail_sqlite(t, c->db, rc);
        stmt_release(c, s);
        return;
    }
    hooks_stmt_start(c); /* its changes: dropped if it rolls back to its savepoint */
    const size_t *ends = (const size_t *)t->set_ends.p;
    size_t from = 0;
    int64_t total = 0;
    for (uint32_t k = 0; k < t->nsets; k++) {
        if (stmt_bind(c, s, t, from, ends[k]) != 0)
            break;
        int rc_step = stmt_step_rows(c, s, t, 0, 0);
        changes_fresh(pool);
        if (rc_step != SQLITE_DONE)
            break;
        t->rows.len = 0;
        t->nrows = 0;
        total += sqlite3_changes64(c->db);
        sqlite3_reset(s->stmt); /* the next set binds every parameter again */
        from = ends[k];
    }
    stmt_release(c, s);
    if (t->err == PASYN_OK && (rc = conn_exec(c, "RELEASE pasyn_executemany")) != SQLITE_OK)
        task_fail_sqlite(t, c->db, rc);
    if (t->err != PASYN_OK) {
        /* An error may have ended it already. RELEASE only what was rolled back: of a
         * transaction of its own, RELEASE would commit the rows before the failing one. */
        hooks_stmt_undo(c);
        if (!sqlite3_get_autocommit(c->db) &&
            conn_exec(c, "ROLLBACK TO pasyn_executemany") == SQLITE_OK)
            conn_exec(c, "RELEASE pasyn_executemany");
        if (own && !sqlite3_get_autocommit(c->db))
            pool->writer.orphan_txn = 1; /* e.g. out of memory: writer_end_orphan */
        return;
    }
    t->rowcount = total;
}

static void writer_run_script(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->writer.conn;
    const char *p = t->sql, *end = t->sql + t->sql_len;
    while (p < end) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        int rc = conn_prepare(c, p, (int)(end - p), 0, &st, &tail); /* c->seen tells what */
        if (rc != SQLITE_OK) {
            stmt_fail_prepare(c, t, rc);
            return;
        }
        if (st) {
            int setting = c->setting, seen = (int)c->seen;
            int savepoint = seen & SEEN_SAVEPOINT ? c->savepoint : SAVEPOINT_NONE;
            char *savepoint_name = savepoint ? strdup((const char *)c->insert_names.p) : NULL;
            if (seen & SEEN_BUSY_PRAGMA)
                conn_busy_pragma_enter(c);
            c->traced = st;
            hooks_stmt_start(c);
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                ;
            hooks_stmt_end(c, t, rc, savepoint, savepoint_name);
            free(savepoint_name);
            if (seen & SEEN_BUSY_PRAGMA)
                conn_busy_pragma_leave(c);
            if (!sqlite3_stmt_readonly(st))
                changes_fresh(pool);
            if (rc != SQLITE_DONE)
                task_fail_sqlite(t, c->db, rc);
            else
                writer_ran(pool, setting, seen & SEEN_SCHEMA, p, (size_t)((tail ? tail : end) - p));
            sqlite3_finalize(st);
            if (rc != SQLITE_DONE)
                return;
        }
        p = tail && tail > p ? tail : end;
    }
}

/* A transaction that nobody owns any more and whose ROLLBACK failed (writer.orphan_txn):
 * whatever ran inside it would be lost with it, though reported done. It is rolled back before
 * the next task runs; while that fails too (out of memory), each task fails with the reason
 * instead of running. 1 when the task may run. */
static int writer_end_orphan(pasyn_pool *pool, pasyn_task *t)
{
    writer *w = &pool->writer;
    if (!w->orphan_txn)
        return 1;
    int rc = conn_exec(&w->conn, "ROLLBACK");
    if (rc == SQLITE_OK || sqlite3_get_autocommit(w->conn.db)) {
        w->orphan_txn = 0;
        return 1;
    }
    char msg[256];
    snprintf(msg, sizeof msg,
             "the writer could not roll back a transaction that nobody owns any more (a "
             "failed group commit or executemany, an abandoned one), and runs nothing until "
             "it can: %s",
             sqlite3_errstr(rc));
    task_fail(t, PASYN_ESQLITE, rc & 0xff, rc, msg);
    return 0;
}

void writer_run_task(pasyn_pool *pool, pasyn_task *t)
{
    conn *c = &pool->writer.conn;
    if (!writer_end_orphan(pool, t)) {
        atomic_fetch_add(&pool->writer.executed, 1);
        return;
    }
    hooks_task_start(pool, t);
    conn_arm(c, t);
    switch (t->kind) {
    case PASYN_EXEC:
        writer_run_exec(pool, t);
        break;
    case PASYN_MANY:
        writer_run_many(pool, t);
        break;
    case PASYN_SCRIPT:
        writer_run_script(pool, t);
        break;
    case PASYN_SERIALIZE:
    case PASYN_BACKUP:
        backup_run(pool, t);
        break;
    case PASYN_ABANDON:
        /* The gate let it through, so a transaction still open is its owner's; if even its
         * ROLLBACK fails, nobody owns it any more. */
        conn_rollback_open(c);
        pool->writer.orphan_txn = !sqlite3_get_autocommit(c->db);
        break;
    default:
        task_fail_programming(t, "task kind %d cannot run on the writer", t->kind);
        break;
    }
    conn_disarm(c, t);
    hooks_task_done(pool, t);
    atomic_fetch_add(&pool->writer.executed, 1);
}

/* ---- open, loop, close -------------------------------------------------------------- */

/* The close task, taken once every task queued before it that may run has run. The first time,
 * the readers are stopped: they finish what is queued for them, and what they hand over
 * meanwhile queues behind the close task. A transaction still open belongs to an owner that can
 * send nothing more (intake is closed): once none of its tasks is queued, it is rolled back so
 * that the writes waiting for it run. 1 when nothing is left to run; otherwise the close task
 * goes to the back of the queue, to come round again. */
static int writer_close_reached(pasyn_pool *pool, pasyn_task *close_task, int *readers_stopped)
{
    writer *w = &pool->writer;
    if (!*readers_stopped) {
        readers_stop(pool);
        *readers_stopped = 1;
    }
    uint64_t owner = atomic_load(&w->txn_owner);
    int owner_queued = 0;
    pthread_mutex_lock(&w->mu);
    int left = w->queued > 0;
    for (pasyn_task *t = w->queue.next; owner && t != &w->queue && !owner_queued; t = t->next)
        owner_queued = t->owner == owner;
    pthread_mutex_unlock(&w->mu);
    if (!left)
        return 1;
    if (owner && !owner_queued) {
        conn_rollback_open(&w->conn);
        w->orphan_txn = !sqlite3_get_autocommit(w->conn.db);
        atomic_store(&w->txn_owner, 0);
    }
    writer_push(pool, close_task);
    return 0;
}

/* Opens the writer, then waits until every reader has opened (or one failed). Reads go to the
 * readers only in WAL mode or in a read-only pool: in a rollback journal the readers and the
 * writer lock each other out, and the pool would answer "database is locked" to itself. 1 when
 * the pool serves; a close that came meanwhile is queued then. */
static int writer_open(pasyn_pool *pool)
{
    writer *w = &pool->writer;
    lifecycle *life = &pool->life;
    char *err = NULL;
    int flags = pool->opts.readonly ? SQLITE_OPEN_READONLY
                                    : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = conn_open(&w->conn, pool->path, flags, pool->opts.busy_timeout_ms,
                       pool->opts.statement_cache, &pool->interrupts, &pool->setup, &err);
    w->conn.functions = &pool->functions;
    /* The writer gives each statement back (stmt_release, which clears its bindings) before it
     * completes the task whose buffer they point into. */
    w->conn.bind_in_place = 1;
    if (rc == SQLITE_OK)
        rc = settings_apply_pragmas(pool, &w->conn, 1, &err);
    if (rc == SQLITE_OK) {
        rc = changes_register(pool);
        /* As SQLite reports them: it may refuse WAL; the pragmas option may set locking_mode. */
        sqlite3 *db = w->conn.db;
        pool->readers.used = pool->readers.count > 0 &&
                             !answers(db, "PRAGMA locking_mode", "exclusive") &&
                             (pool->opts.readonly || answers(db, "PRAGMA journal_mode", "wal"));
        w->conn.refuse_locks_out = pool->readers.used;
    }
    if (rc == SQLITE_OK && pool->readers.used) { /* after WAL is set, like the readers */
        conn *classifier = &pool->routes.classifier;
        rc = conn_open(classifier, pool->reader_path, SQLITE_OPEN_READONLY,
                       pool->opts.busy_timeout_ms, 0, NULL, &pool->setup, &err);
        classifier->temp_names = &pool->temp_names;
        classifier->functions = &pool->functions; /* never_wait: a call fails at once */
        classifier->refuse_locks_out = 1;
        if (rc == SQLITE_OK) {
            conn_busy_own(classifier, NEVER_WAIT_CLASSIFY);
            atomic_store(&pool->routes.classifier_stale, 1);
            classifier_load(pool);
        }
    }
    /* The caller's own connection for short reads (reader.c, inline_run): in WAL mode only
     * (a read-only pool on a rollback-journal file would take locks the writer waits on). */
    if (rc == SQLITE_OK && pool->readers.used && pool->opts.inline_reads &&
        pool->opts.inline_budget > 0 && answers(w->conn.db, "PRAGMA journal_mode", "wal")) {
        inliner *in = &pool->inliner;
        rc = reader_conn_open(pool, &in->conn, NEVER_WAIT_RUN, &err);
        if (rc == SQLITE_OK) {
            in->budget_ns = (uint64_t)(pool->opts.inline_budget * 1e9);
            in->fit_ns = in->budget_ns / INLINE_FIT_SHARE;
            in->used = 1;
            atomic_store(&in->stale, 1);
            inline_load(pool);
        }
    }
    if (rc == SQLITE_OK)
        conn_busy_own(&w->conn, 0);
    pthread_mutex_lock(&life->mu);
    int ok = rc == SQLITE_OK;
    if (!ok) {
        task_fail(life->open_task, PASYN_ESQLITE, rc & 0xff, rc, err ? err : sqlite3_errstr(rc));
        free(err);
        life->writer_opened = -1;
    } else {
        life->writer_opened = 1;
        pthread_cond_broadcast(&life->changed);
        while (life->readers_opened + life->readers_failed < pool->readers.count)
            pthread_cond_wait(&life->changed, &life->mu);
        ok = life->readers_failed == 0;
    }
    if (ok && life->close_task)
        writer_push(pool, life->close_task);
    atomic_store(&life->state, ok && !life->close_task ? PASYN_POOL_OPEN : PASYN_POOL_CLOSING);
    pthread_cond_broadcast(&life->changed);
    pthread_mutex_unlock(&life->mu);
    return ok;
}

/* Closes what the writer holds (the classifier, its connection last, so that WAL is
 * checkpointed) and marks the pool closed. Returns the close task, if any, to complete. */
static pasyn_task *writer_close(pasyn_pool *pool)
{
    conn_rollback_open(&pool->writer.conn);
    hooks_close(&pool->writer.conn);
    group_commit_close(pool);
    conn_close(&pool->routes.classifier);
    pthread_mutex_lock(&pool->inliner.mu); /* intake has stopped: nobody takes it any more */
    conn_close(&pool->inliner.conn);
    pthread_mutex_unlock(&pool->inliner.mu);
    conn_close(&pool->writer.conn);
    pool_remove_memfile(pool);
    pthread_mutex_lock(&pool->life.mu);
    pasyn_task *close_task = pool->life.close_task;
    atomic_store(&pool->life.state, PASYN_POOL_CLOSED);
    pthread_mutex_unlock(&pool->life.mu);
    return close_task;
}

/* Runs a task alone and completes it. */
static void writer_run_alone(pasyn_pool *pool, pasyn_task *t)
{
    writer_run_task(pool, t);
    writer_settle(pool, t->owner);
    task_complete(t);
}

void *writer_main(void *arg)
{
    pasyn_pool *pool = arg;
    cpu_worker_awake(1);
    if (!writer_open(pool)) {
        readers_join(pool);
        pasyn_task *close_task = writer_close(pool); /* a close that came while opening */
        cpu_worker_awake(-1);
        task_complete(pool->life.open_task);
        if (close_task)
            task_complete(close_task);
        return NULL;
    }
    task_complete(pool->life.open_task);
    int readers_stopped = 0;
    for (;;) {
        int more;
        pasyn_task *t = writer_take(pool, &more);
        if (t->kind != PASYN_CLOSE)
            t = group_commit_run(pool, t, more);
        if (t && t->kind == PASYN_CLOSE) {
            if (writer_close_reached(pool, t, &readers_stopped))
                break;
        } else if (t) {
            writer_run_alone(pool, t);
        }
    }
    pasyn_task *close_task = writer_close(pool);
    cpu_worker_awake(-1);
    task_complete(close_task);
    return NULL;
}
